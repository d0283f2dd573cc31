# SPDX-License-Identifier: Apache-2.0
"""Schedulers and clusters (issue 10): the same job gives the same files wherever it runs.

The demo job (every stage: gridding, anomalies, hotspots, region tables, forest) is run
as a whole ``eo-pipeline run`` process with the threaded, multiprocessing and
synchronous schedulers, a 2-worker ``LocalCluster`` from the config's ``cluster:``
section, and a real cluster started on loopback as a user would on their machines (a
``dask scheduler`` process and two ``dask worker`` processes); every output must be
identical: data, georeference, tags and tables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml

from eo_pipeline.cluster import choose_scheduler, jobqueue_cluster
from eo_pipeline.config import config_hash, load_config
from eo_pipeline.errors import ConfigError

from .test_pipeline import demo_config

BIN = Path(sys.executable).parent
EXE = str(BIN / "eo-pipeline")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _assert_same_outputs(a: Path, b: Path, same_job: bool = True) -> None:
    """Every file of run ``a`` is in run ``b`` with the same content (maps: values, grid, tags).

    ``same_job=False``: the two runs read the same files from different folders, so their
    configuration hashes (and the input paths in the manifests and tags) differ.
    """
    names_a = sorted(p.name for p in a.iterdir() if not p.name.startswith("."))
    names_b = sorted(p.name for p in b.iterdir() if not p.name.startswith("."))
    assert names_a == names_b
    assert any(n.endswith(".tif") for n in names_a) and any(n.endswith(".csv") for n in names_a)
    for name in names_a:
        pa, pb = a / name, b / name
        if name == "job_summary.json":
            sa, sb = json.loads(pa.read_text()), json.loads(pb.read_text())
            for key in ("config_hash", "soundings_used", "footprints_dropped")[0 if same_job else 1:]:
                assert sa[key] == sb[key], key
            assert [Path(o).name for o in sa["outputs"]] == [Path(o).name for o in sb["outputs"]]
        elif name == "manifest.json":  # where and when differ; what was made from what does not
            ma, mb = json.loads(pa.read_text()), json.loads(pb.read_text())
            assert ma["periods"] == mb["periods"] and sorted(ma["outputs"]) == sorted(mb["outputs"])
            for key, ea in ma["outputs"].items():
                eb = mb["outputs"][key]
                assert ea["step"] == eb["step"]
                assert [Path(i["path"]).name for i in ea["inputs"]] == [Path(i["path"]).name for i in eb["inputs"]]
                assert not same_job or ea["config_hash"] == eb["config_hash"] == ma["config_hash"]
        elif name in ("stac", "collection.json"):  # the catalogue: the same items, assets and facts
            _assert_same_catalogue(pa, pb, same_job)
        elif name.endswith(".tif"):
            with rasterio.open(pa) as ra, rasterio.open(pb) as rb:
                assert (ra.crs, ra.transform, ra.shape, ra.count) == (rb.crs, rb.transform, rb.shape, rb.count), name
                ta, tb = ra.tags(), rb.tags()
                if not same_job:
                    ta.pop("config_hash", None)
                    tb.pop("config_hash", None)
                assert ta == tb, name
                assert [ra.tags(k) for k in range(1, ra.count + 1)] == [rb.tags(k) for k in range(1, rb.count + 1)]
                assert ra.overviews(1) == rb.overviews(1), name
                np.testing.assert_array_equal(ra.read(), rb.read(), err_msg=name)
        elif name.endswith(".nc"):
            with xr.open_dataset(pa) as xa, xr.open_dataset(pb) as xb:
                for key in ("history",) if same_job else ("history", "config_hash"):
                    xa.attrs.pop(key, None)
                    xb.attrs.pop(key, None)
                xr.testing.assert_identical(xa, xb)
        else:  # tables (CSV, GeoJSON), quicklooks
            assert pa.read_bytes() == pb.read_bytes(), name


def _assert_same_catalogue(pa: Path, pb: Path, same_job: bool) -> None:
    files_a = sorted(p.relative_to(pa) for p in pa.rglob("*") if p.is_file()) if pa.is_dir() else [Path()]
    files_b = sorted(p.relative_to(pb) for p in pb.rglob("*") if p.is_file()) if pb.is_dir() else [Path()]
    assert files_a == files_b
    for rel in files_a:
        fa, fb = pa / rel, pb / rel
        if fa.suffix != ".json" or same_job:
            assert fa.read_bytes() == fb.read_bytes(), rel
            continue
        da, db = json.loads(fa.read_text()), json.loads(fb.read_text())
        for d in (da, db):  # the runs read the same files from different folders, with other config hashes
            d.pop("description", None)
            d.pop("eo_pipeline:config_hash", None)
            for key in ("eo_pipeline:inputs", "eo_pipeline:config_hash"):
                d.get("properties", {}).pop(key, None)
        assert da == db, rel


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    cfg = demo_config(tmp)
    doc = yaml.safe_load(cfg.read_text())
    doc["gridding"]["composite"] = "day"  # daily maps: per-period blocks, several COGs
    cfg.write_text(yaml.safe_dump(doc))
    return cfg


@pytest.fixture(scope="module")
def threads_run(job):
    out = job.parent / "threads"
    _cli("run", str(job), "--scheduler", "threads", "--output", str(out), "-q", cwd=job.parent)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["processes", "synchronous"])
def test_local_schedulers_write_the_same_files(job, threads_run, scheduler):
    out = job.parent / scheduler
    _cli("run", str(job), "--scheduler", scheduler, "--workers", "2", "--output", str(out), "-q", cwd=job.parent)
    _assert_same_outputs(threads_run, out)


@pytest.mark.slow
def test_local_cluster_from_the_config_writes_the_same_files(job, threads_run):
    doc = yaml.safe_load(job.read_text())
    doc["cluster"] = {"type": "local", "workers": 2, "threads_per_worker": 1, "memory_limit": "2GB"}
    cfg = job.parent / "job_local_cluster.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    assert config_hash(load_config(cfg)) == config_hash(load_config(job))  # where it runs is not what it computes
    out = job.parent / "local_cluster"
    _cli("run", str(cfg), "--output", str(out), "-q", cwd=job.parent)
    _assert_same_outputs(threads_run, out)


@pytest.mark.slow
def test_a_local_cluster_knows_its_loopback_and_its_workers_preload_the_tasks_modules():
    """The run's local cluster starts with a loopback bandwidth estimate; its workers import the tasks' modules."""
    from eo_pipeline.cluster import LOOPBACK_BANDWIDTH, SchedulerChoice, _client

    def preloaded(dask_worker) -> bool:
        plugin = dask_worker.plugins["eo-pipeline-preload"]
        plugin.thread.join(120)
        return all(m in sys.modules for m in plugin.modules)

    choice = SchedulerChoice("local_cluster", options=(("n_workers", 1), ("threads_per_worker", 1),
                                                       ("memory_limit", "1GB")))
    client, cluster = _client(choice)
    try:
        assert cluster.scheduler.bandwidth == LOOPBACK_BANDWIDTH
        assert set(client.run(preloaded).values()) == {True}
    finally:
        client.close()
        cluster.close()


#: Locks held by a killed worker are released after 5 s (default 30 s), in every process of the cluster.
CLUSTER_ENV = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": "5s",
               "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL": "1s"}


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
                            env=CLUSTER_ENV)


def _wait_for_workers(scheduler_file: Path, n: int, timeout: float = 120.0) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    while not scheduler_file.exists():
        if time.monotonic() > deadline:
            raise AssertionError("the dask scheduler did not write its scheduler file")
        time.sleep(0.2)
    with Client(scheduler_file=str(scheduler_file), timeout="60s", set_as_default=False) as c:
        c.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))


@pytest.fixture
def loopback_cluster(tmp_path):
    """A ``dask scheduler`` and two single-threaded ``dask worker`` processes on 127.0.0.1."""
    sched_file = tmp_path / "scheduler.json"
    procs = [_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], tmp_path / "scheduler.log")]
    try:
        for k in range(2):
            procs.append(_start([str(BIN / "dask"), "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                 "--name", f"w{k}",
                                 "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "2GB",
                                 "--local-directory", str(tmp_path / f"w{k}")], tmp_path / f"worker{k}.log"))
        _wait_for_workers(sched_file, 2)
        yield sched_file, procs
    finally:
        for p in procs[::-1]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.slow
def test_real_loopback_cluster_writes_the_same_files(job, threads_run, loopback_cluster, tmp_path):
    sched_file, _ = loopback_cluster
    address = json.loads(sched_file.read_text())["address"]
    out_file = tmp_path / "by_file"
    _cli("run", str(job), "--scheduler", str(sched_file), "--output", str(out_file), "-q", cwd=tmp_path)
    _assert_same_outputs(threads_run, out_file)
    out_addr = tmp_path / "by_address"
    _cli("run", str(job), "--scheduler", address, "--output", str(out_addr), "-q", cwd=tmp_path)
    _assert_same_outputs(threads_run, out_addr)
    _assert_scheduler_preloaded(address)


def _assert_scheduler_preloaded(address: str) -> None:
    """The ``dask scheduler`` process holds the run's preload plugin, and it imported the tasks' modules."""
    from distributed import Client

    def preloaded(dask_scheduler) -> tuple[bool, bool]:
        plugin = dask_scheduler.plugins.get("eo-pipeline-scheduler-preload")
        if plugin is None or plugin.thread is None:
            return False, False
        plugin.thread.join(120)
        return True, all(m in sys.modules for m in plugin.modules)

    with Client(address, timeout="60s", set_as_default=False) as client:
        assert client.run_on_scheduler(preloaded) == (True, True)


def _worker_load(client) -> dict:
    """Per worker name: (tasks it runs, results it holds)."""
    names = {addr: w["name"] for addr, w in client.scheduler_info()["workers"].items()}
    processing, has_what = client.processing(), client.has_what()
    return {names[a]: (len(processing.get(a, ())), len(has_what.get(a, ()))) for a in names}


@pytest.mark.slow
def test_workers_write_the_maps_and_only_small_results_reach_the_client(tmp_path, monkeypatch):
    """On a cluster, output blocks are finalized and written on the workers: the client gathers paths, not grids.

    Every value a ``distributed.Client`` brings back to this process is measured; one
    dense 0.1-degree global statistic alone would be 26 MB.
    """
    import dask
    import distributed

    from eo_pipeline._worker_tuning import MallocTuning, tune_malloc
    from eo_pipeline.io.geotiff import TILE_THREADS, tile_threads
    from eo_pipeline.pipeline import run

    from .conftest import SAMPLES

    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "global", "inputs": [str(SAMPLES / "S5P_OFFL_L2__CH4____*.nc")],
        "gridding": {"grid": "global_0p1", "method": "area", "composite": "day", "statistics": "all"},
        "output": {"dir": str(tmp_path / "out"), "formats": ["geotiff", "netcdf", "quicklook"]}}))
    gathered: list[int] = []
    gather = distributed.Client.gather

    def measured(self, *args, **kwargs):
        out = gather(self, *args, **kwargs)
        gathered.append(dask.sizeof.sizeof(out))
        return out

    monkeypatch.setattr(distributed.Client, "gather", measured)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        result = run(load_config(cfg), scheduler=cl.scheduler_address)
        with distributed.Client(cl, set_as_default=False) as client:  # the run tuned every worker's malloc
            tuned = client.run(lambda dask_worker: getattr(dask_worker.plugins.get(MallocTuning.name), "applied", None))
            in_worker = client.submit(tile_threads, pure=False).result()
    # the other worker was idle: a one-block map's tiles would take its thread too (see the test below
    # for a busy one)
    assert in_worker == min(TILE_THREADS, 2) and tile_threads() == TILE_THREADS
    assert set(tuned.values()) == {tune_malloc()}, tuned  # True on glibc, False elsewhere
    assert gathered and sum(gathered) < 200_000, gathered
    tif = tmp_path / "out" / "xch4_area_global_0p1_20230715.tif"
    assert str(tif) in result.outputs
    with rasterio.open(tif) as src:
        assert src.count == 7 and src.shape == (1800, 3600)
        assert np.isfinite(src.read(1)).sum() > 1000


class _Placements:
    """Scheduler plugin of the test below: each annotated task's restrictions as its graph arrives."""

    name = "test-placements"

    def __init__(self, annotation: str) -> None:
        self.annotation, self.seen = annotation, []

    def update_graph(self, scheduler, *, annotations=None, priority=None, **kwargs) -> None:
        blocks = (annotations or {}).get(self.annotation, {})
        self.seen += sorted((blocks[k], str(k), sorted(scheduler.tasks[k].worker_restrictions or ()),
                             scheduler.tasks[k].loose_restrictions) for k in blocks)


