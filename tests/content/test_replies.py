"""The new part of a reply (`daemon.content.extracted_text`, `message_text`): quoting, reply
headers, forwarded history and signatures gone; what the sender wrote kept.

Two kinds of input. Real replies from the shared corpus (../shared/corpus, other projects'
fixtures, read in place and never copied): for each, the test splits the body itself, with its
own simple rules (`_split`: lines that start with ">", everything from the history's first line
on, the signature), and picks words found only in the quoted part (must be gone) and words found
only in the new part (must stay). And synthetic replies built here around random marker words,
so no expected answer can be written into the implementation, in the quoting styles and
languages of the common clients.

What the corpus holds and what it lacks (grep over its 602 messages):
- Gmail: only forwards ("---------- Forwarded message ----------", text and `gmail_quote`
  HTML). Its one Gmail-written "On <date> <name> <addr> wrote:" reply
  (php-mime-mail-parser/issue84) has broken headers (the body the parser finds starts inside
  the header block, still quoted-printable), so it is left out; Gmail's reply header is covered
  by Evolution's identical one (salmon/borked.msg) and synthetically.
- Outlook: Outlook Express's "----- Original Message -----" block (spamassassin), and Italian
  Outlook's "Da:/Inviato:/A:/Oggetto:" block (spamscope). The modern block after a line of
  underscores and "-----Original Message-----" with new text are not there: synthetic.
- Thunderbird: its "On <date> <time>, <name> wrote:" reply, text and HTML (rspamd/ham.eml).
  "-------- Original Message --------" / "-------- Forwarded Message --------": synthetic.
- Apple Mail: only its Italian forward ("Inizio messaggio inoltrato:", inside the spamscope
  message). "On <date>, at <time>, <name> wrote:" and "Begin forwarded message:": synthetic.
- Others: Eudora's "At <time> <date>, <name> wrote:" with ">" quoting, Mutt and NeoMutt
  (interleaved), Gnus's "<name> writes:", Netscape 4's "<name> wrote:", Andrew's "Excerpts
  from", Pine's forward.
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.content import PREVIEW_CHARS, extracted_text, message_text
from extractors import Limits, extract_message

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
ABSENT = (f"the shared corpus is not at {CORPUS} (it lives beside the repository, in "
          "../shared/corpus); these tests read real replies from it and cannot run without it")

# Words the tests pick: letters only, long enough to be specific to one part of a message.
_WORD = re.compile(r"[^\W\d_]{6,}")
_QUOTE_LINE = re.compile(r"^[ \t]*>")
# Attribution lines ("<name> wrote:") belong to neither part: the tests assert nothing of them.
_ATTRIBUTION = re.compile(r"(?:wrote|writes|schrieb|a écrit|escribió)[ \t]*:?[ \t]*$")
_SIGNATURE = re.compile(r"^-- ?$")
WORDS_PER_BLOCK = 3


# ---------------------------------------------------------------------------------------------
# Real replies from the corpus


@dataclass(frozen=True)
class CorpusReply:
    """One corpus message and how the test itself finds its quoted part."""

    path: str  # relative to the corpus folder
    style: str
    # The line where quoted or forwarded history begins: it and everything after it are quoted.
    # None: only ">" lines are quoted (bottom-posting, interleaving).
    history: str | None = None
    # Lines that are neither new nor quoted (attributions, disclaimers).
    ignore: str | None = None
    # A forward with nothing of its own: no new words, and the preview comes from the text.
    bare_forward: bool = False
    # Set where the implementation is wrong: the test keeps its assertions and is xfail(strict).
    xfail: str | None = None
    xfail_html: str | None = None


ON_WROTE = r"^On .+ wrote:[ \t]*$"
CORPUS_REPLIES = [
    CorpusReply("messages/salmon/borked.msg",
                "Evolution, the Gmail shape: 'On <date>, <name> wrote:' then '> ' lines",
                history=ON_WROTE),
    CorpusReply("messages/rspamd/ham.eml",
                "Thunderbird: 'On <date> <time>, <name> wrote:', '> ' lines, '-- ' signature; "
                "HTML: moz-cite-prefix and <blockquote type=cite>",
                # Its HTML reply is typed inside moz-cite-prefix elements (the class of
                # the attribution line): only the one a blockquote follows is dropped.
                history=ON_WROTE),
    CorpusReply("messages/spamassassin/t.rules__FORGED_MUA_OUTLOOK__fp-5496-2",
                "Outlook Express: indented '----- Original Message -----' From/To/Cc/Sent/"
                "Subject block",
                history=r"^[ \t]*-+ ?Original Message ?-+",
                # The list's footer, appended after the history (and, in the HTML, after the
                # quote): the list's words, neither the sender's nor the quoted author's.
                ignore=r"^(?:\*{20,}|To access the Archives of this)"),
    CorpusReply("messages/spamscope_mail-parser/mail_test_7",
                "Italian Outlook 'Da:/Inviato:/A:/Oggetto:' block, then Italian Apple Mail "
                "'Inizio messaggio inoltrato:' forwards",
                history=r"^Da: .+\[mailto:", ignore=r"^Nota di riservatezza"),
    CorpusReply("messages/pecl-mailparse/phpcvs1.txt",
                "Eudora: 'At <time> <date>, <name> wrote:' then nested '>' quoting without a "
                "space",
                history=r"^At .+ wrote:[ \t]*$"),
    CorpusReply("messages/notmuch/indexing__PATCH-1-2-system_data_types.7-srcfix.txt_2_S",
                "NeoMutt: 'At <date>, <name> wrote:' then interleaved quotes and answers",
                # The sign-off and name are the signature, which may go with the quotes.
                ignore=r"^(?:Regards,|Branden)$"),
    CorpusReply("messages/notmuch/duplicate__msg-2-1_2_",
                "Gnus: '<name> <addr> writes:' then '> ' quote, the answer below it"),
    CorpusReply("messages/notmuch/default__bar__baz__24_2_",
                "Mutt: '> ' quote at the top, answer, '-- ' signature"),
    CorpusReply("messages/flanker/from-encoding.eml",
                "Netscape 4: '<name> wrote:' then '> ' quote, the answer below it"),
    CorpusReply("messages/spamassassin/t__data__nice__base64.txt",
                "greeting, '> ' quote, then the answer"),
    CorpusReply("messages/spamassassin/t__data__nice__mime1",
                "Andrew: 'Excerpts from …' attribution, '> ' quote, then the answer",
                ignore=r"^(?:Excerpts from |Mark Crispin@)"),
    CorpusReply("messages/flanker/message-external-body.eml",
                "Pine forward: new text then '---------- Forwarded message ----------'",
                history=r"^-+ ?Forwarded message ?-+"),
    CorpusReply("messages/mikel_mail/emails__mime_emails__raw_email2.eml",
                "Gmail forward: new text then '---------- Forwarded message ----------'",
                history=r"^-+ ?Forwarded message ?-+"),
    CorpusReply("messages/flanker/multi-received-headers.eml",
                "Gmail bare forward of a forward (text, and HTML in div.gmail_quote)",
                history=r"^-+ ?Forwarded message ?-+", bare_forward=True),
]


@dataclass(frozen=True)
class Split:
    """A body as the test reads it: its lines' kinds, in blocks of consecutive lines."""

    new: list[list[str]]  # blocks of new lines
    removed: list[list[str]]  # blocks of quoted, history and signature lines
    neither: list[str]


