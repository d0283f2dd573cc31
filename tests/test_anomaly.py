# SPDX-License-Identifier: Apache-2.0
"""Backgrounds, anomalies and z-scores: hand-computed cases, brute force, climatology, laziness."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import eo_pipeline as eo
from eo_pipeline.anomaly import (
    MAD_SCALE,
    _bit_add,
    _bit_remove,
    _moving_block,
    _moving_median_kernel,
    _next_set,
    _prev_set,
    _row_strips,
    _sort_order,
    parse_regions,
    regional_anomaly,
)
from eo_pipeline.errors import EOPipelineError, QualityWarning
from eo_pipeline.grid import GridSpec
from eo_pipeline.gridding import grid_soundings

from .conftest import raise_if_dask_computes
from .test_binning import soundings


def _times(days):
    return np.array([np.datetime64("2023-07-15T05:00", "ns") + np.timedelta64(int(d), "D") for d in days])


def test_daily_median_on_soundings_by_hand():
    lon = [100, 101, 102, 103, 104, 105, 10, 0]
    lat = [30, 31, 32, 33, 34, 35, 45, -30]
    x = [1, 2, 3, 4, 100, 7, 50, 9]
    valid = [True, True, True, True, True, False, True, True]
    ds = soundings(lon, lat, x, valid=valid, chunk=3).assign_coords(time=("sounding", _times([0, 0, 0, 0, 0, 0, 1, 0])))
    with raise_if_dask_computes():
        out = regional_anomaly(ds, zscore=True)
    r = out.compute()
    # East Asia, day 0: valid values 1, 2, 3, 4, 100 -> median 3, MAD 1
    np.testing.assert_allclose(r.xch4_background.values[:6], 3.0)
    np.testing.assert_allclose(r.xch4_anomaly.values[:5], [-2, -1, 0, 1, 97])
    np.testing.assert_allclose(r.xch4_zscore.values[:5], np.array([-2, -1, 0, 1, 97]) / MAD_SCALE, rtol=1e-6)
    assert r.xch4_background.values[6] == 50.0  # Europe on day 1: its own sample
    assert np.isnan(r.xch4_background.values[7])  # southern hemisphere: outside every region
    assert out.attrs["anomaly_method"] == "daily_median"
    assert json.loads(out.attrs["anomaly_parameters"])["regions"][0]["name"] == "east_asia"


def test_daily_median_on_a_map_uses_filled_cells_in_the_region():
    g = GridSpec.from_bbox((58, 0, 62, 2), 1.0)  # spans Europe (<60 E) and East Asia (>=60 E)
    lon = np.array([58.5, 58.5, 59.5, 60.5, 61.5, 61.5, 61.5])
    lat = np.array([0.5, 1.5, 0.5, 0.5, 0.5, 1.5, 1.5])
    x = np.array([10, 20, 30, 5, 7, 100, 100.0])
    l3 = grid_soundings(soundings(lon, lat, x), g, method="point")
    r = regional_anomaly(l3).compute()
    eu = r.xch4_background.sel(x=slice(58, 60)).values
    ea = r.xch4_background.sel(x=slice(60, 62)).values
    assert np.allclose(eu, 20.0)  # median of 10, 20, 30
    assert np.allclose(ea, 7.0)  # median of 5, 7, 100 (cells, not soundings)
    np.testing.assert_allclose(r.xch4_anomaly.values[1, 0], 10 - 20)


def test_user_boxes_and_latitude_bands():
    regions = parse_regions([{"name": "box", "bbox": [170, -10, -170, 10]}, {"name": "tropics", "lat_band": [-23.4, 23.4]}])
    assert regions[0].contains(np.array([175.0, -175.0, 0.0]), np.array([0.0, 0.0, 0.0])).tolist() == [True, True, False]
    ds = soundings([175, -175, 0, 1], [0, 1, 0, 1], [1, 3, 10, 30], chunk=2)
    r = regional_anomaly(ds, regions=regions).compute()
    np.testing.assert_allclose(r.xch4_background.values, [2, 2, 20, 20])  # first matching region wins
    with pytest.raises(EOPipelineError, match="bbox"):
        parse_regions([{"name": "bad"}])
    with pytest.raises(EOPipelineError, match="unknown region set"):
        regional_anomaly(ds, regions="mars")


def _moving_reference(values, ok, lat, res, radius):
    rows, cols = values.shape
    bg = np.full(values.shape, np.nan)
    y_km = -lat * 111.32
    x_km = res * 111.32 * np.cos(np.radians(lat))
    for i in range(rows):
        for j in range(cols):
            if not ok[i, j]:
                continue
            sample = []
            for r in range(rows):
                dy = y_km[r] - y_km[i]
                if dy * dy > radius * radius:
                    continue
                half = int(np.floor(np.sqrt(radius**2 - dy * dy) / (0.5 * (x_km[r] + x_km[i]))))
                for c in range(max(0, j - half), min(cols, j + half + 1)):
                    if ok[r, c]:
                        sample.append(values[r, c])
            bg[i, j] = np.median(sample)
    return bg


def test_moving_median_matches_a_brute_force_window():
    rng = np.random.default_rng(2)
    g = GridSpec.from_bbox((100, 30, 103, 33), 0.25)
    n = 400
    ds = soundings(rng.uniform(100, 103, n), rng.uniform(30, 33, n), rng.normal(1900, 10, n))
    l3 = grid_soundings(ds, g, method="point")
    with raise_if_dask_computes():
        out = regional_anomaly(l3, method="moving_median", radius_km=60.0, zscore=True)
    r = out.compute()
    values = r.xch4_mean.values.astype(float)
    ok = r.xch4_count.values > 0
    ref = _moving_reference(values, ok, r.y.values, 0.25, 60.0)
    np.testing.assert_allclose(r.xch4_background.values, ref, rtol=1e-6, equal_nan=True)
    assert json.loads(out.attrs["anomaly_parameters"])["radius_km"] == 60.0
    with pytest.raises(EOPipelineError, match="gridded"):
        regional_anomaly(ds, method="moving_median")


# ------------------------------------------------------------------ moving median: exact against brute force
def _window_reference(values, ok, y_km, x_km, radius):
    """Brute force of the definition: per filled cell, np.median and 1.4826 MAD of its window (float32).

    Rows: the unbroken run of rows within ``radius`` (km) of the cell's row; per row,
    the columns within floor(sqrt(radius^2 - dy^2) / dx) of the cell, dx the mean of the
    two rows' column spacing (every column if dx <= 0); only filled cells count.
    """
    rows, cols = values.shape
    bg = np.full(values.shape, np.nan, np.float32)
    sp = np.full(values.shape, np.nan, np.float32)
    col = np.arange(cols)
    for i in range(rows):
        near = np.abs(y_km - y_km[i]) <= radius
        run = np.zeros(rows, bool)
        for step in (-1, 1):  # the unbroken run of near rows through row i
            r = i
            while 0 <= r < rows and near[r]:
                run[r] = True
                r += step
        dy = y_km - y_km[i]
        dx = 0.5 * (x_km + x_km[i])
        with np.errstate(invalid="ignore", divide="ignore"):
            half = np.where(dx > 0, np.floor(np.sqrt(np.maximum(radius**2 - dy * dy, 0)) / dx), cols)
        for j in range(cols):
            if not ok[i, j]:
                continue
            window = run[:, None] & (np.abs(col[None, :] - j) <= half[:, None]) & ok
            sample = values[window].astype(np.float64)
            m = np.median(sample)
            bg[i, j] = m
            sp[i, j] = MAD_SCALE * np.median(np.abs(sample - m))
    return bg, sp


def _random_case(seed, rows, cols):
    """A small random map: gaps, ties or float32 values, lon/lat (latitude-dependent x spacing) or km rows."""
    rng = np.random.default_rng(seed)
    if rng.random() < 0.5:
        values = rng.integers(0, rng.integers(1, 6), (rows, cols)).astype(np.float64)  # many ties
    else:
        values = rng.normal(1900, 10, (rows, cols)).astype(np.float32).astype(np.float64)
    ok = rng.random((rows, cols)) < rng.uniform(0.1, 1.0)
    if rng.random() < 0.6:  # lon/lat grid, north to south or flipped, as _row_spacing_km derives it
        res = rng.uniform(0.05, 1.0)
        lat = rng.uniform(-80, 80) + res * np.arange(rows) * rng.choice([-1, 1])
        y_km = -lat * 111.32
        x_km = res * 111.32 * np.cos(np.radians(lat))
    else:
        y_km = np.arange(rows) * rng.uniform(1, 30)
        x_km = np.full(rows, rng.uniform(1, 30) if rng.random() < 0.9 else 0.0)  # spacing 0: every column
    radius = rng.uniform(1, 12) * float(np.median(x_km) or 10.0)
    return values, ok, y_km, x_km, radius


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 14), cols=st.integers(1, 14), strip=st.integers(1, 14))
def test_moving_median_kernel_equals_brute_force(seed, rows, cols, strip):
    values, ok, y_km, x_km, radius = _random_case(seed, rows, cols)
    bg_ref, sp_ref = _window_reference(values, ok, y_km, x_km, radius)
    bg, sp = _moving_median_kernel(values, ok, y_km, x_km, radius, True)
    np.testing.assert_array_equal(bg, bg_ref)  # bit for bit (NaN where empty)
    np.testing.assert_array_equal(sp, sp_ref)
    # the dask layer's row strips, each with the rows within the radius around it
    parts = [_moving_block(values[lo:hi], ok[lo:hi], y_km[lo:hi], x_km[lo:hi], radius, True, first - lo, stop - lo)
             for lo, first, stop, hi in _row_strips(y_km, radius, strip)]
    both = np.concatenate(parts, axis=1)
    np.testing.assert_array_equal(both[0], bg_ref)
    np.testing.assert_array_equal(both[1], sp_ref)
    bg_only, no_spread = _moving_median_kernel(values, ok, y_km, x_km, radius, False)
    np.testing.assert_array_equal(bg_only, bg_ref)
    assert np.isnan(no_spread).all()


def test_moving_median_kernel_on_a_larger_map_equals_brute_force():
    # > 4096 filled cells: the rank bitset spans several summary words
    rng = np.random.default_rng(7)
    values = np.round(rng.normal(1900, 8, (75, 90)), 1)
    ok = rng.random(values.shape) < 0.8
    ok[20:40, 30:60] = False  # a cloud gap wider than the window: empty windows inside
    lat = 40 - 0.1 * np.arange(75)
    y_km, x_km = -lat * 111.32, 0.1 * 111.32 * np.cos(np.radians(lat))
    bg_ref, sp_ref = _window_reference(values, ok, y_km, x_km, 45.0)
    bg, sp = _moving_median_kernel(values, ok, y_km, x_km, 45.0, True)
    assert ok.sum() > 4096
    np.testing.assert_array_equal(bg, bg_ref)
    np.testing.assert_array_equal(sp, sp_ref)


def _km_map(values, spacing_km=1.0):
    """A projected map (metres, row 0 north) with NaN for empty cells, as gridding makes it."""
    rows, cols = values.shape
    x = (np.arange(cols) + 0.5) * spacing_km * 1000
    y = (np.arange(rows)[::-1] + 0.5) * spacing_km * 1000
    count = np.where(np.isnan(values), 0, 1).astype(np.int32)
    return xr.Dataset({"xch4_mean": (("y", "x"), da.from_array(values.astype(np.float32), chunks=(2, 3)),
                                     {"units": "ppb"}),
                       "xch4_count": (("y", "x"), da.from_array(count, chunks=(2, 3)))},
                      coords={"y": ("y", y, {"units": "m"}), "x": ("x", x, {"units": "m"})})


def test_moving_median_by_hand_on_a_5x5_map():
    values = np.arange(1.0, 26.0).reshape(5, 5)  # 1..25, row 0 north
    # 1 km cells, radius 2 km: the centre row reaches 2 columns each side, rows at 1 km
    # floor(sqrt(3)) = 1, rows at 2 km floor(0) = 0: a 13-cell disc, cut at the edges
    with raise_if_dask_computes():
        out = regional_anomaly(_km_map(values), method="moving_median", radius_km=2.0, zscore=True)
    r = out.compute()
    bg, z = r.xch4_background.values, r.xch4_zscore.values
    # centre: 3, 7, 8, 9, 11..15, 17, 18, 19, 23 -> median 13; deviations 0,1,1,2,2,4,4,5,5,6,6,10,10 -> MAD 4
    assert bg[2, 2] == 13.0
    assert z[2, 2] == 0.0
    # corner: 1, 2, 3, 6, 7, 11 (an even count) -> median (3 + 6) / 2 = 4.5;
    # deviations 1.5, 1.5, 2.5, 2.5, 3.5, 6.5 -> MAD (2.5 + 2.5) / 2 = 2.5
    assert bg[0, 0] == 4.5
    assert z[0, 0] == np.float32((1 - 4.5) / (MAD_SCALE * 2.5))
    np.testing.assert_array_equal(r.xch4_anomaly.values[0, 0], np.float32(1 - 4.5))
    # a gap: cell (2, 3) empty -> the centre keeps 12 values, median (12 + 13) / 2 = 12.5,
    # deviations 0.5 0.5 1.5 2.5 3.5 4.5 4.5 5.5 5.5 6.5 9.5 10.5 -> MAD (4.5 + 4.5) / 2 = 4.5
    gap = values.copy()
    gap[2, 3] = np.nan
    g = regional_anomaly(_km_map(gap), method="moving_median", radius_km=2.0, zscore=True).compute()
    assert g.xch4_background.values[2, 2] == 12.5
    assert g.xch4_zscore.values[2, 2] == np.float32((13 - 12.5) / (MAD_SCALE * 4.5))
    assert np.isnan(g.xch4_background.values[2, 3]) and np.isnan(g.xch4_zscore.values[2, 3])
    bg_k, sp_k = _moving_median_kernel(gap, np.isfinite(gap), np.arange(5.0), np.ones(5), 2.0, True)
    assert bg_k[2, 2] == 12.5 and sp_k[2, 2] == np.float32(MAD_SCALE * 4.5)


def test_moving_median_ties_single_cells_and_empty_maps():
    ones = np.ones(5)
    # ties: 1, 1, 1, 5 in a 1 x 4 row with a window of all columns -> median 1, MAD 0
    v = np.array([[1.0, 5.0, 1.0, 1.0]])
    bg, sp = _moving_median_kernel(v, np.isfinite(v), np.zeros(1), np.ones(1), 10.0, True)
    np.testing.assert_array_equal(bg, [[1, 1, 1, 1]])
    np.testing.assert_array_equal(sp, [[0, 0, 0, 0]])
    # an even count of ties at the middle: 2, 2, 3, 3 -> 2.5, deviations all 0.5 -> MAD 0.5
    v = np.array([[3.0, 2.0, 3.0, 2.0]])
    bg, sp = _moving_median_kernel(v, np.isfinite(v), np.zeros(1), np.ones(1), 10.0, True)
    np.testing.assert_array_equal(bg, np.full((1, 4), 2.5, np.float32))
    np.testing.assert_array_equal(sp, np.full((1, 4), MAD_SCALE * 0.5, np.float32))
    # a radius below the cell spacing: every window is the cell alone
    v = np.arange(25.0).reshape(5, 5)
    v[1, 1] = np.nan
    r = regional_anomaly(_km_map(v), method="moving_median", radius_km=0.5, zscore=True).compute()
    np.testing.assert_array_equal(r.xch4_background.values, v.astype(np.float32))
    np.testing.assert_array_equal(r.xch4_anomaly.values, np.where(np.isnan(v), np.nan, 0).astype(np.float32))
    assert np.isnan(r.xch4_zscore.values).all()  # spread 0: no z-score
    # no filled cell at all, and a single one
    bg, sp = _moving_median_kernel(np.full((5, 5), np.nan), np.zeros((5, 5), bool), np.arange(5.0), ones, 3.0, True)
    assert np.isnan(bg).all() and np.isnan(sp).all()
    r = regional_anomaly(_km_map(np.full((5, 5), np.nan)), method="moving_median", radius_km=3.0, zscore=True)
    assert np.isnan(r.xch4_background.values).all()
    one = np.full((5, 5), np.nan)
    one[3, 1] = 1900.0
    bg, sp = _moving_median_kernel(one, np.isfinite(one), np.arange(5.0), ones, 3.0, True)
    assert bg[3, 1] == 1900.0 and sp[3, 1] == 0.0 and np.isnan(np.delete(bg.ravel(), 16)).all()


def test_moving_median_on_a_tall_lazy_stack_matches_brute_force():
    # 230 rows: several row strips per map; two time steps; chunks as the input's
    rng = np.random.default_rng(3)
    g = GridSpec.from_bbox((100, 20, 102.4, 43), 0.1)
    rows, cols = g.shape
    vals = rng.normal(1900, 10, (2, rows, cols)).astype(np.float32)
    vals[rng.random(vals.shape) < 0.4] = np.nan
    coords = dict(g.coords())
    coords["time"] = ("time", np.array(["2023-07-15", "2023-07-16"], "datetime64[ns]"))
    l3 = xr.Dataset({"xch4_mean": (("time", "y", "x"), da.from_array(vals, chunks=(1, 50, cols)), {"units": "ppb"}),
                     "xch4_count": (("time", "y", "x"), da.from_array(np.isfinite(vals).astype(np.int32),
                                                                      chunks=(1, 50, cols)))}, coords=coords)
    with raise_if_dask_computes():
        out = regional_anomaly(l3, method="moving_median", radius_km=40.0, zscore=True)
    assert out.xch4_background.data.chunks == ((1, 1), (rows,), (cols,))  # one map per task, as before
    r = out.compute()
    lat = l3.y.values
    y_km, x_km = -lat * 111.32, 0.1 * 111.32 * np.cos(np.radians(lat))
    for t in range(2):
        bg_ref, sp_ref = _window_reference(vals[t].astype(float), np.isfinite(vals[t]), y_km, x_km, 40.0)
        np.testing.assert_array_equal(r.xch4_background.values[t], bg_ref)
        with np.errstate(divide="ignore", invalid="ignore"):
            z_ref = np.where(sp_ref > 0, (vals[t].astype(float) - bg_ref) / sp_ref, np.nan).astype(np.float32)
        np.testing.assert_array_equal(r.xch4_zscore.values[t], z_ref)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nbits=st.integers(1, 9000), density=st.floats(0.0, 0.2))
def test_rank_bitset_next_and_previous_match_a_brute_force(seed, nbits, density):
    rng = np.random.default_rng(seed)
    words = np.zeros((nbits + 63) // 64, np.uint64)
    summary = np.zeros((words.size + 63) // 64, np.uint64)
    present = rng.random(nbits) < density
    for q in np.flatnonzero(present | (rng.random(nbits) < density)):  # add extra ranks, then remove them
        _bit_add(words, summary, int(q))
    for q in np.flatnonzero(~present):
        _bit_remove(words, summary, int(q))
    where = np.flatnonzero(present)
    none = 64 * words.size
    for pos in [-1, 0, nbits - 1, nbits, *rng.integers(0, nbits, 50).tolist()]:
        after = where[where >= pos]
        before = where[where <= pos]
        assert _next_set(words, summary, pos) == (after[0] if after.size else none)
        assert _prev_set(words, summary, pos) == (before[-1] if before.size else -1)


def test_radix_sort_order_of_special_values():
    rng = np.random.default_rng(1)
    for v in (np.array([0.0, -0.0, -1.5, np.inf, -np.inf, 5e-324, -5e-324, 1e308, -1e308, 3.0, 3.0]),
              rng.normal(1900, 8, 20000).astype(np.float32).astype(np.float64),
              rng.normal(0, 1, 5001) * 10.0 ** rng.integers(-300, 300, 5001), np.empty(0), np.array([2.0])):
        order = _sort_order(v)
        np.testing.assert_array_equal(np.sort(order), np.arange(v.size))
        np.testing.assert_array_equal(v[order], np.sort(v))


def _monthly_stack(years=3, missing=()):
    g = GridSpec.from_bbox((0, 0, 2, 1), 1.0)
    times = [np.datetime64(f"{2020 + y}-{m:02d}-01", "ns") for y in range(years) for m in range(1, 13)]
    rng = np.random.default_rng(0)
    vals = np.array([[[1900 + 10 * np.sin(2 * np.pi * (t.astype("datetime64[M]").astype(int) % 12) / 12) + y
                       for _ in range(2)] for _ in range(1)] for y, t in enumerate(times)], float)
    vals += rng.normal(0, 0.1, vals.shape)
    count = np.ones(vals.shape, np.int32)
    for k in missing:
        vals[k] = np.nan
        count[k] = 0
    coords = dict(g.coords())
    coords["crs"] = ((), np.int32(0), g.cf_grid_mapping())
    coords["time"] = ("time", np.array(times))
    return xr.Dataset({"xch4_mean": (("time", "y", "x"), da.from_array(vals, chunks=(12, 1, 2)), {"units": "ppb"}),
                       "xch4_count": (("time", "y", "x"), count)}, coords=coords)


def test_climatology_anomaly():
    stack = _monthly_stack()
    with raise_if_dask_computes():
        out = regional_anomaly(stack, method="climatology", zscore=True)
    r = out.compute()
    jan = stack.xch4_mean.values[[0, 12, 24]].mean(axis=0)
    np.testing.assert_allclose(r.xch4_background.values[12], jan, rtol=1e-6)
    np.testing.assert_allclose(r.xch4_anomaly.values[12], stack.xch4_mean.values[12] - jan, atol=1e-4)
    assert np.isfinite(r.xch4_zscore.values).all()


def test_climatology_with_too_few_months_gives_nan_and_a_reason():
    stack = _monthly_stack(missing=(0, 12))  # the cells of two Januaries are empty
    r = regional_anomaly(stack, method="climatology", min_count=3).compute()
    assert np.isnan(r.xch4_background.values[24]).all()  # January: one value per cell left
    assert np.isfinite(r.xch4_background.values[25]).all()  # February
    short = _monthly_stack(years=1)  # one composite per calendar month in the whole stack
    with pytest.warns(QualityWarning, match="min_count=3"):
        out = regional_anomaly(short, method="climatology")
    assert "fewer than min_count" in out.attrs["anomaly_note"]
    assert np.isnan(out.xch4_anomaly.values).all()
    with pytest.raises(EOPipelineError, match="time axis"):
        regional_anomaly(short.isel(time=0), method="climatology")


def test_unknown_method():
    with pytest.raises(EOPipelineError, match="method must be one of"):
        regional_anomaly(soundings([100], [30], [1900]), method="mean")


def test_anomaly_tags_reach_the_geotiff(tmp_path):
    import rasterio

    g = GridSpec.from_bbox((100, 30, 101, 31), 0.5)
    l3 = grid_soundings(soundings([100.2, 100.7], [30.2, 30.7], [1900, 1910]), g, method="point")
    a = regional_anomaly(l3, zscore=True)
    path = eo.write_cog(a, tmp_path / "a.tif", variables=["xch4_anomaly", "xch4_zscore"])
    with rasterio.open(path) as r:
        assert r.tags()["anomaly_method"] == "daily_median"
        assert "east_asia" in r.tags()["anomaly_parameters"]
        assert r.tags(1)["units"] == "ppb"
