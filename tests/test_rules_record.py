"""A worker of an earlier release reading the changes after the new release's
``db init``: a rolling deploy (``thorbis.capture_rules``, ``postgres/rules_record.py``).

Found as a user would: the release job ran the new release's ``db init`` (one rule more
on a table captured already, and every rule of a table captured for the first time)
while the old release's worker still read the slot, or the outbox. It planned nothing
for the new rules' changes, confirmed them, and the entries they protect stayed stale
until their TTL, with nothing logged. The worker now applies a recorded rule it lacks
by tag, from the first change made under it, and says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from capture_env import Env, capture_env
from core_testing import CUSTOMER_SQL, NOW, TECH_SQL, WORK_ORDER_SQL, wait_until
from thorbis_home_services.schemas import TAG_CUSTOMERS, TECHNICIAN_SCHEDULE

from thorbis_cache.cache.tags import CacheTagInvalidator
from thorbis_cache.invalidation.lacking_rules import LackingRules
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.plugins.declarations import InvalidationRule
from thorbis_cache.postgres.connection import connect
from thorbis_cache.postgres.logical import LogicalCapture
from thorbis_cache.postgres.rules_record import (
    record_readable,
    record_rules,
    recorded_rules,
    rule_digest,
)

#: What the earlier release lacks: one rule of a table it watches, and a whole table.
NEW_RULE, NEW_TABLE = "hs.customer_entity", "hs.work_orders"


def _earlier(rules: list[InvalidationRule]) -> list[InvalidationRule]:
    return [r for r in rules if r.name != NEW_RULE and r.table != NEW_TABLE]


@pytest.fixture(params=["triggers", "logical"])
async def env(request: pytest.FixtureRequest, thorbis_pg_dsn: str,
              thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    async with capture_env(request.param, thorbis_pg_dsn, thorbis_standalone_redis_url
                           ) as env:
        await env.conn.execute(CUSTOMER_SQL, "acme", 2)
        await env.conn.execute(TECH_SQL, "acme", 10)
        await env.conn.execute(WORK_ORDER_SQL, "acme", 100, 1, 10, NOW)
        yield env


async def _set_up_as_the_earlier_release(env: Env, rules: list[InvalidationRule]) -> None:
    """The database as the earlier release's db init left it: its rules recorded, and
    the new table not captured."""
    await record_rules(env.conn, rules, env.app.cache.registry, exact=True)
    if env.capture is not None:
        await env.conn.execute(f"ALTER PUBLICATION {env.capture.publication} "
                               f"DROP TABLE {NEW_TABLE}")
        return
    for (name,) in await env.conn.fetch(
            "SELECT quote_ident(tgname) FROM pg_trigger WHERE tgrelid = $1::regclass "
            "AND NOT tgisinternal", NEW_TABLE):
        await env.conn.execute(f"DROP TRIGGER {name} ON {NEW_TABLE}")


def _worker(env: Env, rules: list[InvalidationRule]) -> OutboxWorker:
    capture = None if env.capture is None else LogicalCapture(
        env.capture.slot.removeprefix("thorbis_"), rules, env.app.plugins.all_views())
    return OutboxWorker(env.dsn, env.app.cache, rules, capture=capture,
                        invalidate_tags=CacheTagInvalidator(env.app.cache),
                        plugins=("home_services",))


async def test_a_worker_of_the_earlier_release_applies_the_rules_db_init_recorded(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="thorbis_cache")
    every = env.app.plugins.all_rules()
    earlier = _earlier(every)
    await _set_up_as_the_earlier_release(env, earlier)
    worker = _worker(env, earlier)
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.drained(), 30)
        # A change under the earlier release's rules: nothing is lacking.
        await env.conn.execute("UPDATE hs.customers SET phone = '1' WHERE id = 2")
        await asyncio.wait_for(worker.drained(), 30)
        assert worker.metrics.lacking_rules == 0
        assert "does not have" not in caplog.text

        out = await asyncio.to_thread(env.db_init)  # the new release's release job
        assert NEW_RULE in out
        # The new rule on a watched table: the customer's hash (no rule of the
        # earlier release targets it).
        await env.invalidated(1)
        # Every rule of a table the earlier release did not watch: a technician's
        # schedule, which the work order's move changes.
        schedule = env.app.cache.zset(TECHNICIAN_SCHEDULE.key("acme", technician_id=10,
                                                              day=NOW.date()))
        await schedule.add({100: 1.0}, replace=True)
        await env.conn.execute("UPDATE hs.work_orders SET scheduled_at = scheduled_at "
                               "+ interval '1 hour' WHERE tenant_id = 'acme' AND id = 100")

        async def emptied() -> bool:
            return await schedule.card() == 0

        await wait_until("the technician's schedule is invalidated", emptied)
        lacking = {r.name for r in every} - {r.name for r in earlier}
        assert worker.metrics.lacking_rules == len(lacking)
        assert {r.name for r in worker.lacking.rules} == lacking
        assert f"{len(lacking)} rule(s) this worker does not have" in caplog.text
        assert worker.metrics.failed_batches == 0
    finally:
        worker.stop()
        await running
        await worker.aclose()


async def test_a_worker_of_the_release_recorded_lacks_nothing(env: Env) -> None:
    """The record ``db init`` wrote matches the rules of the same release in another
    process: no stand-in, and no query beyond the record's version per batch."""
    worker = _worker(env, env.app.plugins.all_rules())
    try:
        await env.conn.execute("UPDATE hs.customers SET phone = '2' WHERE id = 1")
        await worker.drain()
        assert worker.lacking.rules == ()
        assert worker.metrics.lacking_rules == 0
        assert worker.metrics.processed >= 1
    finally:
        await worker.aclose()


