"""A worker (or a host app) whose rules the installed capture does not cover refuses
to start, naming what is missing.

Found as a user would: a release that added a rule on a captured table (or a column to
a rule's significant columns) was started before its ``db init`` ran (an app instance
coming up before the release job, or the release job forgotten). The start checked only
that each rule's table had capture triggers: they were there, made for the earlier
release's rules. They record an UPDATE only when one of the earlier rules' significant
columns changes, so a phone edit wrote nothing, and the new release's cached customer
stayed stale until its TTL, with nothing said anywhere.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import attrs
import pytest
from capture_env import Env, capture_env
from core_testing import CUSTOMER_SQL
from thorbis_home_services import plugin as hs_plugin

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.errors import CaptureNotInstalledError
from thorbis_cache.plugins.declarations import InvalidationRule
from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres.capture_check import capture_problems
from thorbis_cache.postgres.rules_record import RecordedRule
from thorbis_cache.postgres.setup import setup_database
from thorbis_cache.postgres.triggers import install_triggers

NEW_RULE, WIDER_RULE = "hs.customer_entity", "hs.customer_lists_on_change"


@pytest.fixture
async def env(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    async with capture_env("triggers", thorbis_pg_dsn, thorbis_standalone_redis_url) as env:
        await env.conn.execute(CUSTOMER_SQL, "acme", 2)
        yield env


def _earlier(rules: list[InvalidationRule]) -> list[InvalidationRule]:
    """The earlier release: without the new rule, and one significant column fewer."""
    return [attrs.evolve(r, significant_columns=r.significant_columns[1:])
            if r.name == WIDER_RULE else r for r in rules if r.name != NEW_RULE]


async def _outbox(env: Env) -> int:
    return int(await env.conn.fetchval("SELECT count(*) FROM thorbis.outbox"))


async def test_a_release_started_before_its_db_init_refuses_to_start(env: Env) -> None:
    every = env.app.plugins.all_rules()
    wider = next(r for r in every if r.name == WIDER_RULE)
    dropped = wider.significant_columns[0]
    # The capture as the earlier release's db init left it.
    await install_triggers(env.conn, _earlier(every), env.app.plugins.all_views())
    # Why it matters: a phone edit, which the new rule watches, writes nothing.
    before = await _outbox(env)
    await env.conn.execute("UPDATE hs.customers SET phone = 'new' WHERE tenant_id = 'acme' "
                           "AND id = 1")
    assert await _outbox(env) == before

    with pytest.raises(CaptureNotInstalledError) as caught:
        async with env.worker() as worker:
            await worker.drain()
    text = " ".join(str(caught.value).split())
    assert f"rule {NEW_RULE} needs every UPDATE" in text, text
    assert f"rule {WIDER_RULE} needs UPDATEs of {dropped}" in text, text
    assert "thorbis-cache db init --plugin home_services" in text, text

    # The host app checks the same before it serves anything.
    app = CacheApp(env.redis_url, keyring=KeyRing.generate(), postgres_dsn=env.dsn)
    with pytest.raises(CaptureNotInstalledError, match=NEW_RULE):
        await app.start(["home_services"])

    # The release's db init: the worker starts, and the edit is invalidated.
    await asyncio.to_thread(env.db_init)
    async with env.worker() as worker:
        await env.drained(worker, 1)


async def test_a_capture_set_up_for_more_rules_is_enough(env: Env) -> None:
    """The other way round (a worker of the earlier release after the new release's
    db init) is covered: nothing is refused."""
    assert await capture_problems(env.conn, _earlier(env.app.plugins.all_rules())) == []
    async with env.worker() as worker:  # and its own rules, of course
        await worker.drain()


async def test_a_release_that_removed_a_rule_keeps_its_capture_until_prune(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setup only adds: the earlier release's processes still run during a rolling
    deploy, and the triggers keep recording what its rules need until ``--prune``."""
    every = env.app.plugins.all_rules()
    monkeypatch.setattr(hs_plugin, "ALL_RULES",
                        [r for r in hs_plugin.ALL_RULES if r.name != NEW_RULE])
    # Without that rule, nothing drops a cached absence of a customer on INSERT: the
    # earlier release did not cache absences (loading refuses one that does).
    monkeypatch.setattr(hs_plugin, "ALL_SCHEMAS", [
        attrs.evolve(s, negative_ttl=None) if s.name == "hs.customer" else s
        for s in hs_plugin.ALL_SCHEMAS])
    release = PluginManager()
    await release.load(["home_services"])
    await setup_database(env.dsn, release, capture="triggers")
    # The earlier release's worker starts, and a phone edit is still captured.
    assert await capture_problems(env.conn, every) == []
    async with env.worker() as worker:
        await env.drained(worker, 1)

    # Once no process of it runs: --prune, and a phone edit costs the host nothing.
    await setup_database(env.dsn, release, capture="triggers", prune=True)
    problems = " ".join(await capture_problems(env.conn, every))
    assert f"rule {NEW_RULE} needs every UPDATE" in problems, problems
    before = await _outbox(env)
    await env.conn.execute("UPDATE hs.customers SET phone = 'newer' WHERE tenant_id = 'acme' "
                           "AND id = 1")
    assert await _outbox(env) == before