def _split(text: str, history: str | None, ignore: str | None) -> Split:
    """The test's own reading of a reply: ">" lines, the history from its first line on and the
    signature are removed; attributions and `ignore` lines are neither; the rest is new."""
    new: list[list[str]] = []
    removed: list[list[str]] = []
    neither: list[str] = []
    last = ""
    in_history = in_signature = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if not in_history and history is not None and re.search(history, line):
            in_history = True
        if not in_history and _SIGNATURE.match(line):
            in_signature = True
        if ignore is not None and re.search(ignore, line.strip()):
            neither.append(line)  # wherever it is: `ignore` lines are neither new nor quoted
            continue
        if in_history or in_signature or _QUOTE_LINE.match(line):
            kind = "removed"
        elif _ATTRIBUTION.search(line):
            neither.append(line)
            continue
        elif not line.strip():
            continue  # blank lines neither start nor end a block
        else:
            kind = "new"
        blocks = new if kind == "new" else removed
        if kind != last or not blocks:
            blocks.append([])
        blocks[-1].append(line)
        last = kind
    return Split(new=new, removed=removed, neither=neither)


def _words(text: str) -> set[str]:
    return {word.casefold() for word in _WORD.findall(text)}


def _pick(blocks: list[list[str]], only: set[str]) -> list[str]:
    """A few words of each block (its first, middle and last eligible), from `only`."""
    picked: list[str] = []
    for block in blocks:
        eligible: list[str] = []
        for word in _WORD.findall("\n".join(block)):
            if word.casefold() in only and word.casefold() not in eligible:
                eligible.append(word.casefold())
        if eligible:
            step = max(1, (len(eligible) - 1) // max(1, WORDS_PER_BLOCK - 1))
            chosen = eligible[::step][:WORDS_PER_BLOCK - 1] + eligible[-1:]
            picked.extend(word for word in chosen if word not in picked)
    return picked


@dataclass(frozen=True)
class Expectation:
    kept: list[str]
    gone: list[str]


def _expectation(text: str, history: str | None, ignore: str | None) -> Expectation:
    split = _split(text, history, ignore)
    new_words = _words("\n".join(line for block in split.new for line in block))
    removed_words = _words("\n".join(line for block in split.removed for line in block))
    neither_words = _words("\n".join(split.neither))
    return Expectation(kept=_pick(split.new, new_words - removed_words),
                       gone=_pick(split.removed, removed_words - new_words - neither_words))


def _has_word(word: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text.casefold()) is not None


def _html_words(html: str) -> set[str]:
    """The words of an HTML document, found crudely (tags out, entities decoded)."""
    without_style = re.sub(r"(?is)<(style|script)\b.*?</\1>", " ", html)
    return _words(html_lib.unescape(re.sub(r"<[^>]*>", " ", without_style)))


def _bodies(relative: str) -> tuple[str | None, str | None]:
    """A corpus message's text and HTML bodies, as postroom's own parser finds them."""
    assert (CORPUS / "messages").is_dir(), ABSENT
    path = CORPUS / relative
    assert path.is_file(), f"{relative} is not in the shared corpus at {CORPUS}"
    found = extract_message(path.read_bytes(), Limits())
    return (found.text_body.text if found.text_body is not None else None,
            found.html_body.text if found.html_body is not None else None)


def _assert_preview(preview: str) -> None:
    assert len(preview) <= PREVIEW_CHARS
    assert "\n" not in preview and "\r" not in preview


def _check(extracted: str, expected: Expectation, bare_forward: bool) -> None:
    assert expected.gone, "the test found no words only in the quoted part"
    if bare_forward:
        assert not expected.kept
        assert not _words(extracted), extracted
    else:
        assert expected.kept, "the test found no words only in the new part"
    survived = [word for word in expected.gone if _has_word(word, extracted)]
    lost = [word for word in expected.kept if not _has_word(word, extracted)]
    assert (survived, lost) == ([], []), extracted


def _param(reply: CorpusReply, reason: str | None) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(reply, id=reply.path, marks=marks)


@pytest.mark.parametrize("reply", [_param(r, r.xfail) for r in CORPUS_REPLIES])
def test_corpus_reply_text_body(reply: CorpusReply) -> None:
    text, html = _bodies(reply.path)
    assert text is not None
    expected = _expectation(text, reply.history, reply.ignore)
    _check(extracted_text(text), expected, reply.bare_forward)
    fields = message_text(text, html)
    assert fields.text == text and not fields.from_html
    _assert_preview(fields.preview)
    if reply.bare_forward:
        assert fields.preview, "a bare forward's preview comes from its text"


CORPUS_HTML = [r for r in CORPUS_REPLIES if r.path in {
    "messages/rspamd/ham.eml",
    "messages/spamassassin/t.rules__FORGED_MUA_OUTLOOK__fp-5496-2",
    "messages/spamscope_mail-parser/mail_test_7",
    "messages/flanker/multi-received-headers.eml",
}]


@pytest.mark.parametrize("reply", [_param(r, r.xfail_html) for r in CORPUS_HTML])
def test_corpus_reply_html_body_alone(reply: CorpusReply) -> None:
    """The message's HTML alternative as if it came alone: the words the test picks from the text
    alternative, where the HTML has them too, are kept or gone just the same."""
    text, html = _bodies(reply.path)
    assert text is not None and html is not None
    expected = _expectation(text, reply.history, reply.ignore)
    in_html = _html_words(html)
    expected = Expectation(kept=[w for w in expected.kept if w in in_html],
                           gone=[w for w in expected.gone if w in in_html])
    fields = message_text(None, html)
    assert fields.from_html and fields.text is not None
    _check(fields.extracted, expected, reply.bare_forward)
    _assert_preview(fields.preview)


def test_corpus_absence_fails_rather_than_skips(tmp_path: Path) -> None:
    """Without ../shared/corpus the corpus tests fail (an assertion), never skip."""
    import tests.content.test_replies as module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "CORPUS", tmp_path / "absent")
        with pytest.raises(AssertionError):
            _bodies(CORPUS_REPLIES[0].path)


