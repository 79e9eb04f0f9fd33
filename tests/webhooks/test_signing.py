"""Our Standard Webhooks signatures against the `standardwebhooks` package's verifier, and the
address rules of `safety` (pure logic, no daemon)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from daemon.webhooks.records import check_types, payload
from daemon.webhooks.safety import Target, UnsafeUrl, is_public, parse_url, resolve
from daemon.webhooks.signing import new_secret, signed_headers


def test_signatures_verify_with_the_reference_implementation() -> None:
    secret, other = new_secret(), new_secret()
    assert secret != other and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    body = json.dumps({"type": "message.received", "data": {"x": "é"}}).encode()
    now = int(time.time())
    headers = signed_headers([secret], "evt_0000000000042", now, body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # the body is signed
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):  # and the id
        Webhook(secret).verify(body, {**headers, "webhook-id": "evt_0000000000043"})
    # While a secret is rotated, both sign: a receiver holding either verifies.
    both = signed_headers([other, secret], "evt_1", now, body)
    assert len(both["webhook-signature"].split(" ")) == 2
    for held in (secret, other):
        Webhook(held).verify(body, both)


def test_the_body_is_the_feed_event_with_type_and_timestamp() -> None:
    from datetime import UTC, datetime

    class Row:
        seq, type, message_id, attachment_id, index = 7, "message.ready", "msg_1", None, None
        status, verdict, webhook_id = "ready", None, None
        created_at = datetime(2026, 12, 4, 12, 0, 0, 123000, tzinfo=UTC)

    body = json.loads(payload(Row()))
    assert body["type"] == "message.ready" and body["timestamp"] == "2026-12-04T12:00:00.123Z"
    assert body["data"]["id"] == "evt_0000000000007" and body["data"]["cursor"] == "7"


def test_event_types_are_checked() -> None:
    assert check_types(None) is None
    assert json.loads(check_types(["message.ready", "message.received", "message.ready"])
                      or "") == ["message.ready", "message.received"]
    for bad in (["message.exploded"], []):
        with pytest.raises(ValueError):
            check_types(bad)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "fe80::1", "fc00::1", "fd00:ec2::254",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::",
    # IPv6 forms that carry an inner IPv4 address: NAT64, 6to4, compatible, translated.
    "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "::7f00:1", "::ffff:0:7f00:1",
    "64:ff9b:1::1", "fec0::1"])
def test_inner_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_are(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_urls_must_be_http_with_a_host_and_no_credentials() -> None:
    assert parse_url("https://hooks.example.com/x?y=1") == Target("https", "hooks.example.com",
                                                                  443)
    assert parse_url("http://[::1]:8080/x") == Target("http", "::1", 8080)
    for bad in ("ftp://h/x", "http:///x", "http://u:p@h/x", "http://h:99999/x",
                "http://h/a b", "https://h/" + "x" * 2100, "javascript:alert(1)"):
        with pytest.raises(UnsafeUrl):
            parse_url(bad)


def test_resolution_refuses_inner_addresses_unless_allowed() -> None:
    async def go() -> None:
        with pytest.raises(UnsafeUrl):
            await resolve(Target("http", "localhost", 80), allow_private=False)
        with pytest.raises(UnsafeUrl):
            await resolve(Target("http", "169.254.169.254", 80), allow_private=False)
        assert await resolve(Target("http", "127.0.0.1", 80), allow_private=True) == [
            ipaddress.ip_address("127.0.0.1")]
        with pytest.raises(UnsafeUrl):
            await resolve(Target("http", "no-such-name.invalid", 80), allow_private=True)

    asyncio.run(go())


def test_a_post_reads_at_most_4_kB_of_an_endless_answer_and_gives_up_at_the_timeout() -> None:
    from daemon.webhooks.poster import Poster

    async def go() -> None:
        opened: list[asyncio.StreamWriter] = []

        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            opened.append(writer)
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                while True:  # an answer that never ends
                    writer.write(b"1000\r\n" + b"y" * 4096 + b"\r\n")
                    await writer.drain()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            opened.append(writer)
            await asyncio.sleep(30)

        poster = Poster(timeout=0.5, allow_private=True, max_connections=4)
        servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (endless, silent)]
        try:
            ports = [s.sockets[0].getsockname()[1] for s in servers]
            started = time.monotonic()
            got = await poster.post(f"http://127.0.0.1:{ports[0]}/", {}, b"{}")
            assert got.ok and got.response is not None and len(got.response) == 1024
            assert time.monotonic() - started < 0.5  # it stopped reading; no timeout needed
            hung = await poster.post(f"http://127.0.0.1:{ports[1]}/", {}, b"{}")
            assert hung.status_code is None and hung.error and not hung.ok
            refused = Poster(timeout=0.5, allow_private=False, max_connections=4)
            denied = await refused.post(f"http://127.0.0.1:{ports[0]}/", {}, b"{}")
            assert denied.status_code is None and denied.error
            await refused.close()
        finally:
            await poster.close()
            for w in opened:
                w.close()
            for s in servers:
                s.close()
                await s.wait_closed()

    asyncio.run(go())
