"""What reading attachments' text costs (issue 22 item 7): per format, and for small mail.

    .venv/bin/python -m bench.content                  # full: ~9 min on 2 noisy cores
    .venv/bin/python -m bench.content --quick          # smoke: small docs, 1 A/B pair, ~1 min
    .venv/bin/python -m bench.content --no-ab          # the per-format table only, ~2 min
    .venv/bin/python -m bench.content --no-formats --variants plain,small --ab-repeats 3

Both parts measure the same postroom: `--head-src` (default `head`, a `git archive` of HEAD,
so an engineer's uncommitted edits are not measured; `worktree` for those), against
`--base-src` (default 674d4cf, the commit before content reading) in the A/B.

1. **Per format.** A document of each format the readers know (`daemon.content.formats`),
   made here with the library that writes it, about `--chars` (900,000) characters of
   prose-like text in it, under `content.max_text_chars`, so nothing is cut: a PDF of many
   pages, a DOCX of paragraphs and a table, an XLSX of many rows, a PPTX of many slides, an
   ODT, HTML, CSV, Markdown, one-line JSON, an ICS of many events, an EML and a plain text
   file. Each is read through a real `ContentPool` (the daemon's defaults but `content.timeout`
   raised to `--timeout`, so that a slow reader is measured, not killed; a read over the
   daemon's default timeout is flagged), after a first read of a small document of the same
   format (the worker's start, its libraries) and one warm-up read, one read at a time: wall
   seconds of `pool.read`, CPU of the worker (its /proc schedstat, in ns), CPU of this
   process (the daemon's side: pipes and unpickling, or the whole read for kinds the pool
   reads in a thread), the worker's RSS; then `read_document` in this process. The small
   documents of tests/content/documents.py (40 marker words) give each format's fixed cost.
2. **Small-mail throughput, content reading on against off.** A fresh postroom per run,
   HEAD and base alternating, `--ab-repeats` a side, `bench.smtp_load` at c=16 closed loop for
   `--seconds` (saturating; `pipeline.max_lag` holds SMTP back while extraction lags, so
   msgs/s is what the whole pipeline sustains). Variants: `plain`, a text/plain message and no
   attachment; `small`, the small workload (one 20,000 B attachment of random bytes labelled
   application/octet-stream: not a document, but the 1 in 256 that starts with "{" is sniffed
   as application/json and read as JSON); `pdf`, a one-page PDF of text per message (mail with
   a document). CPU ms per message is postroom's process tree (daemon, extraction worker,
   content workers) from the load's start until the tree is quiet after it. `[auth] enabled =
   false` on both sides (its DNS waits and verifier process are sender authentication's cost,
   measured by bench/sender_auth.py). After each run its database is read: messages by status,
   attachments by text status and sniffed type.

Records (JSON lines) go to results/content.jsonl: a `content_run` header, a `content_format`
line per format and size, a `content_ab_run` per load and a `content_ab` summary per variant;
`bench.report` renders the latest run's in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "content.jsonl"
BASELINE = "674d4cf"  # the commit before content reading (issue 22)
TARGET_CHARS = 900_000  # text in each large document: under content.max_text_chars (1,000,000)
MB = 1_000_000
REPO = Path(__file__).resolve().parents[1]
CONFIG = "\n[auth]\nenabled = false\n"


# --------------------------------------------------------------------------- prose

_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if so "
    "no will more can said who them some could into other time about these than only its two "
    "may first then do any like my now over such our man me even most made after also did "
    "many before must through back years where much your way well down should because each "
    "just those people how too little state good very make world still own see men work long "
    "get here between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three invoice payment "
    "order delivery contract meeting schedule report budget quarter revenue customer account "
    "shipment warehouse supplier review project deadline agreement proposal summary total "
    "amount balance reference number attached document section page table figure results "
    "analysis estimate request approval signature department office manager team client "
    "service support ticket issue update version release draft final notes minutes agenda"
)
_VOCABULARY = _WORDS.split()


class Prose:
    """Seeded, prose-like English: sentences of common words, capitalised, punctuated."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def words(self, n: int) -> list[str]:
        return self.rng.choices(_VOCABULARY, k=n)

    def sentence(self) -> str:
        words = self.words(self.rng.randint(6, 18))
        return " ".join(words).capitalize() + self.rng.choice(".....?!")

    def text(self, chars: int) -> str:
        """Sentences until about `chars` characters (a paragraph)."""
        out: list[str] = []
        size = 0
        while size < chars:
            s = self.sentence()
            out.append(s)
            size += len(s) + 1
        return " ".join(out)

    def line(self, width: int) -> str:
        """About `width` characters of words (a line of a page)."""
        out: list[str] = []
        size = 0
        while size < width:
            w = self.rng.choice(_VOCABULARY)
            out.append(w)
            size += len(w) + 1
        return " ".join(out)


# --------------------------------------------------------------------------- large documents

