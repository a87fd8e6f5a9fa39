"""The plugin manager: discover plugins, call their hooks, validate, store all or nothing.

A plugin is found through the entry-point group :data:`ENTRY_POINT_GROUP`, or queued
in-process with :meth:`PluginManager.add`. :meth:`PluginManager.load` then, for every
plugin of the batch:

1. imports it (an import error is a problem of hook ``"import"``);
2. checks each ``@hookimpl`` function against :mod:`thorbis_cache.plugins.hookspecs` -- a
   function matching no hook (pluggy's ``check_pending`` rule), an argument the hook
   does not provide, a wrapper -- and only then registers it with pluggy;
3. calls each of the plugin's hook implementations on its own, with keyword arguments,
   resolving a value, a zero-argument callable or an awaitable (datasette's
   ``await_me_maybe``), so every result is attributed to its plugin;
4. validates what the hooks returned (types, names under the namespace, rules against
   schemas and tags, materialized views, permissions), then across plugins
   (namespace, schema and permission collisions, naming both plugins).

Cron expressions are checked with ``croniter`` when it is installed. What needs the
database (SQL that applies, rule tables and columns, unique indexes of views) is checked
by :mod:`thorbis_cache.postgres.sql_apply` when a host applies the SQL.

Every problem of every plugin is collected and raised at once as
:class:`~thorbis_cache.errors.PluginLoadError`. The rule is all or nothing per batch:
if any plugin of a ``load`` call has a problem, nothing of that call is stored (no
schema, no declaration, no pluggy registration) -- a plugin is never half-registered,
and a host never runs with a subset it did not ask for.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs
import pluggy

from thorbis_cache.cache.keys import KeySchema
from thorbis_cache.cache.registry import SchemaRegistry
from thorbis_cache.errors import (
    ConfigurationError,
    PluginLoadError,
    PluginProblem,
    UnknownPatternError,
)
from thorbis_cache.plugins import hookspecs
from thorbis_cache.plugins.checks import Draft, check_across, check_declarations
from thorbis_cache.plugins.declarations import (
    CachePattern,
    InvalidationRule,
    LoadedPlugin,
    MaterializedView,
    Permission,
    SqlScript,
    Warmer,
)

__all__ = [
    "DEFAULT_HOOK_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "LoadedPlugin",
    "PluginManager",
    "await_me_maybe",
]

#: The entry-point group plugins are published under.
ENTRY_POINT_GROUP = "thorbis_cache.plugins"
#: Seconds a hook call may take by default (:class:`PluginManager`'s ``hook_timeout``).
DEFAULT_HOOK_TIMEOUT = 5.0

#: What each ``register_*`` hook returns a sequence of.
DECLARATION_HOOKS: dict[str, type] = {
    "register_key_schemas": KeySchema,
    "register_cache_patterns": CachePattern,
    "register_sql": SqlScript,
    "register_materialized_views": MaterializedView,
    "register_invalidation_rules": InvalidationRule,
    "register_warmers": Warmer,
    "register_permissions": Permission,
}


async def await_me_maybe(value: object) -> object:
    """Resolve what a hook returned: a value, a zero-argument callable, or an awaitable."""
    if callable(value):
        value = value()
    if inspect.isawaitable(value):
        value = await value
    return value


@attrs.define
class _Candidate:
    """A plugin queued or discovered, not loaded yet."""

    name: str
    entry_point: EntryPoint | None = None
    obj: object = None
    distribution: str | None = None
    version: str | None = None

    @classmethod
    def from_entry_point(cls, ep: EntryPoint) -> _Candidate:
        dist = ep.dist
        return cls(ep.name, ep, None, dist.name if dist else None, dist.version if dist else None)

    def origin(self) -> str:
        if self.entry_point is not None:
            where = f"entry point {self.entry_point.value!r}"
            return f"{where} of {self.distribution}" if self.distribution else where
        return f"in-process object {self.obj!r:.80}"


class PluginManager:
    """Discovers, validates and holds plugins (one per host application, never global).

    :param hook_timeout: seconds each hook call may take, awaiting included: a hook
        that overruns is a problem naming plugin and hook, and fails the load (or
        the start, for ``on_startup``). It bounds awaiting; a synchronous hook that
        blocks the event loop cannot be interrupted.
    :ivar registry: the key schemas of every loaded plugin (owner = plugin name).
    :ivar plugins: the loaded plugins by name, in load order.
    """

    def __init__(self, *, hook_timeout: float = DEFAULT_HOOK_TIMEOUT) -> None:
        if not hook_timeout > 0:
            raise ConfigurationError(f"hook_timeout must be positive seconds, "
                                     f"got {hook_timeout!r}")
        self.hook_timeout = hook_timeout
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._specs: dict[str, tuple[str, ...]] = {}
        for name, caller in vars(self._pm.hook).items():
            if isinstance(caller, pluggy.HookCaller) and caller.spec is not None:
                self._specs[name] = tuple(caller.spec.argnames)
        self.registry = SchemaRegistry()
        self.plugins: dict[str, LoadedPlugin] = {}
        self._queued: dict[str, _Candidate] = {}
        self._unqueued: dict[str, _Candidate] = {}  # added plugins, once loaded
        self._patterns: dict[str, CachePattern] = {}
        self._lock = asyncio.Lock()

    @property
    def pluggy_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (read it; do not register into it directly)."""
        return self._pm

    # ------------------------------------------------------------------ discovery

    def available(self) -> list[EntryPoint]:
        """Entry points of :data:`ENTRY_POINT_GROUP` (installed, plus any added with
        :meth:`add_entry_point`), loaded or not."""
        found = list(entry_points(group=ENTRY_POINT_GROUP))
        found += [c.entry_point for c in self._queued.values() if c.entry_point is not None]
        return found

    def add(
        self,
        plugin: object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Queue an in-process plugin (a module or object with ``@hookimpl`` functions);
        :meth:`load` validates and stores it.

        :param plugin: the plugin object.
        :param name: its name (default: the module's ``__name__`` or pluggy's canonical name).
        :param distribution: reported in listings and errors.
        :param version: reported in listings and errors.
        :raises PluginLoadError: the name is already queued or loaded.
        """
        name = name or getattr(plugin, "__name__", None) or self._pm.get_canonical_name(plugin)
        self._queue(_Candidate(name, None, plugin, distribution, version))

    def add_entry_point(self, entry_point: EntryPoint) -> None:
        """Queue an entry point as if it were installed (a seam for tests and hosts that
        build entry points themselves); it is imported by :meth:`load`.

        :raises PluginLoadError: the name is already queued or loaded.
        """
        self._queue(_Candidate.from_entry_point(entry_point))

    def _queue(self, candidate: _Candidate) -> None:
        taken = self._queued.get(candidate.name)
        if taken is not None or candidate.name in self.plugins:
            holder = taken.origin() if taken else "a loaded plugin"
            raise PluginLoadError([PluginProblem(
                candidate.name, "add", f"the name is already taken by {holder}",
                candidate.distribution, candidate.version,
            )])
        self._queued[candidate.name] = candidate

    def _select(self, names: Iterable[str] | None, problems: list[PluginProblem]) -> list[
        _Candidate
    ]:
        pool: dict[str, list[_Candidate]] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            pool.setdefault(ep.name, []).append(_Candidate.from_entry_point(ep))
        for candidate in self._queued.values():
            pool.setdefault(candidate.name, []).append(candidate)
        wanted = list(pool) if names is None else list(dict.fromkeys(names))
        chosen: list[_Candidate] = []
        for name in wanted:
            if name in self.plugins:
                continue  # loading is idempotent
            found = pool.get(name)
            if not found:
                known = ", ".join(sorted(pool)) or "none"
                problems.append(PluginProblem(
                    name, "load", f"no plugin of this name is installed or added (known: {known})"
                ))
            elif len(found) > 1:
                both = " and ".join(c.origin() for c in found)
                problems.append(PluginProblem(
                    name, "load", f"two plugins share this name: {both}",
                    found[0].distribution, found[0].version,
                ))
            else:
                chosen.append(found[0])
        return chosen

    # ------------------------------------------------------------------ loading

    async def load(self, names: Iterable[str] | None = None) -> list[LoadedPlugin]:
        """Load plugins: every installed entry point and every added plugin (``None``),
        or only the ones named. Plugins already loaded are skipped.

        All or nothing: when any plugin of the call has a problem, nothing of the call
        is stored and every problem is raised at once. Each hook call is bounded by
        :attr:`hook_timeout`. A load cancelled while a hook runs (the host's own
        deadline) leaves nothing registered either, so it can simply be retried.

        :param names: plugin names (entry-point names or names given to :meth:`add`).
        :returns: the plugins loaded by this call, in load order.
        :raises PluginLoadError: listing every problem (plugin, distribution, version,
            hook, what is wrong); an unknown name is one, as is a hook that overran
            :attr:`hook_timeout`. Its ``__cause__`` is the exception a hook raised (an
            :class:`ExceptionGroup` when several did).
        """
        async with self._lock:
            problems: list[PluginProblem] = []
            drafts: list[Draft] = []
            try:
                for candidate in self._select(names, problems):
                    drafts.append(Draft(candidate.name, candidate.distribution,
                                        candidate.version))
                    await self._examine(candidate, drafts[-1])
                check_across(drafts, self.plugins.values(), self.registry)
                problems += [p for d in drafts for p in d.problems]
                if problems:
                    raise PluginLoadError(problems) from _cause(drafts)
                return [self._store(d) for d in drafts]
            except BaseException:
                # Failed, or cancelled while a hook ran (a host's own deadline): nothing
                # of this call stays registered, so a retry starts from scratch.
                for draft in drafts:
                    if self._pm.has_plugin(draft.name) and draft.name not in self.plugins:
                        self._pm.unregister(name=draft.name)
                raise

    async def _examine(self, candidate: _Candidate, draft: Draft) -> None:
        obj = candidate.obj
        if candidate.entry_point is not None:
            try:
                obj = candidate.entry_point.load()
            except Exception as exc:
                draft.problem("import", f"cannot import {candidate.entry_point.value!r}: "
                              f"{type(exc).__name__}: {exc}")
                draft.causes.append(exc)
                return
        if not self._check_hookimpls(draft, obj):
            return
        try:
            registered = self._pm.register(obj, draft.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            # Older pluggy releases store part of a plugin before failing validation.
            if self._pm.has_plugin(draft.name):
                self._pm.unregister(name=draft.name)
            draft.problem("register", f"pluggy refused it: {exc}")
            return
        if registered is None:
            draft.problem("register", "the name is blocked in the pluggy manager")
            return
        draft.registered = True
        await self._call_declaration_hooks(draft)
        if draft.info is not None:
            try:
                check_declarations(draft)
            except Exception as exc:  # a declaration too malformed to inspect
                draft.problem("register", f"a declaration could not be checked: "
                              f"{type(exc).__name__}: {exc}")
                draft.causes.append(exc)

    def _check_hookimpls(self, draft: Draft, plugin: object) -> bool:
        """Check every ``@hookimpl`` of ``plugin`` before pluggy sees it (pluggy stops at
        the first problem; this reports them all). Returns False on any problem."""
        before = len(draft.problems)
        try:
            found = [(a, o) for a in dir(plugin)
                     if (o := self._pm.parse_hookimpl_opts(plugin, a)) is not None]
        except Exception as exc:
            draft.problem("register", f"cannot inspect {plugin!r:.80}: {exc}")
            return False
        if not found:
            draft.problem("register", f"{type(plugin).__name__} {plugin!r:.80} is not a plugin: "
                          "it has no @thorbis_cache.hookimpl functions")
            return False
        for attr, opts in found:
            hook = opts.get("specname") or attr
            spec = self._specs.get(hook)
            if spec is None:
                if not opts.get("optionalhook"):
                    near = difflib.get_close_matches(hook, self._specs, n=1)
                    hint = f"; did you mean {near[0]!r}?" if near else ""
                    draft.problem(attr, f"@hookimpl function {attr!r} matches no hook of "
                                  f"thorbis_cache.plugins.hookspecs{hint}")
                continue
            if opts.get("wrapper") or opts.get("hookwrapper"):
                draft.problem(hook, "hook wrappers are not supported: each plugin's "
                              "implementation is called on its own")
            function = getattr(plugin, attr)
            unknown = [p for p in _required_params(function) if p not in spec]
            if unknown:
                offered = ", ".join(spec) or "no arguments"
                draft.problem(hook, f"{attr}{_signature(function)} requires "
                              f"{', '.join(unknown)}, which the hook does not pass "
                              f"(it passes {offered})")
        return len(draft.problems) == before

    async def _call(self, draft: Draft, hook: str, **kwargs: object) -> list[object] | None:
        """Call ``draft``'s implementations of ``hook``, each bounded by
        :attr:`hook_timeout`; None when one raised or overran (recorded, its exception
        kept in ``draft.causes``)."""
        caller: pluggy.HookCaller = getattr(self._pm.hook, hook)
        results: list[object] = []
        for impl in caller.get_hookimpls():
            if impl.plugin_name != draft.name:
                continue
            deadline = asyncio.timeout(self.hook_timeout)
            try:
                async with deadline:
                    results.append(await await_me_maybe(impl.function(**_kwargs_for(
                        impl.function, kwargs
                    ))))
            except Exception as exc:
                if isinstance(exc, TimeoutError) and deadline.expired():
                    draft.problem(hook, f"did not return within {self.hook_timeout:g} s "
                                  "(the hook deadline, PluginManager(hook_timeout=...)); "
                                  "nothing of this load was kept")
                else:
                    draft.problem(hook, f"raised {type(exc).__name__}: {exc}")
                draft.causes.append(exc)
                return None
        return results

    async def _call_declaration_hooks(self, draft: Draft) -> None:
        infos = await self._call(draft, "register_plugin_info")
        if infos is not None:
            draft.set_info(infos)
        if draft.info is not None and draft.info.hook_api_version not in (
            hookspecs.SUPPORTED_HOOK_API_VERSIONS
        ):
            return  # its other hooks mean something this release does not know
        for hook, expected in DECLARATION_HOOKS.items():
            results = await self._call(draft, hook)
            if results is not None:
                draft.set_declarations(hook, expected, results)

    def _store(self, draft: Draft) -> LoadedPlugin:
        assert draft.info is not None  # a draft without info has a problem
        decl = draft.declarations
        loaded = LoadedPlugin(
            draft.name, draft.distribution, draft.version, draft.info,
            schemas=decl.get("register_key_schemas", ()),
            patterns=decl.get("register_cache_patterns", ()),
            sql=decl.get("register_sql", ()),
            views=decl.get("register_materialized_views", ()),
            rules=decl.get("register_invalidation_rules", ()),
            warmers=decl.get("register_warmers", ()),
            permissions=decl.get("register_permissions", ()),
        )
        for schema in loaded.schemas:
            self.registry.register(schema, owner=loaded.name)
        self._patterns.update((p.name, p) for p in loaded.patterns)
        self.plugins[loaded.name] = loaded
        queued = self._queued.pop(loaded.name, None)
        if queued is not None:
            self._unqueued[loaded.name] = queued
        return loaded

    def unload(self, name: str) -> None:
        """Forget a loaded plugin: its declarations, schemas and pluggy registration.

        Used by :class:`~thorbis_cache.app.CacheApp` to undo a start that failed after
        loading. A plugin that was added (not installed) is queued again, so a later
        :meth:`load` can retry it. The schema registry is replaced by a new one without
        the plugin's schemas (a cache built on the old one keeps them).

        :raises KeyError: no plugin of that name is loaded.
        """
        loaded = self.plugins.pop(name)
        queued = self._unqueued.pop(name, None)
        if queued is not None:
            self._queued[name] = queued
        if self._pm.has_plugin(name):
            self._pm.unregister(name=name)
        registry = SchemaRegistry()
        for schema in self.registry:
            owner = self.registry.owner(schema.name)
            if owner != name:
                registry.register(schema, owner=owner)
        self.registry = registry
        for pattern in loaded.patterns:
            self._patterns.pop(pattern.name, None)

    # ------------------------------------------------------------------ lifecycle

    async def notify_startup(self, app: hookspecs.StartedApp) -> None:
        """Call every loaded plugin's ``on_startup`` in load order.

        :raises PluginLoadError: one problem (hook ``on_startup``) per plugin that raised
            or overran :attr:`hook_timeout`; the others still ran. Its ``__cause__`` is
            the hook's exception (an :class:`ExceptionGroup` when several raised).
        """
        drafts = []
        for loaded in self.plugins.values():
            drafts.append(Draft(loaded.name, loaded.distribution, loaded.version))
            await self._call(drafts[-1], "on_startup", app=app)
        problems = [p for d in drafts for p in d.problems]
        if problems:
            raise PluginLoadError(problems) from _cause(drafts)

    # ------------------------------------------------------------------ lookups

    def pattern(self, name: str) -> CachePattern:
        """The cache pattern ``name`` of a loaded plugin.

        :raises UnknownPatternError: no loaded plugin declares it (also a ``KeyError``).
        """
        try:
            return self._patterns[name]
        except KeyError:
            raise UnknownPatternError(name, list(self._patterns)) from None

    def _flat(self, field: str) -> Iterator[Any]:
        for loaded in self.plugins.values():
            yield from getattr(loaded, field)

    def all_sql(self) -> list[SqlScript]:
        """Every loaded plugin's SQL scripts, plugins in load order, scripts in order.

        The ``all_*`` lists are flat; the owner of a declaration is the plugin whose
        namespace starts its name (or see :attr:`plugins`).
        """
        return list(self._flat("sql"))

    def all_views(self) -> list[MaterializedView]:
        """Every loaded plugin's materialized views, in load order."""
        return list(self._flat("views"))

    def all_rules(self) -> list[InvalidationRule]:
        """Every loaded plugin's invalidation rules, in load order."""
        return list(self._flat("rules"))

    def all_warmers(self) -> list[Warmer]:
        """Every loaded plugin's warmers, in load order."""
        return list(self._flat("warmers"))

    def all_permissions(self) -> list[Permission]:
        """Every loaded plugin's permissions, in load order."""
        return list(self._flat("permissions"))

    def all_patterns(self) -> list[CachePattern]:
        """Every loaded plugin's cache patterns, in load order."""
        return list(self._flat("patterns"))


def _cause(drafts: Iterable[Draft]) -> BaseException | None:
    """What the load error is raised ``from``: the one exception hooks raised, or an
    :class:`ExceptionGroup` of them; None when no hook raised."""
    causes = [c for d in drafts for c in d.causes]
    if len(causes) <= 1:
        return causes[0] if causes else None
    return BaseExceptionGroup(f"{len(causes)} plugin hooks raised", causes)


def _signature(function: Callable[..., object]) -> inspect.Signature | str:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):  # some builtins and C functions have none
        return "(...)"


def _required_params(function: Callable[..., object]) -> list[str]:
    """Names a call must supply (no default, not ``*args``/``**kwargs``)."""
    sig = _signature(function)
    if isinstance(sig, str):
        return []
    params = sig.parameters.values()
    return [p.name for p in params
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _kwargs_for(function: Callable[..., object], offered: dict[str, object]) -> dict[str, object]:
    """The hook arguments ``function`` takes, by keyword (it may take fewer than offered)."""
    if not offered:
        return {}
    params = inspect.signature(function).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(offered)
    return {k: v for k, v in offered.items() if k in params}
