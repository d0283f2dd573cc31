# SPDX-License-Identifier: Apache-2.0
"""Soundings -> grid cells: sparse partial sums, combined by a tree reduction.

The recipe (flox's chunk / combine / finalize, written as named functions):

* **chunk**: each block of soundings becomes a :class:`Partial`, the per-cell sums
  ``n`` (soundings), ``sw`` (sum of weights), ``swx``, ``swxx`` (weighted sums of the
  value and its square, relative to a reference value for numerical stability),
  ``swwu`` (sum of w² sigma², for the propagated uncertainty of the mean), ``min``
  and ``max``; only the cells that receive data are stored (sorted flat indices);
* **combine**: per output block, the block's cells of each partial (:func:`select`)
  are merged by addition (min/max by min/max) in a tree of ``split_every`` branches
  (:func:`merge`), so a block's tree holds only that block's cells and no task ever
  holds all cells of all periods;
* **finalize**: per output block, its cells are scattered into a dense stack of the
  chosen statistics (:func:`finalize_statistics`).

Flat cell indices are *tile-major* (tile id x tile size² + position inside the
tile), so a sorted partial is grouped by tile and a tile is one ``searchsorted`` away;
the gridding makes each output block one tile, so a block's cells are contiguous.

Kernels here take and return numpy arrays; :mod:`eo_pipeline.gridding` lifts them
onto dask and xarray.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from dask.sizeof import sizeof
from numba import njit

from ._fill import filled

__all__ = [
    "Partial",
    "Tiling",
    "STATISTICS",
    "ALL_STATISTICS",
    "DEFAULT_STATISTICS",
    "FIELDS",
    "check_statistics",
    "trim",
    "select",
    "dropped_of",
    "reduce_by_cell",
    "merge",
    "finalize_tile",
    "finalize_block",
    "finalize_statistics",
    "point_partial",
]

#: Order of the statistics in a finalized tile stack.
STATISTICS: tuple[str, ...] = ("mean", "std", "count", "weight", "min", "max", "uncertainty")
#: Every statistic a binning can give: :data:`STATISTICS` plus the ``srf`` method's
#: ``num_samples`` (the summed spatial response, see :mod:`eo_pipeline._srf_kernel`).
ALL_STATISTICS: tuple[str, ...] = (*STATISTICS, "num_samples")
#: What jobs and the command line write unless told otherwise: the mean and how many
#: soundings and how much footprint area stand behind it (what HARP's bin_spatial gives).
DEFAULT_STATISTICS: tuple[str, ...] = ("mean", "count", "weight")


@dataclass(frozen=True)
class Tiling:
    """Hierarchical flat indexing of a ``shape`` grid: tiles of ``tile`` cells, sub-tiles of ``sub``.

    The flat index of a cell is ``tile id x tile² + sub-tile id x sub² + position in the
    sub-tile`` (tile ids row-major over the grid, sub-tile ids row-major inside the tile,
    positions row-major inside the sub-tile). Sorted indices are therefore grouped by
    tile (one ``searchsorted`` finds a tile's cells) and, inside a tile, by sub-tile, which
    lets the area kernel accumulate in a cache-sized buffer and still emit sorted cells.
    With ``periods`` > 1 (time composites) the index space holds one layer of tiles per
    period: global tile id = period x tiles per layer + spatial tile id.
    """

    shape: tuple[int, int]
    tile: int = 512
    periods: int = 1
    sub: int = 128

    def __post_init__(self) -> None:
        if self.sub > self.tile:
            object.__setattr__(self, "sub", self.tile)
        if self.tile % self.sub:
            raise ValueError(f"tile ({self.tile}) must be a multiple of sub ({self.sub})")

    @property
    def tiles_per_layer(self) -> int:
        """Number of tiles covering the grid once."""
        return self.tile_rows * self.tile_cols

    @property
    def layer_size(self) -> int:
        """Flat indices per period layer."""
        return self.tiles_per_layer * self.tile * self.tile

    @property
    def tile_cols(self) -> int:
        """Number of tiles across."""
        return -(-self.shape[1] // self.tile)

    @property
    def tile_rows(self) -> int:
        """Number of tiles down."""
        return -(-self.shape[0] // self.tile)

    def flat(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Flat index of (row, col) (int64)."""
        t, s = self.tile, self.sub
        row = np.asarray(row, np.int64)
        col = np.asarray(col, np.int64)
        tid = (row // t) * self.tile_cols + (col // t)
        lr, lc = row % t, col % t
        sid = (lr // s) * (t // s) + lc // s
        return tid * (t * t) + sid * (s * s) + (lr % s) * s + (lc % s)

    def local_rowcol(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column inside its tile of each offset ``flat - tile start``."""
        s = self.sub
        sid, rem = np.divmod(local, s * s)
        sr, sc = np.divmod(sid, self.tile // s)
        r, c = np.divmod(rem, s)
        return sr * s + r, sc * s + c

    def tile_range(self, tile_id: int) -> tuple[int, int]:
        """Half-open range of flat indices belonging to ``tile_id``."""
        size = self.tile * self.tile
        return tile_id * size, (tile_id + 1) * size

    def tile_bounds(self, tile_id: int) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)`` of ``tile_id`` (any period layer)."""
        tr, tc = divmod(tile_id % self.tiles_per_layer, self.tile_cols)
        r0, c0 = tr * self.tile, tc * self.tile
        return r0, min(r0 + self.tile, self.shape[0]), c0, min(c0 + self.tile, self.shape[1])


@dataclass(frozen=True)
class Partial:
    """Per-cell partial sums for the cells that received data (sorted ``idx``).

    Attributes
    ----------
    idx : int64 array
        Tile-major flat cell indices, sorted, unique.
    n : int64 array
        Number of contributing soundings.
    sw, swx, swxx : float64 arrays
        Sum of weights, of weight x (value - ref), of weight x (value - ref)².
    swwu : float64 array
        Sum of weight² x uncertainty² (NaN-free: soundings without an
        uncertainty contribute 0 and are counted in ``nu_missing``).
    nu_missing : int64 array
        Soundings whose uncertainty was not finite.
    vmin, vmax : float64 arrays
        Extremes of the (unshifted) values.
    ns : float64 array or None
        Sum of the spatial response function at the cell centre (``srf`` method's
        ``num_samples``; None for the other methods).

    ``swxx``, ``swwu``/``nu_missing``, ``vmin``/``vmax`` and ``ns`` are None when no requested
    statistic needs them (see :func:`trim`): they are then neither merged nor held.
    ref : float
        Reference value subtracted before summing (units of the values).
    n_dropped : int
        Footprints that could not be projected onto the grid (area method).
    n_used : int
        Valid soundings that went into the sums (each counted once, whatever the
        number of cells it covers).
    layer_counts : tuple of (layer, dropped, used)
        The two counts per period layer (composites); empty means all in layer 0.
    """

    idx: np.ndarray
    n: np.ndarray
    sw: np.ndarray
    swx: np.ndarray
    swxx: np.ndarray | None
    swwu: np.ndarray | None
    nu_missing: np.ndarray | None
    vmin: np.ndarray | None
    vmax: np.ndarray | None
    ref: float
    n_dropped: int = 0
    n_used: int = 0
    layer_counts: tuple[tuple[int, int, int], ...] = ()
    ns: np.ndarray | None = None

    @classmethod
    def empty(cls, ref: float, n_dropped: int = 0) -> Partial:
        """A partial with no cells."""
        f = np.empty(0, np.float64)
        i = np.empty(0, np.int64)
        return cls(i, i, f, f, f, f, i, f, f, ref, n_dropped, ns=f)

    def __len__(self) -> int:
        return int(self.idx.size)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return sum(a.nbytes for k in FIELDS if (a := getattr(self, k)) is not None)


@sizeof.register(Partial)
def _sizeof_partial(p: Partial) -> int:
    """dask's size of a partial: its arrays' bytes (the default, ``sys.getsizeof``, would say about 100 bytes).

    A distributed scheduler weighs a task's placement by the bytes of its dependencies
    it would move, and workers count their memory (and spill) by it.
    """
    return p.nbytes


#: The per-cell arrays of a :class:`Partial`, in order.
FIELDS: tuple[str, ...] = ("idx", "n", "sw", "swx", "swxx", "swwu", "nu_missing", "vmin", "vmax", "ns")
#: The optional arrays (None when no chosen statistic needs them).
OPTIONAL: tuple[str, ...] = ("swxx", "swwu", "nu_missing", "vmin", "vmax", "ns")
#: The optional arrays each statistic needs beyond ``idx``, ``n``, ``sw`` and ``swx``.
NEEDS: dict[str, tuple[str, ...]] = {
    "mean": (), "count": (), "weight": (), "std": ("swxx",), "uncertainty": ("swwu", "nu_missing"),
    "min": ("vmin",), "max": ("vmax",), "num_samples": ("ns",),
}


def check_statistics(statistics: object) -> tuple[str, ...]:
    """Validate a selection of statistics (order kept, duplicates removed); None or ``"all"`` means all.

    "All" is :data:`STATISTICS`; ``num_samples`` (:data:`ALL_STATISTICS`) may be named
    too, and only the ``srf`` method can give it.
    """
    if statistics is None or statistics == "all" or statistics == ["all"]:
        return STATISTICS
    if isinstance(statistics, str):
        statistics = [s.strip() for s in statistics.replace(" ", ",").split(",") if s.strip()]
    chosen = tuple(dict.fromkeys(str(s) for s in statistics))  # type: ignore[union-attr]
    unknown = [s for s in chosen if s not in ALL_STATISTICS]
    if unknown or not chosen:
        raise ValueError(f"unknown statistic(s) {unknown or '(none given)'}; choose from {', '.join(ALL_STATISTICS)}")
    return chosen


def trim(p: Partial, statistics: tuple[str, ...]) -> Partial:
    """Drop the arrays no statistic in ``statistics`` needs (they are then not merged or held)."""
    keep = {f for s in statistics for f in NEEDS[s]}
    drop = {f: None for f in OPTIONAL if f not in keep and getattr(p, f) is not None}
    return replace(p, **drop) if drop else p


def select(p: Partial, lo: int, hi: int) -> Partial:
    """The cells of ``p`` with flat index in ``[lo, hi)`` (one output block), as a compact copy.

    ``n_dropped`` and ``n_used`` are not carried (they belong to the whole chunk, see
    :func:`dropped_of`).
    """
    a, b = np.searchsorted(p.idx, [lo, hi])
    if a == 0 and b == p.idx.size:
        return replace(p, n_dropped=0, n_used=0, layer_counts=())
    return Partial(**{k: None if (v := getattr(p, k)) is None else v[a:b].copy() for k in FIELDS}, ref=p.ref)


def dropped_of(p: Partial, layer: int | None = None) -> tuple[int, int]:
    """Footprints a chunk dropped and soundings it used (once per chunk, whatever the blocks it reaches).

    With ``layer``, only those of that period layer (see ``Partial.layer_counts``).
    """
    if layer is None:
        return int(p.n_dropped), int(p.n_used)
    if not p.layer_counts:
        return (int(p.n_dropped), int(p.n_used)) if layer == 0 else (0, 0)
    return (sum(d for k, d, _ in p.layer_counts if k == layer), sum(u for k, _, u in p.layer_counts if k == layer))


def _segments(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, unique sorted keys and segment starts of ``idx``."""
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    if s.size == 0:
        return order, s, np.empty(0, np.intp)
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    return order, s[starts], starts


def reduce_by_cell(
    idx: np.ndarray, w: np.ndarray, x: np.ndarray, u: np.ndarray | None, ref: float
) -> Partial:
    """Kernel: per-cell sums of weighted values (one row per (sounding, cell) pair).

    Parameters
    ----------
    idx : int64 array
        Flat cell index of each contribution (any order, repeats allowed, >= 0).
    w : float array
        Weight of each contribution (overlap fraction, 1 for point binning, or an
        inverse-variance weight).
    x : float array
        Value of each contribution (same units as ``ref``).
    u : float array or None
        1-sigma uncertainty of each value (same units), for the propagated
        uncertainty of the weighted mean; None if unknown.
    ref : float
        Reference subtracted from ``x`` before summing.
    """
    if idx.size == 0:
        return Partial.empty(ref)
    order, keys, starts = _segments(idx)
    ws = w[order].astype(np.float64)
    xs = x[order].astype(np.float64)
    d = xs - ref
    if u is None:
        uu = np.zeros_like(ws)
        umiss = np.ones(ws.shape, np.int64)
    else:
        us = u[order].astype(np.float64)
        ok = np.isfinite(us)
        uu = np.where(ok, ws * ws * us * us, 0.0)
        umiss = (~ok).astype(np.int64)
    ends = np.append(starts[1:], idx.size)
    return Partial(
        idx=keys.astype(np.int64),
        n=(ends - starts).astype(np.int64),
        sw=np.add.reduceat(ws, starts),
        swx=np.add.reduceat(ws * d, starts),
        swxx=np.add.reduceat(ws * d * d, starts),
        swwu=np.add.reduceat(uu, starts),
        nu_missing=np.add.reduceat(umiss, starts),
        vmin=np.minimum.reduceat(xs, starts),
        vmax=np.maximum.reduceat(xs, starts),
        ref=ref,
    )


def _rebase(p: Partial, ref: float) -> Partial:
    """Express ``p``'s sums relative to another reference value."""
    if p.ref == ref or len(p) == 0:
        return replace(p, ref=ref)
    delta = p.ref - ref  # x - ref = (x - p.ref) + delta
    swx = p.swx + delta * p.sw
    swxx = None if p.swxx is None else p.swxx + 2.0 * delta * p.swx + delta * delta * p.sw
    return replace(p, swx=swx, swxx=swxx, ref=ref)


_REDUCE = {"vmin": np.minimum, "vmax": np.maximum}


def merge(*partials: Partial) -> Partial:
    """Combine step: add the sums of the same cells; min of mins, max of maxes.

    All partials must hold the same optional arrays (they come from one binning).
    """
    dropped = sum(p.n_dropped for p in partials)
    used = sum(p.n_used for p in partials)
    parts = [p for p in partials if len(p)]
    if not parts:
        return replace(partials[0], n_dropped=dropped, n_used=used) if partials else Partial.empty(0.0, dropped)
    ref = parts[0].ref
    parts = [_rebase(p, ref) for p in parts]
    if len(parts) == 1:
        return replace(parts[0], n_dropped=dropped, n_used=used)
    present = [k for k in FIELDS if getattr(parts[0], k) is not None]
    if any(getattr(p, k) is None for p in parts for k in present):
        raise ValueError("merge: partials hold different statistics (trim them alike)")
    idx = np.concatenate([p.idx for p in parts])
    order, keys, starts = _segments(idx)
    out: dict[str, np.ndarray | None] = dict.fromkeys(FIELDS[1:])
    for k in present[1:]:
        cat = np.concatenate([getattr(p, k) for p in parts])[order]
        out[k] = _REDUCE.get(k, np.add).reduceat(cat, starts)
    return Partial(idx=keys, **out, ref=ref, n_dropped=dropped, n_used=used)  # type: ignore[arg-type]


def offset(p: Partial, by: int) -> Partial:
    """Shift a partial's cell indices by ``by`` (moves it to another period layer)."""
    return replace(p, idx=p.idx + by) if by else p


def _stat_values(p: Partial, sl: slice, keep: np.ndarray | slice, stat: str) -> np.ndarray:
    missing = [f for f in NEEDS.get(stat, ()) if getattr(p, f) is None]
    if missing:
        raise ValueError(f"statistic {stat!r} needs {missing}, which this binning did not keep")
    sw = p.sw[sl][keep]
    if stat == "count":
        return p.n[sl][keep]
    if stat == "weight":
        return sw
    if stat == "min":
        return p.vmin[sl][keep]
    if stat == "max":
        return p.vmax[sl][keep]
    if stat == "num_samples":
        return p.ns[sl][keep]
    mean_d = p.swx[sl][keep] / sw
    if stat == "mean":
        return mean_d + p.ref
    if stat == "std":
        return np.sqrt(np.maximum(p.swxx[sl][keep] / sw - mean_d * mean_d, 0.0))
    if stat == "uncertainty":
        unc = np.sqrt(p.swwu[sl][keep]) / sw
        return np.where(p.nu_missing[sl][keep] > 0, np.nan, unc)
    raise ValueError(f"unknown statistic {stat!r}; choose from {ALL_STATISTICS}")


#: Data type of each statistic's map.
STAT_DTYPES: dict[str, np.dtype] = {s: np.dtype(np.int32 if s == "count" else np.float32) for s in ALL_STATISTICS}

#: Value of a cell without data, per statistic.
EMPTY_VALUE: dict[str, float] = {s: (0.0 if s in ("count", "weight", "num_samples") else np.nan)
                                  for s in ALL_STATISTICS}


def constant_view(value: float, shape: tuple[int, ...], dtype: np.typing.DTypeLike) -> np.ndarray:
    """``value`` as ``dtype`` over ``shape``: a read-only broadcast view (no memory) that :func:`uniform_view` knows."""
    return np.broadcast_to(np.dtype(dtype).type(value), shape)


def empty_block(stat: str, shape: tuple[int, int]) -> np.ndarray:
    """An output block of ``stat`` without data: its empty value as a read-only broadcast view (no memory)."""
    return constant_view(EMPTY_VALUE[stat], shape, STAT_DTYPES[stat])


def uniform_view(block: np.ndarray) -> bool:
    """True for a constant broadcast view (stride 0 along every axis longer than 1).

    The finalize step returns such views for blocks without data (:func:`empty_block`),
    so they cost no memory; a view broadcast along one axis only is not constant and
    does not count.
    """
    return bool(block.size) and all(s == 0 for s, n in zip(block.strides, block.shape, strict=True) if n > 1)


def finalize_block(
    p: Partial, tiling: Tiling, layer: int, r0: int, r1: int, c0: int, c1: int, stat: str,
    min_weight: float = 0.0,
) -> np.ndarray:
    """Finalize step: the dense ``(r1 - r0, c1 - c0)`` array of one statistic in a block of tiles.

    The block (rows ``r0:r1``, columns ``c0:c1`` of period ``layer``) must be aligned to
    the tiling's tiles; each tile is finalized by :func:`finalize_statistics`, so the
    values and data type (:data:`STAT_DTYPES`: ``count`` int32, the others float32) are
    the same. Cells without data hold NaN, except ``count``, ``weight`` and
    ``num_samples`` (0). A cell whose summed weight is <= ``min_weight`` counts as
    empty. A block without any data is returned as a read-only broadcast view, so empty
    blocks never allocate memory. Statistics (:data:`STATISTICS`): the weighted
    ``mean``; the weighted population ``std`` ``sqrt(sum w (x - mean)² / sum w)``;
    ``count`` of contributing soundings; ``weight`` = sum of weights; ``min``/``max``;
    and the propagated 1-sigma ``uncertainty`` of the weighted mean,
    ``sqrt(sum w² sigma²) / sum w`` (NaN if any contributing sounding lacked an
    uncertainty).
    """
    t = tiling.tile
    out: np.ndarray | None = None
    for tr in range(r0 // t, -(-r1 // t)):
        for tc in range(c0 // t, -(-c1 // t)):
            tid = layer * tiling.tiles_per_layer + tr * tiling.tile_cols + tc
            (arr,) = finalize_statistics(p, tiling, tid, (stat,), min_weight)
            if uniform_view(arr):  # a tile without data
                continue
            if out is None:
                out = filled((r1 - r0, c1 - c0), STAT_DTYPES[stat], EMPTY_VALUE[stat])
            a, b, c, d = tiling.tile_bounds(tid)
            out[a - r0:b - r0, c - c0:d - c0] = arr
    if out is None:
        return empty_block(stat, (r1 - r0, c1 - c0))
    return out


def finalize_tile(p: Partial, tiling: Tiling, tile_id: int, min_weight: float = 0.0) -> np.ndarray:
    """All statistics of one tile (``tile_id``, any period layer), stacked ``(statistic, rows, cols)`` as float32."""
    return np.stack(finalize_statistics(p, tiling, tile_id, STATISTICS, min_weight)).astype(np.float32, copy=False)


def finalize_statistics(p: Partial, tiling: Tiling, tile_id: int, statistics: tuple[str, ...],
                        min_weight: float = 0.0) -> tuple[np.ndarray, ...]:
    """Finalize step of one output block: the chosen statistics of tile ``tile_id``, one ``(rows, cols)`` array each.

    ``p`` holds (at least) the block's cells. ``count`` is int32, the others float32.
    Cells without data hold NaN, except ``count``, ``weight`` and ``num_samples`` (0).
    The arrays are separate (not views of one stack), so a writer or a variable takes
    one without copying it. A statistic without data in the block is a read-only
    broadcast view (strides 0), so empty blocks cost no memory; in the others, the
    empty cells of large blocks cost no memory either until written
    (:func:`eo_pipeline._fill.filled`).
    """
    r0, r1, c0, c1 = tiling.tile_bounds(tile_id)
    shape = (r1 - r0, c1 - c0)
    lo, hi = tiling.tile_range(tile_id)
    a, b = np.searchsorted(p.idx, [lo, hi])
    keep = p.sw[a:b] > min_weight
    if b <= a or not keep.any():
        return tuple(empty_block(s, shape) for s in statistics)
    sl = slice(a, b)
    if keep.all():  # views, not copies, of the partial's arrays
        keep = slice(None)
    local = p.idx[sl][keep] - lo
    out = []
    for stat in statistics:
        arr = filled(shape, STAT_DTYPES[stat], EMPTY_VALUE[stat])
        _scatter_tile(arr, local, _stat_values(p, sl, keep, stat), tiling.sub, tiling.tile // tiling.sub)
        out.append(arr)
    return tuple(out)


@njit(cache=True, nogil=True)
def _scatter_tile(out, local, values, sub, per):  # pragma: no cover - compiled
    """``out[row, col] = values`` at the cells of ``local`` (offsets from the tile's first flat index).

    Equal to ``out[Tiling.local_rowcol(local)] = values`` for a tile of ``per`` x ``per``
    sub-tiles of ``sub`` cells. Offsets in ascending order (as partials hold them) are
    placed without a division per cell: the sub-tile and the row are recomputed only
    where they change (in any order, the result is the same).
    """
    ss = sub * sub
    base = -ss - 1
    sr = sc = r = rs = 0
    for i in range(local.size):
        k = local[i]
        rem = k - base
        if rem < 0 or rem >= ss:
            sid = k // ss
            base = sid * ss
            sr = sid // per
            sc = sid - sr * per
            rem = k - base
            r = rs = 0
        if rem < rs or rem >= rs + sub:
            r = rem // sub
            rs = r * sub
        out[sr * sub + r, sc * sub + rem - rs] = values[i]


def point_partial(
    row: np.ndarray, col: np.ndarray, x: np.ndarray, u: np.ndarray | None, valid: np.ndarray,
    tiling: Tiling, ref: float, inverse_variance: bool = False,
) -> Partial:
    """Kernel for ``point`` binning: each valid sounding goes to the cell holding its centre.

    Parameters
    ----------
    row, col : int arrays
        Cell of each sounding (-1 outside the grid), from ``GridSpec.rowcol``.
    x, u : float arrays
        Value and 1-sigma uncertainty.
    valid : bool array
        Soundings to use.
    tiling : Tiling
        Flat indexing of the output grid.
    ref : float
        Reference value for numerically stable sums.
    inverse_variance : bool
        Weight each sounding by 1/u² instead of 1 (soundings without a finite,
        positive uncertainty are then dropped).
    """
    ok = valid & (row >= 0) & (col >= 0) & np.isfinite(x)
    w = np.ones(x.shape, np.float64)
    if inverse_variance:
        if u is None:
            return Partial.empty(ref)
        good_u = np.isfinite(u) & (u > 0)
        ok &= good_u
        w = np.where(good_u, 1.0 / np.where(good_u, u, 1.0) ** 2, 0.0)
    idx = tiling.flat(row[ok], col[ok])
    out = reduce_by_cell(idx, w[ok], x[ok], None if u is None else u[ok], ref)
    return replace(out, n_used=int(np.count_nonzero(ok)))
