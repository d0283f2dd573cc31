# SPDX-License-Identifier: Apache-2.0
"""The forest-carbon stage: rasters -> :mod:`.forest` sums -> :mod:`.sinks` tables and maps -> files.

Used by ``eo-pipeline forest`` and by the ``forest:`` section of a job config. Writes:

* ``<stem>.csv``: one row per region and year (areas in ha, km2 and mu; emissions,
  removals and net flux in t CO2e/yr where their inputs are given; the sign
  convention in column ``net_sign_convention``);
* with a grid, ``<stem>_cells.csv``: one row per cell with forest and year (cell row,
  column and centre, ``treecover_ha``, ``loss_ha``, ``mapped_ha``), and per-cell maps for the map year as Cloud-Optimized GeoTIFFs:
  ``<stem>_forest_fraction_<Y>.tif`` (1), ``<stem>_removals_<Y>.tif`` (t CO2/ha/yr),
  ``<stem>_net_flux_<Y>.tif`` (t CO2e/ha/yr, negative = net sink), and a quicklook PNG
  of the forest fraction with the region outlines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError
from .forest import ForestResult, compute_forest
from .grid import GridSpec
from .sinks import (
    NET_CONVENTION,
    RemovalFactorTable,
    ZoneFactors,
    carbon_maps,
    carbon_table,
    load_removal_factors,
    user_zone,
)

__all__ = ["ForestRun", "run_forest", "user_zone"]

#: map variable -> file suffix
MAP_FILES = {"forest_fraction": "forest_fraction", "removals_tco2_per_ha": "removals", "net_tco2e_per_ha": "net_flux"}


@dataclass
class ForestRun:
    """What a forest run produced."""

    result: ForestResult
    table: pd.DataFrame
    maps: Any = None
    outputs: list[str] = field(default_factory=list)


def _select_zone(table_path: Any, zone: str | None, removal_factor: Any, overrides: Any) -> ZoneFactors | None:
    if removal_factor is not None:
        if zone is not None:
            raise ConfigError("give either a zone of the removal-factor table or your own removal factor, not both")
        return user_zone(removal_factor)
    if zone is None:
        if table_path is not None or overrides:
            table = load_removal_factors(table_path, overrides=overrides)
            raise ConfigError(f"choose the zone of the removal-factor table to apply (--zone); zones: "
                              f"{', '.join(table.keys()[:8])}{' ...' if len(table.keys()) > 8 else ''}")
        return None
    table: RemovalFactorTable = load_removal_factors(table_path, overrides=overrides)
    return table.zone(zone)


def _write_csv(table: pd.DataFrame, path: Path) -> str:
    from .regions import write_table

    return write_table(table, path)


def run_forest(
    treecover: Any,
    lossyear: Any = None,
    *,
    out: str | os.PathLike[str],
    emissions: Any = None,
    gain: Any = None,
    biomass: Any = None,
    regions: Any = None,
    name_field: str | None = None,
    select: list[str] | None = None,
    grid: Any = None,
    min_cover: float = 30,
    min_size: Any = 0,
    years: Any = ...,
    map_year: int | None = None,
    cell_area: str = "ellipsoid",
    emissions_weighting: str = "fraction",
    landcover: Any = None,
    removal_factors: Any = None,
    zone: str | None = None,
    removal_factor: Any = None,
    overrides: dict[str, Any] | None = None,
    formats: tuple[str, ...] = ("geotiff", "quicklook"),
) -> ForestRun:
    """Compute and write the forest-carbon outputs; ``out`` is the CSV path (its stem names the maps)."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"{out}: the forest table is written as CSV; give a path ending in .csv")
    z = _select_zone(removal_factors, zone, removal_factor, overrides)
    regions_gdf = None
    if regions is not None:
        from .regions import load_regions

        regions_gdf = load_regions(regions, name_field=name_field)
        if select:
            missing = sorted(set(select) - set(regions_gdf["region"]))
            if missing:
                raise ConfigError(f"{regions}: no region(s) {missing}; regions there: {sorted(regions_gdf['region'])}")
            regions_gdf = regions_gdf[regions_gdf["region"].isin(select)]
    result = compute_forest(treecover, lossyear, emissions=emissions, gain=gain, biomass=biomass, regions=regions_gdf,
                            grid=grid, min_cover=min_cover, min_size_ha=min_size, cell_area=cell_area,
                            emissions_weighting=emissions_weighting, landcover=landcover)
    table = carbon_table(result, years, zone=z)
    maps = cells = None
    if result.grid is not None:  # everything is computed and checked before the first file is written
        year = int(map_year) if map_year is not None else int(table["year"].max())
        if year not in set(table["year"]):
            raise ConfigError(f"map_year {year} is not among the years of the table ({table['year'].min()}-"
                              f"{table['year'].max()})")
        maps = carbon_maps(result, year, zone=z)
        cells = result.cell_table(years)
    outputs = [_write_csv(table, out)]
    if maps is not None:
        outputs.append(_write_csv(cells, out.with_name(f"{out.stem}_cells.csv")))
        outputs += _write_maps(maps, out.parent, out.stem, year, formats, regions_gdf)
    return ForestRun(result, table, maps, outputs)


def _write_maps(maps: Any, out_dir: Path, stem: str, year: int, formats: tuple[str, ...], regions: Any) -> list[str]:
    from .io.geotiff import write_cog
    from .io.quicklook import quicklook

    outputs: list[str] = []
    tags = {"net_sign_convention": NET_CONVENTION, "year": year}
    for var, suffix in MAP_FILES.items():
        if var not in maps:
            continue
        if "geotiff" in formats:
            path = out_dir / f"{stem}_{suffix}_{year}.tif"
            write_cog(maps[[var]], path, tags={**tags, "units": maps[var].attrs.get("units", "")})
            outputs.append(str(path))
    if "netcdf" in formats:
        from .io.netcdf import write_netcdf

        path = out_dir / f"{stem}_maps_{year}.nc"
        write_netcdf(maps, path)
        outputs.append(str(path))
    if "quicklook" in formats:
        outlines = []
        if regions is not None:
            for geom in regions.to_crs(GridSpec.from_dataset(maps).crs).geometry:
                for poly in getattr(geom, "geoms", [geom]):
                    if hasattr(poly, "exterior"):
                        outlines.append((np.asarray(poly.exterior.coords), "region"))
        path = out_dir / f"{stem}_forest_fraction_{year}.png"
        quicklook(maps, "forest_fraction", path, title=f"Tree-cover fraction {year} (canopy >= "
                  f"{maps.attrs.get('min_cover_percent', '?')} %)", cmap="Greens", vmin=0.0, vmax=1.0,
                  outlines=outlines)
        outputs.append(str(path))
        if "net_tco2e_per_ha" in maps:
            path = out_dir / f"{stem}_net_flux_{year}.png"
            quicklook(maps, "net_tco2e_per_ha", path, title=f"Net forest flux {year} (negative = sink)",
                      cmap="RdBu_r", symmetric=True, outlines=outlines)
            outputs.append(str(path))
    return outputs
