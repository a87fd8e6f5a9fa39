"""``python -m thorbis_cache.cli``: the ``thorbis-cache`` console script."""

from thorbis_cache.cli import main

main()
