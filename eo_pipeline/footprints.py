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
    "with_derived_corners",
    "circle_footprints",
    "polygons_in_grid",
    "drop_degenerate",
    "srf_footprints",
    "srf_circles",
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
def _fill_nan(a: np.ndarray, axis: int) -> np.ndarray:
    """Forward- then backward-fill NaNs along ``axis`` (for unwrapping across gaps)."""
    a = np.moveaxis(a, axis, -1)
    ok = np.isfinite(a)
    n = a.shape[-1]
    idx = np.where(ok, np.arange(n), 0)
    np.maximum.accumulate(idx, axis=-1, out=idx)
    out = np.take_along_axis(a, idx, axis=-1)
    ok2 = np.isfinite(out)
    idx_b = np.where(ok2, np.arange(n), n - 1)
    idx_b = np.flip(np.minimum.accumulate(np.flip(idx_b, -1), axis=-1), -1)
    out = np.take_along_axis(out, idx_b, axis=-1)
    return np.moveaxis(out, -1, axis)


def _unwrap_swath(lon: np.ndarray) -> np.ndarray:
    """Unwrap longitudes along scanlines and ground pixels, NaN-safe (NaNs restored)."""
    filled = _fill_nan(_fill_nan(lon.astype(np.float64), 1), 0)
    col0 = np.unwrap(filled[:, 0], period=360.0) if filled.shape[0] else filled[:, 0]
    shift = np.round((col0 - filled[:, 0]) / 360.0) * 360.0
    out = np.unwrap(filled + shift[:, None], period=360.0, axis=1)
    out[~np.isfinite(lon)] = np.nan
    return out


