# SPDX-License-Identifier: Apache-2.0
"""Checks on opened products before a job builds its graph: damaged data, duplicates.

:func:`eo_pipeline.open_product` reads metadata only, so a damaged *data* chunk shows
up only when the data are computed. A job that should skip damaged inputs
(``on_error: skip``) calls :func:`verify_product` on each opened product first: it
reads every variable the gridding uses, in one ``dask.compute``, and raises
:class:`~eo_pipeline.errors.CorruptFileError` naming the file if any chunk cannot be
read or decoded.

The same product given twice (a copy under another name, or one file matched by two
patterns) would be counted twice in every cell. :func:`product_identity` says what a
product *is* (reader, product, platform, instrument, species, processor version,
orbit, time coverage, shape and a fingerprint of sampled coordinates and times), and
:func:`drop_duplicates` keeps the first of each identity with a
:class:`~eo_pipeline.errors.DuplicateProductWarning`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..errors import CorruptFileError, DuplicateProductWarning, EOPipelineError, warn
from ..schema import species_of

__all__ = ["verify_product", "product_identity", "find_duplicates", "drop_duplicates", "gridding_variables"]

#: Attributes that identify a product (all readers set them; see eo_pipeline.schema.REQUIRED_ATTRS).
IDENTITY_ATTRS: tuple[str, ...] = (
    "reader", "product", "platform", "instrument", "species", "processor_version", "orbit",
    "time_coverage_start", "time_coverage_end",
)
#: Positions sampled (evenly over the flattened soundings) for the content fingerprint.
FINGERPRINT_SAMPLES = 16


def gridding_variables(ds: xr.Dataset) -> list[str]:
    """Return the names of the variables of ``ds`` that the gridding stage reads."""
    info = species_of(ds)
    names = ["longitude", "latitude", info.name, f"{info.name}_uncertainty", "valid", "time",
             "latitude_bounds", "longitude_bounds"]
    return [n for n in names if n in ds.variables]


def _source(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("source_path") or ds.attrs.get("source_file") or "dataset")


def _block_size(block: np.ndarray) -> np.ndarray:
    """Kernel: the number of values in a block, as a 1-element-per-axis array."""
    return np.full((1,) * block.ndim, block.size, dtype=np.int64)


def _touch(arr: Any) -> Any:
    """Reduce ``arr`` to a tiny sum that still forces every chunk to be read and decoded."""
    a = da.asarray(arr)
    if a.ndim == 0:
        return a
    return a.map_blocks(_block_size, dtype=np.int64, chunks=tuple((1,) * len(c) for c in a.chunks),
                        meta=np.empty((0,) * a.ndim, np.int64)).sum()


def verify_product(ds: xr.Dataset, *, scheduler: str | None = None) -> None:
    """Read and decode every variable the gridding uses; raise if any chunk is damaged.

    Use it in a job's ``on_error: skip`` mode on each opened product *before* the
    main graph is built, and leave out the products it rejects. Memory stays small:
    each chunk is read, decoded and reduced to its size.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical soundings from :func:`eo_pipeline.open_product`.
    scheduler : str, optional
        dask scheduler (default: the current one, threads).

    Raises
    ------
    CorruptFileError
        Naming the file: a data chunk cannot be read (HDF5/filter failure) or decoded.
    EOPipelineError
        Any other error the reads raise, e.g. ``FileChangedError`` when the file was
        rewritten after it was opened.
    """
    names = gridding_variables(ds)
    checks = [_touch(ds[n].data) for n in names if isinstance(ds[n].data, da.Array)]
    try:
        dask.compute(*checks, scheduler=scheduler)
    except EOPipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - a kernel choking on damaged values: name the file
        raise CorruptFileError(
            f"{_source(ds)}: its data cannot be decoded ({type(exc).__name__}: {str(exc)[:160]}); "
            "the file is probably damaged: download it again"
        ) from exc


def _fingerprint_arrays(ds: xr.Dataset) -> list[Any]:
    """Lazy samples of latitude, longitude and time at evenly spaced soundings."""
    info = species_of(ds)
    shape = ds[info.name].shape
    n = int(np.prod(shape))
    if n == 0:
        return []
    flat = np.unique(np.linspace(0, n - 1, min(n, FINGERPRINT_SAMPLES)).astype(np.int64))
    where = np.unravel_index(flat, shape)
    out = []
    for name in ("latitude", "longitude", "time"):
        a = da.asarray(ds[name].data)
        if np.issubdtype(a.dtype, np.datetime64):
            a = a.astype("datetime64[ns]").astype(np.int64)
        out.append(a.vindex[where] if a.ndim > 1 else a[where[0]])
    return out


def _metadata_identity(ds: xr.Dataset) -> tuple[Any, ...]:
    """The part of :func:`product_identity` that needs no data read: attributes and shape."""
    info = species_of(ds)
    return (*(str(ds.attrs.get(k, "")) for k in IDENTITY_ATTRS), tuple(int(s) for s in ds[info.name].shape))


def _identity(ds: xr.Dataset, samples: Sequence[np.ndarray]) -> tuple[Any, ...]:
    digest = hashlib.sha256()
    for s in samples:
        arr = np.ascontiguousarray(np.asarray(s))
        digest.update(str(arr.dtype).encode())
        digest.update(arr.tobytes())
    info = species_of(ds)
    attrs = tuple(str(ds.attrs.get(k, "")) for k in IDENTITY_ATTRS)
    return (*attrs, tuple(int(s) for s in ds[info.name].shape), digest.hexdigest()[:32])


def product_identity(ds: xr.Dataset) -> tuple[Any, ...]:
    """Return what a product *is*, independent of its file name: equal tuples mean the same product.

    The tuple holds the reader, product, platform, instrument, species, processor
    version, orbit and time coverage attributes, the shape of the soundings, and a
    hash of latitude, longitude and time at up to 16 evenly spaced soundings (so two
    different cuts of one orbit, with equal attributes, stay different). Reading the
    samples costs one small compute.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical soundings from :func:`eo_pipeline.open_product`.

    Raises
    ------
    CorruptFileError
        A sampled data chunk cannot be read.
    """
    (samples,) = dask.compute(_fingerprint_arrays(ds))
    return _identity(ds, samples)


def find_duplicates(datasets: Sequence[xr.Dataset]) -> list[tuple[int, int]]:
    """Return pairs ``(duplicate, original)`` of indices of datasets that hold the same product.

    ``original`` is the first dataset with that identity (:func:`product_identity`);
    every later one is listed once. Attributes and shapes are compared first; samples
    are read (in one ``dask.compute``) only for the products whose metadata coincide.

    Raises
    ------
    CorruptFileError
        A sampled data chunk of one of the files cannot be read (naming it).
    """
    if len(datasets) < 2:  # nothing to compare: read nothing
        return []
    # metadata first: only products whose attributes and shape coincide need their samples read
    # (420 distinct orbits of a month then cost no read at all)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, ds in enumerate(datasets):
        groups.setdefault(_metadata_identity(ds), []).append(i)
    suspects = [i for members in groups.values() if len(members) > 1 for i in members]
    if not suspects:
        return []
    samples = dict(zip(suspects, dask.compute(*[_fingerprint_arrays(datasets[i]) for i in suspects]), strict=True))
    first: dict[tuple[Any, ...], int] = {}
    pairs: list[tuple[int, int]] = []
    for i in sorted(suspects):
        key = _identity(datasets[i], samples[i])
        if key in first:
            pairs.append((i, first[key]))
        else:
            first[key] = i
    return sorted(pairs)


def drop_duplicates(datasets: Sequence[xr.Dataset]) -> list[xr.Dataset]:
    """Return the datasets without the later copies of the same product, warning about each.

    Parameters
    ----------
    datasets : sequence of xarray.Dataset
        Opened products, in input order.

    Returns
    -------
    list of xarray.Dataset
        The first copy of each product, in input order.

    Warns
    -----
    DuplicateProductWarning
        One per dropped copy, naming both files.
    """
    datasets = list(datasets)
    pairs = find_duplicates(datasets)
    dropped = set()
    for dup, orig in pairs:
        d, o = datasets[dup], datasets[orig]
        warn(
            f"{_source(d)}: is the same product as {_source(o)} ({o.attrs.get('product', '')}, orbit "
            f"{o.attrs.get('orbit', -1)}, {o.attrs.get('time_coverage_start', '')} to "
            f"{o.attrs.get('time_coverage_end', '')}); the second copy is ignored so that no sounding "
            "counts twice",
            DuplicateProductWarning,
        )
        dropped.add(dup)
    return [ds for i, ds in enumerate(datasets) if i not in dropped]
