"""SQL tables (SQLModel): agents, addresses, messages, recipients, attachments, uploads, events,
outbound deliveries, idempotency keys, the directory of peers, and webhooks.

Field names are the SPEC's, so rows map onto API objects without renaming. Schema changes go
through versioned migrations in `storage/migrations/`, never `create_all` on a live database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Integer, Text, UniqueConstraint, false
from sqlmodel import Field, SQLModel

# Message statuses (SPEC §5).
RECEIVED, PROCESSING, READY, PARTIAL, FAILED, PURGED = (
    "received", "processing", "ready", "partial", "failed", "purged")
UNFINISHED = (RECEIVED, PROCESSING)
# Attachment statuses.
PENDING, REJECTED = "pending", "rejected"
TERMINAL_ATTACHMENT = (READY, REJECTED, FAILED, PURGED)
# Directions of a message, and the statuses of an outbound one and of each of its recipients
# (SPEC §12): queued → sending → sent (a relay said 250) | delivered (local) | deferred (will
# be retried) | bounced.
INBOUND, OUTBOUND = "inbound", "outbound"
QUEUED, SENDING, SENT, DELIVERED, DEFERRED, BOUNCED = (
    "queued", "sending", "sent", "delivered", "deferred", "bounced")
DELIVERY_DUE = (QUEUED, DEFERRED)
DELIVERY_DONE = (SENT, DELIVERED, BOUNCED)


class Agent(SQLModel, table=True):
    __tablename__ = "agents"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200, sa_column_kwargs={"unique": True})
    key_hash: str = Field(max_length=64, index=True)
    key_prefix: str = Field(max_length=16)
    created_at: datetime
    updated_at: datetime
    # SPEC §8: an armored OpenPGP public key; mail to the agent is encrypted to it at rest.
    pgp_public_key: str | None = Field(default=None, sa_column=Column(Text))
    pgp_fingerprint: str | None = Field(default=None, max_length=40)
    # SPEC §13: "all", or "authenticated" (mail whose verdict is not pass is quarantined).
    accept: str = Field(default="all", max_length=16,
                        sa_column_kwargs={"server_default": "all"})


class Address(SQLModel, table=True):
    __tablename__ = "addresses"

    address: str = Field(primary_key=True, max_length=320)  # lower-case; "*@domain" is catch-all
    agent_id: str = Field(foreign_key="agents.id", index=True, max_length=40)


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_unfinished", "status", "lease_expires_at"),)

    seq: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                       primary_key=True, autoincrement=True))
    id: str = Field(max_length=40, sa_column_kwargs={"unique": True})
    dedupe_key: str | None = Field(default=None, max_length=64, sa_column_kwargs={"unique": True})
    status: str = Field(max_length=16)
    error: str | None = Field(default=None, sa_column=Column(Text))
    mail_from: str = Field(sa_column=Column(Text, nullable=False))
    peer: str = Field(max_length=100)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    raw_key: str = Field(max_length=200)
    raw_sha256: str = Field(max_length=64)
    received_at: datetime
    processed_at: datetime | None = None
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = None
    attempts: int = 0
    # Filled by extraction.
    from_: str | None = Field(default=None, sa_column=Column("from_header", Text))
    to: str | None = Field(default=None, sa_column=Column("to_header", Text))
    cc: str | None = Field(default=None, sa_column=Column("cc_header", Text))
    subject: str | None = Field(default=None, sa_column=Column(Text))
    date: str | None = Field(default=None, sa_column=Column("date_header", Text))
    message_id_header: str | None = Field(default=None, sa_column=Column(Text))
    in_reply_to: str | None = Field(default=None, sa_column=Column(Text))
    references: str | None = Field(default=None, sa_column=Column("references_header", Text))
    text_key: str | None = Field(default=None, max_length=200)
    text_size: int | None = None
    html_key: str | None = Field(default=None, max_length=200)
    html_size: int | None = None
    # What an agent reads (SPEC §15): the text's new part (the text's own key when it is all
    # new), the first characters of it (null when encrypted at rest), and the subject without
    # its Re:/Fwd: (hashed), to thread replies that lost their headers.
    extracted_key: str | None = Field(default=None, max_length=200)
    extracted_size: int | None = None
    preview: str | None = Field(default=None, sa_column=Column(Text))
    subject_key: str | None = Field(default=None, max_length=32, index=True)
    attachment_count: int = 0
    defects: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON list
    # What the message says of itself (SPEC §8): "encrypted", "signed" or None.
    pgp: str | None = Field(default=None, max_length=16)
    smime: str | None = Field(default=None, max_length=16)
    # Encrypted at rest: JSON list of the key fingerprints every stored object is encrypted to.
    encrypted_to: str | None = Field(default=None, sa_column=Column(Text))
    # JSON {"status", "fingerprint"} when a signature was checked; the X-AgentMail-Attachments
    # manifest as parsed (JSON list).
    signature: str | None = Field(default=None, sa_column=Column(Text))
    manifest: str | None = Field(default=None, sa_column=Column(Text))
    # "inbound" (a relay delivered it) or "outbound" (an agent sent it, SPEC §12).
    direction: str = Field(default=INBOUND, max_length=16)
    # The conversation (daemon.ids.thread_id_of): set with the headers, inbound and outbound.
    thread_id: str | None = Field(default=None, max_length=40, index=True)
    # The thread its own Message-ID names (daemon.ids.thread_id_for): a reply to it finds the
    # thread it is in through this, when that differs (it joined one by subject).
    own_thread: str | None = Field(default=None, max_length=40, index=True)
    # SPEC §13: who SPF asks about (the SMTP client, or the one a trusted relay forwarded with
    # XFORWARD or PROXY) and its HELO name; what verification found (JSON) and its verdict.
    client_ip: str | None = Field(default=None, max_length=64)
    helo: str | None = Field(default=None, sa_column=Column(Text))
    authentication: str | None = Field(default=None, sa_column=Column(Text))
    verdict: str | None = Field(default=None, max_length=16, index=True)
    # message.received is recorded (with the verdict, after verification): once per message.
    announced: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class Recipient(SQLModel, table=True):
    __tablename__ = "recipients"
    __table_args__ = (
        UniqueConstraint("message_seq", "address"),
        Index("ix_recipients_agent_seq", "agent_id", "message_seq"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_seq: int = Field(sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                              nullable=False))
    message_id: str = Field(max_length=40, index=True)
    agent_id: str = Field(max_length=40)
    address: str = Field(max_length=320)  # as given in RCPT, lower-case
    tag: str | None = Field(default=None, max_length=320)


class Attachment(SQLModel, table=True):
    __tablename__ = "attachments"
    __table_args__ = (UniqueConstraint("message_id", "index"),)

    id: str = Field(primary_key=True, max_length=40)
    message_id: str = Field(max_length=40)
    index: int
    status: str = Field(max_length=16)
    file_name: str = Field(sa_column=Column(Text, nullable=False))
    original_file_name: str | None = Field(default=None, sa_column=Column(Text))
    content_type: str = Field(max_length=255)
    detected_content_type: str | None = Field(default=None, max_length=255)
    content_type_mismatch: bool = False
    disposition: str | None = Field(default=None, max_length=32)
    content_id: str | None = Field(default=None, sa_column=Column(Text))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    parent: int | None = None
    path: str = Field(max_length=255)
    source: str = Field(max_length=16)
    encrypted: bool = False
    encryption: str | None = Field(default=None, sa_column=Column(Text))  # JSON object
    error: str | None = Field(default=None, sa_column=Column(Text))
    defects: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON list
    object_key: str | None = Field(default=None, max_length=200)
    created_at: datetime
    ready_at: datetime | None = None
    # What the store holds when it differs from the plaintext (encrypted at rest).
    stored_sha256: str | None = Field(default=None, max_length=64)
    stored_size: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Its text (SPEC §15): ready, unsupported, too_large, failed or encrypted (null while the
    # attachment is pending, or when it was never stored); `text_size` counts characters.
    text_status: str | None = Field(default=None, max_length=16)
    text_key: str | None = Field(default=None, max_length=200)
    text_size: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    text_truncated: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    text_error: str | None = Field(default=None, sa_column=Column(Text))


class Upload(SQLModel, table=True):
    """A file an agent put into the store (SPEC §6 uploads): `upl_…` ids, keys under
    `uploads/<agent_id>/`. Presigned flows record the row `pending` when the form or URL is
    issued (size and sha256 unknown: the bytes never pass through postroom); it becomes `ready`
    once the object is seen in the store. Direct uploads are `ready` at once, with both."""

    __tablename__ = "uploads"

    id: str = Field(primary_key=True, max_length=40)
    agent_id: str = Field(max_length=40, index=True)
    object_key: str = Field(max_length=512, sa_column_kwargs={"unique": True})
    file_name: str = Field(sa_column=Column(Text, nullable=False))
    content_type: str = Field(max_length=255)
    size: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    max_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    sha256: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)
    flow: str = Field(max_length=16)  # "form", "url" or "direct"
    created_at: datetime
    expires_at: datetime | None = None  # when the form or URL stops working
    ready_at: datetime | None = None


class Event(SQLModel, table=True):
    """One state change an agent may read from `GET /v1/events` (SPEC §6), in `seq` order.

    Written in the same transaction as the change it reports, so the feed never shows a change
    that did not commit nor misses one that did; `seq` is the cursor.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_agent_seq", "agent_id", "seq"),)

    seq: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                       primary_key=True, autoincrement=True))
    agent_id: str = Field(max_length=40)
    type: str = Field(max_length=40)
    message_id: str | None = Field(default=None, max_length=40)  # None for an upload's event
    attachment_id: str | None = Field(default=None, max_length=40)  # att_… or upl_…
    index: int | None = None
    status: str | None = Field(default=None, max_length=16)
    verdict: str | None = Field(default=None, max_length=16)  # message.received (SPEC §13)
    webhook_id: str | None = Field(default=None, max_length=40)  # webhook.disabled (SPEC §14)
    created_at: datetime