async def test_a_recorded_rules_column_that_a_migration_dropped_is_left_out(env: Env) -> None:
    await env.conn.execute("ALTER TABLE hs.customers ADD COLUMN loyalty text")
    gone = RecordedRule("hs.loyalty_lists", "d", "hs.customers", "tenant_id", ("UPDATE",),
                        ("loyalty",), ("hs.loyalty",), (), ("loyalty", "tenant_id"))
    rules, views = env.app.plugins.all_rules(), env.app.plugins.all_views()
    [plan] = [p for p in await install_triggers(env.conn, rules, views, [gone])
              if p.table == "hs.customers"]
    assert "loyalty" in plan.columns
    await env.conn.execute("ALTER TABLE hs.customers DROP COLUMN loyalty")
    # The release that removed the rule dropped its column: its setup still installs.
    [plan] = [p for p in await install_triggers(env.conn, rules, views, [gone])
              if p.table == "hs.customers"]
    assert "loyalty" not in plan.columns
    async with env.worker() as worker:
        await env.drained(worker, 2)


async def test_a_host_role_with_rights_on_its_own_tables_only_starts(env: Env) -> None:
    """Found as a user would: a host application whose PostgreSQL role may only read
    and write its own tables (least privilege: ``db init`` runs as another role) failed
    to start with "permission denied for schema thorbis" once the check read the
    triggers' filters. It checks what the catalogs show; the worker checks the rest."""
    role = f"app_{uuid.uuid4().hex[:10]}"
    await env.conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        await env.conn.execute(f"GRANT USAGE ON SCHEMA hs TO {role}")
        await env.conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA hs TO {role}")
        parts = urlsplit(env.dsn)
        dsn = urlunsplit(parts._replace(netloc=f"{role}:pw@{parts.hostname}:{parts.port}"))
        app = CacheApp(env.redis_url, keyring=KeyRing.generate(), postgres_dsn=dsn)
        await app.start(["home_services"])
        await app.aclose()
        # A table nothing captures is still refused: the catalogs show it.
        await env.conn.execute("ALTER TABLE hs.customers DISABLE TRIGGER thorbis_capture_update")
        app = CacheApp(env.redis_url, keyring=KeyRing.generate(), postgres_dsn=dsn)
        with pytest.raises(CaptureNotInstalledError, match=r"hs\.customers"):
            await app.start(["home_services"])
    finally:
        await env.conn.execute(f"DROP OWNED BY {role}")
        await env.conn.execute(f"DROP ROLE {role}")
