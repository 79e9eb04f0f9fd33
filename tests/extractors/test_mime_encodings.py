"""Transfer encodings and charsets: decoded when possible, kept raw with a reason when not."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from extractors import Extraction, Limits, extract_message

Build = Callable[..., bytes]
Extract = Callable[..., Extraction]


def _by_name(result: Extraction) -> dict[str, tuple[bytes, str, str | None, tuple[str, ...]]]:
    return {p.file_name: (p.data, p.outcome, p.reason, p.defects) for p in result.attachments}


def test_base64_with_garbage_characters_is_decoded_with_a_defect(extract_fixture: Extract) -> None:
    data, outcome, _, defects = _by_name(extract_fixture("transfer_encodings.eml"))["garbage.bin"]
    assert (data, outcome) == (b"hello world", "ok")
    assert defects == ("base64: invalid characters ignored",)


def test_base64_without_padding_is_decoded_with_a_defect(extract_fixture: Extract) -> None:
    data, outcome, _, defects = _by_name(extract_fixture("transfer_encodings.eml"))["padding.bin"]
    assert (data, outcome) == (b"hello world", "ok")
    assert defects == ("base64: invalid padding",)


def test_base64_with_a_stray_last_character_drops_it(extract_fixture: Extract) -> None:
    data, outcome, _, defects = _by_name(extract_fixture("transfer_encodings.eml"))["stray.bin"]
    assert (data, outcome) == (b"hello world!", "ok")
    assert defects == ("base64: invalid length, last character dropped",)


def test_unknown_transfer_encoding_keeps_the_raw_bytes_as_failed(extract_fixture: Extract) -> None:
    data, outcome, reason, _ = _by_name(extract_fixture("transfer_encodings.eml"))["gzip64.bin"]
    assert outcome == "failed"
    assert reason == "unknown transfer encoding 'x-gzip64'"
    assert data == b"H4sIAAAAAAAAA8tIzcnJBwCGphA2BQAAAA=="


def test_uuencoded_part_is_decoded(extract_fixture: Extract) -> None:
    data, outcome, _, defects = _by_name(extract_fixture("transfer_encodings.eml"))["hello.txt"]
    assert (data, outcome, defects) == (b"hello world", "ok", ())


def test_binary_part_keeps_every_byte(extract_fixture: Extract) -> None:
    data, outcome, _, _ = _by_name(extract_fixture("transfer_encodings.eml"))["binary.bin"]
    assert (data, outcome) == (b"\x00\x01\x02\xff binary bytes", "ok")


def test_quoted_printable_body_joins_soft_breaks_and_decodes_octets(
    extract_fixture: Extract,
) -> None:
    body = extract_fixture("mixed_alternative.eml").text_body
    assert body is not None and body.text.endswith("see attached. Soft line break joined.")


def test_7bit_and_8bit_parts_are_taken_as_sent(extract_fixture: Extract) -> None:
    named = _by_name(extract_fixture("mixed_alternative.eml"))
    assert named["numbers.csv"][0] == b"q,revenue\r\n1,100"
    assert named["notes.txt"][0] == "Café crème".encode("latin-1")


def test_attachment_bytes_are_not_charset_decoded(one_attachment: Build) -> None:
    raw = one_attachment(
        "Content-Type: text/plain; charset=utf-16; name=u.txt", b"\xff\xfeh\x00i\x00"
    )
    [part] = extract_message(raw, Limits()).attachments
    assert part.data == b"\xff\xfeh\x00i\x00"


@pytest.mark.parametrize(
    ("charset", "raw", "text", "defects"),
    [
        ("utf-8", "héllo".encode(), "héllo", ()),
        ("latin1", "héllo".encode("latin-1"), "héllo", ()),
        ("windows-874", "สวัสดี".encode("cp874"), "สวัสดี", ()),
        ("x-no-such-charset", "héllo".encode(), "héllo", ("charset: unknown 'x-no-such-charset'",)),
        (
            "x-no-such-charset",
            "héllo".encode("latin-1"),
            "héllo",
            ("charset: unknown 'x-no-such-charset'", "charset: decoded as latin-1"),
        ),
        ("us-ascii", "héllo".encode(), "héllo", ("charset: us-ascii text has 8-bit bytes",)),
        ("utf-8", b"h\xe9llo", "h\ufffdllo", ("charset: invalid utf-8 bytes replaced",)),
        ("base64", b"aGk=", "aGk=", ("charset: unknown 'base64'",)),
    ],
)
def test_body_charset_is_decoded_with_fallbacks_and_never_raises(
    charset: str, raw: bytes, text: str, defects: tuple[str, ...]
) -> None:
    message = f"Content-Type: text/plain; charset={charset}\r\n\r\n".encode() + raw
    body = extract_message(message, Limits()).text_body
    assert body is not None
    assert (body.text, body.defects) == (text, defects)
    assert body.size == len(text.encode("utf-8"))


def test_body_without_charset_falls_back_to_utf8_then_latin1() -> None:
    for raw, text in (("naïve".encode(), "naïve"), ("naïve".encode("latin-1"), "naïve")):
        body = extract_message(b"Subject: x\r\n\r\n" + raw, Limits()).text_body
        assert body is not None and body.text == text


def test_utf7_body_with_lone_surrogates_still_encodes_to_utf8() -> None:
    message = b"Content-Type: text/plain; charset=utf-7\r\n\r\n+2D3e-"
    body = extract_message(message, Limits()).text_body
    assert body is not None
    body.text.encode("utf-8")  # would raise on a lone surrogate


def test_header_with_invalid_encoded_word_and_8bit_bytes_never_raises() -> None:
    message = b"Subject: =?utf-8?B?###?= =?x-nope?Q?caf=E9?= \xff\xfe\r\n\r\nbody"
    subject = extract_message(message, Limits()).headers.subject
    assert subject is not None and subject.endswith("caf\xe9 \xff\xfe")


def test_multibyte_character_split_across_encoded_words_is_joined() -> None:
    message = b"Subject: =?utf-8?B?0L/RgNC4?= =?utf-8?B?0LI=?=\r\n\r\n"
    # "при" + "в": the second word alone would be a valid character; check the split case too.
    split = b"Subject: =?utf-8?Q?caf=C3?= =?utf-8?Q?=A9?=\r\n\r\n"
    assert extract_message(message, Limits()).headers.subject == "прив"
    assert extract_message(split, Limits()).headers.subject == "café"


def test_invalid_quoted_printable_escapes_are_kept_and_recorded() -> None:
    from extractors.transfer import decode_transfer

    bad = decode_transfer(b"abc=ZZ and =4 end\r\nsoft=\r\nbreak =3D ok", "quoted-printable")
    assert bad.data.startswith(b"abc=ZZ") and b"softbreak = ok" in bad.data
    assert bad.defects == ("quoted-printable: invalid escapes kept as sent",)
    good = decode_transfer(b"caf=C3=A9 soft=\r\nbreak=  \r\nend=", "quoted-printable")
    assert good.defects == ()