# ---------------------------------------------------------------------------------------------
# Synthetic replies


def _marker() -> str:
    """A random word nothing can know in advance: a letter, then eight hex digits."""
    return "w" + secrets.token_hex(4)


@dataclass(frozen=True)
class Built:
    text: str
    kept: list[str]
    gone: list[str]


def _assert_extracted(built: Built, extracted: str) -> None:
    survived = [word for word in built.gone if word in extracted]
    lost = [word for word in built.kept if word not in extracted]
    assert (survived, lost) == ([], []), extracted


def _new_part(kept: list[str]) -> str:
    kept.extend(_marker() for _ in range(3))
    # No line starts with a sign-off word ("Thanks", "Best"): SIGN_OFF_LINES has those.
    return (f"Hi Alice,\n\nThe {kept[0]} is fine by me; see you on the {kept[1]}.\n\n"
            f"Bob {kept[2]}")


# Reply headers of mail clients and languages: `{name}` and `{addr}` are the quoted author's.
REPLY_HEADERS = {
    "english_gmail": "On Mon, 1 Jan 2024 at 10:00, {name} <{addr}> wrote:",
    "english_gmail_wrapped": "On Mon, 1 Jan 2024 at 10:00, {name} Example <\n{addr}> wrote:",
    "english_apple_mail": "On 1 Jan 2024, at 10:00, {name} <{addr}> wrote:",
    "english_thunderbird": "On 01/01/2024 10:00, {name} wrote:",
    "german": "Am 01.01.2024 um 10:00 schrieb {name} <{addr}>:",
    "french": "Le lun. 1 janv. 2024 à 10:00, {name} <{addr}> a écrit :",
    "spanish": "El lun, 1 ene 2024 a las 10:00, {name} (<{addr}>) escribió:",
    "italian": "Il giorno lun 1 gen 2024 alle ore 10:00 {name} <{addr}> ha scritto:",
    "dutch": "Op ma 1 jan. 2024 om 10:00 schreef {name} <{addr}>:",
    "swedish": "Den mån 1 jan. 2024 kl 10:00 skrev {name} <{addr}>:",
}


