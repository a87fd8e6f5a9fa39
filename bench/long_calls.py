"""What one long ``get_many`` costs the server's other clients.

    .venv/bin/python bench/long_calls.py                 # about 20 s
    .venv/bin/python bench/long_calls.py --keys 20000 --rounds 5

One process keeps reading ``--keys`` keys of 1 KiB with ``RedisStore.mget`` while another
client (its own store, its own connections) times single GETs against the same server.
Two settings of ``keys_per_command``, interleaved round by round in the same run: 512
(the default: the long call is cut into bounded commands, written at once) and one
command for the whole call (as before). Printed: the other client's GET latency (p50,
p99, max) under each, and the long call's own duration; the ratios are cut / whole.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.servers import RedisServer

WHOLE = 10**9


async def _round(url: str, keys: list[str], per: int, seconds: float
                 ) -> tuple[list[float], list[float]]:
    """GET latencies of the other client, and the long calls' durations (seconds)."""
    async with RedisStore.from_url(url) as long_store, RedisStore.from_url(url) as other:
        long_store.keys_per_command = per
        await other.get(keys[0])
        await long_store.mget(keys[:10])
        stop = time.perf_counter() + seconds
        gets: list[float] = []
        calls: list[float] = []

        async def long_calls() -> None:
            while time.perf_counter() < stop:
                began = time.perf_counter()
                values = await long_store.mget(keys)
                calls.append(time.perf_counter() - began)
                assert values[0] is not None

        async def probes() -> None:
            while time.perf_counter() < stop:
                began = time.perf_counter()
                await other.get(keys[-1])
                gets.append(time.perf_counter() - began)
                await asyncio.sleep(0.0005)

        await asyncio.gather(long_calls(), probes())
        return gets, calls


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and setting")
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        url = server.url
        keys = [f"tc:{{bench}}:long:{i}" for i in range(args.keys)]
        async with RedisStore.from_url(url) as store:
            value = b"x" * 1024
            for i in range(0, len(keys), 1000):
                await asyncio.gather(*(store.set(k, value, 600_000) for k in keys[i:i + 1000]))
        results: dict[int, tuple[list[float], list[float]]] = {512: ([], []), WHOLE: ([], [])}
        for r in range(args.rounds):
            order = (512, WHOLE) if r % 2 == 0 else (WHOLE, 512)
            for per in order:
                gets, calls = await _round(url, keys, per, args.seconds)
                results[per][0].extend(gets)
                results[per][1].extend(calls)
        print(f"redis-server on {url}: {args.keys:,} keys of 1 KiB per "
              f"get_many, {args.rounds} interleaved rounds of {args.seconds:.0f} s")
        rows = []
        for label, per in (("cut (512 keys per command)", 512), ("one command", WHOLE)):
            gets, calls = results[per]
            rows.append((label, _pct(gets, 0.5), _pct(gets, 0.99), max(gets),
                         statistics.median(calls)))
            print(f"  {label:28} other client's GET p50 {rows[-1][1] * 1e3:7.2f} ms  "
                  f"p99 {rows[-1][2] * 1e3:7.2f} ms  max {rows[-1][3] * 1e3:7.2f} ms   "
                  f"get_many {rows[-1][4] * 1e3:7.1f} ms  ({len(gets):,} GETs)")
        cut, whole = rows
        print(f"  ratios cut / one command: GET p50 {cut[1] / whole[1]:.2f}x, "
              f"p99 {cut[2] / whole[2]:.2f}x, max {cut[3] / whole[3]:.2f}x; "
              f"get_many {cut[4] / whole[4]:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
