"""The extraction worker process: `python -m daemon.extract_worker <parent pid>`.

It reads jobs from stdin and writes results to stdout, each a frame of an 8-byte length and a
pickle; only the daemon talks to it. It imports as little as it can (the MIME core and the
spool naming), so its idle memory is small, and it dies with the daemon.

It sits at the top of `daemon/`, not in `daemon/pipeline/` beside the pool that runs it: running
a package's module first imports the package, and the pipeline's `__init__` brings SQLAlchemy,
structlog and the rest of the daemon: 67 MiB peak RSS against 22 MiB for this module alone, in
every worker process, for nothing a worker uses.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pickle
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from extractors import Extraction, Limits
from storage.spool import spool_name

_HEADER = struct.Struct(">Q")


def frame(obj: Any) -> bytes:
    """`obj` as one frame: its length, then its pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def write_frame(stream: IO[bytes], obj: Any) -> None:
    stream.write(frame(obj))
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next object, or EOFError when the other side has gone."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


@dataclass(frozen=True)
class ReadText:
    """An attachment's text (`daemon.content.read_document`) in the spool file `file` (None
    unless `status` is ready), `size` characters long; `head` is its start, for the index."""

    status: str
    truncated: bool = False
    error: str | None = None
    file: str | None = None
    size: int = 0
    head: str = ""


@dataclass(frozen=True)
class Readable:
    """A message's text as an agent reads it (SPEC §15), beside its files: `preview`, the
    sizes of the new part (file "extracted"; None when it is the text itself) and of a text
    made from the HTML (file "text", when there was no text body), and the head of its text
    for the search index."""

    preview: str
    extracted_size: int | None
    text_from_html: int | None
    words: str


@dataclass(frozen=True)
class Extracted:
    """What a worker found, with every body and attachment's bytes in a spool file of its own.

    `found` carries no bytes (parts' `data` and bodies' `text` are empty), so little crosses the
    process boundary; `files` maps "text", "html", "extracted" and each stored part's index (as
    a string) to its file; the content pool adds "t<index>", an attachment's text. The caller
    owns the files: it moves them into the store or removes them.
    """

    found: Extraction
    files: dict[str, str]
    readable: Readable | None = None
    texts: dict[int, ReadText] = field(default_factory=dict)  # by attachment index


def _write_file(directory: Path, data: bytes) -> str:
    path = spool_name(directory, "x")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return str(path)


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def extract_to_files(source: bytes | str, limits: Limits, out_dir: str,
                     index_chars: int = 0) -> Extracted:
    """Extract the message in `source` (its bytes, or the path of a file holding them), with
    its text as an agent reads it (the head of which, `index_chars` long, for the index)."""
    # Imported here: the daemon imports this module for the job's name only, and the walker
    # (with its sniffer's magic table and the TNEF reader) belongs in the worker's memory.
    from daemon.content import message_text
    from extractors.mime import extract_message

    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    found = extract_message(raw, limits)
    del raw
    directory = Path(out_dir)
    files: dict[str, str] = {}
    try:
        said = message_text(found.text_body.text if found.text_body else None,
                            found.html_body.text if found.html_body else None)
        extracted = None  # the same as the text: no file of its own
        if said.extracted != (said.text or "").replace("\r\n", "\n").strip():
            files["extracted"] = _write_file(directory, _encoded(said.extracted))
            extracted = len(_encoded(said.extracted))
        made = None
        if said.from_html and said.text:
            files["text"] = _write_file(directory, _encoded(said.text))
            made = len(_encoded(said.text))
        readable = Readable(said.preview, extracted, made,
                            (said.text or "")[:index_chars])
        bodies = []
        for body in (found.text_body, found.html_body):
            if body is not None:
                files[body.kind] = _write_file(directory, _encoded(body.text))
                body = replace(body, text="")
            bodies.append(body)
        parts = []
        for part in found.attachments:
            if part.outcome != "rejected":
                files[str(part.index)] = _write_file(directory, part.data)
            parts.append(replace(part, data=b""))
    except BaseException:
        remove_files(files)
        raise
    return Extracted(replace(found, text_body=bodies[0], html_body=bodies[1],
                             attachments=tuple(parts)), files, readable)


def read_to_file(path: str, kind: str, limits: Any, out_dir: str, head: int) -> ReadText:
    """Read the text of the attachment file at `path` (`daemon.content.read_document`) into a
    spool file of its own. Run by the content pool's workers, which it may kill."""
    from daemon.content import READY, read_document

    found = read_document(path, kind, limits)
    if found.status != READY:
        return ReadText(found.status, error=found.error)
    return ReadText(READY, found.truncated, None, _write_file(Path(out_dir), _encoded(found.text)),
                    len(found.text), found.text[:head])


def remove_files(files: dict[str, str]) -> None:
    """Remove whatever of `files` is still there (the store may have taken some).

    Best effort: on a disk gone read-only the unlink fails too, and raising here would hide the
    error that matters (which decides the retry); such a file is removed at the next start."""
    for path in files.values():
        with contextlib.suppress(OSError):
            os.unlink(path)


def die_with_parent(parent: int) -> None:
    """Never outlive the daemon (a SIGKILLed parent closes no pipe we would notice in time).

    The kernel's parent-death signal covers a SIGKILLed daemon on Linux; a watcher thread covers
    everything else.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()



def warm() -> bool:
    """A job that does nothing: answered once the worker has imported what it needs."""
    import extractors.mime  # noqa: F401  (the first message must not pay for the import)

    return True


JOBS: dict[str, Callable[..., Any]] = {"extract_to_files": extract_to_files, "warm": warm,
                                       "read_to_file": read_to_file}


def _confine(memory: int) -> None:
    """A content worker: its address space capped at `memory` bytes (a reader that wants more
    gets MemoryError, or dies), and the libraries' logging silenced (it would carry text of
    the documents to the journal)."""
    import logging
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    logging.disable(logging.CRITICAL)


def _prepare_read(path: str, kind: str, *rest: Any) -> None:
    from daemon.content import prepare

    prepare(kind)


# Jobs with a first step that does not count against the caller's time limit: done, the worker
# says "started" before it goes on.
PREPARE: dict[str, Callable[..., None]] = {"read_to_file": _prepare_read}


def main() -> int:
    die_with_parent(int(sys.argv[1]))
    if len(sys.argv) > 2:
        _confine(int(sys.argv[2]))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the daemon on stdout
    if len(sys.argv) > 2:
        write_frame(stdout, (True, "ready"))  # a content worker says when it can take jobs
    while True:
        try:
            name, args = read_frame(stdin)
        except EOFError:
            return 0
        if name in PREPARE:
            with contextlib.suppress(Exception):  # the job itself will say what is wrong
                PREPARE[name](*args)
            write_frame(stdout, (True, "started"))
        try:
            result: tuple[bool, Any] = (True, JOBS[name](*args))
        except Exception as e:
            result = (False, e)
        write_frame(stdout, result)


if __name__ == "__main__":
    # Run the imported module, not this `__main__` copy: results must pickle as
    # daemon.extract_worker's classes, which the daemon can load.
    from daemon.extract_worker import main as worker_main

    sys.exit(worker_main())
