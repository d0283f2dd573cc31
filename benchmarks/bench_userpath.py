# SPDX-License-Identifier: Apache-2.0
"""The paths users take, on the real whole S5P orbit, side by side with HARP.

* **The Python call**: ``eo.grid_soundings([orbit], grid, statistics=...).compute()``,
  with the product lazy (as ``open_product`` returns it, opened just before the call;
  and again with the opening inside the timed call) and already loaded (``.load()``), every statistic and the default three, onto global_0p05 and
  global_0p01 (seven 0.01 degree maps are 18 GB in size, of which an orbit touches a
  few hundred MB: the empty cells are not written). Timed in a warm process (numba's compiled kernels loaded), from the
  call to the dense grids in memory (the first call of the process, which also loads
  the kernels and makes the maps' fill templates, is reported apart). HARP's time is its binning alone
  (``harpdump -l -a 'bin_spatial(...)'`` minus ``harpdump -l``) on the same polygons.
* **The command**: ``eo-pipeline grid ORBIT --grid global_0p05 -o OUT.tif`` (and
  ``OUT.nc``) as whole processes, against ``harpconvert -a 'bin_spatial(...)'`` on the
  same polygons writing its own file, as whole processes: wall time, median of
  repeated runs alternating the two.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench_gridding import GRIDS, ensure_harp, harp_times, load_orbit, valid_polygons, write_harp_input
from common import WHOLE_ORBIT


def _call(grid: str, stats: Any, state: str, loaded: Any = None) -> float:
    """One timed call; ``state``: "lazy" (a product just opened), "lazy, opened in the call", "loaded"."""
    import eo_pipeline as eo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = loaded if state == "loaded" else eo.open_product(WHOLE_ORBIT)  # a fresh lazy product each call
        t = time.perf_counter()
        if state == "lazy, opened in the call":
            src = eo.open_product(WHOLE_ORBIT)
        eo.grid_soundings([src], grid, statistics=stats).compute()
        return time.perf_counter() - t


STATES = ("lazy", "lazy, opened in the call", "loaded")


def python_call(repeats: int) -> dict[str, Any]:
    import eo_pipeline as eo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = eo.open_product(WHOLE_ORBIT).load()
    out: dict[str, Any] = {}
    # the first call of a process: numba's compiled code is loaded, and the map's NaN
    # template is made (eo_pipeline._fill); later calls reuse both
    out["global_0p05/all/lazy/first call"] = _call("global_0p05", "all", "lazy")
    out["global_0p01/all/lazy/first call"] = _call("global_0p01", "all", "lazy")
    for grid, cases in (("global_0p05", (("all", "all"), ("default", ["mean", "count", "weight"]))),
                        ("global_0p01", (("all", "all"), ("default", ["mean", "count", "weight"])))):
        for label, stats in cases:
            n = repeats if grid == "global_0p05" else max(1, repeats // 3)
            times: dict[str, list[float]] = {s: [] for s in STATES}
            for _ in range(n):  # the three states interleaved
                for state in STATES:
                    times[state].append(_call(grid, stats, state, loaded))
            for state in STATES:
                out[f"{grid}/{label}/{state}"] = statistics.median(times[state])
    return out


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr[-1500:]}")
    return time.perf_counter() - t


def command(harp_file: Path | None, work: Path, repeats: int) -> dict[str, Any]:
    exe = str(Path(sys.executable).parent / "eo-pipeline")
    ours_tif = [exe, "grid", str(WHOLE_ORBIT), "--grid", "global_0p05", "-o", str(work / "ours.tif"), "-q"]
    ours_nc = [exe, "grid", str(WHOLE_ORBIT), "--grid", "global_0p05", "-o", str(work / "ours.nc"), "-q"]
    cmds = {"eo-pipeline grid -> .tif": ours_tif, "eo-pipeline grid -> .nc": ours_nc}
    if harp_file is not None:
        cmds["harpconvert bin_spatial"] = ["harpconvert", "-a", GRIDS["global_0p05"], str(harp_file),
                                           str(work / "harp.nc")]
    for cmd in cmds.values():  # warm the page cache and numba's on-disk cache
        _wall(cmd)
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(repeats):
        for k, cmd in cmds.items():
            times[k].append(_wall(cmd))
    return {k: statistics.median(v) for k, v in times.items()}


def run(repeats: int = 7) -> dict[str, Any]:
    if not WHOLE_ORBIT.exists():
        return {"skipped": f"{WHOLE_ORBIT} not found"}
    report: dict[str, Any] = {}
    ds = load_orbit()
    lon_b, lat_b, x, _, _ = valid_polygons(ds)
    report["pixels"] = int(x.size)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        harp, how = ensure_harp()
        report["harp"] = how
        harp_file = write_harp_input(tmp / "orbit_harp.nc", lon_b, lat_b, x) if harp else None
        report["python_call"] = python_call(repeats)
        if harp_file is not None:
            report["harp_binning"] = {g: harp_times(harp_file, op, repeats)["binning"] for g, op in GRIDS.items()}
        report["command"] = command(harp_file, tmp, repeats)
    return report


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
