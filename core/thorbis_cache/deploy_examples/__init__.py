"""The example ``redis.conf`` and ``sentinel.conf``, shipped in the wheel.

The repository keeps identical copies in ``deploy/redis/`` for operators (a test fails
when they differ). They are package data, not files found next to a checkout, because
the test servers include them (:class:`~thorbis_cache.testing.servers.RedisServer` and
:class:`~thorbis_cache.testing.servers.RedisSentinelGroup`): a plugin author running the
contract kit from an installed wheel gets servers configured exactly as the suite's,
rather than Redis's defaults whenever ``deploy/`` is absent.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["REDIS_CONF", "SENTINEL_CONF", "SENTINEL_SERVICE", "path"]

#: The data servers' example (Redis, a Sentinel group's data servers, Cluster nodes).
REDIS_CONF = "redis.conf"
#: The sentinels' example.
SENTINEL_CONF = "sentinel.conf"
#: The master name the Sentinel example's per-master settings are written for.
SENTINEL_SERVICE = "thorbis"


def path(name: str) -> Path:
    """The example's path on disk (Redis reads an ``include`` by path).

    :param name: :data:`REDIS_CONF` or :data:`SENTINEL_CONF`.
    :returns: the absolute path of the installed file.
    :raises FileNotFoundError: the package was installed without its data files, or
        from an archive that is not unpacked on disk.
    """
    found = resources.files(__name__) / name
    if not isinstance(found, Path) or not found.is_file():
        raise FileNotFoundError(
            f"thorbis_cache.deploy_examples/{name} is not a file on disk ({found}); "
            "reinstall thorbis-cache from its wheel")
    return found.resolve()
