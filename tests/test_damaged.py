# SPDX-License-Identifier: Apache-2.0
"""Damaged inputs (issue 8): every fault ends in exit 0 or one clean error line, never worse.

The corpus is generated here (nothing is committed): for every reader, its tiny
fixture, the sample scenes and, where present, the real files in ../shared/data are
damaged byte by byte (truncations in the superblock, in metadata, in a data chunk and
one byte short; flipped bytes in the superblock, in object headers and in a data
chunk), and the tiny fixtures (plus the real S5P 10 x 10 cut and the GOSAT CCI day)
get layout faults (missing group or variable, wrong dtype or shape, all fill, NaN/inf
coordinates, latitudes beyond +-90, longitudes in 0..360, clockwise and zero-area
footprints). Path-level faults (empty file, directory, unreadable file, missing file,
empty glob, duplicate product) complete it.

Documented outcomes
-------------------
=================================  =========================================================
fault                              outcome
=================================  =========================================================
truncated anywhere                 exit 2, ``TruncatedFileError``/``CorruptFileError``
                                   (``EmptyFileError`` at 0 bytes), naming the file
flipped byte (superblock, object   exit 2 (``CorruptFileError``) where HDF5 notices (checksums,
header, data chunk)                failed inflate); exit 0 where no checksum covers the byte
missing group                      exit 2, ``UnknownProductError`` (the product is no longer
                                   recognisable)
missing required variable          exit 2, ``MissingVariableError`` naming the variable
wrong dtype / shape                exit 2, ``VariableLayoutError`` naming the variable
all pixels fill                    exit 0; 0 valid soundings, ``QualityWarning``; empty map
NaN / +-inf coordinates            exit 0; those soundings invalid; +-inf counted in a
                                   ``CoordinateWarning`` (NaN reads as missing)
latitude beyond +-90               exit 0; invalid, ``CoordinateWarning`` with the count
longitudes in 0..360               exit 0; normalised to -180..180, same map as -180..180
clockwise corners                  exit 0; same map as counter-clockwise
zero-area footprints               exit 0; skipped and counted in ``n_footprints_dropped``
empty file / directory             exit 2, ``EmptyFileError`` / ``NotNetCDFError``
unreadable file                    exit 2, ``UnreadableFileError``
missing file / empty glob          exit 2, ``InputFileNotFoundError`` / ``ConfigError``
same product twice                 ``find_duplicates``/``drop_duplicates`` find it (the
                                   lead wires the warning into ``grid`` and jobs)
=================================  =========================================================
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import eo_pipeline as eo
from eo_pipeline import cli
from eo_pipeline.errors import (
    CoordinateWarning,
    CorruptFileError,
    DuplicateProductWarning,
    EOPipelineError,
    QualityWarning,
)
from eo_pipeline.grid import GridSpec
from eo_pipeline.readers import close_files, drop_duplicates, find_duplicates

from .conftest import SAMPLES, SHARED
from .damage import (
    BYTE_FAULTS,
    LAYOUT_FAULTS,
    SPECS,
    apply_byte_fault,
    apply_layout_fault,
    freeze_heap,
    locate,
    record_unraisable,
)

_unraisable = pytest.fixture(name="unraisable")(record_unraisable)
_frozen_heap = pytest.fixture(name="frozen_heap", scope="module")(freeze_heap)

S5P_10X10 = "s5p/S5P_OFFL_L2__CH4____20231019T192749_20231019T210918_31176_03_020500_20231021T113213.pystilt-10x10.nc"
S5P_SUB = "s5p/S5P_OFFL_L2__CH4____20190311T101655_20190311T115825_07293_01_010202_20190317T121015.SUB.nc4"
GOSAT = "gosat/ESACCI-GHG-L2-CH4-GOSAT-OCPR-20120101-fv7.2.nc"

#: (label, reader, reference): "fixture:<name>", "sample:<file>" or "real:<relpath>"
SOURCES: list[tuple[str, str, str]] = [
    *[(f"tiny-{r}", r, f"fixture:{s.fixture}") for r, s in SPECS.items()],
    ("sample-s5p_ch4", "s5p_ch4",
     "sample:S5P_OFFL_L2__CH4____20230715T044407_20230715T062517_29781_03_020500_20230717T053012.nc"),
    ("sample-s5p_co", "s5p_co",
     "sample:S5P_OFFL_L2__CO_____20230715T044407_20230715T062517_29781_03_020500_20230717T041240.nc"),
    ("sample-oco2_lite", "oco2_lite", "sample:oco2_LtCO2_230715_B11100Ar_230802141516s.nc4"),
    ("sample-esacci_ghg_l2", "esacci_ghg_l2", "sample:ESACCI-GHG-L2-CH4-GOSAT-OCPR-20230715-fv9.0.nc"),
    ("real-s5p_10x10", "s5p_ch4", f"real:{S5P_10X10}"),
    ("real-s5p_sub", "s5p_ch4", f"real:{S5P_SUB}"),
    ("real-gosat_cci", "esacci_ghg_l2", f"real:{GOSAT}"),
]

#: Layout-fault sources beyond the tiny fixtures: real files, for the faults that apply to them.
REAL_LAYOUT_SOURCES: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("real-s5p_10x10", "s5p_ch4", S5P_10X10,
     ("all_fill", "nonfinite_coordinates", "latitude_beyond_90", "longitude_0_360", "clockwise_corners",
      "zero_area_footprints")),
    ("real-gosat_cci", "esacci_ghg_l2", GOSAT,
     ("missing_variable", "wrong_dtype", "all_fill", "nonfinite_coordinates", "latitude_beyond_90",
      "longitude_0_360")),
]

BAD_WORDS = ("Traceback", "Exception ignored", "internal error")


# ----------------------------------------------------------------------------- helpers
def resolve(request: pytest.FixtureRequest, ref: str) -> Path:
    """Path of a corpus source, skipping (with the reason) where it is absent."""
    kind, _, name = ref.partition(":")
    if kind == "fixture":
        return Path(request.getfixturevalue(name))
    if kind == "sample":
        p = SAMPLES / name
        if not p.exists():
            pytest.skip(f"sample scene {name} not available in {SAMPLES}")
        return p
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"real data {name} not available (looked in {SHARED}; set EO_PIPELINE_SHARED_DATA)")
    return p


@pytest.fixture
def run_cli(capfd, monkeypatch, unraisable, frozen_heap):
    """Call the CLI's ``main`` in-process; return (exit code, stdout, stderr) after gc."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it

    def run(*args: str) -> tuple[int, str, str]:
        capfd.readouterr()
        rc = cli.main([str(a) for a in args])
        close_files()
        gc.collect()  # half-built objects of a failed open print "Exception ignored" here, if anywhere
        out, err = capfd.readouterr()
        if unraisable:
            err += "".join(f"\nException ignored: {u}" for u in unraisable)
            unraisable.clear()
        return rc, out, err

    return run


