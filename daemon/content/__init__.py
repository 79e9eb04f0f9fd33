"""What an agent reads (SPEC §15): a message's text and new part, and its attachments' text.

Pure: bytes and strings in, text out, no database, no store, no event loop. The extraction
worker computes a message's text with the bodies it decodes; attachments are read by the
content workers (`daemon.pipeline`), processes killed past `content.timeout`. Threads and
search are the database's (`storage.search`, `daemon.api`).
"""

from daemon.content.bodies import (
    INDEX_CHARS,
    PREVIEW_CHARS,
    MessageText,
    extracted_text,
    html_to_text,
    message_text,
    preview_of,
)
from daemon.content.documents import (
    ENCRYPTED,
    FAILED,
    READY,
    TEXT_STATUSES,
    TOO_LARGE,
    UNSUPPORTED,
    ContentLimits,
    DocumentText,
    document_kind,
)
from daemon.content.formats import PLAIN_KINDS, prepare, read_document
from daemon.content.subjects import SUBJECT_THREAD_DAYS, is_reply_subject, subject_key

__all__ = [
    "ENCRYPTED",
    "FAILED",
    "INDEX_CHARS",
    "PLAIN_KINDS",
    "PREVIEW_CHARS",
    "READY",
    "SUBJECT_THREAD_DAYS",
    "TEXT_STATUSES",
    "TOO_LARGE",
    "UNSUPPORTED",
    "ContentLimits",
    "DocumentText",
    "MessageText",
    "document_kind",
    "extracted_text",
    "html_to_text",
    "is_reply_subject",
    "message_text",
    "prepare",
    "preview_of",
    "read_document",
    "subject_key",
]
