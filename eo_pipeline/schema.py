# SPDX-License-Identifier: Apache-2.0
"""The canonical sounding schema: the one shape every reader returns.

Every reader in :mod:`eo_pipeline.readers` returns a lazy (dask-backed)
:class:`xarray.Dataset` laid out as described here, whatever the product.

Dimensions
----------
* Swath products (Sentinel-5P) keep their 2-D structure: ``(scanline, ground_pixel)``,
  so that later stages can derive footprint corners from neighbouring pixels.
* Sounding products (OCO-2/3 Lite, ACOS Lite, ESA CCI, S5P blended) are 1-D:
  ``(sounding,)``.
* Footprint corners add a trailing ``corner`` dimension of length 4.

Variables
---------
``<species>`` (data variable)
    The retrieved column under a canonical name from :data:`SPECIES`:
    ``xch4`` [ppb], ``xco2`` [ppm] or ``xco`` [mol m-2], float32, NaN where the
    product holds its fill value. Attributes ``units``, ``long_name``,
    ``standard_name`` (where CF has one) and ``source_variable`` (the path in the file).
``<species>_uncertainty`` (data variable)
    The product's 1-sigma precision/uncertainty of that column, same units.
    All-NaN, with a ``comment``, where a product subset does not carry it.
``valid`` (data variable, bool)
    True where the column, latitude and longitude are not fill values *and* the
    product's own quality rule passes at the requested threshold (see each
    reader's ``qa_threshold``). Stages use only soundings where ``valid`` is True.
``latitude``, ``longitude`` (coordinates)
    Pixel centre in degrees north / east (WGS84), float32/64, NaN at fill.
``time`` (coordinate)
    ``datetime64[ns]`` in UTC, one value per sounding (for swaths the scanline
    time broadcast across the ground pixels).
``latitude_bounds``, ``longitude_bounds`` (data variables, optional)
    Footprint corners in degrees with a trailing ``corner`` dimension of 4, present
    where the product has them. Corner order (:data:`CORNER_ORDER`): corners run
    around the footprint in sequence, so that consecutive corners share an edge.
    For S5P swaths they are, as in the product, (scanline-, pixel-),
    (scanline-, pixel+), (scanline+, pixel+), (scanline+, pixel-), i.e. corner 1
    follows corner 0 along increasing ``ground_pixel``; OCO-2/3 vertices keep
    the Lite file's order, which also runs around the footprint.

Attributes
----------
:data:`REQUIRED_ATTRS` lists the dataset attributes every reader sets: product,
platform, instrument, species, processor_version, orbit (``-1`` where the product
has no single orbit), time_coverage_start/end (ISO 8601 UTC strings), source_file
(the file name), plus ``reader`` (the registry name) and ``qa_threshold`` (the
threshold actually applied, on the reader's documented scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "SWATH_DIMS",
    "SOUNDING_DIM",
    "CORNER_DIM",
    "CORNER_ORDER",
    "SPECIES",
    "SpeciesInfo",
    "REQUIRED_ATTRS",
    "species_of",
    "validate",
]

SWATH_DIMS: tuple[str, str] = ("scanline", "ground_pixel")
SOUNDING_DIM: str = "sounding"
CORNER_DIM: str = "corner"
CORNER_ORDER: str = (
    "consecutive corners share an edge; S5P: (scanline-, pixel-), (scanline-, pixel+), "
    "(scanline+, pixel+), (scanline+, pixel-); OCO Lite: vertices 1-4 as in the file"
)


@dataclass(frozen=True)
class SpeciesInfo:
    """Canonical naming and units of one retrieved species.

    Attributes
    ----------
    name : str
        Canonical variable name (``xch4``).
    species : str
        Chemical formula (``CH4``).
    units : str
        Canonical units of the column.
    long_name : str
        CF long name.
    standard_name : str or None
        CF standard name, where one exists.
    reference_value : float
        A typical value in ``units``, used only to shift sums for numerical stability.
    """

    name: str
    species: str
    units: str
    long_name: str
    standard_name: str | None
    reference_value: float


SPECIES: dict[str, SpeciesInfo] = {
    "xch4": SpeciesInfo(
        "xch4", "CH4", "ppb", "column-averaged dry-air mole fraction of methane",
        "dry_atmosphere_mole_fraction_of_methane", 1900.0,
    ),
    "xco2": SpeciesInfo(
        "xco2", "CO2", "ppm", "column-averaged dry-air mole fraction of carbon dioxide",
        "dry_atmosphere_mole_fraction_of_carbon_dioxide", 415.0,
    ),
    "xco": SpeciesInfo(
        "xco", "CO", "mol m-2", "total column of carbon monoxide",
        "atmosphere_mole_content_of_carbon_monoxide", 0.03,
    ),
}

REQUIRED_ATTRS: tuple[str, ...] = (
    "product",
    "platform",
    "instrument",
    "species",
    "processor_version",
    "orbit",
    "time_coverage_start",
    "time_coverage_end",
    "source_file",
    "reader",
    "qa_threshold",
)


def species_of(ds: xr.Dataset) -> SpeciesInfo:
    """Return the :class:`SpeciesInfo` of the column a canonical dataset carries.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset in the canonical sounding schema.

    Raises
    ------
    ValueError
        If the dataset holds none (or more than one) of the canonical columns.
    """
    found = [SPECIES[name] for name in SPECIES if name in ds.data_vars]
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one of {sorted(SPECIES)} in the dataset, found "
            f"{[s.name for s in found]}; pass a dataset from eo_pipeline.open_product"
        )
    return found[0]


def validate(ds: xr.Dataset) -> SpeciesInfo:
    """Check that ``ds`` follows the canonical sounding schema, without computing.

    Parameters
    ----------
    ds : xarray.Dataset
        The dataset to check.

    Returns
    -------
    SpeciesInfo
        The species the dataset carries.

    Raises
    ------
    ValueError
        Naming the first rule that the dataset breaks.
    """
    info = species_of(ds)
    col = ds[info.name]
    dims = col.dims
    if dims not in (SWATH_DIMS, (SOUNDING_DIM,)):
        raise ValueError(f"{info.name} has dims {dims}; expected {SWATH_DIMS} or ({SOUNDING_DIM!r},)")
    for name in (f"{info.name}_uncertainty", "valid", "latitude", "longitude", "time"):
        if name not in ds.variables:
            raise ValueError(f"canonical variable {name!r} is missing")
        if ds[name].dims != dims:
            raise ValueError(f"{name} has dims {ds[name].dims}; expected {dims}")
    if ds["valid"].dtype != np.bool_:
        raise ValueError(f"'valid' must be boolean, got {ds['valid'].dtype}")
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise ValueError(f"'time' must be datetime64, got {ds['time'].dtype}")
    if col.attrs.get("units") != info.units:
        raise ValueError(f"{info.name} units {col.attrs.get('units')!r}; expected {info.units!r}")
    for name in ("latitude_bounds", "longitude_bounds"):
        if name in ds.variables and ds[name].dims != (*dims, CORNER_DIM):
            raise ValueError(f"{name} has dims {ds[name].dims}; expected {(*dims, CORNER_DIM)}")
    missing = [a for a in REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        raise ValueError(f"dataset attributes {missing} are missing")
    return info


def column_attrs(info: SpeciesInfo, source: str, **extra: Any) -> dict[str, Any]:
    """Attributes of a canonical column variable read from ``source``."""
    attrs: dict[str, Any] = {"units": info.units, "long_name": info.long_name}
    if info.standard_name:
        attrs["standard_name"] = info.standard_name
    attrs["source_variable"] = source
    attrs.update(extra)
    return attrs


def uncertainty_attrs(info: SpeciesInfo, source: str | None) -> dict[str, Any]:
    """Attributes of a canonical ``<species>_uncertainty`` variable."""
    attrs: dict[str, Any] = {
        "units": info.units,
        "long_name": f"1-sigma uncertainty of the {info.long_name}",
    }
    if source is None:
        attrs["comment"] = "not present in the source product; all NaN"
    else:
        attrs["source_variable"] = source
    return attrs


#: Accepted spellings of units, as factors to the canonical units of each species.
_UNIT_FACTORS: dict[str, dict[str, float]] = {
    "ppb": {"1e-9": 1.0, "ppb": 1.0, "ppbv": 1.0, "1e-6": 1e3, "ppm": 1e3, "ppmv": 1e3, "1": 1e9,
            "mol mol-1": 1e9, "mol/mol": 1e9},
    "ppm": {"1e-6": 1.0, "ppm": 1.0, "ppmv": 1.0, "1e-9": 1e-3, "ppb": 1e-3, "ppbv": 1e-3, "1": 1e6,
            "mol mol-1": 1e6, "mol/mol": 1e6},
    "mol m-2": {"mol m-2": 1.0, "mol/m2": 1.0, "mol m**-2": 1.0},
}


def conversion_factor(units: str, target: str) -> float | None:
    """Factor that converts a value in ``units`` to ``target`` units, or None if unknown.

    Examples
    --------
    >>> conversion_factor("1e-9", "ppb")
    1.0
    >>> conversion_factor("1e-6", "ppb")
    1000.0
    """
    return _UNIT_FACTORS.get(target, {}).get(str(units).strip())
