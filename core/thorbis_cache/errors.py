"""The exception tree of thorbis-cache.

Every error the library raises derives from :class:`ThorbisCacheError`. Errors that
refine a builtin also inherit it (an invalid parameter is also a ``ValueError``), so
callers can catch either. Messages name the schema, tenant, parameter, key or server
involved -- never a cached value or a secret.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

R = TypeVar("R")

__all__ = [
    "AuditChainBroken",
    "CacheBackendError",
    "CaptureNotInstalledError",
    "ConfigurationError",
    "DeadLetterNotFound",
    "DuplicateSchemaError",
    "EventLoopInUseError",
    "EvictionPolicyError",
    "InvalidJobError",
    "InvalidKeyError",
    "InvalidParameterError",
    "InvalidSchemaError",
    "InvalidTenantId",
    "KeyRingError",
    "MigrationError",
    "MissingRow",
    "PluginLoadError",
    "PluginProblem",
    "PostgresUnavailableError",
    "RedisOutOfMemoryError",
    "RedisUnavailableError",
    "RedisWritesRefusedError",
    "ServerBinaryNotFound",
    "ServerStartError",
    "ThorbisCacheError",
    "UnknownPatternError",
    "UnknownSchemaError",
    "ValueTooLargeError",
    "ValueTypeError",
    "VersionConflictError",
    "WrongRedisTypeError",
    "WrongSchemaKindError",
    "redact_dsn",
    "short_repr",
]


class ThorbisCacheError(Exception):
    """Base class of every error raised by thorbis-cache."""


class ConfigurationError(ThorbisCacheError, ValueError):
    """A setting is missing or has an invalid value."""


class EvictionPolicyError(ConfigurationError):
    """A Redis server runs a ``maxmemory-policy`` under which invalidation cannot be
    correct (it may evict keys without a TTL: tag sets, dependency edges), or its policy
    cannot be read. See :mod:`thorbis_cache.cache.eviction`.

    :ivar policy: the server's policy (``"?"`` when it could not be read).
    :ivar address: the server.
    :ivar problem: why it is refused, and the fix.
    """

    def __init__(self, policy: str, address: str, problem: str) -> None:
        self.policy = policy
        self.address = address
        self.problem = problem
        super().__init__(f"redis {address}: maxmemory-policy {policy}: {problem}")


class CaptureNotInstalledError(ConfigurationError):
    """Invalidation rules name tables whose changes nothing captures (no capture trigger,
    or no slot and publication): the worker would apply nothing and the cache would stay
    stale until the TTLs.

    :ivar problems: one line per table: the table, the rules on it, what is missing.
    :ivar fix: the command that installs the capture.
    """

    def __init__(self, problems: list[str], fix: str) -> None:
        self.problems = problems
        self.fix = fix
        lines = "".join(f"\n  - {p}" for p in problems)
        super().__init__(f"change capture is not installed for {len(problems)} table(s) "
                         f"that invalidation rules read; run `{fix}`:{lines}")


# --------------------------------------------------------------------------- keys


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for naming a rejected input in
    a message (a 10 kB string or a list of a million items stays one short line; a
    ``__repr__`` that raises does not replace the error being reported)."""
    try:
        text = repr(value)
    except Exception:  # any failure of a foreign __repr__
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


class InvalidTenantId(ThorbisCacheError, ValueError):
    """A tenant id does not follow the tenant id rule.

    :ivar tenant: the rejected value (as given).
    :ivar rule: the rule it broke, in words.
    :ivar schema: the key schema whose key was being built, if any.
    """

    def __init__(self, tenant: object, rule: str, schema: str | None = None) -> None:
        self.tenant = tenant
        self.rule = rule
        self.schema = schema
        where = f"key schema {schema!r}: " if schema else ""
        super().__init__(f"{where}invalid tenant id {short_repr(tenant)}: {rule}")


class InvalidSchemaError(ThorbisCacheError, ValueError):
    """A key schema declaration is malformed (bad name, namespace, parameter or TTL)."""

    def __init__(self, schema: str, problem: str) -> None:
        self.schema = schema
        self.problem = problem
        super().__init__(f"key schema {schema!r}: {problem}")


class DuplicateSchemaError(ThorbisCacheError, ValueError):
    """Two different key schemas were registered under one name."""

    def __init__(self, schema: str, existing_owner: str, new_owner: str) -> None:
        self.schema = schema
        self.existing_owner = existing_owner
        self.new_owner = new_owner
        super().__init__(
            f"key schema {schema!r} is already registered by {existing_owner}; "
            f"{new_owner} cannot register it again"
        )


class UnknownSchemaError(ThorbisCacheError, LookupError):
    """A key schema is not registered with the cache in use."""

    def __init__(self, schema: str, known: list[str] | None = None) -> None:
        self.schema = schema
        hint = ""
        if known:
            shown = ", ".join(sorted(known)[:10])
            hint = f" (registered: {shown}{', ...' if len(known) > 10 else ''})"
        super().__init__(f"key schema {schema!r} is not registered{hint}")


