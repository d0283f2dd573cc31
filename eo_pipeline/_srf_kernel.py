# SPDX-License-Identifier: Apache-2.0
"""Compiled kernel of the ``srf`` gridding method: physics-based oversampling (numba).

Each sounding is spread over the grid by its instrument's spatial response function
(SRF), as in Sun et al. (2018), "A physics-based approach to oversample multi-satellite,
multispecies observations to a common grid", AMT 11, 6679, following the authors'
reference implementation (popy) step by step:

* axes and widths: with the corners in the canonical order (S5P's: (scanline-,
  pixel-), (scanline-, pixel+), (scanline+, pixel+), (scanline+, pixel-)), ``x`` runs
  across track from the edge of corners 0-3 to the edge of corners 1-2, ``y`` along
  track from the edge 0-1 to the edge 3-2; ``fwhm_x`` and ``fwhm_y`` are the distances
  between the midpoints of those edges;
* the map ``A``: the 4-point perspective transform (solved exactly, as OpenCV's
  ``getPerspectiveTransform`` does) that sends the corners, relative to the centre,
  to the corners of the rectangle ``[-fwhm_x/2, fwhm_x/2] x [-fwhm_y/2, fwhm_y/2]``,
  applied as popy applies it: its first two rows to ``(dx, dy, 1)``, without the
  perspective division (an affine map; exact for parallelogram pixels);
* the SRF at a cell centre ``p``: ``exp(-(|q_x/w_x|^k1 + |q_y/w_y|^k2)^k3) / s`` with
  ``q = A(p - c)``, ``w = fwhm / (2 ln2^(1/(k k3)))`` and ``s`` the shape's
  normalisation (:func:`srf_scale`);
* the window: the cells within ``ceil(extent_x / 2 / dx * f)`` columns and
  ``ceil(extent_y / 2 / dy * f)`` rows of the cell whose centre is nearest the pixel
  centre (ties to the lower coordinate, popy's lower index), ``extent`` the span of
  the corners' coordinates, ``f`` the window factor (1.5);
* per cell: ``num_samples += SRF``, ``weight += SRF / area x wm`` (``wm`` = 1, or
  1/sigma² for inverse-variance weighting), and the weighted sums of the values.

Coordinates are in the grid's own units (degrees on a lon/lat grid, as popy works,
metres or feet on a projected grid). Work is organised as in
:mod:`eo_pipeline._area_kernel`: windows are bucketed by the sub-tiles they touch, a
sub-tile is accumulated in a cache-sized buffer, and the touched cells are emitted in
the order of the tile-major flat cell index, so the output is a sorted partial ready
for the per-block combine. The kernel releases the GIL.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._area_kernel import add_to_cell, emit_cells, subtile_box, subtile_pairs

__all__ = ["srf_accumulate", "srf_transforms", "srf_scale", "SRF_SCALE"]

#: Normalisation ``s`` of the SRF for the shapes the reference implementation lists (else 1).
SRF_SCALE: dict[tuple[float, float, float], float] = {
    (2.0, 2.0, 1.0): 1.13309, (4.0, 2.0, 1.0): 1.05742, (2.0, 4.0, 1.0): 1.05742, (4.0, 4.0, 1.0): 0.9868,
}


def srf_scale(shape: tuple[float, float, float]) -> float:
    """Normalisation ``s`` of an SRF shape ``(k1, k2, k3)``: 1.13309, 1.05742, 0.9868 or 1."""
    return SRF_SCALE.get(tuple(float(k) for k in shape), 1.0)  # type: ignore[arg-type]


@njit(cache=True, inline="always")
def _solve8(m, r):
    """Solve the 8 x 8 system ``m h = r`` in place (Gaussian elimination, partial pivoting).

    Returns False when the system is singular (a degenerate pixel).
    """
    n = 8
    for c in range(n):
        piv = c
        best = abs(m[c, c])
        for i in range(c + 1, n):
            if abs(m[i, c]) > best:
                best = abs(m[i, c])
                piv = i
        if not best > 0.0:
            return False
        if piv != c:
            for j in range(n):
                tmp = m[c, j]
                m[c, j] = m[piv, j]
                m[piv, j] = tmp
            tmp = r[c]
            r[c] = r[piv]
            r[piv] = tmp
        for i in range(c + 1, n):
            f = m[i, c] / m[c, c]
            if f != 0.0:
                for j in range(c, n):
                    m[i, j] -= f * m[c, j]
                r[i] -= f * r[c]
    for c in range(n - 1, -1, -1):
        acc = r[c]
        for j in range(c + 1, n):
            acc -= m[c, j] * r[j]
        r[c] = acc / m[c, c]
    return True


@njit(cache=True, nogil=True)
def srf_transforms(ox, oy):
    """Widths and the map ``A`` of every pixel, from its corners relative to its centre.

    Parameters
    ----------
    ox, oy : float64 (N, 4)
        Corner offsets from the pixel centre in grid units, canonical corner order.

    Returns
    -------
    fwhm_x, fwhm_y : float64 (N,)
        Across- and along-track widths (grid units).
    amat : float64 (N, 6)
        ``a00, a01, t0, a10, a11, t1``: ``q_x = a00 dx + a01 dy + t0``,
        ``q_y = a10 dx + a11 dy + t1`` for an offset ``(dx, dy)`` from the centre.
    ok : bool (N,)
        False where the corners do not define a transform (degenerate pixel).
    """
    n = ox.shape[0]
    fx = np.empty(n)
    fy = np.empty(n)
    amat = np.zeros((n, 6))
    ok = np.zeros(n, np.bool_)
    m = np.empty((8, 8))
    r = np.empty(8)
    tx = np.empty(4)
    ty = np.empty(4)
    for i in range(n):
        # across track: from the midpoint of edge 0-3 to that of edge 1-2; along: 0-1 to 3-2
        ax = 0.5 * (ox[i, 1] + ox[i, 2]) - 0.5 * (ox[i, 0] + ox[i, 3])
        ay = 0.5 * (oy[i, 1] + oy[i, 2]) - 0.5 * (oy[i, 0] + oy[i, 3])
        bx = 0.5 * (ox[i, 2] + ox[i, 3]) - 0.5 * (ox[i, 0] + ox[i, 1])
        by = 0.5 * (oy[i, 2] + oy[i, 3]) - 0.5 * (oy[i, 0] + oy[i, 1])
        wx = math.sqrt(ax * ax + ay * ay)
        wy = math.sqrt(bx * bx + by * by)
        fx[i] = wx
        fy[i] = wy
        if not (wx > 0.0 and wy > 0.0 and np.isfinite(wx) and np.isfinite(wy)):
            continue
        tx[0] = -0.5 * wx
        ty[0] = -0.5 * wy
        tx[1] = 0.5 * wx
        ty[1] = -0.5 * wy
        tx[2] = 0.5 * wx
        ty[2] = 0.5 * wy
        tx[3] = -0.5 * wx
        ty[3] = 0.5 * wy
        for k in range(4):
            u = ox[i, k]
            v = oy[i, k]
            m[k, 0] = u
            m[k, 1] = v
            m[k, 2] = 1.0
            m[k, 3] = 0.0
            m[k, 4] = 0.0
            m[k, 5] = 0.0
            m[k, 6] = -u * tx[k]
            m[k, 7] = -v * tx[k]
            r[k] = tx[k]
            m[k + 4, 0] = 0.0
            m[k + 4, 1] = 0.0
            m[k + 4, 2] = 0.0
            m[k + 4, 3] = u
            m[k + 4, 4] = v
            m[k + 4, 5] = 1.0
            m[k + 4, 6] = -u * ty[k]
            m[k + 4, 7] = -v * ty[k]
            r[k + 4] = ty[k]
        if not _solve8(m, r):
            continue
        good = True
        for j in range(6):
            if not np.isfinite(r[j]):
                good = False
        if not good:
            continue
        amat[i, 0] = r[0]
        amat[i, 1] = r[1]
        amat[i, 2] = r[2]
        amat[i, 3] = r[3]
        amat[i, 4] = r[4]
        amat[i, 5] = r[5]
        ok[i] = True
    return fx, fy, amat, ok


@njit(cache=True, inline="always")
def _pow(a, k):
    """``a ** k`` for ``a >= 0`` with the common integer exponents multiplied out."""
    if k == 1.0:
        return a
    if k == 2.0:
        return a * a
    if k == 4.0:
        a2 = a * a
        return a2 * a2
    if k == 6.0:
        a2 = a * a
        return a2 * a2 * a2
    return a ** k


@njit(cache=True)
def srf_windows(cx, cy, ox, oy, x0, dx, y0, dy, rows, cols, wrap, window):
    """Window of every pixel: its centre cell and half-widths, in cells.

    ``cx`` must already lie in ``[x0, x0 + cols dx]`` (geographic grids: longitudes
    moved there modulo 360), ``cy`` in the grid's rows. The centre cell is the one
    whose centre is nearest, ties to the lower coordinate; half-widths are
    ``ceil(extent / 2 / cell * window)``. With ``wrap`` (a global lon/lat grid), at
    most ``cols`` columns.
    """
    n = cx.shape[0]
    jc = np.empty(n, np.int64)
    ic = np.empty(n, np.int64)
    ec = np.empty(n, np.int64)
    er = np.empty(n, np.int64)
    for i in range(n):
        # nearest centre, ties to the lower coordinate: lower column, higher row (north-up)
        j = int(math.ceil((cx[i] - x0) / dx - 1.0))
        r = int(math.floor((y0 - cy[i]) / dy))
        jc[i] = min(max(j, 0), cols - 1)
        ic[i] = min(max(r, 0), rows - 1)
        xmin = ox[i, 0]
        xmax = ox[i, 0]
        ymin = oy[i, 0]
        ymax = oy[i, 0]
        for k in range(1, 4):
            xmin = min(xmin, ox[i, k])
            xmax = max(xmax, ox[i, k])
            ymin = min(ymin, oy[i, k])
            ymax = max(ymax, oy[i, k])
        ec[i] = int(math.ceil((xmax - xmin) / 2.0 / dx * window))
        er[i] = int(math.ceil((ymax - ymin) / 2.0 / dy * window))
        if wrap and 2 * ec[i] + 1 > cols:
            ec[i] = (cols - 1) // 2
    return jc, ic, ec, er


@njit(cache=True, nogil=True)
def srf_accumulate(cx, cy, ox, oy, area, x, wm, u, ref, x0, dx, y0, dy, rows, cols, wrap, period,
                   k1, k2, k3, scale, window, tile, sub):
    """Spread every pixel's SRF over the cells of its window and accumulate per-cell sums.

    Parameters
    ----------
    cx, cy : float64 (N,)
        Pixel centres in grid units (inside the grid; see :func:`srf_windows`).
    ox, oy : float64 (N, 4)
        Corner offsets from the centre in grid units (canonical order).
    area : float64 (N,)
        Pixel areas in grid units squared (degrees² on a lon/lat grid).
    x, wm, u : float64 (N,)
        Values, weight multipliers (1 or 1/sigma²) and 1-sigma uncertainties.
    ref : float
        Reference subtracted from ``x`` before summing.
    x0, dx, y0, dy : float
        Left edge, cell width, top edge and cell height (> 0) of the grid.
    rows, cols : int
        Grid shape.
    wrap : bool
        A global lon/lat grid: columns wrap around (antimeridian).
    period : float
        Longitude period (360) of a lon/lat grid, 0 for a projected grid; cell offsets
        are taken modulo it, into [-period/2, period/2).
    k1, k2, k3, scale : float
        SRF shape and normalisation.
    window : float
        Window factor (1.5).
    tile, sub : int
        Tiling of the flat cell index (see :class:`eo_pipeline.binning.Tiling`).

    Returns
    -------
    tuple of arrays
        ``idx, n, sw, swx, swxx, swwu, nu_missing, vmin, vmax, ns`` of the cells that
        received a positive SRF, sorted by flat index, then the number of pixels used
        and the number dropped (degenerate corners, zero area).
    """
    n = cx.shape[0]
    fx, fy, amat, ok = srf_transforms(ox, oy)
    jc, ic, ec, er = srf_windows(cx, cy, ox, oy, x0, dx, y0, dy, rows, cols, wrap, window)
    kfx = 2.0 * math.log(2.0) ** (1.0 / k1 / k3)
    kfy = 2.0 * math.log(2.0) ** (1.0 / k2 / k3)
    # pieces: a window, or its two parts where it wraps around the antimeridian
    pc0 = np.empty(2 * n, np.int64)
    pc1 = np.empty(2 * n, np.int64)
    pr0 = np.empty(2 * n, np.int64)
    pr1 = np.empty(2 * n, np.int64)
    ppx = np.empty(2 * n, np.int64)
    npc = 0
    used = 0
    dropped = 0
    for i in range(n):
        if not (ok[i] and area[i] > 0.0 and np.isfinite(area[i]) and np.isfinite(x[i])):
            dropped += 1
            continue
        used += 1
        r0 = max(ic[i] - er[i], 0)
        r1 = min(ic[i] + er[i], rows - 1)
        a = jc[i] - ec[i]
        b = jc[i] + ec[i]
        if wrap:
            if a < 0:
                pr0[npc] = r0
                pr1[npc] = r1
                pc0[npc] = a + cols
                pc1[npc] = cols - 1
                ppx[npc] = i
                npc += 1
                a = 0
            if b > cols - 1:
                pr0[npc] = r0
                pr1[npc] = r1
                pc0[npc] = 0
                pc1[npc] = b - cols
                ppx[npc] = i
                npc += 1
                b = cols - 1
        else:
            a = max(a, 0)
            b = min(b, cols - 1)
        pr0[npc] = r0
        pr1[npc] = r1
        pc0[npc] = a
        pc1[npc] = b
        ppx[npc] = i
        npc += 1
    tile_cols = (cols + tile - 1) // tile
    per = tile // sub
    npairs = 0
    ncells = 0
    for p in range(npc):
        npairs += (pr1[p] // sub - pr0[p] // sub + 1) * (pc1[p] // sub - pc0[p] // sub + 1)
        ncells += (pr1[p] - pr0[p] + 1) * (pc1[p] - pc0[p] + 1)
    pair_key, pair_piece, order = subtile_pairs(pr0[:npc], pr1[:npc], pc0[:npc], pc1[:npc], npairs, tile_cols,
                                                per, sub)
    o_idx = np.empty(ncells, np.int64)
    o_n = np.empty(ncells, np.int64)
    o_sw = np.empty(ncells)
    o_swx = np.empty(ncells)
    o_swxx = np.empty(ncells)
    o_swwu = np.empty(ncells)
    o_um = np.empty(ncells, np.int64)
    o_min = np.empty(ncells)
    o_max = np.empty(ncells)
    o_ns = np.empty(ncells)
    no = 0
    ss = sub * sub
    # accumulators side by side per cell: n, sw, swx, swxx, swwu, n_u_missing, min, max, num_samples
    acc = np.zeros((ss, 9))
    touched = np.empty(ss, np.int64)
    half = 0.5 * period
    p = 0
    while p < npairs:
        key = pair_key[order[p]]
        q = p
        while q < npairs and pair_key[order[q]] == key:
            q += 1
        srow0, scol0, srow1, scol1 = subtile_box(key, per, tile_cols, tile, sub, rows, cols)
        nt = 0
        for s in range(p, q):
            pc = pair_piece[order[s]]
            i = ppx[pc]
            ca = max(pc0[pc], scol0)
            cb = min(pc1[pc], scol1)
            ra = max(pr0[pc], srow0)
            rb = min(pr1[pc], srow1)
            a00 = amat[i, 0]
            a01 = amat[i, 1]
            t0 = amat[i, 2]
            a10 = amat[i, 3]
            a11 = amat[i, 4]
            t1 = amat[i, 5]
            wxi = fx[i] / kfx
            wyi = fy[i] / kfy
            inv_area = wm[i] / area[i]
            xv = x[i]
            xi = xv - ref
            ui = u[i]
            u_ok = np.isfinite(ui)
            for rr in range(ra, rb + 1):
                ddy = (y0 - (rr + 0.5) * dy) - cy[i]
                base_loc = (rr - srow0) * sub - scol0
                for cc in range(ca, cb + 1):
                    ddx = (x0 + (cc + 0.5) * dx) - cx[i]
                    if period > 0.0:
                        ddx = (ddx + half) % period - half
                    qx = a00 * ddx + a01 * ddy + t0
                    qy = a10 * ddx + a11 * ddy + t1
                    e = _pow(abs(qx / wxi), k1) + _pow(abs(qy / wyi), k2)
                    if k3 != 1.0:
                        e = e ** k3
                    sg = math.exp(-e) / scale
                    if not sg > 0.0:
                        continue
                    loc = base_loc + cc
                    nt = add_to_cell(acc, loc, touched, nt, sg * inv_area, xv, xi, ui, u_ok)
                    acc[loc, 8] += sg
        no = emit_cells(acc, touched, nt, key * ss, o_idx, o_n, o_sw, o_swx, o_swxx, o_swwu, o_um, o_min, o_max,
                        o_ns, no)
        p = q
    # copies of the used length: the buffers are sized for every window cell, which overlapping windows
    # share, and a partial is held until every output block has taken its cells
    return (o_idx[:no].copy(), o_n[:no].copy(), o_sw[:no].copy(), o_swx[:no].copy(), o_swxx[:no].copy(),
            o_swwu[:no].copy(), o_um[:no].copy(), o_min[:no].copy(), o_max[:no].copy(), o_ns[:no].copy(), used, dropped)
