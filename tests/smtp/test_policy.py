"""SMTP policy as plain functions: trust, connection limits, declared size, recipients."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.smtp import policy

NETS = policy.parse_networks(["127.0.0.0/8", "::1/128", "10.1.0.0/16"])


def test_trusted_networks_cover_ipv4_ipv6_and_mapped_addresses() -> None:
    assert policy.is_trusted("127.0.0.1", NETS)
    assert policy.is_trusted("::1", NETS)
    assert policy.is_trusted("::ffff:10.1.2.3", NETS)
    assert not policy.is_trusted("10.2.0.1", NETS)
    assert not policy.is_trusted("2001:db8::1", NETS)
    assert not policy.is_trusted("garbage", NETS)
    assert not policy.is_trusted(None, NETS)


def test_connection_refusals() -> None:
    assert policy.connection_refusal("127.0.0.1", NETS, 1, 10, False) is None
    assert policy.connection_refusal("192.0.2.1", NETS, 1, 10, False) == policy.REFUSED_UNTRUSTED
    assert policy.connection_refusal("127.0.0.1", NETS, 11, 10, False) == \
        policy.TOO_MANY_CONNECTIONS
    assert policy.connection_refusal("127.0.0.1", NETS, 1, 10, True) == policy.SHUTTING_DOWN
    assert policy.REFUSED_UNTRUSTED.startswith("554 5.7.1")
    assert policy.TOO_MANY_CONNECTIONS.startswith("421 4.7.0")


def test_declared_size() -> None:
    assert policy.declared_size_refusal(["SIZE=100"], 100) is None
    assert policy.declared_size_refusal(["BODY=8BITMIME", "SIZE=101"], 100) == \
        policy.MESSAGE_TOO_BIG
    assert policy.declared_size_refusal(["size=999"], 100) == policy.MESSAGE_TOO_BIG
    assert policy.declared_size_refusal([], 100) is None
    assert policy.MESSAGE_TOO_BIG.startswith("552 5.3.4")


def test_recipient_refusals_and_their_codes() -> None:
    assert policy.recipient_refusal(0, 2, True) is None
    assert policy.recipient_refusal(2, 2, True) == policy.TOO_MANY_RECIPIENTS
    assert policy.recipient_refusal(0, 2, False) == policy.UNKNOWN_RECIPIENT
    assert policy.TOO_MANY_RECIPIENTS.startswith("452 4.5.3")
    assert policy.UNKNOWN_RECIPIENT.startswith("550 5.1.1")


def test_every_failure_of_ours_is_temporary() -> None:
    assert policy.TRY_LATER.startswith("451 4.3.0")
    assert policy.SHUTTING_DOWN.startswith("421")


async def test_an_exception_in_a_hook_becomes_451() -> None:
    from daemon.smtp import PostroomHandler, SmtpCounters

    handler = PostroomHandler(None, None, 100, 10, "ESMTP", SmtpCounters())  # type: ignore[arg-type]
    assert (await handler.handle_exception(RuntimeError("boom"))).startswith("451 4.3.0")


def test_an_address_longer_than_smtp_allows_is_refused() -> None:
    fits = "a+" + "t" * 236 + "@agents.test"  # 250 octets
    assert len(fits) == 250 and policy.address_refusal(fits) is None
    assert policy.address_refusal("x" * 242 + "@agents.test") is None  # 254
    assert policy.address_refusal("x" * 243 + "@agents.test") == policy.ADDRESS_TOO_LONG
    assert policy.address_refusal("é" * 122 + "@agents.test") == policy.ADDRESS_TOO_LONG
    assert policy.ADDRESS_TOO_LONG.startswith("501 5.1.3")


def test_with_auth_offered_an_untrusted_client_is_greeted() -> None:
    assert policy.connection_refusal("192.0.2.1", NETS, 1, 10, False,
                                     auth_offered=True) is None
    assert policy.connection_refusal("192.0.2.1", NETS, 11, 10, False, auth_offered=True) == \
        policy.TOO_MANY_CONNECTIONS
    assert policy.connection_refusal("192.0.2.1", NETS, 1, 10, True, auth_offered=True) == \
        policy.SHUTTING_DOWN


def test_mail_needs_tls_when_required_and_auth_outside_the_trusted_networks() -> None:
    def refusal(tls: bool = True, require_tls: bool = False, trusted: bool = True,
                authenticated: bool = False) -> str | None:
        return policy.mail_refusal(tls=tls, require_tls=require_tls, trusted=trusted,
                                   authenticated=authenticated)

    assert refusal(tls=False) is None
    assert refusal(tls=False, require_tls=True) == policy.MUST_STARTTLS
    assert refusal(tls=True, require_tls=True) is None
    assert refusal(trusted=False) == policy.AUTH_REQUIRED
    assert refusal(trusted=False, authenticated=True) is None
    # Without TLS there is no AUTH: asking for STARTTLS first is the useful answer.
    assert refusal(tls=False, require_tls=True, trusted=False) == policy.MUST_STARTTLS
    assert policy.MUST_STARTTLS.startswith("530 5.7.0")
    assert policy.AUTH_REQUIRED.startswith("530 5.7.0")


def test_auth_and_timeout_replies() -> None:
    assert policy.AUTH_NEEDS_TLS.startswith("538 5.7.11")
    assert policy.AUTH_INVALID.startswith("535 5.7.8")
    assert policy.TOO_MANY_AUTH_FAILURES.startswith("421 4.7.0")
    assert policy.IDLE_TIMEOUT.startswith("421 4.4.2")
    assert policy.MAX_AUTH_FAILURES == 3


def test_an_address_with_a_control_character_or_bytes_not_utf8_is_refused() -> None:
    not_utf8 = b"r\xe9@agents.test".decode("utf-8", "surrogateescape")  # as aiosmtpd hands it on
    for bad in ["r\x00@agents.test", "r\x1b@agents.test", "r\x7f@agents.test", not_utf8]:
        assert policy.address_refusal(bad) == policy.BAD_RECIPIENT_SYNTAX, repr(bad)
        assert policy.sender_refusal(bad) == policy.BAD_SENDER_SYNTAX, repr(bad)
    for good in ["ré@agents.test", "", "a+tag@agents.test"]:  # UTF-8 (SMTPUTF8), null sender
        assert policy.address_refusal(good) is None and policy.sender_refusal(good) is None
    assert policy.BAD_SENDER_SYNTAX.startswith("501 5.1.7")


# The fast split of MAIL/RCPT paths agrees with aiosmtpd's parser wherever it answers.

class _Limitless:
    local_part_limit = 0


def _aiosmtpd_split(arg: str) -> tuple[str | None, str | None]:
    from aiosmtpd.smtp import SMTP

    result: tuple[str | None, str | None] = SMTP._getaddr(_Limitless(), arg)  # type: ignore[arg-type]
    return result


@pytest.mark.parametrize("arg", [
    "<a@b.c>", "<a@b.c> SIZE=12 BODY=8BITMIME", "<a@b.c>SIZE=1", " <x.y+tag@mx-1.example.org>",
    "<A!#$%&'*+/=?^_`{|}~-@B.C>  X=1", "<a@b>", "<a@b.c>\tSIZE=3",
])
def test_the_simple_path_split_is_aiosmtpds(arg: str) -> None:
    assert policy.simple_path(arg) == _aiosmtpd_split(arg)


@pytest.mark.parametrize("arg", [
    "<>", '<"q r"@b.c>', "<a..b@c>", "<.a@b>", "<a@[127.0.0.1]>", "a@b.c", "<a@b.c> (c) X",
    "<a@b..c>", "<a@-b.c", "<@relay:a@b.c>", "<a@b.c", "<a b@c>", "<a@b.c>(x)",
])
def test_other_forms_are_left_to_aiosmtpd(arg: str) -> None:
    assert policy.simple_path(arg) is None


# Half well-formed dot-atoms (the fast path's domain), half anything near them.
_PIECE = st.one_of(
    st.from_regex(r"[a-zA-Z0-9+=_-]{1,5}(\.[a-z0-9-]{1,4}){0,2}", fullmatch=True),
    st.text(st.sampled_from([*"ab.Z9-+=_", "é", '"', " ", "[", "("]), max_size=8))
_REST = st.text(st.sampled_from([*"SIZE=9 \t(x)"]), max_size=12)


@given(st.sampled_from(["", " ", "\t"]), _PIECE, _PIECE, _REST)
@settings(max_examples=3000, deadline=None, derandomize=True)
def test_the_simple_split_never_disagrees_with_aiosmtpd(
        lead: str, local: str, domain: str, rest: str) -> None:
    arg = f"{lead}<{local}@{domain}>{rest}".rstrip()  # aiosmtpd strips the command line
    simple = policy.simple_path(arg)
    if simple is not None:
        assert simple == _aiosmtpd_split(arg), arg
