"""thorbis-cache's plugin contract, run against the installed automotive plugin, with
generated rows for both contract tenants as seed data (so warmers and views run on real
data, not only on empty tables)."""

from __future__ import annotations

from thorbis_cache.testing.contract import DEFAULT_TENANTS, PluginContract

from thorbis_automotive import datagen


class TestAutomotiveContract(PluginContract):
    plugin = "automotive"
    seed_sql = tuple(datagen.sql_inserts(datagen.generate(DEFAULT_TENANTS, 6, seed=11)))
