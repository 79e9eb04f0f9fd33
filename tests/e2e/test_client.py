"""daemon.client against a real daemon: the inbound side of the seed examples, and refusals."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from daemon.client import Client, PostroomError
from tests.e2e.harness import running_daemon
from tests.e2e.mail import plain, with_attachment


def test_the_inbound_examples_run_through_the_client(fresh_root: Path) -> None:
    payload = b"%PDF-1.4\n" + os.urandom(30_000)
    with running_daemon(fresh_root) as d:
        key = d.add_agent("alice", "alice@t.test")["api_key"]
        with Client(d.url, key) as client:
            msg_id = d.send(with_attachment("alice@t.test", payload), ["alice@t.test"])
            # Check the inbound status (waiting until it is terminal), then download it.
            status = client.get_inbound_attachment_status(msg_id, 0, wait=20)
            assert status["status"] == "ready"
            assert status["sha256"] == hashlib.sha256(payload).hexdigest()
            link = client.request_inbound_attachment_download(msg_id, 0, expires_in=60)
            assert client.download(link["url"]) == payload
            listed = client.list_messages()
            assert [m["id"] for m in listed["messages"]] == [msg_id]
            assert client.get_message(msg_id)["subject"] == "Quarterly report"
            fetched = client.fetch_message(msg_id)
            assert fetched["attachments"][0]["content"] == payload
            feed = client.events()
            assert [e["type"] for e in feed["events"]] == [
                "message.received", "attachment.ready", "message.ready"]
            assert client.events(after=feed["next_cursor"])["events"] == []


def test_refusals_raise_postroom_error_with_status_and_code(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        alice = d.add_agent("alice", "alice@t.test")["api_key"]
        bob = d.add_agent("bob", "bob@t.test")["api_key"]
        msg_id = d.send(plain("alice@t.test"), ["alice@t.test"])
        with Client(d.url, bob) as client, pytest.raises(PostroomError) as refused:
            client.get_message(msg_id)
        assert (refused.value.status, refused.value.code) == (404, "not_found")
        with Client(d.url, "wrong-key") as client, pytest.raises(PostroomError) as refused:
            client.list_messages()
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
        with Client(d.url, alice) as client:
            with pytest.raises(PostroomError) as refused:
                client.events(after="not-a-cursor")
            assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")
        with Client("http://127.0.0.1:9", alice, timeout=2) as client, \
                pytest.raises(PostroomError) as refused:
            client.list_messages()
        assert refused.value.code == "unreachable"
