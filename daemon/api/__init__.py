"""The HTTP API (SPEC §6): a FastAPI app with one router per resource, the agent resolved from
its key by a dependency, and the JSON views of rows."""

from daemon.api.app import create_app
from daemon.api.bodylimit import BodyLimit, LargerBody
from daemon.api.deps import ApiContext
from daemon.api.errors import ApiError
from daemon.api.lookups import Lookups
from daemon.api.mcp_mount import allowed_hosts
from daemon.api.upload_bodies import streamed_routes
from daemon.api.views import JsonBody, attachment_view, message_summary
from daemon.clock import iso

__all__ = [
    "ApiContext",
    "ApiError",
    "BodyLimit",
    "JsonBody",
    "LargerBody",
    "Lookups",
    "allowed_hosts",
    "attachment_view",
    "create_app",
    "iso",
    "message_summary",
    "streamed_routes",
]
