# SPDX-License-Identifier: Apache-2.0
"""Jobs as users run them, when things go wrong: killed runs, full disks, unwritable folders,
damaged inputs in a batch (on_error), escaping output names, unsafe YAML, odd paths.

Every job runs as a whole ``eo-pipeline`` process, the way users and schedulers start it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
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

from .conftest import SAMPLES
from .damage import write_damaged_inputs

CLI = [sys.executable, "-m", "eo_pipeline.cli"]
REGIONS = SAMPLES / "regions_north_china.geojson"
CH4 = sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc"))
OCO2 = sorted(SAMPLES.glob("oco2_LtCO2_*.nc4"))


def write_job(path: Path, inputs: list[Path | str], out: Path, **extra) -> Path:
    """A small job on the sample scenes: two species, every output kind, anomalies, hotspots, regions."""
    doc = {
        "name": "reliability",
        "inputs": [str(p) for p in inputs],
        "gridding": {"grid": "north_china_0p05", "method": "area"},
        "anomaly": {"method": "daily_median"},
        "hotspots": {},
        "regions": {"file": str(REGIONS), "name_field": "id"},
        # relative to the job file, so that jobs in two folders have the same configuration hash
        "output": {"dir": os.path.relpath(out, path.parent), "formats": ["geotiff", "netcdf", "quicklook"]},
    }
    doc.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def run_cli(*args: str, preexec=None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, preexec_fn=preexec, cwd=cwd, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("eo-pipeline: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def final_files(out: Path) -> dict[str, Path]:
    return {p.name: p for p in out.iterdir() if not p.name.startswith(".")} if out.exists() else {}


def temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


def assert_complete(path: Path) -> None:
    """A file under a final name is whole: it opens and every value reads."""
    suffix = path.suffix.lower()
    if suffix == ".tif":
        from rio_cogeo.cogeo import cog_validate

        assert cog_validate(str(path))[0], path
        with rasterio.open(path) as r:
            r.read()
    elif suffix == ".nc":
        with xr.open_dataset(path) as ds:
            ds.load()
    elif suffix == ".png":
        import matplotlib.image

        assert matplotlib.image.imread(str(path)).size
    elif suffix in (".json", ".geojson"):
        json.loads(path.read_text())
    elif suffix == ".csv":
        import pandas as pd

        pd.read_csv(path)
    elif path.is_dir() and path.name == "stac":  # the catalogue's items and band VRTs
        for f in path.rglob("*.json"):
            json.loads(f.read_text())
        for f in path.rglob("*.vrt"):
            with rasterio.open(f) as r:
                r.read(1)
    else:
        raise AssertionError(f"unexpected output {path}")


def assert_same_outputs(a: Path, b: Path) -> None:
    """The outputs of two runs hold the same data (timestamps and run times aside)."""
    fa, fb = final_files(a), final_files(b)
    assert sorted(fa) == sorted(fb)
    for name, pa in fa.items():
        pb = fb[name]
        if name.endswith(".tif"):
            with rasterio.open(pa) as ra, rasterio.open(pb) as rb:
                assert ra.transform == rb.transform and ra.crs == rb.crs and ra.tags() == rb.tags()
                np.testing.assert_array_equal(ra.read(), rb.read())
        elif name.endswith(".nc"):
            with xr.open_dataset(pa) as da_, xr.open_dataset(pb) as db:
                xr.testing.assert_identical(da_.drop_attrs() if hasattr(da_, "drop_attrs") else da_,
                                            db.drop_attrs() if hasattr(db, "drop_attrs") else db)
                assert {k: v for k, v in da_.attrs.items() if k != "history"} == \
                    {k: v for k, v in db.attrs.items() if k != "history"}
        elif name == "job_summary.json":
            sa, sb = json.loads(pa.read_text()), json.loads(pb.read_text())
            assert [Path(p).name for p in sa["outputs"]] == [Path(p).name for p in sb["outputs"]]
            assert sa["inputs"] == sb["inputs"] and sa["config_hash"] == sb["config_hash"]
        elif name.endswith(".png"):
            import matplotlib.image

            np.testing.assert_array_equal(matplotlib.image.imread(str(pa)), matplotlib.image.imread(str(pb)))
        elif name == "manifest.json":  # written at other times: what was made from what is the same
            ma, mb = json.loads(pa.read_text()), json.loads(pb.read_text())
            assert (ma["config_hash"], ma["periods"], sorted(ma["outputs"])) == (
                mb["config_hash"], mb["periods"], sorted(mb["outputs"]))
            assert [ma["outputs"][k]["inputs"] for k in sorted(ma["outputs"])] == [
                mb["outputs"][k]["inputs"] for k in sorted(mb["outputs"])]
        elif name == "stac":
            files_a = sorted(p.relative_to(pa) for p in pa.rglob("*") if p.is_file())
            assert files_a == sorted(p.relative_to(pb) for p in pb.rglob("*") if p.is_file())
            for rel in files_a:
                assert (pa / rel).read_bytes() == (pb / rel).read_bytes(), rel
        else:
            assert pa.read_bytes() == pb.read_bytes(), name


# ---------------------------------------------------------------------------- killed runs
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("reference")
    job = write_job(base / "job.yaml", [*CH4, *OCO2], base / "out")
    proc = run_cli("run", str(job))
    assert proc.returncode == 0, proc.stderr
    return base / "out"


def _kill_when(job: Path, out: Path, condition, label: str) -> None:
    """Start the job, SIGKILL its whole process group once ``condition(out)`` holds."""
    proc = subprocess.Popen([*CLI, "run", str(job)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if condition(out):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:  # finished before the condition was seen: still a valid case
        assert proc.returncode == 0, (label, proc.stderr.read().decode())
    for path in final_files(out).values():
        assert_complete(path)


def test_killed_runs_leave_no_partial_file_and_rerun_equals_an_uninterrupted_run(tmp_path, reference):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", [*CH4, *OCO2], out)
    n_final = len(final_files(reference))
    t_start = [0.0]

    def after(seconds):
        def cond(_out):
            if not t_start[0]:
                t_start[0] = time.monotonic()
            return time.monotonic() - t_start[0] > seconds
        return cond

    points = [
        ("while importing", after(0.2)),
        ("at the first temporary file", lambda o: bool(temporaries(o))),
        ("at the first COG in place", lambda o: any(n.endswith(".tif") for n in final_files(o))),
        ("with half the outputs in place", lambda o: len(final_files(o)) >= n_final // 2),
        ("with all but the summary in place", lambda o: len(final_files(o)) >= n_final - 1),
    ]
    for label, cond in points:
        t_start[0] = 0.0
        _kill_when(job, out, cond, label)
    proc = run_cli("run", str(job))
    assert proc.returncode == 0, proc.stderr
    assert temporaries(out) == []
    assert_same_outputs(out, reference)


# ---------------------------------------------------------------------------- full disk, unwritable folder
def test_full_disk_gives_one_line_and_leaves_nothing_partial(tmp_path):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", [*CH4], out)
    limit = 150_000  # bytes: the XCH4 COG needs about 900 kB

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = run_cli("run", str(job), preexec=small_disk)
    line = assert_one_line_error(proc)
    assert "file size limit" in line or "no space" in line.lower(), line
    assert temporaries(out) == []
    for path in final_files(out).values():
        assert_complete(path)


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder nobody can write into: chmod for users; as root, the immutable attribute."""
    d = tmp_path / "read only"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)]).returncode != 0:
        pytest.skip("running as root without a working 'chattr +i': cannot make a folder unwritable")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)])


