"""Column values decoded from the WAL's text, as PostgreSQL's ``to_jsonb`` gives them.

A capture trigger writes the columns a rule reads with ``jsonb_build_object``; the
worker then reads that JSON. Logical capture receives the same columns as text (each
type's output function, in a session with ``DateStyle=ISO`` and ``TimeZone=UTC``) and
must hand the rules the values the trigger's JSON would have parsed to. For the types
rules read (keys, tenants, statuses, numbers, dates) this module does it in Python;
:func:`json_value` raises :class:`Unsupported` for any other type or form, and the
caller then asks PostgreSQL itself (``jsonb_populate_record`` then
``jsonb_build_object``: slower, exact for every type).

``tests/test_row_images.py`` checks every converter against PostgreSQL's own JSON with
hypothesis.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from typing import Any

__all__ = ["SUPPORTED", "Unsupported", "as_text", "converter", "json_value"]


class Unsupported(ValueError):
    """No Python conversion for this type or value: build the image in PostgreSQL."""


def as_text(text: str) -> Any:
    """The converter of the text types: the value is the text itself."""
    return text


def _bool(text: str) -> Any:
    if text == "t":
        return True
    if text == "f":
        return False
    raise Unsupported(f"boolean {text!r}")


def _jsonb_number(text: str) -> Any:
    # jsonb holds numbers as numeric, written without an exponent (1e+06 as 1000000);
    # the worker's json.loads then reads "3" as an int and "3.5" as a float.
    if "e" in text or "E" in text:
        text = format(decimal.Decimal(text), "f")
    return json.loads(text)


def _number(text: str) -> Any:
    # NaN and the infinities have no JSON number: to_jsonb writes them as strings.
    if text in {"NaN", "Infinity", "-Infinity"}:
        return text
    return _jsonb_number(text)


def _integer(text: str) -> Any:
    return int(text)


def _json(text: str) -> Any:
    return json.loads(text, parse_float=_jsonb_number, parse_int=_jsonb_number)


def _date(text: str) -> Any:
    # ISO dates read the same in JSON; a BC date does not (JSON writes a year sign).
    if text.endswith(" BC"):
        raise Unsupported(f"date {text!r}")
    return text


def _timestamp(text: str) -> Any:
    if text.endswith(" BC"):
        raise Unsupported(f"timestamp {text!r}")
    if text in {"infinity", "-infinity"}:
        return text
    return text.replace(" ", "T", 1)


def _timestamptz(text: str) -> Any:
    # The stream's session runs TimeZone=UTC: the offset is "+00", JSON writes "+00:00".
    value = _timestamp(text)
    if value in {"infinity", "-infinity"}:
        return value
    if not value.endswith("+00"):
        raise Unsupported(f"timestamptz {text!r} (the stream's session is not in UTC?)")
    return value + ":00"


#: Type oid -> converter from the type's text output to the value ``to_jsonb`` gives.
SUPPORTED: dict[int, Callable[[str], Any]] = {
    16: _bool,
    # char, name, text, bpchar, varchar, uuid
    18: as_text, 19: as_text, 25: as_text, 1042: as_text, 1043: as_text, 2950: as_text,
    20: _integer, 21: _integer, 23: _integer,  # int8, int2, int4
    26: as_text,  # oid: to_jsonb writes it as a string
    700: _number, 701: _number, 1700: _number,  # float4, float8, numeric
    114: _json, 3802: _json,
    1082: _date, 1114: _timestamp, 1184: _timestamptz,
}


def converter(type_oid: int) -> Callable[[str], Any]:
    """The converter of a type's text (NULL is not given to it).

    :raises Unsupported: no Python conversion for this type.
    """
    convert = SUPPORTED.get(type_oid)
    if convert is None:
        raise Unsupported(f"type oid {type_oid}")
    return convert


def json_value(type_oid: int, text: str | None) -> Any:
    """The value ``to_jsonb`` gives a column of type ``type_oid`` whose text output is
    ``text`` (None: SQL NULL).

    :raises Unsupported: a type or value this module does not convert.
    """
    if text is None:
        return None
    convert = SUPPORTED.get(type_oid)
    if convert is None:
        raise Unsupported(f"type oid {type_oid}")
    return convert(text)
