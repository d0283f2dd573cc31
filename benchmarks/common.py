# SPDX-License-Identifier: Apache-2.0
"""Shared helpers of the benchmark harness: locating real data, timing side by side."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EO_PIPELINE_SHARED_DATA", ROOT.parent / "shared" / "data"))
WHOLE_ORBIT = SHARED / "s5p" / (
    "S5P_OFFL_L2__CH4____20190319T110835_20190319T125006_07407_01_010202_20190325T125810.fullorbit-varsubset.nc4")


def interleaved(funcs: dict[str, Callable[[], Any]], repeats: int = 7, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Time several functions side by side, alternating them so machine noise hits all alike.

    Returns ``{name: {"median": s, "min": s, "runs": n}}``.
    """
    for _ in range(warmup):
        for f in funcs.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in funcs}
    for _ in range(repeats):
        for name, f in funcs.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return {k: {"median": statistics.median(v), "min": min(v), "runs": len(v)} for k, v in times.items()}
