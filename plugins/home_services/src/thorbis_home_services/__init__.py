"""thorbis-home-services: the home-services vertical of thorbis-cache.

Loaded by thorbis-cache through the ``thorbis_cache.plugins`` entry point
(:mod:`thorbis_home_services.plugin`). Importing this package connects to nothing.

Modules, one concept each:

* :mod:`~thorbis_home_services.models` -- enums and attrs records;
* :mod:`~thorbis_home_services.schemas` -- the ``hs.*`` key schemas and their tags;
* :mod:`~thorbis_home_services.scoring` -- the seed's work-order priority score;
* :mod:`~thorbis_home_services.patterns` -- named reads (high priority, radius, history...);
* :mod:`~thorbis_home_services.writers` -- writes of lists, schedules, geo indexes;
* :mod:`~thorbis_home_services.loaders` / :mod:`~thorbis_home_services.rows` -- SQL to records,
  one loader per entry for read-through;
* :mod:`~thorbis_home_services.views` -- the four materialized views;
* :mod:`~thorbis_home_services.rules` -- invalidation rules;
* :mod:`~thorbis_home_services.warmers`, :mod:`~thorbis_home_services.permissions`;
* :mod:`~thorbis_home_services.predict` -- the next-service formula;
* :mod:`~thorbis_home_services.datagen` -- the deterministic data set;
* :mod:`~thorbis_home_services.demo` -- its part in ``thorbis-cache demo``.
"""

from __future__ import annotations

from thorbis_home_services.models import (
    AccountStatus,
    Customer,
    CustomerSegment,
    CustomerSummary,
    CustomerType,
    FinancialDay,
    NearbyArea,
    PaymentStatus,
    Priority,
    RankedWorkOrder,
    ServiceAreaMetrics,
    TechnicianPerformance,
    TechnicianRole,
    WorkOrder,
    WorkOrderStatus,
)
from thorbis_home_services.predict import NextService, predict_next_service
from thorbis_home_services.scoring import work_order_score

__all__ = [
    "AccountStatus",
    "Customer",
    "CustomerSegment",
    "CustomerSummary",
    "CustomerType",
    "FinancialDay",
    "NearbyArea",
    "NextService",
    "PaymentStatus",
    "Priority",
    "RankedWorkOrder",
    "ServiceAreaMetrics",
    "TechnicianPerformance",
    "TechnicianRole",
    "WorkOrder",
    "WorkOrderStatus",
    "predict_next_service",
    "work_order_score",
]

__version__ = "0.1.0"
