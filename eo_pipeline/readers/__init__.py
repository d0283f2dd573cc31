# SPDX-License-Identifier: Apache-2.0
"""Product readers, their registry, and :func:`open_product`.

Built-in readers are listed in :data:`BUILTIN_READERS`; third-party packages add
their own through the ``eo_pipeline.readers`` entry-point group::

    [project.entry-points."eo_pipeline.readers"]
    my_product = "my_package.reader:MyReader"

A reader is a subclass of :class:`~eo_pipeline.readers.base.Reader` (or any class
with the same methods). Detection looks at file *content* only: each reader's
``guess_can_open`` is asked in turn, built-ins first.

Damaged inputs
--------------
Every failure of the HDF5/netCDF libraries on a file (opening, metadata, reader
detection, each reader's ``open`` and the lazy reads at compute time) is raised as an
:class:`~eo_pipeline.errors.EOPipelineError` subclass whose one-line message names
the file: ``TruncatedFileError``/``CorruptFileError`` (the library failed),
``MissingVariableError``/``VariableLayoutError``/``ProductLayoutError`` (the file
reads, but its layout is not the documented one), ``EmptyFileError``,
``NotNetCDFError``, ``UnreadableFileError``, ``FileChangedError``. Impossible
coordinates are masked, not fatal: soundings with infinite coordinates or latitudes
beyond +-90 are not ``valid`` (a :class:`~eo_pipeline.errors.CoordinateWarning` gives
their number when computed), longitudes in 0..360 are normalised to -180..180.
:func:`verify_product` reads everything the gridding needs before a job builds its
graph (to skip damaged files), :func:`drop_duplicates` removes a product given twice,
and :func:`close_files` closes the file handles kept for lazy reads.
"""

from __future__ import annotations

import importlib
import inspect
import os
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import xarray as xr

from ..errors import EOPipelineError, ProductLayoutError, ReaderOptionError, UnknownProductError
from ._netcdf import NCFile, close_files, library_error
from .base import EOPipelineWarning, QualityWarning, Reader
from .integrity import drop_duplicates, find_duplicates, product_identity, verify_product

__all__ = [
    "BUILTIN_READERS",
    "ENTRY_POINT_GROUP",
    "Reader",
    "EOPipelineWarning",
    "QualityWarning",
    "list_readers",
    "register_reader",
    "detect_reader",
    "open_product",
    "open_with",
    "close_files",
    "verify_product",
    "product_identity",
    "find_duplicates",
    "drop_duplicates",
]

ENTRY_POINT_GROUP = "eo_pipeline.readers"

#: name -> "module:Class" of the readers that ship with eo_pipeline (product family order).
BUILTIN_READERS: dict[str, str] = {
    "s5p_ch4": "eo_pipeline.readers.s5p:S5PCH4Reader",
    "s5p_co": "eo_pipeline.readers.s5p:S5PCOReader",
    "s5p_blended_ch4": "eo_pipeline.readers.s5p:S5PBlendedCH4Reader",
    "oco2_lite": "eo_pipeline.readers.oco_lite:OCO2LiteReader",
    "oco3_lite": "eo_pipeline.readers.oco_lite:OCO3LiteReader",
    "acos_lite": "eo_pipeline.readers.oco_lite:ACOSLiteReader",
    "esacci_ghg_l2": "eo_pipeline.readers.esacci:ESACCIGHGReader",
}

_RUNTIME: dict[str, type] = {}


