# SPDX-License-Identifier: Apache-2.0
"""The main job: config -> readers -> gridding -> writers, as one dask graph computed once.

:func:`run` opens every input lazily, builds each stage's lazy result, collects
every writer as a ``Delayed`` and calls :func:`dask.compute` a single time, so
shared inputs are read once whatever the number of outputs.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from ._version import __version__
from .anomaly import regional_anomaly
from .binning import STATISTICS
from .composites import composite
from .config import JobConfig, config_hash
from .errors import ConfigError, EOPipelineError, OutputError, warn
from .grid import GridSpec
from .gridding import grid_soundings
from .hotspots import find_hotspots, write_hotspots
from .io.geotiff import write_cog
from .io.quicklook import quicklook
from .outputs import compute_outputs, remove_temporaries, step_label, write_level3
from .readers import (
    close_files,
    detect_reader,
    drop_duplicates,
    list_readers,
    open_with,
    verify_product,
)
from .readers._netcdf import NCFile
from .regions import load_regions, region_fractions, region_table, write_table
from .schema import species_of

__all__ = ["run", "JobResult", "SkippedInput", "expand_inputs", "open_inputs", "compute_outputs", "remove_temporaries"]

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a job wrote."""

    outputs: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    config_hash: str = ""
    skipped: list[SkippedInput] = field(default_factory=list)
    soundings: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for the job summary JSON)."""
        return {"outputs": self.outputs, "inputs": self.inputs, "seconds": round(self.seconds, 3),
                "config_hash": self.config_hash, "software": f"eo_pipeline {__version__}",
                "soundings_used": self.soundings, "footprints_dropped": self.dropped}


class Reporter:
    """Hooks a caller (the command line) gives :func:`run` to show progress; these do nothing."""

    def opened(self, done: int, total: int, path: Path) -> None:
        """An input was opened (``done`` of ``total``)."""

    def computing(self, n_outputs: int) -> AbstractContextManager[Any]:
        """Context around the single compute that writes ``n_outputs`` files."""
        return nullcontext()


def expand_inputs(cfg: JobConfig) -> list[Path]:
    """Expand the config's input patterns (relative to the config file) into sorted files."""
    files: list[Path] = []
    for pattern in cfg.inputs:
        full = str(cfg.resolve(pattern))
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        files += [Path(m) for m in matches]
    if not files:
        raise ConfigError(f"inputs {list(cfg.inputs)} matched no file (relative to {cfg.base_dir}); check the patterns")
    return list(dict.fromkeys(files))


@dataclass(frozen=True)
class SkippedInput:
    """An input left out of a job (``on_error: skip``), with the one-line reason."""

    file: str
    reason: str


def open_inputs(cfg: JobConfig, files: list[Path],
                reporter: Reporter | None = None) -> tuple[list[xr.Dataset], list[SkippedInput]]:
    """Open every input with its reader's options from ``reader_options`` (lazy).

    With ``on_error: fail`` (default) the first unreadable input raises its
    :class:`~eo_pipeline.errors.EOPipelineError`; with ``on_error: skip`` each one is
    left out, logged as a warning and returned with its reason; in that mode each input's
    data are read once first (:func:`~eo_pipeline.readers.verify_product`), because a
    damaged data chunk shows only when it is read. The second copy of a product given
    twice is dropped with a warning in both modes.
    """
    readers = list_readers()
    unknown = sorted(set(cfg.reader_options) - set(readers))
    if unknown:
        raise ConfigError(f"reader_options names unknown reader(s) {unknown}; readers: {', '.join(readers)}")
    datasets: list[xr.Dataset] = []
    opened: list[Path] = []
    skipped: list[SkippedInput] = []
    for k, f in enumerate(files, start=1):
        if reporter is not None:
            reporter.opened(k, len(files), f)
        try:
            with NCFile(f) as nc:
                chosen = detect_reader(nc, readers)
                ds = open_with(nc, chosen, qa_threshold=cfg.qa_threshold, **cfg.reader_options.get(chosen.name, {}))
            if cfg.on_error == "skip":  # a damaged data chunk shows only when read: read it now
                verify_product(ds)
            datasets.append(ds)
            opened.append(f)
        except EOPipelineError as exc:
            if cfg.on_error == "fail":
                raise
            skipped.append(SkippedInput(str(f), str(exc)))
            warn(f"skipped: {exc}")
    kept = drop_duplicates(datasets)  # warns about each later copy
    kept_ids = {id(ds) for ds in kept}
    skipped += [SkippedInput(str(f), f"{f}: the same product as an earlier input; ignored so that no sounding "
                             "counts twice") for f, ds in zip(opened, datasets, strict=True) if id(ds) not in kept_ids]
    return kept, skipped


