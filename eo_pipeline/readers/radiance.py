# SPDX-License-Identifier: Apache-2.0
"""Hyperspectral radiance cubes: their reader registry and :func:`open_radiance`.

Built-in radiance readers are listed in :data:`RADIANCE_READERS` (name -> "module:function");
third-party packages add theirs through the ``eo_pipeline.radiance_readers`` entry-point
group. Detection looks at content (an ENVI header next to the file, the EMIT L1B
variables in a netCDF-4 file, the PRISMA L1 HCO swath in an HDF-EOS5 file). Errors follow
the Level-2 readers' rules: one line naming the file, as an :class:`~eo_pipeline.errors.EOPipelineError` subclass
(``InputFileNotFoundError``, ``TruncatedFileError``, ``CorruptFileError``,
``ProductLayoutError``, ``MissingVariableError``, ``ReaderOptionError``).

The canonical cube
------------------
``radiance`` (``line``, ``sample``, ``band``) float32 in uW cm-2 sr-1 nm-1, NaN where the
product has no data, chunked along track; ``wavelength`` and ``fwhm`` (``band``) in nm;
``lon``/``lat`` (``line``, ``sample``) in degrees where the product has them;
orthorectified cubes (ENVI ``map info``) carry ``x`` (``sample``) and ``y`` (``line``)
cell-centre coordinates and a ``spatial_ref`` grid mapping (CRS WKT and GDAL transform);
cubes in sensor geometry with a geometry lookup table (EMIT, AVIRIS-NG ``_glt``) carry
``glt_sample``/``glt_line`` (``ortho_y``, ``ortho_x``; 0-based, -1 where empty) and the
``glt_spatial_ref`` of that grid.
"""

from __future__ import annotations

import os
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine
from pyproj import CRS

from ..errors import InputFileNotFoundError, UnknownProductError

__all__ = ["RADIANCE_READERS", "RADIANCE_DESCRIPTIONS", "radiance_readers", "open_radiance",
           "detect_radiance_reader", "spatial_ref_attrs"]

RADIANCE_READERS: dict[str, str] = {
    "envi": "eo_pipeline.readers.envi:open_envi",
    "emit_l1b_rad": "eo_pipeline.readers.emit:open_emit",
    "prisma_l1": "eo_pipeline.readers.prisma:open_prisma",
}
ENTRY_POINT_GROUP = "eo_pipeline.radiance_readers"
#: What each built-in radiance reader reads (``eo-pipeline readers``).
RADIANCE_DESCRIPTIONS = {
    "envi": "ENVI radiance cubes (AVIRIS-NG/AVIRIS-3 *_rdn* + .hdr; BSQ, BIL or BIP; _loc, _glt, _obs side files)",
    "emit_l1b_rad": "EMIT L1B radiance (EMIT_L1B_RAD_001_*.nc; radiance, band parameters, location, GLT)",
    "prisma_l1": "PRISMA L1 radiance (PRS_L1_STD_OFFL_*.he5; HCO VNIR and SWIR cubes, SWIR geolocation)",
}


def _load(target: str) -> Any:
    module, _, func = target.partition(":")
    return getattr(import_module(module), func)


def radiance_readers() -> dict[str, str]:
    """Name -> ``module:function`` of every radiance reader (built-in, then entry points)."""
    return _readers()


