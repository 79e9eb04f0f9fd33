"""A message's text as an agent reads it (SPEC §15): `text`, `extracted_text` and `preview`.

Pure and synchronous: the extraction worker calls it on the bodies it has just decoded. HTML
becomes text with inscriptis (layout-aware, Apache-2.0); the new part of a reply is found by
mail-parser-reply (the "On … wrote:" / "Am … schrieb" / "Le … a écrit" headers of thirteen
languages and Outlook's From:/Sent: blocks), after we cut forwarded history and before we drop
the `>` lines it leaves. Its regular expressions cost about 1 ms per 3 kB with every language
on, so a text that holds none of the markers they look for is not handed to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

PREVIEW_CHARS = 200
# How much of a message's text (and of each attachment's) the search index holds by default
# (config content.index_chars for inbound mail).
INDEX_CHARS = 100_000
# The reply parser reads at most this much of the top of a text (the new part is at the top);
# a text whose head holds no quote header is new through to its end.
REPLY_INPUT_CHARS = 200_000
# HTML past this many characters is not turned into text (lxml's tree costs ~10× the input).
HTML_INPUT_CHARS = 4 * 1024 * 1024

# Any of these in a text means the reply parser has something to look at: a quoted line, a
# line ending in a colon (every language's "… wrote:"), a header line (Outlook's blocks), a
# separator line.
_CANDIDATE = re.compile(
    r"^[ \t]*>|[:：][ \t]*$|^[ \t*]*[\w\u00C0-\uFFFF ]{1,24}[:：]|^[ \t]*[-_]{5,}",
    re.MULTILINE)
# Forwarded or original history, cut wherever it starts (mail clients' own separators).
_HISTORY = re.compile(
    r"^[ \t>]*(?:-{2,}[ \t]*(?:Forwarded message|Forwarded Message|Original Message|"
    r"Original message|Weitergeleitete Nachricht|Ursprüngliche Nachricht|Message transféré|"
    r"Message d'origine|Mensaje reenviado|Mensaje original|Messaggio inoltrato|"
    r"Messaggio originale|Doorgestuurd bericht|Oorspronkelijk bericht|"
    r"Vidarebefordrat meddelande|Ursprungligt meddelande)[ \t]*-{2,}|"
    r"Begin forwarded message:|Anfang der weitergeleiteten Nachricht:|"
    r"Début du message réexpédié :?)[ \t]*$",
    re.MULTILINE | re.IGNORECASE)
_SIGNATURE = re.compile(r"^-- ?$", re.MULTILINE)  # RFC 3676's delimiter, "-- "
_SENT_FROM = re.compile(r"^[ \t]*(?:Sent from my |Get Outlook for |Von meinem |Envoyé de mon )"
                        r".{0,60}$", re.MULTILINE)
# Attribution lines mail-parser-reply's patterns miss, followed by a quote.
_ATTRIBUTION = re.compile(
    r"^(?![ \t]*>)[^\n]{0,300}\b(?:wrote|escribió|escribio|schreef|schrieb|a écrit|ha scritto|"
    r"scrisse|skrev|kirjoitti|napisał|написал|escreveu)\b[^\n]{0,200}:[ \t]*$"
    r"(?=\n(?:[ \t]*\n)*[ \t]*>)", re.MULTILINE | re.IGNORECASE)
# What a signature the parser finds may be (`_own_signature`).
_SIGNATURE_LINES = 6
_SIGN_OFF_CHARS = 40
_SIGN_OFF_WORDS = 4
_POSTSCRIPT = re.compile(r"P\.?\s?S\b", re.IGNORECASE)
_QUOTED = re.compile(r"^[ \t]*>.*(?:\n|$)", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")
_SPACES = re.compile(r"\s+")

# The quoting that clients put in HTML: removed before an HTML-only reply becomes its new part.
_HTML_QUOTES = ("//blockquote", "//*[contains(concat(' ', @class, ' '), ' gmail_quote ')]",
                "//*[@id='appendonsend']", "//*[@id='divRplyFwdMsg']",
                "//*[contains(concat(' ', @class, ' '), ' yahoo_quoted ')]")
_HTML_TAIL_FROM = ("appendonsend", "divRplyFwdMsg")  # Outlook: all that follows is history
# Thunderbird's attribution ("On … wrote:") just before its quote; some users type their whole
# reply in elements of that class, so only the one a blockquote follows goes.
_HTML_CITE_PREFIX = "//*[contains(concat(' ', @class, ' '), ' moz-cite-prefix ')]"


@dataclass(frozen=True)
class MessageText:
    """What a message says, as text.

    `text`: the text body, or text made from the HTML when there is none (`from_html`).
    `extracted`: its new part. `preview`: the first characters of `extracted` on one line (of
    `text` when the message adds nothing of its own, a bare forward)."""

    text: str | None
    from_html: bool
    extracted: str
    preview: str


@cache
def _languages() -> tuple[str, ...]:
    from mailparser_reply.constants import MAIL_LANGUAGES

    return tuple(sorted(MAIL_LANGUAGES))


def _replies(text: str) -> list[Any]:
    """`text` split at its reply headers by mail-parser-reply (hyphen lists are not taken for
    signatures: diffs and bullet lists start lines with "-")."""
    from mailparser_reply import EmailMessage

    message = EmailMessage(text=text, languages=list(_languages()), keep_hyphen_lists=True)
    return list(message.read().replies)


def _tidy(text: str) -> str:
    return _BLANK_RUNS.sub("\n\n", text).strip()


def _cut_signature(text: str) -> str:
    found = _SIGNATURE.search(text)
    if found is not None:
        text = text[:found.start()]
    return _SENT_FROM.sub("", text)


def _own_signature(reply: Any) -> str:
    """The reply's text without the signature the parser found, when that is a signature: a
    short sign-off line ("Best,", "Kind regards, Bob") and a few short lines after it, no P.S.
    Its signature words also start sentences ("Thanks, that works"), so anything longer is
    the sender's own text and stays."""
    body = str(reply.full_body)
    signature = str(reply.signatures or "")
    lines = [line.strip() for line in signature.splitlines() if line.strip()]
    if (not lines or len(lines) > _SIGNATURE_LINES or len(lines[0]) > _SIGN_OFF_CHARS
            or len(lines[0].split()) > _SIGN_OFF_WORDS
            or any(_POSTSCRIPT.match(line) for line in lines)):
        return body
    return body.replace(signature, "")


