# SPDX-License-Identifier: Apache-2.0
"""Forest carbon: gross removals, emissions from tree-cover loss and net flux (IPCC Tier 1).

Formulas (units in brackets; C_TO_CO2 = 44/12):

* gross removals [t CO2/yr] = tree-cover area [ha] x removal factor [t C/ha/yr,
  above- plus below-ground] x 44/12. A removal factor comes from a table
  (``eo_pipeline/data/removal_factors_ipcc2019.yaml``, shipped in the package: IPCC 2019 Refinement Vol. 4 Ch. 4 Tier 1
  defaults, each with its table and row) keyed by
  ``climate_domain/ecological_zone/continent/age_class``; a zone may instead give
  ``agb_growth`` [t d.m./ha/yr] and ``root_to_shoot`` R, and then
  removal factor = agb_growth x (1 + R) x carbon fraction (0.47 t C/t d.m.).
* emissions from loss [t CO2e/yr] = loss area [ha] x above-ground biomass density
  [t d.m./ha] x (1 + R) x 0.47 x 44/12, with the density from the table
  (``agb_density``) or a biomass raster; or, with Global Forest Watch's per-pixel
  gross-emissions layer [Mg CO2e/pixel], that layer summed by loss year over the
  counted forest pixels lost that year (see :mod:`eo_pipeline.forest`).
* net flux [t CO2e/yr] = emissions - removals. **Sign convention: negative = net sink
  (the forest takes up more CO2 than its loss emits), positive = net source.**
* low/high: the table's ranges carried through (removals from the removal factor's
  range; emissions from the biomass density's and R's ranges);
  net low = emissions low - removals high, net high = emissions high - removals low.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .errors import ConfigError, InputFileNotFoundError
from .units import M2_PER_HA, from_ha, parse_area

__all__ = [
    "C_TO_CO2",
    "CARBON_FRACTION",
    "NET_CONVENTION",
    "DEFAULT_TABLE",
    "Factor",
    "ZoneFactors",
    "RemovalFactorTable",
    "load_removal_factors",
    "user_zone",
    "removals_tco2",
    "carbon_table",
    "carbon_maps",
    "add_unit_columns",
]

C_TO_CO2 = 44.0 / 12.0
CARBON_FRACTION = 0.47
NET_CONVENTION = "net = emissions - removals; negative = net sink, positive = net source (t CO2e/yr)"
#: The bundled IPCC 2019 Tier 1 table, shipped inside the package (an importlib.resources Traversable).
DEFAULT_TABLE = resources.files("eo_pipeline").joinpath("data", "removal_factors_ipcc2019.yaml")


@dataclass(frozen=True)
class Factor:
    """A factor with its range and where it comes from."""

    value: float
    low: float
    high: float
    source: str = ""

    @classmethod
    def of(cls, spec: Any, where: str, scale: float = 1.0) -> Factor:
        if isinstance(spec, int | float):
            return cls(float(spec) * scale, float(spec) * scale, float(spec) * scale, "")
        if not isinstance(spec, Mapping) or spec.get("value") is None:
            raise ConfigError(f"{where}: needs a number or a mapping with 'value' (and optional low, high, source)")
        try:
            v = float(spec["value"]) * scale
            lo = float(spec["low"]) * scale if spec.get("low") is not None else v
            hi = float(spec["high"]) * scale if spec.get("high") is not None else v
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: value/low/high must be numbers") from None
        if not lo <= v <= hi:
            raise ConfigError(f"{where}: needs low <= value <= high, got {lo}, {v}, {hi}")
        return cls(v, lo, hi, str(spec.get("source", "")))


@dataclass(frozen=True)
class ZoneFactors:
    """Factors for one zone: removal factor [t C/ha/yr], R, AGB density [t d.m./ha], carbon fraction."""

    key: str
    removal_factor: Factor
    root_to_shoot: Factor | None
    agb_density: Factor | None
    carbon_fraction: Factor

    @property
    def removal_factor_co2(self) -> float:
        """The removal factor in t CO2/ha/yr."""
        return self.removal_factor.value * C_TO_CO2


def _removal_factor(spec: Mapping[str, Any], where: str, cf: Factor) -> Factor:
    if spec.get("removal_factor") is not None:
        rf = spec["removal_factor"]
        units = str(rf.get("units", "t C/ha/yr")) if isinstance(rf, Mapping) else "t C/ha/yr"
        u = units.replace(" ", "").lower()
        if u.startswith("tco2"):
            scale = 1.0 / C_TO_CO2
        elif u.startswith("tc/"):
            scale = 1.0
        else:
            raise ConfigError(f"{where}.removal_factor.units: {units!r}; use 't C/ha/yr' or 't CO2/ha/yr'")
        return Factor.of(rf, f"{where}.removal_factor", scale)
    if spec.get("agb_growth") is not None and spec.get("root_to_shoot") is not None:
        g = Factor.of(spec["agb_growth"], f"{where}.agb_growth")
        r = Factor.of(spec["root_to_shoot"], f"{where}.root_to_shoot")
        return Factor(g.value * (1 + r.value) * cf.value, g.low * (1 + r.low) * cf.value,
                      g.high * (1 + r.high) * cf.value, f"agb_growth x (1 + R) x CF ({g.source}; {r.source})")
    have = [k for k in ("agb_growth", "root_to_shoot") if spec.get(k) is not None]
    raise ConfigError(f"{where}: no removal factor: the zone gives neither removal_factor nor agb_growth with "
                      f"root_to_shoot (it has {', '.join(have) or 'neither'}; see the table's 'unverified' notes). "
                      "Add the missing factor in your own table (--removal-factors) or give --removal-factor")


class RemovalFactorTable:
    """Removal-factor table: zones by key, a carbon fraction, and where each came from."""

    def __init__(self, zones: Mapping[str, Any], carbon_fraction: Any = None, sources: tuple[str, ...] = ()) -> None:
        self.raw = dict(zones)
        self.sources = sources
        self.carbon_fraction = Factor.of(carbon_fraction if carbon_fraction is not None else CARBON_FRACTION,
                                         "carbon_fraction")

    def keys(self) -> list[str]:
        return sorted(self.raw)

    def zone(self, key: str) -> ZoneFactors:
        """The factors of zone ``key`` (``climate_domain/ecological_zone/continent/age_class``)."""
        if key not in self.raw:
            near = [k for k in self.raw if key.split("/")[0] in k][:6] or self.keys()[:6]
            raise ConfigError(
                f"{' + '.join(self.sources) or 'removal-factor table'}: no zone {key!r}. Zones there include: "
                f"{', '.join(near)}. Add it under 'zones:' in your own table (--removal-factors) or give "
                "--removal-factor VALUE in t C/ha/yr")
        spec = self.raw[key]
        where = f"zones.{key}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: must be a mapping of factors")
        r = Factor.of(spec["root_to_shoot"], f"{where}.root_to_shoot") if spec.get("root_to_shoot") is not None else None
        agb = Factor.of(spec["agb_density"], f"{where}.agb_density") if spec.get("agb_density") is not None else None
        cf = Factor.of(spec["carbon_fraction"], f"{where}.carbon_fraction") if spec.get("carbon_fraction") else \
            self.carbon_fraction
        return ZoneFactors(key, _removal_factor(spec, where, cf), r, agb, cf)


def user_zone(removal_factor: Any, *, carbon_fraction: float = CARBON_FRACTION, root_to_shoot: Any = None,
              agb_density: Any = None, name: str = "user") -> ZoneFactors:
    """Factors a user gives directly: ``0.594`` or ``{value, low, high, units, source}``.

    ``units`` is ``t C/ha/yr`` (default) or ``t CO2/ha/yr``.
    """
    spec = removal_factor if isinstance(removal_factor, dict) else {"value": float(removal_factor)}
    spec = {"units": "t C/ha/yr", **spec}
    cf = Factor(carbon_fraction, carbon_fraction, carbon_fraction, "")
    rf = _removal_factor({"removal_factor": spec}, "removal_factor", cf)
    r = Factor.of(root_to_shoot, "root_to_shoot") if root_to_shoot is not None else None
    agb = Factor.of(agb_density, "agb_density") if agb_density is not None else None
    src = spec.get("source") or "given by the user"
    return ZoneFactors(f"{name}: {rf.value:g} t C/ha/yr ({src})", rf, r, agb, cf)


def _read_yaml(path: Path | Traversable) -> dict[str, Any]:
    if not path.is_file():
        raise InputFileNotFoundError(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("zones", {}), dict):
        raise ConfigError(f"{path}: a removal-factor table needs a 'zones:' mapping of zone key -> factors")
    return doc


def load_removal_factors(path: str | os.PathLike[str] | None = None, *, overrides: Mapping[str, Any] | None = None,
                         defaults: bool = True) -> RemovalFactorTable:
    """The IPCC 2019 Tier 1 table, with a user table and per-entry overrides merged over it.

    Parameters
    ----------
    path : path, optional
        A YAML table with ``zones:`` (same layout as the default table). Its zones replace
        the default zones of the same key and add new ones; its ``carbon_fraction``
        replaces the default.
    overrides : mapping, optional
        ``{zone_key: {field: value}}`` merged field by field over the table, e.g.
        ``{"x/y/z/natural_gt20y": {"removal_factor": {"value": 0.6, "units": "t C/ha/yr"}}}``.
    defaults : bool
        Start from the bundled ``eo_pipeline/data/removal_factors_ipcc2019.yaml`` (default True).
    """
    zones: dict[str, Any] = {}
    cf: Any = None
    sources: list[str] = []
    if defaults:
        doc = _read_yaml(DEFAULT_TABLE)
        zones.update(doc.get("zones") or {})
        cf = doc.get("carbon_fraction")
        sources.append("eo_pipeline/data/removal_factors_ipcc2019.yaml (IPCC 2019, bundled)")
    if path is not None:
        doc = _read_yaml(Path(path))
        zones.update(doc.get("zones") or {})
        cf = doc.get("carbon_fraction", cf)
        sources.append(str(path))
    for key, fields in (overrides or {}).items():
        if not isinstance(fields, Mapping):
            raise ConfigError(f"removal-factor override {key!r}: must be a mapping of fields")
        zones[key] = {**(zones.get(key) or {}), **fields}
        sources.append("overrides")
    if not zones:
        raise ConfigError("the removal-factor table is empty; give --removal-factors TABLE.yaml with 'zones:'")
    return RemovalFactorTable(zones, cf, tuple(sources))


def removals_tco2(area: Any, removal_factor_tc: float, *, unit: str = "ha") -> float:
    """Gross removals (t CO2/yr) of ``area`` (in ``unit``, or a string such as ``"4.822e6 mu"``).

    >>> round(removals_tco2("4.822e6 mu", 0.594))
    700154
    """
    area_ha = parse_area(area, unit, what="area")
    return area_ha * removal_factor_tc * C_TO_CO2


def add_unit_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``_km2`` and ``_mu`` twins right after each ``*_ha`` area column."""
    cols: dict[str, Any] = {}
    for col in df.columns:
        cols[col] = df[col]
        if col.endswith("_ha"):
            cols[f"{col[:-3]}_km2"] = from_ha(df[col], "km2")
            cols[f"{col[:-3]}_mu"] = from_ha(df[col], "mu")
    out = pd.DataFrame(cols, index=df.index)
    out.attrs.update(df.attrs)
    return out


