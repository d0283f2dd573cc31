# SPDX-License-Identifier: Apache-2.0
"""Sounding footprints: read, derived from pixel centres, or modelled as circles; as grid polygons.

Footprints are turned into polygons in a target grid's cell-index space.

Corner derivation for swaths (S5P order kept)
---------------------------------------------
Every interior corner is the mean of the four pixel centres around it, in degrees,
with longitudes unwrapped first; corners on the swath's edges and ends are
extrapolated linearly from the two nearest rows or columns of corners. Pixel
``(i, j)`` then has corners ``G[i, j], G[i, j+1], G[i+1, j+1], G[i+1, j]`` (S5P order:
(scanline-, pixel-), (scanline-, pixel+), (scanline+, pixel+), (scanline+, pixel-)).

Polygons on a grid
------------------
Corners are unwrapped around the first corner, projected into the grid's CRS with
pyproj (geographic grids keep degrees), and scaled to cell-index space, where every
cell is a unit square. Geographic grids get shifted copies (+-360 degrees) of any
polygon reaching past the grid's east or west edge, so pixels that cross the
antimeridian land on both sides instead of smearing across the map. A pixel that
encloses a pole becomes the region between its boundary and the pole (a "cap" in
lon/lat space). Footprints that cannot be projected, or whose projected shape is torn
apart by the projection's seam, are dropped and counted; so are footprints whose
corners are not finite or lie beyond +-90 degrees of latitude (damaged or masked
corners) and degenerate footprints of zero area (all corners equal, or on one line),
which would otherwise add nothing and vanish without a trace. Corner order does not
matter: clockwise and counter-clockwise footprints give the same polygons' areas.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import xarray as xr
from numba import njit
from pyproj import Geod

from ._area_kernel import polygon_area
from .grid import GridSpec
from .schema import CORNER_DIM, SWATH_DIMS

__all__ = [
    "derive_corner_grid",
    "derive_corners",
    "derive_corners_lazy",
    "derive_block_corners",
    "with_derived_corners",
    "circle_footprints",
    "polygons_in_grid",
    "drop_degenerate",
    "srf_footprints",
    "srf_circles",
    "centres_in_grid",
    "FOV_DIAMETER_KM",
    "SRF_SHAPES",
    "srf_shape_of",
]

#: Diameter of the circular field of view of instruments without footprint corners, km.
FOV_DIAMETER_KM: dict[str, float] = {"TANSO-FTS": 10.5, "TANSO-FTS-2": 9.7}
#: Spatial-response-function shapes ``(k1, k2, k3)`` per instrument (the srf gridding method),
#: as the reference implementation of Sun et al. (2018) sets them; other instruments and
#: circular fields of view (soundings without corners) use (2, 2, 1).
SRF_SHAPES: dict[str, tuple[float, float, float]] = {
    "TROPOMI": (4.0, 2.0, 1.0), "OMI": (4.0, 2.0, 1.0), "TEMPO": (4.0, 2.0, 1.0), "GOME-2": (4.0, 2.0, 1.0),
    "SCIAMACHY": (4.0, 2.0, 1.0), "MethaneAIR": (2.0, 2.0, 1.0), "OMPS": (6.0, 2.0, 3.0), "IASI": (2.0, 2.0, 9.0),
    "CrIS": (2.0, 2.0, 4.0),
}
DEFAULT_SRF_SHAPE: tuple[float, float, float] = (2.0, 2.0, 1.0)
EARTH_RADIUS_KM = 6371.0088
_GEOD = Geod(ellps="WGS84")
#: Polygons whose projected edges are this many times longer than on the sphere are torn by a seam.
SEAM_STRETCH = 20.0
#: A polygon whose area is at most this fraction of its squared extent is degenerate (zero area).
DEGENERATE_AREA = 1e-9


# ----------------------------------------------------------------------- corner derivation
# Compiled kernels, one pass over the scanlines with a few rows of scratch. They repeat,
# operation by operation and in the same order, what the former numpy implementation did
# (forward- then backward-fill of non-finite longitudes along ground pixels, then along
# scanlines; np.unwrap with period 360 along scanlines (column 0) and ground pixels; the
# mean of four centres; linear extrapolation of edge columns, then end rows; the wrap to
# [-180, 180)), so the corners are bit-identical to it (tests/test_corner_speed.py keeps
# that implementation as the reference). Every value is widened to float64 before any
# arithmetic, as the numpy code did; outputs are allocated by numpy (huge pages).
@njit(cache=True, inline="always")
def _unwrap_correction(dd):  # pragma: no cover - compiled
    """np.unwrap's phase correction of one difference ``dd`` (period 360, discont 180)."""
    if abs(dd) < 180.0:
        return 0.0  # np.unwrap zeroes the correction there, whatever the modulo gives
    ddmod = (dd + 180.0) % 360.0 - 180.0  # floor-mod, as np.mod
    if ddmod == -180.0 and dd > 0.0:
        ddmod = 180.0
    return ddmod - dd


