# SPDX-License-Identifier: Apache-2.0
"""ENVI radiance cubes as AVIRIS-NG (and AVIRIS-3, many crops and tools) deliver them.

Layout (ENVI header keys, Harris "ENVI Header Files" reference)
---------------------------------------------------------------
``samples``, ``lines``, ``bands``, ``header offset`` (bytes before the data),
``data type`` (1 u8, 2 i16, 3 i32, 4 f32, 5 f64, 12 u16, 13 u32, 14 i64, 15 u64),
``interleave`` (``bsq`` = (bands, lines, samples), ``bil`` = (lines, bands, samples),
``bip`` = (lines, samples, bands)), ``byte order`` (0 little-endian, 1 big-endian),
``data ignore value``; band centres from ``wavelength`` (with ``wavelength units``) or,
where absent, from ``band names`` such as ``376.44 Nanometers``; ``fwhm``. Orthorectified
cubes carry ``map info`` = {projection, reference pixel x, y (1-based, the pixel's
upper-left corner is 1.0), easting, northing, pixel size x, y, [zone, North|South],
datum, [rotation=deg]} and ``coordinate system string`` (WKT).

AVIRIS-NG side files next to ``<flight>_rdn_<...>``: ``<flight>_loc*`` (3 bands:
longitude, latitude in degrees, elevation in m, float64) and ``<flight>_glt*`` (2 bands:
1-based sample and line of the sensor pixel at each orthorectified cell, negative where
filled by the nearest neighbour, 0 where empty; its header's ``map info`` is the
orthorectified grid). The ``_obs`` file (path length, angles, ...) is noted, not read.

The cube is read lazily: every dask task opens the file with ``numpy.memmap`` and reads
only its lines, so graphs pickle to distributed workers.
"""

from __future__ import annotations

import glob
import math
import os
import re
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from affine import Affine

from ..errors import (
    InputFileNotFoundError,
    ProductLayoutError,
    ReaderOptionError,
    TruncatedFileError,
    UnreadableFileError,
)

__all__ = ["read_header", "ENVICube", "open_envi", "is_envi", "INSTRUMENT_FWHM_NM", "RADIANCE_UNITS"]

RADIANCE_UNITS = "uW cm-2 sr-1 nm-1"
_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}
#: Documented default FWHM per instrument where a header has no ``fwhm`` key, nm.
#: AVIRIS-NG: about 5.9-6.0 nm near 2.3 um (Chapman et al. 2019, Remote Sens. 11, 2129;
#: Thorpe et al. 2017 "AVIRIS-NG spectral response"), applied to every band.
INSTRUMENT_FWHM_NM = {"AVIRIS-NG": 5.95, "AVIRIS-3": 7.4, "AVIRIS-C": 9.6}
_LOOKAHEAD = 64 * 1024


def _split_list(text: str) -> list[str]:
    return [v.strip() for v in text.replace("\n", " ").split(",") if v.strip()]


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """Keys (lower case) and raw values of an ENVI header; ``{...}`` values unbraced."""
    p = Path(path)
    try:
        text = p.read_text(encoding="latin-1")
    except FileNotFoundError:
        raise InputFileNotFoundError(p) from None
    except PermissionError:
        raise UnreadableFileError(f"{p}: permission denied; give this user read access") from None
    if not text.lstrip().startswith("ENVI"):
        raise ProductLayoutError(f"{p}: not an ENVI header (it must start with 'ENVI')")
    out: dict[str, str] = {}
    pos = text.index("ENVI") + 4
    pattern = re.compile(r"\s*([^=\n]+?)\s*=\s*")
    while True:
        m = pattern.match(text, pos)
        if m is None:
            nl = text.find("\n", pos + 1)
            if nl < 0:
                break
            pos = nl
            continue
        key = m.group(1).strip().lower()
        start = m.end()
        if text.startswith("{", start):
            end = text.find("}", start)
            if end < 0:
                raise ProductLayoutError(f"{p}: header value of '{key}' has no closing brace")
            out[key] = text[start + 1:end].strip()
            pos = end + 1
        else:
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
            out[key] = text[start:end].strip()
            pos = end
    return out


