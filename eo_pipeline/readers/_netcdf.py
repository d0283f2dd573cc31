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
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import h5netcdf
import h5py
import numpy as np
from dask.base import tokenize

try:  # zlib-ng inflates S5P's deflated chunks about 1.7x faster than zlib, with the same API and output
    from zlib_ng.zlib_ng import decompress as _inflate
    from zlib_ng.zlib_ng import error as _InflateError
except ImportError:  # pragma: no cover - zlib-ng is a dependency; the standard library is the fallback
    from zlib import decompress as _inflate
    from zlib import error as _InflateError

from ..errors import (
    CorruptFileError,
    EmptyFileError,
    FileChangedError,
    InputFileNotFoundError,
    NotNetCDFError,
    TruncatedFileError,
    UnreadableFileError,
)

__all__ = [
    "NCFile",
    "HANDLES",
    "LIBRARY_ERRORS",
    "close_files",
    "library_error",
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
    UnreadableFileError
        The file exists but this process may not read it.
    EmptyFileError
        The file holds 0 bytes.
    NotNetCDFError
        The path is a directory, a NetCDF-3 classic file or something else entirely.
    """
    p = Path(path)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except PermissionError as exc:  # a folder on the way may not be searched by this user
        raise UnreadableFileError(
            f"{p}: permission denied when looking it up (a folder on its path may not be entered by "
            "this user); give this user access to the folder and the file, or copy the file elsewhere"
        ) from exc
    if not exists:
        raise InputFileNotFoundError(p)
    if is_dir:
        raise NotNetCDFError(f"{p}: is a directory, not a NetCDF-4/HDF5 file; pass the product file")
    size, fh = _open_for_sniffing(p)
    with fh:
        try:
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
        except OSError as exc:  # an I/O error while reading the first bytes
            raise CorruptFileError(f"{p}: reading its first bytes failed ({_short(exc)}); check the disk") from exc
    raise NotNetCDFError(
        f"{p}: not a NetCDF-4/HDF5 file (no HDF5 signature in its first bytes); "
        "check that it is a Level-2 product and that the download completed"
    )


def _open_for_sniffing(p: Path) -> tuple[int, Any]:
    """Return the size and an open binary handle of ``p`` (one-line errors if refused or empty)."""
    try:
        size = p.stat().st_size
        fh = open(p, "rb")  # noqa: SIM115 - the caller closes it; opening is what can be refused
    except PermissionError as exc:
        raise UnreadableFileError(
            f"{p}: permission denied when opening it for reading; give this user read access "
            "(e.g. chmod a+r) or copy the file somewhere readable"
        ) from exc
    except OSError as exc:
        raise CorruptFileError(f"{p}: cannot be opened ({_short(exc)}); check the disk or the path") from exc
    if size == 0:
        fh.close()
        raise EmptyFileError(
            f"{p}: is empty (0 bytes); the download or copy was probably interrupted: fetch the file again"
        )
    return size, fh


#: Exceptions the HDF5/netCDF libraries (h5py, h5netcdf) raise on damaged files.
LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError,
    AssertionError, UnicodeDecodeError, OverflowError, SystemError,
)

_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


def library_error(
    path: str | os.PathLike[str], doing: str, exc: BaseException
) -> CorruptFileError | UnreadableFileError:
    """Turn a failure of the HDF5/netCDF libraries on ``path`` into a one-line error.

    Parameters
    ----------
    path : path-like
        The file being read.
    doing : str
        What was being done, e.g. ``"opening it"`` or ``"reading PRODUCT/latitude"``.
    exc : BaseException
        The library's exception (its first line is quoted in the message).

    Returns
    -------
    CorruptFileError or UnreadableFileError
        A :class:`TruncatedFileError` where HDF5 reports the file shorter than its
        superblock says, a plain :class:`CorruptFileError` otherwise (permission
        problems become :class:`UnreadableFileError`); the caller raises it ``from exc``.
    """
    text = _short(exc)
    if isinstance(exc, PermissionError) or "Permission denied" in str(exc):
        return UnreadableFileError(
            f"{path}: permission denied when opening it for reading; give this user read access "
            "(e.g. chmod a+r) or copy the file somewhere readable"
        )
    m = _TRUNCATED.search(str(exc))
    if m:
        return TruncatedFileError(
            f"{path}: is truncated or damaged: it has {int(m.group(1))} bytes but its HDF5 superblock "
            f"records {int(m.group(2))} (an interrupted download or copy, or a damaged superblock); "
            "fetch the file again"
        )
    return CorruptFileError(
        f"{path}: is damaged: the HDF5 library failed {doing} ({type(exc).__name__}: {text}); "
        "the file is probably corrupt or truncated: download it again"
    )


#: HDF5 attributes that netCDF-4 uses for its own bookkeeping (dimension scales, the file's
#: provenance); not netCDF attributes (h5netcdf hides the same set).
_HIDDEN_ATTRS = frozenset(["REFERENCE_LIST", "CLASS", "DIMENSION_LIST", "NAME", "_Netcdf4Dimid",
                           "_Netcdf4Coordinates", "_nc3_strict", "_NCProperties"])


def _netcdf_attr(h5attrs: h5py.AttributeManager, key: str) -> Any:
    """One attribute as h5netcdf returns it, read once: fixed-length strings decoded, one-element lists unwrapped."""
    value = h5attrs[key]
    stored = h5attrs.get_id(key).dtype
    info = h5py.check_string_dtype(stored)
    if isinstance(value, h5py.Empty):
        return b"" if info and info.length == 1 else np.array([], dtype=stored)
    if info is not None:
        if info.length is not None and info.length > 1:  # fixed-length strings ("S1" char arrays stay bytes)
            value = (value.decode(info.encoding, "surrogateescape") if np.isscalar(value)
                     else [b.decode(info.encoding, "surrogateescape") for b in value.flat])
        elif not np.isscalar(value):
            value = value.tolist()
    if isinstance(value, np.ndarray | list) and len(value) == 1:
        return value[0]
    return value


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
                if isinstance(value, list | np.ndarray):
                    value = value[0] if len(value) else None
                return value
        return None


class _GuardedH5NetCDF(h5netcdf.File):
    """h5netcdf.File whose ``close``/``__del__`` survive a constructor that failed half-way.

    When ``h5netcdf.File.__init__`` raises after opening the HDF5 file (damaged root
    attributes or links), the half-built object lacks ``_writable`` and its
    ``__del__`` prints "Exception ignored ... AttributeError" at garbage collection.
    Here such an object just marks itself closed; :class:`NCFile` closes the h5py
    file it handed in.
    """

    def close(self) -> None:
        if "_writable" not in self.__dict__:
            self.__dict__["_closed"] = True
            return
        try:
            super().close()
        except LIBRARY_ERRORS:  # closing a damaged file: nothing left to save
            self.__dict__["_closed"] = True

    __del__ = close


class NCFile:
    """Read-only view of a NetCDF-4 file's structure: groups, variables, attributes.

    Use as a context manager; it reads metadata only. Every failure of the HDF5
    libraries while opening the file or reading its metadata (attributes, groups,
    dimensions, variable headers) is raised as :class:`CorruptFileError` naming the
    file, and a name that the file does not contain is told apart from one the
    library cannot open: :meth:`has` and :meth:`has_group` return False only for the
    former.

    Parameters
    ----------
    path : path-like
        The file. Its format is checked first with :func:`sniff_format`.

    Raises
    ------
    InputFileNotFoundError, UnreadableFileError, EmptyFileError, NotNetCDFError, CorruptFileError
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()
        self._h5: h5py.File | None = None
        self._f: h5netcdf.File | None = None
        sniff_format(self.path)
        try:
            stat = self.path.stat()
            self._h5 = h5py.File(self.path, "r")
            self._f = _GuardedH5NetCDF(self._h5, "r", decode_vlen_strings=False)
        except LIBRARY_ERRORS as exc:
            self.close()
            raise library_error(self.path, "opening it", exc) from exc
        self.file_token = (str(self.path), stat.st_mtime_ns, stat.st_size)
        self._attrs: dict[str, Any] | None = None

    def __enter__(self) -> NCFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (never raises, also after a failed open)."""
        f, h5 = getattr(self, "_f", None), getattr(self, "_h5", None)
        self._f = self._h5 = None
        if f is not None:
            f.close()
        if h5 is not None:
            try:
                h5.close()
            except LIBRARY_ERRORS:  # pragma: no cover - closing a damaged file
                pass

    def __del__(self) -> None:
        self.close()

    def _corrupt(self, doing: str, exc: BaseException) -> CorruptFileError | UnreadableFileError:
        return library_error(self.path, doing, exc)

    @property
    def _root(self) -> h5netcdf.File:
        if self._f is None:
            raise ValueError(f"{self.path}: NCFile used after close()")
        return self._f

    @property
    def name(self) -> str:
        """The file's base name."""
        return self.path.name

    def _link_exists(self, path: str) -> bool:
        """Return True if every component of ``path`` is a link in its parent group (HDF5 level).

        Reads only link tables, never the linked objects' headers; raises the library's
        exception when a parent group itself is damaged.
        """
        assert self._h5 is not None
        g: Any = self._h5
        parts = [p for p in path.split("/") if p]
        for i, part in enumerate(parts):
            if not g.id.links.exists(part.encode()):
                return False
            if i < len(parts) - 1:
                g = g[part]
        return True

    def _node(self, path: str) -> Any:
        """Return the h5netcdf Group/Variable at ``path``, or None if the file has no such name.

        Raises
        ------
        CorruptFileError
            The name exists but the library cannot open it (or its parent).
        """
        root = self._root
        if path in ("", "/"):
            return root
        try:
            return root[path]
        except KeyError as exc:
            # h5netcdf (and h5py) raise KeyError both for an absent name and for an object
            # whose header is damaged: ask the link tables which one it is
            try:
                exists = self._link_exists(path)
                if exists:
                    assert self._h5 is not None
                    self._h5[path]  # opens cleanly: a bare dimension scale, not a netCDF variable
            except LIBRARY_ERRORS as exc2:
                raise self._corrupt(f"opening {path}", exc2) from exc2
            if not exists:
                return None
            if "Unable to" in str(exc):
                raise self._corrupt(f"opening {path}", exc) from exc
            return None
        except LIBRARY_ERRORS as exc:
            raise self._corrupt(f"opening {path}", exc) from exc

    def _read_attrs(self, obj: h5py.Group | h5py.Dataset, where: str) -> dict[str, Any]:
        """The netCDF attributes of an h5py group or dataset of this file, as plain values.

        Read through h5py, each attribute once, as h5netcdf presents them (its hidden
        HDF5 dimension-scale attributes left out, strings decoded the same way): h5netcdf's
        own mapping reads every value three times, a sixth of the time of opening a product.
        """
        try:
            h5attrs = obj.attrs
            return {str(k): _py(_netcdf_attr(h5attrs, k)) for k in h5attrs if k not in _HIDDEN_ATTRS}
        except LIBRARY_ERRORS as exc:
            raise self._corrupt(f"reading the attributes of {where}", exc) from exc

    @property
    def attrs(self) -> dict[str, Any]:
        """Global attributes as plain Python values."""
        if self._attrs is None:
            assert self._h5 is not None
            self._attrs = self._read_attrs(self._h5, "the root group")
        return self._attrs

    def group_attrs(self, group: str) -> dict[str, Any]:
        """Attributes of ``group`` (e.g. ``METADATA/GRANULE_DESCRIPTION``); empty if absent."""
        g = self._node(group)
        if not isinstance(g, h5netcdf.Group):
            return {}
        assert self._h5 is not None
        try:
            obj = self._h5[group] if group.strip("/") else self._h5
        except LIBRARY_ERRORS as exc:
            raise self._corrupt(f"reading the attributes of {group}", exc) from exc
        return self._read_attrs(obj, group)

    def has_group(self, group: str) -> bool:
        """Return True if ``group`` exists (CorruptFileError if the library cannot open it)."""
        return isinstance(self._node(group), h5netcdf.Group)

    def has(self, path: str) -> bool:
        """Return True if the variable ``path`` exists (CorruptFileError if the library cannot open it)."""
        return isinstance(self._node(path), h5netcdf.Variable)

    def dimensions(self, group: str = "/") -> dict[str, int]:
        """Dimension sizes defined in ``group`` (empty if the group is absent)."""
        g = self._node(group)
        if not isinstance(g, h5netcdf.Group):
            return {}
        try:
            return {str(k): int(v.size if v.size is not None else 0) for k, v in g.dimensions.items()}
        except LIBRARY_ERRORS as exc:
            raise self._corrupt(f"reading the dimensions of {group}", exc) from exc

    def variable(self, path: str) -> VarInfo:
        """Return :class:`VarInfo` for the variable ``path``.

        Raises
        ------
        KeyError
            The file has no variable ``path`` (readers check :meth:`has` first).
        CorruptFileError
            The variable's header or attributes cannot be read.
        """
        v = self._node(path)
        if not isinstance(v, h5netcdf.Variable):
            raise KeyError(path)
        try:
            # the HDF5 dataspace and type, without h5netcdf's opinion of the netCDF dimensions
            assert self._h5 is not None
            h = self._h5[path]
            shape = tuple(int(s) for s in h.shape)
            dtype = np.dtype(object) if h5py.check_string_dtype(h.dtype) else np.dtype(h.dtype)
            chunks = tuple(int(c) for c in h.chunks) if h.chunks else None
        except LIBRARY_ERRORS as exc:
            raise self._corrupt(f"reading the header of {path}", exc) from exc
        try:
            dims = tuple(v.dimensions)
        except Exception:  # noqa: BLE001 - pure HDF5 datasets without dimension scales
            dims = tuple(f"dim_{i}" for i in range(len(shape)))
        if len(dims) != len(shape):
            dims = tuple(f"dim_{i}" for i in range(len(shape)))
        return VarInfo(
            path=path.lstrip("/"),
            shape=shape,
            dtype=dtype,
            dims=dims,
            attrs=self._read_attrs(h, path),
            storage_chunks=chunks,
        )

    def read_small(self, path: str, index: Any = ()) -> np.ndarray:
        """Read (a slice of) a small variable now, raw, for metadata such as a time range.

        Raises
        ------
        CorruptFileError
            The library fails to read the data (a damaged chunk).
        """
        v = self._node(path)
        if not isinstance(v, h5netcdf.Variable):
            raise KeyError(path)
        try:
            return np.asarray(v[index])
        except LIBRARY_ERRORS as exc:
            raise self._corrupt(f"reading {path}", exc) from exc


def _short(exc: BaseException) -> str:
    """Return the first line of an exception's message, whitespace-collapsed, at most 160 characters."""
    raw = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = raw.strip().splitlines()[0] if raw.strip() else type(exc).__name__
    return re.sub(r"\s+", " ", text)[:160]


class _HandleCache:
    """Per-process cache of open h5py files, keyed by (path, mtime, size).

    Handles are opened lazily by the dask tasks that read data (in worker threads or
    processes). A file that fails to open is never cached; a handle on which a read
    failed is closed and dropped (:meth:`discard`), and the file is remembered as failed:
    later reads of it (other chunks, still running in other threads) get a handle of
    their own that is closed right after the read, so no handle to a damaged file stays
    open. :func:`close_files` closes them all and forgets the failures.
    """

    def __init__(self, maxsize: int = 64) -> None:
        self._lock = threading.Lock()
        self._files: OrderedDict[tuple[str, int, int], h5py.File] = OrderedDict()
        self._failed: set[tuple[str, int, int]] = set()
        self._pid = os.getpid()
        self.maxsize = maxsize

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, key: object) -> bool:
        return key in self._files

    def get(self, key: tuple[str, int, int]) -> tuple[h5py.File, bool]:
        """Return an open handle of the file ``key`` and whether it is cached (else: close it after use).

        Raises
        ------
        InputFileNotFoundError, FileChangedError, UnreadableFileError, CorruptFileError
        """
        with self._lock:
            if self._pid != os.getpid():  # forked: never share HDF5 handles across processes
                self._files.clear()
                self._failed.clear()
                self._pid = os.getpid()
            f = self._files.get(key)
            if f is not None and f.id.valid:
                self._files.move_to_end(key)
                return f, True
            self._files.pop(key, None)
            path = key[0]
            try:
                st = os.stat(path)
            except FileNotFoundError as exc:
                raise InputFileNotFoundError(path) from exc
            except OSError as exc:
                raise library_error(path, "checking it before reading", exc) from exc
            if (st.st_mtime_ns, st.st_size) != (key[1], key[2]):
                raise FileChangedError(
                    f"{path}: changed on disk after it was opened (size {key[2]} -> {st.st_size} bytes); "
                    "open it again (and do not rewrite inputs while a job runs)"
                )
            try:
                f = h5py.File(path, "r")
            except LIBRARY_ERRORS as exc:
                raise library_error(path, "opening it for reading", exc) from exc
            if key in self._failed:
                return f, False
            self._files[key] = f
            while len(self._files) > self.maxsize:
                _, old = self._files.popitem(last=False)
                _close_quietly(old)
            return f, True

    def discard(self, key: tuple[str, int, int]) -> None:
        """Close and forget the handle of ``key`` after a failed read; do not cache it again."""
        with self._lock:
            f = self._files.pop(key, None)
            self._failed.add(key)
        if f is not None:
            _close_quietly(f)

    def clear(self) -> None:
        """Close every cached handle and forget which files failed."""
        with self._lock:
            files = list(self._files.values())
            self._files.clear()
            self._failed.clear()
        for f in files:
            _close_quietly(f)


