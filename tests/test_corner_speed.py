# SPDX-License-Identifier: Apache-2.0
"""Compiled corner derivation: bit-identical to the former numpy implementation.

The maps built from derived corners were validated against ESA HARP, so the compiled
kernels of :mod:`eo_pipeline.footprints` must give exactly the corners the numpy code
gave. That code is kept here, unchanged, as the reference; results are compared bit for
bit (NaNs in the same places, signed zeros included).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import eo_pipeline as eo
from eo_pipeline import footprints
from eo_pipeline.footprints import derive_corner_grid, derive_corners, derive_corners_lazy
from eo_pipeline.samples.geometry import s5p_swath

from .conftest import SHARED

ORBIT_GLOB = "S5P_OFFL_L2__CH4____20190319T110835_*fullorbit-varsubset.nc4"


# ----------------------------------------------------------------------- the former numpy implementation
def old_fill_nan(a: np.ndarray, axis: int) -> np.ndarray:
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


def old_unwrap_swath(lon: np.ndarray) -> np.ndarray:
    filled = old_fill_nan(old_fill_nan(lon.astype(np.float64), 1), 0)
    col0 = np.unwrap(filled[:, 0], period=360.0) if filled.shape[0] else filled[:, 0]
    shift = np.round((col0 - filled[:, 0]) / 360.0) * 360.0
    out = np.unwrap(filled + shift[:, None], period=360.0, axis=1)
    out[~np.isfinite(lon)] = np.nan
    return out


def old_derive_corner_grid(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(lat, np.float64)
    lon = old_unwrap_swath(np.asarray(lon, np.float64))
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


def old_corners_from_grid(g: np.ndarray) -> np.ndarray:
    return np.stack([g[:-1, :-1], g[:-1, 1:], g[1:, 1:], g[1:, :-1]], axis=-1)


def old_wrap180(lon: np.ndarray) -> np.ndarray:
    return (lon + 180.0) % 360.0 - 180.0


def old_derive_corners(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    glat, glon = old_derive_corner_grid(lat, lon)
    return old_corners_from_grid(glat), old_wrap180(old_corners_from_grid(glon))


def old_derive_block(lat: np.ndarray, lon: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    info = (block_info or {}).get(0, {})
    loc = info.get("chunk-location", (0, 0))[0]
    nchunks = info.get("num-chunks", (1, 1))[0]
    top = 1 if loc > 0 else 0
    bottom = 1 if loc < nchunks - 1 else 0
    blat, blon = old_derive_corners(lat, lon)
    stop = lat.shape[0] - bottom
    return np.stack([blat[top:stop], blon[top:stop]], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------- helpers
def assert_same_bits(new: np.ndarray, old: np.ndarray) -> None:
    """Equal dtype, shape, values and NaN positions; equal bits wherever not NaN (signed zeros)."""
    new, old = np.asarray(new), np.asarray(old)
    assert new.dtype == old.dtype and new.shape == old.shape
    np.testing.assert_array_equal(new, old)
    nan = np.isnan(old)
    np.testing.assert_array_equal(np.isnan(new), nan)
    as_int = {4: np.uint32, 8: np.uint64}[old.dtype.itemsize]
    np.testing.assert_array_equal(new.view(as_int)[~nan], old.view(as_int)[~nan])


def block_info(loc: int, nchunks: int) -> dict:
    return {0: {"chunk-location": (loc, 0), "num-chunks": (nchunks, 1)}}


def assert_like_old(lat: np.ndarray, lon: np.ndarray) -> None:
    """Every entry point of the corner derivation against the former implementation."""
    for new, old in zip(derive_corner_grid(lat, lon), old_derive_corner_grid(lat, lon), strict=True):
        assert_same_bits(new, old)
    for new, old in zip(derive_corners(lat, lon), old_derive_corners(lat, lon), strict=True):
        assert_same_bits(new, old)
    assert_same_bits(footprints._unwrap_swath(np.asarray(lon)), old_unwrap_swath(np.asarray(lon)))
    for loc, nchunks in [(0, 1), (0, 3), (1, 3), (2, 3)]:  # one block; first, middle, last of several
        if lat.shape[0] - (loc > 0) - (loc < nchunks - 1) < 1:
            continue
        info = block_info(loc, nchunks)
        assert_same_bits(footprints._derive_block(lat, lon, info), old_derive_block(lat, lon, info))


def sphere_swath(lon0: float, lat0: float, heading_deg: float, n: int, m: int,
                 along_deg: float = 0.05, across_deg: float = 0.06) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres on the sphere along a great circle through (lon0, lat0), anywhere (poles too).

    Longitudes in [-180, 180], as products store them.
    """
    lam, phi, h = np.radians(lon0), np.radians(lat0), np.radians(heading_deg)
    p = np.array([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    east = np.array([-np.sin(lam), np.cos(lam), 0.0])
    north = np.array([-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)])
    t = np.sin(h) * east + np.cos(h) * north
    c = np.cross(p, t)
    s = np.radians((np.arange(n) - (n - 1) / 2) * along_deg)[:, None, None]
    x = np.radians((np.arange(m) - (m - 1) / 2) * across_deg * (1 + 0.3 * np.linspace(-1, 1, m) ** 2))[None, :, None]
    q = np.cos(s) * p + np.sin(s) * t
    r = np.cos(x) * q + np.sin(x) * c
    lat = np.degrees(np.arcsin(np.clip(r[..., 2], -1, 1)))
    lon = np.degrees(np.arctan2(r[..., 1], r[..., 0]))
    return lat, lon


def punch_holes(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, *, rows: int, cols: int,
                pixels: int, first: bool, last: bool, both: bool) -> tuple[np.ndarray, np.ndarray]:
    """NaN holes: whole rows, whole columns, single pixels, first/last rows (in lon, or both)."""
    lat, lon = lat.copy(), lon.copy()
    n, m = lon.shape
    mask = np.zeros((n, m), bool)
    mask[rng.integers(0, n, rows)] = True
    mask[:, rng.integers(0, m, cols)] = True
    mask[rng.integers(0, n, pixels), rng.integers(0, m, pixels)] = True
    if first:
        mask[0] = True
    if last:
        mask[-1] = True
    lon[mask] = np.nan
    if both:
        lat[mask] = np.nan
    return lat, lon


FLOAT_DTYPES = st.sampled_from([np.float32, np.float64])


# ----------------------------------------------------------------------- synthetic swaths
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lon0=st.floats(-180, 180), lat0=st.floats(-89.99, 89.99), heading=st.floats(-180, 180),
    n=st.integers(3, 40), m=st.integers(3, 30), dtype=FLOAT_DTYPES, seed=st.integers(0, 2**32 - 1),
    rows=st.integers(0, 4), cols=st.integers(0, 3), pixels=st.integers(0, 10),
    first=st.booleans(), last=st.booleans(), both=st.booleans(),
    along=st.sampled_from([0.05, 0.5, 3.0]),
)
def test_smooth_swaths_with_holes_are_bit_identical(lon0, lat0, heading, n, m, dtype, seed, rows, cols, pixels,
                                                     first, last, both, along):
    lat, lon = sphere_swath(lon0, lat0, heading, n, m, along_deg=along, across_deg=along)
    lat, lon = punch_holes(np.random.default_rng(seed), lat, lon, rows=rows, cols=cols, pixels=pixels,
                           first=first, last=last, both=both)
    assert_like_old(lat.astype(dtype), lon.astype(dtype))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(3, 8), m=st.integers(3, 8), dtype=FLOAT_DTYPES)
