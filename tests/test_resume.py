# SPDX-License-Identifier: Apache-2.0
"""Resumable runs (issue 10, point 5): the manifest, reruns, new days, changed inputs and configs, dry runs.

Every run here is a whole ``eo-pipeline run`` process on small synthetic daily S5P CH4
orbits (:func:`eo_pipeline.samples.make_daily_orbits`) with daily composites and every
stage that makes per-day files (maps, anomaly maps, quicklooks) or summarises all days
(NetCDF stack, hotspot and region tables).
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
import yaml

from eo_pipeline.config import load_config
from eo_pipeline.manifest import MANIFEST_NAME, RECORDS_DIR
from eo_pipeline.samples import make_daily_orbits

from .test_cluster import _assert_same_outputs

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_scenes"
EXE = str(Path(sys.executable).parent / "eo-pipeline")
PER_DAY = ("xch4_area_north_china_0p05_{d}.tif", "xch4_area_north_china_0p05_{d}_mean.png",
           "xch4_area_north_china_0p05_anomaly_{d}.tif", "xch4_area_north_china_0p05_anomaly_{d}.png")
WHOLE = ("xch4_area_north_china_0p05.nc", "xch4_hotspots.geojson", "xch4_hotspots.csv", "xch4_regions.csv")
DAYS = ("20230715", "20230716", "20230717")


def per_day(d: str) -> list[str]:
    return [f.format(d=d) for f in PER_DAY]


@pytest.fixture(scope="module")
def orbits(tmp_path_factory) -> list[Path]:
    return make_daily_orbits(tmp_path_factory.mktemp("orbits"), days=3)


def job(tmp: Path, inputs: list[Path], **changes) -> Path:
    """A daily-composite job on ``inputs`` (linked into ``tmp/in``) writing to ``tmp/out``."""
    src = tmp / "in"
    src.mkdir(parents=True, exist_ok=True)
    for p in inputs:
        if not (src / p.name).exists():
            os.link(p, src / p.name)
    doc = {"name": "resume", "inputs": [str(src / "*.nc")],
           "gridding": {"grid": "north_china_0p05", "method": "area", "composite": "day"},
           "output": {"dir": str(tmp / "out"), "formats": ["geotiff", "netcdf", "quicklook"]},
           "anomaly": {"method": "moving_median", "radius_km": 100, "zscore": True},
           "hotspots": {},
           "regions": {"file": str(SAMPLES / "regions_north_china.geojson"), "name_field": "id"}}
    for key, value in changes.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    cfg = tmp / "job.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    return cfg


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def files(out: Path) -> dict[str, tuple[int, int]]:
    """Outputs of a folder: name -> (inode, modification time ns); a rewritten file changes both.

    The STAC catalogue (rewritten by every run that writes something) is left out: see test_stac.py.
    """
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()
            if not p.name.startswith(".") and p.name not in ("stac", "collection.json")}


def test_a_rerun_skips_every_finished_output_and_leaves_it_untouched(tmp_path, orbits, monkeypatch):
    cfg = job(tmp_path, orbits[:2])
    cli("run", str(cfg), "-q")
    out = tmp_path / "out"
    before = files(out)
    assert set(per_day(DAYS[0]) + per_day(DAYS[1]) + list(WHOLE)) <= set(before)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["complete"] and manifest["config_hash"] == json.loads((out / "job_summary.json").read_text())[
        "config_hash"]
    day0 = manifest["outputs"][per_day(DAYS[0])[0]]
    assert [Path(i["path"]).name for i in day0["inputs"]] == [orbits[0].name]  # its own day's orbit only
    assert {"size", "mtime_ns", "modified"} <= set(day0["inputs"][0]) and day0["software"].startswith("eo_pipeline ")
    assert sorted(Path(i["path"]).name for i in manifest["outputs"][WHOLE[0]]["inputs"]) == sorted(
        p.name for p in orbits[:2])
    table_inputs = {Path(i["path"]).name for i in manifest["outputs"]["xch4_regions.csv"]["inputs"]}
    assert "regions_north_china.geojson" in table_inputs
    proc = cli("run", str(cfg))
    after = files(out)
    for name in before:
        if name not in ("job_summary.json", MANIFEST_NAME):
            assert after[name] == before[name], name
    assert f"{len(before) - 2} up to date" in proc.stderr
    summary = json.loads((out / "job_summary.json").read_text())
    assert summary["written"] == [] and summary["soundings_used"]["xch4"] > 0
    # nothing opened, built or computed: the rerun's only phases, on its closing screen too
    assert list(summary["phase_seconds"]) == ["planning", "cataloguing"]
    assert "time:      planning " in proc.stderr
    # nothing changed since the last complete run: the inputs are not even opened
    import eo_pipeline.pipeline as pipeline

    def no_open(*args, **kwargs):
        raise AssertionError("an up-to-date rerun opened the inputs")

    monkeypatch.setattr(pipeline, "open_inputs", no_open)
    result = pipeline.run(load_config(cfg))
    assert len(result.up_to_date) == len(before) - 2 and not result.written
    assert result.soundings == summary["soundings_used"]


def test_a_new_day_adds_only_that_days_maps(tmp_path, orbits):
    cfg = job(tmp_path / "a", orbits[:2])
    cli("run", str(cfg), "-q")
    out = tmp_path / "a" / "out"
    before = files(out)
    job(tmp_path / "a", orbits)  # the third day's orbit arrives
    proc = cli("run", str(cfg))
    after = files(out)
    for d in DAYS[:2]:
        for name in per_day(d):
            assert after[name] == before[name], f"{name} was rewritten"
    for name in per_day(DAYS[2]):
        assert name in after
    for name in WHOLE:  # they summarise every day
        assert after[name] != before[name], name
    summary = json.loads((out / "job_summary.json").read_text())
    assert sorted(summary["written"]) == sorted(str(out / n) for n in per_day(DAYS[2]) + list(WHOLE))
    assert "up to date" in proc.stderr
    # the same files as one run over the three days
    fresh = job(tmp_path / "b", orbits)
    cli("run", str(fresh), "-q")
    _assert_same_outputs(tmp_path / "b" / "out", out, same_job=False)


def test_a_changed_input_rewrites_the_outputs_of_its_day(tmp_path, orbits):
    cfg = job(tmp_path, orbits[:2])
    cli("run", str(cfg), "-q")
    out = tmp_path / "out"
    before = files(out)
    later = time.time() + 10
    os.utime(tmp_path / "in" / orbits[1].name, (later, later))  # reprocessed in place
    dry = cli("run", str(cfg), "--dry-run")
    assert sorted(line.split()[1] for line in dry.stdout.splitlines() if line.startswith("write")) == sorted(
        str(out / n) for n in per_day(DAYS[1]) + list(WHOLE))
    cli("run", str(cfg), "-q")
    after = files(out)
    assert all(after[n] == before[n] for n in per_day(DAYS[0]))
    assert all(after[n] != before[n] for n in per_day(DAYS[1]) + list(WHOLE))


def test_a_changed_configuration_is_refused_and_overwrite_recomputes_it_all(tmp_path, orbits):
    cfg = job(tmp_path, orbits[:2])
    cli("run", str(cfg), "-q")
    out = tmp_path / "out"
    before = files(out)
    job(tmp_path, orbits[:2], anomaly={"radius_km": 150})
    proc = cli("run", str(cfg), ok=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--overwrite" in lines[0] and str(out) in lines[0] and "Traceback" not in proc.stderr
    assert files(out) == before  # nothing touched
    dry = cli("run", str(cfg), "--dry-run", "--overwrite")
    assert not [line for line in dry.stdout.splitlines() if line.startswith("skip")]
    cli("run", str(cfg), "--overwrite", "-q")
    after = files(out)
    assert all(after[n] != before[n] for n in before)
    new_hash = json.loads((out / MANIFEST_NAME).read_text())["config_hash"]
    assert new_hash == json.loads((out / "job_summary.json").read_text())["config_hash"]
    assert {e["config_hash"] for e in json.loads((out / MANIFEST_NAME).read_text())["outputs"].values()} == {new_hash}
    # fewer formats, with --overwrite: what the new configuration does not make goes (never a mix)
    job(tmp_path, orbits[:2], output={"formats": ["geotiff"]})
    cli("run", str(cfg), "--overwrite", "-q")
    left = set(files(out))
    assert not [n for n in left if n.endswith((".png", ".nc"))]
    assert set(per_day(DAYS[0])[::2]) <= left
    assert set(json.loads((out / MANIFEST_NAME).read_text())["outputs"]) == left - {"job_summary.json", MANIFEST_NAME}


def test_dry_run_lists_inputs_and_outputs_and_writes_nothing(tmp_path, orbits):
    cfg = job(tmp_path, orbits[:2])
    proc = cli("run", str(cfg), "--dry-run")
    out = tmp_path / "out"
    assert not out.exists()
    lines = proc.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("input")] == [
        str(tmp_path / "in" / p.name) for p in orbits[:2]]
    written = {Path(line.split()[1]).name for line in lines if line.startswith("write")}
    assert written == set(per_day(DAYS[0]) + per_day(DAYS[1]) + list(WHOLE))
    assert "2 inputs found" in proc.stderr and "would be written" in proc.stderr
    cli("run", str(cfg), "-q")
    job(tmp_path, orbits)
    before = files(out)
    lines = cli("run", str(cfg), "--dry-run").stdout.splitlines()
    assert files(out) == before
    skip = {Path(line.split()[1]).name for line in lines if line.startswith("skip")}
    write = {Path(line.split()[1]).name for line in lines if line.startswith("write")}
    assert skip == set(per_day(DAYS[0]) + per_day(DAYS[1]))
    assert write == set(per_day(DAYS[2]) + list(WHOLE))


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(tmp_path, orbits):
    more = make_daily_orbits(tmp_path / "more", days=2, first_day=3)
    cfg = job(tmp_path / "k", [*orbits, *more])
    out = tmp_path / "k" / "out"
    proc = subprocess.Popen([EXE, "run", str(cfg), "--scheduler", "synchronous", "-q"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = out / RECORDS_DIR
    deadline = time.monotonic() + 300
    while not (records.is_dir() and len(list(records.glob("*.json"))) >= 2):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = files(out)
    recorded = [n for f in records.glob("*.json") for n in
                [e["file"] for e in json.loads(f.read_text())["outputs"]]]
    assert recorded and all(n in finished for n in recorded)
    rerun = cli("run", str(cfg))
    after = files(out)
    for name in recorded:  # kept as the killed run left them
        assert after[name] == finished[name], name
    assert "up to date" in rerun.stderr
    assert not records.exists() and not [p for p in out.iterdir() if ".eo-tmp" in p.name]
    fresh = job(tmp_path / "f", [*orbits, *more])
    cli("run", str(fresh), "-q")
    _assert_same_outputs(tmp_path / "f" / "out", out, same_job=False)


def test_a_damaged_manifest_is_one_line_naming_overwrite(tmp_path, orbits):
    cfg = job(tmp_path, orbits[:1])
    cli("run", str(cfg), "-q")
    (tmp_path / "out" / MANIFEST_NAME).write_text("{not json")
    proc = cli("run", str(cfg), ok=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "manifest" in proc.stderr and "--overwrite" in proc.stderr
    cli("run", str(cfg), "--overwrite", "-q")
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["complete"]


def test_manifest_entries_follow_the_file_they_describe(tmp_path):
    from eo_pipeline.manifest import Manifest, record_outputs, stamps

    out = tmp_path / "out"
    out.mkdir()
    src = tmp_path / "a.nc"
    src.write_bytes(b"x" * 10)
    (out / "m.tif").write_bytes(b"map")
    inputs = stamps([src])
    assert inputs[0]["size"] == 10 and inputs[0]["path"] == str(src.resolve())
    m = Manifest(out)
    record_outputs("done", str(m.records_dir), "m.tif", [{"file": "m.tif", "config_hash": "h", "inputs": inputs}],
                   {"xch4/20230715": (np.int32(7), np.int32(1))})
    m = Manifest.load(out)  # the record of a run that did not finish is folded in
    assert m.up_to_date("m.tif", "h", inputs) and not m.complete
    assert m.periods == {"xch4/20230715": {"soundings_used": 7, "footprints_dropped": 1}}
    assert not m.up_to_date("m.tif", "other", inputs)
    src.write_bytes(b"y" * 11)  # the input changed
    assert not m.up_to_date("m.tif", "h", stamps([src]))
    (out / "m.tif").write_bytes(b"edited")  # the output was changed by hand
    assert not m.up_to_date("m.tif", "h", inputs)
    m.save(job="j", chash="h", inputs=inputs, complete=True)
    assert not m.records_dir.exists() and json.loads(m.path.read_text())["outputs"]["m.tif"]["config_hash"] == "h"
