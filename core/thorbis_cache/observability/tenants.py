"""Tenants as metric labels, bounded: the top N by traffic keep their own label, every
other tenant is counted under ``other``.

Ten thousand tenants as a label would be ten thousand series per metric, and one new
tenant a new series. :class:`TopTenants` keeps two small structures:

* a heavy-hitters summary (Misra-Gries, ``capacity`` counters): a tenant with more than
  ``1 / (capacity + 1)`` of the traffic is always in it. When a tenant that is not in a
  full summary arrives, every counter drops by one and the zeros leave. That step
  costs ``capacity``, but it removes ``capacity + 1`` units of count, each added by an
  earlier call, so the cost per call is O(1) amortized (:attr:`TopTenants.work` counts
  the decrements, so a test can check the bound without a clock);
* the labelled tenants (at most ``n``) and their operation counts, plus ``other``.

Labels change only at :meth:`TopTenants.rebalance` (a scrape), never per operation: the
``n`` summary tenants with the highest counts that also carried at least ``min_share``
of the traffic since the last rebalance get labels (ties go to tenants that already had
one, so labels do not flap), and the summary's counts are then halved, so it follows
recent traffic. A tenant that loses its label stops being exported (its series ends)
and its count moves to ``other``, so the sum over the label values is every operation
counted and never decreases; one that gets a label starts counting from zero.
"""

from __future__ import annotations

__all__ = ["OTHER", "TopTenants"]

#: The label value of every tenant outside the top N.
OTHER = "other"


class TopTenants:
    """A bounded top-N tenant tracker for metric labels (see the module docstring).

    :param n: most tenants with a label of their own (the label values are at most
        ``n + 1`` with :data:`OTHER`).
    :param capacity: counters of the heavy-hitters summary; ``16 * n`` by default (a
        tenant above ``1 / (capacity + 1)`` of the traffic is always in it).
    :param min_share: least share of the operations since the last rebalance a tenant
        needs to get a label (so uniform traffic over many tenants labels nobody).
    :raises ValueError: ``n`` < 1, ``capacity`` < ``n`` or ``min_share`` outside [0, 1).
    """

    __slots__ = ("_labelled", "_seen", "_summary", "capacity", "min_share", "n", "other",
                 "work")

    def __init__(self, n: int = 20, capacity: int | None = None,
                 min_share: float = 0.005) -> None:
        capacity = 16 * n if capacity is None else capacity
        if n < 1 or capacity < n or not 0.0 <= min_share < 1.0:
            raise ValueError(f"TopTenants needs n >= 1, capacity >= n and 0 <= min_share < 1;"
                             f" got n={n}, capacity={capacity}, min_share={min_share}")
        self.n = n
        self.capacity = capacity
        self.min_share = min_share
        self._summary: dict[str, int] = {}
        self._labelled: dict[str, int] = {}
        #: operations of tenants without a label of their own
        self.other = 0
        #: counter decrements done by the summary so far (at most the calls to add)
        self.work = 0
        self._seen = 0  # operations counted at the last rebalance

    def add(self, tenant: str) -> None:
        """Count one operation of ``tenant`` (O(1) amortized, no allocation when the
        tenant is known)."""
        summary = self._summary
        count = summary.get(tenant)
        if count is not None:
            summary[tenant] = count + 1
        elif len(summary) < self.capacity:
            summary[tenant] = 1
        else:
            self.work += len(summary)
            self._summary = {t: c - 1 for t, c in summary.items() if c > 1}
        labelled = self._labelled
        if tenant in labelled:
            labelled[tenant] += 1
        else:
            self.other += 1

    @property
    def total(self) -> int:
        """Operations counted under the current labels and ``other``."""
        return self.other + sum(self._labelled.values())

    def counts(self) -> dict[str, int]:
        """Operation counts by label value: the labelled tenants and :data:`OTHER`."""
        return {**self._labelled, OTHER: self.other}

    def rebalance(self) -> None:
        """Give labels to the current top tenants (see the module docstring); called
        at scrape time, O(``capacity`` log ``capacity``)."""
        total = self.total
        since = total - self._seen
        self._seen = total
        floor = max(1, self.min_share * since)
        held = self._labelled
        ranked = sorted(((c, t in held, t) for t, c in self._summary.items() if c >= floor),
                        reverse=True)[: self.n]
        chosen = {t for _, _, t in ranked}
        self._labelled = {t: held.get(t, 0) for t in chosen}
        # Moved to other so that the sum over the label values never decreases.
        self.other += sum(c for t, c in held.items() if t not in chosen)
        self._seen = self.total
        self._summary = {t: c // 2 for t, c in self._summary.items() if c > 1}