def check_ending(rc: int, err: str, path: Path, expect: str, what: str) -> str:
    """Assert a clean ending: exit 0 (warnings only) or exit 2 with one error line naming the file."""
    for word in BAD_WORDS:
        assert word not in err, f"{what}: {word!r} on stderr:\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("eo-pipeline: error:")]
    assert all(line.startswith(("eo-pipeline: error:", "eo-pipeline: warning:")) for line in lines), (what, err)
    if rc == 0:
        assert expect in ("ok", "either"), f"{what}: expected an error, got exit 0"
        assert not errors, (what, err)
        return "ok"
    assert rc == 2, f"{what}: exit {rc}\n{err}"
    assert expect in ("error", "either"), f"{what}: expected success, got: {err}"
    assert len(errors) == 1 and lines[-1] == errors[0], (what, err)
    assert path.name in errors[0], f"{what}: the error does not name the file: {errors[0]}"
    return "error"


def grid_args(bbox: list[float]) -> list[str]:
    w, s, e, n = bbox
    res = 1.0 if max(e - w, n - s) > 30 else (0.25 if max(e - w, n - s) > 5 else 0.05)
    return ["--bbox", *(f"{v:.4f}" for v in (w - 1, s - 1, e + 1, n + 1)), "--resolution", str(res)]


def base_bbox(path: Path) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = eo.summarize(eo.open_product(path, qa_threshold=0))
    return s["bbox"] or [-180.0, -89.0, 180.0, 89.0]