def _header_for(path: Path) -> Path | None:
    for cand in (Path(str(path) + ".hdr"), path.with_suffix(".hdr")):
        if cand.is_file() and cand != path:
            return cand
    return None


def is_envi(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` (a data file or its ``.hdr``) has an ENVI header next to it."""
    p = Path(path)
    if p.suffix.lower() == ".hdr":
        return p.is_file()
    hdr = _header_for(p)
    if hdr is None:
        return False
    with open(hdr, "rb") as f:
        return f.read(16).lstrip().startswith(b"ENVI")


def _int(h: dict[str, str], key: str, path: Path, default: int | None = None) -> int:
    if key not in h:
        if default is not None:
            return default
        raise ProductLayoutError(f"{path}: ENVI header has no '{key}' key")
    try:
        return int(h[key])
    except ValueError:
        raise ProductLayoutError(f"{path}: ENVI header key '{key}' is not an integer: {h[key]!r}") from None


_WAVE_UNITS = {"nanometers": 1.0, "nm": 1.0, "micrometers": 1e3, "microns": 1e3, "um": 1e3, "millimeters": 1e6}


def _wavelengths(h: dict[str, str], bands: int, path: Path) -> np.ndarray:
    if "wavelength" in h:
        values = np.array([float(v) for v in _split_list(h["wavelength"])])
        scale = _WAVE_UNITS.get(h.get("wavelength units", "nanometers").strip().lower())
        if scale is None:
            raise ProductLayoutError(f"{path}: unknown 'wavelength units' {h['wavelength units']!r}")
        if "wavelength units" not in h and np.nanmax(values) < 30:  # unitless micrometres
            scale = 1e3
        values = values * scale
    elif "band names" in h:
        vals = []
        for name in _split_list(h["band names"]):
            m = re.fullmatch(r"([0-9.eE+-]+)\s*(nanometers|nm|micrometers|microns|um)?", name.strip(), re.I)
            if m is None:
                raise ProductLayoutError(f"{path}: band name {name!r} is not a wavelength; add a 'wavelength' key "
                                         "to the header")
            vals.append(float(m.group(1)) * _WAVE_UNITS[(m.group(2) or "nanometers").lower()])
        values = np.array(vals)
    else:
        raise ProductLayoutError(f"{path}: the header has neither 'wavelength' nor 'band names'; the band centres "
                                 "are needed (add a 'wavelength' key in nm)")
    if values.size != bands:
        raise ProductLayoutError(f"{path}: {values.size} wavelengths for {bands} bands")
    return values


def instrument_of(path: Path, h: dict[str, str]) -> str | None:
    """The instrument named by the file (AVIRIS-NG flight lines start with ``ang``)."""
    name = path.name.lower()
    sensor = h.get("sensor type", "").strip().lower()
    if name.startswith("ang") or "aviris-ng" in sensor or "aviris ng" in sensor:
        return "AVIRIS-NG"
    if name.startswith("av3"):
        return "AVIRIS-3"
    if re.match(r"f\d{6}t\d", name) or sensor == "aviris":
        return "AVIRIS-C"
    return None


def _fwhm(h: dict[str, str], bands: int, path: Path, fwhm_nm: Any, instrument: str | None) -> tuple[np.ndarray, str]:
    if fwhm_nm is not None:
        values = np.broadcast_to(np.asarray(fwhm_nm, dtype=np.float64), (bands,)).copy()
        return values, "given by the user"
    if "fwhm" in h:
        values = np.array([float(v) for v in _split_list(h["fwhm"])])
        scale = _WAVE_UNITS.get(h.get("wavelength units", "nanometers").strip().lower(), 1.0)
        if values.size != bands:
            raise ProductLayoutError(f"{path}: {values.size} fwhm values for {bands} bands")
        return values * scale, "header 'fwhm' key"
    if instrument in INSTRUMENT_FWHM_NM:
        return np.full(bands, INSTRUMENT_FWHM_NM[instrument]), f"{instrument} default"
    raise ReaderOptionError(f"{path}: the header has no 'fwhm' and the instrument is unknown; give the band width "
                            "(fwhm_nm=... or --fwhm NM)")


def _map_info(h: dict[str, str], path: Path) -> tuple[Affine, str] | None:
    if "map info" not in h:
        return None
    parts = _split_list(h["map info"])
    try:
        proj = parts[0]
        ref_x, ref_y, east, north, dx, dy = (float(v) for v in parts[1:7])
    except (IndexError, ValueError):
        raise ProductLayoutError(f"{path}: cannot parse 'map info' {h['map info']!r}") from None
    rotation = 0.0
    for part in parts:
        m = re.match(r"rotation\s*=\s*([0-9.eE+-]+)", part, re.I)
        if m:
            rotation = float(m.group(1))
    wkt = h.get("coordinate system string", "").strip()
    if wkt:
        crs_text = wkt
    elif proj.strip().upper() == "UTM":
        zone = int(parts[7])
        south = parts[8].strip().lower().startswith("s")
        crs_text = f"EPSG:{32700 + zone if south else 32600 + zone}"
    elif proj.strip().lower().startswith("geographic"):
        crs_text = "EPSG:4326"
    else:
        raise ProductLayoutError(f"{path}: 'map info' projection {proj!r} without a 'coordinate system string'")
    # ENVI pixel coordinates: 1.0 is the upper-left corner of the first pixel
    t = Affine.translation(east, north) @ Affine.rotation(-rotation) @ Affine.scale(dx, -dy) \
        @ Affine.translation(-(ref_x - 1.0), -(ref_y - 1.0))
    return t, crs_text


def _side_file(path: Path, kind: str) -> Path | None:
    """``<flight>_<kind>*`` next to ``<flight>_rdn*`` (AVIRIS-NG naming)."""
    m = re.match(r"(.+?)_(?:\d*)rdn", path.name)
    if m is None:
        return None
    for cand in sorted(glob.glob(str(path.parent / f"{glob.escape(m.group(1))}_{kind}*"))):
        c = Path(cand)
        if c.suffix.lower() != ".hdr" and _header_for(c) is not None:
            return c
    return None


class ENVICube:
    """Picklable array-like view of an ENVI file as (lines, samples, bands) for ``da.from_array``."""

    def __init__(self, path: str, header: dict[str, str]) -> None:
        p = Path(path)
        self.path = str(p)
        self.samples = _int(header, "samples", p)
        self.lines = _int(header, "lines", p)
        self.bands = _int(header, "bands", p, default=1)
        self.offset = _int(header, "header offset", p, default=0)
        code = _int(header, "data type", p)
        if code not in _DTYPES:
            raise ProductLayoutError(f"{p}: ENVI data type {code} is not supported (complex or unknown)")
        order = _int(header, "byte order", p, default=0)
        self.file_dtype = np.dtype(("<" if order == 0 else ">") + _DTYPES[code])
        self.interleave = header.get("interleave", "bsq").strip().lower()
        if self.interleave not in ("bsq", "bil", "bip"):
            raise ProductLayoutError(f"{p}: interleave {self.interleave!r} is not bsq, bil or bip")
        self.shape = (self.lines, self.samples, self.bands)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.ndim = 3
        need = self.offset + self.file_dtype.itemsize * self.lines * self.samples * self.bands
        try:
            size = os.path.getsize(p)
        except FileNotFoundError:
            raise InputFileNotFoundError(p) from None
        if size < need:
            raise TruncatedFileError(f"{p}: is truncated: the header describes {need} bytes, the file has {size}; "
                                     "download or copy it again")

    def _native(self) -> np.memmap:
        native = {"bsq": (self.bands, self.lines, self.samples), "bil": (self.lines, self.bands, self.samples),
                  "bip": (self.lines, self.samples, self.bands)}[self.interleave]
        try:
            return np.memmap(self.path, dtype=self.file_dtype, mode="r", offset=self.offset, shape=native)
        except FileNotFoundError:
            raise InputFileNotFoundError(self.path) from None

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        key = tuple(key) + (slice(None),) * (3 - len(key))
        lines, samples, bands = key
        mm = self._native()
        if self.interleave == "bsq":
            block = mm[bands, lines, samples].transpose(1, 2, 0)
        elif self.interleave == "bil":
            block = mm[lines, bands, samples].transpose(0, 2, 1)
        else:
            block = mm[lines, samples, bands]
        return np.ascontiguousarray(block, dtype=self.dtype)


def _band(path: Path, header: dict[str, str], band: int) -> np.ndarray:
    cube = ENVICube(str(path), header)
    return cube[slice(None), slice(None), slice(band, band + 1)][..., 0].astype(np.float64)


def open_envi(path: str | os.PathLike[str], *, fwhm_nm: Any = None, chunk_lines: int | None = None) -> dict[str, Any]:
    """Parse an ENVI radiance cube into the parts :func:`open_radiance` assembles.

    Returns a dict with the lazy ``radiance`` (lines, samples, bands, float32, NaN where
    the header's ``data ignore value``), ``wavelength``/``fwhm`` (nm), ``fwhm_source``,
    ``instrument``, the map ``transform``/``crs`` (orthorectified cubes), ``lon``/``lat``
    (from ``_loc``) and ``glt`` (from ``_glt``) where present.
    """
    p = Path(path)
    if p.suffix.lower() == ".hdr":
        data = p.with_suffix("")
        p = data if data.is_file() else p
    if not p.exists():
        raise InputFileNotFoundError(p)
    hdr_path = _header_for(p)
    if hdr_path is None:
        raise ProductLayoutError(f"{p}: no ENVI header ({p.name}.hdr) next to it")
    h = read_header(hdr_path)
    cube = ENVICube(str(p), h)
    wavelength = _wavelengths(h, cube.bands, hdr_path)
    instrument = instrument_of(p, h)
    fwhm, fwhm_source = _fwhm(h, cube.bands, hdr_path, fwhm_nm, instrument)
    if chunk_lines is None:  # about 64 MB per chunk
        chunk_lines = max(1, min(cube.lines, (64 << 20) // max(1, cube.samples * cube.bands * 4)))
    raw = da.from_array(cube, chunks=(chunk_lines, cube.samples, cube.bands), lock=False, fancy=False,
                        meta=np.empty((0, 0, 0), cube.dtype), name=f"envi-{_token(p)}")
    ignore = h.get("data ignore value")
    radiance = raw.map_blocks(_to_float32, None if ignore is None else float(ignore), dtype=np.float32)
    out: dict[str, Any] = {
        "radiance": radiance, "wavelength": wavelength, "fwhm": fwhm, "fwhm_source": fwhm_source,
        "instrument": instrument, "format": "ENVI", "interleave": cube.interleave,
        "units": h.get("radiance units", RADIANCE_UNITS) if "radiance units" in h else RADIANCE_UNITS,
    }
    mi = _map_info(h, hdr_path)
    if mi is not None:
        out["transform"], out["crs"] = mi
    loc = _side_file(p, "loc")
    if loc is not None:
        lh = read_header(_header_for(loc))
        out["lon"] = _band(loc, lh, 0)
        out["lat"] = _band(loc, lh, 1)
        if ENVICube(str(loc), lh).bands > 2:
            out["elevation"] = _band(loc, lh, 2)
    glt = _side_file(p, "glt")
    if glt is not None and mi is None:
        gh = read_header(_header_for(glt))
        gmi = _map_info(gh, glt)
        if gmi is not None:
            out["glt"] = (np.rint(_band(glt, gh, 0)).astype(np.int64), np.rint(_band(glt, gh, 1)).astype(np.int64),
                          gmi[0], gmi[1])
    m = re.match(r"(?:ang|av3)(\d{4})(\d{2})(\d{2})t(\d{2})(\d{2})(\d{2})", p.name, re.I)
    if m:  # AVIRIS-NG / AVIRIS-3 flight lines are named after their start time (UTC)
        out["time"] = "{}-{}-{}T{}:{}:{}Z".format(*m.groups())
    obs = _side_file(p, "obs")
    if obs is not None:
        out["obs_file"] = str(obs)
    return out


def _to_float32(block: np.ndarray, ignore: float | None) -> np.ndarray:
    out = block.astype(np.float32, copy=True)
    if ignore is not None and math.isfinite(ignore):
        out[block == ignore] = np.nan
    return out


def _token(p: Path) -> str:
    st = p.stat()
    from dask.base import tokenize

    return tokenize(str(p.resolve()), st.st_size, st.st_mtime_ns)
