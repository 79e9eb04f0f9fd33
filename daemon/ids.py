"""Identifiers and API keys: time-ordered ids for rows, random keys stored only as hashes."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def _ulid() -> str:
    """48 bits of milliseconds then 80 random bits, Crockford base32: sorts by creation time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def event_id_for(seq: int) -> str:
    """An event's stable id (SPEC §14: the same in the feed and on every webhook retry): its
    cursor, 13 Crockford base32 digits, so ids sort as the feed does."""
    out = []
    for _ in range(13):
        out.append(_CROCKFORD[seq & 31])
        seq >>= 5
    return "evt_" + "".join(reversed(out))


def new_message_id() -> str:
    return "msg_" + _ulid()


def new_attachment_id() -> str:
    return "att_" + _ulid()


def new_upload_id() -> str:
    return "upl_" + _ulid()


def new_webhook_id() -> str:
    return "wh_" + _ulid()


def new_agent_id() -> str:
    return "agt_" + _ulid()


def new_api_key() -> str:
    """A fresh API key: shown once, never stored."""
    return "pr_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """What the database keeps of a key. Keys carry 256 random bits, so one SHA-256 suffices."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def thread_id_for(root_message_id: str) -> str:
    """The thread of a conversation, named by its first message's Message-ID header (the first
    of References, else the message's own): the same on every node, for inbound and outbound."""
    root = root_message_id.strip().strip("<>").lower()
    return "thr_" + hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:26]


_MSG_ID = re.compile(r"<[^<>\s]+>")


def thread_id_of(references: str | None, in_reply_to: str | None, own: str) -> str:
    """A message's thread from its headers: the first Message-ID of References (the
    conversation's root), else of In-Reply-To, else `own` (its Message-ID, or our id when it
    has none)."""
    for header in (references, in_reply_to):
        found = _MSG_ID.search(header or "")
        if found:
            return thread_id_for(found.group(0))
    return thread_id_for(own)


def message_ids_in(*headers: str | None, limit: int = 50) -> list[str]:
    """The Message-IDs named in headers such as In-Reply-To and References, in order, at most
    `limit` (References of a long thread grows by one a message)."""
    found: list[str] = []
    for header in headers:
        for match in _MSG_ID.finditer(header or ""):
            if match.group(0) not in found:
                found.append(match.group(0))
                if len(found) >= limit:
                    return found
    return found


def inbox_id_for(address: str) -> str:
    """The id of an inbox, one address of an agent (SPEC §17): derived from the address, so it
    is the same on every node and needs no row; another agent's answers 404 all the same."""
    normal = address.strip().lower()
    return "inb_" + hashlib.sha256(b"inbox\0" + normal.encode("utf-8")).hexdigest()[:26]
