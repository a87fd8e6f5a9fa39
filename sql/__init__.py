"""SQL shipped with thorbis-cache (``*.sql`` files, read through ``importlib.resources``)."""