def big_pdf(p: Prose, chars: int) -> bytes:
    """Pages of 50 lines of ~95 characters (Helvetica 9 pt on A4), compressed as most PDF
    writers do: ~4,800 characters a page."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=A4, pageCompression=1, invariant=True)
    _, height = A4
    size = 0
    page = 0
    while size < chars:
        page += 1
        c.setFont("Helvetica", 9)
        y = height - 60
        c.drawString(60, y, f"Report page {page}")
        for _ in range(50):
            y -= 14
            line = p.line(95)
            c.drawString(60, y, line)
            size += len(line) + 1
        c.showPage()
    c.save()
    return out.getvalue()


def big_docx(p: Prose, chars: int) -> bytes:
    """Headings every 20 paragraphs of ~400 characters; a 3-column table of 200 rows ends it."""
    import docx

    document = docx.Document()
    size = 0
    n = 0
    table_chars = 200 * 3 * 30
    while size < chars - table_chars:
        if n % 20 == 0:
            document.add_heading(p.sentence(), level=2)
        text = p.text(400)
        document.add_paragraph(text)
        size += len(text) + 1
        n += 1
    table = document.add_table(rows=200, cols=3)
    for row in table.rows:
        for cell in row.cells:
            cell.text = p.line(28)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def big_xlsx(p: Prose, chars: int) -> bytes:
    """One sheet of rows: an id, a date, a name, a ~50-character description, an amount and a
    quantity (~110 characters a row as text)."""
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Orders")
    sheet.append(["id", "date", "customer", "description", "amount", "quantity"])
    size = 0
    day = datetime(2026, 1, 1)
    row = 0
    while size < chars:
        row += 1
        values: list[Any] = [row, (day + timedelta(hours=row)).strftime("%Y-%m-%d %H:%M"),
                             " ".join(p.words(2)).title(), p.line(50),
                             round(p.rng.uniform(1, 10_000), 2), p.rng.randint(1, 500)]
        sheet.append(values)
        size += sum(len(str(v)) + 1 for v in values)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def big_pptx(p: Prose, chars: int) -> bytes:
    """Slides of a title and 12 bullets of ~150 characters, speaker notes of ~400 (~2,300
    characters a slide: ~400 slides, under content.max_pages)."""
    from pptx import Presentation

    deck = Presentation()
    layout = deck.slide_layouts[1]
    size = 0
    while size < chars:
        slide = deck.slides.add_slide(layout)
        assert slide.shapes.title is not None
        title = p.sentence()
        slide.shapes.title.text = title
        frame = slide.placeholders[1].text_frame
        bullets = [p.text(150) for _ in range(12)]
        frame.text = bullets[0]
        for b in bullets[1:]:
            frame.add_paragraph().text = b
        notes = p.text(400)
        notes_frame = slide.notes_slide.notes_text_frame
        assert notes_frame is not None
        notes_frame.text = notes
        size += len(title) + sum(len(b) + 1 for b in bullets) + len(notes) + 16
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def big_odt(p: Prose, chars: int) -> bytes:
    """Headings (text:h) every 20 paragraphs (text:p) of ~400 characters."""
    from odf import text
    from odf.opendocument import OpenDocumentText

    document = OpenDocumentText()
    size = 0
    n = 0
    while size < chars:
        if n % 20 == 0:
            document.text.addElement(text.H(outlinelevel=2, text=p.sentence()))
        t = p.text(400)
        document.text.addElement(text.P(text=t))
        size += len(t) + 1
        n += 1
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def big_html(p: Prose, chars: int) -> bytes:
    """A styled page: sections of a heading, paragraphs, a list and a small table, in divs with
    classes (a newsletter or a report exported as HTML)."""
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Report</title>"
             "<style>body { font-family: sans-serif } .note { color: #555 }</style></head>"
             "<body>"]
    size = 0
    while size < chars:
        h = p.sentence()
        paras = [p.text(400) for _ in range(4)]
        items = [p.line(40) for _ in range(5)]
        cells = [[p.line(15), p.line(15), f"{p.rng.uniform(0, 1e4):.2f}"] for _ in range(4)]
        parts.append(
            f"<div class='section'><h2>{h}</h2>"
            + "".join(f"<p class='note'>{x}</p>" for x in paras)
            + "<ul>" + "".join(f"<li>{x}</li>" for x in items) + "</ul><table>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)
            + "</table></div>\n")
        size += len(h) + sum(len(x) + 2 for x in paras) + sum(len(x) + 3 for x in items)
        size += sum(len(c) + 1 for row in cells for c in row)
    parts.append("</body></html>")
    return "".join(parts).encode()


def big_csv(p: Prose, chars: int) -> bytes:
    """A header and rows like an export: id, date, name, quoted description, amount."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "date", "customer", "description", "amount"])
    row = 0
    while out.tell() < chars:
        row += 1
        writer.writerow([row, f"2026-{row % 12 + 1:02d}-{row % 28 + 1:02d}",
                         " ".join(p.words(2)).title(), p.line(60) + ", " + p.line(10),
                         f"{p.rng.uniform(1, 10_000):.2f}"])
    return out.getvalue().encode()


