# SPDX-License-Identifier: Apache-2.0
"""CF-1.8 NetCDF writer for gridded Level-3 datasets.

The dataset keeps its ``crs`` grid-mapping variable (CF attributes from pyproj plus
``crs_wkt``/``spatial_ref`` and GDAL's ``GeoTransform``), so xarray, rioxarray and
GDAL all read the CRS. Data variables are compressed (zlib, shuffle), floats use
NaN as ``_FillValue``. The file is written under a temporary name and renamed when
complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from ..errors import OutputError

__all__ = ["write_netcdf"]


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        if name in ("x", "y", "crs"):
            enc[name] = {"_FillValue": None}
            continue
        if name in ("time", "time_bounds"):
            enc[name] = {"units": "seconds since 1970-01-01 00:00:00", "calendar": "standard", "_FillValue": None}
            continue
        e: dict[str, Any] = {}
        if var.ndim >= 2:
            e.update(zlib=True, complevel=4, shuffle=True)
            chunks = [min(s, 512) for s in var.shape]
            if var.ndim == 3:
                chunks[0] = 1
            e["chunksizes"] = tuple(chunks)
        if np.issubdtype(var.dtype, np.floating):
            e["_FillValue"] = np.float32(np.nan) if var.dtype == np.float32 else np.nan
        else:
            e["_FillValue"] = None
        enc[name] = e
    return enc


def _rename(_written: Any, tmp: str, path: str) -> str:
    os.replace(tmp, path)
    return path


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str], *, compute: bool = True) -> str | Any:
    """Write a gridded dataset as CF-1.8 NetCDF-4.

    Parameters
    ----------
    ds : xarray.Dataset
        Level-3 dataset from eo_pipeline (``crs`` grid mapping, x/y cell centres).
    path : path-like
        Target ``.nc``; replaced atomically when complete.
    compute : bool
        Write now, or return a Delayed for a single ``dask.compute`` with other outputs.
    """
    path = str(Path(path))
    if not path.lower().endswith(".nc"):
        raise OutputError(f"{path}: a NetCDF output must end in .nc")
    if "crs" not in ds.coords:
        raise OutputError(f"{path}: dataset has no 'crs' grid-mapping variable")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out = ds.copy()
    out.attrs["Conventions"] = "CF-1.8"
    for name in out.data_vars:
        if {"y", "x"} <= set(out[name].dims):
            out[name].attrs["grid_mapping"] = "crs"
    tmp = str(Path(path).with_name(f".{Path(path).name}.tmp"))
    try:
        written = out.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=_encoding(out), compute=False)
    except (OSError, ValueError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write NetCDF ({exc})") from exc
    task = dask.delayed(_rename, pure=False)(written, tmp, path)
    if compute:
        try:
            return task.compute()
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return task
