# SPDX-License-Identifier: Apache-2.0
"""GridSpec: construction, exact cell areas, indexing, value semantics, named grids."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from dask.base import tokenize
from pyproj import Geod

from eo_pipeline.errors import ConfigError, GridError
from eo_pipeline.grid import GridSpec, ellipsoidal_band_area, grid_names, load_grids, named_grid


def test_from_bbox_shape_and_coords():
    g = GridSpec.from_bbox((105, 33, 120, 45), 0.1)
    assert g.shape == (120, 150)
    assert g.x[0] == pytest.approx(105.05) and g.y[0] == pytest.approx(44.95)
    assert g.bounds == pytest.approx((105, 33, 120, 45))
    # non-integer extents are extended east/south
    assert GridSpec.from_bbox((0, 0, 1.05, 1), 0.1).shape == (10, 11)


@pytest.mark.parametrize("bad", [dict(bbox=(1, 0, 0, 1), res=0.1), dict(bbox=(0, 0, 1, 1), res=-0.1),
                                 dict(bbox=(0, 0, 1), res=0.1)])
def test_bad_grids(bad):
    with pytest.raises(GridError):
        GridSpec.from_bbox(bad["bbox"], bad["res"])


def test_unknown_crs():
    with pytest.raises(GridError, match="unknown CRS"):
        GridSpec.from_bbox((0, 0, 1, 1), 0.1, crs="EPSG:99999999")


def test_global_cell_areas_sum_to_the_ellipsoid():
    g = named_grid("global_0p25")
    total = g.cell_area().sum() * g.shape[1]
    # WGS84 surface area, m² (authalic radius 6371007.181 m)
    assert total == pytest.approx(4 * np.pi * 6371007.1809**2, rel=1e-9)


def test_cell_area_matches_geodesic_polygon():
    g = GridSpec.from_bbox((10, 40, 11, 41), 0.5)
    geod = Geod(ellps="WGS84")
    # a lat/lon cell is bounded by parallels; compare with a densified geodesic polygon
    lats = np.r_[np.full(200, 40.0), np.linspace(40, 40.5, 50), np.full(200, 40.5), np.linspace(40.5, 40, 50)]
    lons = np.r_[np.linspace(10, 10.5, 200), np.full(50, 10.5), np.linspace(10.5, 10, 200), np.full(50, 10.0)]
    area, _ = geod.polygon_area_perimeter(lons, lats)
    assert g.cell_area()[1, 0] == pytest.approx(abs(area), rel=1e-6)


def test_sphere_band_area_formula():
    a = 6378137.0
    assert ellipsoidal_band_area(np.array([0.0]), np.array([90.0]), a, 0.0)[0] == pytest.approx(2 * np.pi * a * a)


def test_rowcol_edges_and_outside():
    g = GridSpec.from_bbox((0, 0, 2, 2), 1.0)
    r, c = g.rowcol(np.array([0.0, 0.999, 1.0, 2.0, -0.1, np.nan]), np.array([2.0, 1.5, 1.0, 0.0, 1, 1]))
    assert r.tolist() == [0, 0, 1, 1, -1, -1]
    assert c.tolist() == [0, 0, 1, 1, -1, -1]


def test_value_semantics_and_token():
    a = GridSpec.from_bbox((0, 0, 10, 10), 0.5, name="a")
    b = GridSpec.from_bbox((0, 0, 10, 10), 0.5, "EPSG:4326")
    assert a == b and hash(a) == hash(b) and tokenize(a) == tokenize(b)
    assert tokenize(a) != tokenize(GridSpec.from_bbox((0, 0, 10, 10), 0.25))
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a.shape = (1, 1)


def test_named_grids():
    names = grid_names()
    for required in ("global_0p25", "global_0p1", "global_0p05", "global_0p01", "china_0p05", "china_albers_5km"):
        assert required in names
    china = named_grid("china_0p05")
    assert china.bounds == pytest.approx((73, 18, 136, 54)) and china.shape == (720, 1260)
    albers = named_grid("china_albers_5km")
    assert not albers.is_geographic and albers.resolution == (5000.0, 5000.0)
    params = albers.crs.to_dict()
    assert params["proj"] == "aea" and params["lat_1"] == 25 and params["lat_2"] == 47 and params["lon_0"] == 105
    assert albers.cell_area()[0, 0] == 25e6
    with pytest.raises(GridError, match="known grids"):
        named_grid("nowhere_0p1")


def test_user_grid_file(tmp_path, monkeypatch):
    f = tmp_path / "my_grids.yaml"
    f.write_text("grids:\n  tiny:\n    crs: EPSG:3857\n    bbox: [0, 0, 1000, 1000]\n    resolution: 100\n")
    monkeypatch.setenv("EO_PIPELINE_GRIDS", str(f))
    assert named_grid("tiny").shape == (10, 10)
    f.write_text("grids:\n  broken:\n    bbox: [0, 0, 1, 1]\n    resolution: -1\n")
    with pytest.raises(ConfigError, match="grids.broken"):
        load_grids(f)


def test_lonlat_to_xy_projected():
    g = named_grid("china_albers_5km")
    x, y = g.lonlat_to_xy(np.array([105.0]), np.array([35.0]))
    assert x[0] == pytest.approx(0.0, abs=1e-6)
    r, c = g.rowcol(x, y)
    assert 0 <= r[0] < g.shape[0] and 0 <= c[0] < g.shape[1]