def big_markdown(p: Prose, chars: int) -> bytes:
    """Sections: a heading, paragraphs with emphasis, a list, now and then a code block."""
    lines: list[str] = []
    size = 0
    n = 0
    while size < chars:
        n += 1
        block = [f"## {p.sentence()}", "", p.text(400).replace(" the ", " *the* ", 1), "",
                 p.text(300), ""] + [f"- {p.line(40)}" for _ in range(4)] + [""]
        if n % 5 == 0:
            block += ["```", *(f"value_{i} = {p.rng.randint(0, 999)}" for i in range(4)),
                      "```", ""]
        lines += block
        size += sum(len(x) + 1 for x in block)
    return "\n".join(lines).encode()


def big_json(p: Prose, chars: int) -> bytes:
    """An API dump on one line (the reader indents it): records of nested objects and
    arrays. Sized so that the indented text stays about `chars` long."""
    records: list[dict[str, Any]] = []
    size = 0
    while size < chars:
        rec = {"id": len(records) + 1, "name": " ".join(p.words(2)).title(),
               "description": p.text(120), "tags": p.words(3),
               "price": {"amount": round(p.rng.uniform(1, 1e4), 2), "currency": "EUR"},
               "active": p.rng.random() < 0.5}
        records.append(rec)
        shown = json.dumps(rec, indent=2)
        size += len(shown) + 4 * (shown.count("\n") + 1) + 2  # indented twice more in place
    return json.dumps({"count": len(records), "items": records}).encode()


def big_ics(p: Prose, chars: int) -> bytes:
    """A calendar export: VEVENTs with summary, location, organizer, attendees and a ~400
    character description."""
    import icalendar

    cal = icalendar.Calendar()
    cal.add("prodid", "-//postroom bench//EN")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    start = datetime(2030, 1, 6, 9, 0, tzinfo=UTC)
    size = 0
    n = 0
    while size < chars:
        n += 1
        ev = icalendar.Event()
        ev.add("uid", f"{n}-{secrets.token_hex(6)}@bench.postroom")
        ev.add("dtstamp", start)
        ev.add("dtstart", start + timedelta(hours=5 * n))
        ev.add("dtend", start + timedelta(hours=5 * n + 1))
        summary = p.sentence()
        location = f"Room {p.rng.randint(1, 500)}, {p.line(15)}"
        description = p.text(400)
        ev.add("summary", summary)
        ev.add("location", location)
        ev.add("organizer", f"mailto:organizer{n % 17}@example.test")
        for a in range(3):
            ev.add("attendee", f"mailto:person{(n + a) % 40}@example.test")
        ev.add("description", description)
        cal.add_component(ev)
        size += len(summary) + len(location) + len(description) + 220
    data: bytes = cal.to_ical()
    return data


def big_eml(p: Prose, chars: int) -> bytes:
    """A forwarded message (message/rfc822): headers and a long text/plain body of
    paragraphs."""
    msg = EmailMessage()
    msg["From"] = "Carol <carol@example.test>"
    msg["To"] = "dave@example.test"
    msg["Date"] = "Fri, 17 May 2030 09:30:00 +0000"
    msg["Subject"] = "Quarterly report"
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@example.test>"
    paras: list[str] = []
    size = 0
    while size < chars:
        paras.append(p.text(400))
        size += len(paras[-1]) + 2
    msg.set_content("\n\n".join(_wrap(x, 76) for x in paras) + "\n")
    return msg.as_bytes()


def big_text(p: Prose, chars: int) -> bytes:
    """A plain text file: paragraphs wrapped at 76 columns (a log or notes)."""
    paras: list[str] = []
    size = 0
    while size < chars:
        paras.append(_wrap(p.text(400), 76))
        size += len(paras[-1]) + 2
    return ("\n\n".join(paras) + "\n").encode()


def _wrap(text: str, width: int) -> str:
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- formats

@dataclass(frozen=True)
class Format:
    """A format the readers know: its reader (`kind`), its file name suffix, how to make a
    large document (`big(prose, chars)`) and a small one (tests/content/documents.py)."""

    name: str
    kind: str
    suffix: str
    big: Callable[[Prose, int], bytes]
    small: Callable[[Sequence[str]], bytes]


def _formats() -> list[Format]:
    from tests.content import documents as d

    def small_text(words: Sequence[str]) -> bytes:
        return ("Notes\n\n" + "\n".join(f"- {w}" for w in words) + "\n").encode()

    return [
        Format("pdf", "pdf", ".pdf", big_pdf, d.pdf),
        Format("docx", "docx", ".docx", big_docx, d.docx),
        Format("xlsx", "xlsx", ".xlsx", big_xlsx, d.xlsx),
        Format("pptx", "pptx", ".pptx", big_pptx, d.pptx),
        Format("odt", "odf", ".odt", big_odt, d.odt),
        Format("html", "html", ".html", big_html, d.html),
        Format("csv", "csv", ".csv", big_csv, d.csv),
        Format("markdown", "markdown", ".md", big_markdown, d.markdown),
        Format("json", "json", ".json", big_json, d.json_doc),
        Format("ics", "calendar", ".ics", big_ics, d.ics),
        Format("eml", "eml", ".eml", big_eml, d.eml),
        Format("text", "text", ".txt", big_text, small_text),
    ]


# --------------------------------------------------------------------------- per-format cost

