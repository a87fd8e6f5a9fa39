"""Seasonal labor adjustment: the seed's ``calculateSeasonalAdjustments``, as a formula.

From the completed repair orders of one service type (the ``auto.labor_monthly`` view:
jobs and labor hours per calendar month over the last three years)::

    n_m, H_m   jobs and total labor hours completed in calendar month m (1..12)
    mu         = (H_1 + ... + H_12) / (n_1 + ... + n_12)   mean hours per job, all year
    r_m        = (H_m / n_m) / mu                          the month's raw ratio
    factor_m   = (n_m * r_m + k * 1) / (n_m + k)           shrunk toward 1
               = (H_m / mu + k) / (n_m + k)
    k          = PRIOR_JOBS = 10 (the weight of the prior "no seasonality", in jobs)

    estimated hours in month m = standard hours of the service type * factor_m
    estimated labor amount     = estimated hours * the type's labor rate (to the cent)

The shrinkage is the posterior mean of a ratio whose prior is 1 with the weight of k
jobs: a month with 2 jobs barely moves its factor, one with 200 is trusted. A month
without jobs, and a type without history (or with zero hours), has factor 1.

Properties (tested): every factor lies between 1 and the raw ratio; factors do not
change when every job's hours are scaled by the same amount; equal monthly means give
factor 1 everywhere; more jobs at the same ratio move the factor toward the ratio.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping

__all__ = ["PRIOR_JOBS", "estimated_amount", "seasonal_factors"]

#: Pseudo-jobs at factor 1 that every month's evidence is weighed against.
PRIOR_JOBS = 10.0

_CENT = decimal.Decimal("0.01")


def seasonal_factors(
    monthly: Mapping[int, tuple[int, float]], prior_jobs: float = PRIOR_JOBS
) -> list[float]:
    """The twelve factors, January first.

    :param monthly: calendar month (1-12) -> ``(jobs, total labor hours)``; absent
        months had no jobs.
    :param prior_jobs: ``k``, the shrinkage weight (> 0).
    :raises ValueError: a month outside 1-12, negative jobs or hours, hours without
        jobs, or ``prior_jobs`` <= 0.
    """
    if prior_jobs <= 0:
        raise ValueError(f"prior_jobs must be > 0, got {prior_jobs}")
    for month, (jobs, hours) in monthly.items():
        if not 1 <= month <= 12:
            raise ValueError(f"month must be 1-12, got {month}")
        if jobs < 0 or hours < 0 or (jobs == 0 and hours > 0):
            raise ValueError(f"month {month}: {jobs} jobs and {hours} hours")
    total_jobs = sum(jobs for jobs, _ in monthly.values())
    total_hours = sum(hours for _, hours in monthly.values())
    if total_jobs == 0 or total_hours <= 0:
        return [1.0] * 12
    mean = total_hours / total_jobs
    out = []
    for month in range(1, 13):
        jobs, hours = monthly.get(month, (0, 0.0))
        out.append((hours / mean + prior_jobs) / (jobs + prior_jobs))
    return out


def estimated_amount(hours: float, rate: decimal.Decimal) -> decimal.Decimal:
    """``hours * rate`` rounded half-even to the cent."""
    value = decimal.Decimal(repr(hours)) * rate
    return value.quantize(_CENT, rounding=decimal.ROUND_HALF_EVEN)
