"""The plugin's SQL files (``sql/*.sql``, shipped as package data), read through the
core's :class:`~thorbis_cache.postgres.sql_files.PackageSql`: each statement or query lives in its
own file with a header comment that says what it does and why.
"""

from __future__ import annotations

from thorbis_cache.postgres.sql_files import PackageSql

__all__ = ["SQL", "query", "script"]

#: This package's ``sql/`` directory.
SQL = PackageSql("thorbis_restaurant")
#: ``script(name)``: the full text of ``sql/<name>.sql``.
script = SQL.script
#: ``query(name)``: ``sql/<name>.sql`` without its leading comment block.
query = SQL.query
