"""SMTP AUTH (RFC 4954) for relays outside the trusted networks: PLAIN and LOGIN, over TLS only,
the password checked off the event loop, the connection closed after three failures.

aiosmtpd's smtp_AUTH keeps its checks (538 before TLS, 503 when repeated) and finds our
`auth_*` mechanisms by name. Never a name or a password in a log line or a reply.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, syntax

from daemon.passwords import AuthUsers
from daemon.smtp import policy
from daemon.smtp.envelope import SmtpBase

log = structlog.get_logger("postroom.smtp")

_AUTH_HANDLED = AuthResult(success=False, handled=True)  # the reply is already sent


class SmtpAuth(SmtpBase):
    """AUTH PLAIN and LOGIN against `users` (`smtp.auth_users`); without users, no AUTH."""

    # The customary LOGIN prompts (aiosmtpd's own end in a NUL byte).
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __init__(self, handler: Any, *, users: AuthUsers | None = None, **kwargs: Any) -> None:
        # Set before aiosmtpd's __init__, which looks at every attribute to find auth_ methods.
        self.offers_auth = users is not None
        self._users = users
        self._auth_failures = 0
        # aiosmtpd's AUTH checks (538 before TLS, AUTH advertised only after STARTTLS) stay on.
        super().__init__(handler, auth_require_tls=True, **kwargs)

    @syntax("AUTH <mechanism>", when="offers_auth")
    async def smtp_AUTH(self, arg: str) -> None:
        """aiosmtpd's AUTH (538 before TLS, 503 when repeated), counting the failures."""
        assert self.session is not None and self.transport is not None
        if not self.offers_auth:
            await self.push(policy.AUTH_NOT_OFFERED)
            return
        already = bool(self.session.authenticated)
        await super().smtp_AUTH(arg)
        if already or self.session.authenticated:
            return
        self._auth_failures += 1
        if self._auth_failures >= policy.MAX_AUTH_FAILURES:
            log.info("smtp.auth_closed", peer=self.session.client_text,
                     failures=self._auth_failures)
            await self.push(policy.TOO_MANY_AUTH_FAILURES)
            # As aiosmtpd's QUIT does: the command loop (this task) ends at its next await.
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            self.transport.close()

    async def auth_PLAIN(self, _: SMTP, args: list[str]) -> AuthResult:
        """RFC 4616: authzid NUL authcid NUL password; an authzid other than the user fails."""
        blob = await self._auth_response(args[1] if len(args) > 1 else None, "")
        if blob is None:
            return _AUTH_HANDLED
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return _AUTH_HANDLED
        authzid, login, password = parts
        return await self._check_credentials("PLAIN", login, password,
                                             authzid_ok=authzid in (b"", login))

    async def auth_LOGIN(self, _: SMTP, args: list[str]) -> AuthResult:
        login = await self._auth_response(args[1] if len(args) > 1 else None,
                                          self.AuthLoginUsernameChallenge)
        if login is None:
            return _AUTH_HANDLED
        password = await self._auth_response(None, self.AuthLoginPasswordChallenge)
        if password is None:
            return _AUTH_HANDLED
        return await self._check_credentials("LOGIN", login, password)

    async def _auth_response(self, initial: str | None, challenge: str) -> bytes | None:
        """The client's decoded answer: the initial response given with AUTH, else one asked
        for with 334. None when malformed or cancelled with "*" (the 501 is already sent)."""
        if initial is None:
            answer = await self.challenge_auth(challenge)
            return None if answer is MISSING else bytes(answer)
        if initial == "=":  # RFC 4954 §4: an empty initial response
            return b""
        try:
            return base64.b64decode(initial, validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Can't decode base64")
            return None

    async def _check_credentials(self, mechanism: str, login: bytes, password: bytes,
                                 authzid_ok: bool = True) -> AuthResult:
        assert self._users is not None and self.session is not None
        user = None
        if authzid_ok:  # no acting as another user: that is a failure like a wrong password
            # scrypt takes ~50 ms of CPU: in a thread, so other connections keep being served.
            user = await asyncio.to_thread(self._users.check, login, password)
        if user is None:
            # Neither the name nor the password: a typo'd password in the name field is common.
            log.info("smtp.auth_failed", peer=self.session.client_text, mechanism=mechanism)
            return AuthResult(success=False, handled=False, message=policy.AUTH_INVALID)
        log.info("smtp.authenticated", peer=self.session.client_text, user=user,
                 mechanism=mechanism)
        return AuthResult(success=True, auth_data=user, message=policy.AUTH_OK)
