"""An attachment's text (SPEC §15): `daemon.content.document_kind` and `read_document` on
documents generated around random marker words (tests/content/documents.py), each format and
its limits, hostile documents (a 2000-page PDF, a zip bomb, an encrypted and a truncated PDF,
a million cells, random bytes), and the content pool that reads them in killable, capped
worker processes (`daemon.pipeline.content_pool.ContentPool`).

Error messages are never asserted, only statuses and fields. Nothing here measures time: the
big documents are made once per module (the million-cell workbook once per session), and a
read that would never end fails the test through the pool's own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest

from daemon.content import (
    ENCRYPTED,
    FAILED,
    READY,
    TOO_LARGE,
    ContentLimits,
    DocumentText,
    document_kind,
    read_document,
)
from daemon.extract_worker import extract_to_files
from daemon.pipeline.content_pool import ContentPool, ContentSettings, ReadText
from extractors import Limits
from storage.spool import spool_name
from tests.content import documents

MiB = 1024 * 1024
OOXML = "application/vnd.openxmlformats-officedocument."
OCTETS = "application/octet-stream"
# Limits no test document reaches: only the pool's timeout stops a reader.
UNLIMITED = ContentLimits(max_text_chars=10**9, max_pages=10**6, max_unpacked=10**12)

@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    make: Callable[[Sequence[str]], bytes]
    file_name: str
    content_type: str
    kind: str


FORMATS = [
    Format("pdf", documents.pdf, "report.pdf", "application/pdf", "pdf"),
    Format("docx", documents.docx, "letter.docx", OOXML + "wordprocessingml.document", "docx"),
    Format("xlsx", documents.xlsx, "figures.xlsx", OOXML + "spreadsheetml.sheet", "xlsx"),
    Format("pptx", documents.pptx, "deck.pptx", OOXML + "presentationml.presentation", "pptx"),
    Format("odt", documents.odt, "notes.odt", "application/vnd.oasis.opendocument.text", "odf"),
    Format("html", documents.html, "page.html", "text/html; charset=utf-8", "html"),
    Format("csv", documents.csv, "table.csv", "text/csv", "csv"),
    Format("markdown", documents.markdown, "readme.md", "text/markdown", "markdown"),
    Format("json", documents.json_doc, "data.json", "application/json", "json"),
    Format("ics", documents.ics, "invite.ics", "text/calendar; method=REQUEST", "calendar"),
    Format("eml", documents.eml, "forwarded.eml", "message/rfc822", "eml"),
]
BY_NAME = {f.name: f for f in FORMATS}


def _params(marks: dict[str, pytest.MarkDecorator]) -> list[object]:
    return [pytest.param(f, id=f.name, marks=[marks[f.name]] if f.name in marks else [])
            for f in FORMATS]


@pytest.fixture
def words() -> list[str]:
    return documents.marker_words(8)


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def _missing(words: Sequence[str], text: str) -> list[str]:
    return [w for w in words if w not in text]


# The big documents: made once.

@pytest.fixture(scope="module")
def big_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("big")


@pytest.fixture(scope="module")
def early_late() -> tuple[list[str], list[str]]:
    found = documents.marker_words(6)
    return found[:3], found[3:]


@pytest.fixture(scope="module")
def many_pages(big_dir: Path, early_late: tuple[list[str], list[str]]) -> Path:
    """2000 pages: markers on page 1 and on page 1000."""
    early, late = early_late
    return _write(big_dir, "many.pdf",
                  documents.many_pages_pdf(early, late, pages=2000, late_page=1000))


@pytest.fixture(scope="module")
def zip_bomb(big_dir: Path) -> Path:
    return _write(big_dir, "bomb.docx", documents.zip_bomb_docx())


@pytest.fixture(scope="module")
def huge_xml(big_dir: Path) -> Path:
    return _write(big_dir, "huge.docx", documents.huge_xml_docx(documents.marker_words(2)))


@pytest.fixture(scope="session")
def million_cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return documents.million_cell_xlsx(tmp_path_factory.mktemp("million") / "cells.xlsx")


# Which reader.

@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
def test_document_kind_from_the_type_and_from_the_name(fmt: Format) -> None:
    assert document_kind(fmt.content_type, fmt.file_name) == fmt.kind
    assert document_kind(fmt.content_type.upper(), "attachment") == fmt.kind
    assert document_kind(OCTETS, fmt.file_name) == fmt.kind
    assert document_kind(OCTETS, fmt.file_name.upper()) == fmt.kind


def test_document_kind_from_the_sniffed_type_and_none_without_one() -> None:
    assert document_kind(OCTETS, "noname", "application/pdf") == "pdf"
    assert document_kind(OCTETS, "noname", OOXML + "spreadsheetml.sheet") == "xlsx"
    assert document_kind("text/plain", "data.csv") == "csv"  # a text/plain named .csv
    assert document_kind("text/plain", "notes") == "text"
    assert document_kind("text/x-weird", "notes") == "text"
    assert document_kind("application/ld+json", "x") == "json"
    for content_type, name in ((OCTETS, "noname"), ("image/png", "photo.png"),
                               ("application/zip", "archive.zip"), (OCTETS, "archive.tar.gz")):
        assert document_kind(content_type, name) is None
        assert document_kind(content_type, name, None) is None


# Each format.

@pytest.mark.parametrize("fmt", _params({}))
def test_each_format_reads_every_marker(fmt: Format, words: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path, fmt.file_name, fmt.make(words))
    kind = document_kind(OCTETS, fmt.file_name)
    assert kind == fmt.kind
    found = read_document(str(path), kind, ContentLimits())
    assert isinstance(found, DocumentText)
    assert found.status == READY, found.error
    assert found.error is None
    assert not found.truncated
    assert _missing(words, found.text) == []


@pytest.mark.parametrize("fmt", _params({}))
def test_each_format_reads_from_a_spool_file_without_a_suffix(
        fmt: Format, words: list[str], tmp_path: Path) -> None:
    """The daemon's attachment files are named by `spool_name` ("spool-<pid>-x<hex>")."""
    path = spool_name(tmp_path, "x")
    path.write_bytes(fmt.make(words))
    found = read_document(str(path), fmt.kind, ContentLimits())
    assert found.status == READY, found.error
    assert _missing(words, found.text) == []


