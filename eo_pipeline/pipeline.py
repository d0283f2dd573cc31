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
from .composites import composite, layers_of, period_edges
from .config import JobConfig, config_hash
from .errors import ConfigError, EOPipelineError, OutputError, warn
from .grid import GridSpec
from .gridding import WRITTEN_IN_BLOCKS_ABOVE, as_grid, auto_chunk, grid_soundings, provenance
from .hotspots import find_hotspots, write_hotspots
from .io.geotiff import write_cog
from .io.quicklook import quicklook
from .io.stac import COLLECTION, write_catalog
from .manifest import SOFTWARE, Manifest, record_outputs, stamps
from .outputs import Unit, compute_outputs, level3_units, remove_temporaries, step_label, write_level3
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

__all__ = ["run", "JobResult", "write_level3", "SkippedInput", "expand_inputs", "open_inputs", "compute_outputs",
           "remove_temporaries"]

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
    written: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    #: Wall seconds of each phase of :attr:`seconds` (:data:`PHASES`; a phase the run did not reach is absent).
    phases: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for the job summary JSON)."""
        return {"outputs": self.outputs, "inputs": self.inputs, "seconds": round(self.seconds, 3),
                "phase_seconds": {k: round(v, 3) for k, v in self.phases.items()},
                "config_hash": self.config_hash, "software": f"eo_pipeline {__version__}",
                "soundings_used": self.soundings, "footprints_dropped": self.dropped,
                "written": self.written, "up_to_date": self.up_to_date}


#: The phases of a run, in order; :attr:`JobResult.phases` and ``phase_seconds`` in ``job_summary.json``
#: give each one's wall seconds:
#:
#: * ``planning``: finding the inputs, reading the manifest;
#: * ``opening``: opening the inputs (on a cluster, shared with its workers while it starts);
#: * ``building``: the graph of every output, and waiting for a cluster still starting;
#: * ``computing``: the forest and plume stages and the single compute that writes the gridded
#:   outputs, the part that more workers shorten;
#: * ``cataloguing``: the manifest, the STAC catalogue, the summary.
#:
#: The process's start (Python and its imports) comes before them and is not in :attr:`JobResult.seconds`.
PHASES = ("planning", "opening", "building", "computing", "cataloguing")


class _Phases:
    """Wall time of each of :data:`PHASES`; :meth:`enter` closes the phase before."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._name, self._start = PHASES[0], time.perf_counter()

    def enter(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[self._name] = self.seconds.get(self._name, 0.0) + now - self._start
        self._name, self._start = name, now

    def done(self) -> dict[str, float]:
        self.enter(self._name)
        return dict(self.seconds)


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
    if not cfg.inputs:  # a job of other stages only (plumes:)
        return files
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


def _open_one(path: str, qa_threshold: Any, options: dict[str, dict[str, Any]], verify: bool,
              record: bool = False) -> tuple[xr.Dataset | None, EOPipelineError | None, list[tuple[type, str]]]:
    """Open one input with its reader (lazy); with ``verify``, read its data once.

    Returns the dataset or the :class:`EOPipelineError` that says why it cannot be read,
    and, with ``record`` (a task on a worker), the warnings it gave, for the client to
    show; otherwise they are shown as they come.
    """
    import warnings

    readers = list_readers()
    with warnings.catch_warnings(record=True) if record else nullcontext() as seen:
        if record:
            warnings.simplefilter("always")
        try:
            with NCFile(path) as nc:
                chosen = detect_reader(nc, readers)
                ds = open_with(nc, chosen, qa_threshold=qa_threshold, **options.get(chosen.name, {}))
            if verify:  # a damaged data chunk shows only when read: read it now
                verify_product(ds)
            out: tuple[xr.Dataset | None, EOPipelineError | None] = (ds, None)
        except EOPipelineError as exc:
            out = (None, exc)
    return (*out, [(w.category, str(w.message)) for w in seen or ()])


def open_inputs(cfg: JobConfig, files: list[Path], reporter: Reporter | None = None,
                helpers: Any = None) -> tuple[list[xr.Dataset], list[SkippedInput]]:
    """Open every input with its reader's options from ``reader_options`` (lazy).

    With ``on_error: fail`` (default) the first unreadable input raises its
    :class:`~eo_pipeline.errors.EOPipelineError`; with ``on_error: skip`` each one is
    left out, logged as a warning and returned with its reason; in that mode each input's
    data are read once first (:func:`~eo_pipeline.readers.verify_product`), because a
    damaged data chunk shows only when it is read. The second copy of a product given
    twice is dropped with a warning in both modes.

    ``helpers`` (a run on a cluster) is called before each input and returns the run's
    ``distributed.Client`` once it is connected (None until then): the workers then open
    the inputs not yet opened, from the last one backwards, while this process goes on
    from the front, taking each input a worker has finished (a product's lazy dataset
    weighs about 17 kB; opening it, 25-40 ms of HDF5 lookups). The datasets, warnings,
    errors and their order are the same either way.
    """
    readers = list_readers()
    unknown = sorted(set(cfg.reader_options) - set(readers))
    if unknown:
        raise ConfigError(f"reader_options names unknown reader(s) {unknown}; readers: {', '.join(readers)}")
    datasets: list[xr.Dataset] = []
    opened: list[Path] = []
    skipped: list[SkippedInput] = []
    args = (cfg.qa_threshold, dict(cfg.reader_options), cfg.on_error == "skip")
    remote: dict[int, Any] = {}
    asked = helpers is None
    try:
        for k, f in enumerate(files):
            if reporter is not None:
                reporter.opened(k + 1, len(files), f)
            if not asked and k < len(files) - 1:
                client = helpers()
                if client is not None:  # the workers take the inputs from the back
                    rest = list(range(len(files) - 1, k, -1))
                    remote = dict(zip(rest, client.map(_open_one, [str(files[i]) for i in rest], *(
                        [a] * len(rest) for a in args), record=True, pure=False), strict=True))
                    asked = True
            future = remote.pop(k, None)
            if future is not None and future.done() and future.status == "finished":
                ds, error, seen = future.result()
                for category, message in seen:
                    warn(message, category)
            else:
                if future is not None:
                    future.cancel()
                ds, error, _ = _open_one(str(f), *args)
            if error is not None:
                if cfg.on_error == "fail":
                    raise error
                skipped.append(SkippedInput(str(f), str(error)))
                warn(f"skipped: {error}")
                continue
            datasets.append(ds)
            opened.append(f)
    finally:
        for future in remote.values():
            future.cancel()
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
    if g.method == "srf":
        common.update(srf_shape=g.srf_shape, srf_window=g.srf_window)
    if g.composite:
        return composite(products, grid, period=g.composite, **common)
    if g.chunk is None:  # a job writes its map: a large one in blocks freed one by one
        spec = as_grid(grid)
        common["chunk"] = auto_chunk(spec, written=spec.shape[0] * spec.shape[1] > WRITTEN_IN_BLOCKS_ABOVE)
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
                    regions: Any, step_attrs: dict[str, dict[str, Any]] | None = None) -> list[Unit]:
    """Writers of the anomaly, hotspot and region-table stages for one species.

    A time step's anomaly map and quicklook depend on that step only (its own hotspot
    outlines), except with the ``climatology`` background, which uses every step;
    ``step_attrs`` are the per-step provenance attributes (see :func:`level3_units`).
    """
    units: list[Unit] = []
    data = l3
    hotspots = None
    regions_file = (cfg.resolve(cfg.regions.file),) if cfg.regions is not None else ()
    if cfg.anomaly is not None:
        params = cfg.anomaly.for_species(name)
        per_step = params.get("method", "daily_median") != "climatology"
        data = regional_anomaly(l3, **params)
        keep = [v for v in (f"{name}_background", f"{name}_anomaly", f"{name}_zscore", f"{name}_count") if v in data]
        anom = data[keep]
        steps = [(None, anom)] if "time" not in anom.dims else [
            (step_label(t, l3.attrs.get("composite_period", "day")), anom.isel(time=k))
            for k, t in enumerate(anom.time.values)]
        parts: list[Any] = []
        if cfg.hotspots is not None:
            small = data[[v for v in (f"{name}_anomaly", f"{name}_zscore", f"{name}_count") if v in data]]
            hs_params = cfg.hotspots.model_dump()
            if "time" in small.dims:  # one task per time step keeps memory bounded over long stacks
                parts = [dask.delayed(_hotspots_task, pure=False)(small.isel(time=[k]), hs_params)
                         for k in range(small.sizes["time"])]
                hotspots = dask.delayed(_concat_hotspots, pure=False)(*parts)
            else:
                hotspots = dask.delayed(_hotspots_task, pure=False)(small, hs_params)
                parts = [hotspots]
            stem_hs = out_dir / f"{name}_hotspots"
            units.append(Unit(lambda h=hotspots: dask.delayed(_write_hotspots_task, pure=False)(h, stem_hs),
                              [str(stem_hs.with_suffix(".geojson")), str(stem_hs.with_suffix(".csv"))],
                              kind="hotspots"))
        crs_wkt = GridSpec.from_dataset(l3).crs.to_wkt()
        for k, (label, step) in enumerate(steps):
            sname = f"{stem}_anomaly" if label is None else f"{stem}_anomaly_{label}"
            item = stem if label is None else f"{stem}_{label}"
            scope = label if per_step else None
            if "time" in step.coords:
                step = step.drop_vars("time")
            if per_step and step_attrs and label in step_attrs:
                step = step.assign_attrs(step_attrs[label])
            if "geotiff" in cfg.output.formats:
                path = out_dir / f"{sname}.tif"
                maps = [v for v in step.data_vars if step[v].dims == ("y", "x")]
                units.append(Unit(lambda s=step, p=path, m=maps: write_cog(s, p, variables=m, compute=False),
                                  [str(path)], scope, kind="anomaly", item=item))
            if "quicklook" in cfg.output.formats:
                # the outlines of this step's hotspots (and the regions) on this step's map
                outlines = dask.delayed(_outline_task, pure=False)(parts[k] if parts else None, regions, crs_wkt)
                path = out_dir / f"{sname}.png"
                units.append(Unit(lambda s=step, p=path, o=outlines: quicklook(
                    s, f"{name}_anomaly", p, cmap="RdBu_r", symmetric=True, outlines=o, compute=False),
                    [str(path)], scope, regions_file, kind="anomaly_overview", item=item))
    if regions is not None:
        cols = [v for v in (f"{name}_mean", f"{name}_count", f"{name}_weight", f"{name}_anomaly") if v in data]
        path = out_dir / f"{name}_regions.csv"

        def table() -> Any:
            # the cells' covered fractions depend on the polygons and the grid only: computed once, here, in the
            # main thread (in worker threads the overlay's last bits were seen to vary from run to run)
            cells = region_fractions(regions, GridSpec.from_dataset(l3))
            return dask.delayed(_table_task, pure=False)(data[cols], regions, hotspots, path, cells)

        units.append(Unit(table, [str(path)], None, regions_file, kind="regions"))
    return units


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
        reporter: Reporter | None = None, overwrite: bool = False, dry_run: bool = False) -> JobResult:
    """Run a job: read, grid each species, write the outputs; compute once.

    Every output is written under a temporary name and renamed into place when complete,
    so an interrupted or failed run never leaves a partial file under a final name; the
    temporaries of a failed run are removed, those of a killed run at the next run.

    Runs are resumable: the output folder's ``manifest.json`` (:mod:`eo_pipeline.manifest`)
    records every output with the configuration hash and the inputs its data came from,
    and a rerun writes only the outputs that are missing or whose inputs changed.

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
    overwrite : bool
        Recompute and rewrite every output, even up-to-date ones, and delete the outputs
        the manifest lists that this configuration no longer makes (needed when the
        configuration changed).
    dry_run : bool
        Plan only: find the inputs and the outputs that would be written or skipped
        (``JobResult.written`` / ``up_to_date``); nothing is computed or written.

    Raises
    ------
    ConfigError
        The folder holds outputs of another configuration (and not ``overwrite``).
    ClusterError
        The cluster cannot be reached.
    """
    from .cluster import PendingScheduler, choose_scheduler

    pending = None if dry_run else PendingScheduler(
        choose_scheduler(scheduler, cfg.cluster, workers=workers, base_dir=cfg.base_dir))
    try:
        return _run(cfg, pending, reporter or Reporter(), overwrite=overwrite, dry_run=dry_run)
    finally:
        try:
            if pending is not None:
                pending.close()
        finally:
            close_files()  # the per-process HDF5 handle cache: no file stays open after a job


