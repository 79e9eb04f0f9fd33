"""One SMTP transaction to `outbound.relay` with aiosmtplib, read recipient by recipient.

aiosmtplib raises only when every recipient is refused, so the per-recipient answer is taken
from what `sendmail` returns. The outcome of each recipient is `Accepted`, `Deferred` (4xx, a
connection failure, a timeout: retried) or `Refused` (5xx: bounced). STARTTLS is used when
offered and required when `relay_tls = "required"` or credentials are sent; the password never
reaches a log or a reply text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiosmtplib

Verdict = Literal["accepted", "deferred", "refused"]


@dataclass(frozen=True)
class RecipientOutcome:
    address: str
    verdict: Verdict
    reply: str  # "250 2.0.0 Ok: queued as …", or what went wrong


@dataclass(frozen=True)
class RelaySettings:
    url: str  # smtp://host:port or smtps://host:port
    tls: Literal["opportunistic", "required"] = "opportunistic"
    username: str | None = None
    password: str | None = None
    timeout: float = 60.0
    local_hostname: str | None = None

    def __repr__(self) -> str:
        return f"RelaySettings({self.url!r}, tls={self.tls!r}, user={self.username!r})"


def _verdict(code: int) -> Verdict:
    return "accepted" if 200 <= code < 300 else "refused" if 500 <= code < 600 else "deferred"


def _reply(code: int, message: str) -> str:
    return f"{code} {message}".strip()[:1000]


async def relay_message(settings: RelaySettings, sender: str, recipients: Sequence[str],
                        message: bytes) -> list[RecipientOutcome]:
    """Send `message` to `recipients` through the relay; one outcome per recipient."""
    where = urlsplit(settings.url)
    implicit_tls = where.scheme == "smtps"
    credentials = settings.username is not None and settings.password is not None
    must_tls = settings.tls == "required" or credentials
    port = where.port or (465 if implicit_tls else 25)
    client = aiosmtplib.SMTP(
        hostname=where.hostname, port=port,
        # Opportunistic STARTTLS encrypts without authenticating the relay, as Postfix's
        # `smtp_tls_security_level = may` does; with credentials, or `relay_tls = "required"`,
        # or smtps, the relay's certificate must verify.
        validate_certs=must_tls or implicit_tls,
        use_tls=implicit_tls,
        # None: STARTTLS when the relay offers it; True: refuse to go on without it.
        start_tls=None if implicit_tls else (True if must_tls else None),
        username=settings.username if credentials else None,
        password=settings.password if credentials else None,
        timeout=settings.timeout, local_hostname=settings.local_hostname)
    try:
        try:
            await client.connect()
            refused, _ = await client.sendmail(sender, list(recipients), message)
        except BaseException:
            # Not `async with`: its exit says QUIT and waits for the reply even when we are
            # cancelled (a drain), which a relay holding our DATA answers only at its timeout.
            client.close()
            raise
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await client.quit()  # the message is the relay's now; a lost QUIT changes nothing
    except aiosmtplib.SMTPRecipientsRefused as e:
        answers = {r.recipient: r for r in e.recipients}
        return [RecipientOutcome(a, _verdict(answers[a].code) if a in answers else "deferred",
                                 _reply(answers[a].code, answers[a].message) if a in answers
                                 else "refused") for a in recipients]
    except aiosmtplib.SMTPAuthenticationError as e:
        # Our credentials, not the message: kept queued until the operator fixes them, as
        # Postfix does (smtp_sasl_auth_soft_bounce).
        return [RecipientOutcome(a, "deferred", _reply(e.code, e.message)) for a in recipients]
    except aiosmtplib.SMTPResponseException as e:  # MAIL, DATA or the greeting refused
        verdict = _verdict(e.code)
        return [RecipientOutcome(a, verdict, _reply(e.code, e.message)) for a in recipients]
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
        reason = f"relay {where.hostname}:{port}: {type(e).__name__}"
        return [RecipientOutcome(a, "deferred", reason) for a in recipients]
    return [RecipientOutcome(a, _verdict(refused[a].code), _reply(refused[a].code,
                                                                  refused[a].message))
            if a in refused else RecipientOutcome(a, "accepted", "250 accepted by the relay")
            for a in recipients]
