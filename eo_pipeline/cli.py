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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from ._version import __version__
from .errors import EOPipelineError
from .progress import ProgressLine, WarningCollapser

__all__ = ["main"]

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


def _radiance_info(path: str) -> dict[str, Any] | None:
    """What ``info`` says of a radiance cube (None: the file is not one)."""
    from pathlib import Path

    from .errors import EOPipelineError
    from .readers.radiance import detect_radiance_reader, open_radiance

    p = Path(path)
    if not p.is_file() and not Path(str(p) + ".hdr").is_file():
        return None
    try:  # by content; anything else (and any trouble) goes to the Level-2 readers, which say what is wrong
        detect_radiance_reader(p)
    except (EOPipelineError, OSError):
        return None
    cube = open_radiance(p)
    lines, samples, bands = cube.radiance.shape
    wave = cube.wavelength.values
    geo = ("map grid (x/y, CRS)" if "x" in cube.coords else "geometry lookup table" if "glt_sample" in cube
           else "per-pixel lon/lat" if "lon" in cube.coords else "none")
    return {"file": str(p), "reader": cube.attrs["reader"], "instrument": cube.attrs["instrument"],
            "lines": lines, "samples": samples, "bands": bands, "units": cube.radiance.attrs["units"],
            "wavelength_nm": [float(wave.min()), float(wave.max())],
            "fwhm_nm": [float(cube.fwhm.min()), float(cube.fwhm.max())], "fwhm_source": cube.fwhm.attrs["source"],
            "geolocation": geo, "time": cube.attrs.get("time")}


def _cmd_info(args: argparse.Namespace) -> int:
    from .readers import open_product
    from .summary import summarize

    if args.reader is None:
        cube = _radiance_info(args.file)
        if cube is not None:
            if args.json:
                print(json.dumps(cube, indent=1))
                return 0
            print(f"file:        {cube['file']}")
            print(f"product:     radiance cube ({cube['instrument']}; reader {cube['reader']})")
            print(f"size:        {cube['lines']} lines x {cube['samples']} samples x {cube['bands']} bands "
                  f"[{cube['units']}]")
            print(f"bands:       {cube['wavelength_nm'][0]:.1f}-{cube['wavelength_nm'][1]:.1f} nm, FWHM "
                  f"{cube['fwhm_nm'][0]:.2f}-{cube['fwhm_nm'][1]:.2f} nm ({cube['fwhm_source']})")
            print(f"geolocation: {cube['geolocation']}; time {cube['time'] or 'unknown'}")
            print("next:        eo-pipeline plumes FILE -o OUTDIR")
            return 0
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


class _CLIReporter:
    """Shows a job's progress on the session's line (see :class:`eo_pipeline.pipeline.Reporter`)."""

    def __init__(self, session: Any) -> None:
        self.line = session.line

    def opened(self, done: int, total: int, path: Any) -> None:
        self.line.show(f"opening inputs {done}/{total}: {path.name}", force=done == total)

    def computing(self, n_outputs: int) -> Any:
        from .progress import task_progress

        self.line.clear()
        return task_progress(self.line, n_outputs) if self.line.enabled else nullcontext()


