"""Every command of docs/operations.md's runbook, run as an operator would.

The commands are the ``$ `` lines of the ``console runbook`` blocks, in document order.
Each runs in ``bash`` (pipes and all) against real servers: the home_services database
and its Redis (``THORBIS_POSTGRES_DSN``, ``THORBIS_REDIS_URL``), a ``thorbis-cache
worker`` serving its metrics, an application's exporter, and the session's Sentinel
group; the runbook's example addresses are replaced by theirs. Before each, the state
its entry describes is set up (an allkeys policy, a cached key, a corrupt entry); after
it, its exit status and a stable part of its output are checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
from core_testing import HsEnv, wait_until
from test_observability import _get, start_worker
from thorbis_home_services import loaders
from thorbis_home_services.schemas import WORK_ORDER

from thorbis_cache.observability import Exporter, HttpServer, MetricsApp
from thorbis_cache.postgres.triggers import install_triggers
from thorbis_cache.testing.binaries import find_postgres, find_redis
from thorbis_cache.testing.servers import RedisSentinelGroup, free_port

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
VENV_BIN = ROOT / ".venv" / "bin"


def runbook_commands() -> list[str]:
    """The ``$ `` lines of the ``console runbook`` blocks of the Runbook section."""
    text = OPERATIONS.read_text()
    section = text[text.index("\n## Runbook\n"):]
    blocks = re.findall(r"^```console runbook\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    return [line[2:] for block in blocks for line in block.splitlines()
            if line.startswith("$ ")]


Setup = Callable[["Scene"], Awaitable[None]]


@attrs.frozen
class Step:
    """One runbook command: what to set up first, the exit status and output wanted."""

    command: str
    status: int
    output: str  # a regular expression searched in stdout + stderr
    setup: Setup | None = None


@attrs.define
class Scene:
    env: HsEnv
    worker: str  # host:port of the worker's endpoint
    app: str  # host:port of the application's exporter
    sentinel_port: int


async def _read_work_order(scene: Scene) -> None:
    await scene.env.app.cache.get_or_load(
        WORK_ORDER.key("acme", work_order_id=1),
        lambda: loaders.work_order(scene.env.conn.fetch, "acme", 1))


async def _allkeys(scene: Scene) -> None:
    await scene.env.app.cache.store.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")


async def _corrupt(scene: Scene) -> None:
    """The cached work order's last byte flipped, as a tampered or copied entry is."""
    await _read_work_order(scene)
    store = scene.env.app.cache.store
    key = scene.env.app.cache.redis_key(WORK_ORDER.key("acme", work_order_id=1))
    value = await store.command("GET", key)
    assert value, "the work order is cached"
    tampered = bytes(value[:-1]) + bytes([value[-1] ^ 0x5A])
    assert await store.command("SET", key, tampered, "KEEPTTL")


async def _rename_a_watched_column(scene: Scene) -> None:
    """A host's migration renames a column a customer rule reads."""
    await scene.env.conn.execute(
        "ALTER TABLE hs.customers RENAME COLUMN account_status TO account_state")


async def _set_up_for_the_earlier_release(scene: Scene) -> None:
    """The service areas' triggers as an earlier release's db init made them: its
    rule watched the centre's latitude only."""
    rule = next(r for r in scene.env.app.plugins.all_rules()
                if r.name == "hs.service_area_centres")
    await install_triggers(scene.env.conn,
                           [attrs.evolve(rule, significant_columns=("center_latitude",))])


