"""What extraction found, as the rows and events that record it (SPEC §5, §6, §8): `Results`.

The one place attachment rows and their events are built and written, in the writer's own
transaction: the pipeline's after 250, ingest's before 250 for mail encrypted at rest. So a
message looks the same in the API whichever way it came; no other module builds them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, bindparam, select, update

from daemon.content import READY as TEXT_READY
from daemon.content import SUBJECT_THREAD_DAYS, is_reply_subject, subject_key
from daemon.events import event_rows, record_events
from daemon.extract_worker import Extracted, Readable, ReadText
from daemon.ids import message_ids_in, new_attachment_id, thread_id_for, thread_id_of
from extractors import Extraction, Part
from storage.models import (
    FAILED,
    PARTIAL,
    PENDING,
    READY,
    RECEIVED,
    REJECTED,
    Attachment,
    Message,
    Recipient,
)
from storage.objects import attachment_key, attachment_text_key, body_key
from storage.search import queue_message, thread_of_parents, thread_of_subject

log = structlog.get_logger("postroom.pipeline")

_ATTACHMENT_INSERT = Attachment.__table__.insert()  # type: ignore[attr-defined]

# The object format of what postroom encrypts at rest (SPEC §8).
AT_REST = {"algorithm": "openpgp", "format": "armored"}

_MESSAGES = Message.__table__  # type: ignore[attr-defined]
_ATTACHMENTS = Attachment.__table__  # type: ignore[attr-defined]
# The ids a message's attachments had, by index (they survive a retry).
EARLIER_ATTACHMENTS = (select(_ATTACHMENTS.c.index, _ATTACHMENTS.c.id)
                       .where(_ATTACHMENTS.c.message_id == bindparam("message_id")))
_RECIPIENTS = Recipient.__table__  # type: ignore[attr-defined]
_UPDATES: dict[tuple[str, ...], Any] = {}


def fenced_update(columns: tuple[str, ...]) -> Any:
    """`UPDATE messages SET <columns> WHERE id = :w_id AND lease_owner = :w_owner`, built once
    per column set (the values are `v_<column>`): building it per message cost more than
    running it."""
    statement = _UPDATES.get(columns)
    if statement is None:
        m = _MESSAGES
        statement = _UPDATES[columns] = update(m).where(
            m.c.id == bindparam("w_id"), m.c.lease_owner == bindparam("w_owner")
        ).values({name: bindparam(f"v_{name}", type_=m.c[name].type) for name in columns})
    return statement


@dataclass(frozen=True)
class Stored:
    """One object as stored when that differs from the plaintext: encrypted at rest."""

    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Outcome:
    """What was done with a message besides extracting it."""

    # Slot ("text", "html" or an attachment index as a string) → how it was stored, for the
    # objects postroom encrypted; absent slots are stored as extracted.
    stored: Mapping[str, Stored] = field(default_factory=dict)
    encrypted_to: tuple[str, ...] = ()  # key fingerprints, when encrypted at rest
    signature: Mapping[str, Any] | None = None  # {"status", "fingerprint"} when checked
    # The sender authentication's object (SPEC §13), when this attempt verified the sender.
    authentication: Mapping[str, Any] | None = None
    # What an agent reads (SPEC §15): the message's text, and each attachment's by index.
    readable: Readable | None = None
    texts: Mapping[int, ReadText] = field(default_factory=dict)
    index_chars: int = 100_000  # of text the search index takes, body and attachments

    def reading(self, result: Extracted, index_chars: int) -> Outcome:
        """This outcome with what an agent reads of the message in `result` (SPEC §15)."""
        return replace(self, readable=result.readable, texts=result.texts,
                       index_chars=index_chars)


def object_key(message_id: str, slot: str) -> str:
    """Where the extracted file of `slot` ("text", "html", "extracted", an attachment's index,
    or "t" and its index for its text) is stored as extracted."""
    if slot in ("text", "html", "extracted"):
        return body_key(message_id, slot)
    if slot.startswith("t"):
        return attachment_text_key(message_id, int(slot[1:]))
    return attachment_key(message_id, int(slot))


def _key(message_id: str, slot: str, outcome: Outcome) -> str:
    stored = outcome.stored.get(slot)
    return stored.key if stored else object_key(message_id, slot)


def _part_state(part: Part) -> tuple[str, str | None]:
    """An attachment's terminal status and error."""
    if part.outcome == "rejected":
        return REJECTED, part.reason or "rejected"
    if part.outcome == "failed":
        return FAILED, part.reason or "could not decode"
    return READY, None


