# SPDX-License-Identifier: Apache-2.0
"""SRF oversampling (``method="srf"``) on the real whole S5P orbit, side by side with popy.

The peer is the authors' reference implementation of Sun et al. (2018), AMT 11, 6679:
popy's ``F_block_regrid_ccm`` (``popy.py`` of github.com/Kang-Sun-CfA/Oversampling_matlab,
commit 3d5ac5d; pure Python and numpy, OpenCV for the perspective transforms), run in
this process (one process) on the same pixels and the same grid: 0.05 degree over
60 S-60 N, 30 W-60 E, the pixels whose centres lie in that box, corners derived from the
centres by eo_pipeline (the file has none), SRF shape and window as eo_pipeline resolves
them for TROPOMI (4, 2, 1; 1.5). popy's time is its ``F_block_regrid_ccm`` call alone,
pixels already in memory: its best case.

* **The user's path**: ``eo.grid_soundings([orbit], grid, method="srf",
  statistics=["mean", "count", "weight"]).compute()`` in a warm process (numba's kernels
  compiled by an untimed call), from the file opened lazily by ``open_product`` (opening
  included in the time, as in bench_userpath) and from the product already loaded
  (``.load()``); and the command ``eo-pipeline grid ORBIT --bbox -30 -60 60 60
  --resolution 0.05 --method srf -o OUT.tif`` (and ``OUT.nc``) as whole processes (wall
  time, peak memory by GNU time), with, for reference, a process that only imports the
  modules the command imports (the start-up floor under the command's time).
* **The kernel**: ``eo_pipeline.gridding._srf_chunk`` (footprints in grid units, then
  ``srf_accumulate``: sparse per-cell sums, not finalized) and ``srf_accumulate`` alone,
  on the same pixels in memory.
* **Agreement** with popy: num_samples, total weight and mean on every cell, and the
  sets of cells with data.

Every case runs in one loop, alternating (``common.interleaved``); times are medians.
popy is found through ``EO_PIPELINE_POPY`` (path to popy.py) or at
``benchmarks/.data/popy.py`` (git-ignored: popy's code is never committed); it needs
``cv2`` (opencv-python-headless) and shapely (``pip install -e .[bench]``). Without it the
popy columns are skipped with a note.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from common import ROOT, WHOLE_ORBIT, interleaved

POPY = {"repo": "github.com/Kang-Sun-CfA/Oversampling_matlab", "commit": "3d5ac5d", "file": "popy.py",
        "function": "F_block_regrid_ccm"}
POPY_WHERE = (f"set EO_PIPELINE_POPY=/path/to/popy.py or put popy.py in benchmarks/.data/ (popy.py from "
              f"{POPY['repo']}, commit {POPY['commit']})")
BBOX = (-30.0, -60.0, 60.0, 60.0)  # west, south, east, north
RESOLUTION = 0.05
STATS = ["mean", "count", "weight"]
TARGET = 10.0
STARTUP = "start-up: python -c 'import' of the grid command's modules (no work)"


# --------------------------------------------------------------------------- popy
def find_popy() -> tuple[ModuleType | None, str]:
    """popy imported from ``EO_PIPELINE_POPY`` or benchmarks/.data/popy.py, or None and why."""
    env = os.environ.get("EO_PIPELINE_POPY")
    path = Path(env) if env else ROOT / "benchmarks" / ".data" / "popy.py"
    if not path.is_file():
        where = f"EO_PIPELINE_POPY={env}" if env else str(path)
        return None, f"popy not found ({where} does not exist): {POPY_WHERE}"
    missing = [m for m in ("cv2", "shapely") if importlib.util.find_spec(m) is None]
    if missing:
        return None, (f"popy found at {path} but {' and '.join(missing)} missing: pip install "
                      "opencv-python-headless shapely (or pip install -e .[bench])")
    spec = importlib.util.spec_from_file_location("popy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(module)
    return module, str(path)


def popy_inputs(ds: Any, shape: tuple[float, float, float]) -> dict[str, Any]:
    """popy's l2g dictionary and mesh for the pixels whose centres lie in the box."""
    from eo_pipeline.footprints import derive_corners

    lat, lon = ds.latitude.values, ds.longitude.values
    latb, lonb = derive_corners(lat, lon)
    x = ds.xch4.values
    west, south, east, north = BBOX
    m = ds.valid.values & np.isfinite(x) & (lat >= south) & (lat <= north) & (lon >= west) & (lon <= east)
    order = [0, 3, 2, 1]  # popy's corner order from S5P's
    l2g = {"latc": lat[m].astype(np.float32), "lonc": lon[m].astype(np.float32),
           "latr": latb[m][:, order].astype(np.float32), "lonr": lonb[m][:, order].astype(np.float32),
           "column_amount": x[m].astype(np.float32), "column_uncertainty": np.ones(int(m.sum()), np.float32)}
    xgrid = np.arange(west, east, RESOLUTION) + RESOLUTION / 2
    ygrid = np.arange(south, north, RESOLUTION) + RESOLUTION / 2
    xmesh, ymesh = np.meshgrid(xgrid, ygrid)
    return {"l2g": l2g, "xmesh": xmesh, "ymesh": ymesh, "shape": shape, "mask": m,
            # the same pixels for eo_pipeline's chunk function (float64, S5P corner order)
            "chunk_args": (lon[m].astype(np.float64), lat[m].astype(np.float64), lonb[m].astype(np.float64),
                           latb[m].astype(np.float64), x[m].astype(np.float64), np.ones(int(m.sum())))}


