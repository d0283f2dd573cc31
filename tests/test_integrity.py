# SPDX-License-Identifier: Apache-2.0
"""verify_product, the file-handle cache, duplicate detection and the robustness kernels."""

from __future__ import annotations

import gc
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import eo_pipeline as eo
from eo_pipeline.errors import (
    CorruptFileError,
    EmptyFileError,
    FileChangedError,
    MissingVariableError,
    TruncatedFileError,
    VariableLayoutError,
)
from eo_pipeline.footprints import drop_degenerate, polygons_in_grid
from eo_pipeline.grid import GridSpec
from eo_pipeline.readers import close_files, product_identity, verify_product
from eo_pipeline.readers._netcdf import HANDLES, NCFile, decode_float, seconds_to_datetime64
from eo_pipeline.readers.base import clean_latitude, clean_longitude
from eo_pipeline.readers.s5p import _parse_utc_strings

from .damage import GEO, delete, locate, open_hdf5_files, record_unraisable, replace_variable

_unraisable = pytest.fixture(name="unraisable")(record_unraisable)


def damage_chunk(src: Path, dst: Path, variable: str) -> Path:
    """Copy ``src`` with the zlib header of ``variable``'s first chunk destroyed (inflate must fail)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r") as f:
        info = f[variable].id.get_chunk_info(0)
    data = bytearray(dst.read_bytes())
    data[info.byte_offset:info.byte_offset + 2] = b"\xff\xff"
    dst.write_bytes(bytes(data))
    return dst


# ----------------------------------------------------------------------------- verify_product
@pytest.mark.parametrize("fixture", ["ch4_file", "co_file", "blended_file", "oco2_file", "oco3_file", "acos_file",
                                     "cci_file"])
def test_verify_product_passes_sound_files(request, fixture):
    assert verify_product(eo.open_product(request.getfixturevalue(fixture))) is None


def test_verify_product_finds_a_damaged_chunk_that_open_does_not_see(tmp_path, ch4_file):
    bad = damage_chunk(ch4_file, tmp_path / ch4_file.name, f"{GEO}/latitude_bounds")
    ds = eo.open_product(bad)  # metadata only: fine
    eo.summarize(ds)  # the summary never reads the corners
    with pytest.raises(CorruptFileError, match=f"{bad.name}.*latitude_bounds"):
        verify_product(ds)
    cached = [key[0] for key in list(HANDLES._files)]
    assert str(bad.resolve()) not in cached, "a handle to the damaged file was kept"


def test_skip_mode_keeps_the_sound_files(tmp_path, ch4_file):
    """The on_error: skip pattern: verify each product, grid the rest."""
    bad = damage_chunk(ch4_file, tmp_path / "S5P_OFFL_L2__CH4____damaged.nc",
                       "PRODUCT/methane_mixing_ratio_bias_corrected")
    products, skipped = [], []
    for path in (ch4_file, bad):
        ds = eo.open_product(path)
        try:
            verify_product(ds)
        except CorruptFileError as exc:
            skipped.append(str(exc))
            continue
        products.append(ds)
    assert len(products) == 1 and len(skipped) == 1 and bad.name in skipped[0]
    l3 = eo.grid_soundings(products, GridSpec.from_bbox((110, 34, 114, 38), 0.1)).compute()
    assert int(l3.xch4_count.sum()) > 0


def test_verify_product_sees_a_file_rewritten_after_opening(tmp_path, oco2_file):
    path = tmp_path / oco2_file.name
    shutil.copy(oco2_file, path)
    ds = eo.open_product(path)
    with open(path, "ab") as fh:
        fh.write(b"\0" * 100)
    with pytest.raises(FileChangedError, match=path.name):
        verify_product(ds)


# ----------------------------------------------------------------------------- handles
def test_close_files_closes_the_cache_and_datasets_stay_usable(ch4_file, oco2_file):
    close_files()
    a, b = eo.open_product(ch4_file), eo.open_product(oco2_file)
    before = open_hdf5_files()
    a.xch4.values, b.xco2.values  # noqa: B018 - reads through the cache
    assert len(HANDLES) == 2 and open_hdf5_files() == before + 2
    close_files()
    assert len(HANDLES) == 0 and open_hdf5_files() == before
    np.testing.assert_array_equal(a.valid.values, eo.open_product(ch4_file).valid.values)
    close_files()


def test_failed_opens_leave_no_handle_and_print_nothing(tmp_path, cci_file, capfd, unraisable):
    layout = locate(cci_file)
    before = open_hdf5_files()
    for k, cut in enumerate((0, 20, layout.root_header + 24, layout.size - 1)):
        p = tmp_path / f"{k}-{cci_file.name}"
        p.write_bytes(cci_file.read_bytes()[:cut])
        with pytest.raises((EmptyFileError, CorruptFileError)):
            NCFile(p)
    flipped = bytearray(cci_file.read_bytes())
    flipped[layout.root_header + 2] ^= 0xFF
    p = tmp_path / f"flip-{cci_file.name}"
    p.write_bytes(bytes(flipped))
    with pytest.raises(CorruptFileError, match="damaged"):
        NCFile(p)
    gc.collect()
    assert open_hdf5_files() == before
    assert unraisable == [] and "Exception ignored" not in capfd.readouterr().err


def test_truncation_message_gives_both_sizes(tmp_path, oco2_file):
    p = tmp_path / oco2_file.name
    data = oco2_file.read_bytes()
    p.write_bytes(data[:-1])
    with pytest.raises(TruncatedFileError) as err:
        eo.open_product(p)
    assert f"it has {len(data) - 1} bytes" in str(err.value) and str(len(data)) in str(err.value)


def test_absent_variable_stays_missing_not_damaged(tmp_path, cci_file):
    p = tmp_path / cci_file.name
    shutil.copy(cci_file, p)
    with h5py.File(p, "r+") as f:
        delete(f, "xch4_uncertainty")
    with pytest.raises(MissingVariableError, match="lacks required variable.*xch4_uncertainty"):
        eo.open_product(p)


def test_wrong_dtype_of_a_flag_is_a_layout_error(tmp_path, ch4_file):
    p = tmp_path / ch4_file.name
    shutil.copy(ch4_file, p)
    with h5py.File(p, "r+") as f:
        sc = "PRODUCT/SUPPORT_DATA/INPUT_DATA/surface_classification"
        replace_variable(f, sc, f[sc][...].astype("f4"))
    with pytest.raises(VariableLayoutError, match="surface_classification.*floating point"):
        eo.open_product(p, drop_water=True)
    eo.open_product(p)  # not needed without drop_water


# ----------------------------------------------------------------------------- duplicates
def test_product_identity_ignores_the_name(tmp_path, oco2_file):
    copy = tmp_path / "renamed.nc4"
    shutil.copy(oco2_file, copy)
    a, b = product_identity(eo.open_product(oco2_file)), product_identity(eo.open_product(copy))
    assert a == b and a[0] == "oco2_lite"


# ----------------------------------------------------------------------------- kernels
def test_clean_latitude_and_longitude_by_hand():
    lat, n = clean_latitude(np.array([0.0, 90.0, -90.0, 90.5, -91.0, np.inf, np.nan], "f4"))
    assert n == 3
    np.testing.assert_array_equal(np.isnan(lat), [False, False, False, True, True, True, True])
    lon, n = clean_longitude(np.array([0.0, 180.0, 181.0, 359.5, 360.0, -190.0, -360.0, 361.0, -np.inf, np.nan]))
    assert n == 2
    np.testing.assert_allclose(lon[:7], [0.0, 180.0, -179.0, -0.5, 0.0, 170.0, 0.0])
    assert np.isnan(lon[7:]).all()


def test_decoding_kernels_survive_garbage():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning may escape
        out = decode_float(np.array([1e300, -1e300, 5.0]), 9.96921e36)
        assert np.isinf(out[:2]).all() and out[2] == 5
        assert decode_float(np.array([1, 2], "i2"), 9.96921e36).tolist() == [1.0, 2.0]  # unusable fill
        assert decode_float(np.array([1, 2], "i2"), "garbage").tolist() == [1.0, 2.0]
        t = seconds_to_datetime64(np.array([0, 2**62, -(2**62), 10], "i8"), np.datetime64("2010-01-01", "ns"), 10**9)
        assert np.isnat(t[1:3]).all() and t[3] == np.datetime64("2010-01-01T00:00:10", "ns")
        t = seconds_to_datetime64(np.array([1e300, np.inf, 1.5]), np.datetime64("1970-01-01", "ns"), 10**9)
        assert np.isnat(t[:2]).all() and t[2] == np.datetime64("1970-01-01T00:00:01.5", "ns")
    t = _parse_utc_strings(np.array([b"2023-07-15T05:30:00.000Z", b"2023-\xff7-15T05:30", b""], dtype=object))
    assert t[0] == np.datetime64("2023-07-15T05:30:00", "ns") and np.isnat(t[1:]).all()


def test_degenerate_and_bad_corner_footprints_are_counted():
    g = GridSpec.from_bbox((0, 0, 4, 4), 1.0)
    square = ([0.5, 2.5, 2.5, 0.5], [0.5, 0.5, 2.5, 2.5])
    lon = np.array([square[0], [1.0] * 4, [0.5, 1.0, 1.5, 2.0], [0.5, np.nan, 2.5, 0.5], square[0]])
    lat = np.array([square[1], [1.0] * 4, [0.5, 1.0, 1.5, 2.0], square[1], [0.5, 0.5, 95.0, 2.5]])
    px, py, nv, src, dropped = polygons_in_grid(lon, lat, g)
    assert src.tolist() == [0] and dropped == 4  # a point, a line, a NaN corner, a corner beyond 90 N
    cw_x, cw_y, cw_n, _, d = polygons_in_grid(np.array([square[0][::-1]]), np.array([square[1][::-1]]), g)
    k = int(nv[0])
    assert d == 0 and cw_n[0] == k
    assert set(zip(cw_x[0][:k], cw_y[0][:k], strict=True)) == set(zip(px[0][:k], py[0][:k], strict=True))
    px2, _, _, src2, lost = drop_degenerate(np.zeros((2, 4)), np.zeros((2, 4)), np.full(2, 4), np.array([7, 7]))
    assert lost == 1 and src2.size == 0 and px2.shape == (0, 4)
