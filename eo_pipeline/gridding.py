# SPDX-License-Identifier: Apache-2.0
"""The gridding stage: canonical soundings -> a lazy Level-3 dataset on a :class:`GridSpec`.

This module is the thin layer that lifts the numpy kernels of
:mod:`eo_pipeline.binning` onto dask and xarray: one task per block of soundings
(chunk), a tree of merges (combine), and one task per output tile (finalize).
Nothing is computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed

from ._version import __version__
from .binning import STATISTICS, Partial, Tiling, finalize_tile, merge, point_partial
from .errors import GridError, ReaderOptionError
from .grid import GridSpec, named_grid
from .schema import SPECIES, SpeciesInfo, species_of

__all__ = ["grid_soundings", "soundings_partial", "tree_merge", "partial_to_dataset", "METHODS", "WEIGHTINGS"]

METHODS = ("point", "area")
WEIGHTINGS = (None, "inverse_variance")


def _wrap_lon(lon: np.ndarray, west: float) -> np.ndarray:
    """Shift longitudes by multiples of 360 into [west, west + 360)."""
    return west + np.mod(lon - west, 360.0)


def _point_block(
    lon: np.ndarray, lat: np.ndarray, x: np.ndarray, u: np.ndarray, valid: np.ndarray,
    grid: GridSpec, tiling: Tiling, ref: float, inverse_variance: bool,
) -> Partial:
    """Chunk task of the point method (numpy in, Partial out)."""
    lon = lon.ravel().astype(np.float64)
    lat = lat.ravel().astype(np.float64)
    ok = valid.ravel() & np.isfinite(lon) & np.isfinite(lat)
    if grid.is_geographic:
        xs, ys = _wrap_lon(lon, grid.bounds[0]), lat
    else:
        xs, ys = grid.lonlat_to_xy(np.where(ok, lon, 0.0), np.where(ok, lat, 0.0))
    row, col = grid.rowcol(xs, ys)
    return point_partial(row, col, x.ravel(), u.ravel(), ok, tiling, ref, inverse_variance)


def _aligned_blocks(ds: xr.Dataset, names: Sequence[str]) -> list[list[Delayed]]:
    """Delayed blocks of several same-shaped variables, chunked alike."""
    arrays = [da.asarray(ds[n].data) for n in names]
    chunks = arrays[0].chunks
    arrays = [a if a.chunks == chunks else a.rechunk(chunks) for a in arrays]
    blocks = [a.to_delayed().ravel().tolist() for a in arrays]
    return [list(group) for group in zip(*blocks, strict=True)]


def soundings_partial(
    ds: xr.Dataset,
    grid: GridSpec,
    *,
    method: str = "area",
    weighting: str | None = None,
    tiling: Tiling | None = None,
    split_every: int = 8,
    **method_options: Any,
) -> Delayed:
    """Lazy :class:`~eo_pipeline.binning.Partial` of one product on ``grid``.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical soundings (:func:`eo_pipeline.open_product`).
    grid : GridSpec
        Target grid.
    method : {"point", "area"}
        Binning method (see :func:`grid_soundings`).
    weighting : {None, "inverse_variance"}
        Extra weighting of each sounding.
    tiling : Tiling, optional
        Flat indexing of the output (default: 512-cell tiles).
    split_every : int
        Fan-in of the tree reduction.
    """
    info = species_of(ds)
    tiling = tiling or Tiling(grid.shape)
    inverse_variance = weighting == "inverse_variance"
    names = ["longitude", "latitude", info.name, f"{info.name}_uncertainty", "valid"]
    if method == "point":
        task = dask.delayed(_point_block, pure=True)
        parts = [task(*blk, grid, tiling, info.reference_value, inverse_variance)
                 for blk in _aligned_blocks(ds, names)]
    elif method == "area":
        from .footprints import area_block_task

        parts = area_block_task(ds, grid, tiling, info, inverse_variance, _aligned_blocks, **method_options)
    else:
        raise ReaderOptionError(f"method must be one of {METHODS}, got {method!r}")
    return tree_merge(parts, split_every)


def tree_merge(parts: Sequence[Delayed], split_every: int = 8) -> Delayed:
    """Combine partials pairwise-ish in a tree of fan-in ``split_every``."""
    if split_every < 2:
        raise ValueError("split_every must be >= 2")
    task = dask.delayed(merge, pure=True)
    level = list(parts)
    if not level:
        return dask.delayed(Partial.empty)(0.0)
    if len(level) == 1:
        return level[0]
    while len(level) > 1:
        level = [task(*level[i:i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]


def partial_to_dataset(
    partial: Delayed,
    grid: GridSpec,
    tiling: Tiling,
    info: SpeciesInfo,
    *,
    attrs: dict[str, Any] | None = None,
    min_weight: float = 0.0,
) -> xr.Dataset:
    """Finalize step: a lazy dataset of the statistics, chunked in output tiles."""
    task = dask.delayed(finalize_tile, pure=True)
    rows = []
    for tr in range(tiling.tile_rows):
        row = []
        for tc in range(tiling.tile_cols):
            tid = tr * tiling.tile_cols + tc
            r0, r1, c0, c1 = tiling.tile_bounds(tid)
            row.append(da.from_delayed(task(partial, tiling, tid, min_weight),
                                       shape=(len(STATISTICS), r1 - r0, c1 - c0), dtype=np.float64))
        rows.append(row)
    stack = da.block(rows)
    coords = grid.coords()
    coords["crs"] = ((), np.int32(0), grid.cf_grid_mapping())
    dims = ("y", "x")
    units = info.units
    meta = {
        "mean": ("f4", units, f"mean {info.long_name}"),
        "std": ("f4", units, f"standard deviation of the {info.name} soundings in the cell (weighted, population)"),
        "count": ("i4", "1", "number of soundings contributing to the cell"),
        "weight": ("f4", "1", "sum of weights (area method: sum of overlap area / cell area)"),
        "min": ("f4", units, f"minimum {info.name} of the contributing soundings"),
        "max": ("f4", units, f"maximum {info.name} of the contributing soundings"),
        "uncertainty": ("f4", units, "propagated 1-sigma uncertainty of the mean (independent errors)"),
    }
    data_vars = {}
    for k, stat in enumerate(STATISTICS):
        dtype, u, long_name = meta[stat]
        arr = stack[k]
        arr = arr.astype(dtype) if dtype == "f4" else da.where(da.isfinite(arr), arr, 0).astype(dtype)
        data_vars[f"{info.name}_{stat}"] = xr.DataArray(
            arr, dims=dims, attrs={"units": u, "long_name": long_name, "grid_mapping": "crs"})
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(attrs or {})
    return ds


def _as_grid(grid: GridSpec | str) -> GridSpec:
    if isinstance(grid, GridSpec):
        return grid
    if isinstance(grid, str):
        return named_grid(grid)
    raise GridError(f"grid must be a GridSpec or a grid name, got {type(grid).__name__}")


def _provenance(products: Sequence[xr.Dataset]) -> dict[str, Any]:
    starts = sorted(p.attrs.get("time_coverage_start", "") for p in products if p.attrs.get("time_coverage_start"))
    ends = sorted(p.attrs.get("time_coverage_end", "") for p in products if p.attrs.get("time_coverage_end"))
    files = [p.attrs.get("source_file", "") for p in products]
    procs = sorted({f"{p.attrs.get('product', '')} {p.attrs.get('processor_version', '')}".strip() for p in products})
    return {
        "time_coverage_start": starts[0] if starts else "",
        "time_coverage_end": ends[-1] if ends else "",
        "input_files": ", ".join(files),
        "n_input_files": len(files),
        "processor_versions": "; ".join(procs),
        "qa_rules": "; ".join(sorted({str(p.attrs.get("qa_rule", "")) for p in products})),
    }


def grid_soundings(
    products: xr.Dataset | Sequence[xr.Dataset],
    grid: GridSpec | str,
    *,
    method: str = "area",
    weighting: str | None = None,
    tile: int = 512,
    split_every: int = 8,
    min_weight: float = 0.0,
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
        HARP's ``bin_spatial`` defines it).
    weighting : {None, "inverse_variance"}
        Multiply each weight by 1/sigma² of the sounding's uncertainty.
    tile : int
        Output tile size (cells); the result is chunked in these tiles.
    split_every : int
        Fan-in of the tree reduction.
    min_weight : float
        Cells whose summed weight is at most this are left empty.

    Returns
    -------
    xarray.Dataset
        ``<species>_mean``, ``_std``, ``_count``, ``_weight``, ``_min``, ``_max`` and
        ``_uncertainty`` on dims ``(y, x)`` (cell centres), with a CF ``crs``
        grid-mapping coordinate and provenance attributes.
    """
    if isinstance(products, xr.Dataset):
        products = [products]
    products = list(products)
    if not products:
        raise ReaderOptionError("grid_soundings needs at least one product")
    if method not in METHODS:
        raise ReaderOptionError(f"method must be one of {METHODS}, got {method!r}")
    if weighting not in WEIGHTINGS:
        raise ReaderOptionError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    species = {species_of(p).name for p in products}
    if len(species) != 1:
        raise ReaderOptionError(f"grid one species at a time; got {sorted(species)}")
    info = SPECIES[species.pop()]
    g = _as_grid(grid)
    tiling = Tiling(g.shape, tile)
    parts = [soundings_partial(p, g, method=method, weighting=weighting, tiling=tiling, split_every=split_every)
             for p in products]
    combined = tree_merge(parts, split_every)
    attrs = {
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
    attrs.update(_provenance(products))
    return partial_to_dataset(combined, g, tiling, info, attrs=attrs, min_weight=min_weight)
