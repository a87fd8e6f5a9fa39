"""Shared test configuration.

The server fixtures (``thorbis_*``) come from the ``thorbis_cache.testing.pytest_plugin``
entry point; ``pytester`` runs inner pytest sessions for the clean-up tests.
"""

pytest_plugins = ["pytester"]
