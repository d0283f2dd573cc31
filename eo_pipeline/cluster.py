# SPDX-License-Identifier: Apache-2.0
"""Where a job computes: a local dask scheduler, a local cluster, a running cluster, SLURM/PBS.

A job names its scheduler with ``eo-pipeline run --scheduler`` or the config's
``cluster:`` section (the command line wins):

* ``threads`` (default), ``processes``, ``synchronous``: dask's local schedulers, with
  ``--workers N`` threads or processes;
* ``tcp://HOST:PORT`` (or ``tls://``): a running ``dask scheduler``;
* ``FILE.json``: the scheduler file a ``dask scheduler --scheduler-file FILE.json``
  wrote (shared file systems on clusters);
* ``cluster: {type: local, workers, threads_per_worker, memory_limit}``: a
  ``distributed.LocalCluster`` of worker processes on this machine, started for the
  run and stopped after it;
* ``cluster: {type: slurm | pbs, jobs, cores, memory, walltime, queue, account, ...}``:
  batch jobs through dask-jobqueue (``pip install 'eo_pipeline[cluster]'``), each job
  one or more dask workers, submitted for the run and cancelled after it.

Every stage of the job then runs under that scheduler: :class:`PendingScheduler` sets
it as dask's default for the length of the run (and a distributed client as the current
one), so the forest stage's own computations follow it too.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ClusterError, ConfigError

__all__ = ["LOCAL_SCHEDULERS", "SPREAD", "SchedulerChoice", "PendingScheduler", "choose_scheduler", "jobqueue_cluster"]

log = logging.getLogger(__name__)

#: Bytes per second between the workers of a local cluster, the scheduler's first estimate.
LOOPBACK_BANDWIDTH = 1_000_000_000

#: dask's schedulers inside this process.
LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")

#: Annotation of each output block's finalize task (its value: the block's tile id): a distributed
#: run spreads the tasks so annotated over its workers (:class:`eo_pipeline._worker_tuning.SpreadBlocks`).
SPREAD = "eo_pipeline_spread"


@dataclass(frozen=True)
class SchedulerChoice:
    """A resolved scheduler.

    ``kind`` is one of :data:`LOCAL_SCHEDULERS`, ``address``, ``scheduler_file``,
    ``local_cluster``, ``slurm`` or ``pbs``.
    """

    kind: str
    workers: int | None = None
    address: str | None = None
    scheduler_file: Path | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def distributed(self) -> bool:
        """Whether the run needs a ``distributed.Client``."""
        return self.kind not in LOCAL_SCHEDULERS

    def describe(self) -> str:
        """One line for logs: where the run computes."""
        if self.kind in LOCAL_SCHEDULERS:
            return self.kind + (f" ({self.workers} workers)" if self.workers else "")
        if self.kind == "address":
            return f"the dask scheduler at {self.address}"
        if self.kind == "scheduler_file":
            return f"the dask scheduler of {self.scheduler_file}"
        opts = dict(self.options)
        if self.kind == "local_cluster":
            return (f"a local cluster of {opts.get('n_workers')} worker processes x "
                    f"{opts.get('threads_per_worker')} threads")
        return f"{self.kind.upper()} jobs through dask-jobqueue ({opts.get('jobs', 1)} jobs)"


def choose_scheduler(scheduler: str | None, cluster: Any = None, *, workers: int | None = None,
                     base_dir: Path | None = None) -> SchedulerChoice:
    """Resolve ``--scheduler`` (wins) or the config's ``cluster:`` section into a :class:`SchedulerChoice`.

    Parameters
    ----------
    scheduler : str, optional
        ``threads``, ``processes``, ``synchronous``, ``tcp://HOST:PORT`` (``tls://`` too)
        or the path of a scheduler file (``*.json``).
    cluster : eo_pipeline.config.ClusterConfig, optional
        The config's ``cluster:`` section.
    workers : int, optional
        ``--workers``: threads or processes of a local scheduler, worker processes of a
        local cluster, jobs of a SLURM/PBS cluster.
    base_dir : Path, optional
        Folder that relative scheduler-file paths of the config are relative to.

    Raises
    ------
    ConfigError
        An unknown scheduler name, or a scheduler file that does not exist.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: give a positive number of workers")
    choice = _choose(scheduler, cluster, workers, base_dir)
    if workers is not None and choice.kind in ("address", "scheduler_file"):
        raise ConfigError(f"--workers {workers}: a running dask scheduler has the workers started for it; "
                          "start more with 'dask worker', or leave out --workers")
    return choice