def test_the_blocks_of_a_map_are_finalized_turn_by_turn_on_the_workers(tmp_path):
    """On a cluster, a run's output blocks go to the workers in turn (loosely), not all to the one holding the sums."""
    import distributed
    from distributed.diagnostics.plugin import SchedulerPlugin

    from eo_pipeline.cluster import SPREAD, _tuned
    from eo_pipeline.pipeline import run

    from .conftest import SAMPLES

    class Placements(_Placements, SchedulerPlugin):
        pass

    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "spread", "inputs": [str(SAMPLES / "S5P_OFFL_L2__CH4____*.nc")],
        "gridding": {"grid": "global_0p1", "method": "area", "composite": "day", "chunk": 1024},
        "output": {"dir": str(tmp_path / "out"), "formats": ["geotiff"]}}))
    blocks = 2 * 4  # 1800 x 3600 cells in blocks of 1024: 2 x 4 per day, one day
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cl, \
            distributed.Client(cl, set_as_default=False) as client:
        _tuned(client)  # as the run will (idempotent): the recorder below then comes after SpreadBlocks
        client.register_plugin(Placements(SPREAD))
        with distributed.get_task_stream(client=client) as stream:
            run(load_config(cfg), scheduler=cl.scheduler_address)
        seen = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins["test-placements"].seen)
        workers = sorted(client.nthreads())
    assert [tid for tid, _, _, _ in seen] == list(range(blocks))  # each block's finalize task, annotated
    assert all(k.startswith("finalize_statistics") for _, k, _, _ in seen)
    assert [w for _, _, w, _ in seen] == [[workers[i % 2]] for i in range(blocks)]  # in turn
    assert all(loose for _, _, _, loose in seen)  # a lost worker's blocks go elsewhere
    ran = [t["worker"] for t in stream.data if str(t["key"]).startswith("finalize_statistics")]
    assert len(ran) == blocks and set(ran) == set(workers)
    with rasterio.open(tmp_path / "out" / "xch4_area_global_0p1_20230715.tif") as src:
        assert src.shape == (1800, 3600) and np.isfinite(src.read(1)).sum() > 1000


