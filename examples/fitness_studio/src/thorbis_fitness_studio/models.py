"""The values the fitness_studio vertical caches: frozen attrs classes, one per entity."""

from __future__ import annotations

import datetime as dt
import enum

import attrs

__all__ = ["ClassSession", "Member", "Occupancy", "Plan"]


class Plan(enum.Enum):
    """A member's membership plan."""

    BASIC = "basic"
    UNLIMITED = "unlimited"
    CLASS_PACK = "class_pack"


@attrs.frozen
class Member:
    """A studio member (cached as an entity hash, encrypted: it holds personal data)."""

    id: int
    name: str
    email: str
    plan: Plan
    active: bool
    joined_on: dt.date
    credits: int


@attrs.frozen
class ClassSession:
    """One scheduled class."""

    id: int
    title: str
    coach: str
    starts_at: dt.datetime
    minutes: int
    capacity: int


@attrs.frozen
class Occupancy:
    """How full a studio's classes were on one day (a row of ``fit.studio_occupancy``)."""

    studio_id: int
    day: dt.date
    sessions: int
    capacity: int
    booked: int
    waitlisted: int

    @property
    def utilisation(self) -> float:
        """Booked places over capacity, 0 when there was no class."""
        return self.booked / self.capacity if self.capacity else 0.0
