"""The demo's report: rich panels of what each step measured and checked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from thorbis_cache.cache.envelope import FLAG_COMPRESSED, FLAG_ENCRYPTED, FLAG_TIMING
from thorbis_cache.demo.data import DemoOptions
from thorbis_cache.demo.database import DATABASE
from thorbis_cache.demo.results import (
    Check,
    DataResult,
    DemoResult,
    EncryptionResult,
    PluginResult,
    VerticalsResult,
    WorkloadResult,
)
from thorbis_cache.testing.servers import PostgresServer, RedisServer

__all__ = [
    "checks_panel",
    "encryption_panel",
    "plugin_panel",
    "read_progress",
    "servers_panel",
    "summary_line",
    "verticals_panel",
    "workload_panel",
]

_FLAG_NAMES = (
    (FLAG_ENCRYPTED, "encrypted"),
    (FLAG_COMPRESSED, "compressed"),
    (FLAG_TIMING, "timing"),
)


def _duration(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns < 1_000_000:
        return f"{ns / 1000:.0f} µs"
    return f"{ns / 1_000_000:.2f} ms"


# Tables of the data set as shown, in this order, with the label used.
_TABLE_LABELS = (
    ("customers", "customers"),
    ("work_orders", "work orders"),
    ("invoices", "invoices"),
    ("quality_control_inspections", "inspections"),
    ("technicians", "technicians"),
    ("service_areas", "service areas"),
)


def _seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def servers_panel(
    options: DemoOptions,
    redis: RedisServer,
    postgres: PostgresServer,
    data: DataResult,
    setup_s: float,
) -> Panel:
    """The servers started, the plugin's data set loaded, its views refreshed, and how
    long that took."""
    grid = Table.grid(padding=(0, 2))
    grid.add_row("Redis", f"{redis.binaries.version_string} at {redis.host}:{redis.port}")
    grid.add_row(
        "PostgreSQL",
        f"{postgres.binaries.version_string} at {postgres.host}:{postgres.port}, "
        f"database {DATABASE}",
    )
    rows = ", ".join(f"{data.rows.get(t, 0):,} {label}" for t, label in _TABLE_LABELS)
    grid.add_row(
        "Data",
        f"hs.* of {', '.join(data.tenants)} (datagen, seed {options.seed}): {rows}; "
        f"loaded in {_seconds(data.load_s)}",
    )
    grid.add_row("Views", f"{len(data.views)} refreshed in {_seconds(data.refresh_s)}")
    grid.add_row("Ready in", f"{setup_s:.1f} s (ephemeral servers, stopped on exit)")
    return Panel(grid, title="thorbis-cache demo", title_align="left", expand=False)


def plugin_panel(p: PluginResult) -> Panel:
    """The plugin as loaded, its work-order board and a predicted next service."""
    d = p.declared
    lines = [
        f"namespace [bold]{p.namespace}[/] · hook API {p.hook_api_version} · "
        f"CacheApp.start {_seconds(p.start_s)} (SQL, views, rule checks)",
        " · ".join(f"{n} {what}" for what, n in d.items()),
        f"warmer {p.warmer} for {p.tenant}: {p.warmed} entries in {_seconds(p.warm_s)}",
        f"{p.board_pattern}({p.tenant}, limit={p.board_limit}) in {_duration_s(p.board_s)}:",
    ]
    board = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
    for column in ("  work order", "status", "priority", "scheduled (UTC)", "customer"):
        board.add_column(column, style="dim" if column == "customer" else None)
    for row in p.board:
        order = row.order
        board.add_row(
            f"  {row.work_order_id}",
            row.status.value,
            order.priority.value if order else "?",
            f"{order.scheduled_at:%Y-%m-%d %H:%M}" if order else "?",
            str(order.customer_id) if order else "?",
        )
    call = f"{p.predict_pattern}({p.tenant}, customer_id={p.customer_id})"
    n = p.prediction
    if n is None:
        predicted = f"{call}: none ({len(p.history)} completed services)"
    else:
        # Past due is what the formula says for a customer who skipped a visit; say so
        # rather than let a date before today look like a bug.
        late = " (overdue)" if n.due_at < dt.datetime.now(dt.UTC) else ""
        predicted = (
            f"{call} in {_duration_s(p.predict_s)}, {n.services} services:\n"
            f"  last {n.last_service_at:%Y-%m-%d} + median interval {n.interval.days} d "
            f"→ due [bold]{n.due_at:%Y-%m-%d}[/]{late}"
        )
    body = Group(*lines, board, predicted, *(_mark(c) for c in p.checks))
    where = f"({p.distribution})" if p.distribution else ""
    title = " ".join(part for part in ("Plugin", p.name, p.version, where) if part)
    return Panel(body, title=title, title_align="left", expand=False)


def read_progress(console: Console) -> Progress:
    """A transient progress bar for the workload's reads."""
    return Progress(
        TextColumn("reads"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def workload_panel(w: WorkloadResult, options: DemoOptions) -> Panel:
    """Counts, shares and latencies of the workload's calls, and what they saved."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("get_or_load calls")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p99", justify="right")
    for label, count, lat in (
        ("hits", w.hits, w.hit_latency),
        ("misses (loader ran)", w.misses, w.miss_latency),
        ("coalesced (waited)", w.coalesced, w.coalesced_latency),
    ):
        share = f"{count / w.reads:.1%}"
        table.add_row(label, str(count), share, _duration(lat.p50_ns), _duration(lat.p99_ns))
    table.add_section()
    for label, lat in (
        ("then warm cache.get", w.warm_get_latency),
        ("anchor: raw GET", w.raw_get_latency),
    ):
        table.add_row(
            f"[dim]{label}[/]", f"[dim]{lat.count}[/]", "",
            f"[dim]{_duration(lat.p50_ns)}[/]", f"[dim]{_duration(lat.p99_ns)}[/]",
        )  # fmt: skip
    m = w.metrics
    summary = (
        f"hit ratio [bold]{w.hit_ratio:.1%}[/] · {w.reads / w.elapsed_s:,.0f} reads/s "
        f"by {options.concurrency} readers in {w.elapsed_s:.1f} s\n"
        f"PostgreSQL: {w.db_queries} queries for {w.reads} reads "
        f"({w.distinct_keys} distinct keys) = [bold]{w.queries_saved}[/] saved\n"
        f"cache.metrics: hits {m['hits']:.0f} · misses {m['misses']:.0f} · "
        f"loads {m['loads']:.0f} · coalesced {m['coalesced']:.0f}"
    )
    title = (
        f"{w.reads} reads of hs.customer_summary · Zipf s={options.zipf:g} · "
        f"{options.tenants} x {options.customers} customers"
    )
    return Panel(Group(table, summary), title=title, title_align="left", expand=False)


def _duration_s(seconds: float) -> str:
    return _duration(round(seconds * 1e9))


def _hexdump(data: bytes, width: int = 16) -> str:
    lines = []
    for start in range(0, len(data), width):
        chunk = data[start : start + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:04x}  {chunk.hex(' '):<{width * 3}} {text}")
    return "\n".join(lines)


def _mark(check: Check) -> str:
    mark = "[green]✓[/]" if check.passed else "[bold red]✗[/]"
    detail = f" [dim]({escape(check.detail)})[/]" if check.detail else ""
    return f"{mark} {escape(check.name)}{detail}"


def encryption_panel(e: EncryptionResult) -> Panel:
    """The stored entry's header, explained, a hex dump of its start, and the checks."""
    flags = e.raw[3]
    names = [name for flag, name in _FLAG_NAMES if flags & flag]
    header = (
        f"[bold]{escape(e.redis_key)}[/]  {len(e.raw)} bytes, first 64:\n"
        f"[dim]magic TC, format {e.raw[2]}, flags {'+'.join(names) or 'none'}, "
        f"key id {escape(e.key_id)}, 12-byte nonce, then AES-256-GCM ciphertext + tag "
        f"(AAD = the Redis key)[/]"
    )
    body = Group(header, _hexdump(e.raw[:64]), *(_mark(c) for c in e.checks))
    return Panel(body, title="An encrypted entry as stored", title_align="left", expand=False)


def checks_panel(title: str, checks: Sequence[Check], logs: Sequence[str]) -> Panel:
    """A scene's checks, then the log lines it captured."""
    lines = [_mark(c) for c in checks]
    lines += [f"[dim]logged: {escape(line)}[/]" for line in logs]
    return Panel("\n".join(lines), title=title, title_align="left", expand=False)


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.1%}"


def verticals_panel(v: VerticalsResult, options: DemoOptions) -> Panel:
    """The closing summary: one line per vertical, then the scene's checks."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
    for name in ("vertical", "hit %", "p50", "p99", "seen", "inval.", "view/other",
                 "refreshes"):
        table.add_column(name, justify="left" if name in ("vertical", "refreshes") else "right",
                         no_wrap=True)
    for r in v.verticals:
        refreshes = " ".join(f"{n} {trigger}" for trigger, n in r.refreshes) or "none"
        if r.failed_refreshes:
            refreshes += f" [red]{r.failed_refreshes} failed[/]"
        table.add_row(
            r.title, f"{r.hit_ratio:.1%}",
            _duration(r.latency.p50_ns), _duration(r.latency.p99_ns),
            f"{r.verified}/{r.changes}", f"{r.keys_invalidated}/{r.tags_invalidated}",
            f"{_percent(r.view_hit_ratio)}/{_percent(r.other_hit_ratio)}",
            refreshes,
        )
    rows = ", ".join(f"{r.title} {r.rows:,}" for r in v.verticals)
    rates = ", ".join(f"{r.title} {r.reads_per_s:,.0f}" for r in v.verticals)
    notes = " · ".join((
        f"tenants {', '.join(v.tenants)}, each running every vertical; rows loaded: {rows}",
        f"hit %: {options.vertical_reads:,} reads per vertical by {options.concurrency} "
        f"readers from a cold cache (reads/s: {rates})",
        "p50/p99: the same reads replayed one at a time (all hits)",
        "seen: changes committed in PostgreSQL, applied by the outbox worker, then read "
        "back through the cache",
        "inval.: keys/tags the worker invalidated for them",
        "view/other: hit % of reads while changes commit and the worker runs, on entries "
        "that mirror a materialized view (dropped by its refresh only) and on the others",
        "refreshes: ok view refreshes by trigger (smart: the scheduler's tick; manual: "
        "views it left stale after the bulk load)",
    ))
    mix = "; ".join(f"{r.title}: " + ", ".join(f"{name} {n}" for name, n in r.read_mix)
                    for r in v.verticals)
    lines = [_mark(c) for c in v.checks]
    return Panel(Group(table, f"[dim]{escape(notes)}\nreads: {escape(mix)}[/]",
                       "\n".join(lines)),
                 title=f"Every vertical, end to end ({v.seconds:.1f} s)", title_align="left",
                 expand=False)


def summary_line(result: DemoResult, total_s: float) -> str:
    """The closing line: checks passed (red when any failed) and the total time."""
    passed = sum(c.passed for c in result.checks)
    style = "green" if result.ok else "bold red"
    return (
        f"[{style}]{passed}/{len(result.checks)} checks passed[/]; servers stopped; "
        f"total {total_s:.1f} s"
    )
