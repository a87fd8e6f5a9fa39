"""Tenant labels stay bounded: the top N by traffic and ``other``, whatever the number
of tenants (:class:`thorbis_cache.observability.TopTenants`)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thorbis_cache.observability import OTHER, TopTenants

N = 20


def test_100k_tenants_give_at_most_n_plus_one_labels_and_keep_the_hot_one() -> None:
    tracker = TopTenants(N)
    rng = random.Random(7)
    calls = 0
    for i in range(100_000):
        tracker.add(f"t{i:06d}")  # every tenant distinct
        calls += 1
        if rng.random() < 0.2:  # one tenant makes about a sixth of the traffic
            tracker.add("hot")
            calls += 1
        if i % 10_000 == 9_999:  # a scrape
            tracker.rebalance()
            assert len(tracker.counts()) <= N + 1
    tracker.rebalance()
    counts = tracker.counts()
    assert len(counts) <= N + 1
    assert "hot" in counts
    # Uniform traffic over the others earns none of them a label.
    assert set(counts) == {"hot", OTHER}
    # Every call is counted exactly once, under a label or other.
    assert sum(counts.values()) == calls
    # O(1) amortized: the summary's decrements never exceed the calls.
    assert tracker.work <= calls


def test_zipf_traffic_labels_the_heaviest_tenants() -> None:
    tracker = TopTenants(5)
    rng = random.Random(3)
    tenants = [f"t{i}" for i in range(10_000)]
    weights = [1 / (rank + 1) for rank in range(len(tenants))]
    for _ in range(5):
        for tenant in rng.choices(tenants, weights, k=20_000):
            tracker.add(tenant)
        tracker.rebalance()
    labels = set(tracker.counts()) - {OTHER}
    assert {"t0", "t1", "t2"} <= labels
    assert len(labels) <= 5


def test_a_label_moves_to_other_when_its_tenant_cools_down() -> None:
    tracker = TopTenants(1, capacity=4)
    for _ in range(100):
        tracker.add("a")
    tracker.rebalance()
    for _ in range(10):
        tracker.add("a")
    assert tracker.counts() == {"a": 10, OTHER: 100}
    for _ in range(1000):
        tracker.add("b")
    tracker.rebalance()
    tracker.rebalance()
    assert tracker.counts() == {"b": 0, OTHER: 1110}


@pytest.mark.parametrize(("n", "capacity", "share"), [(0, None, 0.0), (5, 4, 0.0), (5, None, 1.0)])
def test_bad_bounds_are_refused_naming_them(n: int, capacity: int | None, share: float) -> None:
    with pytest.raises(ValueError, match=f"got n={n}"):
        TopTenants(n, capacity, share)


@settings(max_examples=60, deadline=None)
@given(stream=st.lists(st.integers(min_value=0, max_value=500), max_size=3000),
       n=st.integers(min_value=1, max_value=8),
       scrape_every=st.integers(min_value=1, max_value=400))
def test_labels_bounded_counts_exact_work_amortized(stream: list[int], n: int,
                                                   scrape_every: int) -> None:
    tracker = TopTenants(n)
    for i, tenant in enumerate(stream):
        tracker.add(str(tenant))
        if i % scrape_every == 0:
            tracker.rebalance()
            assert len(tracker.counts()) <= n + 1
    tracker.rebalance()
    assert len(tracker.counts()) <= n + 1
    assert sum(tracker.counts().values()) == len(stream)
    assert tracker.work <= len(stream)
    # The heavy-hitter guarantee: a tenant above 1 / (capacity + 1) of the stream is in
    # the summary (so a scrape right after can label it).
    if stream:
        top, freq = max(((t, stream.count(t)) for t in set(stream)), key=lambda x: x[1])
        fresh = TopTenants(n)
        for tenant in stream:
            fresh.add(str(tenant))
        if freq * (fresh.capacity + 1) > len(stream):
            assert str(top) in fresh._summary