def carbon_table(result: Any, years: Any = ..., *, zone: ZoneFactors | Mapping[str, ZoneFactors] | None = None,
                 units: bool = True) -> pd.DataFrame:
    """Per region and year: area, loss, and where their inputs exist, emissions, removals and net flux.

    Parameters
    ----------
    result : eo_pipeline.forest.ForestResult
    years : see :func:`eo_pipeline.forest_area_by_year`
    zone : ZoneFactors, or a mapping region name -> ZoneFactors, optional
        Removal factors (and AGB density) to apply; without it only the emissions
        from a GFW emissions layer (or nothing) are added.
    units : bool
        Also give every area column in km2 and mu.

    Columns added to those of :func:`eo_pipeline.forest_area_by_year` (all per year):
    ``loss_emissions_tco2e`` (+ ``_low``/``_high``, t CO2e), ``removals_tco2``
    (+ ``_low``/``_high``, t CO2), ``net_tco2e`` (+ ``_low``/``_high``, t CO2e; negative =
    net sink), ``removal_factor_tc_per_ha_yr``, ``removal_factor_tco2_per_ha_yr``,
    ``region_area_ha`` (the region's area inside the rasters), and the text columns
    ``zone``, ``emissions_source``, ``note``, ``net_sign_convention``.
    """
    df = result.area_table(years)
    ys = sorted(df["year"].unique())
    by_region = {r.name: r for r in result.regions}
    rows: list[dict[str, Any]] = []
    for r_name, group in df.groupby("region", sort=False):
        sums = by_region[r_name]
        z = zone.get(r_name) if isinstance(zone, Mapping) else zone
        block = _carbon_block(sums, ys, z, result)
        for i, (_, row) in enumerate(group.iterrows()):
            d = row.to_dict()
            d.update({k: v[i] if isinstance(v, np.ndarray) else v for k, v in block.items()})
            d["region_area_ha"] = df.attrs["region_area_ha"].get(r_name, math.nan)
            d["note"] = sums.note
            rows.append(d)
    out = pd.DataFrame(rows)
    text = [c for c in ("zone", "emissions_source", "note", "net_sign_convention") if c in out]
    out = out[[c for c in out.columns if c not in text] + text]
    if units:
        out = add_unit_columns(out)
    out.attrs.update(df.attrs)
    out.attrs["net_sign_convention"] = NET_CONVENTION
    return out


