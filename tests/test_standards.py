# SPDX-License-Identifier: Apache-2.0
"""Outputs pass the standards' own checkers: CF-1.8 (IOOS compliance checker) and strict COG validation.

The CF checker runs offline on the standard-name table it ships. Its errors fail the
test; its warnings and notes are reported as test warnings only.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from rio_cogeo.cogeo import cog_validate

import eo_pipeline as eo
from eo_pipeline.anomaly import regional_anomaly
from eo_pipeline.composites import composite
from eo_pipeline.errors import OutputError
from eo_pipeline.grid import GridSpec
from eo_pipeline.gridding import grid_soundings
from eo_pipeline.io.geotiff import write_cog
from eo_pipeline.io.netcdf import write_netcdf

from .conftest import SAMPLES

ALBERS = "+proj=aea +lat_1=25 +lat_2=47 +lat_0=0 +lon_0=105 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
GRID = GridSpec.from_bbox((105, 33, 120, 45), 0.1, name="nc_0p1")


def cf_check(path) -> tuple[list[str], list[str]]:
    """Errors (high priority) and warnings/notes of the IOOS checker's ``cf:1.8`` test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the checker's own (its SOS plugins)
        from compliance_checker.runner import CheckSuite, ComplianceChecker

        CheckSuite.load_all_available_checkers()
    report = path.with_name(path.name + ".cf.json")
    ComplianceChecker.run_checker(str(path), ["cf:1.8"], 0, "normal", output_filename=str(report),
                                  output_format="json")
    result = json.loads(report.read_text())["cf:1.8"]
    report.unlink()
    errors = [m for r in result["high_priorities"] for m in r["msgs"]]
    rest = [m for key in ("medium_priorities", "low_priorities") for r in result[key] for m in r["msgs"]]
    return errors, rest


def assert_cf(path) -> None:
    errors, rest = cf_check(path)
    assert not errors, f"CF-1.8 errors in {path.name}: {errors}"
    if rest:
        warnings.warn(f"CF checker notes on {path.name}: {rest}", UserWarning, stacklevel=2)


