"""The files operators use, in ``deploy/``, checked against what they describe.

* The Grafana dashboard: valid against the essentials of Grafana's dashboard schema,
  every metric it queries served by a real exporter (after a workload on real Redis and
  PostgreSQL), every expression evaluated by a real Prometheus scraping that exporter.
* ``deploy/redis/``: identical to the package's copies, which the test servers include;
  a harness server and a harness sentinel report the example's settings.
* The systemd unit (``systemd-analyze verify``) and the compose file: every
  ``thorbis-cache`` command line in them parsed by the CLI itself, with the environment
  they give it; Prometheus's config checked by ``promtool``.
"""

from __future__ import annotations

import asyncio
import filecmp
import importlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import typer.main
from core_testing import HsEnv, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_observability import _get, alert_names, read_work_orders

from thorbis_cache import Cache, SchemaRegistry, deploy_examples
from thorbis_cache.cache.eviction import SUPPORTED_POLICIES
from thorbis_cache.cli import app as cli_app
from thorbis_cache.invalidation.apply import CacheInvalidator
from thorbis_cache.invalidation.queue import InvalidationQueue
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.observability import Exporter, HttpServer, MeteredMvScheduler, MetricsApp
from thorbis_cache.testing.binaries import PrometheusBinaries
from thorbis_cache.testing.servers import PrometheusServer, RedisSentinelGroup, RedisServer

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "thorbis-cache.json"
UNIT = DEPLOY / "systemd" / "thorbis-cache-worker.service"
UNIT_ENV = DEPLOY / "systemd" / "worker.env.example"
COMPOSE = DEPLOY / "compose" / "compose.yaml"

# --------------------------------------------------------------------------- dashboard

_INT = {"type": "integer", "minimum": 0}
_DATASOURCE = {"type": "object", "required": ["type", "uid"],
               "properties": {"type": {"enum": ["prometheus"]}, "uid": {"type": "string"}}}

#: The part of Grafana's dashboard JSON model (schemaVersion 39, Grafana 10/11) this
#: dashboard relies on, as a JSON Schema.
DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": _INT,
        "editable": {"type": "boolean"},
        "refresh": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {"type": "object", "required": ["from", "to"],
                 "properties": {"from": {"type": "string"}, "to": {"type": "string"}}},
        "templating": {
            "type": "object", "required": ["list"],
            "properties": {"list": {"type": "array", "items": {
                "type": "object", "required": ["name", "type"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                    "type": {"enum": ["query", "custom", "datasource", "interval",
                                      "constant", "textbox"]},
                    "datasource": _DATASOURCE,
                    "multi": {"type": "boolean"},
                    "includeAll": {"type": "boolean"},
                }}}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["id", "type", "title", "gridPos"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": ["row", "timeseries", "stat", "gauge", "bargauge",
                                  "table", "text"]},
                "title": {"type": "string", "minLength": 1},
                "description": {"type": "string"},
                "datasource": _DATASOURCE,
                "gridPos": {"type": "object", "required": ["x", "y", "w", "h"], "properties": {
                    "x": {"type": "integer", "minimum": 0, "maximum": 23},
                    "y": _INT,
                    "w": {"type": "integer", "minimum": 1, "maximum": 24},
                    "h": {"type": "integer", "minimum": 1}}},
                "targets": {"type": "array", "items": {
                    "type": "object", "required": ["refId", "expr"],
                    "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"},
                                   "expr": {"type": "string", "minLength": 1},
                                   "legendFormat": {"type": "string"},
                                   "datasource": _DATASOURCE}}},
                "fieldConfig": {"type": "object", "required": ["defaults"]},
            }}},
    },
}

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float),
}