def _choose(scheduler: str | None, cluster: Any, workers: int | None, base_dir: Path | None) -> SchedulerChoice:
    if scheduler is not None:
        s = scheduler.strip()
        if s.lower() in LOCAL_SCHEDULERS:
            return SchedulerChoice(s.lower(), workers=workers)
        if "://" in s:
            return SchedulerChoice("address", address=s)
        if s.lower().endswith(".json"):
            path = Path(s).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"{path}: no such scheduler file; start the scheduler with "
                                  f"'dask scheduler --scheduler-file {path}' first, or give tcp://HOST:PORT")
            return SchedulerChoice("scheduler_file", scheduler_file=path)
        raise ConfigError(f"--scheduler {scheduler}: give threads, processes, synchronous, "
                          "tcp://HOST:PORT or a scheduler file (.json)")
    if cluster is None:
        return SchedulerChoice("threads", workers=workers)
    if cluster.address is not None:
        return SchedulerChoice("address", address=cluster.address)
    if cluster.scheduler_file is not None:
        q = Path(cluster.scheduler_file).expanduser()
        path = (q if q.is_absolute() or base_dir is None else base_dir / q).resolve()
        if not path.is_file():
            raise ConfigError(f"cluster.scheduler_file: {path} does not exist; start the scheduler with "
                              f"'dask scheduler --scheduler-file {path}' first")
        return SchedulerChoice("scheduler_file", scheduler_file=path)
    if cluster.type == "local":
        opts = {"n_workers": workers or cluster.workers, "threads_per_worker": cluster.threads_per_worker,
                "memory_limit": cluster.memory_limit}
        return SchedulerChoice("local_cluster", options=tuple(opts.items()))
    opts = cluster.jobqueue_options()
    if workers is not None:
        opts["jobs"] = workers
    return SchedulerChoice(cluster.type, options=tuple(opts.items()))


def jobqueue_cluster(kind: str, options: dict[str, Any]) -> Any:
    """Build a dask-jobqueue ``SLURMCluster`` or ``PBSCluster`` from the ``cluster:`` options, not yet scaled.

    Nothing is submitted until the cluster is scaled; ``.job_script()`` shows the batch
    script each job would run.

    Raises
    ------
    ConfigError
        dask-jobqueue is not installed (``pip install 'eo_pipeline[cluster]'``).
    """
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(f"cluster.type: {kind} needs dask-jobqueue; install it with "
                          "pip install 'eo_pipeline[cluster]'") from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    kwargs = {k: v for k, v in options.items() if k != "jobs" and v is not None}
    return cls(**kwargs)


def _client(choice: SchedulerChoice) -> tuple[Any, Any]:
    """Connect a ``distributed.Client``; returns it and the cluster started for it (or None)."""
    import dask
    from distributed import Client, LocalCluster

    # how long to keep trying a scheduler that does not answer: dask's own setting
    # (distributed.comm.timeouts.connect, 30 s by default; DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)
    timeout = dask.config.get("distributed.comm.timeouts.connect", "30s")
    if choice.kind == "address":
        try:
            client = Client(choice.address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"{choice.address}: cannot reach the dask scheduler ({exc}); start it with "
                               "'dask scheduler' and check the address and port, or use --scheduler threads") from exc
        return _tuned(client), None
    if choice.kind == "scheduler_file":
        try:
            client = Client(scheduler_file=str(choice.scheduler_file), timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"{choice.scheduler_file}: cannot reach the dask scheduler it names ({exc}); "
                               "is the scheduler still running? restart it or delete the stale file") from exc
        return _tuned(client), None
    opts = dict(choice.options)
    if choice.kind == "local_cluster":
        cluster = LocalCluster(n_workers=opts["n_workers"], threads_per_worker=opts["threads_per_worker"],
                               memory_limit=opts["memory_limit"], processes=True, dashboard_address=None)
        # Its workers exchange data in memory over loopback (about 1 GB/s), not over dask's assumed
        # 100 MB/s network: with the right figure the scheduler moves the last period's blocks to an
        # idle worker instead of queueing them all where their partial sums lie (the scheduler's
        # running estimate takes over once the workers report their transfers).
        cluster.scheduler.bandwidth = LOOPBACK_BANDWIDTH
    else:
        cluster = jobqueue_cluster(choice.kind, opts)
        cluster.scale(jobs=int(opts.get("jobs", 1)))
    try:
        return _tuned(Client(cluster, set_as_default=False)), cluster
    except BaseException:
        cluster.close()
        raise


