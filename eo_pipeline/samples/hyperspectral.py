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

    def continuum(w: np.ndarray) -> np.ndarray:
        return 12.0 * np.exp(-((w - 700.0) / 900.0) ** 2) + 0.5

    def table_at(c: float, s: float) -> float:
        lo, hi = np.searchsorted(lut_wave, [c - 5 * s, c + 5 * s])
        r = np.exp(-0.5 * ((lut_wave[lo:hi] - c) / s) ** 2)
        return float(base[lo:hi] @ (r / r.sum()))

    out = np.empty(wave.size)
    for i, (c, s) in enumerate(zip(wave, sigma, strict=True)):
        lo, hi = np.searchsorted(lut_wave, [c - 5 * s, c + 5 * s])
        out[i] = table_at(c, s) if hi - lo > 3 and c - 3 * s > lut_wave[0] else np.nan
    # outside the table: the continuum, scaled to meet the table at 1600 nm (a window band)
    swir = np.isfinite(out)
    out[~swir] = continuum(wave[~swir]) * (table_at(1600.0, 4.0) / continuum(np.array([1600.0]))[0])
    # water vapour bands outside the table: dark
    out[(wave > 1340) & (wave < 1450) & ~swir] *= 0.1
    # a 30 % reflector under a 30 degree sun: about 0.6 uW cm-2 sr-1 nm-1 at 2100 nm
    return out * (0.6 / table_at(2100.0, 4.0))


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


def prisma_bands() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """PRISMA's VNIR (66) and SWIR (173) band centres and FWHM, nm, in the file's order (long to short).

    VNIR 400-1010 nm and SWIR 920-2505 nm at about 9.3 nm spacing and 10-13 nm FWHM; as in
    the real files, a few bands at the ends carry no data (centre 0, flag 0).
    """
    vnir = np.linspace(400.0, 1010.0, 66)
    swir = np.linspace(920.0, 2505.0, 173)
    out = {}
    for key, w, width in (("Vnir", vnir, 10.5), ("Swir", swir, 11.5)):
        w = w[::-1].copy()
        f = np.full(w.size, width)
        w[:2] = 0.0  # bands without data
        f[:2] = 0.0
        out[key] = (w, f)
    return out


def write_prisma_l1(
    outdir: str | Path,
    *,
    lines: int = 120,
    samples: int = 100,
    plume: dict[str, Any] | None = None,
    seed: int = 0,
    start: str = "20230407100729",
    centre_lonlat: tuple[float, float] = (53.95, 39.35),
    pixel_m: float = 30.0,
) -> Path:
    """Write a synthetic PRISMA L1 file (HDF-EOS5 layout of the L1 HCO swath); returns its path.

    Radiance is stored as uint16 DN with ``DN = (L + Offset) x ScaleFactor`` for ``L`` in
    W m-2 sr-1 um-1; ``plume`` as in :func:`write_emit_l1b`.
    """
    import h5py

    bands = prisma_bands()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    stop = start[:-2] + f"{(int(start[-2:]) + 4) % 60:02d}"
    path = out / f"PRS_L1_STD_OFFL_{start}_{stop}_0001.he5"
    tmp = path.with_name("." + path.name + ".part")
    lon0, lat0 = centre_lonlat
    ll, ss = np.indices((lines, samples), dtype=np.float64)
    lat = lat0 + (lines / 2 - ll) * pixel_m / 110574.0
    lon = lon0 + (ss - samples / 2) * pixel_m / (111320.0 * np.cos(np.radians(lat0)))
    scale = {"Vnir": 200.0, "Swir": 400.0}
    offset = {"Vnir": 0.0, "Swir": 0.0}
    with h5py.File(tmp, "w") as h5:
        for i, (key, (w, f)) in enumerate(bands.items()):
            good = w > 0
            rad = np.zeros((lines, samples, w.size), np.float32)
            order = np.argsort(w[good])
            wg, fg = w[good][order], f[good][order]
            cube = synthetic_radiance(lines, samples, wg, fg, seed=seed)  # the same scene in both spectrometers
            if plume is not None:
                enh = gaussian_plume_ppm_m((lines, samples), tuple(plume["centre"]), plume.get("peak", 3000.0),
                                           plume.get("sigma", 3.0))
                cube = plant_plume(cube, wg, fg, enh)
            idx = np.flatnonzero(good)[order]
            rad[:, :, idx] = cube
            dn = np.clip(np.rint((rad * 10.0 + offset[key]) * scale[key]), 0, 65535).astype(np.uint16)
            name = "VNIR_Cube" if key == "Vnir" else "SWIR_Cube"
            h5.create_dataset(f"HDFEOS/SWATHS/PRS_L1_HCO/Data Fields/{name}", data=dn.transpose(0, 2, 1),
                              chunks=(min(lines, 64), w.size, samples), compression="gzip", compression_opts=1)
            h5.attrs[f"List_Cw_{key}"] = w.astype(np.float32)
            h5.attrs[f"List_Fwhm_{key}"] = f.astype(np.float32)
            h5.attrs[f"List_Cw_{key}_Flags"] = good.astype(np.int8)
            h5.attrs[f"ScaleFactor_{key}"] = np.float32(scale[key])
            h5.attrs[f"Offset_{key}"] = np.float32(offset[key])
            del i
        geo = "HDFEOS/SWATHS/PRS_L1_HCO/Geolocation Fields"
        for suffix in ("SWIR", "VNIR"):
            h5.create_dataset(f"{geo}/Latitude_{suffix}", data=lat.astype(np.float32))
            h5.create_dataset(f"{geo}/Longitude_{suffix}", data=lon.astype(np.float32))
        h5.attrs["Product_StartTime"] = np.bytes_(f"{start[:4]}-{start[4:6]}-{start[6:8]}T{start[8:10]}:"
                                                  f"{start[10:12]}:{start[12:14]}.000000")
        h5.attrs["Product_ID"] = np.bytes_("PRS_L1_STD")
        h5.attrs["synthetic"] = np.bytes_("true")
        h5.attrs["synthetic_note"] = np.bytes_("synthetic PRISMA L1 scene made by eo_pipeline.samples.hyperspectral")
        h5.attrs["planted_plume"] = np.bytes_("none" if plume is None else repr({k: plume[k] for k in sorted(plume)}))
    tmp.replace(path)
    return path