def schema_errors(value: Any, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema``: the keywords DASHBOARD_SCHEMA uses (type,
    enum, required, properties, items, minItems, minimum, maximum, minLength, pattern)
    with their JSON Schema meaning. jsonschema is not a dependency of the project."""
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            return [f"{where}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        errors += [f"{where}: {name!r} is required" for name in schema.get("required", [])
                   if name not in value]
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += schema_errors(value[name], sub, f"{where}.{name}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", value):
            errors.append(f"{where}: {value} < {schema['minimum']}")
        if value > schema.get("maximum", value):
            errors.append(f"{where}: {value} > {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    return errors


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def expressions(dash: Mapping[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the query variables'."""
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


#: Grafana's built-in variables the expressions use, as a short Prometheus run has them.
_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def substituted(expr: str, dash: Mapping[str, Any]) -> str:
    """``expr`` as Grafana sends it with every variable at its default: "All" for the
    query variables (their allValue), a custom variable's current value."""
    values = dict(_BUILTINS)
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            values[var["name"]] = var["allValue"]
        elif var["type"] == "custom":
            values[var["name"]] = var["current"]["value"]
    out = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)
    assert "$" not in out, out
    return out


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dash = dashboard()
    assert schema_errors(dash, DASHBOARD_SCHEMA) == []
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    # Every panel fits the 24-column grid and none overlaps another.
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(set(refs)) == len(refs), p["title"]
            assert p["datasource"]["uid"] == "${datasource}"
    # Every variable an expression uses is defined (or is Grafana's own).
    defined = {v["name"] for v in dash["templating"]["list"]} | set(_BUILTINS)
    used = {name for e in expressions(dash) for name in re.findall(r"\$\{?(\w+)", e)}
    assert used <= defined, used - defined
    assert {"datasource", "job", "schema"} <= defined


def test_the_schema_check_rejects_what_grafana_would() -> None:
    broken = dashboard()
    del broken["panels"][1]["gridPos"]
    broken["panels"][2]["targets"][0]["expr"] = ""
    broken["panels"][3]["id"] = "3"
    broken["schemaVersion"] = 16
    assert schema_errors(broken, DASHBOARD_SCHEMA) == [
        "$.schemaVersion: 16 < 36",
        "$.panels[1]: 'gridPos' is required",
        "$.panels[2].targets[0].expr: shorter than 1",
        "$.panels[3].id: expected integer, got str",
    ]


def served_families(text: str) -> dict[str, str]:
    """Metric family name -> type of a text exposition."""
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def family_of(name: str, families: Mapping[str, str]) -> str | None:
    """The served family a name used in PromQL belongs to: a gauge by its name, a
    counter by ``_total``, a histogram by ``_bucket``/``_sum``/``_count``."""
    if families.get(name) == "gauge":
        return name
    for suffix, kinds in (("_total", {"counter"}), ("_bucket", {"histogram"}),
                          ("_sum", {"histogram"}), ("_count", {"histogram"})):
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and families.get(base) in kinds:
            return base
    return None


#: What the dashboard must show (issue 17): at least one panel queries each.
REQUIRED = {
    "thorbis_cache_hits", "thorbis_cache_misses", "thorbis_cache_operation_seconds",
    "thorbis_cache_near_hits", "thorbis_cache_near_evictions", "thorbis_cache_invalidations",
    "thorbis_cache_queue_depth", "thorbis_cache_queue_oldest_seconds",
    "thorbis_cache_queue_dead_letters", "thorbis_cache_outbox_backlog",
    "thorbis_cache_outbox_oldest_seconds", "thorbis_cache_outbox_dead_letters",
    "thorbis_cache_worker_batches", "thorbis_cache_worker_commit_to_invalidated_seconds",
    "thorbis_cache_mv_refreshes", "thorbis_cache_mv_refresh_seconds",
    "thorbis_cache_redis_up", "thorbis_cache_redis_ping_seconds",
    "thorbis_cache_tenant_operations", "thorbis_cache_corrupt_entries",
}


