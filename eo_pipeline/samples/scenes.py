# SPDX-License-Identifier: Apache-2.0
"""The sample scenes: one synthetic day (2023-07-15) over northern China.

``make_samples(outdir)`` writes, deterministically:

* two S5P CH4 orbits (29781, 29782) with cloud gaps, low-quality pixels, a lake
  (water pixels) and a planted CH4 enhancement over the Qinshui coalfield (Shanxi)
  in orbit 29781; orbit 29782 carries no planted signal;
* one S5P CO orbit (29781);
* an OCO-2 Lite day crossing the plume of the Tuoketuo power station (Inner
  Mongolia) downwind, with a planted XCO2 enhancement;
* a GOSAT ESA CCI CH4 day (no planted signal);
* a Hansen-style treecover2000/lossyear pair for a forest area of Yuyang District
  (Yulin, Shaanxi);
* region polygons (GeoJSON) and ``MANIFEST.json``/``MANIFEST.md`` recording every
  planted signal (place, size, amplitude).

All values are synthetic; every file says so in its attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from .geometry import (
    gaussian_plume,
    km_to_lonlat,
    lonlat_to_km,
    oco2_track,
    s5p_swath,
    smooth_noise,
)
from .writers import (
    s5p_filename,
    write_esacci_ch4,
    write_hansen_tif,
    write_lite,
    write_s5p_l2,
)

__all__ = ["make_samples", "make_daily_orbits", "DAILY_PLUME_SCALE", "CH4_PLUME", "CO2_PLUME", "DAY", "SEED"]

SEED = 20230715
DAY = np.datetime64("2023-07-15", "D")

#: Planted CH4 enhancement (orbit 29781): Gaussian, peak amplitude in ppb.
CH4_PLUME: dict[str, Any] = {
    "species": "xch4", "units": "ppb", "shape": "gaussian", "amplitude": 40.0, "sigma_km": 12.0,
    "lon": 112.70, "lat": 35.95, "place": "Qinshui coalfield (Jincheng/Changzhi), Shanxi",
}
#: Planted XCO2 enhancement on the OCO-2 track, downwind of the Tuoketuo power station.
_TUOKETUO = (111.36, 40.19)
_BEARING_DEG = 70.0
_DOWNWIND_KM = 25.0
_e = _DOWNWIND_KM * np.sin(np.radians(_BEARING_DEG))
_n = _DOWNWIND_KM * np.cos(np.radians(_BEARING_DEG))
_cross_lon, _cross_lat = km_to_lonlat(np.array(_e), np.array(_n), *_TUOKETUO)
CO2_PLUME: dict[str, Any] = {
    "species": "xco2", "units": "ppm", "shape": "plume cross-section (Gaussian across the plume axis)",
    "amplitude": 3.0, "sigma_km": 4.0, "lon": round(float(_cross_lon), 4), "lat": round(float(_cross_lat), 4),
    "place": "OCO-2 track crossing the plume 25 km downwind (ENE) of the Tuoketuo power station",
    "source_lon": _TUOKETUO[0], "source_lat": _TUOKETUO[1], "plume_bearing_deg": _BEARING_DEG,
}
#: A lake drawn as water pixels (surface_classification 1): lon, lat, radius in km
#: (Wuliangsuhai, Inner Mongolia, enlarged so that a few dozen pixels fall on it).
_LAKE = (108.85, 40.95, 16.0)


def _t(hhmmss: str) -> np.datetime64:
    return np.datetime64(f"{DAY}T{hhmmss}", "ms")


def _s5p_orbit(outdir: Path, *, orbit: int, nadir_lon: float, t_anchor: np.datetime64, seed: int,
               plume: bool, destriped: bool, plume_scale: float = 1.0,
               processed: np.datetime64 | None = None) -> tuple[Path, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    n_scan = 300
    sw = s5p_swath(nadir_lon, 39.0, n_scan=n_scan)
    scan = np.arange(n_scan)
    times = t_anchor + ((scan - (n_scan - 1) / 2) * 840).astype("timedelta64[ms]")
    shape = sw.lat.shape
    truth = 1915.0 + 0.4 * (sw.lat - 39.0) + 10.0 * (smooth_noise(shape, rng, 25.0) - 0.5)
    if plume:
        truth = truth + plume_scale * CH4_PLUME["amplitude"] * gaussian_plume(
            sw.lon, sw.lat, CH4_PLUME["lon"], CH4_PLUME["lat"], CH4_PLUME["sigma_km"])
    stripes = rng.normal(0.0, 1.5, shape[1])[None, :]
    noise = rng.normal(0.0, 8.0, shape)
    destriped_col = truth + noise
    bias_corrected = destriped_col + stripes
    raw = bias_corrected - (6.0 + 4.0 * smooth_noise(shape, rng, 40.0))
    precision = 6.0 + 6.0 * smooth_noise(shape, rng, 15.0)
    # quality: clouds (fill, qa 0), low quality (qa 0.4), borderline (qa 0.5), good (qa 1.0)
    e, n = lonlat_to_km(sw.lon, sw.lat, CH4_PLUME["lon"], CH4_PLUME["lat"])
    el, nl = lonlat_to_km(sw.lon, sw.lat, _LAKE[0], _LAKE[1])
    dist = np.hypot(el, nl)
    near_plume = (np.hypot(e, n) < 60.0) | (dist < _LAKE[2] + 20.0)
    cloud = (smooth_noise(shape, rng, 6.0) > 0.62) & ~near_plume
    u = rng.random(shape)
    qa = np.where(u < 0.07, 0.4, np.where(u < 0.08, 0.5, 1.0))
    qa = np.where(near_plume, 1.0, qa)
    qa = np.where(cloud, 0.0, qa)
    cols = {"methane_mixing_ratio": raw, "methane_mixing_ratio_precision": precision,
            "methane_mixing_ratio_bias_corrected": bias_corrected}
    if destriped:
        cols["methane_mixing_ratio_bias_corrected_destriped"] = destriped_col
    cols = {k: np.where(cloud, np.nan, v) for k, v in cols.items()}
    surface = np.where(dist < _LAKE[2], 1, np.where(dist < _LAKE[2] + 4, 3, 0)).astype("u1")
    ak = (0.55 + 0.45 * np.linspace(0, 1, 12, dtype="f4"))[None, None, :] * np.ones(shape + (1,), "f4")
    start = t_anchor - np.timedelta64(52 * 60 + 13, "s")
    name = s5p_filename("CH4", start.astype("datetime64[s]"), (start + np.timedelta64(6070, "s")).astype("datetime64[s]"),
                        orbit, "020500", np.datetime64("2023-07-17T05:30:12") if processed is None else processed)
    path = write_s5p_l2(
        outdir / name, "CH4", lat=sw.lat, lon=sw.lon, lat_bounds=sw.lat_bounds, lon_bounds=sw.lon_bounds,
        scanline_time=times, columns=cols, qa_value=qa, orbit=orbit, surface_classification=surface,
        averaging_kernel=ak,
    )
    good = np.isfinite(cols["methane_mixing_ratio_bias_corrected"]) & (qa > 0.5)
    info = {"file": path.name, "product": "S5P L2 CH4", "reader": "s5p_ch4", "species": "xch4", "orbit": orbit,
            "shape": list(shape), "n_valid_default_qa": int(good.sum()),
            "planted_signal": "xch4 enhancement (see planted_signals)" if plume else "none",
            "water_pixels": int((surface == 1).sum())}
    return path, info


def _s5p_co(outdir: Path, *, orbit: int, nadir_lon: float, t_anchor: np.datetime64, seed: int) -> tuple[Path, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    n_scan = 300
    sw = s5p_swath(nadir_lon, 39.0, n_scan=n_scan)
    shape = sw.lat.shape
    times = t_anchor + ((np.arange(n_scan) - (n_scan - 1) / 2) * 840).astype("timedelta64[ms]")
    truth = 0.031 + 0.0002 * (sw.lat - 39.0) + 0.004 * (smooth_noise(shape, rng, 20.0) - 0.5)
    stripes = rng.normal(0.0, 0.0004, shape[1])[None, :]
    col = truth + rng.normal(0.0, 0.0015, shape) + stripes
    fill = rng.random(shape) < 0.05
    cloudy = smooth_noise(shape, rng, 6.0) > 0.6
    qa = np.where(fill, 0.0, np.where(cloudy, 0.7, 1.0))
    cols = {
        "carbonmonoxide_total_column": np.where(fill, np.nan, col),
        "carbonmonoxide_total_column_precision": np.where(fill, np.nan, 0.0015 + 0 * col),
        "carbonmonoxide_total_column_corrected": np.where(fill, np.nan, col - stripes),
    }
    ak = np.linspace(0.8, 1.2, 50, dtype="f4")[None, None, :] * np.full(shape + (1,), 6000.0, "f4")
    start = t_anchor - np.timedelta64(52 * 60 + 13, "s")
    name = s5p_filename("CO", start.astype("datetime64[s]"), (start + np.timedelta64(6070, "s")).astype("datetime64[s]"),
                        orbit, "020500", np.datetime64("2023-07-17T04:12:40"))
    path = write_s5p_l2(
        outdir / name, "CO", lat=sw.lat, lon=sw.lon, lat_bounds=sw.lat_bounds, lon_bounds=sw.lon_bounds,
        scanline_time=times, columns=cols, qa_value=qa, orbit=orbit,
        surface_classification=np.zeros(shape, "u1"), averaging_kernel=ak,
    )
    info = {"file": path.name, "product": "S5P L2 CO", "reader": "s5p_co", "species": "xco", "orbit": orbit,
            "shape": list(shape), "n_valid_default_qa": int((~fill).sum()), "planted_signal": "none"}
    return path, info


def _plume_enhancement(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """XCO2 enhancement (ppm) of the planted plume: Gaussian across the plume axis, downwind only."""
    e, n = lonlat_to_km(lon, lat, CO2_PLUME["source_lon"], CO2_PLUME["source_lat"])
    b = np.radians(CO2_PLUME["plume_bearing_deg"])
    along = e * np.sin(b) + n * np.cos(b)
    across = e * np.cos(b) - n * np.sin(b)
    prof = CO2_PLUME["amplitude"] * np.exp(-(across**2) / (2 * CO2_PLUME["sigma_km"] ** 2))
    return np.where(along > 2.0, prof, 0.0)


def _oco2(outdir: Path, seed: int) -> tuple[Path, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    n_frames = 520
    tr = oco2_track(CO2_PLUME["lon"], CO2_PLUME["lat"], n_frames=n_frames, frame0=240.0)
    n = tr.lon.size
    t_cross = _t("06:10:07.000")
    time = t_cross + np.rint((tr.frame - 240.0) * 333.0).astype("timedelta64[ms]")
    truth = 418.6 + 0.04 * (tr.lat - 40.0) + 0.6 * (smooth_noise((n_frames, 8), rng, 12.0).ravel() - 0.5)
    truth = truth + _plume_enhancement(tr.lon, tr.lat)
    xco2 = truth + rng.normal(0.0, 0.6, n)
    unc = 0.45 + 0.2 * rng.random(n)
    e, nn = lonlat_to_km(tr.lon, tr.lat, CO2_PLUME["lon"], CO2_PLUME["lat"])
    near = np.hypot(e, nn) < 30.0
    clouds = (np.repeat(smooth_noise((n_frames,), rng, 8.0), 8) > 0.6) & ~near
    qf = np.where(clouds | (rng.random(n) < 0.08) & ~near, 1, 0).astype("i1")
    tt = time.astype("datetime64[ms]").astype(object)
    sid = np.array([int(f"{d:%Y%m%d%H%M%S}{d.microsecond // 100000}{fp}") for d, fp in zip(tt, tr.footprint, strict=True)],
                   dtype="i8")
    name = "oco2_LtCO2_230715_B11100Ar_230802141516s.nc4"
    path = write_lite(
        outdir / name, "OCO-2", sounding_id=sid, time=time, lat=tr.lat, lon=tr.lon, xco2=xco2,
        xco2_uncertainty=unc, quality_flag=qf, vertex_lat=tr.vertex_lat, vertex_lon=tr.vertex_lon,
        footprint=tr.footprint, operation_mode=np.zeros(n, "i1"), orbit=np.full(n, 47962, "i4"),
        land_fraction=np.full(n, 100.0), psurf=880.0 + 10 * rng.random(n),
    )
    info = {"file": path.name, "product": "OCO-2 L2 Lite", "reader": "oco2_lite", "species": "xco2",
            "n_soundings": int(n), "n_valid_default_qa": int((qf == 0).sum()),
            "planted_signal": "xco2 enhancement (see planted_signals)"}
    return path, info


def _gosat_cci(outdir: Path, seed: int) -> tuple[Path, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    lons, lats = np.meshgrid(np.arange(100.5, 125.0, 1.6), np.arange(32.3, 46.0, 1.35))
    lon = (lons + rng.normal(0, 0.08, lons.shape)).ravel().astype("f4")
    lat = (lats + rng.normal(0, 0.08, lats.shape)).ravel().astype("f4")
    n = lon.size
    time = _t("04:30:00.000") + np.rint((125.0 - lon) / 25.0 * 3.0 * 3600e3).astype("timedelta64[ms]")
    xch4 = (1912.0 + 0.3 * (lat - 39.0) + rng.normal(0, 12.0, n)).astype("f4")
    unc = (11.0 + 4 * rng.random(n)).astype("f4")
    qf = (rng.random(n) < 0.45).astype("i1")
    bad = np.flatnonzero(qf == 1)[:2]
    xch4[bad] = np.nan
    unc[bad] = np.nan
    order = np.argsort(time)
    day = str(DAY).replace("-", "")
    name = f"ESACCI-GHG-L2-CH4-GOSAT-OCPR-{day}-fv9.0.nc"
    path = write_esacci_ch4(outdir / name, lat=lat[order], lon=lon[order], time=time[order], xch4=xch4[order],
                            xch4_uncertainty=unc[order], quality_flag=qf[order], day=day)
    info = {"file": path.name, "product": "ESA CCI GHG L2 CH4 (GOSAT OCPR)", "reader": "esacci_ghg_l2",
            "species": "xch4", "n_soundings": int(n), "n_valid_default_qa": int((qf == 0).sum()),
            "planted_signal": "none"}
    return path, info


#: Forest crop (Yuyang District, Yulin): west, north, columns, rows at 0.00025 degree.
FOREST_CROP = {"west": 109.60, "north": 38.45, "width": 1000, "height": 800, "res": 0.00025}


def _hansen(outdir: Path, seed: int) -> tuple[list[Path], dict[str, Any]]:
    from skimage.measure import label

    rng = np.random.default_rng(seed)
    h, w = FOREST_CROP["height"], FOREST_CROP["width"]
    base = smooth_noise((h, w), rng, 18.0)
    detail = smooth_noise((h, w), rng, 3.0)
    cover = np.clip((base - 0.52) * 420 + (detail - 0.5) * 30, 0, 96)
    sparse = np.clip((detail - 0.35) * 40, 0, 18)
    treecover = np.where(cover > 10, cover, sparse).round().astype("u1")
    forest = treecover >= 30
    lossmask = (smooth_noise((h, w), rng, 5.0) > 0.72) & forest
    patches = label(lossmask, connectivity=2)
    years = rng.integers(1, 24, patches.max() + 1)
    lossyear = np.where(lossmask, years[patches], 0).astype("u1")
    common = {"west": FOREST_CROP["west"], "north": FOREST_CROP["north"], "res": FOREST_CROP["res"]}
    tc = write_hansen_tif(outdir / "Hansen_GFC-2023-v1.11_treecover2000_40N_100E.yuyang-crop.tif", treecover,
                          description="Hansen_GFC-2023-v1.11_treecover2000_40N_100E", **common)
    ly = write_hansen_tif(outdir / "Hansen_GFC-2023-v1.11_lossyear_40N_100E.yuyang-crop.tif", lossyear,
                          description="Hansen_GFC-2023-v1.11_lossyear_40N_100E", **common)
    # GFW-style gross emissions from loss (Mg CO2e per pixel, Harris et al. 2021 layout): above-ground
    # biomass ~ 25-55 t d.m./ha for these shelterbelts, x (1 + R 0.4) x CF 0.47 x 44/12, times the
    # pixel's ellipsoidal area; NaN where no loss, as in the real layer
    lat = FOREST_CROP["north"] - (np.arange(h) + 0.5) * FOREST_CROP["res"]
    px_ha = (FOREST_CROP["res"] * 111_320.0 * np.cos(np.radians(lat)) * FOREST_CROP["res"] * 110_950.0 / 1e4)[:, None]
    agb = 25.0 + 30.0 * smooth_noise((h, w), rng, 6.0)
    emissions = np.where(lossyear > 0, agb * 1.4 * 0.47 * 44.0 / 12.0 * px_ha, np.nan).astype("f4")
    em = write_hansen_tif(outdir / "gfw_forest_carbon_gross_emissions_Mg_CO2e_px_40N_100E.yuyang-crop.tif",
                          emissions, description="gfw_forest_carbon_gross_emissions_Mg_CO2e_px", nodata=float("nan"),
                          **common)
    info = {"files": [tc.name, ly.name, em.name],
            "product": "Hansen GFC v1.11 style treecover2000 / lossyear; GFW style gross emissions (Mg CO2e/pixel)",
            "extent": [FOREST_CROP["west"], FOREST_CROP["north"] - h * FOREST_CROP["res"],
                       FOREST_CROP["west"] + w * FOREST_CROP["res"], FOREST_CROP["north"]],
            "pixels_ge_30pct": int(forest.sum()), "loss_pixels": int(lossmask.sum()),
            "emissions_Mg_CO2e": round(float(np.nansum(emissions)), 3)}
    return [tc, ly, em], info


def _feature(fid: str, name: str, kind: str, ring: list[tuple[float, float]]) -> dict[str, Any]:
    ring = list(ring)
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return {"type": "Feature", "id": fid,
            "properties": {"id": fid, "name": name, "kind": kind, "approximate": True, "synthetic": True},
            "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}}


REGIONS: list[dict[str, Any]] = [
    _feature("shanxi", "Shanxi (approximate outline)", "province", [
        (110.25, 34.60), (111.10, 34.75), (112.00, 35.05), (113.00, 35.20), (114.30, 36.00), (114.00, 37.00),
        (113.70, 38.00), (114.50, 39.20), (113.90, 40.20), (112.30, 40.60), (111.30, 40.00), (111.10, 39.00),
        (110.50, 38.10), (110.60, 37.00), (110.30, 36.00)]),
    _feature("shaanxi", "Shaanxi (approximate outline)", "province", [
        (105.50, 32.70), (108.00, 32.10), (110.00, 31.70), (111.20, 33.00), (110.40, 34.60), (110.30, 36.00),
        (110.60, 37.00), (110.50, 38.10), (111.10, 39.00), (111.20, 39.50), (110.50, 39.60), (109.50, 39.20),
        (108.50, 38.60), (107.50, 37.70), (107.00, 37.00), (106.80, 35.80), (106.40, 35.00), (106.30, 34.00)]),
    _feature("inner_mongolia_sc", "Inner Mongolia, south-central part (approximate outline)", "province", [
        (106.50, 39.00), (107.50, 37.80), (108.50, 38.60), (109.50, 39.20), (110.50, 39.60), (111.20, 39.50),
        (111.30, 40.00), (112.30, 40.60), (113.90, 40.20), (115.50, 41.50), (116.50, 42.50), (117.50, 43.50),
        (116.00, 45.00), (112.00, 44.50), (108.00, 42.50), (106.00, 42.00), (105.00, 41.00)]),
    _feature("yuyang", "Yuyang District, Yulin (approximate outline)", "district", [
        (108.97, 38.05), (109.30, 37.85), (109.80, 37.90), (110.20, 38.10), (110.40, 38.50), (110.20, 38.90),
        (109.70, 38.95), (109.30, 38.80), (109.00, 38.50)]),
    _feature("yuyang_forest_aoi", "Yuyang shelterbelt forest area of interest", "aoi", [
        (109.630, 38.280), (109.800, 38.270), (109.830, 38.360), (109.780, 38.430), (109.660, 38.420),
        (109.620, 38.350)]),
]


def _manifest_md(manifest: dict[str, Any]) -> str:
    lines = ["# Sample scenes (synthetic)", "",
             f"Made by `eo-pipeline make-samples` (eo_pipeline {manifest['generator_version']}, seed "
             f"{manifest['seed']}). Every file is SYNTHETIC, in the layout of the real product, and says so "
             "in its attributes. Do not edit by hand: re-run the command.", "",
             "## Files", "", "| file | product | reader | notes |", "|---|---|---|---|"]
    for f in manifest["files"]:
        names = f.get("files") or [f["file"]]
        note = ", ".join(f"{k}={v}" for k, v in f.items() if k not in ("file", "files", "product", "reader"))
        for nm in names:
            lines.append(f"| `{nm}` | {f['product']} | {f.get('reader', '-')} | {note} |")
    lines += ["", "## Planted signals", "", "| species | place | lon | lat | amplitude | size | in file |",
              "|---|---|---|---|---|---|---|"]
    for s in manifest["planted_signals"]:
        lines.append(f"| {s['species']} | {s['place']} | {s['lon']} | {s['lat']} | {s['amplitude']} {s['units']} "
                     f"| sigma {s['sigma_km']} km ({s['shape']}) | `{s['file']}` |")
    lines += ["", "Scenes without a planted signal: " + ", ".join(f"`{f}`" for f in manifest["no_signal_files"]) + ".",
              "", "`regions_north_china.geojson` holds approximate outlines (EPSG:4326) of Shanxi, Shaanxi, the "
              "south-central part of Inner Mongolia, Yuyang District and the forest AOI inside the Hansen-style crop.",
              ""]
    return "\n".join(lines)


#: Strength of the planted CH4 enhancement on successive days of :func:`make_daily_orbits` (x amplitude).
DAILY_PLUME_SCALE = (1.0, 0.5, 1.5, 0.75, 1.25, 0.25, 2.0)


def make_daily_orbits(outdir: str | Path, days: int = 3, first_day: int = 0) -> list[Path]:
    """Write one small synthetic S5P CH4 orbit per day, from ``DAY + first_day`` on; returns the paths.

    The orbits cross the planted CH4 enhancement (:data:`CH4_PLUME`) at the same local
    time each day (orbit numbers 14 apart, as TROPOMI's); its amplitude changes from day
    to day by :data:`DAILY_PLUME_SCALE`, so a time series at the plume shows it. For
    batch runs, resumable reruns and catalogue examples; deterministic.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in range(first_day, first_day + days):
        shift = np.timedelta64(d, "D")
        path, _ = _s5p_orbit(out, orbit=29781 + 14 * d, nadir_lon=118.5, t_anchor=_t("05:36:20.000") + shift,
                             seed=SEED + 100 + d, plume=True, destriped=False,
                             plume_scale=DAILY_PLUME_SCALE[d % len(DAILY_PLUME_SCALE)],
                             processed=np.datetime64("2023-07-17T05:30:12") + shift)
        paths.append(path)
    return paths


def make_samples(outdir: str | Path = "sample_scenes") -> dict[str, Any]:
    """Write every sample scene into ``outdir`` and return the manifest.

    Deterministic: the same version writes the same values every time.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    p_a, info_a = _s5p_orbit(out, orbit=29781, nadir_lon=118.5, t_anchor=_t("05:36:20.000"), seed=SEED + 1,
                             plume=True, destriped=False)
    p_b, info_b = _s5p_orbit(out, orbit=29782, nadir_lon=93.2, t_anchor=_t("07:17:31.000"), seed=SEED + 2,
                             plume=False, destriped=True)
    p_co, info_co = _s5p_co(out, orbit=29781, nadir_lon=118.5, t_anchor=_t("05:36:20.000"), seed=SEED + 3)
    p_oco, info_oco = _oco2(out, SEED + 4)
    p_cci, info_cci = _gosat_cci(out, SEED + 5)
    _, info_forest = _hansen(out, SEED + 6)
    files += [info_a, info_b, info_co, info_oco, info_cci, info_forest]
    regions_path = out / "regions_north_china.geojson"
    regions_path.write_text(json.dumps({"type": "FeatureCollection", "name": "regions_north_china",
                                        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
                                        "features": REGIONS}, indent=1) + "\n")
    manifest = {
        "generator": "eo-pipeline make-samples",
        "generator_version": __version__,
        "seed": SEED,
        "day": str(DAY),
        "synthetic": True,
        "files": files,
        "planted_signals": [CH4_PLUME | {"file": p_a.name}, CO2_PLUME | {"file": p_oco.name}],
        "no_signal_files": [p_b.name, p_co.name, p_cci.name],
        "regions": regions_path.name,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (out / "MANIFEST.md").write_text(_manifest_md(manifest))
    return manifest
