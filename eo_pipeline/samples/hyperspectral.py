# SPDX-License-Identifier: Apache-2.0
"""Synthetic EMIT L1B radiance scenes in the documented layout, and plumes planted in cubes.

:func:`write_emit_l1b` writes ``EMIT_L1B_RAD_001_<YYYYMMDDTHHMMSS>_<orbit>_<scene>.nc``
(netCDF-4): ``radiance`` (downtrack, crosstrack, bands) float32 in ``uW/cm^2/SR/nm`` with
``_FillValue`` -9999, ``sensor_band_parameters/wavelengths`` and ``fwhm`` (nm),
``location/lat``, ``lon``, ``elev``, ``glt_x``, ``glt_y`` (1-based, 0 = no data) and the
``geotransform`` and ``spatial_ref`` global attributes. It is marked ``synthetic``.

The radiance is physical enough for the matched filter: the mag1c table's background
spectrum (no enhancement) convolved to EMIT's 285 bands (381-2493 nm, 7.4 nm apart, FWHM
8.5 nm) and a smooth visible/NIR continuum, times a surface reflectance made of a few
materials with different spectral slopes in smooth random patches, plus signal-dependent
Gaussian noise; a plume is planted through Beer-Lambert absorption with the same unit
absorption the filter uses (:func:`plant_plume`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EMIT_WAVELENGTHS", "emit_bands", "gaussian_plume_ppm_m", "plant_plume", "write_emit_l1b"]


def emit_bands() -> tuple[np.ndarray, np.ndarray]:
    """EMIT's 285 band centres (381.0-2493.3 nm) and FWHM (8.5 nm), nm."""
    wave = 381.0 + 7.4107 * np.arange(285)
    return wave, np.full(285, 8.5)


EMIT_WAVELENGTHS = emit_bands()[0]


def gaussian_plume_ppm_m(shape: tuple[int, int], centre: tuple[float, float], peak: float = 3000.0,
                         sigma: float = 3.0) -> np.ndarray:
    """A round Gaussian plume, ppm m, on (line, sample) pixels."""
    yy, xx = np.indices(shape)
    return peak * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2.0 * sigma**2))


def plant_plume(radiance: np.ndarray, wavelength: np.ndarray, fwhm: np.ndarray, enhancement: np.ndarray) -> np.ndarray:
    """Radiance (line, sample, band) seen through an extra CH4 column (ppm m): ``L exp(k a)``."""
    from ..absorption import unit_absorption

    k = unit_absorption(wavelength, fwhm)
    return (radiance * np.exp(k[None, None, :] * enhancement[..., None])).astype(radiance.dtype)


