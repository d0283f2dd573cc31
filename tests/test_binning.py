# SPDX-License-Identifier: Apache-2.0
"""Point binning: hand-computed cases, a brute-force property test, tree reduction, laziness."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import eo_pipeline as eo
from eo_pipeline.binning import (
    FIELDS,
    STATISTICS,
    Partial,
    Tiling,
    finalize_block,
    finalize_tile,
    merge,
    reduce_by_cell,
)
from eo_pipeline.grid import GridSpec
from eo_pipeline.gridding import grid_soundings

from .conftest import raise_if_dask_computes


def soundings(lon, lat, x, u=None, valid=None, chunk=None) -> xr.Dataset:
    """A minimal canonical dataset (1-D soundings) from arrays."""
    import dask.array as da

    n = len(lon)
    chunk = chunk or max(n, 1)
    u = np.full(n, 1.0) if u is None else np.asarray(u, float)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid)
    dims = ("sounding",)
    ds = xr.Dataset(
        {"xch4": (dims, da.from_array(np.asarray(x, "f4"), chunks=chunk), {"units": "ppb"}),
         "xch4_uncertainty": (dims, da.from_array(u.astype("f4"), chunks=chunk), {"units": "ppb"}),
         "valid": (dims, da.from_array(valid, chunks=chunk))},
        coords={"longitude": (dims, da.from_array(np.asarray(lon, "f8"), chunks=chunk)),
                "latitude": (dims, da.from_array(np.asarray(lat, "f8"), chunks=chunk)),
                "time": (dims, da.from_array(np.full(n, np.datetime64("2023-07-15T05:00", "ns")), chunks=chunk))},
        attrs={"source_file": "synthetic", "time_coverage_start": "2023-07-15T05:00:00Z",
               "time_coverage_end": "2023-07-15T05:00:00Z"})
    return ds


def test_point_binning_hand_computed():
    g = GridSpec.from_bbox((0, 0, 2, 2), 1.0)  # 2 x 2 cells, row 0 is north
    ds = soundings(lon=[0.5, 0.5, 1.5, 1.2, 1.9], lat=[1.5, 1.5, 0.5, 0.2, 1.9], x=[1900, 1910, 1800, 1820, 2000],
                   u=[10, 10, 5, 5, 1], valid=[True, True, True, True, False])
    with raise_if_dask_computes():
        out = grid_soundings(ds, g, method="point")
    r = out.compute()
    assert r.xch4_count.values.tolist() == [[2, 0], [0, 2]]
    np.testing.assert_allclose(r.xch4_mean.values, [[1905, np.nan], [np.nan, 1810]])
    np.testing.assert_allclose(r.xch4_std.values, [[5, np.nan], [np.nan, 10]])
    np.testing.assert_allclose(r.xch4_min.values, [[1900, np.nan], [np.nan, 1800]])
    np.testing.assert_allclose(r.xch4_max.values, [[1910, np.nan], [np.nan, 1820]])
    np.testing.assert_allclose(r.xch4_uncertainty.values[0, 0], np.sqrt(2 * 10**2) / 2)
    assert r.xch4_weight.values.tolist() == [[2, 0], [0, 2]]


def test_inverse_variance_weighting():
    g = GridSpec.from_bbox((0, 0, 1, 1), 1.0)
    ds = soundings(lon=[0.5, 0.5], lat=[0.5, 0.5], x=[1900, 1930], u=[10, 20])
    r = grid_soundings(ds, g, method="point", weighting="inverse_variance").compute()
    w = np.array([1 / 100, 1 / 400])
    assert float(r.xch4_mean[0, 0]) == pytest.approx((w @ [1900, 1930]) / w.sum())
    assert float(r.xch4_uncertainty[0, 0]) == pytest.approx(1 / np.sqrt(w.sum()), rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    seed=st.integers(0, 2**31 - 1),
    chunk=st.integers(1, 20),
    out_chunk=st.sampled_from([512, 1024]),
)
def test_point_binning_matches_brute_force(n, seed, chunk, out_chunk):
    rng = np.random.default_rng(seed)
    g = GridSpec.from_bbox((-2, -1, 3, 2), 0.5)
    lon = rng.uniform(-3, 4, n)
    lat = rng.uniform(-2, 3, n)
    x = rng.normal(1900, 20, n).astype("f4").astype(float)
    valid = rng.random(n) > 0.2
    r = grid_soundings(soundings(lon, lat, x, valid=valid, chunk=chunk), g, method="point", chunk=out_chunk).compute()
    rows, cols = g.shape
    for i in range(rows):
        for j in range(cols):
            sel = x[_in_cell(lon, lat, valid, g, i, j)]
            assert int(r.xch4_count[i, j]) == sel.size
            if sel.size:
                assert float(r.xch4_mean[i, j]) == pytest.approx(sel.mean(), abs=1e-3)
                assert float(r.xch4_std[i, j]) == pytest.approx(sel.std(), abs=1e-3)
                assert float(r.xch4_max[i, j]) == pytest.approx(sel.max(), abs=1e-3)
            else:
                assert np.isnan(r.xch4_mean[i, j])


def _in_cell(lon, lat, valid, g, i, j):
    """Brute force: the cell (i, j) holds a point if floor((x - west)/res) == j etc."""
    (xres, yres), (w, s, e, n) = g.resolution, g.bounds
    col = np.floor((lon - w) / xres)
    row = np.floor((n - lat) / yres)
    return valid & (col == j) & (row == i) & (lon >= w) & (lon < e) & (lat > s) & (lat <= n)


def test_merge_is_associative_and_matches_one_pass():
    rng = np.random.default_rng(1)
    tiled = Tiling((5, 10), 512)
    idx = tiled.flat(rng.integers(0, 5, 400), rng.integers(0, 10, 400))
    x = rng.normal(1900, 10, 400)
    w = rng.random(400)
    u = rng.random(400) + 1
    whole = reduce_by_cell(idx, w, x, u, 1900.0)
    parts = [reduce_by_cell(idx[k::4], w[k::4], x[k::4], u[k::4], 1900.0 + k) for k in range(4)]
    a = finalize_tile(whole, tiled, 0)
    b = finalize_tile(merge(merge(parts[0], parts[1]), merge(parts[2], parts[3])), tiled, 0)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9)
    assert len(STATISTICS) == a.shape[0]


def test_dask_sizes_a_partial_by_its_arrays():
    """A distributed scheduler places tasks and workers count memory by ``dask.sizeof``: a partial is its arrays."""
    from dask.sizeof import sizeof

    rng = np.random.default_rng(2)
    idx = Tiling((50, 100), 512).flat(rng.integers(0, 50, 5000), rng.integers(0, 100, 5000))
    p = reduce_by_cell(idx, rng.random(5000), rng.normal(1900, 10, 5000), rng.random(5000), 1900.0)
    arrays = [getattr(p, f) for f in FIELDS if getattr(p, f) is not None]
    assert len(p) > 1000 and sizeof(p) == sum(a.nbytes for a in arrays) == p.nbytes
    assert sizeof(Partial.empty(0.0)) == 0


def test_empty_partial_finalizes_to_nan_without_allocating():
    t = Tiling((3, 3), 2)
    out = finalize_tile(Partial.empty(0.0), t, 3)
    assert out.shape == (len(STATISTICS), 1, 1)
    assert np.isnan(out[0]).all() and out[2].sum() == 0
    block = finalize_block(Partial.empty(0.0), Tiling((4096, 4096), 512), 0, 0, 4096, 0, 4096, "mean")
    assert block.shape == (4096, 4096) and block.strides == (0, 0)  # a broadcast view, not 64 MB


def test_threads_processes_and_distributed_agree(ch4_file):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    ds = eo.open_product(ch4_file)
    g = GridSpec.from_bbox((110, 34, 114, 38), 0.05)
    l3 = grid_soundings([ds, ds], g, method="point")
    a = l3.compute(scheduler="threads")
    b = l3.compute(scheduler="processes")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster):
        c = l3.compute()
    for other in (b, c):
        xr.testing.assert_identical(a, other)
    assert int(a.xch4_count.sum()) == 2 * 27


@settings(max_examples=50, deadline=None)
@given(rows=st.integers(1, 700), cols=st.integers(1, 700), tile=st.sampled_from([4, 8, 512]),
       sub=st.sampled_from([2, 4, 128]), seed=st.integers(0, 10**6))
def test_flat_index_is_a_bijection_grouped_by_tile(rows, cols, tile, sub, seed):
    if tile % min(sub, tile):
        return
    t = Tiling((rows, cols), tile, sub=sub)
    rng = np.random.default_rng(seed)
    r = rng.integers(0, rows, 200)
    c = rng.integers(0, cols, 200)
    idx = t.flat(r, c)
    tid = idx // (t.tile * t.tile)
    r0 = (tid // t.tile_cols) * t.tile
    c0 = (tid % t.tile_cols) * t.tile
    lr, lc = t.local_rowcol(idx - tid * t.tile * t.tile)
    assert np.array_equal(r0 + lr, r) and np.array_equal(c0 + lc, c)
    assert np.array_equal(tid, (r // t.tile) * t.tile_cols + c // t.tile)


@settings(max_examples=60, deadline=None)
@given(tile=st.sampled_from([4, 12, 512, 1536]), sub=st.sampled_from([2, 4, 128]), n=st.integers(0, 3000),
       ordered=st.booleans(), seed=st.integers(0, 10**6))
def test_scatter_tile_places_each_value_at_its_local_row_and_column(tile, sub, n, ordered, seed):
    """The compiled scatter of the finalize step = numpy's assignment at ``Tiling.local_rowcol``."""
    from eo_pipeline.binning import _scatter_tile

    if tile % min(sub, tile):
        return
    t = Tiling((tile, tile), tile, sub=sub)
    rng = np.random.default_rng(seed)
    local = rng.choice(tile * tile, min(n, tile * tile), replace=False).astype(np.int64)
    if ordered:  # as partials hold them
        local.sort()
    values = rng.normal(size=local.size)
    want = np.full((tile, tile), np.nan, np.float32)
    want[t.local_rowcol(local)] = values
    got = np.full((tile, tile), np.nan, np.float32)
    _scatter_tile(got, local, values, t.sub, t.tile // t.sub)
    np.testing.assert_array_equal(got, want)
    counts = np.zeros((tile, tile), np.int32)
    _scatter_tile(counts, local, np.arange(local.size, dtype=np.int64), t.sub, t.tile // t.sub)
    assert np.array_equal(counts[t.local_rowcol(local)], np.arange(local.size, dtype=np.int32))


def test_finalize_block_is_its_tiles_finalized():
    """A block of several tiles holds each tile's statistics, with the same data types (count int32)."""
    from eo_pipeline.binning import STAT_DTYPES, finalize_statistics

    rng = np.random.default_rng(7)
    t = Tiling((7, 9), 4, sub=2)  # 2 x 3 tiles, the last row and column clipped
    rows, cols = rng.integers(0, 7, 60), rng.integers(0, 9, 60)
    rows[rows >= 4] = np.minimum(rows[rows >= 4], 5)  # tile (1, 2) and row 6 stay empty
    cols[(rows >= 4) & (cols >= 8)] = 7
    p = reduce_by_cell(t.flat(rows, cols), rng.random(60) + 0.1, rng.normal(1900, 10, 60), rng.random(60) + 1,
                       1900.0)
    for stat in STATISTICS:
        block = finalize_block(p, t, 0, 0, 7, 0, 9, stat)
        assert block.dtype == STAT_DTYPES[stat] and block.shape == (7, 9)
        for tid in range(t.tiles_per_layer):
            r0, r1, c0, c1 = t.tile_bounds(tid)
            (tile,) = finalize_statistics(p, t, tid, (stat,))
            np.testing.assert_array_equal(block[r0:r1, c0:c1], tile, err_msg=f"{stat} tile {tid}")
    count = finalize_block(p, t, 0, 0, 7, 0, 9, "count")
    np.testing.assert_array_equal(count, np.histogram2d(rows, cols, bins=(np.arange(8), np.arange(10)))[0])