@pytest.fixture(scope="session")
def tally(tmp_path_factory) -> Iterator[list[dict[str, Any]]]:
    """Every outcome, written to <basetemp>/damaged_tally.json for the README figures."""
    rows: list[dict[str, Any]] = []
    yield rows
    path = tmp_path_factory.getbasetemp() / "damaged_tally.json"
    path.write_text(json.dumps(rows, indent=1))


# ----------------------------------------------------------------------------- byte faults
@pytest.mark.parametrize("label, reader, ref", SOURCES, ids=[s[0] for s in SOURCES])
def test_byte_faults_end_cleanly(request, tmp_path, run_cli, tally, label, reader, ref):
    """Truncations and flipped bytes: `info` and `grid` end in exit 0 or one clean error line."""
    src = resolve(request, ref)
    layout = locate(src)
    args = grid_args(base_bbox(src))
    assert run_cli("info", src)[0] == 0  # the undamaged file is fine
    for fault in BYTE_FAULTS:
        bad = apply_byte_fault(src, tmp_path / f"{fault.name}-{src.name}", fault, layout)
        expect = "error" if fault.kind == "truncation" else "either"
        rc, _, err = run_cli("info", bad)
        info_end = check_ending(rc, err, bad, expect, f"info {label} {fault.name}")
        if fault.kind == "truncation" and fault.where != "superblock":
            assert "truncated" in err, err  # the message says what happened
        out_dir = tmp_path / f"out-{fault.name}"
        out_dir.mkdir()
        rc, _, err = run_cli("grid", bad, *args, "-o", out_dir / "map.tif")
        grid_end = check_ending(rc, err, bad, expect, f"grid {label} {fault.name}")
        if grid_end == "error":
            assert not any(out_dir.iterdir()), f"partial output left: {list(out_dir.iterdir())}"
        else:
            assert (out_dir / "map.tif").exists()
        tally.append(dict(category="byte", source=label, reader=reader, fault=fault.name, kind=fault.kind,
                          where=fault.where, info=info_end, grid=grid_end))


def test_damaged_object_header_of_a_required_variable_is_corrupt_not_missing(tmp_path, ch4_file):
    """A variable whose header the library cannot read is reported as damage, never as absent."""
    layout = locate(ch4_file)
    fault = next(f for f in BYTE_FAULTS if f.name == "flip_in_column_header")
    bad = apply_byte_fault(ch4_file, tmp_path / ch4_file.name, fault, layout)
    with pytest.raises(CorruptFileError) as err:
        eo.open_product(bad)
    assert type(err.value) is CorruptFileError
    assert bad.name in str(err.value) and "damaged" in str(err.value)


def test_half_opened_file_prints_nothing_at_exit(tmp_path, cci_file, unraisable, capfd):
    """A root-header checksum failure used to leave a half-built h5netcdf.File whose __del__ raised."""
    layout = locate(cci_file)
    fault = next(f for f in BYTE_FAULTS if f.name == "flip_in_root_group_header")
    bad = apply_byte_fault(cci_file, tmp_path / cci_file.name, fault, layout)
    for _ in range(3):
        with pytest.raises(EOPipelineError, match=bad.name):
            eo.open_product(bad)
    gc.collect()
    assert unraisable == []
    assert "Exception ignored" not in capfd.readouterr().err


# ----------------------------------------------------------------------------- layout faults
def _layout_cases() -> list[tuple[str, str, str, str]]:
    cases = []
    for reader, spec in SPECS.items():
        for fault in LAYOUT_FAULTS:
            if fault.needs_bounds and spec.lat_bounds is None:
                continue  # ACOS and CCI have no corners: footprints are modelled circles
            if fault.name == "missing_group" and spec.group is None:
                continue  # blended and CCI files are flat (no groups)
            cases.append((f"tiny-{reader}-{fault.name}", reader, f"fixture:{spec.fixture}", fault.name))
    for label, reader, rel, faults in REAL_LAYOUT_SOURCES:
        cases += [(f"{label}-{f}", reader, f"real:{rel}", f) for f in faults]
    return cases


LAYOUT_CASES = _layout_cases()
_FAULTS = {f.name: f for f in LAYOUT_FAULTS}


