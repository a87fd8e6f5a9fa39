"""Which Python types a cached value may be built of: checked where a
:class:`~thorbis_cache.cache.keys.KeySchema` is declared (so it sits below both the key
schemas and the codec, which store and restore those types)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import types
import typing
import uuid
from typing import Any

import attrs

__all__ = ["SUPPORTED_TYPES", "unsupported_type"]

#: The types a value may be built of (``docs/envelope.md``, Supported types); containers
#: and unions of them, attrs classes and dataclasses whose fields are of them, enums.
SUPPORTED_TYPES = (
    "None, bool, int (64 bits), float, str, bytes, decimal.Decimal, uuid.UUID, "
    "datetime.date, datetime.datetime, an Enum, Any, an attrs class or dataclass of "
    "supported fields, list/tuple/set/frozenset/dict (or Sequence, Set, Mapping) of "
    "supported types, X | Y, Optional[X], Literal[...]"
)
_SCALARS = (type(None), bool, int, float, str, bytes, decimal.Decimal, uuid.UUID, dt.date,
            dt.datetime)
_CONTAINERS = (list, tuple, set, frozenset, dict)
_ABC_CONTAINERS = {"Sequence", "MutableSequence", "Set", "MutableSet", "Mapping",
                   "MutableMapping", "Collection", "Iterable"}


def unsupported_type(tp: Any, path: str = "", _seen: frozenset[int] = frozenset()) -> str | None:
    """Why ``tp`` holds a type the codec cannot store and restore, or None.

    Checked when a :class:`~thorbis_cache.cache.keys.KeySchema` is declared, so a
    ``datetime.time`` or a plain class is refused there, naming the field, instead of
    failing the first write with a message naming neither schema nor field.

    :param tp: a value type (an attrs class, a container, a union...).
    :param path: the field path of ``tp`` in the value (``"visit.at"``), "" for the value.
    :returns: ``"field 'visit.at' is datetime.time"`` (or ``"the value is ..."``) for the
        first unsupported part.
    """
    def refuse(what: str) -> str:
        return f"field {path!r} is {what}" if path else f"the value is {what}"

    if tp is Any or tp is None or tp in _SCALARS:
        return None
    if tp is object:
        return refuse("object, which the codec cannot restore: declare typing.Any for a "
                      "value of any type msgpack holds")
    if isinstance(tp, typing.NewType):
        return unsupported_type(tp.__supertype__, path, _seen)
    if isinstance(tp, typing.TypeVar | str | typing.ForwardRef):
        return refuse(f"{tp!r}, an unresolved type")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return unsupported_type(args[0], path, _seen)
    if origin is typing.Literal:
        return None
    if origin is typing.Union or origin is types.UnionType:
        return next((p for a in args if (p := unsupported_type(a, path, _seen))), None)
    if origin is not None:
        name = getattr(origin, "__name__", "")
        if origin in _CONTAINERS or (getattr(origin, "__module__", "") == "collections.abc"
                                     and name in _ABC_CONTAINERS):
            for arg in (a for a in args if a is not Ellipsis):
                found = unsupported_type(arg, f"{path}[]", _seen)
                if found:
                    return found
            return None
        return refuse(repr(tp))
    if not isinstance(tp, type):
        return refuse(repr(tp))
    if issubclass(tp, enum.Enum) or tp in _CONTAINERS:
        return None
    if id(tp) in _seen:
        return None  # a recursive type: its fields are being checked already
    if attrs.has(tp):
        try:
            fields = [(f.name, f.type) for f in attrs.fields(attrs.resolve_types(tp))]
        except NameError as exc:
            return refuse(f"{tp.__qualname__}, whose annotations do not resolve ({exc})")
    elif dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = [(f.name, hints.get(f.name, Any)) for f in dataclasses.fields(tp)]
    else:
        module = "" if tp.__module__ == "builtins" else f"{tp.__module__}."
        return refuse(f"{module}{tp.__qualname__}")
    seen = _seen | {id(tp)}
    for name, field_type in fields:
        found = unsupported_type(field_type, f"{path}.{name}" if path else name, seen)
        if found:
            return found
    return None
