"""The message as verification sees it: its header fields and body, parsed once.

dkimpy's own parser (`dkim.rfc822_parse`) is used, so the fields DKIM and ARC hash are the ones
we read the From and Authentication-Results from. A header that parser refuses (a line that is
neither a field nor a continuation) is read leniently for our own needs, and `dkim_ready` says
that DKIM and ARC cannot run on it. Never raises.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

import dkim

_FIELD = re.compile(rb"([\x21-\x7e]+?):")
_DOMAIN = re.compile(r"[^\s@<>()\[\]\\,;:\"]{1,253}")


@dataclass(frozen=True)
class ParsedMessage:
    """Header fields as (name, raw value with its folding), top first, and the body (CRLF)."""

    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    dkim_ready: bool

    def values(self, name: str) -> list[str]:
        """The unfolded values of every field called `name` (any case), top first."""
        wanted = name.lower().encode("ascii")
        return [unfold(v) for k, v in self.headers if k.lower() == wanted]


def unfold(value: bytes) -> str:
    """A raw field value as text: folding removed, undecodable bytes replaced."""
    return re.sub(r"\r?\n", "", value.decode("utf-8", "replace")).strip()


def parse_message(raw: bytes) -> ParsedMessage:
    """`raw` split the way dkimpy splits it, or leniently when dkimpy refuses the header."""
    try:
        headers, body = dkim.rfc822_parse(raw)
        return ParsedMessage(tuple((k, v) for k, v in headers), body, True)
    except Exception:  # MessageFormatError; parse it anyway, skipping the lines it refused
        pass
    lines = re.split(rb"\r?\n", raw)
    fields: list[list[bytes]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1] += line + b"\r\n"
        elif m := _FIELD.match(line):
            fields.append([m.group(1), line[m.end():] + b"\r\n"])
    return ParsedMessage(tuple((k, v) for k, v in fields), b"\r\n".join(lines[i:]), False)


def author_domain(message: ParsedMessage) -> str | None:
    """The RFC 5322.From domain (lower case, no final dot), or None unless there is exactly one
    From field holding exactly one address with a plausible domain (RFC 7489 §6.6.1)."""
    froms = message.values("from")
    if len(froms) != 1:
        return None
    addresses = [a for _, a in email.utils.getaddresses(froms) if a]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    return plausible_domain(addresses[0].rpartition("@")[2])


def plausible_domain(text: str | None) -> str | None:
    """`text` lower-cased without its final dot if it can be a domain name, else None."""
    if not text:
        return None
    domain = text.strip().lower().rstrip(".")
    if not _DOMAIN.fullmatch(domain) or ".." in domain or domain.startswith((".", "-")):
        return None
    return domain
