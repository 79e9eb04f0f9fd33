"""Our resolver against misbehaving DNS: timeouts and SERVFAIL are temperror, loops permerror,
answers are cached for their TTL, and failures are remembered within one message."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from daemon.sender_auth import DnsPermError, DnsTempError, Limits, Resolver, parse_nameserver
from tests.dnsserver import Zone
from tests.sender_auth.conftest import Keys
from tests.sender_auth.mail import Check, message, sign


@pytest.mark.parametrize(("text", "address", "port"), [
    ("192.0.2.53", "192.0.2.53", 53),
    ("127.0.0.1:5353", "127.0.0.1", 5353),
    ("::1", "::1", 53),
    ("[::1]:5353", "::1", 5353),
])
def test_dns_servers_may_carry_a_port(text: str, address: str, port: int) -> None:
    server = parse_nameserver(text)
    assert (server.address, server.port) == (address, port)


def test_a_dns_timeout_gives_temperror(check: Check, zone: Zone) -> None:
    zone.drop.add("_dmarc.slow.test.")
    auth = check(message("ceo@slow.test"))
    assert (auth.dmarc.result, auth.verdict) == ("temperror", "temperror")
    assert zone.count("_dmarc.slow.test") >= 1
    assert auth.spf.result == "pass"  # the rest was checked all the same


def test_a_failure_is_remembered_for_the_rest_of_the_message(resolver: Resolver,
                                                             zone: Zone) -> None:
    zone.drop.add("dead._domainkey.example.test.")
    session = resolver.session()
    with pytest.raises(DnsTempError) as first:
        session.txt("dead._domainkey.example.test")
    with pytest.raises(DnsTempError) as again:
        session.txt("dead._domainkey.example.test")
    assert again.value is first.value  # not asked, nor waited for, a second time
    assert session.lookups == 1 and session.remaining() > 0


def test_signatures_at_a_dead_selector_are_temperror(check: Check, keys: Keys,
                                                     zone: Zone) -> None:
    zone.drop.add("dead._domainkey.example.test.")
    raw = message()
    for _ in range(3):
        raw = sign(raw, keys.rsa, "dead")
    auth = check(raw, client_ip="192.0.2.7")
    assert [d.result for d in auth.dkim] == ["temperror"] * 3
    assert auth.dmarc.result == "temperror" and auth.verdict == "temperror"


def test_servfail_gives_temperror_everywhere(check: Check, keys: Keys, zone: Zone) -> None:
    zone.servfail.update({"sf._domainkey.example.test.", "sf.test.", "_dmarc.sf.test."})
    auth = check(sign(message("ceo@sf.test"), keys.rsa, "sf"), mail_from="a@sf.test")
    assert auth.spf.result == "temperror"
    assert [d.result for d in auth.dkim] == ["temperror"]
    assert (auth.dmarc.result, auth.verdict) == ("temperror", "temperror")


def test_a_slow_answer_within_the_timeout_is_used(check: Check, keys: Keys,
                                                  zone: Zone) -> None:
    zone.txt("slowkey._domainkey.example.test", keys.rsa.record)
    zone.delay["slowkey._domainkey.example.test."] = 0.05
    assert [d.result for d in check(sign(message(), keys.rsa, "slowkey")).dkim] == ["pass"]


def test_a_cname_loop_is_permerror(check: Check, keys: Keys, zone: Zone,
                                   resolver: Resolver) -> None:
    zone.cname("loop1._domainkey.example.test", "loop2._domainkey.example.test")
    zone.cname("loop2._domainkey.example.test", "loop1._domainkey.example.test")
    with pytest.raises(DnsPermError):
        resolver.session().txt("loop1._domainkey.example.test")
    auth = check(sign(message(), keys.rsa, "loop1"))
    assert [d.result for d in auth.dkim] == ["permerror"]


def test_answers_are_cached_for_their_ttl(check: Check, keys: Keys, zone: Zone,
                                          resolver: Resolver) -> None:
    raw = sign(message(), keys.rsa, "rsa")
    check(raw)
    asked = zone.count()
    assert asked > 0
    assert check(raw).verdict == "pass" and zone.count() == asked  # all from the cache
    zone.txt("ttl0.test", "v=spf1 -all", ttl=0)
    for _ in range(2):
        resolver.session().txt("ttl0.test")
    assert zone.count("ttl0.test") == 2  # a TTL of 0 is not kept


def test_an_unreachable_server_gives_temperror(zone: Zone) -> None:
    from daemon.sender_auth import verify

    dead = Resolver(["127.0.0.1:9"], 0.3)
    auth = verify(message(), client_ip="127.0.0.1", helo="mail.example.test",
                  mail_from="a@example.test", authserv_id="mx.test", resolver=dead)
    assert (auth.spf.result, auth.dmarc.result, auth.verdict) == (
        "temperror", "temperror", "temperror")


def test_the_lookup_cap_is_a_permerror(check: Check, keys: Keys) -> None:
    auth = check(sign(message(), keys.rsa, "rsa"), limits=Limits(max_dns_lookups=2))
    assert auth.spf.result == "pass" and auth.helo.result == "pass"  # lookups 1 and 2
    assert [d.result for d in auth.dkim] == ["permerror"]
    assert auth.dmarc.result == "permerror" and auth.verdict == "fail"


def test_verifications_in_threads_keep_their_own_dns(check: Check, keys: Keys) -> None:
    """pyspf's DNS hook is one module global; each thread must still see its own message."""
    raw = sign(message(), keys.rsa, "rsa")
    ips = ["127.0.0.1", "192.0.2.7"] * 16
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda ip: check(raw, client_ip=ip).spf.result, ips))
    assert results == ["pass", "fail"] * 16
