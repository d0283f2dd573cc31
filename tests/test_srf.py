# SPDX-License-Identifier: Apache-2.0
"""Physics-based oversampling (method="srf"): closed forms, a brute-force reference, grids, jobs, real data."""

from __future__ import annotations

import math
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

import eo_pipeline as eo
from eo_pipeline.errors import ReaderOptionError
from eo_pipeline.footprints import SRF_SHAPES, srf_shape_of
from eo_pipeline.grid import GridSpec
from eo_pipeline.gridding import grid_soundings

from .conftest import raise_if_dask_computes, shared_file

T0 = np.datetime64("2023-07-15T05:00", "ns")
LN2 = math.log(2.0)
SCALE = {(2, 2, 1): 1.13309, (4, 2, 1): 1.05742, (2, 4, 1): 1.05742, (4, 4, 1): 0.9868}


def soundings(lon, lat, lon_b, lat_b, x, u=None, instrument="TROPOMI", chunk=None, time=None) -> xr.Dataset:
    """Canonical 1-D soundings with explicit centres and corners (S5P corner order)."""
    lon = np.atleast_1d(np.asarray(lon, float))
    lat = np.atleast_1d(np.asarray(lat, float))
    lon_b = np.asarray(lon_b, float).reshape(-1, 4)
    lat_b = np.asarray(lat_b, float).reshape(-1, 4)
    n = lon.size
    chunk = chunk or n
    x = np.broadcast_to(np.asarray(x, "f8"), (n,))
    u = np.ones(n) if u is None else np.broadcast_to(np.asarray(u, float), (n,))
    time = np.full(n, T0) if time is None else np.asarray(time, "datetime64[ns]")
    d, dc = ("sounding",), ("sounding", "corner")

    def arr(a):
        return da.from_array(np.ascontiguousarray(a), chunks=(chunk,) + a.shape[1:])

    return xr.Dataset(
        {"xch4": (d, arr(x.astype("f4")), {"units": "ppb"}),
         "xch4_uncertainty": (d, arr(u.astype("f4")), {"units": "ppb"}),
         "valid": (d, arr(np.ones(n, bool))),
         "latitude_bounds": (dc, arr(lat_b)), "longitude_bounds": (dc, arr(lon_b))},
        coords={"longitude": (d, arr(lon)), "latitude": (d, arr(lat)), "time": (d, arr(time))},
        attrs={"source_file": "synthetic", "instrument": instrument,
               "time_coverage_start": str(time.min())[:19] + "Z", "time_coverage_end": str(time.max())[:19] + "Z"})


def rectangle(cx, cy, wx, wy):
    """Corners (S5P order: (x-, y-), (x+, y-), (x+, y+), (x-, y+)) of an axis-aligned rectangle."""
    return ([cx - wx / 2, cx + wx / 2, cx + wx / 2, cx - wx / 2], [cy - wy / 2, cy - wy / 2, cy + wy / 2, cy + wy / 2])


def closed_form(dx, dy, fx, fy, k=(4, 2, 1)):
    k1, k2, k3 = k
    wx = fx / (2 * LN2 ** (1 / (k1 * k3)))
    wy = fy / (2 * LN2 ** (1 / (k2 * k3)))
    return np.exp(-((np.abs(dx / wx) ** k1 + np.abs(dy / wy) ** k2) ** k3)) / SCALE.get(tuple(k), 1.0)


