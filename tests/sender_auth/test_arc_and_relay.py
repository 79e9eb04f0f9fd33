"""ARC chains, and Authentication-Results already on the message: a trusted relay's taken,
anyone else's (above all one claiming to be us) ignored."""

from __future__ import annotations

from tests.dnsserver import Zone
from tests.sender_auth.conftest import AUTHSERV_ID, Keys
from tests.sender_auth.mail import Check, arc_seal, message, sign

RELAY = "relay.example.net"
RELAY_RESULTS = (f"Authentication-Results: {RELAY}; spf=pass smtp.mailfrom=bounce@example.test;"
                 " dkim=pass header.d=example.test header.s=rsa; dmarc=pass"
                 " header.from=example.test policy.dmarc=reject; arc=none\r\n").encode()


def forwarded(keys: Keys) -> bytes:
    """A signed message through a mailing list: it checks, adds its A-R, changes the subject
    and the body (breaking the signature), then seals."""
    original = sign(message(), keys.rsa, "rsa")
    received = (b"Authentication-Results: forwarder.test; dkim=pass header.d=example.test;"
                b" spf=pass smtp.mailfrom=example.test; dmarc=pass header.from=example.test\r\n"
                + original)
    modified = received.replace(b"Subject: payment", b"Subject: [list] payment")
    return arc_seal(modified + b"-- \r\nlist footer\r\n", keys.forwarder, "arc", "forwarder.test")


def test_an_arc_sealed_forwarded_copy_passes_arc_while_dkim_fails(check: Check,
                                                                  keys: Keys) -> None:
    auth = check(forwarded(keys), client_ip="127.0.0.9", mail_from="list@forwarder.test",
                 helo="lists.forwarder.test")
    assert auth.arc.result == "pass"
    assert [d.result for d in auth.dkim] == ["fail"]
    assert auth.dmarc.result == "fail"  # ARC informs; it does not override DMARC here
    assert auth.header.endswith("arc=pass")


def test_a_copy_modified_after_the_seal_fails_arc(check: Check, keys: Keys) -> None:
    broken = forwarded(keys).replace(b"list footer", b"LIST FOOTER")
    auth = check(broken, client_ip="127.0.0.9", mail_from="list@forwarder.test")
    assert auth.arc.result == "fail"


def test_a_trusted_relays_topmost_results_are_taken(check: Check, zone: Zone) -> None:
    # unsigned, from an address SPF fails: only the relay's word can make this pass
    auth = check(RELAY_RESULTS + message(), client_ip="192.0.2.7",
                 trusted_authserv_ids=[RELAY.upper()])
    assert auth.authserv_id == RELAY
    assert (auth.spf.result, auth.spf.domain) == ("pass", "example.test")
    assert [(d.result, d.domain, d.selector) for d in auth.dkim] == [
        ("pass", "example.test", "rsa")]
    assert (auth.dmarc.result, auth.dmarc.policy) == ("pass", "reject")
    assert auth.verdict == "pass"
    assert auth.header.startswith(f"{AUTHSERV_ID} (results of {RELAY}); spf=pass")
    assert zone.count() == 0  # nothing checked again


def test_a_trusted_relay_without_dmarc_gets_our_dmarc_lookup(check: Check, zone: Zone) -> None:
    header = (f"Authentication-Results: {RELAY}; spf=fail smtp.mailfrom=x@example.test;"
              " dkim=pass header.d=example.test header.s=rsa\r\n").encode()
    auth = check(header + message(), trusted_authserv_ids=[RELAY])
    assert (auth.dmarc.result, auth.dmarc.policy, auth.verdict) == ("pass", "reject", "pass")
    assert zone.count("_dmarc.example.test") == 1 and zone.count() == 1


def test_results_of_an_untrusted_relay_are_ignored(check: Check) -> None:
    auth = check(RELAY_RESULTS + message(), client_ip="192.0.2.7")
    assert auth.authserv_id == AUTHSERV_ID
    assert (auth.spf.result, auth.dkim, auth.verdict) == ("fail", (), "fail")


def test_results_carrying_our_own_id_are_never_believed(check: Check) -> None:
    forged = RELAY_RESULTS.replace(RELAY.encode(), AUTHSERV_ID.upper().encode())
    auth = check(forged + message(), client_ip="192.0.2.7",
                 trusted_authserv_ids=[AUTHSERV_ID, RELAY])
    assert auth.authserv_id == AUTHSERV_ID and auth.verdict == "fail"


def test_a_trusted_id_below_the_top_is_not_taken(check: Check) -> None:
    other = b"Authentication-Results: elsewhere.test; spf=fail smtp.mailfrom=a@b.test\r\n"
    auth = check(other + RELAY_RESULTS + message(), client_ip="192.0.2.7",
                 trusted_authserv_ids=[RELAY])
    assert auth.authserv_id == AUTHSERV_ID and auth.verdict == "fail"


def test_unknown_results_from_a_trusted_relay_are_not_passes(check: Check) -> None:
    header = (f"Authentication-Results: {RELAY}; spf=excellent smtp.mailfrom=a@example.test;"
              " dmarc=great header.from=example.test\r\n").encode()
    auth = check(header + message(), trusted_authserv_ids=[RELAY])
    assert (auth.spf.result, auth.dmarc.result, auth.verdict) == (
        "permerror", "permerror", "fail")
    assert auth.defects