def _quoted_reply(header: str) -> Built:
    kept: list[str] = []
    new = _new_part(kept)
    gone = [_marker() for _ in range(4)]
    name, quoted = gone[0], gone[1:]
    text = (f"{new}\n\n{header.format(name=name.capitalize(), addr=f'{name}@example.org')}\n"
            f">\n> Shall we meet on the {quoted[0]}?\n> I could also do {quoted[1]}.\n>\n"
            f"> > Earlier: {quoted[2]}\n")
    return Built(text, kept, gone)


@pytest.mark.parametrize("header", REPLY_HEADERS.values(), ids=REPLY_HEADERS.keys())
def test_reply_header_and_quote_are_gone(header: str) -> None:
    built = _quoted_reply(header)
    _assert_extracted(built, extracted_text(built.text))
    _assert_extracted(built, extracted_text(built.text.replace("\n", "\r\n")))


def _history_reply(history: str) -> Built:
    """New text, then a client's block of history (its header lines then unquoted text)."""
    kept: list[str] = []
    new = _new_part(kept)
    gone = [_marker() for _ in range(4)]
    name, quoted = gone[0], gone[1:]
    block = history.format(name=name.capitalize(), addr=f"{name}@example.org")
    text = (f"{new}\n\n{block}\n\nShall we meet on the {quoted[0]}?\n\n"
            f"I could also do {quoted[1]}.\n\nAlice {quoted[2]}\n")
    return Built(text, kept, gone)


