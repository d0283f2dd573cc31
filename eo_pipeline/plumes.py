# SPDX-License-Identifier: Apache-2.0
"""Plume masks, integrated mass enhancement and emission rates from CH4 enhancement maps.

Masks
-----
A pixel belongs to a plume candidate where its enhancement exceeds twice its own noise
(:func:`noise_map`: 1.4826 x the median absolute deviation of the map among pixels of
similar albedo factor, never below the filter's uncertainty), or a ``threshold`` in
ppm m given by the user; a candidate is kept if its core reaches twice that (four times
the noise), or more in large scenes so that noise alone makes about one false core in
twenty scenes (:func:`core_factor`; hysteresis, scikit-image
``apply_hysteresis_threshold``), and if it has at least ``min_pixels`` pixels after a
morphological closing (3 x 3) and hole filling; a one-pixel growth (``grow``) makes the
tails just below the threshold count in the IME; connected components (8-neighbourhood,
``skimage.measure.label``) are the plumes.

Integrated mass enhancement and emission rate (Frankenberg et al. 2016, PNAS 113, 9734;
Varon et al. 2018, AMT 11, 5673)
-------------------------------------------------------------------------------------
``IME = k sum_i a_i A_i`` (kg), with ``a_i`` the enhancement in ppm m, ``A_i`` the pixel
area in m2 and ``k = 1e-6 M_CH4 P / (R T)`` the mass of 1 ppm m of CH4 per m2 of ground
at the surface (M_CH4 = 0.01604 kg mol-1, P = 101325 Pa, T = 288.15 K, R = 8.314462618
J mol-1 K-1: k = 6.784e-7 kg m-2 (ppm m)-1; pressure and temperature can be given).
``Q = U_eff IME / L`` with ``L = sqrt(plume area)`` and ``U_eff = a + b U10`` from the
per-sensor calibration table (``configs/plume_calibration.yaml``), in kg s-1, reported
in kg h-1. Uncertainty: ``sigma_IME = k sqrt(sum_i (sigma_i A_i)^2)`` from the per-pixel
noise (:func:`noise_map`), ``sigma_Ueff = b sigma_U10`` from the wind's uncertainty, combined in
quadrature: ``(sigma_Q / Q)^2 = (sigma_IME / IME)^2 + (sigma_Ueff / U_eff)^2``.
"""

from __future__ import annotations

import math
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import ConfigError, ReaderOptionError

__all__ = [
    "find_plumes",
    "noise_map",
    "core_factor",
    "plume_labels",
    "pixel_area_m2",
    "load_calibration",
    "mass_per_ppm_m",
    "M_CH4",
    "R_GAS",
]

M_CH4 = 0.01604  # kg mol-1
R_GAS = 8.314462618  # J mol-1 K-1
SURFACE_PRESSURE_PA = 101325.0
SURFACE_TEMPERATURE_K = 288.15
#: Default 1-sigma uncertainty of the wind speed given by the user, as a fraction of it
#: (50 %, the order of reanalysis 10 m wind errors at plume scale, Varon et al. 2018).
WIND_RELATIVE_UNCERTAINTY = 0.5


def mass_per_ppm_m(pressure_pa: float = SURFACE_PRESSURE_PA, temperature_k: float = SURFACE_TEMPERATURE_K) -> float:
    """Mass of CH4 per m2 of ground for 1 ppm m of enhancement, kg m-2 (ppm m)-1."""
    return 1e-6 * M_CH4 * pressure_pa / (R_GAS * temperature_k)


# ------------------------------------------------------------------ calibration
def _calibration_text(path: str | os.PathLike[str] | None) -> tuple[str, str]:
    if path is not None:
        p = Path(path)
        try:
            return p.read_text(), str(p)
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the plume calibration table ({exc.strerror or exc})") from None
    res = resources.files("eo_pipeline") / "data" / "plume_calibration.yaml"
    return res.read_text(), "eo_pipeline/data/plume_calibration.yaml"