def task_cpu_s(pid: int) -> float:
    """CPU seconds of every thread of `pid` (/proc schedstat: nanoseconds, unlike the clock
    ticks of /proc stat, which a small document's read would be below)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total / 1e9


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of `pid`, MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def spread(values: Sequence[float]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def _write(path: Path, data: bytes) -> int:
    path.write_bytes(data)
    return len(data)


def _unlink(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _in_process(path: Path, kind: str, limits: Any, repeats: int) -> dict[str, Any]:
    """`read_document` in this process: wall and CPU seconds (after one warm-up read)."""
    from daemon.content import read_document

    read_document(str(path), kind, limits)
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        read_document(str(path), kind, limits)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"inproc_wall_s": spread(walls), "inproc_cpu_s": spread(cpus)}


async def _pool_reads(path: Path, kind: str, size: int, repeats: int, settings: Any,
                      out_dir: Path, first: Path, first_size: int) -> dict[str, Any]:
    """Read `path` `repeats` times through a fresh pool, after a read of `first` (a small
    document of the same format: the worker's start and its libraries) and one warm-up read
    of `path`. A pool that reads the kind in the daemon's own process (no worker parked after
    the read) is measured there: its CPU is then the `parent_cpu_s`."""
    from daemon.pipeline.content_pool import ContentPool

    pool = ContentPool(settings)
    rec: dict[str, Any] = {}

    def worker_pid() -> int | None:
        return pool._idle[-1].proc.pid if pool._idle else None

    try:
        w0, p0 = time.perf_counter(), time.process_time()
        result = await pool.read(str(first), kind, out_dir, first_size)
        rec["spawn_wall_s"] = time.perf_counter() - w0  # start, libraries, one small read
        _unlink(result.file)
        pid = worker_pid()
        rec["in_worker"] = pid is not None
        rec["spawn_cpu_s"] = task_cpu_s(pid) if pid else time.process_time() - p0
        rec["worker_rss_idle_mib"] = rss_mib(pid).get("VmRSS") if pid else None
        result = await pool.read(str(path), kind, out_dir, size)  # caches, lazy imports
        _unlink(result.file)
        walls: list[float] = []
        cpus: list[float] = []
        parents: list[float] = []
        respawned = 0
        for _ in range(repeats):
            if rec["in_worker"] and not pool._idle:  # the last read killed its worker
                respawned += 1
                extra = await pool.read(str(first), kind, out_dir, first_size)
                _unlink(extra.file)
            pid = worker_pid()
            c0 = task_cpu_s(pid) if pid else 0.0
            p0, w0 = time.process_time(), time.perf_counter()
            result = await pool.read(str(path), kind, out_dir, size)
            walls.append(time.perf_counter() - w0)
            parents.append(time.process_time() - p0)
            if pid and worker_pid() == pid:
                cpus.append(task_cpu_s(pid) - c0)
            elif not pid:
                cpus.append(parents[-1])
            _unlink(result.file)
        rss = rss_mib(pid) if pid else {}
        rec.update(
            status=result.status, truncated=result.truncated, error=result.error,
            text_chars=result.size, worker_wall_s=spread(walls), worker_cpu_s=spread(cpus),
            parent_cpu_s=spread(parents), worker_rss_after_mib=rss.get("VmRSS"),
            worker_peak_rss_mib=rss.get("VmHWM"), killed=pool.killed, respawned=respawned,
            walls=walls)
    finally:
        workers = [w.proc for w in pool._idle]
        pool.close()
        for proc in workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
    return rec


def measure_formats(args: argparse.Namespace, run: dict[str, Any], tmp: Path) -> list[
        dict[str, Any]]:
    from daemon.config import ContentConfig
    from daemon.pipeline.content_pool import ContentSettings
    from tests.content import documents

    default = ContentSettings.of(ContentConfig())
    settings = replace(default, timeout=args.timeout)
    out_dir = tmp / "out"
    out_dir.mkdir()
    chosen = [f for f in _formats() if not args.formats or f.name in args.formats]
    records = []
    for i, fmt in enumerate(chosen):
        first = tmp / f"{fmt.name}-first{fmt.suffix}"
        first_size = _write(first, fmt.small(documents.marker_words(40)))
        for size_class in ("large", "small"):
            if size_class == "large":
                g0 = time.perf_counter()
                data = fmt.big(Prose(1000 + i), args.chars)
                gen_s = time.perf_counter() - g0
                repeats = args.repeats
            else:
                data = fmt.small(documents.marker_words(40))
                gen_s = 0.0
                repeats = args.repeats * 5
            path = tmp / f"{fmt.name}-{size_class}{fmt.suffix}"
            size = _write(path, data)
            rec: dict[str, Any] = {
                "kind": "content_format", "run": run["run"], "date": run["date"],
                "commit": run["commit"], "machine_note": run["machine_note"],
                "source": run.get("head_source"), "source_commit": run.get("head_commit"),
                "format": fmt.name, "reader": fmt.kind, "size_class": size_class,
                "file_bytes": size, "generate_s": gen_s, "repeats": repeats,
                "timeout_s": settings.timeout, "default_timeout_s": default.timeout}
            rec.update(asyncio.run(_pool_reads(path, fmt.kind, size, repeats, settings,
                                               out_dir, first, first_size)))
            if not args.no_inproc:
                rec.update(_in_process(path, fmt.kind, settings.limits,
                                       max(1, repeats if size_class == "small" else
                                           args.repeats)))
            wall = (rec.get("worker_wall_s") or {}).get("median")
            cpu = (rec.get("worker_cpu_s") or {}).get("median")
            if wall is not None:
                rec["ms_per_file_mb"] = 1e3 * wall / (size / MB)
                rec["ms_per_text_mb"] = (1e3 * wall / (rec["text_chars"] / MB)
                                         if rec.get("text_chars") else None)
                rec["over_default_timeout"] = max(rec["walls"]) > default.timeout
            if cpu is not None:
                rec["cpu_ms_per_file_mb"] = 1e3 * cpu / (size / MB)
            records.append(rec)
            args.emit(rec)
            path.unlink()
            print(f"{fmt.name:9} {size_class:5} {size / MB:6.3f} MB  "
                  f"{rec.get('text_chars', 0):>8,} chars {rec.get('status')}"
                  f"{' (truncated)' if rec.get('truncated') else ''}  worker "
                  f"{1e3 * (wall or 0):8.1f} ms wall, {1e3 * (cpu or 0):8.1f} ms CPU  "
                  f"in-process {1e3 * ((rec.get('inproc_wall_s') or {}).get('median') or 0):8.1f}"
                  f" ms  {rec.get('ms_per_file_mb', 0):7.1f} ms/MB  peak RSS "
                  f"{rec.get('worker_peak_rss_mib') or 0:.0f} MiB", flush=True)
    return records


# --------------------------------------------------------------------------- throughput A/B

@dataclass(frozen=True)
class Variant:
    name: str
    text: str
    load_args: tuple[str, ...]  # bench.smtp_load's options for the message shape
    pdf: bool = False  # generated by `--smtp-load-pdf` (this module), a PDF per message


VARIANTS = {
    "plain": Variant("plain", "text/plain only, no attachment (≈1.3 kB message)",
                     ("-k", "0", "--pool", "512", "-n", "300000")),
    "small": Variant("small", "small workload: 1 × 20,000 B random bytes as "
                     "application/octet-stream, `bench-N-0.bin` (≈28.9 kB message)",
                     ("--workload", "small")),
    "pdf": Variant("pdf", "1 × one-page PDF (≈4,800 characters of text, ≈4 kB) as "
                   "application/pdf, `invoice-N.pdf`", ("-k", "1", "--pool", "128",
                                                        "-n", "300000"), pdf=True),
}


def pdf_body(index: int, attachments: int, size: int) -> bytes:
    """bench.smtp_load's message, its attachments one-page PDFs of text (`--smtp-load-pdf`)."""
    from bench.smtp_load import RECIPIENT, SENDER

    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = f"Load Generator <{SENDER}>"
    msg["To"] = f"Bench Inbox <{RECIPIENT}>"
    msg["Subject"] = f"bench body {index}: {attachments} one-page PDF"
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<body{index}.{os.urandom(6).hex()}@sender.test>"
    msg.set_content(f"Body {index}.\n\nThe invoice is attached.\n\nRegards,\nthe load generator\n")
    for j in range(attachments):
        msg.add_attachment(big_pdf(Prose(index * 31 + j), 4000), maintype="application",
                           subtype="pdf", filename=f"invoice-{index}-{j}.pdf")
    raw = re.sub(rb"\r?\n", b"\r\n", msg.as_bytes())
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def smtp_load_pdf(argv: list[str]) -> None:
    """`python -m bench.content --smtp-load-pdf ARGS`: bench.smtp_load with `pdf_body`."""
    from bench import smtp_load

    smtp_load.build_body = pdf_body
    smtp_load.main(argv)