OUTLOOK = ("From: {name} <{addr}>\nSent: Monday, January 1, 2024 10:00 AM\n"
           "To: Bob <bob@example.org>\nSubject: Re: Meeting")
HISTORY_BLOCKS = {
    "outlook_underscores": "________________________________\n" + OUTLOOK,
    "outlook_no_underscores": OUTLOOK,
    "outlook_with_date_line": ("From: {name} <{addr}>\nDate: Monday, 1 January 2024 at 10:00\n"
                              "To: Bob <bob@example.org>\nSubject: Re: Meeting"),
    "outlook_german": ("________________________________\nVon: {name} <{addr}>\n"
                       "Gesendet: Montag, 1. Januar 2024 10:00\nAn: Bob <bob@example.org>\n"
                       "Betreff: AW: Treffen"),
    "outlook_french": ("________________________________\nDe : {name} <{addr}>\n"
                       "Envoyé : lundi 1 janvier 2024 10:00\nÀ : Bob <bob@example.org>\n"
                       "Objet : RE: Réunion"),
    "outlook_italian": ("Da: {name} [mailto:{addr}]\nInviato: lunedì 1 gennaio 2024 10:00\n"
                        "A: Bob <bob@example.org>\nOggetto: R: Riunione"),
    "outlook_original_message": ("-----Original Message-----\nFrom: {name} [mailto:{addr}]\n"
                                 "Sent: Monday, January 01, 2024 10:00 AM\n"
                                 "To: Bob\nSubject: RE: Meeting"),
    "outlook_express_original_message": ("----- Original Message -----\nFrom: {name}\n"
                                         "To: Bob\nSent: Monday, January 01, 2024 10:00 AM\n"
                                         "Subject: Re: Meeting"),
    "gmail_forward": ("---------- Forwarded message ---------\nFrom: {name} <{addr}>\n"
                      "Date: Mon, 1 Jan 2024 at 10:00\nSubject: Meeting\n"
                      "To: Bob <bob@example.org>"),
    "gmail_forward_german": ("---------- Weitergeleitete Nachricht ---------\n"
                             "Von: {name} <{addr}>\nDate: Mo., 1. Jan. 2024 um 10:00 Uhr\n"
                             "Subject: Treffen\nTo: Bob <bob@example.org>"),
    "apple_begin_forwarded": ("Begin forwarded message:\n\nFrom: {name} <{addr}>\n"
                              "Subject: Meeting\nDate: 1 January 2024 at 10:00:00 CET\n"
                              "To: Bob <bob@example.org>"),
    "thunderbird_original_message": ("-------- Original Message --------\nSubject: Meeting\n"
                                     "Date: Mon, 1 Jan 2024 10:00:00 +0100\n"
                                     "From: {name} <{addr}>\nTo: Bob <bob@example.org>"),
    "thunderbird_forwarded_message": ("-------- Forwarded Message --------\nSubject: Meeting\n"
                                      "Date: Mon, 1 Jan 2024 10:00:00 +0100\n"
                                      "From: {name} <{addr}>\nTo: Bob <bob@example.org>"),
}