@pytest.fixture(scope="module")
def ch4():
    return [eo.open_product(p) for p in sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc"))]


@pytest.fixture(scope="module")
def l3(ch4):
    return grid_soundings(ch4, GRID, method="point")


def test_single_map_is_cf_1_8(tmp_path, l3):
    path = tmp_path / "map.nc"
    write_netcdf(l3, path)
    assert_cf(path)
    ds = xr.open_dataset(path)
    assert ds.n_footprints_dropped.dtype == np.int32
    assert ds.crs.attrs["long_name"] == "coordinate reference system"
    assert ds.attrs["history"].split()[0].endswith("Z") and "eo_pipeline" in ds.attrs["history"]
    assert ds.attrs["source"] == "Sentinel-5P TROPOMI S5P_L2__CH4___ (processor 2.5.0)"
    assert ds.xch4_mean.attrs["standard_name"] == "dry_atmosphere_mole_fraction_of_methane"
    assert ds.xch4_mean.attrs["cell_methods"] == "area: mean"
    assert ds.xch4_std.attrs["cell_methods"] == "area: standard_deviation"
    assert ds.xch4_min.attrs["cell_methods"] == "area: minimum" and ds.xch4_max.attrs["cell_methods"] == "area: maximum"
    assert ds.xch4_count.attrs["standard_name"] == "number_of_observations"
    assert ds.xch4_count.attrs["cell_methods"] == "area: sum" and ds.xch4_count.dtype == np.int32
    assert ds.xch4_uncertainty.attrs["standard_name"] == "dry_atmosphere_mole_fraction_of_methane standard_error"
    assert "standard_name" not in ds.xch4_weight.attrs
    assert ds.xch4_mean.attrs["ancillary_variables"] == "xch4_uncertainty xch4_count"


def test_daily_composite_with_a_time_axis_is_cf_1_8(tmp_path, ch4):
    path = tmp_path / "daily.nc"
    stack = composite(ch4, GRID, period="day", method="point")
    write_netcdf(stack, path)
    assert_cf(path)
    ds = xr.open_dataset(path)
    assert ds.xch4_mean.attrs["cell_methods"] == "area: time: mean"
    assert ds.xch4_count.attrs["cell_methods"] == "area: time: sum"
    assert ds.time.dtype.kind == "M" and ds.time_bounds.dtype.kind == "M"  # decoded through the bounds' parent
    # one step without its time axis: the cell methods name only what the file holds
    step = stack.isel(time=0).drop_vars(["time", "time_bounds"])
    write_netcdf(step, tmp_path / "step.nc")
    assert_cf(tmp_path / "step.nc")
    assert xr.open_dataset(tmp_path / "step.nc").xch4_mean.attrs["cell_methods"] == "area: mean"


def test_projected_map_is_cf_1_8(tmp_path, ch4):
    g = GridSpec.from_bbox((-1_000_000, 3_500_000, 1_600_000, 5_000_000), 20_000.0, crs=ALBERS)
    path = tmp_path / "albers.nc"
    write_netcdf(grid_soundings(ch4, g, method="point"), path)
    assert_cf(path)


def test_anomaly_output_is_cf_1_8(tmp_path, l3):
    anomaly = regional_anomaly(l3, method="daily_median", zscore=True)
    path = tmp_path / "anomaly.nc"
    write_netcdf(anomaly[["xch4_background", "xch4_anomaly", "xch4_zscore", "xch4_count"]], path)
    assert_cf(path)
    ds = xr.open_dataset(path)
    assert ds.xch4_anomaly.attrs["cell_methods"] == "area: mean"


def test_forest_maps_are_cf_1_8(tmp_path):
    from eo_pipeline.forest_stage import run_forest

    tc = next(SAMPLES.glob("Hansen_GFC-2023-v1.11_treecover2000_*.tif"))
    ly = next(SAMPLES.glob("Hansen_GFC-2023-v1.11_lossyear_*.tif"))
    em = next(SAMPLES.glob("gfw_forest_carbon_gross_emissions_*.tif"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample region reaches beyond the cropped rasters
        run = run_forest(tc, ly, out=tmp_path / "forest.csv", emissions=em, grid=GridSpec.from_bbox(
            [109.55, 38.2, 109.9, 38.5], 0.01), zone="boreal/boreal_coniferous_forest/asia/natural_gt20y",
            formats=("netcdf", "geotiff"))
    nc = [Path(p) for p in run.outputs if p.endswith(".nc")]
    assert nc
    assert_cf(nc[0])
    for tif in (p for p in run.outputs if p.endswith(".tif")):
        assert cog_validate(tif, strict=True)[0], tif


def test_integers_beyond_32_bits_are_refused_and_leave_nothing(tmp_path, l3):
    small = l3[["xch4_mean"]].isel(x=slice(0, 20), y=slice(0, 10)).compute()
    ok = small.assign(n=((), np.int64(7)), flags=(("y", "x"), np.ones((10, 20), np.uint16)))
    write_netcdf(ok, tmp_path / "ok.nc")
    back = xr.open_dataset(tmp_path / "ok.nc")
    assert back.n.dtype == np.int32 and back.flags.dtype == np.int32 and int(back.n) == 7
    (tmp_path / "ok.nc").unlink()
    big = small.assign(n=(("y", "x"), np.full((10, 20), 2**40, np.int64)))
    with pytest.raises(OutputError, match=r"'n' holds values outside the 32-bit integers"):
        write_netcdf(big, tmp_path / "big.nc")
    lazy = small.assign(n=(("y", "x"), da.full((10, 20), 2**40, np.int64, chunks=5)))
    with pytest.raises(OutputError, match=r"big.nc: variable 'n' holds values outside"):
        write_netcdf(lazy, tmp_path / "big.nc")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["map", "projected", "cut_flipped", "anomaly"])
def test_cogs_pass_strict_cog_validation(tmp_path, ch4, l3, case):
    if case == "map":
        data, variables = l3, None
    elif case == "projected":
        g = GridSpec.from_bbox((-1_000_000, 3_500_000, 1_600_000, 5_000_000), 5000.0, crs=ALBERS)  # overviews
        data, variables = grid_soundings(ch4, g, method="point"), ["xch4_mean", "xch4_count"]
    elif case == "cut_flipped":
        data, variables = l3.isel(x=slice(120, 10, -1), y=slice(3, 100, 2)), ["xch4_mean"]
    else:
        anomaly = regional_anomaly(l3, method="daily_median")
        data, variables = anomaly, ["xch4_anomaly", "xch4_background"]
    path = write_cog(data, tmp_path / f"{case}.tif", variables=variables)
    valid, errors, warns = cog_validate(path, strict=True)
    assert valid, (errors, warns)