def _tuned(client: Any) -> Any:
    """Register the plugins (malloc tuning, preloaded modules, spread blocks) with the workers and the scheduler.

    See :class:`~eo_pipeline._worker_tuning.MallocTuning`, :class:`~eo_pipeline._worker_tuning.Preload`,
    :class:`~eo_pipeline._worker_tuning.SchedulerPreload` and :class:`~eo_pipeline._worker_tuning.SpreadBlocks`.
    Returns the client.
    """
    from ._worker_tuning import MallocTuning, Preload, SchedulerPreload, SpreadBlocks

    try:
        client.register_plugin(SchedulerPreload())
        client.register_plugin(SpreadBlocks(SPREAD))
        client.register_plugin(MallocTuning())
        client.register_plugin(Preload())
    except BaseException:
        client.close()
        raise
    return client


class PendingScheduler:
    """The scheduler of a run, started in the background while the run opens its inputs.

    :meth:`start` begins connecting to the scheduler (or starting the cluster) in a
    thread; :meth:`activate` waits for it and makes it dask's scheduler until
    :meth:`close` (a local cluster's start-up, about 1.5 s, then overlaps with opening
    the inputs). A run that finds nothing to do never starts a cluster.
    """

    def __init__(self, choice: SchedulerChoice) -> None:
        self.choice = choice
        self.name: str | None = None
        self._future: Any = None
        self._pool: Any = None
        self._stack = ExitStack()

    def start(self) -> None:
        """Begin connecting or starting the cluster (distributed choices only; once)."""
        if self.choice.distributed and self._future is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="eo-pipeline-cluster")
            self._future = self._pool.submit(_client, self.choice)

    def ready_client(self) -> Any:
        """The distributed client if it is connected by now, else None (never waits, never raises).

        A run hands the inputs still to be opened to the workers once this returns a
        client (see :func:`eo_pipeline.pipeline.open_inputs`); a connection that failed
        is reported by :meth:`activate`.
        """
        if self._future is None or not self._future.done() or self._future.exception() is not None:
            return None
        return self._future.result()[0]

    def activate(self) -> str:
        """Wait for the scheduler and make it dask's; returns its name for ``compute_outputs``.

        Raises
        ------
        ClusterError
            The scheduler cannot be reached.
        """
        if self.name is not None:
            return self.name
        import dask

        if not self.choice.distributed:
            settings: dict[str, Any] = {"scheduler": self.choice.kind}
            if self.choice.workers:
                settings["num_workers"] = self.choice.workers
            log.info("computing with dask's %s scheduler", self.choice.describe())
            self._stack.enter_context(dask.config.set(settings))
            self.name = self.choice.kind
            return self.name
        self.start()
        client, cluster = self._future.result()
        if cluster is not None:
            self._stack.callback(cluster.close)
        self._stack.callback(client.close)
        where = "" if self.choice.kind == "local_cluster" else f" (dashboard: {getattr(client, 'dashboard_link', '-')})"
        log.info("computing on %s%s", self.choice.describe(), where)
        self._stack.enter_context(client.as_current())
        self._stack.enter_context(dask.config.set(scheduler=client))
        self.name = "distributed"
        return self.name

    def close(self) -> None:
        """Restore dask's scheduler; close the client and any cluster started for it."""
        try:
            self._stack.close()
            if self.name is None and self._future is not None:  # started, never used
                try:
                    client, cluster = self._future.result()
                except Exception:  # noqa: BLE001 - it was never needed: nothing to report
                    return
                client.close()
                if cluster is not None:
                    cluster.close()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
