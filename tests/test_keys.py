"""Key schemas: validation, escaping, injectivity, parse-back and slot isolation."""

from __future__ import annotations

import datetime as dt
import enum
import fnmatch
import uuid
from typing import Any

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from redis.crc import key_slot

from thorbis_cache import KeySchema, Param, SchemaKind, SchemaRegistry, validate_tenant
from thorbis_cache.errors import (
    DuplicateSchemaError,
    InvalidKeyError,
    InvalidParameterError,
    InvalidSchemaError,
    InvalidTenantId,
    UnknownSchemaError,
)
from thorbis_cache.keys import escape_segment, unescape_segment
from thorbis_cache.testing.strategies import hostile_text, params_for, tenant_ids

PREFIX = "tc"


class Status(enum.Enum):
    OPEN = "open"
    DONE = "done:ok"  # a value with a separator in it


@attrs.frozen
class Note:
    text: str


SCHEMAS: list[KeySchema[Any]] = [
    KeySchema("hs.customer", Note, params={"customer_id": int}),
    KeySchema("hs.customer_summary", Note, params={"customer_id": int}),
    KeySchema("hs.customers", Note, params={"filter": str}),
    KeySchema("hs.wo", Note, params={"status": Status, "tech": str, "day": dt.date}),
    KeySchema("hs.note", Note, params={"a": str, "b": str}),
    KeySchema("hs.settings", Note),
    KeySchema("auto.vehicle", Note, params={"vin": str, "id": uuid.UUID, "active": bool}),
]
REGISTRY = SchemaRegistry()
for _s in SCHEMAS:
    REGISTRY.register(_s)

keys_st = st.sampled_from(SCHEMAS).flatmap(
    lambda s: st.tuples(st.just(s), tenant_ids(), params_for(s))
)


# --------------------------------------------------------------------------- tenants


@pytest.mark.parametrize(
    "tenant",
    ["", "Acme", "a b", "a:b", "{acme}", "a}", "_acme", "-acme", "a*", "é", "x" * 65, "a\n", 7],
)
def test_invalid_tenant_names_value_and_rule(tenant: object) -> None:
    with pytest.raises(InvalidTenantId) as info:
        validate_tenant(tenant)
    assert repr(tenant) in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidTenantId):
        SCHEMAS[0].key(tenant, customer_id=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("tenant", ["a", "acme", "acme-2", "t_1", "0abc", "a" * 64])
def test_valid_tenants(tenant: str) -> None:
    assert validate_tenant(tenant) == tenant


# --------------------------------------------------------------------------- parameters


def test_key_format_is_documented_shape() -> None:
    key = SCHEMAS[3].key("acme", status=Status.DONE, tech="J. Doe", day=dt.date(2024, 5, 1))
    assert key.redis_key(PREFIX) == "tc:{acme}:hs.wo:done%3Aok:J.%20Doe:2024-05-01"
    assert SCHEMAS[5].key("acme").redis_key(PREFIX) == "tc:{acme}:hs.settings"


def test_missing_extra_and_mistyped_parameters_are_named() -> None:
    schema = SCHEMAS[0]
    with pytest.raises(InvalidParameterError, match="'customer_id': missing"):
        schema.key("acme")
    with pytest.raises(InvalidParameterError, match="'other': unexpected"):
        schema.key("acme", customer_id=1, other=2)
    with pytest.raises(InvalidParameterError, match="expected int, got str"):
        schema.key("acme", customer_id="1")
    with pytest.raises(InvalidParameterError, match="expected int, got bool"):
        schema.key("acme", customer_id=True)
    with pytest.raises(InvalidParameterError, match="expected date, got datetime"):
        SCHEMAS[3].key("acme", status=Status.OPEN, tech="x", day=dt.datetime(2024, 1, 1))
    with pytest.raises(InvalidParameterError) as err:
        schema.key("acme", customer_id=1.5)
    assert "hs.customer" in str(err.value)


def test_max_length() -> None:
    schema = KeySchema("hs.search", Note, params={"q": Param("q", str, max_length=16)})
    schema.key("acme", q="short")
    with pytest.raises(InvalidParameterError, match="max_length"):
        schema.key("acme", q="x" * 17)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": "customer"}, "namespace"),
        ({"name": "HS.customer"}, "namespace"),
        ({"name": "hs.cust:omer"}, "namespace"),
        ({"name": "hs.c", "ttl": 0}, "ttl"),
        ({"name": "hs.c", "ttl_jitter": 0.9}, "ttl_jitter"),
        ({"name": "hs.c", "version": 70000}, "version"),
        ({"name": "hs.c", "params": {"a": float}}, "parameter 'a'"),
        ({"name": "hs.c", "params": {"A": int}}, "identifier"),
        ({"name": "hs.c", "tags": ["bad tag"]}, "tag"),
        ({"name": "hs.c", "kind": SchemaKind.ZSET}, "member type"),
        ({"name": "hs.c", "kind": SchemaKind.HASH, "value_type": int}, "attrs class"),
        ({"name": "hs.c", "kind": SchemaKind.GEO, "value_type": int, "sensitive": True},
         "sensitive"),
    ],
)
def test_invalid_schemas_are_refused_with_the_schema_named(
    kwargs: dict[str, Any], problem: str
) -> None:
    kwargs.setdefault("value_type", Note)
    with pytest.raises(InvalidSchemaError, match=problem) as info:
        KeySchema(**kwargs)
    assert kwargs["name"] in str(info.value)


