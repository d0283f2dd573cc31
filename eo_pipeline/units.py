# SPDX-License-Identifier: Apache-2.0
"""Area units used by the forest stage: hectares, square kilometres and mu.

1 ha = 10,000 m²; 1 km² = 100 ha; 1 mu (亩, the Chinese land unit) = 666.67 m² = 1/15 ha.
Inputs may be given as a number (taken in the documented default unit) or as a
string with a unit, e.g. ``"4.822e6 mu"``, ``"50 ha"``, ``"0.5 km2"``.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError

__all__ = ["M2_PER_HA", "HA_PER_KM2", "MU_PER_HA", "AREA_UNITS", "to_ha", "from_ha", "parse_area"]

M2_PER_HA = 10_000.0
HA_PER_KM2 = 100.0
MU_PER_HA = 15.0

#: hectares per one of each unit
AREA_UNITS = {"ha": 1.0, "km2": HA_PER_KM2, "mu": 1.0 / MU_PER_HA, "m2": 1.0 / M2_PER_HA}
_ALIASES = {"hectare": "ha", "hectares": "ha", "km²": "km2", "sqkm": "km2", "m²": "m2", "亩": "mu"}


def _unit(name: str) -> str:
    u = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if u not in AREA_UNITS:
        raise ConfigError(f"unknown area unit {name!r}; use one of {sorted(AREA_UNITS)}")
    return u


def to_ha(value: Any, unit: str = "ha") -> Any:
    """``value`` in ``unit`` converted to hectares (numbers or numpy arrays)."""
    return value * AREA_UNITS[_unit(unit)]


def from_ha(value_ha: Any, unit: str) -> Any:
    """Hectares converted to ``unit`` (``"ha"``, ``"km2"``, ``"mu"``, ``"m2"``)."""
    return value_ha / AREA_UNITS[_unit(unit)]


_AREA_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\d\s].*)?$")


def parse_area(value: Any, default_unit: str = "ha", *, what: str = "area") -> float:
    """An area given as a number (in ``default_unit``) or ``"<number> <unit>"``, in hectares.

    >>> parse_area("4.822e6 mu")
    321466.6666666667
    >>> parse_area(50)
    50.0
    """
    if isinstance(value, int | float):
        return float(to_ha(float(value), default_unit))
    m = _AREA_RE.match(str(value))
    if not m:
        raise ConfigError(f"{what}: cannot read {value!r} as an area; write e.g. '50', '50 ha', '750 mu' or '0.5 km2'")
    return float(to_ha(float(m.group(1)), m.group(2) or default_unit))
