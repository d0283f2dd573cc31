# SPDX-License-Identifier: Apache-2.0
"""Readers on tiny files written in the real layouts, with hand-computed expectations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import eo_pipeline as eo
from eo_pipeline.errors import MissingVariableError, QualityWarning, ReaderOptionError
from eo_pipeline.readers import list_readers, register_reader
from eo_pipeline.readers._netcdf import parse_time_units
from eo_pipeline.schema import CORNER_DIM, SWATH_DIMS, validate

from .conftest import T0, raise_if_dask_computes, tiny_s5p_arrays, write_tiny_ch4


def test_every_builtin_reader_is_registered():
    assert set(list_readers()) >= {"s5p_ch4", "s5p_co", "s5p_blended_ch4", "oco2_lite", "oco3_lite", "acos_lite",
                                   "esacci_ghg_l2"}


@pytest.mark.parametrize(
    "fixture, reader, species, dims",
    [
        ("ch4_file", "s5p_ch4", "xch4", SWATH_DIMS),
        ("co_file", "s5p_co", "xco", SWATH_DIMS),
        ("blended_file", "s5p_blended_ch4", "xch4", ("sounding",)),
        ("oco2_file", "oco2_lite", "xco2", ("sounding",)),
        ("oco3_file", "oco3_lite", "xco2", ("sounding",)),
        ("acos_file", "acos_lite", "xco2", ("sounding",)),
        ("cci_file", "esacci_ghg_l2", "xch4", ("sounding",)),
    ],
)
def test_detection_schema_and_laziness(request, fixture, reader, species, dims):
    path = request.getfixturevalue(fixture)
    with raise_if_dask_computes():
        ds = eo.open_product(path)
        info = validate(ds)
    assert ds.attrs["reader"] == reader
    assert info.name == species
    assert ds[species].dims == dims
    for name in (species, f"{species}_uncertainty", "valid", "latitude", "longitude", "time"):
        assert ds[name].chunks is not None, f"{name} is not dask-backed"
    assert ds[species].attrs["units"] == {"xch4": "ppb", "xco2": "ppm", "xco": "mol m-2"}[species]
    assert ds["valid"].dtype == bool
    assert np.issubdtype(ds["time"].dtype, np.datetime64)
    for key in ("product", "platform", "instrument", "species", "processor_version", "orbit",
                "time_coverage_start", "time_coverage_end", "source_file"):
        assert key in ds.attrs
    assert ds.attrs["synthetic"] == "true"


def test_detection_ignores_file_names(tmp_path, oco2_file, ch4_file):
    import shutil

    renamed = tmp_path / "whatever.bin"
    shutil.copy(oco2_file, renamed)
    assert eo.open_product(renamed).attrs["reader"] == "oco2_lite"
    renamed2 = tmp_path / "oco2_LtCO2_looks_like_oco.nc4"
    shutil.copy(ch4_file, renamed2)
    assert eo.open_product(renamed2).attrs["reader"] == "s5p_ch4"


def test_s5p_ch4_values_fill_and_qa(ch4_file):
    _, times, xch4, _ = tiny_s5p_arrays()
    ds = eo.open_product(ch4_file)
    np.testing.assert_allclose(ds.xch4.values, xch4.astype("f4"))  # bias-corrected by default
    assert np.isnan(ds.xch4.values[0, 0])  # 9.96921e36 fill -> NaN
    np.testing.assert_allclose(ds.xch4_uncertainty.values, 7.5)
    valid = ds.valid.values
    assert valid.sum() == 30 - 3  # fill, qa 0.4, and qa 0.5 (not > 0.5)
    assert not valid[0, 2] and valid[0, 3]
    assert ds.attrs["qa_threshold"] == 0.5 and ds.attrs["qa_rule"] == "qa_value > 0.5"
    np.testing.assert_array_equal(ds.time.values[:, 0], times.astype("datetime64[ns]"))
    assert (ds.time.values == ds.time.values[:, :1]).all()  # scanline time broadcast
    assert ds.attrs["orbit"] == 29781 and ds.attrs["processor_version"] == "2.5.0"
    assert ds.attrs["column_variable"] == "PRODUCT/methane_mixing_ratio_bias_corrected"


@pytest.mark.parametrize("threshold, expected", [(0, 29), (0.4, 28), (0.5, 27), (0.75, 26), (1.0, 0)])
def test_s5p_qa_threshold_is_on_the_0_1_scale(ch4_file, threshold, expected):
    ds = eo.open_product(ch4_file, qa_threshold=threshold)
    assert int(ds.valid.sum()) == expected


def test_s5p_qa_threshold_rejects_the_raw_scale(ch4_file):
    with pytest.raises(ReaderOptionError, match="not 50"):
        eo.open_product(ch4_file, qa_threshold=50)


def test_s5p_variants_and_options(ch4_file, tmp_path):
    _, _, xch4, _ = tiny_s5p_arrays()
    raw = eo.open_product(ch4_file, variant="uncorrected")
    np.testing.assert_allclose(raw.xch4.values, (xch4 - 5).astype("f4"))
    with pytest.raises(MissingVariableError, match="destriped"):
        eo.open_product(ch4_file, variant="bias_corrected_destriped")
    d = write_tiny_ch4(tmp_path / "S5P_OFFL_L2__CH4____x.nc", destriped=True)
    np.testing.assert_allclose(eo.open_product(d, variant="bias_corrected_destriped").xch4.values,
                               (xch4 - 1).astype("f4"))
    with pytest.raises(ReaderOptionError, match="its options are"):
        eo.open_product(ch4_file, varient="uncorrected")


def test_s5p_surface_classification_and_water(ch4_file):
    ds = eo.open_product(ch4_file, surface_classification=True)
    assert ds.surface_classification.values[5, 4] == 1
    dry = eo.open_product(ch4_file, drop_water=True)
    assert int(dry.valid.sum()) == 27 - 1  # the water pixel goes, the coast pixel stays
    assert not dry.valid.values[5, 4] and dry.valid.values[5, 3]


def test_s5p_averaging_kernel_is_lazy(ch4_file):
    with raise_if_dask_computes():
        ds = eo.open_product(ch4_file, averaging_kernel=True)
    ak = ds.xch4_averaging_kernel
    assert ak.dims == (*SWATH_DIMS, "layer") and ak.shape == (6, 5, 12)
    assert ak.chunks is not None
    np.testing.assert_allclose(ak.values[2, 3], np.linspace(0.5, 1.0, 12), rtol=1e-6)


def test_s5p_corners_in_documented_order(ch4_file):
    sw, _, _, _ = tiny_s5p_arrays()
    ds = eo.open_product(ch4_file)
    assert ds.latitude_bounds.dims == (*SWATH_DIMS, CORNER_DIM)
    np.testing.assert_allclose(ds.longitude_bounds.values, sw.lon_bounds.astype("f4"))
    # corner 1 follows corner 0 along increasing ground_pixel: it is corner 0 of the next pixel
    lb = ds.longitude_bounds.values
    np.testing.assert_allclose(lb[:, :-1, 1], lb[:, 1:, 0])
    np.testing.assert_allclose(lb[:-1, :, 3], lb[1:, :, 0])


def test_s5p_legacy_delta_time_units(tmp_path):
    p = write_tiny_ch4(tmp_path / "S5P_OFFL_L2__CH4____legacy.nc", legacy_time=True)
    ds = eo.open_product(p)
    assert ds.time.values[0, 0] == T0.astype("datetime64[ns]")


def test_subset_without_qa_warns_and_counts_non_fill(tmp_path):
    p = write_tiny_ch4(tmp_path / "S5P_OFFL_L2__CH4____noqa.nc", with_qa=False, with_bounds=False,
                       with_bias_corrected=False)
    with pytest.warns(QualityWarning) as rec:
        ds = eo.open_product(p)
    messages = " ".join(str(w.message) for w in rec)
    assert "qa_value" in messages and "uncorrected" in messages
    assert int(ds.valid.sum()) == 29  # every non-fill pixel
    assert "latitude_bounds" not in ds
    with pytest.raises(MissingVariableError, match="qa_value"):
        eo.open_product(p, qa_threshold=0.5, variant="uncorrected")


def test_s5p_co(co_file):
    ds = eo.open_product(co_file)
    assert ds.attrs["column_variable"] == "PRODUCT/carbonmonoxide_total_column_corrected"
    assert ds.xco.attrs["units"] == "mol m-2"
    np.testing.assert_allclose(np.nanmax(ds.xco.values), 0.031, rtol=1e-6)
    assert int(ds.valid.sum()) == 30 - 3 - 1  # qa like CH4, plus one fill pixel
    un = eo.open_product(co_file, variant="uncorrected")
    np.testing.assert_allclose(np.nanmax(un.xco.values), 0.03, rtol=1e-6)


def test_blended(blended_file):
    ds = eo.open_product(blended_file)
    np.testing.assert_allclose(ds.xch4.values, np.arange(8) + 1880.0)
    assert int(ds.valid.sum()) == 8
    assert ds.attrs["orbit"] == 29781 and ds.attrs["processor_version"] == "020500"
    assert ds.time.values[0] == T0.astype("datetime64[ns]")
    assert ds.attrs["time_coverage_start"] == "2023-07-15T05:30:00Z"


@pytest.mark.parametrize("fixture, has_vertices, instrument",
                         [("oco2_file", True, "OCO-2"), ("oco3_file", True, "OCO-3"), ("acos_file", False, "TANSO-FTS")])
def test_lite_files(request, fixture, has_vertices, instrument):
    ds = eo.open_product(request.getfixturevalue(fixture))
    assert ds.attrs["instrument"] == instrument
    assert ("latitude_bounds" in ds) == has_vertices
    assert np.isnan(ds.xco2.values[2])  # -999999 fill
    np.testing.assert_allclose(ds.xco2.values[0], 418.0)
    assert int(ds.valid.sum()) == 24 - 2  # fill and quality flag 1
    assert int(eo.open_product(request.getfixturevalue(fixture), qa_threshold=0).valid.sum()) == 23
    assert ds.footprint.values[:8].tolist() == list(range(1, 9))
    assert ds.surface_pressure.attrs["units"] == "hPa"
    assert ds.attrs["time_coverage_start"] == "2023-07-15T06:10:00Z"
    assert ds.attrs["time_coverage_end"] == "2023-07-15T06:10:00Z"  # 3 frames, 0.67 s


def test_cci(cci_file):
    ds = eo.open_product(cci_file)
    assert ds.attrs["reader"] == "esacci_ghg_l2"
    assert np.isnan(ds.xch4.values[2])  # -9999.99 written without a _FillValue attribute
    assert ds.valid.values.tolist() == [True, True, False, False, True, True]
    assert int(eo.open_product(cci_file, qa_threshold=0).valid.sum()) == 5
    assert ds.attrs["time_coverage_start"] == "2023-07-15T00:00:00Z"
    assert ds.attrs["processor_version"] == "v9.0"


def test_time_units_parser():
    assert parse_time_units("milliseconds since 2023-10-19 00:00:00") == (1_000_000, np.datetime64("2023-10-19", "ns"))
    assert parse_time_units("milliseconds") == (1_000_000, None)
    assert parse_time_units("seconds since 1970-01-01T00:00:00Z")[0] == 1_000_000_000
    with pytest.raises(ValueError):
        parse_time_units("fortnights since 1066-10-14")


def test_values_compute_under_threads_processes_equal(ch4_file):
    ds = eo.open_product(ch4_file)
    a = ds.xch4.compute(scheduler="threads").values
    b = ds.xch4.compute(scheduler="processes").values
    np.testing.assert_array_equal(a, b)


def test_third_party_reader_registration(ch4_file):
    from eo_pipeline.readers.s5p import S5PCH4Reader

    class Custom(S5PCH4Reader):
        name = "custom_ch4"

    register_reader("custom_ch4", Custom)
    ds = eo.open_product(ch4_file, reader="custom_ch4")
    assert ds.attrs["reader"] == "custom_ch4"

    class Sloppy(S5PCH4Reader):
        def open(self, nc, **kwargs):  # noqa: D102
            return super().open(nc, **kwargs)

    with pytest.raises(TypeError, match="keyword-only"):
        register_reader("sloppy", Sloppy)
    with pytest.raises(ValueError, match="built-in"):
        register_reader("s5p_ch4", Custom)


def test_datasets_are_xarray_and_pickle(ch4_file):
    import pickle

    ds = eo.open_product(ch4_file)
    assert isinstance(ds, xr.Dataset)
    back = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(back.valid.values, ds.valid.values)


def test_no_warning_on_complete_files(ch4_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eo.open_product(ch4_file)


def test_entry_point_readers_are_discovered(monkeypatch, ch4_file):
    from importlib.metadata import EntryPoint

    import eo_pipeline.readers as registry

    ep = EntryPoint(name="plugin_ch4", value="eo_pipeline.readers.s5p:S5PCH4Reader", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    registry._entry_point_readers.cache_clear()
    try:
        assert "plugin_ch4" in registry.list_readers()
        assert eo.open_product(ch4_file, reader="plugin_ch4").attrs["reader"] == "s5p_ch4"
    finally:
        registry._entry_point_readers.cache_clear()


def _h5netcdf_view(path):
    """Every group's and variable's attributes as h5netcdf presents them (the reference)."""
    import h5netcdf

    from eo_pipeline.readers._netcdf import _py

    out = {}
    with h5netcdf.File(path, "r", decode_vlen_strings=False) as f:
        def walk(g, where):
            out[where] = {str(k): _py(v) for k, v in g.attrs.items()}
            for k, v in g.variables.items():
                out[f"{where}/{k}".strip("/")] = {str(a): _py(b) for a, b in v.attrs.items()}
            for k, sub in g.groups.items():
                walk(sub, f"{where}/{k}".strip("/"))
        walk(f, "")
    return out


def test_attributes_read_once_are_those_h5netcdf_shows(tmp_path, ch4_file, oco2_file):
    """NCFile reads attributes through h5py once each; the values are h5netcdf's, on awkward ones too."""
    import h5py

    from eo_pipeline.readers._netcdf import NCFile

    from .conftest import SAMPLES

    odd = tmp_path / "odd_attrs.nc"
    with h5py.File(odd, "w") as f:
        v = f.create_dataset("x", data=np.arange(3.0))
        v.attrs["fixed"] = np.bytes_("ppb")  # fixed-length string
        v.attrs["fixed_array"] = np.array([b"a", b"bc"], dtype="S2")
        v.attrs["char"] = np.array([b"a"], dtype="S1")  # netCDF char: stays bytes, then str
        v.attrs["vlen"] = "parts per billion"
        v.attrs["vlen_array"] = np.array(["u", "vw"], dtype=h5py.string_dtype())
        v.attrs["one"] = np.array([1.5], dtype="f4")
        v.attrs["many"] = np.array([1, 2, 3], dtype="i2")
        v.attrs["empty"] = h5py.Empty("f4")
        v.attrs["empty_string"] = h5py.Empty(h5py.string_dtype("ascii", 1))
        v.attrs["utf8"] = np.array("µg".encode(), dtype=h5py.string_dtype("utf-8", 3))
        f.attrs["title"] = "odd"
        f.attrs["_NCProperties"] = "version=2"  # netCDF bookkeeping: hidden
    files = [odd, ch4_file, oco2_file, *sorted(SAMPLES.glob("*.nc*"))]
    for path in files:
        ref = _h5netcdf_view(path)
        with NCFile(path) as nc:
            for where, attrs in ref.items():
                obj = nc._h5[where] if where else nc._h5
                assert repr(nc._read_attrs(obj, where)) == repr(attrs), (path.name, where)
    assert "_NCProperties" not in _h5netcdf_view(odd)[""]
