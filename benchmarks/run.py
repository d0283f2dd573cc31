# SPDX-License-Identifier: Apache-2.0
"""Run the benchmarks side by side and print/record a Markdown report (``make bench``).

Results go to benchmarks/results/ (not committed); BENCHMARKS.md holds the figures
of the last reviewed run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_read  # noqa: E402


def _fmt(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    report = {"machine": f"{platform.machine()} {platform.python_version()}", "when": time.strftime("%Y-%m-%d %H:%M")}
    report["read"] = bench_read.run(args.repeats)
    lines = ["## Reading the whole real S5P orbit", ""]
    r = report["read"]
    if "skipped" in r:
        lines.append(f"skipped: {r['skipped']}")
    else:
        lines += ["| reader | median | min |", "|---|---|---|"]
        for k, v in r["timings"].items():
            lines.append(f"| {k} | {_fmt(v['median'])} | {_fmt(v['min'])} |")
        lines += ["", f"eo_pipeline / netCDF4 = **{r['ratio_vs_netCDF4']:.2f}x** (target <= {r['target']}x)"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "latest.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
