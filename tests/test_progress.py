# SPDX-License-Identifier: Apache-2.0
"""Long runs tell the user where they are: progress on a terminal only, -q/-v, collapsed warnings, summary."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from eo_pipeline.progress import WarningCollapser
from eo_pipeline.samples.writers import s5p_filename

from .conftest import SAMPLES, write_tiny_ch4

CLI = [sys.executable, "-m", "eo_pipeline.cli"]


def _job(tmp_path: Path) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "inputs": [str(p) for p in sorted(SAMPLES.glob("S5P_OFFL_L2__CH4____*.nc"))],
        "gridding": {"grid": "north_china_0p1"}, "output": {"dir": str(tmp_path / "out"), "formats": ["geotiff"]}}))
    return job


def _on_a_terminal(cmd: list[str]) -> tuple[int, str]:
    """Run ``cmd`` with its standard error on a pseudo-terminal; return the exit code and what it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def test_progress_line_on_a_terminal_and_a_summary(tmp_path):
    code, drawn = _on_a_terminal([*CLI, "run", str(_job(tmp_path))])
    assert code == 0, drawn
    assert "\r" in drawn and "opening inputs 2/2" in drawn and "% of" in drawn and "outputs written" in drawn
    summary = drawn.replace("\r\n", "\n").rsplit("\r", 1)[-1]
    assert "eo-pipeline: done in" in summary and "peak memory" in summary and "2 files read" in summary
    assert "soundings:" in summary and "xch4" in summary and "1 tif" in summary


def test_no_progress_line_in_a_pipe_and_nothing_but_errors_with_q(tmp_path):
    proc = subprocess.run([*CLI, "run", str(_job(tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 0 and "\r" not in proc.stderr and "done in" in proc.stderr  # summary, no progress
    code, drawn = _on_a_terminal([*CLI, "run", str(_job(tmp_path)), "-q"])
    assert code == 0 and drawn.strip() == ""


def test_verbose_logs_what_the_run_does(tmp_path):
    proc = subprocess.run([*CLI, "run", str(_job(tmp_path)), "-v"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "INFO eo_pipeline.pipeline: computing" in proc.stderr


def test_repeated_warnings_collapse_into_one_line_with_a_count(tmp_path):
    files = []
    for k in range(6):  # six files without qa_value: the same two warnings each
        name = s5p_filename("CH4", np.datetime64("2023-07-15T04:44:07"), np.datetime64("2023-07-15T06:25:17"),
                            29781 + k, "020500", np.datetime64("2023-07-17T05:30:12"))
        files.append(str(write_tiny_ch4(tmp_path / name, with_qa=False, orbit=29781 + k)))
    proc = subprocess.run([*CLI, "grid", *files, "--grid", "north_china_0p1", "-o", str(tmp_path / "x.tif")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("eo-pipeline: warning:")]
    assert len(lines) == 2, proc.stderr
    first = Path(files[0]).name
    assert "qa_value" in lines[0] and first in lines[0]
    assert f"the same warning came for 6 files (the first: {first})" in lines[1]


def test_warning_collapser_by_hand():
    out: list[str] = []
    c = WarningCollapser(out.append)
    for f in ("a.nc", "b.nc", "c.nc"):
        c(f"{f}: no qa_value", UserWarning)
    c("something else", UserWarning)
    c("something else", UserWarning)
    c("a.nc: no qa_value", DeprecationWarning)  # another kind: another category
    c.report()
    assert out == ["eo-pipeline: warning: a.nc: no qa_value", "eo-pipeline: warning: something else",
                   "eo-pipeline: warning: a.nc: no qa_value",
                   "eo-pipeline: warning: the same warning came for 3 files (the first: a.nc): no qa_value",
                   "eo-pipeline: warning: the same warning came 2 times: something else"]
