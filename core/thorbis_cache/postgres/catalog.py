"""Small shared pieces for talking about PostgreSQL objects: identifier quoting and
what makes a unique index usable by ``REFRESH MATERIALIZED VIEW CONCURRENTLY``."""

from __future__ import annotations

__all__ = ["PK_COLUMNS", "USABLE_UNIQUE_INDEX", "quote_ident", "quote_qualified"]

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
