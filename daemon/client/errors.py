"""The client's one error: what the API (or the client on its behalf) refused, and why.

`.status` is the HTTP status (0 when no answer came, or when the client refused before asking),
`.code` a stable machine-readable reason. Callers tell refusals apart by `.code`, never by text.
"""

from __future__ import annotations


class PostroomError(Exception):
    """The API said no: `.status` is the HTTP status, `.code` the error code of its body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


# Seed 000's name for the same class (SPEC §6): `except AgentMailError` catches every refusal.
AgentMailError = PostroomError
