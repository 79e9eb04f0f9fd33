"""A subject as threads compare it (SPEC §15: "the subject as a last resort, within 30 days")."""

from __future__ import annotations

import hashlib
import re

# Reply and forward prefixes of the common clients and languages, any number of them, with
# counters ("Re[2]:", "RE: Fwd:").
_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|antw|tr|rv|r|rif|odp|vb|ynt|enc|res|ref|"
    r"réf|回复|转发|答复|返信|転送)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*)+",
    re.IGNORECASE)
_SPACE = re.compile(r"\s+")
# A reply without In-Reply-To or References joins a thread of its subject this recent.
SUBJECT_THREAD_DAYS = 30


def is_reply_subject(subject: str | None) -> bool:
    return bool(subject and _PREFIX.match(subject))


def subject_key(subject: str | None) -> str | None:
    """The subject without reply prefixes, case or spacing, hashed (for an index); None when
    nothing is left to compare."""
    if not subject:
        return None
    core = _SPACE.sub(" ", _PREFIX.sub("", subject)).strip().casefold()
    if not core:
        return None
    return hashlib.sha256(core.encode("utf-8", "surrogatepass")).hexdigest()[:32]
