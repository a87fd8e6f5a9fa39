"""``thorbis-cache stats``: memory and keys by tenant and schema from a bounded sample,
the hottest schemas and tenants, and recommendations.

The sample and its estimates are
:func:`thorbis_cache.observability.stats.sample_stats`'s; the recommendations
:func:`thorbis_cache.observability.recommendations.recommend`'s, from the sample and,
with ``--metrics-url``, a running process's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from thorbis_cache.cli import options
from thorbis_cache.errors import ConfigurationError

if TYPE_CHECKING:  # imported when the command runs, not at CLI start
    from thorbis_cache.observability.recommendations import MetricsSnapshot, Recommendation
    from thorbis_cache.observability.stats import GroupEstimate, KeyStats

__all__ = ["stats_command"]


def stats_command(
    redis_url: Annotated[str, options.REDIS_URL] = "",
    prefix: Annotated[str, options.PREFIX] = "tc",
    plugin: Annotated[list[str] | None, typer.Option(
        "--plugin", "-p", help="Plugin whose schemas keys are parsed with (repeatable; "
                               "default: every installed plugin).")] = None,
    sample: Annotated[int, typer.Option(min=1, help="Keys to sample in all (shared among "
                                                    "masters by their key counts).")] = 2000,
    batch: Annotated[int, typer.Option(min=1, max=10_000,
                                       help="SCAN COUNT per call.")] = 250,
    confidence: Annotated[float, typer.Option(
        min=0.5, max=0.99999, help="Confidence of the intervals.")] = 0.95,
    metrics_url: Annotated[str, typer.Option(
        "--metrics-url", help="A running process's /metrics (e.g. "
                              "http://worker-1:9464/metrics): hit ratios, hottest schemas "
                              "and tenants, latency.")] = "",
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a call may take.")] = 5.0,
    as_json: Annotated[bool, options.JSON] = False,
) -> None:
    """Estimate memory and key counts by tenant and by schema from a sampled SCAN (never
    KEYS) with MEMORY USAGE per sampled key, extrapolated by each master's DBSIZE, with
    an interval at --confidence; the hottest schemas and tenants (from --metrics-url);
    and recommendations, each with the figure that triggered it: low hit ratio, memory
    pressure and evictions, uneven access, slow operations, TTLs far from observed
    reuse (OBJECT IDLETIME; unavailable under an LFU policy).

    Exit status: 0 done, 1 an error (one line: Redis unreachable, bad input, an
    unreadable --metrics-url).
    """
    if not redis_url:
        raise ConfigurationError("no Redis URL: pass --redis-url or set THORBIS_REDIS_URL")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    stats, text = asyncio.run(_run(redis_url, prefix, plugin or None, sample, batch,
                                   confidence, metrics_url, timeout, err))
    from thorbis_cache.observability.recommendations import MetricsSnapshot, recommend

    try:
        snapshot = MetricsSnapshot.from_text(text) if text is not None else None
        found = recommend(stats, text)
    except ValueError as exc:
        raise ConfigurationError(f"{metrics_url} is not a Prometheus text: {exc}") from None
    if as_json:
        data = stats.as_dict()
        data["traffic"] = None if snapshot is None else {
            "schemas": dict(snapshot.hottest_schemas()),
            "tenants": dict(snapshot.hottest_tenants())}
        data["recommendations"] = [r.as_dict() for r in found]
        typer.echo(json.dumps(data, indent=2))
        return
    _print(stats, snapshot, found)


async def _run(redis_url: str, prefix: str, plugins: list[str] | None, sample: int,
               batch: int, confidence: float, metrics_url: str, within: float,
               err: Console) -> tuple[KeyStats, str | None]:
    from thorbis_cache.cli.health import fetch_metrics
    from thorbis_cache.observability.stats import sample_stats
    from thorbis_cache.plugins.manager import PluginManager
    from thorbis_cache.store.redis_store import RedisStore

    options.checked_prefix(prefix)
    text = None
    if metrics_url:
        text = await asyncio.to_thread(fetch_metrics, metrics_url, within)
    manager = PluginManager()
    await manager.load(plugins)
    async with RedisStore.from_url(redis_url, timeout=within) as store:
        with Progress(TextColumn("sampling keys"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                      console=err, transient=True) as progress:
            task = progress.add_task("sampling", total=sample)

            def advance(done: int, goal: int) -> None:
                progress.update(task, completed=done, total=goal)

            stats = await sample_stats(store, manager.registry, prefix=prefix,
                                       sample=sample, batch=batch, confidence=confidence,
                                       progress=advance)
    return stats, text


def _size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _group_table(title: str, groups: tuple[GroupEstimate, ...], stats: KeyStats) -> Table:
    table = Table(title=title, title_justify="left")
    for name in (title.split()[-1], "sampled", "keys (interval)", "share (interval)",
                 "memory (interval)"):
        table.add_column(name, overflow="fold")
    ttl = {p.schema: p for p in stats.ttl}
    if title.endswith("schema"):
        table.add_column("TTL")
        table.add_column("unread since written")
    for g in groups:
        row = [escape(g.name), str(g.sampled),
               f"{g.keys.value:.0f} ({g.keys.low:.0f}-{g.keys.high:.0f})",
               f"{g.share.value:.1%} ({g.share.low:.1%}-{g.share.high:.1%})",
               f"{_size(g.memory.value)} ({_size(g.memory.low)}-{_size(g.memory.high)})"]
        if title.endswith("schema"):
            p = ttl.get(g.name)
            row += ["-" if p is None else f"{p.ttl_s:.0f} s",
                    "-" if p is None or p.unread_share is None
                    else f"{p.unread_share:.0%} of {p.judged}"]
        table.add_row(*row)
    return table


def _print(stats: KeyStats, snapshot: MetricsSnapshot | None,
           found: list[Recommendation]) -> None:
    out = Console(highlight=False, soft_wrap=True, width=160)
    out.print(f"{stats.total_keys} keys on {len(stats.nodes)} master(s), about "
              f"{_size(stats.memory.value)} ({_size(stats.memory.low)}-"
              f"{_size(stats.memory.high)}) by MEMORY USAGE")
    out.print(stats.method)
    nodes = Table("master", "keys", "sampled", "used memory", "maxmemory", "policy",
                  "evicted keys", title="masters", title_justify="left")
    for n in stats.nodes:
        limit = int(float(n.info.get("maxmemory", 0)))
        nodes.add_row(n.address, str(n.dbsize), str(n.sampled) + (" (all)" if n.complete
                                                                   else ""),
                      _size(float(n.info.get("used_memory", 0))),
                      _size(limit) if limit else "no limit",
                      n.info.get("maxmemory_policy", "?"), n.info.get("evicted_keys", "?"))
    out.print(nodes)
    out.print(_group_table("by tenant", stats.by_tenant, stats))
    out.print(_group_table("by schema", stats.by_schema, stats))
    if stats.idle_unavailable:
        out.print(f"[yellow]TTL against reuse not judged: {escape(stats.idle_unavailable)}[/]")
    if snapshot is None:
        out.print("hit ratios, hottest schemas and tenants, latency: unknown from a CLI "
                  "process; pass --metrics-url with a running process's /metrics")
    else:
        schemas = ", ".join(f"{s} {r:.0f}" for s, r in snapshot.hottest_schemas()) or "none"
        tenants = ", ".join(f"{t} {r:.0f}" for t, r in snapshot.hottest_tenants()) or "none"
        out.print(f"hottest schemas (reads): {escape(schemas)}")
        out.print(f"hottest tenants (reads): {escape(tenants)}")
    if not found:
        out.print("recommendations: none")
    for r in found:
        out.print(f"[yellow]{r.kind}[/] {escape(r.subject)}: {escape(r.message)}")