def _close_quietly(f: h5py.File) -> None:
    try:
        f.close()
    except LIBRARY_ERRORS:  # pragma: no cover - closing a damaged file
        pass


HANDLES = _HandleCache()


def close_files() -> None:
    """Close every file handle this process keeps open for lazy reads.

    Datasets from :func:`eo_pipeline.open_product` stay usable: a later compute opens
    the files again. Call it at the end of a job, or before deleting or rewriting
    input files.
    """
    HANDLES.clear()


# --------------------------------------------------------------------------------------
# Reading deflated chunks outside the HDF5 library's lock
# --------------------------------------------------------------------------------------

#: HDF5 filter ids this reader decodes itself (the common netCDF-4 ones).
_H5Z_DEFLATE, _H5Z_SHUFFLE = 1, 2


def _filters(dset: h5py.Dataset) -> tuple[int, ...] | None:
    """The variable's filter pipeline (ids, in order), or None where it is not chunked."""
    if dset.chunks is None:
        return None
    plist = dset.id.get_create_plist()
    return tuple(plist.get_filter(k)[0] for k in range(plist.get_nfilters()))


def _unshuffle(raw: Any, itemsize: int, n: int) -> np.ndarray:
    """Kernel: undo HDF5's byte shuffle (all first bytes, then all second bytes, ...), as uint8."""
    planes = np.frombuffer(raw, np.uint8, count=n * itemsize).reshape(itemsize, n)
    out = np.empty((n, itemsize), np.uint8)
    for j in range(itemsize):  # one contiguous plane at a time: several times faster than .T.copy()
        out[:, j] = planes[j]
    return out.reshape(-1)