def _content_workers(sampler: Any) -> dict[str, int]:
    """postroom's worker processes by kind: content workers get a memory cap argument."""
    found = {"extract": 0, "content": 0}
    for p in sampler.tree()[1:]:
        with contextlib.suppress(Exception):
            cmd = p.cmdline()
            if "daemon.extract_worker" in cmd:
                found["content" if len(cmd) - cmd.index("daemon.extract_worker") > 2
                      else "extract"] += 1
    return found


def _db_counts(root: Path) -> dict[str, Any]:
    """What the run's database holds: messages by status, attachments by text status and
    sniffed type (HEAD only has text_status)."""
    import sqlite3

    out: dict[str, Any] = {}
    for db in root.rglob("*.db"):
        with contextlib.closing(sqlite3.connect(db)) as conn:
            out["messages"] = dict(conn.execute(
                "SELECT status, count(*) FROM messages GROUP BY status").fetchall())
            try:
                rows = conn.execute("SELECT coalesce(text_status, '-'), coalesce("
                                    "detected_content_type, '-'), count(*) FROM attachments "
                                    "GROUP BY 1, 2").fetchall()
                out["attachments"] = {f"{a} / {b}": n for a, b, n in rows}
            except sqlite3.OperationalError:
                out["attachments"] = dict(conn.execute(
                    "SELECT coalesce(detected_content_type, '-'), count(*) FROM attachments "
                    "GROUP BY 1").fetchall())
        break
    return out


