"""One reader per format: the file at a path into a `TextSink`, stopping at the limits.

Each imports its library when first called, so a worker that never meets a spreadsheet never
loads openpyxl. A reader raises Truncated (from the sink or at `max_pages`) to stop early,
Refused for a file it will not read, anything else for a damaged one.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.content.bodies import html_to_text, message_text
from daemon.content.documents import (
    ENCRYPTED,
    FAILED,
    READY,
    TOO_LARGE,
    ZIPPED,
    ContentLimits,
    DocumentText,
    Refused,
    TextSink,
    Truncated,
    check_container,
    decode,
)

_TEXT_READ_LIMIT = 4  # bytes read of a plain file per character allowed (UTF-8's widest)


def _read_bytes(path: str, limits: ContentLimits) -> tuple[bytes, bool]:
    """The head of a file, enough for `max_text_chars`; whether there was more."""
    budget = limits.max_text_chars * _TEXT_READ_LIMIT
    with open(path, "rb") as f:
        data = f.read(budget + 1)
    return data[:budget], len(data) > budget


def _pages(count: int, limits: ContentLimits) -> range:
    return range(min(count, limits.max_pages))


def read_pdf(path: str, sink: TextSink, limits: ContentLimits) -> None:
    from pypdf import PdfReader

    reader = PdfReader(path, strict=False)
    if reader.is_encrypted:
        try:
            opened = bool(reader.decrypt(""))  # encrypted only against editing: readable
        except Exception:
            opened = False
        if not opened:
            raise Refused(ENCRYPTED, "the PDF is password-protected")
    count = len(reader.pages)
    for number in _pages(count, limits):
        sink.line(reader.pages[number].extract_text() or "")
        sink.line("")
    if count > limits.max_pages:
        raise Truncated


def read_docx(path: str, sink: TextSink, limits: ContentLimits) -> None:
    import docx
    from docx.table import Table

    document = docx.Document(path)
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            _table(sink, ([cell.text for cell in row.cells] for row in block.rows))
        else:
            sink.line(block.text)


def _table(sink: TextSink, rows: Any) -> None:
    for cells in rows:
        sink.line("\t".join("" if c is None else str(c) for c in cells).rstrip())


def read_xlsx(path: str, sink: TextSink, limits: ContentLimits) -> None:
    import openpyxl  # reads through defusedxml when it is installed (it is a dependency)

    with open(path, "rb") as f:  # a file object: openpyxl refuses paths without .xlsx
        book = openpyxl.load_workbook(f, read_only=True, data_only=True)
        try:
            for sheet in book.worksheets:
                sink.line(f"# {sheet.title}")
                _table(sink, sheet.iter_rows(values_only=True))
                sink.line("")
        finally:
            book.close()


def read_pptx(path: str, sink: TextSink, limits: ContentLimits) -> None:
    from pptx import Presentation

    slides = Presentation(path).slides
    for number, slide in enumerate(slides, 1):
        if number > limits.max_pages:
            raise Truncated
        sink.line(f"# Slide {number}")
        for shape in slide.shapes:
            if getattr(shape, "has_table", False) and shape.has_table:
                _table(sink, ([c.text for c in row.cells] for row in shape.table.rows))
            elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                sink.line(shape.text_frame.text)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            sink.line(slide.notes_slide.notes_text_frame.text)
        sink.line("")


def read_odf(path: str, sink: TextSink, limits: ContentLimits) -> None:
    # odfpy (1.4) parses every part with defusedxml.sax: no entities, no external DTDs.
    from odf import teletype
    from odf.namespaces import TEXTNS
    from odf.opendocument import load

    document = load(path)
    for node in _odf_blocks(document.body, {(TEXTNS, "p"), (TEXTNS, "h")}):
        sink.line(teletype.extractText(node))


def _odf_blocks(root: Any, names: set[tuple[str, str]]) -> Any:
    """Paragraphs and headings in document order (getElementsByType groups them by kind)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if getattr(node, "qname", None) in names:
            yield node
            continue
        stack.extend(reversed(getattr(node, "childNodes", [])))


def read_html(path: str, sink: TextSink, limits: ContentLimits) -> None:
    data, more = _read_bytes(path, limits)
    sink.add(html_to_text(decode(data)))
    if more:
        raise Truncated


def read_text(path: str, sink: TextSink, limits: ContentLimits) -> None:
    data, more = _read_bytes(path, limits)
    sink.add(decode(data).replace("\r\n", "\n"))
    if more:
        raise Truncated