@njit(cache=True, nogil=True)
def _unwrap_step(k, x, xprev, cs):  # pragma: no cover - compiled
    """Element ``k`` of np.unwrap(period=360) along a run, from the previous element and running correction.

    Returns the unwrapped value and the new running correction (0.0 before element 1), summed
    in np.cumsum's order so the result is bit-identical.
    """
    if k == 0:
        return x, cs
    d = _unwrap_correction(x - xprev)
    cs = d if k == 1 else cs + d
    return x + cs, cs


@njit(cache=True, nogil=True)
def _fill_plan(lon):  # pragma: no cover - compiled
    """Where the NaN-filled longitudes of each row come from, and each row's unwrapping shift.

    The fill is forward then backward along ground pixels, then the same along scanlines:
    a row with a finite value is filled from itself, starting at its first finite value
    ``lon[row, col]``; a row without one is a copy of the nearest earlier (else later)
    filled row; without any finite value everything is ``lon[0, 0]`` (row 0, column 0).
    The shift (a multiple of 360) makes column 0 of the filled rows continuous along scanlines.
    """
    n, m = lon.shape
    first = np.full(n, -1, np.int64)
    for i in range(n):
        for j in range(m):
            if np.isfinite(lon[i, j]):
                first[i] = j
                break
    row = np.full(n, -1, np.int64)
    last = -1
    for i in range(n):
        if first[i] >= 0:
            last = i
        row[i] = last
    nxt = -1
    for i in range(n - 1, -1, -1):
        if first[i] >= 0:
            nxt = i
        if row[i] < 0:
            row[i] = nxt
    col = np.zeros(n, np.int64)
    for i in range(n):
        if row[i] < 0:
            row[i] = 0
        else:
            col[i] = first[row[i]]
    shift = np.empty(n)
    cs = 0.0
    prev = 0.0
    for i in range(n):
        c = np.float64(lon[row[i], col[i]])  # column 0 of filled row i
        col0, cs = _unwrap_step(i, c, prev, cs)
        prev = c
        shift[i] = np.rint((col0 - c) / 360.0) * 360.0
    return row, col, shift


@njit(cache=True, nogil=True)
def _unwrap_row(lon, i, row, col, shift, u):  # pragma: no cover - compiled
    """Row ``i`` of the unwrapped longitudes into ``u`` (filled, shifted, unwrapped, NaN restored)."""
    m = u.shape[0]
    s = row[i]
    sh = shift[i]
    v = np.float64(lon[s, col[i]])
    xprev = 0.0
    cs = 0.0
    for j in range(m):
        y = np.float64(lon[s, j])
        if np.isfinite(y):
            v = y
        x = v + sh
        out, cs = _unwrap_step(j, x, xprev, cs)
        xprev = x
        u[j] = out if np.isfinite(lon[i, j]) else np.nan


@njit(cache=True, nogil=True)
def _grid_row(a, b, g):  # pragma: no cover - compiled
    """Corner row ``g`` (m+1) between centre rows ``a`` and ``b`` (m): means, then extrapolated edges."""
    m = a.shape[0]
    for j in range(m - 1):
        g[j + 1] = 0.25 * (np.float64(a[j]) + np.float64(a[j + 1]) + np.float64(b[j]) + np.float64(b[j + 1]))
    g[0] = 2.0 * g[1] - g[2]
    g[m] = 2.0 * g[m - 1] - g[m - 2]


@njit(cache=True, nogil=True)
def _extrapolate_row(g1, g2, g):  # pragma: no cover - compiled
    """End row of corners ``g = 2 * g1 - g2``."""
    for j in range(g.shape[0]):
        g[j] = 2.0 * g1[j] - g2[j]


@njit(cache=True, nogil=True)
def _wrap_row(g, w, idx):  # pragma: no cover - compiled
    """``w = (g + 180) % 360 - 180`` as numpy computes it; the modulo only where it changes anything."""
    nbad = 0
    for j in range(g.shape[0]):
        t = g[j] + 180.0
        w[j] = t - 180.0  # the floor-mod of t in [0, 360) is t (+0 for -0: same difference)
        idx[nbad] = j
        nbad += not ((t >= 0.0) & (t < 360.0))
    for k in range(nbad):
        j = idx[k]
        w[j] = (g[j] + 180.0) % 360.0 - 180.0


@njit(cache=True, nogil=True)
def _unwrap_swath_nb(lon, out):  # pragma: no cover - compiled
    row, col, shift = _fill_plan(lon)
    for i in range(lon.shape[0]):
        _unwrap_row(lon, i, row, col, shift, out[i])


@njit(cache=True, nogil=True)
def _corner_grids_nb(lat, lon, glat, glon):  # pragma: no cover - compiled
    """Corner grids (n+1, m+1) of latitude and unwrapped longitude into ``glat``, ``glon``."""
    n, m = lat.shape
    row, col, shift = _fill_plan(lon)
    u = np.empty((2, m))
    _unwrap_row(lon, 0, row, col, shift, u[0])
    for r in range(1, n):
        _unwrap_row(lon, r, row, col, shift, u[r % 2])
        _grid_row(lat[r - 1], lat[r], glat[r])
        _grid_row(u[(r - 1) % 2], u[r % 2], glon[r])
    _extrapolate_row(glat[1], glat[2], glat[0])
    _extrapolate_row(glon[1], glon[2], glon[0])
    _extrapolate_row(glat[n - 1], glat[n - 2], glat[n])
    _extrapolate_row(glon[n - 1], glon[n - 2], glon[n])


