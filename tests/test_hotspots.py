# SPDX-License-Identifier: Apache-2.0
"""Hotspots: a hand-made blob, the filters, and the planted signals of the sample scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import eo_pipeline as eo
from eo_pipeline.anomaly import regional_anomaly
from eo_pipeline.grid import GridSpec
from eo_pipeline.hotspots import find_hotspots, write_hotspots

from .conftest import SAMPLES


def anomaly_map(values, count=None, z=None, res=0.1, west=110.0, north=40.0, times=None):
    values = np.asarray(values, float)
    shape = values.shape[-2:]
    g = GridSpec.from_bbox((west, north - shape[0] * res, west + shape[1] * res, north), res)
    coords = dict(g.coords())
    coords["crs"] = ((), np.int32(0), g.cf_grid_mapping())
    dims = ("y", "x") if values.ndim == 2 else ("time", "y", "x")
    if times is not None:
        coords["time"] = ("time", np.asarray(times, "datetime64[ns]"))
    data = {"xch4_anomaly": (dims, values, {"units": "ppb"}),
            "xch4_count": (dims, np.full(values.shape, 3) if count is None else count)}
    if z is not None:
        data["xch4_zscore"] = (dims, np.asarray(z, float))
    return xr.Dataset(data, coords=coords), g


def test_a_hand_made_blob():
    values = np.zeros((10, 12))
    values[3:5, 4:7] = [[30, 40, 30], [20, 50, 20]]
    z = values / 5.0
    ds, g = anomaly_map(values, z=z)
    h = find_hotspots(ds, threshold=3.5, min_area_km2=0, min_soundings=0)
    assert len(h) == 1
    row = h.iloc[0]
    area = g.cell_area()[3:5, 0]
    assert row.area_km2 == pytest.approx(3 * area.sum() / 1e6)
    assert row.max_enhancement == 50 and row.n_soundings == 18
    assert row.mean_enhancement == pytest.approx((area[0] * 100 + area[1] * 90) / (3 * area.sum()))
    assert row.lon == pytest.approx(110.55)  # centre of columns 4..6
    assert 39.5 < row.lat < 39.6
    assert row.geometry.bounds == pytest.approx((110.4, 39.5, 110.7, 39.7))
    assert set(h.columns) >= {"id", "lon", "lat", "area_km2", "mean_enhancement", "max_enhancement", "n_soundings",
                              "geometry"}


def test_filters_and_opening():
    values = np.zeros((12, 12))
    values[2:5, 2:5] = 10.0  # a 3x3 blob
    values[9, 9] = 10.0  # a single noisy cell
    ds, g = anomaly_map(values, z=values)
    cell_km2 = float(g.cell_area()[2, 0]) / 1e6
    assert len(find_hotspots(ds, threshold=5, min_area_km2=0, min_soundings=0)) == 2
    assert len(find_hotspots(ds, threshold=5, min_area_km2=2 * cell_km2, min_soundings=0)) == 1
    assert len(find_hotspots(ds, threshold=5, min_area_km2=0, min_soundings=10)) == 1  # 27 vs 3 soundings
    assert len(find_hotspots(ds, threshold=5, min_area_km2=0, min_soundings=0, opening=1)) == 1
    assert len(find_hotspots(ds, threshold=20, min_area_km2=0, min_soundings=0)) == 0


def test_without_zscore_the_map_spread_is_used():
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, (40, 40))
    values[10:14, 10:14] += 20
    ds, _ = anomaly_map(values)
    h = find_hotspots(ds, min_area_km2=0, min_soundings=0)
    assert len(h) == 1 and h.iloc[0].max_zscore > 10


def test_time_steps_get_their_own_rows(tmp_path):
    values = np.zeros((2, 8, 8))
    values[1, 2:5, 2:5] = 9.0
    ds, _ = anomaly_map(values, z=values, times=["2023-07-15", "2023-07-16"])
    h = find_hotspots(ds, threshold=5, min_area_km2=0, min_soundings=0)
    assert h["time"].tolist() == ["2023-07-16"]
    files = write_hotspots(h, tmp_path / "h")
    assert json.loads((tmp_path / "h.geojson").read_text())["features"][0]["properties"]["time"] == "2023-07-16"
    assert (tmp_path / "h.csv").read_text().splitlines()[0].startswith("id,lon,lat,area_km2")
    none = find_hotspots(ds, threshold=50)
    assert len(none) == 0
    write_hotspots(none, tmp_path / "empty")
    assert json.loads((tmp_path / "empty.geojson").read_text())["features"] == []
    assert len(files) == 2


def _scene_hotspots(path, grid, method):
    ds = eo.open_product(path)
    l3 = eo.grid_soundings(ds, grid)
    return find_hotspots(regional_anomaly(l3, method=method, zscore=True))


@pytest.mark.parametrize("grid, cell", [("north_china_0p05", 0.05), ("north_china_0p1", 0.1)])
def test_planted_signals_are_found(grid, cell):
    manifest = json.loads((SAMPLES / "MANIFEST.json").read_text())
    for sig in manifest["planted_signals"]:
        methods = ["daily_median", "moving_median"] if sig["species"] == "xch4" else ["daily_median"]
        for method in methods:
            h = _scene_hotspots(SAMPLES / sig["file"], grid, method)
            assert len(h) == 1, (sig["species"], method, h)
            row = h.iloc[0]
            assert abs(row.lon - sig["lon"]) <= cell and abs(row.lat - sig["lat"]) <= cell  # within one cell
            assert row.max_enhancement == pytest.approx(sig["amplitude"], rel=0.2)


@pytest.mark.parametrize("grid", ["north_china_0p05", "north_china_0p1"])
def test_scenes_without_a_planted_signal_give_no_hotspot(grid):
    manifest = json.loads((SAMPLES / "MANIFEST.json").read_text())
    for name in manifest["no_signal_files"]:
        methods = ["daily_median", "moving_median"] if name.startswith("S5P") else ["daily_median"]
        for method in methods:
            assert len(_scene_hotspots(SAMPLES / name, grid, method)) == 0, (name, method)


def test_find_hotspots_needs_an_anomaly():
    ds, _ = anomaly_map(np.zeros((3, 3)))
    with pytest.raises(eo.EOPipelineError, match="regional_anomaly"):
        find_hotspots(ds.rename({"xch4_anomaly": "something"}))