def _states(found: Extraction, final: bool) -> list[tuple[str, str | None]]:
    return [_part_state(p) if final else (PENDING, None) for p in found.attachments]


def _manifest(found: Extraction) -> str | None:
    entries = found.manifest
    if entries is None:
        return None
    return json.dumps([{
        "file_name": e.file_name, "content_type": e.content_type, "encrypted": e.encrypted,
        "encryption": None if e.encryption is None else {
            "algorithm": e.encryption.algorithm, "format": e.encryption.format},
    } for e in entries])


def _message_values(message_id: str, found: Extraction, final: bool, now: datetime,
                   outcome: Outcome) -> dict[str, Any]:
    """The message row's columns extraction fills (and, when `final`, its terminal state)."""
    h = found.headers
    values: dict[str, Any] = {
        "from_header": h.from_, "to_header": h.to, "cc_header": h.cc,
        "subject": h.subject, "date_header": h.date, "message_id_header": h.message_id,
        "in_reply_to": h.in_reply_to, "references_header": h.references,
        "thread_id": thread_id_of(h.references, h.in_reply_to, h.message_id or message_id),
        "own_thread": thread_id_for(h.message_id or message_id),
        "subject_key": subject_key(h.subject),
        "attachment_count": len(found.attachments),
        "defects": json.dumps(list(found.defects)),
        "pgp": found.pgp, "smime": found.smime,
        "manifest": _manifest(found),
        "signature": json.dumps(dict(outcome.signature)) if outcome.signature else None,
        "encrypted_to": json.dumps(list(outcome.encrypted_to)) if outcome.encrypted_to
        else None,
    }
    if outcome.authentication is not None:
        values["authentication"] = json.dumps(dict(outcome.authentication))
        values["verdict"] = outcome.authentication.get("verdict")
    if final:
        values.update(
            status=READY if all(st == READY for st, _ in _states(found, True)) else PARTIAL,
            processed_at=now, lease_owner=None, lease_expires_at=None, error=None)
        for body in (found.text_body, found.html_body):
            if body is not None:
                values[f"{body.kind}_key"] = _key(message_id, body.kind, outcome)
                values[f"{body.kind}_size"] = body.size
        readable = outcome.readable
        if readable is not None:
            if readable.text_from_html is not None:  # made from the HTML
                values.update(text_key=_key(message_id, "text", outcome),
                              text_size=readable.text_from_html)
            if readable.extracted_size is not None:
                values.update(extracted_key=_key(message_id, "extracted", outcome),
                              extracted_size=readable.extracted_size)
            else:  # all of the text is new: it is its own new part
                values.update(extracted_key=values.get("text_key"),
                              extracted_size=values.get("text_size"))
            values["preview"] = None if outcome.encrypted_to else readable.preview
    return values


def _text_columns(message_id: str, index: int, outcome: Outcome) -> dict[str, Any]:
    """An attachment's text columns (all null while it is pending)."""
    found = outcome.texts.get(index)
    if found is None:
        return {"text_status": None, "text_key": None, "text_size": None,
                "text_truncated": False, "text_error": None}
    ready = found.status == TEXT_READY
    return {"text_status": found.status,
            "text_key": _key(message_id, f"t{index}", outcome) if ready else None,
            "text_size": found.size if ready else None, "text_truncated": found.truncated,
            "text_error": found.error[:500].replace("\x00", "\ufffd") if found.error else None}


