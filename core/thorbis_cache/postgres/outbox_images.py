"""Compact outbox images: text arrays written by the capture triggers, JSON objects again
at claim time.

A capture trigger used to write the primary key and the old/new images as
``jsonb_build_object(...)``: three calls that cost about as much as the rest of the
capture together (``sql/core/006_outbox_lean.sql`` has the figures). It now writes each
as a ``text[]`` of values and a *shape*, a row of ``thorbis.capture_shapes`` naming
the column of every position and whether its value is a JSON string or JSON text:

* ``text`` and ``character varying`` columns: the value itself, a JSON string;
* ``smallint``, ``integer``, ``bigint``, ``boolean``: cast to text, which is their JSON;
* every other type: ``to_jsonb(value)::text``, exactly what ``jsonb_build_object``
  wrote in the same session (dates in ISO whatever the ``DateStyle``; a ``timestamptz``
  with the session's ``TimeZone`` offset, as before).

:meth:`Shape.images` rebuilds the key and the objects the worker's rules read, with
the same values as parsing the old JSON gave. Shapes are registered by
:func:`register_shape` when the triggers are installed; a type change of a captured
column needs ``thorbis-cache db init`` again (as a renamed column does).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import attrs

__all__ = ["Shape", "is_quoted", "register_shape", "value_sql"]

#: Types written as they are and read back as JSON strings.
_QUOTED = frozenset({"text", "character varying"})
#: Types whose text form is their JSON text.
_PLAIN = frozenset({"smallint", "integer", "bigint", "boolean"})

_REGISTER = """
INSERT INTO thorbis.capture_shapes (table_name, columns, quoted, key_columns, image_columns)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (table_name, columns, quoted, key_columns, image_columns) DO NOTHING
"""
_FIND = """
SELECT id FROM thorbis.capture_shapes
WHERE (table_name, columns, quoted, key_columns, image_columns) = ($1, $2, $3, $4, $5)
"""
def is_quoted(type_name: str) -> bool:
    """Whether values of ``type_name`` (as ``regtype`` writes it) are stored as JSON
    strings' contents rather than JSON text."""
    return type_name in _QUOTED


def value_sql(record: str, column: str, type_name: str) -> str:
    """The SQL expression a trigger writes for ``record.column`` (``column`` quoted)."""
    if type_name in _QUOTED or type_name in _PLAIN:
        return f"{record}.{column}::text"
    return f"to_jsonb({record}.{column})::text"


@attrs.frozen(slots=True)
class Shape:
    """The layout of a table's image arrays.

    :ivar id: its row in ``thorbis.capture_shapes`` (the value triggers write).
    :ivar table: ``schema.table``.
    :ivar columns: the column of each array position: the image columns and the primary
        key, sorted.
    :ivar quoted: per position, whether its values are JSON strings.
    :ivar key_columns: the primary key columns, in key order.
    :ivar image_columns: the columns of the old/new objects (``TablePlan.columns``).
    """

    id: int
    table: str
    columns: tuple[str, ...]
    quoted: tuple[bool, ...]
    key_columns: tuple[str, ...]
    image_columns: tuple[str, ...]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Shape:
        """Build from a row of ``thorbis.capture_shapes`` (``table_name`` as ``table``)."""
        return cls(record["id"], record["table_name"], tuple(record["columns"]),
                   tuple(record["quoted"]), tuple(record["key_columns"]),
                   tuple(record["image_columns"]))

    def decode(self, values: Sequence[str | None]) -> dict[str, Any]:
        """Every column of one array, as the values its JSON parsed to.

        :raises ValueError: the array does not fit the layout, or a JSON text value does
            not parse.
        """
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} values for the {len(self.columns)} columns "
                             f"of capture shape {self.id}")
        return {name: value if value is None or is_string else json.loads(value)
                for name, is_string, value in zip(self.columns, self.quoted, values,
                                                  strict=True)}

    def images(self, old: Sequence[str | None] | None, new: Sequence[str | None] | None
               ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
        """``(pk, old, new)`` of one outbox row: the key from the new image (the old one
        for a DELETE), the images with the image columns only.

        :raises ValueError: see :meth:`decode`; or the row has no image at all.
        """
        decoded = [None if v is None else self.decode(v) for v in (old, new)]
        source = decoded[1] if decoded[1] is not None else decoded[0]
        if source is None:
            raise ValueError(f"a row of capture shape {self.id} without images")
        pk = {c: source[c] for c in self.key_columns}
        old_image, new_image = (None if d is None else {c: d[c] for c in self.image_columns}
                                for d in decoded)
        return pk, old_image, new_image


async def register_shape(conn: asyncpg.Connection, table: str, key_columns: Sequence[str],
                         image_columns: Sequence[str], types: Mapping[str, str]) -> Shape:
    """The shape of ``table``'s arrays, registered if new (shapes are never changed:
    outbox rows may still name an old one).

    :param types: column -> type name (``atttypid::regtype::text``).
    """
    columns = sorted(set(key_columns) | set(image_columns))
    args = (table, columns, [is_quoted(types[c]) for c in columns], list(key_columns),
            list(image_columns))
    await conn.execute(_REGISTER, *args)
    shape_id = await conn.fetchval(_FIND, *args)
    return Shape(int(shape_id), table, tuple(columns), tuple(args[2]), tuple(key_columns),
                 tuple(image_columns))