async def test_the_dashboard_queries_served_metrics_and_prometheus_evaluates_it(
    hs_env: HsEnv, prometheus_binaries: PrometheusBinaries,
) -> None:
    dash = dashboard()
    cache = hs_env.app.cache
    # An exporter with everything a worker and a host serve: cache, worker, queue, views.
    exporter = Exporter(cache, dsn=hs_env.dsn)
    worker = OutboxWorker.from_app(hs_env.app, hs_env.dsn)
    queue = InvalidationQueue(cache.store, cache.settings.prefix)
    exporter.add_queue(queue, CacheInvalidator(cache))
    scheduler = MeteredMvScheduler.from_app(hs_env.app, hs_env.dsn)
    exporter.add_worker(worker)
    exporter.add_views(scheduler.refresh_metrics)
    prom: PrometheusServer | None = None
    try:
        await worker.drain()
        await scheduler.tick()
        async with HttpServer(MetricsApp(exporter)) as server:
            await read_work_orders(hs_env, "acme", 1)
            text = (await asyncio.to_thread(_get, server.url + "/metrics"))[2]
            families = served_families(text)
            used = {n for e in expressions(dash) for n in re.findall(r"\bthorbis_cache_\w+", e)}
            unknown = {n for n in used if family_of(n, families) is None}
            assert not unknown, f"not served by the exporter: {sorted(unknown)}"
            shown = {family_of(n, families) for n in used}
            assert shown >= REQUIRED, REQUIRED - shown

            prom = PrometheusServer({"thorbis-host": [f"127.0.0.1:{server.port}"]},
                                    binaries=prometheus_binaries)
            await asyncio.to_thread(prom.start)

            async def two_scrapes() -> bool:
                assert prom is not None
                got = await asyncio.to_thread(
                    prom.query, "count_over_time(thorbis_cache_redis_up[1m])")
                return bool(got) and float(got[0]["value"][1]) >= 2

            await wait_until("prometheus scraped the exporter twice", two_scrapes)
            # Reads now, so that rates over the last minute see them.
            await read_work_orders(hs_env, "acme", 3)
            await read_work_orders(hs_env, "globex", 2)

            async def reads_seen() -> bool:
                assert prom is not None
                return all(await asyncio.gather(*(asyncio.to_thread(
                    prom.query, f'sum(rate(thorbis_cache_{kind}_total[1m])) > 0')
                    for kind in ("hits", "misses"))))

            await wait_until("prometheus sees the reads' rates", reads_seen)
            results: dict[str, list[dict[str, Any]]] = {}
            for expr in expressions(dash):
                query = substituted(expr, dash)
                # A parse or evaluation error raises RuntimeError naming it.
                values = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
                if values:  # Grafana's variable query: the label values API
                    results[expr] = await asyncio.to_thread(
                        prom.api, f"label/{values.group(2)}/values",
                        **{"match[]": values.group(1)})
                    continue
                data = await asyncio.to_thread(prom.api, "query", query=query)
                results[expr] = data["result"]
    finally:
        if prom is not None:
            prom.stop()
        await scheduler.aclose()
        await worker.aclose()
        exporter.detach()
    by_title = {p["title"]: p for p in dash["panels"]}

    def first(title: str) -> list[dict[str, Any]]:
        return results[by_title[title]["targets"][0]["expr"]]

    # The workload shows: 6 hits of 12 reads of hs.work_order, acme the busiest tenant.
    ratios = {r["metric"].get("schema"): float(r["value"][1])
              for r in first("Hit ratio per schema")}
    assert 0 < ratios["hs.work_order"] < 1
    p99 = {(r["metric"]["schema"], r["metric"]["operation"]): float(r["value"][1])
           for r in first("Read latency p99 per schema and operation")}
    assert math.isfinite(p99["hs.work_order", "get_or_load"])
    assert first("Tenant traffic, top $topn")
    assert [float(r["value"][1]) for r in first("Redis up")] == [1.0]
    variables = {v["name"]: results[v["query"]["query"]] for v in dash["templating"]["list"]
                 if v["type"] == "query"}
    assert variables["job"] == ["thorbis-host"]
    assert "hs.work_order" in variables["schema"]


# --------------------------------------------------------------------------- redis examples

def test_deploy_redis_holds_the_packaged_examples() -> None:
    for name in (deploy_examples.REDIS_CONF, deploy_examples.SENTINEL_CONF):
        assert filecmp.cmp(DEPLOY / "redis" / name, deploy_examples.path(name), shallow=False), \
            f"deploy/redis/{name} differs from core/thorbis_cache/deploy_examples/{name}"