@cache
def _load_calibration(path: str | None) -> dict[str, dict[str, Any]]:
    import yaml

    text, where = _calibration_text(path)
    try:
        data = yaml.safe_load(text) or {}
        table = {str(k).upper(): dict(v) for k, v in data.get("sensors", {}).items()}
        for row in table.values():
            row["a"], row["b"] = float(row["a"]), float(row["b"])
    except (yaml.YAMLError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{where}: not a plume calibration table (sensors: NAME: {{a:, b:}}): {exc}") from None
    return table


def load_calibration(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Sensor (upper case) -> ``{"a": m s-1, "b": 1, "reference": str}`` of ``U_eff = a + b U10``."""
    return _load_calibration(None if path is None else str(path))


# ------------------------------------------------------------------ geometry
def pixel_area_m2(ds: xr.Dataset | xr.DataArray) -> np.ndarray:
    """Ground area of every pixel, m2, shape (line, sample).

    Orthorectified maps: from the ``x``/``y`` cell sizes (projected CRS units squared, or
    the ellipsoidal area of each lon/lat cell); sensor geometry: from the distances
    between neighbouring pixel centres in ``lon``/``lat`` (local tangent plane).
    """
    shape = (ds.sizes["line"], ds.sizes["sample"])
    if "x" in ds.coords and "y" in ds.coords and "spatial_ref" in ds.coords:
        from pyproj import CRS

        from .grid import ellipsoidal_band_area

        x, y = np.asarray(ds["x"].values, float), np.asarray(ds["y"].values, float)
        dx = abs(float(np.median(np.diff(x)))) if x.size > 1 else float("nan")
        dy = abs(float(np.median(np.diff(y)))) if y.size > 1 else dx
        dx = dy if not math.isfinite(dx) else dx
        crs = CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"])
        if crs.is_geographic:
            ell = crs.ellipsoid
            f = 1.0 / ell.inverse_flattening if ell.inverse_flattening else 0.0
            band = ellipsoidal_band_area(np.clip(y - dy / 2, -90, 90), np.clip(y + dy / 2, -90, 90),
                                         ell.semi_major_metre, f)
            return np.broadcast_to((np.abs(band) * dx / 360.0)[:, None], shape).copy()
        return np.full(shape, dx * dy)
    if "lon" in ds.coords and "lat" in ds.coords:
        lon, lat = np.asarray(ds["lon"].values, float), np.asarray(ds["lat"].values, float)
        r = 6371008.8
        coslat = np.cos(np.radians(lat))

        def step(axis: int) -> np.ndarray:
            dlon = np.gradient(lon, axis=axis) if lon.shape[axis] > 1 else np.full(lon.shape, np.nan)
            dlat = np.gradient(lat, axis=axis) if lat.shape[axis] > 1 else np.full(lat.shape, np.nan)
            return r * np.radians(np.hypot(dlon * coslat, dlat))

        da_, db_ = step(0), step(1)
        area = da_ * db_
        return np.where(np.isfinite(area), area, np.nanmedian(area))
    raise ReaderOptionError("the enhancement map has neither x/y with a CRS nor lon/lat: pixel areas unknown; "
                            "give pixel_area_m2=...")


def _to_lonlat(ds: xr.Dataset | xr.DataArray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat of fractional pixel positions (row, col of pixel centres = integers)."""
    rows, cols = np.asarray(rows, float), np.asarray(cols, float)
    if "x" in ds.coords and "spatial_ref" in ds.coords:
        from pyproj import CRS, Transformer

        x, y = np.asarray(ds["x"].values, float), np.asarray(ds["y"].values, float)
        xs = np.interp(cols, np.arange(x.size), x, left=None, right=None) if x.size > 1 else np.full(cols.shape, x[0])
        ys = np.interp(rows, np.arange(y.size), y) if y.size > 1 else np.full(rows.shape, y[0])
        if x.size > 1:  # extrapolate linearly beyond the centres (outlines reach the pixel edges)
            xs = x[0] + (x[-1] - x[0]) / (x.size - 1) * cols
        if y.size > 1:
            ys = y[0] + (y[-1] - y[0]) / (y.size - 1) * rows
        crs = CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"])
        if crs.is_geographic:
            return xs, ys
        t = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        return t.transform(xs, ys)
    if "lon" in ds.coords:
        from scipy.ndimage import map_coordinates

        lon, lat = np.asarray(ds["lon"].values, float), np.asarray(ds["lat"].values, float)
        coords = np.vstack([rows, cols])
        return (map_coordinates(lon, coords, order=1, mode="nearest"),
                map_coordinates(lat, coords, order=1, mode="nearest"))
    n = np.full(rows.shape, np.nan)
    return n, n


# ------------------------------------------------------------------ masks
def noise_map(enhancement: np.ndarray, albedo: np.ndarray | None = None, *, min_pixels: int = 200,
              max_bins: int = 10) -> np.ndarray:
    """Each pixel's 1-sigma noise, ppm m, measured from the map itself (a pure kernel).

    The matched filter's noise changes with the brightness of the ground (bright pixels
    carry more scene clutter in absolute terms): pixels are grouped by their albedo factor
    into quantile bins of at least ``min_pixels`` (at most ``max_bins`` bins), and each bin's
    noise is 1.4826 x its median absolute deviation (robust to the few plume pixels in
    it). Without an albedo factor, one value for the whole map.
    """
    e = np.asarray(enhancement, dtype=np.float64)
    out = np.full(e.shape, np.nan)
    finite = np.isfinite(e)
    if not finite.any():
        return out

    def mad(v: np.ndarray) -> float:
        return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else float("nan")

    if albedo is None:
        out[finite] = mad(e[finite])
        return out
    r = np.asarray(albedo, dtype=np.float64)
    ok = finite & np.isfinite(r)
    nbins = int(max(1, min(max_bins, ok.sum() // max(1, min_pixels))))
    edges = np.quantile(r[ok], np.linspace(0.0, 1.0, nbins + 1))
    which = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, nbins - 1)
    for b in range(nbins):
        sel = ok & (which == b)
        out[sel] = mad(e[sel])
    out[finite & ~ok] = mad(e[ok]) if ok.any() else mad(e[finite])
    return out


def core_factor(n_pixels: int, false_alarms: float = 0.05) -> float:
    """How many times the extent threshold a plume's core must reach, for a map of ``n_pixels``.

    2 (a core at four times the noise for the default extent of twice the noise), or more
    in large scenes: the core's significance ``z`` is chosen so that white noise exceeds
    it in ``false_alarms`` pixels per scene on average, ``z = Phi^-1(1 - false_alarms / n)``
    (about 4 for an AVIRIS-NG crop, 5.4 for a 1280 x 1242 EMIT scene).
    """
    from scipy.stats import norm

    z = float(norm.isf(false_alarms / max(1, int(n_pixels))))
    return max(2.0, z / 2.0)


def plume_labels(enhancement: np.ndarray, threshold: float, *, min_pixels: int = 5, grow: int = 1,
                 core: float = 2.0) -> np.ndarray:
    """Label image of the plumes (0 = background, 1..n), a pure kernel.

    Pixels above ``threshold`` connected to a pixel above ``core x threshold`` (hysteresis),
    closed with a 3 x 3 square, holes filled, components of fewer than ``min_pixels``
    pixels dropped, grown by ``grow`` pixels (so that the tails below the threshold count
    in the IME), labelled with 8-connectivity (scikit-image).
    """
    from scipy import ndimage
    from skimage import filters, measure

    e = np.where(np.isfinite(enhancement), enhancement, -np.inf)
    if not np.isfinite(threshold) or threshold <= 0:
        raise ReaderOptionError(f"plume threshold must be > 0 ppm m, got {threshold}")
    mask = filters.apply_hysteresis_threshold(e, threshold, core * threshold)
    square = np.ones((3, 3), bool)
    if mask.any():
        mask = ndimage.binary_closing(mask, square, border_value=0) | mask
    mask = ndimage.binary_fill_holes(mask)
    labels = measure.label(mask, connectivity=2)
    if labels.max() > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_pixels
        small[0] = False
        labels[small[labels]] = 0
    mask = labels > 0
    if grow > 0 and mask.any():
        mask = ndimage.binary_dilation(mask, square, iterations=grow)
    mask &= np.isfinite(enhancement)
    labels = measure.label(mask, connectivity=2)
    return labels.astype(np.int32)


def _outline(labels: np.ndarray, i: int, ds: Any) -> Any:
    import rasterio.features
    from affine import Affine
    from shapely.geometry import Polygon, shape
    from shapely.ops import unary_union

    polys = [shape(g) for g, v in rasterio.features.shapes((labels == i).astype(np.uint8), mask=labels == i,
                                                           connectivity=8, transform=Affine.identity()) if v == 1]
    geom = unary_union(polys)
    out = []
    for poly in getattr(geom, "geoms", [geom]):
        ring = np.asarray(poly.exterior.coords)
        lon, lat = _to_lonlat(ds, ring[:, 1] - 0.5, ring[:, 0] - 0.5)
        out.append(Polygon(np.column_stack([lon, lat])))
    return unary_union(out) if len(out) > 1 else out[0]


# ------------------------------------------------------------------ the table
def find_plumes(
    enhancement: xr.DataArray | xr.Dataset,
    *,
    threshold: float | None = None,
    wind_speed: float | None = None,
    sensor: str | None = None,
    wind_speed_uncertainty: float | None = None,
    uncertainty: xr.DataArray | None = None,
    min_pixels: int = 5,
    ueff: tuple[float, float] | None = None,
    calibration: str | os.PathLike[str] | None = None,
    surface_pressure_pa: float = SURFACE_PRESSURE_PA,
    surface_temperature_k: float = SURFACE_TEMPERATURE_K,
    return_labels: bool = False,
    variable: str = "ch4_enhancement",
) -> Any:
    """Plumes of a CH4 enhancement map with their IME and emission rates.

    Parameters
    ----------
    enhancement : xarray.DataArray or Dataset
        ``ch4_enhancement`` in ppm m on (line, sample) (a Dataset from
        :func:`eo_pipeline.ch4_matched_filter` also gives its uncertainty), with ``x``/``y``
        and ``spatial_ref`` (orthorectified) or ``lon``/``lat`` coordinates.
    threshold : float, optional
        Mask threshold, ppm m (default: twice each pixel's noise, :func:`noise_map`).
    wind_speed : float, optional
        10 m wind speed U10, m s-1; without it the emission rate is NaN.
    sensor : str, optional
        Calibration row of ``U_eff = a + b U10`` (EMIT, EnMAP, PRISMA, ...; default the
        map's ``instrument`` attribute, set by the readers).
    wind_speed_uncertainty : float, optional
        1-sigma of U10, m s-1 (default 50 % of it).
    uncertainty : xarray.DataArray, optional
        Per-pixel 1-sigma of the enhancement, ppm m.
    min_pixels : int
        Smallest plume, pixels.
    ueff : (float, float), optional
        ``(a, b)`` of ``U_eff = a + b U10`` instead of the table's.
    calibration : path, optional
        Another calibration table (same layout as ``configs/plume_calibration.yaml``).
    surface_pressure_pa, surface_temperature_k : float
        Surface conditions of the ppm m -> kg m-2 conversion.
    return_labels : bool
        Also return the label image (0 background, plume ids 1..n).
    variable : str
        With a Dataset: which enhancement to use (``ch4_enhancement``, or
        ``ch4_enhancement_albedo_corrected``, what ``eo-pipeline plumes`` uses); its
        uncertainty is ``<variable>_uncertainty``.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per plume (EPSG:4326 outlines): ``plume_id``, ``lon``/``lat`` (centroid),
        ``max_lon``/``max_lat``, ``pixels``, ``area_m2``, ``length_m``,
        ``max_ppm_m``, ``mean_ppm_m``, ``ime_kg``, ``ime_uncertainty_kg``,
        ``wind_speed_m_s``, ``wind_speed_uncertainty_m_s``, ``ueff_m_s``,
        ``emission_kg_h``, ``emission_uncertainty_kg_h``, ``sensor``, ``threshold_ppm_m``,
        ``enhancement`` (the variable used);
        with ``return_labels``, ``(table, labels)``.
    """
    import geopandas as gpd

    instrument = enhancement.attrs.get("instrument")
    albedo = None
    if isinstance(enhancement, xr.Dataset):
        ds = enhancement
        albedo = ds["albedo_factor"] if "albedo_factor" in ds else None
        if variable not in ds:
            raise ReaderOptionError(f"the dataset has no {variable!r}; it has {', '.join(map(str, ds.data_vars))}")
        if uncertainty is None and f"{variable}_uncertainty" in ds:
            uncertainty = ds[f"{variable}_uncertainty"]
        enhancement = ds[variable]
        instrument = enhancement.attrs.get("instrument", instrument)
    e = np.asarray(enhancement.values, dtype=np.float64)
    sig = None if uncertainty is None else np.asarray(uncertainty.values, dtype=np.float64)
    # the noise as the map shows it (per albedo bin); never below the filter's own estimate
    noise_px = noise_map(e, None if albedo is None else np.asarray(albedo.values, dtype=np.float64))
    if sig is not None:
        noise_px = np.fmax(noise_px, sig)
    noise = float(np.nanmedian(noise_px)) if np.isfinite(noise_px).any() else float("nan")
    if threshold is None:  # significance: twice each pixel's noise (hysteresis to four times)
        with np.errstate(invalid="ignore", divide="ignore"):
            labels = plume_labels(e / noise_px, 2.0, min_pixels=min_pixels,
                                  core=core_factor(int(np.isfinite(e).sum())))
        threshold = 2.0 * noise
    else:
        labels = plume_labels(e, float(threshold), min_pixels=min_pixels)
    area = pixel_area_m2(enhancement)
    k = mass_per_ppm_m(surface_pressure_pa, surface_temperature_k)
    sensor_name = sensor or instrument
    a_b: tuple[float, float] | None = None
    if ueff is not None:
        a_b = (float(ueff[0]), float(ueff[1]))
    elif wind_speed is not None:
        table = load_calibration(calibration)
        key = (sensor_name or "").upper()
        if key not in table:
            raise ConfigError(f"no U_eff calibration for sensor {sensor_name!r}; known: {', '.join(sorted(table))}; "
                              "give sensor=/--sensor, ueff=(a, b) or add it to the calibration table")
        a_b = (table[key]["a"], table[key]["b"])
    if wind_speed is not None and wind_speed_uncertainty is None:
        wind_speed_uncertainty = WIND_RELATIVE_UNCERTAINTY * float(wind_speed)
    rows_out = []
    geoms = []
    for i in range(1, int(labels.max()) + 1):
        sel = labels == i
        vals = np.where(np.isfinite(e[sel]), e[sel], 0.0)
        a_pix = area[sel]
        ime = k * float(np.sum(vals * a_pix))
        sig_pix = np.where(np.isfinite(noise_px[sel]), noise_px[sel], noise)
        ime_sig = k * float(np.sqrt(np.nansum((sig_pix * a_pix) ** 2)))
        plume_area = float(a_pix.sum())
        length = math.sqrt(plume_area)
        rr, cc = np.nonzero(sel)
        lon, lat = _to_lonlat(enhancement, np.array([rr.mean()]), np.array([cc.mean()]))
        imax = int(np.nanargmax(np.where(sel, e, -np.inf)))
        mr, mc = np.unravel_index(imax, e.shape)
        mlon, mlat = _to_lonlat(enhancement, np.array([mr]), np.array([mc]))
        q = qs = ue = float("nan")
        if wind_speed is not None and a_b is not None:
            ue = a_b[0] + a_b[1] * float(wind_speed)
            q = ue * ime / length * 3600.0
            rel_ime = ime_sig / ime if ime > 0 else float("inf")
            rel_u = a_b[1] * float(wind_speed_uncertainty) / ue if ue > 0 else float("inf")
            qs = abs(q) * math.hypot(rel_ime, rel_u)
        rows_out.append({
            "plume_id": i, "lon": float(lon[0]), "lat": float(lat[0]), "max_lon": float(mlon[0]),
            "max_lat": float(mlat[0]), "line": int(mr), "sample": int(mc), "pixels": int(sel.sum()),
            "area_m2": plume_area, "length_m": length, "max_ppm_m": float(np.nanmax(e[sel])),
            "mean_ppm_m": float(np.nanmean(e[sel])), "ime_kg": ime, "ime_uncertainty_kg": ime_sig,
            "wind_speed_m_s": float("nan") if wind_speed is None else float(wind_speed),
            "wind_speed_uncertainty_m_s": float("nan") if wind_speed_uncertainty is None
            else float(wind_speed_uncertainty),
            "ueff_m_s": ue, "emission_kg_h": q, "emission_uncertainty_kg_h": qs,
            "sensor": sensor_name or "", "threshold_ppm_m": float(threshold), "enhancement": str(enhancement.name),
        })
        geoms.append(_outline(labels, i, enhancement))
    columns = ["plume_id", "lon", "lat", "max_lon", "max_lat", "line", "sample", "pixels", "area_m2", "length_m",
               "max_ppm_m", "mean_ppm_m", "ime_kg", "ime_uncertainty_kg", "wind_speed_m_s",
               "wind_speed_uncertainty_m_s", "ueff_m_s", "emission_kg_h", "emission_uncertainty_kg_h", "sensor",
               "threshold_ppm_m", "enhancement"]
    import pandas as pd

    frame = pd.DataFrame(rows_out, columns=columns)
    gdf = gpd.GeoDataFrame(frame, geometry=geoms if geoms else gpd.GeoSeries([], crs="EPSG:4326"), crs="EPSG:4326")
    gdf.attrs.update({"noise_ppm_m": noise, "kg_per_m2_per_ppm_m": k, "ueff_a_b": a_b})
    return (gdf, labels) if return_labels else gdf
