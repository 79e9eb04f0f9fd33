"""Documents for the attachment readers' tests (`daemon.content.read_document`), generated
with the libraries that write each format and built around random marker words (`marker_words`),
so no expected text can be written into the implementation.

Every generator returns the file's bytes (the million-cell workbook, slow to make, writes a
file once and returns its path):

- `pdf(words, pages)`: reportlab canvas; every word on page 1 (a line each), pages after it
  carry a line of filler each.
- `docx(words)`: python-docx; a heading, paragraphs, and a 2-column table holding the rest.
- `xlsx(words)`: openpyxl; text cells on two sheets (and a number, a blank cell).
- `pptx(words)`: python-pptx; two slides, title and body text, and the speaker notes.
- `odt(words)`: odfpy OpenDocumentText; a heading (text:h) and paragraphs (text:p), one with a
  span inside.
- `html(words)`: a page with a title, a heading, a paragraph, a list and a table.
- `csv(words)`: a header row and rows, one field quoted with a comma in it.
- `markdown(words)`: a heading, a paragraph with emphasis, a list, a code block.
- `json_doc(words)`: an object of nested objects and arrays on one line (the reader indents it).
- `ics(words)`: icalendar; a REQUEST with one VEVENT: SUMMARY, LOCATION, DESCRIPTION.
- `eml(words)`: a message (what a message/rfc822 attachment holds): the subject carries the
  first word, the text/plain body the rest.

Hostile:

- `many_pages_pdf(early, late, pages, late_page)`: `pages` pages (2000), `early` on page 1,
  `late` on page `late_page` (1000, past the default max_pages of 500), one line a page.
- `zip_bomb_docx(unpacked)`: a valid docx with an extra member of zeros, `unpacked` bytes (201
  MiB, over the default max_unpacked of 200 MiB) deflated to a few hundred KiB; written through
  zipfile's streaming member writer, a chunk at a time.
- `huge_xml_docx(words, unpacked)`: a valid docx whose word/document.xml is `unpacked` bytes
  (under max_unpacked) of one-letter paragraphs: a parser building its tree wants several times
  that in memory.
- `truncated_pdf(words)`: a real 4-page pdf (`pdf`), its first half only.
- `encrypted_pdf(words, user_password)`: `pdf` encrypted by pypdf (AES-256); with an empty
  user password it opens without one (protected against editing only).
- `million_cell_xlsx(path)`: 1,000 rows of 1,000 number cells (openpyxl write-only mode).
- `random_bytes(size)`: random bytes, to be named as a .docx, .pdf, .xlsx, ...
"""

from __future__ import annotations

import csv as csv_lib
import io
import json
import secrets
import string
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

_LETTERS = string.ascii_lowercase


def marker_words(n: int) -> list[str]:
    """`n` distinct words no document holds by chance: "zq" and 10 random lowercase letters."""
    words: list[str] = []
    while len(words) < n:
        word = "zq" + "".join(secrets.choice(_LETTERS) for _ in range(10))
        if word not in words:
            words.append(word)
    return words


