"""Agents send mail (SPEC §12): composing once, DKIM signing, the outbox, relay and local
delivery, bounces."""

from daemon.outbound.bounce_intake import BounceIntake
from daemon.outbound.compose import (
    CompositionError,
    Draft,
    FilePart,
    Mailbox,
    check_address,
    compose,
    header_addresses,
)
from daemon.outbound.delivery import (
    Deliverer,
    DeliverySettings,
    release_delivery_leases,
)
from daemon.outbound.dkim import DkimKey, DkimKeyError, load_key, sign
from daemon.outbound.outbox import Outbox, OutboxSettings, SendRefused, SendRequest
from daemon.outbound.peers import Peer, add_peer, list_peers, lookup_peer, remove_peer
from daemon.outbound.refs import AttachmentRef
from daemon.outbound.relay import RelaySettings

__all__ = [
    "AttachmentRef",
    "BounceIntake",
    "CompositionError",
    "Deliverer",
    "DeliverySettings",
    "DkimKey",
    "DkimKeyError",
    "Draft",
    "FilePart",
    "Mailbox",
    "Outbox",
    "OutboxSettings",
    "Peer",
    "RelaySettings",
    "SendRefused",
    "SendRequest",
    "add_peer",
    "check_address",
    "compose",
    "header_addresses",
    "list_peers",
    "load_key",
    "lookup_peer",
    "release_delivery_leases",
    "remove_peer",
    "sign",
]
