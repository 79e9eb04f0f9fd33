"""postroom as an MCP server (SPEC §16), through a real daemon and the SDK's own clients:
streamable HTTP at /mcp with the agent's key, and `postroom mcp` over stdio."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.content import documents
from tests.harness import Daemon, running_daemon

TOOLS = {"list_messages", "get_message", "get_thread", "read_attachment", "get_attachment_url",
         "send_message", "reply", "wait_for_message"}
OOXML = "application/vnd.openxmlformats-officedocument."


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("postroom-mcp")) as d:
        yield d


@pytest.fixture(scope="module")
def ann(daemon: Daemon) -> dict[str, Any]:
    return daemon.add_agent("ann", "ann@mcp.test")


@pytest.fixture(scope="module")
def ben(daemon: Daemon) -> dict[str, Any]:
    return daemon.add_agent("ben", "ben@mcp.test")


@asynccontextmanager
async def _session(d: Daemon, key: str) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                                  timeout=httpx2.Timeout(30, read=120)) as http, \
            streamable_http_client(f"{d.url}/mcp", http_client=http) as (read, write, *_), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def _call(session: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def _refused(session: ClientSession, tool: str, **args: Any) -> str:
    result = await session.call_tool(tool, args)
    assert result.is_error
    text = "".join(getattr(c, "text", "") for c in result.content)
    return text


def _mail(to: str, subject: str, text: str,
          attachments: tuple[tuple[str, str, bytes], ...] = (),
          sender: str = "Carol <carol@example.org>", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = make_msgid(domain="example.org")
    for name, value in headers.items():
        msg[name.replace("_", "-").title()] = value
    msg.set_content(text)
    for name, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


async def test_tools_are_listed_with_schemas_and_descriptions(daemon: Daemon,
                                                              ann: dict[str, Any]) -> None:
    async with _session(daemon, ann["api_key"]) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 80, tool.name
        assert tool.input_schema["type"] == "object"
    assert tools["get_message"].input_schema["required"] == ["message_id"]
    assert "timeout_s" in tools["wait_for_message"].input_schema["properties"]


async def test_read_a_message_and_its_attachment_text(daemon: Daemon,
                                                      ann: dict[str, Any]) -> None:
    words = documents.marker_words(4)
    message_id = daemon.send(_mail(
        "ann@mcp.test", "the contract", f"Please sign {words[0]}.\n\nOn Mon, Bob wrote:\n"
        f"> old {words[1]}\n", (("contract.docx", OOXML + "wordprocessingml.document",
                                 documents.docx(words[2:])),)), ["ann@mcp.test"])
    daemon.wait_message(ann["api_key"], message_id)
    async with _session(daemon, ann["api_key"]) as session:
        page = await _call(session, "list_messages")
        assert message_id in [m["id"] for m in page["messages"]]
        found = await _call(session, "list_messages", q=words[2])  # attachment text
        assert [m["id"] for m in found["messages"]] == [message_id]
        m = await _call(session, "get_message", message_id=message_id)
        assert words[0] in m["text"] and words[1] not in m["text"]  # the new part only
        assert m["text_kind"] == "extracted_text" and m["from"].startswith("Carol")
        (att,) = m["attachments"]
        assert att["file_name"] == "contract.docx" and "read_attachment" in att["text"]
        text = await _call(session, "read_attachment", message_id=message_id, index=0)
        assert all(w in text["text"] for w in words[2:])
        url = await _call(session, "get_attachment_url", message_id=message_id, index=0)
        async with httpx.AsyncClient() as plain:  # the bytes, behind the URL only
            assert (await plain.get(url["url"])).content[:2] == b"PK"
        assert "PK" not in json.dumps(m)


async def test_long_text_is_cut_with_a_note_and_read_on_with_offset(
        daemon: Daemon, ann: dict[str, Any]) -> None:
    body = " ".join(f"w{n:06d}" for n in range(6000))  # 48,000 characters
    message_id = daemon.send(_mail("ann@mcp.test", "long", body), ["ann@mcp.test"])
    daemon.wait_message(ann["api_key"], message_id)
    async with _session(daemon, ann["api_key"]) as session:
        first = await _call(session, "get_message", message_id=message_id)
        assert len(first["text"]) == 20_000 and "offset=20000" in first["note"]
        second = await _call(session, "get_message", message_id=message_id, offset=20_000)
        assert "offset=40000" in second["note"]
        last = await _call(session, "get_message", message_id=message_id, offset=40_000)
        assert "note" not in last
        assert (first["text"] + second["text"] + last["text"]).rstrip() == body


async def test_send_between_agents_and_reply_in_the_thread(
        daemon: Daemon, ann: dict[str, Any], ben: dict[str, Any]) -> None:
    word = documents.marker_words(1)[0]
    async with _session(daemon, ann["api_key"]) as a, _session(daemon, ben["api_key"]) as b:
        sent = await _call(a, "send_message", to=["ben@mcp.test"], subject=f"lunch {word}",
                           text="Lunch on Friday?")
        assert sent["status"] == "queued"
        waited = await _call(b, "wait_for_message", timeout_s=30, sender="ann@mcp.test",
                             after="0")
        assert waited["message"]["subject"] == f"lunch {word}"
        received = waited["message"]["id"]
        answer = await _call(b, "reply", message_id=received, text="Friday works.")
        assert answer["thread_id"] == waited["message"]["thread_id"]
        back = await _call(a, "wait_for_message", timeout_s=30, sender="ben@mcp.test",
                           after="0")
        assert back["message"]["subject"] == f"Re: lunch {word}"
        thread = await _call(a, "get_thread", thread_id=back["message"]["thread_id"])
        assert [m["text"] for m in thread["messages"]] == ["Lunch on Friday?",
                                                           "Friday works."]


async def test_wait_for_message_waits_for_new_mail_and_times_out(
        daemon: Daemon, ann: dict[str, Any]) -> None:
    async with _session(daemon, ann["api_key"]) as session:
        nothing = await _call(session, "wait_for_message", timeout_s=1)
        assert nothing["message"] is None and nothing["cursor"]
        sent = threading.Timer(1.0, lambda: daemon.send(
            _mail("ann@mcp.test", "while waiting", "here it is", sender="dan@example.net"),
            ["ann@mcp.test"]))
        sent.start()
        try:
            got = await _call(session, "wait_for_message", timeout_s=60,
                              sender="example.net", after=nothing["cursor"])
        finally:
            sent.join()
        assert got["message"]["subject"] == "while waiting"


async def test_scope_violations_and_bad_arguments_are_tool_errors(
        daemon: Daemon, ann: dict[str, Any], ben: dict[str, Any]) -> None:
    message_id = daemon.send(_mail("ann@mcp.test", "private", "for ann only"),
                             ["ann@mcp.test"])
    daemon.wait_message(ann["api_key"], message_id)
    async with _session(daemon, ben["api_key"]) as session:
        for tool, args in [("get_message", {"message_id": message_id}),
                           ("read_attachment", {"message_id": message_id, "index": 0}),
                           ("get_attachment_url", {"message_id": message_id, "index": 0}),
                           ("reply", {"message_id": message_id, "text": "x"}),
                           ("get_thread", {"thread_id": "thr_nope"})]:
            assert (await _refused(session, tool, **args)).count("not_found") == 1, tool
        assert await _refused(session, "get_message", message_id="")
        assert await _refused(session, "wait_for_message", timeout_s=0)
        assert await _refused(session, "send_message", to=["ben@mcp.test"], subject="x",
                              text="y", attachments=["upl_nope"])
        # The session goes on after every refusal, and ann's mail is not ben's.
        assert message_id not in json.dumps(await _call(session, "list_messages"))


def test_a_wrong_key_or_host_is_refused_before_mcp(daemon: Daemon, ann: dict[str, Any]) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer pr_wrong"}, {"Authorization": "Basic x"}):
        r = httpx.post(f"{daemon.url}/mcp", json=init, headers={**accept, **headers})
        assert r.status_code == 401, r.text
    good = {**accept, "Authorization": f"Bearer {ann['api_key']}"}
    assert httpx.post(f"{daemon.url}/mcp", json=init, headers=good).status_code == 200
    r = httpx.post(f"{daemon.url}/mcp", json=init, headers={**good, "Host": "evil.example"})
    assert r.status_code == 421


async def test_stdio_server_reads_the_same_mailbox(daemon: Daemon, ann: dict[str, Any]) -> None:
    message_id = daemon.send(_mail("ann@mcp.test", "over stdio", "hello stdio"),
                             ["ann@mcp.test"])
    daemon.wait_message(ann["api_key"], message_id)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "daemon", "mcp", "--config",
                                      str(daemon.config_path)],
        env={**os.environ, **daemon.env, "POSTROOM_API_KEY": ann["api_key"],
             "POSTROOM_URL": daemon.url})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert {t.name for t in (await session.list_tools()).tools} == TOOLS
        m = await _call(session, "get_message", message_id=message_id)
        assert m["text"] == "hello stdio"
        assert "not_found" in await _refused(session, "get_message", message_id="msg_nope")
