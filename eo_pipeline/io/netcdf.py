# SPDX-License-Identifier: Apache-2.0
"""CF-1.8 NetCDF-4 writer for gridded maps (Level-3 statistics, composites, anomalies, forest maps).

The grid is recovered from the map's ``x``/``y`` coordinates and grid mapping
(:meth:`GridSpec.from_dataset`), so maps cut, flipped, subsampled or coarsened with
plain xarray are written where their coordinates say, north-up; the ``crs``
grid-mapping variable is written afresh from that grid (CF attributes from pyproj,
``crs_wkt``/``spatial_ref`` and GDAL's ``GeoTransform``), so xarray, rioxarray and
GDAL all read the CRS and the cell positions, and stale attributes never reach a file.

The file follows CF-1.8 (checked with the IOOS compliance checker in the tests): only
the numeric types CF-1.8 allows (64-bit and unsigned integers become 32-bit ones),
``grid_mapping`` on every map, global ``history`` and ``source``, and the
``standard_name``/``cell_methods`` that the stages set. Map variables are compressed
(zlib, shuffle, 512 x 512 chunks); floats use NaN as ``_FillValue``.

Writing follows the COG writer: the first task creates the file's structure under a
temporary name (:mod:`eo_pipeline.io._atomic`), one task per block writes it by path
(netCDF handles cannot be pickled), and the last task renames the file into place.
Blocks without data (NaN fill views) are never written. Any task that fails removes
the temporary file and raises one :class:`~eo_pipeline.errors.OutputError`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import netCDF4
import numpy as np
import xarray as xr
from xarray.backends.locks import HDF5_LOCK  # the lock xarray holds around every netCDF-C/HDF5 call
from xarray.conventions import encode_cf_variable, encode_dataset_coordinates

from .._version import __version__
from ..binning import uniform_view
from ..errors import OutputError
from ..grid import GridSpec, north_up
from ._atomic import (
    cluster_lock,
    compute_writer,
    create_atomically,
    done_marker,
    mark_done,
    remove_parts,
    remove_temporaries,
    temp_path,
    write_failed,
    write_lock,
)
from ._graph import blocks_then

__all__ = ["write_netcdf", "cf_dataset"]

#: CF-1.8 integer types for the integer types it does not allow.
_CF_INT = {np.dtype("uint8"): np.dtype("int16"), np.dtype("uint16"): np.dtype("int32"),
           np.dtype("uint32"): np.dtype("int32"), np.dtype("int64"): np.dtype("int32"),
           np.dtype("uint64"): np.dtype("int32")}
_TIME_ENCODING = {"units": "seconds since 1970-01-01 00:00:00", "calendar": "standard", "dtype": "float64"}
_WHAT = "NetCDF file"


# --------------------------------------------------------------------------- the dataset as written
def _history(command: str | None) -> str:
    """One ``history`` line: ISO time (UTC), the command, the software."""
    if command is None:
        argv = [a for a in sys.argv if a]
        command = shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else "python"
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} {command} (eo_pipeline {__version__})"


def _source(attrs: Mapping[str, Any]) -> str:
    """The ``source`` attribute: the input instruments and products, from the stages' attributes."""
    for key in ("source", "processor_versions"):
        if str(attrs.get(key, "")).strip():
            return str(attrs[key])
    parts = [str(attrs.get(k, "")) for k in ("platform", "instrument", "product")]
    return " ".join(p for p in parts if p) or f"eo_pipeline {__version__}"


def _cell_methods(text: str, names: set[str]) -> str | None:
    """``cell_methods`` without the names (other than ``area``) the output lacks, e.g. a dropped ``time``.

    A ``name: [name: ...] method [qualifiers] [(comment)]`` group that keeps no name is
    dropped; None when no group is left.
    """
    groups: list[tuple[list[str], list[str]]] = []
    depth = 0
    for token in text.split():
        is_name = depth == 0 and token.endswith(":") and token[:-1].isidentifier()
        depth += token.count("(") - token.count(")")
        if is_name and (not groups or groups[-1][1]):
            groups.append(([token[:-1]], []))
        elif is_name:
            groups[-1][0].append(token[:-1])
        elif groups:
            groups[-1][1].append(token)
    kept = [(keep, words) for group, words in groups
            if (keep := [n for n in group if n == "area" or n in names]) and words]
    return " ".join(" ".join([*(f"{n}:" for n in keep), *words]) for keep, words in kept) or None


