"""The contract run behind ``pytest --thorbis-contract=NAME``.

The option (registered by :mod:`thorbis_cache.testing.pytest_plugin`) adds this module
to the session; its one test class runs :class:`PluginContract` once per plugin named
with the option (installed entry points of group ``thorbis_cache.plugins``). Without
the option there is nothing to parametrize and the tests are skipped.
"""

from __future__ import annotations

import pytest

from thorbis_cache.testing.contract import ContractTarget, PluginContract

__all__ = ["TestPluginContract", "pytest_generate_tests"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the contract's target over the ``--thorbis-contract`` names.

    :param metafunc: the test function being parametrized.
    """
    if "thorbis_contract_target" not in metafunc.fixturenames:
        return
    names = list(dict.fromkeys(metafunc.config.getoption("thorbis_contract", default=[])))
    metafunc.parametrize(
        "thorbis_contract_target", [ContractTarget(name) for name in names],
        ids=names, scope="class",
    )


class TestPluginContract(PluginContract):
    """The plugin contract, once per ``--thorbis-contract`` name."""
