# SPDX-License-Identifier: Apache-2.0
"""Per-region tables: exact cell fractions, hand-computed statistics, CRSs and empty cases."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point, Polygon, box

import eo_pipeline as eo
from eo_pipeline.errors import QualityWarning
from eo_pipeline.grid import GridSpec
from eo_pipeline.regions import load_regions, region_fractions, region_table, weighted_median

from .conftest import SAMPLES
from .test_hotspots import anomaly_map


def test_fractions_are_exact_for_any_polygon():
    g = GridSpec.from_bbox((0, 0, 10, 10), 1.0)
    poly = Polygon([(1.3, 1.2), (8.7, 2.4), (6.1, 8.8), (2.2, 7.5)])
    cells = region_fractions(gpd.GeoDataFrame({"region": ["p"]}, geometry=[poly], crs="EPSG:4326"), g)[0]
    assert (cells.fraction * 1.0).sum() == pytest.approx(poly.area, rel=1e-12)
    # a cell deep inside is whole, a cell half covered has one half
    half = region_fractions(gpd.GeoDataFrame({"region": ["h"]}, geometry=[box(2, 2, 4.5, 4)], crs="EPSG:4326"), g)[0]
    full = np.zeros((10, 10))
    full[half.row0:half.row0 + half.fraction.shape[0], half.col0:half.col0 + half.fraction.shape[1]] = half.fraction
    assert full[7, 2] == 1.0 and full[7, 4] == pytest.approx(0.5)


def test_weighted_median():
    assert weighted_median(np.array([1.0, 2, 3]), np.array([1.0, 1, 1])) == 2
    assert weighted_median(np.array([1.0, 2, 10]), np.array([0.1, 0.1, 5])) == 10
    assert weighted_median(np.array([1.0, 3]), np.array([1.0, 1])) == 2
    assert np.isnan(weighted_median(np.array([np.nan]), np.array([1.0])))


def _map():
    mean = np.full((4, 4), np.nan)
    mean[1, 1], mean[1, 2], mean[2, 1] = 1900.0, 1910.0, 1930.0
    count = np.where(np.isfinite(mean), 2, 0)
    ds, g = anomaly_map(np.where(np.isfinite(mean), mean - 1900, np.nan), count=count, res=1.0, west=100, north=44)
    ds["xch4_mean"] = (("y", "x"), mean, {"units": "ppb"})
    ds["xch4_weight"] = (("y", "x"), np.where(np.isfinite(mean), [[1, 2, 3, 4]] * 4, 0.0))
    return ds, g


def test_statistics_by_hand():
    ds, g = _map()
    # a region covering cell (1,1) fully and cells (1,2), (2,1) by half
    region = box(101, 42, 102, 43).union(box(102, 42, 102.5, 43)).union(box(101, 41.5, 102, 42))
    gdf = gpd.GeoDataFrame({"name": ["r"]}, geometry=[region], crs="EPSG:4326")
    t = region_table(ds, gdf)
    row = t.iloc[0]
    f = np.array([1.0, 0.5, 0.5])
    m = np.array([1900.0, 1910, 1930])
    assert row["mean"] == pytest.approx((f * m).sum() / f.sum())
    w = np.array([2.0, 3, 2])
    assert row["weighted_mean"] == pytest.approx((f * w * m).sum() / (f * w).sum())
    assert row["median"] == 1905.0  # weights 1, 0.5, 0.5: half the weight is reached between 1900 and 1910
    assert row["n_soundings"] == 4
    assert row["coverage_fraction"] == pytest.approx(1.0)
    assert row["mean_anomaly"] == pytest.approx((f * (m - 1900)).sum() / f.sum())
    assert row["species"] == "CH4" and row["units"] == "ppb" and row["note"] == ""


def test_a_polygon_file_in_another_crs_is_reprojected(tmp_path):
    regions = load_regions(SAMPLES / "regions_north_china.geojson")
    gpkg = tmp_path / "regions_3857.gpkg"
    regions.to_crs("EPSG:3857").to_file(gpkg, driver="GPKG")
    l3 = eo.grid_soundings([eo.open_product(p) for p in sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc"))],
                           "north_china_0p1")
    a = region_table(l3, SAMPLES / "regions_north_china.geojson", name_field="id")
    b = region_table(l3, gpkg, name_field="id")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    assert a.set_index("region").loc["shanxi", "n_soundings"] > 0


def test_region_outside_the_grid_and_empty_time_steps():
    ds, _ = _map()
    far = gpd.GeoDataFrame({"name": ["antarctica", "inside"]},
                           geometry=[box(0, -80, 10, -70), box(100, 40, 104, 44)], crs="EPSG:4326")
    with pytest.warns(QualityWarning, match="outside the grid"):
        t = region_table(ds, far)
    out = t.set_index("region").loc["antarctica"]
    assert out["note"] == "region outside the grid" and np.isnan(out["mean"])
    empty = ds.copy()
    empty["xch4_count"] = empty["xch4_count"] * 0
    row = region_table(empty, far.iloc[[1]]).iloc[0]
    assert row["note"] == "no data in this time step" and np.isnan(row["mean"]) and row["n_soundings"] == 0


def test_hotspots_are_counted_per_region():
    ds, _ = _map()
    gdf = gpd.GeoDataFrame({"name": ["west", "east"]}, geometry=[box(100, 40, 102, 44), box(102, 40, 104, 44)],
                           crs="EPSG:4326")
    hot = gpd.GeoDataFrame({"lon": [101.5, 101.2, 103.0], "lat": [42.5, 41.0, 42.0]},
                           geometry=[Point(101.5, 42.5), Point(101.2, 41.0), Point(103, 42)], crs="EPSG:4326")
    t = region_table(ds, gdf, hotspots=hot).set_index("region")
    assert t.loc["west", "n_hotspots"] == 2 and t.loc["east", "n_hotspots"] == 1


def test_bad_region_inputs(tmp_path):
    with pytest.raises(eo.EOPipelineError, match="no such file"):
        load_regions(tmp_path / "missing.geojson")
    with pytest.raises(eo.EOPipelineError, match="no attribute"):
        load_regions(SAMPLES / "regions_north_china.geojson", name_field="province_code")
    bad = tmp_path / "bad.geojson"
    bad.write_text("not json")
    with pytest.raises(eo.EOPipelineError, match="cannot read region polygons"):
        load_regions(bad)
