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

Work is organised by output tile: polygons are bucketed by the tiles their bounding
boxes touch, each tile is accumulated in one dense scratch buffer (the sums of a cell
side by side), and only the touched cells are emitted, in tile-major order. Memory is
one tile buffer plus the output; nothing is allocated for tiles without data. The
kernel releases the GIL, so dask's threads run chunks in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["area_accumulate", "polygon_area"]

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
def _bbox_tiles(px, py, nv, rows, cols, tile, tile_cols):
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
        a = max(int(np.floor(xmin)), 0)
        b = min(int(np.floor(xmax)), cols - 1)
        c = max(int(np.floor(ymin)), 0)
        d = min(int(np.floor(ymax)), rows - 1)
        if not (np.isfinite(xmin) and np.isfinite(xmax) and np.isfinite(ymin) and np.isfinite(ymax)) or a > b or c > d:
            r0[i] = 1
            r1[i] = 0
            continue
        c0[i] = a
        c1[i] = b
        r0[i] = c
        r1[i] = d
        npairs += (d // tile - c // tile + 1) * (b // tile - a // tile + 1)
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
            dy = yb - ya
            for r in range(max(first, ra), last + 1):
                if dy == 0.0:
                    v = min(max(ya - r, 0.0), 1.0) * w
                else:
                    v = w * (_band(yb - r) - _band(ya - r)) / dy
                scratch[(r - ra) * width + col] += sgn * v
    # prefix sums of the full-width contributions down each column
    for col in range(cb - ca + 1):
        run = 0.0
        for r in range(nr):
            run += full[r * width + col]
            full[r * width + col] = 0.0
            scratch[r * width + col] += run
        full[nr * width + col] = 0.0


@njit(cache=True, nogil=True)
def area_accumulate(px, py, nv, x, wm, u, ref, rows, cols, tile):
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
    rows, cols, tile : int
        Grid shape and tile size of the tile-major cell index.

    Returns
    -------
    tuple of arrays
        ``idx, n, sw, swx, swxx, swwu, nu_missing, vmin, vmax`` for the touched cells,
        sorted by tile-major index, plus the number of polygons that touched the grid.
    """
    tile_cols = (cols + tile - 1) // tile
    r0, r1, c0, c1, npairs, ncells = _bbox_tiles(px, py, nv, rows, cols, tile, tile_cols)
    n = px.shape[0]
    pair_tile = np.empty(npairs, np.int64)
    pair_poly = np.empty(npairs, np.int64)
    k = 0
    used = 0
    for i in range(n):
        if r0[i] > r1[i]:
            continue
        used += 1
        for tr in range(r0[i] // tile, r1[i] // tile + 1):
            for tc in range(c0[i] // tile, c1[i] // tile + 1):
                pair_tile[k] = tr * tile_cols + tc
                pair_poly[k] = i
                k += 1
    order = np.argsort(pair_tile, kind="mergesort")
    o_idx = np.empty(ncells, np.int64)
    o_n = np.empty(ncells, np.int64)
    o_sw = np.empty(ncells)
    o_swx = np.empty(ncells)
    o_swxx = np.empty(ncells)
    o_swwu = np.empty(ncells)
    o_um = np.empty(ncells, np.int64)
    o_min = np.empty(ncells)
    o_max = np.empty(ncells)
    no = 0
    tt = tile * tile
    # accumulators side by side per cell (one cache line): n, sw, swx, swxx, swwu, n_u_missing, min, max
    acc = np.zeros((tt, 8))
    acc[:, 6] = np.inf
    acc[:, 7] = -np.inf
    touched = np.empty(tt, np.int64)
    scratch = np.zeros(tt)
    full = np.zeros(tt + tile)
    p = 0
    while p < npairs:
        tid = pair_tile[order[p]]
        q = p
        while q < npairs and pair_tile[order[q]] == tid:
            q += 1
        tr = tid // tile_cols
        tc = tid % tile_cols
        trow0 = tr * tile
        tcol0 = tc * tile
        trow1 = min(trow0 + tile, rows) - 1
        tcol1 = min(tcol0 + tile, cols) - 1
        nt = 0
        for s in range(p, q):
            i = pair_poly[order[s]]
            ca = max(c0[i], tcol0)
            cb = min(c1[i], tcol1)
            ra = max(r0[i], trow0)
            rb = min(r1[i], trow1)
            width = cb - ca + 1
            _coverage(px[i], py[i], nv[i], ra, rb, ca, cb, r0[i], scratch, full, width)
            xv = x[i]
            xi = xv - ref
            wi = wm[i]
            ui = u[i]
            u_ok = np.isfinite(ui)
            for rr in range(rb - ra + 1):
                base_loc = (ra + rr - trow0) * tile + (ca - tcol0)
                for cc in range(width):
                    a = abs(scratch[rr * width + cc])
                    if a <= _EPS_AREA:
                        continue
                    scratch[rr * width + cc] = 0.0
                    loc = base_loc + cc
                    if acc[loc, 0] == 0.0:
                        touched[nt] = loc
                        nt += 1
                    w = a * wi
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
            # clear what the coverage left below the emission threshold
            for rr in range(rb - ra + 1):
                for cc in range(width):
                    scratch[rr * width + cc] = 0.0
        # emit the touched cells in index order: scan between the extreme touched cells
        lo_loc = tt
        hi_loc = -1
        for j in range(nt):
            lo_loc = min(lo_loc, touched[j])
            hi_loc = max(hi_loc, touched[j])
        base = tid * tt
        for loc in range(lo_loc, hi_loc + 1):
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
            no += 1
            acc[loc, 0:6] = 0.0
            acc[loc, 6] = np.inf
            acc[loc, 7] = -np.inf
        p = q
    return (o_idx[:no], o_n[:no], o_sw[:no], o_swx[:no], o_swxx[:no], o_swwu[:no], o_um[:no], o_min[:no],
            o_max[:no], used)