@pytest.mark.parametrize("history", HISTORY_BLOCKS.values(), ids=HISTORY_BLOCKS.keys())
def test_history_block_and_what_follows_are_gone(history: str) -> None:
    built = _history_reply(history)
    _assert_extracted(built, extracted_text(built.text))
    _assert_extracted(built, extracted_text(built.text.replace("\n", "\r\n")))


def _interleaved(header: str) -> Built:
    answers = [_marker() for _ in range(3)]
    questions = [_marker() for _ in range(3)]
    text = (f"{header}\n> First, can you do the {questions[0]}?\n\n"
            f"Yes, the {answers[0]} works.\n\n> And the {questions[1]}, and\n"
            f"> the {questions[2]}?\n\nNo, but {answers[1]} instead.\n\nBob {answers[2]}\n")
    return Built(text, answers, questions)


def test_interleaved_answers_are_kept_and_quotes_gone() -> None:
    built = _interleaved("")
    _assert_extracted(built, extracted_text(built.text))


def test_interleaved_answers_after_a_reply_header_are_kept() -> None:
    """Interleaved replies start with the client's reply header; the answers below it are the
    message (as in the corpus's NeoMutt reply)."""
    built = _interleaved("On Mon, 1 Jan 2024 at 10:00, Alice <alice@example.org> wrote:")
    _assert_extracted(built, extracted_text(built.text))


def test_signature_after_the_delimiter_is_gone() -> None:
    kept = [_marker() for _ in range(2)]
    gone = [_marker() for _ in range(2)]
    text = (f"The report is attached, see {kept[0]}.\n\nBob {kept[1]}\n-- \n"
            f"Bob {gone[0]}\nExample Ltd, +1 555 {gone[1]}\n")
    built = Built(text, kept, gone)
    _assert_extracted(built, extracted_text(text))
    _assert_extracted(built, extracted_text(text.replace("\n", "\r\n")))


def test_sent_from_my_iphone_is_gone() -> None:
    kept = [_marker() for _ in range(2)]
    text = f"Running late, start with {kept[0]}.\n\n{kept[1]}\n\nSent from my iPhone\n"
    extracted = extracted_text(text)
    _assert_extracted(Built(text, kept, []), extracted)
    assert "iPhone" not in extracted


def test_reply_with_signature_and_quote() -> None:
    """The usual top-posted reply: new text, signature, then the client's reply header and the
    quote; only the new text stays."""
    kept: list[str] = []
    new = _new_part(kept)
    gone = [_marker() for _ in range(3)]
    text = (f"{new}\n-- \nBob {gone[0]}\n\nOn Mon, 1 Jan 2024 at 10:00, Alice "
            f"<alice@example.org> wrote:\n> Are you coming {gone[1]}?\n> {gone[2]}\n")
    _assert_extracted(Built(text, kept, gone), extracted_text(text))


# Lines a reply parser may take for a signature's start, with the sender's own text after them.
SIGN_OFF_LINES = {
    "thanks_after_greeting": ("Hi Alice,\n\nThanks, {0} is fine by me.\n\n"
                              "The {1} works too.\n\nBob {2}"),
    "thank_you_after_greeting": ("Hi Alice,\n\nThank you, the {0} arrived.\n"
                                 "Can you also send the {1}?\n\nBob {2}"),
    "hyphen_list": "Hi Alice,\n\nTwo things:\n- the {0}\n- the {1}\n\nBob {2}",
    "ps_after_best": ("Hi Alice,\n\nThe {0} is fine.\n\nBest,\nBob\n\n"
                      "P.S. The {1} is attached, {2}."),
    "ps_after_kind_regards": ("Agenda for {0}:\n\nTime: 10:00\nRoom: {1}\n\nKind regards,\nBob\n\n"
                              "PS: bring the {2}."),
}