def read_json(path: str, sink: TextSink, limits: ContentLimits) -> None:
    """JSON as written; a small document whose lines are long is indented first."""
    data, more = _read_bytes(path, limits)
    text = decode(data)
    if not more and len(text) < 1_000_000 and text.count("\n") < len(text) // 200:
        with contextlib.suppress(ValueError):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    sink.add(text)
    if more:
        raise Truncated


def read_calendar(path: str, sink: TextSink, limits: ContentLimits) -> None:
    """An invitation as an agent needs it: what, when, where, who, and the method (a request,
    a cancellation, a reply)."""
    import icalendar

    with open(path, "rb") as f:  # whole: a calendar cut short does not parse
        calendar = icalendar.Calendar.from_ical(f.read())
    method = calendar.get("METHOD")
    if method:
        sink.line(f"Method: {method}")
    for component in calendar.walk():
        if component.name not in ("VEVENT", "VTODO", "VJOURNAL"):
            continue
        sink.line(f"# {component.name[1:].title()}")
        for field, label in (("SUMMARY", "Summary"), ("DTSTART", "Start"), ("DTEND", "End"),
                             ("DUE", "Due"), ("LOCATION", "Location"),
                             ("ORGANIZER", "Organizer"), ("STATUS", "Status"),
                             ("URL", "URL")):
            value = component.get(field)
            if value is not None:
                shown = value.dt.isoformat() if hasattr(value, "dt") else str(value)
                sink.line(f"{label}: {shown.removeprefix('mailto:')}")
        attendees = component.get("ATTENDEE")
        for attendee in attendees if isinstance(attendees, list) else [attendees]:
            if attendee is not None:
                sink.line(f"Attendee: {str(attendee).removeprefix('mailto:')}")
        description = component.get("DESCRIPTION")
        if description:
            sink.line(str(description))
        sink.line("")


def read_eml(path: str, sink: TextSink, limits: ContentLimits) -> None:
    """A message inside a message: its headers of note and its text."""
    from extractors import Limits, extract_message

    found = extract_message(Path(path).read_bytes(), Limits())
    h = found.headers
    for label, value in (("From", h.from_), ("To", h.to), ("Cc", h.cc), ("Date", h.date),
                         ("Subject", h.subject)):
        if value:
            sink.line(f"{label}: {value}")
    sink.line("")
    body = message_text(found.text_body.text if found.text_body else None,
                        found.html_body.text if found.html_body else None)
    sink.add(body.text or "")
    names = [p.file_name for p in found.attachments]
    if names:
        sink.line("")
        sink.line("Attachments: " + ", ".join(names))


READERS: dict[str, Callable[[str, TextSink, ContentLimits], None]] = {
    "pdf": read_pdf, "docx": read_docx, "xlsx": read_xlsx, "pptx": read_pptx,
    "odf": read_odf, "html": read_html, "csv": read_text, "markdown": read_text,
    "json": read_json, "calendar": read_calendar, "eml": read_eml, "text": read_text,
}


# The libraries each reader imports (lazily: a worker loads only what its documents need).
_LIBRARIES = {"pdf": ("pypdf",), "docx": ("docx",), "xlsx": ("openpyxl",), "pptx": ("pptx",),
              "odf": ("odf.opendocument", "odf.teletype"), "html": ("inscriptis", "lxml.html"),
              "calendar": ("icalendar",), "eml": ("extractors",)}
# Kinds read by decoding the file's head and nothing else: no parser, linear and bounded by
# max_text_chars, so they need no confinement (the pool reads them in-process).
PLAIN_KINDS = ("text", "csv", "markdown")


def prepare(kind: str) -> None:
    """Import what the reader of `kind` needs (before its time limit starts)."""
    for name in _LIBRARIES.get(kind, ()):
        importlib.import_module(name)


def read_document(path: str, kind: str, limits: ContentLimits) -> DocumentText:
    """Read the file at `path` with the reader `kind` names, within `limits`."""
    reader = READERS[kind]
    sink = TextSink(limits.max_text_chars)
    truncated = False
    try:
        if kind in ZIPPED:
            check_container(path, limits)
        reader(path, sink, limits)
    except Truncated:
        truncated = True
    except Refused as e:
        return DocumentText(e.status, error=str(e))
    except MemoryError:
        return DocumentText(TOO_LARGE, error="reading it needed more than content.max_memory")
    except RecursionError:
        return DocumentText(FAILED, error="the document nests too deeply")
    except Exception as e:  # a damaged file: every reader has its own exceptions
        return DocumentText(FAILED, error=f"could not read the {kind} file: "
                            f"{type(e).__name__}: {str(e)[:200]}")
    return DocumentText(READY, sink.text(), truncated)
