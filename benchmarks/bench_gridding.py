# SPDX-License-Identifier: Apache-2.0
"""Gridding the real whole S5P orbit: eo_pipeline vs HARP ``bin_spatial`` and pyresample.

* area binning onto global_0p05 and global_0p01, against HARP's ``bin_spatial`` on the
  same polygons (corners derived from the centres by eo_pipeline, handed to HARP in
  its own HARP-netCDF import format). HARP's binning time is ``harpdump -l -a
  'bin_spatial(...)'`` minus ``harpdump -l`` on the same file, so start-up and reading
  are not counted; eo_pipeline's time starts from the same polygons in memory and ends
  with the binned mean and weight grids in memory, the two grids HARP produces (at 0.01
  degree, with every output block finalized and reduced, as the grid does not fit in
  2 GB densely).
* the numbers: every cell both fill agrees with HARP within 1e-5 relative, and the
  sets of filled cells agree (cells with a summed weight below 1e-8 aside);
* point binning against pyresample's ``BucketResampler.get_average``;
* peak memory of gridding the orbit onto global_0p01 and writing the COG, in a fresh
  process.

HARP comes from Debian's ``harp`` package; it is installed with apt-get where absent
and the comparison is skipped with a note where that is impossible.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import dask
import numpy as np

from common import WHOLE_ORBIT, interleaved

GRIDS = {
    "global_0p05": "bin_spatial(3601,-90,0.05,7201,-180,0.05)",
    "global_0p01": "bin_spatial(18001,-90,0.01,36001,-180,0.01)",
}


# --------------------------------------------------------------------------- inputs
def load_orbit() -> Any:
    import eo_pipeline as eo
    from eo_pipeline.footprints import with_derived_corners

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = eo.open_product(WHOLE_ORBIT)
    return with_derived_corners(ds).persist()


def valid_polygons(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    v = ds.valid.values.ravel()
    return (ds.longitude_bounds.values.reshape(-1, 4)[v].astype(float), ds.latitude_bounds.values.reshape(-1, 4)[v].astype(float),
            ds.xch4.values.ravel()[v].astype(float), ds.longitude.values.ravel()[v].astype(float),
            ds.latitude.values.ravel()[v].astype(float))


def write_harp_input(path: Path, lon_b: np.ndarray, lat_b: np.ndarray, x: np.ndarray) -> Path:
    """HARP-1.0 netCDF-3: dims {time, independent_4}, time indexing the pixels."""
    import netCDF4

    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as nc:
        nc.Conventions = "HARP-1.0"
        nc.createDimension("time", len(x))
        nc.createDimension("independent_4", 4)
        for name, data, units, dims in (
            ("latitude_bounds", lat_b, "degree_north", ("time", "independent_4")),
            ("longitude_bounds", lon_b, "degree_east", ("time", "independent_4")),
            ("CH4_column_volume_mixing_ratio_dry_air", x, "ppbv", ("time",)),
        ):
            v = nc.createVariable(name, "f8", dims)
            v.units = units
            v[:] = data
    return path


# --------------------------------------------------------------------------- HARP
def ensure_harp() -> tuple[str | None, str]:
    exe = shutil.which("harpdump")
    if exe:
        return exe, "found"
    if shutil.which("apt-get") and os.geteuid() == 0:
        for cmd in (["apt-get", "install", "-y", "-qq", "harp"], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "harp"]):
            subprocess.run(cmd, capture_output=True, text=True)
            exe = shutil.which("harpdump")
            if exe:
                return exe, "installed with apt-get"
    return None, "HARP is not installed and could not be installed with apt-get (no root or no apt)"


def _run_timed(cmd: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of a command."""
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if gnu_time:
        out = subprocess.run([gnu_time, "-f", "%e %M", *cmd], capture_output=True, text=True, check=True)
        wall, kb = out.stderr.strip().splitlines()[-1].split()
        return float(wall), float(kb) / 1024
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t, float("nan")


def harp_times(harp_file: Path, op: str, repeats: int, ours: Any = None) -> dict[str, float]:
    """Median HARP binning time (with minus without the operation), alternating with ``ours``."""
    base, binned, mine = [], [], []
    for _ in range(repeats):
        base.append(_run_timed(["harpdump", "-l", str(harp_file)]))
        binned.append(_run_timed(["harpdump", "-l", "-a", op, str(harp_file)]))
        if ours is not None:
            t = time.perf_counter()
            ours()
            mine.append(time.perf_counter() - t)
    b = statistics.median(t for t, _ in base)
    w = statistics.median(t for t, _ in binned)
    out = {"with_op": w, "without_op": b, "binning": max(w - b, 1e-9), "peak_mb": max(m for _, m in binned)}
    if mine:
        out["ours"] = statistics.median(mine)
    return out


