"""The hot commands' transport, as Prometheus sees it: how many calls the multiplexed
connections handed to redis-py (:attr:`RedisStore.handovers`), how many times a
server that stopped answering was given up (:attr:`RedisStore.silent_servers`), and what
the circuit breakers did (:attr:`RedisStore.breakers`: the store's, and on a Cluster
one per master).

A handover is how the transport stays correct through a resharding, a failover or a
restart, so a few around such events are expected. A count that rises with the traffic
means the multiplexed connections are not carrying the hot path (a server that keeps
closing them, a proxy in between, a slot map that never settles) and every hit pays
redis-py's cost instead. A silent server is one that owed replies for a call's timeout
without sending a byte (a hung or stopped process, a partition, a middlebox that
dropped the flow): any count is worth a look.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from thorbis_cache.store.redis_store import RedisStore

__all__ = ["TransportCollector"]


class TransportCollector(Collector):
    """``thorbis_cache_transport_handovers_total{reason}``,
    ``thorbis_cache_transport_silent_servers_total`` and
    ``thorbis_cache_redis_circuit_{opens,refused}_total{breaker}`` of one store."""

    def __init__(self, store: RedisStore, namespace: str = "thorbis_cache") -> None:
        self.store = store
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        """The store's handovers by reason, its silent servers and its breakers'
        counts (read at scrape time)."""
        family = CounterMetricFamily(
            f"{self.namespace}_transport_handovers",
            "Hot commands the multiplexed transport handed to redis-py, by reason "
            "(redirect, connection)", labels=["reason"])
        for reason, count in self.store.handovers.items():
            family.add_metric([reason], count)
        yield family
        yield CounterMetricFamily(
            f"{self.namespace}_transport_silent_servers",
            "Times a Redis server owed replies on the multiplexed connections for a "
            "call's timeout without sending a byte, and its connections were closed",
            value=self.store.silent_servers)
        opens = CounterMetricFamily(
            f"{self.namespace}_redis_circuit_opens",
            "Times a circuit breaker opened (calls then refused at once until a probe "
            "answers): breaker=store, or a Cluster master's host:port", labels=["breaker"])
        refused = CounterMetricFamily(
            f"{self.namespace}_redis_circuit_refused",
            "Calls a circuit breaker refused at once, by breaker", labels=["breaker"])
        for name, breaker in self.store.breakers.every().items():
            opens.add_metric([name or "store"], breaker.opens)
            refused.add_metric([name or "store"], breaker.refused)
        yield opens
        yield refused
