# SPDX-License-Identifier: Apache-2.0
"""The reader contract and the helpers readers share.

A reader is a small class with

* ``name`` (registry key), ``description`` and ``file_patterns`` (documentation
  only: detection never looks at file names);
* ``guess_can_open(nc) -> bool``: decides from a file's *content* (global
  attributes, groups, variables) whether it is this reader's product;
* ``open(nc, *, qa_threshold=None, <options>) -> xarray.Dataset``: returns the
  canonical sounding schema (:mod:`eo_pipeline.schema`) without computing anything.

Options must be explicit keyword-only parameters of ``open`` (no ``**kwargs``), so
that :func:`eo_pipeline.open_product` can reject a misspelt option with the list of
valid ones, as xarray does for its backends.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import dask.array as da
import numpy as np
from numba import njit
import xarray as xr

from .._version import __version__
from ..errors import (
    CoordinateWarning,
    EOPipelineWarning,
    MissingVariableError,
    QualityWarning,
    ReaderError,
    ReaderOptionError,
    VariableLayoutError,
    warn,
)
from ..schema import SpeciesInfo, column_attrs, conversion_factor, uncertainty_attrs, validate
from ._netcdf import NCFile, VarInfo, decode_float, lazy_raw, parse_time_units

__all__ = [
    "Reader",
    "EOPipelineWarning",
    "QualityWarning",
    "iso_utc",
    "not_nat",
    "as_int",
    "clean_latitude",
    "clean_longitude",
    "NUMERIC",
    "INTEGER",
    "STRING",
]

#: dtype kinds accepted for numeric variables, integer flags and strings
NUMERIC = "fiu"
INTEGER = "iu"
STRING = "SUO"
_KIND_NAMES = {"f": "floating point", "i": "integer", "u": "unsigned integer", "S": "string", "U": "string",
               "O": "string", "b": "boolean", "V": "compound/opaque", "c": "complex", "M": "datetime",
               "m": "timedelta"}


class Reader(ABC):
    """Base class of all product readers (see the module docstring for the contract)."""

    name: ClassVar[str]
    description: ClassVar[str]
    file_patterns: ClassVar[tuple[str, ...]] = ()
    #: Default chunk length (scanlines or soundings) when the caller gives none.
    default_chunk: ClassVar[int] = 4096

    @abstractmethod
    def guess_can_open(self, nc: NCFile) -> bool:
        """Return True if ``nc``'s content is this reader's product."""

    @abstractmethod
    def open(self, nc: NCFile, *, qa_threshold: float | None = None) -> xr.Dataset:
        """Return the canonical sounding dataset of ``nc`` (lazy)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.description}>"

    # ----------------------------------------------------------------- helpers
    def require(self, nc: NCFile, paths: list[str]) -> dict[str, VarInfo]:
        """Return VarInfo for every path, or raise naming all that are missing."""
        missing = [p for p in paths if not nc.has(p)]
        if missing:
            raise MissingVariableError(
                f"{nc.path}: {self.description} file lacks required variable(s) "
                f"{', '.join(missing)}; it is probably a subset or metadata-only file: "
                "use the full product"
            )
        return {p: nc.variable(p) for p in paths}

    def check_variable(
        self,
        nc: NCFile,
        info: VarInfo,
        *,
        kinds: str = NUMERIC,
        shape: tuple[int | None, ...] | None = None,
    ) -> VarInfo:
        """Check a variable's data type and shape against the documented layout.

        Parameters
        ----------
        nc : NCFile
            The file (for the message).
        info : VarInfo
            The variable.
        kinds : str
            Accepted numpy dtype kinds (``"fiu"`` numeric, ``"iu"`` integer, ``"SUO"`` string).
        shape : tuple, optional
            Expected shape; None entries accept any length on that axis.

        Returns
        -------
        VarInfo
            ``info`` unchanged.

        Raises
        ------
        VariableLayoutError
            Naming the file, the variable, what it holds and what was expected.
        """
        if info.dtype.kind not in kinds:
            wanted = {NUMERIC: "numbers", INTEGER: "integers", STRING: "strings"}.get(
                kinds, " or ".join(sorted({_KIND_NAMES.get(k, k) for k in kinds})))
            raise VariableLayoutError(
                f"{nc.path}: {info.path} holds {_KIND_NAMES.get(info.dtype.kind, str(info.dtype))} data "
                f"({info.dtype}) where {self.description} files store {wanted}; the file is damaged or "
                "was rewritten by another tool: use the original product"
            )
        if shape is not None and (
            len(info.shape) != len(shape)
            or any(e is not None and e != n for e, n in zip(shape, info.shape, strict=True))
        ):
            parts = ["any" if e is None else str(e) for e in shape]
            want = f"({parts[0]},)" if len(parts) == 1 else "(" + ", ".join(parts) + ")"
            raise VariableLayoutError(
                f"{nc.path}: {info.path} has shape {info.shape} where {want} was expected from the other "
                f"variables of this {self.description} file; the file is damaged or inconsistent: use the "
                "original product"
            )
        return info

    def time_units(self, nc: NCFile, info: VarInfo, default: str) -> tuple[int, np.datetime64 | None]:
        """Parse a time variable's ``units`` (VariableLayoutError naming it if unreadable)."""
        units = str(info.attrs.get("units", default))
        try:
            return parse_time_units(units)
        except ValueError:
            raise VariableLayoutError(
                f"{nc.path}: {info.path} has time units {units[:60]!r}, not '<unit> since <date>'; the "
                "file is damaged or not a genuine product"
            ) from None

    def read_coordinate(self, nc: NCFile, info: VarInfo, chunks: tuple[int, ...], axis: str,
                        *, corners: bool = False) -> da.Array:
        """Lazy float array of a latitude (``axis="latitude"``) or longitude with impossible values masked.

        Fill values become NaN as in :meth:`read_float`; infinite values, latitudes beyond
        +-90 and longitudes outside -360..360 become NaN too (so the soundings are not
        ``valid`` and never reach a map), with a :class:`CoordinateWarning` giving their
        number when the data are computed; longitudes are normalised to -180..180.
        """
        raw = lazy_raw(nc, info, chunks)
        return raw.map_blocks(
            _decode_coordinate, fill_value=info.fill_value, axis=axis, corners=corners, dtype=np.float32,
            label=f"{nc.name}", source=info.path, meta=np.empty((0,) * raw.ndim, dtype=np.float32),
        )

    @staticmethod
    def check_threshold(qa_threshold: float | None, default: float) -> float:
        """Validate a QA threshold on the 0..1 scale; None gives ``default``."""
        if qa_threshold is None:
            return float(default)
        try:
            q = float(qa_threshold)
        except (TypeError, ValueError) as exc:
            raise ReaderOptionError(
                f"qa_threshold must be a number between 0 and 1, got {qa_threshold!r}"
            ) from exc
        if not (0.0 <= q <= 1.0) or math.isnan(q):
            raise ReaderOptionError(
                f"qa_threshold must be between 0 and 1 (the 0..1 quality scale), got {q}; "
                "for S5P use e.g. 0.5, not 50"
            )
        return q

    @staticmethod
    def chunk_length(info: VarInfo, axis: int, requested: int | None, default: int) -> int:
        """Chunk length along ``axis``: a multiple of the storage chunk near the target."""
        n = info.shape[axis]
        if requested is not None:
            if int(requested) < 1:
                raise ReaderOptionError(f"chunks must be a positive integer, got {requested!r}")
            return max(1, min(int(requested), n))
        store = info.storage_chunks[axis] if info.storage_chunks else 1
        store = max(1, min(store, n))
        target = max(default, store)
        return max(1, min(n, (target // store) * store))

    @staticmethod
    def read_float(nc: NCFile, info: VarInfo, chunks: tuple[int, ...], dtype: Any = np.float32) -> da.Array:
        """Lazy float array of ``info`` with its fill value replaced by NaN."""
        raw = lazy_raw(nc, info, chunks)
        return raw.map_blocks(
            decode_float, fill_value=info.fill_value, dtype=np.dtype(dtype),
            meta=np.empty((0,) * raw.ndim, dtype=dtype),
        )

    def read_converted(self, nc: NCFile, info: VarInfo, target: str, chunks: tuple[int, ...]) -> da.Array:
        """Lazy float32 array of ``info`` converted from its ``units`` to ``target`` units."""
        arr = self.read_float(nc, info, chunks)
        units = str(info.attrs.get("units", target))
        factor = conversion_factor(units, target)
        if factor is None:
            raise ReaderError(
                f"{nc.path}: {info.path} has units {units!r}, which cannot be converted to "
                f"{target}; is this really a {self.description} file?"
            )
        if factor == 1.0:
            return arr
        return arr.map_blocks(_scale, factor=factor, dtype=np.float32)

    @staticmethod
    def column_variables(
        info: SpeciesInfo,
        column: da.Array,
        column_source: str,
        uncertainty: da.Array | None,
        uncertainty_source: str | None,
        dims: tuple[str, ...],
    ) -> dict[str, xr.DataArray]:
        """Return the ``<species>`` and ``<species>_uncertainty`` variables of the schema."""
        if uncertainty is None:
            uncertainty = da.full(column.shape, np.nan, dtype=np.float32, chunks=column.chunks)
        return {
            info.name: xr.DataArray(column, dims=dims, attrs=column_attrs(info, column_source)),
            f"{info.name}_uncertainty": xr.DataArray(
                uncertainty, dims=dims, attrs=uncertainty_attrs(info, uncertainty_source)
            ),
        }

    def finish(self, ds: xr.Dataset, nc: NCFile, attrs: dict[str, Any]) -> xr.Dataset:
        """Attach the common attributes, check the schema and return ``ds``."""
        ds.attrs.update(attrs)
        ds.attrs.setdefault("source_file", nc.name)
        ds.attrs["source_path"] = str(nc.path)
        ds.attrs["reader"] = self.name
        ds.attrs["eo_pipeline_version"] = __version__
        for key in ("synthetic", "synthetic_note"):
            if key in nc.attrs:
                ds.attrs[key] = nc.attrs[key]
        ds["valid"].attrs.update(
            long_name="sounding passes fill-value and quality checks",
            qa_rule=ds.attrs.get("qa_rule", ""),
        )
        validate(ds)
        return ds

    @staticmethod
    def warn_no_qa(nc: NCFile, what: str) -> None:
        """Warn that a subset lacks its quality variable and is used unfiltered."""
        warn(
            f"{nc.name}: no {what} in this product subset; every non-fill pixel counts as valid "
            "(pass qa_threshold>0 to require QA, which then fails for this file)",
            QualityWarning,
        )


def _scale(values: np.ndarray, factor: float) -> np.ndarray:
    """Kernel: multiply by a unit-conversion factor, keeping float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        return (values * np.float32(factor)).astype(np.float32, copy=False)


def clean_latitude(lat: np.ndarray) -> tuple[np.ndarray, int]:
    """Kernel: latitudes in degrees with impossible values set to NaN.

    Returns the cleaned copy and the number of values that were finite-but-beyond
    +-90 or infinite (NaN, the decoded fill value, is not counted).
    """
    out = np.array(lat, copy=True)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(out) & ~(np.abs(out) <= 90.0)
    out[bad] = np.nan
    return out, int(bad.sum())


def clean_longitude(lon: np.ndarray) -> tuple[np.ndarray, int]:
    """Kernel: longitudes normalised to -180..180 degrees, impossible values set to NaN.

    Values in (180, 360] (the 0..360 convention) lose 360 and values in [-360, -180)
    gain 360; infinite values and values beyond +-360 become NaN and are counted.
    """
    out = np.array(lon, copy=True)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(out) & ~(np.abs(out) <= 360.0)
        out[bad] = np.nan
        out[out > 180.0] -= 360.0
        out[out < -180.0] += 360.0
    return out, int(bad.sum())


@njit(cache=True, nogil=True)
def _decode_clean_f32(raw: np.ndarray, fill: np.float32, has_fill: bool, latitude: bool) -> tuple[np.ndarray, int]:
    """Kernel (one pass): :func:`decode_float` then :func:`clean_latitude` or :func:`clean_longitude`, float32."""
    flat = raw.ravel()
    out = np.empty(flat.size, np.float32)
    bad = 0
    limit = np.float32(90.0) if latitude else np.float32(360.0)
    for i in range(flat.size):
        v = flat[i]
        if has_fill and v == fill:
            out[i] = np.nan
            continue
        if v != v:
            out[i] = v
            continue
        if not abs(v) <= limit:
            out[i] = np.nan
            bad += 1
            continue
        if not latitude:
            if v > np.float32(180.0):
                v = v - np.float32(360.0)
            if v < np.float32(-180.0):
                v = v + np.float32(360.0)
        out[i] = v
    return out.reshape(raw.shape), bad


def _decode_coordinate(raw: np.ndarray, fill_value: Any, axis: str, corners: bool, label: str,
                       source: str) -> np.ndarray:
    """map_blocks task: decode (float32), clean and (as a side effect) warn about masked coordinates."""
    fill = None
    if fill_value is not None and raw.dtype == np.float32:
        with np.errstate(all="ignore"):
            fill = np.asarray(fill_value).astype(np.float32)
    if raw.dtype == np.float32 and (fill_value is None or fill is not None):  # the common case, in one pass
        out, n_bad = _decode_clean_f32(np.ascontiguousarray(raw), np.float32(0.0 if fill is None else fill),
                                       fill is not None, axis == "latitude")
    else:
        values = decode_float(raw, fill_value, np.float32)
        clean = clean_latitude if axis == "latitude" else clean_longitude
        out, n_bad = clean(values)
    if n_bad:
        limit = "+-90" if axis == "latitude" else "-360..360"
        if corners:
            what = (f"{n_bad} footprint corner(s) with {axis} outside {limit} degrees or infinite set to NaN; "
                    "those footprints are dropped by area gridding (counted in n_footprints_dropped)")
        else:
            what = f"{n_bad} sounding(s) with {axis} outside {limit} degrees or infinite masked as invalid"
        warn(f"{label}: {what} (variable {source})", CoordinateWarning)
    return out


def as_int(value: Any, default: int = -1) -> int:
    """Return an integer attribute value, or ``default`` where it is absent or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _is_time(t: np.ndarray) -> np.ndarray:
    """Kernel: True where ``t`` is not NaT."""
    return ~np.isnat(t)


def not_nat(time: da.Array) -> da.Array:
    """Lazy mask of the entries of a datetime64 dask array that are not NaT."""
    return time.map_blocks(_is_time, dtype=bool, meta=np.empty((0,) * time.ndim, dtype=bool))


def iso_utc(value: Any) -> str:
    """Normalise a time stamp (``20120101T000000Z``, numpy datetime64, ...) to ISO 8601 UTC."""
    if value is None:
        return ""
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return ""
        return str(np.datetime_as_string(value.astype("datetime64[s]"), unit="s")) + "Z"
    text = str(value).strip()
    if len(text) >= 15 and text[8] == "T" and text[:8].isdigit():  # 20120101T000000Z
        text = f"{text[0:4]}-{text[4:6]}-{text[6:8]}T{text[9:11]}:{text[11:13]}:{text[13:15]}Z"
    return text