def _forest_inputs(cfg: JobConfig) -> list[Path]:
    f = cfg.forest
    if f is None:
        return []
    files = [Path(p) for v in (f.treecover, f.lossyear, f.emissions, f.gain, f.biomass) if v is not None
             for p in cfg.forest_paths(v)]
    files += [cfg.resolve(p) for p in (f.regions, f.removal_factors) if p]
    return files


def _steps_of(products: list[xr.Dataset], l3: xr.Dataset) -> dict[str | None, list[xr.Dataset]]:
    """The products whose soundings can enter each time step (key None: every step)."""
    out: dict[str | None, list[xr.Dataset]] = {None: list(products)}
    if "time" not in l3.dims:
        return out
    period = l3.attrs.get("composite_period", "day")
    labels = [step_label(t, period) for t in l3.time.values]
    edges = period_edges(products, period)
    for label in labels:
        out[label] = []
    for ds in products:
        layers = layers_of(ds, edges)
        for k in range(len(labels)) if layers is None else layers:
            out[labels[k]].append(ds)
    return out


def _run(cfg: JobConfig, pending: Any, reporter: Reporter, *, overwrite: bool = False,
         dry_run: bool = False) -> JobResult:
    phases = _Phases()
    out_dir = cfg.resolve(cfg.output.dir)
    files = expand_inputs(cfg)
    chash = config_hash(cfg)
    forest_files = _forest_inputs(cfg)
    plume_files = _plume_inputs(cfg)
    regions_files = [cfg.resolve(cfg.regions.file)] if cfg.regions else []
    all_stamps = stamps([*files, *forest_files, *plume_files, *regions_files])
    manifest = Manifest.load(out_dir, replace_damaged=overwrite)
    manifest.check_config(chash, overwrite)
    if not overwrite and manifest.all_up_to_date(chash, all_stamps):
        # nothing changed since the last complete run: no input is opened
        up = sorted(str(out_dir / f) for f in manifest.outputs)
        result = JobResult(outputs=list(up), inputs=[str(f) for f in [*files, *_plume_scenes(cfg).values()]],
                           config_hash=chash, up_to_date=up)
        result.soundings, result.dropped = _totals(manifest, _recorded_steps(manifest))
        if not dry_run:
            phases.enter("cataloguing")
            if not (out_dir / COLLECTION).exists():  # removed by hand: the catalogue is made again
                write_catalog(out_dir, manifest.outputs, job=cfg.name, config_hash=chash)
            result.outputs.append(str(out_dir / COLLECTION))
        result.phases = phases.done()
        result.seconds = sum(result.phases.values())
        if not dry_run:
            result.outputs.append(_write_summary(out_dir, result, {"on_error": cfg.on_error, "skipped": []}))
        log.info("all %d outputs in %s are up to date", len(up), out_dir)
        return result
    phases.enter("opening")
    if pending is not None:  # a cluster starts while the inputs are opened
        pending.start()
    helpers = pending.ready_client if pending is not None and pending.choice.distributed else None
    datasets, skipped = open_inputs(cfg, files, reporter, helpers) if files else ([], [])
    if files and not datasets:  # only with on_error: skip, and every input skipped
        raise ConfigError(f"none of the {len(files)} inputs could be read; the first: {skipped[0].reason}")
    phases.enter("building")
    grid = cfg.grid_spec()
    by_species: dict[str, list[xr.Dataset]] = {}
    for ds in datasets:
        by_species.setdefault(species_of(ds).name, []).append(ds)
    stem_grid = grid.name or "grid"
    stems = {name: f"{name}_{cfg.gridding.method}_{stem_grid}" for name in sorted(by_species)}
    for o in [*stems.values(), *([cfg.forest.stem] if cfg.forest is not None else [])]:
        _confined(out_dir, out_dir / f"{o}.tif")
    if not dry_run:
        _check_output_dir(out_dir)
        stale = remove_temporaries(out_dir)
        if stale:
            log.info("removed %d temporary files of an interrupted run in %s", len(stale), out_dir)
    regions = load_regions(cfg.resolve(cfg.regions.file), name_field=cfg.regions.name_field) if cfg.regions else None
    stamp_of = {s["path"]: s for s in all_stamps}
    # every stage computes here (the writers take the cluster's locks when they are built)
    scheduler = pending.activate() if pending is not None else None

    def stamps_of(paths: Any) -> list[dict[str, Any]]:
        return [stamp_of[str(Path(p).resolve())] for p in dict.fromkeys(paths)]

    todo: list[Any] = []
    written: list[str] = []
    up_to_date: list[str] = []
    planned: list[str] = []
    steps_by_species: dict[str, list[str]] = {}
    for name, stem in stems.items():
        l3 = level3(cfg, by_species[name], grid)
        l3.attrs["config_hash"] = chash
        l3.attrs["job"] = cfg.name
        step_products = _steps_of(by_species[name], l3)
        deps = {k: [Path(ds.attrs["source_path"]) for ds in v] for k, v in step_products.items()}
        step_attrs = {k: provenance(v) for k, v in step_products.items() if k is not None}
        spans = _spans(l3)
        labels = [k for k in deps if k is not None] or [None]
        steps_by_species[name] = [str(k) if k is not None else "all" for k in labels]
        # one Delayed per period, on the graph's own keys: a dask array handed to a delayed call is
        # optimised on its own, which fused each chunk's gridding into a second, private copy
        used, dropped = ([d for d in l3[v].data.ravel().to_delayed(optimize_graph=False).ravel()]
                         for v in ("n_soundings_used", "n_footprints_dropped"))
        counts = {f"{name}/{lab}": (used[k], dropped[k]) for k, lab in enumerate(steps_by_species[name])}
        units = level3_units(l3, out_dir, stem, cfg.output.formats, step_attrs)
        units += analysis_stages(cfg, l3, name, stem, out_dir, regions, step_attrs)
        for u in units:
            for o in u.outputs:
                _confined(out_dir, o)
            inputs = stamps_of([*deps[u.step], *u.extra])
            rel = [Path(o).name for o in u.outputs]
            planned += u.outputs
            if not overwrite and all(manifest.up_to_date(r, chash, inputs) for r in rel):
                up_to_date += u.outputs
                continue
            written += u.outputs
            if dry_run:
                continue
            entries = [{"file": r, "config_hash": chash, "software": SOFTWARE, "job": cfg.name, "species": name,
                        "kind": u.kind, "item": u.item, "step": u.step, **spans.get(u.step, {}), "inputs": inputs}
                       for r in rel]
            mine = {k: v for k, v in counts.items() if u.step is None or k == f"{name}/{u.step}"}
            todo.append(dask.delayed(record_outputs, pure=False)(u.make(), str(manifest.records_dir), rel[0], entries,
                                                                 mine))
    forest_stamps = stamps_of(forest_files)
    forest_recorded = [f for f, e in manifest.outputs.items() if e.get("step") == "forest"]
    forest_done = (cfg.forest is not None and not overwrite and bool(forest_recorded)
                   and all(manifest.up_to_date(f, chash, forest_stamps) for f in forest_recorded))
    if cfg.forest is not None and forest_done:
        up_to_date += [str(out_dir / f) for f in forest_recorded]
        planned += [str(out_dir / f) for f in forest_recorded]
    plume_scenes = _plume_scenes(cfg)
    plume_todo = []
    for scene, cube in plume_scenes.items():
        names = [f"{scene}_{n}" for n in PLUME_FILES]
        if cfg.plumes is not None and cfg.plumes.grid is not None:
            names.append(f"{scene}_ch4_enhancement_{cfg.plume_grid().name or 'grid'}.tif")
        recorded = [f for f, e in manifest.outputs.items() if e.get("step") == f"plumes/{scene}"]
        scene_stamps = stamps_of(_cube_files(cube))
        done = (not overwrite and bool(recorded)
                and all(manifest.up_to_date(f, chash, scene_stamps) for f in recorded))
        for n in names:
            _confined(out_dir, out_dir / n)
        if done:
            up_to_date += [str(out_dir / f) for f in recorded]
            planned += [str(out_dir / f) for f in recorded]
        else:
            written += [str(out_dir / n) for n in names]
            planned += [str(out_dir / n) for n in names]
            plume_todo.append((scene, cube, recorded, scene_stamps))
    if dry_run:
        if cfg.forest is not None and not forest_done:
            written.append(str(out_dir / f"{cfg.forest.stem}.csv"))  # and its maps: named once the years are known
            planned.append(written[-1])
        done = phases.done()
        return JobResult(outputs=sorted(planned), inputs=[str(f) for f in [*files, *_plume_scenes(cfg).values()]],
                         config_hash=chash, skipped=skipped, written=written, up_to_date=up_to_date,
                         seconds=sum(done.values()), phases=done)
    if overwrite:  # never a mix: what this configuration does not make goes
        removed = manifest.remove_outputs(keep=[Path(o).name for o in planned])
        if removed:
            log.info("removed %d outputs of an earlier configuration from %s", len(removed), out_dir)
    manifest.forget(Path(o).name for o in written)
    phases.enter("computing")
    try:
        if cfg.forest is not None and not forest_done:
            manifest.forget(forest_recorded)
            new = forest_outputs(cfg, out_dir)
            record_outputs(None, str(manifest.records_dir), f"{cfg.forest.stem}.forest",
                           [{"file": Path(o).name, "config_hash": chash, "software": SOFTWARE, "job": cfg.name,
                             "step": "forest", "species": "forest", "kind": _forest_kind(o),
                             "item": Path(o).stem if o.endswith((".tif", ".png")) else None,
                             "inputs": forest_stamps} for o in new], {})
            written += new
            planned += new
        for scene, cube, recorded, scene_stamps in plume_todo:
            manifest.forget(recorded)
            new = plume_outputs(cfg, cube, scene, out_dir)
            record_outputs(None, str(manifest.records_dir), f"{scene}.plumes", [
                {"file": Path(o).name, "config_hash": chash, "software": SOFTWARE, "job": cfg.name,
                 "step": f"plumes/{scene}", "species": "ch4_plumes", "kind": kind,
                 "item": f"{scene}_ch4_plumes" if georeferenced else None, **span, "inputs": scene_stamps}
                for o, kind, georeferenced, span in new], {})
        log.info("computing %d outputs from %d inputs (%d up to date)", len(written), len(files), len(up_to_date))
        with reporter.computing(len(written)):
            compute_outputs(todo, scheduler)
    finally:
        remove_temporaries(out_dir)  # a failed run's parts; a finished run's done markers
        manifest.save(job=cfg.name, chash=chash, inputs=all_stamps, complete=False)
    phases.enter("cataloguing")
    used = [str(f) for f in files if str(f) not in {s.file for s in skipped}]
    used += [str(p) for p in plume_scenes.values()]
    soundings, dropped_n = _totals(manifest, steps_by_species)
    # the catalogue of everything in the folder (this run's outputs and earlier ones); only then is the
    # folder complete (a run killed before this point is finished by the next one)
    catalogue = write_catalog(out_dir, manifest.outputs, job=cfg.name, config_hash=chash)
    manifest.save(job=cfg.name, chash=chash, inputs=all_stamps, complete=True)
    done = phases.done()
    result = JobResult(outputs=[*sorted(planned), str(catalogue)], inputs=used, seconds=sum(done.values()),
                       config_hash=chash, soundings=soundings, dropped=dropped_n, written=written,
                       up_to_date=up_to_date, phases=done)
    result.outputs.append(_write_summary(out_dir, result, {
        "on_error": cfg.on_error, "skipped": [{"file": s.file, "reason": s.reason} for s in skipped]}))
    result.skipped = skipped
    return result


