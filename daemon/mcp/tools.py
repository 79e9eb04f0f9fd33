"""The tools an agent's model calls (SPEC §16), written for a model to read: what each returns,
its limits, and what to call next.

Each tool is a thin call of the HTTP API (`ApiCalls`): the same routes, scoping and errors. A
refusal of the API becomes a tool error carrying its code and message ("not_found: …"), never
the end of the session. Results are sized for a model's context: text is cut at
`TEXT_CHARS` with a note saying how to read on (`offset`), attachments are listed with their
status and whether their text can be read, and bytes never appear (a download URL does).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import getaddresses
from importlib import metadata
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from daemon.content import is_reply_subject
from daemon.mcp.calls import ApiCalls, ApiRefusal

TEXT_CHARS = 20_000  # of a message's or attachment's text per result
THREAD_MESSAGE_CHARS = 4_000  # of each message's text in a thread
WAIT_MAX = 300  # seconds wait_for_message may be asked to wait
INSTRUCTIONS = (
    "postroom is this agent's mailbox: mail delivered to its addresses, and mail it sends. "
    "Start with list_messages (newest last; q= searches) or wait_for_message, read one with "
    "get_message (its new text, sender verdict and attachments), read_attachment for an "
    "attachment's text, get_thread for a whole conversation, reply or send_message to answer.")

Calls = Callable[[], ApiCalls]
MessageId = Annotated[str, Field(description="A message id (msg_…), from list_messages, "
                                 "wait_for_message or get_thread.", min_length=1,
                                 max_length=64)]
Index = Annotated[int, Field(description="The attachment's index (from get_message's "
                             "attachments).", ge=0)]
Offset = Annotated[int, Field(description="Where to start in the text (0: its start); a cut "
                              "result says which offset reads on.", ge=0)]
Addresses = Annotated[list[str], Field(description="Email addresses, e.g. "
                                       "[\"ann@example.org\"].", min_length=1, max_length=100)]
Refs = Annotated[list[str] | None, Field(
    description="Files to attach: upload ids (upl_…) or object keys of the agent's uploads, or "
    "attachment ids (att_…) of mail it received. Omit for none.", max_length=100)]


def _version() -> str:
    try:
        return metadata.version("postroom")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0"


@asynccontextmanager
async def _api(calls: Calls) -> AsyncIterator[ApiCalls]:
    api = calls()
    try:
        yield api
    except ApiRefusal as e:
        raise ToolError(f"{e.code}: {e.message}") from None
    finally:
        await api.close()


def _cut(text: str | None, offset: int, limit: int, again: str) -> dict[str, Any]:
    """`text` from `offset`, at most `limit` characters, with a note when there is more."""
    text = text or ""
    part = text[offset:offset + limit]
    out: dict[str, Any] = {"text": part, "total_chars": len(text)}
    rest = len(text) - offset - len(part)
    if rest > 0:
        out["note"] = (f"{rest} more characters: call {again} with offset="
                       f"{offset + len(part)} to read on")
    return out


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in ("id", "direction", "status", "received_at", "from", "to",
                                  "subject", "preview", "thread_id", "verdict",
                                  "attachment_count")}


def _attachment(a: dict[str, Any]) -> dict[str, Any]:
    readable = a.get("text_status") == "ready"
    return {"index": a["index"], "id": a["id"], "file_name": a["file_name"],
            "content_type": a["content_type"], "size": a["size"], "status": a["status"],
            "text": "readable with read_attachment" if readable
            else f"no text: {a.get('text_status') or 'not read yet'}",
            "text_chars": a.get("text_size")}


def _refs(refs: list[str] | None) -> list[dict[str, str]]:
    return [{"id": r} if r.startswith(("att_", "upl_")) else {"object_key": r}
            for r in refs or []]


def build_server(calls: Calls) -> MCPServer:
    """The MCP server whose tools call the API through `calls()` (one per tool call)."""
    server = MCPServer("postroom", instructions=INSTRUCTIONS, version=_version())

    @server.tool()
    async def list_messages(
        after: Annotated[str | None, Field(description="next_cursor of the previous page; "
                                           "omit for the first.", max_length=32)] = None,
        q: Annotated[str | None, Field(description="Words to search for in subject, "
                                       "addresses, text and attachment text (all must match; "
                                       "\"a phrase\", -word, a OR b). Results best first.",
                                       max_length=500)] = None,
        verdict: Annotated[str | None, Field(description="Keep only mail whose sender "
                                             "authentication said pass, fail, none or "
                                             "temperror.", pattern="^(pass|fail|none|"
                                             "temperror)$")] = None,
        limit: Annotated[int, Field(description="How many (1-50).", ge=1, le=50)] = 20,
    ) -> dict[str, Any]:
        """The agent's messages, oldest first (newest last), each with its sender, subject,
        a 200-character preview of what it says new, thread and authentication verdict; with
        `q`, the messages matching it, best first. Page on with `after=next_cursor` while
        has_more. Read one with get_message."""
        async with _api(calls) as api:
            page = await api.get("/v1/messages", after=after, q=q, verdict=verdict,
                                 limit=limit)
        return {"messages": [_summary(m) for m in page["messages"]],
                "next_cursor": page["next_cursor"], "has_more": page["has_more"]}

    @server.tool()
    async def get_message(message_id: MessageId, offset: Offset = 0) -> dict[str, Any]:
        """One message: sender, recipients, subject, date, thread, the sender authentication
        verdict (pass means SPF/DKIM/DMARC vouch for the From domain), its text (what it says
        new, quoted history and signature removed; at most 20,000 characters a call, `offset`
        reads on) and its attachments with whether their text can be read (read_attachment)
        or downloaded (get_attachment_url)."""
        async with _api(calls) as api:
            m = await api.get(f"/v1/messages/{message_id}")
        text = m.get("extracted_text")
        kind = "extracted_text"
        if text is None:
            text, kind = m.get("text"), "text"
        out = _summary(m)
        out.update(cc=m.get("cc"), date=m.get("date"), text_kind=kind,
                   authentication=m.get("authentication"),
                   attachments=[_attachment(a) for a in m.get("attachments") or []],
                   **_cut(text, offset, TEXT_CHARS, "get_message"))
        if m.get("deliveries") is not None:
            out["deliveries"] = [{k: d[k] for k in ("address", "status", "reason")}
                                 for d in m["deliveries"]]
        return out

    @server.tool()
    async def get_thread(
        thread_id: Annotated[str, Field(description="A thread id (thr_…), from a message's "
                                        "thread_id.", min_length=1, max_length=64)],
        after: Annotated[str | None, Field(description="next_cursor of the previous page.",
                                           max_length=32)] = None,
    ) -> dict[str, Any]:
        """A conversation: the agent's messages of the thread, oldest first, each with what
        it says new (at most 4,000 characters each: get_message reads a whole one). Up to 20
        messages a call; page on with `after=next_cursor` while has_more."""
        async with _api(calls) as api:
            page = await api.get(f"/v1/threads/{thread_id}", after=after, limit=20)
        messages = []
        for m in page["messages"]:
            item = _summary(m)
            item.update(_cut(m.get("extracted_text"), 0, THREAD_MESSAGE_CHARS,
                             f"get_message(message_id={m['id']!r})"))
            messages.append(item)
        return {"thread_id": thread_id, "messages": messages,
                "next_cursor": page["next_cursor"], "has_more": page["has_more"]}

    @server.tool()
    async def read_attachment(message_id: MessageId, index: Index,
                              offset: Offset = 0) -> dict[str, Any]:
        """An attachment's text (PDF, Word, Excel, PowerPoint, OpenDocument, HTML, CSV, text,
        Markdown, JSON, calendar invitations, forwarded mail), at most 20,000 characters a
        call (`offset` reads on), or why there is none (its text_status: unsupported,
        too_large, failed, encrypted). For the file itself, get_attachment_url."""
        async with _api(calls) as api:
            status = await api.get(f"/v1/messages/{message_id}/attachments/{index}", wait=10)
            base = {"file_name": status["file_name"], "content_type": status["content_type"],
                    "text_status": status.get("text_status")}
            if status.get("text_status") != "ready":
                return {**base, "text": None,
                        "why": status.get("text_error") or f"the attachment is "
                        f"{status['status']}; its text is {status.get('text_status')}"}
            text, truncated = await api.text(
                f"/v1/messages/{message_id}/attachments/{index}/text")
        out = {**base, "cut_at_the_limit": truncated,
               **_cut(text, offset, TEXT_CHARS, "read_attachment")}
        return out

    @server.tool()
    async def get_attachment_url(
        message_id: MessageId, index: Index,
        expires_in: Annotated[int | None, Field(description="Seconds the URL stays valid "
                                                "(capped by the server).", ge=1)] = None,
    ) -> dict[str, Any]:
        """A short-lived URL of the attachment's exact bytes (no key needed to fetch it, valid
        until expires_at), with its name, type, size and SHA-256."""
        async with _api(calls) as api:
            return dict(await api.post(
                f"/v1/messages/{message_id}/attachments/{index}/download",
                {"expires_in": expires_in} if expires_in else None))

    @server.tool()
    async def send_message(
        to: Addresses, subject: Annotated[str, Field(max_length=998)],
        text: Annotated[str, Field(description="The body, plain text.")],
        cc: Annotated[list[str] | None, Field(max_length=100)] = None,
        attachments: Refs = None,
    ) -> dict[str, Any]:
        """Send a new message from the agent's address. Returns its id, thread_id and each
        recipient's status (queued; delivery follows: get_message shows deliveries). To answer
        a message, use reply instead (it keeps the thread)."""
        body = {"to": to, "cc": cc or [], "subject": subject, "text": text,
                "attachments": _refs(attachments)}
        async with _api(calls) as api:
            return dict(await api.post("/v1/messages", body))

    @server.tool()
    async def reply(message_id: MessageId, text: Annotated[str, Field(
                        description="The answer, plain text.")],
                    attachments: Refs = None) -> dict[str, Any]:
        """Answer a message: to its sender (for one the agent sent, to its recipients), with
        "Re: " and its subject, in its thread (In-Reply-To and References set). Returns the
        new message's id, thread_id and recipients."""
        async with _api(calls) as api:
            original = await api.get(f"/v1/messages/{message_id}")
            header = original.get("from") if original["direction"] == "inbound" \
                else original.get("to")
            to = [address for _, address in getaddresses([header or ""]) if address]
            if not to:
                raise ToolError("invalid_request: the message names no address to answer")
            subject = original.get("subject") or ""
            if not is_reply_subject(subject):
                subject = f"Re: {subject}"
            return dict(await api.post("/v1/messages", {
                "to": to, "subject": subject, "text": text, "in_reply_to": message_id,
                "attachments": _refs(attachments)}))

    @server.tool()
    async def wait_for_message(
        timeout_s: Annotated[int, Field(description="How long to wait, in seconds (1-300).",
                                        ge=1, le=WAIT_MAX)] = 60,
        sender: Annotated[str | None, Field(description="Only mail whose From contains this "
                                            "(an address or a domain).",
                                            max_length=320)] = None,
        after: Annotated[str | None, Field(description="The cursor a previous call returned: "
                                           "nothing that arrived since is missed. Omit to "
                                           "wait for mail from now on.",
                                           max_length=32)] = None,
    ) -> dict[str, Any]:
        """Wait until new inbound mail has been taken apart (its text and attachments ready
        to read), up to timeout_s, and return its summary ({"message": …, "cursor"}), or
        {"message": null, "cursor"} when none came. Pass the cursor back as `after` next
        time. Then get_message reads it."""
        deadline = time.monotonic() + timeout_s
        async with _api(calls) as api:
            cursor = after or (await api.get("/v1/events", after="latest"))["next_cursor"]
            while (remaining := deadline - time.monotonic()) > 0:
                page = await api.get("/v1/events", after=cursor, limit=100,
                                     wait=max(1, min(30, int(remaining))))
                for event in page["events"]:
                    cursor = event["cursor"]
                    if event["type"] not in ("message.ready", "message.partial",
                                             "message.failed"):
                        continue
                    m = await api.get(f"/v1/messages/{event['message_id']}")
                    if m["direction"] != "inbound":
                        continue
                    if sender and sender.lower() not in (m.get("from") or "").lower():
                        continue
                    return {"message": _summary(m), "cursor": cursor}
                cursor = page["next_cursor"]
        return {"message": None, "cursor": cursor}

    return server
