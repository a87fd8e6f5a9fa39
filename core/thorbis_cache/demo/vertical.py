"""The demo's plugin scene: what ``CacheApp`` loaded, and two of its patterns at work.

For one tenant it runs the plugin's ``hs.work_orders`` warmer (open work orders and the
status lists, each batch filled under leases taken before its query), reads the
``hs.high_priority_work_orders`` board, and asks ``hs.predicted_next_service``, which
reads the customer's service history through the cache. The patterns
are called the way a host calls them, ``app.pattern(name)(tenant, ...)``; the checks
compare their answers with what PostgreSQL holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from thorbis_home_services import NextService, RankedWorkOrder, loaders
from thorbis_home_services.patterns import ACTIONABLE_STATUSES
from thorbis_home_services.predict import predict_next_service
from thorbis_home_services.scoring import score_of

from thorbis_cache.app import CacheApp
from thorbis_cache.demo.database import Database
from thorbis_cache.demo.results import Check, DemoFailure, PluginResult
from thorbis_cache.plugins.declarations import WarmContext
from thorbis_cache.warming import WarmOutcome, warm

__all__ = ["BOARD", "PLUGIN", "PREDICT", "WARMER", "plugin_scene"]

#: The plugin the demo loads (its entry-point name), and what it uses of it.
PLUGIN = "home_services"
WARMER = "hs.work_orders"
BOARD = "hs.high_priority_work_orders"
PREDICT = "hs.predicted_next_service"

_BOARD_LIMIT = 5
# Customers whose histories are read to pick one with a history worth predicting from.
_CANDIDATES = 50
_WANTED_SERVICES = 3


async def _warm(app: CacheApp, db: Database, tenant: str) -> tuple[int, list[int]]:
    """Run the plugin's work-order warmer for ``tenant``: each batch it yields is filled
    by :func:`~thorbis_cache.warming.warm` (leases first, then the batch's query).

    :returns: entries written, and the ids of the top open orders by the seed's score,
        computed from PostgreSQL, for the board's check.
    """
    loaded = app.plugins.plugins[PLUGIN]
    warmer = next((w for w in loaded.warmers if w.name == WARMER), None)
    if warmer is None:
        raise DemoFailure(f"plugin {PLUGIN} declares no warmer {WARMER!r}")
    context = WarmContext(cache=app.cache, tenant=tenant, fetch=db.fetch)
    outcome = WarmOutcome()
    async for batch in warmer.produce(context):  # entities before the lists: in order
        outcome += await warm(app.cache, batch)
    open_orders = [o for o in await loaders.open_work_orders(db.fetch, tenant)
                   if o.status in ACTIONABLE_STATUSES]
    ranked = sorted(open_orders, key=lambda o: (-score_of(o), o.id))
    return outcome.filled, [o.id for o in ranked[:_BOARD_LIMIT]]


def _board_check(board: Sequence[RankedWorkOrder], expected: list[int]) -> Check:
    ids = [row.work_order_id for row in board]
    from_cache = all(row.order is not None and row.order.id == row.work_order_id for row in board)
    return Check(
        f"board = top {len(expected)} open orders in PostgreSQL by score; orders read from cache",
        ids == expected and from_cache,
        "" if ids else "no open work orders",
    )


def _prediction_check(
    prediction: NextService | None, expected: NextService | None, customer_id: int
) -> Check:
    # The time series stores completions as float Unix seconds; allow for the rounding.
    same = (prediction is None) == (expected is None) and (
        prediction is None
        or expected is None
        or abs((prediction.due_at - expected.due_at).total_seconds()) < 0.001
    )
    return Check(
        f"prediction = the formula on customer {customer_id}'s history in PostgreSQL",
        same,
        "" if prediction else "no prediction",
    )


async def plugin_scene(
    app: CacheApp, db: Database, tenant: str, customers: Sequence[int], start_s: float
) -> PluginResult:
    """Describe the loaded plugin and run its board and prediction patterns for ``tenant``.

    :param app: the started app (the plugin loaded).
    :param db: the warmer's and loaders' data access.
    :param tenant: the tenant shown.
    :param customers: candidate customers for the prediction, most popular first; the
        first with at least three completed services is used (else the one with most).
    :param start_s: how long ``CacheApp.start`` took.
    :returns: what was loaded, run and checked.
    :raises DemoFailure: the plugin lacks the warmer the scene runs.
    """
    loaded = app.plugins.plugins[PLUGIN]
    declared = {
        "schemas": len(loaded.schemas),
        "patterns": len(loaded.patterns),
        "views": len(loaded.views),
        "rules": len(loaded.rules),
        "warmers": len(loaded.warmers),
        "permissions": len(loaded.permissions),
    }
    t0 = time.perf_counter()
    warmed, expected_board = await _warm(app, db, tenant)
    warm_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    board: list[RankedWorkOrder] = await app.pattern(BOARD)(tenant, limit=_BOARD_LIMIT)
    board_s = time.perf_counter() - t0

    histories = await loaders.service_histories(db.fetch, tenant, customers[:_CANDIDATES])
    customer_id = next(
        (c for c, h in histories.items() if len(h) >= _WANTED_SERVICES),
        max(histories, key=lambda c: len(histories[c])),
    )
    history = histories[customer_id]
    t0 = time.perf_counter()
    # Read through: the history is not cached yet, so the pattern loads it under a lease.
    prediction: NextService | None = await app.pattern(PREDICT)(
        tenant, customer_id=customer_id, fetch=db.fetch)
    predict_s = time.perf_counter() - t0

    expected = predict_next_service(at for _, at in history)
    checks = (
        _board_check(board, expected_board),
        _prediction_check(prediction, expected, customer_id),
    )
    return PluginResult(
        name=loaded.name,
        distribution=loaded.distribution,
        version=loaded.version,
        namespace=loaded.info.namespace,
        hook_api_version=loaded.info.hook_api_version,
        declared=declared,
        start_s=start_s,
        tenant=tenant,
        warmer=WARMER,
        warmed=warmed,
        warm_s=warm_s,
        board_pattern=BOARD,
        board_limit=_BOARD_LIMIT,
        board=tuple(board),
        board_s=board_s,
        predict_pattern=PREDICT,
        customer_id=customer_id,
        history=tuple(history),
        prediction=prediction,
        predict_s=predict_s,
        checks=checks,
    )
