# SPDX-License-Identifier: Apache-2.0
"""Lazy, picklable access to variables of NetCDF-4/HDF5 files.

Readers inspect a file's structure through :class:`NCFile` (metadata only, via
h5netcdf) and turn variables into dask arrays with :func:`lazy_raw`. The dask
tasks hold only a file *path* and a variable path, never an open handle, so the
graphs pickle to ``dask.distributed`` workers; each worker process opens the file
itself and keeps the handle in a small per-process cache (the pattern rioxarray
describes for rasterio datasets).

Decoding (fill values to NaN, scale factors, time units) is done by the pure
numpy kernels at the bottom of this module, lifted onto dask with ``map_blocks``.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import h5netcdf
import h5py
import numpy as np
from dask.base import tokenize

from ..errors import CorruptFileError, InputFileNotFoundError, NotNetCDFError

__all__ = [
    "NCFile",
    "VarInfo",
    "sniff_format",
    "lazy_raw",
    "decode_float",
    "decode_scaled",
    "seconds_to_datetime64",
    "parse_time_units",
]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NETCDF3_SIGNATURES = (b"CDF\x01", b"CDF\x02", b"CDF\x05")


def sniff_format(path: str | os.PathLike[str]) -> str:
    """Return ``"hdf5"`` for a NetCDF-4/HDF5 file, or raise a clear error.

    Parameters
    ----------
    path : path-like
        File to check. The HDF5 signature may sit at byte 0 or, after a user
        block, at 512, 1024, 2048, ... bytes.

    Raises
    ------
    InputFileNotFoundError
        The path does not exist.
    NotNetCDFError
        The path is a directory, an empty file, a NetCDF-3 classic file or
        something else entirely.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileNotFoundError(p)
    if p.is_dir():
        raise NotNetCDFError(f"{p}: is a directory, not a NetCDF-4/HDF5 file; pass the product file")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(8)
        if head[:4] in NETCDF3_SIGNATURES:
            raise NotNetCDFError(
                f"{p}: is a NetCDF-3 classic file; the supported GHG products are NetCDF-4/HDF5 "
                "(convert it with 'nccopy -k nc4' if it really is one of them)"
            )
        offset = 0
        while offset + 8 <= size:
            fh.seek(offset)
            if fh.read(8) == HDF5_SIGNATURE:
                return "hdf5"
            offset = 512 if offset == 0 else offset * 2
    raise NotNetCDFError(
        f"{p}: not a NetCDF-4/HDF5 file (no HDF5 signature in its first bytes); "
        "check that it is a Level-2 product and that the download completed"
    )


