"""What the capture triggers cost the host's writes, per variant of their storage and work.

    .venv/bin/python bench/capture_variants.py              # about 8 minutes on 2 cores
    .venv/bin/python bench/capture_variants.py --quick      # smoke run, about 40 s
    .venv/bin/python bench/capture_variants.py --repeat 5 --variants trigger,guard,row
    .venv/bin/python bench/capture_variants.py --list       # the modifiers and what they do

On one private PostgreSQL set up as ``bench/capture.py`` does (home_services, 20,000
customers; ``capture.setup_db``), every repetition runs every variant in turn (the order
flips every repetition). A variant is ``none`` (no capture: the anchor, always run),
``trigger`` (the capture triggers as ``db init`` installs them) or modifiers joined by
``+``, applied with SQL after installing the triggers (``--list``):

* storage: ``unlogged`` (an UNLOGGED outbox, its index and sequence too), ``nopkey``
  (no index at all on the outbox);
* the UPDATE function: ``noguc`` (without its ``SET enable_nestloop = off``), ``guard``
  (without it, multi-row statements running the INSERT through EXECUTE), ``row``
  (row-level triggers instead of statement-level ones);
* ``standin``: the by-name capture a migration that renamed a watched column gets
  (``sql/core/007_capture_ddl.sql``), until ``db init`` regenerates the triggers;
* diagnostics, not correct capture: ``narrow`` (a 3-column INSERT from the new rows
  only), ``empty``/``emptystmt``/``emptyrow`` (functions that return NULL at once: the
  floor of a trigger approach).

Modifiers touch ``hs.customers`` (the table written) and ``thorbis.outbox`` only, and
everything is put back before the next variant. Per variant and repetition, after
``capture.fresh`` (empty outbox, vacuumed table):

* ``pgbench`` single-row ``UPDATE hs.customers SET phone`` by primary key
  (``capture.pgbench``) at 8 then at 1 connections for ``--seconds`` each: tx/s, and
  CPU per transaction of the server backends (the postmaster's reaped children) and of
  pgbench; at 8 connections also WAL bytes per transaction and the outbox's size per row;
* the worker's claim (``thorbis_cache.postgres.outbox.claim_batch``, 1,000 rows) on the
  backlog the 8 connections left, rolled back: ms (what dropping the index costs it);
* one UPDATE of 10,000 rows (``capture.BULK_SQL``), timed by the client, in a session
  whose first UPDATE was a single-row one (PL/pgSQL keeps the plan of its first call).

Medians across repetitions; each ratio is the median of the per-repetition ratios
variant / ``none`` (issue 14: the trigger path should keep >= 0.85x at 1 and 8
connections, and the 10,000-row UPDATE <= 1.5x). A report, not a test: exit status 0
whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import capture  # a sibling script module, found through the line above

from thorbis_cache.postgres.capture_ddl import ensure_ddl_guard
from thorbis_cache.postgres.catalog import PK_COLUMNS, quote_ident
from thorbis_cache.postgres.outbox import claim_batch
from thorbis_cache.postgres.outbox_images import Shape, register_shape, value_sql
from thorbis_cache.postgres.triggers import (
    KEY_TRIGGER,
    TRIGGERS,
    TablePlan,
    plan_tables,
)
from thorbis_cache.testing.servers import PostgresServer

TABLE = "hs.customers"  # the table the pgbench script writes
SCHEMA = "bench_variants"  # the variants' own functions; dropped (CASCADE) between variants
CLAIM_ROWS = 1000
UPDATE_TRIGGER = next(name for op, name in TRIGGERS.items() if op.value == "UPDATE")


# --------------------------------------------------------------------------- modifiers

Modifier = Callable[[asyncpg.Connection, TablePlan], Awaitable[None]]


async def _prosrc(conn: asyncpg.Connection, function: str) -> str:
    """The body of a generated capture function (``function`` as the plan names it)."""
    return str(await conn.fetchval("SELECT prosrc FROM pg_proc WHERE oid = $1::regprocedure",
                                   f"{function}()"))


async def _function(conn: asyncpg.Connection, name: str, body: str) -> str:
    """Create ``bench_variants.<name>()`` (a PL/pgSQL trigger function, no SET clause)."""
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    qualified = f"{SCHEMA}.{name}"
    await conn.execute(f"CREATE FUNCTION {qualified}() RETURNS trigger LANGUAGE plpgsql "
                       f"AS $variant${body}$variant$")
    return qualified


async def _statement_update(conn: asyncpg.Connection, function: str, *,
                            transition: bool = True) -> None:
    """Point the statement-level UPDATE capture trigger of ``TABLE`` at ``function``."""
    await conn.execute(f"DROP TRIGGER IF EXISTS {UPDATE_TRIGGER} ON {TABLE}")
    referencing = ("REFERENCING OLD TABLE AS thorbis_old NEW TABLE AS thorbis_new "
                   if transition else "")
    await conn.execute(f"CREATE TRIGGER {UPDATE_TRIGGER} AFTER UPDATE ON {TABLE} "
                       f"{referencing}FOR EACH STATEMENT EXECUTE FUNCTION {function}()")


async def _row_update(conn: asyncpg.Connection, plan: TablePlan, function: str) -> None:
    """Replace the UPDATE capture of ``TABLE`` (its statement-level trigger) by one
    row-level AFTER UPDATE trigger running ``function`` (``WHEN`` the rules' significant
    columns changed, if the plan has an update filter)."""
    for name in (UPDATE_TRIGGER, KEY_TRIGGER):
        await conn.execute(f"DROP TRIGGER IF EXISTS {name} ON {TABLE}")
    when = ""
    if plan.update_filter:
        changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in plan.update_filter)
        when = f"WHEN ({changed}) "
    await conn.execute(f"CREATE TRIGGER {UPDATE_TRIGGER} AFTER UPDATE ON {TABLE} "
                       f"FOR EACH ROW {when}EXECUTE FUNCTION {function}()")


async def unlogged(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """ALTER TABLE thorbis.outbox SET UNLOGGED (PostgreSQL 15: its index and its id
    sequence too): no WAL for outbox rows; emptied by crash recovery, absent on standbys."""
    await conn.execute("ALTER TABLE thorbis.outbox SET UNLOGGED")


async def nopkey(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """Drop outbox_pkey, the outbox's only index (the claim's ORDER BY id LIMIT uses it):
    a heap insert per row, no btree insert; the claim scans and sorts the whole table."""
    await conn.execute("ALTER TABLE thorbis.outbox DROP CONSTRAINT outbox_pkey")


async def noguc(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """The shipped UPDATE function without ``SET enable_nestloop = off`` (no GUC save and
    restore per call; the 10,000-row UPDATE may then be planned as a nested loop)."""
    body = await _prosrc(conn, plan.update_function_name)
    await _statement_update(conn, await _function(conn, "update_noguc", body))


async def invoker(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """The shipped functions run as the writer, as before core 009 (no ``SECURITY
    DEFINER``, no ``search_path`` of their own: no GUC save and restore per call)."""
    for name in (plan.function_name, plan.update_function_name):
        await conn.execute(f"ALTER FUNCTION {name}() SECURITY INVOKER RESET search_path")


def _insert_of(body: str) -> str:
    """The one ``INSERT INTO thorbis.outbox ...`` statement of a generated function body
    (without its semicolon)."""
    start = body.index("INSERT INTO thorbis.outbox")
    return body[start:body.index(";", start)]


async def guard(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """The shipped UPDATE function without its SET clause, the bulk plan kept safe another
    way: a statement of more than one row runs the same INSERT through EXECUTE (planned
    for the rows it has: hashed), a single-row one the cached plan (a nested loop);
    one extra query (EXISTS ... OFFSET 1) per statement."""
    insert = _insert_of(await _prosrc(conn, plan.update_function_name))
    body = ("\nBEGIN\n    IF EXISTS (SELECT FROM thorbis_new OFFSET 1) THEN\n"
            f"        EXECUTE $insert${insert}$insert$;\n    ELSE\n        {insert};\n"
            "    END IF;\n    RETURN NULL;\nEND\n")
    await _statement_update(conn, await _function(conn, "update_guard", body))


async def _layout(conn: asyncpg.Connection, plan: TablePlan) -> tuple[Shape, dict[str, str]]:
    """The registered image layout of ``TABLE`` and its columns' types."""
    types = {r[0]: r[1] for r in await conn.fetch(
        "SELECT attname::text, atttypid::regtype::text FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped", TABLE)}
    pk = [r[0] for r in await conn.fetch(PK_COLUMNS, TABLE)]
    return await register_shape(conn, TABLE, pk, plan.columns, types), types


