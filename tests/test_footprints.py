# SPDX-License-Identifier: Apache-2.0
"""Footprints: corners derived from centres, circular fields of view, polygons on grids."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from pyproj import Geod

import eo_pipeline as eo
from eo_pipeline.footprints import (
    circle_footprints,
    derive_corners,
    derive_corners_lazy,
    polygons_in_grid,
    with_derived_corners,
)
from eo_pipeline.grid import GridSpec
from eo_pipeline.samples.geometry import s5p_swath

from .conftest import raise_if_dask_computes, shared_file, write_tiny_ch4
from .test_realdata import S5P_10X10, S5P_ORBIT


@pytest.mark.realdata
def test_derived_corners_reproduce_the_real_ones():
    ds = eo.open_product(shared_file(S5P_10X10))
    lat_b, lon_b = derive_corners(ds.latitude.values, ds.longitude.values)
    dlat = np.abs(lat_b - ds.latitude_bounds.values)
    dlon = np.abs(lon_b - ds.longitude_bounds.values)
    inner = (slice(1, -1), slice(1, -1))
    assert dlat[inner].max() < 1e-4 and dlon[inner].max() < 1e-4  # interior corners: mean of 4 centres
    assert dlat.max() < 5e-4 and dlon.max() < 5e-4  # edge corners: linear extrapolation


@pytest.mark.realdata
def test_open_product_derive_corners_on_the_whole_orbit():
    with pytest.warns(UserWarning):
        with raise_if_dask_computes():
            ds = eo.open_product(shared_file(S5P_ORBIT), derive_corners=True)
    assert ds.attrs["corners_source"] == "derived"
    assert "derived" in ds.latitude_bounds.attrs["corners"]
    assert ds.latitude_bounds.shape == (3245, 215, 4)
    lat = ds.latitude.values
    lb = ds.latitude_bounds.values
    away = np.abs(lat) < 89.0  # within a degree of a pole the lon/lat mean is not a good corner
    inside = (lb.min(-1) <= lat + 1e-4) & (lat - 1e-4 <= lb.max(-1))
    assert np.all(inside[away])
    true = eo.open_product(shared_file(S5P_10X10), derive_corners=True)
    assert true.attrs["corners_source"] == "product"  # a file with corners keeps its own


@pytest.mark.parametrize("chunks", [3, 4, 7, 50])
def test_lazy_derivation_matches_eager_for_any_chunking(chunks):
    sw = s5p_swath(150.0, 60.0, n_scan=23, n_pix=9)
    lat_b, lon_b = derive_corners(sw.lat, sw.lon)
    with raise_if_dask_computes():
        L, O = derive_corners_lazy(da.from_array(sw.lat, chunks=(chunks, 9)), da.from_array(sw.lon, chunks=(chunks, 9)))
    np.testing.assert_allclose(L.compute(), lat_b, atol=1e-5)
    np.testing.assert_allclose(O.compute(), lon_b, atol=1e-5)


def test_derivation_is_exact_on_a_plane_swath_and_keeps_the_s5p_order():
    sw = s5p_swath(10.0, 0.0, n_scan=8, n_pix=6, heading_deg=0.0)
    lat_b, lon_b = derive_corners(sw.lat, sw.lon)
    # without curvature the true corners are the means of the centres, even at the edges
    np.testing.assert_allclose(lat_b[2:-2, 2:-2], sw.lat_bounds[2:-2, 2:-2], atol=1e-3)
    # S5P order: corner 1 is corner 0 of the next ground pixel, corner 3 of the next scanline
    np.testing.assert_allclose(lon_b[:, :-1, 1], lon_b[:, 1:, 0])
    np.testing.assert_allclose(lat_b[:-1, :, 3], lat_b[1:, :, 0])


def test_derivation_across_the_antimeridian():
    sw = s5p_swath(179.5, 10.0, n_scan=12, n_pix=40)
    wrapped = (sw.lon + 180.0) % 360.0 - 180.0
    assert wrapped.max() > 179 and wrapped.min() < -179
    _, lon_b = derive_corners(sw.lat, wrapped)
    _, ref = derive_corners(sw.lat, sw.lon)  # continuous longitudes beyond 180
    np.testing.assert_allclose((lon_b - ref + 180.0) % 360.0 - 180.0, 0.0, atol=1e-9)


def test_derived_corners_need_three_rows():
    with pytest.raises(ValueError, match="3 x 3"):
        derive_corners(np.zeros((2, 5)), np.zeros((2, 5)))


def test_with_derived_corners_on_a_subset_without_corners(tmp_path):
    p = write_tiny_ch4(tmp_path / "S5P_OFFL_L2__CH4____nob.nc", with_bounds=False)
    ds = eo.open_product(p)
    assert "latitude_bounds" not in ds
    out = with_derived_corners(ds)
    assert out.latitude_bounds.dims == ("scanline", "ground_pixel", "corner")


def test_circular_field_of_view_has_the_circle_area():
    lon, lat = circle_footprints(np.array([100.0, 10.0]), np.array([40.0, -70.0]), 10.5)
    geod = Geod(ellps="WGS84")
    for i in range(2):
        area, _ = geod.polygon_area_perimeter(lon[i], lat[i])
        assert abs(area) == pytest.approx(np.pi * 5250.0**2, rel=5e-3)


def _square(lon0, lat0, d):
    return (np.array([[lon0, lon0 + d, lon0 + d, lon0]]), np.array([[lat0, lat0, lat0 + d, lat0 + d]]))


def test_antimeridian_pixel_lands_on_both_edges_of_a_global_grid():
    g = GridSpec.from_bbox((-180, -90, 180, 90), 1.0)
    lon = np.array([[179.6, -179.6, -179.6, 179.6]])
    lat = np.array([[0.1, 0.1, 0.9, 0.9]])
    px, py, nv, src, dropped = polygons_in_grid(lon, lat, g)
    assert dropped == 0 and src.tolist() == [0, 0]
    spans = sorted((p.min(), p.max()) for p in px)
    assert spans[0][0] < 0 < spans[0][1] and spans[1][0] < 360 < spans[1][1]  # both sides, no smear


def test_pole_pixel_becomes_a_cap():
    g = GridSpec.from_bbox((-180, 80, 180, 90), 1.0)
    lon = np.array([[0.0, 90.0, 180.0, -90.0]])
    lat = np.full((1, 4), 89.5)
    px, py, nv, src, dropped = polygons_in_grid(lon, lat, g)
    assert dropped == 0 and nv[0] == 7
    assert py[0].min() == pytest.approx(0.0)  # reaches the pole row
    assert np.ptp(px[0]) == pytest.approx(360.0)


def test_unprojectable_footprints_are_dropped_and_counted():
    g = GridSpec.from_bbox((-1e6, -1e6, 1e6, 1e6), 1e4, crs="+proj=ortho +lat_0=40 +lon_0=105 +ellps=WGS84")
    near_lon, near_lat = _square(105.0, 40.0, 0.05)
    far_lon, far_lat = _square(-75.0, -40.0, 0.05)  # on the hidden side of the globe
    px, py, nv, src, dropped = polygons_in_grid(np.vstack([near_lon, far_lon]), np.vstack([near_lat, far_lat]), g)
    assert src.tolist() == [0] and dropped == 1


@pytest.mark.parametrize(("n", "k"), [(1000, 4), (500, 9), (3, 1), (0, 4)])
def test_extent_equals_numpy_ptp(n, k):
    from eo_pipeline.footprints import _extent

    rng = np.random.default_rng(n + k)
    px, py = rng.normal(size=(n, k)), rng.normal(size=(n, k)) * 3
    px[::7, k // 2] = np.nan
    py[::11, 0] = np.nan
    py[::13, -1] = np.inf
    with np.errstate(invalid="ignore"):
        ref = np.maximum(np.ptp(px, axis=1), np.ptp(py, axis=1)) if n else np.empty(0)
    np.testing.assert_array_equal(_extent(px, py), ref)
