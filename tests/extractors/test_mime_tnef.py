"""TNEF (winmail.dat): the files inside are listed as attachments with the TNEF part as parent.

The payloads and MimeKit's lists of expected names are read in place from ../shared/corpus/tnef
(never copied here); without that folder these tests say so and the rest of the suite runs.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from extractors import Limits, extract_message
from tests.cost import assert_linear

TNEF_DIR = Path(__file__).parents[2].parent / "shared" / "corpus" / "tnef"
ABSENT = f"the shared TNEF corpus is not at {TNEF_DIR}; it lives beside the repository"
pytestmark = pytest.mark.skipif(not TNEF_DIR.is_dir() and not os.environ.get("CI"),
                                reason=ABSENT)
Build = Callable[..., bytes]


def _as_mail(payload: bytes, one_attachment: Build) -> bytes:
    body = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return one_attachment(
        'Content-Type: application/ms-tnef; name="winmail.dat"\r\n'
        "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment", body)


def _payloads() -> list[Path]:
    assert TNEF_DIR.is_dir(), ABSENT
    return sorted(TNEF_DIR.rglob("*.tnef")) + sorted(TNEF_DIR.rglob("*.dat"))


def test_every_name_mimekit_expects_is_found_inside_its_payload(one_attachment: Build) -> None:
    missing: dict[str, list[str]] = {}
    lists = sorted((TNEF_DIR / "mimekit").glob("*.list"))
    assert lists, ABSENT
    for listing in lists:
        expected = listing.read_text(encoding="utf-8").splitlines()
        raw = _as_mail(listing.with_suffix(".tnef").read_bytes(), one_attachment)
        found = {p.original_file_name for p in extract_message(raw, Limits()).attachments
                 if p.source == "tnef"}
        lost = [name for name in expected if name not in found]
        if lost:
            missing[listing.name] = lost
    print(f"tnef: {len(lists)} MimeKit lists checked, {len(missing)} with names missing")
    assert missing == {}


def test_tnef_files_have_the_tnef_part_as_parent_and_their_bytes(one_attachment: Build) -> None:
    raw = _as_mail((TNEF_DIR / "mimekit" / "two-files.tnef").read_bytes(), one_attachment)
    tnef, authors, readme = extract_message(raw, Limits()).attachments
    assert (tnef.file_name, tnef.source, tnef.parent) == ("winmail.dat", "mime", None)
    assert [(p.file_name, p.source, p.parent, p.path) for p in (authors, readme)] == [
        ("AUTHORS", "tnef", tnef.index, tnef.path), ("README", "tnef", tnef.index, tnef.path)]
    assert authors.size == 244 and authors.data.startswith(b"")
    assert len(authors.data) == authors.size and readme.outcome == "ok"


def test_a_message_embedded_in_tnef_is_a_file_whose_own_files_point_at_it(
    one_attachment: Build,
) -> None:
    raw = _as_mail((TNEF_DIR / "mimekit" / "christmas.tnef").read_bytes(), one_attachment)
    parts = extract_message(raw, Limits()).attachments
    embedded = [p for p in parts if p.content_type == "application/vnd.ms-tnef"]
    inner = [p for p in parts if p.parent in {e.index for e in embedded}]
    assert embedded and inner
    assert "kitten-playing-with-a-christmas-tree.jpg" in {p.file_name for p in inner}


def test_no_payload_of_the_corpus_raises_or_loses_the_tnef_part(one_attachment: Build) -> None:
    payloads = _payloads()
    for path in payloads:
        result = extract_message(_as_mail(path.read_bytes(), one_attachment), Limits())
        assert result.attachments[0].file_name == "winmail.dat", path
        assert not any(d.startswith("internal") for d in result.defects), path
    print(f"tnef: {len(payloads)} payloads extracted")


def test_a_damaged_tnef_payload_is_kept_with_a_defect(one_attachment: Build) -> None:
    good = (TNEF_DIR / "mimekit" / "two-files.tnef").read_bytes()
    raw = _as_mail(good[:40] + b"\xff" * 7, one_attachment)
    [tnef, *_] = extract_message(raw, Limits()).attachments
    assert tnef.outcome == "ok" and tnef.file_name == "winmail.dat"


def test_tnef_files_count_against_max_parts(one_attachment: Build) -> None:
    raw = _as_mail((TNEF_DIR / "mimekit" / "two-files.tnef").read_bytes(), one_attachment)
    parts = extract_message(raw, Limits(max_parts=2)).attachments
    assert [(p.file_name, p.outcome) for p in parts][:2] == [
        ("winmail.dat", "ok"), ("AUTHORS", "ok")]
    assert parts[-1].reason == "part_limit"


def test_a_payload_that_would_cost_quadratic_copying_is_kept_whole(one_attachment: Build) -> None:
    # 200,000 empty objects: tnefparse would copy the tail of the payload for each one.
    def payload(objects: int) -> bytes:
        tiny = struct.pack("<BHHI", 1, 0x8008, 7, 0) + b"\x00\x00"
        return b"\x78\x9f\x3e\x22\x01\x00" + tiny * objects

    def mail(objects: int) -> bytes:
        return _as_mail(payload(objects), one_attachment)

    [tnef] = extract_message(mail(200_000), Limits()).attachments
    assert tnef.outcome == "ok" and tnef.size == len(payload(200_000))
    assert "tnef: too many objects to decode, kept whole" in tnef.defects
    # As cheap as any payload of its size: 25,000 objects, already over the copying budget,
    # cost an eighth as much.
    assert_linear(lambda raw: extract_message(raw, Limits()), mail(25_000), mail(200_000))
