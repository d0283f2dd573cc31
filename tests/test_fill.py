"""Maps whose empty cells cost nothing until written, and single-block maps handed out without a copy."""

from __future__ import annotations

import numpy as np
import pytest

import eo_pipeline as eo
from eo_pipeline import _fill
from eo_pipeline.gridding import without_result_copy

BIG = (1024, 8192 + 512)  # 34 MB of float32: above MIN_TEMPLATE_BYTES


def test_big_enough_for_the_template():
    assert BIG[0] * BIG[1] * 4 >= _fill.MIN_TEMPLATE_BYTES


@pytest.mark.parametrize("shape", [(3, 4), BIG])
@pytest.mark.parametrize(("dtype", "value"), [("f4", np.nan), ("f4", 0.0), ("i4", 0), ("f8", -9999.5), ("i2", 7),
                                              ("f4", -0.0)])
def test_filled_equals_full(shape, dtype, value):
    a = _fill.filled(shape, dtype, value)
    expected = np.full(shape, value, dtype)
    assert a.shape == expected.shape and a.dtype == expected.dtype
    assert a.flags.writeable and a.flags.c_contiguous
    assert a.tobytes() == expected.tobytes()  # bit for bit: NaN and -0.0 included


def test_writes_stay_in_their_array():
    _fill.release()
    a = _fill.filled(BIG, np.float32, np.nan)
    a[5, 7] = 1.0
    a[-1, -1] = 2.0
    b = _fill.filled(BIG, np.float32, np.nan)  # the same template, mapped again
    assert np.isnan(b).all()
    assert np.isnan(a).sum() == a.size - 2 and a[5, 7] == 1.0 and a[-1, -1] == 2.0
    smaller = _fill.filled((BIG[0] - 1, BIG[1]), np.float32, np.nan)  # a larger template serves a smaller array
    assert smaller.shape == (BIG[0] - 1, BIG[1]) and np.isnan(smaller).all()
    del a
    assert np.isnan(b).all()
    larger = _fill.filled((BIG[0] + 512, BIG[1]), np.float32, np.nan)  # and a larger one replaces it
    assert np.isnan(larger).all() and np.isnan(b).all()
    _fill.release()
    assert np.isnan(b).all() and np.isnan(larger).all()  # arrays outlive the released templates


def test_filled_pickles_as_plain_data():
    import pickle

    a = _fill.filled(BIG, np.float32, np.nan)
    a[1, 2] = 3.0
    b = pickle.loads(pickle.dumps(a))
    assert b.tobytes() == a.tobytes()


def _one_block_map(products):
    """A global_0p05 map: one block, so each statistic is one chunk of 104 MB."""
    ds = eo.grid_soundings(products, "global_0p05", statistics="all")
    assert all(v.data.npartitions == 1 for k, v in ds.data_vars.items() if v.ndim == 2)
    return ds


def test_single_block_map_without_the_copy_is_unchanged(ch4_file):
    ds = _one_block_map([eo.open_product(ch4_file)])
    plain = ds.copy(deep=True)  # deep copies are ordinary dask arrays: dask's copy is back
    got = ds.compute()
    ref = plain.compute()
    for name in ds.data_vars:
        assert got[name].dtype == ref[name].dtype
        np.testing.assert_array_equal(got[name].values, ref[name].values)
        assert got[name].values.flags.writeable, name
    assert int(got.xch4_count.sum()) > 0 and np.isfinite(got.xch4_mean.values).any()
    # every compute hands out arrays of its own: writing one leaves the next untouched
    got.xch4_mean.values[:] = 0.0
    got.xch4_count.values[:] = 5
    again = ds.compute()
    np.testing.assert_array_equal(again.xch4_mean.values, ref.xch4_mean.values)
    np.testing.assert_array_equal(again.xch4_count.values, ref.xch4_count.values)


def test_single_block_map_mixes_with_derived_variables(ch4_file):
    ds = _one_block_map([eo.open_product(ch4_file)])
    ds["twice"] = ds.xch4_mean * 2  # an ordinary dask array next to the map's own
    out = ds.compute()
    np.testing.assert_array_equal(out.twice.values, out.xch4_mean.values * 2)
    persisted = ds.persist()
    a, b = persisted.compute(), persisted.compute()
    a.xch4_mean.values[:] = 1.0  # persisted chunks are copied as dask always does
    assert np.isnan(b.xch4_mean.values).any()