def ab_run(variant: Variant, side: str, src: Path, rep: int, position: int,
           args: argparse.Namespace) -> dict[str, Any]:
    from bench.run_smtp_bench import wait_line
    from bench.targets import (
        TreeSampler,
        busy_cpu_s,
        cleanup,
        nice_prefix,
        own_cpu_s,
        start_postroom,
        steal_cpu_s,
        wait_quiet,
        wait_tree_quiet,
    )

    root = Path(tempfile.mkdtemp(prefix=f"postroom-content-{side}-"))
    run = start_postroom(root, args.nice, src, extra_config=CONFIG)
    record: dict[str, Any] = {"kind": "content_ab_run", "run": args.run_id,
                              "variant": variant.name, "rate": args.rate or None, "side": side,
                              "rep": rep, "position": position}
    try:
        module = ["bench.content", "--smtp-load-pdf"] if variant.pdf else ["bench.smtp_load"]
        cmd = [*nice_prefix(args.nice), sys.executable, "-m", *module, "--json", "--uvloop",
               "--port", str(run.smtp_port), *variant.load_args, "-c", str(args.concurrency),
               "--max-seconds", str(args.seconds), "--grace", "60", "--wait-go",
               "--ids-out", str(root / "ids.tsv"),  # not thousands of ids in the JSON line
               "--rate", str(args.rate)]
        gen = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        assert gen.stdin is not None and gen.stdout is not None
        if wait_line(gen.stdout, 300).strip() != "READY":
            gen.kill()
            raise RuntimeError(f"generator did not get ready: {gen.communicate()[1][-2000:]}")
        record["quiet_waited_s"], _ = wait_quiet(args.quiet_wait, 15.0)
        sampler = TreeSampler(run.pid)
        idle_rss = sampler.rss()
        sampler.start()
        cpu0, steal0, w0 = sampler.cpu_s(), steal_cpu_s(), time.monotonic()
        busy0, me0 = busy_cpu_s(), own_cpu_s()
        gen.stdin.write("go\n")
        gen.stdin.flush()
        out, err = gen.communicate(timeout=args.seconds + 180)
        wall = time.monotonic() - w0
        cpu_load = sampler.cpu_s() - cpu0
        steal = steal_cpu_s() - steal0
        busy, me = busy_cpu_s() - busy0, own_cpu_s() - me0
        if gen.returncode != 0 or not out.strip():
            raise RuntimeError(f"generator failed ({gen.returncode}): {err[-2000:]}")
        res = json.loads(out.strip().splitlines()[-1])
        record["drain_s"] = wait_tree_quiet(sampler, 30.0)
        cpu_total = sampler.cpu_s() - cpu0
        record["workers_at_end"] = _content_workers(sampler)
        peak = sampler.stop()
        ok = max(res["ok"], 1)
        record.update({k: res[k] for k in ("msgs_per_s", "mb_per_s", "ok", "errors",
                                           "p50_ms", "p99_ms", "elapsed_s", "message_bytes")},
                      cpu_ms_load=1e3 * cpu_load / ok, cpu_ms=1e3 * cpu_total / ok,
                      steal_pct=100 * steal / wall, idle_rss_mib=idle_rss / 2**20,
                      bg_cpu_pct=100 * max(0.0, busy - cpu_load - res["client_cpu_s"] - me)
                      / wall,
                      peak_rss_mib=peak / 2**20)
    finally:
        record["exit_code"] = run.stop()
        with contextlib.suppress(Exception):
            record["db"] = _db_counts(root)
        if record.get("errors") or record["exit_code"] not in (0, -15, None):
            record["log_tail"] = run.log_tail(20)
        cleanup(run)
    return record


_SUMMED = ("msgs_per_s", "cpu_ms", "cpu_ms_load", "peak_rss_mib", "bg_cpu_pct", "steal_pct")


