# SPDX-License-Identifier: Apache-2.0
"""Writers: COG (rio cogeo validate, rasterio, rioxarray), CF-NetCDF, quicklooks, CLI grid."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from rio_cogeo.cogeo import cog_validate

import eo_pipeline as eo
from eo_pipeline.cli import main
from eo_pipeline.grid import GridSpec
from eo_pipeline.gridding import grid_soundings
from eo_pipeline.io.geotiff import write_cog
from eo_pipeline.io.netcdf import write_netcdf
from eo_pipeline.io.quicklook import quicklook

from .conftest import SAMPLES

ALBERS = "+proj=aea +lat_1=25 +lat_2=47 +lat_0=0 +lon_0=105 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"


@pytest.fixture(scope="module")
def ch4_orbits():
    return [eo.open_product(p) for p in sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc"))]


@pytest.fixture(scope="module")
def l3_fine(ch4_orbits):
    # 1500 x 1200 cells: big enough for overviews and for tiles without data
    return grid_soundings(ch4_orbits, GridSpec.from_bbox((105, 33, 120, 45), 0.01, name="nc_0p01"), method="area")


def test_cog_is_valid_and_tagged(tmp_path, l3_fine):
    path = write_cog(l3_fine, tmp_path / "xch4.tif", tags={"config_hash": "abc123"})
    valid, errors, warns = cog_validate(path)
    assert valid, errors
    with rasterio.open(path) as r:
        assert r.crs.to_epsg() == 4326 and r.transform.a == pytest.approx(0.01)
        assert r.dtypes == ("float32",) * 7 and np.isnan(r.nodata)
        assert r.block_shapes[0] == (512, 512) and r.overviews(1)
        structure = r.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "DEFLATE" and structure.get("PREDICTOR", "1") == "1"  # no predictor
        assert structure["LAYOUT"] == "COG"
        assert list(r.descriptions) == ["xch4_mean", "xch4_std", "xch4_count", "xch4_weight", "xch4_min",
                                        "xch4_max", "xch4_uncertainty"]
        tags = r.tags()
        for key in ("units", "species", "time_coverage_start", "time_coverage_end", "input_files",
                    "processor_versions", "software", "config_hash"):
            assert tags[key], key
        assert tags["units"] == "ppb" and tags["species"] == "CH4" and tags["config_hash"] == "abc123"
        assert r.tags(1)["units"] == "ppb"
        mean = r.read(1)
    expected = l3_fine.xch4_mean.values
    np.testing.assert_array_equal(np.isnan(mean), np.isnan(expected))
    np.testing.assert_allclose(mean[~np.isnan(mean)], expected[~np.isnan(expected)])
    da_ = rioxarray.open_rasterio(path)
    assert da_.rio.crs.to_epsg() == 4326
    np.testing.assert_allclose(da_.x.values, l3_fine.x.values)


def test_cog_on_an_equal_area_grid_opens_with_its_crs(tmp_path, ch4_orbits):
    g = GridSpec.from_bbox((-1_000_000, 3_500_000, 1_600_000, 5_000_000), 5000.0, crs=ALBERS)
    l3 = grid_soundings(ch4_orbits, g, method="area")
    path = write_cog(l3, tmp_path / "alb.tif", variables=["xch4_mean", "xch4_count", "xch4_weight"])
    assert cog_validate(path)[0]
    with rasterio.open(path) as r:
        assert r.crs.to_dict()["proj"] == "aea" and r.count == 3
    opened = rioxarray.open_rasterio(path)
    assert opened.rio.crs.to_dict()["lat_1"] == 25


def test_cf_netcdf_opens_with_crs_and_coordinates(tmp_path, l3_fine):
    path = write_netcdf(l3_fine, tmp_path / "xch4.nc")
    ds = xr.open_dataset(path, decode_coords="all")
    assert ds.attrs["Conventions"] == "CF-1.8"
    assert ds.xch4_mean.encoding["grid_mapping"] == "crs" and "crs" in ds.coords
    assert xr.open_dataset(path).xch4_mean.attrs["grid_mapping"] == "crs"
    assert ds.rio.crs.to_epsg() == 4326
    np.testing.assert_allclose(ds.x.values, l3_fine.x.values)
    np.testing.assert_allclose(ds.y.values, l3_fine.y.values)
    assert ds.x.attrs["standard_name"] == "longitude" and ds.x.attrs["units"] == "degrees_east"
    np.testing.assert_allclose(ds.xch4_mean.values, l3_fine.xch4_mean.values, equal_nan=True)
    assert ds.rio.transform().a == pytest.approx(0.01)


def test_cf_netcdf_projected(tmp_path, ch4_orbits):
    g = GridSpec.from_bbox((-1_000_000, 3_500_000, 1_600_000, 5_000_000), 10000.0, crs=ALBERS)
    path = write_netcdf(grid_soundings(ch4_orbits, g, method="area"), tmp_path / "alb.nc")
    ds = xr.open_dataset(path, decode_coords="all")
    assert ds.rio.crs.to_dict()["proj"] == "aea"
    assert ds.x.attrs["standard_name"] == "projection_x_coordinate" and ds.x.attrs["units"] == "m"
    assert ds.crs.attrs["grid_mapping_name"] == "albers_conical_equal_area"


def test_sparse_tiles_read_back_as_nodata(tmp_path, ch4_orbits):
    g = GridSpec.from_bbox((60, 0, 140, 60), 0.01)  # mostly empty
    path = write_cog(grid_soundings(ch4_orbits, g, method="area"), tmp_path / "big.tif", variables=["xch4_mean"])
    with rasterio.open(path) as r:
        window = rasterio.windows.Window(0, 0, 512, 512)  # 60-65 E, 55-60 N: no data
        assert np.isnan(r.read(1, window=window)).all()
    assert (tmp_path / "big.tif").stat().st_size < 20e6


def test_quicklook(tmp_path, l3_fine):
    path = quicklook(l3_fine, "xch4_mean", tmp_path / "q.png")
    data = (tmp_path / "q.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert path.endswith("q.png")


def test_failed_write_leaves_nothing(tmp_path, l3_fine):
    def boom(block):
        raise RuntimeError("simulated failure while computing")

    broken = l3_fine.copy()
    broken["xch4_mean"] = broken.xch4_mean.copy(data=da.map_blocks(boom, broken.xch4_mean.data, dtype="f4"))
    with pytest.raises(RuntimeError):
        write_cog(broken, tmp_path / "x.tif")
    with pytest.raises(RuntimeError):
        write_netcdf(broken, tmp_path / "x.nc")
    assert list(tmp_path.iterdir()) == []


def test_cli_grid_to_cog_and_netcdf(tmp_path, capsys):
    files = [str(p) for p in sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc"))]
    assert main(["grid", *files, "--grid", "north_china_0p1", "-o", str(tmp_path / "m.tif"), "--quicklook"]) == 0
    assert cog_validate(str(tmp_path / "m.tif"))[0] and (tmp_path / "m_mean.png").exists()
    assert main(["grid", str(SAMPLES / "S5P_OFFL_L2__CH4____*.nc"), "--bbox", "105", "33", "120", "45",
                 "--resolution", "0.25", "--method", "point", "--period", "day", "-o", str(tmp_path / "d.nc")]) == 0
    ds = xr.open_dataset(tmp_path / "d.nc")
    assert ds.xch4_mean.dims == ("time", "y", "x") and ds.attrs["method"] == "point"
    capsys.readouterr()
    assert main(["grid", *files, "--grid", "north_china_0p1", "-o", str(tmp_path / "m.png")]) == 2
    assert "must end in .tif" in capsys.readouterr().err
    assert main(["grid", *files, "--bbox", "105", "33", "120", "45", "-o", str(tmp_path / "m.tif")]) == 2
    mixed = files + [str(next(SAMPLES.glob("oco2_*.nc4")))]
    assert main(["grid", *mixed, "--grid", "north_china_0p1", "-o", str(tmp_path / "x.tif")]) == 2
    assert "one species at a time" in capsys.readouterr().err


def test_job_summary_lists_composites(tmp_path):
    import yaml

    from eo_pipeline.config import load_config
    from eo_pipeline.pipeline import run

    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({
        "inputs": [str(SAMPLES / "S5P_OFFL_L2__CH4____*.nc")],
        "gridding": {"grid": "north_china_0p1", "method": "area", "composite": "day"},
        "output": {"dir": str(tmp_path / "out"), "formats": ["geotiff", "netcdf", "quicklook"]},
    }))
    result = run(load_config(cfg))
    names = sorted(p.split("/")[-1] for p in result.outputs)
    assert "xch4_area_north_china_0p1_20230715.tif" in names and "xch4_area_north_china_0p1.nc" in names
    summary = json.loads((tmp_path / "out" / "job_summary.json").read_text())
    assert [Path(p).name for p in summary["outputs"]] == [  # the three outputs and the catalogue
        "xch4_area_north_china_0p1.nc", "xch4_area_north_china_0p1_20230715.tif",
        "xch4_area_north_china_0p1_20230715_mean.png", "collection.json"]


def test_outputs_written_from_a_distributed_cluster(tmp_path, ch4_orbits):
    from distributed import Client, LocalCluster

    g = GridSpec.from_bbox((105, 33, 120, 45), 0.02)
    l3 = grid_soundings(ch4_orbits, g, method="area")
    local = write_cog(l3, tmp_path / "local.tif", variables=["xch4_mean", "xch4_weight"])
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        remote = write_cog(l3, tmp_path / "cluster.tif", variables=["xch4_mean", "xch4_weight"])
        nc = write_netcdf(l3, tmp_path / "cluster.nc")
    assert cog_validate(remote)[0]
    with rasterio.open(local) as a, rasterio.open(remote) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert xr.open_dataset(nc).xch4_mean.shape == (600, 750)