def _readers() -> dict[str, str]:
    out = dict(RADIANCE_READERS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out.setdefault(ep.name, ep.value)
    return out


def detect_radiance_reader(path: str | os.PathLike[str]) -> str:
    """Name of the radiance reader for ``path``, by content."""
    from .envi import is_envi

    p = Path(path)
    if not p.exists():
        raise InputFileNotFoundError(p)
    if is_envi(p):
        return "envi"
    with open(p, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        import h5py

        from ._netcdf import LIBRARY_ERRORS, NCFile, library_error
        from .emit import is_emit
        from .prisma import is_prisma

        try:
            with h5py.File(p, "r") as h5:
                if is_prisma(h5):
                    return "prisma_l1"
        except LIBRARY_ERRORS as exc:
            raise library_error(p, "opening it", exc) from exc

        with NCFile(p) as nc:
            if is_emit(nc):
                return "emit_l1b_rad"
    raise UnknownProductError(
        f"{p}: not a radiance cube eo_pipeline reads (an ENVI file with its .hdr, such as AVIRIS-NG *_rdn*, "
        "an EMIT L1B RAD netCDF or a PRISMA L1 .he5); check the path")


def spatial_ref_attrs(crs: Any, transform: Affine) -> dict[str, Any]:
    """CF/GDAL grid-mapping attributes of a CRS and an affine transform."""
    c = CRS.from_user_input(crs)
    attrs = c.to_cf()
    attrs["crs_wkt"] = attrs["spatial_ref"] = c.to_wkt()
    attrs["GeoTransform"] = " ".join(repr(float(v)) for v in transform.to_gdal())
    return attrs


def open_radiance(path: str | os.PathLike[str], *, fwhm_nm: Any = None, reader: str | None = None,
                  chunk_lines: int | None = None) -> xr.Dataset:
    """Open a hyperspectral radiance cube lazily as a canonical :class:`xarray.Dataset`.

    Parameters
    ----------
    path : path-like
        An ENVI cube (the data file or its ``.hdr``; AVIRIS-NG ``*_rdn*``), an EMIT L1B
        RAD netCDF file or a PRISMA L1 HDF-EOS5 file.
    fwhm_nm : float or array (bands,), optional
        Band FWHM in nm where the product has none (or to override it). ENVI headers without
        ``fwhm`` fall back to the instrument's documented default
        (:data:`eo_pipeline.readers.envi.INSTRUMENT_FWHM_NM`, AVIRIS-NG 5.95 nm).
    reader : str, optional
        Force a reader (``envi``, ``emit_l1b_rad``, ``prisma_l1`` or an entry point's name).
    chunk_lines : int, optional
        Lines per dask chunk (default: about 64 MB per chunk).

    Returns
    -------
    xarray.Dataset
        See the module docstring; ``radiance`` is a dask array.
    """
    p = Path(path)
    name = reader or detect_radiance_reader(p)
    table = _readers()
    if name not in table:
        raise UnknownProductError(f"{p}: no radiance reader named {name!r}; known: {', '.join(sorted(table))}")
    parts = _load(table[name])(p, fwhm_nm=fwhm_nm, chunk_lines=chunk_lines)
    lines, samples, bands = parts["radiance"].shape
    wavelength = np.asarray(parts["wavelength"], dtype=np.float64)
    order = np.argsort(wavelength, kind="stable")
    radiance = parts["radiance"]
    if np.any(order != np.arange(bands)):  # some products list bands out of order
        radiance = radiance[:, :, order]
    ds = xr.Dataset(
        {"radiance": (("line", "sample", "band"), radiance,
                      {"units": parts.get("units", "uW cm-2 sr-1 nm-1"), "long_name": "at-sensor spectral radiance",
                       "standard_name": "toa_outgoing_radiance_per_unit_wavelength"})},
        coords={
            "wavelength": ("band", wavelength[order], {"units": "nm", "long_name": "band centre wavelength"}),
            "fwhm": ("band", np.asarray(parts["fwhm"], dtype=np.float64)[order],
                     {"units": "nm", "long_name": "band full width at half maximum",
                      "source": parts.get("fwhm_source", "")}),
        },
        attrs={"source_file": str(p.resolve()), "reader": name, "format": parts.get("format", name),
               "instrument": parts.get("instrument") or "unknown"},
    )
    for key in ("lon", "lat", "elevation"):
        if key in parts:
            values = np.asarray(parts[key], dtype=np.float64)
            values = np.where(np.abs(values) > 1e4, np.nan, values)  # -9999 fills
            units = "m" if key == "elevation" else ("degrees_east" if key == "lon" else "degrees_north")
            ds.coords[key] = (("line", "sample"), values, {"units": units})
    if "transform" in parts:
        t: Affine = parts["transform"]
        ds.coords["spatial_ref"] = ((), 0, spatial_ref_attrs(parts["crs"], t))
        if t.b == 0 and t.d == 0:
            x = t.c + t.a * (np.arange(samples) + 0.5)
            y = t.f + t.e * (np.arange(lines) + 0.5)
            units = "degrees" if CRS.from_user_input(parts["crs"]).is_geographic else "m"
            ds.coords["x"] = ("sample", x, {"units": units, "long_name": "x of the cell centre"})
            ds.coords["y"] = ("line", y, {"units": units, "long_name": "y of the cell centre"})
        ds["radiance"].attrs["grid_mapping"] = "spatial_ref"
    if "glt" in parts:
        gx, gy, gt, gcrs = parts["glt"]
        gx, gy = np.asarray(gx), np.asarray(gy)
        valid = (gx != 0) & (gy != 0)
        ds["glt_sample"] = (("ortho_y", "ortho_x"), np.where(valid, np.abs(gx) - 1, -1).astype(np.int32),
                            {"long_name": "0-based sample of the sensor pixel at each orthorectified cell, -1 empty"})
        ds["glt_line"] = (("ortho_y", "ortho_x"), np.where(valid, np.abs(gy) - 1, -1).astype(np.int32),
                          {"long_name": "0-based line of the sensor pixel at each orthorectified cell, -1 empty"})
        ds.coords["glt_spatial_ref"] = ((), 0, spatial_ref_attrs(gcrs, gt))
    for key in ("time", "obs_file", "interleave", "source_title", "source_summary", "source_synthetic"):
        if key in parts:
            ds.attrs[key] = str(parts[key])
    return ds
