# SPDX-License-Identifier: Apache-2.0
"""PNG quicklooks of gridded maps (matplotlib, colour bar with units, title with time span).

The map is placed by the grid its coordinates describe (:meth:`GridSpec.from_dataset`),
north-up, so cut or flipped maps are drawn where they lie. Drawing uses matplotlib's
object API (:class:`matplotlib.figure.Figure` with its own Agg canvas), never pyplot or
``matplotlib.use``: a notebook's backend is left alone and quicklooks can be drawn in
worker threads. The PNG is written under a temporary name and renamed into place.
"""

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
from ..grid import GridSpec, north_up
from ._atomic import compute_writer, temp_path, write_failed

__all__ = ["quicklook"]


def _nanmean_block(block: np.ndarray, axis: Any = None, **kw: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(block, axis=axis)


def _coarse(arr: da.Array, factor: int) -> da.Array:
    """NaN-aware means of ``factor`` x ``factor`` cells (lazy; the excess rows/columns are trimmed)."""
    if factor <= 1:
        return arr
    return da.coarsen(_nanmean_block, arr, {0: factor, 1: factor}, trim_excess=True)


def _limits(finite: np.ndarray, vmin: float | None, vmax: float | None, symmetric: bool) -> tuple[Any, Any]:
    """Colour limits: given ones, else the 2nd-98th percentiles (symmetric: the 99th of |value|)."""
    if symmetric and finite.size and vmin is None and vmax is None:
        vmax = float(np.percentile(np.abs(finite), 99))
        vmin = -vmax
    if vmin is None and finite.size:
        vmin = float(np.percentile(finite, 2))
    if vmax is None and finite.size:
        vmax = float(np.percentile(finite, 98))
    return vmin, vmax


def _figure(
    values: np.ndarray, extent: tuple[float, float, float, float], title: str, label: str,
    cmap: str, vmin: float | None, vmax: float | None, xlabel: str, ylabel: str,
    outlines: Sequence[Any], markers: Sequence[tuple[float, float, str]], symmetric: bool,
) -> Any:
    """Kernel: the quicklook as a :class:`matplotlib.figure.Figure` with its own Agg canvas.

    Matplotlib's object API only: no pyplot, no backend switch, no global figure
    registry, so drawing is safe in worker threads and leaves a notebook's backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    finite = values[np.isfinite(values)]
    vmin, vmax = _limits(finite, vmin, vmax, symmetric)
    w, s, e, n = extent
    aspect = (e - w) / (n - s) if n > s else 1.0
    fig_w = 8.0
    fig = Figure(figsize=(fig_w, max(3.0, min(10.0, fig_w / max(aspect, 0.1) * 0.85))), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
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
    return fig


def _draw(
    values: np.ndarray, extent: tuple[float, float, float, float], path: str, title: str, label: str,
    cmap: str, vmin: float | None, vmax: float | None, xlabel: str, ylabel: str,
    outlines: Sequence[Any] = (), markers: Sequence[tuple[float, float, str]] = (), symmetric: bool = False,
) -> str:
    """Task: draw the PNG under a temporary name and move it into place."""
    target = Path(path)
    tmp = temp_path(target, "draw", suffix=".png")
    try:
        fig = _figure(values, extent, title, label, cmap, vmin, vmax, xlabel, ylabel, outlines, markers, symmetric)
        fig.savefig(tmp, format="png")
        os.replace(tmp, target)
    except Exception as exc:  # noqa: BLE001 - one clear message for any failure
        raise write_failed(target, "quicklook", exc) from exc
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
        Gridded map with 1-D ``x``/``y`` cell-centre coordinates and a grid mapping (see
        :meth:`GridSpec.from_dataset`), and eo_pipeline's attributes for the title.
    variable : str
        Variable to draw, with dims (y, x).
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

    Returns
    -------
    str or dask.delayed.Delayed
        The path written, or the Delayed that writes it.

    Raises
    ------
    OutputError
        The PNG cannot be written (one line naming it, the cause and the fix; no
        temporary left behind).
    """
    path = str(path)
    if not path.lower().endswith(".png"):
        raise OutputError(f"{path}: a quicklook must end in .png")
    if variable not in ds.data_vars or set(ds[variable].dims) != {"y", "x"}:
        dims = tuple(ds[variable].dims) if variable in ds.variables else "missing"
        raise OutputError(f"{path}: variable {variable!r} is not a (y, x) map (dims {dims}); select one time "
                          "step first (ds.isel(time=k))")
    grid = GridSpec.from_dataset(ds)
    ds = north_up(ds)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(path, "quicklook", exc) from exc
    arr = ds[variable].transpose("y", "x")
    units = arr.attrs.get("units", "")
    factor = max(1, int(np.ceil(max(grid.shape) / max_pixels)))
    rows, cols = grid.shape[0] // factor * factor, grid.shape[1] // factor * factor  # what coarsening keeps
    (res_x, res_y), (west, _, _, north) = grid.resolution, grid.bounds
    extent = (west, north - res_y * rows, west + res_x * cols, north)
    if title is None:
        span = f"{ds.attrs.get('time_coverage_start', '?')} to {ds.attrs.get('time_coverage_end', '?')}"
        title = f"{ds.attrs.get('species', '')} {variable} ({ds.attrs.get('method', '')}), {span}"
    xlabel, ylabel = ("longitude [degrees east]", "latitude [degrees north]") if grid.is_geographic else (
        f"x [{ds['x'].attrs.get('units', grid.units)}]", f"y [{ds['y'].attrs.get('units', grid.units)}]")
    data = _coarse(da.asarray(arr.data).astype(np.float64), factor)
    outlines = outlines if hasattr(outlines, "dask") else list(outlines)
    task = dask.delayed(_draw, pure=True)(
        data, extent, path, title, f"{variable} [{units}]", cmap, vmin, vmax, xlabel, ylabel,
        outlines, list(markers), symmetric)
    return compute_writer(task, path) if compute else task