def _py(value: Any) -> Any:
    """Turn an attribute value into plain Python (str for bytes, scalars unwrapped)."""
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO":
            return [_py(v) for v in value.tolist()]
        if value.size == 1:
            return value.reshape(()).item()
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class VarInfo:
    """What a reader needs to know about one variable, without reading its data.

    Attributes
    ----------
    path : str
        Full path inside the file, e.g. ``PRODUCT/qa_value``.
    shape, dtype, dims : tuple, numpy.dtype, tuple of str
        As stored.
    attrs : dict
        Attributes converted to plain Python values (``_FillValue`` included).
    storage_chunks : tuple of int or None
        HDF5 chunk shape, None for contiguous storage.
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dims: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    storage_chunks: tuple[int, ...] | None = None

    @property
    def fill_value(self) -> Any:
        """The ``_FillValue`` (or, failing that, ``missing_value``) attribute, or None."""
        for key in ("_FillValue", "missing_value"):
            if key in self.attrs:
                value = self.attrs[key]
                return value[0] if isinstance(value, list | np.ndarray) else value
        return None


class NCFile:
    """Read-only view of a NetCDF-4 file's structure: groups, variables, attributes.

    Use as a context manager; it reads metadata only.

    Parameters
    ----------
    path : path-like
        The file. Its format is checked first with :func:`sniff_format`.

    Raises
    ------
    InputFileNotFoundError, NotNetCDFError, CorruptFileError
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()
        sniff_format(self.path)
        try:
            self._f = h5netcdf.File(self.path, "r", decode_vlen_strings=False)
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptFileError(
                f"{self.path}: cannot be read as NetCDF-4/HDF5 ({_short(exc)}); "
                "the file is probably truncated or damaged: download it again"
            ) from exc
        stat = self.path.stat()
        self.file_token = (str(self.path), stat.st_mtime_ns, stat.st_size)
        self._attrs: dict[str, Any] | None = None

    def __enter__(self) -> NCFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying file."""
        self._f.close()

    @property
    def name(self) -> str:
        """The file's base name."""
        return self.path.name

    @property
    def attrs(self) -> dict[str, Any]:
        """Global attributes as plain Python values."""
        if self._attrs is None:
            self._attrs = {k: _py(v) for k, v in self._f.attrs.items()}
        return self._attrs

    def group_attrs(self, group: str) -> dict[str, Any]:
        """Attributes of ``group`` (e.g. ``METADATA/GRANULE_DESCRIPTION``); empty if absent."""
        try:
            g = self._f[group]
        except KeyError:
            return {}
        if not isinstance(g, h5netcdf.Group):
            return {}
        return {k: _py(v) for k, v in g.attrs.items()}

    def has_group(self, group: str) -> bool:
        """True if ``group`` exists."""
        try:
            return isinstance(self._f[group], h5netcdf.Group)
        except KeyError:
            return False

    def has(self, path: str) -> bool:
        """True if the variable ``path`` exists."""
        try:
            return isinstance(self._f[path], h5netcdf.Variable)
        except (KeyError, ValueError):
            return False

    def dimensions(self, group: str = "/") -> dict[str, int]:
        """Dimension sizes defined in ``group``."""
        g = self._f if group in ("", "/") else self._f[group]
        return {k: (v.size if v.size is not None else 0) for k, v in g.dimensions.items()}

    def variable(self, path: str) -> VarInfo:
        """Return :class:`VarInfo` for the variable ``path`` (KeyError if absent)."""
        v = self._f[path]
        if not isinstance(v, h5netcdf.Variable):
            raise KeyError(path)
        try:
            dims = tuple(v.dimensions)
        except Exception:  # noqa: BLE001 - pure HDF5 datasets without dimension scales
            dims = tuple(f"dim_{i}" for i in range(len(v.shape)))
        return VarInfo(
            path=path.lstrip("/"),
            shape=tuple(int(s) for s in v.shape),
            dtype=np.dtype(v.dtype) if v.dtype is not str else np.dtype(object),
            dims=dims,
            attrs={k: _py(a) for k, a in v.attrs.items()},
            storage_chunks=tuple(v.chunks) if v.chunks else None,
        )

    def read_small(self, path: str, index: Any = ()) -> np.ndarray:
        """Read (a slice of) a small variable now, raw, for metadata such as a time range."""
        return np.asarray(self._f[path][index])


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"\s+", " ", text)[:160]


class _HandleCache:
    """Per-process cache of open h5py files, keyed by (path, mtime, size)."""

    def __init__(self, maxsize: int = 64) -> None:
        self._lock = threading.Lock()
        self._files: OrderedDict[tuple[str, int, int], h5py.File] = OrderedDict()
        self._pid = os.getpid()
        self.maxsize = maxsize

    def get(self, key: tuple[str, int, int]) -> h5py.File:
        with self._lock:
            if self._pid != os.getpid():  # forked: never share HDF5 handles across processes
                self._files.clear()
                self._pid = os.getpid()
            f = self._files.get(key)
            if f is not None and f.id.valid:
                self._files.move_to_end(key)
                return f
            f = h5py.File(key[0], "r")
            self._files[key] = f
            while len(self._files) > self.maxsize:
                _, old = self._files.popitem(last=False)
                old.close()
            return f

    def clear(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


HANDLES = _HandleCache()


class _H5Proxy:
    """Array-like that reads slices of one HDF5 variable on demand (picklable)."""

    __slots__ = ("file_token", "varpath", "shape", "dtype", "ndim")

    def __init__(self, file_token: tuple[str, int, int], info: VarInfo) -> None:
        self.file_token = file_token
        self.varpath = info.path
        self.shape = info.shape
        self.dtype = info.dtype
        self.ndim = len(info.shape)

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.file_token, self.varpath, self.shape, self.dtype, self.ndim)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.file_token, self.varpath, self.shape, self.dtype, self.ndim = state

    def __getitem__(self, key: Any) -> np.ndarray:
        f = HANDLES.get(self.file_token)
        try:
            return np.asarray(f[self.varpath][key])
        except OSError as exc:
            raise CorruptFileError(
                f"{self.file_token[0]}: reading {self.varpath} failed ({_short(exc)}); "
                "the file is probably truncated or damaged: download it again"
            ) from exc