def read_chunks_direct(dset: h5py.Dataset, key: Any) -> np.ndarray | None:
    """Read ``dset[key]`` by fetching its raw chunks and inflating them here; None where not possible.

    The HDF5 library serialises every call behind one lock, decompression included, so
    threads reading many files wait for each other. Fetching a chunk's compressed bytes
    is quick; inflating them with zlib-ng (or :mod:`zlib`; both release the GIL) and undoing the
    byte shuffle with numpy lets the threads decompress in parallel. Only chunked
    variables whose filters are deflate, optionally after shuffle, and keys made of
    plain slices are read this way; anything else (Fletcher-32 checksums, other
    filters, fancy indexing) returns None and goes through h5py. A chunk that was never
    written reads as the fill value.
    """
    filters = _filters(dset)
    if not filters or any(f not in (_H5Z_DEFLATE, _H5Z_SHUFFLE) for f in filters) or len(set(filters)) != len(filters):
        return None
    if not isinstance(key, tuple):
        key = (key,)
    shape, chunks = dset.shape, dset.chunks
    if len(key) != len(shape) or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
        return None
    dtype = dset.dtype
    if dtype.kind not in "biuf" or dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
        return None
    bounds = [k.indices(n)[:2] for k, n in zip(key, shape, strict=True)]
    out = np.empty(tuple(max(0, b - a) for a, b in bounds), dtype)
    if out.size == 0:
        return out
    n_chunk = int(np.prod(chunks))
    ranges = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(bounds, chunks, strict=True)]
    for index in np.ndindex(*[len(r) for r in ranges]):
        origin = tuple(r[i] * c for r, i, c in zip(ranges, index, chunks, strict=True))
        block = _decode_chunk(dset, origin, filters, chunks, n_chunk, dtype)
        src, dst = [], []
        for (a, b), o, c in zip(bounds, origin, chunks, strict=True):
            lo, hi = max(a, o), min(b, o + c)
            src.append(slice(lo - o, hi - o))
            dst.append(slice(lo - a, hi - a))
        out[tuple(dst)] = block[tuple(src)]
    return out


