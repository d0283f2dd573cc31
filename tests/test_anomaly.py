# SPDX-License-Identifier: Apache-2.0
"""Backgrounds, anomalies and z-scores: hand-computed cases, brute force, climatology, laziness."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import eo_pipeline as eo
from eo_pipeline.anomaly import MAD_SCALE, parse_regions, regional_anomaly
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
