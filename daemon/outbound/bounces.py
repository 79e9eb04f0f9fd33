"""Reading a bounce (RFC 3464 delivery status notification) for one of our outbound messages.

Pure: the DSN's bytes in, the per-recipient reports out. The message it reports on is named by
the VERP address it was sent to (`daemon.outbound.verp`), never by anything inside it, so a
forged report can only speak about a message whose VERP address its sender knows. Only
`failed` reports bounce a recipient; `delayed`, `delivered`, `relayed`, `expanded` are noted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message

_ADDRESS_TYPE = re.compile(r"^\s*rfc822\s*;\s*", re.I)
MAX_REPORTS = 1000


@dataclass(frozen=True)
class RecipientReport:
    recipient: str  # lower-case, as in our RCPT
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # the enhanced code, e.g. 5.1.1
    diagnostic: str  # Diagnostic-Code, or what the report says instead


def _field(block: Message, name: str) -> str:
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else ""


def _address(value: str) -> str:
    return _ADDRESS_TYPE.sub("", value).strip().strip("<>").lower()


def recipient_reports(raw: bytes) -> list[RecipientReport]:
    """The per-recipient blocks of the first `message/delivery-status` part; [] when `raw` is
    not a DSN."""
    msg = message_from_bytes(raw, policy=policy.compat32)
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list) or len(blocks) < 2:
            return []
        reports = []
        for block in blocks[1:MAX_REPORTS + 1]:  # the first block is per-message
            if not isinstance(block, Message):
                continue
            recipient = _address(_field(block, "Original-Recipient")) or \
                _address(_field(block, "Final-Recipient"))
            if "@" not in recipient:
                continue
            reports.append(RecipientReport(
                recipient, _field(block, "Action").lower(), _field(block, "Status"),
                _field(block, "Diagnostic-Code")[:1000] or _field(block, "Status")))
        return reports
    return []
