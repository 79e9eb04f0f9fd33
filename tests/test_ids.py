"""Event ids (SPEC §14): stable, derived from the cursor, ordered as the feed is."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from daemon.ids import event_id_for

SEQ = st.integers(min_value=1, max_value=2**63 - 1)


@given(SEQ, SEQ)
def test_event_ids_sort_as_their_cursors_and_never_collide(a: int, b: int) -> None:
    assert (event_id_for(a) < event_id_for(b)) == (a < b)
    assert (event_id_for(a) == event_id_for(b)) == (a == b)


def test_an_event_id_has_a_fixed_shape() -> None:
    assert event_id_for(1) == "evt_0000000000001"
    assert len(event_id_for(2**63 - 1)) == len("evt_") + 13
