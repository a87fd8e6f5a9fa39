"""Key schemas: typed, registered templates that are the only way to build a cache key.

A key looks like ``<prefix>:{<tenant>}:<schema>[:<param>...]`` (see ``docs/keys.md``).
The tenant sits inside a Redis Cluster hash tag, so all keys of one tenant hash to one
slot; parameters are escaped so that no value can reach another tenant, another
schema, or widen a glob.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeAlias, TypeVar
from urllib.parse import quote, unquote

import attrs

from thorbis_cache.cache.value_types import SUPPORTED_TYPES, unsupported_type
from thorbis_cache.errors import (
    InvalidParameterError,
    InvalidSchemaError,
    InvalidTenantId,
    short_repr,
)

__all__ = [
    "CacheKey",
    "Compression",
    "KeySchema",
    "Param",
    "SchemaKind",
    "Validator",
    "checked_ttl",
    "ttl_problem",
    "validate_prefix",
    "validate_tenant",
]

T = TypeVar("T")

#: A parameter's value check: None when the value is acceptable, else what is wrong
#: with it (or it raises ``ValueError``/``TypeError`` saying so). It sees values of the
#: parameter's declared type only, and runs for every key built or parsed.
Validator: TypeAlias = Callable[[Any], "str | None"]

#: The longest TTL, in seconds, that a schema or a call may give an entry.
MAX_TTL = 365 * 86400


def ttl_problem(ttl: object) -> str | None:
    """Why ``ttl`` is not a TTL (seconds in (0, 1 year]; Redis keeps whole
    milliseconds, at least one), or None when it is."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
        return f"ttl must be seconds in (0, 1 year], got {ttl!r}"
    return None


def checked_ttl(schema: str, ttl: float) -> float:
    """A TTL given for one call (``ttl=``), checked as a schema's is.

    :raises InvalidParameterError: naming ``schema`` and ``ttl``.
    """
    problem = ttl_problem(ttl)
    if problem is not None:
        raise InvalidParameterError(schema, "ttl", problem)
    return ttl


TENANT_RULE = (
    "1 to 64 characters from a-z, 0-9, '_' and '-', starting with a letter or a digit"
)
_TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_PREFIX_RE = re.compile(r"[a-z][a-z0-9_]{0,15}")
_NAME_PART = r"[a-z][a-z0-9_]{0,31}"
_SCHEMA_NAME_RE = re.compile(rf"{_NAME_PART}(\.{_NAME_PART})+")
_PARAM_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: ``schema.relation`` of lower-case identifiers (PostgreSQL tables and views).
_QUALIFIED_RE = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*")

#: Parameter types a key may carry, and enums whose values are str or int.
PARAM_TYPES: tuple[type, ...] = (str, int, bool, uuid.UUID, dt.date)


class SchemaKind(enum.Enum):
    """The Redis data structure a schema's keys hold."""

    VALUE = "value"  #: one encoded value (string), read with get/get_or_load
    HASH = "hash"  #: an attrs entity as a hash, one encoded field each, plus a version
    ZSET = "zset"  #: a sorted set of members (ids) with scores
    GEO = "geo"  #: a geo index of members (ids) with coordinates


class Compression(enum.Enum):
    """When values of a schema are compressed with zstd."""

    AUTO = "auto"  #: above the codec's size threshold
    NEVER = "never"
    ALWAYS = "always"


def validate_tenant(tenant: object) -> str:
    """Return ``tenant`` (as a plain ``str``) if it is a valid tenant id.

    Any value is checked, hashable or not; a ``str`` subclass is copied to a plain
    ``str`` first, so that no overridden method (``__format__``, ``__iter__``,
    ``__eq__``) can make a key show another tenant than the one checked.

    :raises InvalidTenantId: naming the value and the rule it breaks.
    """
    if type(tenant) is not str:
        if not isinstance(tenant, str):
            raise InvalidTenantId(tenant, f"must be a str, got {type(tenant).__name__}")
        tenant = str.__str__(tenant)
    return _validate_str_tenant(tenant)


@functools.lru_cache(maxsize=65536)
def _validate_str_tenant(tenant: str) -> str:
    if not _TENANT_RE.fullmatch(tenant):
        raise InvalidTenantId(tenant, TENANT_RULE)
    return tenant


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid key prefix (1-16 of a-z, 0-9, '_', from a letter).

    :raises InvalidSchemaError: when it is not.
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidSchemaError(
            "<prefix>", f"key prefix {prefix!r} must be 1-16 of a-z, 0-9, '_', from a letter"
        )
    return prefix


# --------------------------------------------------------------------------- escaping

