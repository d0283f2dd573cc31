# SPDX-License-Identifier: Apache-2.0
"""Deflated chunks read outside the HDF5 lock give exactly what h5py gives."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eo_pipeline as eo
from eo_pipeline.errors import CorruptFileError
from eo_pipeline.readers._netcdf import read_chunks_direct

from .conftest import SAMPLES, SHARED


def _all_variables(path):
    out = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim else None)
    return out


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.nc*")) + sorted(SHARED.glob("s5p/*.nc*"))
                         + sorted(SHARED.glob("gosat/*.nc")), ids=lambda p: p.name[:40])
def test_every_variable_reads_the_same_as_h5py(path):
    read = 0
    with h5py.File(path) as f:
        for name in _all_variables(path):
            d = f[name]
            if d.dtype.kind not in "biuf":
                continue
            key = tuple(slice(0, n) for n in d.shape)
            got = read_chunks_direct(d, key)
            if got is None:
                continue
            read += 1
            np.testing.assert_array_equal(got, d[key], err_msg=name)
            assert got.dtype == d.dtype
    assert read > 0 or "metadata-only" in path.name  # those hold dimension scales only


def _make(tmp_path, *, shuffle, chunks, shape=(37, 23, 4), dtype="f4", fill=None):
    path = tmp_path / "x.h5"
    rng = np.random.default_rng(5)
    data = rng.normal(size=shape).astype(dtype) if dtype.startswith("f") else rng.integers(0, 100, shape).astype(dtype)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("v", shape=shape, dtype=dtype, chunks=chunks, compression="gzip", compression_opts=4,
                             shuffle=shuffle, fillvalue=fill)
        d[: shape[0] // 2] = data[: shape[0] // 2]  # the later chunks are never written: fill value
    return path


@settings(max_examples=40, deadline=None)
@given(shuffle=st.booleans(), dtype=st.sampled_from(["f4", "f8", "i2", "u1", "i8"]),
       c0=st.integers(1, 37), c1=st.integers(1, 23), a0=st.integers(0, 36), b0=st.integers(1, 37),
       a1=st.integers(0, 22), b1=st.integers(1, 23))
def test_random_slices_of_random_chunkings(tmp_path_factory, shuffle, dtype, c0, c1, a0, b0, a1, b1):
    tmp = tmp_path_factory.mktemp("direct")
    path = _make(tmp, shuffle=shuffle, chunks=(c0, c1, 4), dtype=dtype, fill=7 if dtype[0] in "iu" else -999.0)
    key = (slice(min(a0, b0), max(a0, b0)), slice(min(a1, b1), max(a1, b1)), slice(0, 4))
    with h5py.File(path) as f:
        np.testing.assert_array_equal(read_chunks_direct(f["v"], key), f["v"][key])


def test_other_filters_and_fancy_keys_fall_back_to_h5py(tmp_path):
    path = tmp_path / "y.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("checksummed", data=np.arange(100.0), chunks=(10,), compression="gzip", fletcher32=True)
        f.create_dataset("plain", data=np.arange(100.0))
        f.create_dataset("deflated", data=np.arange(100.0), chunks=(10,), compression="gzip")
    with h5py.File(path) as f:
        assert read_chunks_direct(f["checksummed"], (slice(0, 100),)) is None
        assert read_chunks_direct(f["plain"], (slice(0, 100),)) is None
        assert read_chunks_direct(f["deflated"], (slice(0, 100, 2),)) is None
        assert read_chunks_direct(f["deflated"], (np.array([1, 5]),)) is None


def test_a_damaged_chunk_is_a_clean_error(tmp_path, ch4_file):
    import shutil

    bad = tmp_path / ch4_file.name
    shutil.copy(ch4_file, bad)
    with h5py.File(bad) as f:
        info = f["PRODUCT/latitude"].id.get_chunk_info(0)
    raw = bytearray(bad.read_bytes())
    for k in range(info.byte_offset + 2, info.byte_offset + min(info.size, 40)):
        raw[k] ^= 0xFF
    bad.write_bytes(bytes(raw))
    ds = eo.open_product(bad)
    with pytest.raises(CorruptFileError, match=str(bad.name)):
        ds.latitude.values