def directives(path: Path) -> list[list[str]]:
    """A Redis config file's directives, split like Redis does (no quoting used)."""
    return [line.split() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


_UNITS = {"k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def as_reported(value: str) -> str:
    """A config value as CONFIG GET reports it (memory units in bytes)."""
    m = re.fullmatch(r"(\d+)([kmg]b?)", value.lower())
    return str(int(m.group(1)) * _UNITS[m.group(2)]) if m else value


def test_a_harness_redis_server_runs_with_the_example() -> None:
    example = deploy_examples.path(deploy_examples.REDIS_CONF)
    with RedisServer() as server:
        # What it was started with (Redis rewrites its process title).
        argv = server._argv(server.binaries, server.port)
        assert argv[1:3] == ["--include", str(example)], argv
        overridden = {a[2:] for a in argv[3:] if a.startswith("--")}
        assert {"port", "dir", "logfile", "save", "appendonly"} <= overridden
        checked = 0
        for name, *value in directives(example):
            if name in overridden:
                continue
            reply = server.command("CONFIG", "GET", name)
            assert reply[1].decode() == " ".join(as_reported(v) for v in value), name
            checked += 1
        assert checked >= 15
        assert server.command("CONFIG", "GET", "dir")[1].decode() == str(server.dir)

        async def policy() -> str | None:
            async with Cache.from_url(server.url, SchemaRegistry()) as cache:
                return await cache.verify_server()

        assert asyncio.run(policy()) == "volatile-lru"
    assert "volatile-lru" in SUPPORTED_POLICIES


def test_harness_sentinels_and_data_servers_run_with_the_examples(
    thorbis_redis_sentinel: RedisSentinelGroup,
) -> None:
    group = thorbis_redis_sentinel
    example = deploy_examples.path(deploy_examples.SENTINEL_CONF)
    service = deploy_examples.SENTINEL_SERVICE
    assert group.service == service
    for data in group.servers:
        assert data.command("CONFIG", "GET", "maxmemory-policy")[1] == b"volatile-lru"
    for sentinel in group.sentinels:
        config = (sentinel.dir / "sentinel.conf").read_text().splitlines()
        assert config[0] == f"include {example}"
        # The harness's own lines, before Sentinel's rewrite, override the example's.
        own = {(parts[1], parts[2]): parts[3] for parts in (
            line.split() for line in config[1:config.index("# Generated by CONFIG REWRITE")])
            if len(parts) == 4 and parts[0] == "sentinel"}
        master = sentinel.command("SENTINEL", "MASTER", service)
        fields = dict(zip(master[::2], master[1::2], strict=True))
        checked = 0
        for parts in directives(example):
            assert parts[0] == "sentinel", parts
            if len(parts) == 4:  # sentinel <option> <master> <value>
                assert parts[2] == service
                want = own.get((parts[1], service), parts[3])
                assert fields[parts[1].encode()].decode() == want, parts
            elif parts[1] == "resolve-hostnames":
                got = sentinel.command("SENTINEL", "CONFIG", "GET", parts[1])
                assert got[1].decode() == parts[2]
            else:
                assert parts[1:] == ["deny-scripts-reconfig", "yes"], parts
                with pytest.raises(RuntimeError, match="scripts path is denied"):
                    sentinel.command("SENTINEL", "SET", service, "notification-script",
                                     "/bin/true")
            checked += 1
        assert checked == 5
    assert str(group.down_after_ms) == own[("down-after-milliseconds", service)]


# --------------------------------------------------------------------------- worker deployment

def load_yaml(path: Path) -> Any:
    """``path`` parsed as YAML: with PyYAML when this Python has it, else with the
    system Python's (Debian's python3-yaml); the project itself needs no YAML parser."""
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        pass
    else:
        return yaml.safe_load(path.read_text())
    for python in ("/usr/bin/python3", shutil.which("python3")):
        if python is None:
            continue
        done = subprocess.run(
            [python, "-c", "import json, sys, yaml; "
             "json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)", str(path)],
            capture_output=True, text=True, timeout=60, check=False)
        if done.returncode == 0:
            return json.loads(done.stdout)
        if "No module named 'yaml'" not in done.stderr:
            pytest.fail(f"{path} is not valid YAML:\n{done.stderr}")
    pytest.fail("no YAML parser: sudo apt-get install -y python3-yaml")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No THORBIS_* variable from the test's own environment."""
    for name in list(os.environ):
        if name.startswith("THORBIS_"):
            monkeypatch.delenv(name)
    return


def parse_cli(argv: list[str], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
              ) -> dict[str, Any]:
    """Parse a ``thorbis-cache`` command line with the CLI's own parser (options,
    types, required values, environment variables), without running it; its values."""
    assert Path(argv[0]).name == "thorbis-cache", argv
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    group = typer.main.get_command(cli_app)
    parent = group.make_context("thorbis-cache", list(argv[1:]))
    command = group.get_command(parent, argv[1])  # type: ignore[attr-defined]
    assert command is not None, f"no command {argv[1]!r}"
    with command.make_context(argv[1], list(argv[2:]), parent=parent) as ctx:
        return dict(ctx.params)


def cli_env_names() -> set[str]:
    """Every environment variable a command's option reads, and THORBIS_KEYRING (read
    by the worker, the explainer and the key-ring command themselves)."""
    group = typer.main.get_command(cli_app)
    ctx = group.make_context("thorbis-cache", ["worker"])
    names = {"THORBIS_KEYRING"}
    for name in group.list_commands(ctx):  # type: ignore[attr-defined]
        command = group.get_command(ctx, name)  # type: ignore[attr-defined]
        names |= {p.envvar for p in command.params if isinstance(p.envvar, str)}
    assert '"THORBIS_KEYRING"' in (ROOT / "core/thorbis_cache/cli/db.py").read_text()
    return names


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: sudo apt-get install -y systemd")
    settings = unit_settings()
    exec_start = shlex.split(settings["ExecStart"][0])
    # verify checks the binary exists: this machine's thorbis-cache stands in.
    local = Path(shutil.which("thorbis-cache") or ROOT / ".venv/bin/thorbis-cache")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(exec_start[0], str(local)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=120, check=False)
    # verify exits 0 on unknown keys and bad values too; it warns on stderr.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert settings["Type"] == ["exec"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["KillSignal"] == ["SIGTERM"]
    assert settings["TimeoutStopSec"] == ["60"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["EnvironmentFile"] == ["/etc/thorbis-cache/worker.env"]


def test_the_units_command_and_environment_are_the_clis(
    cli_env: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = dict(line.split("=", 1) for line in UNIT_ENV.read_text().splitlines()
               if line and not line.startswith("#"))
    assert set(env) == {"THORBIS_REDIS_URL", "THORBIS_POSTGRES_DSN", "THORBIS_KEYRING"}
    assert set(env) <= cli_env_names()
    argv = shlex.split(unit_settings()["ExecStart"][0])
    params = parse_cli(argv, env, monkeypatch)
    assert params["redis_url"] == env["THORBIS_REDIS_URL"]
    assert params["dsn"] == env["THORBIS_POSTGRES_DSN"]
    assert params["metrics_port"] == 9464


def test_the_compose_file(cli_env: None, monkeypatch: pytest.MonkeyPatch,
                          prometheus_binaries: PrometheusBinaries, tmp_path: Path) -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert {"redis", "postgres", "db-init", "worker", "prometheus", "grafana"} <= set(services)
    pg = services["postgres"]["command"]
    assert "wal_level=logical" in pg
    redis = services["redis"]["command"]
    assert redis[1:3] == ["--include", "/usr/local/etc/redis/thorbis-redis.conf"]
    # Every file a service mounts exists, relative to the compose file.
    mounts: dict[str, Path] = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                path = (COMPOSE.parent / source).resolve()
                assert path.exists(), volume
                mounts[target] = path
    assert mounts["/usr/local/etc/redis/thorbis-redis.conf"] == DEPLOY / "redis" / "redis.conf"
    assert mounts["/var/lib/grafana/dashboards/thorbis-cache.json"] == DASHBOARD
    # Every thorbis-cache command line parses with the environment compose gives it.
    commands = 0
    for name, service in services.items():
        argv = service.get("command")
        if not (isinstance(argv, list) and argv[0] == "thorbis-cache"):
            continue
        env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))
               for k, v in service["environment"].items()}
        assert set(env) <= cli_env_names(), name
        params = parse_cli(argv, env, monkeypatch)
        assert params["dsn"] == env["THORBIS_POSTGRES_DSN"], name
        commands += 1
        if name == "worker":
            port = params["metrics_port"]
            assert params["metrics_host"] == "0.0.0.0"  # noqa: S104 -- for Prometheus
            assert service["stop_grace_period"] == f"{unit_settings()['TimeoutStopSec'][0]}s"
    assert commands == 2
    # Prometheus scrapes the worker's metrics port; promtool checks the config with the
    # alert rules where compose mounts them.
    prom_dir = tmp_path / "etc-prometheus"
    prom_dir.mkdir()
    for target, source in mounts.items():
        if target.startswith("/etc/prometheus/"):
            shutil.copy(source, prom_dir / Path(target).name)
    config = load_yaml(prom_dir / "prometheus.yml")
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert f"worker:{port}" in targets
    checked = subprocess.run([str(prometheus_binaries.promtool), "check", "config",
                              str(prom_dir / "prometheus.yml")], capture_output=True,
                             text=True, timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in checked.stdout
    # Grafana's provisioning: the datasource the dashboard's variable picks, and the
    # folder the dashboard is mounted in.
    provisioning = COMPOSE.parent / "grafana" / "provisioning"
    datasources = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"]
    providers = load_yaml(provisioning / "dashboards" / "thorbis-cache.yaml")["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
