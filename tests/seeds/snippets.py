"""The seed documents' code snippets, found by their exact first and last lines (SPEC §17).

The documents are read where they live, `../shared/seeds/` beside the repository, at test time;
nothing of them is copied here but the code lines that open and close each snippet. A test may
change only the values `substituted` is given (base URL, ids, names, paths, addresses), and each
must occur in the snippet, so a seed that changes fails loudly. Nothing here runs a snippet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SEEDS = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"

SEED_FILES = {
    "000": "000-agentmail-attachments.txt",
    "001": "001-agentpost-attachments.txt",
    "002": "002-agentsend-attachments.txt",
}


@dataclass(frozen=True)
class Locator:
    """Where a snippet is: from the `nth` occurrence of the line(s) `first` to the next line(s)
    equal to `last`, both included. Lines are compared whole and exactly."""

    seed: str
    language: str  # "python", "bash", "javascript" or "json"
    first: str
    last: str
    nth: int = 1


SNIPPETS: dict[str, Locator] = {
    # Seed 000: the AgentMail-style SDK (Python only).
    "000-upload-form": Locator(
        "000", "python", "# 1. Get a presigned upload form",
        "# 3. Include object_key in the encrypted payload you send to the peer"),
    "000-upload-download": Locator(
        "000", "python",
        'dl = client.request_attachment_download(object_key="uploads/<agent_id>/<uuid>-report'
        '.bin.enc")',
        'urllib.request.urlretrieve(presigned_url, "report.bin.enc")'),
    "000-inbound-status": Locator(
        "000", "python",
        'status = client.get_inbound_attachment_status(message_id="msg-abc123", index=0)',
        'print(status)  # e.g. {"status": "ready", "file_name": "report.pdf", ...}'),
    "000-inbound-download": Locator(
        "000", "python",
        'dl = client.request_inbound_attachment_download(message_id="msg-abc123", index=0)',
        'urllib.request.urlretrieve(presigned_url, "report.pdf")'),
    "000-send-encrypted": Locator(
        "000", "python", "from agentmail_client import OutboundAttachment",
        "    encrypt_attachments=True,\n)"),
    # Seed 001: AgentPost (JavaScript SDK, Python SDK, curl), upload then download.
    "001-js-upload": Locator(
        "001", "javascript", "// Step 1: Get a presigned upload URL",
        "  attachments: [{ key: upload.key, filename: 'quarterly-report.pdf', "
        "mime_type: 'application/pdf' }],\n});"),
    "001-python-upload": Locator(
        "001", "python",
        "# Step 1: Get a presigned upload URL\nupload = client.attachments.get_upload_url(",
        '    attachments=[{"key": upload.key, "filename": "quarterly-report.pdf", '
        '"mime_type": "application/pdf"}],\n)'),
    "001-curl-upload": Locator(
        "001", "bash",
        "# Step 1: Get a presigned upload URL\n"
        "UPLOAD=$(curl -s -X POST https://api.agent-post.dev/api/v1/attachments/upload-url \\",
        '    \\"attachments\\": [{\\"key\\": \\"$KEY\\", \\"filename\\": '
        '\\"quarterly-report.pdf\\", \\"mime_type\\": \\"application/pdf\\"}]\n  }"'),
    "001-js-download": Locator(
        "001", "javascript", "const attachment = await client.attachments.get('att_xyz789');",
        "fs.writeFileSync(`./downloads/${attachment.filename}`, Buffer.from(buffer));"),
    "001-python-download": Locator(
        "001", "python", 'attachment = client.attachments.get("att_xyz789")',
        "    f.write(response.content)"),
    "001-curl-download": Locator(
        "001", "bash", "# Get attachment details including download URL",
        'curl -o "downloaded-file.pdf" "$DOWNLOAD_URL"'),
    # Seed 002: AgentSend (curl, JavaScript fetch), and the two response examples.
    "002-curl-upload": Locator(
        "002", "bash", "curl -X POST https://api.agentsend.io/attachments \\",
        '  -F "file=@/path/to/report.pdf"'),
    "002-js-upload": Locator(
        "002", "javascript", "const form = new FormData();",
        "console.log(attachment.id); // use this id when sending a message"),
    "002-json-created": Locator("002", "json", "{", "}", nth=1),
    "002-curl-get": Locator(
        "002", "bash",
        "curl https://api.agentsend.io/attachments/att_01j9zxkp4qbc7n3m8td5e6fvg2 \\",
        '  -H "x-api-key: $AGENTSEND_API_KEY"'),
    "002-json-get": Locator("002", "json", "{", "}", nth=2),
}


class SeedMissing(AssertionError):
    """The seed documents are not where the tests read them."""


@cache
def seed_lines(seed: str) -> tuple[str, ...]:
    """The lines of seed `seed` ("000", "001", "002"), read from ../shared/seeds."""
    path = SEEDS / SEED_FILES[seed]
    if not path.is_file():
        raise SeedMissing(f"seed document {path} is missing: the seed tests read "
                          "../shared/seeds/ beside the repository (SPEC §17)")
    return tuple(path.read_text(encoding="utf-8").splitlines())


def _find(lines: tuple[str, ...], anchor: str, start: int = 0) -> list[int]:
    """Every index at or after `start` where the lines of `anchor` begin."""
    want = anchor.split("\n")
    return [i for i in range(start, len(lines) - len(want) + 1)
            if list(lines[i:i + len(want)]) == want]


def span(locator: Locator) -> tuple[int, int]:
    """The snippet's first line index and the index after its last line."""
    lines = seed_lines(locator.seed)
    starts = _find(lines, locator.first)
    if len(starts) < locator.nth:
        raise AssertionError(f"seed {locator.seed}: no occurrence {locator.nth} of the "
                             f"snippet opening {locator.first!r}")
    start = starts[locator.nth - 1]
    ends = _find(lines, locator.last, start + len(locator.first.split("\n")))
    if not ends:
        raise AssertionError(f"seed {locator.seed}: the snippet opening {locator.first!r} "
                             f"has no closing {locator.last!r} after it")
    return start, ends[0] + len(locator.last.split("\n"))


def first_occurrences(locator: Locator) -> int:
    """How many times the opening line(s) of `locator` occur in its seed."""
    return len(_find(seed_lines(locator.seed), locator.first))


def snippet(name: str) -> str:
    """The snippet `name` of SNIPPETS, exactly as the seed has it (with a final newline)."""
    locator = SNIPPETS[name]
    start, end = span(locator)
    return "\n".join(seed_lines(locator.seed)[start:end]) + "\n"


def substituted(name: str, table: Mapping[str, str]) -> str:
    """Snippet `name` with each key of `table` replaced by its value; every key must occur."""
    text = snippet(name)
    missing = [old for old in table if old not in text]
    if missing:
        raise AssertionError(f"snippet {name} no longer holds {missing}: the seed changed")
    for old, new in table.items():
        text = text.replace(old, new)
    return text
