# SPDX-License-Identifier: Apache-2.0
"""More workers, faster: 3 days x 14 full-size orbits of daily global_0p05 composites on 1 and 2 workers.

The orbits are the month benchmark's (``bench_month.make_orbits``: made from the real
orbit, full size, in the real S5P layout, cached in ``benchmarks/.data/month/``). Two
ways a user runs the job on N = 1 and 2 single-threaded workers (alternating, repeated):

* **a cluster started by hand**, as on a user's machines: a ``dask scheduler`` process
  and N ``dask worker --nthreads 1 --memory-limit 2GB`` processes on loopback, started
  (fresh for every run) before the timed ``eo-pipeline run JOB --scheduler tcp://...``
  process. Memory: the largest peak resident set (``VmHWM``) of the worker processes.
* **a cluster started by hand and kept**: the same processes started once for N, one
  job run first (untimed), then the timed jobs on it, as a user runs one job after another
  on their cluster (the workers and the scheduler have the pipeline's modules imported).
* **a cluster the run starts**: ``eo-pipeline run`` with ``cluster: {type: local,
  workers: N, threads_per_worker: 1, memory_limit: 2GB}`` as a whole process, the
  workers' start included. Memory: the largest process of the run (GNU time's maximum
  resident set, which covers the client and the worker processes it waited for).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_month import make_orbits, run_eo
from common import WHOLE_ORBIT

BIN = Path(sys.executable).parent


def run_local_cluster(paths: list[Path], work: Path, workers: int, tag: str) -> tuple[float, float, float]:
    """Wall seconds of the run, its largest process (MB), and its computing phase (s, from ``job_summary.json``)."""
    cluster = {"type": "local", "workers": workers, "threads_per_worker": 1, "memory_limit": "2GB"}
    r = run_eo(paths, work, tag=tag, extra={"cluster": cluster})
    return r["seconds"], r["peak_mb"], r["phases"]["computing"]


def _start_cluster(workers: int, work: Path) -> tuple[str, list[subprocess.Popen]]:
    """A ``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes on 127.0.0.1, all joined."""
    from distributed import Client

    sched_file = work / f"scheduler-{time.monotonic_ns()}.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)], **quiet)]
    deadline = time.monotonic() + 60
    while not sched_file.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the dask scheduler did not start")
        time.sleep(0.1)
    procs += [subprocess.Popen([str(BIN / "dask"), "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                "--memory-limit", "2GB", "--no-dashboard", "--host", "127.0.0.1",
                                "--local-directory", str(work / f"w{k}")], **quiet) for k in range(workers)]
    with Client(scheduler_file=str(sched_file), timeout="60s", set_as_default=False) as c:
        c.wait_for_workers(workers, timeout=120)
        address = c.scheduler.address
    time.sleep(1.0)  # the workers settle, as on machines started before the job
    return address, procs


def _peak_rss_mb(procs: list[subprocess.Popen]) -> float:
    """Largest peak resident set (VmHWM) among the processes and their children (the nannies' workers), MB."""
    import psutil

    peak = 0.0
    for p in procs:
        try:
            tree = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for q in tree:
            try:
                for line in Path(f"/proc/{q.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024.0)
            except OSError:
                continue
    return peak


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs[::-1]:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def run_started_cluster(paths: list[Path], work: Path, workers: int, tag: str) -> tuple[float, float, float]:
    """As :func:`run_local_cluster`, the memory being the largest worker's peak."""
    address, procs = _start_cluster(workers, work)
    try:
        r = run_eo(paths, work, tag=tag, args=("--scheduler", address))
        return r["seconds"], _peak_rss_mb(procs[1:]), r["phases"]["computing"]
    finally:
        _stop(procs)


def run_kept_cluster(paths: list[Path], work: Path, repeats: int) -> dict[str, Any]:
    times: dict[int, list[float]] = {1: [], 2: []}
    computing: dict[int, list[float]] = {1: [], 2: []}
    peaks: dict[int, float] = {}
    clusters = {}
    try:
        for n in (1, 2):
            clusters[n] = _start_cluster(n, work)
            run_eo(paths, work, tag=f"kept{n}first", args=("--scheduler", clusters[n][0]))
        for r in range(repeats):
            for n in (1, 2):
                job = run_eo(paths, work, tag=f"kept{n}w{r}", args=("--scheduler", clusters[n][0]))
                times[n].append(job["seconds"])
                computing[n].append(job["phases"]["computing"])
        peaks = {n: _peak_rss_mb(c[1][1:]) for n, c in clusters.items()}
    finally:
        for _, procs in clusters.values():
            _stop(procs)
    return _summary(times, peaks, computing)


def _summary(times: dict[int, list[float]], peaks: dict[int, float],
             computing: dict[int, list[float]]) -> dict[str, Any]:
    """Medians, their ratio, and the median of the ratios of the runs made one after the other.

    The machine's speed drifts between runs; a 1-worker run and the 2-worker run that
    follows it share its state at that moment, so the ratio of each such pair is less
    noisy than the ratio of the medians. Both are reported, for the whole run and for its
    computing phase (``phase_seconds`` of the job summary: the part the workers do); the
    rest of the run (the process's start, opening the inputs, building the graph, the
    catalogue) is the client's and does not shorten with more workers.
    """
    def ratios(t: dict[int, list[float]], prefix: str) -> dict[str, Any]:
        med = {n: statistics.median(v) for n, v in t.items()}
        pairs = [a / b for a, b in zip(t[1], t[2], strict=True)]
        return {f"{prefix}seconds": med, f"all_{prefix}seconds": t, f"{prefix}speedup_2_vs_1": med[1] / med[2],
                f"{prefix}pair_speedups": pairs, f"median_{prefix}pair_speedup": statistics.median(pairs)}

    rest = {n: statistics.median(w - c for w, c in zip(times[n], computing[n], strict=True)) for n in times}
    return {**ratios(times, ""), "peak_mb": peaks, **ratios(computing, "computing_"),
            "outside_computing_seconds": rest}


def run(days: int = 3, per_day: int = 14, repeats: int = 3) -> dict[str, Any]:
    if not WHOLE_ORBIT.exists():
        return {"skipped": f"the real orbit {WHOLE_ORBIT} is not available"}
    paths = make_orbits(days, per_day)
    out: dict[str, Any] = {"orbits": len(paths), "days": days, "repeats": repeats,
                           "targets": {"speedup_2_vs_1": 1.6, "peak_mb_per_worker": 2048}}
    with tempfile.TemporaryDirectory(prefix="eo-cluster-") as tmp:
        work = Path(tmp)
        for mode, job in (("started", run_started_cluster), ("local", run_local_cluster)):
            times: dict[int, list[float]] = {1: [], 2: []}
            computing: dict[int, list[float]] = {1: [], 2: []}
            peaks: dict[int, list[float]] = {1: [], 2: []}
            for r in range(repeats):
                for n in (1, 2):
                    wall, peak, comp = job(paths, work, n, f"{mode}{n}w{r}")
                    times[n].append(wall)
                    computing[n].append(comp)
                    peaks[n].append(peak)
            out[mode] = _summary(times, {n: max(v) for n, v in peaks.items()}, computing)
        out["kept"] = run_kept_cluster(paths, work, repeats)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