def test_registry_duplicates_and_unknowns() -> None:
    reg = SchemaRegistry()
    reg.register(SCHEMAS[0], owner="plugin home_services")
    reg.register(SCHEMAS[0], owner="plugin home_services")  # same object: no-op
    clash = KeySchema("hs.customer", Note, params={"customer_id": int})
    with pytest.raises(DuplicateSchemaError) as info:
        reg.register(clash, owner="plugin copycat")
    assert "home_services" in str(info.value)
    assert "copycat" in str(info.value)
    with pytest.raises(UnknownSchemaError, match=r"hs\.nope"):
        reg.get("hs.nope")


@pytest.mark.parametrize(
    "bad",
    [
        "tc:{acme}:hs.customer:01",  # non-canonical int
        "tc:{acme}:hs.customer: 1",
        "tc:{acme}:hs.customer:1:2",  # extra segment
        "tc:{acme}:hs.customer",  # missing segment
        "tc:{Acme}:hs.customer:1",  # invalid tenant
        "tc:{acme}:hs.unknown:1",
        "xx:{acme}:hs.customer:1",
        "tc:{acme}:hs.customers:%41",  # 'A' escaped: non-canonical
        "tc:{acme}:hs.customers:a b",  # unescaped space
        "tc:{acme}:hs.customers:%ZZ",
        "tc:{acme}hs.customer:1",
        "tc:{acme:hs.customer:1",
    ],
)
def test_parse_rejects_anything_not_built_by_a_schema(bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        REGISTRY.parse(PREFIX, bad)


# --------------------------------------------------------------------------- properties


@given(hostile_text())
def test_escape_round_trips_and_stays_in_the_safe_alphabet(text: str) -> None:
    segment = escape_segment(text)
    assert unescape_segment(segment) == text
    assert set(segment) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-%"
    )


@given(keys_st)
def test_key_parses_back_to_the_same_schema_tenant_and_params(
    case: tuple[KeySchema[Any], str, dict[str, Any]],
) -> None:
    schema, tenant, params = case
    key = schema.key(tenant, **params)
    parsed = REGISTRY.parse(PREFIX, key.redis_key(PREFIX))
    assert parsed.schema is schema
    assert parsed.tenant == tenant
    assert parsed.params == params


@given(keys_st, keys_st)
def test_mapping_is_injective(
    a: tuple[KeySchema[Any], str, dict[str, Any]], b: tuple[KeySchema[Any], str, dict[str, Any]]
) -> None:
    ka = a[0].key(a[1], **a[2]).redis_key(PREFIX)
    kb = b[0].key(b[1], **b[2]).redis_key(PREFIX)
    if (a[0].name, a[1], a[2]) != (b[0].name, b[1], b[2]):
        assert ka != kb
    else:
        assert ka == kb


@given(keys_st, keys_st)
def test_all_keys_of_a_tenant_share_one_slot(
    a: tuple[KeySchema[Any], str, dict[str, Any]], b: tuple[KeySchema[Any], str, dict[str, Any]]
) -> None:
    ka = a[0].key(a[1], **a[2]).redis_key(PREFIX)
    kb = b[0].key(a[1], **b[2]).redis_key(PREFIX)  # same tenant as a
    assert key_slot(ka.encode()) == key_slot(kb.encode()) == key_slot(f"{{{a[1]}}}".encode())


@given(keys_st, tenant_ids())
def test_no_key_of_tenant_a_parses_as_tenant_b(
    case: tuple[KeySchema[Any], str, dict[str, Any]], other: str
) -> None:
    schema, tenant, params = case
    assume(other != tenant)
    redis_key = schema.key(tenant, **params).redis_key(PREFIX)
    assert REGISTRY.parse(PREFIX, redis_key).tenant == tenant
    assert not redis_key.startswith(f"{PREFIX}:{{{other}}}:")
    assert not fnmatch.fnmatchcase(redis_key, f"{PREFIX}:{{{other}}}:*")


@given(
    st.sampled_from(SCHEMAS[:5]).flatmap(
        lambda s: st.tuples(st.just(s), tenant_ids(), params_for(s))
    ),
    keys_st,
)
def test_glob_matches_exactly_the_intended_keys(
    case: tuple[KeySchema[Any], str, dict[str, Any]],
    other: tuple[KeySchema[Any], str, dict[str, Any]],
) -> None:
    schema, tenant, wanted = case
    first = schema.params[0].name
    pattern = schema.glob(PREFIX, tenant, **{first: wanted[first]})
    # The same schema and tenant with random params, and a random key of any schema.
    same = schema.key(tenant, **{**other[2], first: wanted[first]} if other[0] is schema
                      else wanted).redis_key(PREFIX)
    assert fnmatch.fnmatchcase(same, pattern)
    candidate = other[0].key(other[1], **other[2]).redis_key(PREFIX)
    expected = other[0] is schema and other[1] == tenant and other[2][first] == wanted[first]
    # Redis glob and fnmatch agree here: our segments contain no glob metacharacters.
    assert fnmatch.fnmatchcase(candidate, pattern) == expected
