"""Builders shared by the extraction unit tests: fixture files and small hand-made messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from extractors import Extraction, Limits, extract_message

FIXTURES = Path(__file__).parent / "fixtures"


def _multipart(*parts: bytes, subtype: str = "mixed", boundary: str = "b") -> bytes:
    delimiter = f"--{boundary}\r\n".encode()
    body = b"".join(delimiter + part + b"\r\n" for part in parts)
    head = f'Subject: built\r\nContent-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'
    return head.encode() + body + f"--{boundary}--\r\n".encode()


def _part(headers: str, body: bytes = b"data") -> bytes:
    lines = "".join(f"{line}\r\n" for line in headers.splitlines() if line)
    return lines.encode("utf-8", "surrogateescape") + b"\r\n" + body


@pytest.fixture
def extract_fixture() -> Callable[..., Extraction]:
    """Extract one of the .eml files in fixtures/."""

    def run(name: str, limits: Limits | None = None) -> Extraction:
        return extract_message((FIXTURES / name).read_bytes(), limits or Limits())

    return run


@pytest.fixture
def multipart() -> Callable[..., bytes]:
    """Build a multipart message from already-built parts."""
    return _multipart


@pytest.fixture
def part() -> Callable[..., bytes]:
    """Build one MIME part from header lines and body bytes."""
    return _part


@pytest.fixture
def one_attachment() -> Callable[..., bytes]:
    """Build multipart/mixed with a text body and one part with the given headers."""

    def build(headers: str, body: bytes = b"data") -> bytes:
        return _multipart(_part("Content-Type: text/plain", b"body"), _part(headers, body))

    return build
