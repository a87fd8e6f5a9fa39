"""The hot commands' transport: multiplexed, pipelined connections with ``hiredis``.

:mod:`.connection` is one connection many callers share (replies matched in order,
never to the wrong caller); :mod:`.node` keeps a few of them per server; :mod:`.router`
picks the server from the redis-py client's own view of the topology. The store
(:mod:`thorbis_cache.store.redis_store`) sends GET, MGET, SET and scripts through it and
everything else through redis-py.
"""

from thorbis_cache.transport.connection import MultiplexedConnection, pack_command
from thorbis_cache.transport.node import ConnectOptions, NodeConnections
from thorbis_cache.transport.router import Router, connect_options

__all__ = ["ConnectOptions", "MultiplexedConnection", "NodeConnections", "Router",
           "connect_options", "pack_command"]