def _emissions(sums: Any, years: list[int], z: ZoneFactors | None,
               result: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, str] | None:
    """(zones, years) emissions from loss (t CO2e) with low/high, and their source; None without inputs.

    Regions outside the rasters (empty sums) get one row of NaN.
    """
    lay = result.layers
    if not (lay.emissions is not None or (z is not None and result.has_loss and (
            lay.biomass is not None or z.agb_density is not None))):
        return None
    if sums.empty:
        nan = np.full((1, len(years)), np.nan)
        return nan, nan, nan, ""
    if sums.emissions_mg is not None:
        e = sums.by_year(years, "emissions_mg")
        return e, e, e, f"GFW gross emissions layer (Mg CO2e/pixel), weighting {result.parameters['emissions_weighting']}"
    assert z is not None
    r = z.root_to_shoot or Factor(0.0, 0.0, 0.0, "no root_to_shoot: above-ground only")
    if sums.biomass_t is not None:
        lost = sums.by_year(years, "biomass_t")  # t d.m. lost
        base, base_lo, base_hi = lost, lost, lost
        source = "biomass raster (t d.m./ha)"
    else:
        loss_ha = sums.by_year(years) / M2_PER_HA
        d = z.agb_density
        base, base_lo, base_hi = loss_ha * d.value, loss_ha * d.low, loss_ha * d.high
        source = f"table agb_density {d.value} t d.m./ha ({z.key})"
    k = z.carbon_fraction.value * C_TO_CO2
    return base * (1 + r.value) * k, base_lo * (1 + r.low) * k, base_hi * (1 + r.high) * k, source


