"""The PostgreSQL side of thorbis-cache: the only package that talks to PostgreSQL.

:mod:`~thorbis_cache.postgres.sql_apply` applies plugins' SQL and materialized views and
checks their invalidation rules against the real schema. Importing this package imports
``asyncpg``; the rest of the core does not, so a host without PostgreSQL never loads it.
"""

from __future__ import annotations

from thorbis_cache.postgres.sql_apply import (
    apply_and_check,
    apply_plugin_sql,
    check_rules_against_db,
    split_sql,
)

__all__ = ["apply_and_check", "apply_plugin_sql", "check_rules_against_db", "split_sql"]