STEPS = [
    # Stale value after a database write.
    Step("curl -s http://127.0.0.1:9464/health", 0, r'"outbox": \{[^}]*"backlog": 0'),
    Step("thorbis-cache explain --tenant acme hs.work_order work_order_id=1", 0,
         r"(?s)tc:\{acme\}:hs\.work_order:1.*opens +yes", _read_work_order),
    Step("thorbis-cache invalidate --tenant acme hs.work_order work_order_id=1", 0,
         r"tc:\{acme\}:hs\.work_order:1: 1 key\(s\) removed"),
    # Low hit ratio.
    Step("curl -s http://127.0.0.1:8000/ops/metrics | grep -E "
         "'^thorbis_cache_(hits|misses)_total'", 0,
         r'thorbis_cache_misses_total\{schema="hs\.work_order"\} [1-9]'),
    # Memory pressure, a refused policy.
    Step("redis-cli -u \"$THORBIS_REDIS_URL\" info memory | grep -E "
         "'^(used_memory_human|maxmemory_human|maxmemory_policy):'", 0,
         r"maxmemory_policy:volatile-lru"),
    Step("redis-cli -u \"$THORBIS_REDIS_URL\" info stats | grep -E "
         "'^(evicted_keys|expired_keys):'", 0, r"evicted_keys:\d+"),
    Step("thorbis-cache worker --once --plugin home_services", 1,
         r"maxmemory-policy allkeys-lru.*CONFIG SET maxmemory-policy volatile-lru", _allkeys),
    Step("redis-cli -u \"$THORBIS_REDIS_URL\" config set maxmemory-policy volatile-lru", 0,
         r"^OK$"),
    Step("thorbis-cache worker --once --plugin home_services", 0,
         r"batch\(es\): \d+ change\(s\) applied"),
    # Worker behind, dead letters.
    Step("curl -s http://127.0.0.1:9464/metrics | grep -E '^thorbis_cache_(outbox_backlog|"
         "outbox_oldest_seconds|outbox_dead_letters|queue_depth|queue_dead_letters) '", 0,
         r"(?m)^thorbis_cache_outbox_backlog 0\.0$"),
    Step("thorbis-cache outbox-deadletters list", 0,
         r"^0 dead letter\(s\) in thorbis\.outbox_dead_letters$"),
    Step("thorbis-cache deadletters list", 0,
         r"^0 dead letter\(s\) in tc:~jobs:dead:\{_queue\}$"),
    # Replication slot lag, a lost slot.
    Step("psql \"$THORBIS_POSTGRES_DSN\" -c \"SELECT slot_name, active, wal_status, "
         "pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS behind "
         "FROM pg_replication_slots\"", 0, r"slot_name \| active \| wal_status \| behind"),
    Step("curl -s http://127.0.0.1:9464/metrics | grep -E "
         "'^thorbis_cache_worker_capture_losses_total'", 0,
         r"(?m)^thorbis_cache_worker_capture_losses_total 0\.0$"),
    # PostgreSQL failed over, or was restored.
    Step("psql \"$THORBIS_POSTGRES_DSN\" -c \"SELECT timeline_id, pg_is_in_recovery() AS "
         "standby FROM pg_control_checkpoint()\"", 0,
         r"timeline_id \| standby *\n-+\+-+\n +1 \| f"),
    # A migration renamed a column the rules read (under either capture).
    Step("thorbis-cache health --redis-url \"$THORBIS_REDIS_URL\" --dsn "
         "\"$THORBIS_POSTGRES_DSN\" --plugin home_services --json", 1,
         r'"capture_columns": \{\s*"status": "warning",\s*"reason": "hs\.customers no '
         r'longer has column\(s\) account_status', _rename_a_watched_column),
    Step("psql \"$THORBIS_POSTGRES_DSN\" -c \"SELECT table_name, incomplete, retyped, "
         "recreated, changed_at FROM thorbis.captured_tables WHERE incomplete IS NOT NULL "
         "OR retyped IS NOT NULL OR recreated\"", 0, r"hs\.customers +\| \{account_status\}"),
    # db init waits for a table, or gives up.
    Step("psql \"$THORBIS_POSTGRES_DSN\" -c \"SELECT pid, application_name, state, "
         "xact_start, left(query, 60) AS query FROM pg_stat_activity WHERE backend_xid IS "
         "NOT NULL OR state = 'idle in transaction' ORDER BY xact_start\"", 0,
         # (columns padded to what they hold: the running worker's claim, caught
         # between its statements, is one)
         r"pid +\| +application_name +\| +state +\| +xact_start +\| +query"),
    # A worker lacks rules the database was set up for.
    Step("psql \"$THORBIS_POSTGRES_DSN\" -c \"SELECT name, table_name, tags, untagged, "
         "recorded_at FROM thorbis.capture_rules ORDER BY recorded_at DESC, name\"", 0,
         r"hs\.customer_entity +\| hs\.customers +\| \{hs\.customers\} +\| \{\}"),
    # A release refuses to start: triggers made for other rules.
    Step("thorbis-cache health --redis-url \"$THORBIS_REDIS_URL\" --dsn "
         "\"$THORBIS_POSTGRES_DSN\" --plugin home_services --json", 2,
         r"rule hs\.service_area_centres needs UPDATEs of center_longitude",
         _set_up_for_the_earlier_release),
    # Redis failover.
    Step("redis-cli -p 26379 sentinel get-master-addr-by-name thorbis", 0, "MASTER"),
    Step("redis-cli -p 26379 sentinel ckquorum thorbis", 0, r"OK 3 usable Sentinels"),
    # Corrupt entries.
    Step("thorbis-cache explain --tenant acme hs.work_order work_order_id=1", 0,
         r"opens +no.*(checksum|auth_failed)", _corrupt),
    Step("curl -s http://127.0.0.1:8000/ops/metrics | grep -E "
         "'^thorbis_cache_corrupt_entries_total'", 0,
         r'thorbis_cache_corrupt_entries_total\{reason="\w+",schema="hs\.work_order"\} 1\.0',
         _read_work_order),
    # A plugin fails to load.
    Step("thorbis-cache plugins", 0, r"home_services \(thorbis-home-services"),
]


