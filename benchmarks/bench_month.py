# SPDX-License-Identifier: Apache-2.0
"""A month of daily global_0p05 composites from full-size orbits, against HARP's binning alone.

The orbits are made from the real whole S5P orbit in ``../shared/data/s5p`` (issue 9's
recipe): orbit k of a day is the real orbit moved 25.3 degrees west per orbit and 101
minutes later, each day a day later; written at full size (3245 x 215 pixels) in the
real S5P L2 CH4 layout (PRODUCT/SUPPORT_DATA groups, corners derived from the centres,
the real CH4 values as ``methane_mixing_ratio_bias_corrected``, ``qa_value`` 1.0 where
the real file has a value) by eo_pipeline's sample writer, and cached in
``benchmarks/.data/month/`` (not committed).

* **eo_pipeline, the command users run**: ``eo-pipeline run month.yaml`` (daily
  composites, area binning, global_0p05, one COG per day with the default statistics),
  as a whole process: wall time and peak resident memory.
* **HARP**: ``bin_spatial`` onto the same grid, on the same polygons (each generated
  orbit's valid pixels and corners, in HARP's own netCDF import format). HARP's
  binning time per orbit is ``harpdump -l -a 'bin_spatial(...)'`` minus ``harpdump -l``
  on the same file (start-up and reading not counted), measured on a sample of the
  orbits and multiplied by the number of orbits: HARP's binning alone, not its reading
  or writing.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from common import ROOT, WHOLE_ORBIT

DATA = ROOT / "benchmarks" / ".data" / "month"
GENERATOR = "month-v1"
SHIFT_DEG = 25.3
ORBIT_MINUTES = 101
OP = "bin_spatial(3601,-90,0.05,7201,-180,0.05)"


def _real_orbit() -> dict[str, Any]:
    import eo_pipeline as eo
    from eo_pipeline.footprints import derive_corners

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = eo.open_product(WHOLE_ORBIT).compute()
    lat, lon = ds.latitude.values, ds.longitude.values
    blat, blon = derive_corners(lat, lon)
    ch4 = ds.xch4.values.astype(np.float64)
    t = ds.time.values
    scan_t = t[:, 0] if t.ndim == 2 else t
    return {"lat": lat, "lon": lon, "blat": blat, "blon": blon, "ch4": ch4, "time": scan_t.astype("datetime64[ms]")}


def _wrap(lon: np.ndarray) -> np.ndarray:
    return (lon + 180.0) % 360.0 - 180.0


def make_orbits(days: int, per_day: int, out: Path = DATA) -> list[Path]:
    """Write (or reuse) ``days`` x ``per_day`` full-size S5P CH4 orbits; returns their paths."""
    from eo_pipeline.samples.writers import s5p_filename, write_s5p_l2

    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "GENERATOR"
    if not stamp.exists() or stamp.read_text().strip() != GENERATOR:
        for old in out.glob("S5P_*.nc"):
            old.unlink()
        stamp.write_text(GENERATOR + "\n")
    base = None
    paths = []
    first_orbit = 7407
    for d in range(days):
        for k in range(per_day):
            n = d * per_day + k
            shift = np.timedelta64(d, "D") + np.timedelta64(k * ORBIT_MINUTES, "m")
            t0 = np.datetime64("2019-03-19T11:08:35") + shift
            t1 = np.datetime64("2019-03-19T12:50:06") + shift
            name = s5p_filename("CH4", t0, t1, first_orbit + n, "020500", t1 + np.timedelta64(6, "D"))
            path = out / name
            paths.append(path)
            if path.exists():
                continue
            if base is None:
                base = _real_orbit()
            dlon = -SHIFT_DEG * k
            qa = np.where(np.isfinite(base["ch4"]), 1.0, 0.0)
            tmp = path.with_name(f".{path.name}.tmp")
            write_s5p_l2(tmp, "CH4", lat=base["lat"], lon=_wrap(base["lon"] + dlon), lat_bounds=base["blat"],
                         lon_bounds=_wrap(base["blon"] + dlon), scanline_time=base["time"] + shift,
                         columns={"methane_mixing_ratio_bias_corrected": base["ch4"],
                                  "methane_mixing_ratio": base["ch4"] - 3.0,
                                  "methane_mixing_ratio_precision": np.where(np.isfinite(base["ch4"]), 9.0, np.nan)},
                         qa_value=qa, orbit=first_orbit + n,
                         extra_global_attrs={"synthetic": "benchmark orbit made from the real orbit 07407 "
                                             f"(moved {dlon:+.1f} degrees, {shift})"})
            os.replace(tmp, path)
    return paths


def _peak_run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall time (s) and peak resident memory (MB) of a whole process."""
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    peak_kb = float(proc.stderr.strip().splitlines()[-1])
    return wall, peak_kb / 1024.0, proc.stderr


