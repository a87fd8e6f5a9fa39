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
from thorbis_cache.cache.keys import escape_segment, unescape_segment
from thorbis_cache.errors import (
    DuplicateSchemaError,
    InvalidKeyError,
    InvalidParameterError,
    InvalidSchemaError,
    InvalidTenantId,
    UnknownSchemaError,
)
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


# --------------------------------------------------------------------------- strict inputs


class EvilStr(str):
    """A str whose methods lie: a key built from it must show what was checked."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        return "acme}:hs.x:{globex"

    def __str__(self) -> str:
        return "1:2"

    def __iter__(self) -> Any:
        return iter("safe")

    def __hash__(self) -> int:
        return hash("acme")

    def __eq__(self, other: object) -> bool:
        return True


class EvilInt(int):
    def __str__(self) -> str:
        return "1:{globex}"

    __repr__ = __str__


class EvilDate(dt.date):
    def isoformat(self) -> str:
        return "2024-01-01:x"


class CodeCheck:
    """A selective validator: it names its own values for generated keys."""

    def __call__(self, value: str) -> str | None:
        return None if value.isascii() and value.isalnum() else "letters and digits"

    def hypothesis_strategy(self) -> st.SearchStrategy[str]:
        return st.text(alphabet="ab12", min_size=1, max_size=8)


ALL_TYPES: KeySchema[Any] = KeySchema(
    "hs.every", Note,
    params={"s": str, "n": int, "b": bool, "u": uuid.UUID, "d": dt.date, "e": Status,
            "code": str},
    validators={"code": CodeCheck()},
)
GOOD = {"s": "x", "n": 1, "b": True, "u": uuid.UUID(int=1), "d": dt.date(2024, 1, 1),
        "e": Status.OPEN, "code": "ab12"}


@pytest.mark.parametrize("tenant", [["acme"], {"t": "acme"}, {"acme"}, bytearray(b"acme")],
                         ids=["list", "dict", "set", "bytearray"])
def test_unhashable_and_odd_tenants_are_invalid_tenant_ids_naming_the_schema(
        tenant: object) -> None:
    with pytest.raises(InvalidTenantId) as info:
        ALL_TYPES.key(tenant, **GOOD)  # type: ignore[arg-type]
    assert info.value.schema == "hs.every"
    assert str(info.value).startswith("key schema 'hs.every': invalid tenant id")


def test_a_str_subclass_tenant_is_keyed_by_its_content() -> None:
    # Hashes and compares equal to "acme", formats as another tenant: the key must
    # carry its real content, or be refused.
    with pytest.raises(InvalidTenantId):
        ALL_TYPES.key(EvilStr("zzz!"), **GOOD)
    key = ALL_TYPES.key("acme", **GOOD)
    other = ALL_TYPES.key(EvilStr("zzz"), **GOOD)
    assert other.tenant == "zzz"
    assert type(other.tenant) is str
    assert other.body.startswith("{zzz}:")
    assert key.body.startswith("{acme}:")


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("s", "\ud800", "not encodable as UTF-8"),
    ("s", "ok\udfffok", "position 2"),
    ("n", 10**5000, "cannot be a key segment"),
    ("n", -(10**4301), "cannot be a key segment"),
], ids=["surrogate", "inner-surrogate", "5001-digits", "negative-4302-digits"])
def test_unencodable_parameters_are_our_error_naming_schema_and_parameter(
        name: str, value: object, fragment: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        ALL_TYPES.key("acme", **{**GOOD, name: value})
    assert (info.value.schema, info.value.parameter) == ("hs.every", name)
    assert fragment in str(info.value)
    assert len(str(info.value)) < 300


def test_subclass_values_are_encoded_by_their_base_type() -> None:
    key = ALL_TYPES.key("acme", **{**GOOD, "s": EvilStr("a:b"), "n": EvilInt(7),
                                   "d": EvilDate(2024, 2, 3)})
    assert key.body == "{acme}:hs.every:a%3Ab:7:1:00000000-0000-0000-0000-000000000001:" \
                       "2024-02-03:open:ab12"
    registry = SchemaRegistry()
    registry.register(ALL_TYPES)
    assert registry.parse(PREFIX, key.redis_key(PREFIX)).values == (
        "a:b", 7, True, uuid.UUID(int=1), dt.date(2024, 2, 3), Status.OPEN, "ab12")


def test_validators_refuse_with_schema_parameter_and_value_named() -> None:
    assert ALL_TYPES.key("acme", **GOOD).params["code"] == "ab12"
    with pytest.raises(InvalidParameterError) as info:
        ALL_TYPES.key("acme", **{**GOOD, "code": "a b"})
    assert (info.value.schema, info.value.parameter) == ("hs.every", "code")
    assert str(info.value) == ("key schema 'hs.every', parameter 'code': 'a b' refused: "
                               "letters and digits")

    def raising(v: int) -> None:
        if v < 0:
            raise ValueError("must not be negative")

    ranged = KeySchema("hs.ranged", Note, params={"n": int}, validators={"n": raising})
    assert ranged.key("acme", n=3).body == "{acme}:hs.ranged:3"
    with pytest.raises(InvalidParameterError, match="'n': -1 refused: must not be negative"):
        ranged.key("acme", n=-1)
    # The validator sees values of the declared type only.
    with pytest.raises(InvalidParameterError, match="expected int, got str"):
        ranged.key("acme", n="x")
    # A stored key the validator now refuses does not parse.
    registry = SchemaRegistry()
    registry.register(ranged)
    with pytest.raises(InvalidKeyError, match="refused"):
        registry.parse(PREFIX, "tc:{acme}:hs.ranged:-1")
    with pytest.raises(InvalidSchemaError, match="validator for 'm', which is not a parameter"):
        KeySchema("hs.bad", Note, params={"n": int}, validators={"m": raising})
    with pytest.raises(InvalidSchemaError, match="must be callable"):
        KeySchema("hs.bad", Note, params={"n": int}, validators={"n": "nope"})  # type: ignore[dict-item]


@given(params_for(ALL_TYPES))
def test_generated_parameters_respect_validators(params: dict[str, Any]) -> None:
    assert ALL_TYPES.key("acme", **params).params == params


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(4301, 5000).map(lambda n: 10**n),
    st.floats(),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=20),  # surrogates too
    hostile_text(), tenant_ids(), st.binary(max_size=8), st.uuids(), st.dates(),
    st.datetimes(), st.sampled_from(Status), st.builds(EvilStr, st.text(max_size=8)),
    st.builds(EvilInt, st.integers()), st.just(object()), st.just(float("nan")),
)
_ANYTHING = st.recursive(
    _SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                      st.dictionaries(st.text(max_size=3), inner, max_size=3),
                                      st.frozensets(st.integers(), max_size=3)),
    max_leaves=5)


@given(_ANYTHING | tenant_ids(),
       st.fixed_dictionaries({}, optional={n: _ANYTHING for n in GOOD}),
       st.dictionaries(st.text(max_size=5), _ANYTHING, max_size=2))
def test_any_input_builds_a_key_or_raises_our_error(
        tenant: Any, params: dict[str, Any], extra: dict[str, Any]) -> None:
    from thorbis_cache.errors import ThorbisCacheError

    kwargs = {**{n: GOOD[n] for n in GOOD if n not in params and len(params) % 2}, **params,
              **extra}
    try:
        key = ALL_TYPES.key(tenant, **kwargs)
    except ThorbisCacheError:
        return
    # Whatever was accepted reads back as itself.
    registry = SchemaRegistry()
    registry.register(ALL_TYPES)
    assert registry.parse(PREFIX, key.redis_key(PREFIX)).body == key.body