def test_empty_block_is_handed_out_writable():
    from eo_pipeline.gridding import _fresh_result

    view = np.broadcast_to(np.float32(np.nan), BIG)  # finalize's empty block: no memory, read-only
    out = _fresh_result([[view]])
    assert out.flags.writeable and out.shape == BIG and np.isnan(out).all()
    zeros = _fresh_result([[np.broadcast_to(np.int32(0), (3, 4))]])
    assert zeros.flags.writeable and zeros.dtype == np.int32 and not zeros.any()
    frozen = np.arange(6.0).reshape(2, 3)
    frozen.flags.writeable = False
    thawed = _fresh_result([[frozen]])
    assert thawed.flags.writeable and thawed is not frozen
    np.testing.assert_array_equal(thawed, frozen)
    fresh = np.ones((2, 2))
    assert _fresh_result([[fresh]]) is fresh  # a task's own new array goes out as made
    blocks = [[np.zeros((1, 2)), np.ones((1, 2))]]
    np.testing.assert_array_equal(_fresh_result(blocks), [[0, 0, 1, 1]])  # several chunks: dask's concatenation


def test_without_result_copy_keeps_the_type():
    import dask.array as da

    a = without_result_copy(da.from_delayed(_delayed_fresh(), shape=(4, 5), dtype="f4"))
    assert type(a) is da.Array
    first, second = a.compute(), a.compute()
    assert first is not second and first.flags.writeable
    np.testing.assert_array_equal(first, np.arange(20, dtype="f4").reshape(4, 5))
    assert type((a + 1)) is da.Array and (a + 1).__dask_postcompute__()[0] is da.core.finalize


def _delayed_fresh():
    import dask

    return dask.delayed(lambda: np.arange(20, dtype="f4").reshape(4, 5), pure=False)()


def test_large_templates_live_while_their_arrays_do(monkeypatch):
    import gc

    _fill.release()
    monkeypatch.setattr(_fill, "KEEP_FRACTION", 0.0)  # as if the machine were small: nothing is kept
    a = _fill.filled(BIG, np.float32, np.nan)
    b = _fill.filled(BIG, np.float32, np.nan)
    (t,) = _fill._templates.values()
    assert t.live == 2 and not t.keep and not t.closed  # the second array shares the first one's template
    del a
    gc.collect()
    assert t.live == 1 and not t.closed
    del b
    gc.collect()
    assert t.closed and not _fill._templates  # its memory goes with the last array
    c = _fill.filled(BIG, np.float32, np.nan)
    assert np.isnan(c).all()


def test_a_large_single_map_is_one_block():
    from eo_pipeline.grid import named_grid
    from eo_pipeline.gridding import auto_chunk

    g = named_grid("global_0p01")
    assert auto_chunk(g) >= max(g.shape)  # gathered: one block, no concatenation
    assert auto_chunk(g, written=True) == 2048  # written: blocks freed one by one
    assert auto_chunk(g, periods=2) == 2048


def test_a_finalizer_inside_the_lock_does_not_deadlock(monkeypatch):
    import gc

    _fill.release()
    monkeypatch.setattr(_fill, "KEEP_FRACTION", 0.0)
    a = _fill.filled(BIG, np.float32, np.nan)
    (t,) = _fill._templates.values()
    cycle = [a]
    cycle.append(cycle)  # freed only by the garbage collector
    del a
    with _fill._lock:  # as if the collector ran while _mapped holds the lock
        del cycle
        gc.collect()
        assert t.closed  # the finalizer ran here, on this thread, without waiting
    b = _fill.filled(BIG, np.float32, np.nan)
    assert np.isnan(b).all()


@pytest.mark.parametrize("where", ["memfd_create", "posix_fallocate"])
def test_no_room_for_a_template_falls_back_to_a_filled_array(monkeypatch, where):
    import errno
    import os

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    _fill.release()
    monkeypatch.setattr(os, where, refuse)
    a = _fill.filled(BIG, np.float32, np.nan)
    assert a.flags.writeable and np.isnan(a).all() and not _fill._templates
    assert a.base is None  # np.full's own memory, not a mapping