@njit(cache=True, nogil=True)
def _emit_row(i, top, stop, la, lb, wa, wb, blat, blon, out32, f32):  # pragma: no cover - compiled
    """Corners of pixel row ``i`` from corner rows ``i`` (la, wa) and ``i+1`` (lb, wb), S5P order."""
    if i < top or i >= stop:
        return
    m = la.shape[0] - 1
    if f32:
        r = i - top
        for j in range(m):
            out32[r, j, 0, 0] = la[j]
            out32[r, j, 0, 1] = wa[j]
            out32[r, j, 1, 0] = la[j + 1]
            out32[r, j, 1, 1] = wa[j + 1]
            out32[r, j, 2, 0] = lb[j + 1]
            out32[r, j, 2, 1] = wb[j + 1]
            out32[r, j, 3, 0] = lb[j]
            out32[r, j, 3, 1] = wb[j]
    else:
        for j in range(m):
            blat[i, j, 0] = la[j]
            blat[i, j, 1] = la[j + 1]
            blat[i, j, 2] = lb[j + 1]
            blat[i, j, 3] = lb[j]
            blon[i, j, 0] = wa[j]
            blon[i, j, 1] = wa[j + 1]
            blon[i, j, 2] = wb[j + 1]
            blon[i, j, 3] = wb[j]


@njit(cache=True, nogil=True)
def _corners_nb(lat, lon, top, stop, blat, blon, out32, f32):  # pragma: no cover - compiled
    """Per-pixel corners of pixel rows ``top:stop``, longitudes wrapped, in one pass over the rows.

    ``f32``: into ``out32`` (stop-top, m, 4, 2) float32 (lat, lon); else into ``blat``,
    ``blon`` (n, m, 4) float64. Corner rows live in a ring of three.
    """
    n, m = lat.shape
    row, col, shift = _fill_plan(lon)
    u = np.empty((2, m))
    gl = np.empty((3, m + 1))  # latitude corner rows
    go = np.empty((3, m + 1))  # unwrapped longitude corner rows
    wo = np.empty((3, m + 1))  # wrapped longitude corner rows
    idx = np.empty(m + 1, np.int64)
    _unwrap_row(lon, 0, row, col, shift, u[0])
    for r in range(1, n):  # corner row r from pixel rows r-1 and r
        k = r % 3
        _unwrap_row(lon, r, row, col, shift, u[r % 2])
        _grid_row(lat[r - 1], lat[r], gl[k])
        _grid_row(u[(r - 1) % 2], u[r % 2], go[k])
        _wrap_row(go[k], wo[k], idx)
        if r == 2:  # corner row 0 from rows 1 and 2, then pixel rows 0 and 1
            _extrapolate_row(gl[1], gl[2], gl[0])
            _extrapolate_row(go[1], go[2], go[0])
            _wrap_row(go[0], wo[0], idx)
            _emit_row(0, top, stop, gl[0], gl[1], wo[0], wo[1], blat, blon, out32, f32)
            _emit_row(1, top, stop, gl[1], gl[2], wo[1], wo[2], blat, blon, out32, f32)
        elif r > 2:
            p = (r - 1) % 3
            _emit_row(r - 1, top, stop, gl[p], gl[k], wo[p], wo[k], blat, blon, out32, f32)
    a, b, k = (n - 1) % 3, (n - 2) % 3, n % 3  # corner row n from rows n-1 and n-2
    _extrapolate_row(gl[a], gl[b], gl[k])
    _extrapolate_row(go[a], go[b], go[k])
    _wrap_row(go[k], wo[k], idx)
    _emit_row(n - 1, top, stop, gl[a], gl[k], wo[a], wo[k], blat, blon, out32, f32)


_NO_F64 = np.empty((0, 0, 0))
_NO_F32 = np.empty((0, 0, 0, 0), np.float32)


def _centres(a: np.ndarray, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a).astype(dtype, copy=False))