def _grid_mapping_names(ds: xr.Dataset) -> set[str]:
    names = {"crs", "spatial_ref"}
    for var in ds.variables.values():
        for source in (var.attrs, var.encoding):
            if isinstance(source.get("grid_mapping"), str):
                names.add(source["grid_mapping"].split(":")[0].strip())
    return {n for n in names if n in ds.variables}


def _tidy_variable(var: xr.Variable, names: set[str], is_map: bool) -> None:
    """CF attributes of one output variable, in place: grid_mapping, and references that exist."""
    for key in ("grid_mapping", "coordinates"):
        var.encoding.pop(key, None)
    var.attrs.pop("grid_mapping", None)
    if is_map:
        var.attrs["grid_mapping"] = "crs"
    if "cell_methods" in var.attrs:
        cleaned = _cell_methods(str(var.attrs["cell_methods"]), names)
        if cleaned is None:
            del var.attrs["cell_methods"]
        else:
            var.attrs["cell_methods"] = cleaned
    if "ancillary_variables" in var.attrs:
        kept = [n for n in str(var.attrs["ancillary_variables"]).split() if n in names]
        if kept:
            var.attrs["ancillary_variables"] = " ".join(kept)
        else:
            del var.attrs["ancillary_variables"]
    if "bounds" in var.attrs and var.attrs["bounds"] not in names:
        del var.attrs["bounds"]


def cf_dataset(ds: xr.Dataset, *, history: str | None = None) -> xr.Dataset:
    """The dataset as :func:`write_netcdf` stores it (lazy).

    Parameters
    ----------
    ds : xarray.Dataset
        A map with 1-D ``x``/``y`` cell-centre coordinates (CRS units) and a grid
        mapping (see :meth:`GridSpec.from_dataset`).
    history : str, optional
        The command that made the data, for the ``history`` line (default: this
        process's command line).

    Returns
    -------
    xarray.Dataset
        North-up (:func:`eo_pipeline.grid.north_up`), with ``x``/``y`` the centres of the
        recovered grid, one ``crs`` grid-mapping coordinate made from that grid, any other
        grid mapping dropped, ``grid_mapping = "crs"`` on every map, references
        (``cell_methods``, ``ancillary_variables``, ``bounds``) only to what the output
        holds, and global ``Conventions``, ``history`` (appended) and ``source``.
    """
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=ds.name or "data")
    grid = GridSpec.from_dataset(ds)
    out = north_up(ds).drop_vars(sorted(_grid_mapping_names(ds))).copy(deep=False)  # attrs edited below
    axes = grid.coords()
    out = out.assign_coords({dim: xr.Variable(dim, values, {**out[dim].attrs, **attrs})
                             for dim, (_, values, attrs) in axes.items()})
    out = out.assign_coords(crs=((), np.int32(0), grid.cf_grid_mapping()))
    names = set(out.variables) | set(out.dims)
    for name, var in out.variables.items():
        _tidy_variable(var, names, {"y", "x"} <= set(var.dims) and name not in ("x", "y"))
    attrs = dict(out.attrs)
    attrs.pop("grid", None)  # a cut of a named grid is no longer that grid
    attrs.update(grid.identity_attrs())
    attrs["Conventions"] = "CF-1.8"
    line = _history(history)
    attrs["history"] = f"{attrs['history']}\n{line}" if str(attrs.get("history", "")).strip() else line
    attrs["source"] = _source(attrs)
    out.attrs = attrs
    return out