def ab_summary(variant: Variant, runs: list[dict[str, Any]], run: dict[str, Any]
               ) -> dict[str, Any]:
    head = [r for r in runs if r["side"] == "head"]
    base = [r for r in runs if r["side"] == "base"]
    by_rep = {r["rep"]: r for r in base}
    pairs = [(h, by_rep[h["rep"]]) for h in head if h["rep"] in by_rep]
    ratio = spread([h["msgs_per_s"] / b["msgs_per_s"] for h, b in pairs])
    base_msgs = [r["msgs_per_s"] for r in base]
    base_spread = spread([m / statistics.median(base_msgs) for m in base_msgs]) \
        if base_msgs else None
    measurable = None  # an offered rate caps msgs/s on both sides: judged saturated only
    if ratio is not None and base_spread is not None and not run.get("rate"):
        measurable = (ratio["median"] < 0.95 or ratio["median"] < base_spread["min"]
                      or ratio["median"] > base_spread["max"])
    return {
        "kind": "content_ab", "run": run["run"], "date": run["date"], "commit": run["commit"],
        "machine_note": run["machine_note"], "variant": variant.name, "text": variant.text,
        "concurrency": run["concurrency"], "seconds": run["seconds"], "repeats": len(pairs),
        "rate": run.get("rate"), "head_source": run.get("head_source"),
        "base_source": run.get("base_source"),
        "head": {k: spread([r[k] for r in head]) for k in _SUMMED},
        "base": {k: spread([r[k] for r in base]) for k in _SUMMED},
        "msgs_ratio": ratio, "base_spread": base_spread,
        "cpu_ms_ratio": spread([h["cpu_ms"] / b["cpu_ms"] for h, b in pairs]),
        "cpu_ms_diff": spread([h["cpu_ms"] - b["cpu_ms"] for h, b in pairs]),
        "measurable": measurable,
        "head_attachments": _summed([(r.get("db") or {}).get("attachments") for r in head]),
        "base_attachments": _summed([(r.get("db") or {}).get("attachments") for r in base]),
        "head_messages": _summed([(r.get("db") or {}).get("messages") for r in head]),
        "base_messages": _summed([(r.get("db") or {}).get("messages") for r in base]),
    }