def _carbon_block(sums: Any, years: list[int], z: ZoneFactors | None, result: Any) -> dict[str, Any]:
    """Carbon columns (arrays over ``years``) for a one-zone (region) sum."""
    nan = np.full(len(years), np.nan)
    block: dict[str, Any] = {}
    em = _emissions(sums, years, z, result)
    if em is not None:
        emis, lo, hi = em[0][0], em[1][0], em[2][0]
        block.update(loss_emissions_tco2e=emis, loss_emissions_tco2e_low=lo, loss_emissions_tco2e_high=hi,
                     emissions_source=em[3])
    if z is not None:
        tc_ha = nan if sums.empty else sums.treecover_m2(years)[0] / M2_PER_HA
        rf = z.removal_factor
        rem, rem_lo, rem_hi = (tc_ha * rf.value * C_TO_CO2, tc_ha * rf.low * C_TO_CO2, tc_ha * rf.high * C_TO_CO2)
        block.update(removals_tco2=rem, removals_tco2_low=rem_lo, removals_tco2_high=rem_hi,
                     removal_factor_tc_per_ha_yr=rf.value, removal_factor_tco2_per_ha_yr=rf.value * C_TO_CO2,
                     zone=z.key)
        if em is not None:
            block.update(net_tco2e=emis - rem, net_tco2e_low=lo - rem_hi, net_tco2e_high=hi - rem_lo,
                         net_sign_convention=NET_CONVENTION)
    return block


