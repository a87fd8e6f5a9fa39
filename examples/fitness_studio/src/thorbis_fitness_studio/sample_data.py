"""A small, fixed data set for tests and demos: two tenants, ``acme`` and ``globex``.

``SEED_SQL`` runs after the plugin's SQL (it is what the contract kit's ``seed_sql``
expects): studios, members, classes in the last days, and bookings, including a
waitlisted one and an inactive member, so that every warmer and the occupancy view
have rows to work on.
"""

from __future__ import annotations

__all__ = ["SEED_SQL"]

SEED_SQL = [
    """
    INSERT INTO fit.studios (tenant_id, id, name, longitude, latitude) VALUES
        ('acme', 1, 'Riverside', -0.1276, 51.5072),
        ('acme', 2, 'Old Town', -0.0877, 51.5155),
        ('globex', 1, 'Harbour', 2.1734, 41.3851)
    """,
    """
    INSERT INTO fit.members (tenant_id, id, name, email, plan, active, joined_on, credits)
    VALUES
        ('acme', 1, 'Ada', 'ada@example.com', 'unlimited', true, '2024-01-10', 0),
        ('acme', 2, 'Ben', 'ben@example.com', 'class_pack', true, '2024-03-02', 8),
        ('acme', 3, 'Cy', 'cy@example.com', 'basic', false, '2023-11-20', 0),
        ('globex', 1, 'Dee', 'dee@example.com', 'basic', true, '2024-02-14', 0)
    """,
    """
    INSERT INTO fit.class_sessions
        (tenant_id, id, studio_id, title, coach, starts_at, minutes, capacity)
    VALUES
        ('acme', 10, 1, 'Spin', 'Eve', now() - interval '2 days', 45, 2),
        ('acme', 11, 1, 'Yoga', 'Fay', now() - interval '2 days' + interval '2 hours', 60, 10),
        ('acme', 12, 2, 'HIIT', 'Gus', now() - interval '1 day', 30, 12),
        ('globex', 10, 1, 'Pilates', 'Hal', now() - interval '3 days', 50, 8)
    """,
    """
    INSERT INTO fit.bookings (tenant_id, session_id, member_id, status) VALUES
        ('acme', 10, 1, 'booked'),
        ('acme', 10, 2, 'booked'),
        ('acme', 10, 3, 'waitlisted'),
        ('acme', 11, 1, 'booked'),
        ('globex', 10, 1, 'booked')
    """,
]