def test_arbitrary_values_are_bit_identical(data, n, m, dtype):
    # jumps of any size, NaN, infinities, huge values: every branch of np.unwrap and np.mod
    width = 32 if dtype is np.float32 else 64
    values = st.one_of(
        st.floats(-720, 720, width=width),
        st.sampled_from([-540.0, -360.0, -180.0, -0.0, 0.0, 180.0, 360.0, 540.0, 179.99999, -180.00001]),
        st.floats(allow_nan=True, allow_infinity=True, width=width),
    )
    lat = data.draw(arrays(dtype, (n, m), elements=values))
    lon = data.draw(arrays(dtype, (n, m), elements=values))
    with np.errstate(all="ignore"):
        assert_like_old(lat, lon)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_swath_across_the_antimeridian(dtype):
    for lon0, heading in [(179.9, -12.0), (-179.95, 170.0), (180.0, 90.0), (-180.0, -80.0)]:
        lat, lon = sphere_swath(lon0, 10.0, heading, 30, 25, along_deg=0.1, across_deg=0.1)
        assert lon.max() > 179 and lon.min() < -179
        assert_like_old(lat.astype(dtype), lon.astype(dtype))
    sw = s5p_swath(179.5, 10.0, n_scan=12, n_pix=40)
    assert_like_old(sw.lat.astype(dtype), ((sw.lon + 180.0) % 360.0 - 180.0).astype(dtype))
    assert_like_old(sw.lat.astype(dtype), sw.lon.astype(dtype))  # continuous longitudes beyond 180


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lat0", [89.99, 89.5, -89.97, 88.0])
def test_swath_near_a_pole(dtype, lat0):
    for heading in [0.0, -12.0, 90.0, 180.0]:
        lat, lon = sphere_swath(30.0, lat0, heading, 41, 33, along_deg=0.05, across_deg=0.08)
        assert_like_old(lat.astype(dtype), lon.astype(dtype))


