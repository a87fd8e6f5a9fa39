"""Plugins used by the plugin-manager and CacheApp tests.

:mod:`.good` is a small, complete plugin (namespace ``tst``); :mod:`.broken` holds one
plugin per defect the manager must report; :mod:`.broken_sql` holds plugins whose
declarations are valid but whose SQL or rules do not survive the database.
"""
