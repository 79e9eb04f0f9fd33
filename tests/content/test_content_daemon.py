"""What an agent reads (SPEC §15), through a real daemon: documents delivered over SMTP read as
text (`text_status`, `GET …/attachments/{index}/text`), hostile ones bounded while mail keeps
coming, a reader past `content.timeout` killed, text of mail encrypted at rest kept encrypted,
the new part of a reply, threads, search scoped to the agent, and events with `thread_id` and
`preview`.

Every document is generated here around random marker words (tests/content/documents.py), so
nothing can be hard-coded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.content import documents
from tests.harness import Daemon, running_daemon
from tests.mail import plain
from tests.pgpkeys import make_key

OOXML = "application/vnd.openxmlformats-officedocument."
TEXT_PLAIN = "text/plain; charset=utf-8"

# (file name, content type, generator) of every format SPEC §15 lists.
FORMATS = [
    ("report.pdf", "application/pdf", documents.pdf),
    ("letter.docx", OOXML + "wordprocessingml.document", documents.docx),
    ("figures.xlsx", OOXML + "spreadsheetml.sheet", documents.xlsx),
    ("deck.pptx", OOXML + "presentationml.presentation", documents.pptx),
    ("notes.odt", "application/vnd.oasis.opendocument.text", documents.odt),
    ("page.html", "text/html", documents.html),
    ("table.csv", "text/csv", documents.csv),
    ("readme.md", "text/markdown", documents.markdown),
    ("data.json", "application/json", documents.json_doc),
    ("invite.ics", "text/calendar", documents.ics),
    ("forwarded.eml", "application/octet-stream", documents.eml),
]


def _message(to: str, subject: str, text: str | None = None, html: str | None = None,
             attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
             sender: str = "Sender <sender@example.org>", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = headers.pop("message_id", None) or make_msgid(domain="example.org")
    for name, value in headers.items():
        msg[name.replace("_", "-").title()] = value
    if text is not None:
        msg.set_content(text)
    if html is not None:
        if text is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    for name, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def _text(api: httpx.Client, message_id: str, index: int) -> httpx.Response:
    return api.get(f"/v1/messages/{message_id}/attachments/{index}/text", params={"wait": 20})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    # The search index would take queued messages a minute after the first: every search
    # below finds what is ready only because a search first has the queue indexed.
    with running_daemon(tmp_path_factory.mktemp("postroom-content"),
                        extra='[content]\nindex_delay = "60s"\n') as d:
        yield d


@pytest.fixture(scope="module")
def alice(daemon: Daemon) -> dict[str, Any]:
    return daemon.add_agent("alice", "alice@content.test")


@pytest.fixture(scope="module")
def bob(daemon: Daemon) -> dict[str, Any]:
    return daemon.add_agent("bob", "bob@content.test")


def test_every_format_reads_as_text_through_the_api(daemon: Daemon, alice: dict[str, Any],
                                                    bob: dict[str, Any]) -> None:
    words = {name: documents.marker_words(4) for name, _, _ in FORMATS}
    attachments = [(name, ctype, make(words[name])) for name, ctype, make in FORMATS]
    message_id = daemon.send(_message("alice@content.test", "documents", "see attached",
                                      attachments=attachments), ["alice@content.test"])
    view = daemon.wait_message(alice["api_key"], message_id)
    assert view["status"] == "ready"
    by_name = {a["file_name"]: a for a in view["attachments"]}
    with daemon.api(alice["api_key"]) as api, daemon.api(bob["api_key"]) as other:
        for name, _, _ in FORMATS:
            att = by_name[name]
            assert (att["text_status"], att["text_truncated"], att["text_error"]) == \
                ("ready", False, None), (name, att)
            r = _text(api, message_id, att["index"])
            assert r.status_code == 200, (name, r.text)
            assert r.headers["content-type"] == TEXT_PLAIN
            assert r.headers["x-text-truncated"] == "false"
            missing = [w for w in words[name] if w not in r.text]
            assert missing == [], (name, r.text[:500])
            assert att["text_size"] == len(r.text)
            # Another agent: exactly as a message that does not exist.
            assert other.get(f"/v1/messages/{message_id}/attachments/{att['index']}/text"
                             ).status_code == 404
        assert api.get(f"/v1/messages/{message_id}/attachments/99/text").status_code == 404
        assert api.get("/v1/messages/msg_nope/attachments/0/text").status_code == 404


def test_hostile_documents_are_bounded_and_mail_keeps_coming(
        daemon: Daemon, alice: dict[str, Any], tmp_path: Path) -> None:
    early, late = documents.marker_words(3), documents.marker_words(3)
    hostile = [
        ("pages.pdf", "application/pdf", documents.many_pages_pdf(early, late, pages=2000)),
        ("bomb.docx", OOXML + "wordprocessingml.document", documents.zip_bomb_docx()),
        ("cut.pdf", "application/pdf", documents.truncated_pdf(documents.marker_words(3))),
        ("locked.pdf", "application/pdf", documents.encrypted_pdf(documents.marker_words(3))),
        ("noise.docx", OOXML + "wordprocessingml.document", documents.random_bytes()),
        ("blob.bin", "application/octet-stream", documents.random_bytes()),
    ]
    message_id = daemon.send(_message("alice@content.test", "hostile", "careful",
                                      attachments=hostile), ["alice@content.test"])
    # While the readers work, other mail is accepted and extracted.
    others = [daemon.send(plain("alice@content.test"), ["alice@content.test"])
              for _ in range(5)]
    for other in others:
        assert daemon.wait_message(alice["api_key"], other)["status"] == "ready"
    view = daemon.wait_message(alice["api_key"], message_id, timeout=60)
    assert view["status"] == "ready"  # the bytes are stored whatever their text came to
    status = {a["file_name"]: (a["text_status"], a["text_truncated"])
              for a in view["attachments"]}
    assert status == {
        "pages.pdf": ("ready", True), "bomb.docx": ("too_large", False),
        "cut.pdf": ("failed", False), "locked.pdf": ("encrypted", False),
        "noise.docx": ("failed", False), "blob.bin": ("unsupported", False)}
    errors = {a["file_name"]: a["text_error"] for a in view["attachments"]}
    assert all(errors[n] for n in status if n != "pages.pdf")  # each says why
    with daemon.api(alice["api_key"]) as api:
        pages = _text(api, message_id, 0)
        assert pages.status_code == 200 and pages.headers["x-text-truncated"] == "true"
        assert all(w in pages.text for w in early)  # page 1
        assert not any(w in pages.text for w in late)  # page 1000, past content.max_pages
        for index in range(1, len(hostile)):
            r = _text(api, message_id, index)
            assert (r.status_code, r.json()["error"]["code"]) == (409, "no_text"), r.text


def test_a_reader_past_the_timeout_is_killed(tmp_path: Path) -> None:
    book = documents.million_cell_xlsx(tmp_path / "cells.xlsx")
    with running_daemon(tmp_path / "d", extra='[content]\ntimeout = "1s"\n') as d:
        carol = d.add_agent("carol", "carol@content.test")
        message_id = d.send(_message("carol@content.test", "cells", "a big one", attachments=[
            ("cells.xlsx", OOXML + "spreadsheetml.sheet", book.read_bytes())]),
            ["carol@content.test"])
        other = d.send(plain("carol@content.test"), ["carol@content.test"])
        view = d.wait_message(carol["api_key"], message_id, timeout=60)
        (att,) = view["attachments"]
        assert (att["status"], att["text_status"]) == ("ready", "failed")
        assert att["text_error"]
        assert d.events("content.timeout")
        assert d.wait_message(carol["api_key"], other)["status"] == "ready"
        # The next document gets a fresh worker and reads.
        words = documents.marker_words(3)
        again = d.send(_message("carol@content.test", "small", "x", attachments=[
            ("a.docx", OOXML + "wordprocessingml.document", documents.docx(words))]),
            ["carol@content.test"])
        d.wait_message(carol["api_key"], again)
        with d.api(carol["api_key"]) as api:
            r = _text(api, again, 0)
            assert r.status_code == 200 and all(w in r.text for w in words)


def test_message_text_fields(daemon: Daemon, alice: dict[str, Any]) -> None:
    new, quoted = documents.marker_words(3), documents.marker_words(3)
    text = (f"Hi,\n\n{new[0]} and {new[1]} are fine.\n\n{new[2]}\n\n"
            f"On Mon, 1 Jan 2024 at 10:00, Bob <bob@example.org> wrote:\n"
            f"> {quoted[0]}\n> {quoted[1]} {quoted[2]}\n")
    reply = daemon.send(_message("alice@content.test", "Re: plans", text),
                        ["alice@content.test"])
    html_words = documents.marker_words(2)
    html = (f"<html><body><p>{html_words[0]}</p><blockquote>{html_words[1]}</blockquote>"
            "</body></html>")
    html_only = daemon.send(_message("alice@content.test", "html", html=html),
                            ["alice@content.test"])
    with daemon.api(alice["api_key"]) as api:
        daemon.wait_message(alice["api_key"], reply)
        view = api.get(f"/v1/messages/{reply}").json()
        assert all(w in view["text"] for w in new + quoted)
        assert all(w in view["extracted_text"] for w in new)
        assert not any(w in view["extracted_text"] for w in quoted)
        assert view["preview"].startswith(f"Hi, {new[0]} and {new[1]} are fine.")
        assert "\n" not in view["preview"] and len(view["preview"]) <= 200
        daemon.wait_message(alice["api_key"], html_only)
        view = api.get(f"/v1/messages/{html_only}").json()
        assert all(w in view["text"] for w in html_words)  # text made from the HTML
        assert "<p>" in view["html"]
        assert html_words[0] in view["extracted_text"]
        assert html_words[1] not in view["extracted_text"]
        listed = {m["id"]: m for m in api.get("/v1/messages", params={"limit": 200}).json()[
            "messages"]}
        assert listed[reply]["preview"] == api.get(f"/v1/messages/{reply}").json()["preview"]


def test_threads_inbound_outbound_and_by_subject(daemon: Daemon, alice: dict[str, Any],
                                                 bob: dict[str, Any]) -> None:
    subject = "budget " + documents.marker_words(1)[0]
    root_id = make_msgid(domain="example.org")
    first = daemon.send(_message("alice@content.test", subject, "the first",
                                 message_id=root_id), ["alice@content.test"])
    quoted = documents.marker_words(2)
    second = daemon.send(_message(
        "alice@content.test", f"Re: {subject}",
        f"the second\n\nOn Mon, 1 Jan 2024, Sender <sender@example.org> wrote:\n"
        f"> {quoted[0]} {quoted[1]}\n", in_reply_to=root_id, references=root_id),
        ["alice@content.test"])
    # A reply that lost its headers joins by subject (SPEC §15: the last resort).
    third = daemon.send(_message("alice@content.test", f"RE: {subject}", "the third"),
                        ["alice@content.test"])
    unrelated = daemon.send(_message("alice@content.test", "Re: something else entirely",
                                     "not in it"), ["alice@content.test"])
    for m in (first, second, third, unrelated):
        daemon.wait_message(alice["api_key"], m)
    with daemon.api(alice["api_key"]) as api, daemon.api(bob["api_key"]) as other:
        thread_id = api.get(f"/v1/messages/{first}").json()["thread_id"]
        for m in (second, third):
            assert api.get(f"/v1/messages/{m}").json()["thread_id"] == thread_id
        assert api.get(f"/v1/messages/{unrelated}").json()["thread_id"] != thread_id
        # Alice answers (outbound, local delivery to bob): the same thread.
        sent = api.post("/v1/messages", json={
            "to": ["bob@content.test"], "subject": f"Re: {subject}",
            "text": "the fourth, from alice", "in_reply_to": third})
        assert sent.status_code == 202, sent.text
        assert sent.json()["thread_id"] == thread_id
        fourth = sent.json()["id"]
        thread = api.get(f"/v1/threads/{thread_id}").json()
        assert [m["id"] for m in thread["messages"]] == [first, second, third, fourth]
        assert thread["messages"][1]["extracted_text"] == "the second"
        assert thread["messages"][3]["extracted_text"] == "the fourth, from alice"
        assert thread["messages"][3]["direction"] == "outbound"
        assert thread["has_more"] is False
        page = api.get(f"/v1/threads/{thread_id}", params={"limit": 2}).json()
        assert [m["id"] for m in page["messages"]] == [first, second] and page["has_more"]
        rest = api.get(f"/v1/threads/{thread_id}",
                       params={"after": page["next_cursor"]}).json()
        assert [m["id"] for m in rest["messages"]] == [third, fourth]
        # The list: the latest activity first, with its preview.
        threads = api.get("/v1/threads").json()["threads"]
        assert threads[0]["thread_id"] == thread_id
        assert (threads[0]["message_count"], threads[0]["last_message_id"],
                threads[0]["first_message_id"]) == (4, fourth, first)
        assert threads[0]["preview"] == "the fourth, from alice"
        one = api.get("/v1/threads", params={"limit": 1}).json()
        assert len(one["threads"]) == 1 and one["has_more"]
        older = api.get("/v1/threads", params={"after": one["next_cursor"]}).json()
        assert thread_id not in [t["thread_id"] for t in older["threads"]]
        # Bob's copy of the answer: its headers name the message it answers (which joined
        # alice's thread by subject, and which bob never had), so it starts a thread of his.
        # Alice's thread is not his to read: 404, as one that does not exist.
        bob_copy = daemon.wait_for(lambda: [m for m in other.get("/v1/messages").json()[
            "messages"] if m["subject"] == f"Re: {subject}"])
        assert bob_copy[0]["thread_id"] != thread_id
        assert [m["id"] for m in other.get(f"/v1/threads/{bob_copy[0]['thread_id']}").json()[
            "messages"]] == [bob_copy[0]["id"]]
        assert other.get(f"/v1/threads/{thread_id}").status_code == 404
        # A reply to the subject-joined message, with headers naming only it, joins the thread
        # that message is in.
        fifth = daemon.send(_message("alice@content.test", f"Re: {subject}", "the fifth",
                                     in_reply_to=api.get(f"/v1/messages/{third}").json()[
                                         "message_id"]), ["alice@content.test"])
        daemon.wait_message(alice["api_key"], fifth)
        assert api.get(f"/v1/messages/{fifth}").json()["thread_id"] == thread_id
        assert api.get("/v1/threads/thr_nope").status_code == 404


def test_search_is_ranked_and_scoped_to_the_agent(daemon: Daemon, alice: dict[str, Any],
                                                  bob: dict[str, Any]) -> None:
    word, other_word, attached = documents.marker_words(3)
    in_body = daemon.send(_message("alice@content.test", "plain subject",
                                   f"the body says {word} and {other_word}"),
                          ["alice@content.test"])
    in_subject = daemon.send(_message("alice@content.test", f"about {word}", "nothing"),
                             ["alice@content.test"])
    docx = documents.docx([attached, "appendix"])
    in_attachment = daemon.send(_message(
        "alice@content.test", "see file", "attached", attachments=[
            ("a.docx", OOXML + "wordprocessingml.document", docx)]), ["alice@content.test"])
    bobs = daemon.send(_message("bob@content.test", f"bob's {word}", f"{word} {attached}"),
                       ["bob@content.test"])
    for m in (in_body, in_subject, in_attachment):
        daemon.wait_message(alice["api_key"], m)
    daemon.wait_message(bob["api_key"], bobs)

    def found(api: httpx.Client, q: str, **params: Any) -> list[str]:
        r = api.get("/v1/messages", params={"q": q, **params})
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["messages"]]

    with daemon.api(alice["api_key"]) as api, daemon.api(bob["api_key"]) as other:
        assert found(api, word) == [in_subject, in_body]  # the subject weighs most
        assert found(api, attached) == [in_attachment]  # attachment text is indexed
        assert found(api, f"{word} {other_word}") == [in_body]  # every word must match
        assert found(api, f"{word} -{other_word}") == [in_subject]
        assert found(api, f'"says {word}"') == [in_body]
        assert found(api, f"{other_word} OR {attached}") in (
            [in_body, in_attachment], [in_attachment, in_body])
        assert found(api, "alice@content.test") != []  # addresses too
        assert found(other, word) == [bobs] and found(other, other_word) == []
        first = api.get("/v1/messages", params={"q": word, "limit": 1}).json()
        assert [m["id"] for m in first["messages"]] == [in_subject] and first["has_more"]
        assert found(api, word, after=first["next_cursor"]) == [in_body]
        assert api.get("/v1/messages", params={"q": word, "after": "12"}).status_code == 400
        assert found(api, "!!!") == []


def test_events_carry_thread_and_preview(daemon: Daemon, alice: dict[str, Any]) -> None:
    words = documents.marker_words(2)
    message_id = daemon.send(_message("alice@content.test", "event", " ".join(words)),
                             ["alice@content.test"])
    view = daemon.wait_message(alice["api_key"], message_id)
    with daemon.api(alice["api_key"]) as api:
        events, cursor = [], None
        while True:
            page = api.get("/v1/events", params={"limit": 500, **(
                {"after": cursor} if cursor else {})}).json()
            events += page["events"]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
    mine = [e for e in events if e["message_id"] == message_id]
    assert {e["type"] for e in mine} >= {"message.received", "message.ready"}
    for e in mine:
        assert (e["thread_id"], e["preview"]) == (view["thread_id"], " ".join(words))
    uploads = [e for e in events if e["message_id"] is None]
    assert all(e["thread_id"] is None and e["preview"] is None for e in uploads)


def test_text_of_mail_encrypted_at_rest_stays_encrypted(daemon: Daemon) -> None:
    key = make_key("Dana <dana@content.test>")
    key_file = daemon.root / "dana.asc"
    key_file.write_text(key.public)
    dana: dict[str, Any] = json.loads(daemon.cli(
        "agent", "add", "dana", "--address", "dana@content.test", "--pgp-key", str(key_file),
        "--json").stdout)
    daemon.wait_for(lambda: daemon.rcpt_code("dana@content.test") == 250, 5.0, "dana's RCPT")
    words, body = documents.marker_words(3), documents.marker_words(1)[0]
    subject = "sealed " + documents.marker_words(1)[0]
    message_id = daemon.send(_message("dana@content.test", subject, f"body {body}",
                                      attachments=[("a.docx", OOXML + "wordprocessingml."
                                                    "document", documents.docx(words))]),
                             ["dana@content.test"])
    view = daemon.wait_message(dana["api_key"], message_id)
    (att,) = view["attachments"]
    assert att["text_status"] == "ready"
    assert view["preview"] is None  # no plaintext in a column
    with daemon.api(dana["api_key"]) as api:
        r = _text(api, message_id, 0)
        assert r.status_code == 200 and r.headers["x-encrypted"] == "openpgp"
        assert r.text.startswith("-----BEGIN PGP MESSAGE-----")
        assert not any(w in r.text for w in words)
        plain_text = key.decrypt(r.content).decode()
        assert all(w in plain_text for w in words)
        assert len(plain_text) == att["text_size"]
        # Nothing of its text is stored readable: the index has its subject, not its body.
        found = api.get("/v1/messages", params={"q": subject.split()[1]}).json()["messages"]
        assert [m["id"] for m in found] == [message_id]
        assert api.get("/v1/messages", params={"q": body}).json()["messages"] == []
        assert api.get("/v1/messages", params={"q": words[0]}).json()["messages"] == []
    stored = [p for p in (daemon.root / "var" / "objects").rglob("*")
              if p.is_file() and ".spool" not in p.parts]
    for path in stored:
        data = path.read_bytes()
        assert not any(w.encode() in data for w in words), path
