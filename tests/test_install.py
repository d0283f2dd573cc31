# SPDX-License-Identifier: Apache-2.0
"""A normal (non-editable) install works from any folder: the wheel in a fresh virtual environment.

Everything the package reads at run time (named grids, the removal-factor table, the
demo job) must ship inside the wheel; the working directory is never searched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

pytestmark = pytest.mark.slow

_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "outputs", "*.egg-info", "__pycache__",
                                 ".pytest_cache", ".hypothesis", ".ruff_cache", "benchmarks", "notebooks", "tests")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, object]:
    """Build the wheel from a copy of the source tree and install it into a new venv."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=_IGNORE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EO_PIPELINE", "VIRTUAL_ENV", "PYTHON"))}
    env["HOME"] = str(base / "home")
    env["XDG_CONFIG_HOME"] = str(base / "home" / ".config")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(src)], base, env)
    wheels = list((base / "dist").glob("eo_pipeline-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], base, env)
    # --no-compile: bytecode is written on first import instead (the suite imports a fraction of the deps)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", str(wheels[0])], base, env)
    elsewhere = base / "somewhere else"
    elsewhere.mkdir()
    # a decoy: the working directory must never be searched for grids
    (elsewhere / "configs").mkdir()
    (elsewhere / "configs" / "grids.yaml").write_text(
        "grids:\n  decoy_cwd: {crs: 'EPSG:4326', bbox: [0, 0, 1, 1], resolution: 0.5}\n")
    return {"venv": venv, "cwd": elsewhere, "env": env, "wheel": wheels[0], "base": base}


def _cli(installed: dict[str, object], *args: str, ok: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    venv = installed["venv"]
    assert isinstance(venv, Path)
    return _run([str(venv / "bin" / "eo-pipeline"), *args], installed["cwd"], env or installed["env"], ok)  # type: ignore[arg-type]


def test_wheel_ships_the_runtime_data(installed):
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for needed in ("eo_pipeline/data/grids.yaml", "eo_pipeline/data/removal_factors_ipcc2019.yaml",
                   "eo_pipeline/data/demo.yaml", "eo_pipeline/py.typed"):
        assert needed in names
    venv = installed["venv"]
    proc = _run([str(venv / "bin" / "python"), "-c", "import eo_pipeline; print(eo_pipeline.__file__)"],
                installed["cwd"], installed["env"])
    assert str(venv) in proc.stdout and str(ROOT) not in proc.stdout


def test_grids_from_the_package_and_the_users_files_not_the_cwd(installed):
    out = _cli(installed, "grids").stdout
    assert "global_0p1" in out and "north_china_0p05" in out and "decoy_cwd" not in out
    env = dict(installed["env"])
    user = Path(env["XDG_CONFIG_HOME"]) / "eo_pipeline" / "grids.yaml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text("grids:\n  my_user_grid: {crs: 'EPSG:4326', bbox: [100, 30, 101, 31], resolution: 0.1}\n")
    extra = Path(installed["base"]) / "env_grids.yaml"
    extra.write_text("grids:\n  my_env_grid: {crs: 'EPSG:32650', bbox: [0, 0, 10000, 10000], resolution: 1000}\n")
    env["EO_PIPELINE_GRIDS"] = str(extra)
    try:
        out = _cli(installed, "grids", env=env).stdout
        assert "my_user_grid" in out and "my_env_grid" in out and "decoy_cwd" not in out
    finally:
        user.unlink()


def test_demo_grid_and_forest_from_another_folder(installed):
    cwd = installed["cwd"]
    assert isinstance(cwd, Path)
    demo = _cli(installed, "demo", "-o", "démo run")
    outputs = [Path(line) for line in demo.stdout.splitlines()]
    root = cwd / "démo run"
    assert (root / "configs" / "demo.yaml").is_file() and (root / "sample_scenes" / "MANIFEST.json").is_file()
    assert outputs and all(p.is_file() for p in outputs), [p for p in outputs if not p.is_file()]
    assert (root / "outputs" / "demo" / "xch4_area_north_china_0p05.tif").is_file()
    assert (root / "outputs" / "demo" / "forest.csv").is_file()
    # the bundled job is the repository's configs/demo.yaml
    assert (root / "configs" / "demo.yaml").read_text() == (ROOT / "configs" / "demo.yaml").read_text()

    scenes = root / "sample_scenes"
    ch4 = sorted(scenes.glob("S5P_OFFL_L2__CH4____*.nc"))[0]
    _cli(installed, "grid", str(ch4), "--grid", "global_0p1", "-o", "x.tif")
    import rasterio

    with rasterio.open(cwd / "x.tif") as r:
        assert r.width == 3600 and r.height == 1800 and r.crs.to_epsg() == 4326

    tc = next(scenes.glob("Hansen_*treecover2000*.tif"))
    ly = next(scenes.glob("Hansen_*lossyear*.tif"))
    zone = "subtropical/subtropical_humid_forest/asia/natural_gt20y"
    _cli(installed, "forest", "--treecover", str(tc), "--lossyear", str(ly), "--years", "2000-2023",
         "--zone", zone, "-o", "forest.csv")
    import pandas as pd

    table = pd.read_csv(cwd / "forest.csv")
    assert (table["removals_tco2"] > 0).all() and table["year"].max() == 2023


def test_unknown_grid_names_the_places_to_add_one(installed):
    proc = _cli(installed, "grid", "whatever.nc", "--grid", "decoy_cwd", "-o", "y.tif", ok=False)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and "unknown grid 'decoy_cwd'" in line and "EO_PIPELINE_GRIDS" in line


def test_packaged_demo_job_is_the_repositorys():
    from eo_pipeline.demo import demo_config_text

    assert demo_config_text() == (ROOT / "configs" / "demo.yaml").read_text()
    assert yaml.safe_load(demo_config_text())["gridding"]["grid"] == "north_china_0p05"