def _print_summary(result: Any, out_dir: Any) -> None:
    """The closing screen of a job: inputs, soundings, outputs by kind, time, peak memory."""
    from .progress import peak_memory_mb

    kinds: dict[str, int] = {}
    for o in result.outputs:
        suffix = o.rsplit(".", 1)[-1].lower()
        kinds[suffix] = kinds.get(suffix, 0) + 1
    skipped = f", {len(result.skipped)} skipped (see job_summary.json)" if result.skipped else ""
    used = sum(result.soundings.values())
    dropped = sum(result.dropped.values())
    up = f"; {len(result.up_to_date)} up to date, left as they were" if result.up_to_date else ""
    lines = [
        f"eo-pipeline: done in {result.seconds:.1f} s, peak memory {peak_memory_mb() / 1024:.2f} GB",
        f"  inputs:    {len(result.inputs)} files read{skipped}",
        f"  soundings: {used:,} used"
        + (" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(result.soundings.items())) + ")" if result.soundings else "")
        + (f"; {dropped:,} footprints dropped" if dropped else ""),
        f"  outputs:   {len(result.outputs)} in {out_dir} ("
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")" + up,
    ]
    if result.phases:
        lines.append("  time:      " + ", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items()))
    print("\n".join(lines), file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import run

    cfg = load_config(args.config)
    if args.output is not None:  # relative to where the command runs, like any path on a command line
        from pathlib import Path

        cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": Path(args.output).resolve()})})
    result = run(cfg, scheduler=args.scheduler, workers=args.workers, reporter=_CLIReporter(args.session),
                 overwrite=args.overwrite, dry_run=args.dry_run)
    if args.dry_run:
        up = set(result.up_to_date)
        for f in result.inputs:
            print(f"input  {f}")
        for out in result.outputs:
            print(f"{'skip ' if out in up else 'write'}  {out}")
        if not args.quiet:
            print(f"eo-pipeline: dry run: {len(result.inputs)} inputs found; {len(result.written)} outputs would be "
                  f"written, {len(result.up_to_date)} are up to date and would be skipped", file=sys.stderr)
        return 0
    for out in result.outputs:
        print(out)
    if not args.quiet:
        _print_summary(result, cfg.resolve(cfg.output.dir))
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    import glob as _glob
    from pathlib import Path

    from .composites import composite
    from .errors import ConfigError
    from .grid import GridSpec, named_grid
    from .gridding import auto_chunk, grid_soundings, statistics_of
    from .outputs import compute_outputs, write_level3
    from .readers import drop_duplicates, open_product

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
    products = drop_duplicates(products)  # the same product twice would count its soundings twice
    stats = statistics_of(args.statistics)
    # the maps are only written, never gathered: blocks, so that the empty ones of a sparse map cost nothing
    chunk = auto_chunk(grid, written=True)
    common = dict(method=args.method, weighting=args.weighting, statistics=("mean", *stats), chunk=chunk)
    if args.method == "srf":
        common.update(srf_shape=args.srf_shape, srf_window=args.srf_window)
    l3 = composite(products, grid, period=args.period, **common) if args.period else grid_soundings(products, grid, **common)
    formats = ("netcdf",) if suffix == ".nc" else ("geotiff",)
    if args.quicklook:
        formats += ("quicklook",)
    tasks, outputs = write_level3(l3, out.parent, out.stem, formats)
    if suffix == ".nc":
        outputs = [str(out) if o.endswith(".nc") else o for o in outputs]
    from .io._atomic import remove_temporaries

    try:
        compute_outputs(tasks)
    finally:
        for o in outputs:  # parts of a failed write, done markers of finished ones
            remove_temporaries(o)
    for o in outputs:
        print(o)
    return 0


def _cmd_forest(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .forest_stage import run_forest
    from .grid import GridSpec, named_grid

    grid = None
    if args.grid:
        grid = named_grid(args.grid)
    elif args.bbox is not None:
        if args.resolution is None:
            raise ConfigError("--bbox needs --resolution (cell size in the CRS's units)")
        grid = GridSpec.from_bbox(args.bbox, args.resolution, args.crs)
    rf: Any = None
    if args.removal_factor is not None:
        parts = args.removal_factor.split(":")
        try:
            nums = [float(v) for v in parts]
        except ValueError:
            raise ConfigError(f"--removal-factor {args.removal_factor}: give VALUE or VALUE:LOW:HIGH in t C/ha/yr") from None
        if len(nums) not in (1, 3):
            raise ConfigError(f"--removal-factor {args.removal_factor}: give VALUE or VALUE:LOW:HIGH in t C/ha/yr")
        rf = {"value": nums[0]} if len(nums) == 1 else {"value": nums[0], "low": nums[1], "high": nums[2]}
        rf["units"] = "t CO2/ha/yr" if args.removal_factor_units == "tco2" else "t C/ha/yr"
    formats = ("geotiff",) + (("quicklook",) if not args.no_quicklook else ())
    run = run_forest(
        args.treecover, args.lossyear, out=args.output, emissions=args.emissions, gain=args.gain, biomass=args.biomass,
        regions=args.regions, name_field=args.name_field, select=args.select, grid=grid, min_cover=args.min_cover,
        min_size=args.min_size, years=args.years if args.years else ..., map_year=args.map_year,
        cell_area=args.cell_area, emissions_weighting=args.emissions_weighting, landcover=args.landcover,
        removal_factors=args.removal_factors, zone=args.zone, removal_factor=rf, formats=formats)
    for o in run.outputs:
        print(o)
    last = run.table[run.table["year"] == run.table["year"].max()]
    for _, row in last.iterrows():
        line = f"{row['region']}: {row['year']} tree cover {row['treecover_ha']:.6g} ha ({row['treecover_mu']:.6g} mu)"
        if "removals_tco2" in row:
            line += f", removals {row['removals_tco2']:.6g} t CO2/yr"
        if "net_tco2e" in row:
            line += f", net {row['net_tco2e']:.6g} t CO2e/yr (negative = sink)"
        print(line, file=sys.stderr)
    return 0


def _cmd_plumes(args: argparse.Namespace) -> int:
    from .plume_stage import run_plumes

    result = run_plumes(args.radiance, args.output, fwhm_nm=args.fwhm, wind_speed=args.wind_speed,
                        wind_speed_uncertainty=args.wind_speed_uncertainty, sensor=args.sensor,
                        threshold=args.threshold, passes=args.passes, ueff=args.ueff, grid=args.grid,
                        albedo_correction=not args.no_albedo_correction)
    for o in result["outputs"]:
        print(o)
    if not args.quiet:
        table = result["plumes"]
        print(f"{len(table)} plume(s); noise {result['noise_ppm_m']:.0f} ppm m; {result['seconds']:.1f} s",
              file=sys.stderr)
        for _, row in table.iterrows():
            q = "" if row.emission_kg_h != row.emission_kg_h else \
                f", Q {row.emission_kg_h:.0f} +- {row.emission_uncertainty_kg_h:.0f} kg/h"
            print(f"  plume {int(row.plume_id)}: {row.lat:.5f}N {row.lon:.5f}E, {row.area_m2:.0f} m2, "
                  f"max {row.max_ppm_m:.0f} ppm m, IME {row.ime_kg:.1f} kg{q}", file=sys.stderr)
    return 0


def _cmd_fetch_data(args: argparse.Namespace) -> int:
    from .absorption import fetch_absorption_table

    print(fetch_absorption_table(args.dir, quiet=args.quiet))
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.output, scheduler=args.scheduler)
    for out in result.outputs:
        print(out)
    print(f"demo done in {result.seconds:.1f} s ({len(result.inputs)} inputs); the job is "
          f"{args.output}/configs/demo.yaml, the outputs are in {args.output}/outputs/demo", file=sys.stderr)
    return 0


def _cmd_readers(args: argparse.Namespace) -> int:
    import inspect

    from .readers import list_readers

    for name, reader in list_readers().items():
        params = inspect.signature(reader.open).parameters
        opts = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
        print(f"{name:18s} {reader.description}; files like {', '.join(reader.file_patterns)}; options: {', '.join(opts)}")
    from .readers.radiance import RADIANCE_DESCRIPTIONS, radiance_readers

    print("radiance cubes (eo-pipeline plumes; option: fwhm_nm):")
    for name in radiance_readers():
        print(f"{name:18s} {RADIANCE_DESCRIPTIONS.get(name, 'third-party radiance reader')}")
    return 0


def _cmd_grids(args: argparse.Namespace) -> int:
    from .grid import grid_names, grid_sources, named_grid, user_grids_file

    for name in grid_names():
        print(repr(named_grid(name)))
    print(f"from: {', '.join(grid_sources())}; add your own in {user_grids_file()} or $EO_PIPELINE_GRIDS",
          file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(prog="eo-pipeline", description="Satellite GHG products to maps.")
    p.add_argument("--version", action="version", version=f"eo-pipeline {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    talk = common.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="count", default=0,
                      help="log what the run does (-vv: debug detail)")
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="no progress line and no closing summary (errors and warnings still show)")

    s = sub.add_parser("info", parents=[common],
                       help="describe a Level-2 product (product, time, counts, bbox) or a radiance cube")
    s.add_argument("file")
    s.add_argument("--qa-threshold", type=float, default=None,
                   help="quality threshold on the 0..1 scale (default: the product's; 0 = none)")
    s.add_argument("--reader", default=None, help="force a reader (see 'eo-pipeline readers')")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("run", parents=[common], help="run a job from a YAML config (e.g. configs/demo.yaml)")
    s.add_argument("config")
    s.add_argument("--scheduler", default=None, metavar="threads|processes|synchronous|tcp://HOST:PORT|FILE.json",
                   help="where to compute: a local dask scheduler, a running dask scheduler's address, or its "
                   "scheduler file (default: the config's cluster: section, else threads)")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads or processes of a local scheduler, workers of cluster: {type: local}, "
                   "or jobs of a SLURM/PBS cluster")
    s.add_argument("--output", default=None, metavar="DIR", help="output folder (instead of the config's output.dir)")
    s.add_argument("--overwrite", action="store_true",
                   help="recompute every output, even up-to-date ones (needed after the configuration changed)")
    s.add_argument("--dry-run", action="store_true",
                   help="list the inputs found and the outputs that would be written or skipped; compute nothing")
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("grid", parents=[common], help="grid Level-2 files onto a map grid -> COG (.tif) or CF-NetCDF (.nc)")
    s.add_argument("files", nargs="+", metavar="FILE", help="Level-2 files or glob patterns (one species)")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--grid", help="a named grid (see 'eo-pipeline grids')")
    where.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"),
                       help="bounding box in the CRS's units (with --resolution)")
    s.add_argument("--resolution", type=float, help="cell size in the CRS's units (with --bbox)")
    s.add_argument("--crs", default="EPSG:4326", help="CRS of --bbox/--resolution (default EPSG:4326)")
    s.add_argument("--method", choices=["area", "point", "srf"], default="area",
                   help="area: exact footprint overlap (default); point: pixel centres; srf: physics-based "
                   "oversampling by each pixel's spatial response function (Sun et al. 2018), adds num_samples")
    s.add_argument("--srf-shape", default=None, metavar="K1,K2,K3|INSTRUMENT",
                   help="SRF shape of --method srf: three numbers or an instrument name (default: each product's "
                   "instrument, e.g. TROPOMI 4,2,1; others 2,2,1)")
    s.add_argument("--srf-window", type=float, default=1.5, metavar="F",
                   help="window factor of --method srf: cells within ceil(extent/2/cell x F) of the centre (1.5)")
    s.add_argument("--weighting", choices=["inverse_variance"], default=None)
    s.add_argument("--period", choices=["day", "month"], default=None, help="daily/monthly composites")
    s.add_argument("--statistics", default="mean,count,weight", metavar="S[,S...]",
                   help="statistics to write, from mean, std, count, weight, min, max, uncertainty, or 'all' "
                   "(default: mean,count,weight; --method srf adds num_samples)")
    s.add_argument("--qa-threshold", type=float, default=None, help="0..1 (default: each product's)")
    s.add_argument("--quicklook", action="store_true", help="also write a PNG quicklook of the mean")
    s.add_argument("-o", "--output", required=True, help="OUT.tif (COG) or OUT.nc (CF-NetCDF)")
    s.set_defaults(func=_cmd_grid)

    s = sub.add_parser("forest", parents=[common], help="forest area by year, removals, loss emissions and net flux -> CSV (+ maps)",
                       description="Forest area by year per region (Global Forest Watch definitions), with IPCC Tier 1 "
                       "removals, emissions from loss and net flux (t CO2e/yr, negative = net sink).")
    s.add_argument("--treecover", required=True, nargs="+", metavar="T.tif",
                   help="Hansen treecover2000 tile(s) (%% canopy), or a land-cover class raster with --landcover")
    s.add_argument("--lossyear", nargs="+", metavar="L.tif", help="Hansen lossyear tile(s) on the same grid")
    s.add_argument("--emissions", nargs="+", metavar="E.tif", help="GFW gross emissions tile(s), Mg CO2e per pixel")
    s.add_argument("--gain", nargs="+", metavar="G.tif", help="Hansen gain tile(s) (adds gain 2000-2012 sums)")
    s.add_argument("--biomass", nargs="+", metavar="B.tif", help="above-ground biomass density tile(s), t d.m./ha")
    s.add_argument("--landcover", metavar="CLASSES", help="treecover is a class raster: worldcover, lc100 or e.g. 10,95")
    s.add_argument("--regions", metavar="AOI.gpkg", help="region polygons (any CRS; default: the whole raster)")
    s.add_argument("--name-field", help="attribute naming the regions (default: name, then id)")
    s.add_argument("--select", nargs="+", metavar="REGION", help="only these regions")
    s.add_argument("--min-cover", type=float, default=30.0, metavar="PCT", help="canopy cover %% for forest (default 30)")
    s.add_argument("--min-size", default="0", metavar="HA",
                   help="minimum patch area, strictly exceeded: ha, or with a unit ('7.5 mu', '0.1 km2'); default 0")
    s.add_argument("--years", metavar="2000-2023", help="years to report (default: 2000 to the last loss year)")
    s.add_argument("--cell-area", choices=["ellipsoid", "sphere"], default="ellipsoid",
                   help="pixel areas on the WGS84 ellipsoid (default) or a sphere of R = 6378137 m (GFW/mapme)")
    s.add_argument("--emissions-weighting", choices=["fraction", "none"], default="fraction",
                   help="weight boundary pixels' emissions by covered fraction (default) or take them whole")
    s.add_argument("--removal-factors", metavar="TABLE.yaml",
                   help="your removal-factor table, merged over the bundled IPCC 2019 table "
                   "(example: configs/removal_factors_user.yaml)")
    s.add_argument("--zone", metavar="KEY", help="table zone: climate_domain/ecological_zone/continent/age_class")
    s.add_argument("--removal-factor", metavar="VALUE[:LOW:HIGH]",
                   help="your own removal factor (t C/ha/yr, above + below ground) instead of a table zone")
    s.add_argument("--removal-factor-units", choices=["tc", "tco2"], default="tc",
                   help="units of --removal-factor: t C/ha/yr (default) or t CO2/ha/yr")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--grid", help="also write per-cell maps on this named grid")
    where.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"), help="map grid bbox (with --resolution)")
    s.add_argument("--resolution", type=float, help="map grid cell size (with --bbox)")
    s.add_argument("--crs", default="EPSG:4326", help="CRS of --bbox/--resolution (default EPSG:4326)")
    s.add_argument("--map-year", type=int, help="year of the maps (default: the last year)")
    s.add_argument("--no-quicklook", action="store_true", help="no PNG quicklooks with the maps")
    s.add_argument("-o", "--output", required=True, metavar="OUT.csv", help="the table; maps go next to it")
    s.set_defaults(func=_cmd_forest)

    s = sub.add_parser("demo", parents=[common], help="write the sample scenes and run the bundled demo job in a folder",
                       description="Write the synthetic sample scenes to DIR/sample_scenes, the bundled demo job to "
                       "DIR/configs/demo.yaml, and run it: maps, tables and quicklooks in DIR/outputs/demo.")
    s.add_argument("-o", "--output", default="eo_pipeline_demo", metavar="DIR",
                   help="folder to write into (default: ./eo_pipeline_demo)")
    s.add_argument("--scheduler", default=None, choices=["threads", "processes", "synchronous"],
                   help="dask scheduler (default: threads)")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("plumes", parents=[common],
                       help="hyperspectral radiance cube (AVIRIS-NG ENVI, EMIT L1B) -> CH4 enhancement, plume masks, "
                       "plume table")
    s.add_argument("radiance", help="ENVI cube (data file or .hdr) or EMIT L1B RAD netCDF")
    s.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    s.add_argument("--fwhm", type=float, default=None, metavar="NM",
                   help="band FWHM in nm where the header has none (default: the instrument's, AVIRIS-NG 5.95)")
    s.add_argument("--wind-speed", type=float, default=None, metavar="M_S",
                   help="10 m wind speed for the emission rates, m/s (without it: IME only)")
    s.add_argument("--wind-speed-uncertainty", type=float, default=None, metavar="M_S",
                   help="1-sigma of the wind speed, m/s (default 50%% of it)")
    s.add_argument("--sensor", default=None, metavar="NAME",
                   help="U_eff calibration row (EMIT, EnMAP, PRISMA; default: the cube's instrument)")
    s.add_argument("--ueff", type=float, nargs=2, default=None, metavar=("A", "B"),
                   help="U_eff = A + B * U10 instead of the calibration table's")
    s.add_argument("--threshold", type=float, default=None, metavar="PPM_M",
                   help="plume mask threshold, ppm m (default: twice the scene's noise)")
    s.add_argument("--passes", type=int, default=2, help="matched-filter passes (default 2)")
    s.add_argument("--grid", default=None, help="also write the enhancement on this named grid")
    s.add_argument("--no-albedo-correction", action="store_true",
                   help="find plumes on the plain matched-filter enhancement (default: the albedo-corrected one)")
    s.set_defaults(func=_cmd_plumes)

    s = sub.add_parser("fetch-data", parents=[common],
                       help="download the CH4 absorption table (mag1c 1.2.0 wheel, without its dependencies)")
    s.add_argument("--dir", default=None, help="target folder (default: the user cache folder)")
    s.set_defaults(func=_cmd_fetch_data)

    s = sub.add_parser("make-samples", parents=[common], help="(re)write the synthetic sample scenes")
    s.add_argument("--out", default="sample_scenes")
    s.set_defaults(func=_cmd_make_samples)

    s = sub.add_parser("readers", parents=[common], help="list the product readers and their options")
    s.set_defaults(func=_cmd_readers)
    s = sub.add_parser("grids", parents=[common], help="list the named grids")
    s.set_defaults(func=_cmd_grids)
    return p