def _base_spectrum(wave: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
    """At-sensor radiance of a 30 % reflector, uW cm-2 sr-1 nm-1 (smooth continuum x table)."""
    from ..absorption import LUT_ENHANCEMENTS_PPM_M, load_absorption_table

    lut_wave, spectra = load_absorption_table()
    base = spectra[int(np.argmin(LUT_ENHANCEMENTS_PPM_M))]
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    out = np.empty(wave.size)
    continuum = 12.0 * np.exp(-((wave - 700.0) / 900.0) ** 2) + 0.5
    for i, (c, s) in enumerate(zip(wave, sigma, strict=True)):
        lo, hi = np.searchsorted(lut_wave, [c - 5 * s, c + 5 * s])
        if hi - lo > 3:
            r = np.exp(-0.5 * ((lut_wave[lo:hi] - c) / s) ** 2)
            out[i] = base[lo:hi] @ (r / r.sum())
        else:
            out[i] = np.nan
    # scale the table's radiance (SWIR) onto the continuum where they meet
    swir = np.isfinite(out)
    first = int(np.argmax(swir))
    out[~swir] = continuum[~swir] * (out[first] / continuum[first])
    # water vapour bands outside the table: dark
    out[(wave > 1340) & (wave < 1450) & ~swir] *= 0.1
    # a 30 % reflector under a 30 degree sun: about 0.6 uW cm-2 sr-1 nm-1 at 2100 nm
    return out * (0.6 / out[int(np.argmin(np.abs(wave - 2100.0)))])


def _smooth(shape: tuple[int, int], rng: np.random.Generator, scale: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), scale, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def synthetic_radiance(lines: int, samples: int, wave: np.ndarray, fwhm: np.ndarray, *, seed: int = 0,
                       shot: float = 4e-6, floor: float = 1e-7) -> np.ndarray:
    """A (lines, samples, bands) float32 radiance cube of mixed surfaces, uW cm-2 sr-1 nm-1.

    Noise: Gaussian with variance ``shot x L + floor`` (a signal-to-noise ratio of about
    400 at 0.6 uW cm-2 sr-1 nm-1, EMIT's order in the SWIR).
    """
    rng = np.random.default_rng(seed)
    base = _base_spectrum(wave, fwhm)
    x = (wave - 1500.0) / 1000.0
    materials = np.stack([1.0 + 0.0 * x, 1.0 + 0.35 * x, 1.0 - 0.3 * x + 0.2 * x**2, 1.0 + 0.15 * np.sin(4 * x)])
    weights = np.stack([np.exp(2.0 * _smooth((lines, samples), rng, 6.0 + 4 * i)) for i in range(4)])
    weights /= weights.sum(axis=0)
    albedo = 0.3 * np.exp(0.35 * _smooth((lines, samples), rng, 3.0))
    out = np.empty((lines, samples, wave.size), dtype=np.float32)
    for r0 in range(0, lines, 128):  # bounded memory for EMIT-sized cubes
        r1 = min(lines, r0 + 128)
        refl = np.einsum("mls,mb->lsb", weights[:, r0:r1], materials) * albedo[r0:r1, :, None] / 0.3
        clean = refl * base[None, None, :]
        sd = np.sqrt(shot * np.maximum(clean, 0.0) + floor)
        out[r0:r1] = (clean + sd * rng.standard_normal(clean.shape)).astype(np.float32)
    return out


def write_emit_l1b(
    outdir: str | Path,
    *,
    lines: int = 160,
    samples: int = 140,
    plume: dict[str, Any] | None = None,
    seed: int = 0,
    start: str = "20230814T193021",
    orbit: str = "2322613",
    scene: str = "007",
    centre_lonlat: tuple[float, float] = (-103.85, 31.95),
    pixel_m: float = 60.0,
    compress: bool = True,
) -> Path:
    """Write a synthetic EMIT L1B radiance file; returns its path.

    Parameters
    ----------
    plume : dict, optional
        ``{"centre": (line, sample), "peak": ppm m, "sigma": pixels}`` planted through
        Beer-Lambert absorption (default no plume).
    pixel_m : float
        Ground pixel size, m (EMIT: about 60 m). The swath is rotated 12 degrees from
        north, as EMIT's ISS orbit tracks are, so the geometry lookup table is not trivial.
    """
    import netCDF4

    from .writers import _synthetic_attrs

    wave, fwhm = emit_bands()
    rad = synthetic_radiance(lines, samples, wave, fwhm, seed=seed)
    if plume is not None:
        enh = gaussian_plume_ppm_m((lines, samples), tuple(plume["centre"]), plume.get("peak", 3000.0),
                                   plume.get("sigma", 3.0))
        rad = plant_plume(rad, wave, fwhm, enh)
    # geolocation: a rotated rectangle of pixel_m pixels around centre_lonlat
    lon0, lat0 = centre_lonlat
    deg_lat = pixel_m / 110574.0
    deg_lon = pixel_m / (111320.0 * np.cos(np.radians(lat0)))
    ang = np.radians(12.0)
    ll, ss = np.indices((lines, samples), dtype=np.float64)
    dl, ds_ = ll - (lines - 1) / 2, ss - (samples - 1) / 2
    east = ds_ * np.cos(ang) + dl * np.sin(ang)
    north = ds_ * np.sin(ang) - dl * np.cos(ang)
    lon = lon0 + east * deg_lon
    lat = lat0 + north * deg_lat
    # orthorectified grid and its lookup table (nearest sensor pixel of each cell centre)
    res_lon, res_lat = deg_lon, deg_lat
    west, north_edge = lon.min() - res_lon, lat.max() + res_lat
    cols = int(np.ceil((lon.max() + res_lon - west) / res_lon))
    rows = int(np.ceil((north_edge - (lat.min() - res_lat)) / res_lat))
    gy, gx = np.indices((rows, cols), dtype=np.float64)
    ce = ((west + (gx + 0.5) * res_lon) - lon0) / deg_lon
    cn = ((north_edge - (gy + 0.5) * res_lat) - lat0) / deg_lat
    s_f = ce * np.cos(ang) + cn * np.sin(ang) + (samples - 1) / 2
    l_f = ce * np.sin(ang) - cn * np.cos(ang) + (lines - 1) / 2
    s_i, l_i = np.rint(s_f).astype(np.int64), np.rint(l_f).astype(np.int64)
    inside = (s_i >= 0) & (s_i < samples) & (l_i >= 0) & (l_i < lines)
    glt_x = np.where(inside, s_i + 1, 0).astype(np.int32)
    glt_y = np.where(inside, l_i + 1, 0).astype(np.int32)

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"EMIT_L1B_RAD_001_{start}_{orbit}_{scene}.nc"
    tmp = path.with_name("." + path.name + ".part")
    from pyproj import CRS

    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.createDimension("downtrack", lines)
        nc.createDimension("crosstrack", samples)
        nc.createDimension("bands", wave.size)
        chunk = (min(lines, 64), samples, wave.size)
        v = nc.createVariable("radiance", "f4", ("downtrack", "crosstrack", "bands"), fill_value=-9999.0,
                              zlib=compress, complevel=1, chunksizes=chunk)
        v.long_name = "Radiance Data"
        v.units = "uW/cm^2/SR/nm"
        for r0 in range(0, lines, chunk[0]):
            v[r0:r0 + chunk[0]] = rad[r0:r0 + chunk[0]]
        sbp = nc.createGroup("sensor_band_parameters")
        w = sbp.createVariable("wavelengths", "f4", ("bands",))
        w.long_name, w.units = "Wavelength Centers", "nm"
        w[:] = wave
        f = sbp.createVariable("fwhm", "f4", ("bands",))
        f.long_name, f.units = "Full Width at Half Max", "nm"
        f[:] = fwhm
        loc = nc.createGroup("location")
        loc.createDimension("ortho_y", rows)
        loc.createDimension("ortho_x", cols)
        for name, data, units in (("lon", lon, "degrees east"), ("lat", lat, "degrees north"),
                                  ("elev", np.full(lon.shape, 850.0), "m")):
            var = loc.createVariable(name, "f8", ("downtrack", "crosstrack"), fill_value=-9999.0)
            var.units = units
            var[:] = data
        for name, data in (("glt_x", glt_x), ("glt_y", glt_y)):
            var = loc.createVariable(name, "i4", ("ortho_y", "ortho_x"), fill_value=0)
            var.long_name = "GLT Sample Lookup" if name == "glt_x" else "GLT Line Lookup"
            var[:] = data
        attrs = _synthetic_attrs({
            "title": "EMIT L1B At-Sensor Calibrated Radiance and Geolocation Data 60 m (synthetic sample)",
            "summary": "synthetic EMIT L1B RAD scene made by eo_pipeline.samples.hyperspectral",
            "time_coverage_start": f"{start[:4]}-{start[4:6]}-{start[6:8]}T"
                                   f"{start[9:11]}:{start[11:13]}:{start[13:15]}Z",
            "geotransform": np.array([west, res_lon, 0.0, north_edge, 0.0, -res_lat]),
            "spatial_ref": CRS.from_epsg(4326).to_wkt(),
            "planted_plume": "none" if plume is None else repr({k: plume[k] for k in sorted(plume)}),
        })
        nc.setncatts(attrs)
    tmp.replace(path)
    return path