# Limits.

@pytest.mark.parametrize("fmt", _params({}))
@pytest.mark.parametrize("limit", [20, 60])
def test_max_text_chars_truncates(fmt: Format, limit: int, words: list[str],
                                  tmp_path: Path) -> None:
    path = _write(tmp_path, fmt.file_name, fmt.make(words))
    whole = read_document(str(path), fmt.kind, ContentLimits())
    assert whole.status == READY, whole.error
    assert len(whole.text) > limit
    found = read_document(str(path), fmt.kind, ContentLimits(max_text_chars=limit))
    assert found.status == READY, found.error
    assert found.truncated
    assert len(found.text) <= limit


@pytest.mark.parametrize("name", ["pdf", "docx", "pptx", "csv", "markdown", "eml"])
def test_a_truncated_text_is_the_start_of_the_whole(name: str, words: list[str],
                                                    tmp_path: Path) -> None:
    """Readers that read the whole structure and stop at the sink keep its start."""
    fmt = BY_NAME[name]
    path = _write(tmp_path, fmt.file_name, fmt.make(words))
    whole = read_document(str(path), fmt.kind, ContentLimits()).text
    for limit in (len(whole) // 3, len(whole) // 2, len(whole) - 1):
        found = read_document(str(path), fmt.kind, ContentLimits(max_text_chars=limit))
        assert found.status == READY and found.truncated
        assert 0 < len(found.text) <= limit
        assert whole.startswith(found.text)


def test_a_text_of_exactly_the_limit_is_not_truncated(words: list[str], tmp_path: Path) -> None:
    content = f"# {words[0]}\n\n" + " ".join(words[1:])
    path = _write(tmp_path, "exact.md", content.encode())
    found = read_document(str(path), "markdown", ContentLimits(max_text_chars=len(content)))
    assert found.status == READY
    assert found.text == content
    assert not found.truncated


def test_max_pages_stops_a_2000_page_pdf(many_pages: Path,
                                         early_late: tuple[list[str], list[str]]) -> None:
    early, late = early_late
    found = read_document(str(many_pages), "pdf", ContentLimits(max_pages=500))
    assert found.status == READY, found.error
    assert found.truncated
    assert _missing(early, found.text) == []
    assert [w for w in late if w in found.text] == []
    # The page-1000 markers are there to be read: a limit past that page reads them.
    further = read_document(str(many_pages), "pdf", ContentLimits(max_pages=1000))
    assert further.status == READY and further.truncated
    assert _missing(early + late, further.text) == []


def test_max_pages_stops_a_presentation(words: list[str], tmp_path: Path) -> None:
    """`documents.pptx` has two slides; the first slide's title is words[0]."""
    path = _write(tmp_path, "deck.pptx", documents.pptx(words))
    found = read_document(str(path), "pptx", ContentLimits(max_pages=1))
    assert found.status == READY and found.truncated
    assert words[0] in found.text
    assert words[-1] not in found.text  # the second slide's notes
    assert read_document(str(path), "pptx", ContentLimits(max_pages=2)).truncated is False


# Hostile documents.

def test_a_zip_bomb_docx_is_too_large(zip_bomb: Path) -> None:
    assert zip_bomb.stat().st_size < 2 * MiB
    found = read_document(str(zip_bomb), "docx", ContentLimits())
    assert found.status == TOO_LARGE
    assert found.text == "" and found.error
    # Under a higher max_unpacked it is the valid docx it is.
    opened = read_document(str(zip_bomb), "docx", ContentLimits(max_unpacked=300 * MiB))
    assert opened.status == READY, opened.error


def test_an_encrypted_pdf_is_encrypted(words: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path, "secret.pdf", documents.encrypted_pdf(words))
    found = read_document(str(path), "pdf", ContentLimits())
    assert found.status == ENCRYPTED
    assert found.text == "" and found.error
    assert _missing(words, found.text) == words


def test_a_pdf_encrypted_against_editing_only_is_read(words: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path, "protected.pdf", documents.encrypted_pdf(words, user_password=""))
    found = read_document(str(path), "pdf", ContentLimits())
    assert found.status == READY, found.error
    assert _missing(words, found.text) == []


def test_a_truncated_pdf_fails_or_gives_what_it_could_read(words: list[str],
                                                           tmp_path: Path) -> None:
    path = _write(tmp_path, "cut.pdf", documents.truncated_pdf(words))
    found = read_document(str(path), "pdf", ContentLimits())
    assert isinstance(found, DocumentText)
    # Measured: failed (pypdf cannot rebuild the document without its trailer). A reader
    # that recovers the first page is as right, as long as what it gives is the document's.
    assert found.status in (FAILED, READY)
    if found.status == FAILED:
        assert found.error and found.text == ""
    else:
        assert found.error is None
        assert found.text == "" or any(w in found.text for w in words)


def test_a_million_cells_are_truncated_at_max_text_chars(million_cells: Path) -> None:
    limits = ContentLimits()
    found = read_document(str(million_cells), "xlsx", limits)
    assert found.status == READY, found.error
    assert found.truncated
    assert 0 < len(found.text) <= limits.max_text_chars
    assert found.text.startswith("# Cells\n0\t1\t2\t")


@pytest.mark.parametrize("name", ["x.docx", "x.xlsx", "x.pptx", "x.pdf", "x.odt", "x.docm",
                                  "x.ods"])
def test_random_bytes_named_as_a_document_fail(name: str, tmp_path: Path) -> None:
    for n in range(3):
        path = _write(tmp_path, f"{n}{name}", documents.random_bytes())
        kind = document_kind(OCTETS, path.name)
        assert kind is not None
        found = read_document(str(path), kind, ContentLimits())
        assert found.status == FAILED
        assert isinstance(found.error, str) and found.error
        assert found.text == "" and not found.truncated


def test_a_zip_that_is_no_document_fails(tmp_path: Path) -> None:
    path = tmp_path / "not.docx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hello")
    for kind in ("docx", "xlsx", "pptx", "odf"):
        found = read_document(str(path), kind, ContentLimits())
        assert found.status == FAILED, kind
        assert found.error