def test_unwritable_output_folder_fails_before_any_work(tmp_path, unwritable_dir):
    job = write_job(tmp_path / "job.yaml", [*CH4], unwritable_dir / "out")
    proc = run_cli("run", str(job))
    assert_one_line_error(proc, str(unwritable_dir / "out"), "output")
    job = write_job(tmp_path / "job2.yaml", [*CH4], unwritable_dir)
    assert_one_line_error(run_cli("run", str(job)), str(unwritable_dir), "cannot write")
    assert not list(unwritable_dir.iterdir())


# ---------------------------------------------------------------------------- damaged inputs in a batch
@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Good sample scenes plus damaged copies: truncated, not HDF5 at all, empty."""
    d = tmp_path_factory.mktemp("batch")
    for p in [*CH4, *OCO2]:
        shutil.copy(p, d / p.name)
    good = sorted(d.iterdir())
    return d, good, write_damaged_inputs(d, CH4[0])


def test_on_error_fail_stops_with_the_damaged_files_name(tmp_path, batch):
    d, good, bad = batch
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", [str(d / "*.nc"), str(d / "*.nc4")], out)
    proc = run_cli("run", str(job))
    line = assert_one_line_error(proc)
    assert any(str(p) in line for p in bad.values()), line
    assert final_files(out) == {} and temporaries(out) == []


def test_on_error_skip_lists_skipped_files_and_keeps_the_good_numbers(tmp_path, batch):
    d, good, bad = batch
    job = write_job(tmp_path / "job.yaml", [str(d / "*.nc"), str(d / "*.nc4")], tmp_path / "out", on_error="skip")
    proc = run_cli("run", str(job))
    assert proc.returncode == 0, proc.stderr
    assert "3 skipped" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "out" / "job_summary.json").read_text())
    skipped = {s["file"]: s["reason"] for s in summary["skipped"]}
    assert sorted(skipped) == sorted(str(p) for p in bad.values())
    assert all(reason.startswith(f) for f, reason in skipped.items())
    assert sorted(summary["inputs"]) == sorted(str(p) for p in good)
    only_good = write_job(tmp_path / "good.yaml", good, tmp_path / "good")
    assert run_cli("run", str(only_good)).returncode == 0
    for name in ("xch4_area_north_china_0p05.tif", "xco2_area_north_china_0p05.tif", "xch4_regions.csv"):
        a, b = tmp_path / "out" / name, tmp_path / "good" / name
        if name.endswith(".tif"):
            with rasterio.open(a) as ra, rasterio.open(b) as rb:
                np.testing.assert_array_equal(ra.read(), rb.read())
        else:
            assert a.read_bytes() == b.read_bytes()


# ---------------------------------------------------------------------------- security
@pytest.mark.parametrize("change, needle", [
    ({"grids": {"../escape": {"crs": "EPSG:4326", "bbox": [105, 33, 120, 45], "resolution": 0.1}},
      "gridding": {"grid": "../escape", "method": "area"}}, "outside the output folder"),
    ({"forest": {"treecover": str(next(SAMPLES.glob("Hansen_*treecover2000*.tif"))), "stem": "../../stolen",
                 "removal_factor": 0.5}}, "forest.stem"),
    ({"forest": {"treecover": str(next(SAMPLES.glob("Hansen_*treecover2000*.tif"))), "stem": "/tmp/abs",
                 "removal_factor": 0.5}}, "forest.stem"),
])
def test_output_names_are_confined_to_the_output_folder(tmp_path, change, needle):
    out = tmp_path / "deep" / "out"
    job = write_job(tmp_path / "job.yaml", [*CH4], out, **change)
    line = assert_one_line_error(run_cli("run", str(job)), needle)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".tif", ".csv", ".png")], line


def test_configs_load_with_safe_yaml_only(tmp_path):
    marker = tmp_path / "pwned"
    job = tmp_path / "job.yaml"
    job.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\ninputs: [x.nc]\n"
                   "gridding: {grid: north_china_0p1}\noutput: {dir: out}\n")
    assert_one_line_error(run_cli("run", str(job)), str(job), "not valid YAML")
    assert not marker.exists()


def test_paths_with_spaces_and_non_ascii_letters(tmp_path):
    inputs = tmp_path / "données d'entrée" / "样本 scenes"
    inputs.mkdir(parents=True)
    for p in [*CH4, *OCO2]:
        shutil.copy(p, inputs / p.name)
    out = tmp_path / "résultats été" / "輸出"
    job = write_job(tmp_path / "tâche à faire.yaml", [str(inputs / "*.nc"), str(inputs / "*.nc4")], out)
    proc = run_cli("run", str(job))
    assert proc.returncode == 0, proc.stderr
    for path in final_files(out).values():
        assert_complete(path)
    # 17 outputs, the job summary, the manifest, the STAC collection and its items' folder
    assert len(final_files(out)) == 20 and temporaries(out) == []
    assert {"manifest.json", "collection.json", "stac"} <= set(final_files(out))


def test_the_same_product_twice_counts_once(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(CH4[0], d / CH4[0].name)
    copy = d / CH4[0].name.replace("20230717T053012", "20230801T000000")  # a re-download, another name
    shutil.copy(CH4[0], copy)
    job = write_job(tmp_path / "job.yaml", [str(d / "*.nc")], tmp_path / "out")
    proc = run_cli("run", str(job))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("the same product as") == 1 and str(copy) in proc.stderr
    summary = json.loads((tmp_path / "out" / "job_summary.json").read_text())
    assert [s["file"] for s in summary["skipped"]] == [str(copy)] and summary["inputs"] == [str(d / CH4[0].name)]
    single = write_job(tmp_path / "single.yaml", [CH4[0]], tmp_path / "single")
    assert run_cli("run", str(single)).returncode == 0
    with rasterio.open(tmp_path / "out" / "xch4_area_north_china_0p05.tif") as a, \
            rasterio.open(tmp_path / "single" / "xch4_area_north_china_0p05.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    grid = run_cli("grid", str(d / "*.nc"), "--grid", "north_china_0p1", "-o", str(tmp_path / "g.tif"))
    assert grid.returncode == 0 and "the same product as" in grid.stderr
