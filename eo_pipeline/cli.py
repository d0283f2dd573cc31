# SPDX-License-Identifier: Apache-2.0
"""Command-line interface: ``eo-pipeline <command>``.

Argument parsing, logging and error reporting only; the work is done by the
library. On bad input the CLI prints one line (file, problem, fix) and exits
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .errors import EOPipelineError

__all__ = ["main"]

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


def _cmd_info(args: argparse.Namespace) -> int:
    from .readers import open_product
    from .summary import summarize

    ds = open_product(args.file, qa_threshold=args.qa_threshold, reader=args.reader)
    info = summarize(ds)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"file:        {info['file']}")
    print(f"product:     {info['product']} (reader {info['reader']}; {info['platform']} {info['instrument']}, "
          f"processor {info['processor_version']}, orbit {info['orbit']})")
    print(f"species:     {info['species']} as {info['variable']} [{info['units']}]")
    print(f"coverage:    {info['time_coverage_start']} to {info['time_coverage_end']} (file attributes)")
    print(f"soundings:   {info['n_total']} in all, {info['n_valid']} valid ({info['qa_rule']})")
    if info["n_valid"]:
        print(f"valid time:  {info['time_start']} to {info['time_end']}")
        print(f"values:      mean {info['mean']:.6g}, min {info['min']:.6g}, max {info['max']:.6g} {info['units']}")
        w, s, e, n = info["bbox"]
        print(f"bbox:        west {w:.4f}, south {s:.4f}, east {e:.4f}, north {n:.4f} (degrees)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import run

    cfg = load_config(args.config)
    result = run(cfg, scheduler=args.scheduler)
    for out in result.outputs:
        print(out)
    print(f"done in {result.seconds:.1f} s ({len(result.inputs)} inputs)", file=sys.stderr)
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    import glob as _glob
    from pathlib import Path

    from .composite import composite
    from .errors import ConfigError
    from .grid import GridSpec, named_grid
    from .gridding import grid_soundings
    from .pipeline import write_level3
    from .readers import open_product

    if args.grid:
        grid = named_grid(args.grid)
    else:
        if args.bbox is None or args.resolution is None:
            raise ConfigError("give --grid NAME, or --bbox W S E N together with --resolution R [--crs CRS]")
        grid = GridSpec.from_bbox(args.bbox, args.resolution, args.crs)
    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".tif", ".tiff", ".nc"):
        raise ConfigError(f"{out}: the output must end in .tif (Cloud-Optimized GeoTIFF) or .nc (CF-NetCDF)")
    files: list[str] = []
    for f in args.files:
        files += sorted(_glob.glob(f)) if _glob.has_magic(f) else [f]
    if not files:
        raise ConfigError(f"{' '.join(args.files)}: no input file matched")
    products = [open_product(f, qa_threshold=args.qa_threshold) for f in files]
    common = dict(method=args.method, weighting=args.weighting)
    l3 = composite(products, grid, period=args.period, **common) if args.period else grid_soundings(products, grid, **common)
    formats = ("netcdf",) if suffix == ".nc" else ("geotiff",)
    if args.quicklook:
        formats += ("quicklook",)
    import dask

    tasks, outputs = write_level3(l3, out.parent, out.stem, formats)
    if suffix == ".nc":
        outputs = [str(out) if o.endswith(".nc") else o for o in outputs]
    dask.compute(*tasks)
    for o in outputs:
        print(o)
    return 0


def _cmd_make_samples(args: argparse.Namespace) -> int:
    from .samples import make_samples

    manifest = make_samples(args.out)
    for f in manifest["files"]:
        for name in f.get("files") or [f["file"]]:
            print(f"{args.out}/{name}")
    print(f"{args.out}/{manifest['regions']}")
    print(f"{args.out}/MANIFEST.json")
    return 0


def _cmd_readers(args: argparse.Namespace) -> int:
    import inspect

    from .readers import list_readers

    for name, reader in list_readers().items():
        params = inspect.signature(reader.open).parameters
        opts = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
        print(f"{name:18s} {reader.description}; files like {', '.join(reader.file_patterns)}; options: {', '.join(opts)}")
    return 0


def _cmd_grids(args: argparse.Namespace) -> int:
    from .grid import grid_names, named_grid

    for name in grid_names():
        print(repr(named_grid(name)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(prog="eo-pipeline", description="Satellite GHG products to maps.")
    p.add_argument("--version", action="version", version=f"eo-pipeline {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="describe a Level-2 product: product, time, counts, bbox")
    s.add_argument("file")
    s.add_argument("--qa-threshold", type=float, default=None,
                   help="quality threshold on the 0..1 scale (default: the product's; 0 = none)")
    s.add_argument("--reader", default=None, help="force a reader (see 'eo-pipeline readers')")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("run", help="run a job from a YAML config (e.g. configs/demo.yaml)")
    s.add_argument("config")
    s.add_argument("--scheduler", default=None, choices=["threads", "processes", "synchronous"],
                   help="dask scheduler (default: threads)")
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("grid", help="grid Level-2 files onto a map grid -> COG (.tif) or CF-NetCDF (.nc)")
    s.add_argument("files", nargs="+", metavar="FILE", help="Level-2 files or glob patterns (one species)")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--grid", help="a named grid (see 'eo-pipeline grids')")
    where.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"),
                       help="bounding box in the CRS's units (with --resolution)")
    s.add_argument("--resolution", type=float, help="cell size in the CRS's units (with --bbox)")
    s.add_argument("--crs", default="EPSG:4326", help="CRS of --bbox/--resolution (default EPSG:4326)")
    s.add_argument("--method", choices=["area", "point"], default="area")
    s.add_argument("--weighting", choices=["inverse_variance"], default=None)
    s.add_argument("--period", choices=["day", "month"], default=None, help="daily/monthly composites")
    s.add_argument("--qa-threshold", type=float, default=None, help="0..1 (default: each product's)")
    s.add_argument("--quicklook", action="store_true", help="also write a PNG quicklook of the mean")
    s.add_argument("-o", "--output", required=True, help="OUT.tif (COG) or OUT.nc (CF-NetCDF)")
    s.set_defaults(func=_cmd_grid)

    s = sub.add_parser("make-samples", help="(re)write the synthetic sample scenes")
    s.add_argument("--out", default="sample_scenes")
    s.set_defaults(func=_cmd_make_samples)

    s = sub.add_parser("readers", help="list the product readers and their options")
    s.set_defaults(func=_cmd_readers)
    s = sub.add_parser("grids", help="list the named grids")
    s.set_defaults(func=_cmd_grids)
    return p


def _one_line_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"eo-pipeline: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eo-pipeline`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        warnings.showwarning = _one_line_warning
    try:
        return int(args.func(args) or 0)
    except EOPipelineError as exc:
        if args.debug:
            raise
        print(f"eo-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("eo-pipeline: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last-resort report, one line unless --debug
        if args.debug:
            raise
        print(f"eo-pipeline: internal error: {type(exc).__name__}: {exc} "
              "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
