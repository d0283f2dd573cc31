# SPDX-License-Identifier: Apache-2.0
"""The command line: info output, and one clear line (no traceback) for every kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from eo_pipeline.cli import main

from .conftest import SHARED, write_tiny_ch4


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eo_pipeline.cli", *args], capture_output=True, text=True)


def test_info_json(ch4_file, capsys):
    assert main(["info", str(ch4_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("product", "species", "units", "n_total", "n_valid", "mean", "time_start", "time_end", "bbox"):
        assert key in info
    assert info["n_total"] == 30 and info["n_valid"] == 27 and info["units"] == "ppb"
    w, s, e, n = info["bbox"]
    assert w < e and s < n


def test_info_text(oco2_file, capsys):
    assert main(["info", str(oco2_file), "--qa-threshold", "0"]) == 0
    out = capsys.readouterr().out
    assert "OCO2_L2_Lite_FP" in out and "23 valid" in out and "bbox" in out


def _bad_inputs(tmp_path, ch4_file):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a NetCDF file\n" * 10)
    truncated = tmp_path / "S5P_OFFL_L2__CH4____truncated.nc"
    data = ch4_file.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    unknown = tmp_path / "other.nc"
    import netCDF4

    with netCDF4.Dataset(unknown, "w") as nc:
        nc.title = "A sea surface temperature product"
        nc.createDimension("x", 3)
        nc.createVariable("sst", "f4", ("x",))[:] = [1, 2, 3]
    missing_var = tmp_path / "S5P_OFFL_L2__CH4____nolat.nc"
    shutil.copy(ch4_file, missing_var)
    with netCDF4.Dataset(missing_var, "a") as nc:
        nc["PRODUCT"].renameVariable("latitude", "lat_renamed")
    return {
        "missing path": (tmp_path / "does_not_exist.nc", "no such file"),
        "not netcdf": (text, "not a NetCDF-4/HDF5 file"),
        "truncated": (truncated, "truncated or damaged"),
        "unknown product": (unknown, "no reader recognises"),
        "missing variable": (missing_var, "PRODUCT/latitude"),
        "directory": (tmp_path, "is a directory"),
    }


@pytest.mark.parametrize("case", ["missing path", "not netcdf", "truncated", "unknown product", "missing variable",
                                  "directory"])
def test_bad_input_gives_one_line(tmp_path, ch4_file, case):
    path, expected = _bad_inputs(tmp_path, ch4_file)[case]
    proc = run_cli("info", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("eo-pipeline: error: ")
    assert expected in lines[0]
    assert str(path.name) in lines[0]
    assert "Traceback" not in proc.stderr


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("--debug", "info", str(tmp_path / "nope.nc"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_all_fail_qa_warns_and_reports_empty(tmp_path, capsys):
    p = write_tiny_ch4(tmp_path / "S5P_OFFL_L2__CH4____tiny.nc")
    assert main(["info", str(p), "--qa-threshold", "1", "--json"]) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)
    assert info["n_valid"] == 0 and info["mean"] is None and info["bbox"] is None
    assert "warning" in captured.err and "no sounding passes" in captured.err


def test_readers_and_grids_listing(capsys):
    assert main(["readers"]) == 0
    out = capsys.readouterr().out
    assert "s5p_ch4" in out and "variant" in out
    assert "envi" in out and "emit_l1b_rad" in out and "prisma_l1" in out
    assert main(["grids"]) == 0
    assert "global_0p01" in capsys.readouterr().out


@pytest.mark.realdata
def test_info_on_real_whole_orbit():
    path = SHARED / "s5p/S5P_OFFL_L2__CH4____20190319T110835_20190319T125006_07407_01_010202_20190325T125810.fullorbit-varsubset.nc4"
    if not path.exists():
        pytest.skip(f"real data not available in {SHARED}")
    proc = run_cli("info", str(path), "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["n_valid"] == 52210
    assert proc.stderr.count("warning") == 2  # no qa_value, no bias-corrected column


@pytest.mark.parametrize("command", ["info", "run", "grid", "forest", "plumes", "fetch-data", "make-samples",
                                     "readers", "grids"])
def test_every_command_has_help(command, capsys):
    from eo_pipeline.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: eo-pipeline " + command in capsys.readouterr().out


def test_main_leaves_the_callers_warnings_and_logging_alone(tmp_path, capsys):
    import logging
    import warnings

    before_show = warnings.showwarning
    before_filters = list(warnings.filters)
    root = logging.getLogger()
    before_handlers = list(root.handlers)
    pkg = logging.getLogger("eo_pipeline")
    before_pkg = (list(pkg.handlers), pkg.level, pkg.propagate)
    assert main(["info", str(tmp_path / "missing.nc")]) == 2
    assert main(["grids"]) == 0
    assert warnings.showwarning is before_show and warnings.filters == before_filters
    assert root.handlers == before_handlers
    assert (list(pkg.handlers), pkg.level, pkg.propagate) == before_pkg