def _encryption(part: Part) -> str | None:
    """The `encryption` of a part that arrived encrypted, as the extractor recognised it."""
    if part.encryption is None:
        return None
    return json.dumps({"algorithm": part.encryption.algorithm,
                       "format": part.encryption.format})


def _attachment_rows(message_id: str, found: Extraction, final: bool, now: datetime,
                    earlier: Mapping[int, str], outcome: Outcome) -> list[dict[str, Any]]:
    """One row per attachment; ids from `earlier` (index → id) survive a retry."""
    rows = []
    for p, (status, error) in zip(found.attachments, _states(found, final), strict=True):
        stored = outcome.stored.get(str(p.index))
        file_name = p.file_name
        if stored is not None:  # what the download holds: an armored OpenPGP file
            file_name = file_name.encode()[:251].decode("utf-8", "ignore") + ".asc"
        rows.append({
            "id": earlier.get(p.index) or new_attachment_id(), "message_id": message_id,
            "index": p.index, "status": status, "file_name": file_name,
            "original_file_name": p.original_file_name, "content_type": p.content_type[:255],
            "detected_content_type": p.detected_content_type or None,
            "content_type_mismatch": p.content_type_mismatch, "disposition": p.disposition,
            "content_id": p.content_id, "size": p.size, "sha256": p.sha256,
            "parent": p.parent, "path": p.path[:255], "source": p.source,
            "encrypted": p.encrypted or stored is not None,
            "encryption": json.dumps(AT_REST) if stored is not None else _encryption(p),
            "error": error, "defects": json.dumps(list(p.defects)),
            "object_key": (stored.key if stored else attachment_key(message_id, p.index))
            if final and p.outcome != "rejected" else None,
            "stored_sha256": stored.sha256 if stored else None,
            "stored_size": stored.size if stored else None,
            "created_at": now, "ready_at": now if status == READY else None,
            **(_text_columns(message_id, p.index, outcome) if final
               else _text_columns(message_id, p.index, Outcome())),
        })
    return rows


def received_events(agents: Iterable[str], message_id: str, now: datetime,
                    verdict: str | None) -> list[dict[str, Any]]:
    """message.received for each agent: said once per message, with the sender's verdict."""
    return event_rows(agents, "message.received", message_id, now, status=RECEIVED,
                      verdict=verdict)


def _result_events(agents: Iterable[str], message_id: str, found: Extraction,
                  rows: Sequence[Mapping[str, Any]], message_status: str | None,
                  now: datetime) -> list[dict[str, Any]]:
    """attachment.<status> per attachment, then message.<status> when it is terminal."""
    agents = sorted(set(agents))
    events = [e for p, r in zip(found.attachments, rows, strict=True)
              for e in event_rows(agents, f"attachment.{r['status']}", message_id, now,
                                  attachment_id=str(r["id"]), index=p.index,
                                  status=str(r["status"]))]
    if message_status is not None:
        events += event_rows(agents, f"message.{message_status}", message_id, now,
                             status=message_status)
    return events


