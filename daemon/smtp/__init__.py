"""The SMTP and LMTP front: framing, policy, PROXY, TLS, AUTH and the aiosmtpd glue (SPEC §4).

A message meets this package first. It answers the relay, hands the message to
`daemon.pipeline` for the durable write, and says 250 only when that write is done.
"""

from daemon.smtp.counters import SmtpCounters
from daemon.smtp.handler import PostroomHandler
from daemon.smtp.policy import COMMAND_CALL_LIMITS, parse_networks
from daemon.smtp.session import PostroomLMTP, PostroomSMTP
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
