"""The core's modules depend on each other one way: no import circle, not even through
an import made for typing only or inside a function, and no package importing one of a
layer above it (issue 17). A module that needs something of a layer above it takes it as
an argument typed by a protocol of its own (``cache.protocol.CacheCore``,
``plugins.hookspecs.StartedApp``, ``cache.near.Invalidation``,
``cache.tags.InvalidatesTags``)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core" / "thorbis_cache"


def _modules() -> dict[str, Path]:
    found = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of this package it imports (anywhere in its source)."""

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for target in targets:
                if target.startswith("thorbis_cache"):
                    found = known(target)
                    # A package importing its own modules is its public face, not a layer.
                    if found and found != name and not found.startswith(name + "."):
                        graph[name].add(found)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_no_import_circles() -> None:
    graph = _graph(_modules())
    circles = _circles(graph)
    described = [" <-> ".join(c) + ": " + "; ".join(
        f"{m} imports {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in circles]
    assert not circles, "\n".join(described)


def test_the_check_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_typing_and_function_level_imports() -> None:
    graph = _graph(_modules())
    # cli/plugins imports the plugin manager inside its command only.
    assert "thorbis_cache.plugins.manager" in graph["thorbis_cache.cli.plugins"]
    # The worker imports the capture check inside check_capture.
    assert "thorbis_cache.postgres.capture_check" in graph["thorbis_cache.invalidation.worker"]


#: The core's parts, lowest first: a part imports only parts of lower layers (and its own
#: modules). ``__init__`` is the package's public face (``from thorbis_cache import ...``).
LAYERS: list[set[str]] = [
    {"errors", "_lazy", "deploy_examples"},
    {"transport"},       # the hot commands' multiplexed connections
    {"store"},           # Redis: the store, its URLs, replica reads, the circuit breaker
    {"cache"},           # the read path, its codec, keys, near cache, tags and events
    {"warming"},
    {"plugins"},         # hook specs, declarations, their checks, the manager
    {"postgres"},        # the only part that talks to PostgreSQL
    {"app"},
    {"invalidation", "mv"},  # the worker and view refresh, both driven by the app
    {"observability"},
    {"__init__"},
    {"testing"},
    {"demo"},
    {"cli"},
]


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer_of() -> dict[str, int]:
    return {part: level for level, parts in enumerate(LAYERS) for part in parts}


def test_every_part_has_a_layer() -> None:
    parts = {_part(m) for m in _modules()} - {"lua"}
    assert parts == set(_layer_of()), "add the new part to LAYERS (or remove a gone one)"


def _upward(graph: dict[str, set[str]], layer: dict[str, int]) -> list[str]:
    """Each import of a part of the same or a higher layer, as a sentence."""
    return sorted(
        f"{module} (layer {layer[_part(module)]}) imports {target} "
        f"(layer {layer[_part(target)]})"
        for module, targets in graph.items() for target in targets
        if _part(target) != _part(module) and layer[_part(target)] >= layer[_part(module)])


def test_parts_import_only_lower_layers() -> None:
    upward = _upward(_graph(_modules()), _layer_of())
    assert not upward, "\n".join(upward)


def test_the_layer_check_finds_an_upward_import() -> None:
    layer = {"cache": 0, "app": 1, "mv": 2, "invalidation": 2}
    graph = {"p.cache.core": {"p.app"}, "p.app": {"p.cache.keys"}, "p.cache.keys": set(),
             "p.mv.refresh": {"p.invalidation.worker", "p.mv.scheduler"}}
    assert _upward(graph, layer) == [
        "p.cache.core (layer 0) imports p.app (layer 1)",
        "p.mv.refresh (layer 2) imports p.invalidation.worker (layer 2)"]


def test_modules_plugins_imported_from_the_top_level_still_import() -> None:
    import thorbis_cache
    from thorbis_cache import declarations, hookspecs
    from thorbis_cache.plugins import declarations as moved_declarations
    from thorbis_cache.plugins import hookspecs as moved_hookspecs

    assert declarations is moved_declarations
    assert hookspecs is moved_hookspecs
    assert thorbis_cache.declarations.InvalidationRule is moved_declarations.InvalidationRule
