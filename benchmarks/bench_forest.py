# SPDX-License-Identifier: Apache-2.0
"""Forest area by year on one full 10 x 10 degree Hansen tile (issue: forest stage).

Target: ``forest_area_by_year`` for one full Hansen GFC tile (40000 x 40000 pixels),
read in windows, within 5 minutes and under 3 GB of memory on 2 cores.

The tile pair is generated once (``make_tile``) in ``benchmarks/.data/`` (git-ignored),
deterministically: a spatially correlated canopy field (random fields at several scales
on a coarse 40-pixel grid, bilinearly upsampled, plus per-pixel noise, through a steep
sigmoid so canopy is mostly 0 or 80-100 %) and loss in clearings (a second
correlated field) with one loss year per 20 x 20 pixel block. It is written 1000 rows at
a time with rasterio windows as LZW-compressed, striped (40000 x 1 blocks, like the real
tiles) uint8 GeoTIFFs without a nodata value, tagged ``synthetic=true``.

Each case runs in a fresh Python process (``python bench_forest.py --child CASE``) so
its peak resident memory (GNU time's maximum RSS) is its own:

a) the whole tile, no regions, ``min_size_ha=0``, years 2000-2023;
b) a 40-vertex irregular region polygon covering most of the tile, ``min_size_ha=1``
   (two-pass patch labelling, patches joined across strip seams);
c) as a) with ``cell_area="sphere"``.

Case a)'s 2000 tree cover is checked against a brute-force count made here: pixels with
canopy >= 30 % per row times that row's WGS84 pixel area (closed form,
:func:`eo_pipeline.grid.ellipsoidal_band_area`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
SIZE = 40000  # pixels per side of a Hansen tile
RES = 0.00025  # degrees
WEST, NORTH = 100.0, 40.0  # tile 40N_100E
SEED = 20231111
BLOCK_ROWS = 1000
COARSE = 40  # pixels per cell of the coarse landscape grid
YEAR_BLOCK = 20  # loss year constant over 20 x 20 pixel blocks
TREECOVER = "Hansen_GFC-2023-v1.11_treecover2000_40N_100E.tif"
LOSSYEAR = "Hansen_GFC-2023-v1.11_lossyear_40N_100E.tif"
REGION = "region_40N_100E.geojson"
TARGET_SECONDS = 300.0
TARGET_MB = 3072.0
WGS84_A, WGS84_F = 6378137.0, 1 / 298.257223563
CASES = {
    "a": {"label": "whole tile, min_size_ha=0", "regions": False, "min_size_ha": 0.0,
          "cell_area": "ellipsoid"},
    "b": {"label": "40-vertex region, min_size_ha=1", "regions": True, "min_size_ha": 1.0,
          "cell_area": "ellipsoid"},
    "c": {"label": "whole tile, cell_area=sphere", "regions": False, "min_size_ha": 0.0,
          "cell_area": "sphere"},
}


# ----------------------------------------------------------------------------- the tile
def _bilinear(coarse: np.ndarray, step: float, r0: int, r1: int, ncols: int) -> np.ndarray:
    """Rows r0..r1-1 (``ncols`` columns) of ``coarse`` upsampled ``step`` times, bilinearly."""
    y = (np.arange(r0, r1) + 0.5) / step
    i = np.floor(y).astype(np.intp)
    w = (y - i).astype(np.float32)[:, None]
    rows = coarse[i] * (1 - w) + coarse[i + 1] * w
    x = (np.arange(ncols) + 0.5) / step
    j = np.floor(x).astype(np.intp)
    wx = (x - j).astype(np.float32)
    return rows[:, j] * (1 - wx) + rows[:, j + 1] * wx


def _fields(size: int) -> dict[str, Any]:
    """The coarse (40-pixel) fields the whole tile is drawn from; small and deterministic."""
    rng = np.random.default_rng(SEED)
    nc = size // COARSE + 2

    def scale(k: int, sd: float) -> np.ndarray:  # a k x k random field on the coarse grid
        g = rng.standard_normal((k + 2, k + 2)).astype(np.float32)
        return _bilinear(g, nc / k, 0, nc, nc) * sd

    def noise(sd: float) -> np.ndarray:
        return rng.standard_normal((nc, nc)).astype(np.float32) * sd

    # landscape: ranges / plains (~1.7 degrees), valleys (~25 km), stands (~4 km), 1 km noise
    land = scale(6, 1.0) + scale(40, 0.7) + scale(250, 0.5) + noise(0.35)
    land = (land - land.mean()) / land.std()
    # clearing pressure: regional fronts and local clearings
    clear = scale(12, 1.0) + scale(300, 0.8) + noise(0.6)
    clear = (clear - clear.mean()) / clear.std()
    ny = size // YEAR_BLOCK + 1
    codes = np.arange(1, 24)
    p = np.linspace(1.0, 2.5, codes.size)  # loss increasing over the years, as in the real series
    years = rng.choice(codes, size=(ny, ny), p=p / p.sum()).astype(np.uint8)
    return {"land": land, "land_mid": float(np.quantile(land, 0.68)), "clear": clear,
            "clear_cut": float(np.quantile(clear, 0.93)), "years": years}


def _block(f: dict[str, Any], r0: int, r1: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Treecover (% canopy) and lossyear code of rows r0..r1-1."""
    rng = np.random.default_rng([SEED, r0])  # one stream per block: blocks are independent
    s = _bilinear(f["land"], COARSE, r0, r1, size)
    s -= f["land_mid"]
    s *= -4.0
    np.exp(s, out=s)
    s += 1.0
    np.divide(115.0, s, out=s)  # steep sigmoid: 0 in the open, 80-100 (often 100) in the forest
    s += (rng.random(s.shape, dtype=np.float32) - 0.5) * 14.0  # per-pixel noise (+-7 %)
    np.clip(s, 0, 100, out=s)
    s[s < 8] = 0
    treecover = s.astype(np.uint8)
    del s
    c = _bilinear(f["clear"], COARSE, r0, r1, size)
    c += rng.random(c.shape, dtype=np.float32) * 0.9
    c += treecover * np.float32(0.008)  # dense canopy is cleared more often than sparse
    lost = (c > f["clear_cut"] + 1.2) & (treecover > 0)
    del c
    yb = f["years"][np.arange(r0, r1) // YEAR_BLOCK][:, np.arange(size) // YEAR_BLOCK]
    lossyear = np.where(lost, yb, 0).astype(np.uint8)
    return treecover, lossyear


def _tile_ok(path: Path, size: int) -> bool:
    if not path.exists():
        return False
    import rasterio

    try:
        with rasterio.open(path) as r:
            return r.width == size and r.height == size and r.count == 1 and r.dtypes[0] == "uint8"
    except rasterio.errors.RasterioIOError:
        return False


def make_tile(dirpath: str | os.PathLike[str] = DATA, size: int = SIZE) -> tuple[Path, Path]:
    """Generate the synthetic Hansen pair (treecover2000, lossyear) in ``dirpath``; skip if present.

    ``size`` other than 40000 is for smoke tests only (the tile then covers less ground).
    Returns the two paths.
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    tc_path, ly_path = d / TREECOVER, d / LOSSYEAR
    if _tile_ok(tc_path, size) and _tile_ok(ly_path, size):
        return tc_path, ly_path
    f = _fields(size)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
               "crs": "EPSG:4326", "transform": from_origin(WEST, NORTH, RES, RES),
               "compress": "lzw", "tiled": False, "nodata": None}  # striped, 1 row/strip: as Hansen
    tmp = {p: p.with_name(p.name + ".part") for p in (tc_path, ly_path)}
    t0 = time.perf_counter()
    with (rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"),
          rasterio.open(tmp[tc_path], "w", **profile) as tc,
          rasterio.open(tmp[ly_path], "w", **profile) as ly):
        for r0 in range(0, size, BLOCK_ROWS):
            r1 = min(r0 + BLOCK_ROWS, size)
            a, b = _block(f, r0, r1, size)
            win = Window(0, r0, size, r1 - r0)
            tc.write(a, 1, window=win)
            ly.write(b, 1, window=win)
        common = {"synthetic": "true", "generator": "benchmarks/bench_forest.py make_tile",
                  "seed": str(SEED)}
        tc.update_tags(**common, layer="treecover2000", units="percent canopy cover in 2000")
        ly.update_tags(**common, layer="lossyear", units="0 = no loss, n = loss in 2000 + n")
    for final, part in tmp.items():
        os.replace(part, final)
    print(f"generated {tc_path.name} and {ly_path.name} in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return tc_path, ly_path


def make_region(dirpath: str | os.PathLike[str] = DATA) -> Path:
    """An irregular 40-vertex polygon inside 100.3-109.7 E, 30.3-39.7 N, as GeoJSON (EPSG:4326)."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(SEED + 1)
    n = 40
    ang = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n
    # reach towards the box's edge in every direction (a squarish blob), ragged by 0-20 %
    r = 4.7 * rng.uniform(0.8, 1.0, n) / np.maximum(np.abs(np.cos(ang)), np.abs(np.sin(ang)))
    poly = shapely.Polygon(np.c_[105.0 + r * np.cos(ang), 35.0 + r * np.sin(ang)])
    assert poly.is_valid and shapely.box(100.3, 30.3, 109.7, 39.7).contains(poly)
    path = Path(dirpath) / REGION
    gdf = gpd.GeoDataFrame({"name": ["region40"]}, geometry=[poly], crs="EPSG:4326")
    gdf.to_file(path, driver="GeoJSON")
    return path


# ----------------------------------------------------------------------------- the check
def brute_force_treecover_ha(tc_path: str | os.PathLike[str], min_cover: int = 30) -> dict:
    """Forest area 2000 (ha) counted directly: pixels >= min_cover per row x WGS84 pixel area."""
    import rasterio
    from rasterio.windows import Window

    from eo_pipeline.grid import ellipsoidal_band_area

    t = time.perf_counter()
    total = 0.0
    with rasterio.open(tc_path) as r:
        north, dy, dx = r.transform.f, -r.transform.e, r.transform.a
        for r0 in range(0, r.height, BLOCK_ROWS):
            r1 = min(r0 + BLOCK_ROWS, r.height)
            data = r.read(1, window=Window(0, r0, r.width, r1 - r0))
            count = np.count_nonzero(data >= min_cover, axis=1)
            rows = np.arange(r0, r1)
            lat_n = north - rows * dy
            area = ellipsoidal_band_area(lat_n - dy, lat_n, WGS84_A, WGS84_F) * (dx / 360.0)
            total += float(np.sum(count * area))
    return {"treecover_ha_2000": total / 1e4, "seconds": time.perf_counter() - t}


# ----------------------------------------------------------------------------- the cases
def _child(case: str, dirpath: Path, profile: str | None) -> None:
    """One case in this (fresh) process; prints one JSON line."""
    t_start = time.perf_counter()
    import eo_pipeline

    spec = CASES[case]
    tc, ly = dirpath / TREECOVER, dirpath / LOSSYEAR
    regions = str(dirpath / REGION) if spec["regions"] else None
    kw = {"regions": regions, "min_size_ha": spec["min_size_ha"], "years": "2000-2023",
          "cell_area": spec["cell_area"]}
    sched = contextlib.nullcontext()
    if profile:  # cProfile sees only its own thread: run the strips one after another in this one
        import cProfile

        import dask

        sched = dask.config.set(scheduler="synchronous")
        prof = cProfile.Profile()
        prof.enable()
    t = time.perf_counter()
    with sched:
        df = eo_pipeline.forest_area_by_year(str(tc), str(ly), **kw)
    seconds = time.perf_counter() - t
    if profile:
        prof.disable()
        prof.dump_stats(profile)
    tc_by_year = dict(zip(df["year"].astype(int), df["treecover_ha"].astype(float), strict=True))
    print(json.dumps({
        "seconds": seconds, "process_seconds": time.perf_counter() - t_start,
        "self_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "treecover_ha_2000": tc_by_year[2000], "treecover_ha_2023": tc_by_year[2023],
        "loss_ha_total": float(df["loss_ha"].sum()), "rows": len(df),
        "region_area_ha": df.attrs.get("region_area_ha", {})}))


def _region_pixels(dirpath: Path) -> int:
    import geopandas as gpd

    minx, miny, maxx, maxy = gpd.read_file(dirpath / REGION).total_bounds
    cols = math.ceil((maxx - WEST) / RES) - math.floor((minx - WEST) / RES)
    rows = math.ceil((NORTH - miny) / RES) - math.floor((NORTH - maxy) / RES)
    return int(rows * cols)


def run_case(case: str, dirpath: str | os.PathLike[str] = DATA,
             profile: str | None = None) -> dict[str, Any]:
    """Run one case in a fresh process: wall-clock time and peak resident memory (MB)."""
    dirpath = Path(dirpath)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--data", str(dirpath)]
    if profile:
        cmd += ["--profile", profile]
    gnu_time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = [gnu_time, "-f", "%M", "-o", tf.name] + cmd if gnu_time else cmd
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        proc = subprocess.run(full, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            return {"error": proc.stderr[-3000:], "wall_seconds": wall}
        if gnu_time:
            peak_kb = float(tf.read().strip().splitlines()[-1])
            how = "GNU time maximum RSS"
        else:  # the max over all children so far: exact while each case peaks above the earlier
            peak_kb = float(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            how = "getrusage(RUSAGE_CHILDREN)"
            if peak_kb <= before:
                how += " (not above an earlier case: upper bound)"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(case=case, label=CASES[case]["label"], wall_seconds=wall, peak_mb=peak_kb / 1024,
               peak_how=how,
               pixels=_region_pixels(dirpath) if CASES[case]["regions"] else SIZE * SIZE)
    out["ok"] = out["seconds"] <= TARGET_SECONDS and out["peak_mb"] <= TARGET_MB
    return out


def run(dirpath: str | os.PathLike[str] = DATA, cases: str = "abc") -> dict[str, Any]:
    """Generate the tile if needed, run the cases, check case a) by brute force."""
    dirpath = Path(dirpath)
    t = time.perf_counter()
    tc_path, ly_path = make_tile(dirpath)
    generated_s = time.perf_counter() - t
    make_region(dirpath)
    res: dict[str, Any] = {
        "tile": {"size": SIZE, "res_deg": RES, "west": WEST, "north": NORTH,
                 "treecover": tc_path.name, "lossyear": ly_path.name,
                 "treecover_mb": tc_path.stat().st_size / 2**20,
                 "lossyear_mb": ly_path.stat().st_size / 2**20, "make_seconds": generated_s},
        "machine": {"cpus": os.cpu_count()},
        "targets": {"seconds": TARGET_SECONDS, "peak_mb": TARGET_MB},
        "cases": {},
    }
    for c in cases:
        res["cases"][c] = run_case(c, dirpath)
        print(f"case {c}: {json.dumps(res['cases'][c])}", file=sys.stderr)
    bf = brute_force_treecover_ha(tc_path)
    a = res["cases"].get("a", {})
    if "treecover_ha_2000" in a:
        bf["pipeline_ha_2000"] = a["treecover_ha_2000"]
        ref = bf["treecover_ha_2000"]
        bf["rel_diff"] = abs(a["treecover_ha_2000"] - ref) / ref
        bf["ok"] = bf["rel_diff"] < 1e-9
    res["brute_force"] = bf
    res["ok"] = all(c.get("ok", False) for c in res["cases"].values()) and bf.get("ok", False)
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    p.add_argument("--profile", help="with --case: cProfile forest_area_by_year into this file "
                   "(single-threaded, so its time is not the benchmark's)")
    p.add_argument("--case", choices=sorted(CASES), help="run only this case (fresh process)")
    p.add_argument("--make-only", action="store_true", help="only generate the tile")
    args = p.parse_args()
    if args.child:
        _child(args.child, args.data, args.profile)
    elif args.make_only:
        print(make_tile(args.data))
    elif args.case:
        make_tile(args.data)
        make_region(args.data)
        print(json.dumps(run_case(args.case, args.data, args.profile), indent=1))
    else:
        print(json.dumps(run(args.data), indent=1))
