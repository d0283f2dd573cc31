# SPDX-License-Identifier: Apache-2.0
"""PRISMA Level-1 radiance (``PRS_L1_STD_OFFL_<start>_<stop>_<nnnn>.he5``, HDF-EOS5).

Layout (ASI PRISMA Products Specification Document, L1 ``HCO`` swath)
--------------------------------------------------------------------
* ``HDFEOS/SWATHS/PRS_L1_HCO/Data Fields/VNIR_Cube`` and ``SWIR_Cube``: uint16 digital
  numbers on (along track, band, across track), i.e. band-interleaved by line; the
  co-registered ("HCO") cubes of the two spectrometers;
* global attributes ``List_Cw_Vnir`` / ``List_Cw_Swir`` (band centres, nm, in the cubes'
  band order, which runs from long to short wavelengths), ``List_Fwhm_Vnir`` /
  ``List_Fwhm_Swir`` (nm), ``List_Cw_Vnir_Flags`` / ``List_Cw_Swir_Flags`` (1 = a band
  with data), ``ScaleFactor_Vnir``/``Offset_Vnir`` and ``ScaleFactor_Swir``/``Offset_Swir``:
  radiance = DN / ScaleFactor - Offset, in W m-2 sr-1 um-1 (= 0.1 uW cm-2 sr-1 nm-1);
  ``Product_StartTime``;
* ``HDFEOS/SWATHS/PRS_L1_HCO/Geolocation Fields/Latitude_SWIR`` and ``Longitude_SWIR``
  (along track, across track), degrees.

Both cubes are read lazily (one task per block of lines, each opening the file), the
flagged bands kept, converted to uW cm-2 sr-1 nm-1 and joined along the band axis; the
cube stays in sensor geometry (PRISMA has no lookup table: the outputs are in sensor
geometry too, with the per-pixel lon/lat).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dask.array as da
import h5py
import numpy as np

from ..errors import EOPipelineError, MissingVariableError, ProductLayoutError
from ._netcdf import LIBRARY_ERRORS, VarInfo, lazy_raw, library_error

__all__ = ["open_prisma", "is_prisma", "SWATH"]

SWATH = "HDFEOS/SWATHS/PRS_L1_HCO"
_CUBES = {"Vnir": f"{SWATH}/Data Fields/VNIR_Cube", "Swir": f"{SWATH}/Data Fields/SWIR_Cube"}
_GEO = {"lat": f"{SWATH}/Geolocation Fields/Latitude_SWIR", "lon": f"{SWATH}/Geolocation Fields/Longitude_SWIR"}
#: W m-2 sr-1 um-1 -> uW cm-2 sr-1 nm-1
_TO_UW_CM2_NM = 0.1


def is_prisma(h5: h5py.File) -> bool:
    """Content test: the L1 HCO swath and its SWIR cube."""
    return _CUBES["Swir"] in h5


def _attr(h5: h5py.File, name: str, path: Path) -> Any:
    if name not in h5.attrs:
        raise MissingVariableError(f"{path}: PRISMA L1 needs the global attribute '{name}', which the file lacks")
    value = h5.attrs[name]
    return value.decode() if isinstance(value, bytes) else value


def open_prisma(path: str | os.PathLike[str], *, fwhm_nm: Any = None, chunk_lines: int | None = None) -> dict[str, Any]:
    """Parse a PRISMA L1 file into the parts :func:`open_radiance` assembles."""
    p = Path(path).resolve()
    try:
        st = p.stat()
        with h5py.File(p, "r") as h5:
            return _parts(h5, p, (str(p), st.st_mtime_ns, st.st_size), fwhm_nm, chunk_lines)
    except EOPipelineError:
        raise
    except FileNotFoundError:
        from ..errors import InputFileNotFoundError

        raise InputFileNotFoundError(p) from None
    except LIBRARY_ERRORS as exc:
        raise library_error(p, "opening it", exc) from exc


def _parts(h5: h5py.File, p: Path, token: tuple[str, int, int], fwhm_nm: Any,
           chunk_lines: int | None) -> dict[str, Any]:
    for var in [*_CUBES.values(), *_GEO.values()]:
        if var not in h5:
            raise MissingVariableError(f"{p}: PRISMA L1 needs '{var}', which the file lacks")
    pieces, waves, widths = [], [], []
    shape = None
    for key, var in _CUBES.items():
        dset = h5[var]
        if dset.ndim != 3:
            raise ProductLayoutError(f"{p}: '{var}' must be (along track, band, across track), got {dset.shape}")
        lines, bands, samples = dset.shape
        if shape is not None and shape != (lines, samples):
            raise ProductLayoutError(f"{p}: the VNIR and SWIR cubes have different sizes")
        shape = (lines, samples)
        cw = np.asarray(_attr(h5, f"List_Cw_{key}", p), dtype=np.float64).ravel()
        fw = np.asarray(_attr(h5, f"List_Fwhm_{key}", p), dtype=np.float64).ravel()
        flags = np.asarray(h5.attrs.get(f"List_Cw_{key}_Flags", (cw > 0).astype(int))).ravel()
        if cw.size != bands or fw.size != bands or flags.size != bands:
            raise ProductLayoutError(f"{p}: List_Cw_{key}/List_Fwhm_{key} must have one value per band of "
                                     f"{var} ({bands})")
        scale = float(_attr(h5, f"ScaleFactor_{key}", p))
        offset = float(_attr(h5, f"Offset_{key}", p))
        keep = np.flatnonzero((flags == 1) & (cw > 0))
        chunk = chunk_lines or max(1, min(lines, (64 << 20) // max(1, samples * bands * 2)))
        info = VarInfo(path=var, shape=dset.shape, dtype=dset.dtype, dims=("line", "band", "sample"),
                       storage_chunks=dset.chunks)
        raw = lazy_raw(SimpleNamespace(file_token=token), info, (chunk, bands, samples))
        rad = raw.map_blocks(_to_radiance, keep, scale, offset, dtype=np.float32,
                             chunks=(raw.chunks[0], (samples,), (keep.size,)))
        pieces.append(rad)
        waves.append(cw[keep])
        widths.append(fw[keep])
    radiance = da.concatenate(pieces, axis=2)
    wavelength = np.concatenate(waves)
    fwhm_file = np.concatenate(widths)
    if fwhm_nm is not None:
        fwhm, source = np.broadcast_to(np.asarray(fwhm_nm, dtype=np.float64), wavelength.shape).copy(), \
            "given by the user"
    else:
        fwhm, source = fwhm_file, "List_Fwhm_Vnir/List_Fwhm_Swir"
    start = h5.attrs.get("Product_StartTime")
    out: dict[str, Any] = {
        "radiance": radiance, "wavelength": wavelength, "fwhm": fwhm, "fwhm_source": source,
        "instrument": "PRISMA", "format": "PRISMA L1 HDF-EOS5", "units": "uW cm-2 sr-1 nm-1",
        "lat": np.asarray(h5[_GEO["lat"]][...], dtype=np.float64),
        "lon": np.asarray(h5[_GEO["lon"]][...], dtype=np.float64),
    }
    if out["lat"].shape != shape:
        raise ProductLayoutError(f"{p}: Latitude_SWIR must be (along track, across track) = {shape}")
    if start is not None:
        text = start.decode() if isinstance(start, bytes) else str(start)
        out["time"] = text.split(".")[0].rstrip("Z") + "Z"
    if "synthetic" in h5.attrs:
        out["source_synthetic"] = str(_attr(h5, "synthetic", p))
    return out


def _to_radiance(block: np.ndarray, keep: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """(lines, bands, samples) DN -> (lines, samples, kept bands) radiance, uW cm-2 sr-1 nm-1."""
    dn = block[:, keep, :].astype(np.float32)
    rad = (dn / np.float32(scale) - np.float32(offset)) * np.float32(_TO_UW_CM2_NM)
    return np.ascontiguousarray(rad.transpose(0, 2, 1))
