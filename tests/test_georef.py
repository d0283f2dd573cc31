# SPDX-License-Identifier: Apache-2.0
"""Maps are written where their coordinates say (issue 8).

Maps cut, flipped, subsampled or coarsened with plain xarray are written as COG and
NetCDF and read back with rasterio, rioxarray and xarray; coordinates (to 1e-9) and
values must match the xarray object that was written. The expectations are computed
here by hand or with ``sortby`` (never with the code under test).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import eo_pipeline as eo
from eo_pipeline.errors import GridError
from eo_pipeline.grid import GridSpec, named_grid, north_up
from eo_pipeline.gridding import grid_soundings
from eo_pipeline.io.geotiff import write_cog
from eo_pipeline.io.netcdf import write_netcdf

from .conftest import SAMPLES

ALBERS = "+proj=aea +lat_1=25 +lat_2=47 +lat_0=0 +lon_0=105 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
#: The issue's grid: 0.05 degree cells from 111.5 W, 40.5 N (50 columns, 30 rows).
BBOX_GRID = GridSpec.from_bbox((-111.5, 39.0, -109.0, 40.5), 0.05)
#: A small grid for the property test: 6 rows x 9 columns of 0.1 degree from 100 E, 30.6 N.
SMALL = GridSpec.from_bbox((100.0, 30.0, 100.9, 30.6), 0.1)
TOL = 1e-9


def synthetic(grid: GridSpec, *, chunks: int | None = None) -> xr.Dataset:
    """A Level-3-like map whose value tells the parent cell: 1000 * row + col (and NaN in one cell)."""
    rows, cols = grid.shape
    value = (1000.0 * np.arange(rows)[:, None] + np.arange(cols)[None, :]).astype(np.float32)
    value[1, 2] = np.nan
    count = np.broadcast_to((np.arange(cols) % 3).astype(np.int32), (rows, cols)).copy()
    ds = xr.Dataset(
        {"xch4_mean": (("y", "x"), value, {"units": "ppb", "long_name": "mean", "grid_mapping": "crs"}),
         "xch4_count": (("y", "x"), count, {"units": "1", "long_name": "count", "grid_mapping": "crs"})},
        coords={**grid.coords(), "crs": ((), np.int32(0), grid.cf_grid_mapping())},
        attrs={"species": "CH4", "variable": "xch4"})
    return ds.chunk({"y": chunks, "x": chunks}) if chunks else ds


def oracle(ds: xr.Dataset) -> xr.Dataset:
    """The map as a north-up file must hold it: x ascending, y descending (xarray's sortby)."""
    return ds.sortby("x").sortby("y", ascending=False).compute()


def expected_transform(ds: xr.Dataset, parent: GridSpec) -> tuple[float, float, float, float]:
    """(a, west, e, north) by hand from the centres; one cell keeps the parent's size."""
    x, y = np.sort(ds.x.values), np.sort(ds.y.values)[::-1]
    a = (x[-1] - x[0]) / (x.size - 1) if x.size > 1 else parent.resolution[0]
    e = (y[-1] - y[0]) / (y.size - 1) if y.size > 1 else -parent.resolution[1]
    return a, x[0] - a / 2, e, y[0] - e / 2


def same_grid(a: GridSpec, b: GridSpec, rel: float = 1e-12) -> bool:
    """Equal CRS and shape, transforms equal to float round-off."""
    scale = max(abs(b.transform.c), abs(b.transform.f), 1.0)
    return a.crs == b.crs and a.shape == b.shape and all(
        abs(u - v) <= rel * scale for u, v in zip(tuple(a.transform)[:6], tuple(b.transform)[:6], strict=True))


def check_cog(path: str, ds: xr.Dataset, parent: GridSpec, variable: str = "xch4_mean") -> None:
    want = oracle(ds)
    a, west, e, north = expected_transform(ds, parent)
    with rasterio.open(path) as r:
        t = r.transform
        assert (t.b, t.d) == (0.0, 0.0)
        np.testing.assert_allclose([t.a, t.c, t.e, t.f], [a, west, e, north], rtol=0, atol=TOL * max(1.0, abs(west)))
        assert (r.height, r.width) == (want.sizes["y"], want.sizes["x"])
        cols = np.array([(t @ (j + 0.5, 0.5))[0] for j in range(r.width)])
        rows = np.array([(t @ (0.5, i + 0.5))[1] for i in range(r.height)])
        np.testing.assert_allclose(cols, want.x.values, rtol=0, atol=TOL * max(1.0, np.abs(cols).max()))
        np.testing.assert_allclose(rows, want.y.values, rtol=0, atol=TOL * max(1.0, np.abs(rows).max()))
        band = list(r.descriptions).index(variable) + 1
        np.testing.assert_array_equal(r.read(band), want[variable].values.astype(np.float32))
        assert GridSpec(r.crs.to_wkt(), t, (r.height, r.width)).crs == parent.crs
    opened = rioxarray.open_rasterio(path)
    np.testing.assert_allclose(opened.x.values, want.x.values, rtol=0, atol=TOL * max(1.0, abs(west)))
    np.testing.assert_allclose(opened.y.values, want.y.values, rtol=0, atol=TOL * max(1.0, abs(north)))
    np.testing.assert_array_equal(opened.sel(band=band).values, want[variable].values.astype(np.float32))


def check_netcdf(path: str, ds: xr.Dataset, parent: GridSpec, variable: str = "xch4_mean") -> None:
    want = oracle(ds)
    a, west, e, north = expected_transform(ds, parent)
    back = xr.open_dataset(path, decode_coords="all")
    np.testing.assert_allclose(back.x.values, want.x.values, rtol=0, atol=TOL * max(1.0, abs(west)))
    np.testing.assert_allclose(back.y.values, want.y.values, rtol=0, atol=TOL * max(1.0, abs(north)))
    np.testing.assert_array_equal(back[variable].values, want[variable].values)
    gt = [float(v) for v in back.crs.attrs["GeoTransform"].split()]  # written from the recovered grid
    np.testing.assert_allclose([gt[1], gt[0], gt[5], gt[3]], [a, west, e, north], rtol=0,
                               atol=TOL * max(1.0, abs(west)))
    t = back.rio.transform()
    np.testing.assert_allclose([t.a, t.c, t.e, t.f], [a, west, e, north], rtol=0, atol=TOL * max(1.0, abs(west)))
    assert back.rio.crs == rasterio.crs.CRS.from_wkt(parent.crs.to_wkt())
    # GDAL's netCDF driver, through rasterio and rioxarray
    with rasterio.open(f"netcdf:{path}:{variable}") as r:
        t = r.transform
        np.testing.assert_allclose([t.a, t.c, t.e, t.f], [a, west, e, north], rtol=0,
                                   atol=1e-6 * max(1.0, abs(west)))  # GDAL prints the transform to ~15 digits
        np.testing.assert_array_equal(r.read(1), want[variable].values)
    gdal_view = rioxarray.open_rasterio(f"netcdf:{path}:{variable}")
    np.testing.assert_allclose(gdal_view.x.values, want.x.values, rtol=0, atol=1e-6 * max(1.0, abs(west)))
    np.testing.assert_allclose(gdal_view.y.values, want.y.values, rtol=0, atol=1e-6 * max(1.0, abs(north)))


# ------------------------------------------------------------------------------ hand-computed cases
def test_the_issue_example_is_written_at_its_own_origin(tmp_path):
    cut = synthetic(BBOX_GRID).isel(x=slice(10, 30), y=slice(5, 20))
    grid = GridSpec.from_dataset(cut)
    assert grid.shape == (15, 20) and grid.resolution == (0.05, 0.05)
    # first pixel centre by hand: -111.5 + 10.5 * 0.05, 40.5 - 5.5 * 0.05
    assert grid.x[0] == pytest.approx(-110.975, abs=1e-12) and grid.y[0] == pytest.approx(40.225, abs=1e-12)
    cog = write_cog(cut, tmp_path / "cut.tif")
    with rasterio.open(cog) as r:
        x0, y0 = r.transform @ (0.5, 0.5)
        assert (r.width, r.height) == (20, 15)
        assert x0 == pytest.approx(-110.975, abs=1e-9) and y0 == pytest.approx(40.225, abs=1e-9)
        assert r.read(1)[0, 0] == 5 * 1000 + 10  # parent row 5, column 10
    nc = write_netcdf(cut, tmp_path / "cut.nc")
    back = xr.open_dataset(nc, decode_coords="all")
    assert back.x.values[0] == pytest.approx(-110.975, abs=1e-9) and back.y.values[0] == pytest.approx(40.225, abs=1e-9)
    assert back.crs.attrs["GeoTransform"].split()[:1] == ["-111.0"]
    check_cog(cog, cut, BBOX_GRID)
    check_netcdf(nc, cut, BBOX_GRID)


CASES = {
    "uncut": lambda ds: ds,
    "isel": lambda ds: ds.isel(x=slice(10, 30), y=slice(5, 20)),
    "sel": lambda ds: ds.sel(x=slice(-111.0, -110.0), y=slice(40.3, 39.8)),
    "flip_y": lambda ds: ds.isel(y=slice(None, None, -1)),
    "flip_x": lambda ds: ds.isel(x=slice(None, None, -1)),
    "flip_both_and_cut": lambda ds: ds.isel(x=slice(40, 3, -1), y=slice(25, 2, -1)),
    "every_second_x": lambda ds: ds.isel(x=slice(0, None, 2)),
    "every_third_cell_from_7": lambda ds: ds.isel(x=slice(7, None, 3), y=slice(1, None, 3)),
    "coarsen": lambda ds: ds.coarsen(x=2, y=2).mean(),
    "coarsen_trim": lambda ds: ds.coarsen(x=3, y=4, boundary="trim").mean(),
    "one_row": lambda ds: ds.isel(y=slice(4, 5)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunks", [None, 16])
def test_cut_flipped_subsampled_coarsened_maps_are_written_where_their_coordinates_say(tmp_path, case, chunks):
    ds = CASES[case](synthetic(BBOX_GRID, chunks=chunks))
    check_cog(write_cog(ds, tmp_path / "m.tif"), ds, BBOX_GRID)
    check_netcdf(write_netcdf(ds, tmp_path / "m.nc"), ds, BBOX_GRID)


def test_coarsen_keeps_the_crs_coordinate_and_the_grid_is_the_coarse_one():
    coarse = synthetic(BBOX_GRID).coarsen(x=2, y=2).mean()
    assert "crs" in coarse.coords  # coarsen keeps the scalar coordinate (with the parent's GeoTransform)
    g = GridSpec.from_dataset(coarse)
    assert g == GridSpec.from_bbox((-111.5, 39.0, -109.0, 40.5), 0.1)  # exact: round-off snapped away
    np.testing.assert_array_equal(coarse.xch4_count.values[0, :3], [0.5, 1.0, 1.5])  # (0+1)/2, (2+0)/2, (1+2)/2


def test_north_up_flips_lazily_and_leaves_north_up_maps_alone(no_compute):
    ds = synthetic(BBOX_GRID, chunks=16)
    assert north_up(ds) is ds
    flipped = ds.isel(x=slice(None, None, -1), y=slice(None, None, -1))
    back = north_up(flipped)
    assert back.x.values[0] < back.x.values[-1] and back.y.values[0] > back.y.values[-1]
    assert GridSpec.from_dataset(back) == GridSpec.from_dataset(flipped) == BBOX_GRID


def test_projected_albers_grid(tmp_path):
    parent = GridSpec.from_bbox((-1_000_000, 3_500_000, 1_600_000, 5_000_000), 50_000.0, crs=ALBERS)
    ds = synthetic(parent).isel(x=slice(40, 5, -2), y=slice(3, 27))
    g = GridSpec.from_dataset(ds)
    assert g.resolution == (100_000.0, 50_000.0)
    # by hand: columns 6, 8, ..., 40 -> west edge -1e6 + 6 * 5e4 - 2.5e4 (half the parent cell) ... the new cell is 1e5 wide
    assert g.bounds[0] == pytest.approx(-1_000_000 + 6.5 * 50_000 - 50_000, abs=1e-6)
    assert g.bounds[3] == pytest.approx(5_000_000 - 3 * 50_000, abs=1e-6)
    cog = write_cog(ds, tmp_path / "alb.tif")
    check_cog(cog, ds, parent)
    with rasterio.open(cog) as r:
        assert r.crs.to_dict()["proj"] == "aea"
    nc = write_netcdf(ds, tmp_path / "alb.nc")
    check_netcdf(nc, ds, parent)
    assert xr.open_dataset(nc).crs.attrs["grid_mapping_name"] == "albers_conical_equal_area"


def test_irregular_coordinates_fail_before_anything_is_written(tmp_path):
    ds = synthetic(BBOX_GRID)
    x = ds.x.values.copy()
    x[7] += 0.01  # a fifth of a cell
    bad = ds.assign_coords(x=("x", x, ds.x.attrs))
    for write, name in ((write_cog, "m.tif"), (write_netcdf, "m.nc")):
        with pytest.raises(GridError, match=r"coordinate 'x' is not regularly spaced.*0\.01.*index 7.*resample"):
            write(bad, tmp_path / name)
    picked = ds.isel(y=[0, 1, 2, 5, 6])  # rows 0, 1, 2, 5, 6: not regular either
    with pytest.raises(GridError, match="coordinate 'y'"):
        write_cog(picked, tmp_path / "m.tif")
    assert list(tmp_path.iterdir()) == []


def test_float_round_off_is_accepted():
    ds = synthetic(BBOX_GRID)
    jitter = np.where(np.arange(ds.sizes["x"]) % 2, 1e-13, -1e-13)
    assert GridSpec.from_dataset(ds.assign_coords(x=("x", ds.x.values + jitter, ds.x.attrs))) == BBOX_GRID
    f32 = ds.assign_coords(x=("x", ds.x.values.astype(np.float32), ds.x.attrs),
                           y=("y", ds.y.values.astype(np.float32), ds.y.attrs))
    g = GridSpec.from_dataset(f32.drop_vars("crs"))
    assert g.resolution == pytest.approx((0.05, 0.05), rel=1e-5) and g.shape == BBOX_GRID.shape


def test_crs_from_grid_mapping_rioxarray_or_lonlat_units():
    ds = synthetic(BBOX_GRID)
    plain = ds.drop_vars("crs")
    for v in plain.data_vars.values():
        v.attrs.pop("grid_mapping")
    assert same_grid(GridSpec.from_dataset(plain), BBOX_GRID)  # degrees_east/north: EPSG:4326
    rio = plain.rio.write_crs("EPSG:4326")
    assert "spatial_ref" in rio.coords and same_grid(GridSpec.from_dataset(rio), BBOX_GRID)
    assert GridSpec.from_dataset(rio["xch4_mean"]).crs.to_epsg() == 4326
    parent = GridSpec.from_bbox((0, 0, 100_000, 50_000), 10_000.0, crs="EPSG:32650")
    utm = synthetic(parent).rename(crs="utm_grid")
    for v in utm.data_vars.values():
        v.attrs["grid_mapping"] = "utm_grid"
    assert GridSpec.from_dataset(utm).crs.to_epsg() == 32650
    with pytest.raises(GridError, match="no grid mapping"):
        GridSpec.from_dataset(synthetic(parent).drop_vars("crs"))
    with pytest.raises(GridError, match="no 'x' coordinate"):
        GridSpec.from_dataset(ds.rename(x="lon"))


def test_a_single_cell_takes_its_size_from_the_geotransform_only():
    ds = synthetic(BBOX_GRID)
    one = ds.isel(x=[12])
    g = GridSpec.from_dataset(one)
    assert g.shape == (30, 1) and g.resolution == (0.05, 0.05) and g.bounds[0] == pytest.approx(-111.5 + 12 * 0.05)
    one.crs.attrs.pop("GeoTransform")
    with pytest.raises(GridError, match="single value.*GeoTransform"):
        GridSpec.from_dataset(one)


def test_a_stale_geotransform_is_never_trusted(tmp_path):
    ds = synthetic(BBOX_GRID)
    lying = ds.copy()
    lying["crs"] = lying.crs.assign_attrs(GeoTransform="0.0 1.0 0.0 0.0 0.0 -1.0")
    assert same_grid(GridSpec.from_dataset(lying), BBOX_GRID)  # the coordinates, to round-off
    sub = ds.isel(x=slice(0, None, 2))  # keeps the parent's GeoTransform attribute
    assert sub.crs.attrs["GeoTransform"] == ds.crs.attrs["GeoTransform"]
    nc = write_netcdf(sub, tmp_path / "sub.nc")
    assert xr.open_dataset(nc).crs.attrs["GeoTransform"].split()[1] == "0.1"


def test_bands_empty_where_others_have_data_read_as_nodata(tmp_path):
    """A band's skipped empty tile must not read as 0 where another band wrote the same tile."""
    ds = synthetic(BBOX_GRID, chunks=8)
    ds["xch4_mean"] = ds.xch4_mean.where(ds.x > -110.0)  # west part all NaN, several whole blocks
    for order in (["xch4_mean", "xch4_count"], ["xch4_count", "xch4_mean"]):
        path = write_cog(ds, tmp_path / "m.tif", variables=order)
        with rasterio.open(path) as r:
            for band, name in enumerate(order, start=1):
                np.testing.assert_array_equal(r.read(band), ds[name].values.astype(np.float32))


def test_a_band_skipped_in_a_tile_another_band_wrote_reads_as_nodata(tmp_path):
    # found by the property test: the NaN cell is a 1 x 1 block of its own; the count band fills its tile
    ds = synthetic(SMALL, chunks=4).isel(y=slice(1, 5, 3), x=slice(8, None, -3))
    with rasterio.open(write_cog(ds, tmp_path / "m.tif")) as r:
        np.testing.assert_array_equal(r.read(1), [[np.nan, 1005, 1008], [4002, 4005, 4008]])
        np.testing.assert_array_equal(r.read(2), [[2, 2, 2], [2, 2, 2]])


def test_blocks_broadcast_along_one_axis_are_written_whole(tmp_path):
    import dask.array as da

    ds = synthetic(BBOX_GRID)
    row = da.from_array(np.arange(BBOX_GRID.shape[1], dtype=np.float32), chunks=16)
    ds["xch4_mean"] = (("y", "x"), da.broadcast_to(row, BBOX_GRID.shape, chunks=(8, 16)), ds.xch4_mean.attrs)
    want = np.broadcast_to(np.arange(BBOX_GRID.shape[1], dtype=np.float32), BBOX_GRID.shape)
    with rasterio.open(write_cog(ds, tmp_path / "b.tif")) as r:
        np.testing.assert_array_equal(r.read(1), want)
    with xr.open_dataset(write_netcdf(ds, tmp_path / "b.nc")) as back:
        np.testing.assert_array_equal(back.xch4_mean.values, want)


# ------------------------------------------------------------------------------ gridded soundings
@pytest.fixture(scope="module")
def ch4_l3():
    products = [eo.open_product(p) for p in sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc"))]
    return grid_soundings(products, "north_china_0p1", method="point")


def test_an_uncut_map_round_trips_to_exactly_its_grid_with_its_name(ch4_l3):
    grid = named_grid("north_china_0p1")
    got = GridSpec.from_dataset(ch4_l3)
    assert got == grid and got.transform == grid.transform and got.name == "north_china_0p1"
    assert GridSpec.from_dataset(ch4_l3.isel(x=slice(1, None))).name is None  # a cut is another grid


def test_gridded_map_cut_and_flipped_is_written_in_place(tmp_path, ch4_l3):
    grid = named_grid("north_china_0p1")
    cut = ch4_l3[["xch4_mean", "xch4_count"]].isel(x=slice(20, 90), y=slice(100, 10, -1))
    check_cog(write_cog(cut, tmp_path / "c.tif"), cut, grid)
    check_netcdf(write_netcdf(cut, tmp_path / "c.nc"), cut, grid)


# ------------------------------------------------------------------------------ property test
@st.composite
def selections(draw):
    def axis(n):
        start = draw(st.integers(0, n - 2))
        stop = draw(st.integers(start + 2, n))
        step = draw(st.sampled_from([1, 1, 2, 3]))
        sl = slice(stop - 1, start - 1 if start > 0 else None, -step) if draw(st.booleans()) else slice(start, stop, step)
        idx = np.arange(n)[sl]
        assume(idx.size >= 2)
        return sl, idx

    (sy, iy), (sx, ix) = axis(SMALL.shape[0]), axis(SMALL.shape[1])
    return sy, iy, sx, ix, draw(st.booleans())


@settings(max_examples=30, deadline=None)
@given(selections())
def test_any_cut_step_flip_is_written_where_its_coordinates_say(sel):
    sy, iy, sx, ix, chunked = sel
    parent = synthetic(SMALL, chunks=4 if chunked else None)
    ds = parent.isel(y=sy, x=sx)
    # by hand: the cell size is the step times the parent's; the west/north edges are the extreme centres -/+ half of it
    a, e = 0.1 * abs(sx.step or 1), 0.1 * abs(sy.step or 1)
    west = 100.0 + 0.1 * (ix.min() + 0.5) - a / 2
    north = 30.6 - 0.1 * (iy.min() + 0.5) + e / 2
    g = GridSpec.from_dataset(ds)
    np.testing.assert_allclose([g.transform.a, g.transform.c, -g.transform.e, g.transform.f], [a, west, e, north],
                               rtol=0, atol=1e-12)
    want = parent.xch4_mean.values[np.ix_(np.sort(iy), np.sort(ix))]
    with tempfile.TemporaryDirectory() as d:
        cog = write_cog(ds, Path(d) / "p.tif")
        with rasterio.open(cog) as r:
            np.testing.assert_allclose([r.transform.a, r.transform.c, r.transform.e, r.transform.f],
                                       [a, west, -e, north], rtol=0, atol=1e-9)
            np.testing.assert_array_equal(r.read(1), want)
        with xr.open_dataset(write_netcdf(ds, Path(d) / "p.nc")) as back:
            np.testing.assert_array_equal(back.xch4_mean.values, want)
            np.testing.assert_allclose(back.x.values, 100.0 + 0.1 * (np.sort(ix) + 0.5), rtol=0, atol=1e-9)
            np.testing.assert_allclose(back.y.values, 30.6 - 0.1 * (np.sort(iy) + 0.5), rtol=0, atol=1e-9)


def test_a_cut_no_longer_carries_the_parent_grids_name(tmp_path):
    import eo_pipeline as eo

    ds = [eo.open_product(p) for p in sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc"))[:1]]
    l3 = eo.grid_soundings(ds, "north_china_0p1")
    whole = eo.write_cog(l3, tmp_path / "whole.tif", variables=["xch4_mean"])
    cut = eo.write_cog(l3.isel(x=slice(10, 30)), tmp_path / "cut.tif", variables=["xch4_mean"])
    nc = eo.write_netcdf(l3.isel(y=slice(None, None, -1)).isel(y=slice(0, 40)), tmp_path / "cut.nc")
    with rasterio.open(whole) as a, rasterio.open(cut) as b:
        assert a.tags()["grid"] == "north_china_0p1" and "grid" not in b.tags()
        assert a.tags()["grid_crs"] == b.tags()["grid_crs"] == "EPSG:4326"
    with xr.open_dataset(nc) as d:
        assert "grid" not in d.attrs and d.attrs["grid_crs"] == "EPSG:4326"