async def test_db_init_records_exactly_its_rules_and_says_which_changed(env: Env) -> None:
    every = env.app.plugins.all_rules()
    registry = env.app.cache.registry
    recorded = await recorded_rules(env.conn)
    assert {(r.name, r.digest) for r in recorded} == {
        (r.name, rule_digest(r, registry)) for r in every}
    # Again with the same rules: nothing new. With fewer, nothing goes (another
    # process's rules stay), unless exact (db init --prune); putting it back says so.
    assert await record_rules(env.conn, every, registry) == ()
    assert await record_rules(env.conn, _earlier(every), registry) == ()
    assert NEW_RULE in {r.name for r in await recorded_rules(env.conn)}
    assert await record_rules(env.conn, _earlier(every), registry, exact=True) == ()
    assert NEW_RULE not in {r.name for r in await recorded_rules(env.conn)}
    back = await record_rules(env.conn, every, registry)
    assert NEW_RULE in back
    assert set(back) == {r.name for r in every} - {
        r.name for r in _earlier(every)}
    entity = next(r for r in await recorded_rules(env.conn) if r.name == NEW_RULE)
    assert entity.table == "hs.customers"
    assert entity.tags == (TAG_CUSTOMERS,)
    assert entity.untagged == ()


def test_a_rules_digest_is_the_same_in_every_process() -> None:
    """Digests compare across processes: nothing in them may depend on the process's
    string hashing, not even a rule whose plugin builds its columns and targets from
    sets (their order changes from one process to the next)."""
    script = ("import asyncio\n"
              "from thorbis_cache import InvalidationRule, RuleTarget\n"
              "from thorbis_cache.plugins.manager import PluginManager\n"
              "from thorbis_cache.postgres.rules_record import rule_digest\n"
              "m = PluginManager()\n"
              "asyncio.run(m.load(['home_services']))\n"
              "cols = {'status', 'priority', 'scheduled_at', 'notes', 'kind', 'zone'}\n"
              "tags = {'a.one', 'b.two', 'c.three', 'd.four'}\n"
              "odd = InvalidationRule('x.odd', table='x.t', operations={'UPDATE', 'INSERT'},\n"
              "    significant_columns=tuple(cols),\n"
              "    targets=tuple(RuleTarget(tag=t) for t in tags))\n"
              "print(sorted(rule_digest(r, m.registry) for r in [*m.all_rules(), odd]))\n")
    outputs = {subprocess.run([sys.executable, "-c", script], check=True, text=True,
                              capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed}
                              ).stdout for seed in ("1", "2", "3", "4", "5")}
    assert len(outputs) == 1, outputs


async def test_a_worker_says_what_it_lacks_when_it_starts(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """At its start (and at each capture check), not only at the first change: an idle
    worker of the earlier release shows it on its gauge, which the alert reads."""
    caplog.set_level(logging.WARNING, logger="thorbis_cache")
    earlier = _earlier(env.app.plugins.all_rules())
    worker = _worker(env, earlier)
    try:
        await worker.check_capture()
        assert worker.metrics.lacking_rules == len(env.app.plugins.all_rules()) - len(earlier)
        assert NEW_RULE in caplog.text
    finally:
        await worker.aclose()


async def test_a_role_that_may_not_read_the_record_is_told_not_failed(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker role granted table by table (least privilege) before the record existed
    may not read it: the worker goes on without it and says which grant is missing,
    once, instead of failing every batch."""
    role = f"w{uuid.uuid4().hex[:10]}"
    await env.conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    parts = urlsplit(env.dsn)
    dsn = urlunsplit((parts.scheme, f"{role}:pw@{parts.hostname}:{parts.port}",
                      parts.path, parts.query, parts.fragment))
    conn = await connect(dsn)
    try:
        await env.conn.execute(f"GRANT USAGE ON SCHEMA thorbis TO {role}")
        assert await record_readable(conn) is False
        lacking = LackingRules(_earlier(env.app.plugins.all_rules()), env.app.cache.registry)
        assert not await lacking.changed(conn)
        assert not await lacking.changed(conn)
        assert caplog.text.count(f"GRANT SELECT ON thorbis.capture_rules TO {role}") == 1
        await env.conn.execute(f"GRANT SELECT ON thorbis.capture_rules TO {role}")
        assert await record_readable(conn) is True
        assert await lacking.changed(conn)  # now it reads what it lacks
        assert NEW_RULE in {r.name for r in lacking.rules}
    finally:
        await conn.close()
        await env.conn.execute(f"REVOKE ALL ON SCHEMA thorbis FROM {role}; "
                               f"REVOKE ALL ON thorbis.capture_rules FROM {role}; "
                               f"DROP ROLE {role}")