# The content pool.

@contextlib.asynccontextmanager
async def _pool(settings: ContentSettings) -> AsyncIterator[ContentPool]:
    """A pool, closed at the end, its workers waited for (they exit on their stdin's EOF)."""
    pool = ContentPool(settings)
    try:
        yield pool
    finally:
        procs = [w.proc for w in pool._idle]
        pool.close()
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 30)


async def _read(pool: ContentPool, path: Path, kind: str, out_dir: Path) -> ReadText:
    return await pool.read(str(path), kind, out_dir, path.stat().st_size)


def _text_of(read: ReadText, out_dir: Path) -> str:
    assert read.status == READY, read.error
    assert read.file is not None
    file = Path(read.file)
    assert file.parent == out_dir
    text = file.read_bytes().decode("utf-8")
    assert read.size == len(text)
    return text


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


async def test_the_pool_reads_a_docx_into_a_file(words: list[str], tmp_path: Path,
                                                 out_dir: Path) -> None:
    path = _write(tmp_path, "letter.docx", documents.docx(words))
    async with _pool(ContentSettings()) as pool:
        read = await _read(pool, path, "docx", out_dir)
    text = _text_of(read, out_dir)
    assert _missing(words, text) == []
    assert read.head == text  # shorter than index_chars
    assert _missing(words, read.head) == []
    assert not read.truncated and read.error is None
    assert text == read_document(str(path), "docx", ContentLimits()).text


