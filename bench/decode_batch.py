"""``get_many``'s one-pass decode against decoding each value on its own: a report.

    .venv/bin/python bench/decode_batch.py

For the hit-path bench's 1 KiB ``WorkOrder`` (clear and encrypted, uncompressed), 100
entries as ``get_many`` receives them from one MGET: microseconds per value through
``SchemaCodec.decode_values`` (the header, CRC or AES-GCM with the batch's ciphers, and
msgspec inline) and through ``decode_value`` called per entry, in the same process, best
of 5 repetitions. No Redis: the decode alone. Exit status 0 whatever the numbers.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hit_path  # a sibling script module, found through the line above

from thorbis_cache import CodecSettings, Compression, KeyRing, KeySchema
from thorbis_cache.cache.codec import SchemaCodec, make_converter
from thorbis_cache.cache.envelope import CorruptEntry

BATCH = 100
CALLS = 2000


def per_value(sensitive: bool) -> dict[str, float]:
    """Microseconds per value of each way, for a clear or an encrypted schema."""
    schema = KeySchema("bench.order", hit_path.WorkOrder, params={"id": int},
                       sensitive=sensitive, compression=Compression.NEVER)
    codec = SchemaCodec(schema, make_converter(), KeyRing.generate(), CodecSettings())
    rks = [f"tc:{{acme}}:bench.order:{i}" for i in range(BATCH)]
    datas: list[bytes | None] = [codec.encode(hit_path.make_order(i), rk.encode(), "acme", None)
                                 for i, rk in enumerate(rks)]
    tenants = ["acme"] * BATCH

    def batch() -> object:
        return codec.decode_values(datas, rks, tenants)

    def each() -> object:
        out = []
        for data, rk in zip(datas, rks, strict=True):
            assert data is not None
            try:
                out.append(codec.decode_value(data, rk.encode(), "acme"))
            except CorruptEntry:
                out.append(None)
        return out

    return {name: min(timeit.repeat(fn, number=CALLS, repeat=5)) / CALLS / BATCH * 1e6
            for name, fn in (("batch", batch), ("each", each))}


def main() -> int:
    for sensitive in (False, True):
        figures = per_value(sensitive)
        kind = "encrypted" if sensitive else "clear"
        print(f"{kind:9s}: decode_values {figures['batch']:.2f} us/value, decode_value "
              f"each {figures['each']:.2f} us/value ({figures['each'] / figures['batch']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
