# SPDX-License-Identifier: Apache-2.0
"""Cloud-Optimized GeoTIFF writer for gridded (y, x) datasets.

The bands are written tile by tile through :func:`dask.array.store` into a tiled,
sparse temporary GeoTIFF next to the target (each task opens the file by path,
under a lock, as rioxarray does, because rasterio datasets cannot be pickled);
tiles without data are never written. A final step copies it into a COG
(float32, NaN nodata, DEFLATE with the floating-point predictor, 512 x 512 tiles,
overviews) and renames it into place, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from rasterio.windows import Window

from ..errors import OutputError
from ..grid import GridSpec

__all__ = ["write_cog", "grid_of"]

BLOCK = 512
_LOCAL_LOCK = threading.Lock()


def grid_of(ds: xr.Dataset | xr.DataArray) -> GridSpec:
    """Recover the :class:`GridSpec` of a dataset written by eo_pipeline (``crs`` + x/y)."""
    crs_var = ds.coords.get("crs")
    if crs_var is None or "crs_wkt" not in crs_var.attrs:
        raise OutputError("dataset has no 'crs' grid-mapping coordinate; pass one made by eo_pipeline")
    gt = [float(v) for v in crs_var.attrs["GeoTransform"].split()]
    from affine import Affine

    transform = Affine(gt[1], gt[2], gt[0], gt[4], gt[5], gt[3])
    return GridSpec(crs_var.attrs["crs_wkt"], transform, (ds.sizes["y"], ds.sizes["x"]))


class _TileWriter:
    """``__setitem__`` target for ``da.store``: writes one (bands, rows, cols) block by path."""

    def __init__(self, path: str, shape: tuple[int, int, int], lock: Any) -> None:
        self.path = path
        self.shape = shape
        self.dtype = np.dtype("float32")
        self.ndim = 3
        self.lock = lock

    def __setitem__(self, key: tuple[slice, slice, slice], block: np.ndarray) -> None:
        if _is_empty(block):
            return  # sparse: tiles without data are never written (they read back as nodata)
        bands, rows, cols = key
        b0 = bands.start or 0
        window = Window.from_slices(rows, cols)
        lock = self.lock if self.lock is not None else _LOCAL_LOCK
        with lock, rasterio.open(self.path, "r+") as dst:
            for k in range(block.shape[0]):
                dst.write(block[k].astype(np.float32), b0 + k + 1, window=window)


def _is_empty(block: np.ndarray) -> bool:
    """True for a block without data: empty, a broadcast fill view, or all NaN."""
    if block.size == 0:
        return True
    if 0 in block.strides[1:]:  # eo_pipeline's finalize returns broadcast views for empty blocks
        return bool(np.all(np.isnan(block[:, :1, :1]) | (block[:, :1, :1] == 0)))
    return bool(np.all(np.isnan(block) | (block == 0)))


def _default_lock() -> Any:
    try:
        from distributed import Lock, get_client

        get_client()
        return Lock("eo-pipeline-geotiff")
    except (ImportError, ValueError):
        return None


def _create_tmp(tmp: Path, grid: GridSpec, names: Sequence[str]) -> None:
    profile = {
        "driver": "GTiff", "dtype": "float32", "count": len(names), "width": grid.shape[1],
        "height": grid.shape[0], "crs": grid.crs.to_wkt(), "transform": grid.transform, "nodata": np.nan,
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "predictor": 3,
        "sparse_ok": True, "bigtiff": "IF_SAFER",
    }
    with rasterio.open(tmp, "w", **profile) as dst:
        for k, n in enumerate(names, start=1):
            dst.set_band_description(k, n)


def _finish(_stored: Any, tmp: str, path: str, names: Sequence[str], tags: Mapping[str, str],
            band_tags: Mapping[str, Mapping[str, str]]) -> str:
    """Copy the temporary GeoTIFF into a COG and move it into place."""
    cog_tmp = Path(path).with_name(f".{Path(path).name}.cog-tmp")
    try:
        with rasterio.open(tmp, "r+") as src:
            src.update_tags(**{k: str(v) for k, v in tags.items()})
            for k, n in enumerate(names, start=1):
                src.set_band_description(k, n)
                src.update_tags(k, **{kk: str(v) for kk, v in band_tags.get(n, {}).items()})
        rasterio.shutil.copy(
            tmp, cog_tmp, driver="COG", compress="DEFLATE", predictor="FLOATING_POINT", blocksize=BLOCK,
            overviews="AUTO", overview_resampling="AVERAGE", resampling="AVERAGE", sparse_ok="TRUE",
            bigtiff="IF_SAFER", num_threads="1",
        )
        os.replace(cog_tmp, path)
    finally:
        for p in (Path(tmp), cog_tmp):
            if p.exists():
                p.unlink()
    return path


def write_cog(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    variables: Sequence[str] | None = None,
    tags: Mapping[str, Any] | None = None,
    compute: bool = True,
    lock: Any = None,
) -> str | Any:
    """Write (y, x) variables of ``ds`` as the bands of a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    ds : xarray.Dataset
        Gridded dataset made by eo_pipeline (with a ``crs`` grid-mapping coordinate).
    path : path-like
        Target ``.tif``; replaced atomically when complete.
    variables : sequence of str, optional
        Variables to write, one band each, in order (default: all 2-D (y, x) ones).
        Band descriptions are the variable names; each band carries its ``units``
        and ``long_name`` as band tags.
    tags : mapping, optional
        Dataset tags (added to the dataset's ``attrs``).
    compute : bool
        Write now (default); False returns a :class:`dask.delayed.Delayed` so that
        several outputs can be computed together with one ``dask.compute``.
    lock : optional
        Lock serialising writes to the file; default a process-local lock, or a
        ``distributed.Lock`` when a distributed client is active.
    """
    path = str(Path(path))
    if not path.lower().endswith((".tif", ".tiff")):
        raise OutputError(f"{path}: a GeoTIFF output must end in .tif")
    parent = Path(path).parent
    parent.mkdir(parents=True, exist_ok=True)
    grid = grid_of(ds)
    names = list(variables) if variables is not None else [
        n for n, v in ds.data_vars.items() if v.dims == ("y", "x")]
    if not names:
        raise OutputError(f"{path}: nothing to write (no (y, x) variables)")
    stack = da.stack([da.asarray(ds[n].data).astype(np.float32) for n in names])
    stack = stack.rechunk({0: len(names)})
    tmp = str(parent / f".{Path(path).name}.tmp")
    try:
        _create_tmp(Path(tmp), grid, names)
    except rasterio.errors.RasterioIOError as exc:
        raise OutputError(f"{path}: cannot create the GeoTIFF ({exc})") from exc
    all_tags = {k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float)}
    all_tags.update(tags or {})
    band_tags = {n: {k: ds[n].attrs[k] for k in ("units", "long_name") if k in ds[n].attrs} for n in names}
    target = _TileWriter(tmp, stack.shape, lock if lock is not None else _default_lock())
    stored = da.store(stack, target, lock=False, compute=False)
    result = dask.delayed(_finish, pure=False)(stored, tmp, path, names, all_tags, band_tags)
    if compute:
        try:
            return result.compute()
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return result
