# SPDX-License-Identifier: Apache-2.0
"""Plume masks, integrated mass enhancement and emission rates from CH4 enhancement maps.

Masks
-----
A pixel belongs to a plume candidate where its enhancement exceeds the ``threshold``
(ppm m; default twice the scene's noise, the median of ``ch4_enhancement_uncertainty``
or, without it, 1.4826 x the median absolute deviation); a candidate is kept if it
reaches twice the threshold somewhere (hysteresis, scikit-image
``apply_hysteresis_threshold``) and has at least ``min_pixels`` pixels after a
morphological closing (3 x 3), hole filling and a one-pixel growth (``grow``, so that the
tails just below the threshold count in the IME); connected components (8-neighbourhood,
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
retrieval noise, ``sigma_Ueff = b sigma_U10`` from the wind's uncertainty, combined in
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
def noise_level(enhancement: np.ndarray, uncertainty: np.ndarray | None = None) -> float:
    """The scene's 1-sigma noise, ppm m: median uncertainty, else 1.4826 x MAD."""
    if uncertainty is not None and np.isfinite(uncertainty).any():
        return float(np.nanmedian(uncertainty))
    finite = enhancement[np.isfinite(enhancement)]
    if finite.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(finite - np.median(finite))))


def plume_labels(enhancement: np.ndarray, threshold: float, *, min_pixels: int = 5, grow: int = 1) -> np.ndarray:
    """Label image of the plumes (0 = background, 1..n), a pure kernel.

    Pixels above ``threshold`` connected to a pixel above ``2 threshold`` (hysteresis),
    closed with a 3 x 3 square, holes filled, components of fewer than ``min_pixels``
    pixels dropped, grown by ``grow`` pixels (so that the tails below the threshold count
    in the IME), labelled with 8-connectivity (scikit-image).
    """
    from scipy import ndimage
    from skimage import filters, measure

    e = np.where(np.isfinite(enhancement), enhancement, -np.inf)
    if not np.isfinite(threshold) or threshold <= 0:
        raise ReaderOptionError(f"plume threshold must be > 0 ppm m, got {threshold}")
    mask = filters.apply_hysteresis_threshold(e, threshold, 2.0 * threshold)
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
        Mask threshold, ppm m (default twice the scene's noise).
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
    if isinstance(enhancement, xr.Dataset):
        ds = enhancement
        if variable not in ds:
            raise ReaderOptionError(f"the dataset has no {variable!r}; it has {', '.join(map(str, ds.data_vars))}")
        if uncertainty is None and f"{variable}_uncertainty" in ds:
            uncertainty = ds[f"{variable}_uncertainty"]
        enhancement = ds[variable]
        instrument = enhancement.attrs.get("instrument", instrument)
    e = np.asarray(enhancement.values, dtype=np.float64)
    sig = None if uncertainty is None else np.asarray(uncertainty.values, dtype=np.float64)
    noise = noise_level(e, sig)
    if threshold is None:
        threshold = 2.0 * noise
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
        sig_pix = sig[sel] if sig is not None else np.full(vals.shape, noise)
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
