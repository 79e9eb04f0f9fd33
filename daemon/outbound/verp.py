"""VERP (SPEC §12): each outbound message's envelope sender names it, so a bounce says which.

`bounces+<message id>@domain`, under `outbound.bounce_address` (default `bounces@` the sender's
domain). Parsing accepts only our own shape, so an address from mail never names a message that
is not one of ours by accident.
"""

from __future__ import annotations

import re

_MESSAGE_ID = re.compile(r"msg_[0-9a-z]{10,40}")


def envelope_sender(message_id: str, from_address: str, bounce_address: str | None) -> str:
    """The MAIL FROM of one outbound message."""
    base = bounce_address or f"bounces@{from_address.rpartition('@')[2]}"
    local, _, domain = base.rpartition("@")
    return f"{local}+{message_id}@{domain}"


def bounced_message_id(recipient: str, bounce_address: str | None) -> str | None:
    """The message id a DSN to `recipient` reports on, or None when it is not a VERP address of
    ours (with `bounce_address` unset, any `bounces+<id>@` local part is ours)."""
    local, _, domain = recipient.lower().rpartition("@")
    base, plus, tag = local.partition("+")
    if not plus or not _MESSAGE_ID.fullmatch(tag):
        return None
    if bounce_address is not None:
        want_local, _, want_domain = bounce_address.lower().rpartition("@")
        if (base, domain) != (want_local, want_domain):
            return None
    elif base != "bounces":
        return None
    return tag
