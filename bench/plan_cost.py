"""What planning one captured change costs the worker: ``RulePlanner.plan`` of one
``hs.customers`` UPDATE (a phone changed), in a loop, in this process.

    .venv/bin/python bench/plan_cost.py             # 50,000 plans, best of 5

No server is touched: planning reads the rules and the schema registry only. A report,
not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import timeit
from collections.abc import Sequence

from thorbis_cache import Cache, KeyRing
from thorbis_cache.invalidation.planning import RulePlanner
from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres.outbox import OutboxRow

IMAGE = {"id": 5, "tenant_id": "acme", "account_status": "active",
         "customer_type": "residential", "service_area_id": 1, "payment_status": "current"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=50_000, help="plans per repetition")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (the best counts)")
    options = parser.parse_args(argv)
    plugins = PluginManager()
    asyncio.run(plugins.load(["home_services"]))
    # Never connected: planning builds keys, it does not read them.
    cache = Cache.from_url("redis://127.0.0.1:1", plugins.registry, keyring=KeyRing.generate())
    planner = RulePlanner(cache, plugins.all_rules())
    row = OutboxRow(id=1, txid="1", created_at=dt.datetime.now(dt.UTC),
                    table_name="hs.customers", operation="UPDATE", tenant_id="acme",
                    pk={"id": 5}, old={**IMAGE, "phone": "a"}, new={**IMAGE, "phone": "b"},
                    attempts=0, last_error=None, age=0.0)
    plan = planner.plan(row)
    best = min(timeit.repeat(lambda: planner.plan(row), number=options.plans,
                             repeat=options.repeat))
    print(f"{len(plan.keys)} key(s), {len(plan.tags)} tag(s) per plan; "
          f"{best / options.plans * 1e6:.2f} us per plan (best of {options.repeat} x "
          f"{options.plans:,})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
