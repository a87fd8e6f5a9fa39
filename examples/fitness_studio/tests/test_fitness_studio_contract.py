"""fitness_studio against the thorbis-cache plugin contract.

This is the whole contract test of a vertical: name the installed plugin, and give the
contract a little data so that the warmers and the materialized view have rows to work
on (for the contract's default tenants, ``acme`` and ``globex``).
"""

from __future__ import annotations

from thorbis_fitness_studio.sample_data import SEED_SQL

from thorbis_cache.testing.contract import PluginContract


class TestFitnessStudioContract(PluginContract):
    plugin = "fitness_studio"
    seed_sql = SEED_SQL