#: Files the plume stage writes per scene (``<scene>_<name>``) and their kinds in the manifest and catalogue.
PLUME_FILES = {"ch4_enhancement.tif": "enhancement", "ch4_enhancement_albedo_corrected.tif": "enhancement_albedo",
               "plume_mask.tif": "plume_mask", "plumes.csv": "plumes_table", "plumes.geojson": "plumes",
               "quicklook.png": "overview"}


def _plume_inputs(cfg: JobConfig) -> list[Path]:
    return [f for cube in _plume_scenes(cfg).values() for f in _cube_files(cube)]


def _cube_files(cube: Path) -> list[Path]:
    """A cube's data file and, for ENVI, its header (a changed header changes the maps)."""
    from .readers.envi import _header_for

    hdr = _header_for(cube)
    return [cube, hdr] if hdr is not None else [cube]


def _plume_scenes(cfg: JobConfig) -> dict[str, Path]:
    """Scene name (the file name without its .nc/.hdr suffix) -> radiance cube."""
    if cfg.plumes is None:
        return {}
    out: dict[str, Path] = {}
    for p in cfg.plume_paths():
        scene = p.stem if p.suffix.lower() in (".nc", ".nc4", ".img", ".bin", ".dat") else p.name
        if scene in out:
            raise ConfigError(f"plumes.inputs: two cubes are named {scene!r} ({out[scene]} and {p}); "
                              "give scenes distinct file names")
        out[scene] = p
    return out


