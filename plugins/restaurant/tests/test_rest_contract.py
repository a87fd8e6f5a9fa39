"""thorbis-cache's plugin contract, run against the installed restaurant plugin, with
generated rows for both contract tenants as seed data (so warmers and views run on real
data, not only on empty tables)."""

from __future__ import annotations

from thorbis_cache.testing.contract import DEFAULT_TENANTS, PluginContract

from thorbis_restaurant import datagen


class TestRestaurantContract(PluginContract):
    plugin = "restaurant"
    seed_sql = tuple(datagen.sql_inserts(datagen.generate(DEFAULT_TENANTS, 1, seed=11)))
