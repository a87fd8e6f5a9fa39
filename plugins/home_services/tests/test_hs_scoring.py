"""The seed's work-order score: the exact formula and the ordering it implies."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from thorbis_home_services.models import Priority
from thorbis_home_services.scoring import DEFAULT_WEIGHT, PRIORITY_WEIGHTS, work_order_score

T0 = dt.datetime(2024, 6, 3, 9, 0, tzinfo=dt.UTC)
# Scheduled times of the next decades, to the microsecond, in any offset.
times = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-7)),
                               dt.timezone(dt.timedelta(hours=5, minutes=30))]),
)
priorities = st.sampled_from(list(Priority))


def test_the_seed_formula() -> None:
    assert work_order_score(Priority.EMERGENCY, T0) == 1_000_000 + T0.timestamp()
    assert work_order_score(Priority.URGENT, T0) == 100_000 + T0.timestamp()
    assert work_order_score(Priority.HIGH, T0) == 10_000 + T0.timestamp()
    assert work_order_score(Priority.STANDARD, T0) == 1_000 + T0.timestamp()
    assert work_order_score(Priority.LOW, T0) == 100 + T0.timestamp()
    assert work_order_score("low", T0) == work_order_score(Priority.LOW, T0)
    # The seed's fallback for a priority it does not know.
    assert work_order_score("whenever", T0) == DEFAULT_WEIGHT + T0.timestamp()


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        work_order_score(Priority.LOW, dt.datetime(2024, 6, 3, 9))


def test_an_offset_does_not_change_the_score() -> None:
    local = T0.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert work_order_score(Priority.HIGH, local) == work_order_score(Priority.HIGH, T0)


@given(times, priorities, priorities)
def test_at_equal_times_the_higher_priority_ranks_first(
    at: dt.datetime, p: Priority, q: Priority
) -> None:
    if PRIORITY_WEIGHTS[p] > PRIORITY_WEIGHTS[q]:
        assert work_order_score(p, at) > work_order_score(q, at)


@given(times, times, priorities)
def test_at_equal_priority_the_later_order_ranks_first(
    a: dt.datetime, b: dt.datetime, p: Priority
) -> None:
    if a < b:
        assert work_order_score(p, a) < work_order_score(p, b)


@given(times, priorities, priorities, st.integers(min_value=0, max_value=2_000_000))
def test_priority_wins_exactly_within_the_weight_gap(
    at: dt.datetime, p: Priority, q: Priority, seconds: int
) -> None:
    # p at `at` outranks q scheduled `seconds` later iff seconds < weight(p) - weight(q).
    later = at + dt.timedelta(seconds=seconds)
    gap = PRIORITY_WEIGHTS[p] - PRIORITY_WEIGHTS[q]
    # At exactly the gap the scores tie, up to the last bit of a double.
    assume(seconds != gap)
    assert (work_order_score(p, at) > work_order_score(q, later)) == (seconds < gap)


def test_at_exactly_the_gap_the_scores_tie() -> None:
    gap = dt.timedelta(seconds=PRIORITY_WEIGHTS[Priority.EMERGENCY] - PRIORITY_WEIGHTS[
        Priority.URGENT])
    assert work_order_score(Priority.EMERGENCY, T0) == work_order_score(Priority.URGENT, T0 + gap)
