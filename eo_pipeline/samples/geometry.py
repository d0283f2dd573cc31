# SPDX-License-Identifier: Apache-2.0
"""Synthetic viewing geometries for sample scenes: S5P swaths, OCO-2 tracks, GOSAT points.

Pure numpy, deterministic. Positions are built in a local east/north frame (km)
around an anchor point and converted to degrees on a sphere of radius 6371 km,
which is accurate to well under a pixel over the few hundred kilometres used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KM_PER_DEG = 6371.0 * np.pi / 180.0


def km_to_lonlat(
    east_km: np.ndarray, north_km: np.ndarray, lon0: float, lat0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Convert local east/north offsets (km) around (lon0, lat0) to degrees."""
    lat = lat0 + north_km / KM_PER_DEG
    lon = lon0 + east_km / (KM_PER_DEG * np.cos(np.radians(lat)))
    return lon, lat


def lonlat_to_km(
    lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`km_to_lonlat`."""
    north = (np.asarray(lat) - lat0) * KM_PER_DEG
    east = (np.asarray(lon) - lon0) * KM_PER_DEG * np.cos(np.radians(lat))
    return east, north


@dataclass(frozen=True)
class Swath:
    """Pixel centres and corners of a synthetic push-broom swath.

    Arrays have shape (scanline, ground_pixel) and, for corners, a trailing
    corner axis in S5P order: (scanline-, pixel-), (scanline-, pixel+),
    (scanline+, pixel+), (scanline+, pixel-).
    """

    lon: np.ndarray
    lat: np.ndarray
    lon_bounds: np.ndarray
    lat_bounds: np.ndarray
    along_km: np.ndarray  # along-track distance of each scanline from the anchor
    across_km: np.ndarray  # across-track offset of each ground pixel centre


def s5p_swath(
    lon0: float,
    lat0: float,
    *,
    n_scan: int,
    n_pix: int = 215,
    along_km: float = 5.5,
    nadir_across_km: float = 7.0,
    heading_deg: float = -12.0,
    scan0: float | None = None,
) -> Swath:
    """Build an S5P-like swath whose nadir track passes through (lon0, lat0).

    Parameters
    ----------
    lon0, lat0 : float
        Degrees; the anchor on the nadir track (at scanline ``scan0``).
    n_scan, n_pix : int
        Scanlines and ground pixels (215 for the S5P SWIR products).
    along_km : float
        Along-track pixel size, km (5.5 since August 2019).
    nadir_across_km : float
        Across-track pixel width at nadir, km; widens towards the swath edges.
    heading_deg : float
        Track heading, degrees clockwise from north (about -12 on an ascending
        sun-synchronous orbit at mid-latitudes).
    scan0 : float, optional
        Scanline index of the anchor (default: the middle of the swath).
    """
    scan0 = (n_scan - 1) / 2 if scan0 is None else scan0
    u = (np.arange(n_pix + 1) - n_pix / 2) / (n_pix / 2)  # edges, -1..1
    # width grows ~ 1 + 1.4 u^2 towards the edges: integrate to edge positions
    edges = nadir_across_km * (n_pix / 2) * (u + 1.4 * u**3 / 3)
    s_edges = (np.arange(n_scan + 1) - 0.5 - scan0) * along_km
    h = np.radians(heading_deg)
    a_e, a_n = np.sin(h), np.cos(h)  # along-track unit vector (east, north)
    c_e, c_n = np.cos(h), -np.sin(h)  # across-track, towards increasing ground_pixel (east)
    S, X = np.meshgrid(s_edges, edges, indexing="ij")
    # slight curvature so that neighbouring scanlines are not exactly parallel
    S = S + 2.0e-5 * X**2
    east = S * a_e + X * c_e
    north = S * a_n + X * c_n
    lon_e, lat_e = km_to_lonlat(east, north, lon0, lat0)
    lon_b = np.stack([lon_e[:-1, :-1], lon_e[:-1, 1:], lon_e[1:, 1:], lon_e[1:, :-1]], axis=-1)
    lat_b = np.stack([lat_e[:-1, :-1], lat_e[:-1, 1:], lat_e[1:, 1:], lat_e[1:, :-1]], axis=-1)
    centre_s = 0.5 * (s_edges[:-1] + s_edges[1:])
    centre_x = 0.5 * (edges[:-1] + edges[1:])
    return Swath(
        lon=lon_b.mean(axis=-1), lat=lat_b.mean(axis=-1), lon_bounds=lon_b, lat_bounds=lat_b,
        along_km=centre_s, across_km=centre_x,
    )


@dataclass(frozen=True)
class Track:
    """OCO-2-like soundings: 8 footprints per frame, with 4 vertices each (1-D arrays)."""

    lon: np.ndarray
    lat: np.ndarray
    vertex_lon: np.ndarray  # (n, 4)
    vertex_lat: np.ndarray
    frame: np.ndarray
    footprint: np.ndarray  # 1..8
    along_km: np.ndarray


def oco2_track(
    lon0: float,
    lat0: float,
    *,
    n_frames: int,
    frame_km: float = 2.25,
    footprint_km: float = 1.29,
    heading_deg: float = -12.0,
    frame0: float | None = None,
) -> Track:
    """Build an OCO-2-like nadir track through (lon0, lat0): 8 footprints across."""
    frame0 = (n_frames - 1) / 2 if frame0 is None else frame0
    h = np.radians(heading_deg)
    a_e, a_n = np.sin(h), np.cos(h)
    c_e, c_n = np.cos(h), -np.sin(h)
    f = np.arange(n_frames)
    k = np.arange(8)
    F, K = np.meshgrid(f, k, indexing="ij")
    s = (F - frame0) * frame_km
    x = (K - 3.5) * footprint_km
    ds = np.array([-0.5, -0.5, 0.5, 0.5]) * frame_km * 0.95
    dx = np.array([-0.5, 0.5, 0.5, -0.5]) * footprint_km * 0.95
    vs = s[..., None] + ds
    vx = x[..., None] + dx
    v_lon, v_lat = km_to_lonlat(vs * a_e + vx * c_e, vs * a_n + vx * c_n, lon0, lat0)
    lon, lat = km_to_lonlat(s * a_e + x * c_e, s * a_n + x * c_n, lon0, lat0)
    return Track(
        lon=lon.ravel(), lat=lat.ravel(), vertex_lon=v_lon.reshape(-1, 4), vertex_lat=v_lat.reshape(-1, 4),
        frame=F.ravel(), footprint=K.ravel() + 1, along_km=s.ravel(),
    )


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Spatially correlated noise in [0, 1]: white noise blurred over ``scale`` pixels."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma=scale, mode="reflect")
    field -= field.min()
    peak = field.max()
    return field / peak if peak > 0 else field


def gaussian_plume(
    lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float, sigma_km: float
) -> np.ndarray:
    """Isotropic Gaussian of unit peak centred on (lon0, lat0) with sigma in km."""
    e, n = lonlat_to_km(lon, lat, lon0, lat0)
    return np.exp(-(e**2 + n**2) / (2 * sigma_km**2))