# ----------------------------------------------------------------------------- an independent reference
def reference(cx, cy, ox, oy, x, g: GridSpec, k=(4, 2, 1), window=1.5, var=None):
    """Brute force, straight from the definition: dense sums, numpy's solver for the 4-point transform.

    ``cx, cy, ox, oy`` in grid units (corner offsets from the centre, S5P order); returns
    num_samples, weight and mean (north-up rows).
    """
    rows, cols = g.shape
    xs, ys = g.x, g.y
    (dxc, dyc) = g.resolution
    ns = np.zeros((rows, cols))
    sw = np.zeros((rows, cols))
    swx = np.zeros((rows, cols))
    k1, k2, k3 = k
    s = SCALE.get(tuple(k), 1.0)
    y_up = ys[::-1]  # ascending coordinates: argmin takes the lower one on a tie
    for i in range(len(cx)):
        if not (g.bounds[0] <= cx[i] <= g.bounds[2] and g.bounds[1] <= cy[i] <= g.bounds[3]):
            continue
        v = np.column_stack([ox[i], oy[i]])
        left, right = v[[0, 3]].mean(0), v[[1, 2]].mean(0)
        low, high = v[[0, 1]].mean(0), v[[3, 2]].mean(0)
        fx, fy = np.linalg.norm(right - left), np.linalg.norm(high - low)
        tgt = np.array([[-fx, -fy], [fx, -fy], [fx, fy], [-fx, fy]]) / 2
        m, r = [], []
        for (a, b), (X, Y) in zip(v, tgt, strict=True):
            m.append([a, b, 1, 0, 0, 0, -a * X, -b * X])
            r.append(X)
            m.append([0, 0, 0, a, b, 1, -a * Y, -b * Y])
            r.append(Y)
        h = np.linalg.solve(np.array(m), np.array(r))
        jc = int(np.argmin(np.abs(xs - cx[i])))
        ic = rows - 1 - int(np.argmin(np.abs(y_up - cy[i])))
        ec = math.ceil(np.ptp(ox[i]) / 2 / dxc * window)
        er = math.ceil(np.ptp(oy[i]) / 2 / dyc * window)
        area = 0.5 * abs(np.dot(ox[i], np.roll(oy[i], -1)) - np.dot(np.roll(ox[i], -1), oy[i]))
        wu = 1.0 if var is None else var[i]
        for rr in range(max(ic - er, 0), min(ic + er, rows - 1) + 1):
            for cc in range(max(jc - ec, 0), min(jc + ec, cols - 1) + 1):
                px, py = xs[cc] - cx[i], ys[rr] - cy[i]
                qx = h[0] * px + h[1] * py + h[2]
                qy = h[3] * px + h[4] * py + h[5]
                wx = fx / (2 * LN2 ** (1 / k1 / k3))
                wy = fy / (2 * LN2 ** (1 / k2 / k3))
                sg = math.exp(-((abs(qx / wx) ** k1 + abs(qy / wy) ** k2) ** k3)) / s
                ns[rr, cc] += sg
                sw[rr, cc] += sg / area / wu
                swx[rr, cc] += sg / area / wu * x[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        return ns, sw, np.where(sw > 0, swx / sw, np.nan)


# ----------------------------------------------------------------------------- hand-computed cases
@pytest.mark.parametrize("k", [(4, 2, 1), (2, 2, 1), (6, 2, 3), (2, 2, 9)])
def test_rectangle_pixel_equals_closed_form_at_every_cell(k):
    g = GridSpec.from_bbox((10, 20, 11, 21), 0.01)
    cx, cy, fx, fy = 10.5013, 20.4987, 0.07, 0.05
    lon_b, lat_b = rectangle(cx, cy, fx, fy)
    ds = soundings(cx, cy, lon_b, lat_b, 1850.0)
    with raise_if_dask_computes():
        l3 = grid_soundings(ds, g, method="srf", srf_shape=k, statistics=["mean", "count", "weight"])
    r = l3.compute()
    ns = r.xch4_num_samples.values.astype(float)
    # the window: ceil(0.07 / 2 / 0.01 * 1.5) = 6 columns, ceil(0.05 / 2 / 0.01 * 1.5) = 4 rows around the centre cell
    jc, ic = 50, 50  # centre 10.5013 is nearest cell 50 (10.505); 20.4987 nearest row 50 (20.495)
    expected = np.zeros(g.shape)
    xx, yy = np.meshgrid(g.x[jc - 6:jc + 7] - cx, g.y[ic - 4:ic + 5] - cy)
    expected[ic - 4:ic + 5, jc - 6:jc + 7] = closed_form(xx, yy, fx, fy, k)
    np.testing.assert_allclose(ns, expected, rtol=2e-6, atol=1e-30)  # float32 output
    # every cell of the 13 x 9 window counts where the SRF does not underflow to 0 (steep shapes far out)
    assert np.array_equal(r.xch4_count.values > 0, expected > 0)
    if k in ((4, 2, 1), (2, 2, 1)):
        assert (expected > 0).sum() == 13 * 9
    np.testing.assert_allclose(r.xch4_weight.values, expected / (fx * fy), rtol=2e-6, atol=1e-44)  # float32
    assert np.nanmax(np.abs(r.xch4_mean.values - 1850.0)) == 0
    assert r.xch4_weight.attrs["units"] == "degree-2"
    assert r.attrs["srf_shape"] == " ".join(f"{v:g}" for v in k)


def test_tropomi_shape_by_default_and_by_name():
    assert srf_shape_of(None, "TROPOMI") == (4.0, 2.0, 1.0)
    assert srf_shape_of(None, "OCO-2") == (2.0, 2.0, 1.0)
    assert srf_shape_of(None, "TROPOMI", has_corners=False) == (2.0, 2.0, 1.0)
    assert srf_shape_of("iasi") == SRF_SHAPES["IASI"] == (2.0, 2.0, 9.0)
    assert srf_shape_of("OMPS") == (6.0, 2.0, 3.0)
    assert srf_shape_of("CrIS") == (2.0, 2.0, 4.0)
    assert srf_shape_of("3, 2, 1") == (3.0, 2.0, 1.0)
    for bad in ("2,2", "nonsense", (1, -2, 1), (1, 2, float("nan"))):
        with pytest.raises(ValueError):
            srf_shape_of(bad)


def test_window_rule_and_tie_to_the_lower_coordinate():
    g = GridSpec.from_bbox((0, 0, 1, 1), 0.1)
    # centre exactly on the edge between columns 4 and 5 and rows 4 and 5 (y 0.5): ties go to the lower coordinate
    lon_b, lat_b = rectangle(0.5, 0.5, 0.1, 0.1)
    r = grid_soundings(soundings(0.5, 0.5, lon_b, lat_b, 1.0), g, method="srf").compute()
    touched = r.xch4_count.values > 0
    rows, cols = np.nonzero(touched)
    # half-widths ceil(0.1 / 2 / 0.1 * 1.5) = 1: columns 3..5 around column 4 (x 0.45), rows 4..6 around row 5 (y 0.45)
    assert sorted(set(cols)) == [3, 4, 5]
    assert sorted(set(rows)) == [4, 5, 6]
    # a larger window factor widens it: ceil(0.5 * 3) = 2
    r3 = grid_soundings(soundings(0.5, 0.5, lon_b, lat_b, 1.0), g, method="srf", srf_window=3).compute()
    assert sorted(set(np.nonzero(r3.xch4_count.values > 0)[1])) == [2, 3, 4, 5, 6]


def test_constant_field_gives_the_constant_everywhere():
    rng = np.random.default_rng(3)
    g = GridSpec.from_bbox((0, 0, 2, 2), 0.02)
    n = 60
    cx, cy = rng.uniform(0.2, 1.8, n), rng.uniform(0.2, 1.8, n)
    ang = rng.uniform(0, np.pi, n)
    lon_b = np.empty((n, 4))
    lat_b = np.empty((n, 4))
    for i in range(n):
        base = np.array([[-1, -1], [1, -1], [1.2, 1], [-0.9, 1.1]]) * [0.05, 0.035]
        rot = np.array([[np.cos(ang[i]), -np.sin(ang[i])], [np.sin(ang[i]), np.cos(ang[i])]])
        v = base @ rot.T
        lon_b[i], lat_b[i] = cx[i] + v[:, 0], cy[i] + v[:, 1]
    r = grid_soundings(soundings(cx, cy, lon_b, lat_b, 1875.25, u=rng.uniform(1, 9, n)), g, method="srf",
                       weighting="inverse_variance", statistics="all").compute()
    m = r.xch4_mean.values
    assert np.isfinite(m).sum() > 1000
    np.testing.assert_allclose(m[np.isfinite(m)], 1875.25, rtol=0, atol=2e-4)
    np.testing.assert_allclose(np.nanmax(r.xch4_std.values), 0, atol=1e-3)


@pytest.mark.parametrize("k", [(4, 2, 1), (2, 2, 1)])
def test_num_samples_of_a_pixel_tiled_by_fine_cells_is_its_area_in_cells(k):
    g = GridSpec.from_bbox((0, 0, 1, 1), 0.002)
    cx, cy, fx, fy = 0.5, 0.5, 0.07, 0.05
    lon_b, lat_b = rectangle(cx, cy, fx, fy)
    ds = soundings(cx, cy, lon_b, lat_b, 1.0)
    cells = fx * fy / 0.002**2  # 875 cells
    wide = grid_soundings(ds, g, method="srf", srf_shape=k, srf_window=6).compute()
    assert float(wide.xch4_num_samples.sum()) == pytest.approx(cells, rel=2e-3)  # s normalises the SRF to the area
    # the default window keeps ceil(fwhm / 2 / cell x 1.5) cells on each side of the centre cell, i.e. the SRF
    # within (that + 1/2) cells of the centre: the fraction of exp(-|t|^k) within |t| < a is P(1/k, a^k)
    from scipy.special import gammainc

    default = grid_soundings(ds, g, method="srf", srf_shape=k).compute()
    kept = 1.0
    for f, kk in ((fx, k[0]), (fy, k[1])):
        reach = (math.ceil(f / 2 / 0.002 * 1.5) + 0.5) * 0.002
        w = f / (2 * LN2 ** (1 / kk))
        kept *= gammainc(1 / kk, (reach / w) ** kk)
    assert kept < 0.97  # the window does cut the tails
    assert float(default.xch4_num_samples.sum()) == pytest.approx(cells * kept, rel=2e-3)


def test_inverse_variance_weighting_against_hand_sums():
    g = GridSpec.from_bbox((0, 0, 0.2, 0.2), 0.01)
    c1, c2 = (0.1013, 0.1021), (0.1162, 0.0968)  # off the cell edges (no ties of the nearest centre)
    b1 = rectangle(*c1, 0.06, 0.04)
    b2 = rectangle(*c2, 0.05, 0.05)
    ds = soundings([c1[0], c2[0]], [c1[1], c2[1]], [b1[0], b2[0]], [b1[1], b2[1]], [1800.0, 1900.0], u=[4.0, 10.0])
    r = grid_soundings(ds, g, method="srf", weighting="inverse_variance", statistics="all").compute()
    ref_ns, ref_w, ref_m = reference(np.array([c1[0], c2[0]]), np.array([c1[1], c2[1]]),
                                     np.array([np.array(b1[0]) - c1[0], np.array(b2[0]) - c2[0]]),
                                     np.array([np.array(b1[1]) - c1[1], np.array(b2[1]) - c2[1]]),
                                     [1800.0, 1900.0], g, var=[16.0, 100.0])
    np.testing.assert_allclose(r.xch4_weight.values, ref_w, rtol=2e-6)
    both = np.isfinite(ref_m)
    np.testing.assert_allclose(r.xch4_mean.values[both], ref_m[both], rtol=1e-7)
    assert np.array_equal(np.isfinite(r.xch4_mean.values), both)
    assert r.xch4_weight.attrs["units"] == "degree-2 (ppb)-2"
    # the propagated uncertainty of a cell: sqrt(sum w^2 sigma^2) / sum w, here with w = SRF / area / sigma^2
    cell = np.unravel_index(np.nanargmax(ref_w), g.shape)
    plain = grid_soundings(ds, g, method="srf", statistics=["mean", "weight"]).compute()
    assert float(plain.xch4_weight.values[cell]) > 0
    assert np.isfinite(r.xch4_uncertainty.values[cell])


# ----------------------------------------------------------------------------- property test vs brute force
def _random_quads(rng, n, lo, hi, size):
    cx, cy = rng.uniform(lo, hi, n), rng.uniform(lo, hi, n)
    ox = np.empty((n, 4))
    oy = np.empty((n, 4))
    for i in range(n):
        base = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * [size * rng.uniform(0.5, 1.5), size]
        base += rng.normal(0, 0.15 * size, (4, 2))  # a general (convex) quadrilateral
        a = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        v = base @ rot.T
        ox[i], oy[i] = v[:, 0], v[:, 1]
    return cx, cy, ox, oy


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.sampled_from([(4, 2, 1), (2, 2, 1), (6, 2, 3), (2, 2, 4)]),
       window=st.sampled_from([1.0, 1.5, 2.5]))