# --------------------------------------------------------------------------- CF-1.8 data types
def _cf_int(block: np.ndarray, name: str, path: str) -> np.ndarray:
    """Kernel: an integer block in the CF-1.8 type for it, or an OutputError when a value does not fit."""
    block = np.asarray(block)
    new = _CF_INT.get(block.dtype)
    if new is None:
        return block
    info = np.iinfo(new)
    if new == np.int32 and block.size and (block.min() < info.min or block.max() > info.max):
        raise OutputError(
            f"{path}: variable {name!r} holds values outside the 32-bit integers CF-1.8 allows "
            f"({block.min()}..{block.max()}); store it as float64 or in larger units, then write again")
    return block.astype(new)


def _cf_types(ds: xr.Dataset, path: str) -> xr.Dataset:
    """In-memory 64-bit and unsigned integers as the CF-1.8 types (checked now: values must fit).

    Dask-backed ones are converted (and checked) block by block in the write tasks, so a
    value that does not fit fails inside the graph, where the temporary file is removed.
    """
    out = ds
    for name, var in ds.variables.items():
        if var.dtype not in _CF_INT or isinstance(var.data, da.Array):
            continue
        replaced = var.copy(deep=False, data=_cf_int(var.values, str(name), path))
        replaced.encoding = {k: v for k, v in var.encoding.items() if k != "dtype"}
        out = out.assign_coords({name: replaced}) if name in ds.coords else out.assign({name: replaced})
    return out


# --------------------------------------------------------------------------- the file's structure
@dataclass(frozen=True)
class _VarSpec:
    """How to create one variable (picklable; the data only for small in-memory variables)."""

    name: str
    dtype: Any
    dims: tuple[str, ...]
    create: dict[str, Any]
    attrs: dict[str, Any]
    data: np.ndarray | None


def _encoding(var: xr.Variable) -> dict[str, Any]:
    """Encoding for xarray: times as float64 seconds; nothing else (fill values are set at creation)."""
    return dict(_TIME_ENCODING) if var.dtype.kind == "M" else {"_FillValue": None}


def _fill_value(name: str, dtype: Any) -> Any:
    """NaN for float data (not for coordinates); no fill for the rest (every block is written)."""
    if dtype is str or np.dtype(dtype).kind != "f":
        return False if dtype is not str else None
    return None if name in ("x", "y", "time", "time_bounds") else np.dtype(dtype).type(np.nan)


def _create_options(var: xr.Variable) -> dict[str, Any]:
    if var.ndim < 2:
        return {}
    chunks = [min(s, 512) for s in var.shape]
    chunks[:-2] = [1] * (var.ndim - 2)
    return {"zlib": True, "complevel": 4, "shuffle": True, "chunksizes": tuple(max(1, c) for c in chunks)}


def _attr_value(value: Any) -> Any:
    """An attribute as netCDF stores it: booleans as 0/1, integers as 32 bits where they fit."""
    if isinstance(value, bool | np.bool_):
        return np.int32(value)
    if isinstance(value, int | np.integer) and np.iinfo(np.int32).min <= int(value) <= np.iinfo(np.int32).max:
        return np.int32(value)
    if isinstance(value, str | int | float | np.number | np.ndarray):
        return value
    if isinstance(value, list | tuple):
        return np.asarray(value)
    return str(value)


def _plan(out: xr.Dataset) -> tuple[dict[str, int], list[_VarSpec], dict[str, Any], dict[str, da.Array]]:
    """Dimensions, variable specs, global attributes and the lazy (dask) data of the encoded dataset."""
    variables, attrs = encode_dataset_coordinates(out)
    specs: list[_VarSpec] = []
    lazy: dict[str, da.Array] = {}
    for name, var in variables.items():
        var = var.copy(deep=False)
        var.encoding = _encoding(var)
        encoded = encode_cf_variable(var, name=name)
        var_attrs = {k: _attr_value(v) for k, v in encoded.attrs.items() if v is not None and k != "_FillValue"}
        dtype = str if encoded.dtype.kind in "OUS" else _CF_INT.get(encoded.dtype, encoded.dtype)
        create = {**_create_options(encoded), "fill_value": _fill_value(str(name), dtype)}
        if isinstance(encoded.data, da.Array):
            lazy[str(name)] = encoded.data
            data = None
        else:
            data = np.asarray(encoded.values)
        specs.append(_VarSpec(str(name), dtype, tuple(map(str, encoded.dims)), create, var_attrs, data))
    _bounds_inherit(specs)
    return {str(k): int(v) for k, v in out.sizes.items()}, specs, {k: _attr_value(v) for k, v in attrs.items()}, lazy