def test_tiny_and_degenerate_swaths():
    rng = np.random.default_rng(5)
    lat, lon = sphere_swath(12.0, 45.0, -12.0, 3, 3)
    assert_like_old(lat, lon)
    assert_like_old(lat.astype(np.float32), lon.astype(np.float32))
    assert_like_old(rng.uniform(-90, 90, (3, 3)), rng.uniform(-180, 180, (3, 3)))
    nan = np.full((3, 4), np.nan)
    assert_like_old(lat[:, [0, 1, 2, 2]], nan)  # no finite longitude at all
    one = nan.copy()
    one[1, 2] = 170.0
    assert_like_old(nan, one)  # a single finite longitude
    with np.errstate(invalid="ignore"):
        assert_like_old(np.zeros((3, 3)), np.full((3, 3), np.inf))
        mixed = np.array([[np.inf, np.nan, -np.inf], [np.nan, 179.0, np.nan], [-179.0, np.inf, 181.0]])
        assert_like_old(mixed, mixed)
    assert_like_old(np.zeros((3, 3), np.float16), np.full((3, 3), 179.5, np.int64))  # other dtypes: float64
    assert_like_old(lat.astype(np.float32), lon)  # mixed precision: both float64
    assert_like_old(np.asfortranarray(rng.uniform(-90, 90, (5, 4))), rng.uniform(-180, 180, (10, 4))[::2])


@pytest.mark.parametrize("shape", [(2, 5), (5, 2), (0, 0), (2, 2), (3, 0)])
def test_fewer_than_3x3_pixels_raise(shape):
    for f in (derive_corners, derive_corner_grid):
        with pytest.raises(ValueError, match="3 x 3"):
            f(np.zeros(shape), np.zeros(shape))
    with pytest.raises(ValueError):
        derive_corners(np.zeros((4, 4)), np.zeros((4, 5)))


@pytest.mark.parametrize("chunks", [3, 4, 5, 7, 16, 100])
def test_lazy_blocks_equal_the_old_results(chunks, monkeypatch):
    rng = np.random.default_rng(chunks)
    cases = [
        sphere_swath(20.0, 50.0, -12.0, 37, 11),
        punch_holes(rng, *sphere_swath(-70.0, -30.0, 170.0, 37, 11), rows=3, cols=1, pixels=5, first=True,
                    last=True, both=False),
        sphere_swath(179.9, 5.0, -12.0, 37, 11, along_deg=0.2),  # across the antimeridian
        sphere_swath(100.0, 89.8, 0.0, 37, 11, along_deg=0.05),  # over the pole
    ]
    for k, (lat, lon) in enumerate(cases):
        for dtype in (np.float32, np.float64):
            la, lo = lat.astype(dtype), lon.astype(dtype)

            def lazy(la=la, lo=lo):
                parts = derive_corners_lazy(da.from_array(la, chunks=(chunks, -1)),
                                            da.from_array(lo, chunks=(chunks, -1)))
                return da.compute(*parts)

            with monkeypatch.context() as mp:
                mp.setattr(footprints, "_derive_block", old_derive_block)
                ref = lazy()
            got = lazy()
            for new, old in zip(got, ref, strict=True):
                assert_same_bits(new, old)
            if k < 2:  # without jumps of 360 degrees blocks unwrap alike: the eager result itself
                for new, old in zip(got, old_derive_corners(la, lo), strict=True):
                    assert_same_bits(new, old.astype(np.float32))


# ----------------------------------------------------------------------- the real orbit
@pytest.fixture(scope="module")
def orbit():
    folder = SHARED / "s5p"
    found = sorted(folder.glob(ORBIT_GLOB)) if folder.is_dir() else []
    if not found:
        pytest.skip(f"real orbit {ORBIT_GLOB} not available (looked in {folder}; set EO_PIPELINE_SHARED_DATA)")
    with pytest.warns(UserWarning):
        ds = eo.open_product(found[0])
    return ds.latitude.values, ds.longitude.values


@pytest.mark.realdata
def test_real_orbit_is_bit_identical(orbit):
    lat, lon = orbit
    assert lat.shape == (3245, 215)
    assert_like_old(lat, lon)
    assert_like_old(lat.astype(np.float64), lon.astype(np.float64))
    lat_h, lon_h = punch_holes(np.random.default_rng(1), lat, lon, rows=20, cols=3, pixels=500, first=True,
                               last=True, both=False)
    assert_like_old(lat_h, lon_h)


@pytest.mark.realdata
@pytest.mark.parametrize("chunks", [3, 100, 777, 3245])
def test_real_orbit_lazy_equals_the_old_eager_corners(orbit, chunks):
    lat, lon = orbit
    ref = old_derive_corners(lat, lon)
    got = da.compute(*derive_corners_lazy(da.from_array(lat, chunks=(chunks, -1)),
                                          da.from_array(lon, chunks=(chunks, -1))))
    for new, old in zip(got, ref, strict=True):
        assert_same_bits(new, old.astype(np.float32))