def popy_call(popy: ModuleType, inp: dict[str, Any]) -> dict[str, np.ndarray]:
    from eo_pipeline._srf_kernel import srf_scale

    k1, k2, k3 = inp["shape"]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return popy.F_block_regrid_ccm(inp["l2g"], inp["xmesh"], inp["ymesh"], ["column_amount"], "quadrilateral",
                                       "ones", k1, k2, k3, 1.5, 1.5, sg_scaling=srf_scale((k1, k2, k3)))


# --------------------------------------------------------------------------- eo_pipeline
def grid() -> Any:
    from eo_pipeline.grid import GridSpec

    return GridSpec.from_bbox(BBOX, RESOLUTION, "EPSG:4326")  # as the command builds it


def python_call(g: Any, loaded: Any = None) -> Any:
    import eo_pipeline as eo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = loaded if loaded is not None else eo.open_product(WHOLE_ORBIT)
        return eo.grid_soundings([src], g, method="srf", statistics=STATS).compute()


def kernel_funcs(g: Any, ds: Any, chunk_args: tuple[np.ndarray, ...], shape: tuple[float, float, float]) -> dict:
    """``_srf_chunk`` and ``srf_accumulate`` alone on the same pixels in memory."""
    from eo_pipeline._srf_kernel import srf_accumulate, srf_scale
    from eo_pipeline.binning import Tiling
    from eo_pipeline.footprints import srf_footprints
    from eo_pipeline.gridding import Binning, _srf_chunk, auto_chunk, method_statistics
    from eo_pipeline.schema import species_of

    ref = species_of(ds).reference_value
    b = Binning(g, Tiling(g.shape, auto_chunk(g)), "srf", False, ref, statistics=method_statistics(STATS, "srf"),
                srf_shape=shape, srf_window=1.5)
    lon, lat, lon_b, lat_b, x, u = chunk_args
    cx, cy, ox, oy, area, src, _ = srf_footprints(lon, lat, lon_b, lat_b, g)
    xs, us, wm = x[src], u[src], np.ones(src.size)
    ox, oy = np.ascontiguousarray(ox), np.ascontiguousarray(oy)
    (dx, dy), (rows, cols) = g.resolution, g.shape
    west, _, _, north = g.bounds
    k1, k2, k3 = shape

    def accumulate() -> Any:
        return srf_accumulate(cx, cy, ox, oy, area, xs, wm, us, ref, west, dx, north, dy, rows, cols, False, 360.0,
                              float(k1), float(k2), float(k3), srf_scale(shape), 1.5, b.tiling.tile, b.tiling.sub)

    return {"kernel: _srf_chunk": lambda: _srf_chunk(*chunk_args[:4], x, u, b),
            "kernel: srf_accumulate": accumulate}


def command_funcs(work: Path, peaks: dict[str, list[float]]) -> dict:
    from bench_gridding import _run_timed

    exe = str(Path(sys.executable).parent / "eo-pipeline")
    where = ["--bbox", *(f"{v:g}" for v in BBOX), "--resolution", f"{RESOLUTION:g}", "--method", "srf"]
    funcs = {}
    for ext in ("tif", "nc"):
        key = f"eo-pipeline grid ORBIT {' '.join(where)} -o OUT.{ext}"
        cmd = [exe, "grid", str(WHOLE_ORBIT), *where, "-o", str(work / f"out.{ext}"), "-q"]
        peaks[key] = []

        def f(cmd: list[str] = cmd, key: str = key) -> None:
            peaks[key].append(_run_timed(cmd)[1])

        funcs[key] = f
    # the floor under the command: a process that only imports what `eo-pipeline grid` imports
    key = STARTUP
    peaks[key] = []
    cmd = [sys.executable, "-c", "import eo_pipeline.composites, eo_pipeline.gridding, eo_pipeline.outputs, "
           "eo_pipeline.readers"]
    funcs[key] = lambda: peaks[key].append(_run_timed(cmd)[1])
    return funcs