def carbon_maps(result: Any, year: int, *, zone: ZoneFactors | None = None) -> Any:
    """Per-cell maps on ``result.grid`` for one year (an ``xarray.Dataset``, y/x, float32).

    Variables: ``forest_fraction`` (tree-cover area in ``year`` / mapped area of the
    cell, 1), ``treecover_ha``, ``loss_ha`` (lost in ``year``), and with a zone
    ``removals_tco2_per_ha`` (t CO2/ha/yr of cell area) and, where emissions exist,
    ``net_tco2e_per_ha`` (t CO2e/ha/yr, negative = net sink); their ``units`` are
    ``t ha-1 yr-1`` (UDUNITS has no unit for "of CO2"; the long names say it). Cells
    without data are NaN.
    The mapped area of a cell is its area covered by valid treecover pixels (and by the
    regions, when given).
    """
    import xarray as xr

    if result.cells is None or result.grid is None:
        raise ConfigError("per-cell maps need a grid (grid=... / --grid)")
    grid, cells = result.grid, result.cells
    ys = [int(year)]
    shape = grid.shape
    mapped_ha = cells.mapped_m2 / M2_PER_HA
    with np.errstate(invalid="ignore", divide="ignore"):
        tc_ha = cells.treecover_m2(ys)[:, 0] / M2_PER_HA
        loss_ha = cells.by_year(ys)[:, 0] / M2_PER_HA
        has = mapped_ha > 0
        variables: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
            "forest_fraction": (np.where(has, tc_ha / mapped_ha, np.nan),
                                {"units": "1", "long_name": f"tree-cover area fraction of the mapped cell area, {year}"}),
            "treecover_ha": (np.where(has, tc_ha, np.nan), {"units": "ha", "long_name": f"tree-cover area, {year}"}),
            "loss_ha": (np.where(has, loss_ha, np.nan), {"units": "ha", "long_name": f"tree-cover loss in {year}"}),
        }
    out = dict(variables)
    if zone is not None:
        rf = zone.removal_factor.value * C_TO_CO2
        with np.errstate(invalid="ignore", divide="ignore"):
            rem = tc_ha * rf
            out["removals_tco2_per_ha"] = (np.where(has, rem / mapped_ha, np.nan),
                                           {"units": "t ha-1 yr-1", "long_name": f"gross removals of CO2 per ha of cell (t CO2), {year}",
                                            "removal_factor": f"{zone.removal_factor.value} t C/ha/yr ({zone.key})"})
            em = _emissions(cells, ys, zone, result)
            if em is not None:
                out["net_tco2e_per_ha"] = (np.where(has, (em[0][:, 0] - rem) / mapped_ha, np.nan),
                                           {"units": "t ha-1 yr-1", "long_name": f"net flux per ha of cell (t CO2e), {year}",
                                            "sign_convention": NET_CONVENTION})
    coords: dict[str, Any] = dict(grid.coords())
    coords["crs"] = ((), np.int32(0), grid.cf_grid_mapping())
    data_vars = {k: (("y", "x"), v.reshape(shape).astype(np.float32), {**a, "grid_mapping": "crs"})
                 for k, (v, a) in out.items()}
    layers = [result.layers.treecover, *result.layers.others().values()]
    source = "; ".join(os.path.basename(m.describe) for m in layers)  # the input rasters (CF 'source')
    return xr.Dataset(data_vars, coords=coords, attrs={
        "title": f"eo_pipeline forest carbon maps, {year}", "year": int(year), "source": source,
        "net_sign_convention": NET_CONVENTION, "Conventions": "CF-1.8",
        **{k: str(v) for k, v in result.parameters.items()}})