def harp_result(harp_file: Path, op: str, out: Path) -> tuple[np.ndarray, np.ndarray]:
    import netCDF4

    subprocess.run(["harpconvert", "-a", op, str(harp_file), str(out)], check=True, capture_output=True)
    with netCDF4.Dataset(out) as nc:
        nc.set_auto_mask(False)
        mean = np.asarray(nc["CH4_column_volume_mixing_ratio_dry_air"][0], float)[::-1]  # HARP rows run south->north
        weight = np.asarray(nc["weight"][0], float)[::-1]
    return mean, weight


# --------------------------------------------------------------------------- eo_pipeline
def ours_blocks(ds: Any, grid: str, method: str = "area") -> dict[str, np.ndarray]:
    """The binned mean and weight grids in memory: the two grids HARP's bin_spatial produces."""
    from eo_pipeline.gridding import grid_soundings

    l3 = grid_soundings(ds, grid, method=method)
    names = ["xch4_mean", "xch4_weight"]
    blocks = dask.compute(*[l3[n].data.to_delayed(optimize_graph=False).ravel().tolist() for n in names])
    shape = l3.xch4_mean.data.numblocks
    return {n: (b[0] if len(b) == 1 else np.block([[b[r * shape[1] + c] for c in range(shape[1])] for r in range(shape[0])]))
            for n, b in zip(names, blocks, strict=True)}