class InvalidParameterError(ThorbisCacheError, TypeError, ValueError):
    """A key parameter is missing, unexpected, of the wrong type, or out of range."""

    def __init__(self, schema: str, parameter: str, problem: str) -> None:
        self.schema = schema
        self.parameter = parameter
        self.problem = problem
        super().__init__(f"key schema {schema!r}, parameter {parameter!r}: {problem}")


class InvalidKeyError(ThorbisCacheError, ValueError):
    """A Redis key string does not parse as a key of any registered schema."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        shown = key if len(key) <= 200 else key[:200] + "..."
        super().__init__(f"key {shown!r}: {problem}")


class WrongSchemaKindError(ThorbisCacheError, TypeError):
    """An operation was used on a schema of another kind (e.g. a hash helper on a value)."""

    def __init__(self, schema: str, kind: str, operation: str, hint: str = "") -> None:
        self.schema = schema
        self.kind = kind
        self.operation = operation
        message = f"key schema {schema!r} is a {kind} schema; {operation} is not allowed"
        super().__init__(f"{message}: {hint}" if hint else message)


# --------------------------------------------------------------------------- values


class ValueTypeError(ThorbisCacheError, TypeError):
    """A value does not match the value type declared by its key schema."""

    def __init__(self, schema: str, expected: str, got: str, detail: str = "") -> None:
        self.schema = schema
        self.expected = expected
        self.got = got
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"key schema {schema!r} holds {expected} values; got {got}{extra}"
        )


class ValueTooLargeError(ThorbisCacheError, ValueError):
    """A value serializes to more than the codec's ``max_value_size``: every read would
    refuse it (the bound against decompression bombs), so it is not written."""

    def __init__(self, schema: str, size: int, limit: int) -> None:
        self.schema = schema
        self.size = size
        self.limit = limit
        super().__init__(
            f"key schema {schema!r}: the value serializes to {size} bytes, more than "
            f"max_value_size ({limit} bytes); it is not cached"
        )


class VersionConflictError(ThorbisCacheError):
    """An update-if-version found another version than the caller expected."""

    def __init__(self, schema: str, key: str, expected: int, actual: int | None) -> None:
        self.schema = schema
        self.key = key
        self.expected = expected
        self.actual = actual
        now = "the entry is not cached" if actual is None else f"it is at version {actual}"
        super().__init__(
            f"key schema {schema!r}, key {key}: expected version {expected}, but {now}"
        )


class KeyRingError(ThorbisCacheError, ValueError):
    """The encryption key ring is malformed (bad key id, wrong key length, no active key)."""


# --------------------------------------------------------------------------- servers


class CacheBackendError(ThorbisCacheError):
    """Redis answered with an error, or could not be reached.

    :ivar operation: the command or script that failed.
    :ivar address: the server address(es) the client talks to.
    """

    def __init__(self, operation: str, address: str, problem: str) -> None:
        self.operation = operation
        self.address = address
        self.problem = problem
        super().__init__(f"redis {operation} on {address}: {problem}")


class RedisUnavailableError(CacheBackendError, ConnectionError):
    """Redis could not be reached (refused, reset, timed out)."""


class EventLoopInUseError(ThorbisCacheError, RuntimeError):
    """A store (and the :class:`~thorbis_cache.Cache` on it) was called from one event
    loop while another, still running in another thread, holds its connections.

    A cache follows its host from one loop to the next (``asyncio.run`` per command,
    ``async_to_sync`` per call) once the previous loop has stopped; two loops running at
    once need a cache each.

    :ivar address: the server address(es) the store talks to, or the key whose fill
        runs on the other loop.
    """

    def __init__(self, address: str, *, what: str = "redis store on") -> None:
        self.address = address
        super().__init__(
            f"{what} {address} is in use by an event loop still running in another "
            "thread; a Cache serves one event loop at a time: build one Cache per loop "
            "(per thread), or call it from the loop that holds it "
            "(asyncio.run_coroutine_threadsafe)")


# URL userinfo (postgresql://user:SECRET@host), a URL query or key/value "password=SECRET".
_URL_SECRET = re.compile(r"(//[^:/@?#]*:)[^/?#]*@")
_PARAM_SECRET = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (URL or ``key=value`` form)."""
    return _PARAM_SECRET.sub(r"\1***", _URL_SECRET.sub(r"\1***@", dsn))


class PostgresUnavailableError(ThorbisCacheError, ConnectionError):
    """PostgreSQL could not be reached or refused the connection (refused, unknown host,
    authentication, no such database, timed out).

    :ivar dsn: the DSN, its password masked.
    :ivar problem: the cause, one line.
    """

    def __init__(self, dsn: str, problem: str) -> None:
        self.dsn = dsn
        self.problem = problem
        super().__init__(f"postgresql connect to {dsn}: {problem}")