@pytest.mark.parametrize("reply", [False, True], ids=["alone", "above_a_quote"])
@pytest.mark.parametrize("template", SIGN_OFF_LINES.values(), ids=SIGN_OFF_LINES.keys())
def test_sign_off_and_list_lines_do_not_cut_the_new_part(template: str, reply: bool) -> None:
    """A line that starts with "Thanks," or "- ", or a closing ("Best,") with a P.S. after it:
    the sender's own text, like all that follows; only "-- " starts a signature."""
    kept = [_marker() for _ in range(3)]
    gone = [_marker()] if reply else []
    text = template.format(*kept)
    if reply:
        text += f"\n\nOn Mon, 1 Jan 2024 at 10:00, Alice <alice@example.org> wrote:\n> {gone[0]}\n"
    _assert_extracted(Built(text, kept, gone), extracted_text(text))


NO_QUOTING = {
    "prose": "Hello {0},\n\nThe build is green again.\nThe release goes out on {1}.\n\nBob {2}",
    "prose_with_colons": ("Agenda for {0}:\n\n1. Budget: approve {1}\n2. Time: 10:00 sharp\n"
                          "Note: bring the figures.\n\nBob {2}"),
    "prose_with_a_rule": "Results for {0}\n----------\nwins: 3\nlosses: {1}\n\nBob {2}",
}


@pytest.mark.parametrize("template", NO_QUOTING.values(), ids=NO_QUOTING.keys())
def test_message_without_quoting_is_returned_whole(template: str) -> None:
    text = template.format(*(_marker() for _ in range(3)))
    assert extracted_text(text) == text
    assert extracted_text(text + "\n") == text


@pytest.mark.parametrize("header", [REPLY_HEADERS["english_gmail"], REPLY_HEADERS["german"]],
                         ids=["english", "german"])
def test_text_fields_of_a_text_reply(header: str) -> None:
    built = _quoted_reply(header)
    fields = message_text(built.text, None)
    assert fields.text == built.text and not fields.from_html
    _assert_extracted(built, fields.extracted)
    _assert_preview(fields.preview)
    assert fields.preview.startswith("Hi Alice, The ")
    _assert_extracted(Built(fields.preview, built.kept[:2], built.gone), fields.preview)


def test_preview_of_a_long_new_part_is_one_line_of_at_most_200_characters() -> None:
    first, last = _marker(), _marker()
    lines = [f"{first} starts here."] + [f"Line {n} of a long answer.\r\n" for n in range(60)]
    text = "\n\n".join(lines) + f"\n\n{last}\n\nOn Mon, 1 Jan 2024, Alice wrote:\n> {_marker()}\n"
    fields = message_text(text, None)
    assert last in fields.extracted
    _assert_preview(fields.preview)
    assert len(fields.preview) == PREVIEW_CHARS
    assert fields.preview.startswith(f"{first} starts here. Line 0 of a long answer. Line 1")


HTML_REPLIES = {
    "gmail_quote": (
        '<div dir="ltr">{new}</div><br><div class="gmail_quote"><div dir="ltr" '
        'class="gmail_attr">On Mon, 1 Jan 2024 at 10:00, {name} &lt;{name}@example.org&gt; '
        'wrote:<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
        'border-left:1px solid rgb(204,204,204);padding-left:1ex"><div dir="ltr">{quoted}'
        '</div></blockquote></div>'),
    "thunderbird_blockquote_cite": (
        '<html><body><p>{new}</p><div class="moz-cite-prefix">On 01/01/2024 10:00, {name} '
        'wrote:<br></div><blockquote type="cite" cite="mid:1@example.org"><p>{quoted}</p>'
        '</blockquote></body></html>'),
    "apple_blockquote_cite": (
        '<html><body dir="auto"><div>{new}</div><div><br><blockquote type="cite"><div>On 1 '
        'Jan 2024, at 10:00, {name} &lt;{name}@example.org&gt; wrote:</div><br><div>{quoted}'
        '</div></blockquote></div></body></html>'),
    "outlook_divrplyfwdmsg": (
        '<html><body><div style="font-family:Calibri">{new}</div><hr style="display:'
        'inline-block;width:98%" tabindex="-1"><div id="divRplyFwdMsg" dir="ltr"><font '
        'face="Calibri"><b>From:</b> {name} &lt;{name}@example.org&gt;<br><b>Sent:</b> '
        'Monday, January 1, 2024 10:00 AM<br><b>To:</b> Bob<br><b>Subject:</b> Re: Meeting'
        '</font><div>&nbsp;</div></div><div><p>{quoted}</p></div></body></html>'),
    "outlook_appendonsend": (
        '<html><body><div>{new}</div><div id="appendonsend"></div><hr><div id="divRplyFwdMsg">'
        '<b>From:</b> {name}<br><b>Subject:</b> Re: Meeting</div><div>{quoted}</div>'
        '</body></html>'),
    "yahoo_quoted": (
        '<html><body><div>{new}</div><div class="yahoo_quoted"><div>On Monday, 1 January '
        '2024, 10:00, {name} &lt;{name}@example.org&gt; wrote:</div><div>{quoted}</div></div>'
        '</body></html>'),
}


