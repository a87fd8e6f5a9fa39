"""The demo's model and data: the cached ``Customer``, the options, the seeded data set.

Everything here is deterministic in :attr:`DemoOptions.seed`: the same options give the
same customers, the same popularity order and the same read plan, run after run.
"""

from __future__ import annotations

import bisect
import datetime as dt
import decimal
import itertools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.errors import ConfigurationError
from thorbis_cache.keys import KeySchema

if TYPE_CHECKING:
    from thorbis_cache.cache import Cache

__all__ = [
    "CUSTOMER",
    "Customer",
    "DemoOptions",
    "ZipfSampler",
    "counter",
    "generate_customers",
    "popularity",
    "read_plan",
]

TENANT_NAMES = (
    "acme", "globex", "initech", "umbrella", "hooli",
    "stark", "wayne", "wonka", "tyrell", "cyberdyne",
)  # fmt: skip


# --------------------------------------------------------------------------- model


@attrs.frozen(slots=True)
class Customer:
    """A customer as cached: the columns of ``sql/demo/customer_get.sql``, in order."""

    id: int
    name: str
    email: str
    phone: str
    street: str
    city: str
    postal_code: str
    customer_type: str
    account_status: str
    payment_status: str
    lifetime_value: decimal.Decimal
    service_count: int
    last_service_date: dt.date | None


# cattrs and the codec's type check need real types, not the strings PEP 563 leaves.
attrs.resolve_types(Customer)

CUSTOMER = KeySchema[Customer](
    "demo.customer",
    Customer,
    params={"customer_id": int},
    ttl=300,
    sensitive=True,
    description="one customer of a tenant, encrypted with the tenant's data key",
)


def counter(cache: Cache, name: str, **labels: str) -> float:
    """The current value of the cache's counter ``name`` for :data:`CUSTOMER`.

    :param cache: the demo's cache.
    :param name: a counter of :attr:`Cache.metrics <thorbis_cache.cache.Cache.metrics>`.
    :param labels: further labels of the counter (e.g. ``reason``).
    :returns: the counter's value (0 when it was never incremented).
    """
    return cache.metrics.value(name, schema=CUSTOMER.name, **labels)


# --------------------------------------------------------------------------- options


def _at_least(low: float) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not value >= low:
            raise ConfigurationError(
                f"demo option --{attribute.name} must be at least {low:g}, got {value!r}"
            )

    return check


@attrs.frozen(slots=True)
class DemoOptions:
    """What the demo runs.

    :ivar tenants: number of tenants (at least 2: one scene copies an entry between two).
    :ivar customers: customers per tenant (at least 3: the scenes use distinct customers).
    :ivar reads: ``get_or_load`` calls of the workload.
    :ivar zipf: Zipf exponent ``s`` of customer popularity (0 is uniform).
    :ivar seed: seed of the data set and the workload (same seed, same run).
    :ivar concurrency: concurrent workers issuing reads.
    """

    tenants: int = attrs.field(default=3, validator=_at_least(2))
    customers: int = attrs.field(default=1000, validator=_at_least(3))
    reads: int = attrs.field(default=20000, validator=_at_least(1))
    zipf: float = attrs.field(default=1.1, validator=_at_least(0))
    seed: int = 7
    concurrency: int = attrs.field(default=32, validator=_at_least(1))

    def tenant_names(self) -> list[str]:
        """Tenant ids: well-known fictional companies first, then ``tenant-NNN``."""
        named = list(TENANT_NAMES[: self.tenants])
        return named + [f"tenant-{i + 1:03d}" for i in range(len(named), self.tenants)]


# --------------------------------------------------------------------------- data set


class ZipfSampler:
    """Draws ranks ``0..n-1`` with probability proportional to ``1 / (rank + 1) ** s``.

    Inverse-transform sampling: one uniform draw, then a binary search over the
    cumulative weights, so a draw is O(log n) and reproducible from the caller's RNG.

    :param n: number of ranks.
    :param s: the exponent (``s = 0`` is uniform; web caches see about 0.6-1.2).
    """

    __slots__ = ("_cumulative", "_total")

    def __init__(self, n: int, s: float) -> None:
        if n < 1:
            raise ValueError(f"a Zipf sampler needs n >= 1, got {n}")
        self._cumulative = list(itertools.accumulate(1.0 / k**s for k in range(1, n + 1)))
        self._total = self._cumulative[-1]

    def draw(self, rng: random.Random) -> int:
        """One rank, 0 being the most popular."""
        # random() < 1, so the target is below the total and the index below n.
        return bisect.bisect_left(self._cumulative, rng.random() * self._total)