def test_every_runbook_command_is_a_step() -> None:
    assert runbook_commands() == [step.command for step in STEPS]


def _environment(env: HsEnv) -> dict[str, str]:
    keyring = env.app.keyring
    assert keyring is not None
    path = [str(VENV_BIN), str(find_redis().server.parent), str(find_postgres().bindir),
            os.environ.get("PATH", "/usr/bin:/bin")]
    base = {k: v for k, v in os.environ.items() if not k.startswith("THORBIS_")}
    return {**base, "PATH": os.pathsep.join(path), "COLUMNS": "200",
            "THORBIS_REDIS_URL": env.redis_url, "THORBIS_POSTGRES_DSN": env.dsn,
            "THORBIS_KEYRING": keyring.to_string()}


def _run(command: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True, timeout=120, check=False, env=environment)


async def test_the_runbook_commands_run(
    hs_env: HsEnv, thorbis_redis_sentinel: RedisSentinelGroup,
) -> None:
    assert await hs_env.conn.fetchval(
        "SELECT tenant_id FROM hs.work_orders WHERE id = 1") == "acme"
    exporter = Exporter(hs_env.app.cache, dsn=hs_env.dsn)
    port = free_port()
    worker = start_worker(hs_env, port)
    group = thorbis_redis_sentinel
    environment = _environment(hs_env)
    try:
        async with HttpServer(MetricsApp(exporter)) as app:
            scene = Scene(hs_env, f"127.0.0.1:{port}", f"127.0.0.1:{app.port}",
                          group.sentinel_ports[0])

            async def outbox_applied() -> bool:
                try:
                    body = (await asyncio.to_thread(_get, f"http://{scene.worker}/health"))[2]
                except OSError:
                    return False
                outbox = json.loads(body)["checks"].get("outbox", {})
                return bool(outbox.get("backlog") == 0)

            await wait_until("the worker applies the generated changes", outbox_applied)
            for step in STEPS:
                if step.setup is not None:
                    await step.setup(scene)
                command = (step.command.replace("127.0.0.1:9464", scene.worker)
                           .replace("127.0.0.1:8000/ops", scene.app)
                           .replace("-p 26379", f"-p {scene.sentinel_port}"))
                done = await asyncio.to_thread(_run, command, environment)
                out = done.stdout + done.stderr
                want = step.output
                if want == "MASTER":
                    want = rf"^127\.0\.0\.1\n{group.master().port}$"
                assert done.returncode == step.status, f"{step.command}: {out}"
                assert re.search(want, out.strip(), re.MULTILINE), f"{step.command}: {out}"
    finally:
        await hs_env.app.cache.store.command("CONFIG", "SET", "maxmemory-policy",
                                             "volatile-lru")
        exporter.detach()
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 30)
        assert worker.stderr is not None
        assert code == 0, worker.stderr.read()