def ours_streamed(ds: Any, grid: str) -> float:
    """Finalize every output block of mean and weight and reduce it (bounded memory)."""
    from eo_pipeline.gridding import grid_soundings

    l3 = grid_soundings(ds, grid, method="area")
    sums = [b.sum() for n in ("xch4_mean", "xch4_weight") for b in l3[n].data.to_delayed(optimize_graph=False).ravel()]
    return float(sum(dask.compute(*sums)[len(sums) // 2:]))


def compare(ours: dict[str, np.ndarray], harp_mean: np.ndarray, harp_weight: np.ndarray) -> dict[str, Any]:
    w_o, w_h = ours["xch4_weight"].astype(float), harp_weight
    m_o = ours["xch4_mean"].astype(float)
    filled_o = w_o >= 1e-8
    filled_h = (w_h >= 1e-8) & np.isfinite(harp_mean)
    both = filled_o & filled_h
    rel_mean = np.abs(m_o[both] - harp_mean[both]) / np.abs(harp_mean[both])
    rel_w = np.abs(w_o[both] - w_h[both]) / w_h[both]
    return {
        "cells_filled_ours": int(filled_o.sum()), "cells_filled_harp": int(filled_h.sum()),
        "cells_filled_only_one": int((filled_o ^ filled_h).sum()),
        "max_rel_diff_mean": float(rel_mean.max()), "max_rel_diff_weight": float(rel_w.max()),
        "ok": bool(rel_mean.max() <= 1e-5 and rel_w.max() <= 1e-5 and not (filled_o ^ filled_h).any()),
    }


# --------------------------------------------------------------------------- pyresample
def pyresample_point(lon: np.ndarray, lat: np.ndarray, x: np.ndarray) -> tuple[Any, str]:
    try:
        import dask.array as da
        from pyresample.bucket import BucketResampler
        from pyresample.geometry import AreaDefinition
    except ImportError:
        return None, "pyresample not installed (pip install pyresample)"
    area = AreaDefinition("global_0p05", "global 0.05 degree", "latlon", "EPSG:4326", 7200, 3600,
                          (-180.0, -90.0, 180.0, 90.0))

    def run() -> np.ndarray:
        res = BucketResampler(area, da.from_array(lon), da.from_array(lat))
        return np.asarray(res.get_average(da.from_array(x), fill_value=np.nan, skipna=True).compute())

    return run, "ok"


# --------------------------------------------------------------------------- memory
MEMORY_SCRIPT = """
import resource, sys, time, warnings
warnings.simplefilter("ignore")
import eo_pipeline as eo
from eo_pipeline.gridding import grid_soundings
from eo_pipeline.io.geotiff import write_cog
t = time.perf_counter()
ds = eo.open_product(sys.argv[1], derive_corners=True)
write_cog(grid_soundings(ds, "global_0p01", method="area"), sys.argv[2], variables=["xch4_mean", "xch4_count", "xch4_weight"])
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def memory_0p01(tmp: Path) -> dict[str, float]:
    """Peak RSS of a fresh process (measured by GNU time: a forked child's own ru_maxrss
    would include the parent's memory, which Linux carries across exec)."""
    cmd = [sys.executable, "-c", MEMORY_SCRIPT, str(WHOLE_ORBIT), str(tmp / "orbit_0p01.tif")]
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if gnu_time:
        out = subprocess.run([gnu_time, "-f", "%M", *cmd], capture_output=True, text=True, check=True)
        mb = float(out.stderr.strip().splitlines()[-1]) / 1024
        seconds = float(out.stdout.split()[0])
    else:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        seconds, mb = (float(v) for v in out.stdout.split())
    return {"seconds": seconds, "peak_mb": mb, "cog_mb": (tmp / "orbit_0p01.tif").stat().st_size / 1e6}


# --------------------------------------------------------------------------- driver
def run(repeats: int = 5) -> dict[str, Any]:
    if not WHOLE_ORBIT.exists():
        return {"skipped": f"{WHOLE_ORBIT} not found"}
    report: dict[str, Any] = {}
    ds = load_orbit()
    lon_b, lat_b, x, lon, lat = valid_polygons(ds)
    report["pixels"] = int(x.size)
    ours_blocks(ds, "global_0p05")  # warm-up: numba's compiled code is loaded once per process
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        harp, how = ensure_harp()
        report["harp"] = how
        harp_file = write_harp_input(tmp / "orbit_harp.nc", lon_b, lat_b, x) if harp else None
        # ---- 0.05 degree, side by side (HARP runs alternate with ours)
        if harp_file:
            h = harp_times(harp_file, GRIDS["global_0p05"], 2 * repeats + 1, lambda: ours_blocks(ds, "global_0p05"))
            entry: dict[str, Any] = {"eo_pipeline_s": h.pop("ours")}
            entry.update(harp=h, speedup=h["binning"] / entry["eo_pipeline_s"])
            hm, hw = harp_result(harp_file, GRIDS["global_0p05"], tmp / "harp_0p05.nc")
            entry["agreement"] = compare(ours_blocks(ds, "global_0p05"), hm, hw)
        else:
            t_ours = interleaved({"eo_pipeline": lambda: ours_blocks(ds, "global_0p05")}, repeats)["eo_pipeline"]
            entry = {"eo_pipeline_s": t_ours["median"]}
        report["area_global_0p05"] = entry
        # ---- 0.01 degree
        t01 = interleaved({"eo_pipeline": lambda: ours_streamed(ds, "global_0p01")}, max(1, repeats // 2))
        entry = {"eo_pipeline_s": t01["eo_pipeline"]["median"]}
        if harp_file:
            h = harp_times(harp_file, GRIDS["global_0p01"], 1)
            entry.update(harp=h, speedup=h["binning"] / entry["eo_pipeline_s"])
        report["area_global_0p01"] = entry
        report["memory_global_0p01_cog"] = memory_0p01(tmp)
    # ---- point binning vs pyresample
    from eo_pipeline.gridding import grid_soundings

    pr, note = pyresample_point(lon, lat, x)

    def ours_point() -> Any:
        return grid_soundings(ds, "global_0p05", method="point", statistics=["mean"]).xch4_mean.values

    funcs = {"eo_pipeline": ours_point}
    if pr:
        funcs["pyresample"] = pr
    t = interleaved(funcs, repeats)
    entry = {"eo_pipeline_s": t["eo_pipeline"]["median"], "pyresample": note}
    if pr:
        entry["pyresample_s"] = t["pyresample"]["median"]
        entry["speedup"] = t["pyresample"]["median"] / t["eo_pipeline"]["median"]
        a, b = ours_point(), pr()
        both = np.isfinite(a) & np.isfinite(b)
        entry["same_filled_cells"] = bool(np.array_equal(np.isfinite(a), np.isfinite(b)))
        entry["max_abs_diff_ppb"] = float(np.abs(a[both] - b[both]).max())
    report["point_global_0p05"] = entry
    return report


if __name__ == "__main__":
    print(json.dumps(run(), indent=1, default=float))