def _load(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _check_reader_class(name: str, cls: type) -> None:
    for method in ("guess_can_open", "open"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"reader {name!r} ({cls!r}) has no {method}() method")
    params = inspect.signature(cls.open).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise TypeError(
            f"reader {name!r}: open() must list its options as keyword-only parameters, "
            "not **kwargs, so that misspelt options can be rejected"
        )


@cache
def _entry_point_readers() -> dict[str, type]:
    found: dict[str, type] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_READERS:
            continue  # built-ins win; a plugin cannot shadow them silently
        cls = ep.load()
        _check_reader_class(ep.name, cls)
        found[ep.name] = cls
    return found


def register_reader(name: str, cls: type) -> None:
    """Register a reader class at run time (for notebooks and tests).

    Parameters
    ----------
    name : str
        Registry name; must not clash with a built-in reader.
    cls : type
        A :class:`Reader` subclass.
    """
    if name in BUILTIN_READERS:
        raise ValueError(f"{name!r} is a built-in reader name; choose another")
    _check_reader_class(name, cls)
    _RUNTIME[name] = cls


def list_readers() -> dict[str, Reader]:
    """Return ``{name: reader instance}`` for built-in, entry-point and run-time readers."""
    classes: dict[str, type] = {name: _load(t) for name, t in BUILTIN_READERS.items()}
    classes.update(_entry_point_readers())
    classes.update(_RUNTIME)
    return {name: cls() for name, cls in classes.items()}


def _unexpected(nc: NCFile, doing: str, exc: Exception) -> EOPipelineError:
    """Classify an exception that escaped a reader: a library failure or an unexpected layout.

    Built-in readers reach the file only through :class:`NCFile`, which raises
    :class:`~eo_pipeline.errors.CorruptFileError` itself; what remains is either a
    plugin touching h5py directly (OSError/RuntimeError: the library failed) or a
    structure the reader did not expect (anything else).
    """
    if isinstance(exc, OSError | RuntimeError):
        return library_error(nc.path, doing, exc)
    return ProductLayoutError(
        f"{nc.path}: {doing} failed because its layout differs from the documented one "
        f"({type(exc).__name__}: {str(exc)[:160]}); check that the file is an unmodified product, "
        "and report it with the file name if it is"
    )


def detect_reader(nc: NCFile, readers: dict[str, Reader] | None = None) -> Reader:
    """Return the first reader whose ``guess_can_open`` claims ``nc``.

    Raises
    ------
    UnknownProductError
        Naming the file and every reader that was tried.
    CorruptFileError
        The file's metadata cannot be read (damaged file), naming the file.
    ProductLayoutError
        A reader's check failed on an unexpected structure.
    """
    readers = list_readers() if readers is None else readers
    for name, reader in readers.items():
        try:
            claimed = reader.guess_can_open(nc)
        except EOPipelineError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must name the file
            raise _unexpected(nc, f"reader {name!r} inspecting it", exc) from exc
        if claimed:
            return reader
    title = nc.attrs.get("title", nc.attrs.get("Title", ""))
    hint = f" (its title is {title!r})" if title else ""
    raise UnknownProductError(
        f"{nc.path}: no reader recognises this file{hint}; tried {', '.join(readers)}. "
        "Check that it is one of the supported GHG products, or pass reader=<name> / "
        f"install a plugin that registers a reader under {ENTRY_POINT_GROUP!r}"
    )


def _check_options(reader: Reader, options: dict[str, Any]) -> None:
    params = inspect.signature(reader.open).parameters
    allowed = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ReaderOptionError(
            f"reader {reader.name!r} does not take option(s) {unknown}; its options are {allowed}"
        )


def open_product(
    path: str | os.PathLike[str],
    *,
    qa_threshold: float | None = None,
    reader: str | None = None,
    **reader_options: Any,
) -> xr.Dataset:
    """Open a Level-2 greenhouse-gas product as a lazy canonical sounding dataset.

    The product is recognised from the file's content (attributes, groups,
    variables), never from its name. Nothing is computed: every variable is a dask
    array that reads the file when computed.

    Parameters
    ----------
    path : path-like
        A NetCDF-4/HDF5 Level-2 file (S5P CH4/CO/blended CH4, OCO-2/OCO-3/ACOS Lite,
        ESA CCI GHG L2).
    qa_threshold : float, optional
        Quality threshold on the 0..1 scale of the product's quality rule. None
        (default) applies the product's documented default (0.5 for S5P
        ``qa_value``; flag == 0 for OCO/ACOS/CCI); 0 applies no quality filter
        beyond fill values.
    reader : str, optional
        Force a reader by registry name instead of detecting one.
    **reader_options
        Options of the reader's ``open`` (see ``eo-pipeline readers``), e.g.
        ``variant="bias_corrected_destriped"`` or ``averaging_kernel=True`` for S5P CH4.

    Returns
    -------
    xarray.Dataset
        The canonical sounding schema documented in :mod:`eo_pipeline.schema`.

    Raises
    ------
    EOPipelineError
        A subclass naming the file and the problem: missing file
        (:class:`~eo_pipeline.errors.InputFileNotFoundError`), unreadable file
        (``UnreadableFileError``), empty file (``EmptyFileError``), directory or not
        NetCDF/HDF5 (``NotNetCDFError``), truncated or damaged file (``TruncatedFileError``,
        ``CorruptFileError``), unknown product (``UnknownProductError``), missing required
        variable (``MissingVariableError``), variable of the wrong type or shape
        (``VariableLayoutError``), other unexpected structure (``ProductLayoutError``),
        bad option (``ReaderOptionError``). Damaged data chunks are found only when the
        data are computed, as ``CorruptFileError`` from the compute (see
        :func:`verify_product`).
    """
    readers = list_readers()
    with NCFile(path) as nc:
        if reader is not None:
            if reader not in readers:
                raise ReaderOptionError(f"unknown reader {reader!r}; available: {', '.join(readers)}")
            chosen = readers[reader]
        else:
            chosen = detect_reader(nc, readers)
        return open_with(nc, chosen, qa_threshold=qa_threshold, **reader_options)


def open_with(nc: NCFile, reader: Reader, *, qa_threshold: float | None = None, **reader_options: Any) -> xr.Dataset:
    """Open an already opened file with a chosen reader (what :func:`open_product` does after detection).

    A job detects the reader first, to pick that reader's options, and then opens the
    file once instead of twice.
    """
    _check_options(reader, reader_options)
    try:
        return reader.open(nc, qa_threshold=qa_threshold, **reader_options)
    except EOPipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure must name the file
        raise _unexpected(nc, f"opening it as {reader.description}", exc) from exc
