"""The Python client agents import (SPEC §6 Client): `from daemon.client import Client`.

`http` is the `Client`, `api` its connection, `outgoing` seed 000's `send_mail` (uploads and
end-to-end encryption), `incoming` `fetch_message` (decryption), `resources` seed 001's
namespaces and records, `errors` the one error class under both its names.
"""

from daemon.client.errors import AgentMailError, PostroomError
from daemon.client.http import Client
from daemon.client.outgoing import OutboundAttachment
from daemon.client.resources import (
    AttachmentInfo,
    Attachments,
    Inbox,
    Inboxes,
    MessagePage,
    Messages,
    MessageSummary,
    Record,
    SentMessage,
    UploadUrl,
)

__all__ = [
    "AgentMailError",
    "AttachmentInfo",
    "Attachments",
    "Client",
    "Inbox",
    "Inboxes",
    "MessagePage",
    "MessageSummary",
    "Messages",
    "OutboundAttachment",
    "PostroomError",
    "Record",
    "SentMessage",
    "UploadUrl",
]
