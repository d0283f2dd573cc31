# SPDX-License-Identifier: Apache-2.0
"""Many files -> daily or monthly Level-3 composites with a ``time`` axis (lazy).

Every sounding goes to the period that holds its *own* time (an orbit file that
crosses midnight contributes to both days). Each file's contribution is a separate
set of chunk tasks, so files are gridded in parallel. A file's time coverage
(metadata) says which periods it can reach; each (period, output block) has its own
tree over the chunks of those files only, restricted to its cells, and its own
finalize task: a day's maps are computed, written and freed without waiting for, or
holding, the other days.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .binning import Tiling
from .errors import ReaderOptionError
from .grid import GridSpec
from .gridding import (
    METHOD_TITLES,
    Binning,
    as_grid,
    auto_chunk,
    base_attrs,
    blocks_to_dataset,
    check_chunk,
    check_inputs,
    chunk_partials,
    dropped_total,
    method_statistics,
    provenance,
    route_to_blocks,
    srf_setup,
)
from .readers import open_product

__all__ = ["composite", "period_edges", "layers_of", "PERIODS"]

PERIODS = {"day": "D", "month": "M"}


def _parse_time(text: str) -> np.datetime64 | None:
    text = (text or "").strip().rstrip("Z")
    if not text:
        return None
    try:
        return np.datetime64(text, "ns")
    except ValueError:
        return None


def period_edges(products: Sequence[xr.Dataset], period: str) -> np.ndarray:
    """Edges (datetime64[ns]) of the days or months spanned by the products' time coverage."""
    if period not in PERIODS:
        raise ReaderOptionError(f"period must be one of {sorted(PERIODS)}, got {period!r}")
    starts = [t for p in products if (t := _parse_time(p.attrs.get("time_coverage_start", ""))) is not None]
    ends = [t for p in products if (t := _parse_time(p.attrs.get("time_coverage_end", ""))) is not None]
    if not starts or not ends:
        raise ReaderOptionError(
            "cannot place the products in time: their time_coverage_start/end attributes are missing"
        )
    unit = PERIODS[period]
    first = min(starts).astype(f"datetime64[{unit}]")
    last = max(ends).astype(f"datetime64[{unit}]")
    return np.arange(first, last + 2).astype("datetime64[ns]")


def _expand(products: Any, open_options: dict[str, Any]) -> list[xr.Dataset]:
    if isinstance(products, xr.Dataset):
        return [products]
    if isinstance(products, str | os.PathLike):
        products = [products]
    out: list[xr.Dataset] = []
    for p in products:
        if isinstance(p, xr.Dataset):
            out.append(p)
            continue
        text = str(p)
        paths = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not paths:
            raise ReaderOptionError(f"{text}: the pattern matched no file")
        out += [open_product(Path(q), **open_options) for q in paths]
    return out


def composite(
    products: Any,
    grid: GridSpec | str,
    *,
    period: str = "day",
    method: str = "area",
    weighting: str | None = None,
    chunk: int | None = None,
    split_every: int = 8,
    min_weight: float = 0.0,
    fov_diameter_km: float | None = None,
    no_corners: str = "fov",
    open_options: dict[str, Any] | None = None,
    statistics: Sequence[str] | str | None = None,
    srf_shape: Any = None,
    srf_window: float = 1.5,
) -> xr.Dataset:
    """Daily or monthly Level-3 composites of one species, with a ``time`` axis (lazy).

    Parameters
    ----------
    products : dataset, path, glob pattern, or a sequence of them
        Canonical soundings, or files opened with :func:`eo_pipeline.open_product`
        (``open_options`` are passed to it, e.g. ``{"qa_threshold": 0.5}``).
    grid : GridSpec or str
        Target grid or a named grid.
    period : {"day", "month"}
        Composite period (UTC). Every period from the first to the last sounding is
        present; periods without data are empty (NaN mean, zero count).
    method, weighting, chunk, split_every, min_weight, fov_diameter_km, no_corners, statistics, srf_shape, srf_window
        As for :func:`eo_pipeline.grid_soundings` (``method="srf"``: physics-based
        oversampling, which adds ``num_samples``).

    Returns
    -------
    xarray.Dataset
        The statistics of :func:`grid_soundings` with dims ``(time, y, x)``; ``time`` is
        the start of each period and ``time_bounds`` its [start, end).
    """
    datasets = _expand(products, open_options or {})
    datasets, info = check_inputs(datasets, method, weighting, no_corners)
    stats = method_statistics(statistics, method)
    g = as_grid(grid)
    srf_attrs, srf_fields = srf_setup(datasets, g, method, weighting, info, srf_shape, srf_window)
    edges = period_edges(datasets, period)
    n_periods = len(edges) - 1
    tiling = Tiling(g.shape, check_chunk(chunk) or auto_chunk(g, periods=n_periods), periods=n_periods)
    b = Binning(g, tiling, method, weighting == "inverse_variance", info.reference_value,
                period_edges=tuple(int(e) for e in edges.astype(np.int64)), statistics=stats, **srf_fields)
    by_layer: dict[int, list[Any]] = {k: [] for k in range(n_periods)}
    for d in datasets:
        layers = layers_of(d, edges)
        chunks = chunk_partials(d, b if layers is None else replace(b, layers=layers),
                                fov_diameter_km=fov_diameter_km, no_corners=no_corners)
        for k in range(n_periods) if layers is None else layers:
            by_layer[k] += chunks
    blocks = route_to_blocks(by_layer, tiling, split_every)
    attrs = base_attrs(info, g, method, weighting)
    attrs.update(srf_attrs)
    attrs.update(provenance(datasets))
    attrs["composite_period"] = period
    attrs["title"] = (f"{info.species} {'daily' if period == 'day' else 'monthly'} Level-3 composites "
                      f"({METHOD_TITLES.get(method, method)})")
    bounds = np.stack([edges[:-1], edges[1:]], axis=1)
    totals = [dropped_total(by_layer[k], split_every, layer=k) for k in range(n_periods)]
    return blocks_to_dataset(blocks, totals, g, tiling, info, statistics=stats,
                             attrs=attrs, min_weight=min_weight, times=edges[:-1], time_bounds=bounds)


#: Margin around a file's time coverage within which its soundings are still placed (clock rounding).
COVERAGE_MARGIN = np.timedelta64(1, "h")


def layers_of(ds: xr.Dataset, edges: np.ndarray) -> tuple[int, ...] | None:
    """Period layers a product can reach, from its time-coverage attributes (None: unknown, any).

    This is metadata only (no data read): it routes each file's partial sums to the
    periods it overlaps, so a period's maps depend on its own files only. Soundings
    outside the coverage (plus :data:`COVERAGE_MARGIN`) are dropped and counted.
    """
    start = _parse_time(ds.attrs.get("time_coverage_start", ""))
    end = _parse_time(ds.attrs.get("time_coverage_end", ""))
    if start is None or end is None or end < start:
        return None
    lo = int(np.searchsorted(edges, start - COVERAGE_MARGIN, side="right")) - 1
    hi = int(np.searchsorted(edges, end + COVERAGE_MARGIN, side="right")) - 1
    return tuple(range(max(lo, 0), min(hi, len(edges) - 2) + 1))
