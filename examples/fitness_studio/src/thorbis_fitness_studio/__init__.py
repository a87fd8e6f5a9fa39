"""thorbis-fitness-studio: an out-of-tree thorbis-cache vertical for fitness studios.

The plugin module is :mod:`thorbis_fitness_studio.plugin`, found by the host through the
``thorbis_cache.plugins`` entry point named ``fitness_studio``. Its key schemas are
importable from here so that application code builds keys with them.
"""

from __future__ import annotations

from thorbis_fitness_studio.models import ClassSession, Member, Occupancy, Plan
from thorbis_fitness_studio.plugin import (
    ACTIVE_MEMBERS,
    MEMBER,
    NAMESPACE,
    OCCUPANCY,
    SCHEDULE,
    STUDIO_LOCATIONS,
    WAITLIST,
)

__all__ = [
    "ACTIVE_MEMBERS",
    "MEMBER",
    "NAMESPACE",
    "OCCUPANCY",
    "SCHEDULE",
    "STUDIO_LOCATIONS",
    "WAITLIST",
    "ClassSession",
    "Member",
    "Occupancy",
    "Plan",
]

__version__ = "0.1.0"