async def row(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """Row-level AFTER UPDATE trigger (INSERT ... VALUES of the shipped images from
    OLD/NEW) instead of the statement-level one: no transition tables, no join; one
    PL/pgSQL call and one INSERT per row changed."""
    shape, types = await _layout(conn, plan)

    def array(record: str) -> str:
        return "ARRAY[" + ", ".join(value_sql(record, quote_ident(c), types[c])
                                    for c in shape.columns) + "]::text[]"

    body = ("BEGIN INSERT INTO thorbis.outbox (table_name, operation, tenant_id, shape, "  # noqa: S608
            f"old_values, new_values) VALUES ('{TABLE}', 'UPDATE', "
            f"NEW.{quote_ident(plan.tenant_column)}::text, {shape.id}, {array('OLD')}, "
            f"{array('NEW')}); RETURN NULL; END")
    await _row_update(conn, plan, await _function(conn, "update_row", body))


async def narrow(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """DIAGNOSTIC, not capture: the statement-level function inserts (table_name,
    operation, new_values = [tenant, id]) from the new rows only (no join, no old image,
    no shape, tenant column or text casts of other columns)."""
    body = (  # constants of this script
        f"BEGIN INSERT INTO thorbis.outbox (table_name, operation, new_values) "  # noqa: S608
        f"SELECT '{TABLE}', 'UPDATE', ARRAY[n.tenant_id::text, n.id::text] "
        "FROM thorbis_new n; RETURN NULL; END")
    await _statement_update(conn, await _function(conn, "update_narrow", body))


async def empty(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """DIAGNOSTIC floor: the shipped statement-level UPDATE trigger (transition tables)
    running a function that returns NULL at once (no SET clause, no INSERT)."""
    await _statement_update(conn, await _function(conn, "nothing", "BEGIN RETURN NULL; END"))


async def emptystmt(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """DIAGNOSTIC floor: as ``empty`` but without transition tables (what capturing the
    old and new rows into tuplestores costs)."""
    function = await _function(conn, "nothing", "BEGIN RETURN NULL; END")
    await _statement_update(conn, function, transition=False)


async def emptyrow(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """DIAGNOSTIC floor of any trigger: one row-level AFTER UPDATE trigger returning NULL
    (the statement-level and key triggers dropped)."""
    await _row_update(conn, plan, await _function(conn, "nothing", "BEGIN RETURN NULL; END"))


async def standin(conn: asyncpg.Connection, plan: TablePlan) -> None:
    """The stand-in capture a migration gets (``thorbis.capture_standin__...``, put in
    place by the event trigger ``thorbis_capture_ddl`` when a watched column is renamed):
    a column renamed and renamed back, so the stand-in names all the rules' columns but
    one and only the capture differs (jsonb_build_object of the watched columns into
    the outbox's jsonb columns instead of text arrays and a shape)."""
    assert await ensure_ddl_guard(conn) is None, "the bench runs as a superuser"
    watched = sorted(set(plan.columns) - {"tenant_id", "id"})[0]
    await conn.execute(f"ALTER TABLE {TABLE} RENAME COLUMN {watched} TO {watched}_renamed")
    await conn.execute(f"ALTER TABLE {TABLE} RENAME COLUMN {watched}_renamed TO {watched}")
    assert await conn.fetchval("SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON "
                               "p.oid = t.tgfoid WHERE p.proname LIKE 'capture_standin%'")


#: Modifiers a variant joins with ``+``, applied in this order after the triggers.
MODIFIERS: dict[str, Modifier] = {
    "row": row, "noguc": noguc, "guard": guard, "narrow": narrow, "empty": empty,
    "emptystmt": emptystmt, "emptyrow": emptyrow, "unlogged": unlogged, "nopkey": nopkey,
    "standin": standin, "invoker": invoker,
}
DEFAULT_VARIANTS = ("none", "trigger", "unlogged", "nopkey", "unlogged+nopkey", "noguc",
                    "guard", "guard+unlogged", "guard+nopkey", "guard+unlogged+nopkey", "row",
                    "narrow", "empty", "emptyrow")
QUICK_VARIANTS = ("none", "trigger", "unlogged+nopkey", "guard", "row", "empty")


def parse_variant(spec: str) -> tuple[str, ...]:
    """``none``, ``trigger`` or ``a+b``: the modifiers, in :data:`MODIFIERS` order."""
    if spec in ("none", "trigger"):
        return ()
    names = spec.split("+")
    unknown = [n for n in names if n not in MODIFIERS]
    if unknown:
        raise ValueError(f"unknown modifier(s) {', '.join(unknown)} in {spec!r}; known: "
                         f"{', '.join(MODIFIERS)}")
    return tuple(n for n in MODIFIERS if n in names)


async def reset(conn: asyncpg.Connection) -> None:
    """Undo every modifier: the variants' functions (and the triggers running them), a
    logged outbox with its primary key."""
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await conn.execute("TRUNCATE thorbis.outbox")
    await conn.execute("ALTER TABLE thorbis.outbox SET LOGGED")
    if not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_index WHERE indisprimary "
                               "AND indrelid = 'thorbis.outbox'::regclass)"):
        await conn.execute("ALTER TABLE thorbis.outbox ADD CONSTRAINT outbox_pkey "
                           "PRIMARY KEY (id)")


async def apply(conn: asyncpg.Connection, manager: Any, plan: TablePlan, spec: str) -> None:
    """Leave the database capturing as variant ``spec`` does."""
    await reset(conn)
    await capture.MODES["none" if spec == "none" else "trigger"](conn, manager)
    for name in parse_variant(spec):
        await MODIFIERS[name](conn, plan)


# --------------------------------------------------------------------------- one run


def _reaped_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster's exited children so far (``cutime`` + ``cstime``):
    pgbench's backends are counted once they have exited and been reaped."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (pgbench, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def bench(server: PostgresServer, clients: int, seconds: float
                ) -> tuple[float, float, float]:
    """One pgbench run: tx/s, and CPU per transaction (us) of its backends (the server)
    and of pgbench itself (the client)."""
    postmaster = server.pid or 0
    server_before, client_before = _reaped_cpu(postmaster), _children_cpu()
    result = await asyncio.to_thread(capture.pgbench, server, clients, seconds)
    await asyncio.sleep(0.3)  # the backends exit and the postmaster reaps them
    transactions = result.tps * max(1, round(seconds))
    return (result.tps, (_reaped_cpu(postmaster) - server_before) / transactions * 1e6,
            (_children_cpu() - client_before) / transactions * 1e6)


async def _lsn(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))


async def claim_ms(conn: asyncpg.Connection) -> float | None:
    """Median ms of three claims of :data:`CLAIM_ROWS` rows, each rolled back; None when
    the outbox is empty."""
    if not await conn.fetchval("SELECT EXISTS (SELECT FROM thorbis.outbox)"):
        return None
    times = []
    for _ in range(3):
        transaction = conn.transaction()
        await transaction.start()
        try:
            started = time.perf_counter()
            await claim_batch(conn, CLAIM_ROWS)
            times.append((time.perf_counter() - started) * 1000)
        finally:
            await transaction.rollback()
    return statistics.median(times)


async def measure(server: PostgresServer, conn: asyncpg.Connection, seconds: float
                  ) -> dict[str, float | None]:
    """One variant, already applied: the figures of one repetition."""
    figures: dict[str, float | None] = {}
    await capture.fresh(conn)
    before = await _lsn(conn)
    figures["tps_8"], figures["cpu_8"], figures["client_8"] = await bench(server, 8, seconds)
    figures["tx_per_cpu_8"] = 1e6 / (figures["cpu_8"] + figures["client_8"])
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)",
                              before)
    figures["wal_per_tx"] = float(wal) / (figures["tps_8"] * max(1, round(seconds)))
    rows, size = await conn.fetchrow("SELECT count(*), pg_total_relation_size("
                                     "'thorbis.outbox') FROM thorbis.outbox")
    figures["outbox_rows"] = float(rows)
    figures["bytes_per_row"] = size / rows if rows else None
    figures["claim_ms"] = await claim_ms(conn)
    await capture.fresh(conn)
    figures["tps_1"], figures["cpu_1"], _ = await bench(server, 1, seconds)
    await capture.fresh(conn)
    # A single-row UPDATE first, in the same session: PL/pgSQL keeps the plan its
    # function's INSERT got on first use, as an application's session would.
    await conn.execute("UPDATE hs.customers SET phone = 'warm' WHERE tenant_id = $1 "
                       "AND id = 1", capture.BULK_TENANT)
    started = time.perf_counter()
    await conn.execute(capture.BULK_SQL, capture.BULK_TENANT, f"b{time.monotonic_ns()}")
    figures["bulk_ms"] = (time.perf_counter() - started) * 1000
    return figures


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or a dash as wide."""
    return format("-", f">{spec.split('.')[0]}") if value is None else format(value, spec)


def table(runs: dict[str, list[dict[str, float | None]]]) -> dict[str, dict[str, float]]:
    """Medians per variant and median per-repetition ratios against ``none``; printed."""
    anchor = runs.get("none")
    rows: dict[str, dict[str, float]] = {}
    for spec, reps in runs.items():
        row: dict[str, float] = {}
        for name in reps[0]:
            values = [r[name] for r in reps if r[name] is not None]
            if values:
                row[name] = statistics.median(values)
        if anchor is not None:
            for name in ("tps_8", "tx_per_cpu_8", "tps_1", "bulk_ms"):
                row[f"{name}_ratio"] = statistics.median(
                    r[name] / a[name] for r, a in zip(reps, anchor, strict=True))
        rows[spec] = row
    print(f"\n{'':<24}{'------------------ 8 connections ------------------':>52}"
          f"{'----- 1 connection -----':>26}")
    print(f"{'variant':<24}{'tx/s':>7}{'ratio':>6}{'>=.85':>6}{'srv us':>7}{'cli us':>7}"
          f"{'cpu ratio':>10}{'WAL B':>7}{'tx/s':>8}{'ratio':>6}{'srv us':>7}"
          f"{'10k UPD ms':>11}{'ratio':>6}{'B/row':>6}{'claim ms':>9}")
    for spec, row in rows.items():
        ratio_8 = row.get("tps_8_ratio")
        mark = "" if ratio_8 is None or spec == "none" else (
            "PASS" if ratio_8 >= capture.SINGLE_MIN else "miss")
        print(f"{spec:<24}{row['tps_8']:7.0f}{_fmt(ratio_8, '6.2f')}{mark:>6}"
              f"{row['cpu_8']:7.1f}{row['client_8']:7.1f}"
              f"{_fmt(row.get('tx_per_cpu_8_ratio'), '10.2f')}{row['wal_per_tx']:7.0f}"
              f"{row['tps_1']:8.0f}{_fmt(row.get('tps_1_ratio'), '6.2f')}{row['cpu_1']:7.1f}"
              f"{row['bulk_ms']:11.1f}{_fmt(row.get('bulk_ms_ratio'), '6.2f')}"
              f"{_fmt(row.get('bytes_per_row'), '6.0f')}{_fmt(row.get('claim_ms'), '9.1f')}")
    print()
    print(textwrap.fill(
        "srv us / cli us: CPU per transaction of the PostgreSQL backends / of pgbench. "
        "cpu ratio: transactions per CPU-second (both), variant / none: what the tx/s "
        "ratio tends to when the cores are the limit, less moved by a busy neighbour. "
        "WAL B: WAL bytes per transaction. B/row: the outbox's size (heap + indexes) per "
        "row after the 8-connection run; claim ms: the worker's claim of "
        f"{CLAIM_ROWS:,} rows from that backlog.", 100))
    return rows


async def run(variants: Sequence[str], repeat: int, seconds: float) -> None:
    """Every repetition, every variant; prints one line per run and the table."""
    with PostgresServer() as server:
        dsn = server.dsn()
        conn, manager = await capture.setup_db(dsn)
        try:
            # As the worker's connections run (connection.SESSION_SETTINGS): the claim is
            # planned for the outbox's size at each call.
            await conn.execute("SET plan_cache_mode = force_custom_plan")
            plan = next(p for p in plan_tables(manager.all_rules(), manager.all_views())
                        if p.table == TABLE)
            settings = {name: await conn.fetchval(f"SHOW {name}") for name in
                        ("server_version", "wal_level", "synchronous_commit", "fsync",
                         "full_page_writes", "shared_buffers")}
            print(", ".join(f"{k} {v}" for k, v in settings.items()))
            print(f"{len(variants)} variants x {repeat} repetitions, pgbench {seconds:g} s "
                  f"at 8 then 1 connections; {TABLE} update filter: "
                  f"{', '.join(plan.update_filter) or 'none (every UPDATE is recorded)'}\n")
            runs: dict[str, list[dict[str, float | None]]] = {v: [] for v in variants}
            for rep in range(repeat):
                order = variants if rep % 2 == 0 else tuple(reversed(variants))
                for spec in order:
                    await apply(conn, manager, plan, spec)
                    figures = await measure(server, conn, seconds)
                    runs[spec].append(figures)
                    print(f"#{rep + 1} {spec:<24} 8 conns {figures['tps_8']:7.0f} tx/s   "
                          f"1 conn {figures['tps_1']:7.0f} tx/s   10k UPDATE "
                          f"{figures['bulk_ms']:7.1f} ms   load {os.getloadavg()[0]:.2f}",
                          flush=True)
            await reset(conn)
            table(runs)
        finally:
            await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"1 s runs, 2 repetitions, variants {','.join(QUICK_VARIANTS)}")
    parser.add_argument("--repeat", type=int, help="repetitions (3)")
    parser.add_argument("--seconds", type=float, help="seconds per pgbench run (5)")
    parser.add_argument("--variants", help="comma-separated: none, trigger, or modifiers "
                                           f"joined by + ({','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--list", action="store_true", help="print the modifiers and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, modifier in MODIFIERS.items():
            print(f"{name}: {' '.join((modifier.__doc__ or '').split())}")
        return 0
    default = QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS
    variants = tuple(v.strip() for v in (args.variants or ",".join(default)).split(",")
                     if v.strip())
    try:
        for spec in variants:
            parse_variant(spec)
    except ValueError as exc:
        parser.error(str(exc))
    if "none" not in variants:
        variants = ("none", *variants)
    repeat = args.repeat or (2 if args.quick else 3)
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    started = time.monotonic()
    asyncio.run(run(variants, repeat, seconds))
    load = os.getloadavg()
    print(f"\nload at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; finished in "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
