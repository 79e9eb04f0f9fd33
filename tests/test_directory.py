"""RCPT address resolution: exact, +tag, catch-all, case, and agent address validation."""

from __future__ import annotations

import pytest

from daemon.agents import AgentError, normalize_address
from daemon.directory import Resolved, resolve
from daemon.ids import hash_api_key, new_api_key, new_message_id

TABLE = {"alice@agents.test": "agt_a", "*@bob.test": "agt_b", "a+b@agents.test": "agt_c"}


def test_exact_match_is_case_insensitive() -> None:
    assert resolve(TABLE, "Alice@Agents.TEST") == Resolved("agt_a", "alice@agents.test", None)


def test_plus_tag_reaches_the_base_address_and_is_recorded() -> None:
    assert resolve(TABLE, "alice+invoices@agents.test") == Resolved(
        "agt_a", "alice+invoices@agents.test", "invoices")


def test_an_owned_plus_address_wins_over_the_tag_rule() -> None:
    assert resolve(TABLE, "a+b@agents.test") == Resolved("agt_c", "a+b@agents.test", None)


def test_catch_all_takes_any_local_part() -> None:
    assert resolve(TABLE, "whoever@bob.test") == Resolved("agt_b", "whoever@bob.test", None)
    assert resolve(TABLE, "x+y@bob.test") == Resolved("agt_b", "x+y@bob.test", "y")


@pytest.mark.parametrize("addr", ["nobody@agents.test", "alice@other.test", "alice", "@x", ""])
def test_unknown_addresses_resolve_to_nothing(addr: str) -> None:
    assert resolve(TABLE, addr) is None


def test_address_normalisation_and_validation() -> None:
    assert normalize_address(" Alice@Agents.Test ") == "alice@agents.test"
    assert normalize_address("*@bob.test") == "*@bob.test"
    for bad in ["nope", "a@", "@b.test", "a b@c.test", "a@b@c.test", "<a@b.test>"]:
        with pytest.raises(AgentError):
            normalize_address(bad)


def test_keys_are_random_and_stored_as_hashes() -> None:
    k1, k2 = new_api_key(), new_api_key()
    assert k1 != k2 and k1.startswith("pr_") and len(k1) > 40
    assert hash_api_key(k1) != k1 and len(hash_api_key(k1)) == 64
    assert hash_api_key(k1) == hash_api_key(k1)


def test_message_ids_sort_by_creation_time() -> None:
    ids = [new_message_id() for _ in range(50)]
    assert all(i.startswith("msg_") and len(i) == 30 for i in ids)
    # "msg_" and ten characters of milliseconds: an id of a later millisecond sorts after them
    # all, whatever its random part. Poll for one (a millisecond, bounded) instead of sleeping.
    later = new_message_id()
    for _ in range(1_000_000):
        if later[:14] != ids[-1][:14]:
            break
        later = new_message_id()
    assert all(later > i for i in ids)
