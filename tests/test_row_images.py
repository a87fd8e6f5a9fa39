"""Logical capture builds a rule's row image in Python from the WAL's text values
(``thorbis_cache.postgres.row_images``); the trigger path builds it with PostgreSQL's
``jsonb_build_object``. A rule must see the same values whichever path captured the
change: every converter is checked against PostgreSQL's own JSON, with hypothesis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thorbis_cache.postgres.row_images import SUPPORTED, Unsupported, json_value

_JSON_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                     max_size=8)  # jsonb refuses \u0000
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | _JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_JSON_TEXT, inner,
                                                               max_size=4),
    max_leaves=12,
)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                max_size=30)

#: SQL type -> (its oid, values of it).
TYPES: dict[str, tuple[int, st.SearchStrategy[Any]]] = {
    "boolean": (16, st.booleans()),
    "smallint": (21, st.integers(-(2**15), 2**15 - 1)),
    "integer": (23, st.integers(-(2**31), 2**31 - 1)),
    "bigint": (20, st.integers(-(2**63), 2**63 - 1)),
    "oid": (26, st.integers(0, 2**32 - 1)),
    "numeric": (1700, st.decimals(allow_nan=True, allow_infinity=True, places=None)
                .filter(lambda d: not d.is_snan() and not (d.is_nan() and d.is_signed()))),
    "real": (700, st.floats(width=32)),
    "double precision": (701, st.floats()),
    "text": (25, _TEXT),
    "varchar": (1043, _TEXT),
    "char(5)": (1042, st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF,
                                             blacklist_categories=("Cs",)), max_size=5)),
    "uuid": (2950, st.uuids()),
    "json": (114, _JSON.map(json.dumps)),
    "jsonb": (3802, _JSON.map(json.dumps)),
    "date": (1082, st.dates()),
    "timestamp": (1114, st.datetimes()),
    "timestamptz": (1184, st.datetimes(timezones=st.timezones())),
}


@pytest.fixture
def conn(thorbis_pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    # The session settings of the replication stream (replication.py).
    with psycopg.connect(thorbis_pg_dsn, autocommit=True,
                         options="-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=1"
                         ) as connection:
        yield connection


def _postgres(conn: psycopg.Connection[Any], sql_type: str, value: Any) -> tuple[int, str, Any]:
    # format() writes a value with its type's output function, as pgoutput does (a
    # cast to text would trim a char(n)'s padding).
    sql = (f"SELECT pg_typeof(v)::oid::int, format('%%s', v), "  # noqa: S608 -- one of TYPES
           f"jsonb_build_object('v', v)::text FROM (SELECT %s::{sql_type} AS v) s")
    row = conn.execute(sql, (value,)).fetchone()
    assert row is not None
    return row[0], row[1], json.loads(row[2])["v"]


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON type (3 and 3.0 differ for a rule's int parameter)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("sql_type", list(TYPES))
def test_python_images_match_jsonb_build_object(conn: psycopg.Connection[Any],
                                                sql_type: str) -> None:
    oid, values = TYPES[sql_type]
    assert oid in SUPPORTED

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=values)
    def check(value: Any) -> None:
        typed_oid, text, expected = _postgres(conn, sql_type, value)
        assert typed_oid == oid
        try:
            got = json_value(oid, text)
        except Unsupported:
            return  # PostgreSQL builds this one: exact by construction
        assert _same(got, expected), (sql_type, text, got, expected)

    check()


def test_types_and_values_without_a_python_form_go_to_postgres(
        conn: psycopg.Connection[Any]) -> None:
    interval_oid, text, _ = _postgres(conn, "interval", "1 day")
    with pytest.raises(Unsupported):
        json_value(interval_oid, text)
    _, bc, _ = _postgres(conn, "date", "0044-03-15 BC")
    with pytest.raises(Unsupported):
        json_value(1082, bc)
    assert json_value(25, None) is None
    assert json_value(16, "t") is True
