# SPDX-License-Identifier: Apache-2.0
"""Region polygons -> exact cell fractions on a grid -> per-region tables of Level-3 maps.

Polygons (GeoJSON, GeoPackage, shapefile, or a GeoDataFrame) are reprojected into the
grid's CRS. Cells wholly inside a polygon come from ``rasterio.features.rasterize``
(cell centre inside, and not touched by the boundary) with fraction 1; cells touched by
the boundary get the exact fraction of their area that the polygon covers (shapely
intersection, in the grid's CRS). Only each polygon's bounding window is rasterised.

Table columns, one row per region and time step (statistics over the cells with data,
each weighted by the fraction ``f`` of the cell inside the region):

``mean``           sum f m / sum f (m: the cell's mean)
``median``         median of m weighted by f
``weighted_mean``  sum f w m / sum f w (w: the cell's summed sounding weight)
``n_soundings``    sum f n, rounded (n: soundings in the cell; an area-binned sounding
                   that spans several cells counts in each)
``coverage_fraction``  area of the region's cells with data / area of the region
``mean_anomaly``   sum f a / sum f of the anomaly, where the map has one
``n_hotspots``     hotspots whose centroid lies in the region
``region_area_km2``, ``species``, ``units`` (of the value columns), ``note`` (why a
row is empty: region outside the grid, no data in this time step).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from ._sums import fsum
from .errors import ConfigError, InputFileNotFoundError, QualityWarning, warn
from .grid import GridSpec, north_up
from .io._atomic import temp_path, write_failed
from .schema import SPECIES

__all__ = ["coverage_fractions", "load_regions", "region_fractions", "region_table", "RegionCells", "weighted_median", "write_table"]


@dataclass(frozen=True)
class RegionCells:
    """Cells of one region on a grid: window offsets and per-cell covered fractions."""

    name: str
    row0: int
    col0: int
    fraction: np.ndarray  # (rows, cols) of the window, 0..1
    geometry_lonlat: Any  # shapely geometry in EPSG:4326, for point-in-region tests

    @property
    def empty(self) -> bool:
        """True when the region covers no cell of the grid."""
        return self.fraction.size == 0 or not np.any(self.fraction > 0)


def load_regions(source: Any, *, name_field: str | None = None) -> Any:
    """Read region polygons and give them a ``region`` name column.

    Parameters
    ----------
    source : path or GeoDataFrame
        GeoJSON, GeoPackage or shapefile (anything pyogrio reads), or a GeoDataFrame.
    name_field : str, optional
        Attribute holding the region names (default: ``name``, then ``id``, else the
        row number).
    """
    import geopandas as gpd

    if isinstance(source, gpd.GeoDataFrame):
        gdf = source.copy()
    else:
        p = Path(source)
        if not p.exists():
            raise InputFileNotFoundError(p)
        try:
            gdf = gpd.read_file(p)
        except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
            raise ConfigError(f"{p}: cannot read region polygons ({exc}); give GeoJSON or GeoPackage") from exc
    if gdf.crs is None:
        warn(f"{source}: region polygons have no CRS; assuming EPSG:4326 (lon/lat)", QualityWarning)
        gdf = gdf.set_crs("EPSG:4326")
    if name_field is None and "region" in gdf.columns:
        return gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
    field = name_field or next((f for f in ("name", "id") if f in gdf.columns), None)
    if name_field and name_field not in gdf.columns:
        raise ConfigError(f"{source}: no attribute {name_field!r}; attributes: {[c for c in gdf.columns if c != 'geometry']}")
    gdf["region"] = gdf[field].astype(str) if field else [f"region_{i}" for i in range(len(gdf))]
    gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
    return gdf


def _window(geom: Any, grid: GridSpec) -> tuple[int, int, int, int] | None:
    minx, miny, maxx, maxy = geom.bounds
    t = grid.transform
    rows, cols = grid.shape
    c0 = max(int(np.floor((minx - t.c) / t.a)), 0)
    c1 = min(int(np.ceil((maxx - t.c) / t.a)), cols)
    r0 = max(int(np.floor((maxy - t.f) / t.e)), 0)
    r1 = min(int(np.ceil((miny - t.f) / t.e)), rows)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Kernel: ``mask`` grown by one cell in all 8 directions (same shape)."""
    out = mask.copy()
    rows, cols = mask.shape
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                out[max(dr, 0):rows + min(dr, 0), max(dc, 0):cols + min(dc, 0)] |= \
                    mask[max(-dr, 0):rows + min(-dr, 0), max(-dc, 0):cols + min(-dc, 0)]
    return out