class RedisWritesRefusedError(RedisUnavailableError):
    """Redis answered but refused a write: unavailable for writes, so handled like an
    outage -- a read-through serves the loaded value without caching it, the worker
    keeps its changes (no attempt counted) until writes are accepted again.

    ``MISCONF`` (its snapshots fail while ``stop-writes-on-bgsave-error`` is on: a full
    or read-only disk), ``READONLY`` (the address serves a replica now), or the
    subclass :class:`RedisOutOfMemoryError`. Reads go on: the server's breaker stays
    closed.
    """


class RedisOutOfMemoryError(RedisWritesRefusedError):
    """Redis refused a write for lack of memory (``maxmemory`` reached under
    ``noeviction``): unavailable for writes, so handled like an outage -- a read-through
    serves the loaded value without caching it, the worker keeps its rows."""


class WrongRedisTypeError(CacheBackendError):
    """A command met a key holding another Redis type (``WRONGTYPE``): for a structure,
    the string marker a read-through caches for an absent row or an empty member set."""


class ServerBinaryNotFound(ThorbisCacheError, FileNotFoundError):
    """A server binary (redis-server, postgres) is missing.

    The message gives the exact install command or the environment variable to set.
    """


class ServerStartError(ThorbisCacheError, RuntimeError):
    """An ephemeral test server did not start; the message carries its log tail."""


# --------------------------------------------------------------------------- plugins


class PluginProblem:
    """One thing wrong with one plugin: who (plugin, distribution, version), where (the
    hook, or "import"/"sql"/...), and what."""

    __slots__ = ("distribution", "hook", "message", "plugin", "version")

    def __init__(
        self,
        plugin: str,
        hook: str,
        message: str,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        self.plugin = plugin
        self.hook = hook
        self.message = message
        self.distribution = distribution
        self.version = version

    def __str__(self) -> str:
        origin = ""
        if self.distribution:
            origin = f" ({self.distribution} {self.version or '?'})"
        return f"plugin {self.plugin!r}{origin}, {self.hook}: {self.message}"

    def __repr__(self) -> str:
        return f"PluginProblem({str(self)!r})"


class PluginLoadError(ThorbisCacheError):
    """One or more plugins could not be loaded; every problem found is listed at once.

    Plugins with a problem were not registered at all (no half-registration).
    """

    def __init__(self, problems: list[PluginProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} plugin problem(s):\n{lines}")


class UnknownPatternError(ThorbisCacheError, KeyError):
    """No loaded plugin declares a cache pattern of this name.

    :ivar pattern: the name asked for.
    """

    def __init__(self, pattern: str, known: list[str] | None = None) -> None:
        self.pattern = pattern
        shown = ", ".join(sorted(known)) if known else "none"
        self.message = (
            f"cache pattern {pattern!r} is not declared by any loaded plugin (declared: {shown})"
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError's own __str__ would print the repr of the message.
        return self.message


# --------------------------------------------------------------------------- PostgreSQL


class MigrationError(ThorbisCacheError, RuntimeError):
    """An applied core migration file changed, or a migration failed to apply; the
    message names the file (and the statement)."""


class AuditChainBroken(ThorbisCacheError):
    """``audit verify`` found a broken link: the message names the record and why."""


# --------------------------------------------------------------------------- invalidation queue


class InvalidJobError(ThorbisCacheError, ValueError):
    """A job is invalid (enqueue) or an entry does not decode to a job (consume)."""


class MissingRow(ThorbisCacheError, LookupError):
    """A plugin's loader was asked for one row that does not exist.

    Raised rather than returning None so that ``get_or_load`` never caches a miss as a
    value; the host decides whether absence is an error (404) or cached elsewhere.

    :ivar what: the relation read.
    :ivar tenant: the tenant.
    :ivar ident: the key looked up.
    """

    def __init__(self, what: str, tenant: str, ident: object) -> None:
        self.what = what
        self.tenant = tenant
        self.ident = ident
        super().__init__(f"no row in {what} for tenant {tenant!r} and key {ident!r}")

    @classmethod
    def first(cls, found: Sequence[R], what: str, tenant: str, ident: object) -> R:
        """The first of the records a by-ids query ``found`` for one ``ident`` -- what a
        single-key loader built on a batched one returns.

        :raises MissingRow: it found none.
        """
        if not found:
            raise cls(what, tenant, ident)
        return found[0]


class DeadLetterNotFound(ThorbisCacheError, LookupError):
    """No dead letter has this id (never had, or it was replayed or purged).

    :ivar ids: the ids that were not found.
    :ivar stream: the dead-letter stream searched.
    """

    def __init__(self, ids: Sequence[str], stream: str) -> None:
        self.ids = tuple(ids)
        self.stream = stream
        super().__init__(f"no dead letter {', '.join(self.ids)} in {stream}")