def lazy_raw(nc: NCFile, info: VarInfo, chunks: tuple[int, ...]) -> da.Array:
    """Return the stored (undecoded) values of ``info`` as a lazy dask array.

    Parameters
    ----------
    nc : NCFile
        The open file (only its path, mtime and size go into the graph).
    info : VarInfo
        The variable.
    chunks : tuple of int
        Dask chunk shape; align it with ``info.storage_chunks`` for speed.
    """
    proxy = _H5Proxy(nc.file_token, info)
    name = "eo-read-" + tokenize(nc.file_token, info.path, chunks)
    return da.from_array(
        proxy,
        chunks=chunks,
        name=name,
        lock=False,
        asarray=True,
        meta=np.empty((0,) * len(info.shape), dtype=info.dtype),
    )


# --------------------------------------------------------------------------------------
# Pure decoding kernels (numpy in, numpy out)
# --------------------------------------------------------------------------------------


def decode_float(raw: np.ndarray, fill_value: float | None, dtype: Any = np.float32) -> np.ndarray:
    """Cast ``raw`` to float and replace the fill value (exact match) with NaN.

    Parameters
    ----------
    raw : numpy.ndarray
        Stored values.
    fill_value : float or None
        The variable's ``_FillValue``/``missing_value``; None for no fill.
    dtype : numpy dtype
        Output float type.
    """
    out = np.array(raw, dtype=dtype, copy=True)
    if fill_value is not None:
        out[raw == np.asarray(fill_value, dtype=raw.dtype)] = np.nan
    return out


def decode_scaled(
    raw: np.ndarray, fill_value: Any, scale_factor: float, add_offset: float
) -> np.ndarray:
    """Apply CF packing (``raw * scale_factor + add_offset``) in float64; fill -> NaN."""
    out = raw.astype(np.float64) * float(scale_factor) + float(add_offset)
    if fill_value is not None:
        out[raw == fill_value] = np.nan
    return out


_TIME_UNITS = re.compile(
    r"^\s*(?P<unit>milliseconds|seconds|days|hours|minutes|microseconds)"
    r"(?:\s+since\s+(?P<epoch>\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?)?)Z?)?\s*$"
)
_UNIT_NS = {
    "microseconds": 1_000,
    "milliseconds": 1_000_000,
    "seconds": 1_000_000_000,
    "minutes": 60_000_000_000,
    "hours": 3_600_000_000_000,
    "days": 86_400_000_000_000,
}


def parse_time_units(units: str) -> tuple[int, np.datetime64 | None]:
    """Split CF time units into (nanoseconds per unit, epoch or None).

    ``"milliseconds since 2023-10-19 00:00:00"`` gives ``(1_000_000, 2023-10-19)``;
    a bare ``"milliseconds"`` (older S5P files) gives ``(1_000_000, None)``.
    """
    m = _TIME_UNITS.match(units or "")
    if not m:
        raise ValueError(f"unrecognised time units {units!r}")
    epoch = m.group("epoch")
    return _UNIT_NS[m.group("unit")], (
        np.datetime64(epoch.replace(" ", "T"), "ns") if epoch else None
    )


def seconds_to_datetime64(
    values: np.ndarray, epoch: np.datetime64, ns_per_unit: int, fill_value: Any = None
) -> np.ndarray:
    """Convert numeric time offsets to ``datetime64[ns]``, rounded to the microsecond.

    Parameters
    ----------
    values : numpy.ndarray
        Offsets from ``epoch`` in units of ``ns_per_unit`` nanoseconds.
    epoch : numpy.datetime64
        Reference time (UTC).
    ns_per_unit : int
        Nanoseconds per unit of ``values`` (1e9 for seconds).
    fill_value : optional
        Stored fill value, converted to NaT.
    """
    v = np.asarray(values)
    bad = ~np.isfinite(v.astype(np.float64))
    if fill_value is not None:
        bad |= v == fill_value
    if v.dtype.kind in "iu":
        offs = v.astype(np.int64) * np.int64(ns_per_unit)
    else:
        us = np.rint(np.where(bad, 0.0, v.astype(np.float64)) * (ns_per_unit / 1_000.0))
        offs = us.astype(np.int64) * np.int64(1_000)
    out = np.datetime64(epoch, "ns") + offs.astype("timedelta64[ns]")
    out[bad] = np.datetime64("NaT")
    return out