def test_matches_a_brute_force_reference(seed, k, window):
    rng = np.random.default_rng(seed)
    g = GridSpec.from_bbox((0, 0, 1.2, 1.0), 0.04)
    n = 12
    cx, cy, ox, oy = _random_quads(rng, n, -0.05, 1.25, 0.05)
    x = rng.normal(1850, 20, n)
    ds = soundings(cx, cy, cx[:, None] + ox, cy[:, None] + oy, x, chunk=5)
    r = grid_soundings(ds, g, method="srf", srf_shape=k, srf_window=window, statistics=["mean", "weight"]).compute()
    ns, sw, mean = reference(cx, cy, ox, oy, x.astype(np.float32).astype(float), g, k=k, window=window)
    np.testing.assert_allclose(r.xch4_num_samples.values, ns, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(r.xch4_weight.values, sw, rtol=1e-5, atol=1e-30)
    assert np.array_equal(np.isfinite(r.xch4_mean.values), np.isfinite(mean))
    np.testing.assert_allclose(r.xch4_mean.values, mean, rtol=1e-6)
    inside = (cx >= 0) & (cx <= 1.2) & (cy >= 0) & (cy <= 1.0)
    assert int(r.n_soundings_used) == int(inside.sum())


# ----------------------------------------------------------------------------- grids
def test_antimeridian_pixel_matches_the_same_pixel_elsewhere():
    g = GridSpec("EPSG:4326", Affine(0.05, 0, -180, 0, -0.05, 10), (40, 7200))
    fx, fy = 0.12, 0.08

    def cells_around(lon):
        lon_b, lat_b = rectangle(lon, 9.0, fx, fy)
        lon_b = [((v + 180) % 360) - 180 for v in lon_b]  # as products give them: wrapped into [-180, 180)
        r = grid_soundings(soundings(lon, 9.0, lon_b, lat_b, 1900.0), g, method="srf").compute()
        assert int(r.n_soundings_used) == 1 and int(r.n_footprints_dropped) == 0
        centre_col = int(np.floor(((lon + 180) % 360) / 0.05))  # move the pixel's cells to the map's middle
        return np.roll(r.xch4_num_samples.values, 3600 - centre_col, axis=1)[:, 3590:3611]

    # each pixel at the antimeridian has the values of the same pixel at the same place in its cell elsewhere
    for lon, twin in ((179.99, -0.01), (-179.99, 0.01)):
        here, there = cells_around(lon), cells_around(twin)
        assert (there > 0).sum() > 20
        np.testing.assert_allclose(here, there, rtol=1e-4, atol=1e-7)
    lon_b, lat_b = rectangle(179.99, 9.0, fx, fy)
    r = grid_soundings(soundings(179.99, 9.0, [((v + 180) % 360) - 180 for v in lon_b], lat_b, 1900.0), g,
                       method="srf").compute()
    cols = np.nonzero(r.xch4_count.values.any(axis=0))[0]
    assert cols.min() == 0 and cols.max() == 7199  # both edges of the map


def test_equal_area_grid_works_in_metres():
    g = GridSpec.from_bbox((-200_000, -200_000, 200_000, 200_000), 2000.0, "EPSG:6933")  # EASE-Grid 2.0 global
    rng = np.random.default_rng(5)
    n = 15
    lon, lat = rng.uniform(-1.5, 1.5, n), rng.uniform(-1.5, 1.5, n)
    lon_b = lon[:, None] + np.array([-0.03, 0.03, 0.035, -0.025])
    lat_b = lat[:, None] + np.array([-0.025, -0.02, 0.025, 0.03])
    x = rng.normal(1850, 10, n)
    r = grid_soundings(soundings(lon, lat, lon_b, lat_b, x), g, method="srf", statistics=["mean", "weight"]).compute()
    cx, cy = g.lonlat_to_xy(lon, lat)
    bx, by = g.lonlat_to_xy(lon_b.ravel(), lat_b.ravel())
    ns, sw, mean = reference(cx, cy, bx.reshape(n, 4) - cx[:, None], by.reshape(n, 4) - cy[:, None],
                             x.astype(np.float32).astype(float), g)
    np.testing.assert_allclose(r.xch4_num_samples.values, ns, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(r.xch4_weight.values, sw, rtol=1e-5, atol=1e-35)
    np.testing.assert_allclose(r.xch4_mean.values, mean, rtol=1e-6)
    assert r.xch4_weight.attrs["units"] == "m-2"
    # an equal-area grid: the pixel of ~6.6 x 5.5 km spreads over about its area in 2 km cells
    assert float(r.xch4_num_samples.sum()) / n == pytest.approx(np.mean(
        [0.5 * abs(np.dot(a, np.roll(b, -1)) - np.dot(np.roll(a, -1), b)) for a, b in
         zip(bx.reshape(n, 4), by.reshape(n, 4), strict=True)]) / 2000**2, rel=0.15)


def test_soundings_without_corners_use_a_circle_of_their_field_of_view():
    g = GridSpec.from_bbox((99, 39, 101, 41), 0.01)
    d = ("sounding",)
    ds = xr.Dataset(
        {"xch4": (d, np.array([1850.0], "f4")), "xch4_uncertainty": (d, np.array([5.0], "f4")),
         "valid": (d, np.array([True]))},
        coords={"longitude": (d, [100.0]), "latitude": (d, [40.0]), "time": (d, np.array([T0]))},
        attrs={"source_file": "gosat", "instrument": "TANSO-FTS", "time_coverage_start": "2023-07-15T05:00:00Z",
               "time_coverage_end": "2023-07-15T05:00:00Z"})
    r = grid_soundings(ds, g, method="srf", srf_window=4).compute()
    assert r.attrs["srf_shape"] == "2 2 1"
    ns = r.xch4_num_samples.values
    # a Gaussian of fwhm = 10.5 km in both directions: its integral is pi / (4 ln 2) fwhm^2 = s fwhm^2, so
    # num_samples sums to fwhm^2 in cells
    km_lon = 111.32 * math.cos(math.radians(40.0)) * 0.01  # cell width and height, km (approximately)
    km_lat = 111.0 * 0.01
    assert float(ns.sum()) == pytest.approx(10.5**2 / (km_lon * km_lat), rel=0.02)
    row, col = np.unravel_index(np.argmax(ns), ns.shape)
    assert ns[row, col] == pytest.approx(1 / 1.13309, rel=0.02)
    with pytest.raises(ReaderOptionError, match="field of view"):
        grid_soundings(ds, g, method="srf", no_corners="point")


def test_options_are_checked():
    g = GridSpec.from_bbox((0, 0, 1, 1), 0.1)
    lon_b, lat_b = rectangle(0.5, 0.5, 0.1, 0.1)
    ds = soundings(0.5, 0.5, lon_b, lat_b, 1.0)
    with pytest.raises(ReaderOptionError, match="num_samples"):
        grid_soundings(ds, g, method="area", statistics=["mean", "num_samples"])
    with pytest.raises(ReaderOptionError, match="srf_window"):
        grid_soundings(ds, g, method="srf", srf_window=0)
    with pytest.raises(ReaderOptionError, match="srf_shape"):
        grid_soundings(ds, g, method="srf", srf_shape="2,2")
    with pytest.raises(ReaderOptionError, match="method"):
        grid_soundings(ds, g, method="oversample")


def test_pixels_outside_the_grid_and_degenerate_pixels():
    g = GridSpec.from_bbox((0, 0, 1, 1), 0.1)
    good = rectangle(0.5, 0.5, 0.1, 0.1)
    out = rectangle(1.04, 0.5, 0.1, 0.1)  # centre off the grid, footprint reaching in: not used (as popy)
    flat = ([0.2, 0.3, 0.4, 0.3], [0.2, 0.2, 0.2, 0.2])  # zero area
    ds = soundings([0.5, 1.04, 0.3], [0.5, 0.5, 0.2], [good[0], out[0], flat[0]], [good[1], out[1], flat[1]],
                   [1.0, 2.0, 3.0])
    r = grid_soundings(ds, g, method="srf").compute()
    assert int(r.n_soundings_used) == 1
    assert int(r.n_footprints_dropped) == 1
    assert np.nanmax(r.xch4_mean.values) == 1.0


# ----------------------------------------------------------------------------- composites, jobs, command line
def test_composite_by_day_and_blocks():
    g = GridSpec.from_bbox((0, 0, 4, 4), 0.004)  # 1000 x 1000 cells: blocks of 512 with chunk=512
    rng = np.random.default_rng(1)
    n = 40
    cx, cy, ox, oy = _random_quads(rng, n, 0.1, 3.9, 0.03)
    times = T0 + np.where(np.arange(n) % 2, 0, 86_400) * np.timedelta64(1, "s")
    x = rng.normal(1850, 10, n)
    ds = soundings(cx, cy, cx[:, None] + ox, cy[:, None] + oy, x, chunk=7, time=times)
    with raise_if_dask_computes():
        c = eo.composite(ds, g, period="day", method="srf", chunk=512, statistics=["mean", "count"])
    assert c.xch4_mean.data.numblocks[1:] == (2, 2)
    r = c.compute()
    assert r.sizes["time"] == 2
    for k, day in enumerate((1, 0)):  # odd soundings on day 0, even ones on day 1
        sel = (np.arange(n) % 2) == day
        one = grid_soundings(soundings(cx[sel], cy[sel], (cx[:, None] + ox)[sel], (cy[:, None] + oy)[sel], x[sel]),
                             g, method="srf", statistics=["mean", "count"]).compute()
        np.testing.assert_array_equal(r.xch4_num_samples.values[k], one.xch4_num_samples.values)
        np.testing.assert_array_equal(r.xch4_mean.values[k], one.xch4_mean.values)


def test_command_line_and_job(tmp_path, ch4_file):
    out = tmp_path / "srf.tif"
    cmd = [sys.executable, "-m", "eo_pipeline.cli", "grid", str(ch4_file), "--bbox", "110", "34", "116", "40",
           "--resolution", "0.02", "--method", "srf", "--srf-shape", "TROPOMI", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with rasterio.open(out) as src:
        assert src.descriptions == ("xch4_mean", "xch4_count", "xch4_weight", "xch4_num_samples")
        assert src.tags()["srf_shape"] == "4 2 1"
        assert src.tags()["method"] == "srf"
        ns = src.read(4)
    assert ns.max() > 0
    bad = subprocess.run(cmd[:-2] + ["--srf-window", "-1", "-o", str(tmp_path / "x.tif")], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "srf_window" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.tif").exists()


def test_job_config_hash_unchanged_for_other_methods(tmp_path):
    from eo_pipeline.config import JobConfig, config_hash

    base = {"inputs": ["x.nc"], "gridding": {"grid": "north_china_0p05"}, "output": {"dir": str(tmp_path)}}
    cfg = JobConfig.model_validate(base)
    cfg_srf = JobConfig.model_validate({**base, "gridding": {"grid": "north_china_0p05", "method": "srf"}})
    cfg_srf2 = JobConfig.model_validate({**base, "gridding": {"grid": "north_china_0p05", "method": "srf",
                                                              "srf_window": 2.0, "srf_shape": [2, 2, 1]}})
    assert len({config_hash(cfg), config_hash(cfg_srf), config_hash(cfg_srf2)}) == 3
    import hashlib
    import json
    doc = cfg.model_dump(mode="json", exclude={"cluster": True, "output": {"dir"}})
    doc.pop("plumes", None)
    doc["gridding"].pop("srf_shape")
    doc["gridding"].pop("srf_window")
    assert config_hash(cfg) == hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the real orbit
def test_real_orbit_selects_the_reference_pixels():
    path = shared_file("s5p")
    files = sorted(path.glob("*fullorbit-varsubset.nc4"))
    if not files:
        pytest.skip("the real whole S5P orbit is not in ../shared/data/s5p")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = eo.open_product(files[0])
    g = GridSpec("EPSG:4326", Affine(0.05, 0, -30, 0, -0.05, 60), (2400, 1800))
    r = grid_soundings(ds, g, method="srf", statistics=["mean", "count", "weight"]).compute()
    assert int(r.n_soundings_used) == 49297  # the pixels whose centres lie in 60 S-60 N, 30 W-60 E
    assert int(r.n_footprints_dropped) == 0
    m = r.xch4_mean.values
    area = grid_soundings(ds, g, method="area", statistics=["mean"]).compute().xch4_mean.values
    both = np.isfinite(m) & np.isfinite(area)
    # the two methods agree on the large scale: the same values within the orbit's own spread
    assert abs(np.nanmean(m[both]) - np.nanmean(area[both])) < 1.0
    assert np.nanmin(m) >= np.nanmin(ds.xch4.values) - 1e-3 and np.nanmax(m) <= np.nanmax(ds.xch4.values) + 1e-3


def test_a_job_with_srf_writes_every_output(tmp_path):
    import json

    from eo_pipeline.config import load_config
    from eo_pipeline.pipeline import run

    from .test_pipeline import demo_config

    path = demo_config(tmp_path, forest=None, plumes=None,
                       gridding={"grid": "north_china_0p05", "method": "srf", "srf_window": 1.5})
    result = run(load_config(path))
    out = tmp_path / "out"
    cogs = sorted(out.glob("*xch4*.tif"))
    assert cogs, result.outputs
    with rasterio.open(cogs[0]) as src:
        assert "xch4_num_samples" in src.descriptions
        assert src.tags()["method"] == "srf"
    with xr.open_dataset(out / "xch4_srf_north_china_0p05.nc") as ds:
        assert ds.xch4_num_samples.attrs["cell_methods"].endswith("sum")
        assert ds.attrs["srf_shape"] == "2 2 1; 4 2 1"  # GOSAT circles and TROPOMI pixels
        assert float(ds.xch4_num_samples.max()) > 0
    # the planted Qinshui enhancement is still found as a hotspot
    hotspots = json.loads(next(out.glob("*xch4*hotspots*.geojson")).read_text())
    near = [f for f in hotspots["features"]
            if abs(f["properties"]["lon"] - 112.7) < 0.5 and abs(f["properties"]["lat"] - 35.95) < 0.5]
    assert near, [f["properties"] for f in hotspots["features"]]


def test_same_maps_with_processes_as_with_threads():
    # the chunk tasks (Binning with the srf settings, the compiled kernel) travel to other processes
    rng = np.random.default_rng(11)
    g = GridSpec.from_bbox((0, 0, 2, 2), 0.01)
    cx, cy, ox, oy = _random_quads(rng, 300, 0.05, 1.95, 0.03)
    ds = soundings(cx, cy, cx[:, None] + ox, cy[:, None] + oy, rng.normal(1850, 10, 300), chunk=60)
    l3 = grid_soundings(ds, g, method="srf", statistics=["mean", "weight"])
    threads = l3.compute(scheduler="threads")
    processes = l3.compute(scheduler="processes", num_workers=2)
    xr.testing.assert_identical(threads, processes)
