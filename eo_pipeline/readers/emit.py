# SPDX-License-Identifier: Apache-2.0
"""EMIT Level-1B calibrated radiance (``EMIT_L1B_RAD_001_<YYYYMMDDTHHMMSS>_<orbit>_<scene>.nc``).

Layout (EMIT L1B ATBD / data product user guide, netCDF-4)
----------------------------------------------------------
* ``radiance`` (downtrack, crosstrack, bands) float32, units ``uW/cm^2/SR/nm``,
  ``_FillValue`` -9999;
* ``sensor_band_parameters/wavelengths`` and ``fwhm`` (bands), nm;
* ``location/lat``, ``lon`` (degrees), ``elev`` (m) on (downtrack, crosstrack);
  ``location/glt_x``, ``glt_y`` (ortho_y, ortho_x) int32: 1-based crosstrack and
  downtrack index of the sensor pixel at each orthorectified cell, 0 = no data;
* global attributes ``geotransform`` (GDAL order, of the GLT grid) and ``spatial_ref``
  (WKT, EPSG:4326), ``time_coverage_start``.

The radiance is read lazily, chunked along track (one dask task per block of lines,
each opening the file itself).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from ..errors import ProductLayoutError
from ._netcdf import NCFile, lazy_raw

__all__ = ["EMIT_NAME", "open_emit", "is_emit"]

EMIT_NAME = re.compile(r"EMIT_L1B_RAD_(\d{3})_(\d{8}T\d{6})_(\d+)_(\d+)", re.I)
_REQUIRED = ["radiance", "sensor_band_parameters/wavelengths", "sensor_band_parameters/fwhm",
             "location/lat", "location/lon"]


def is_emit(nc: NCFile) -> bool:
    """Content test: an EMIT L1B radiance file has ``radiance`` and its band parameters."""
    return nc.has("radiance") and nc.has("sensor_band_parameters/wavelengths")


def _units(text: str) -> str:
    t = text.replace(" ", "").lower()
    if t in ("uw/cm^2/sr/nm", "uwcm-2sr-1nm-1", "microwatts/cm^2/sr/nm", "uw/cm2/sr/nm"):
        return "uW cm-2 sr-1 nm-1"
    raise ProductLayoutError(f"radiance units {text!r} are not uW/cm^2/SR/nm")


def open_emit(path: str | os.PathLike[str], *, fwhm_nm: Any = None, chunk_lines: int | None = None) -> dict[str, Any]:
    """Parse an EMIT L1B radiance file into the parts :func:`open_radiance` assembles."""
    p = Path(path)
    with NCFile(p) as nc:
        return _parts(nc, p, fwhm_nm, chunk_lines)


def _parts(nc: NCFile, p: Path, fwhm_nm: Any, chunk_lines: int | None) -> dict[str, Any]:
    for var in _REQUIRED:
        if not nc.has(var):
            from ..errors import MissingVariableError

            raise MissingVariableError(f"{p}: EMIT L1B radiance needs '{var}', which the file lacks")
    rad = nc.variable("radiance")
    if len(rad.shape) != 3:
        raise ProductLayoutError(f"{p}: 'radiance' must be (downtrack, crosstrack, bands), got dims {rad.dims}")
    lines, samples, bands = rad.shape
    try:
        units = _units(str(rad.attrs.get("units", "")))
    except ProductLayoutError as exc:
        raise ProductLayoutError(f"{p}: {exc}") from None
    wavelength = np.asarray(nc.read_small("sensor_band_parameters/wavelengths"), dtype=np.float64)
    fwhm_file = np.asarray(nc.read_small("sensor_band_parameters/fwhm"), dtype=np.float64)
    if wavelength.shape != (bands,) or fwhm_file.shape != (bands,):
        raise ProductLayoutError(f"{p}: sensor_band_parameters must have one value per band ({bands})")
    if fwhm_nm is not None:
        fwhm, source = np.broadcast_to(np.asarray(fwhm_nm, dtype=np.float64), (bands,)).copy(), "given by the user"
    else:
        fwhm, source = fwhm_file, "sensor_band_parameters/fwhm"
    if chunk_lines is None:
        chunk_lines = max(1, min(lines, (64 << 20) // max(1, samples * bands * 4)))
        if rad.storage_chunks:
            c = rad.storage_chunks[0]
            chunk_lines = max(c, chunk_lines // c * c)
    raw = lazy_raw(nc, rad, (chunk_lines, samples, bands))
    fill = rad.fill_value
    radiance = raw.map_blocks(_decode, -9999.0 if fill is None else float(fill), dtype=np.float32)
    out: dict[str, Any] = {
        "radiance": radiance, "wavelength": wavelength, "fwhm": fwhm, "fwhm_source": source,
        "instrument": "EMIT", "format": "EMIT L1B RAD netCDF", "units": units,
        "lat": np.asarray(nc.read_small("location/lat"), dtype=np.float64),
        "lon": np.asarray(nc.read_small("location/lon"), dtype=np.float64),
    }
    if nc.has("location/elev"):
        out["elevation"] = np.asarray(nc.read_small("location/elev"), dtype=np.float64)
    attrs = nc.attrs
    if nc.has("location/glt_x") and nc.has("location/glt_y") and "geotransform" in attrs:
        gt = [float(v) for v in np.ravel(attrs["geotransform"])]
        if len(gt) != 6:
            raise ProductLayoutError(f"{p}: 'geotransform' must have 6 numbers, got {len(gt)}")
        crs = str(attrs.get("spatial_ref", "EPSG:4326")) or "EPSG:4326"
        out["glt"] = (np.asarray(nc.read_small("location/glt_x"), dtype=np.int64),
                      np.asarray(nc.read_small("location/glt_y"), dtype=np.int64), Affine.from_gdal(*gt), crs)
    m = EMIT_NAME.search(p.name)
    start = attrs.get("time_coverage_start")
    if start is not None:
        out["time"] = str(start)
    elif m:
        out["time"] = np.datetime64(f"{m.group(2)[:4]}-{m.group(2)[4:6]}-{m.group(2)[6:8]}T"
                                    f"{m.group(2)[9:11]}:{m.group(2)[11:13]}:{m.group(2)[13:15]}").astype(str)
    for key in ("title", "summary", "synthetic"):
        if key in attrs:
            out[f"source_{key}"] = attrs[key]
    return out


def _decode(block: np.ndarray, fill: float) -> np.ndarray:
    out = block.astype(np.float32, copy=True)
    out[(block == fill) | ~np.isfinite(block)] = np.nan
    return out