def _decode_chunk(dset: h5py.Dataset, origin: tuple[int, ...], filters: tuple[int, ...], chunks: tuple[int, ...],
                  n_chunk: int, dtype: np.dtype) -> np.ndarray:
    """One chunk: its raw bytes from HDF5, then the filters undone in reverse order (fill value if never written)."""
    info = dset.id.get_chunk_info_by_coord(origin)
    if info.byte_offset is None:  # never written
        return np.full(chunks, dset.fillvalue, dtype)
    mask, data = dset.id.read_direct_chunk(origin)
    for k in range(len(filters) - 1, -1, -1):  # filter k was skipped for this chunk where bit k is set
        if mask & (1 << k):
            continue
        if filters[k] == _H5Z_DEFLATE:  # sizing the output buffer up front makes inflate ~1.5x faster
            data = _inflate(data, bufsize=n_chunk * dtype.itemsize)
        else:
            if len(data) != n_chunk * dtype.itemsize:
                raise OSError(f"chunk at {origin} holds {len(data)} bytes, expected {n_chunk * dtype.itemsize}")
            data = _unshuffle(data, dtype.itemsize, n_chunk)
    if len(data) != n_chunk * dtype.itemsize:
        raise OSError(f"chunk at {origin} holds {len(data)} bytes, expected {n_chunk * dtype.itemsize}")
    return np.frombuffer(data, dtype, count=n_chunk).reshape(chunks)


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
        f, cached = HANDLES.get(self.file_token)
        try:
            dset = f[self.varpath]
            out = read_chunks_direct(dset, key)
            if out is None:
                out = np.asarray(dset[key])
        except (*LIBRARY_ERRORS, zlib.error, _InflateError) as exc:
            HANDLES.discard(self.file_token)
            raise library_error(self.file_token[0], f"reading {self.varpath}", exc) from exc
        finally:
            if not cached:
                _close_quietly(f)
        if out.dtype != self.dtype and out.dtype.kind != "O":
            # the header changed between opening and reading: never hand dask a surprise
            HANDLES.discard(self.file_token)
            raise CorruptFileError(
                f"{self.file_token[0]}: reading {self.varpath} gave {out.dtype} data where its header "
                f"said {self.dtype}; the file is damaged: download it again"
            )
        return out


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


