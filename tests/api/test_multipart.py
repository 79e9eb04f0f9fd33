"""The streaming multipart reader: the same parts whatever the chunking, bounded headers and
fields, and a clear MultipartError (never another exception) for a malformed body."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from daemon.api.multipart import MultipartError, MultipartReader, boundary_of

BODY = (b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n"
        b"uploads/a/b\r\n--XyZ  \r\nContent-Disposition: form-data; name=\"file\"; "
        b"filename=\"r\xc3\xa9port.pdf\"\r\nContent-Type: application/pdf\r\n\r\n"
        b"%PDF --XyZ\r\n-XyZ\r\n\r\n--XyZ--\r\nepilogue")


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def _parts(data: bytes, size: int) -> list[tuple[str, str | None, str | None, bytes]]:
    reader = MultipartReader(_chunks(data, size), b"XyZ")
    out = []
    async for part in reader.parts():
        out.append((part.name, part.file_name, part.content_type,
                    b"".join([p async for p in reader.data()])))
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 1 << 20])
async def test_parts_are_the_same_whatever_the_chunking(size: int) -> None:
    assert await _parts(BODY, size) == [
        ("key", None, None, b"uploads/a/b"),
        ("file", "réport.pdf", "application/pdf", b"%PDF --XyZ\r\n-XyZ\r\n"),
    ]


async def test_a_part_not_read_is_skipped() -> None:
    reader = MultipartReader(_chunks(BODY, 3), b"XyZ")
    assert [p.name async for p in reader.parts()] == ["key", "file"]


@pytest.mark.parametrize("body", [
    b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nno end",
    b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\nno blank line",
    b"--XyZ\r\nX: " + b"a" * 20_000 + b"\r\n\r\ndata\r\n--XyZ--",
    b"--XyZ\r\nContent-Disposition: attachment; name=\"f\"\r\n\r\nd\r\n--XyZ--",
    b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nd\r\n--XyZ--",
    b"--XyZ\r\nno colon here\r\n\r\nd\r\n--XyZ--",
    b"--XyZjunk\r\n\r\n--XyZ--",
    b"",
])
async def test_malformed_bodies_raise_multipart_error(body: bytes) -> None:
    with pytest.raises(MultipartError):
        await _parts(body, 4)


async def test_read_bounds_a_field() -> None:
    body = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n" + b"a" * 100 + \
        b"\r\n--XyZ--"
    reader = MultipartReader(_chunks(body, 7), b"XyZ")
    async for _ in reader.parts():
        with pytest.raises(MultipartError):
            await reader.read(99)
        break


@pytest.mark.parametrize("header", [None, "application/json", "multipart/form-data",
                                    "multipart/form-data; boundary=\"\"",
                                    "multipart/form-data; boundary=" + "a" * 71])
def test_only_form_data_with_a_boundary_is_read(header: str | None) -> None:
    with pytest.raises(MultipartError):
        boundary_of(header)
    assert boundary_of("Multipart/Form-Data; boundary=\"a b'c\"") == b"a b'c"