def derive_corner_grid(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel: the (n+1, m+1) grid of corners of an (n, m) swath of pixel centres.

    Interior corners are the mean of the four surrounding centres (longitudes unwrapped
    first); the columns of corners on the swath edges, then the rows at its ends, are
    extrapolated linearly from the two nearest columns/rows of corners. Longitudes stay
    unwrapped. Needs at least 3 x 3 pixels.
    """
    lat = np.asarray(lat, np.float64)
    lon = _unwrap_swath(np.asarray(lon, np.float64))
    n, m = lat.shape
    if n < 3 or m < 3:
        raise ValueError(f"deriving corners needs at least 3 x 3 pixels, got {lat.shape}")
    out = []
    for v in (lat, lon):
        g = np.empty((n + 1, m + 1))
        g[1:-1, 1:-1] = 0.25 * (v[:-1, :-1] + v[:-1, 1:] + v[1:, :-1] + v[1:, 1:])
        g[1:-1, 0] = 2 * g[1:-1, 1] - g[1:-1, 2]
        g[1:-1, -1] = 2 * g[1:-1, -2] - g[1:-1, -3]
        g[0, :] = 2 * g[1, :] - g[2, :]
        g[-1, :] = 2 * g[-2, :] - g[-3, :]
        out.append(g)
    return out[0], out[1]


def _corners_from_grid(g: np.ndarray) -> np.ndarray:
    """(n+1, m+1) corner grid -> (n, m, 4) per-pixel corners in S5P order."""
    return np.stack([g[:-1, :-1], g[:-1, 1:], g[1:, 1:], g[1:, :-1]], axis=-1)


def _wrap180(lon: np.ndarray) -> np.ndarray:
    return (lon + 180.0) % 360.0 - 180.0


def derive_corners(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel: per-pixel corners (n, m, 4) of a swath, S5P order, longitudes in [-180, 180)."""
    glat, glon = derive_corner_grid(lat, lon)
    return _corners_from_grid(glat), _wrap180(_corners_from_grid(glon))


def _derive_block(lat: np.ndarray, lon: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    """map_blocks kernel on a halo-extended block: returns (rows, m, 4, 2) for the block's own rows."""
    info = (block_info or {}).get(0, {})
    loc = info.get("chunk-location", (0, 0))[0]
    nchunks = info.get("num-chunks", (1, 1))[0]
    top = 1 if loc > 0 else 0
    bottom = 1 if loc < nchunks - 1 else 0
    blat, blon = derive_corners(lat, lon)
    stop = lat.shape[0] - bottom
    return np.stack([blat[top:stop], blon[top:stop]], axis=-1).astype(np.float32)


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
    row_chunks = _merge_small(lat.chunks[0], 3)  # every block needs 3 rows of its own
    if row_chunks != lat.chunks[0]:
        lat = lat.rechunk({0: row_chunks})
        lon = lon.rechunk({0: row_chunks})
    ext_lat = da.overlap.overlap(lat, depth={0: 1, 1: 0}, boundary="none")
    ext_lon = da.overlap.overlap(lon, depth={0: 1, 1: 0}, boundary="none")
    both = da.map_blocks(
        _derive_block, ext_lat, ext_lon, dtype=np.float32, new_axis=[2, 3],
        chunks=(row_chunks, (lat.shape[1],), (4,), (2,)),
        meta=np.empty((0, 0, 0, 0), np.float32),
    )
    return both[..., 0], both[..., 1]


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
    area = polygon_area(np.ascontiguousarray(px, np.float64), np.ascontiguousarray(py, np.float64),
                        np.ascontiguousarray(nv, np.int64))
    extent = np.maximum(np.ptp(px, axis=1), np.ptp(py, axis=1))
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
        raise ValueError(f"srf_shape {shape!r}: give three numbers k1, k2, k3 or one of {', '.join(SRF_SHAPES)}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"srf_shape {shape!r}: k1, k2 and k3 must be three positive numbers")
    return values  # type: ignore[return-value]


def _shoelace(ox: np.ndarray, oy: np.ndarray) -> np.ndarray:
    """Planar area of quadrilaterals given by their (N, 4) vertices (absolute value)."""
    return 0.5 * np.abs(np.sum(ox * np.roll(oy, -1, axis=1) - np.roll(ox, -1, axis=1) * oy, axis=1))


def _centres_in_grid(lon: np.ndarray, lat: np.ndarray, grid: GridSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel centres in grid units and which lie on the grid (edges included).

    On a lon/lat grid the longitude is moved into ``[west, west + 360)`` first (as the
    reference implementation does), so a grid reaching past +-180 degrees takes the
    centres there.
    """
    west, south, east, north = grid.bounds
    with np.errstate(invalid="ignore"):
        if grid.is_geographic:
            cx = west + np.mod(lon - west, 360.0)
            cy = lat.astype(np.float64)
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
    cx, cy, inside = _centres_in_grid(lon, lat, grid)
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
        keep = good.copy()
        x, y, _, kept, torn = _projected_polygons(np.where(good[:, None], lon_b, 0.0),
                                                  np.where(good[:, None], lat_b, 0.0), keep, grid)
        ox = np.full(lon_b.shape, np.nan)
        oy = np.full(lon_b.shape, np.nan)
        ox[kept] = x - cx[idx[kept], None]
        oy[kept] = y - cy[idx[kept], None]
        good = np.zeros(idx.size, bool)
        good[kept] = True
    with np.errstate(invalid="ignore"):
        area = _shoelace(ox, oy)
        extent = np.maximum(np.ptp(ox, axis=1), np.ptp(oy, axis=1))
        good &= np.isfinite(area) & (area > DEGENERATE_AREA * extent * extent)
    src = idx[good]
    return (cx[src], cy[src], ox[good], oy[good], area[good], src.astype(np.int64), int(idx.size - good.sum()))


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
    cx, cy, inside = _centres_in_grid(lon, lat, grid)
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
        area = 0.25 * np.pi * _shoelace(ox, oy)
        good = np.isfinite(area) & (area > 0) & np.isfinite(ox).all(axis=1) & np.isfinite(oy).all(axis=1)
    src = idx[good]
    return (cx[src], cy[src], ox[good], oy[good], area[good], src.astype(np.int64), int(n - good.sum()))