# --------------------------------------------------------------------------- agreement
def agreement(l3: Any, popy_out: dict[str, np.ndarray]) -> dict[str, Any]:
    """eo_pipeline's grids vs popy's (popy's rows run south -> north)."""
    ns_p = popy_out["num_samples"][::-1].astype(float)
    w_p = popy_out["total_sample_weight"][::-1].astype(float)
    m_p = popy_out["column_amount"][::-1].astype(float)
    ns_o = l3.xch4_num_samples.values.astype(float)
    w_o = l3.xch4_weight.values.astype(float)
    m_o = l3.xch4_mean.values.astype(float)
    data_o = np.isfinite(m_o)  # eo_pipeline: a mean (count > 0)
    data_p = np.isfinite(m_p) & (w_p > 0)  # popy: a mean (total weight > 0)
    both = data_o & data_p
    big = ns_p >= 1e-6 * ns_p.max()
    return {
        "cells_with_data_eo_pipeline": int(data_o.sum()), "cells_with_data_popy": int(data_p.sum()),
        "cells_with_data_in_one_only": int((data_o ^ data_p).sum()), "same_cells": bool((data_o == data_p).all()),
        # num_samples is stored as float32: SRF tails below ~1e-45 underflow to 0 there
        "cells_num_samples_underflow": int((data_o & (ns_o == 0)).sum()),
        "max_num_samples": float(ns_p.max()), "max_abs_diff_num_samples": float(np.abs(ns_o - ns_p).max()),
        "max_rel_diff_num_samples": float((np.abs(ns_o - ns_p)[big] / ns_p[big]).max()),
        "max_abs_diff_weight_rel_to_max": float(np.abs(w_o - w_p).max() / w_p.max()),
        "max_rel_diff_weight": float((np.abs(w_o - w_p)[big] / w_p[big]).max()),
        "max_abs_diff_mean_ppb": float(np.abs(m_o[both] - m_p[both]).max()),
        "cells_compared_relative": int(big.sum()),
    }


# --------------------------------------------------------------------------- run
def run(repeats: int = 5) -> dict[str, Any]:
    if not WHOLE_ORBIT.exists():
        return {"skipped": f"{WHOLE_ORBIT} not found"}
    import eo_pipeline as eo

    g = grid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = eo.open_product(WHOLE_ORBIT).load()
    l3 = python_call(g, loaded)  # untimed: numba's kernels compiled/loaded
    shape = tuple(float(k) for k in l3.attrs["srf_shape"].split())
    inp = popy_inputs(loaded, shape)  # type: ignore[arg-type]
    popy, popy_how = find_popy()
    report: dict[str, Any] = {
        "grid": {"bbox": BBOX, "resolution": RESOLUTION, "shape": list(g.shape), "crs": "EPSG:4326"},
        "pixels": int(inp["mask"].sum()), "pixels_used_eo_pipeline": int(l3.n_soundings_used),
        "srf_shape": l3.attrs["srf_shape"], "srf_window": float(l3.attrs["srf_window"]),
        "popy": {**POPY, "found": popy_how} if popy is not None else {**POPY, "skipped": popy_how},
        "machine": {"cpus": os.cpu_count()}, "repeats": repeats, "target": TARGET,
    }
    peaks: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        work = Path(tmpdir)
        funcs: dict[str, Any] = {}
        popy_out: dict[str, Any] = {}
        if popy is not None:
            funcs["popy F_block_regrid_ccm"] = lambda: popy_out.update(popy_call(popy, inp))
        funcs["python call, lazy (open_product included)"] = lambda: python_call(g)
        funcs["python call, loaded"] = lambda: python_call(g, loaded)
        funcs.update(command_funcs(work, peaks))
        funcs.update(kernel_funcs(g, loaded, inp["chunk_args"], shape))  # type: ignore[arg-type]
        timings = interleaved(funcs, repeats=repeats, warmup=1)
        import xarray as xr

        with xr.open_dataset(work / "out.nc") as nc:  # the command computed what the call computes
            report["command_matches_call"] = bool(
                np.allclose(nc.xch4_num_samples.values, l3.xch4_num_samples.values, rtol=1e-6, atol=0)
                and np.array_equal(np.isfinite(nc.xch4_mean.values), np.isfinite(l3.xch4_mean.values)))
    report["timings"] = timings
    report["command_peak_mb"] = {k: max(v) for k, v in peaks.items()}
    report["gnu_time"] = bool(shutil.which("time") or Path("/usr/bin/time").exists())
    if popy is not None:
        t_popy = timings["popy F_block_regrid_ccm"]["median"]
        report["popy_s"] = t_popy
        report["speedup"] = {k: t_popy / v["median"] for k, v in timings.items() if not k.startswith("popy")}
        report["agreement"] = agreement(l3, popy_out)
    return report


if __name__ == "__main__":
    print(json.dumps(run(), indent=1, default=str))