_FIRST = (
    "Ava", "Liam", "Olivia", "Noah", "Emma", "Mateo", "Sofia", "Lucas", "Amara", "Ethan",
    "Priya", "Diego", "Chloe", "Hiro", "Zara", "Omar", "Grace", "Jonas", "Leila", "Marcus",
)  # fmt: skip
_LAST = (
    "Garcia", "Nguyen", "Okafor", "Schmidt", "Patel", "Rossi", "Kowalski", "Haddad",
    "Johansson", "Tanaka", "Moreau", "Silva", "Brennan", "Castillo", "Lindqvist", "Mensah",
)  # fmt: skip
_STREETS = ("Oak", "Maple", "Cedar", "Lakeview", "Hillcrest", "Sunset", "Willow", "Park")
_SUFFIXES = ("St", "Ave", "Rd", "Ln", "Blvd", "Ct")
_CITIES = ("Springfield", "Riverton", "Fairview", "Greenville", "Madison", "Franklin")
_MAIL_DOMAINS = ("example.com", "example.net", "example.org")  # RFC 2606: never real mail
_SERVICE_EPOCH = dt.date(2024, 1, 1)


def _customer(rng: random.Random, customer_id: int) -> Customer:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    services = rng.randrange(0, 40)
    value = decimal.Decimal(min(rng.lognormvariate(7.0, 1.0), 999_999.0))
    return Customer(
        id=customer_id,
        name=f"{first} {last}",
        email=f"{first}.{last}{customer_id}@{rng.choice(_MAIL_DOMAINS)}".lower(),
        phone=f"+1-555-{rng.randrange(100, 1000)}-{rng.randrange(10000):04d}",
        street=f"{rng.randrange(1, 9999)} {rng.choice(_STREETS)} {rng.choice(_SUFFIXES)}",
        city=rng.choice(_CITIES),
        postal_code=f"{rng.randrange(10000, 99999)}",
        customer_type=rng.choices(("residential", "commercial"), (8, 2))[0],
        account_status=rng.choices(("active", "inactive", "suspended"), (85, 10, 5))[0],
        payment_status=rng.choices(("current", "overdue", "collections"), (80, 15, 5))[0],
        lifetime_value=value.quantize(decimal.Decimal("0.01")),
        service_count=services,
        last_service_date=(
            _SERVICE_EPOCH + dt.timedelta(days=rng.randrange(600)) if services else None
        ),
    )


def generate_customers(options: DemoOptions) -> dict[str, list[Customer]]:
    """The deterministic data set: ``options.customers`` customers (ids 1..N) per tenant."""
    # Separate streams per purpose: changing --reads must not change the data.
    rng = random.Random(f"{options.seed}:data")
    return {
        tenant: [_customer(rng, i) for i in range(1, options.customers + 1)]
        for tenant in options.tenant_names()
    }


def popularity(options: DemoOptions) -> dict[str, list[int]]:
    """Per tenant, customer ids from most to least popular (a seeded shuffle, so the
    hottest customers are not simply the lowest ids)."""
    rng = random.Random(f"{options.seed}:popularity")
    out: dict[str, list[int]] = {}
    for tenant in options.tenant_names():
        ids = list(range(1, options.customers + 1))
        rng.shuffle(ids)
        out[tenant] = ids
    return out


def read_plan(options: DemoOptions, hot: dict[str, list[int]]) -> list[tuple[str, int]]:
    """The workload: ``options.reads`` (tenant, customer id) pairs; the tenant uniform,
    the customer a Zipf(s) draw over that tenant's popularity order."""
    rng = random.Random(f"{options.seed}:reads")
    sampler = ZipfSampler(options.customers, options.zipf)
    tenants = options.tenant_names()
    plan: list[tuple[str, int]] = []
    for _ in range(options.reads):
        tenant = rng.choice(tenants)
        plan.append((tenant, hot[tenant][sampler.draw(rng)]))
    return plan