def _summed(counts: Sequence[dict[str, int] | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in (c or {}).items():
            out[k] = out.get(k, 0) + v
    return out


def measure_ab(args: argparse.Namespace, sources: dict[str, Path]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for name in args.variants:
        variant = VARIANTS[name]
        runs: list[dict[str, Any]] = []
        for rep in range(args.repeats):
            order = ("head", "base") if rep % 2 == 0 else ("base", "head")
            for position, side in enumerate(order):
                for attempt in range(2):
                    try:
                        r = ab_run(variant, side, sources[side], rep, position, args)
                    except Exception as e:  # recorded, and the run goes on without it
                        r = {"kind": "content_ab_run", "run": args.run_id,
                             "variant": variant.name, "side": side, "rep": rep,
                             "position": position, "failed": f"{type(e).__name__}: {e}"[:2000]}
                        records.append(r)
                        args.emit(r)
                        print(f"{name:5} rep {rep} {side:4} FAILED {r['failed'][:300]}",
                              flush=True)
                        break
                    # Foreign work during the load (the machine is shared): once more, unless
                    # the machine had not become quiet before it either.
                    r["superseded"] = (attempt == 0 and r["bg_cpu_pct"] > args.bg_limit
                                       and r["quiet_waited_s"] < args.quiet_wait - 0.5)
                    records.append(r)
                    args.emit(r)
                    print(f"{name:5} rep {rep} {side:4} {r.get('msgs_per_s', 0):7.1f} msgs/s  "
                          f"{r.get('cpu_ms', 0):5.2f} CPU ms/msg (load only "
                          f"{r.get('cpu_ms_load', 0):5.2f})  drain {r.get('drain_s', 0):4.1f} s"
                          f"  bg {r['bg_cpu_pct']:3.0f}%  steal {r.get('steal_pct', 0):3.0f}%  "
                          f"workers {r.get('workers_at_end')}  attachments "
                          f"{(r.get('db') or {}).get('attachments')}"
                          + ("  [disturbed: again]" if r["superseded"] else ""), flush=True)
                    if not r["superseded"]:
                        runs.append(r)
                        break
        s = ab_summary(variant, runs, args.run_record)
        records.append(s)
        args.emit(s)
        ratio = s["msgs_ratio"] or {}
        print(f"{name:5} HEAD ÷ base msgs/s {ratio.get('median', 0):.3f} "
              f"({ratio.get('min', 0):.3f}–{ratio.get('max', 0):.3f}); measurable: "
              f"{s['measurable']}", flush=True)
    return records


def small_attachment_kinds(samples: int) -> dict[str, Any]:
    """What the readers make of the small workload's attachment: `samples` fresh ones through
    the extractor's sniffer and `document_kind`."""
    from bench.smtp_load import build_body
    from daemon.content import document_kind
    from extractors import Limits, extract_message

    kinds: dict[str, int] = {}
    sniffed: dict[str, int] = {}
    for i in range(samples):
        for part in extract_message(build_body(i, 1, 20_000), Limits()).attachments:
            kind = document_kind(part.content_type, part.file_name, part.detected_content_type)
            kinds[str(kind)] = kinds.get(str(kind), 0) + 1
            key = f"{part.content_type} → {part.detected_content_type}"
            sniffed[key] = sniffed.get(key, 0) + 1
    return {"samples": samples, "reader": kinds, "sniffed": sniffed}


# --------------------------------------------------------------------------- main

@contextlib.contextmanager
def imported_from(src: Path) -> Iterator[None]:
    """postroom's modules (daemon, extractors, tests.content) imported from `src`, and content
    workers started from it: it leads sys.path, PYTHONPATH, and is the working directory
    (`python -m daemon.extract_worker` finds `daemon` in its working directory first)."""
    loaded = sys.modules.get("daemon")
    if loaded is not None and not Path(str(loaded.__file__)).is_relative_to(src):
        raise RuntimeError(f"daemon was imported from {loaded.__file__} already")
    sys.path.insert(0, str(src))
    env, cwd = os.environ.get("PYTHONPATH"), os.getcwd()
    os.environ["PYTHONPATH"] = str(src)
    os.chdir(src)
    try:
        yield
    finally:
        os.chdir(cwd)
        if env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env


def machine_note() -> str:
    from bench.run_smtp_bench import machine_info

    m = machine_info()
    load = ", ".join(f"{x:.2f}" for x in m.get("loadavg_at_start", []))
    return (f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib', 0):.0f} GiB, "
            f"{m.get('os')}; shared and noisy; load average at start {load}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--smtp-load-pdf"]:
        smtp_load_pdf(argv[1:])
        return
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="1 repeat, 3 s loads, the small variant only, smaller documents")
    p.add_argument("--repeats", type=int, default=0,
                   help="reads per large document, ×5 for small ones (default 5; quick 2)")
    p.add_argument("--ab-repeats", type=int, default=0,
                   help="A/B runs a side, alternating (default 5; quick 1)")
    p.add_argument("--seconds", type=float, default=0.0, help="load per A/B run (default 8)")
    p.add_argument("-c", "--concurrency", type=int, default=16)
    p.add_argument("--rate", type=float, default=0.0,
                   help="A/B loads offer this many msgs/s (open loop); 0 saturates (default)")
    p.add_argument("--chars", type=int, default=TARGET_CHARS,
                   help="characters of text in each large document")
    p.add_argument("--formats", default="", help="comma-separated (default: all)")
    p.add_argument("--variants", default="", help="of plain,small,pdf (default: all)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="content.timeout of the measuring pool (the daemon's default is 10)")
    p.add_argument("--no-formats", action="store_true")
    p.add_argument("--no-ab", action="store_true")
    p.add_argument("--no-inproc", action="store_true", help="skip read_document in-process")
    p.add_argument("--sniff-samples", type=int, default=0,
                   help="small-workload attachments to classify (default 2000; quick 300)")
    p.add_argument("--head-src", default="head", help="head|COMMIT|worktree|DIR")
    p.add_argument("--base-src", default=BASELINE, help="head|COMMIT|worktree|DIR")
    p.add_argument("--quiet-wait", type=float, default=10.0,
                   help="max seconds to wait for the machine to be idle before a load")
    p.add_argument("--bg-limit", type=float, default=50.0,
                   help="%% of a core of foreign CPU during a load that makes it run again")
    p.add_argument("--nice", type=int, default=-10)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    ab_repeats = args.ab_repeats or (1 if args.quick else 5)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.seconds = args.seconds or (3.0 if args.quick else 8.0)
    args.formats = [f for f in args.formats.split(",") if f]
    args.variants = [v for v in args.variants.split(",") if v] or (
        ["small"] if args.quick else list(VARIANTS))
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}")
    if args.quick and args.chars == TARGET_CHARS:
        args.chars = 200_000
    args.sniff_samples = args.sniff_samples or (300 if args.quick else 2000)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    args.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    out = args.out.resolve()

    def emit(rec: dict[str, Any]) -> None:  # each record as it is made: a crash keeps them
        from bench.targets import append_record

        append_record(out, {k: v for k, v in rec.items() if k != "walls"})

    args.emit = emit
    started = time.time()
    run: dict[str, Any] = {
        "kind": "content_run", "run": args.run_id,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit,
        "machine_note": machine_note(), "mode": "quick" if args.quick else "full",
        "command": " ".join([".venv/bin/python -m bench.content", *argv]),
        "chars": args.chars, "repeats": args.repeats, "ab_repeats": ab_repeats,
        "concurrency": args.concurrency, "seconds": args.seconds, "variants": args.variants,
        "rate": args.rate or None}
    records: list[dict[str, Any]] = []
    from bench.run_smtp_bench import postroom_source

    with tempfile.TemporaryDirectory(prefix="bench-content-") as t:
        tmp = Path(t)
        head_src, head_desc, head_commit = postroom_source(args.head_src, tmp / "head")
        base_src, base_desc, base_commit = postroom_source(args.base_src, tmp / "base")
        run.update(head_source=head_desc, head_commit=head_commit, base_source=base_desc,
                   base_commit=base_commit)
        print(f"HEAD: {head_desc}; off: {base_desc}", flush=True)
        for src in {head_src, base_src} - {REPO}:  # no run of either side compiles its .pyc
            subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(src)],
                           capture_output=True, check=False)
        with imported_from(head_src):  # the readers measured are the A/B's HEAD side
            if not args.no_formats:
                records += measure_formats(args, run, tmp)
            if not args.no_ab:
                run["small_attachment"] = small_attachment_kinds(args.sniff_samples)
                print(f"small workload attachment: {run['small_attachment']}", flush=True)
        if not args.no_ab:
            ab_args = argparse.Namespace(**{**vars(args), "repeats": ab_repeats,
                                            "run_record": run})
            records += measure_ab(ab_args, {"head": head_src, "base": base_src})
    run["duration_s"] = time.time() - started
    args.emit(run)
    print(f"{len(records) + 1} records appended to {args.out} (run {args.run_id}, "
          f"{run['duration_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