def _canvas_pdf(lines_of_page: Sequence[Sequence[str]]) -> bytes:
    """A PDF of one page per item, each line of it drawn with reportlab's canvas."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=A4, pageCompression=0, invariant=True)
    _, height = A4
    for lines in lines_of_page:
        y = height - 72
        for line in lines:
            c.drawString(72, y, line)
            y -= 14
        c.showPage()
    c.save()
    return out.getvalue()


def pdf(words: Sequence[str], pages: int = 1) -> bytes:
    """Every word on page 1, a line each; the other pages a line of filler each."""
    first = [f"Line {i}: {word}" for i, word in enumerate(words, 1)]
    return _canvas_pdf([first] + [[f"Filler page {n}"] for n in range(2, pages + 1)])


def many_pages_pdf(early: Sequence[str], late: Sequence[str], pages: int = 2000,
                   late_page: int = 1000) -> bytes:
    """`pages` pages of one line: `early` on page 1, `late` on page `late_page`."""
    assert 1 < late_page <= pages

    def page(n: int) -> list[str]:
        if n == 1:
            return [" ".join(early)]
        if n == late_page:
            return [" ".join(late)]
        return [f"Page {n}"]

    return _canvas_pdf([page(n) for n in range(1, pages + 1)])


def truncated_pdf(words: Sequence[str]) -> bytes:
    """A real 4-page PDF cut in half: its cross-reference table and trailer are gone."""
    whole = pdf(words, pages=4)
    return whole[:len(whole) // 2]


def encrypted_pdf(words: Sequence[str], user_password: str = "open sesame") -> bytes:
    """`pdf(words)` encrypted with AES-256; an empty `user_password` opens it without one."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf(words))))
    writer.encrypt(user_password=user_password, owner_password="owner " + secrets.token_hex(8),
                   algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _docx_document(words: Sequence[str]) -> bytes:
    import docx

    document = docx.Document()
    half = max(len(words) // 2, 1)
    document.add_heading(f"Heading {words[0]}", level=1)
    for word in words[1:half]:
        document.add_paragraph(f"A paragraph about {word}.")
    rest = list(words[half:])
    table = document.add_table(rows=0, cols=2)
    for i in range(0, len(rest), 2):
        cells = table.add_row().cells
        cells[0].text = rest[i]
        cells[1].text = rest[i + 1] if i + 1 < len(rest) else "end"
    document.add_paragraph("The end.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def docx(words: Sequence[str]) -> bytes:
    """A heading with the first word, a paragraph for each word of the first half, a table
    of the second half (two cells a row)."""
    assert len(words) >= 2
    return _docx_document(words)


def _copy_zip(source: bytes, target: zipfile.ZipFile, skip: str | None = None) -> None:
    with zipfile.ZipFile(io.BytesIO(source)) as z:
        for info in z.infolist():
            if info.filename != skip:
                target.writestr(info, z.read(info))


_CHUNK = 1024 * 1024


def zip_bomb_docx(unpacked: int = 201 * 1024 * 1024) -> bytes:
    """A valid docx (python-docx) with a member word/media/padding.bin of `unpacked` zeros,
    deflated at level 1, written a MiB at a time: the file is some hundreds of KiB."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        _copy_zip(_docx_document(["bomb", "docx"]), z)
        with z.open("word/media/padding.bin", "w", force_zip64=True) as member:
            zeros = bytes(_CHUNK)
            left = unpacked
            while left > 0:
                member.write(zeros[:min(left, _CHUNK)])
                left -= _CHUNK
    return out.getvalue()


def huge_xml_docx(words: Sequence[str], unpacked: int = 150 * 1024 * 1024) -> bytes:
    """A valid docx (python-docx's, then rewritten) whose word/document.xml, about `unpacked`
    bytes, is `words` as paragraphs followed by one-letter paragraphs up to that size."""
    source = _docx_document([*words, "x"])
    with zipfile.ZipFile(io.BytesIO(source)) as z:
        xml = z.read("word/document.xml")
    head, tail = xml.split(b"</w:body>")
    sect = head.rfind(b"<w:sectPr")  # the section properties stay the body's last child
    before, section = head[:sect], head[sect:]
    paragraph = b"<w:p><w:r><w:t>x</w:t></w:r></w:p>"
    block = paragraph * (_CHUNK // len(paragraph))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        _copy_zip(source, z, skip="word/document.xml")
        with z.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(before)
            written = len(before)
            while written < unpacked:
                member.write(block)
                written += len(block)
            member.write(section + b"</w:body>" + tail)
    return out.getvalue()


def xlsx(words: Sequence[str]) -> bytes:
    """The first half of the words in cells of a sheet "First", the rest in a sheet "Second"
    (down a column, and across a row), with a number and a blank cell between."""
    import openpyxl

    book = openpyxl.Workbook()
    first = book.active
    assert first is not None
    first.title = "First"
    second = book.create_sheet("Second")
    half = max(len(words) // 2, 1)
    for row, word in enumerate(words[:half], 1):
        first.cell(row=row, column=1, value=word)
        first.cell(row=row, column=3, value=row * 1.5)
    for column, word in enumerate(words[half:], 1):
        second.cell(row=2, column=column, value=word)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def million_cell_xlsx(path: Path, rows: int = 1000, columns: int = 1000) -> Path:
    """A workbook of `rows` x `columns` number cells (1,000,000) at `path`, written once."""
    if path.exists():
        return path
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Cells")
    for r in range(rows):
        base = r * columns
        sheet.append([base + c for c in range(columns)])
    partial = path.with_suffix(".partial")
    book.save(partial)
    partial.rename(path)
    return path


def pptx(words: Sequence[str]) -> bytes:
    """Two slides (title and content): a title word and body words each, the last word in
    the second slide's speaker notes."""
    from pptx import Presentation

    assert len(words) >= 4
    deck = Presentation()
    layout = deck.slide_layouts[1]
    notes_word = words[-1]
    body = list(words[1:-1])
    half = max(len(body) // 2, 1)
    for number, (title, lines) in enumerate(((words[0], body[:half]),
                                             (f"Slide two {words[0]}", body[half:])), 1):
        slide = deck.slides.add_slide(layout)
        assert slide.shapes.title is not None
        slide.shapes.title.text = title
        frame = slide.placeholders[1].text_frame
        frame.text = lines[0] if lines else "nothing"
        for line in lines[1:]:
            frame.add_paragraph().text = line
        if number == 2:
            notes = slide.notes_slide.notes_text_frame
            assert notes is not None
            notes.text = f"Say {notes_word} here."
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def odt(words: Sequence[str]) -> bytes:
    """An OpenDocument text: a heading (text:h) with the first word, a paragraph (text:p) for
    each of the others, the last in a span."""
    from odf import text
    from odf.opendocument import OpenDocumentText

    document = OpenDocumentText()
    document.text.addElement(text.H(outlinelevel=1, text=f"Heading {words[0]}"))
    for word in words[1:-1]:
        document.text.addElement(text.P(text=f"A paragraph about {word}."))
    last = text.P(text="And ")
    last.addElement(text.Span(text=words[-1]))
    document.text.addElement(last)
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def html(words: Sequence[str]) -> bytes:
    """A page: the first word in the title and heading, then a paragraph, a list, a table."""
    first, *rest = words
    third = max(len(rest) // 3, 1)
    items = "".join(f"<li>{w}</li>" for w in rest[third:2 * third])
    cells = "".join(f"<tr><td>{w}</td><td>x</td></tr>" for w in rest[2 * third:])
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{first}</title>"
            "<style>p { color: red }</style><script>var hidden = 1;</script></head>"
            f"<body><h1>About {first}</h1><p>{' '.join(rest[:third])}</p><ul>{items}</ul>"
            f"<table>{cells}</table></body></html>")
    return page.encode()


def csv(words: Sequence[str]) -> bytes:
    """A header row, then a row per word: an index, the word, a quoted field with a comma."""
    out = io.StringIO()
    writer = csv_lib.writer(out)
    writer.writerow(["n", "word", "note"])
    for i, word in enumerate(words, 1):
        writer.writerow([i, word, f"see {i}, again"])
    return out.getvalue().encode()


def markdown(words: Sequence[str]) -> bytes:
    """A heading, an emphasised word in a paragraph, a list, and a code block."""
    first, second, *rest = words
    lines = [f"# {first}", "", f"Some *{second}* text.", ""]
    lines += [f"- {w}" for w in rest[:-1]]
    lines += ["", "```", f"code {rest[-1] if rest else first}", "```", ""]
    return "\n".join(lines).encode()


def json_doc(words: Sequence[str]) -> bytes:
    """An object on one line: words as values at several depths, in arrays and objects."""
    doc = {"top": words[0],
           "nested": {"list": list(words[1:-1]),
                      "deeper": {"value": words[-1], "count": len(words), "ok": True}},
           "records": [{"id": i, "name": w} for i, w in enumerate(words)]}
    return json.dumps(doc).encode()


def ics(words: Sequence[str]) -> bytes:
    """A METHOD:REQUEST calendar of one VEVENT: SUMMARY the first word, LOCATION the second,
    DESCRIPTION the rest."""
    import icalendar

    assert len(words) >= 3
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//postroom tests//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "REQUEST")
    event = icalendar.Event()
    start = datetime(2030, 5, 17, 9, 30, tzinfo=UTC)
    event.add("uid", f"{secrets.token_hex(8)}@tests.postroom")
    event.add("dtstamp", start - timedelta(days=3))
    event.add("dtstart", start)
    event.add("dtend", start + timedelta(hours=1))
    event.add("summary", f"Meeting on {words[0]}")
    event.add("location", f"Room {words[1]}")
    event.add("description", "Agenda: " + ", ".join(words[2:]))
    calendar.add_component(event)
    data: bytes = calendar.to_ical()
    return data


def eml(words: Sequence[str]) -> bytes:
    """A message (what a message/rfc822 attachment holds): the first word in its subject,
    the others in its text/plain body, a line each."""
    message = EmailMessage()
    message["From"] = "Carol <carol@example.test>"
    message["To"] = "dave@example.test"
    message["Date"] = "Fri, 17 May 2030 09:30:00 +0000"
    message["Subject"] = f"Report on {words[0]}"
    message["Message-ID"] = f"<{secrets.token_hex(8)}@example.test>"
    message.set_content("Hello,\n\n" + "\n".join(f"Item: {w}" for w in words[1:]) +
                        "\n\nRegards,\nCarol\n")
    return message.as_bytes()


def random_bytes(size: int = 16 * 1024) -> bytes:
    """`size` random bytes (no format's magic: they are not a zip, a PDF, an OLE file)."""
    while True:
        data = secrets.token_bytes(size)
        if not data.startswith((b"PK", b"%PDF", b"\xd0\xcf")):
            return data
