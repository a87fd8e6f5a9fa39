"""thorbis-automotive: the automotive vertical of thorbis-cache.

Loaded by thorbis-cache through the ``thorbis_cache.plugins`` entry point
(:mod:`thorbis_automotive.plugin`). Importing this package connects to nothing.

Modules, one concept each:

* :mod:`~thorbis_automotive.vin` -- VIN validation and the check digit;
* :mod:`~thorbis_automotive.models` -- enums and attrs records;
* :mod:`~thorbis_automotive.schemas` -- the ``auto.*`` key schemas and their tags;
* :mod:`~thorbis_automotive.maintenance` -- the maintenance schedule formula;
* :mod:`~thorbis_automotive.inventory` -- the reorder point formula;
* :mod:`~thorbis_automotive.labor` -- the seasonal labor factor formula;
* :mod:`~thorbis_automotive.patterns`, :mod:`~thorbis_automotive.writers`,
  :mod:`~thorbis_automotive.loaders` -- reads, writes, SQL to records;
* :mod:`~thorbis_automotive.views`, :mod:`~thorbis_automotive.rules`,
  :mod:`~thorbis_automotive.warmers`, :mod:`~thorbis_automotive.permissions`;
* :mod:`~thorbis_automotive.datagen` -- the deterministic data set;
* :mod:`~thorbis_automotive.demo` -- the vertical's part in ``thorbis-cache demo``.
"""

from __future__ import annotations

from thorbis_automotive.inventory import DemandStats, reorder_point
from thorbis_automotive.labor import seasonal_factors
from thorbis_automotive.maintenance import maintenance_schedule
from thorbis_automotive.models import (
    BayBoard,
    LaborQuote,
    LaborSeasonality,
    LowStockPart,
    Part,
    PartDemand,
    ScheduledService,
    ServiceRecord,
    ServiceType,
    Vehicle,
    VehicleHistory,
)
from thorbis_automotive.vin import CheckDigitRule, InvalidVinError, check_digit, validate_vin

__all__ = [
    "BayBoard",
    "CheckDigitRule",
    "DemandStats",
    "InvalidVinError",
    "LaborQuote",
    "LaborSeasonality",
    "LowStockPart",
    "Part",
    "PartDemand",
    "ScheduledService",
    "ServiceRecord",
    "ServiceType",
    "Vehicle",
    "VehicleHistory",
    "check_digit",
    "maintenance_schedule",
    "reorder_point",
    "seasonal_factors",
    "validate_vin",
]

__version__ = "0.1.0"
