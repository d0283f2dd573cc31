# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: tiny files in the real layouts, the real-data folder, laziness checks."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import dask
import numpy as np
import pytest

from eo_pipeline.samples.geometry import oco2_track, s5p_swath
from eo_pipeline.samples.writers import (
    s5p_filename,
    write_esacci_ch4,
    write_lite,
    write_s5p_blended,
    write_s5p_l2,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EO_PIPELINE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SAMPLES = ROOT / "sample_scenes"


def shared_file(relpath: str) -> Path:
    """Path of a real file in ../shared/data, or skip the test with the reason."""
    p = SHARED / relpath
    if not p.exists():
        pytest.skip(f"real data {relpath} not available (looked in {SHARED}; set EO_PIPELINE_SHARED_DATA)")
    return p


@contextmanager
def raise_if_dask_computes():
    """Fail on any dask compute inside the block (xarray's/satpy's pattern)."""

    def scheduler(dsk, keys, **kwargs):  # noqa: ARG001
        raise AssertionError("dask computed something inside a block that must stay lazy")

    with dask.config.set(scheduler=scheduler):
        yield


@pytest.fixture
def no_compute():
    with raise_if_dask_computes():
        yield


# ------------------------------------------------------------------ tiny S5P files
T0 = np.datetime64("2023-07-15T05:30:00.000", "ms")


def tiny_s5p_arrays(n_scan: int = 6, n_pix: int = 5):
    sw = s5p_swath(112.0, 36.0, n_scan=n_scan, n_pix=n_pix, nadir_across_km=7.0)
    times = T0 + (np.arange(n_scan) * 840).astype("timedelta64[ms]")
    # hand-chosen values: row r, column c -> 1900 + 10 r + c
    r, c = np.meshgrid(np.arange(n_scan), np.arange(n_pix), indexing="ij")
    xch4 = 1900.0 + 10 * r + c
    qa = np.ones((n_scan, n_pix))
    qa[0, 0] = 0.0   # fill below
    qa[0, 1] = 0.4
    qa[0, 2] = 0.5   # exactly the threshold: excluded (qa_value > 0.5)
    qa[0, 3] = 0.51
    xch4[0, 0] = np.nan
    return sw, times, xch4, qa


def write_tiny_ch4(path: Path, *, with_qa=True, with_bounds=True, with_bias_corrected=True, orbit=29781,
                   legacy_time=False, destriped=False) -> Path:
    sw, times, xch4, qa = tiny_s5p_arrays()
    cols = {"methane_mixing_ratio": xch4 - 5.0, "methane_mixing_ratio_precision": np.full(xch4.shape, 7.5)}
    if with_bias_corrected:
        cols["methane_mixing_ratio_bias_corrected"] = xch4
    if destriped:
        cols["methane_mixing_ratio_bias_corrected_destriped"] = xch4 - 1.0
    surface = np.zeros(xch4.shape, "u1")
    surface[5, 4] = 1  # water
    surface[5, 3] = 3  # coast
    ak = np.tile(np.linspace(0.5, 1.0, 12, dtype="f4"), xch4.shape + (1,))
    write_s5p_l2(path, "CH4", lat=sw.lat, lon=sw.lon, lat_bounds=sw.lat_bounds if with_bounds else None,
                 lon_bounds=sw.lon_bounds if with_bounds else None, scanline_time=times, columns=cols,
                 qa_value=qa if with_qa else None, orbit=orbit, surface_classification=surface,
                 averaging_kernel=ak)
    if legacy_time:  # processors 1.x: delta_time units "milliseconds" relative to PRODUCT/time
        import netCDF4

        with netCDF4.Dataset(path, "a") as nc:
            nc["PRODUCT/delta_time"].units = "milliseconds"
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def ch4_file(tiny_dir) -> Path:
    name = s5p_filename("CH4", np.datetime64("2023-07-15T04:44:07"), np.datetime64("2023-07-15T06:25:17"), 29781,
                        "020500", np.datetime64("2023-07-17T05:30:12"))
    return write_tiny_ch4(tiny_dir / name)


@pytest.fixture(scope="session")
def co_file(tiny_dir) -> Path:
    sw, times, _, qa = tiny_s5p_arrays()
    col = np.full(sw.lat.shape, 0.03)
    col[1, 1] = np.nan
    name = s5p_filename("CO", np.datetime64("2023-07-15T04:44:07"), np.datetime64("2023-07-15T06:25:17"), 29781,
                        "020500", np.datetime64("2023-07-17T04:12:40"))
    return write_s5p_l2(tiny_dir / name, "CO", lat=sw.lat, lon=sw.lon, lat_bounds=sw.lat_bounds,
                        lon_bounds=sw.lon_bounds, scanline_time=times,
                        columns={"carbonmonoxide_total_column": col,
                                 "carbonmonoxide_total_column_precision": np.full(col.shape, 0.001),
                                 "carbonmonoxide_total_column_corrected": col + 0.001},
                        qa_value=qa, orbit=29781)


@pytest.fixture(scope="session")
def blended_file(tiny_dir) -> Path:
    sw, times, xch4, _ = tiny_s5p_arrays()
    n = 8
    t = np.repeat(times, sw.lat.shape[1])[:n]
    return write_s5p_blended(
        tiny_dir / "S5P_BLND_L2__CH4____20230715T044407_20230715T062517_29781_03_020500_20231101T120000.nc",
        lat=sw.lat.ravel()[:n], lon=sw.lon.ravel()[:n], lat_bounds=sw.lat_bounds.reshape(-1, 4)[:n],
        lon_bounds=sw.lon_bounds.reshape(-1, 4)[:n], time=t, xch4_blended=np.arange(n) + 1880.0,
        xch4_bias_corrected=np.arange(n) + 1890.0, precision=np.full(n, 6.0), qa_value=np.ones(n))


def _lite(path: Path, mission: str, n_frames: int = 3) -> Path:
    tr = oco2_track(111.6, 40.3, n_frames=n_frames)
    n = tr.lon.size
    time = np.datetime64("2023-07-15T06:10:00.000", "ms") + (tr.frame * 333).astype("timedelta64[ms]")
    xco2 = 418.0 + np.arange(n) * 0.1
    xco2[2] = np.nan  # written as -999999
    qf = np.zeros(n, "i1")
    qf[3] = 1
    sid = 2023071506100000 + np.arange(n)
    return write_lite(path, mission, sounding_id=sid, time=time, lat=tr.lat, lon=tr.lon, xco2=xco2,
                      xco2_uncertainty=np.full(n, 0.5), quality_flag=qf, vertex_lat=tr.vertex_lat,
                      vertex_lon=tr.vertex_lon, footprint=tr.footprint, operation_mode=np.zeros(n, "i1"),
                      orbit=np.full(n, 47962, "i4"), land_fraction=np.full(n, 100.0), psurf=np.full(n, 880.0))


@pytest.fixture(scope="session")
def oco2_file(tiny_dir) -> Path:
    return _lite(tiny_dir / "oco2_LtCO2_230715_B11100Ar_230802141516s.nc4", "OCO-2")


@pytest.fixture(scope="session")
def oco3_file(tiny_dir) -> Path:
    return _lite(tiny_dir / "oco3_LtCO2_230715_B10400Br_230802141516s.nc4", "OCO-3")


@pytest.fixture(scope="session")
def acos_file(tiny_dir) -> Path:
    return _lite(tiny_dir / "acos_LtCO2_230715_v209209_B9212A_230802141516s.nc4", "GOSAT")


@pytest.fixture(scope="session")
def cci_file(tiny_dir) -> Path:
    n = 6
    lat = np.linspace(35, 40, n).astype("f4")
    lon = np.linspace(110, 115, n).astype("f4")
    time = np.datetime64("2023-07-15T04:00:00", "ms") + (np.arange(n) * 60_000).astype("timedelta64[ms]")
    xch4 = np.array([1900, 1910, np.nan, 1930, 1940, 1950], "f4")
    qf = np.array([0, 0, 1, 1, 0, 0], "i1")
    return write_esacci_ch4(tiny_dir / "ESACCI-GHG-L2-CH4-GOSAT-OCPR-20230715-fv9.0.nc", lat=lat, lon=lon,
                            time=time, xch4=xch4, xch4_uncertainty=np.full(n, 12.0, "f4"), quality_flag=qf,
                            day="20230715")
