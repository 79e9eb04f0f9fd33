"""The Python client agents import (SPEC §6 Client): `from daemon.client import Client`."""

from daemon.client.http import Client, PostroomError

__all__ = ["Client", "PostroomError"]
