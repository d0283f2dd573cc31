# SPDX-License-Identifier: Apache-2.0
"""Readers against the real mission files in ../shared/data, with facts read from the files."""

from __future__ import annotations

import numpy as np
import pytest

import eo_pipeline as eo
from eo_pipeline.errors import MissingVariableError, QualityWarning, UnknownProductError
from eo_pipeline.schema import validate

from .conftest import raise_if_dask_computes, shared_file

pytestmark = pytest.mark.realdata

S5P_10X10 = "s5p/S5P_OFFL_L2__CH4____20231019T192749_20231019T210918_31176_03_020500_20231021T113213.pystilt-10x10.nc"
S5P_SUB = "s5p/S5P_OFFL_L2__CH4____20190311T101655_20190311T115825_07293_01_010202_20190317T121015.SUB.nc4"
S5P_ORBIT = "s5p/S5P_OFFL_L2__CH4____20190319T110835_20190319T125006_07407_01_010202_20190325T125810.fullorbit-varsubset.nc4"
S5P_META_CH4 = "s5p/S5P_OFFL_L2__CH4____20200303T013547_20200303T031717_12367_01_010302_20200306T053811.metadata-only.nc"
S5P_META_CO = "s5p/S5P_OFFL_L2__CO_____20200303T013547_20200303T031717_12367_01_010302_20200306T032410.metadata-only.nc"
S5P_META_NO2 = "s5p/S5P_OFFL_L2__NO2____20200303T013547_20200303T031717_12367_01_010302_20200306T053815.metadata-only.nc"
GOSAT = "gosat/ESACCI-GHG-L2-CH4-GOSAT-OCPR-20120101-fv7.2.nc"


def test_s5p_10x10_cut():
    with raise_if_dask_computes():
        ds = eo.open_product(shared_file(S5P_10X10))
        validate(ds)
    s = eo.summarize(ds)
    assert s["n_total"] == 100
    assert s["n_valid"] == 36  # 40 retrieved pixels, 4 of them with qa_value 0.4
    assert eo.summarize(eo.open_product(shared_file(S5P_10X10), qa_threshold=0))["n_valid"] == 40
    assert s["min"] == pytest.approx(1889.6956, abs=1e-3) and s["max"] == pytest.approx(1916.8306, abs=1e-3)
    assert s["time_start"] == "2023-10-19T20:31:41Z" and s["time_end"] == "2023-10-19T20:31:46Z"
    assert ds.attrs["orbit"] == 31176 and ds.attrs["processor_version"] == "2.5.0"
    assert ds.attrs["time_coverage_start"] == "2023-10-19T19:49:23Z"
    # the raw column of the 40 retrieved pixels spans 1897-1928 ppb (MANIFEST)
    raw = eo.open_product(shared_file(S5P_10X10), variant="uncorrected", qa_threshold=0)
    vals = raw.xch4.values[raw.valid.values]
    assert vals.size == 40 and 1896 < vals.min() < 1897.5 and 1927 < vals.max() < 1928
    assert ds.latitude_bounds.shape == (10, 10, 4)
    lat, lb = ds.latitude.values, ds.latitude_bounds.values
    assert np.all((lb.min(axis=-1) <= lat) & (lat <= lb.max(axis=-1)))


def test_s5p_10x10_averaging_kernel_and_surface():
    ds = eo.open_product(shared_file(S5P_10X10), averaging_kernel=True, surface_classification=True)
    assert ds.xch4_averaging_kernel.shape == (10, 10, 12)
    assert ds.surface_classification.values[0, 0] == 70
    land = eo.open_product(shared_file(S5P_10X10), drop_water=True)
    assert int(land.valid.sum()) <= 36


def test_s5p_subset_all_fail_qa():
    ds = eo.open_product(shared_file(S5P_SUB))
    with pytest.warns(QualityWarning, match="no sounding passes"):
        s = eo.summarize(ds)
    assert s["n_total"] == 293 * 25 and s["n_valid"] == 0 and s["bbox"] is None and s["mean"] is None
    assert eo.summarize(eo.open_product(shared_file(S5P_SUB), qa_threshold=0))["n_valid"] == 3