class Delivery(SQLModel, table=True):
    """One recipient of an outbound message (SPEC §12), claimed by a delivery worker with a
    lease, as extraction claims messages."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("message_id", "address"),
                      Index("ix_deliveries_due", "status", "next_attempt_at"))

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=40, index=True)
    address: str = Field(max_length=320)
    kind: str = Field(max_length=8)  # "to", "cc" or "bcc"
    local: bool = False  # owned by an agent of this postroom: delivered without a relay
    status: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = None
    reply: str | None = Field(default=None, sa_column=Column(Text))  # the last SMTP reply
    reason: str | None = Field(default=None, max_length=32)  # why it bounced: no_relay, …
    delivered_message_id: str | None = Field(default=None, max_length=40)  # the local copy
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = None
    updated_at: datetime


class IdempotencyKey(SQLModel, table=True):
    """The first answer to a send with an `Idempotency-Key` header, kept 24 h (SPEC §12)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("agent_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    agent_id: str = Field(max_length=40)
    key: str = Field(max_length=255)
    request_sha256: str = Field(max_length=64)
    message_id: str = Field(max_length=40)
    response: str = Field(sa_column=Column(Text, nullable=False))  # the 202 body, JSON
    created_at: datetime


class DirectoryEntry(SQLModel, table=True):
    """An external address an operator registered (`postroom directory add`), with the OpenPGP
    key seed 000's `send_mail(encrypt_…=True)` encrypts to (SPEC §12 directory)."""

    __tablename__ = "directory"

    address: str = Field(primary_key=True, max_length=320)  # lower-case
    pgp_public_key: str | None = Field(default=None, sa_column=Column(Text))
    pgp_fingerprint: str | None = Field(default=None, max_length=40)
    created_at: datetime
    updated_at: datetime


# Webhook deliveries (SPEC §14): pending (due at next_attempt_at, claimed with a lease),
# delivered, or failed after the last retry (replayable).
WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "pending", "delivered", "failed"


class Webhook(SQLModel, table=True):
    """An agent's endpoint (SPEC §14). `cursor` is the `seq` of the last event it was given
    deliveries for: the event feed is the outbox, each endpoint reads it from its cursor."""

    __tablename__ = "webhooks"

    id: str = Field(primary_key=True, max_length=40)
    agent_id: str = Field(max_length=40, index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    event_types: str | None = Field(default=None, sa_column=Column(Text))  # JSON; None: all
    description: str | None = Field(default=None, max_length=500)
    enabled: bool = True
    # The signing secret: the HMAC key itself, so it is kept as given (as Svix, Stripe do); the
    # one it replaced signs too until `previous_until` (rotation without a gap).
    secret: str = Field(max_length=100)
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_until: datetime | None = None
    cursor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    failing_since: datetime | None = None
    disabled_reason: str | None = Field(default=None, max_length=32)
    created_at: datetime
    updated_at: datetime


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint, claimed by a worker with a lease, as extraction claims
    messages; `webhook-id` is the event's id on every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "event_seq"),
                      Index("ix_webhook_deliveries_due", "status", "next_attempt_at"))

    id: int | None = Field(  # thousands a second, pruned but never reused: 64 bits
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                       primary_key=True, autoincrement=True))
    webhook_id: str = Field(max_length=40)
    event_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: datetime
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class WebhookAttempt(SQLModel, table=True):
    """One POST to an endpoint and how it went (`GET /v1/webhooks/{id}/deliveries`)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_webhook", "webhook_id", "id"),)

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                       primary_key=True, autoincrement=True))
    webhook_id: str = Field(max_length=40)
    event_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    attempt: int
    status: str = Field(max_length=16)  # the delivery's status after this attempt
    status_code: int | None = None  # None: no answer (refused, timed out, not allowed)
    duration_ms: int
    error: str | None = Field(default=None, max_length=300)
    response: str | None = Field(default=None, sa_column=Column(Text))  # ≤ 1 kB of the body
    attempted_at: datetime
