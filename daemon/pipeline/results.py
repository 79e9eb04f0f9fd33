"""What extraction found, as the rows and events that record it (SPEC §5, §6, §8).

Two writers record results: the pipeline, after 250, for mail stored as sent; and ingest, before
250, for mail encrypted at rest (its plaintext cannot be read again later). Both build their rows
here, so a message looks the same in the API whichever way it was recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.events import event_rows
from daemon.ids import new_attachment_id
from extractors import Extraction, Part
from storage.models import FAILED, PARTIAL, PENDING, READY, REJECTED
from storage.objects import attachment_key, body_key

# The object format of what postroom encrypts at rest (SPEC §8).
AT_REST = {"algorithm": "openpgp", "format": "armored"}


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


def part_state(part: Part) -> tuple[str, str | None]:
    """An attachment's terminal status and error."""
    if part.outcome == "rejected":
        return REJECTED, part.reason or "rejected"
    if part.outcome == "failed":
        return FAILED, part.reason or "could not decode"
    return READY, None


def states(found: Extraction, final: bool) -> list[tuple[str, str | None]]:
    return [part_state(p) if final else (PENDING, None) for p in found.attachments]


def _manifest(found: Extraction) -> str | None:
    entries = found.manifest
    if entries is None:
        return None
    return json.dumps([{
        "file_name": e.file_name, "content_type": e.content_type, "encrypted": e.encrypted,
        "encryption": None if e.encryption is None else {
            "algorithm": e.encryption.algorithm, "format": e.encryption.format},
    } for e in entries])


def message_values(message_id: str, found: Extraction, final: bool, now: datetime,
                   outcome: Outcome) -> dict[str, Any]:
    """The message row's columns extraction fills (and, when `final`, its terminal state)."""
    h = found.headers
    values: dict[str, Any] = {
        "from_header": h.from_, "to_header": h.to, "cc_header": h.cc,
        "subject": h.subject, "date_header": h.date, "message_id_header": h.message_id,
        "in_reply_to": h.in_reply_to, "references_header": h.references,
        "attachment_count": len(found.attachments),
        "defects": json.dumps(list(found.defects)),
        "pgp": found.pgp, "smime": found.smime,
        "manifest": _manifest(found),
        "signature": json.dumps(dict(outcome.signature)) if outcome.signature else None,
        "encrypted_to": json.dumps(list(outcome.encrypted_to)) if outcome.encrypted_to
        else None,
    }
    if final:
        values.update(
            status=READY if all(st == READY for st, _ in states(found, True)) else PARTIAL,
            processed_at=now, lease_owner=None, lease_expires_at=None, error=None)
        for body in (found.text_body, found.html_body):
            if body is not None:
                stored = outcome.stored.get(body.kind)
                values[f"{body.kind}_key"] = stored.key if stored else body_key(message_id,
                                                                                  body.kind)
                values[f"{body.kind}_size"] = body.size
    return values


def _encryption(part: Part) -> str | None:
    """The `encryption` of a part that arrived encrypted, as the extractor recognised it."""
    if part.encryption is None:
        return None
    return json.dumps({"algorithm": part.encryption.algorithm,
                       "format": part.encryption.format})


def attachment_rows(message_id: str, found: Extraction, final: bool, now: datetime,
                    earlier: Mapping[int, str], outcome: Outcome) -> list[dict[str, Any]]:
    """One row per attachment; ids from `earlier` (index → id) survive a retry."""
    rows = []
    for p, (status, error) in zip(found.attachments, states(found, final), strict=True):
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
        })
    return rows


def result_events(agents: Iterable[str], message_id: str, found: Extraction,
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