def test_s5p_whole_orbit_without_qa_and_corners():
    with pytest.warns(QualityWarning):
        with raise_if_dask_computes():
            ds = eo.open_product(shared_file(S5P_ORBIT))
    assert ds.xch4.shape == (3245, 215)
    assert "latitude_bounds" not in ds
    s = eo.summarize(ds)
    assert s["n_valid"] == 52210
    assert s["time_start"] >= "2019-03-19T11:30:10Z" and s["time_end"] <= "2019-03-19T12:28:34Z"
    assert -90 <= s["bbox"][1] < s["bbox"][3] <= 90


def test_metadata_only_files_name_the_missing_variables():
    with pytest.raises(MissingVariableError, match="PRODUCT/methane_mixing_ratio_bias_corrected"):
        eo.open_product(shared_file(S5P_META_CH4))
    with pytest.raises(MissingVariableError, match="PRODUCT/carbonmonoxide_total_column"):
        eo.open_product(shared_file(S5P_META_CO))


def test_no2_is_an_unknown_product():
    with pytest.raises(UnknownProductError) as err:
        eo.open_product(shared_file(S5P_META_NO2))
    assert "s5p_ch4" in str(err.value) and "esacci_ghg_l2" in str(err.value) and "NO2" in str(err.value)


def test_gosat_cci_day():
    with raise_if_dask_computes():
        ds = eo.open_product(shared_file(GOSAT))
    s = eo.summarize(ds)
    assert s["n_total"] == 2417
    assert s["n_valid"] == 1053  # the file's own total_good_retrievals attribute
    assert s["min"] == pytest.approx(1692.7454, abs=1e-3) and s["max"] == pytest.approx(1875.166, abs=1e-3)
    assert s["time_start"] == "2012-01-01T00:14:18Z"
    assert ds.attrs["platform"] == "GOSAT" and ds.attrs["instrument"] == "TANSO-FTS"
    all_ = eo.summarize(eo.open_product(shared_file(GOSAT), qa_threshold=0))
    assert all_["n_valid"] == 2417 - 5  # five soundings hold the undeclared fill -9999.99


def test_grid_command_writes_the_whole_orbit_as_the_python_call_computes_it(tmp_path):
    """The command grids into 2048-cell blocks (it only writes); the call returns one block: same cells, same values.

    Run as users run it (a whole process, through the console script's entry point), on
    the real whole orbit onto global_0p05; each band read back from the COG equals the
    dense map of ``grid_soundings(...).compute()``, bit for bit, NaN where it is NaN
    (count and weight also read nodata in the stored-as-empty tiles, where the map holds 0).
    """
    import subprocess
    import sys
    import warnings

    import rasterio

    orbit = shared_file(S5P_ORBIT)
    out = tmp_path / "orbit.tif"
    proc = subprocess.run([sys.executable, "-m", "eo_pipeline.cli", "grid", str(orbit), "--grid", "global_0p05",
                           "-o", str(out), "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = eo.grid_soundings([eo.open_product(orbit)], "global_0p05", statistics=["mean", "count", "weight"])
    assert ref.xch4_mean.data.chunksize == ref.xch4_mean.shape  # the call: one block
    ref = ref.compute()
    with rasterio.open(out) as src:
        assert [src.descriptions[k] for k in range(3)] == ["xch4_mean", "xch4_count", "xch4_weight"]
        for band, name in enumerate(("xch4_mean", "xch4_count", "xch4_weight"), start=1):
            got = src.read(band)
            want = ref[name].values.astype(np.float32)
            if name != "xch4_mean":
                want = np.where(want > 0, want, np.nan)
                got = np.where(got > 0, got, np.nan)
            np.testing.assert_array_equal(got, want, err_msg=name)
        assert int(np.nansum(src.read(2))) == int(ref.xch4_count.sum())
