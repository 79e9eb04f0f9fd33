"""The SMTP and LMTP front: framing, policy, PROXY, TLS, AUTH and the aiosmtpd glue (SPEC §4).

A message meets this package first. It answers the relay, hands the message to
`daemon.pipeline` for the durable write, and says 250 only when that write is done.
"""

from daemon.smtp.policy import COMMAND_CALL_LIMITS, parse_networks
from daemon.smtp.session import PostroomHandler, PostroomLMTP, PostroomSMTP, SmtpCounters
from daemon.smtp.tls import TlsError, TlsFiles, load_tls

__all__ = [
    "COMMAND_CALL_LIMITS",
    "PostroomHandler",
    "PostroomLMTP",
    "PostroomSMTP",
    "SmtpCounters",
    "TlsError",
    "TlsFiles",
    "load_tls",
    "parse_networks",
]
