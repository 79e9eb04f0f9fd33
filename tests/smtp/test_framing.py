"""The DATA framing: any split of a dot-stuffed stream gives back exactly the message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.smtp.framing import Unstuffer

# Content made of the bytes that matter to framing, so CRLF-dot runs come up often.
_BYTE = st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"a", b"\x00", b"\xff"])
CONTENT = st.lists(_BYTE, max_size=80).map(lambda xs: b"".join(xs) + b"\r\n")


def stuff(content: bytes) -> bytes:
    """What a client sends for `content` (RFC 5321 §4.5.2), without the end marker."""
    return (b"\r\n" + content).replace(b"\r\n.", b"\r\n..")[2:]


def feed_all(stream: bytes, cuts: list[int]) -> tuple[bytes, Unstuffer, bytes]:
    """Feed `stream` in pieces cut at `cuts`: (content, framer, bytes after the end marker)."""
    u = Unstuffer()
    out = bytearray()
    last = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        if cut > last and not u.done:
            out += u.feed(stream[last:cut])
            last = cut
    return bytes(out), u, u.leftover + stream[last:]


@settings(max_examples=600)
@given(CONTENT, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
       st.binary(max_size=8))
def test_any_split_gives_back_the_content_and_the_pipelined_rest(
        content: bytes, cuts: list[int], after: bytes) -> None:
    stream = stuff(content) + b".\r\n" + after
    out, u, rest = feed_all(stream, cuts)
    assert u.done
    assert out == content
    assert rest == after


def test_one_byte_at_a_time() -> None:
    content = b".leading\r\n..two\r\nx.\r\n.\r\n\r\n.\r\n"
    out, _, rest = feed_all(stuff(content) + b".\r\nQUIT\r\n", list(range(200)))
    assert (out, rest) == (content, b"QUIT\r\n")


def test_an_empty_message() -> None:
    u = Unstuffer()
    assert u.feed(b".\r\n") == b""
    assert u.done


def test_what_is_held_back_stays_small() -> None:
    u = Unstuffer()
    emitted = sum(len(u.feed(b"\r\n" * 50_000)) for _ in range(4))
    assert emitted >= 4 * 100_000 - 8
    assert len(u._buf) <= 8
    u2 = Unstuffer()
    emitted = sum(len(u2.feed(b"x" * 100_000)) for _ in range(4))  # one endless line
    assert emitted >= 4 * 100_000 - 8


def test_dot_free_chunks_around_every_cut_near_the_end_marker() -> None:
    """Chunks with no dot take a shortcut; the marker or a stuffed dot split across the cut
    between such a chunk and the next must still be found."""
    for content in (b"QUFB" * 40 + b"\r\n", b"QUFB" * 40 + b"\r\n.x\r\n", b"\r\n"):
        stream = stuff(content) + b".\r\nQUIT\r\n"
        for cut in range(len(stream) - 12, len(stream) + 1):
            for second in (cut, min(cut + 1, len(stream)), min(cut + 3, len(stream))):
                out, u, rest = feed_all(stream, [cut, second])
                assert u.done and out == content and rest == b"QUIT\r\n", (content, cut)
