"""The sender-authentication fixtures: keys made once, one loopback DNS server (tests/dnsserver)
for the session serving every test domain, and a fresh `Resolver` (empty cache) per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from daemon.sender_auth import Authentication, Limits, Resolver, verify
from tests.dnsserver import RunningDns, Zone, start_dns
from tests.sender_auth.mail import Check, Key, ed25519_key, rsa_key

AUTHSERV_ID = "mx.postroom.test"
DNS_TIMEOUT = 0.3  # seconds; a dropped query costs this much, so keep them few


@dataclass(frozen=True)
class Keys:
    rsa: Key  # 1024 bits
    rsa2048: Key
    ed: Key
    forwarder: Key  # the ARC sealer's


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(rsa_key(1024), rsa_key(2048), ed25519_key(), rsa_key(1024))


def base_records(keys: Keys) -> dict[str, dict[str, Any]]:
    spf_local = "v=spf1 ip4:127.0.0.1 -all"
    return {
        # example.test: everything right for mail from 127.0.0.1
        "example.test": {"TXT": [spf_local]},
        "mail.example.test": {"TXT": [spf_local], "A": ["127.0.0.1"]},
        "_dmarc.example.test": {"TXT": ["v=DMARC1; p=reject; sp=quarantine"]},
        "rsa._domainkey.example.test": {"TXT": [keys.rsa.record]},
        "rsa2048._domainkey.example.test": {"TXT": [keys.rsa2048.record]},
        "ed._domainkey.example.test": {"TXT": [keys.ed.record]},
        # SPF outcomes
        "soft.test": {"TXT": ["v=spf1 ip4:192.0.2.1 ~all"]},
        "neutral.test": {"TXT": ["v=spf1 ?all"]},
        "nospf.test": {"A": ["192.0.2.1"]},
        "helo-only.test": {"TXT": ["v=spf1 -all"]},
        "mx.helo-only.test": {"TXT": [spf_local]},
        # strict alignment
        "strict.test": {"TXT": [spf_local]},
        "_dmarc.strict.test": {"TXT": ["v=DMARC1; p=quarantine; adkim=s; aspf=s"]},
        "rsa._domainkey.strict.test": {"TXT": [keys.rsa.record]},
        "rsa._domainkey.mail.strict.test": {"TXT": [keys.rsa.record]},
        "bounce.strict.test": {"TXT": [spf_local]},
        # no DMARC record at all
        "nodmarc.test": {"TXT": [spf_local]},
        "rsa._domainkey.nodmarc.test": {"TXT": [keys.rsa.record]},
        # a multi-label public suffix from the real list: co.uk
        "_dmarc.example.co.uk": {"TXT": ["v=DMARC1; p=reject"]},
        "_dmarc.co.uk": {"TXT": ["v=DMARC1; p=none"]},  # a suffix: never an org domain
        "rsa._domainkey.example.co.uk": {"TXT": [keys.rsa.record]},
        "rsa._domainkey.other.co.uk": {"TXT": [keys.rsa.record]},
        # the ARC sealer (a mailing list)
        "forwarder.test": {"TXT": ["v=spf1 ip4:127.0.0.9 -all"]},
        "arc._domainkey.forwarder.test": {"TXT": [keys.forwarder.record]},
    }


@pytest.fixture(scope="session")
def dns_server(keys: Keys) -> Iterator[RunningDns]:
    server = start_dns(Zone(base_records(keys)))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def zone(dns_server: RunningDns) -> Zone:
    """The session's zone with its counts at zero (tests may add records and knobs)."""
    dns_server.zone.reset_counts()
    return dns_server.zone


@pytest.fixture
def resolver(dns_server: RunningDns) -> Resolver:
    return Resolver([dns_server.address], DNS_TIMEOUT)


@pytest.fixture
def check(resolver: Resolver, zone: Zone) -> Check:
    """`verify` with the usual envelope (127.0.0.1, HELO mail.example.test, MAIL FROM
    bounce@example.test) and our test resolver; keywords override."""

    def run(raw: bytes, **overrides: Any) -> Authentication:
        kwargs: dict[str, Any] = {
            "client_ip": "127.0.0.1", "helo": "mail.example.test",
            "mail_from": "bounce@example.test", "authserv_id": AUTHSERV_ID,
            "resolver": resolver, "limits": Limits()}
        kwargs.update(overrides)
        return verify(raw, **kwargs)

    return run
