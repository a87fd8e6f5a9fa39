"""The next-service formula: last completion + median interval between completions."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thorbis_home_services.predict import NextService, predict_next_service

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

moments = st.datetimes(
    min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2060, 1, 1), timezones=st.just(dt.UTC)
)
histories = st.lists(moments, min_size=2, max_size=30)
shifts = st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=3650))


def test_fewer_than_two_services_predict_nothing() -> None:
    assert predict_next_service([]) is None
    assert predict_next_service([T0]) is None


def test_a_regular_customer() -> None:
    visits = [T0 + 90 * i * DAY for i in range(4)]
    assert predict_next_service(reversed(visits)) == NextService(
        due_at=T0 + 360 * DAY, interval=90 * DAY, last_service_at=T0 + 270 * DAY, services=4)


def test_the_median_ignores_one_emergency_call() -> None:
    # Yearly visits with one emergency call 10 days after the second.
    visits = [T0, T0 + 365 * DAY, T0 + 375 * DAY, T0 + 730 * DAY, T0 + 1095 * DAY]
    got = predict_next_service(visits)
    assert got is not None
    # Intervals 365, 10, 355, 365: median (355 + 365) / 2 = 360 days.
    assert got.interval == 360 * DAY
    assert got.due_at == T0 + 1455 * DAY


def test_an_even_count_takes_the_floor_of_the_middle_mean() -> None:
    got = predict_next_service([T0, T0 + dt.timedelta(microseconds=1), T0 + dt.timedelta(
        microseconds=3)])
    assert got is not None
    assert got.interval == dt.timedelta(microseconds=1)


def test_aware_and_naive_times_cannot_be_mixed() -> None:
    with pytest.raises(TypeError):
        predict_next_service([T0, dt.datetime(2024, 2, 1)])


@given(histories)
def test_never_before_the_last_service(history: list[dt.datetime]) -> None:
    got = predict_next_service(history)
    assert got is not None
    assert got.last_service_at == max(history)
    assert got.due_at >= max(history)
    assert got.services == len(history)


@given(histories, shifts)
def test_monotone_in_the_last_service(history: list[dt.datetime], shift: dt.timedelta) -> None:
    history = sorted(history)
    later = [*history[:-1], history[-1] + shift]
    before, after = predict_next_service(history), predict_next_service(later)
    assert before is not None
    assert after is not None
    assert after.due_at >= before.due_at


@given(histories, st.randoms(use_true_random=False))
def test_independent_of_input_order(history: list[dt.datetime], rnd: random.Random) -> None:
    shuffled = list(history)
    rnd.shuffle(shuffled)
    assert predict_next_service(shuffled) == predict_next_service(history)


@given(histories, shifts)
def test_shifting_every_service_shifts_the_prediction(
    history: list[dt.datetime], shift: dt.timedelta
) -> None:
    before = predict_next_service(history)
    after = predict_next_service(t + shift for t in history)
    assert before is not None
    assert after is not None
    assert after.due_at == before.due_at + shift
    assert after.interval == before.interval