def _bounds_inherit(specs: Sequence[_VarSpec]) -> None:
    """CF 7.1: a boundary variable inherits units and calendar from its parent (drop equal copies), in place."""
    by_name = {s.name: s for s in specs}
    for s in specs:
        bounds = by_name.get(str(s.attrs.get("bounds", "")))
        if bounds is None:
            continue
        for key in ("units", "calendar"):
            if key in bounds.attrs and key in s.attrs and str(bounds.attrs[key]) == str(s.attrs[key]):
                del bounds.attrs[key]


# --------------------------------------------------------------------------- tasks


@contextlib.contextmanager
def _locked(lock: Any, target: str, part: str) -> Iterator[None]:
    """The output's lock (across processes and cluster workers), then the process's netCDF/HDF5 lock."""
    with write_lock(target, lock, part=part), HDF5_LOCK:
        yield


def _nc_call(path: str, mode: str, action: Callable[[Any], None]) -> None:
    """Open ``path``, run ``action`` on the open file, close it; call this holding the locks.

    When writing fails, netCDF leaves the handle half closed, and the handle sits in a
    reference cycle (a dataset and its variables) that the garbage collector would free
    later, in any thread, outside the locks, calling into netCDF/HDF5 (which are not
    thread-safe) and crashing the process. So on failure the handle is released here:
    the frames of the traceback are cleared and the cycle collected, under the locks.
    """
    nc = netCDF4.Dataset(path, mode, format="NETCDF4") if mode == "w" else netCDF4.Dataset(path, mode)
    try:
        action(nc)
        nc.close()
    except BaseException as exc:
        traceback.clear_frames(exc.__traceback__)
        with contextlib.suppress(Exception):
            nc.close()
        del nc
        gc.collect()
        raise


def _fill(nc: Any, dims: Mapping[str, int], specs: Sequence[_VarSpec], attrs: Mapping[str, Any]) -> None:
    """Kernel: dimensions, variables, attributes and the small data into a new file."""
    nc.setncatts(dict(attrs))
    for dim, size in dims.items():
        nc.createDimension(dim, size)
    for s in specs:
        v = nc.createVariable(s.name, s.dtype, s.dims, **s.create)
        v.set_auto_maskandscale(False)
        v.setncatts(s.attrs)
        if s.data is not None:
            _put(v, s.data, ())


def _put_block(nc: Any, name: str, block: np.ndarray, region: tuple[slice, ...]) -> None:
    v = nc.variables[name]
    v.set_auto_maskandscale(False)
    _put(v, block, region)


def _create(target: str, tmp: str, dims: Mapping[str, int], specs: Sequence[_VarSpec], attrs: Mapping[str, Any],
            lock: Any) -> str:
    """First task: the temporary file with every dimension, variable and attribute, and the small data.

    Safe to rerun (see :func:`eo_pipeline.io._atomic.done_marker`): a temporary file
    that exists was made by this run and is kept; nothing is made once the output is done.
    """
    if done_marker(target).exists() or os.path.exists(tmp):
        return tmp
    with _locked(lock, target, tmp):
        try:
            create_atomically(tmp, lambda part: _nc_call(str(part), "w", lambda nc: _fill(nc, dims, specs, attrs)))
        except Exception as exc:  # noqa: BLE001 - one clear message for any library failure
            raise write_failed(target, _WHAT, exc) from exc
    return tmp


def _put(v: Any, data: np.ndarray, region: tuple[slice, ...]) -> None:
    if v.ndim == 0:
        v.assignValue(np.asarray(data).item() if v.dtype is not str else str(data))
    elif v.dtype is str:
        v[region or ...] = np.asarray(data, dtype=object)
    else:
        v[region or ...] = np.ascontiguousarray(data)


