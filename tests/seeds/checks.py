"""What the seed tests check a snippet's effect with: postroom's native API (SPEC §6), never the
surface the snippet itself used, plus the agents and files the snippets act on."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Daemon


@dataclass(frozen=True)
class Site:
    """A daemon the snippets run against, and the backend of its object store."""

    backend: str
    daemon: Daemon


@dataclass(frozen=True)
class Agent:
    id: str
    address: str
    key: str


def add_agent(d: Daemon, name: str, address: str, pgp_key_file: Path | None = None) -> Agent:
    """An agent made through the CLI (with its OpenPGP key, when given), once RCPT knows it."""
    args = ["agent", "add", name, "--address", address, "--json"]
    if pgp_key_file is not None:
        args += ["--pgp-key", str(pgp_key_file)]
    made = json.loads(d.cli(*args).stdout)
    d.wait_for(lambda: d.rcpt_code(address) == 250, 5.0, f"RCPT of {address}")
    return Agent(made["id"], address, made["api_key"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pdf(size: int) -> bytes:
    """A file of exactly `size` bytes that starts and ends as a PDF does, random in between."""
    head, tail = b"%PDF-1.7\n", b"\n%%EOF\n"
    return head + os.urandom(size - len(head) - len(tail)) + tail


def inbox_id(d: Daemon, agent: Agent) -> str:
    """The `inb_…` id of the agent's inbox for its address (GET /api/v1/inboxes)."""
    with d.api(agent.key) as api:
        r = api.get("/api/v1/inboxes")
    assert r.status_code == 200, r.text
    [inbox] = [i for i in r.json()["inboxes"] if i["address"] == agent.address]
    assert str(inbox["id"]).startswith("inb_"), inbox
    return str(inbox["id"])


def message_ids(d: Daemon, agent: Agent) -> set[str]:
    return set(d.message_ids(agent.key))


def new_message(d: Daemon, agent: Agent, known: set[str], timeout: float = 30.0) -> dict[str, Any]:
    """The one message the agent has beyond `known`, once it is processed."""
    fresh = d.wait_for(lambda: message_ids(d, agent) - known, timeout, "the delivered message")
    assert len(fresh) == 1, fresh
    return d.wait_message(agent.key, fresh.pop(), timeout)


def inbound_attachment(d: Daemon, agent: Agent, message_id: str,
                       index: int = 0) -> tuple[dict[str, Any], bytes]:
    """The attachment's status object, once terminal, and the bytes its download URL serves."""
    path = f"/v1/messages/{message_id}/attachments/{index}"
    with d.api(agent.key) as api:
        status = api.get(path, params={"wait": 20})
        assert status.status_code == 200, status.text
        link = api.post(f"{path}/download")
    assert link.status_code == 200, link.text
    return dict(status.json()), fetched(link.json()["url"])


def uploaded(d: Daemon, agent: Agent, upload_id: str) -> tuple[dict[str, Any], bytes]:
    """An upload's attachment object (GET /v1/attachments/{id}) and the bytes its URL serves."""
    with d.api(agent.key) as api:
        r = api.get(f"/v1/attachments/{upload_id}")
    assert r.status_code == 200, r.text
    view = dict(r.json())
    assert view["status"] == "ready", view
    return view, fetched(view["url"])


def uploaded_object(d: Daemon, agent: Agent, object_key: str) -> bytes:
    """The bytes of one of the agent's uploads, by its object key (POST /v1/uploads/download)."""
    with d.api(agent.key) as api:
        r = api.post("/v1/uploads/download", json={"object_key": object_key})
    assert r.status_code == 200, r.text
    return fetched(r.json()["url"])


def fetched(url: str) -> bytes:
    got = httpx.get(url, timeout=30)
    assert got.status_code == 200, got.text[:500]
    return got.content
