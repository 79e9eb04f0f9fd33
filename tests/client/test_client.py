"""daemon.client against a real daemon: the inbound side of the seed examples, and refusals."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests

from daemon.client.http import Client, PostroomError
from tests.harness import running_daemon
from tests.mail import plain, with_attachment
from tests.s3server import MotoServer


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


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_text_threads_and_search_through_the_client(
        backend: str, fresh_root: Path, request: pytest.FixtureRequest) -> None:
    extra = _s3_config(request.getfixturevalue("s3_server")) if backend == "s3" else ""
    marker, word = ("zq" + os.urandom(6).hex() for _ in range(2))
    with running_daemon(fresh_root, extra=extra) as d:
        key = d.add_agent("alice", "alice@t.test")["api_key"]
        notes = with_attachment("alice@t.test", f"the notes say {marker}\n".encode(),
                                file_name="notes.txt", content_type="text/plain",
                                subject=f"notes {word}")
        msg_id = d.send(notes, ["alice@t.test"])
        opaque = d.send(with_attachment("alice@t.test", b"%PDF-1.4\n" + os.urandom(2000)),
                        ["alice@t.test"])
        with Client(d.url, key) as client:
            assert marker in client.get_attachment_text(msg_id, 0, wait=20)
            with pytest.raises(PostroomError) as refused:
                client.get_attachment_text(opaque, 0, wait=20)  # not a PDF at all
            assert (refused.value.status, refused.value.code) == (409, "no_text")
            assert [m["id"] for m in client.list_messages(q=marker)["messages"]] == [msg_id]
            assert [m["id"] for m in client.list_messages(q=word)["messages"]] == [msg_id]
            thread_id = client.get_message(msg_id)["thread_id"]
            thread = client.get_thread(thread_id)
            assert [m["id"] for m in thread["messages"]] == [msg_id]
            assert thread["messages"][0]["extracted_text"].startswith("Please see")
            assert thread_id in [t["thread_id"] for t in client.list_threads()["threads"]]
            with pytest.raises(PostroomError) as refused:
                client.get_thread("thr_nope")
            assert refused.value.status == 404


def _s3_config(server: MotoServer) -> str:
    return (f'[storage]\nbackend = "s3"\nbucket = "{server.new_bucket()}"\n'
            f'endpoint_url = "{server.endpoint_url}"\nregion = "us-east-1"\n')


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_the_seed_examples_run_unchanged_on_both_stores(
        backend: str, fresh_root: Path, request: pytest.FixtureRequest) -> None:
    """The seed documents' flow, only `Client(...)` differs: request an upload form, POST the
    file with requests exactly as the seed shows, request its download, check the inbound
    status, download the inbound attachment."""
    extra = _s3_config(request.getfixturevalue("s3_server")) if backend == "s3" else ""
    report = fresh_root / "report.pdf"
    fresh_root.mkdir(parents=True, exist_ok=True)
    report.write_bytes(b"%PDF-1.7\n" + os.urandom(40_000))
    inbound = b"%PDF-1.4\n" + os.urandom(20_000)
    with running_daemon(fresh_root / "d", extra=extra) as d:
        api_key = d.add_agent("alice", "alice@t.test")["api_key"]
        # The only line that is postroom's (closed at the end, whatever an assert says).
        with Client(d.url, api_key) as client:
            # --- the seed's example, as written ---
            upload = client.request_attachment_upload(
                file_name="report.pdf", content_type="application/pdf", max_bytes=10_000_000)
            with open(report, "rb") as f:
                fields = {k: v for k, v in upload["upload"].items() if k != "url"}  # seed 000's
                resp = requests.post(upload["upload"]["url"], data=fields,
                                     files={"file": ("report.pdf", f, "application/pdf")})
            resp.raise_for_status()
            download = client.request_attachment_download(upload["object_key"])
            assert requests.get(download["url"]).content == report.read_bytes()

            message_id = d.send(with_attachment("alice@t.test", inbound), ["alice@t.test"])
            status = client.get_inbound_attachment_status(message_id, 0, wait=20)
            assert status["status"] == "ready"
            link = client.request_inbound_attachment_download(message_id, 0)
            assert requests.get(link["url"]).content == inbound
            # --- end of the seed's example ---

            uploaded = client.upload_file(report)
            assert uploaded["size"] == report.stat().st_size
            assert client.download(client.get_attachment(uploaded["id"])["url"]) == \
                report.read_bytes()
            assert client.get_attachment(status["id"])["id"] == status["id"]
            put = client.request_upload_url("notes.txt", "text/plain", 5)
            assert requests.put(put["upload_url"], data=b"hello",
                                headers={"Content-Type": "text/plain"}).status_code in (200, 204)
            assert client.download(client.request_attachment_download(put["object_key"])["url"]) \
                == b"hello"
            with pytest.raises(PostroomError) as refused:
                client.request_attachment_upload("big.bin", "application/octet-stream", 10**12)
            assert refused.value.status == 413