def _is_fill_view(block: np.ndarray) -> bool:
    """True for a broadcast NaN view (a block without data from the finalize step): nothing to write."""
    return uniform_view(block) and bool(np.isnan(block.flat[0]))


def _write_block(_created: Any, block: np.ndarray, tmp: str, name: str, region: tuple[slice, ...],
                 nan_fill: bool, lock: Any, target: str) -> None:
    """Task: one block of one variable into the temporary file, opened by path."""
    block = np.asarray(block)
    if (nan_fill and _is_fill_view(block)) or done_marker(target).exists():
        return
    try:
        block = _cf_int(block, name, target)
    except OutputError as exc:
        raise write_failed(target, _WHAT, exc) from exc
    # A failure is cleaned up inside the lock; a write that finds the file gone returns quietly: the task
    # that removed it reports the failure, and the final rename cannot complete the output without it.
    with _locked(lock, target, tmp):
        if not os.path.exists(tmp):
            return
        try:
            _nc_call(tmp, "r+", lambda nc: _put_block(nc, name, block, region))
        except Exception as exc:  # noqa: BLE001 - one clear message for any library failure
            if not os.path.exists(tmp):
                return
            raise write_failed(target, _WHAT, exc) from exc


def _finish(_written: Any, tmp: str, target: str) -> str:
    """Last task: move the complete file into place (the done marker first, so a rerun only finishes the move)."""
    marker = done_marker(target)
    try:
        if not marker.exists():
            mark_done(target)
        if os.path.exists(tmp):
            os.replace(tmp, target)
    except Exception as exc:  # noqa: BLE001
        raise write_failed(target, _WHAT, exc) from exc
    remove_parts(target)
    return target


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str], *, compute: bool = True,
                 history: str | None = None) -> str | Any:
    """Write a gridded dataset as CF-1.8 NetCDF-4.

    Parameters
    ----------
    ds : xarray.Dataset
        A map (or a stack of maps along ``time``) with 1-D ``x``/``y`` cell-centre
        coordinates and a grid mapping (see :meth:`GridSpec.from_dataset`); cut,
        flipped, subsampled or coarsened maps are written where their coordinates say.
    path : path-like
        Target ``.nc``; replaced atomically when complete.
    compute : bool
        Write now, or return a Delayed for a single ``dask.compute`` with other outputs.
    history : str, optional
        The command that made the data, for the global ``history`` attribute (default:
        this process's command line).

    Returns
    -------
    str or dask.delayed.Delayed
        The path written, or the Delayed that writes it.

    Raises
    ------
    GridError
        The coordinates are not regular, or the map has no CRS (before anything is written).
    OutputError
        The file cannot be written (no space left on device, file size limit, an integer
        variable beyond 32 bits...), with one line naming the target, the cause and the
        fix; no temporary file and no partial target is left behind.
    """
    path = str(Path(path))
    if not path.lower().endswith(".nc"):
        raise OutputError(f"{path}: a NetCDF output must end in .nc")
    target = Path(path)
    out = _cf_types(cf_dataset(ds, history=history), path)
    dims, specs, attrs, lazy = _plan(out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(target, _WHAT, exc) from exc
    tmp = str(temp_path(target, "part", suffix=".nc"))
    remove_temporaries(target)  # of an earlier, killed writer: the tasks trust the parts they find
    lock = cluster_lock(tmp)
    created = dask.delayed(_create, pure=True)(path, tmp, dims, specs, attrs, lock)
    nan_fill = {s.name: s.create["fill_value"] is not None and s.create["fill_value"] is not False for s in specs}
    jobs = [(arr, _write_block, lambda index, region, n=name: (tmp, n, region, nan_fill[n], lock, path))
            for name, arr in lazy.items()]
    result = blocks_then(created, jobs, _finish, (tmp, path), token=(path, tmp, [a.name for a in lazy.values()]))
    return compute_writer(result, target) if compute else result