def job_statistics(cfg: JobConfig) -> tuple[str, ...]:
    """The statistics a job computes: ``gridding.statistics``, plus what its stages need.

    The mean is always there (quicklooks, anomalies); anomalies, hotspots and region
    tables also use the count and the weight.
    """
    chosen = STATISTICS if cfg.gridding.statistics == "all" else tuple(cfg.gridding.statistics)
    needed = ("mean", "count", "weight") if (cfg.anomaly is not None or cfg.regions is not None) else ("mean",)
    return tuple(dict.fromkeys((*needed, *chosen)))


def level3(cfg: JobConfig, products: list[xr.Dataset], grid: Any) -> xr.Dataset:
    """The gridding stage of a job: one map, or daily/monthly composites with a time axis."""
    g = cfg.gridding
    common = dict(method=g.method, weighting=g.weighting, chunk=g.chunk, min_weight=g.min_weight,
                  statistics=job_statistics(cfg), fov_diameter_km=g.fov_diameter_km, no_corners=g.no_corners)
    if g.composite:
        return composite(products, grid, period=g.composite, **common)
    return grid_soundings(products, grid, **common)


def _hotspots_task(anomaly: xr.Dataset, params: dict[str, Any]) -> Any:
    return find_hotspots(anomaly, **params)


def _concat_hotspots(*parts: Any) -> Any:
    """Join per-time-step hotspot tables and number them 1..n again."""
    import geopandas as gpd
    import pandas as pd

    non_empty = [p for p in parts if len(p)]
    if not non_empty:
        return parts[0]
    out = gpd.GeoDataFrame(pd.concat(non_empty, ignore_index=True), geometry="geometry", crs="EPSG:4326")
    out["id"] = np.arange(1, len(out) + 1)
    return out


def _write_hotspots_task(gdf: Any, stem: Path) -> list[str]:
    return write_hotspots(gdf, stem)


def _table_task(l3: xr.Dataset, regions: Any, hotspots: Any, path: Path, cells: Any) -> str:
    return write_table(region_table(l3, regions, hotspots=hotspots, cells=cells), path)


def _outline_task(hotspots: Any, regions: Any, crs_wkt: str) -> list[tuple[np.ndarray, str]]:
    """Rings (grid CRS) of the region polygons and hotspot outlines, for quicklooks."""
    rings: list[tuple[np.ndarray, str]] = []
    for gdf, kind in ((regions, "region"), (hotspots, "hotspot")):
        if gdf is None or not len(gdf):
            continue
        for geom in gdf.to_crs(crs_wkt).geometry:
            polys = getattr(geom, "geoms", [geom])
            rings += [(np.asarray(p.exterior.coords), kind) for p in polys if hasattr(p, "exterior")]
    return rings