def plume_outputs(cfg: JobConfig, cube: Path, scene: str, out_dir: Path) -> list[tuple[str, str, bool, dict]]:
    """Run the plume stage on one scene of a job; ``(path, kind, georeferenced, span)`` per output."""
    from .plume_stage import run_plumes

    f = cfg.plumes
    assert f is not None
    run = run_plumes(cube, out_dir, fwhm_nm=f.fwhm_nm, wind_speed=f.wind_speed,
                     wind_speed_uncertainty=f.wind_speed_uncertainty, sensor=f.sensor, threshold=f.threshold,
                     passes=f.passes, window_nm=f.window_nm, ueff=f.ueff, grid=cfg.plume_grid(), prefix=f"{scene}_",
                     albedo_correction=f.albedo_correction)
    georef = "x" in run["result"].coords
    span = {k: v for k, v in (("start", run.get("time", "")), ("end", run.get("time", ""))) if v}
    out = []
    for o in run["outputs"]:
        name = Path(o).name.removeprefix(f"{scene}_")
        kind = PLUME_FILES.get(name, "enhancement_grid")
        out.append((o, kind, georef, span))
    return out


def _forest_kind(path: str) -> str:
    return {".tif": "map", ".png": "overview", ".nc": "netcdf"}.get(Path(path).suffix, "table")


