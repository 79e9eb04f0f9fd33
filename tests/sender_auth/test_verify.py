"""SPF, DKIM and DMARC verdicts on real signatures over the loopback DNS server."""

from __future__ import annotations

import json

import authres
import pytest

from daemon.sender_auth import org_domain
from tests.dnsserver import Zone
from tests.sender_auth.conftest import AUTHSERV_ID, Keys
from tests.sender_auth.mail import Check, message, sign


def test_a_message_signed_twice_passes_everything(check: Check, keys: Keys) -> None:
    raw = sign(sign(message(), keys.ed, "ed"), keys.rsa2048, "rsa2048")
    auth = check(raw)
    assert auth.to_json() == {
        "spf": {"result": "pass", "domain": "example.test",
                "helo": {"result": "pass", "domain": "mail.example.test"}},
        "dkim": [{"result": "pass", "domain": "example.test", "selector": "rsa2048"},
                 {"result": "pass", "domain": "example.test", "selector": "ed"}],
        "dmarc": {"result": "pass", "policy": "reject", "domain": "example.test"},
        "arc": {"result": "none"},
        "verdict": "pass",
        "header": auth.header,
    }
    assert auth.header == (
        f"{AUTHSERV_ID}; spf=pass smtp.mailfrom=bounce@example.test; "
        "spf=pass smtp.helo=mail.example.test; "
        "dkim=pass header.d=example.test header.a=rsa-sha256 header.s=rsa2048; "
        "dkim=pass header.d=example.test header.a=ed25519-sha256 header.s=ed; "
        "dmarc=pass header.from=example.test policy.dmarc=reject; arc=none")
    json.dumps(auth.to_json())
    assert auth.defects == ()


def test_each_method_passes_alone(check: Check, keys: Keys) -> None:
    signed = check(sign(message(), keys.rsa, "rsa"), client_ip="192.0.2.7")
    assert [d.result for d in signed.dkim] == ["pass"]
    assert signed.spf.result == "fail" and signed.dmarc.result == "pass"  # DKIM aligns alone
    unsigned = check(message())
    assert unsigned.dkim == () and unsigned.spf.result == "pass"
    assert unsigned.dmarc.result == "pass" and unsigned.verdict == "pass"  # SPF aligns alone


def test_forged_from_fails_dmarc_with_the_reject_policy(check: Check, keys: Keys) -> None:
    """A spammer's own domain signs and passes SPF; the From claims example.test."""
    raw = sign(message("ceo@example.test"), keys.rsa, "rsa", "strict.test")
    auth = check(raw, client_ip="127.0.0.1", mail_from="spam@strict.test")
    assert auth.spf.result == "pass" and auth.spf.domain == "strict.test"
    assert [(d.result, d.domain) for d in auth.dkim] == [("pass", "strict.test")]
    assert (auth.dmarc.result, auth.dmarc.policy) == ("fail", "reject")
    assert auth.verdict == "fail"


def test_a_tampered_body_fails_dkim(check: Check, keys: Keys) -> None:
    raw = sign(message(), keys.rsa, "rsa").replace(b"today", b"now!!")
    auth = check(raw, client_ip="192.0.2.7")
    assert [d.result for d in auth.dkim] == ["fail"]
    assert (auth.dmarc.result, auth.verdict) == ("fail", "fail")


def test_of_two_signatures_one_good_one_bad_both_are_listed(check: Check, keys: Keys) -> None:
    good = sign(message(), keys.rsa, "rsa")
    bad = sign(good, keys.ed, "rsa")  # says selector rsa, signed with another key
    auth = check(bad, client_ip="192.0.2.7")
    assert [(d.result, d.selector) for d in auth.dkim] == [("fail", "rsa"), ("pass", "rsa")]
    assert auth.verdict == "pass"
    assert auth.header.count("dkim=") == 2


@pytest.mark.parametrize(("mail_from", "ip", "expected"), [
    ("a@example.test", "127.0.0.1", "pass"),
    ("a@example.test", "127.0.0.2", "fail"),
    ("a@soft.test", "127.0.0.1", "softfail"),
    ("a@neutral.test", "127.0.0.1", "neutral"),
    ("a@nospf.test", "127.0.0.1", "none"),
    ("a@nowhere.test", "127.0.0.1", "none"),
    ("a@[127.0.0.1]", "127.0.0.1", "none"),
])
def test_spf_results_for_the_mail_from_identity(check: Check, mail_from: str, ip: str,
                                                expected: str) -> None:
    assert check(message(), mail_from=mail_from, client_ip=ip).spf.result == expected


def test_the_helo_identity_is_checked_on_its_own(check: Check) -> None:
    auth = check(message(), helo="mx.helo-only.test", mail_from="a@helo-only.test")
    assert (auth.helo.result, auth.helo.domain) == ("pass", "mx.helo-only.test")
    assert auth.spf.result == "fail"
    literal = check(message(), helo="[127.0.0.1]")
    assert literal.helo.result == "none"
    assert 'spf=none smtp.helo="[127.0.0.1]"' in literal.header


def test_the_null_sender_is_checked_as_postmaster_at_helo(check: Check, zone: Zone) -> None:
    auth = check(message(), mail_from="", helo="mail.example.test")
    assert auth.spf == auth.helo and auth.spf.result == "pass"
    assert "smtp.mailfrom=postmaster@mail.example.test" in auth.header
    assert zone.count("mail.example.test", "TXT") == 1  # one check, not two


