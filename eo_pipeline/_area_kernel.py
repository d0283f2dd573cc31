# SPDX-License-Identifier: Apache-2.0
"""Compiled overlap-and-accumulate kernel of the ``area`` binning method (numba).

Polygons arrive in *cell-index space* of the target grid (``col = (x - x0) / dx``,
``row = (y0 - y) / dy``), where every cell is the unit square
``[c, c+1] x [r, r+1]``; the overlap area of a polygon with a cell in that space is
directly the fraction of the cell it covers, HARP's weight.

Overlaps are exact, from the coverage identity used by scan-line rasterisers: for each
polygon edge and each column it crosses, the signed area between the edge and the
cells of that column is ``sign(dx) * integral of clamp(y(x) - r, 0, 1) dx`` (closed
form for a straight edge); rows wholly on one side of the edge get the full column
width through a difference array. Summed over the edges, this gives the overlap with
every cell in the bounding box at a cost proportional to the cells crossed by edges
plus the bounding box, for any simple polygon (convex or not).

Work is organised by sub-tile: polygons are bucketed by the sub-tiles their bounding
boxes touch, each sub-tile is accumulated in one dense scratch buffer small enough to
stay in the CPU cache (the sums of a cell side by side), and only the touched cells are
emitted, in the order of the flat cell index. Memory is one sub-tile buffer plus the
output; nothing is allocated for tiles without data. The kernel releases the GIL, so
dask's threads run chunks in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["area_accumulate", "polygon_area", "subtile_pairs", "subtile_box", "add_to_cell", "emit_cells"]

_EPS_AREA = 1e-12  # overlaps below this fraction of a cell are rounding slivers, not contributions


@njit(cache=True, inline="always")
def _area(xs, ys, n):
    a = 0.0
    if n < 3:
        return 0.0
    jx = xs[n - 1]
    jy = ys[n - 1]
    for i in range(n):
        a += (jx + xs[i]) * (jy - ys[i])
        jx = xs[i]
        jy = ys[i]
    return abs(a) * 0.5


@njit(cache=True)
def polygon_area(px, py, nv):
    """Planar area of each polygon (N, K) with ``nv`` vertices each."""
    out = np.empty(px.shape[0])
    for i in range(px.shape[0]):
        out[i] = _area(px[i], py[i], nv[i])
    return out


@njit(cache=True)
def _bbox_tiles(px, py, nv, rows, cols, sub):
    """Clamped cell bounding box of every polygon, the number of (polygon, sub-tile) pairs
    and an upper bound of the (polygon, cell) pairs.
    """
    n = px.shape[0]
    r0 = np.empty(n, np.int64)
    r1 = np.empty(n, np.int64)
    c0 = np.empty(n, np.int64)
    c1 = np.empty(n, np.int64)
    npairs = 0
    ncells = 0
    for i in range(n):
        k = nv[i]
        if k < 3:
            r0[i] = 1
            r1[i] = 0
            continue
        xmin = px[i, 0]
        xmax = px[i, 0]
        ymin = py[i, 0]
        ymax = py[i, 0]
        for j in range(1, k):
            xmin = min(xmin, px[i, j])
            xmax = max(xmax, px[i, j])
            ymin = min(ymin, py[i, j])
            ymax = max(ymax, py[i, j])
        if not (np.isfinite(xmin) and np.isfinite(xmax) and np.isfinite(ymin) and np.isfinite(ymax)):
            r0[i] = 1
            r1[i] = 0
            continue
        a = max(int(np.floor(xmin)), 0)
        b = min(int(np.floor(xmax)), cols - 1)
        c = max(int(np.floor(ymin)), 0)
        d = min(int(np.floor(ymax)), rows - 1)
        if a > b or c > d:
            r0[i] = 1
            r1[i] = 0
            continue
        c0[i] = a
        c1[i] = b
        r0[i] = c
        r1[i] = d
        npairs += (d // sub - c // sub + 1) * (b // sub - a // sub + 1)
        ncells += (d - c + 1) * (b - a + 1)
    return r0, r1, c0, c1, npairs, ncells


@njit(cache=True, inline="always")
def _band(v):
    """Antiderivative of clamp(v, 0, 1)."""
    if v <= 0.0:
        return 0.0
    if v >= 1.0:
        return v - 0.5
    return 0.5 * v * v


@njit(cache=True, inline="always")
def _clamp_mean(f0, f1):
    """Exact mean of clamp(f, 0, 1) over a straight segment from f0 to f1.

    Written case by case so that nearly level edges (f0 close to f1) lose no precision:
    inside the band it is the plain average; crossing one edge of the band it is that
    average minus (or the area of) one triangle; only segments crossing both edges use
    the antiderivative difference, where |f1 - f0| > 1 and nothing cancels.
    """
    lo = min(f0, f1)
    hi = max(f0, f1)
    if hi <= 0.0:
        return 0.0
    if lo >= 1.0:
        return 1.0
    if lo >= 0.0 and hi <= 1.0:
        return 0.5 * (f0 + f1)
    if lo >= 0.0:  # crosses 1 only
        return 0.5 * (f0 + f1) - 0.5 * (hi - 1.0) * (hi - 1.0) / (hi - lo)
    if hi <= 1.0:  # crosses 0 only
        return 0.5 * hi * hi / (hi - lo)
    return (_band(f1) - _band(f0)) / (f1 - f0)


@njit(cache=True)
def _coverage(pxi, pyi, k, ra, rb, ca, cb, r_top, scratch, full, width):
    """Signed overlap areas of one polygon with cells rows ra..rb x cols ca..cb (into ``scratch``).

    Uses the coverage identity: for each edge e and column c, the signed area between the
    edge and the cells of that column is ``sign(dx) * integral of clamp(y_e(x) - r, 0, 1) dx``
    over the edge's part in [c, c+1]; rows above the edge's lowest point in that column get
    the full width (added through a difference array ``full`` and a prefix sum). The
    per-cell sum over edges is minus/plus the overlap area, whatever the polygon's shape.
    ``r_top`` is the first row of the polygon's bounding box: rows above it receive
    cancelling contributions from the polygon's two sides and are skipped.
    """
    nr = rb - ra + 1
    for i in range(k):
        x1 = pxi[i]
        y1 = pyi[i]
        j = i + 1 if i + 1 < k else 0
        x2 = pxi[j]
        y2 = pyi[j]
        if x1 == x2:
            continue
        sgn = 1.0
        if x2 < x1:
            x1, x2 = x2, x1
            y1, y2 = y2, y1
            sgn = -1.0
        slope = (y2 - y1) / (x2 - x1)
        c_lo = max(int(np.floor(x1)), ca)
        c_hi = min(int(np.floor(x2)), cb)
        if x2 == np.floor(x2) and int(x2) - 1 >= c_lo:
            c_hi = min(c_hi, int(x2) - 1)
        for c in range(c_lo, c_hi + 1):
            xa = max(x1, float(c))
            xb = min(x2, float(c + 1))
            if xb <= xa:
                continue
            ya = y1 + slope * (xa - x1)
            yb = y1 + slope * (xb - x1)
            w = xb - xa
            lo = min(ya, yb)
            hi = max(ya, yb)
            col = c - ca
            first = int(np.floor(lo))
            # rows strictly above the edge's part in this column, from the bbox top: full width
            r_start = max(r_top, ra)
            r_stop = min(first, rb + 1)
            if r_stop > r_start:
                full[(r_start - ra) * width + col] += sgn * w
                full[(r_stop - ra) * width + col] -= sgn * w
            last = min(int(np.floor(hi)), rb)
            for r in range(max(first, ra), last + 1):
                scratch[(r - ra) * width + col] += sgn * w * _clamp_mean(ya - r, yb - r)
    # prefix sums of the full-width contributions down each column
    for col in range(cb - ca + 1):
        run = 0.0
        for r in range(nr):
            run += full[r * width + col]
            full[r * width + col] = 0.0
            scratch[r * width + col] += run
        full[nr * width + col] = 0.0


@njit(cache=True)
def subtile_pairs(r0, r1, c0, c1, npairs, tile_cols, per, sub):
    """Bucket cell boxes by the sub-tiles they touch (boxes with ``r0 > r1`` are skipped).

    Returns the pairs' keys (tile id x sub-tiles per tile + sub-tile id: they sort like the
    flat cell index), the box of each pair and the stable order of the keys.
    """
    pair_key = np.empty(npairs, np.int64)
    pair_box = np.empty(npairs, np.int64)
    k = 0
    for i in range(r0.shape[0]):
        if r0[i] > r1[i]:
            continue
        for sr in range(r0[i] // sub, r1[i] // sub + 1):
            for sc in range(c0[i] // sub, c1[i] // sub + 1):
                tid = (sr // per) * tile_cols + sc // per
                pair_key[k] = tid * per * per + (sr % per) * per + sc % per
                pair_box[k] = i
                k += 1
    return pair_key, pair_box, np.argsort(pair_key, kind="mergesort")


@njit(cache=True, inline="always")
def subtile_box(key, per, tile_cols, tile, sub, rows, cols):
    """First row, first column, last row and last column of sub-tile ``key``."""
    tid = key // (per * per)
    sid = key % (per * per)
    srow0 = (tid // tile_cols) * tile + (sid // per) * sub
    scol0 = (tid % tile_cols) * tile + (sid % per) * sub
    return srow0, scol0, min(srow0 + sub, rows) - 1, min(scol0 + sub, cols) - 1


@njit(cache=True, inline="always")
def add_to_cell(acc, loc, touched, nt, w, xv, xi, ui, u_ok):
    """Add one contribution of weight ``w`` and value ``xv`` (``xi = xv - ref``) to cell ``loc``.

    ``acc`` holds per cell: n, sw, swx, swxx, swwu, n_u_missing, min, max (and more columns
    a kernel fills itself); a cell's first contribution is recorded in ``touched``.
    Returns the new number of touched cells.
    """
    if acc[loc, 0] == 0.0:
        touched[nt] = loc
        nt += 1
        acc[loc, 6] = xv
        acc[loc, 7] = xv
    acc[loc, 0] += 1.0
    acc[loc, 1] += w
    acc[loc, 2] += w * xi
    acc[loc, 3] += w * xi * xi
    if u_ok:
        acc[loc, 4] += w * w * ui * ui
    else:
        acc[loc, 5] += 1.0
    if xv < acc[loc, 6]:
        acc[loc, 6] = xv
    if xv > acc[loc, 7]:
        acc[loc, 7] = xv
    return nt


@njit(cache=True, inline="always")
def emit_cells(acc, touched, nt, base, o_idx, o_n, o_sw, o_swx, o_swxx, o_swwu, o_um, o_min, o_max, o_ns, no):
    """Write a sub-tile's touched cells in index order (from flat index ``base``) and clear them.

    Few touched cells are sorted, else the sub-tile is scanned. ``o_ns`` (column 8 of
    ``acc``) is written when it is not empty. Returns the new number of cells written.
    """
    ss = acc.shape[0]
    ncol = acc.shape[1]
    if nt * 8 < ss:
        order_t = np.sort(touched[:nt])
    else:
        order_t = np.arange(ss)
    for loc in order_t:
        if acc[loc, 0] == 0.0:
            continue
        o_idx[no] = base + loc
        o_n[no] = int(acc[loc, 0])
        o_sw[no] = acc[loc, 1]
        o_swx[no] = acc[loc, 2]
        o_swxx[no] = acc[loc, 3]
        o_swwu[no] = acc[loc, 4]
        o_um[no] = int(acc[loc, 5])
        o_min[no] = acc[loc, 6]
        o_max[no] = acc[loc, 7]
        if o_ns.shape[0] > 0:
            o_ns[no] = acc[loc, 8]
        no += 1
        for c in range(ncol):
            acc[loc, c] = 0.0
    return no


@njit(cache=True, nogil=True)
def area_accumulate(px, py, nv, x, wm, u, ref, rows, cols, tile, sub):
    """Overlap every polygon with every cell it touches and accumulate per-cell sums.

    Parameters
    ----------
    px, py : float64 (N, K)
        Polygon vertices in cell-index space (padding beyond ``nv`` is ignored).
    nv : int64 (N,)
        Vertices per polygon (< 3 skips the polygon).
    x : float64 (N,)
        Values.
    wm : float64 (N,)
        Weight multiplier per polygon (1, or 1/sigma² for inverse-variance weighting).
    u : float64 (N,)
        1-sigma uncertainties (NaN if unknown).
    ref : float
        Reference subtracted from ``x`` before summing.
    rows, cols, tile, sub : int
        Grid shape, tile and sub-tile sizes of the flat cell index (see
        :class:`eo_pipeline.binning.Tiling`); accumulation works one sub-tile at a time,
        in a buffer small enough to stay in the CPU cache.

    Returns
    -------
    tuple of arrays
        ``idx, n, sw, swx, swxx, swwu, nu_missing, vmin, vmax`` for the touched cells,
        sorted by flat index, plus the number of polygons that touched the grid.
    """
    tile_cols = (cols + tile - 1) // tile
    per = tile // sub  # sub-tiles per tile side
    r0, r1, c0, c1, npairs, ncells = _bbox_tiles(px, py, nv, rows, cols, sub)
    n = px.shape[0]
    # bucket polygons by the sub-tiles their boxes touch; keys sort like the flat cell index
    used = 0
    for i in range(n):
        if r0[i] <= r1[i]:
            used += 1
    pair_key, pair_poly, order = subtile_pairs(r0, r1, c0, c1, npairs, tile_cols, per, sub)
    o_idx = np.empty(ncells, np.int64)
    o_n = np.empty(ncells, np.int64)
    o_sw = np.empty(ncells)
    o_swx = np.empty(ncells)
    o_swxx = np.empty(ncells)
    o_swwu = np.empty(ncells)
    o_um = np.empty(ncells, np.int64)
    o_min = np.empty(ncells)
    o_max = np.empty(ncells)
    empty_ns = np.empty(0)
    no = 0
    ss = sub * sub
    # accumulators side by side per cell (one cache line): n, sw, swx, swxx, swwu, n_u_missing, min, max
    acc = np.zeros((ss, 8))  # a sub-tile's worth: stays in cache; min/max set on first touch
    touched = np.empty(ss, np.int64)
    scratch = np.zeros(ss)
    full = np.zeros(ss + sub)
    p = 0
    while p < npairs:
        key = pair_key[order[p]]
        q = p
        while q < npairs and pair_key[order[q]] == key:
            q += 1
        srow0, scol0, srow1, scol1 = subtile_box(key, per, tile_cols, tile, sub, rows, cols)
        nt = 0
        for s in range(p, q):
            i = pair_poly[order[s]]
            ca = max(c0[i], scol0)
            cb = min(c1[i], scol1)
            ra = max(r0[i], srow0)
            rb = min(r1[i], srow1)
            width = cb - ca + 1
            _coverage(px[i], py[i], nv[i], ra, rb, ca, cb, r0[i], scratch, full, width)
            xv = x[i]
            xi = xv - ref
            wi = wm[i]
            ui = u[i]
            u_ok = np.isfinite(ui)
            for rr in range(rb - ra + 1):
                base_loc = (ra + rr - srow0) * sub + (ca - scol0)
                for cc in range(width):
                    a = abs(scratch[rr * width + cc])
                    if a <= _EPS_AREA:
                        continue
                    scratch[rr * width + cc] = 0.0
                    nt = add_to_cell(acc, base_loc + cc, touched, nt, a * wi, xv, xi, ui, u_ok)
            # clear what the coverage left below the emission threshold
            for rr in range(rb - ra + 1):
                for cc in range(width):
                    scratch[rr * width + cc] = 0.0
        # emit the touched cells in index order
        no = emit_cells(acc, touched, nt, key * ss, o_idx, o_n, o_sw, o_swx, o_swxx, o_swwu, o_um, o_min, o_max,
                        empty_ns, no)
        p = q
    return (o_idx[:no], o_n[:no], o_sw[:no], o_swx[:no], o_swxx[:no], o_swwu[:no], o_um[:no], o_min[:no],
            o_max[:no], used)