class Results:
    """One message's extraction as the rows that record it.

    Not `final`: every attachment `pending` (its bytes are still being stored). `final`: each
    attachment terminal and the message too (`status`), its lease released. `message` holds
    the message row's columns; the caller writes them (an insert, or an update fenced by its
    lease), then `write` adds the rest in the same transaction.
    """

    def __init__(self, message_id: str, found: Extraction, *, final: bool, now: datetime,
                 outcome: Outcome | None = None) -> None:
        self.message_id = message_id
        self.found = found
        self.final = final
        self.now = now
        self.outcome = outcome or Outcome()
        self.message = _message_values(message_id, found, final, now, self.outcome)
        self.status: str | None = str(self.message["status"]) if final else None

    def write(self, conn: Connection, agents: Iterable[str],
              earlier: Mapping[int, str] | None = None,
              verdict: str | None = None, announce: bool = False) -> list[dict[str, Any]]:
        """Insert one row per attachment and record their events (message.received first when
        `announce`, with `verdict`; then message.<status> when final) for `agents`, in the
        caller's transaction; the rows. Ids in `earlier` (index → id, from an attempt
        before) are kept."""
        rows = _attachment_rows(self.message_id, self.found, self.final, self.now,
                                earlier or {}, self.outcome)
        if rows:
            conn.execute(_ATTACHMENT_INSERT, rows)
        agents = sorted(set(agents))
        if self.final:
            self._thread_by_parent(conn, agents)
            self._thread_by_subject(conn, agents)
            self._index(conn)
        events = _result_events(agents, self.message_id, self.found, rows, self.status,
                                self.now)
        if announce:
            events[:0] = received_events(agents, self.message_id, self.now, verdict)
        record_events(conn, events)
        return rows

    def _index(self, conn: Connection) -> None:
        """The message queued for the search index (`daemon.pipeline.indexer`): subject and
        addresses, and (unless it is encrypted at rest) the head of its text and its
        attachments' text."""
        m, outcome = self.message, self.outcome
        body = ""
        if not outcome.encrypted_to:
            heads = [outcome.readable.words] if outcome.readable else []
            heads += [t.head for _, t in sorted(outcome.texts.items()) if t.head]
            body = "\n".join(heads)[:outcome.index_chars]
        addresses = " ".join(filter(None, (m.get("from_header"), m.get("to_header"),
                                           m.get("cc_header"))))
        queue_message(conn, self.message_id, str(m.get("subject") or ""), addresses, body)

    def _thread_by_parent(self, conn: Connection, agents: Sequence[str]) -> None:
        """A reply joins the thread its parent is in (In-Reply-To, References), when that is
        another than its headers name: the parent joined one by subject."""
        h = self.found.headers
        parents = [thread_id_for(i) for i in message_ids_in(h.in_reply_to, h.references)]
        found = thread_of_parents(conn, parents, agents, self.message["thread_id"])
        if found is not None:
            self._set_thread(conn, found)

    def _set_thread(self, conn: Connection, thread_id: str) -> None:
        conn.execute(update(_MESSAGES).where(_MESSAGES.c.id == self.message_id)
                     .values(thread_id=thread_id))
        self.message["thread_id"] = thread_id

    def _thread_by_subject(self, conn: Connection, agents: Sequence[str]) -> None:
        """A reply without In-Reply-To or References ("Re: …", as some clients and gateways
        send them) joins the latest thread of its subject among its agents' mail of the last
        SUBJECT_THREAD_DAYS days (SPEC §15: the subject as a last resort)."""
        h = self.found.headers
        key = self.message.get("subject_key")
        if h.references or h.in_reply_to or key is None or not is_reply_subject(h.subject) \
                or not agents:
            return
        earlier = thread_of_subject(conn, key, self.message_id, agents,
                                    self.now - timedelta(days=SUBJECT_THREAD_DAYS))
        if earlier is not None and earlier != self.message["thread_id"]:
            self._set_thread(conn, earlier)

    def log(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Log the states `write` recorded, once its transaction has committed."""
        for part, row, (status, error) in zip(self.found.attachments, rows,
                                              _states(self.found, self.final), strict=True):
            log.info("attachment.state", message_id=self.message_id, attachment_id=row["id"],
                     index=part.index, status=status, size=part.size, error=error)
        if self.final:
            encrypted = {"encrypted_to": len(self.outcome.encrypted_to)} \
                if self.outcome.encrypted_to else {}
            log.info("message.state", message_id=self.message_id, status=self.status,
                     attachments=len(rows), **encrypted)