def test_relaxed_alignment_takes_the_organisational_domain(check: Check, keys: Keys) -> None:
    raw = sign(message("ceo@news.example.test"), keys.rsa, "rsa", "example.test")
    auth = check(raw, client_ip="192.0.2.7")
    # no _dmarc.news.example.test: the org record applies, with its sp=
    assert (auth.dmarc.result, auth.dmarc.policy, auth.dmarc.domain) == (
        "pass", "quarantine", "news.example.test")


def test_strict_alignment_wants_the_same_domain(check: Check, keys: Keys) -> None:
    sub = sign(message("ceo@strict.test"), keys.rsa, "rsa", "mail.strict.test")
    auth = check(sub, mail_from="bounce@bounce.strict.test")
    assert [d.result for d in auth.dkim] == ["pass"] and auth.spf.result == "pass"
    assert (auth.dmarc.result, auth.dmarc.policy) == ("fail", "quarantine")
    same = sign(message("ceo@strict.test"), keys.rsa, "rsa", "strict.test")
    assert check(same, client_ip="192.0.2.7").dmarc.result == "pass"


def test_a_multi_label_public_suffix_is_not_an_organisational_domain(
        check: Check, keys: Keys, zone: Zone) -> None:
    ours = sign(message("ceo@news.example.co.uk"), keys.rsa, "rsa", "example.co.uk")
    auth = check(ours, client_ip="192.0.2.7", mail_from="")
    assert (auth.dmarc.result, auth.dmarc.policy) == ("pass", "reject")
    assert zone.count("_dmarc.co.uk") == 0
    neighbour = sign(message("ceo@news.example.co.uk"), keys.rsa, "rsa", "other.co.uk")
    auth = check(neighbour, client_ip="192.0.2.7", mail_from="")
    assert [d.result for d in auth.dkim] == ["pass"]
    assert (auth.dmarc.result, auth.verdict) == ("fail", "fail")


@pytest.mark.parametrize(("domain", "org"), [
    ("a.b.example.co.uk", "example.co.uk"),
    ("example.co.uk", "example.co.uk"),
    ("mail.shop.foo.ck", "shop.foo.ck"),  # *.ck: every foo.ck is a public suffix
    ("x.github.io", "x.github.io"),  # the private section counts
    ("a.example.test", "example.test"),  # an unknown TLD is a suffix
    ("test", "test"),
])
def test_organisational_domains_come_from_the_embedded_list(domain: str, org: str) -> None:
    assert org_domain(domain) == org


def test_without_a_dmarc_record_an_aligned_pass_still_passes(check: Check, keys: Keys) -> None:
    raw = sign(message("ceo@nodmarc.test"), keys.rsa, "rsa", "nodmarc.test")
    auth = check(raw, client_ip="192.0.2.7", mail_from="x@nodmarc.test")
    assert (auth.dmarc.result, auth.dmarc.policy) == ("none", None)
    assert auth.spf.result == "fail" and auth.verdict == "pass"
    unsigned = check(message("ceo@nodmarc.test"), client_ip="192.0.2.7",
                     mail_from="x@nodmarc.test")
    assert (unsigned.dmarc.result, unsigned.verdict) == ("none", "none")


def test_an_rsa_sha1_signature_is_never_a_pass(check: Check, keys: Keys) -> None:
    raw = sign(message(), keys.rsa, "rsa")
    sha1 = raw.replace(b"a=rsa-sha256", b"a=rsa-sha1", 1)
    assert [d.result for d in check(sha1, client_ip="192.0.2.7").dkim] == ["permerror"]


def test_a_key_below_the_minimum_is_policy(check: Check, keys: Keys) -> None:
    from daemon.sender_auth import Limits

    auth = check(sign(message(), keys.rsa, "rsa"), limits=Limits(min_rsa_bits=2048))
    assert [d.result for d in auth.dkim] == ["policy"]


def test_a_length_tag_short_of_the_body_is_not_a_pass(check: Check, keys: Keys) -> None:
    raw = sign(message(), keys.rsa, "rsa", length=True)
    assert [d.result for d in check(raw).dkim] == ["pass"]
    appended = raw + b"P.S. the account number changed: 12345\r\n"
    assert [d.result for d in check(appended).dkim] == ["policy"]


def test_the_header_cannot_be_extended_by_the_envelope(check: Check) -> None:
    auth = check(message(), mail_from='"x; dkim=pass header.d=bank.test"@example.test',
                 helo="evil.test; dmarc=pass")
    parsed = authres.all_features().parse_value(auth.header)
    assert [r.method for r in parsed.results] == ["spf", "spf", "dmarc", "arc"]
    assert "bank.test" not in auth.header


def test_a_message_stored_with_bare_line_feeds_verifies_the_same(check: Check,
                                                                  keys: Keys) -> None:
    raw = sign(sign(message(), keys.ed, "ed"), keys.rsa, "rsa",
               canonicalize=(b"simple", b"simple"))
    auth = check(raw.replace(b"\r\n", b"\n"))
    assert [d.result for d in auth.dkim] == ["pass", "pass"] and auth.verdict == "pass"
