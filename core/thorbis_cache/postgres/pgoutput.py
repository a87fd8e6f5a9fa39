"""A parser of the ``pgoutput`` logical replication messages (protocol version 1).

The messages are those PostgreSQL's built-in output plugin writes for a publication
(https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html). Only
what the logical capture needs is kept: transaction boundaries, the relation
descriptions, and the row changes with their column values as text (``pgoutput`` sends
text unless asked for binary), and the transactional logical-decoding messages
(``pg_logical_emit_message``, sent with the ``messages`` option). Type and origin
messages are skipped.

Pure bytes in, values out: no database access, so the parser is tested on its own and
costs nothing to import.
"""

from __future__ import annotations

import datetime as dt
import struct

import attrs

__all__ = [
    "UNCHANGED",
    "Begin",
    "Change",
    "Column",
    "Commit",
    "LogicalMessage",
    "Message",
    "Relation",
    "Truncate",
    "parse",
]

#: The PostgreSQL epoch: timestamps count microseconds from here.
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class _Unchanged:
    """The value of a TOASTed column an UPDATE did not change (not sent)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


#: Stands for a column value ``pgoutput`` did not send (an unchanged TOASTed value).
UNCHANGED = _Unchanged()

#: A decoded tuple: column name to its text value, None (NULL) or :data:`UNCHANGED`.
Tuple = dict[str, "str | _Unchanged | None"]


@attrs.frozen(slots=True)
class Begin:
    """A transaction starts. :ivar final_lsn: the LSN of its commit record."""

    final_lsn: int
    committed_at: dt.datetime
    xid: int


@attrs.frozen(slots=True)
class Commit:
    """A transaction ends. :ivar end_lsn: the LSN just past it (where to confirm to)."""

    commit_lsn: int
    end_lsn: int
    committed_at: dt.datetime


@attrs.frozen(slots=True)
class Column:
    """One column of a :class:`Relation`. :ivar key: part of the replica identity."""

    name: str
    type_oid: int
    key: bool


@attrs.frozen(slots=True)
class Relation:
    """The description of a table, sent before its first change in a session.

    :ivar identity: ``d`` default, ``n`` nothing, ``f`` full, ``i`` index.
    """

    oid: int
    schema: str
    name: str
    identity: str
    columns: tuple[Column, ...]
    #: The columns' names, in order (a change's tuple is read against them).
    names: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)

    @names.default
    def _names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def table(self) -> str:
        """``schema.name``."""
        return f"{self.schema}.{self.name}"


@attrs.frozen(slots=True)
class Change:
    """An INSERT, UPDATE or DELETE of one row.

    :ivar operation: ``INSERT``, ``UPDATE`` or ``DELETE``.
    :ivar old: the old row (UPDATE, DELETE): every column under REPLICA IDENTITY FULL,
        the key columns otherwise, None when not sent (an UPDATE that kept the key).
    :ivar old_is_key: ``old`` holds only the replica identity's key columns.
    :ivar new: the new row (INSERT, UPDATE).
    """

    relation_oid: int
    operation: str
    old: Tuple | None
    old_is_key: bool
    new: Tuple | None


@attrs.frozen(slots=True)
class Truncate:
    """TRUNCATE of one or more tables."""

    relation_oids: tuple[int, ...]


@attrs.frozen(slots=True)
class LogicalMessage:
    """A message written by ``pg_logical_emit_message`` (sent with the ``messages``
    option). :ivar transactional: part of its transaction (sent in its place, at commit);
    otherwise sent at once, whatever becomes of the transaction."""

    transactional: bool
    prefix: str
    content: bytes


Message = Begin | Commit | Relation | Change | Truncate | LogicalMessage | None


def _timestamp(micros: int) -> dt.datetime:
    return _PG_EPOCH + dt.timedelta(microseconds=micros)


_STRUCTS: dict[str, struct.Struct] = {}
_INT32 = struct.Struct("!i")
_INT16 = struct.Struct("!h")
_NULL, _UNCHANGED_TOAST, _TEXT, _BINARY = ord("n"), ord("u"), ord("t"), ord("b")
_B, _C, _I, _U, _D = ord("B"), ord("C"), ord("I"), ord("U"), ord("D")
_K, _O, _N = ord("K"), ord("O"), ord("N")
_OPERATIONS = {_I: "INSERT", _U: "UPDATE", _D: "DELETE"}
_BEGIN = struct.Struct("!qqI")  # after the message kind: final LSN, commit time, xid
_COMMIT = struct.Struct("!bqqq")  # flags, commit LSN, end LSN, commit time
_UINT32 = struct.Struct("!I")


class _Reader:
    """A cursor over one message (the rare kinds: :func:`parse` reads those of every
    change straight from the bytes)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> tuple[int, ...]:
        compiled = _STRUCTS.get(fmt)
        if compiled is None:
            compiled = _STRUCTS[fmt] = struct.Struct(fmt)
        values = compiled.unpack_from(self.data, self.pos)
        self.pos += compiled.size
        return values

    def byte(self) -> str:
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        value = self.data[self.pos:end].decode()
        self.pos = end + 1
        return value


