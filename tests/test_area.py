# SPDX-License-Identifier: Apache-2.0
"""Area binning: hand-computed HARP cases, shapely brute force, conservation, limits, composites."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

import eo_pipeline as eo
from eo_pipeline.composites import composite
from eo_pipeline.grid import GridSpec
from eo_pipeline.gridding import grid_soundings
from eo_pipeline.samples.geometry import s5p_swath

from .conftest import raise_if_dask_computes


def footprints(lon_b, lat_b, x, u=None, valid=None, chunk=None, instrument="TEST", time=None) -> xr.Dataset:
    """Canonical 1-D soundings with corners (sounding, corner)."""
    lon_b = np.asarray(lon_b, float)
    lat_b = np.asarray(lat_b, float)
    n = lon_b.shape[0]
    chunk = chunk or max(n, 1)
    u = np.full(n, 1.0) if u is None else np.asarray(u, float)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid)
    time = np.full(n, np.datetime64("2023-07-15T05:00", "ns")) if time is None else np.asarray(time, "datetime64[ns]")
    d = ("sounding",)
    dc = ("sounding", "corner")

    def arr(a, c=None):
        return da.from_array(a, chunks=(chunk,) if a.ndim == 1 else (chunk, a.shape[1]))

    return xr.Dataset(
        {"xch4": (d, arr(np.asarray(x, "f4")), {"units": "ppb"}),
         "xch4_uncertainty": (d, arr(u.astype("f4")), {"units": "ppb"}),
         "valid": (d, arr(valid)),
         "latitude_bounds": (dc, arr(lat_b)), "longitude_bounds": (dc, arr(lon_b))},
        coords={"longitude": (d, arr(lon_b.mean(1))), "latitude": (d, arr(lat_b.mean(1))), "time": (d, arr(time))},
        attrs={"source_file": "synthetic", "instrument": instrument,
               "time_coverage_start": str(time.min())[:19] + "Z", "time_coverage_end": str(time.max())[:19] + "Z"})


def test_harp_hand_computed_case():
    # two 1x1 degree pixels, the second shifted by half a cell: HARP gives weight 1.25 and 1820 in the shared cell
    g = GridSpec.from_bbox((0, 0, 2, 2), 1.0)
    ds = footprints([[0, 1, 1, 0], [0.5, 1.5, 1.5, 0.5]], [[0, 0, 1, 1], [0.5, 0.5, 1.5, 1.5]], [1800, 1900])
    with raise_if_dask_computes():
        l3 = grid_soundings(ds, g, method="area")
    r = l3.compute()
    # row 0 is the north row (lat 1..2)
    np.testing.assert_allclose(r.xch4_weight.values, [[0.25, 0.25], [1.25, 0.25]])
    np.testing.assert_allclose(r.xch4_mean.values, [[1900, 1900], [1820, 1900]])
    assert r.xch4_count.values.tolist() == [[1, 1], [2, 1]]
    np.testing.assert_allclose(r.xch4_std.values[1, 0], np.sqrt((1 * 20**2 + 0.25 * 80**2) / 1.25))
    assert int(r.n_footprints_dropped) == 0


def test_inverse_variance_weighting_and_propagated_uncertainty():
    g = GridSpec.from_bbox((0, 0, 1, 1), 1.0)
    ds = footprints([[0, 1, 1, 0], [0, 0.5, 0.5, 0]], [[0, 0, 1, 1], [0, 0, 1, 1]], [1900, 1940], u=[10, 5])
    r = grid_soundings(ds, g, method="area", weighting="inverse_variance").compute()
    w = np.array([1.0 / 100, 0.5 / 25])
    assert float(r.xch4_mean[0, 0]) == pytest.approx(w @ [1900, 1940] / w.sum())
    assert float(r.xch4_uncertainty[0, 0]) == pytest.approx(np.sqrt(w[0] ** 2 * 100 + w[1] ** 2 * 25) / w.sum())
    plain = grid_soundings(ds, g, method="area").compute()
    assert float(plain.xch4_weight[0, 0]) == pytest.approx(1.5)


def _brute_force(lon_b, lat_b, x, valid, g: GridSpec):
    """Independent reference with shapely: polygon / cell intersections in lon/lat degrees."""
    (w, s, e, n), (res, _) = g.bounds, g.resolution
    rows, cols = g.shape
    sw = np.zeros((rows, cols))
    swx = np.zeros((rows, cols))
    cnt = np.zeros((rows, cols), int)
    for k in range(len(x)):
        if not valid[k]:
            continue
        lon = np.unwrap(np.asarray(lon_b[k], float), period=360.0)
        base = Polygon(np.column_stack([lon, lat_b[k]]))
        for shift in (-360.0, 0.0, 360.0):
            poly = Polygon(np.column_stack([lon + shift, lat_b[k]]))
            if not poly.intersects(box(w, s, e, n)):
                continue
            for i in range(rows):
                for j in range(cols):
                    cell = box(w + j * res, n - (i + 1) * res, w + (j + 1) * res, n - i * res)
                    a = poly.intersection(cell).area / (res * res)
                    if a > 1e-12:
                        sw[i, j] += a
                        swx[i, j] += a * x[k]
                        cnt[i, j] += 1
        del base
    with np.errstate(invalid="ignore"):
        return sw, swx / sw, cnt


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lon0=st.sampled_from([0.3, 179.6, -179.7]), heading=st.floats(-40, 40),
       chunk=st.integers(1, 12))
def test_area_binning_matches_shapely_brute_force(seed, lon0, heading, chunk):
    rng = np.random.default_rng(seed)
    sw = s5p_swath(lon0, 0.3, n_scan=4, n_pix=3, along_km=40.0, nadir_across_km=50.0, heading_deg=heading)
    lon_b = (sw.lon_bounds.reshape(-1, 4) + 180.0) % 360.0 - 180.0  # wrapped, as products store them
    lat_b = sw.lat_bounds.reshape(-1, 4)
    x = rng.normal(1900, 20, lon_b.shape[0]).astype("f4").astype(float)
    valid = rng.random(lon_b.shape[0]) > 0.15
    # near the antimeridian, a Pacific-centred grid (178..182 E) and a global one
    if abs(lon0) > 100:
        g = GridSpec.from_bbox((178, -1.5, 182, 2.0), 0.5) if seed % 2 else GridSpec.from_bbox((-180, -1.5, 180, 2.0), 2.0)
    else:
        g = GridSpec.from_bbox((-1.5, -1.5, 2.0, 2.0), 0.5)
    r = grid_soundings(footprints(lon_b, lat_b, x, valid=valid, chunk=chunk), g, method="area").compute()
    ref_w, ref_mean, ref_n = _brute_force(lon_b, lat_b, x, valid, g)
    np.testing.assert_allclose(r.xch4_weight.values, ref_w, rtol=1e-6, atol=1e-9)  # float32 output
    filled = ref_w > 1e-8
    np.testing.assert_allclose(r.xch4_mean.values[filled], ref_mean[filled], rtol=1e-6)
    assert np.array_equal(r.xch4_count.values[filled], ref_n[filled])
    assert np.all(np.isnan(r.xch4_mean.values[r.xch4_weight.values == 0]))


def test_conservation_for_pixels_inside_the_grid():
    sw = s5p_swath(112.0, 36.0, n_scan=30, n_pix=20)
    lon_b, lat_b = sw.lon_bounds.reshape(-1, 4), sw.lat_bounds.reshape(-1, 4)
    x = np.random.default_rng(3).normal(1900, 15, lon_b.shape[0])
    g = GridSpec.from_bbox((108, 33, 116, 39), 0.05)
    r = grid_soundings(footprints(lon_b, lat_b, x), g, method="area").compute()
    pixel_area = 0.5 * np.abs(np.sum(lon_b * np.roll(lat_b, -1, 1) - np.roll(lon_b, -1, 1) * lat_b, axis=1))
    cell = 0.05 * 0.05
    w, m = r.xch4_weight.values, np.nan_to_num(r.xch4_mean.values)
    assert (w.astype(float) * m).sum() * cell == pytest.approx((x.astype("f4") * pixel_area).sum(), rel=1e-6)
    assert w.astype(float).sum() * cell == pytest.approx(pixel_area.sum(), rel=1e-6)


def test_area_tends_to_point_as_pixels_shrink():
    rng = np.random.default_rng(5)
    n = 400
    lon = rng.uniform(0.01, 1.99, n)
    lat = rng.uniform(0.01, 1.99, n)
    x = rng.normal(1900, 10, n)
    d = 1e-5
    lon_b = np.column_stack([lon - d, lon + d, lon + d, lon - d])
    lat_b = np.column_stack([lat - d, lat - d, lat + d, lat + d])
    g = GridSpec.from_bbox((0, 0, 2, 2), 0.25)
    ds = footprints(lon_b, lat_b, x)
    area = grid_soundings(ds, g, method="area").compute()
    point = grid_soundings(ds, g, method="point").compute()
    np.testing.assert_allclose(area.xch4_mean.values, point.xch4_mean.values, rtol=1e-5)
    assert np.array_equal(area.xch4_count.values, point.xch4_count.values)


def test_equal_area_grid_gets_equal_area_weights():
    lon_b = np.array([[104.9, 105.1, 105.1, 104.9]])
    lat_b = np.array([[35.9, 35.9, 36.1, 36.1]])
    g = GridSpec.from_bbox((-100_000, 3_700_000, 100_000, 4_000_000), 5000.0,
                           crs="+proj=aea +lat_1=25 +lat_2=47 +lat_0=0 +lon_0=105 +ellps=WGS84")
    r = grid_soundings(footprints(lon_b, lat_b, [1900.0]), g, method="area").compute()
    from pyproj import Geod

    true_area = abs(Geod(ellps="WGS84").polygon_area_perimeter(lon_b[0], lat_b[0])[0])
    # projected straight edges vs geodesic ones differ a little; equal-area weights match the true area
    assert float(r.xch4_weight.sum()) * 5000.0**2 == pytest.approx(true_area, rel=2e-3)


def test_gosat_without_corners_uses_the_circular_field_of_view():
    g = GridSpec.from_bbox((100, 30, 101, 31), 0.01)
    ds = footprints([[100.5] * 4], [[30.5] * 4], [1900.0], instrument="TANSO-FTS").drop_vars(
        ["latitude_bounds", "longitude_bounds"])
    r = grid_soundings(ds, g, method="area").compute()
    from pyproj import Geod

    cell_area = g.cell_area()[50, 0]
    assert float(r.xch4_weight.sum()) * cell_area == pytest.approx(np.pi * 5250.0**2, rel=0.01)
    point = grid_soundings(ds, g, method="area", no_corners="point").compute()
    assert int(point.xch4_count.sum()) == 1 and float(point.xch4_weight.sum()) == 1.0
    unknown = ds.assign_attrs(instrument="MYSTERY")
    with pytest.raises(eo.EOPipelineError, match="fov_diameter_km"):
        grid_soundings(unknown, g, method="area").compute()
    del Geod


def test_swath_without_corners_gets_them_derived(ch4_file, tmp_path):
    from .conftest import write_tiny_ch4

    with_b = eo.open_product(ch4_file)
    without = eo.open_product(write_tiny_ch4(tmp_path / "S5P_OFFL_L2__CH4____nob.nc", with_bounds=False))
    g = GridSpec.from_bbox((111, 35, 113, 37), 0.02)
    from eo_pipeline.footprints import with_derived_corners

    a = grid_soundings(with_b, g, method="area").compute()
    b = grid_soundings(without, g, method="area").compute()
    c = grid_soundings(with_derived_corners(without), g, method="area").compute()
    xr.testing.assert_identical(b, c)
    # 5 ground pixels whose widths grow fast towards the edges: extrapolated edges are rough
    assert float(b.xch4_weight.sum()) == pytest.approx(float(a.xch4_weight.sum()), rel=0.15)


def _swath_without_corners(tmp_path, n_scan=40, n_pix=9):
    from eo_pipeline.samples.writers import write_s5p_l2

    sw = s5p_swath(112.0, 36.0, n_scan=n_scan, n_pix=n_pix, nadir_across_km=7.0)
    r, c = np.meshgrid(np.arange(n_scan), np.arange(n_pix), indexing="ij")
    xch4 = 1900.0 + 10 * np.sin(r) + c
    xch4[3, 4] = np.nan
    times = np.datetime64("2023-07-15T04:00:00", "ms") + (np.arange(n_scan) * 840).astype("timedelta64[ms]")
    path = write_s5p_l2(tmp_path / "S5P_OFFL_L2__CH4____nocorners.nc", "CH4", lat=sw.lat, lon=sw.lon,
                        lat_bounds=None, lon_bounds=None, scanline_time=times,
                        columns={"methane_mixing_ratio_bias_corrected": xch4,
                                 "methane_mixing_ratio_precision": np.full(xch4.shape, 7.5)},
                        qa_value=np.ones(xch4.shape), orbit=1234)
    return path


@pytest.mark.parametrize("chunks", [None, 3, 4, 7, 13])
@pytest.mark.parametrize("method", ["area", "srf"])
def test_corners_derived_in_the_chunk_task_equal_the_derived_variables(tmp_path, chunks, method):
    """Corners derived inside each chunk task (from halo rows) = the lazily derived corner variables."""
    from eo_pipeline.footprints import with_derived_corners

    path = _swath_without_corners(tmp_path)
    lazy = eo.open_product(path, chunks=chunks)
    g = GridSpec.from_bbox((110, 33, 114, 39), 0.05)
    with raise_if_dask_computes():
        got = grid_soundings(lazy, g, method=method, statistics="all")
    want = grid_soundings(with_derived_corners(lazy), g, method=method, statistics="all").compute()
    xr.testing.assert_identical(got.compute(), want)
    assert int(want.xch4_count.sum()) > 0
    # an in-memory product gives the same maps as the lazy one
    xr.testing.assert_identical(grid_soundings(lazy.load(), g, method=method, statistics="all").compute(), want)


@pytest.mark.parametrize("rows", [(40,), (3, 37), (10, 10, 10, 10), (13, 2, 25)])
@pytest.mark.parametrize("halo", [False, True])
def test_in_memory_blocks_are_views_equal_to_the_dask_blocks(tmp_path, rows, halo):
    import dask

    from eo_pipeline.gridding import _blocks, _numpy_blocks

    ds = eo.open_product(_swath_without_corners(tmp_path), chunks=None)
    names = ["longitude", "latitude", "xch4", "xch4_uncertainty", "valid", "time"]
    loaded = ds.load()
    arrays = [loaded[n].values for n in names]
    want = _blocks(ds.chunk({"scanline": rows}), names, halo=halo)
    got = _numpy_blocks(arrays, halo, (rows, (9,)))
    assert len(got) == len(want) == (len(rows) if not halo or min(rows) >= 3 else len(rows) - 1)
    for g_blk, w_blk in zip(got, want, strict=True):
        assert len(g_blk) == len(w_blk) == len(names) + halo
        if halo:
            assert g_blk[-1] == w_blk[-1]  # (top, bottom) halo rows
        for g_arr, w_arr, whole in zip(g_blk[:len(names)], dask.compute(*w_blk[:len(names)]), arrays, strict=True):
            np.testing.assert_array_equal(g_arr, w_arr)
            assert np.shares_memory(g_arr, whole)  # a view, not a copy


def test_in_memory_product_is_neither_copied_nor_hashed(tmp_path, monkeypatch):
    """The chunk task of a loaded product gets views of its arrays (dask's from_array copies and hashes them)."""
    import dask.tokenize

    from eo_pipeline import gridding

    loaded = eo.open_product(_swath_without_corners(tmp_path)).load()
    seen = []
    chunk = gridding._chunk
    hash_buffer_hex = dask.tokenize.hash_buffer_hex

    def spy(lon, lat, x, *args, **kwargs):
        seen.append((lon, lat, x))
        return chunk(lon, lat, x, *args, **kwargs)

    def no_large_hashing(buf, *args, **kwargs):
        assert memoryview(buf).nbytes < 1000, "an in-memory array was hashed"
        return hash_buffer_hex(buf, *args, **kwargs)

    monkeypatch.setattr(gridding, "_chunk", spy)
    monkeypatch.setattr(dask.tokenize, "hash_buffer_hex", no_large_hashing)
    out = grid_soundings(loaded, GridSpec.from_bbox((110, 33, 114, 39), 0.05), method="area").compute(scheduler="sync")
    assert int(out.xch4_count.sum()) > 0
    (lon, lat, x), = seen
    assert np.shares_memory(x, loaded.xch4.values)
    assert np.shares_memory(lon, loaded.longitude.values) and np.shares_memory(lat, loaded.latitude.values)


def _file_crossing_midnight():
    sw = s5p_swath(112.0, 36.0, n_scan=8, n_pix=5)
    n = sw.lat.size
    t = np.datetime64("2023-07-15T23:59:58", "ns") + (np.arange(n) // 5 * 600_000_000).astype("timedelta64[ns]")
    return footprints(sw.lon_bounds.reshape(-1, 4), sw.lat_bounds.reshape(-1, 4), np.full(n, 1900.0), time=t, chunk=7)


def test_daily_composites_split_soundings_by_their_own_time():
    ds = _file_crossing_midnight()
    g = GridSpec.from_bbox((110, 34, 114, 38), 0.1)
    with raise_if_dask_computes():
        c = composite(ds, g, period="day")
    assert c.xch4_mean.dims == ("time", "y", "x")
    r = c.compute()
    assert [str(t)[:10] for t in r.time.values] == ["2023-07-15", "2023-07-16"]
    counts = r.xch4_count.sum(("y", "x")).values
    whole = grid_soundings(ds, g, method="area").compute()
    assert counts.sum() == int(whole.xch4_count.sum())
    assert counts[0] > 0 and counts[1] > 0
    monthly = composite(ds, g, period="month").compute()
    assert monthly.time.size == 1
    np.testing.assert_allclose(monthly.xch4_weight.values[0], whole.xch4_weight.values, rtol=1e-6)


def test_composites_from_files_agree_across_schedulers(tmp_path):
    from distributed import Client, LocalCluster

    from eo_pipeline.samples.writers import write_s5p_l2

    paths = []
    for k, day in enumerate(["2023-07-15", "2023-07-16", "2023-07-16"]):
        sw = s5p_swath(112.0 + k, 36.0, n_scan=12, n_pix=9)
        t = np.datetime64(f"{day}T05:00:00", "ms") + (np.arange(12) * 840).astype("timedelta64[ms]")
        x = 1900.0 + np.random.default_rng(k).normal(0, 10, sw.lat.shape)
        paths.append(write_s5p_l2(tmp_path / f"S5P_OFFL_L2__CH4____{k}.nc", "CH4", lat=sw.lat, lon=sw.lon,
                                  lat_bounds=sw.lat_bounds, lon_bounds=sw.lon_bounds, scanline_time=t,
                                  columns={"methane_mixing_ratio_bias_corrected": x,
                                           "methane_mixing_ratio_precision": np.full(x.shape, 8.0)},
                                  qa_value=np.ones(x.shape), orbit=29781 + k))
    c = composite(str(tmp_path / "S5P_*.nc"), "north_china_0p05", period="day")
    a = c.compute(scheduler="threads")
    b = c.compute(scheduler="processes")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        d = c.compute()
    xr.testing.assert_identical(a, b)
    xr.testing.assert_identical(a, d)
    assert a.time.size == 2 and int(a.xch4_count.sum()) > 0
