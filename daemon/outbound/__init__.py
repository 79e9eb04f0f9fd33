"""Agents send mail (SPEC §12): composing once, DKIM signing, the outbox, relay and local
delivery, bounces."""

from daemon.outbound.compose import (
    CompositionError,
    Draft,
    FilePart,
    Mailbox,
    check_address,
    compose,
    header_addresses,
)
from daemon.outbound.dkim import DkimKey, DkimKeyError, load_key, sign

__all__ = [
    "CompositionError",
    "DkimKey",
    "DkimKeyError",
    "Draft",
    "FilePart",
    "Mailbox",
    "check_address",
    "compose",
    "header_addresses",
    "load_key",
    "sign",
]