async def test_the_pool_reads_every_format(tmp_path: Path, out_dir: Path) -> None:
    """Every format through one worker, the head cut at index_chars; ODF included (the
    worker does not turn warnings into errors)."""
    async with _pool(ContentSettings(index_chars=40, processes=1)) as pool:
        for fmt in FORMATS:
            words = documents.marker_words(8)
            path = _write(tmp_path, fmt.file_name, fmt.make(words))
            read = await _read(pool, path, fmt.kind, out_dir)
            text = _text_of(read, out_dir)
            assert _missing(words, text) == [], fmt.name
            assert read.head == text[:40]
            assert not read.truncated
        assert pool.workers == 1
    assert len(list(out_dir.iterdir())) == len(FORMATS)


async def test_the_pool_reads_concurrently_within_its_processes(
        tmp_path: Path, out_dir: Path) -> None:
    async with _pool(ContentSettings(processes=2)) as pool:
        jobs = []
        for i in range(5):
            words = documents.marker_words(4)
            path = _write(tmp_path, f"{i}.docx", documents.docx(words))
            jobs.append((words, _read(pool, path, "docx", out_dir)))
        reads = await asyncio.gather(*(job for _, job in jobs))
        assert 1 <= pool.workers <= 2
    for (words, _), read in zip(jobs, reads, strict=True):
        assert _missing(words, _text_of(read, out_dir)) == []


@pytest.mark.parametrize("hostile", ["many_pages", "million_cells"])
async def test_a_reader_past_the_timeout_is_killed_and_the_pool_reads_on(
        hostile: str, request: pytest.FixtureRequest, words: list[str], tmp_path: Path,
        out_dir: Path) -> None:
    path: Path = request.getfixturevalue(hostile)
    kind = "pdf" if hostile == "many_pages" else "xlsx"
    docx = _write(tmp_path, "letter.docx", documents.docx(words))
    async with _pool(ContentSettings(limits=UNLIMITED, timeout=30, processes=1)) as pool:
        # A warm worker first: the timeout covers a new worker's start and imports too, which
        # alone can take 0.2 s; this way it is the reading that is timed.
        assert (await _read(pool, docx, "docx", out_dir)).status == READY
        pool.settings = dataclasses.replace(pool.settings, timeout=0.2)
        read = await _read(pool, path, kind, out_dir)
        assert read.status == FAILED
        assert read.error and read.file is None and read.head == ""
        assert pool.killed == 1
        assert pool.workers == 0
        pool.settings = dataclasses.replace(pool.settings, timeout=30)
        again = await _read(pool, docx, "docx", out_dir)
        assert _missing(words, _text_of(again, out_dir)) == []
        assert pool.killed == 1
        assert pool.workers == 1
    assert len(list(out_dir.iterdir())) == 2  # the two docx reads; nothing of the killed one


async def test_the_minimum_max_memory_bounds_hostile_documents(
        zip_bomb: Path, huge_xml: Path, words: list[str], tmp_path: Path,
        out_dir: Path) -> None:
    docx = _write(tmp_path, "letter.docx", documents.docx(words))
    settings = ContentSettings(max_memory=256 * MiB, timeout=60, processes=1)
    async with _pool(settings) as pool:
        bomb = await _read(pool, zip_bomb, "docx", out_dir)
        assert bomb.status == TOO_LARGE and bomb.file is None
        # 150 MiB of XML (under max_unpacked): its tree does not fit in 256 MiB.
        huge = await _read(pool, huge_xml, "docx", out_dir)
        assert huge.status in (TOO_LARGE, FAILED)
        assert huge.error and huge.file is None
        again = await _read(pool, docx, "docx", out_dir)
        assert _missing(words, _text_of(again, out_dir)) == []
        assert pool.killed == 0


