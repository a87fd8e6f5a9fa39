"""Redis GEO arithmetic in Python: the positions and distances Redis itself reports, so
a read-through can answer a geo query from the positions it just loaded, and a cached
index can be read whole from its sorted set scores (see :mod:`.structures`)."""

from __future__ import annotations

import math

__all__ = ["EARTH_RADIUS_M", "GEO_LAT_LIMIT", "geo_distance", "geohash_position"]

#: Redis's latitude bounds for geo indexes (Web Mercator).
GEO_LAT_LIMIT = 85.05112878
#: The earth radius Redis's GEO commands use, in metres.
EARTH_RADIUS_M = 6372797.560856
_GEO_STEP = 26


def geo_distance(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres, computed as Redis's GEO commands do (haversine
    on a sphere of :data:`EARTH_RADIUS_M`)."""
    lat1r, lon1r, lat2r, lon2r = map(math.radians, (lat1, lon1, lat2, lon2))
    u = math.sin((lat2r - lat1r) / 2)
    v = math.sin((lon2r - lon1r) / 2)
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(u * u + math.cos(lat1r)
                                                      * math.cos(lat2r) * v * v))


def geohash_position(bits: int) -> tuple[float, float]:
    """The ``(longitude, latitude)`` Redis reports (``GEOPOS``) for a member whose sorted
    set score is ``bits``: the centre of its 52-bit geohash cell (latitude bits in the
    even positions, longitude bits in the odd ones), as ``geohashDecodeToLongLatWGS84``
    computes it."""
    lat_cell = lon_cell = 0
    # 32 bits per coordinate, as Redis deinterleaves: a coordinate at the range's upper
    # bound encodes as 2**26, one past the last cell (then clamped below).
    for i in range(32):
        lat_cell |= ((bits >> (2 * i)) & 1) << i
        lon_cell |= ((bits >> (2 * i + 1)) & 1) << i
    cells = float(1 << _GEO_STEP)
    lat_min = -GEO_LAT_LIMIT + lat_cell / cells * (2 * GEO_LAT_LIMIT)
    lat_max = -GEO_LAT_LIMIT + (lat_cell + 1) / cells * (2 * GEO_LAT_LIMIT)
    lon_min = -180.0 + lon_cell / cells * 360.0
    lon_max = -180.0 + (lon_cell + 1) / cells * 360.0
    lon = min(max((lon_min + lon_max) / 2, -180.0), 180.0)
    lat = min(max((lat_min + lat_max) / 2, -GEO_LAT_LIMIT), GEO_LAT_LIMIT)
    return lon, lat