# Kept verbatim in a key segment: nothing that is a separator (':'), a hash-tag brace,
# a glob metacharacter (* ? [ ] \), whitespace, or the escape character itself.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def escape_segment(text: str) -> str:
    """Percent-encode ``text`` (UTF-8) so the result only holds ``[A-Za-z0-9_.%-]``."""
    if all(c in _SAFE for c in text):
        return text
    # quote() never escapes '~'; we do, so the escaped alphabet stays minimal.
    return quote(text, safe="", encoding="utf-8", errors="strict").replace("~", "%7E")


def unescape_segment(segment: str) -> str:
    """Inverse of :func:`escape_segment`; rejects any non-canonical spelling.

    :raises ValueError: when ``segment`` is not exactly what escape_segment produces.
    """
    if "%" not in segment:
        if not all(c in _SAFE for c in segment):
            raise ValueError("unescaped character outside [A-Za-z0-9_.-]")
        return segment
    text = unquote(segment, encoding="utf-8", errors="strict")
    if escape_segment(text) != segment:
        raise ValueError("non-canonical escaping")
    return text


# --------------------------------------------------------------------------- parameters


def _check_param_type(tp: object) -> type:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        kinds = {type(m.value) for m in tp}
        if not kinds or not kinds <= {str, int}:
            raise TypeError(f"enum {tp.__name__} must have str or int values")
        return tp
    if tp in PARAM_TYPES and isinstance(tp, type):
        return tp
    names = ", ".join(t.__name__ for t in PARAM_TYPES)
    raise TypeError(f"parameter type must be one of {names} or an Enum, got {tp!r}")


@attrs.frozen(slots=True)
class Param:
    """One typed parameter of a key schema.

    :ivar name: identifier, ``[a-z][a-z0-9_]*``.
    :ivar type: str, int, bool, uuid.UUID, datetime.date, or an Enum with str/int values.
    :ivar max_length: optional cap on the encoded segment length (bytes).
    :ivar validator: optional check of the value (:data:`Validator`); a refused value is
        an :class:`~thorbis_cache.errors.InvalidParameterError` naming schema, parameter
        and value. Usually given as ``KeySchema(validators={name: check})``.
    """

    name: str
    type: type
    max_length: int | None = None
    validator: Validator | None = None

    def encode(self, schema: str, value: object) -> str:
        """Encode ``value`` as one key segment.

        :raises InvalidParameterError: when ``value`` has the wrong type, is too long,
            cannot be encoded (a lone surrogate, an int beyond Python's digit limit) or
            is refused by the validator.
        """
        tp = self.type
        # bool is an int subclass, and a datetime is a date: both must be refused explicitly.
        if type(value) is bool and tp is not bool:
            raise InvalidParameterError(schema, self.name, f"expected {tp.__name__}, got bool")
        if tp is dt.date and isinstance(value, dt.datetime):
            raise InvalidParameterError(schema, self.name, "expected date, got datetime")
        if not isinstance(value, tp):
            raise InvalidParameterError(
                schema, self.name, f"expected {tp.__name__}, got {type(value).__name__}"
            )
        if self.validator is not None:
            self._validate(schema, value)
        raw: object = value.value if isinstance(value, enum.Enum) else value
        # Subclasses are encoded through the base type's own methods: an overridden
        # __str__, __iter__ or isoformat must not put a ':' or a '}' into a key.
        try:
            if isinstance(raw, bool):
                segment = "1" if raw else "0"
            elif isinstance(raw, int):
                segment = int.__repr__(raw)
            elif isinstance(raw, str):
                segment = escape_segment(str.__str__(raw))
            elif isinstance(raw, uuid.UUID):
                segment = uuid.UUID.__str__(raw)
            elif isinstance(raw, dt.date):
                segment = dt.date.isoformat(raw)
            else:  # pragma: no cover -- excluded by _check_param_type
                raise InvalidParameterError(schema, self.name, f"unsupported value {type(raw)}")
        except UnicodeEncodeError as exc:
            raise InvalidParameterError(
                schema, self.name, f"{short_repr(value)} is not encodable as UTF-8 "
                f"({exc.reason} at position {exc.start})") from None
        except ValueError as exc:  # int -> str beyond sys.get_int_max_str_digits()
            what = f"an int of {raw.bit_length()} bits" if isinstance(raw, int) else "value"
            raise InvalidParameterError(
                schema, self.name, f"{what} cannot be a key segment: {exc}") from None
        if self.max_length is not None and len(segment) > self.max_length:
            raise InvalidParameterError(
                schema,
                self.name,
                f"encoded length {len(segment)} exceeds max_length {self.max_length}",
            )
        return segment

    def _validate(self, schema: str, value: object) -> None:
        """Run the validator; its refusal (a message, or an exception it raised) becomes
        an :class:`InvalidParameterError` naming schema, parameter and value."""
        assert self.validator is not None
        try:
            problem = self.validator(value)
        except InvalidParameterError:
            raise
        except Exception as exc:  # a refusal raised, or a bug of the validator: ours now
            raise InvalidParameterError(
                schema, self.name, f"{short_repr(value)} refused: {exc}") from exc
        if problem is not None:
            raise InvalidParameterError(
                schema, self.name, f"{short_repr(value)} refused: {problem}")

    def decode(self, segment: str) -> object:
        """Decode one key segment back to a value (exact inverse of :meth:`encode`).

        :raises ValueError: when the segment is not the canonical encoding of a value.
        """
        tp = self.type
        if issubclass(tp, enum.Enum):
            value_kind = type(next(iter(tp)).value)
            raw: object = int(segment) if value_kind is int else unescape_segment(segment)
            value: object = tp(raw)
        elif tp is bool:
            if segment not in ("0", "1"):
                raise ValueError("bool must be 0 or 1")
            value = segment == "1"
        elif tp is int:
            value = int(segment)
        elif tp is str:
            value = unescape_segment(segment)
        elif tp is uuid.UUID:
            value = uuid.UUID(segment)
        elif tp is dt.date:
            value = dt.date.fromisoformat(segment)
        else:  # pragma: no cover -- excluded by _check_param_type
            raise ValueError(f"unsupported parameter type {tp!r}")
        if self.encode("<parse>", value) != segment:
            raise ValueError("non-canonical spelling")
        return value


