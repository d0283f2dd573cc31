# SPDX-License-Identifier: Apache-2.0
"""More workers, faster: 3 days x 14 full-size orbits of daily global_0p05 composites on a LocalCluster.

The orbits are the month benchmark's (``bench_month.make_orbits``: made from the real
orbit, full size, in the real S5P layout, cached in ``benchmarks/.data/month/``).
``eo-pipeline run`` with ``cluster: {type: local, workers: N, threads_per_worker: 1,
memory_limit: 2GB}`` as a whole process, N = 1 and 2 (alternating, repeated): wall time,
and the largest resident memory of any process of the run (GNU time's maximum resident
set, which covers the client and the worker processes it waited for).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench_month import make_orbits, run_eo
from common import WHOLE_ORBIT


def run_job(paths: list[Path], work: Path, workers: int, tag: str) -> tuple[float, float]:
    cluster = {"type": "local", "workers": workers, "threads_per_worker": 1, "memory_limit": "2GB"}
    r = run_eo(paths, work, tag=tag, extra={"cluster": cluster})
    return r["seconds"], r["peak_mb"]


def run(days: int = 3, per_day: int = 14, repeats: int = 3) -> dict[str, Any]:
    if not WHOLE_ORBIT.exists():
        return {"skipped": f"the real orbit {WHOLE_ORBIT} is not available"}
    paths = make_orbits(days, per_day)
    times: dict[int, list[float]] = {1: [], 2: []}
    peaks: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="eo-cluster-") as tmp:
        work = Path(tmp)
        for r in range(repeats):
            for n in (1, 2):
                wall, peak = run_job(paths, work, n, f"{n}w{r}")
                times[n].append(wall)
                peaks[n].append(peak)
    med = {n: statistics.median(v) for n, v in times.items()}
    return {"orbits": len(paths), "days": days, "repeats": repeats,
            "seconds": med, "all_seconds": times, "peak_mb": {n: max(v) for n, v in peaks.items()},
            "speedup_2_vs_1": med[1] / med[2], "targets": {"speedup_2_vs_1": 1.6, "peak_mb_per_worker": 2048}}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
