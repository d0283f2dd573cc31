# SPDX-License-Identifier: Apache-2.0
"""The gridding stage: canonical soundings -> a lazy Level-3 dataset on a :class:`GridSpec`.

This module is the thin layer that lifts the numpy/numba kernels of
:mod:`eo_pipeline.binning`, :mod:`eo_pipeline.footprints` and
:mod:`eo_pipeline._area_kernel` onto dask and xarray: one task per block of
soundings (chunk), a tree of merges (combine), and one task per output tile
(finalize). Nothing is computed here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask._task_spec import GraphNode, Task, TaskRef
from dask.array.optimization import optimize as optimize_array_graph
from dask.base import tokenize
from dask.core import flatten
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ._area_kernel import area_accumulate
from ._fill import MIN_TEMPLATE_BYTES, filled
from ._srf_kernel import srf_accumulate, srf_scale
from ._version import __version__
from .binning import (
    STAT_DTYPES,
    STATISTICS,
    Partial,
    Tiling,
    check_statistics,
    dropped_of,
    finalize_statistics,
    merge,
    offset,
    point_partial,
    select,
    trim,
    uniform_view,
)
from .cluster import SPREAD
from .errors import GridError, ReaderOptionError
from .footprints import (
    DEFAULT_SRF_SHAPE,
    FOV_DIAMETER_KM,
    centres_in_grid,
    circle_footprints,
    corner_chunks,
    derive_block_corners,
    halo_of,
    halo_rows,
    polygons_in_grid,
    srf_circles,
    srf_footprints,
    srf_shape_of,
)
from .grid import GridSpec, named_grid
from .schema import SPECIES, SWATH_DIMS, SpeciesInfo, species_of

__all__ = ["grid_soundings", "chunk_partials", "tree_merge", "route_to_blocks", "dropped_total", "blocks_to_dataset",
           "cf_statistic_attrs", "statistics_of", "check_chunk", "Binning", "METHODS", "WEIGHTINGS"]

METHODS = ("point", "area", "srf")
#: Where the srf method comes from (dataset attribute ``srf_reference``).
SRF_REFERENCE = ("Sun, K. et al. (2018): A physics-based approach to oversample multi-satellite, multispecies "
                 "observations to a common grid, Atmos. Meas. Tech. 11, 6679-6701, doi:10.5194/amt-11-6679-2018")
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
    method : {"point", "area", "srf"}
        Binning method.
    inverse_variance : bool
        Weight by 1/sigma².
    ref : float
        Reference value of the species (numerically stable sums).
    fov_km : float or None
        Diameter of circular footprints for soundings without corners (area method).
    period_edges : tuple of int, optional
        Period boundaries as datetime64[ns] integers (composites); None = one period.
    statistics : tuple of str
        The statistics to finalize; the chunk step keeps only the sums they need.
    layers : tuple of int, optional
        Period layers this product may reach (from its time coverage); soundings in
        other periods are dropped and counted. None = any.
    srf_shape : (k1, k2, k3), optional
        SRF shape of the srf method (resolved per product from its instrument).
    srf_window : float
        Window factor of the srf method.
    """

    grid: GridSpec
    tiling: Tiling
    method: str
    inverse_variance: bool
    ref: float
    fov_km: float | None = None
    period_edges: tuple[int, ...] | None = None
    statistics: tuple[str, ...] = STATISTICS
    layers: tuple[int, ...] | None = None
    srf_shape: tuple[float, float, float] | None = None
    srf_window: float = 1.5


def _point_chunk(lon: np.ndarray, lat: np.ndarray, x: np.ndarray, u: np.ndarray, b: Binning) -> Partial:
    grid = b.grid
    ok = np.isfinite(lon) & np.isfinite(lat)
    xs, ys, _ = centres_in_grid(lon, lat, grid)
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
    return Partial(*out[:9], ref=b.ref, n_dropped=dropped, n_used=int(out[9]))


def _srf_chunk(lon: np.ndarray, lat: np.ndarray, lon_b: np.ndarray | None, lat_b: np.ndarray | None,
               x: np.ndarray, u: np.ndarray, b: Binning) -> Partial:
    grid = b.grid
    if lon_b is None or lat_b is None:
        cx, cy, ox, oy, area, src, dropped = srf_circles(lon, lat, b.fov_km, grid)  # type: ignore[arg-type]
    else:
        cx, cy, ox, oy, area, src, dropped = srf_footprints(lon, lat, lon_b, lat_b, grid)
    xs = x[src].astype(np.float64)
    us = u[src].astype(np.float64)
    wm = 1.0 / (us * us) if b.inverse_variance else np.ones(src.size)
    (dx, dy), (rows, cols) = grid.resolution, grid.shape
    west, _, east, north = grid.bounds
    geographic = grid.is_geographic
    wrap = geographic and abs((east - west) - 360.0) < 1e-9 * 360.0
    k1, k2, k3 = b.srf_shape or DEFAULT_SRF_SHAPE
    out = srf_accumulate(cx, cy, np.ascontiguousarray(ox), np.ascontiguousarray(oy), area, xs, wm, us, b.ref,
                         west, dx, north, dy, rows, cols, wrap, 360.0 if geographic else 0.0,
                         float(k1), float(k2), float(k3), srf_scale((k1, k2, k3)), float(b.srf_window),
                         b.tiling.tile, b.tiling.sub)
    return Partial(*out[:9], ref=b.ref, n_dropped=dropped + int(out[11]), n_used=int(out[10]), ns=out[9])