def coverage_fractions(geom: Any, transform: Any, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Exact fraction of each cell that ``geom`` covers, and the all-touched mask.

    Parameters
    ----------
    geom : shapely geometry
        Polygon(s) in the raster's CRS.
    transform : affine.Affine
        North-up transform of the window (no rotation).
    shape : (rows, cols)

    Returns
    -------
    fraction : float64 array, 0..1
        Covered area of each cell / cell area, in the CRS's plane: 1 inside, the exact
        shapely intersection on cells the boundary crosses, 0 outside.
    touched : bool array
        ``rasterio.features.rasterize(..., all_touched=True)``: every cell the polygon
        touches (a superset of ``fraction > 0``; cells touched only along an edge or at a
        corner have fraction 0).
    """
    import shapely
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.features import rasterize

    if shape[0] == 0 or shape[1] == 0 or geom is None or geom.is_empty:
        return np.zeros(shape), np.zeros(shape, dtype=bool)
    with warnings.catch_warnings():  # rasterio warns spuriously about its in-memory dataset
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        inside = rasterize([(geom, 1)], out_shape=shape, transform=transform, all_touched=False,
                           dtype="uint8").astype(bool)
        edge = rasterize([(geom.boundary, 1)], out_shape=shape, transform=transform, all_touched=True,
                         dtype="uint8").astype(bool)
        touched = rasterize([(geom, 1)], out_shape=shape, transform=transform, all_touched=True,
                            dtype="uint8").astype(bool)
    # GDAL's all-touched line rasterization can miss a cell the boundary crosses near one of
    # its corners (seen: a cell 99.91 % covered taken as 100 %); such a cell always neighbours a
    # cell it did mark, so the exact overlay is done on the marked cells and their 8 neighbours
    # (cells wholly inside still get exactly 1 from the covers predicate below)
    edge = _dilate(edge)
    frac = np.where(inside & ~edge, 1.0, 0.0)
    rr, cc = np.nonzero(edge)
    if rr.size:
        xres, yres = transform.a, -transform.e
        x0 = transform.c + cc * xres
        y1 = transform.f - rr * yres
        boxes = shapely.box(x0, y1 - yres, x0 + xres, y1)
        shapely.prepare(geom)
        part = np.clip(shapely.area(shapely.intersection(boxes, geom)) / (xres * yres), 0.0, 1.0)
        # cells the boundary only touches but that lie wholly inside: exactly 1 (an exact predicate), not
        # 1 - 1e-16 from the overlay's arithmetic, which was seen to vary from one process to the next
        frac[rr, cc] = np.where(shapely.covers(geom, boxes), 1.0, part)
    return frac, touched | (frac > 0)


def region_fractions(regions: Any, grid: GridSpec) -> list[RegionCells]:
    """Exact covered fraction of every cell of ``grid`` touched by each region polygon."""
    from rasterio.transform import Affine

    gdf = load_regions(regions) if not hasattr(regions, "geometry") else regions
    lonlat = gdf.to_crs("EPSG:4326")
    projected = gdf.to_crs(grid.crs)
    out: list[RegionCells] = []
    for name, geom, geom_ll in zip(gdf["region"], projected.geometry, lonlat.geometry, strict=True):
        win = _window(geom, grid)
        if win is None:
            out.append(RegionCells(name, 0, 0, np.zeros((0, 0)), geom_ll))
            continue
        r0, r1, c0, c1 = win
        t = grid.transform @ Affine.translation(c0, r0)
        frac, _ = coverage_fractions(geom, t, (r1 - r0, c1 - c0))
        out.append(RegionCells(name, r0, c0, frac, geom_ll))
    return out


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of ``values`` with ``weights`` (the value where the cumulative weight reaches half)."""
    ok = np.isfinite(values) & (weights > 0)
    if not ok.any():
        return float("nan")
    v, w = values[ok], weights[ok]
    order = np.argsort(v)
    v, w = v[order], w[order]
    cum = np.cumsum(w)
    half = 0.5 * cum[-1]
    k = int(np.searchsorted(cum, half))
    if np.isclose(cum[k], half) and k + 1 < v.size:
        return float(0.5 * (v[k] + v[k + 1]))
    return float(v[k])


def _species(ds: xr.Dataset) -> str:
    for name in SPECIES:
        if f"{name}_mean" in ds:
            return name
    raise ConfigError("region_table needs a gridded Level-3 dataset (<species>_mean)")


def _row(cells: RegionCells, data: dict[str, np.ndarray], area: np.ndarray, sp: str) -> dict[str, Any]:
    f = cells.fraction
    m = data[f"{sp}_mean"]
    n = data.get(f"{sp}_count", np.where(np.isfinite(m), 1, 0))
    w = data.get(f"{sp}_weight", np.ones_like(m))
    has = (n > 0) & np.isfinite(m) & (f > 0)
    region_area = fsum(f * area)
    row: dict[str, Any] = {"region_area_km2": region_area / 1e6}
    if not has.any():
        return row | {"mean": np.nan, "median": np.nan, "weighted_mean": np.nan, "n_soundings": 0,
                      "coverage_fraction": 0.0, "mean_anomaly": np.nan, "note": "no data in this time step"}
    fw = f[has]
    row["mean"] = fsum(fw * m[has]) / fsum(fw)
    row["median"] = weighted_median(m[has], fw)
    ww = fw * w[has]
    sww = fsum(ww)
    row["weighted_mean"] = fsum(ww * m[has]) / sww if sww > 0 else np.nan
    row["n_soundings"] = int(round(fsum(fw * n[has])))
    row["coverage_fraction"] = fsum(fw * area[has]) / region_area if region_area > 0 else np.nan
    a = data.get(f"{sp}_anomaly")
    if a is not None:
        ok = has & np.isfinite(a)
        row["mean_anomaly"] = fsum(f[ok] * a[ok]) / fsum(f[ok]) if ok.any() else np.nan
    else:
        row["mean_anomaly"] = np.nan
    row["note"] = ""
    return row


def region_table(l3: xr.Dataset, regions: Any, *, hotspots: Any = None, name_field: str | None = None,
                 cells: list[RegionCells] | None = None) -> pd.DataFrame:
    """One row per region and time step of a gridded Level-3 (or anomaly) dataset.

    Parameters
    ----------
    l3 : xarray.Dataset
        From :func:`grid_soundings`, :func:`composite` or :func:`regional_anomaly`.
    regions : path or GeoDataFrame
        Region polygons (any CRS; reprojected to the grid's).
    hotspots : GeoDataFrame, optional
        From :func:`find_hotspots`, to count hotspots per region (and time step).
    cells : list of RegionCells, optional
        ``region_fractions(regions, grid)`` computed beforehand for this grid (a job
        computes them once, for all species); default: computed here.
    name_field : str, optional
        Attribute with the region names.

    Returns
    -------
    pandas.DataFrame
        Tidy table (see the module docstring for the columns). Regions outside the grid
        and time steps without data give rows of NaN with the reason in ``note``.
    """
    from shapely.geometry import Point

    gdf = load_regions(regions, name_field=name_field)
    sp = _species(l3)
    grid = GridSpec.from_dataset(l3)
    l3 = north_up(l3)  # the region windows index rows and columns of the grid
    if cells is None:
        cells = region_fractions(gdf, grid)
    area = np.broadcast_to(grid.cell_area(), grid.shape)
    names = [v for v in (f"{sp}_mean", f"{sp}_count", f"{sp}_weight", f"{sp}_anomaly") if v in l3]
    has_time = "time" in l3[f"{sp}_mean"].dims
    steps = list(range(l3.sizes["time"])) if has_time else [None]
    windows = {}
    for c in cells:
        if c.empty:
            continue
        h, w = c.fraction.shape
        sub = l3[names].isel(y=slice(c.row0, c.row0 + h), x=slice(c.col0, c.col0 + w))
        windows[c.name] = sub
    computed = dict(zip(windows, dask.compute(*windows.values()), strict=True)) if windows else {}
    info = SPECIES[sp]
    rows = []
    for t in steps:
        label = str(np.datetime_as_string(l3["time"].values[t], unit="D")) if t is not None else l3.attrs.get(
            "time_coverage_start", "")[:10]
        for c in cells:
            base = {"region": c.name, "time": label, "species": info.species, "units": info.units}
            if c.empty:
                rows.append(base | {"mean": np.nan, "median": np.nan, "weighted_mean": np.nan, "n_soundings": 0,
                                    "coverage_fraction": np.nan, "mean_anomaly": np.nan, "region_area_km2": 0.0,
                                    "n_hotspots": 0, "note": "region outside the grid"})
                continue
            win = computed[c.name]
            if t is not None:
                win = win.isel(time=t)
            data = {k: np.asarray(win[k].values, np.float64) for k in names}
            a = area[c.row0:c.row0 + c.fraction.shape[0], c.col0:c.col0 + c.fraction.shape[1]]
            row = base | _row(c, data, a, sp)
            n_hot = 0
            if hotspots is not None and len(hotspots):
                hs = hotspots if t is None or "time" not in hotspots else hotspots[hotspots["time"] == label]
                n_hot = int(sum(c.geometry_lonlat.covers(Point(x, y)) for x, y in zip(hs["lon"], hs["lat"], strict=True)))
            row["n_hotspots"] = n_hot
            rows.append(row)
    columns = ["region", "time", "species", "units", "mean", "median", "weighted_mean", "n_soundings",
               "coverage_fraction", "mean_anomaly", "n_hotspots", "region_area_km2", "note"]
    table = pd.DataFrame(rows, columns=columns)
    outside = [c.name for c in cells if c.empty]
    if outside:
        warn(f"region(s) {outside} lie outside the grid {grid.name or ''}; their rows are empty", QualityWarning)
    return table


def write_table(table: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    """Write a table as CSV under a temporary name, then rename it into place.

    A failure (e.g. no space left on device) raises one :class:`OutputError` naming the
    file, and leaves no temporary behind.
    """
    p = Path(path)
    tmp = temp_path(p, "part")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(tmp, index=False)
        os.replace(tmp, p)
    except Exception as exc:  # noqa: BLE001 - a clear message for any writer failure
        raise write_failed(p, "table", exc) from exc
    return str(p)
