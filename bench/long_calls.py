"""What one long ``get_many`` costs the server's other clients.

    .venv/bin/python bench/long_calls.py                 # about 20 s
    .venv/bin/python bench/long_calls.py --keys 20000 --rounds 5

One process keeps reading ``--keys`` keys of 1 KiB with ``RedisStore.mget`` while another
client (a process of its own) times single GETs against the same server.
Two settings of ``keys_per_command``, interleaved round by round in the same run:
``--per`` (512 by default, the store's default: the long call is cut into bounded
commands, written at once) and one command for the whole call (as before). Printed:
the other client's GET latency (p50, p99, max) under each, and the long call's own
duration; the ratios are cut / whole.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.servers import RedisServer

WHOLE = 10**9


async def _probe(url: str, key: str, seconds: float) -> None:
    """The other client (a process of its own): single GETs for ``seconds``; prints
    their latencies, one per line."""
    async with RedisStore.from_url(url) as other:
        await other.get(key)
        stop = time.perf_counter() + seconds
        gets: list[float] = []
        while time.perf_counter() < stop:
            began = time.perf_counter()
            await other.get(key)
            gets.append(time.perf_counter() - began)
            await asyncio.sleep(0.0005)
    print("\n".join(f"{g:.9f}" for g in gets))


async def _round(url: str, keys: list[str], per: int, seconds: float
                 ) -> tuple[list[float], list[float]]:
    """GET latencies of the other client, and the long calls' durations (seconds)."""
    async with RedisStore.from_url(url) as long_store:
        long_store.keys_per_command = per
        await long_store.mget(keys[:10])
        probe = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--probe", url, keys[-1], str(seconds),
            stdout=asyncio.subprocess.PIPE)
        stop = time.perf_counter() + seconds
        calls: list[float] = []
        while time.perf_counter() < stop:
            began = time.perf_counter()
            values = await long_store.mget(keys)
            calls.append(time.perf_counter() - began)
            assert values[0] is not None
        out, _ = await probe.communicate()
        return [float(line) for line in out.decode().split()], calls


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and setting")
    parser.add_argument("--per", type=int, default=512, help="keys per command when cut")
    parser.add_argument("--probe", nargs=3, metavar=("URL", "KEY", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        url, key, seconds = args.probe
        await _probe(url, key, float(seconds))
        return
    server = RedisServer().start()
    try:
        url = server.url
        keys = [f"tc:{{bench}}:long:{i}" for i in range(args.keys)]
        async with RedisStore.from_url(url) as store:
            value = b"x" * 1024
            for i in range(0, len(keys), 1000):
                await asyncio.gather(*(store.set(k, value, 600_000) for k in keys[i:i + 1000]))
        cut = args.per
        results: dict[int, tuple[list[float], list[float]]] = {cut: ([], []), WHOLE: ([], [])}
        for r in range(args.rounds):
            order = (cut, WHOLE) if r % 2 == 0 else (WHOLE, cut)
            for per in order:
                gets, calls = await _round(url, keys, per, args.seconds)
                results[per][0].extend(gets)
                results[per][1].extend(calls)
        print(f"redis-server on {url}: {args.keys:,} keys of 1 KiB per "
              f"get_many, {args.rounds} interleaved rounds of {args.seconds:.0f} s")
        rows = []
        for label, per in ((f"cut ({cut} keys per command)", cut), ("one command", WHOLE)):
            gets, calls = results[per]
            rows.append((label, _pct(gets, 0.5), _pct(gets, 0.99), max(gets),
                         statistics.median(calls)))
            print(f"  {label:28} other client's GET p50 {rows[-1][1] * 1e3:7.2f} ms  "
                  f"p99 {rows[-1][2] * 1e3:7.2f} ms  max {rows[-1][3] * 1e3:7.2f} ms   "
                  f"get_many {rows[-1][4] * 1e3:7.1f} ms  ({len(gets):,} GETs)")
        parts, whole = rows
        print(f"  ratios cut / one command: GET p50 {parts[1] / whole[1]:.2f}x, "
              f"p99 {parts[2] / whole[2]:.2f}x, max {parts[3] / whole[3]:.2f}x; "
              f"get_many {parts[4] / whole[4]:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