def _corner_rows(bounds: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """The corners ``(len(sel), K)`` float64 of the soundings ``sel`` (flat indices) of ``bounds`` (..., K).

    A strided view (derived corners) is indexed where it lies, so that only the chosen
    soundings' corners are copied, not the whole block to flatten it first.
    """
    bounds = np.asarray(bounds)
    k = bounds.shape[-1]
    if bounds.flags.c_contiguous or bounds.ndim == 2:
        return bounds.reshape(-1, k)[sel].astype(np.float64)
    return bounds[np.unravel_index(sel, bounds.shape[:-1])].astype(np.float64)


def _chunk(lon: np.ndarray, lat: np.ndarray, x: np.ndarray, u: np.ndarray, valid: np.ndarray, time: np.ndarray,
           lon_b: np.ndarray | None, lat_b: np.ndarray | None, b: Binning,
           halo: tuple[int, int] | None = None) -> Partial:
    """Chunk task: one block of soundings -> a Partial (numpy in, Partial out).

    With ``halo=(top, bottom)`` the swath has no corners: ``lon`` and ``lat`` carry
    ``top`` rows of the block above and ``bottom`` rows of the block below, and the
    block's corners are derived from them here (once, for both coordinates).
    """
    if halo is not None:
        top, bottom = halo
        corners = derive_block_corners(lat, lon, top, bottom)
        stop = np.shape(lat)[0] - bottom
        lon, lat = np.asarray(lon)[top:stop], np.asarray(lat)[top:stop]
        lat_b, lon_b = corners[..., 0], corners[..., 1]
    x = np.asarray(x).ravel()
    u = np.asarray(u).ravel()
    ok = np.asarray(valid, bool).ravel() & np.isfinite(x)
    if b.inverse_variance:
        ok &= np.isfinite(u) & (u > 0)
    outside = 0
    if b.period_edges is not None:
        t = np.asarray(time).ravel().astype("datetime64[ns]").astype(np.int64)
        period = np.searchsorted(np.asarray(b.period_edges, np.int64), t, side="right") - 1
        # soundings outside every period, or outside their file's time coverage: dropped and counted
        inside = (period >= 0) & (period < len(b.period_edges) - 1)
        if b.layers is not None:
            inside &= np.isin(period, np.asarray(b.layers, np.int64))
        outside = int(np.count_nonzero(ok & ~inside))
        ok &= inside
    sel = np.flatnonzero(ok)
    # soundings outside the periods count in the first period this file reaches
    home = b.layers[0] if b.layers else 0
    if sel.size == 0:
        return replace(trim(Partial.empty(b.ref, outside), b.statistics), layer_counts=((home, outside, 0),))
    x = x[sel].astype(np.float64)
    u = u[sel].astype(np.float64)
    lon = np.asarray(lon).ravel()[sel].astype(np.float64)
    lat = np.asarray(lat).ravel()[sel].astype(np.float64)
    if lon_b is not None and lat_b is not None:
        lon_b = _corner_rows(lon_b, sel)
        lat_b = _corner_rows(lat_b, sel)
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
        elif b.method == "srf":
            part = _srf_chunk(lon[idx], lat[idx], lb, la, x[idx], u[idx], b)
        else:
            part = _area_chunk(lon[idx], lat[idx], lb, la, x[idx], u[idx], b)
        parts.append(offset(part, layer * b.tiling.layer_size))
    counts = {home: [outside, 0]}
    for (layer, _), part in zip(layers, parts, strict=True):
        c = counts.setdefault(layer, [0, 0])
        c[0] += part.n_dropped
        c[1] += part.n_used
    out = trim(merge(*parts), b.statistics)
    return replace(out, n_dropped=out.n_dropped + outside,
                   layer_counts=tuple((k, d, u) for k, (d, u) in sorted(counts.items())))


def _blocks(ds: xr.Dataset, names: Sequence[str], extra: Sequence[str] = (), *,
            halo: bool = False) -> list[list[Any]]:
    """Blocks of the sounding variables ``names`` (same dims) and ``extra`` (one more dim), a list per block.

    Dask-backed variables give delayed blocks, chunked as the first of ``names``;
    in-memory (numpy) ones give views of the same blocks, neither copied nor hashed
    into the graph. With ``halo``, ``names`` start with longitude and latitude of a
    swath: blocks are whole rows (at least 3), those two come with one row of each
    neighbouring block, and each list ends with ``(top, bottom)``, the number of
    those rows (see :func:`_chunk`).
    """
    data = [ds[n].data for n in (*names, *extra)]
    if not any(isinstance(d, da.Array) for d in data):
        return _numpy_blocks([np.asarray(d) for d in data], halo)
    arrays = [da.asarray(d) for d in data[:len(names)]]
    chunks = arrays[0].chunks
    if halo:
        chunks = (corner_chunks(chunks[0]), (arrays[0].shape[1],))
    arrays = [a if a.chunks == chunks else a.rechunk(chunks) for a in arrays]
    for d in data[len(names):]:
        a = da.asarray(d)
        target = (*chunks, (a.shape[-1],))
        arrays.append(a if a.chunks == target else a.rechunk(target))
    rows = len(chunks[0])
    if halo:
        arrays[:2] = [halo_rows(a) for a in arrays[:2]]
    # optimised (fused): each chunk's reading and decoding run inside one task, so a job over
    # hundreds of files never holds decoded chunks waiting for their kernel (unfused, a
    # month's peak memory went from 1.1 GB to 4.6 GB). The variables are optimised together,
    # once: optimising each on its own took 8 passes over the product's graph
    keys = [a.__dask_keys__() for a in arrays]
    graph = optimize_array_graph(HighLevelGraph.merge(*[a.__dask_graph__() for a in arrays]), keys)
    blocks = [[Delayed(k, graph) for k in group]
              for group in zip(*[list(flatten(k)) for k in keys], strict=True)]
    if halo:
        for i, blk in enumerate(blocks):
            blk.append(halo_of(i, rows))
    return blocks


def _numpy_blocks(arrays: list[np.ndarray], halo: bool, chunks: Any = "auto") -> list[list[Any]]:
    """:func:`_blocks` of in-memory variables: views, chunked as ``da.asarray`` would chunk them."""
    first = arrays[0]
    chunks = da.core.normalize_chunks(chunks, first.shape, dtype=first.dtype)
    if halo:
        chunks = (corner_chunks(chunks[0]), (first.shape[1],))
    bounds = [np.cumsum((0, *c)) for c in chunks]
    blocks = []
    for starts in itertools.product(*[range(len(c)) for c in chunks]):
        sl = tuple(slice(int(e[i]), int(e[i + 1])) for e, i in zip(bounds, starts, strict=True))
        blk = [a[sl] for a in arrays]
        if halo:
            top, bottom = halo_of(starts[0], len(chunks[0]))
            r0, r1 = sl[0].start, sl[0].stop
            blk[:2] = [a[r0 - top:r1 + bottom] for a in arrays[:2]]
            blk.append((top, bottom))
        blocks.append(blk)
    return blocks


def _fov_for(ds: xr.Dataset, fov_diameter_km: float | None, no_corners: str) -> float | None:
    if no_corners == "point":  # the srf method refuses this earlier (check_inputs)
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


def chunk_partials(
    ds: xr.Dataset,
    b: Binning,
    *,
    fov_diameter_km: float | None = None,
    no_corners: str = "fov",
) -> list[Delayed]:
    """Chunk step of one product: one lazy :class:`~eo_pipeline.binning.Partial` per block of soundings."""
    info = species_of(ds)
    extra: list[str] = []
    halo = False
    if b.method in ("area", "srf"):
        if "latitude_bounds" in ds and "longitude_bounds" in ds:
            extra = ["longitude_bounds", "latitude_bounds"]
        elif "latitude_bounds" not in ds and ds[info.name].dims == SWATH_DIMS:
            halo = True  # corners derived from the centres inside each chunk task
        else:
            b = replace(b, fov_km=_fov_for(ds, fov_diameter_km, no_corners))
    if b.method == "srf":
        b = replace(b, srf_shape=srf_shape_for(ds, b.srf_shape, has_corners=bool(extra) or halo))
    names = ["longitude", "latitude", info.name, f"{info.name}_uncertainty", "valid", "time"]
    parts = []
    for blk in _blocks(ds, names, extra, halo=halo):
        lon_b, lat_b = (blk[6], blk[7]) if extra else (None, None)
        args = (*blk[:6], lon_b, lat_b, b, blk[6] if halo else None)
        parts.append(_chunk_task(args))
    return _fuse_reads(parts)


def _chunk_task(args: tuple[Any, ...]) -> Delayed:
    """The delayed :func:`_chunk` of one block.

    In-memory (numpy) blocks go into the graph as they are, under a random key: hashing
    them for a deterministic key read every byte of a loaded product at each call.
    """
    pure = not any(isinstance(a, np.ndarray) for a in args)
    return dask.delayed(_chunk, pure=pure)(*args)


def srf_shape_for(ds: xr.Dataset, shape: Any, *, has_corners: bool = True) -> tuple[float, float, float]:
    """The SRF shape of one product: ``shape`` if given, else its instrument's.

    See :data:`eo_pipeline.footprints.SRF_SHAPES`.
    """
    try:
        return srf_shape_of(shape, str(ds.attrs.get("instrument", "")), has_corners=has_corners)
    except ValueError as exc:
        raise ReaderOptionError(str(exc)) from exc


def _fuse_reads(parts: list[Delayed]) -> list[Delayed]:
    """Each chunk task with the reads of its variables fused in: one task reads and grids a block.

    Left apart, each variable of a block is read by a task of its own; on a cluster those
    run on different workers and their arrays travel to the kernel's worker. A task is
    fused into a chunk task when every task that needs it is fused there too (shared
    ones, such as a file's lazily opened variable, stay apart).
    """
    if not parts:
        return parts
    graph = dict(HighLevelGraph.merge(*[p.__dask_graph__() for p in parts]))
    dependents: dict[Any, set[Any]] = {k: set() for k in graph}
    for k, node in graph.items():
        for d in node.dependencies:
            if d in dependents:
                dependents[d].add(k)
    out = []
    for p in parts:
        owned = {p.key}
        todo = list(graph[p.key].dependencies)
        while todo:  # an ancestor is taken once all its dependents are: its last one taken brings it back here
            d = todo.pop()
            if d in graph and d not in owned and dependents[d] <= owned:
                owned.add(d)
                todo += graph[d].dependencies
        external: set[Any] = set()
        todo = [d for k in owned for d in graph[k].dependencies if d not in owned]
        while todo:
            d = todo.pop()
            if d in external or d not in graph:
                continue
            external.add(d)
            todo += list(graph[d].dependencies)
        sub = {k: graph[k] for k in external}
        sub[p.key] = GraphNode.fuse(*[graph[k] for k in owned], key=p.key)
        out.append(Delayed(p.key, sub))
    return out


def tree_merge(parts: Sequence[Delayed], split_every: int = 8, *, block: tuple[int, int] | None = None) -> Delayed:
    """Combine partials in a tree of fan-in ``split_every``; with ``block=(lo, hi)`` keep only those cells.

    Restricting at the first level means a block's tree holds only the block's cells,
    and each chunk's partial can be freed as soon as every block has taken its share.
    """
    if split_every < 2:
        raise ValueError("split_every must be >= 2")
    level = list(parts)
    if not level:
        return dask.delayed(Partial.empty, pure=True)(0.0)
    if block is not None:
        task = dask.delayed(_merge_block, pure=True)
        level = [task(block[0], block[1], *level[i:i + split_every]) for i in range(0, len(level), split_every)]
    task = dask.delayed(merge, pure=True)
    while len(level) > 1:
        level = [task(*level[i:i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]


def _merge_block(lo: int, hi: int, *parts: Partial) -> Partial:
    """Combine step restricted to one output block: the cells in ``[lo, hi)`` of each partial, merged."""
    return merge(*[select(p, lo, hi) for p in parts])


def route_to_blocks(parts: dict[int, list[Delayed]], tiling: Tiling, split_every: int = 8) -> dict[int, Delayed]:
    """Combine step per output block: ``{tile id: merged Partial of that block}``.

    ``parts`` maps each period layer to the chunk partials that may hold soundings of
    that period. Every output block (a tile of the tiling, one per period layer) gets
    its own tree over those chunks, restricted to its cells: no task ever holds all
    cells of all periods, a block's finalize depends only on the partials of its
    period, and a block is finalized, written and freed on its own.
    """
    out: dict[int, Delayed] = {}
    for layer, chunk_parts in parts.items():
        for t in range(tiling.tiles_per_layer):
            tid = layer * tiling.tiles_per_layer + t
            out[tid] = tree_merge(chunk_parts, split_every, block=tiling.tile_range(tid))
    return out


def _sum_pairs(*values: tuple[int, int]) -> tuple[int, int]:
    return int(sum(v[0] for v in values)), int(sum(v[1] for v in values))


def dropped_total(parts: Sequence[Delayed], split_every: int = 8, *, layer: int | None = None) -> Delayed:
    """Lazy totals ``(footprints dropped, soundings used)`` of the chunks (a tree of small sums).

    With ``layer``, the totals of that period layer only: composites keep one small tree
    per period, so that no task depends on every chunk of every period (a single such
    task made dask's ordering compute all periods' blocks before writing any).
    """
    level = [dask.delayed(dropped_of, pure=True)(p, layer) for p in parts]
    if not level:
        return dask.delayed(_sum_pairs, pure=True)()
    task = dask.delayed(_sum_pairs, pure=True)
    while len(level) > 1:
        level = [task(*level[i:i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]


def _as_int32(totals: tuple[int, int], which: int) -> np.ndarray:
    return np.int32(min(totals[which], np.iinfo(np.int32).max))


def _fresh_result(results: Any) -> Any:
    """Dask's finalize of computed chunks, without the copy of a single chunk (:func:`without_result_copy`)."""
    one = results
    while isinstance(one, list | tuple) and len(one) == 1:
        one = one[0]
    if not isinstance(one, np.ndarray):  # several chunks, or not numpy: dask's own
        return da.core.finalize(results)
    if one.flags.writeable:
        return one
    if uniform_view(one):  # an empty block: hand out a writable map
        return filled(one.shape, one.dtype, one.flat[0])
    return one.copy()


def _fresh_postcompute() -> tuple[Any, tuple[()]]:
    return _fresh_result, ()


def without_result_copy(a: da.Array) -> da.Array:
    """Let ``a.compute()`` hand out its single chunk as made, without dask's defensive copy.

    Dask copies the result of a single-chunk array before returning it, in case the
    chunk is a buffer that the graph or a worker holds (``dask.array.core.finalize``).
    A finalize task of :func:`eo_pipeline.binning.finalize_statistics` makes its arrays
    afresh each time it runs, so that copy (one more dense pass over the whole map)
    buys nothing. Only this array object's own ``__dask_postcompute__`` changes: its
    type stays :class:`dask.array.Array` (xarray refuses to mix chunked types), and any
    array derived from it (an operation, ``persist``, ``copy``, pickling) is an ordinary
    dask array with dask's copy.
    """
    a.__dask_postcompute__ = _fresh_postcompute  # type: ignore[method-assign]
    return a


def _statistic_arrays(blocks: dict[int, Delayed], tiling: Tiling, layers: int | None, statistics: tuple[str, ...],
                      min_weight: float) -> list[da.Array]:
    """The statistics, a dask array each: ``(rows, cols)``, or ``(layers, rows, cols)`` for period layers.

    A block's statistics come from one finalize task, except in blocks of at least
    :data:`eo_pipeline._fill.MIN_TEMPLATE_BYTES` per map (a single-block global map),
    where each statistic has a task of its own, so that the cores share the scattering
    of the last step instead of one task doing it all while the others wait. Each
    chunk of a statistic is one task taking its array out of the finalize task's
    result (a view). Built from the finalize tasks' outputs through ``from_delayed``,
    ``block`` and ``stack``, each chunk took six tasks (about 600 of the 870 tasks of
    the cluster benchmark's run), each a round trip through a distributed scheduler.
    """
    n_layers = 1 if layers is None else layers
    row_chunks, col_chunks = da.core.normalize_chunks(tiling.tile, tiling.shape)  # the tiles, as dask chunks
    finalized: list[Delayed] = []
    where: dict[tuple[str, int], tuple[Any, int]] = {}  # (statistic, tile id): (finalize key, index in its result)
    for tid in range(n_layers * tiling.tiles_per_layer):
        r0, r1, c0, c1 = tiling.tile_bounds(tid)
        big = (r1 - r0) * (c1 - c0) * np.dtype(np.float32).itemsize >= MIN_TEMPLATE_BYTES
        for group in [(s,) for s in statistics] if big and len(statistics) > 1 else [statistics]:
            with dask.annotate(**{SPREAD: tid}):  # a cluster spreads the blocks' finalizing over its workers
                task = dask.delayed(finalize_statistics, pure=True)(blocks[tid], tiling, tid, group, min_weight)
            finalized.append(task)
            where.update({(stat, tid): (task.key, i) for i, stat in enumerate(group)})
    out = []
    inputs = tokenize([t.key for t in finalized])  # the statistics' arrays are named by what they come from
    for stat in statistics:
        name = f"{stat}-{tokenize(inputs, stat, layers)}"
        dsk: dict[Any, Task] = {}
        for tid in range(n_layers * tiling.tiles_per_layer):
            layer, t = divmod(tid, tiling.tiles_per_layer)
            index = divmod(t, tiling.tile_cols) if layers is None else (layer, *divmod(t, tiling.tile_cols))
            key, i = where[stat, tid]
            dsk[(name, *index)] = Task((name, *index), _statistic_block, TaskRef(key), i, layers is not None)
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=finalized)
        chunks = (row_chunks, col_chunks) if layers is None else ((1,) * layers, row_chunks, col_chunks)
        dtype = STAT_DTYPES[stat]
        arr = da.Array(graph, name, chunks, meta=np.empty((0,) * len(chunks), dtype))
        out.append(without_result_copy(arr) if layers is None else arr)
    return out


def _statistic_block(finalized: tuple[np.ndarray, ...], i: int, layered: bool) -> np.ndarray:
    """Statistic ``i`` of a finalize task's result; ``layered``: with a leading period axis of 1 (a view)."""
    return finalized[i][None] if layered else finalized[i]


#: CF ``cell_methods`` of each statistic over the soundings in a cell (and period).
CELL_METHODS = {"mean": "mean", "std": "standard_deviation", "count": "sum", "weight": "sum", "min": "minimum",
                "max": "maximum", "uncertainty": "mean", "num_samples": "sum"}


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


def blocks_to_dataset(
    blocks: dict[int, Delayed],
    dropped: Delayed | Sequence[Delayed],
    grid: GridSpec,
    tiling: Tiling,
    info: SpeciesInfo,
    *,
    statistics: tuple[str, ...] = STATISTICS,
    attrs: dict[str, Any] | None = None,
    min_weight: float = 0.0,
    times: Sequence[np.datetime64] | None = None,
    time_bounds: np.ndarray | None = None,
) -> xr.Dataset:
    """Finalize step: a lazy dataset of the statistics, one finalize task per output block.

    ``blocks`` maps every tile id of the tiling (each tile is one output block) to its
    merged partial (:func:`route_to_blocks`); ``dropped`` holds the lazy
    :func:`dropped_total` (one per period layer for composites). With ``times`` (one per period layer) the
    variables get a leading ``time`` dimension. Each block's task computes all chosen
    statistics at once, as separate arrays; a variable takes one of them.
    """
    arrays = _statistic_arrays(blocks, tiling, None if times is None else len(times), statistics, min_weight)
    dims: tuple[str, ...] = ("y", "x") if times is None else ("time", "y", "x")
    coords: dict[str, Any] = dict(grid.coords())
    coords["crs"] = ((), np.int32(0), grid.cf_grid_mapping())
    if times is not None:
        coords["time"] = ("time", np.asarray(times, "datetime64[ns]"),
                          {"standard_name": "time", "long_name": "start of the composite period",
                           "bounds": "time_bounds"})
    units = info.units
    meta = {  # units and long name of each statistic's variable (data types: binning.STAT_DTYPES)
        "mean": (units, f"mean {info.long_name} (weighted)"),
        "std": (units, f"weighted standard deviation of the {info.name} soundings in the cell (population)"),
        "count": ("1", "number of soundings contributing to the cell"),
        "weight": ("1", "sum of weights (area method: sum over soundings of overlap area / cell area)"),
        "num_samples": ("1", "sum over soundings of the spatial response function at the cell centre"),
        "min": (units, f"minimum {info.name} of the contributing soundings"),
        "max": (units, f"maximum {info.name} of the contributing soundings"),
        "uncertainty": (units, "propagated 1-sigma uncertainty of the weighted mean (independent errors)"),
    }
    if (attrs or {}).get("method") == "srf":
        meta["weight"] = (str((attrs or {}).get("srf_weight_units", "1")),
                          "sum of weights (srf method: sum over soundings of SRF / pixel area"
                          + (" / variance)" if (attrs or {}).get("weighting") == "inverse_variance" else ")"))
    data_vars: dict[str, Any] = {}
    for k, stat in enumerate(statistics):
        u, long_name = meta[stat]
        arr = arrays[k]
        stat_attrs = cf_statistic_attrs(info, stat, with_time=times is not None)
        if "ancillary_variables" in stat_attrs:  # refer only to what the dataset holds
            kept = [v for v in stat_attrs["ancillary_variables"].split()
                    if v.removeprefix(f"{info.name}_") in statistics]
            if kept:
                stat_attrs["ancillary_variables"] = " ".join(kept)
            else:
                del stat_attrs["ancillary_variables"]
        data_vars[f"{info.name}_{stat}"] = xr.DataArray(
            arr, dims=dims, attrs={"units": u, "long_name": long_name, "grid_mapping": "crs", **stat_attrs})
    totals = list(dropped) if isinstance(dropped, list | tuple) else [dropped]

    def count_array(which: int) -> da.Array:
        one = [da.from_delayed(dask.delayed(_as_int32, pure=True)(t, which), shape=(), dtype=np.int32) for t in totals]
        return one[0] if times is None else da.stack(one)

    cdims: tuple[str, ...] = () if times is None else ("time",)
    data_vars["n_soundings_used"] = xr.DataArray(
        count_array(1), dims=cdims,
        attrs={"long_name": "valid soundings that went into the maps (each counted once)", "units": "1"})
    data_vars["n_footprints_dropped"] = xr.DataArray(
        count_array(0), dims=cdims,
        attrs={"long_name": "footprints dropped: not projectable onto the grid, impossible corners, zero area, "
                            "or soundings outside their file's time coverage", "units": "1"})
    if times is not None and time_bounds is not None:
        data_vars["time_bounds"] = xr.DataArray(np.asarray(time_bounds, "datetime64[ns]"), dims=("time", "nv"))
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(attrs or {})
    ds.attrs["statistics"] = " ".join(statistics)
    return ds


def method_statistics(statistics: Any, method: str) -> tuple[str, ...]:
    """The statistics a method computes: the chosen ones, plus ``num_samples`` for the srf method."""
    stats = statistics_of(statistics)
    if method == "srf":
        return stats if "num_samples" in stats else (*stats, "num_samples")
    if "num_samples" in stats:
        raise ReaderOptionError(f"num_samples is a statistic of method='srf' only, not of method={method!r}")
    return stats


def srf_setup(products: Sequence[xr.Dataset], g: GridSpec, method: str, weighting: str | None, info: SpeciesInfo,
              srf_shape: Any, srf_window: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate the srf options: the dataset attributes that describe them and the :class:`Binning` fields.

    Both are empty for other methods. A given shape is parsed once here; None leaves
    each product's shape to its instrument (resolved in :func:`chunk_partials`).
    """
    if method != "srf":
        return {}, {}
    try:
        window = float(srf_window)
    except (TypeError, ValueError):
        window = float("nan")
    if not (np.isfinite(window) and window > 0):
        raise ReaderOptionError(f"srf_window must be a positive number (cells per half-width, default 1.5), "
                                f"got {srf_window!r}")
    given = None if srf_shape is None else srf_shape_for(products[0], srf_shape)
    shapes = []
    for p in products:  # corners as chunk_partials finds them: the product's, or derived for swaths
        corners = ("latitude_bounds" in p and "longitude_bounds" in p) or p[info.name].dims == SWATH_DIMS
        shapes.append(" ".join(f"{k:g}" for k in srf_shape_for(p, given, has_corners=corners)))
    unit = "degree" if g.is_geographic else ("m" if g.units in ("metre", "meter") else g.units)
    weight_units = f"{unit}-2" if weighting is None else f"{unit}-2 ({info.units})-2"
    attrs = {"srf_shape": "; ".join(sorted(set(shapes))), "srf_window": window, "srf_reference": SRF_REFERENCE,
             "srf_weight_units": weight_units}
    return attrs, {"srf_shape": given, "srf_window": window}


def check_chunk(chunk: int | None) -> int | None:
    """Validate a user's output block size (cells, a positive multiple of :data:`TILE`)."""
    if chunk is None:
        return None
    if int(chunk) != chunk or chunk <= 0 or chunk % TILE:
        raise ReaderOptionError(f"chunk must be a positive multiple of {TILE} cells, got {chunk!r}")
    return int(chunk)


def statistics_of(statistics: Any) -> tuple[str, ...]:
    """The statistics to compute (None: all of :data:`~eo_pipeline.binning.STATISTICS`), validated."""
    try:
        return check_statistics(statistics)
    except ValueError as exc:
        raise ReaderOptionError(str(exc)) from exc


#: Cells beyond which a job's single map, which is only written, is made in blocks (:func:`auto_chunk`).
WRITTEN_IN_BLOCKS_ABOVE = 2**25


def auto_chunk(grid: GridSpec, *, periods: int = 1, written: bool = False) -> int:
    """Output block size (cells, a multiple of :data:`TILE`).

    A single map that is gathered into memory (``.compute()``) is one block at any
    size: ``.compute()`` then hands back the finalized arrays as they are, without
    concatenating blocks, and their empty cells cost no memory until written
    (:func:`eo_pipeline._fill.filled`); a map's partial sums weigh the same however they
    are blocked, as every block depends on every file. Composites, and single maps that
    are only ``written`` (the ``grid`` command; ``eo-pipeline run`` beyond
    :data:`WRITTEN_IN_BLOCKS_ABOVE` cells),
    are one block per period up to 2**22 cells, else blocks of 2048 x 2048 cells (16 MB per statistic),
    so that blocks are finalized, written and freed on their own, in parallel, and
    blocks a sparse map never touches stay unallocated (one S5P orbit touches 4 of the
    8 blocks of global_0p05).
    """
    rows, cols = grid.shape
    whole = -(-max(rows, cols) // TILE) * TILE
    if (periods == 1 and not written) or rows * cols <= 2**22:
        return whole
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


def check_inputs(products: xr.Dataset | Sequence[xr.Dataset], method: str, weighting: str | None,
                 no_corners: str = "fov") -> tuple[list[xr.Dataset], SpeciesInfo]:
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
    if no_corners not in ("fov", "point"):
        raise ReaderOptionError(f"no_corners must be 'fov' or 'point', got {no_corners!r}")
    if method == "srf" and no_corners != "fov":
        raise ReaderOptionError("method='srf' spreads every sounding by its footprint; soundings without corners "
                                "use their field of view (no_corners='fov'), not points")
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
    statistics: Sequence[str] | str | None = None,
    srf_shape: Any = None,
    srf_window: float = 1.5,
) -> xr.Dataset:
    """Grid soundings of one species onto ``grid`` (lazy).

    Parameters
    ----------
    products : xarray.Dataset or sequence of them
        Canonical soundings from :func:`eo_pipeline.open_product`, all of one species.
    grid : GridSpec or str
        Target grid, or the name of one in ``configs/grids.yaml``.
    method : {"area", "point", "srf"}
        ``point``: each valid sounding falls into the one cell holding its centre
        (weight 1). ``area``: each sounding's footprint polygon is intersected exactly
        with the cells in the grid's own CRS, weight = overlap area / cell area (as
        HARP's ``bin_spatial`` defines it; an equal-area grid gets equal-area weights).
        ``srf``: physics-based oversampling (Sun et al. 2018): each sounding is spread
        over the cells near it by its instrument's spatial response function, weight =
        SRF at the cell centre / pixel area (grid units: degrees² on lon/lat grids),
        as the authors' reference implementation defines it (see
        :mod:`eo_pipeline._srf_kernel`); adds ``<species>_num_samples`` (sum of the
        SRF). Only soundings whose centres lie on the grid are used. Swaths without
        corners get corners derived from their pixel centres.
    weighting : {None, "inverse_variance"}
        Multiply each weight by 1/sigma² of the sounding's uncertainty (soundings
        without a positive uncertainty are then left out).
    chunk : int, optional
        Dask chunk size of the result (cells; a multiple of 512). Default: one chunk,
        so ``.compute()`` hands back each map as finalized, whose empty cells take no
        memory until written (a global 0.01 degree map of one orbit: 2.6 GB per
        statistic in size, a few hundred MB touched). Give a chunk (2048) for maps
        that are only written or sliced. Blocks without data are never allocated.
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
    statistics : sequence of str, optional
        Which of ``mean``, ``std``, ``count``, ``weight``, ``min``, ``max`` and
        ``uncertainty`` to compute (default: all); the partial sums keep only what
        these need, so fewer statistics mean less memory and work. The srf method
        always adds ``num_samples``.
    srf_shape : (k1, k2, k3), str or None
        SRF shape of the srf method: three positive numbers, an instrument's name
        (:data:`eo_pipeline.footprints.SRF_SHAPES`), or None for each product's
        instrument (TROPOMI (4, 2, 1); instruments not listed and soundings without
        corners (2, 2, 1)).
    srf_window : float
        Window factor of the srf method: the SRF is evaluated within
        ``ceil(extent / 2 / cell size x srf_window)`` cells of the centre cell (1.5).

    Returns
    -------
    xarray.Dataset
        ``<species>_<statistic>`` for each chosen statistic on dims ``(y, x)`` (cell
        centres), a CF ``crs`` grid-mapping coordinate, ``n_footprints_dropped``, and
        provenance attributes.

    Notes
    -----
    The graph follows flox's chunk / combine / finalize recipe, with the combine step
    per output block: every block of soundings becomes sparse partial sums; for each
    output block (``chunk`` x ``chunk`` cells) a tree keeps only that block's cells of
    each partial and merges them; one task per block finalizes all statistics. A
    block is thus computed, written and freed on its own, and memory follows the
    blocks in flight, not the number of files.
    """
    products, info = check_inputs(products, method, weighting, no_corners)
    stats = method_statistics(statistics, method)
    g = as_grid(grid)
    srf_attrs, srf_fields = srf_setup(products, g, method, weighting, info, srf_shape, srf_window)
    tiling = Tiling(g.shape, check_chunk(chunk) or auto_chunk(g))
    b = Binning(g, tiling, method, weighting == "inverse_variance", info.reference_value, statistics=stats,
                **srf_fields)
    parts = [c for p in products for c in chunk_partials(p, b, fov_diameter_km=fov_diameter_km, no_corners=no_corners)]
    blocks = route_to_blocks({0: parts}, tiling, split_every)
    attrs = base_attrs(info, g, method, weighting)
    attrs.update(srf_attrs)
    attrs.update(provenance(products))
    return blocks_to_dataset(blocks, dropped_total(parts, split_every), g, tiling, info, statistics=stats,
                             attrs=attrs, min_weight=min_weight)


#: How titles name the methods.
METHOD_TITLES = {"point": "point binning", "area": "area binning", "srf": "SRF oversampling"}


def base_attrs(info: SpeciesInfo, g: GridSpec, method: str, weighting: str | None) -> dict[str, Any]:
    """Attributes every Level-3 dataset carries."""
    return {
        "title": f"{info.species} Level-3 map ({METHOD_TITLES.get(method, method + ' binning')})",
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