def run_eo(paths: list[Path], work: Path, *, tag: str, extra: dict[str, Any] | None = None,
           args: tuple[str, ...] = ()) -> dict[str, Any]:
    """``eo-pipeline run`` of daily global_0p05 composites over ``paths`` (``extra``: more config keys; ``args``: more
    command-line arguments)."""
    import yaml

    out = work / f"out-{tag}"
    job = work / f"month-{tag}.yaml"
    job.write_text(yaml.safe_dump({
        "name": f"bench-{tag}", "inputs": [str(p) for p in paths],
        "gridding": {"grid": "global_0p05", "method": "area", "composite": "day"},
        "output": {"dir": str(out), "formats": ["geotiff"]}, **(extra or {}),
    }))
    exe = str(Path(sys.executable).parent / "eo-pipeline")
    wall, peak, _ = _peak_run([exe, "run", str(job), "-q", *args])
    tifs = sorted(out.glob("*.tif"))
    summary = out / "job_summary.json"
    phases = json.loads(summary.read_text()).get("phase_seconds", {}) if summary.exists() else {}
    return {"orbits": len(paths), "seconds": wall, "peak_mb": peak, "cogs": len(tifs),
            "cog_mb": sum(t.stat().st_size for t in tifs) / 2**20, "phases": phases}


def harp_binning_per_orbit(paths: list[Path], work: Path, sample: int) -> dict[str, Any]:
    """HARP's bin_spatial time per orbit on the same polygons (median over ``sample`` orbits)."""
    from bench_gridding import ensure_harp, harp_times, write_harp_input

    exe, how = ensure_harp()
    if exe is None:
        return {"skipped": how}
    import eo_pipeline as eo

    per = []
    for p in paths[:: max(1, len(paths) // sample)][:sample]:
        ds = eo.open_product(p).compute()
        v = ds.valid.values.ravel()
        hf = write_harp_input(work / f"{p.stem}.harp.nc", ds.longitude_bounds.values.reshape(-1, 4)[v].astype(float),
                              ds.latitude_bounds.values.reshape(-1, 4)[v].astype(float),
                              ds.xch4.values.ravel()[v].astype(float))
        per.append(harp_times(hf, OP, 5)["binning"])
        hf.unlink()
    return {"how": how, "per_orbit_s": statistics.median(per), "sampled": len(per)}


def run(days: int = 30, per_day: int = 14, harp_sample: int = 6) -> dict[str, Any]:
    import tempfile

    if not WHOLE_ORBIT.exists():
        return {"skipped": f"the real orbit {WHOLE_ORBIT} is not available"}
    t = time.perf_counter()
    paths = make_orbits(days, per_day)
    made = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="eo-month-") as tmp:
        work = Path(tmp)
        ours = run_eo(paths, work, tag=f"{days}d")
        harp = harp_binning_per_orbit(paths, work, harp_sample)
    report: dict[str, Any] = {"days": days, "orbits_per_day": per_day, "orbits": len(paths),
                              "orbit_mb": paths[0].stat().st_size / 2**20, "generation_s": made, "eo_pipeline": ours,
                              "harp": harp, "targets": {"peak_mb": 2048, "speedup_vs_harp_binning": 2.0}}
    if "per_orbit_s" in harp:
        harp_total = harp["per_orbit_s"] * len(paths)
        report["harp"]["binning_total_s"] = harp_total
        report["speedup_vs_harp_binning"] = harp_total / ours["seconds"]
    return report


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-day", type=int, default=14)
    ap.add_argument("--harp-sample", type=int, default=6)
    a = ap.parse_args()
    print(json.dumps(run(a.days, a.per_day, a.harp_sample), indent=1))
