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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import xarray as xr

from ._version import __version__
from .config import JobConfig, config_hash
from .errors import ConfigError
from .gridding import grid_soundings
from .io.geotiff import write_cog
from .io.quicklook import quicklook
from .readers import detect_reader, list_readers, open_product
from .readers._netcdf import NCFile
from .schema import species_of

__all__ = ["run", "JobResult", "expand_inputs", "open_inputs"]

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a job wrote."""

    outputs: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    config_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for the job summary JSON)."""
        return {"outputs": self.outputs, "inputs": self.inputs, "seconds": round(self.seconds, 3),
                "config_hash": self.config_hash, "software": f"eo_pipeline {__version__}"}


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


def open_inputs(cfg: JobConfig, files: list[Path]) -> list[xr.Dataset]:
    """Open every input with its reader's options from ``reader_options`` (lazy)."""
    readers = list_readers()
    unknown = sorted(set(cfg.reader_options) - set(readers))
    if unknown:
        raise ConfigError(f"reader_options names unknown reader(s) {unknown}; readers: {', '.join(readers)}")
    datasets = []
    for f in files:
        with NCFile(f) as nc:
            name = detect_reader(nc, readers).name
        datasets.append(open_product(f, qa_threshold=cfg.qa_threshold, reader=name,
                                     **cfg.reader_options.get(name, {})))
    return datasets


def run(cfg: JobConfig, *, scheduler: str | None = None) -> JobResult:
    """Run a job: read, grid each species, write COG/quicklook outputs; compute once.

    Parameters
    ----------
    cfg : JobConfig
        Validated configuration (:func:`eo_pipeline.config.load_config`).
    scheduler : str, optional
        Dask scheduler for the single compute (``threads``, ``processes``,
        ``synchronous``); default: the active dask configuration or client.
    """
    t0 = time.perf_counter()
    files = expand_inputs(cfg)
    datasets = open_inputs(cfg, files)
    grid = cfg.grid_spec()
    out_dir = cfg.resolve(cfg.output.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chash = config_hash(cfg)
    by_species: dict[str, list[xr.Dataset]] = {}
    for ds in datasets:
        by_species.setdefault(species_of(ds).name, []).append(ds)
    tasks: list[Any] = []
    outputs: list[str] = []
    stem_grid = grid.name or "grid"
    for name, group in sorted(by_species.items()):
        l3 = grid_soundings(group, grid, method=cfg.gridding.method, weighting=cfg.gridding.weighting,
                            chunk=cfg.gridding.chunk, min_weight=cfg.gridding.min_weight)
        l3.attrs["config_hash"] = chash
        l3.attrs["job"] = cfg.name
        stem = f"{name}_{cfg.gridding.method}_{stem_grid}"
        if "geotiff" in cfg.output.formats:
            path = out_dir / f"{stem}.tif"
            tasks.append(write_cog(l3, path, compute=False))
            outputs.append(str(path))
        if "netcdf" in cfg.output.formats:
            from .io.netcdf import write_netcdf

            path = out_dir / f"{stem}.nc"
            tasks.append(write_netcdf(l3, path, compute=False))
            outputs.append(str(path))
        if "quicklook" in cfg.output.formats:
            path = out_dir / f"{stem}_mean.png"
            tasks.append(quicklook(l3, f"{name}_mean", path, compute=False))
            outputs.append(str(path))
    log.info("computing %d outputs from %d inputs", len(tasks), len(files))
    kwargs = {"scheduler": scheduler} if scheduler else {}
    dask.compute(*tasks, **kwargs)
    result = JobResult(outputs=outputs, inputs=[str(f) for f in files], seconds=time.perf_counter() - t0,
                       config_hash=chash)
    summary = out_dir / "job_summary.json"
    tmp = summary.with_name(".job_summary.json.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    os.replace(tmp, summary)
    result.outputs.append(str(summary))
    return result