def _to_params(value: object) -> tuple[Param, ...]:
    if isinstance(value, Mapping):
        items: list[Param] = []
        for name, tp in value.items():
            items.append(tp if isinstance(tp, Param) else Param(name, tp))
        return tuple(items)
    if isinstance(value, tuple | list):
        return tuple(value)
    raise TypeError(f"params must be a mapping of name to type, got {type(value).__name__}")


def _to_validators(value: Mapping[str, Validator]) -> dict[str, Validator]:
    if not isinstance(value, Mapping):
        raise TypeError(f"validators must be a mapping of parameter name to callable, "
                        f"got {type(value).__name__}")
    return dict(value)


def _to_tags(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(value)
    raise TypeError(f"tags must be a str or an iterable of str, got {type(value).__name__}")


# --------------------------------------------------------------------------- schemas


@attrs.frozen(slots=True, eq=False)
class KeySchema(Generic[T]):
    """A registered, typed key template.

    >>> CUSTOMER = KeySchema("hs.customer", Customer, params={"customer_id": int},
    ...                      ttl=3600, sensitive=True)
    >>> CUSTOMER.key("acme", customer_id=42)

    :ivar name: ``<namespace>.<entity>[.<more>]``, lower case; the namespace is the first part.
    :ivar value_type: an attrs class, or a primitive/container type (``int``, ``list[str]``...).
        For ZSET and GEO schemas it is the member type (a parameter type).
    :ivar params: ordered mapping of parameter name to type (or :class:`Param`).
    :ivar ttl: seconds a value lives; every cached value expires.
    :ivar ttl_jitter: fraction (0-0.5) of the TTL randomly added or removed per write, so
        entries written together do not expire together.
    :ivar sensitive: encrypt values with the tenant's data key (AES-256-GCM).
    :ivar compression: zstd policy.
    :ivar tags: tag names attached to every key of the schema (used by invalidation).
    :ivar kind: the Redis structure (value, hash, sorted set, geo index).
    :ivar version: schema version written into every envelope; entries of another version
        are treated as misses, so bump it when the value type changes incompatibly.
    :ivar early_recompute: XFetch ``beta`` (typically 1.0); None disables early recompute.
    :ivar description: one line for listings.
    :ivar near_ttl: seconds (0-60] a value of this schema may live in the in-process near
        cache (L1) of a cache that has one; None keeps the schema out of L1. It bounds how
        long a process may serve a value after an invalidation whose event it missed.
    :ivar negative_ttl: seconds a read-through caches the *absence* of the row it asked
        for (its loader raised :class:`~thorbis_cache.errors.MissingRow`), so reads of
        ids that do not exist stop reaching the database; None caches no absence. The
        absence lives at the entry's own key, so every invalidation of the key or its
        tags (an INSERT rule) drops it. At most ``ttl``.
    :ivar mirrors: the qualified name of the materialized view this schema's loader
        reads (``hs.customer_summary``). Such an entry is made stale by the view's
        refresh, not by changes of the view's base tables: the view's refresh tags must
        reach it, and a rule that targets it only makes readers reload the unrefreshed
        view (the contract kit flags such rules).
    :ivar read_from_replicas: read values from a replica of the key's master when one
        keeps up (Sentinel and Cluster; see :mod:`thorbis_cache.store.replica_reads`): such a
        read may return a value up to ``CacheSettings.replica_max_lag`` plus 0.1 s after
        its invalidation returned. Value schemas only; the default reads the master.
    :ivar validators: parameter name -> :data:`Validator`, checked on every key built or
        parsed after the type (``validators={"vin": vin_problem}``); a refused value is
        an :class:`~thorbis_cache.errors.InvalidParameterError` naming schema, parameter
        and value.
    """

    name: str
    value_type: Any
    params: tuple[Param, ...] = attrs.field(factory=tuple, converter=_to_params)
    ttl: float = 3600.0
    ttl_jitter: float = 0.0
    sensitive: bool = False
    compression: Compression = Compression.AUTO
    tags: tuple[str, ...] = attrs.field(factory=tuple, converter=_to_tags)
    kind: SchemaKind = SchemaKind.VALUE
    version: int = 1
    early_recompute: float | None = None
    description: str = ""
    near_ttl: float | None = None
    negative_ttl: float | None = None
    mirrors: str | None = None
    read_from_replicas: bool = False
    validators: Mapping[str, Validator] = attrs.field(factory=dict, converter=_to_validators)
    _param_names: frozenset[str] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not _SCHEMA_NAME_RE.fullmatch(name):
            raise InvalidSchemaError(
                str(name),
                "name must be '<namespace>.<entity>' of lower-case parts "
                "([a-z][a-z0-9_]*, at most 32 characters each)",
            )
        seen: set[str] = set()
        for p in self.params:
            if not isinstance(p, Param):
                raise InvalidSchemaError(name, f"parameter {p!r} is not a Param")
            if not _PARAM_NAME_RE.fullmatch(p.name):
                raise InvalidSchemaError(name, f"parameter name {p.name!r} is not an identifier")
            if p.name in seen:
                raise InvalidSchemaError(name, f"parameter {p.name!r} is declared twice")
            seen.add(p.name)
            try:
                _check_param_type(p.type)
            except TypeError as exc:
                raise InvalidSchemaError(name, f"parameter {p.name!r}: {exc}") from None
        problem = ttl_problem(self.ttl)
        if problem is not None:
            raise InvalidSchemaError(name, problem)
        if not 0 <= self.ttl_jitter <= 0.5:
            raise InvalidSchemaError(name, f"ttl_jitter must be in [0, 0.5], got {self.ttl_jitter}")
        if not isinstance(self.version, int) or not 0 <= self.version <= 0xFFFF:
            raise InvalidSchemaError(
                name, f"version must be an int in [0, 65535], got {self.version!r}"
            )
        if self.early_recompute is not None and not 0 < self.early_recompute <= 10:
            raise InvalidSchemaError(name, "early_recompute (XFetch beta) must be in (0, 10]")
        if self.near_ttl is not None:
            if not isinstance(self.near_ttl, int | float) or not 0 < self.near_ttl <= 60:
                raise InvalidSchemaError(
                    name, f"near_ttl must be seconds in (0, 60], got {self.near_ttl!r}"
                )
            if self.kind is not SchemaKind.VALUE:
                raise InvalidSchemaError(name, "near_ttl applies to value schemas only")
        if self.negative_ttl is not None and (
            not isinstance(self.negative_ttl, int | float) or isinstance(self.negative_ttl, bool)
            or not 0 < self.negative_ttl <= self.ttl
        ):
            raise InvalidSchemaError(
                name, f"negative_ttl must be seconds in (0, ttl={self.ttl}], "
                f"got {self.negative_ttl!r}",
            )
        if self.mirrors is not None and (
            not isinstance(self.mirrors, str) or not _QUALIFIED_RE.fullmatch(self.mirrors)
        ):
            raise InvalidSchemaError(
                name, f"mirrors must name a materialized view as 'schema.view', "
                f"got {self.mirrors!r}",
            )
        if self.read_from_replicas is not False and (
                self.read_from_replicas is not True or self.kind is not SchemaKind.VALUE):
            raise InvalidSchemaError(
                name, "read_from_replicas must be True or False and applies to value "
                f"schemas only (kind {self.kind.value}), got {self.read_from_replicas!r}")
        for tag in self.tags:
            if not isinstance(tag, str) or not _SCHEMA_NAME_RE.fullmatch(tag):
                raise InvalidSchemaError(name, f"tag {tag!r} must look like '<namespace>.<name>'")
        if self.kind in (SchemaKind.ZSET, SchemaKind.GEO):
            try:
                _check_param_type(self.value_type)
            except TypeError as exc:
                raise InvalidSchemaError(name, f"{self.kind.value} member type: {exc}") from None
            if self.sensitive:
                raise InvalidSchemaError(
                    name, f"{self.kind.value} members are stored in clear; sensitive is not allowed"
                )
        if self.kind is SchemaKind.HASH and not attrs.has(self.value_type):
            raise InvalidSchemaError(name, "a hash schema's value_type must be an attrs class")
        if self.kind in (SchemaKind.VALUE, SchemaKind.HASH):
            # Here, not at the first write: that fails naming neither schema nor field.
            found = unsupported_type(self.value_type)
            if found is not None:
                tp = self.value_type
                raise InvalidSchemaError(
                    name, f"value_type {tp.__qualname__ if isinstance(tp, type) else tp}: "
                    f"{found}, a type the codec cannot store and restore (supported: "
                    f"{SUPPORTED_TYPES})")
        for param_name, check in self.validators.items():
            if param_name not in seen:
                raise InvalidSchemaError(
                    name, f"validator for {param_name!r}, which is not a parameter "
                    f"(declared: {sorted(seen)})")
            if not callable(check):
                raise InvalidSchemaError(
                    name, f"validator for {param_name!r} must be callable, got {check!r}")
        if self.validators:
            object.__setattr__(self, "params", tuple(
                attrs.evolve(p, validator=self.validators[p.name])
                if p.name in self.validators else p for p in self.params))
        object.__setattr__(self, "_param_names", frozenset(seen))

    @property
    def namespace(self) -> str:
        """The first part of the name (``hs`` for ``hs.customer``)."""
        return self.name.split(".", 1)[0]

    @property
    def member_param(self) -> Param:
        """For ZSET/GEO schemas, the Param that encodes members."""
        return Param("member", self.value_type)

    def key(self, tenant: str, /, **params: object) -> CacheKey[T]:
        """Build the key of ``tenant`` with ``params``.

        :raises InvalidTenantId: when ``tenant`` breaks the tenant rule (naming the schema).
        :raises InvalidParameterError: for a missing, extra, mistyped, unencodable or
            refused parameter (naming the schema and the parameter).
        """
        try:
            tenant = validate_tenant(tenant)
        except InvalidTenantId as exc:
            raise InvalidTenantId(exc.tenant, exc.rule, schema=self.name) from None
        if len(params) != len(self.params) or params.keys() != self._param_names:
            missing = [p.name for p in self.params if p.name not in params]
            if missing:
                raise InvalidParameterError(self.name, missing[0], "missing")
            extra = sorted(set(params) - self._param_names)
            raise InvalidParameterError(
                self.name, extra[0], f"unexpected (declared: {sorted(self._param_names)})"
            )
        values = tuple(params[p.name] for p in self.params)
        segments = "".join(":" + p.encode(self.name, v) for p, v in zip(self.params, values))
        return CacheKey(self, tenant, values, f"{{{tenant}}}:{self.name}{segments}")

    def glob(self, prefix: str, tenant: str, /, **params: object) -> str:
        """A SCAN pattern matching exactly the keys of ``tenant`` with the given params.

        Parameters left out match any value. Because every segment is escaped and a
        schema has a fixed number of segments, a ``*`` can never span a ':' here.
        For offline tools only: nothing on the hot path scans.
        """
        tenant = validate_tenant(tenant)
        unknown = set(params) - self._param_names
        if unknown:
            raise InvalidParameterError(self.name, sorted(unknown)[0], "unexpected")
        parts = [
            p.encode(self.name, params[p.name]) if p.name in params else "*" for p in self.params
        ]
        return f"{prefix}:{{{tenant}}}:{self.name}" + "".join(":" + s for s in parts)


@attrs.frozen(slots=True)
class CacheKey(Generic[T]):
    """A built key: schema, tenant, parameter values, and the encoded key body.

    The Redis key is ``<prefix>:`` + :attr:`body`; the cache adds the prefix.
    """

    schema: KeySchema[T]
    tenant: str
    values: tuple[object, ...]
    body: str

    @property
    def params(self) -> dict[str, object]:
        """Parameter values by name."""
        return {p.name: v for p, v in zip(self.schema.params, self.values)}

    def redis_key(self, prefix: str) -> str:
        """The full Redis key under ``prefix``."""
        return f"{prefix}:{self.body}"