def _grid(path: Path, bbox: list[float], method: str = "area") -> Any:
    w, s, e, n = bbox
    span = max(e - w, n - s)
    res = 1.0 if span > 30 else (0.25 if span > 5 else 0.05)
    g = GridSpec.from_bbox((w - 1, s - 1, e + 1, n + 1), res)
    return eo.grid_soundings(eo.open_product(path), g, method=method).compute()


def _assert_same_map(a: Any, b: Any, rtol: float) -> None:
    var = a.attrs["variable"]
    np.testing.assert_array_equal(a[f"{var}_count"].values, b[f"{var}_count"].values)
    for stat in ("mean", "weight"):
        np.testing.assert_allclose(a[f"{var}_{stat}"].values, b[f"{var}_{stat}"].values, rtol=rtol, equal_nan=True)


def _expect_error(ctx: dict[str, Any]) -> None:
    bad, spec, fault = ctx["bad"], ctx["spec"], ctx["fault"]
    with pytest.raises(EOPipelineError) as exc:
        eo.open_product(bad)
    assert type(exc.value).__name__ == _FAULTS[fault].error, str(exc.value)
    assert bad.name in str(exc.value)
    if fault == "missing_variable":
        assert spec.missing_variable in str(exc.value)
    if fault in ("wrong_dtype", "wrong_shape"):
        assert spec.lat in str(exc.value)


def _expect_all_fill(ctx: dict[str, Any]) -> None:
    with pytest.warns(QualityWarning, match="no sounding passes"):
        s = eo.summarize(eo.open_product(ctx["bad"]))
    assert s["n_valid"] == 0
    assert "no sounding passes" in ctx["err"]


def _expect_masked(ctx: dict[str, Any]) -> None:
    bad, src, base = ctx["bad"], ctx["src"], ctx["base_summary"]
    with pytest.warns(CoordinateWarning) as rec:
        s = eo.summarize(eo.open_product(bad))
    assert s["n_valid"] == base["n_valid"] - ctx["info"]["masked"]
    text = " ".join(str(w.message) for w in rec)
    assert bad.name in text and "masked as invalid" in text
    if ctx["fault"] == "latitude_beyond_90":
        assert "2 sounding(s) with latitude outside +-90" in text
    w, so, e, n = s["bbox"]
    assert -90 <= so <= n <= 90 and np.isfinite([w, e]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoordinateWarning)
        l3 = _grid(bad, base["bbox"])
    var = l3.attrs["variable"]
    assert np.isfinite(l3[f"{var}_mean"].values[l3[f"{var}_count"].values > 0]).all()
    assert int(l3[f"{var}_count"].sum()) <= int(_grid(src, base["bbox"])[f"{var}_count"].sum())


def _expect_normalised_longitudes(ctx: dict[str, Any]) -> None:
    bad, src, tmp_path = ctx["bad"], ctx["src"], ctx["tmp_path"]
    ref_file = tmp_path / "reference" / src.name
    ref_file.parent.mkdir()
    apply_layout_fault(src, ref_file, ctx["spec"], "longitude_reference", ctx["valid"], shift=ctx["shift"])
    ds = eo.open_product(bad)
    lon = ds.longitude.values
    assert np.nanmin(lon) >= -180 and np.nanmax(lon) <= 180
    s_ref, s_bad = eo.summarize(eo.open_product(ref_file)), eo.summarize(ds)
    assert s_bad["n_valid"] == s_ref["n_valid"]
    assert s_bad["bbox"] == s_ref["bbox"]
    assert (eo.open_product(ref_file).longitude.values < 0).any()  # the pair really differs on disk
    for method in ("point", "area"):
        _assert_same_map(_grid(bad, s_ref["bbox"], method), _grid(ref_file, s_ref["bbox"], method), rtol=1e-9)


def _expect_same_map(ctx: dict[str, Any]) -> None:
    bbox = ctx["base_summary"]["bbox"]
    _assert_same_map(_grid(ctx["bad"], bbox), _grid(ctx["src"], bbox), rtol=1e-9)