@pytest.mark.parametrize("template", HTML_REPLIES.values(), ids=HTML_REPLIES.keys())
def test_html_only_reply(template: str) -> None:
    kept = [_marker() for _ in range(3)]
    gone = [_marker() for _ in range(3)]
    new = f"Sure, {kept[0]} is fine.<br>See you on the <b>{kept[1]}</b>.<br>Bob {kept[2]}"
    quoted = f"Shall we meet on the {gone[1]}?<br>Or the {gone[2]}?"
    html = template.format(new=new, name=gone[0].capitalize(), quoted=quoted)
    fields = message_text(None, html)
    assert fields.from_html
    assert fields.text is not None and gone[1] in fields.text  # `text` is the whole message
    _assert_extracted(Built(html, kept, gone), fields.extracted)
    _assert_preview(fields.preview)
    assert fields.preview.startswith(f"Sure, {kept[0]} is fine.")


# ---------------------------------------------------------------------------------------------
# Bounds: each returns (a pathological regular expression would hang the suite here)


def _prose(size: int, colons: bool) -> str:
    line = "the quick brown fox jumps over the lazy dog and keeps on running\n"
    lines = [line] * (size // len(line))
    if colons:
        lines[::50] = ["Note: keep going\n"] * len(lines[::50])
    return "".join(lines)


@pytest.mark.parametrize("colons", [False, True], ids=["plain", "with_colon_lines"])
def test_five_megabytes_without_quoting_returns_whole(colons: bool) -> None:
    first, last = _marker(), _marker()
    text = f"{first}\n" + _prose(5 * 1024 * 1024, colons) + last
    extracted = extracted_text(text)
    assert extracted.startswith(first) and extracted.endswith(last)
    assert len(extracted) == len(text)


def _hostile(shape: str, size: int) -> str:
    if shape == "quote_lines":
        unit = "> > quoted line of an old thread\n"
    elif shape == "wrote_lines":
        unit = "On Mon, 1 Jan 2024 at 10:00, Alice <alice@example.org> wrote:\n> quoted\n"
    elif shape == "wrote_without_newlines":
        unit = "Alice wrote: > On Mon, 1 Jan 2024 at 10:00 "
    elif shape == "colon_header_lines":
        unit = "From: Alice\nSent: Monday\nTo: Bob\nSubject: x\n> \n"
    else:  # spaces: long runs of blanks before a colon, on one line and many
        unit = " " * 997 + ":\n"
    return unit * (size // len(unit))


@pytest.mark.parametrize("shape", ["quote_lines", "wrote_lines", "wrote_without_newlines",
                                   "colon_header_lines", "spaces"])
def test_a_megabyte_of_quoting_returns(shape: str) -> None:
    new = _marker()
    text = f"{new} is my answer.\n\n" + _hostile(shape, 1024 * 1024)
    extracted = extracted_text(text)
    assert extracted.startswith(f"{new} is my answer.")
    if shape in {"quote_lines", "wrote_lines", "colon_header_lines"}:
        assert "quoted" not in extracted and "Subject: x" not in extracted