def _without_attributions(text: str) -> str:
    """`text` without the attribution lines mail-parser-reply's patterns miss (Gmail's Spanish
    "El …, <name> (<addr>) escribió:", Dutch "Op … schreef <name> <addr>:") where quoted
    lines follow them (the quote itself goes with the other `>` lines)."""
    return _ATTRIBUTION.sub("", text)


def _quoted_next(text: str) -> bool:
    """Whether the first line of `text` with something on it is quoted ("> …")."""
    for line in text.splitlines():
        if line.strip():
            return line.lstrip().startswith(">")
    return True


def extracted_text(text: str) -> str:
    """The new part of a message's text: without quoted replies, the "On … wrote:" block and
    what follows it, forwarded history and the signature. An attribution followed by quoted
    lines is dropped with them and what the sender wrote between and after them stays
    (interleaved answers, bottom posting); one followed by unquoted history ends the new part.
    """
    text = text.replace("\r\n", "\n")
    history = _HISTORY.search(text)
    if history is not None:
        text = text[:history.start()]
    head, rest = text[:REPLY_INPUT_CHARS], text[REPLY_INPUT_CHARS:]
    if _CANDIDATE.search(head) is None:
        return _tidy(_cut_signature(text))
    replies = _replies(head)
    parts: list[str] = []
    for reply in replies:
        if reply.headers:
            after = str(reply.content)[len(str(reply.headers)):]
            if not _quoted_next(after):
                break  # unquoted history follows the header: the new part has ended
        parts.append(_own_signature(reply))
    new = _without_attributions("\n\n".join(parts))
    if not any(reply.headers for reply in replies):
        new += rest  # no quote header in the head: the rest is new too
    return _tidy(_QUOTED.sub("", _cut_signature(new)))


def preview_of(text: str) -> str:
    """`text` on one line, cut to PREVIEW_CHARS characters."""
    # A NUL (which no PostgreSQL text column holds) as U+FFFD, as in the headers of note.
    return _SPACES.sub(" ", text[:PREVIEW_CHARS * 4]).strip()[:PREVIEW_CHARS].replace(
        "\x00", "\ufffd")


def html_to_text(html: str, without_quotes: bool = False) -> str:
    """The text of an HTML document, laid out as a browser would (tables, lists, blocks);
    `without_quotes` first removes the quoting mail clients mark in HTML."""
    from inscriptis import Inscriptis
    from inscriptis.model.config import ParserConfig
    from lxml import etree
    from lxml import html as lxml_html

    html = html[:HTML_INPUT_CHARS]
    if not html.strip():
        return ""
    try:
        tree = lxml_html.fromstring(html)
    except (etree.ParserError, ValueError):
        return ""
    if without_quotes:
        for tail_id in _HTML_TAIL_FROM:
            for start in tree.xpath(f"//*[@id='{tail_id}']"):
                for later in list(start.itersiblings()):
                    later.drop_tree()
        for prefix in tree.xpath(_HTML_CITE_PREFIX):
            after = prefix.getnext()
            if after is not None and after.tag == "blockquote":
                prefix.drop_tree()
        for query in _HTML_QUOTES:
            for node in tree.xpath(query):
                if node.getparent() is not None:
                    node.drop_tree()
    return str(Inscriptis(tree, ParserConfig(display_links=False)).get_text()).strip()


def message_text(text: str | None, html: str | None) -> MessageText:
    """The text fields of a message with these bodies (either may be missing)."""
    from_html = text is None and html is not None
    if from_html:
        assert html is not None
        text = html_to_text(html)
        extracted = extracted_text(html_to_text(html, without_quotes=True))
    else:
        extracted = extracted_text(text or "")
    preview = preview_of(extracted or text or "")
    return MessageText(text=text, from_html=from_html, extracted=extracted, preview=preview)
