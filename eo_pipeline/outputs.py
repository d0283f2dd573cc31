# SPDX-License-Identifier: Apache-2.0
"""Writing a Level-3 dataset: one delayed writer per output, computed together, cleaned up on failure.

Kept apart from :mod:`eo_pipeline.pipeline` so that ``eo-pipeline grid`` imports only
the writers it uses (no anomaly, hotspot, region or forest stage, no Matplotlib or
netCDF4 unless a quicklook or a NetCDF file is asked for).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.multiprocessing
import dask.threaded
import numpy as np
import xarray as xr

__all__ = ["Unit", "level3_units", "write_level3", "compute_outputs", "remove_temporaries", "step_label"]


def step_label(t: Any, period: str) -> str:
    text = str(np.datetime_as_string(np.datetime64(t, "D")))
    return text.replace("-", "") if period == "day" else text[:7].replace("-", "")


@dataclass
class Unit:
    """One writer of a job: how to build its lazy task, the files it writes, and what their data come from.

    ``make()`` builds the writer's ``Delayed`` (only for the outputs a run writes: a
    resumed run never builds the writers of up-to-date outputs, and a dry run none).

    ``step`` is the time-step label whose data the files hold (``20230715``), or None
    when they hold every step (a single map, a NetCDF stack, the tables); ``extra``
    lists the other files they read (a regions file). The manifest of a resumable run
    (:mod:`eo_pipeline.manifest`) records and checks the inputs of each unit.
    """

    make: Callable[[], Any]
    outputs: list[str]
    step: str | None = None
    extra: tuple[Path, ...] = field(default_factory=tuple)
    #: what the files are, for the STAC catalogue: map, anomaly, overview, anomaly_overview, netcdf, hotspots, regions
    kind: str = "map"
    #: the catalogue item (one per species and time step) the files belong to; None: every item of the species
    item: str | None = None


def level3_units(l3: xr.Dataset, out_dir: Path, stem: str, formats: Any,
                 step_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> list[Unit]:
    """Writers of a Level-3 dataset: COG and quicklook PNG per time step, one CF-NetCDF of all steps.

    ``step_attrs`` (per time-step label) replace the dataset's attributes in that step's
    files: the provenance of the inputs that reach the step (its files and time coverage).
    """
    units: list[Unit] = []
    variable = f"{l3.attrs['variable']}_mean"
    steps = [(None, l3)] if "time" not in l3.dims else [
        (step_label(t, l3.attrs.get("composite_period", "day")), l3.isel(time=k)) for k, t in enumerate(l3.time.values)]
    for label, step in steps:
        name = stem if label is None else f"{stem}_{label}"
        if "time" in step.coords:
            step = step.drop_vars([v for v in ("time", "time_bounds") if v in step.variables])
        if step_attrs and label in step_attrs:
            step = step.assign_attrs(step_attrs[label])
        if "geotiff" in formats:
            from .io.geotiff import write_cog

            path = out_dir / f"{name}.tif"
            maps = [v for v in step.data_vars if step[v].dims == ("y", "x")]
            units.append(Unit(lambda s=step, p=path, m=maps: write_cog(s, p, variables=m, compute=False),
                              [str(path)], label, kind="map", item=name))
        if "quicklook" in formats:
            from .io.quicklook import quicklook

            path = out_dir / f"{name}_mean.png"
            units.append(Unit(lambda s=step, p=path: quicklook(s, variable, p, compute=False), [str(path)], label,
                              kind="overview", item=name))
    if "netcdf" in formats:
        from .io.netcdf import write_netcdf

        path = out_dir / f"{stem}.nc"
        units.append(Unit(lambda p=path: write_netcdf(l3, p, compute=False), [str(path)], kind="netcdf"))
    return units


def write_level3(l3: xr.Dataset, out_dir: Path, stem: str, formats: Any) -> tuple[list[Any], list[str]]:
    """Delayed writers of a Level-3 dataset and the files they write (see :func:`level3_units`)."""
    units = level3_units(l3, out_dir, stem, formats)
    return [u.make() for u in units], [o for u in units for o in u.outputs]


def compute_outputs(tasks: list[Any], scheduler: str | None = None) -> tuple[Any, ...]:
    """Compute the writers' tasks once; if one fails, wait for the tasks still running, then raise.

    dask's local schedulers raise as soon as a task fails while others go on in the pool;
    a writer still running could then print after the error line or recreate a temporary
    file after the clean-up. With a pool of our own, shut down (waiting) before the error
    propagates, nothing of the run is left running. A distributed client is used as it is.
    """
    import multiprocessing
    from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

    from dask.base import get_scheduler

    if scheduler is None:
        # only ask dask (which imports distributed to look for a client) when distributed is in use
        get = get_scheduler(collections=list(tasks)) if "distributed" in sys.modules else dask.threaded.get
        scheduler = {dask.threaded.get: "threads", dask.multiprocessing.get: "processes"}.get(get, "")
    if scheduler == "distributed":  # the current client (eo_pipeline.cluster.PendingScheduler)
        return dask.compute(*tasks)
    if scheduler not in ("threads", "processes"):
        return dask.compute(*tasks, scheduler=scheduler) if scheduler else dask.compute(*tasks)
    workers = int(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    pool: Executor
    if scheduler == "threads":
        pool = ThreadPoolExecutor(workers, thread_name_prefix="eo-pipeline")
    else:
        context = multiprocessing.get_context(dask.config.get("multiprocessing.context", "spawn"))
        pool = ProcessPoolExecutor(workers, mp_context=context)
    # the threaded scheduler as a function: a scheduler's name makes dask import distributed
    # (0.2 s) to look for a client, which a local run does not need
    get = dask.threaded.get if scheduler == "threads" else dask.multiprocessing.get
    try:
        return dask.compute(*tasks, scheduler=get, pool=pool)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)


def remove_temporaries(out_dir: Path) -> list[Path]:
    """Delete the writers' temporary files (``.*.eo-tmp*``) in ``out_dir``: left by a killed or failed run."""
    from .io._atomic import TEMP_MARK, unlink_all

    return unlink_all(out_dir.glob(f".*{TEMP_MARK}*"))