def _swath_arrays(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres as C-contiguous arrays for the kernels: both float32, else both float64; >= 3 x 3."""
    lat, lon = np.asarray(lat), np.asarray(lon)
    if lat.ndim != 2 or lat.shape != lon.shape:
        raise ValueError(f"deriving corners needs 2-D latitude and longitude of one shape, got {lat.shape}"
                         f" and {lon.shape}")
    n, m = lat.shape
    if n < 3 or m < 3:
        raise ValueError(f"deriving corners needs at least 3 x 3 pixels, got {lat.shape}")
    dtype = np.float32 if lat.dtype == np.float32 and lon.dtype == np.float32 else np.float64
    return _centres(lat, dtype), _centres(lon, dtype)


def _unwrap_swath(lon: np.ndarray) -> np.ndarray:
    """Unwrap longitudes along scanlines and ground pixels, NaN-safe (NaNs restored)."""
    lon = np.asarray(lon)
    lon = _centres(lon, np.float32 if lon.dtype == np.float32 else np.float64)
    out = np.empty(lon.shape)
    _unwrap_swath_nb(lon, out)
    return out


def derive_corner_grid(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel: the (n+1, m+1) grid of corners of an (n, m) swath of pixel centres.

    Interior corners are the mean of the four surrounding centres (longitudes unwrapped
    first); the columns of corners on the swath edges, then the rows at its ends, are
    extrapolated linearly from the two nearest columns/rows of corners. Longitudes stay
    unwrapped. Needs at least 3 x 3 pixels.
    """
    lat, lon = _swath_arrays(lat, lon)
    n, m = lat.shape
    glat, glon = np.empty((n + 1, m + 1)), np.empty((n + 1, m + 1))
    _corner_grids_nb(lat, lon, glat, glon)
    return glat, glon


def _wrap180(lon: np.ndarray) -> np.ndarray:
    return (lon + 180.0) % 360.0 - 180.0


def derive_corners(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel: per-pixel corners (n, m, 4) of a swath, S5P order, longitudes in [-180, 180)."""
    lat, lon = _swath_arrays(lat, lon)
    n, m = lat.shape
    blat, blon = np.empty((n, m, 4)), np.empty((n, m, 4))
    _corners_nb(lat, lon, 0, n, blat, blon, _NO_F32, False)
    return blat, blon


def derive_block_corners(lat: np.ndarray, lon: np.ndarray, top: int = 0, bottom: int = 0) -> np.ndarray:
    """Kernel: corners of a block of swath rows whose centres come with ``top``/``bottom`` halo rows.

    ``lat``, ``lon`` (n, m): pixel centres of the block, extended by ``top`` rows of the
    block above and ``bottom`` rows of the block below (0 at the swath's ends). Returns
    (n - top - bottom, m, 4, 2) float32: the corners of the block's own rows, ``[..., 0]``
    latitudes and ``[..., 1]`` longitudes in [-180, 180), as :func:`derive_corners` gives
    them for the whole swath.
    """
    lat, lon = _swath_arrays(lat, lon)
    n, m = lat.shape
    stop = n - bottom
    out = np.empty((stop - top, m, 4, 2), np.float32)
    _corners_nb(lat, lon, top, stop, _NO_F64, _NO_F64, out, True)
    return out


def halo_of(block: int, blocks: int) -> tuple[int, int]:
    """``(top, bottom)``: the rows of its neighbours that block ``block`` of ``blocks`` blocks of rows
    carries in :func:`halo_rows` (one of each, none beyond the swath's ends)."""
    return int(block > 0), int(block < blocks - 1)


def _derive_block(lat: np.ndarray, lon: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    """map_blocks kernel on a halo-extended block: returns (rows, m, 4, 2) for the block's own rows."""
    info = (block_info or {}).get(0, {})
    return derive_block_corners(lat, lon, *halo_of(info.get("chunk-location", (0, 0))[0],
                                                   info.get("num-chunks", (1, 1))[0]))


def corner_chunks(chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Row chunks for deriving corners: every block needs 3 rows of its own."""
    return _merge_small(chunks, 3)


def halo_rows(a: da.Array) -> da.Array:
    """``a``'s blocks of rows, each with one row of the block above and of the block below.

    A single block of rows is ``a`` itself: dask's overlap would copy it for nothing.
    """
    return a if a.numblocks[0] == 1 else da.overlap.overlap(a, depth={0: 1, 1: 0}, boundary="none")


def _merge_small(chunks: tuple[int, ...], minimum: int) -> tuple[int, ...]:
    """Merge chunks smaller than ``minimum`` into their neighbours."""
    out: list[int] = []
    for c in chunks:
        if out and (c < minimum or out[-1] < minimum):
            out[-1] += c
        else:
            out.append(c)
    return tuple(out)


def derive_corners_lazy(lat: da.Array, lon: da.Array) -> tuple[da.Array, da.Array]:
    """Dask wrapper of :func:`derive_corners`: chunks along scanlines with a one-row halo."""
    lat = da.asarray(lat)
    lon = da.asarray(lon).rechunk(lat.chunks)
    if lat.chunks[1] != (lat.shape[1],):
        lat = lat.rechunk({1: -1})
        lon = lon.rechunk({1: -1})
    row_chunks = corner_chunks(lat.chunks[0])
    if row_chunks != lat.chunks[0]:
        lat = lat.rechunk({0: row_chunks})
        lon = lon.rechunk({0: row_chunks})
    both = da.map_blocks(
        _derive_block, halo_rows(lat), halo_rows(lon), dtype=np.float32, new_axis=[2, 3],
        chunks=(row_chunks, (lat.shape[1],), (4,), (2,)),
        meta=np.empty((0, 0, 0, 0), np.float32),
    )
    # views, not ``both[..., k]``: dask's getitem copies a selection of half a chunk (11 MB
    # per orbit and component), and the gridding takes only the valid soundings' rows
    return tuple(both.map_blocks(_component, k, drop_axis=3, dtype=np.float32,  # type: ignore[return-value]
                                 meta=np.empty((0, 0, 0), np.float32)) for k in (0, 1))


def _component(block: np.ndarray, k: int) -> np.ndarray:
    """``block[..., k]``, a view."""
    return block[..., k]


def with_derived_corners(ds: xr.Dataset) -> xr.Dataset:
    """Return ``ds`` with corners derived from centres where it has none (swaths only).

    The derived ``latitude_bounds``/``longitude_bounds`` carry ``corners = "derived from
    pixel centres"``; datasets that already have corners are returned unchanged.
    """
    if "latitude_bounds" in ds and "longitude_bounds" in ds:
        return ds
    if ds["latitude"].dims != SWATH_DIMS:
        raise ValueError("corners can only be derived for swaths with (scanline, ground_pixel) dimensions")
    blat, blon = derive_corners_lazy(ds["latitude"].data, ds["longitude"].data)
    note = "derived from pixel centres (interior: mean of 4 centres; edges: linear extrapolation)"
    out = ds.copy()
    out["latitude_bounds"] = xr.DataArray(blat, dims=(*SWATH_DIMS, CORNER_DIM),
                                          attrs={"units": "degrees_north", "corners": note})
    out["longitude_bounds"] = xr.DataArray(blon, dims=(*SWATH_DIMS, CORNER_DIM),
                                           attrs={"units": "degrees_east", "corners": note})
    out.attrs["corners_source"] = "derived"
    return out


# ----------------------------------------------------------------------- circular fields of view
def circle_footprints(lon: np.ndarray, lat: np.ndarray, diameter_km: float, nvert: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Kernel: ``nvert``-gons of the same area as circles of ``diameter_km`` around each centre.

    Vertices lie on the WGS84 geodesic circle (pyproj ``Geod.fwd``) of the radius that
    gives a regular ``nvert``-gon the circle's area; returns lon/lat vertices
    (N, nvert) in order around the centre.
    """
    r_m = 500.0 * diameter_km * math.sqrt(math.pi / (0.5 * nvert * math.sin(2 * math.pi / nvert)))
    lon = np.asarray(lon, np.float64)
    lat = np.asarray(lat, np.float64)
    az = np.linspace(0.0, 360.0, nvert, endpoint=False)
    n = lon.size
    vlon, vlat, _ = _GEOD.fwd(np.repeat(lon, nvert), np.repeat(lat, nvert), np.tile(az, n), np.full(n * nvert, r_m))
    return np.asarray(vlon).reshape(n, nvert), np.asarray(vlat).reshape(n, nvert)


# ----------------------------------------------------------------------- polygons in a grid
def _haversine_km(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lon2 - lon1)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


@njit(cache=True, nogil=True)
def _geographic_polygons_nb(lon_b, lat_b, keep, west, east, c0, a, f0, e):  # pragma: no cover - compiled
    """Compiled kernel of :func:`_geographic_polygons` (two passes: count, then fill)."""
    n, k = lon_b.shape
    kk = k + 3
    lon_u = np.empty((n, k))
    turns = np.zeros(n, np.int64)
    shifts = np.zeros((n, 3), np.bool_)
    torn = 0
    total = 0
    for i in range(n):
        if not keep[i]:
            continue
        lon_u[i, 0] = lon_b[i, 0]
        acc = 0.0
        for j in range(1, k + 1):
            nxt = lon_b[i, j % k]
            d = nxt - lon_b[i, j - 1]
            d = (d + 180.0) % 360.0 - 180.0
            acc += d
            if j < k:
                lon_u[i, j] = lon_u[i, j - 1] + d
        t = int(np.rint(acc / 360.0))
        turns[i] = t
        lo = lon_u[i, 0]
        hi = lon_u[i, 0]
        for j in range(1, k):
            lo = min(lo, lon_u[i, j])
            hi = max(hi, lon_u[i, j])
        if t == 0 and hi - lo > 180.0:
            torn += 1  # a degenerate sliver next to a pole
            keep[i] = False
            continue
        if t != 0:
            hi = max(hi, lon_u[i, 0] + 360.0 * t)
            lo = min(lo, lon_u[i, 0] + 360.0 * t)
        base = np.floor((lon_u[i, 0] - west) / 360.0) * 360.0  # first vertex into [west, west + 360)
        for j in range(k):
            lon_u[i, j] -= base
        lo -= base
        hi -= base
        for s_i in range(3):
            sh = (s_i - 1) * 360.0
            if hi + sh > west and lo + sh < east:
                shifts[i, s_i] = True
                total += 1
    px = np.empty((total, kk))
    py = np.empty((total, kk))
    nv = np.empty(total, np.int64)
    src = np.empty(total, np.int64)
    p = 0
    for i in range(n):
        if not keep[i]:
            continue
        t = turns[i]
        pole = 90.0
        if t != 0:
            mlat = 0.0
            for j in range(k):
                mlat += lat_b[i, j]
            pole = 90.0 if mlat >= 0 else -90.0
        for s_i in range(3):
            if not shifts[i, s_i]:
                continue
            sh = (s_i - 1) * 360.0
            for j in range(k):
                px[p, j] = (lon_u[i, j] + sh - c0) / a
                py[p, j] = (lat_b[i, j] - f0) / e
            if t != 0:
                end = lon_u[i, 0] + 360.0 * t + sh
                px[p, k] = (end - c0) / a
                py[p, k] = (lat_b[i, 0] - f0) / e
                px[p, k + 1] = (end - c0) / a
                py[p, k + 1] = (pole - f0) / e
                px[p, k + 2] = (lon_u[i, 0] + sh - c0) / a
                py[p, k + 2] = (pole - f0) / e
                nv[p] = k + 3
            else:
                for j in range(k, kk):
                    px[p, j] = px[p, k - 1]
                    py[p, j] = py[p, k - 1]
                nv[p] = k
            src[p] = i
            p += 1
    return px, py, nv, src, torn


def _geographic_polygons(
    lon_b: np.ndarray, lat_b: np.ndarray, keep: np.ndarray, grid: GridSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Polygons in a lon/lat grid's cell-index space.

    Longitudes are unwrapped around the first vertex, which is moved into
    [west, west + 360); copies shifted by +-360 degrees are added where they reach into
    the grid. A ring that winds once around a pole spans 360 degrees of unwrapped
    longitude; in lon/lat space the pixel is the region between that ring and the pole,
    so it is closed with (first + 360, lat0), (first + 360, pole), (first, pole).
    """
    west, _, east, _ = grid.bounds
    t = grid.transform
    return _geographic_polygons_nb(np.ascontiguousarray(lon_b, np.float64), np.ascontiguousarray(lat_b, np.float64),
                                   keep.copy(), west, east, t.c, t.a, t.f, t.e)


def _projected_polygons(
    lon_b: np.ndarray, lat_b: np.ndarray, keep: np.ndarray, grid: GridSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    idx = np.flatnonzero(keep)
    lon, lat = _wrap180(lon_b[idx]), lat_b[idx]
    x, y = grid.lonlat_to_xy(lon.ravel(), lat.ravel())
    x, y = x.reshape(lon.shape), y.reshape(lon.shape)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    # a footprint torn by the projection's seam has projected edges far longer than on the sphere
    unit = grid.crs.axis_info[0].unit_conversion_factor if grid.crs.axis_info else 1.0
    geo_edge = 1000.0 * _haversine_km(lon, lat, np.roll(lon, -1, axis=1), np.roll(lat, -1, axis=1))
    with np.errstate(invalid="ignore"):
        proj_edge = unit * np.hypot(np.roll(x, -1, axis=1) - x, np.roll(y, -1, axis=1) - y)
        ok &= ~np.any(proj_edge > SEAM_STRETCH * geo_edge + 1000.0, axis=1)
    nv = np.full(int(ok.sum()), lon_b.shape[1], np.int64)
    return x[ok], y[ok], nv, idx[ok], int((~ok).sum())


@njit(cache=True, nogil=True)
def _extent(px: np.ndarray, py: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Kernel: larger of each polygon's x and y ranges (NaN where a vertex is NaN); ``np.ptp`` of both, in one pass.

    ``np.ptp(..., axis=1)`` over a few vertices per row runs numpy's reduction row by
    row: 8 ms for one S5P orbit, against well under 1 ms here.
    """
    n, k = px.shape
    out = np.empty(n)
    for i in range(n):
        x0 = x1 = px[i, 0]
        y0 = y1 = py[i, 0]
        bad = x0 != x0 or y0 != y0
        for j in range(1, k):
            x, y = px[i, j], py[i, j]
            if x != x or y != y:
                bad = True
            x0, x1 = min(x0, x), max(x1, x)
            y0, y1 = min(y0, y), max(y1, y)
        out[i] = np.nan if bad else max(x1 - x0, y1 - y0)
    return out


def drop_degenerate(
    px: np.ndarray, py: np.ndarray, nv: np.ndarray, src: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Kernel: remove polygons of zero area; count the footprints left with no polygon.

    A polygon is degenerate when its planar area is at most :data:`DEGENERATE_AREA`
    times the square of its extent (all vertices equal, or all on one line), whatever
    its orientation. Returns the kept polygons and the number of distinct footprints
    (``src``) that lost all their polygons.
    """
    if src.size == 0:
        return px, py, nv, src, 0
    px64, py64 = np.ascontiguousarray(px, np.float64), np.ascontiguousarray(py, np.float64)
    area = polygon_area(px64, py64, np.ascontiguousarray(nv, np.int64))
    extent = _extent(px64, py64)
    ok = np.isfinite(area) & (area > DEGENERATE_AREA * extent * extent)
    if ok.all():
        return px, py, nv, src, 0
    lost = np.setdiff1d(src[~ok], src[ok]).size
    return px[ok], py[ok], nv[ok], src[ok], int(lost)


def polygons_in_grid(
    lon_b: np.ndarray, lat_b: np.ndarray, grid: GridSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Kernel: footprint polygons (N, K) in degrees -> polygons in ``grid``'s cell-index space.

    Returns
    -------
    px, py : float64 (P, K')
        Vertices in cell-index space (column, row); P may exceed N (shifted copies).
    nv : int64 (P,)
        Vertex counts (padding repeats the last vertex).
    src : int64 (P,)
        Index of the footprint each polygon comes from.
    n_dropped : int
        Footprints that are not on the map: corners not finite or beyond +-90 degrees
        latitude, zero area (degenerate), not finite after projection, torn apart by the
        projection's seam, or degenerate near a pole.
    """
    lon_b = np.asarray(lon_b, np.float64)
    lat_b = np.asarray(lat_b, np.float64)
    with np.errstate(invalid="ignore"):
        keep = (np.isfinite(lon_b).all(axis=1) & np.isfinite(lat_b).all(axis=1)
                & (np.abs(lat_b) <= 90.0).all(axis=1))
    bad_corners = int(keep.size - keep.sum())
    lon0 = np.where(keep[:, None], lon_b, 0.0)
    lat0 = np.where(keep[:, None], lat_b, 0.0)
    if grid.is_geographic:
        px, py, nv, src, dropped = _geographic_polygons(lon0, lat0, keep, grid)
    else:
        x, y, nv, src, dropped = _projected_polygons(lon0, lat0, keep, grid)
        t = grid.transform
        px, py, src = (x - t.c) / t.a, (y - t.f) / t.e, src.astype(np.int64)
    px, py, nv, src, degenerate = drop_degenerate(px, py, nv, src)
    return px, py, nv, src, int(dropped) + bad_corners + degenerate


# ----------------------------------------------------------------- SRF footprints (srf method)
def srf_shape_of(shape: object, instrument: str = "", *, has_corners: bool = True) -> tuple[float, float, float]:
    """The SRF shape ``(k1, k2, k3)`` to use: given numbers, an instrument's name, or (None) the instrument's own.

    Raises ValueError for an unknown name or numbers that are not three positive values.
    """
    if shape is None:
        if not has_corners:
            return DEFAULT_SRF_SHAPE
        key = next((k for k in SRF_SHAPES if instrument.upper().startswith(k.upper())), None)
        return SRF_SHAPES[key] if key else DEFAULT_SRF_SHAPE
    if isinstance(shape, str):
        text = shape.strip()
        key = next((k for k in SRF_SHAPES if k.upper() == text.upper()), None)
        if key is not None:
            return SRF_SHAPES[key]
        parts = [t for t in text.replace(",", " ").split() if t]
        if len(parts) != 3:
            raise ValueError(f"srf_shape {shape!r}: give three numbers k1, k2, k3 or one of {', '.join(SRF_SHAPES)}")
        shape = parts
    try:
        values = tuple(float(k) for k in shape)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(f"srf_shape {shape!r}: give three numbers k1, k2, k3 or one of "
                         f"{', '.join(SRF_SHAPES)}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"srf_shape {shape!r}: k1, k2 and k3 must be three positive numbers")
    return values  # type: ignore[return-value]


def centres_in_grid(lon: np.ndarray, lat: np.ndarray, grid: GridSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernel: sounding centres (degrees) in grid units, and which lie on the grid (edges included).

    On a lon/lat grid the longitude is moved into ``[west, west + 360)`` first (as the
    reference implementation does), so a grid reaching past +-180 degrees takes the
    centres there.
    """
    west, south, east, north = grid.bounds
    with np.errstate(invalid="ignore"):
        if grid.is_geographic:
            cx = west + np.mod(lon - west, 360.0)
            cy = lat
        else:
            ok = np.isfinite(lon) & np.isfinite(lat)
            cx, cy = grid.lonlat_to_xy(np.where(ok, lon, 0.0), np.where(ok, lat, 0.0))
            cx, cy = np.where(ok, cx, np.nan), np.where(ok, cy, np.nan)
        inside = (cx >= west) & (cx <= east) & (cy >= south) & (cy <= north)
    return cx, cy, inside


def srf_footprints(
    lon: np.ndarray, lat: np.ndarray, lon_b: np.ndarray, lat_b: np.ndarray, grid: GridSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Kernel: pixels whose centres lie on ``grid``, as centres, corner offsets and areas in grid units.

    Parameters
    ----------
    lon, lat : float (N,)
        Pixel centres, degrees.
    lon_b, lat_b : float (N, 4)
        Corners, degrees, canonical order (:data:`eo_pipeline.schema.CORNER_ORDER`).
    grid : GridSpec
        Target grid: lon/lat grids work in degrees (offsets of longitude taken modulo
        360, so pixels on the antimeridian keep their shape), projected grids in their
        own units after projecting centres and corners.

    Returns
    -------
    cx, cy : float64 (M,)
        Centres of the pixels on the grid, grid units.
    ox, oy : float64 (M, 4)
        Corner offsets from the centre, grid units.
    area : float64 (M,)
        Quadrilateral areas, grid units squared (degrees² on lon/lat grids).
    src : int64 (M,)
        Index of each kept pixel.
    n_dropped : int
        Pixels on the grid whose footprint is unusable: corners not finite or beyond
        +-90 degrees, a ring around a pole, not projectable or torn by the projection's
        seam, or of zero area. Pixels whose centres are off the grid are left out
        without being counted, as the reference implementation selects its pixels.
    """
    lon = np.asarray(lon, np.float64).ravel()
    lat = np.asarray(lat, np.float64).ravel()
    lon_b = np.asarray(lon_b, np.float64).reshape(-1, 4)
    lat_b = np.asarray(lat_b, np.float64).reshape(-1, 4)
    cx, cy, inside = centres_in_grid(lon, lat, grid)
    idx = np.flatnonzero(inside)
    lon_b, lat_b = lon_b[idx], lat_b[idx]
    with np.errstate(invalid="ignore"):
        good = np.isfinite(lon_b).all(axis=1) & np.isfinite(lat_b).all(axis=1) & (np.abs(lat_b) <= 90.0).all(axis=1)
    if grid.is_geographic:
        ox = np.mod(lon_b - lon[idx, None] + 180.0, 360.0) - 180.0
        oy = lat_b - lat[idx, None]
        # a ring around a pole: its edges' longitude steps do not sum to zero
        steps = np.mod(np.roll(lon_b, -1, axis=1) - lon_b + 180.0, 360.0) - 180.0
        with np.errstate(invalid="ignore"):
            good &= np.abs(steps.sum(axis=1)) < 180.0
    else:
        x, y, _, kept, _ = _projected_polygons(np.where(good[:, None], lon_b, 0.0),
                                               np.where(good[:, None], lat_b, 0.0), good, grid)
        ox = np.full(lon_b.shape, np.nan)
        oy = np.full(lon_b.shape, np.nan)
        ox[kept] = x - cx[idx[kept], None]
        oy[kept] = y - cy[idx[kept], None]
        good = np.zeros(idx.size, bool)
        good[kept] = True
    nv = np.full(int(good.sum()), 4, np.int64)
    ox, oy, nv, src, degenerate = drop_degenerate(ox[good], oy[good], nv, idx[good].astype(np.int64))
    area = polygon_area(np.ascontiguousarray(ox), np.ascontiguousarray(oy), nv)
    return cx[src], cy[src], ox, oy, area, src, int(idx.size - good.sum()) + degenerate


def srf_circles(
    lon: np.ndarray, lat: np.ndarray, diameter_km: float, grid: GridSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Kernel: circular fields of view of ``diameter_km`` (soundings without corners) for the srf method.

    Each circle is described by the parallelogram whose edge midpoints are the points
    a radius east and north (and west, south) of the centre on the WGS84 ellipsoid, in
    grid units: its widths are the circle's diameter along each axis, and with the
    symmetric (2, 2, 1) shape its SRF is the Gaussian of that ellipse. The area is the
    circle's (pi/4 of the parallelogram's). Returns what :func:`srf_footprints` returns.
    """
    lon = np.asarray(lon, np.float64).ravel()
    lat = np.asarray(lat, np.float64).ravel()
    cx, cy, inside = centres_in_grid(lon, lat, grid)
    idx = np.flatnonzero(inside)
    r_m = 500.0 * float(diameter_km)
    lo, la = lon[idx], lat[idx]
    n = idx.size
    e_lon, e_lat, _ = _GEOD.fwd(lo, la, np.full(n, 90.0), np.full(n, r_m))
    n_lon, n_lat, _ = _GEOD.fwd(lo, la, np.zeros(n), np.full(n, r_m))
    if grid.is_geographic:
        ex = np.mod(np.asarray(e_lon) - lo + 180.0, 360.0) - 180.0
        ey = np.asarray(e_lat) - la
        nx = np.mod(np.asarray(n_lon) - lo + 180.0, 360.0) - 180.0
        ny = np.asarray(n_lat) - la
    else:
        xe, ye = grid.lonlat_to_xy(np.asarray(e_lon), np.asarray(e_lat))
        xn, yn = grid.lonlat_to_xy(np.asarray(n_lon), np.asarray(n_lat))
        ex, ey, nx, ny = xe - cx[idx], ye - cy[idx], xn - cx[idx], yn - cy[idx]
    # canonical order: (x-, y-), (x+, y-), (x+, y+), (x-, y+) with x east, y north
    sx = np.array([-1.0, 1.0, 1.0, -1.0])
    sy = np.array([-1.0, -1.0, 1.0, 1.0])
    ox = sx * ex[:, None] + sy * nx[:, None]
    oy = sx * ey[:, None] + sy * ny[:, None]
    with np.errstate(invalid="ignore"):
        area = np.pi * np.abs(ex * ny - ey * nx)  # the ellipse of semi-axes E and N: pi/4 of the parallelogram
        good = np.isfinite(area) & (area > 0) & np.isfinite(ox).all(axis=1) & np.isfinite(oy).all(axis=1)
    src = idx[good]
    return (cx[src], cy[src], ox[good], oy[good], area[good], src.astype(np.int64), int(n - good.sum()))