@dataclass
class _Session:
    """What the command line shows while a command runs (see :mod:`eo_pipeline.progress`)."""

    line: ProgressLine
    warnings: WarningCollapser
    quiet: bool


@contextmanager
def _cli_reporting(args: argparse.Namespace) -> Iterator[_Session]:
    """Warnings (collapsed), log handler and progress line for the length of a command, restored after.

    ``main`` may be called in-process (tests, notebooks): the caller's warning display,
    filters and logging configuration are left as they were.
    """
    debug = bool(getattr(args, "debug", False))
    verbose = int(getattr(args, "verbose", 0) or 0)
    quiet = bool(getattr(args, "quiet", False))
    line = ProgressLine(sys.stderr, enabled=sys.stderr.isatty() and not quiet and not debug)
    collapser = WarningCollapser(lambda text: print(text, file=sys.stderr), before=line.clear)
    logger = logging.getLogger("eo_pipeline")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("eo-pipeline: %(levelname)s %(name)s: %(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug or verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    try:
        with warnings.catch_warnings():  # restores showwarning and the filters on exit
            if not debug:
                warnings.showwarning = collapser
            yield _Session(line, collapser, quiet)
            line.clear()
            collapser.report()
    finally:
        line.clear()
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eo-pipeline`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _cli_reporting(args) as session:
        args.session = session
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; bad input ends in one line and exit 2, anything else in one line and exit 3."""
    session = args.session
    try:
        return int(args.func(args) or 0)
    except EOPipelineError as exc:
        if args.debug:
            raise
        session.line.clear()
        print(f"eo-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        session.line.clear()
        print("eo-pipeline: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (| head): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - last-resort report, one line unless --debug
        if args.debug:
            raise
        session.line.clear()
        print(f"eo-pipeline: internal error: {type(exc).__name__}: {exc} "
              "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


def console_main() -> None:
    """The ``eo-pipeline`` console script: :func:`main`, then a prompt end of the process.

    Once a command has returned, its outputs are written and closed and its pools shut
    down. What is left is the interpreter's teardown, which frees the objects of
    pandas, dask, xarray and numba module by module: 0.3-0.5 s of a 2 s ``grid``
    command. The exit handlers still run and the streams are flushed, then the process
    ends with the command's status. Every file a command writes is closed by its writer
    before the command returns (the writers open and close their files in the tasks),
    so nothing is left for the teardown to flush. If anything of that fails, or the
    command raised, Python exits the usual way.
    """
    import atexit
    import os

    code = main()
    try:
        atexit._run_exitfuncs()  # what a normal exit runs: temporary folders, clusters, logging
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - let the normal exit report it
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console_main()