def _expect_dropped(ctx: dict[str, Any]) -> None:
    bbox = ctx["base_summary"]["bbox"]
    l3_bad, l3_src = _grid(ctx["bad"], bbox), _grid(ctx["src"], bbox)
    assert int(l3_bad.n_footprints_dropped) - int(l3_src.n_footprints_dropped) == ctx["info"]["degenerate"]
    var = l3_bad.attrs["variable"]
    for stat in ("mean", "weight", "std", "uncertainty"):
        assert not np.isinf(l3_bad[f"{var}_{stat}"].values).any()
    has = l3_bad[f"{var}_count"].values > 0
    assert np.isfinite(l3_bad[f"{var}_weight"].values[has]).all()


_CHECKS = {
    "missing_group": _expect_error, "missing_variable": _expect_error, "wrong_dtype": _expect_error,
    "wrong_shape": _expect_error, "all_fill": _expect_all_fill, "nonfinite_coordinates": _expect_masked,
    "latitude_beyond_90": _expect_masked, "longitude_0_360": _expect_normalised_longitudes,
    "clockwise_corners": _expect_same_map, "zero_area_footprints": _expect_dropped,
}


@pytest.mark.parametrize("label, reader, ref, fault", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_layout_faults(request, tmp_path, run_cli, tally, label, reader, ref, fault):
    """Each layout fault has its documented outcome, in-process and through the CLI's `info`."""
    src = resolve(request, ref)
    spec = SPECS[reader]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = eo.open_product(src)
        valid = base.valid.values
        base_summary = eo.summarize(base)
    bad = tmp_path / src.name
    shift = -224.0 if label.startswith("tiny") and fault == "longitude_0_360" else 0.0
    info = apply_layout_fault(src, bad, spec, fault, valid, shift=shift)
    rc, _, err = run_cli("info", bad)
    end = check_ending(rc, err, bad, _FAULTS[fault].expect, f"info {label}")
    _CHECKS[fault](dict(bad=bad, src=src, spec=spec, fault=fault, info=info, err=err, valid=valid, shift=shift,
                        base_summary=base_summary, tmp_path=tmp_path))
    tally.append(dict(category="layout", source=label, reader=reader, fault=fault, kind="layout", info=end))


# ----------------------------------------------------------------------------- path-level faults
def test_empty_file_directory_and_missing_file(tmp_path, run_cli, tally):
    empty = tmp_path / "S5P_OFFL_L2__CH4____empty.nc"
    empty.touch()
    folder = tmp_path / "S5P_OFFL_L2__CH4____folder.nc"
    folder.mkdir()
    missing = tmp_path / "oco2_LtCO2_missing.nc4"
    for path, error, word in ((empty, "EmptyFileError", "empty"), (folder, "NotNetCDFError", "directory"),
                              (missing, "InputFileNotFoundError", "no such file")):
        with pytest.raises(EOPipelineError) as exc:
            eo.open_product(path)
        assert type(exc.value).__name__ == error and word in str(exc.value)
        rc, _, err = run_cli("info", path)
        check_ending(rc, err, path, "error", f"info {path.name}")
        out = tmp_path / f"out-{path.name}"
        out.mkdir()
        rc, _, err = run_cli("grid", path, "--bbox", "0", "0", "10", "10", "--resolution", "1", "-o", out / "m.tif")
        check_ending(rc, err, path, "error", f"grid {path.name}")
        assert not any(out.iterdir())
        tally.append(dict(category="path", source="-", reader="-", fault=error, kind="path", info="error",
                          grid="error"))


def test_empty_glob_is_a_config_error(tmp_path, run_cli, tally):
    pattern = tmp_path / "nothing_here_*.nc"
    rc, _, err = run_cli("grid", pattern, "--bbox", "0", "0", "10", "10", "--resolution", "1",
                         "-o", tmp_path / "m.tif")
    assert rc == 2 and err.count("eo-pipeline: error:") == 1 and "no input file matched" in err
    assert not (tmp_path / "m.tif").exists()
    tally.append(dict(category="path", source="-", reader="-", fault="empty_glob", kind="path", info="-",
                      grid="error"))


#: Child process for the unreadable file: starts as root, imports the CLI (the interpreter lives
#: under /root, which uid 65534 may not read), then drops to nobody:nogroup before main() runs.
_AS_NOBODY = """
import os, sys
import eo_pipeline.cli, eo_pipeline.readers, eo_pipeline.summary, eo_pipeline.gridding
import eo_pipeline.composites, eo_pipeline.pipeline, eo_pipeline.grid, eo_pipeline.outputs, json
import eo_pipeline.io.geotiff, eo_pipeline.progress, dask.callbacks
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
assert os.getuid() == 65534 and os.getgid() == 65534
sys.exit(eo_pipeline.cli.main(sys.argv[1:]))
"""


def _world_readable_dir() -> Path:
    """A fresh folder in the system temp directory that every user may enter (pytest's basetemp is 0700)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="eo-pipeline-unreadable-"))
    d.chmod(0o755)
    return d


@pytest.mark.skipif(not hasattr(os, "setuid"), reason="needs POSIX setuid")
def test_unreadable_file(tmp_path, oco2_file, tally):
    """Files the user may not read: one line naming them, exit 2.

    Root reads everything whatever the mode, so as root the CLI runs in a child that
    imports it and then drops to uid/gid 65534 (nobody) with os.setgid/os.setuid
    before ``main`` runs (the interpreter lives under /root, which nobody may not enter,
    so it cannot be exec'd after the drop). Two cases: a mode-000 file in a world-readable
    folder, and a readable file inside a folder this user may not enter.
    """
    if os.geteuid() == 0:
        prefix = [sys.executable, "-c", _AS_NOBODY]
    else:
        prefix = [sys.executable, "-m", "eo_pipeline.cli"]
    world = _world_readable_dir()
    closed = world / "closed"
    try:
        unreadable = world / oco2_file.name
        shutil.copy(oco2_file, unreadable)
        unreadable.chmod(0)
        closed.mkdir()
        hidden = closed / oco2_file.name
        shutil.copy(oco2_file, hidden)
        hidden.chmod(0o644)
        closed.chmod(0o700 if os.geteuid() == 0 else 0)
        if os.geteuid() != 0 and os.access(unreadable, os.R_OK):
            pytest.skip("this user can read a chmod 000 file")
        runs = [(unreadable, ["info", str(unreadable)]),
                (hidden, ["grid", str(hidden), "--bbox", "100", "30", "120", "50", "--resolution", "1",
                          "-o", str(world / "m.tif")])]

        def run(case: tuple[Path, list[str]]) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*prefix, *case[1]], capture_output=True, text=True, cwd=world, timeout=300)

        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(run, runs))
        for (target, _), r in zip(runs, results, strict=True):
            assert r.returncode == 2, r.stderr
            assert r.stderr.count("\n") == 1 and r.stderr.startswith("eo-pipeline: error:"), r.stderr
            assert target.name in r.stderr and "permission denied" in r.stderr
        assert not (world / "m.tif").exists()
        for _ in (unreadable, hidden):
            tally.append(dict(category="path", source="-", reader="-", fault="UnreadableFileError", kind="path",
                              info="error", grid="error"))
    finally:
        if closed.exists():
            closed.chmod(0o755)
        shutil.rmtree(world)


@pytest.mark.parametrize("reader", list(SPECS))
def test_duplicate_product_under_two_names(request, tmp_path, reader, tally):
    src = Path(request.getfixturevalue(SPECS[reader].fixture))
    copy = tmp_path / ("copy_of_" + src.name)
    shutil.copy(src, copy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        products = [eo.open_product(src), eo.open_product(copy), eo.open_product(src)]
    assert find_duplicates(products) == [(1, 0), (2, 0)]
    with pytest.warns(DuplicateProductWarning) as rec:
        kept = drop_duplicates(products)
    assert len(kept) == 1 and kept[0] is products[0]
    assert len(rec) == 2 and copy.name in str(rec[0].message) and src.name in str(rec[0].message)
    tally.append(dict(category="path", source=f"tiny-{reader}", reader=reader, fault="duplicate", kind="path",
                      info="-", grid="-"))


def test_different_cuts_of_one_orbit_are_not_duplicates(tmp_path, ch4_file):
    """Equal attributes, equal shape, different soundings: two products, not one."""
    other = tmp_path / ch4_file.name
    shutil.copy(ch4_file, other)
    import h5py

    with h5py.File(other, "r+") as f:
        f["PRODUCT/latitude"][...] = f["PRODUCT/latitude"][...] + 1.0
    assert find_duplicates([eo.open_product(ch4_file), eo.open_product(other)]) == []


# ----------------------------------------------------------------------------- whole-process CLI
def _subprocess_cases(request, tmp_path: Path) -> list[tuple[list[str], Path, str, Path | None]]:
    """(args, file, expect, output) for a representative subset run as whole processes.

    Every reader (its tiny file, byte faults 1-7 in rotation), faults 8-9 and the
    reported failure (a flipped root-group header) on the real files, a truncated file
    gridded to NetCDF, a layout error, masked coordinates gridded to GeoTIFF, an empty file.
    """
    cases: list[tuple[list[str], Path, str, Path | None]] = []
    for k, spec in enumerate(SPECS.values()):
        src = Path(request.getfixturevalue(spec.fixture))
        fault = BYTE_FAULTS[k % len(BYTE_FAULTS)]
        bad = apply_byte_fault(src, tmp_path / f"{fault.name}-{src.name}", fault, locate(src))
        cases.append((["info", str(bad)], bad, "error" if fault.kind == "truncation" else "either", None))
    for rel, fault, command in ((S5P_10X10, BYTE_FAULTS[7], "info"), (S5P_10X10, BYTE_FAULTS[8], "grid"),
                                (GOSAT, BYTE_FAULTS[6], "info")):
        real = SHARED / rel
        if not real.exists():
            continue
        bad = apply_byte_fault(real, tmp_path / f"{fault.name}-{real.name}", fault, locate(real))
        if command == "info":
            cases.append((["info", str(bad)], bad, "either", None))
        else:
            out = tmp_path / f"grid-{real.stem}" / "map.tif"
            out.parent.mkdir()
            cases.append((["grid", str(bad), *grid_args(base_bbox(real)), "-o", str(out)], bad, "either", out))
    src = Path(request.getfixturevalue("ch4_file"))
    trunc = apply_byte_fault(src, tmp_path / f"trunc-{src.name}", BYTE_FAULTS[3], locate(src))
    out = tmp_path / "grid-trunc" / "map.nc"
    out.parent.mkdir()
    cases.append((["grid", str(trunc), "--bbox", "100", "30", "120", "45", "--resolution", "0.5", "-o", str(out)],
                  trunc, "error", out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        valid = eo.open_product(src).valid.values
    for fault, expect in (("missing_variable", "error"), ("latitude_beyond_90", "ok")):
        bad = tmp_path / fault / src.name
        bad.parent.mkdir()
        apply_layout_fault(src, bad, SPECS["s5p_ch4"], fault, valid)
        if expect == "error":
            cases.append((["info", str(bad)], bad, expect, None))
        else:
            out = tmp_path / f"grid-{fault}" / "map.tif"
            out.parent.mkdir()
            cases.append((["grid", str(bad), "--bbox", "100", "30", "120", "45", "--resolution", "0.5", "-o",
                           str(out)], bad, expect, out))
    empty = tmp_path / "empty.nc"
    empty.touch()
    cases.append((["info", str(empty)], empty, "error", None))
    return cases


def test_cli_whole_process_subset(request, tmp_path, tally):
    """A representative subset through `python -m eo_pipeline.cli` as separate processes (2 at a time)."""
    cases = _subprocess_cases(request, tmp_path)

    def run(case: tuple[list[str], Path, str, Path | None]) -> tuple[Any, ...]:
        args, path, expect, out = case
        r = subprocess.run([sys.executable, "-m", "eo_pipeline.cli", *args], capture_output=True, text=True,
                           cwd=tmp_path, timeout=600)
        return case, r

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, cases))
    for (args, path, expect, out), r in results:
        end = check_ending(r.returncode, r.stderr, path, expect, " ".join(args[:2]))
        if out is not None:
            if end == "error":
                assert not any(out.parent.iterdir()), f"partial output: {list(out.parent.iterdir())}"
            else:
                assert out.exists()
        tally.append(dict(category="subprocess", source=path.name, reader="-", fault=args[0], kind="cli",
                          info=end if args[0] == "info" else "-", grid=end if args[0] == "grid" else "-"))
    assert len(results) >= 11
    masked = next(r for (a, *_), r in results if "latitude_beyond_90" in a[1])
    assert masked.returncode == 0 and "latitude outside +-90" in masked.stderr