def analysis_stages(cfg: JobConfig, l3: xr.Dataset, name: str, stem: str, out_dir: Path,
                    regions: Any) -> tuple[list[Any], list[str]]:
    """Delayed outputs of the anomaly, hotspot and region-table stages for one species."""
    tasks: list[Any] = []
    outputs: list[str] = []
    data = l3
    hotspots = None
    if cfg.anomaly is not None:
        data = regional_anomaly(l3, **cfg.anomaly.for_species(name))
        keep = [v for v in (f"{name}_background", f"{name}_anomaly", f"{name}_zscore", f"{name}_count") if v in data]
        anom = data[keep]
        if cfg.hotspots is not None:
            small = data[[v for v in (f"{name}_anomaly", f"{name}_zscore", f"{name}_count") if v in data]]
            params = cfg.hotspots.model_dump()
            if "time" in small.dims:  # one task per time step keeps memory bounded over long stacks
                parts = [dask.delayed(_hotspots_task, pure=False)(small.isel(time=[k]), params)
                         for k in range(small.sizes["time"])]
                hotspots = dask.delayed(_concat_hotspots, pure=False)(*parts)
            else:
                hotspots = dask.delayed(_hotspots_task, pure=False)(small, params)
            tasks.append(dask.delayed(_write_hotspots_task, pure=False)(hotspots, out_dir / f"{name}_hotspots"))
            outputs += [str(out_dir / f"{name}_hotspots.geojson"), str(out_dir / f"{name}_hotspots.csv")]
        crs_wkt = GridSpec.from_dataset(l3).crs.to_wkt()
        outlines = dask.delayed(_outline_task, pure=False)(hotspots, regions, crs_wkt)
        steps = [(None, anom)] if "time" not in anom.dims else [
            (step_label(t, l3.attrs.get("composite_period", "day")), anom.isel(time=k)) for k, t in enumerate(anom.time.values)]
        for label, step in steps:
            sname = f"{stem}_anomaly" if label is None else f"{stem}_anomaly_{label}"
            if "time" in step.coords:
                step = step.drop_vars("time")
            if "geotiff" in cfg.output.formats:
                tasks.append(write_cog(step, out_dir / f"{sname}.tif",
                                       variables=[v for v in step.data_vars if step[v].dims == ("y", "x")], compute=False))
                outputs.append(str(out_dir / f"{sname}.tif"))
            if "quicklook" in cfg.output.formats:
                tasks.append(quicklook(step, f"{name}_anomaly", out_dir / f"{sname}.png", cmap="RdBu_r", symmetric=True,
                                       outlines=outlines, compute=False))
                outputs.append(str(out_dir / f"{sname}.png"))
    if regions is not None:
        cols = [v for v in (f"{name}_mean", f"{name}_count", f"{name}_weight", f"{name}_anomaly") if v in data]
        # the cells' covered fractions depend on the polygons and the grid only: computed once, here, in the
        # main thread (in worker threads the overlay's last bits were seen to vary from run to run)
        cells = region_fractions(regions, GridSpec.from_dataset(l3))
        tasks.append(dask.delayed(_table_task, pure=False)(data[cols], regions, hotspots, out_dir / f"{name}_regions.csv",
                                                           cells))
        outputs.append(str(out_dir / f"{name}_regions.csv"))
    return tasks, outputs


def forest_outputs(cfg: JobConfig, out_dir: Path) -> list[str]:
    """Run the forest-carbon stage of a job (its own windowed reads; see :mod:`eo_pipeline.forest_stage`)."""
    from .forest_stage import run_forest

    f = cfg.forest
    assert f is not None

    def paths(v: Any) -> list[str] | None:
        return None if v is None else cfg.forest_paths(v)

    run = run_forest(
        paths(f.treecover), paths(f.lossyear), out=out_dir / f"{f.stem}.csv", emissions=paths(f.emissions),
        gain=paths(f.gain), biomass=paths(f.biomass), regions=cfg.resolve(f.regions) if f.regions else None,
        name_field=f.name_field, select=f.select, grid=cfg.forest_grid(), min_cover=f.min_cover, min_size=f.min_size,
        years=f.years if f.years is not None else ..., map_year=f.map_year, cell_area=f.cell_area,
        emissions_weighting=f.emissions_weighting, landcover=f.landcover,
        removal_factors=cfg.resolve(f.removal_factors) if f.removal_factors else None, zone=f.zone,
        removal_factor=f.removal_factor, overrides=f.overrides or None,
        formats=tuple(x for x in cfg.output.formats if x in ("geotiff", "netcdf", "quicklook")))
    return run.outputs


def _confined(out_dir: Path, path: str | Path) -> None:
    """Refuse an output that would land outside ``out_dir`` (a name with ``..``, ``/`` or an absolute path)."""
    target = Path(path)
    if target.resolve().parent != out_dir.resolve():
        name = os.path.relpath(target, out_dir)
        raise ConfigError(f"output {name!r} would be written outside the output folder {out_dir}; "
                          "use plain names (no '/', '..' or absolute paths) for grids and forest.stem")


