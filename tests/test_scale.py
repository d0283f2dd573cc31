# SPDX-License-Identifier: Apache-2.0
"""Batch at scale: partial sums routed to output blocks, memory bounded by the blocks in flight,
statistics chosen by the user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import eo_pipeline as eo
from eo_pipeline.binning import Tiling
from eo_pipeline.errors import ReaderOptionError
from eo_pipeline.grid import GridSpec

from .conftest import SAMPLES, raise_if_dask_computes
from .test_binning import soundings

HERE = Path(__file__).resolve().parent


def _peak_mb(days: int, out: Path, method: str = "point") -> float:
    env = {**os.environ, "EO_MEMBOUND_METHOD": method}
    proc = subprocess.run([sys.executable, str(HERE / "membound.py"), str(days), str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.strip().splitlines()[-1])


def test_peak_memory_of_a_composite_does_not_grow_with_the_number_of_days(tmp_path):
    # each day: ~1.3 million soundings filling 1024 x 1024 cells. Before routing partials to
    # output blocks, every day's partial sums met in one merge: +190 MB per day here (784 MB for
    # 2 days, 1940 MB for 8). Now the peak follows the days in flight (the scheduler's order makes
    # it vary by about 100 MB from run to run), not the number of days.
    two = _peak_mb(2, tmp_path / "two")
    eight = _peak_mb(8, tmp_path / "eight")
    assert eight - two < 300, (two, eight)
    assert len(list((tmp_path / "eight").glob("xch4_*.tif"))) == 8


def test_peak_memory_of_an_oversampled_composite_does_not_grow_with_the_number_of_days(tmp_path):
    # the srf method runs in the same chunk / combine-per-block / finalize structure: each sounding
    # spreads over ~9 cells here, and the peak still follows the days in flight
    # (before the kernel returned exact-size arrays: 1.24 GB for 2 days, 1.69 GB for 4)
    two = _peak_mb(2, tmp_path / "two", "srf")
    four = _peak_mb(4, tmp_path / "four", "srf")
    assert four - two < 300, (two, four)
    assert len(list((tmp_path / "four").glob("xch4_*.tif"))) == 4


def _day_products():
    rng = np.random.default_rng(4)
    out = []
    for day in range(3):
        n = 400
        lon = rng.uniform(110, 114, n)
        lat = rng.uniform(34, 38, n)
        ds = soundings(lon, lat, rng.normal(1900, 10, n), u=rng.uniform(5, 9, n), chunk=100)
        t = np.datetime64("2023-07-14T22:00", "ns") + np.timedelta64(day, "D") + (
            np.arange(n) * 15).astype("timedelta64[s]")  # 22:00 to 23:40: days overlap midnight
        ds = ds.assign_coords(time=("sounding", t))
        ds.attrs.update(time_coverage_start=f"{t[0]}Z", time_coverage_end=f"{t[-1]}Z", source_file=f"day{day}")
        out.append(ds)
    return out


@pytest.mark.parametrize("chunk", [512, 1024])
def test_composite_equals_each_days_own_map(chunk):
    products = _day_products()
    g = GridSpec.from_bbox((110, 34, 114, 38), 0.005)  # 800 x 800: several blocks at chunk=512
    with raise_if_dask_computes():
        c = eo.composite(products, g, period="day", chunk=chunk, method="point")
    c = c.compute()
    whole = xr.concat([p for p in products], dim="sounding")
    for k, t in enumerate(c.time.values):
        sel = (whole.time >= t) & (whole.time < t + np.timedelta64(1, "D"))
        day = whole.where(sel.compute(), drop=True)
        if day.sizes["sounding"] == 0:
            assert int(c.xch4_count.isel(time=k).sum()) == 0
            continue
        ref = eo.grid_soundings(day.chunk({"sounding": 50}), g, chunk=chunk, method="point").compute()
        for v in ("xch4_mean", "xch4_std", "xch4_count", "xch4_weight", "xch4_min", "xch4_max",
                  "xch4_uncertainty"):
            np.testing.assert_allclose(c[v].isel(time=k).values, ref[v].values, rtol=1e-9, atol=1e-9,
                                       equal_nan=True, err_msg=v)
    assert int(c.xch4_count.sum()) == 3 * 400


def test_blocks_are_finalized_from_their_own_cells_only():
    products = _day_products()
    g = GridSpec.from_bbox((110, 34, 114, 38), 0.005)
    a = eo.grid_soundings(products, g, chunk=512, method="point").compute()
    b = eo.grid_soundings(products, g, chunk=1024, method="point").compute()  # one block
    xr.testing.assert_allclose(a.drop_attrs(), b.drop_attrs())
    lazy = eo.grid_soundings(products, g, chunk=512, method="point")
    assert lazy.xch4_mean.data.chunks == ((512, 288), (512, 288))


def test_statistics_option_keeps_only_what_is_asked():
    products = _day_products()
    g = GridSpec.from_bbox((110, 34, 114, 38), 0.05)
    full = eo.grid_soundings(products, g, method="point").compute()
    some = eo.grid_soundings(products, g, statistics=["mean", "count"], method="point").compute()
    assert sorted(v for v in some.data_vars if not v.startswith("n_")) == ["xch4_count", "xch4_mean"]
    assert some.attrs["statistics"] == "mean count"
    xr.testing.assert_identical(some.xch4_mean.drop_attrs(), full.xch4_mean.drop_attrs())
    np.testing.assert_array_equal(some.xch4_count.values, full.xch4_count.values)
    assert "ancillary_variables" not in some.xch4_mean.attrs or "uncertainty" not in some.xch4_mean.attrs[
        "ancillary_variables"]
    with pytest.raises(ReaderOptionError, match="unknown statistic"):
        eo.grid_soundings(products, g, statistics=["median"], method="point")
    with pytest.raises(ReaderOptionError, match="multiple of 512"):
        eo.grid_soundings(products, g, chunk=1000, method="point")


def test_trimmed_partials_hold_less():
    from eo_pipeline.binning import reduce_by_cell, select, trim

    rng = np.random.default_rng(0)
    t = Tiling((100, 100), 64, sub=32)
    idx = t.flat(rng.integers(0, 100, 500), rng.integers(0, 100, 500))
    p = reduce_by_cell(idx, np.ones(500), rng.normal(size=500), np.ones(500), 0.0)
    small = trim(p, ("mean", "count"))
    assert small.swxx is None and small.vmin is None and small.nbytes < 0.6 * p.nbytes
    lo, hi = t.tile_range(1)
    part = select(p, lo, hi)
    assert np.all((part.idx >= lo) & (part.idx < hi)) and part.idx.base is None
    assert len(part) == np.count_nonzero((p.idx >= lo) & (p.idx < hi))


def test_soundings_outside_their_files_time_coverage_are_counted_not_lost():
    products = _day_products()
    bad = products[0].copy()
    bad.attrs.update(time_coverage_start="2023-07-16T22:00:00Z", time_coverage_end="2023-07-16T23:40:00Z")
    c = eo.composite([bad, products[2]], GridSpec.from_bbox((110, 34, 114, 38), 0.05), period="day",
                     method="point").compute()
    # the first file says 16 July, its soundings are on 14/15 July: dropped and counted, never placed
    assert int(c.n_footprints_dropped.sum()) == 400 and int(c.n_soundings_used.sum()) == 400
    assert int(c.xch4_count.sum()) == 400


def test_composite_of_the_sample_scenes_is_lazy_and_routes_by_file():
    files = sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc"))
    with raise_if_dask_computes():
        c = eo.composite([str(f) for f in files], "north_china_0p05", period="day")
        graph = dict(c.xch4_mean.data.__dask_graph__())
    assert c.sizes["time"] >= 1 and any(str(k[0] if isinstance(k, tuple) else k).startswith("_merge_block")
                                        for k in graph)


def test_soundings_used_are_counted_once_per_period():
    products = _day_products()
    g = GridSpec.from_bbox((110, 34, 114, 38), 0.05)
    c = eo.composite(products, g, period="day", method="point").compute()
    assert c.n_soundings_used.dims == ("time",)
    np.testing.assert_array_equal(c.n_soundings_used.values, c.xch4_count.sum(("y", "x")).values)
    assert int(c.n_soundings_used.sum()) == 3 * 400
    single = eo.grid_soundings(products, g, method="area", fov_diameter_km=5.0).compute()
    assert single.n_soundings_used.dims == () and int(single.n_soundings_used) == 3 * 400
