# SPDX-License-Identifier: Apache-2.0
"""The gridding stage: canonical soundings -> a lazy Level-3 dataset on a :class:`GridSpec`.

This module is the thin layer that lifts the numpy/numba kernels of
:mod:`eo_pipeline.binning`, :mod:`eo_pipeline.footprints` and
:mod:`eo_pipeline._area_kernel` onto dask and xarray: one task per block of
soundings (chunk), a tree of merges (combine), and one task per output tile
(finalize). Nothing is computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed

from ._area_kernel import area_accumulate
from ._version import __version__
from .binning import STATISTICS, Partial, Tiling, finalize_block, merge, offset, point_partial
from .errors import GridError, ReaderOptionError
from .footprints import FOV_DIAMETER_KM, circle_footprints, polygons_in_grid, with_derived_corners
from .grid import GridSpec, named_grid
from .schema import SPECIES, SWATH_DIMS, SpeciesInfo, species_of

__all__ = ["grid_soundings", "soundings_partial", "tree_merge", "partial_to_dataset", "cf_statistic_attrs", "Binning",
           "METHODS", "WEIGHTINGS"]

METHODS = ("point", "area")
#: Tile size (cells) of the tile-major cell index, and the COG's internal tiles.
TILE = 512
WEIGHTINGS = (None, "inverse_variance")


@dataclass(frozen=True)
class Binning:
    """Everything a chunk task needs to know besides the data (hashable, picklable).

    Attributes
    ----------
    grid : GridSpec
        Target grid.
    tiling : Tiling
        Flat indexing of the output (and its period layers).
    method : {"point", "area"}
        Binning method.
    inverse_variance : bool
        Weight by 1/sigma².
    ref : float
        Reference value of the species (numerically stable sums).
    fov_km : float or None
        Diameter of circular footprints for soundings without corners (area method).
    period_edges : tuple of int, optional
        Period boundaries as datetime64[ns] integers (composites); None = one period.
    """

    grid: GridSpec
    tiling: Tiling
    method: str
    inverse_variance: bool
    ref: float
    fov_km: float | None = None
    period_edges: tuple[int, ...] | None = None


def _point_chunk(lon: np.ndarray, lat: np.ndarray, x: np.ndarray, u: np.ndarray, b: Binning) -> Partial:
    grid = b.grid
    ok = np.isfinite(lon) & np.isfinite(lat)
    if grid.is_geographic:
        xs, ys = b.grid.bounds[0] + np.mod(lon - b.grid.bounds[0], 360.0), lat
    else:
        xs, ys = grid.lonlat_to_xy(np.where(ok, lon, 0.0), np.where(ok, lat, 0.0))
    row, col = grid.rowcol(xs, ys)
    return point_partial(row, col, x, u, ok, b.tiling, b.ref, b.inverse_variance)


def _area_chunk(lon: np.ndarray, lat: np.ndarray, lon_b: np.ndarray | None, lat_b: np.ndarray | None,
                x: np.ndarray, u: np.ndarray, b: Binning) -> Partial:
    if lon_b is None or lat_b is None:
        if b.fov_km is None:  # point fallback for soundings without corners
            return _point_chunk(lon, lat, x, u, b)
        lon_b, lat_b = circle_footprints(lon, lat, b.fov_km)
    px, py, nv, src, dropped = polygons_in_grid(lon_b, lat_b, b.grid)
    if b.inverse_variance:
        wm = 1.0 / (u[src].astype(np.float64) ** 2)
    else:
        wm = np.ones(src.size)
    rows, cols = b.grid.shape
    out = area_accumulate(px, py, nv, x[src].astype(np.float64), wm, u[src].astype(np.float64), b.ref,
                          rows, cols, b.tiling.tile, b.tiling.sub)
    return Partial(*out[:9], ref=b.ref, n_dropped=dropped)


def _chunk(lon: np.ndarray, lat: np.ndarray, x: np.ndarray, u: np.ndarray, valid: np.ndarray, time: np.ndarray,
           lon_b: np.ndarray | None, lat_b: np.ndarray | None, b: Binning) -> Partial:
    """Chunk task: one block of soundings -> a Partial (numpy in, Partial out)."""
    x = np.asarray(x).ravel()
    u = np.asarray(u).ravel()
    ok = np.asarray(valid, bool).ravel() & np.isfinite(x)
    if b.inverse_variance:
        ok &= np.isfinite(u) & (u > 0)
    if b.period_edges is not None:
        t = np.asarray(time).ravel().astype("datetime64[ns]").astype(np.int64)
        period = np.searchsorted(np.asarray(b.period_edges, np.int64), t, side="right") - 1
        ok &= (period >= 0) & (period < len(b.period_edges) - 1)
    sel = np.flatnonzero(ok)
    if sel.size == 0:
        return Partial.empty(b.ref)
    x = x[sel].astype(np.float64)
    u = u[sel].astype(np.float64)
    lon = np.asarray(lon).ravel()[sel].astype(np.float64)
    lat = np.asarray(lat).ravel()[sel].astype(np.float64)
    if lon_b is not None and lat_b is not None:
        k = lon_b.shape[-1]
        lon_b = np.asarray(lon_b).reshape(-1, k)[sel].astype(np.float64)
        lat_b = np.asarray(lat_b).reshape(-1, k)[sel].astype(np.float64)
    if b.period_edges is None:
        layers = [(0, slice(None))]
    else:
        p_sel = period[sel]
        layers = [(int(k), np.flatnonzero(p_sel == k)) for k in np.unique(p_sel)]
    parts = []
    for layer, idx in layers:
        lb = lon_b[idx] if lon_b is not None else None
        la = lat_b[idx] if lat_b is not None else None
        if b.method == "point":
            part = _point_chunk(lon[idx], lat[idx], x[idx], u[idx], b)
        else:
            part = _area_chunk(lon[idx], lat[idx], lb, la, x[idx], u[idx], b)
        parts.append(offset(part, layer * b.tiling.layer_size))
    return merge(*parts)


def _blocks(ds: xr.Dataset, names: Sequence[str], extra: Sequence[str] = ()) -> list[list[Any]]:
    """Delayed blocks of the sounding variables ``names`` (same dims) and ``extra`` (one more dim)."""
    arrays = [da.asarray(ds[n].data) for n in names]
    chunks = arrays[0].chunks
    arrays = [a if a.chunks == chunks else a.rechunk(chunks) for a in arrays]
    for n in extra:
        a = da.asarray(ds[n].data)
        target = (*chunks, (a.shape[-1],))
        arrays.append(a if a.chunks == target else a.rechunk(target))
    blocks = [a.to_delayed().ravel().tolist() for a in arrays]
    return [list(group) for group in zip(*blocks, strict=True)]


def _fov_for(ds: xr.Dataset, fov_diameter_km: float | None, no_corners: str) -> float | None:
    if no_corners == "point":
        return None
    if fov_diameter_km is not None:
        return float(fov_diameter_km)
    instrument = str(ds.attrs.get("instrument", ""))
    if instrument in FOV_DIAMETER_KM:
        return FOV_DIAMETER_KM[instrument]
    raise GridError(
        f"{ds.attrs.get('source_file', 'dataset')}: {instrument or 'this instrument'} soundings have no footprint "
        "corners and no known field of view; pass fov_diameter_km=<km> or no_corners='point'"
    )


def soundings_partial(
    ds: xr.Dataset,
    b: Binning,
    *,
    split_every: int = 8,
    fov_diameter_km: float | None = None,
    no_corners: str = "fov",
) -> Delayed:
    """Lazy :class:`~eo_pipeline.binning.Partial` of one product (chunk tasks + tree merge)."""
    info = species_of(ds)
    extra: list[str] = []
    if b.method == "area":
        if "latitude_bounds" not in ds and ds[info.name].dims == SWATH_DIMS:
            ds = with_derived_corners(ds)
        if "latitude_bounds" in ds and "longitude_bounds" in ds:
            extra = ["longitude_bounds", "latitude_bounds"]
        else:
            b = Binning(b.grid, b.tiling, b.method, b.inverse_variance, b.ref,
                        _fov_for(ds, fov_diameter_km, no_corners), b.period_edges)
    names = ["longitude", "latitude", info.name, f"{info.name}_uncertainty", "valid", "time"]
    task = dask.delayed(_chunk, pure=True)
    parts = []
    for blk in _blocks(ds, names, extra):
        lon_b, lat_b = (blk[6], blk[7]) if extra else (None, None)
        parts.append(task(*blk[:6], lon_b, lat_b, b))
    return tree_merge(parts, split_every)


def tree_merge(parts: Sequence[Delayed], split_every: int = 8) -> Delayed:
    """Combine partials in a tree of fan-in ``split_every``."""
    if split_every < 2:
        raise ValueError("split_every must be >= 2")
    task = dask.delayed(merge, pure=True)
    level = list(parts)
    if not level:
        return dask.delayed(Partial.empty, pure=True)(0.0)
    while len(level) > 1:
        level = [task(*level[i:i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]


def _stat_array(partial: Delayed, tiling: Tiling, layer: int, chunk: int, stat: str, min_weight: float) -> da.Array:
    """One statistic as a dask array of ``chunk`` blocks, one finalize task per block."""
    task = dask.delayed(finalize_block, pure=True)
    rows, cols = tiling.shape
    out = []
    for r0 in range(0, rows, chunk):
        row = []
        for c0 in range(0, cols, chunk):
            r1, c1 = min(r0 + chunk, rows), min(c0 + chunk, cols)
            row.append(da.from_delayed(task(partial, tiling, layer, r0, r1, c0, c1, stat, min_weight),
                                       shape=(r1 - r0, c1 - c0), dtype=np.float32))
        out.append(row)
    return da.block(out)


def _dropped(p: Partial) -> np.ndarray:
    return np.int32(min(p.n_dropped, np.iinfo(np.int32).max))


#: CF ``cell_methods`` of each statistic over the soundings in a cell (and period).
CELL_METHODS = {"mean": "mean", "std": "standard_deviation", "count": "sum", "weight": "sum", "min": "minimum",
                "max": "maximum", "uncertainty": "mean"}


def cf_statistic_attrs(info: SpeciesInfo, stat: str, *, with_time: bool) -> dict[str, str]:
    """CF ``standard_name``, ``cell_methods`` (and ``ancillary_variables``) of a Level-3 statistic.

    The mean, spread, minimum and maximum are the species' quantity with the cell method
    saying which statistic over the cell's area (and, with a time axis, the period);
    the count is ``number_of_observations``; the uncertainty is the ``standard_error`` of
    the mean. Standard names come from the CF standard-name table; a species without one
    gets none.
    """
    attrs = {"cell_methods": f"area: {'time: ' if with_time else ''}{CELL_METHODS[stat]}"}
    base = info.standard_name
    if stat == "count":
        attrs["standard_name"] = "number_of_observations"
    elif stat == "uncertainty" and base:
        attrs["standard_name"] = f"{base} standard_error"
    elif stat in ("mean", "std", "min", "max") and base:
        attrs["standard_name"] = base
    if stat == "mean":
        attrs["ancillary_variables"] = f"{info.name}_uncertainty {info.name}_count"
    return attrs


def partial_to_dataset(
    partial: Delayed,
    grid: GridSpec,
    tiling: Tiling,
    info: SpeciesInfo,
    *,
    attrs: dict[str, Any] | None = None,
    min_weight: float = 0.0,
    chunk: int = 2048,
    times: Sequence[np.datetime64] | None = None,
    time_bounds: np.ndarray | None = None,
) -> xr.Dataset:
    """Finalize step: a lazy dataset of the statistics in ``chunk`` x ``chunk`` blocks.

    ``chunk`` must be a multiple of the tiling's tile size. With ``times`` (one per
    period layer) the variables get a leading ``time`` dimension.
    """
    if chunk % tiling.tile:
        raise ReaderOptionError(f"chunk ({chunk}) must be a multiple of the tile size ({tiling.tile})")

    def stat_array(stat: str) -> da.Array:
        if times is None:
            return _stat_array(partial, tiling, 0, chunk, stat, min_weight)
        return da.stack([_stat_array(partial, tiling, k, chunk, stat, min_weight) for k in range(len(times))])

    dims: tuple[str, ...] = ("y", "x") if times is None else ("time", "y", "x")
    coords: dict[str, Any] = dict(grid.coords())
    coords["crs"] = ((), np.int32(0), grid.cf_grid_mapping())
    if times is not None:
        coords["time"] = ("time", np.asarray(times, "datetime64[ns]"),
                          {"standard_name": "time", "long_name": "start of the composite period", "bounds": "time_bounds"})
    units = info.units
    meta = {
        "mean": ("f4", units, f"mean {info.long_name} (weighted)"),
        "std": ("f4", units, f"weighted standard deviation of the {info.name} soundings in the cell (population)"),
        "count": ("i4", "1", "number of soundings contributing to the cell"),
        "weight": ("f4", "1", "sum of weights (area method: sum over soundings of overlap area / cell area)"),
        "min": ("f4", units, f"minimum {info.name} of the contributing soundings"),
        "max": ("f4", units, f"maximum {info.name} of the contributing soundings"),
        "uncertainty": ("f4", units, "propagated 1-sigma uncertainty of the weighted mean (independent errors)"),
    }
    data_vars: dict[str, Any] = {}
    for stat in STATISTICS:
        dtype, u, long_name = meta[stat]
        arr = stat_array(stat)
        arr = arr.astype(np.int32) if dtype == "i4" else arr
        data_vars[f"{info.name}_{stat}"] = xr.DataArray(
            arr, dims=dims, attrs={"units": u, "long_name": long_name, "grid_mapping": "crs",
                                   **cf_statistic_attrs(info, stat, with_time=times is not None)})
    data_vars["n_footprints_dropped"] = xr.DataArray(
        da.from_delayed(dask.delayed(_dropped, pure=True)(partial), shape=(), dtype=np.int32),
        attrs={"long_name": "footprints that could not be projected onto the grid and were dropped", "units": "1"})
    if times is not None and time_bounds is not None:
        data_vars["time_bounds"] = xr.DataArray(np.asarray(time_bounds, "datetime64[ns]"), dims=("time", "nv"))
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(attrs or {})
    return ds


def auto_chunk(grid: GridSpec) -> int:
    """Output chunk size: the whole grid (rounded up to tiles) when small, else 2048 cells."""
    rows, cols = grid.shape
    if rows * cols <= 2**25:
        return -(-max(rows, cols) // TILE) * TILE
    return 2048


def as_grid(grid: GridSpec | str) -> GridSpec:
    """A GridSpec, looking names up in the named grids."""
    if isinstance(grid, GridSpec):
        return grid
    if isinstance(grid, str):
        return named_grid(grid)
    raise GridError(f"grid must be a GridSpec or a grid name, got {type(grid).__name__}")


def provenance(products: Sequence[xr.Dataset]) -> dict[str, Any]:
    """Time coverage, input files, processor versions and QA rules of the inputs (attributes)."""
    starts = sorted(p.attrs.get("time_coverage_start", "") for p in products if p.attrs.get("time_coverage_start"))
    ends = sorted(p.attrs.get("time_coverage_end", "") for p in products if p.attrs.get("time_coverage_end"))
    files = [p.attrs.get("source_file", "") for p in products]
    procs = sorted({f"{p.attrs.get('product', '')} {p.attrs.get('processor_version', '')}".strip() for p in products})
    sources = sorted({" ".join(str(p.attrs.get(k, "")) for k in ("platform", "instrument", "product")).strip()
                      + (f" (processor {p.attrs['processor_version']})" if p.attrs.get("processor_version") else "")
                      for p in products})
    return {
        "time_coverage_start": starts[0] if starts else "",
        "time_coverage_end": ends[-1] if ends else "",
        "input_files": ", ".join(files),
        "n_input_files": len(files),
        "processor_versions": "; ".join(procs),
        "source": "; ".join(s for s in sources if s),
        "qa_rules": "; ".join(sorted({str(p.attrs.get("qa_rule", "")) for p in products})),
    }


def check_inputs(products: xr.Dataset | Sequence[xr.Dataset], method: str, weighting: str | None) -> tuple[list[xr.Dataset], SpeciesInfo]:
    """Validate the common arguments of the gridding entry points."""
    if isinstance(products, xr.Dataset):
        products = [products]
    products = list(products)
    if not products:
        raise ReaderOptionError("gridding needs at least one product")
    if method not in METHODS:
        raise ReaderOptionError(f"method must be one of {METHODS}, got {method!r}")
    if weighting not in WEIGHTINGS:
        raise ReaderOptionError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    species = {species_of(p).name for p in products}
    if len(species) != 1:
        raise ReaderOptionError(f"grid one species at a time; got {sorted(species)}")
    return products, SPECIES[species.pop()]


def grid_soundings(
    products: xr.Dataset | Sequence[xr.Dataset],
    grid: GridSpec | str,
    *,
    method: str = "area",
    weighting: str | None = None,
    chunk: int | None = None,
    split_every: int = 8,
    min_weight: float = 0.0,
    fov_diameter_km: float | None = None,
    no_corners: str = "fov",
) -> xr.Dataset:
    """Grid soundings of one species onto ``grid`` (lazy).

    Parameters
    ----------
    products : xarray.Dataset or sequence of them
        Canonical soundings from :func:`eo_pipeline.open_product`, all of one species.
    grid : GridSpec or str
        Target grid, or the name of one in ``configs/grids.yaml``.
    method : {"area", "point"}
        ``point``: each valid sounding falls into the one cell holding its centre
        (weight 1). ``area``: each sounding's footprint polygon is intersected exactly
        with the cells in the grid's own CRS, weight = overlap area / cell area (as
        HARP's ``bin_spatial`` defines it; an equal-area grid gets equal-area weights).
        Swaths without corners get corners derived from their pixel centres.
    weighting : {None, "inverse_variance"}
        Multiply each weight by 1/sigma² of the sounding's uncertainty (soundings
        without a positive uncertainty are then left out).
    chunk : int, optional
        Dask chunk size of the result (cells; a multiple of 512). Default: one chunk for
        grids of up to 2**25 cells, else 2048. Blocks without data are never allocated.
    split_every : int
        Fan-in of the tree reduction.
    min_weight : float
        Cells whose summed weight is at most this are left empty.
    fov_diameter_km : float, optional
        Diameter of the circular field of view used for soundings without corners
        (default: the instrument's, 10.5 km for GOSAT TANSO-FTS).
    no_corners : {"fov", "point"}
        For sounding products without corners in ``area`` mode: model the field of view
        as a 16-gon of the circle's area (``fov``), or fall back to point binning.

    Returns
    -------
    xarray.Dataset
        ``<species>_mean``, ``_std``, ``_count``, ``_weight``, ``_min``, ``_max`` and
        ``_uncertainty`` on dims ``(y, x)`` (cell centres), a CF ``crs`` grid-mapping
        coordinate, ``n_footprints_dropped``, and provenance attributes.
    """
    products, info = check_inputs(products, method, weighting)
    if no_corners not in ("fov", "point"):
        raise ReaderOptionError(f"no_corners must be 'fov' or 'point', got {no_corners!r}")
    g = as_grid(grid)
    tiling = Tiling(g.shape, TILE)
    b = Binning(g, tiling, method, weighting == "inverse_variance", info.reference_value)
    parts = [soundings_partial(p, b, split_every=split_every, fov_diameter_km=fov_diameter_km, no_corners=no_corners)
             for p in products]
    combined = tree_merge(parts, split_every)
    attrs = base_attrs(info, g, method, weighting)
    attrs.update(provenance(products))
    return partial_to_dataset(combined, g, tiling, info, attrs=attrs, min_weight=min_weight,
                              chunk=chunk or auto_chunk(g))


def base_attrs(info: SpeciesInfo, g: GridSpec, method: str, weighting: str | None) -> dict[str, Any]:
    """Attributes every Level-3 dataset carries."""
    return {
        "title": f"{info.species} Level-3 map ({method} binning)",
        "species": info.species,
        "variable": info.name,
        "units": info.units,
        "method": method,
        "weighting": weighting or "none",
        "grid": g.name or "",
        "grid_crs": g.crs_string,
        "software": f"eo_pipeline {__version__}",
        "Conventions": "CF-1.8",
    }
