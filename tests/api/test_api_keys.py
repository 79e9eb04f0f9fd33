"""API keys against a live daemon that remembers confirmed keys for ≤ 2 s: a key in use that
the CLI rotates away or removes is refused within SPEC §7's 5 s, a new key works at once."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.harness import Daemon
from tests.mail import plain


def _status(daemon: Daemon, key: str, path: str = "/v1/messages") -> int:
    return httpx.get(f"{daemon.url}{path}", headers={"Authorization": f"Bearer {key}"}).status_code


def _refused_within(daemon: Daemon, key: str, path: str, seconds: float) -> None:
    """Poll until `key` gets 401 on `path`; fails if that takes more than `seconds`."""
    daemon.wait_for(lambda: _status(daemon, key, path) == 401, seconds, f"401 on {path}")


def _agent_with_mail(daemon: Daemon, name: str) -> tuple[dict[str, Any], str]:
    agent = daemon.add_agent(name, f"{name}@keys.test")
    mid = daemon.send(plain(f"{name}@keys.test"), [f"{name}@keys.test"])
    daemon.wait_message(agent["api_key"], mid)
    return agent, mid


def test_a_rotated_key_in_use_is_refused_within_5_seconds(daemon: Daemon) -> None:
    agent, mid = _agent_with_mail(daemon, "rosa")
    old = agent["api_key"]
    for _ in range(20):  # in use: certainly remembered by the daemon now
        assert _status(daemon, old, f"/v1/messages/{mid}") == 200
    rotated = json.loads(daemon.cli("agent", "rotate-key", "rosa", "--json").stdout)
    assert _status(daemon, rotated["api_key"], f"/v1/messages/{mid}") == 200
    _refused_within(daemon, old, f"/v1/messages/{mid}", 5.0)
    assert _status(daemon, old) == 401
    assert _status(daemon, rotated["api_key"]) == 200


def test_a_removed_agent_with_a_key_in_use_is_refused_within_5_seconds(daemon: Daemon) -> None:
    agent, mid = _agent_with_mail(daemon, "remy")
    key = agent["api_key"]
    path = f"/v1/messages/{mid}/attachments/0"
    for _ in range(20):
        assert _status(daemon, key, f"/v1/messages/{mid}") == 200
    daemon.cli("agent", "remove", "remy")
    _refused_within(daemon, key, path, 5.0)
    r = httpx.post(f"{daemon.url}{path}/download", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "unauthorized", "message": "invalid API key"}}


def test_guessed_keys_are_refused_and_a_real_key_keeps_working(daemon: Daemon) -> None:
    agent, mid = _agent_with_mail(daemon, "gus")
    with httpx.Client(base_url=daemon.url) as client:
        for i in range(300):
            r = client.get(f"/v1/messages/{mid}", headers={"X-API-Key": f"pr_guess{i}"})
            assert r.status_code == 401
            assert r.json()["error"]["message"] == "invalid API key"
        r = client.get(f"/v1/messages/{mid}", headers={"X-API-Key": agent["api_key"]})
    assert r.status_code == 200 and r.json()["id"] == mid
