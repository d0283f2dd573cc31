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
import xarray as xr

from .._version import __version__
from ..errors import EOPipelineWarning, MissingVariableError, QualityWarning, ReaderError, ReaderOptionError, warn
from ..schema import SpeciesInfo, column_attrs, conversion_factor, uncertainty_attrs, validate
from ._netcdf import NCFile, VarInfo, decode_float, lazy_raw

__all__ = ["Reader", "EOPipelineWarning", "QualityWarning", "iso_utc", "not_nat"]


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
        """The ``<species>`` and ``<species>_uncertainty`` variables of the schema."""
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
    return (values * np.float32(factor)).astype(np.float32, copy=False)


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
