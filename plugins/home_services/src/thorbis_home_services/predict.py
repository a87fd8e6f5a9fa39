"""The seed's "predicted next service", as a plain formula over the service history.

The seed called an unspecified model (``predictNextService``). No model exists, so the
prediction is this deterministic rule, which holds for the recurring maintenance that
drives repeat home-service visits (HVAC tune-ups, pest control, filters):

    given the completion times t1 <= t2 <= ... <= tn of a customer's services (n >= 2),
    intervals d_i = t_(i+1) - t_i, and m = the median of the d_i (for an even count, the
    mean of the two middle intervals, rounded down to the microsecond),

    next service = tn + m

With fewer than two services there is no interval and no prediction (None).

Why the median: one emergency call between two yearly visits adds a short interval and
one skipped year a long one; the median ignores both as long as they are a minority,
where the mean would shift. Properties (tested with hypothesis):

* never before the last service (intervals are >= 0, so m >= 0);
* monotone in the last service: moving the last completion later never moves the
  prediction earlier (it lengthens the last interval, and the median is monotone);
* independent of the order the completions are given in;
* shifting every completion by the same amount shifts the prediction by it.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable

import attrs

__all__ = ["NextService", "predict_next_service"]

_US = dt.timedelta(microseconds=1)


@attrs.frozen(slots=True)
class NextService:
    """A predicted next service.

    :ivar due_at: the predicted time (last service + typical interval).
    :ivar interval: the typical interval (median of the intervals between services).
    :ivar last_service_at: the most recent completion.
    :ivar services: how many completions the prediction is based on.
    """

    due_at: dt.datetime
    interval: dt.timedelta
    last_service_at: dt.datetime
    services: int


def predict_next_service(completions: Iterable[dt.datetime]) -> NextService | None:
    """Predict a customer's next service from the completion times of past services.

    :param completions: completion times, in any order; all aware or all naive (mixing
        them cannot be ordered).
    :returns: the prediction, or None with fewer than two completions.
    :raises TypeError: aware and naive datetimes are mixed.
    """
    times = sorted(completions)
    if len(times) < 2:
        return None
    # Whole microseconds as ints: the median of an even count is then an exact floor
    # division, so the result is reproducible to the microsecond on every platform.
    gaps = sorted((b - a) // _US for a, b in itertools.pairwise(times))
    mid = len(gaps) // 2
    median_us = gaps[mid] if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) // 2
    interval = dt.timedelta(microseconds=median_us)
    last = times[-1]
    return NextService(due_at=last + interval, interval=interval, last_service_at=last,
                       services=len(times))