@pytest.mark.slow
def test_a_one_block_maps_tiles_borrow_only_idle_workers_threads():
    """In a worker, a one-block map's tiles are compressed with its one thread while the other workers on its
    host work, else with theirs too."""
    import distributed

    from eo_pipeline.io.geotiff import TILE_THREADS, tile_threads

    def hold(event_name: str) -> bool:
        return distributed.Event(event_name).wait(60)

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl, set_as_default=False) as client:
        a, b = sorted(client.nthreads())
        assert client.submit(tile_threads, pure=False, workers=[a]).result() == min(TILE_THREADS, 2)
        busy = client.submit(hold, "release", pure=False, workers=[b])
        deadline = time.monotonic() + 30
        while not client.processing([b])[b] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.processing([b])[b], "the holding task never reached its worker"
        assert client.submit(tile_threads, pure=False, workers=[a]).result() == 1
        distributed.Event("release", client=client).set()
        assert busy.result() is True
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl, set_as_default=False) as client:
        assert client.submit(tile_threads, pure=False).result() == 1  # alone: one thread


@pytest.mark.slow
def test_a_worker_killed_during_the_run_changes_nothing(job, threads_run, loopback_cluster, tmp_path):
    """SIGKILL one of two workers (its whole process group) while it runs tasks and holds results.

    The scheduler reruns what was lost on the other worker, including writer tasks that
    had already finished (their results lived on the dead worker): the outputs must be
    the same files, and nothing half-written or temporary may be left. Which tasks are
    lost depends on the moment of the kill; the worst cases (a writer's first task rerun
    after blocks were written, its last task rerun after the file was done) are
    reproduced deterministically in ``test_writer_safety.py``.
    """
    from distributed import Client

    sched_file, procs = loopback_cluster
    victim = procs[1]  # worker "w0"
    out = tmp_path / "lost_worker"
    run = subprocess.Popen([EXE, "run", str(job), "--scheduler", str(sched_file), "--output", str(out), "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=CLUSTER_ENV)
    load = {}
    with Client(scheduler_file=str(sched_file), timeout="30s", set_as_default=False) as client:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            load = _worker_load(client)
            busy, held = load.get("w0", (0, 0))
            if busy and held >= 3 and any(p.name.startswith(".") for p in out.glob("*")):
                break
            time.sleep(0.05)
        running = run.poll() is None
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    assert running, f"the run ended before the worker could be killed (load {load}); make the job longer"
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    _assert_same_outputs(threads_run, out)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporaries, no markers


def test_unreachable_scheduler_is_one_line(job, tmp_path):
    proc = subprocess.run([EXE, "run", str(job), "--scheduler", "tcp://127.0.0.1:9", "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tcp://127.0.0.1:9" in lines[0] and "dask scheduler" in lines[0], proc.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ------------------------------------------------------------------ resolving the scheduler


def test_scheduler_names_addresses_and_files(tmp_path):
    assert choose_scheduler(None).kind == "threads"
    assert choose_scheduler("Processes", workers=3) == choose_scheduler("processes", workers=3)
    assert choose_scheduler("processes", workers=3).workers == 3
    assert choose_scheduler("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    f = tmp_path / "sched.json"
    f.write_text("{}")
    assert choose_scheduler(str(f)).scheduler_file == f.resolve()
    with pytest.raises(ConfigError, match="no such scheduler file"):
        choose_scheduler(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="threads, processes, synchronous"):
        choose_scheduler("gpu")
    with pytest.raises(ConfigError, match="positive"):
        choose_scheduler("threads", workers=0)
    for running in ("tcp://10.0.0.5:8786", str(f)):  # --workers cannot size a scheduler someone else started
        with pytest.raises(ConfigError, match="running dask scheduler"):
            choose_scheduler(running, workers=2)


def _cfg_with_cluster(tmp_path: Path, cluster: dict) -> Path:
    p = demo_config(tmp_path)
    doc = yaml.safe_load(p.read_text())
    doc["cluster"] = cluster
    p.write_text(yaml.safe_dump(doc))
    return p


def test_cluster_section_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of type"):
        load_config(_cfg_with_cluster(tmp_path, {"workers": 2}))
    with pytest.raises(ConfigError, match="exactly one of type"):
        load_config(_cfg_with_cluster(tmp_path, {"type": "local", "address": "tcp://h:1"}))
    with pytest.raises(ConfigError, match="cluster.type"):
        load_config(_cfg_with_cluster(tmp_path, {"type": "kubernetes"}))
    cfg = load_config(_cfg_with_cluster(tmp_path, {"type": "local", "workers": 3, "memory_limit": "3GB"}))
    choice = choose_scheduler(None, cfg.cluster)
    assert choice.kind == "local_cluster" and dict(choice.options)["n_workers"] == 3
    assert dict(choose_scheduler(None, cfg.cluster, workers=5).options)["n_workers"] == 5
    assert choose_scheduler("synchronous", cfg.cluster).kind == "synchronous"  # the command line wins
    sched = tmp_path / "s.json"
    sched.write_text("{}")
    cfg = load_config(_cfg_with_cluster(tmp_path, {"scheduler_file": "s.json"}))  # relative to the config file
    assert choose_scheduler(None, cfg.cluster, base_dir=cfg.base_dir).scheduler_file == sched.resolve()


def test_slurm_job_script_asks_for_the_configured_resources(tmp_path):
    pytest.importorskip("dask_jobqueue", reason="the [cluster] extra (dask-jobqueue) is not installed")
    cfg = load_config(_cfg_with_cluster(tmp_path, {
        "type": "slurm", "jobs": 4, "cores": 8, "memory": "32GB", "processes": 2, "walltime": "02:30:00",
        "queue": "compute", "account": "ghg-proj", "job_extra_directives": ["--constraint=skylake"],
        "job_script_prologue": ["module load python"]}))
    choice = choose_scheduler(None, cfg.cluster)
    opts = dict(choice.options)
    assert choice.kind == "slurm" and opts["jobs"] == 4
    cluster = jobqueue_cluster("slurm", opts)  # built, never scaled: nothing is submitted
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    assert lines[0].startswith("#!")
    for directive in ("#SBATCH -p compute", "#SBATCH -A ghg-proj", "#SBATCH -n 1", "#SBATCH --cpus-per-task=8",
                      "#SBATCH -t 02:30:00", "#SBATCH --constraint=skylake"):
        assert directive in lines, (directive, script)
    mem = [x for x in lines if x.startswith("#SBATCH --mem=")]
    assert mem == ["#SBATCH --mem=30G"], mem  # 32 GB = 29.8 GiB, rounded up by dask-jobqueue
    assert "module load python" in script
    worker = next(x for x in lines if "--nthreads" in x)  # 2 worker processes sharing 8 cores and 32 GB
    assert "distributed.cli.dask_worker" in worker and "--nworkers 2" in worker and "--nthreads 4" in worker
    assert "--memory-limit 14.90GiB" in worker, worker
    # PBS: the same section with type: pbs
    cfg = load_config(_cfg_with_cluster(tmp_path, {"type": "pbs", "cores": 4, "memory": "16GB",
                                                   "walltime": "01:00:00", "queue": "short"}))
    pbs = jobqueue_cluster("pbs", dict(choose_scheduler(None, cfg.cluster).options))
    try:
        script = pbs.job_script()
    finally:
        pbs.close()
    lines = script.splitlines()
    for directive in ("#PBS -q short", "#PBS -l select=1:ncpus=4:mem=15GB", "#PBS -l walltime=01:00:00"):
        assert directive in lines, (directive, script)


def test_slurm_without_dask_jobqueue_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # as if the [cluster] extra were not installed
    with pytest.raises(ConfigError, match=r"needs dask-jobqueue; install it with pip install 'eo_pipeline\[cluster\]'"):
        jobqueue_cluster("slurm", {"cores": 1})


def _batch(d: Path) -> tuple[list[Path], dict[str, Path]]:
    """Good sample scenes, a copy of one (a duplicate), and damaged files: truncated, not HDF5, empty."""
    import shutil

    from .conftest import SAMPLES
    from .damage import write_damaged_inputs

    good = [*sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc")), *sorted(SAMPLES.glob("oco2_LtCO2_*.nc4")),
            *sorted(SAMPLES.glob("ESACCI-GHG-L2-CH4-GOSAT-*.nc"))]
    files = []
    for p in good:
        shutil.copy(p, d / p.name)
        files.append(d / p.name)
    bad = write_damaged_inputs(d, good[0])
    (d / "again").mkdir()
    shutil.copy(good[0], d / "again" / good[0].name)  # the same product twice: dropped with a warning
    files[1:1] = [bad["truncated"], d / "again" / good[0].name]
    files += [bad["text"], bad["empty"]]
    return files, bad


@pytest.mark.slow
def test_workers_open_the_inputs_as_the_client_would(tmp_path, monkeypatch):
    """On a cluster the workers open inputs from the back while the client opens from the front: same result.

    The datasets (their variables' dask names, so the same graph), the inputs skipped and
    why, the warnings, and with ``on_error: fail`` the error, are those of the client
    opening every input itself.
    """
    import warnings

    import distributed

    import eo_pipeline.pipeline as pipeline
    from eo_pipeline.errors import EOPipelineError
    from eo_pipeline.pipeline import open_inputs

    files, bad = _batch(tmp_path)
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({"name": "b", "inputs": ["*.nc"], "on_error": "skip",
                                   "gridding": {"grid": "north_china_0p05"}, "output": {"dir": "out"}}))
    job = load_config(cfg)

    def opened(helpers=None):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            datasets, skipped = open_inputs(job, files, helpers=helpers)
        names = [(ds.attrs["source_path"], sorted(v.data.name for v in ds.data_vars.values())) for ds in datasets]
        return names, [(s.file, s.reason) for s in skipped], sorted(str(w.message) for w in seen)

    local = opened()
    assert len(local[1]) == 4 and len(local[0]) == len(files) - 4  # three damaged files and the duplicate
    detect = pipeline.detect_reader

    def slow(*args, **kwargs):  # in this process only: the workers keep up and take a share
        time.sleep(0.3)
        return detect(*args, **kwargs)

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl, set_as_default=False) as client:
        client.run(lambda: __import__("eo_pipeline.pipeline"))  # as the run's preload plugin does
        monkeypatch.setattr(pipeline, "detect_reader", slow)
        with distributed.get_task_stream(client) as ts:
            shared = opened(lambda: client)
        fail = job.model_copy(update={"on_error": "fail"})
        with pytest.raises(EOPipelineError) as remote_error:
            open_inputs(fail, files[::-1], helpers=lambda: client)  # a damaged file among the workers' share
    with pytest.raises(EOPipelineError) as local_error:
        open_inputs(fail, files[::-1])
    assert shared == local
    assert type(remote_error.value) is type(local_error.value) and str(remote_error.value) == str(local_error.value)
    assert sum("_open_one" in str(t["key"]) for t in ts.data) >= 2  # the workers took some


def test_a_block_whose_worker_is_lost_before_it_runs_is_finalized_elsewhere():
    """SpreadBlocks' placement is loose: blocks given to a worker that is gone when they can run go to another."""
    import dask
    import distributed

    from eo_pipeline.cluster import SPREAD, _tuned

    def gate(name: str) -> int:  # holds the blocks back until the test has closed their worker
        return 0 if distributed.Event(name).wait(60) else -1

    def block(g: int, i: int) -> tuple[int, str]:
        return g + 10 * i, distributed.get_worker().address

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cl, \
            distributed.Client(cl, set_as_default=False) as client:
        _tuned(client)
        workers = sorted(client.nthreads())
        with dask.annotate(workers=[workers[1]]):  # the gate waits on the worker that stays
            held = dask.delayed(gate, pure=False)("go")
        parts = []
        for i in range(6):
            with dask.annotate(**{SPREAD: i}):
                parts.append(dask.delayed(block, pure=False)(held, i))
        futures = client.compute(parts, optimize_graph=False)
        keys = [f.key for f in futures]

        def restrictions(dask_scheduler, keys=keys):
            tasks = [dask_scheduler.tasks.get(k) for k in keys]
            return [sorted(ts.worker_restrictions or ()) if ts is not None else [] for ts in tasks]

        deadline = time.monotonic() + 30
        while not all(client.run_on_scheduler(restrictions)) and time.monotonic() < deadline:
            time.sleep(0.05)
        placed = client.run_on_scheduler(restrictions)
        assert placed == [[workers[i % 2]] for i in range(6)]  # in turn, before any block could run
        gone = workers[0]
        name = next(k for k, w in cl.workers.items() if w.address == gone)
        cl.sync(cl.workers[name].close)
        deadline = time.monotonic() + 30
        while gone in client.nthreads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone not in client.nthreads()
        distributed.Event("go", client=client).set()
        # with strict restrictions, the lost worker's blocks would wait for it for ever
        distributed.wait(futures, timeout=60)
        results = client.gather(futures)
    assert [v for v, _ in results] == [10 * i for i in range(6)]
    assert {w for _, w in results} == {workers[1]}  # the lost worker's blocks too
