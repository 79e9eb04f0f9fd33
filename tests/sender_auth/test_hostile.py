"""Hostile input: the work stays bounded (counted in DNS queries and verifications, never timed)
and the answer is permerror/none, never an exception."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.sender_auth import Authentication, Limits
from tests.dnsserver import Zone
from tests.sender_auth.conftest import Keys
from tests.sender_auth.mail import Check, message, sign


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def rsa_record(modulus: int, exponent: int) -> str:
    """A DKIM key record for any RSA numbers (dkimpy's own DER builder cannot make long ones)."""
    algorithm = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + _der(0x05, b""))
    spki = _der(0x30, algorithm + _der(0x03, b"\x00" + _der(0x30, _int(modulus) + _int(exponent))))
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"


def key_lookups(zone: Zone) -> set[str]:
    return {name for name in zone.names() if "._domainkey." in name}


def test_a_hundred_signatures_are_capped(check: Check, keys: Keys, zone: Zone) -> None:
    raw = message()
    for i in range(100):
        zone.txt(f"s{i}._domainkey.example.test", keys.ed.record)
        raw = sign(raw, keys.ed, f"s{i}")
    zone.reset_counts()
    auth = check(raw, client_ip="192.0.2.7")
    results = [d.result for d in auth.dkim]
    assert results == ["pass"] * 10 + ["permerror"] * 90
    assert len(key_lookups(zone)) == 10  # the other 90 keys were never fetched
    assert auth.verdict == "pass"


def test_a_64_kb_key_record_is_permerror(check: Check, keys: Keys, zone: Zone) -> None:
    zone.txt("big._domainkey.example.test", "v=DKIM1; k=rsa; p=" + "A" * 64_000)
    auth = check(sign(message(), keys.rsa, "big"))
    assert [d.result for d in auth.dkim] == ["permerror"]
    assert zone.protocols["tcp"] >= 1  # it came whole, over TCP after a truncated UDP answer


@pytest.mark.parametrize(("selector", "modulus_bits", "exponent"), [
    ("huge-n", 9000, 65537),  # over the 8192-bit modulus limit, ~1.6 kB of record
    ("huge-e", 1024, (1 << 2047) | 1),  # an exponent pow() would take forever with
])
def test_rsa_keys_beyond_the_limits_are_permerror(check: Check, keys: Keys, zone: Zone,
                                                  selector: str, modulus_bits: int,
                                                  exponent: int) -> None:
    zone.txt(f"{selector}._domainkey.example.test",
             rsa_record((1 << (modulus_bits - 1)) | 1, exponent))
    auth = check(sign(message(), keys.rsa, selector))
    assert [d.result for d in auth.dkim] == ["permerror"]


def test_spf_with_fifty_includes_stops_at_the_lookup_limit(check: Check, zone: Zone) -> None:
    zone.txt("many.test", "v=spf1 " + " ".join(f"include:i{i}.many.test" for i in range(50))
             + " -all")
    for i in range(50):
        zone.txt(f"i{i}.many.test", "v=spf1 ip4:192.0.2.1 -all")
    zone.reset_counts()
    auth = check(message(), mail_from="a@many.test")
    assert auth.spf.result == "permerror"
    asked = {name for name in zone.names() if name.endswith("many.test.")}
    assert len(asked) <= 12  # the record and 10 includes: RFC 7208 §4.6.4


@pytest.mark.parametrize("record", [
    "v=spf1 include:loop.test -all",  # itself
    "v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test -all",  # three void lookups
])
def test_spf_loops_and_void_lookups_are_permerror(check: Check, zone: Zone,
                                                  record: str) -> None:
    zone.txt("loop.test", record)
    assert check(message(), mail_from="a@loop.test").spf.result == "permerror"


def test_the_body_budget_stops_further_signatures(check: Check, keys: Keys,
                                                  zone: Zone) -> None:
    raw = message()
    for _ in range(5):
        raw = sign(raw, keys.ed, "ed")
    body = len(raw.partition(b"\r\n\r\n")[2])
    auth = check(raw, limits=Limits(max_body_work=2 * body + 10))
    assert [d.result for d in auth.dkim] == ["pass"] * 2 + ["permerror"] * 3