def _fill_mask(raw: np.ndarray, fill_value: Any) -> np.ndarray | None:
    """Where ``raw`` equals ``fill_value`` cast to its dtype; None if the fill cannot be cast.

    A fill value that does not fit the variable's type (a damaged or odd attribute)
    can match nothing, so it masks nothing.
    """
    if fill_value is None:
        return None
    try:
        with np.errstate(all="ignore"):
            fill = np.asarray(fill_value).astype(raw.dtype, casting="unsafe")
            if raw.dtype.kind in "iu" and np.asarray(fill_value).astype(np.float64) != fill.astype(np.float64):
                return None  # e.g. 9.96921e36 on an integer variable: no value can equal it
    except (TypeError, ValueError, OverflowError):
        return None
    return raw == fill


def decode_float(raw: np.ndarray, fill_value: float | None, dtype: Any = np.float32) -> np.ndarray:
    """Cast ``raw`` to float and replace the fill value (exact match) with NaN.

    Values beyond the range of ``dtype`` become +-inf silently (a damaged chunk
    must not print numpy warnings); callers treat non-finite values as invalid.

    Parameters
    ----------
    raw : numpy.ndarray
        Stored values.
    fill_value : float or None
        The variable's ``_FillValue``/``missing_value``; None for no fill.
    dtype : numpy dtype
        Output float type.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(raw, dtype=dtype, copy=True)
    mask = _fill_mask(np.asarray(raw), fill_value)
    if mask is not None:
        out[mask] = np.nan
    return out


def decode_scaled(
    raw: np.ndarray, fill_value: Any, scale_factor: float, add_offset: float
) -> np.ndarray:
    """Apply CF packing (``raw * scale_factor + add_offset``) in float64; fill -> NaN."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = raw.astype(np.float64) * float(scale_factor) + float(add_offset)
    mask = _fill_mask(np.asarray(raw), fill_value)
    if mask is not None:
        out[mask] = np.nan
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
    with np.errstate(all="ignore"):
        vf = v.astype(np.float64)
        # offsets that would overflow datetime64[ns] (+-146 years from the epoch) are garbage
        bad = ~np.isfinite(vf) | (np.abs(vf) > 4.6e18 / ns_per_unit)
        mask = _fill_mask(v, fill_value)
        if mask is not None:
            bad |= mask
        if v.dtype.kind in "iu":
            offs = np.where(bad, 0, v).astype(np.int64) * np.int64(ns_per_unit)
        else:
            us = np.rint(np.where(bad, 0.0, vf) * (ns_per_unit / 1_000.0))
            offs = us.astype(np.int64) * np.int64(1_000)
    out = np.datetime64(epoch, "ns") + offs.astype("timedelta64[ns]")
    out[bad] = np.datetime64("NaT")
    return out
