"""Positional (array-like) msgpack for attrs values, and a batched decode: measured.

    .venv/bin/python bench/positional.py

Issue 16 asked to measure two ways of decoding faster than the shipped one (the body is
a msgpack map of field names, decoded by msgspec straight into the attrs type):

* **positional bodies**: the fields as a msgpack array, in declaration order. msgspec
  decodes arrays into its own ``Struct`` types only (``array_like=True``), so an attrs
  value needs a generated ``Struct`` mirror of its type (nested attrs types mirrored
  too) and then a conversion to the attrs type (``msgspec.convert(...,
  from_attributes=True)``, in C);
* **a batched decode**: the 100 bodies of a ``get_many`` as one msgpack array decoded
  by one call into ``list[T]`` (the bodies would have to be concatenated first, which
  this leaves out: a lower bound).

For the hit-path bench's records (the 1 KiB ``WorkOrder`` with nested line items and
the 16 KiB ``CustomerHistory`` of 16 of them), microseconds per value of each way, in
one process, best of 5 repetitions, each checked to give a value equal to the original.
No Redis, no envelope: the msgpack decode alone. Exit status 0 whatever the numbers.
"""

from __future__ import annotations

import sys
import timeit
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hit_path  # a sibling script module, found through the line above

BATCH = 100


def mirror(tp: Any, *, array_like: bool, memo: dict[Any, Any]) -> Any:
    """``tp`` with every attrs class in it replaced by a generated ``msgspec.Struct`` of
    the same fields (positional when ``array_like``)."""
    if isinstance(tp, type) and attrs.has(tp):
        if tp not in memo:
            fields = [(f.name, mirror(f.type, array_like=array_like, memo=memo))
                      for f in attrs.fields(attrs.resolve_types(tp))]
            memo[tp] = msgspec.defstruct(f"{tp.__name__}Mirror", fields,
                                         array_like=array_like)
        return memo[tp]
    args = typing.get_args(tp)
    if args:
        origin = typing.get_origin(tp)
        return origin[tuple(mirror(a, array_like=array_like, memo=memo) for a in args)]
    return tp


def as_mirror(value: Any, memo: dict[Any, Any]) -> Any:
    """``value`` (an attrs instance, or lists of them) rebuilt as its mirror type."""
    if attrs.has(type(value)):
        return memo[type(value)](*(as_mirror(getattr(value, f.name), memo)
                                   for f in attrs.fields(type(value))))
    if isinstance(value, list):
        return [as_mirror(v, memo) for v in value]
    return value


def ways(tp: type[Any], value: Any) -> dict[str, tuple[Callable[[], Any], int]]:
    """Each decode of ``value``'s body: (the call, the body's size)."""
    shipped = msgspec.msgpack.encode(value)
    to_attrs = msgspec.msgpack.Decoder(tp)
    map_memo: dict[Any, Any] = {}
    map_struct = msgspec.msgpack.Decoder(mirror(tp, array_like=False, memo=map_memo))
    array_memo: dict[Any, Any] = {}
    array_type = mirror(tp, array_like=True, memo=array_memo)
    positional = msgspec.msgpack.encode(as_mirror(value, array_memo))
    to_struct = msgspec.msgpack.Decoder(array_type)
    untyped = msgspec.msgpack.Decoder()
    batch = msgspec.msgpack.encode([value] * BATCH)
    to_list = msgspec.msgpack.Decoder(list[tp])  # type: ignore[valid-type]

    def positional_to_attrs() -> Any:
        return msgspec.convert(to_struct.decode(positional), tp, from_attributes=True)

    checks = {
        "map body -> attrs (shipped)": to_attrs.decode(shipped),
        "positional body -> Struct mirror -> attrs": positional_to_attrs(),
        "100 map bodies as one array -> list[attrs], per value": to_list.decode(batch)[-1],
    }
    for name, got in checks.items():
        if got != value:
            raise RuntimeError(f"{name}: decoded a different value")
    return {
        "map body -> attrs (shipped)": (lambda: to_attrs.decode(shipped), len(shipped)),
        "map body -> Struct mirror (not the user's type)":
            (lambda: map_struct.decode(shipped), len(shipped)),
        "map body -> dicts and lists (untyped)": (lambda: untyped.decode(shipped), len(shipped)),
        "positional body -> Struct mirror (not the user's type)":
            (lambda: to_struct.decode(positional), len(positional)),
        "positional body -> Struct mirror -> attrs": (positional_to_attrs, len(positional)),
        "100 map bodies as one array -> list[attrs], per value":
            (lambda: to_list.decode(batch), len(shipped)),
    }


def main() -> int:
    records: list[tuple[str, type[Any], Any, int]] = [
        ("1 KiB WorkOrder", hit_path.WorkOrder, hit_path.make_order(1, 1024), 20_000),
        ("16 KiB CustomerHistory", hit_path.CustomerHistory,
         hit_path.make_history(16 * 1024), 2_000),
    ]
    for label, tp, value, calls in records:
        print(f"{label}:")
        figures: dict[str, float] = {}
        for name, (fn, size) in ways(tp, value).items():
            per_call = BATCH if name.startswith("100 ") else 1
            number = max(1, calls // per_call)
            best = min(timeit.repeat(fn, number=number, repeat=5))
            figures[name] = best / number / per_call * 1e6
            print(f"  {name:58s} {figures[name]:7.2f} us/value  ({size:,} B body)")
        shipped = figures["map body -> attrs (shipped)"]
        positional = figures["positional body -> Struct mirror -> attrs"]
        batched = figures["100 map bodies as one array -> list[attrs], per value"]
        print(f"  positional, to the user's attrs type: {positional / shipped:.2f}x the "
              f"shipped decode; batched: {batched / shipped:.2f}x\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