def _check_output_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and prove it writable before any work, with a one-line error if not."""
    probe = out_dir / f".write-test-{os.getpid()}.eo-tmp"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write in the output folder ({exc.strerror or exc}); "
                          "choose another output.dir (or --output) or fix its permissions") from exc


def _write_summary(out_dir: Path, result: JobResult, extra: dict[str, Any]) -> str:
    summary = out_dir / "job_summary.json"
    tmp = out_dir / ".job_summary.json.eo-tmp"
    tmp.write_text(json.dumps({**result.to_dict(), **extra}, indent=1) + "\n")
    os.replace(tmp, summary)
    return str(summary)


def run(cfg: JobConfig, *, scheduler: str | None = None, workers: int | None = None,
        reporter: Reporter | None = None) -> JobResult:
    """Run a job: read, grid each species, write the outputs; compute once.

    Every output is written under a temporary name and renamed into place when complete,
    so an interrupted or failed run never leaves a partial file under a final name; the
    temporaries of a failed run are removed, those of a killed run at the next run.

    Parameters
    ----------
    cfg : JobConfig
        Validated configuration (:func:`eo_pipeline.config.load_config`).
    scheduler : str, optional
        Where every stage computes: ``threads``, ``processes``, ``synchronous``,
        ``tcp://HOST:PORT`` of a running dask scheduler, or a scheduler file (``.json``);
        it wins over the config's ``cluster:`` section (see :mod:`eo_pipeline.cluster`).
        Default: the ``cluster:`` section, else the threaded scheduler.
    workers : int, optional
        Threads or processes of a local scheduler, worker processes of a local cluster,
        or batch jobs of a SLURM/PBS cluster.

    Raises
    ------
    ClusterError
        The cluster cannot be reached.
    """
    from .cluster import choose_scheduler, use_scheduler

    choice = choose_scheduler(scheduler, cfg.cluster, workers=workers, base_dir=cfg.base_dir)
    try:
        with use_scheduler(choice) as name:
            return _run(cfg, name, reporter or Reporter())
    finally:
        close_files()  # the per-process HDF5 handle cache: no file stays open after a job


def _run(cfg: JobConfig, scheduler: str | None, reporter: Reporter) -> JobResult:
    t0 = time.perf_counter()
    out_dir = cfg.resolve(cfg.output.dir)
    files = expand_inputs(cfg)
    datasets, skipped = open_inputs(cfg, files, reporter)
    if not datasets:  # only with on_error: skip, and every input skipped
        raise ConfigError(f"none of the {len(files)} inputs could be read; the first: {skipped[0].reason}")
    grid = cfg.grid_spec()
    chash = config_hash(cfg)
    by_species: dict[str, list[xr.Dataset]] = {}
    for ds in datasets:
        by_species.setdefault(species_of(ds).name, []).append(ds)
    stem_grid = grid.name or "grid"
    stems = {name: f"{name}_{cfg.gridding.method}_{stem_grid}" for name in sorted(by_species)}
    for o in [*stems.values(), *([cfg.forest.stem] if cfg.forest is not None else [])]:
        _confined(out_dir, out_dir / f"{o}.tif")
    _check_output_dir(out_dir)
    stale = remove_temporaries(out_dir)
    if stale:
        log.info("removed %d temporary files of an interrupted run in %s", len(stale), out_dir)
    tasks: list[Any] = []
    outputs: list[str] = []
    counts: list[Any] = []
    regions = load_regions(cfg.resolve(cfg.regions.file), name_field=cfg.regions.name_field) if cfg.regions else None
    for name, stem in stems.items():
        l3 = level3(cfg, by_species[name], grid)
        l3.attrs["config_hash"] = chash
        l3.attrs["job"] = cfg.name
        # one small target per period (see gridding.dropped_total): never one task over all chunks
        counts.append([d for v in ("n_soundings_used", "n_footprints_dropped")
                       for d in l3[v].data.ravel().to_delayed().ravel().tolist()])
        new_tasks, new_outputs = write_level3(l3, out_dir, stem, cfg.output.formats)
        tasks += new_tasks
        outputs += new_outputs
        new_tasks, new_outputs = analysis_stages(cfg, l3, name, stem, out_dir, regions)
        tasks += new_tasks
        outputs += new_outputs
    for o in outputs:
        _confined(out_dir, o)
    try:
        if cfg.forest is not None:
            outputs += forest_outputs(cfg, out_dir)
        log.info("computing %d outputs from %d inputs", len(tasks), len(files))
        with reporter.computing(len(outputs)):
            done = compute_outputs([*tasks, *[c for per_species in counts for c in per_species]], scheduler)
    finally:
        remove_temporaries(out_dir)  # a failed run's parts; a finished run's done markers
    numbers, k = [], len(tasks)
    for per_species in counts:  # the per-period counts of soundings used, then of footprints dropped
        values = [int(np.asarray(v).sum()) for v in done[k:k + len(per_species)]]
        half = len(values) // 2
        numbers += [sum(values[:half]), sum(values[half:])]
        k += len(per_species)
    used = [str(f) for f in files if str(f) not in {s.file for s in skipped}]
    result = JobResult(outputs=outputs, inputs=used, seconds=time.perf_counter() - t0, config_hash=chash,
                       soundings=dict(zip(stems, numbers[0::2], strict=True)),
                       dropped=dict(zip(stems, numbers[1::2], strict=True)))
    result.outputs.append(_write_summary(out_dir, result, {
        "on_error": cfg.on_error, "skipped": [{"file": s.file, "reason": s.reason} for s in skipped]}))
    result.skipped = skipped
    return result
