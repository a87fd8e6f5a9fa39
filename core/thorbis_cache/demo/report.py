"""The demo's report: rich panels of what each step measured and checked."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from thorbis_cache.demo.data import DemoOptions
from thorbis_cache.demo.database import DATABASE
from thorbis_cache.demo.results import Check, DemoResult, EncryptionResult, WorkloadResult
from thorbis_cache.envelope import FLAG_COMPRESSED, FLAG_ENCRYPTED, FLAG_TIMING
from thorbis_cache.testing.servers import PostgresServer, RedisServer

__all__ = [
    "checks_panel",
    "encryption_panel",
    "read_progress",
    "servers_panel",
    "summary_line",
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


def servers_panel(
    options: DemoOptions, redis: RedisServer, postgres: PostgresServer, rows: int, setup_s: float
) -> Panel:
    """The servers started, the data set loaded and how long that took."""
    grid = Table.grid(padding=(0, 2))
    grid.add_row("Redis", f"{redis.binaries.version_string} at {redis.host}:{redis.port}")
    grid.add_row(
        "PostgreSQL",
        f"{postgres.binaries.version_string} at {postgres.host}:{postgres.port}, "
        f"database {DATABASE}",
    )
    grid.add_row(
        "Data",
        f"{rows} customers: {options.customers} for each of {', '.join(options.tenant_names())}",
    )
    grid.add_row("Ready in", f"{setup_s:.1f} s (ephemeral servers, stopped on exit)")
    return Panel(grid, title="thorbis-cache demo", title_align="left", expand=False)


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
        f"in {w.elapsed_s:.1f} s\n"
        f"PostgreSQL: {w.db_queries} queries for {w.reads} reads "
        f"({w.distinct_keys} distinct keys) = [bold]{w.queries_saved}[/] saved\n"
        f"cache.metrics: hits {m['hits']:.0f} · misses {m['misses']:.0f} · "
        f"loads {m['loads']:.0f} · coalesced {m['coalesced']:.0f}"
    )
    title = (
        f"{w.reads} reads · Zipf s={options.zipf:g} · {options.tenants} tenants x "
        f"{options.customers} customers · {options.concurrency} readers"
    )
    return Panel(Group(table, summary), title=title, title_align="left", expand=False)


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


def summary_line(result: DemoResult, total_s: float) -> str:
    """The closing line: checks passed (red when any failed) and the total time."""
    passed = sum(c.passed for c in result.checks)
    style = "green" if result.ok else "bold red"
    return (
        f"[{style}]{passed}/{len(result.checks)} checks passed[/]; servers stopped; "
        f"total {total_s:.1f} s"
    )
