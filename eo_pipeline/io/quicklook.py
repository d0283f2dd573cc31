# SPDX-License-Identifier: Apache-2.0
"""PNG quicklooks of gridded maps (matplotlib, colour bar with units, title with time span)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..errors import OutputError

__all__ = ["quicklook"]


def _nanmean_block(block: np.ndarray, axis: Any = None, **kw: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(block, axis=axis)


def _coarse(arr: da.Array, max_pixels: int) -> da.Array:
    factor = int(np.ceil(max(arr.shape) / max_pixels))
    if factor <= 1:
        return arr
    return da.coarsen(_nanmean_block, arr, {0: factor, 1: factor}, trim_excess=True)


def _draw(
    values: np.ndarray, extent: tuple[float, float, float, float], path: str, title: str, label: str,
    cmap: str, vmin: float | None, vmax: float | None, xlabel: str, ylabel: str,
    outlines: Sequence[np.ndarray] = (), markers: Sequence[tuple[float, float, str]] = (), symmetric: bool = False,
) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    finite = values[np.isfinite(values)]
    if symmetric and finite.size and vmin is None and vmax is None:
        vmax = float(np.percentile(np.abs(finite), 99))
        vmin = -vmax
    if vmin is None and finite.size:
        vmin = float(np.percentile(finite, 2))
    if vmax is None and finite.size:
        vmax = float(np.percentile(finite, 98))
    w, s, e, n = extent
    aspect = (e - w) / (n - s) if n > s else 1.0
    fig_w = 8.0
    fig, ax = plt.subplots(figsize=(fig_w, max(3.0, min(10.0, fig_w / max(aspect, 0.1) * 0.85))), dpi=110)
    im = ax.imshow(values, extent=(w, e, s, n), origin="upper", cmap=cmap, vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    for item in outlines:
        ring, kind = item if isinstance(item, tuple) else (item, "region")
        if kind == "hotspot":
            ax.plot(ring[:, 0], ring[:, 1], color="magenta", linewidth=2.0)
        else:
            ax.plot(ring[:, 0], ring[:, 1], color="0.25", linewidth=0.7)
    for x, y, text in markers:
        ax.plot([x], [y], marker="+", color="black", markersize=9)
        if text:
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlim(w, e)
    ax.set_ylim(s, n)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label(label)
    if not finite.size:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def quicklook(
    ds: xr.Dataset,
    variable: str,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    max_pixels: int = 1600,
    outlines: Any = (),
    markers: Sequence[tuple[float, float, str]] = (),
    symmetric: bool = False,
    compute: bool = True,
) -> str | Any:
    """Draw ``ds[variable]`` (y, x) to a PNG with a colour bar in its units.

    Parameters
    ----------
    ds : xarray.Dataset
        Gridded dataset (x/y cell centres, eo_pipeline attributes).
    variable : str
        Variable to draw.
    path : path-like
        Target ``.png``.
    title : str, optional
        Default: species, statistic and the time span from the attributes.
    cmap, vmin, vmax : optional
        Matplotlib colour map and limits (default: 2nd-98th percentiles).
    max_pixels : int
        Larger grids are averaged down (NaN-aware, lazily) to at most this many pixels
        per side before drawing.
    outlines : sequence, or a Delayed of one
        Polygon rings (grid CRS coordinates, (N, 2) arrays), or ``(ring, kind)`` pairs with
        kind ``"region"`` (thin grey) or ``"hotspot"`` (thick magenta).
    markers : sequence of (x, y, label)
        Points marked with a cross.
    symmetric : bool
        Colour limits symmetric about zero (for anomalies).
    compute : bool
        Draw now (default) or return a Delayed.
    """
    path = str(path)
    if not path.lower().endswith(".png"):
        raise OutputError(f"{path}: a quicklook must end in .png")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    arr = ds[variable]
    units = arr.attrs.get("units", "")
    x, y = ds["x"].values, ds["y"].values
    dx = abs(x[1] - x[0]) if x.size > 1 else 1.0
    dy = abs(y[1] - y[0]) if y.size > 1 else 1.0
    extent = (float(x.min() - dx / 2), float(y.min() - dy / 2), float(x.max() + dx / 2), float(y.max() + dy / 2))
    if title is None:
        span = f"{ds.attrs.get('time_coverage_start', '?')} to {ds.attrs.get('time_coverage_end', '?')}"
        title = f"{ds.attrs.get('species', '')} {variable} ({ds.attrs.get('method', '')}), {span}"
    geographic = ds["x"].attrs.get("units", "") == "degrees_east"
    xlabel, ylabel = ("longitude [degrees east]", "latitude [degrees north]") if geographic else (
        f"x [{ds['x'].attrs.get('units', '')}]", f"y [{ds['y'].attrs.get('units', '')}]")
    data = _coarse(da.asarray(arr.data).astype(np.float64), max_pixels)
    outlines = outlines if hasattr(outlines, "dask") else list(outlines)
    task = dask.delayed(_draw, pure=False)(
        data, extent, path, title, f"{variable} [{units}]", cmap, vmin, vmax, xlabel, ylabel,
        outlines, list(markers), symmetric)
    return task.compute() if compute else task
