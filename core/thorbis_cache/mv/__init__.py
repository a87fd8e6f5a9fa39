"""Materialized views: refreshing one (concurrently where it can, with its audit and
the cache keys it feeds) and the scheduler that refreshes them on time and in order."""
