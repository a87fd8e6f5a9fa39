"""Hypothesis strategies for thorbis-cache: tenant ids, hostile strings, key parameters,
and values of a schema's type. Our own property tests use these, and so can plugin
authors (``from thorbis_cache.testing import strategies``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import uuid
from typing import Any

import attrs
from hypothesis import strategies as st

from thorbis_cache.cache.codec import check_value
from thorbis_cache.cache.keys import KeySchema, Param

__all__ = [
    "hostile_text",
    "param_value",
    "params_for",
    "tenant_ids",
    "values_of",
]

_TENANT_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_TENANT_REST = _TENANT_FIRST + "_-"


def tenant_ids() -> st.SearchStrategy[str]:
    """Valid tenant ids (the rule of :func:`thorbis_cache.cache.keys.validate_tenant`)."""
    return st.builds(
        lambda first, rest: first + rest,
        st.sampled_from(_TENANT_FIRST),
        st.text(alphabet=_TENANT_REST, max_size=63),
    )


def hostile_text(max_size: int = 64) -> st.SearchStrategy[str]:
    """Strings built to break key formats: separators, braces, glob metacharacters,
    percent signs, whitespace, unicode (incl. surrogate-free astral), empty, long."""
    specials = st.sampled_from(
        [":", "*", "?", "[", "]", "\\", "{", "}", "%", "%25", " ", "\t", "\n", "~", "é",
         "雪", "😀", "\u200b", "}{", "{acme}", "tc:{", ":*", ""]
    )
    pieces = st.lists(st.one_of(specials, st.text(max_size=8)), max_size=max_size // 4 or 1)
    return st.one_of(
        pieces.map("".join),
        st.text(max_size=max_size),
        st.just(""),
        st.just("x" * 10_240),  # 10 kB: long values must stay injective too
    )


def param_value(param: Param) -> st.SearchStrategy[Any]:
    """Values for one key parameter, including the awkward ones; only those its
    validator accepts. A selective validator (few random values pass) gives itself a
    ``hypothesis_strategy()`` method returning acceptable values, which is used instead."""
    if param.validator is None:
        return _typed_value(param)
    custom = getattr(param.validator, "hypothesis_strategy", None)
    strategy = custom() if callable(custom) else _typed_value(param)
    return strategy.filter(lambda v: _accepted(param, v))


def _accepted(param: Param, value: Any) -> bool:
    try:
        return param.validator is None or param.validator(value) is None
    except Exception:  # a refusal raised
        return False


def _typed_value(param: Param) -> st.SearchStrategy[Any]:
    tp = param.type
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if tp is str:
        return hostile_text()
    if tp is uuid.UUID:
        return st.uuids()
    if tp is dt.date:
        return st.dates()
    raise TypeError(f"no strategy for parameter type {tp!r}")


def params_for(schema: KeySchema[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword parameters for ``schema.key(tenant, **params)``."""
    return st.fixed_dictionaries({p.name: param_value(p) for p in schema.params})


def values_of(schema: KeySchema[Any]) -> st.SearchStrategy[Any]:
    """Values of the schema's value type (attrs classes are built from their field
    types; hypothesis resolves containers, dates, UUIDs, enums...)."""
    tp = schema.value_type
    # Only values the cache accepts (check_value: e.g. ints that fit in 64 bits).
    return _finite(st.from_type(tp)).filter(lambda v: check_value(v, tp) is None)


def _finite(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # NaN never equals itself (and a signalling Decimal NaN refuses to be compared),
    # so a round-trip check could not compare such values.
    return strategy.filter(_equals_itself)


def _equals_itself(value: Any) -> bool:
    """False for values holding a NaN anywhere (containers compare items by identity
    first, so ``[nan] == [nan]`` holds, yet a decoded copy would not be equal)."""
    if isinstance(value, float):
        return not math.isnan(value)
    if isinstance(value, decimal.Decimal):
        return not value.is_nan()
    if isinstance(value, dict):
        return all(_equals_itself(k) and _equals_itself(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return all(_equals_itself(v) for v in value)
    if attrs.has(type(value)):
        return all(_equals_itself(getattr(value, f.name)) for f in attrs.fields(type(value)))
    return True