async def test_the_pool_reads_hostile_pdfs_without_raising(
        many_pages: Path, early_late: tuple[list[str], list[str]], words: list[str],
        tmp_path: Path, out_dir: Path) -> None:
    encrypted = _write(tmp_path, "secret.pdf", documents.encrypted_pdf(words))
    cut = _write(tmp_path, "cut.pdf", documents.truncated_pdf(words))
    noise = _write(tmp_path, "noise.pdf", documents.random_bytes())
    async with _pool(ContentSettings(processes=1)) as pool:
        assert (await _read(pool, encrypted, "pdf", out_dir)).status == ENCRYPTED
        assert (await _read(pool, cut, "pdf", out_dir)).status in (FAILED, READY)
        failed = await _read(pool, noise, "pdf", out_dir)
        assert failed.status == FAILED and failed.error and failed.file is None
        many = await _read(pool, many_pages, "pdf", out_dir)
        assert many.truncated
        early, late = early_late
        text = _text_of(many, out_dir)
        assert _missing(early, text) == [] and [w for w in late if w in text] == []
        assert pool.killed == 0 and pool.workers == 1


async def test_a_file_over_max_file_size_is_too_large_without_a_worker(
        words: list[str], tmp_path: Path, out_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "letter.docx", documents.docx(words))
    size = path.stat().st_size
    async with _pool(ContentSettings(max_file_size=size - 1)) as pool:

        async def no_spawn() -> None:
            raise AssertionError("a worker was started")

        with monkeypatch.context() as patch:
            patch.setattr(pool, "_spawn", no_spawn)
            read = await pool.read(str(path), "docx", out_dir, size)
        assert read.status == TOO_LARGE and read.file is None and read.error
        assert pool.workers == 0
        pool.settings = dataclasses.replace(pool.settings, max_file_size=size)
        at_limit = await pool.read(str(path), "docx", out_dir, size)
        assert _missing(words, _text_of(at_limit, out_dir)) == []
    assert len(list(out_dir.iterdir())) == 1


def _message(attachments: Sequence[tuple[Format, bytes]]) -> bytes:
    message = EmailMessage()
    message["From"] = "a@example.test"
    message["To"] = "b@example.test"
    message["Subject"] = "documents"
    message.set_content("See the attachments.\n")
    for fmt, data in attachments:
        maintype, subtype = fmt.content_type.split(";")[0].split("/")
        if maintype == "message":
            message.add_attachment(data, maintype="application", subtype="octet-stream",
                                   filename=fmt.file_name)
        else:
            message.add_attachment(data, maintype=maintype, subtype=subtype,
                                   filename=fmt.file_name)
    return message.as_bytes()


async def _texts(names: Sequence[str], tmp_path: Path,
                 out_dir: Path) -> list[tuple[list[str], ReadText, str | None]]:
    """A message with one attachment of each named format, extracted as the daemon does
    (`extract_to_files`: each attachment in a spool file), then its attachments read by
    `ContentPool.texts`: (words, what reading came to, the text) per attachment."""
    made = [(documents.marker_words(6), BY_NAME[n]) for n in names]
    raw = _message([(fmt, fmt.make(w)) for w, fmt in made])
    extracted = extract_to_files(raw, Limits(), str(out_dir))
    async with _pool(ContentSettings(processes=2)) as pool:
        await pool.texts(extracted, out_dir)
    parts = extracted.found.attachments
    assert len(parts) == len(made)
    found = []
    for (w, _), part in zip(made, parts, strict=True):
        read = extracted.texts[part.index]
        text = None
        if read.status == READY:
            assert extracted.files[f"t{part.index}"] == read.file
            text = _text_of(read, out_dir)
        found.append((w, read, text))
    return found


async def test_a_messages_attachments_are_read_by_the_pool(tmp_path: Path,
                                                           out_dir: Path) -> None:
    names = ["pdf", "docx", "pptx", "odt", "html", "csv", "json", "ics", "eml"]
    for words, read, text in await _texts(names, tmp_path, out_dir):
        assert read.status == READY, read.error
        assert text is not None and _missing(words, text) == []


async def test_a_messages_xlsx_attachment_is_read_by_the_pool(tmp_path: Path,
                                                              out_dir: Path) -> None:
    [(words, read, text)] = await _texts(["xlsx"], tmp_path, out_dir)
    assert read.status == READY, read.error
    assert text is not None and _missing(words, text) == []
