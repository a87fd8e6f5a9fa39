"""Small shared pieces for talking about PostgreSQL objects: identifier quoting, what
makes a unique index usable by ``REFRESH MATERIALIZED VIEW CONCURRENTLY``, and whether
a table of the ``thorbis`` schema is there for this role."""

from __future__ import annotations

from typing import Any

__all__ = ["PK_COLUMNS", "USABLE_UNIQUE_INDEX", "quote_ident", "quote_qualified",
           "table_readable"]

#: A ``pg_index i`` row REFRESH ... CONCURRENTLY accepts: unique, valid, total (no
#: WHERE) and on plain columns (no expressions, which could admit NULL duplicates).
USABLE_UNIQUE_INDEX = (
    "i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL"
)


#: The primary key columns of table ``$1`` (a qualified name), in key order.
PK_COLUMNS = """
SELECT a.attname::text
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = to_regclass($1) AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)
"""


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (``"a""b"`` for ``a"b``)."""
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(name: str) -> str:
    """A ``schema.relation`` name as two quoted identifiers (``"hs"."customers"``).

    :raises ValueError: when ``name`` has no schema part.
    """
    schema, dot, relation = name.partition(".")
    if not dot or not schema or not relation:
        raise ValueError(f"{name!r} is not a qualified '<schema>.<relation>' name")
    return f"{quote_ident(schema)}.{quote_ident(relation)}"


# Looked up by name, not with to_regclass: that raises where the role lacks USAGE on
# the schema, and such a role (a host application's, with rights on its own tables
# only) is an answer here, not an error.
_READABLE = """
SELECT has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2
"""


async def table_readable(conn: Any, schema: str, table: str) -> bool | None:
    """Whether this role may read ``schema.table``: None when the database has no such
    table (one set up by an earlier release, before the migration that makes it)."""
    return await conn.fetchval(_READABLE, schema, table)  # type: ignore[no-any-return]