def _iso_z(t: Any) -> str:
    return str(np.datetime_as_string(np.datetime64(t, "s"))) + "Z"


def _spans(l3: xr.Dataset) -> dict[str | None, dict[str, str]]:
    """Time span of each step's outputs (``start``/``end``, ISO 8601 UTC): its period, or the inputs' coverage.

    A period's ``end`` is its last second (``...T23:59:59Z``): STAC's ``end_datetime`` is inclusive.
    """
    out: dict[str | None, dict[str, str]] = {}
    whole = {"start": l3.attrs.get("time_coverage_start", ""), "end": l3.attrs.get("time_coverage_end", "")}
    if "time" in l3.dims and "time_bounds" in l3:
        bounds = l3["time_bounds"].values
        second = np.timedelta64(1, "s")
        period = l3.attrs.get("composite_period", "day")
        for k, t in enumerate(l3.time.values):
            out[step_label(t, period)] = {"start": _iso_z(bounds[k, 0]), "end": _iso_z(bounds[k, 1] - second)}
        whole = {"start": _iso_z(bounds[0, 0]), "end": _iso_z(bounds[-1, 1] - second)}
    out[None] = whole
    return out


def _recorded_steps(manifest: Manifest) -> dict[str, list[str]]:
    steps: dict[str, list[str]] = {}
    for key in manifest.periods:
        stem, _, label = key.rpartition("/")
        steps.setdefault(stem, []).append(label)
    return steps


def _totals(manifest: Manifest, steps: dict[str, list[str]]) -> tuple[dict[str, int], dict[str, int]]:
    """Soundings used and footprints dropped per species, summed over its time steps' records."""
    def total(what: str) -> dict[str, int]:
        return {s: sum(manifest.periods.get(f"{s}/{k}", {}).get(what, 0) for k in ks) for s, ks in steps.items()}

    return total("soundings_used"), total("footprints_dropped")