def _tuple(data: bytes, pos: int, names: tuple[str, ...], keep: frozenset[str] | None
           ) -> tuple[Tuple, int]:
    """The tuple at ``pos`` of ``data`` and the position past it (every change of every
    row goes through here: local names, a precompiled struct)."""
    (count,) = _INT16.unpack_from(data, pos)
    pos += 2
    if count != len(names):
        raise ValueError(f"tuple of {count} columns for a relation of {len(names)}")
    values: Tuple = {}
    unpack_int32 = _INT32.unpack_from
    for name in names:
        kind = data[pos]
        pos += 1
        if kind == _TEXT:
            (length,) = unpack_int32(data, pos)
            pos += 4
            if keep is None or name in keep:
                values[name] = data[pos:pos + length].decode()
            pos += length
        elif kind == _NULL:
            values[name] = None
        elif kind == _UNCHANGED_TOAST:
            values[name] = UNCHANGED
        elif kind == _BINARY:
            raise ValueError(f"column {name!r} sent in binary format (not requested)")
        else:
            raise ValueError(f"unknown tuple value kind {chr(kind)!r} for column {name!r}")
    return values, pos


def parse(data: bytes, relations: dict[int, Relation],
          keep: dict[int, frozenset[str]] | None = None) -> Message:
    """Decode one ``pgoutput`` message.

    :param data: the message (the payload of an ``XLogData`` message).
    :param relations: the relations seen so far in this decoding session, by oid; a
        :class:`Relation` message is added to it (changes name their table by oid).
    :param keep: for a relation oid, the columns whose values to decode; the others
        (present with text values) are left out of the change's tuples. A relation not
        named here keeps every column.
    :returns: the message, or None for one the capture does not use (type, origin).
    :raises ValueError: a malformed message, or a change of a relation not described.
    """
    # The messages of every change (Begin, the change, Commit) are read straight from
    # the bytes with precompiled structs; the rare ones through a _Reader.
    code = data[0]
    if code == _B:
        final_lsn, micros, xid = _BEGIN.unpack_from(data, 1)
        return Begin(final_lsn, _timestamp(micros), xid)
    if code == _C:
        _flags, commit_lsn, end_lsn, micros = _COMMIT.unpack_from(data, 1)
        return Commit(commit_lsn, end_lsn, _timestamp(micros))
    operation = _OPERATIONS.get(code)
    if operation is not None:
        (oid,) = _UINT32.unpack_from(data, 1)
        described = relations.get(oid)
        if described is None:
            raise ValueError(f"change of relation {oid} before its Relation message")
        names = described.names
        kept = None if keep is None else keep.get(oid)
        old: Tuple | None = None
        new: Tuple | None = None
        old_is_key = False
        tag = data[5]
        pos = 6
        if code != _I and tag in (_K, _O):
            old_is_key = tag == _K
            old, pos = _tuple(data, pos, names, kept)
            if code == _U:
                tag = data[pos]
                pos += 1
        if code != _D:
            if tag != _N:
                raise ValueError(f"expected a new tuple, got {chr(tag)!r}")
            new, pos = _tuple(data, pos, names, kept)
        return Change(oid, operation, old, old_is_key, new)
    reader = _Reader(data)
    kind = reader.byte()
    if kind == "R":
        (oid,) = reader.unpack("!I")
        schema, name = reader.string(), reader.string()
        identity = reader.byte()
        (count,) = reader.unpack("!h")
        columns = []
        for _ in range(count):
            (flags,) = reader.unpack("!b")
            column = reader.string()
            type_oid, _typmod = reader.unpack("!Ii")
            columns.append(Column(column, type_oid, bool(flags & 1)))
        relation = Relation(oid, schema, name, identity, tuple(columns))
        relations[oid] = relation
        return relation
    if kind == "T":
        (count,) = reader.unpack("!i")
        reader.unpack("!b")
        oids = reader.unpack(f"!{count}I")
        return Truncate(tuple(oids))
    if kind == "M":
        # Outside a streamed transaction (not requested) it carries no xid.
        flags, _lsn = reader.unpack("!bQ")
        prefix = reader.string()
        (size,) = reader.unpack("!i")
        content = data[reader.pos:reader.pos + size]
        if len(content) != size:
            raise ValueError(f"logical message of {size} bytes, {len(content)} sent")
        return LogicalMessage(bool(flags & 1), prefix, content)
    return None