def test_the_one_signature_dmarc_needs_is_verified_first(check: Check, keys: Keys,
                                                         zone: Zone) -> None:
    """With room for one verification, the From-aligned signature gets it, wherever it is."""
    raw = sign(sign(message(), keys.ed, "ed"), keys.rsa, "rsa", "strict.test")
    auth = check(raw, client_ip="192.0.2.7", limits=Limits(max_body_work=1))
    assert [(d.domain, d.result) for d in auth.dkim] == [
        ("strict.test", "permerror"), ("example.test", "pass")]
    assert auth.verdict == "pass"
    assert key_lookups(zone) == {"ed._domainkey.example.test."}


def test_more_than_fifty_arc_sets_fail_unchecked(check: Check, zone: Zone) -> None:
    seals = b"".join(f"ARC-Seal: i={i}; a=rsa-sha256; cv=pass; d=arc.test; s=s; b=AAAA\r\n"
                     .encode() for i in range(51, 0, -1))
    auth = check(seals + message())
    assert auth.arc.result == "fail"
    assert key_lookups(zone) == set()


HOSTILE = [
    b"",
    b"\x00\xff\xfe garbage",
    b"Subject: no From and no body",
    b"From: a@example.test\r\nFrom: b@example.test\r\n\r\nTwo authors.\r\n",
    b"From: a@example.test, b@other.test\r\n\r\nTwo addresses.\r\n",
    b"From: undisclosed\r\n\r\nNo address.\r\n",
    b"DKIM-Signature: ;;;===;;\r\nFrom: a@example.test\r\n\r\nx\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=ex;ample.test; s=(x); h=from; bh=AAAA; b=AAAA\r\n"
    b"From: a@example.test\r\n\r\nx\r\n",
    b"DKIM-Signature: v=1; a=hmac-md5; d=example.test; s=rsa; c=bogus/bogus; h=from;"
    b" bh=AAAA; b=AAAA; l=99999999999999999999\r\nFrom: a@example.test\r\n\r\nx\r\n",
    b"From: a@example.test\r\nthis line is no header\r\nDKIM-Signature: v=1\r\n\r\nbody\r\n",
    b"ARC-Seal: i=1; cv=none\r\nARC-Message-Signature: i=1\r\nFrom: a@example.test\r\n\r\nx",
    b"Authentication-Results: ;;;\r\nFrom: a@example.test\r\n\r\nx",
    b"From: a@" + b"x." * 200 + b"test\r\n\r\nx",
    b"From: a@\xc3\xa9xample.test\r\n\r\nUTF-8 domain\r\n",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_malformed_messages_get_results_not_exceptions(check: Check, raw: bytes) -> None:
    auth = check(raw, trusted_authserv_ids=["x"])
    assert isinstance(auth, Authentication)
    assert auth.verdict in ("pass", "fail", "none", "temperror")
    json.dumps(auth.to_json())


@pytest.mark.parametrize(("client_ip", "helo", "mail_from"), [
    ("not-an-ip", "mail.example.test", "a@example.test"),
    (None, None, ""),
    ("::ffff:127.0.0.1", "[::1]", "<a@example.test>"),
    ("127.0.0.1", "x" * 300, "a@" + "b" * 300 + ".test"),
    ("127.0.0.1", "mail.example.test", "no-at-sign"),
])
def test_odd_envelopes_get_results_not_exceptions(check: Check, client_ip: str | None,
                                                  helo: str | None, mail_from: str) -> None:
    auth = check(message(), client_ip=client_ip, helo=helo, mail_from=mail_from)
    assert auth.verdict in ("pass", "fail", "none", "temperror")


def test_an_ipv4_mapped_client_is_checked_as_ipv4(check: Check) -> None:
    assert check(message(), client_ip="::ffff:127.0.0.1").spf.result == "pass"


_HEADER_LINES = st.sampled_from([
    b"From: a@example.test", b"From: <b@strict.test>", b"DKIM-Signature: v=1; a=rsa-sha256;"
    b" d=example.test; s=rsa; h=from; bh=AAAA; b=AAAA", b"DKIM-Signature: d=", b" folded",
    b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=forwarder.test; s=arc; b=AAAA",
    b"Authentication-Results: mx.postroom.test; dkim=pass", b"Subject: \xff\x00", b"junk",
])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_HEADER_LINES, max_size=8), body=st.binary(max_size=200))
def test_arbitrary_header_mixes_never_raise(check: Check, lines: list[bytes], body: bytes) -> None:
    auth = check(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    assert auth.verdict in ("pass", "fail", "none", "temperror")
