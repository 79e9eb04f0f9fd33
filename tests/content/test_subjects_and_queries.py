"""Pure pieces of threads and search: subject keys, reply prefixes, the Message-IDs a reply
names, and the FTS5 query built from a user's words (never FTS5 syntax from the caller)."""

from __future__ import annotations

import pytest

from daemon.content import is_reply_subject, subject_key
from daemon.ids import message_ids_in
from storage.search import fts5_query


@pytest.mark.parametrize("subject", [
    "Re: Budget", "RE: budget", "re:budget", "Fwd: Budget", "FW: Budget", "AW: Budget",
    "WG: Budget", "SV: Budget", "Antw: Budget", "RE[2]: Budget", "Re: Re: Fwd:  Budget ",
    "回复: Budget", "Réf : Budget", "TR: Budget"])
def test_reply_prefixes_are_ignored_and_recognised(subject: str) -> None:
    assert is_reply_subject(subject)
    assert subject_key(subject) == subject_key("Budget") == subject_key("BUDGET")


@pytest.mark.parametrize("subject", ["Budget", "Report: Q3", "Ready", "Forward planning",
                                     "Re budget"])
def test_subjects_without_a_reply_prefix(subject: str) -> None:
    assert not is_reply_subject(subject)


def test_subjects_that_leave_nothing_to_compare_have_no_key() -> None:
    assert subject_key(None) is None and subject_key("") is None
    assert subject_key("Re: ") is None and subject_key("Fwd:") is None
    assert subject_key("Budget 2026") != subject_key("Budget 2027")
    assert len(subject_key("x" * 10_000) or "") == 32


def test_message_ids_a_reply_names_in_order_once_each_and_bounded() -> None:
    assert message_ids_in("<b@x>", "<a@x> <b@x>") == ["<b@x>", "<a@x>"]
    assert message_ids_in(None, "") == []
    assert message_ids_in("garbage <not an id>", None) == []
    many = " ".join(f"<{n}@x>" for n in range(500))
    assert len(message_ids_in(None, many)) == 50


@pytest.mark.parametrize(("q", "built"), [
    ("budget", '"budget"'),
    ("budget report", '"budget" "report"'),
    ('"budget report"', '"budget report"'),
    ("budget -draft", '("budget") NOT "draft"'),
    ("invoice OR receipt", '"invoice" OR "receipt"'),
    ("OR invoice OR", '"invoice"'),
    ("ann@example.org", '"ann example org"'),
    ('NEAR(a b) col:x * ^', '"NEAR a" "b" "col x"'),  # FTS5 syntax is only words
    ('"unclosed phrase', '"unclosed phrase"'),
    ("!!! ---", None),
    ("-only", None),
    ("", None),
])
def test_fts5_queries_are_rebuilt_from_words(q: str, built: str | None) -> None:
    assert fts5_query(q) == built
