"""The arguments of a sorted set's or geo index's reads, checked before anything is
sent (a host's bad argument is an :class:`~thorbis_cache.errors.InvalidParameterError`
naming the schema and the parameter, never a backend error it would take for Redis
failing), and a score range answered as Redis answers it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TypeVar

from thorbis_cache.errors import InvalidParameterError

__all__ = ["check_bound", "check_coordinate", "check_count", "score_range"]

T = TypeVar("T")


def check_count(schema: str, name: str, value: object, *, least: int | None) -> None:
    """A count or offset of a structure's read: an int (not a bool), at least ``least``
    (None: any, a negative count meaning "every one" as Redis reads it).

    :raises InvalidParameterError: naming the schema and the parameter (Redis would
        refuse it as a backend error, or Python compare it as a bare TypeError).
    """
    if isinstance(value, bool) or not isinstance(value, int) \
            or (least is not None and value < least):
        want = "an int" if least is None else f"an int of at least {least}"
        raise InvalidParameterError(schema, name, f"{value!r} is not {want}")


def check_bound(schema: str, name: str, bound: object) -> None:
    """A score bound of ``range_by_score``: a number, ``"-inf"``/``"+inf"``, or a
    number's text, ``"("`` first for an exclusive one.

    :raises InvalidParameterError: naming the schema and the bound.
    """
    try:
        if isinstance(bound, bool) or not isinstance(bound, int | float | str):
            raise ValueError
        value, _ = _score_bound(bound)
        if math.isnan(value):
            raise ValueError
    except (ValueError, OverflowError):
        raise InvalidParameterError(schema, name, f"{bound!r} is not a score bound (a "
                                    "number, '-inf', '+inf' or '(' and a number for an "
                                    "exclusive one)") from None


def check_coordinate(schema: str, name: str, value: object, limit: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not -limit <= value <= limit:
        raise InvalidParameterError(schema, name, f"{value!r} is not a {name} in "
                                    f"[-{limit:g}, {limit:g}]")


def _score_bound(bound: float | str) -> tuple[float, bool]:
    """A ZRANGE BYSCORE bound as ``(value, exclusive)``."""
    if isinstance(bound, str):
        text = bound.strip()
        if text.startswith("("):
            return float(text[1:]), True
        return float(text), False
    return float(bound), False


def score_range(
    members: Mapping[T, float],
    encode: Callable[[T], str],
    low: float | str,
    high: float | str,
    desc: bool,
    offset: int,
    count: int | None,
) -> list[tuple[T, float]]:
    """What ``ZRANGE BYSCORE [REV] [LIMIT]`` answers on a set holding ``members``: ties
    ordered by the encoded member's bytes, as Redis orders them."""
    lo, lo_open = _score_bound(low)
    hi, hi_open = _score_bound(high)
    kept = [
        (m, float(s)) for m, s in members.items()
        if (s > lo if lo_open else s >= lo) and (s < hi if hi_open else s <= hi)
    ]
    kept.sort(key=lambda ms: (ms[1], encode(ms[0]).encode()), reverse=desc)
    if count is None:
        return kept[offset:] if offset else kept
    if count < 0:
        return kept[offset:]
    return kept[offset:offset + count]
