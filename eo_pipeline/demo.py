# SPDX-License-Identifier: Apache-2.0
"""The demo, runnable from an installed package: sample scenes + the bundled demo job.

``eo-pipeline demo -o DIR`` lays out ``DIR`` like the repository, so the bundled job
(``eo_pipeline/data/demo.yaml``, the same file as the repository's ``configs/demo.yaml``)
runs unchanged with its relative paths::

    DIR/sample_scenes/   synthetic scenes in the real products' layouts (deterministic)
    DIR/configs/demo.yaml
    DIR/outputs/demo/    the maps, tables and quicklooks
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import OutputError

__all__ = ["demo_config_text", "run_demo"]


def demo_config_text() -> str:
    """The bundled demo job (YAML text), read with :mod:`importlib.resources`."""
    return resources.files("eo_pipeline").joinpath("data", "demo.yaml").read_text(encoding="utf-8")


def run_demo(out_dir: str | os.PathLike[str] = "eo_pipeline_demo", *, scheduler: str | None = None) -> Any:
    """Write the sample scenes and the demo job under ``out_dir`` and run the job.

    Parameters
    ----------
    out_dir : path-like
        Folder to create (or reuse); the outputs go to ``out_dir/outputs/demo``.
    scheduler : str, optional
        Dask scheduler for the job (see :func:`eo_pipeline.run`).

    Returns
    -------
    eo_pipeline.pipeline.JobResult
        What the job wrote.
    """
    from .config import load_config
    from .pipeline import run
    from .samples import make_samples

    root = Path(out_dir).expanduser().resolve()
    try:
        (root / "configs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{root}: cannot create the demo folder ({exc.strerror}); choose another with -o DIR") from exc
    make_samples(root / "sample_scenes")
    config = root / "configs" / "demo.yaml"
    tmp = config.with_name(".demo.yaml.tmp")
    tmp.write_text(demo_config_text(), encoding="utf-8")
    os.replace(tmp, config)
    return run(load_config(config), scheduler=scheduler)
