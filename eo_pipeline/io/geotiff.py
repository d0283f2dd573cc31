# SPDX-License-Identifier: Apache-2.0
"""Cloud-Optimized GeoTIFF writer for gridded (y, x) datasets.

Every band and every overview level is written block by block through
:func:`dask.array.store` into sparse, tiled temporary GeoTIFFs next to the target
(each task opens its file by path, under a lock, as rioxarray does, because rasterio
datasets cannot be pickled). Blocks without data are never written, and overviews are
computed here, lazily and only where there is data (NaN-aware 2 x 2 averages, like
GDAL's AVERAGE resampling), because GDAL would read every pixel of a mostly empty
global grid to build them. A VRT then ties the levels together and GDAL's COG driver
copies it (float32, NaN nodata, DEFLATE with the floating-point predictor, 512 x 512
tiles, the overviews as they are) into the target, which is renamed into place: a
failed run leaves nothing half-written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import dask
import dask.array as da
import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from affine import Affine
from rasterio.windows import Window

from ..errors import OutputError
from ..grid import GridSpec

__all__ = ["write_cog", "grid_of", "overview_levels"]

BLOCK = 512
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _local_lock(path: str) -> threading.Lock:
    """One lock per file in this process (writes to different files proceed in parallel)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def grid_of(ds: xr.Dataset | xr.DataArray) -> GridSpec:
    """Recover the :class:`GridSpec` of a dataset written by eo_pipeline (``crs`` + x/y)."""
    crs_var = ds.coords.get("crs")
    if crs_var is None or "crs_wkt" not in crs_var.attrs:
        raise OutputError("dataset has no 'crs' grid-mapping coordinate; pass one made by eo_pipeline")
    gt = [float(v) for v in crs_var.attrs["GeoTransform"].split()]
    transform = Affine(gt[1], gt[2], gt[0], gt[4], gt[5], gt[3])
    return GridSpec(crs_var.attrs["crs_wkt"], transform, (ds.sizes["y"], ds.sizes["x"]))


def overview_levels(shape: tuple[int, int], block: int = BLOCK) -> int:
    """Number of 2x overview levels until the image fits in one block (the COG rule)."""
    rows, cols = shape
    n = 0
    while max(rows, cols) > block:
        rows, cols = -(-rows // 2), -(-cols // 2)
        n += 1
    return n


def _is_empty(block: np.ndarray) -> bool:
    """True for a block without data: empty, or a broadcast fill view from the finalize step."""
    if block.size == 0:
        return True
    if 0 in block.strides:
        first = block.flat[0]
        return bool(np.isnan(first) or first == 0)
    return False


def _as_float32(block: np.ndarray) -> np.ndarray:
    """Kernel: cast to float32, keeping broadcast views of empty blocks as views."""
    if block.size and 0 in block.strides:
        return np.broadcast_to(np.float32(block.flat[0]), block.shape)
    return np.asarray(block, np.float32)


def _coarsen2(block: np.ndarray) -> np.ndarray:
    """Kernel: NaN-aware mean of 2 x 2 cells (odd edges padded with NaN); empty stays a view."""
    rows, cols = block.shape
    out_shape = (-(-rows // 2), -(-cols // 2))
    if 0 in block.strides:
        return np.broadcast_to(np.asarray(block.flat[0], np.float32), out_shape)
    padded = np.full((out_shape[0] * 2, out_shape[1] * 2), np.nan, np.float32)
    padded[:rows, :cols] = block
    total = np.zeros(out_shape, np.float32)
    count = np.zeros(out_shape, np.float32)
    for q in (padded[0::2, 0::2], padded[0::2, 1::2], padded[1::2, 0::2], padded[1::2, 1::2]):
        ok = ~np.isnan(q)
        total += np.where(ok, q, 0.0)
        count += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _pyramid(arr: da.Array, levels: int) -> list[da.Array]:
    """Lazy overview levels of a 2-D array (blocks of even size halve cleanly)."""
    out = [arr]
    for _ in range(levels):
        prev = out[-1]
        if any(c % 2 for dim in prev.chunks for c in dim[:-1]):
            prev = prev.rechunk({0: max(2, prev.chunksize[0] // 2 * 2), 1: max(2, prev.chunksize[1] // 2 * 2)})
        chunks = tuple(tuple(-(-c // 2) for c in dim) for dim in prev.chunks)
        out.append(prev.map_blocks(_coarsen2, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32)))
    return out


class _BandWriter:
    """``__setitem__`` target for ``da.store``: writes the non-empty 512-tiles of a block, by path.

    A tile is empty when all its values are NaN, or, for bands where ``zero_is_empty``
    (counts and weights), NaN or 0. Empty tiles are never written, so they read back as
    nodata and cost nothing in the file.
    """

    def __init__(self, path: str, band: int, shape: tuple[int, int], lock: Any, zero_is_empty: bool) -> None:
        self.path = path
        self.band = band
        self.shape = shape
        self.dtype = np.dtype("float32")
        self.ndim = 2
        self.lock = lock
        self.zero_is_empty = zero_is_empty

    def _empty(self, tile: np.ndarray) -> bool:
        if self.zero_is_empty:  # counts and weights are >= 0; NaN > 0 is False
            return not bool(np.any(tile > 0))
        return bool(np.isnan(tile).all())

    def __setitem__(self, key: tuple[slice, slice], block: np.ndarray) -> None:
        if _is_empty(block):
            return
        r0, c0 = key[0].start or 0, key[1].start or 0
        writes = []
        rows = _tile_edges(r0, block.shape[0])
        cols = _tile_edges(c0, block.shape[1])
        for a, b in zip(rows[:-1], rows[1:], strict=True):
            for c, d in zip(cols[:-1], cols[1:], strict=True):
                tile = block[a:b, c:d]
                if not self._empty(tile):
                    writes.append((Window(c0 + c, r0 + a, d - c, b - a), tile))
        if not writes:
            return
        lock = self.lock if self.lock is not None else _local_lock(self.path)
        with lock, rasterio.open(self.path, "r+") as dst:
            for window, tile in writes:
                dst.write(np.asarray(tile, np.float32), self.band, window=window)


def _tile_edges(start: int, length: int) -> list[int]:
    """Offsets (relative to ``start``) that split [start, start + length) at multiples of BLOCK."""
    edges = [0]
    nxt = (start // BLOCK + 1) * BLOCK - start
    while nxt < length:
        edges.append(nxt)
        nxt += BLOCK
    edges.append(length)
    return edges


def _default_lock(path: str) -> Any:
    """A cluster-wide lock per file when a distributed client is active, else None (process-local locks)."""
    try:
        from distributed import Lock, get_client

        get_client()
        return Lock(f"eo-pipeline-geotiff-{path}")
    except (ImportError, ValueError):
        return None


def _create(path: Path, grid: GridSpec, shape: tuple[int, int], transform: Affine, count: int) -> None:
    # temporary levels are compressed fast; the COG copy compresses them properly once
    profile = {
        "driver": "GTiff", "dtype": "float32", "count": count, "width": shape[1], "height": shape[0],
        "crs": grid.crs.to_wkt(), "transform": transform, "nodata": np.nan, "tiled": True,
        "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "zlevel": 1, "sparse_ok": True,
        "bigtiff": "YES",
    }
    with rasterio.open(path, "w", **profile):
        pass


def _metadata(items: Mapping[str, Any]) -> str:
    return "<Metadata>" + "".join(
        f'<MDI key="{escape(str(k), {chr(34): "&quot;"})}">{escape(str(v))}</MDI>' for k, v in items.items()
    ) + "</Metadata>"


def _vrt(files: Sequence[str], shapes: Sequence[tuple[int, int]], grid: GridSpec, names: Sequence[str],
         tags: Mapping[str, Any] | None = None, band_tags: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """VRT XML: the full-resolution file with the other files as its overviews, and the tags."""
    t = grid.transform
    rows, cols = shapes[0]
    parts = [f'<VRTDataset rasterXSize="{cols}" rasterYSize="{rows}">',
             f"<SRS>{escape(grid.crs.to_wkt())}</SRS>",
             f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>",
             _metadata(tags or {})]
    for k, name in enumerate(names, start=1):
        parts.append(f'<VRTRasterBand dataType="Float32" band="{k}"><NoDataValue>nan</NoDataValue>'
                     f"<Description>{escape(name)}</Description>{_metadata((band_tags or {}).get(name, {}))}")
        parts.append(f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(files[0])}</SourceFilename>'
                     f"<SourceBand>{k}</SourceBand>"
                     f'<SrcRect xOff="0" yOff="0" xSize="{cols}" ySize="{rows}"/>'
                     f'<DstRect xOff="0" yOff="0" xSize="{cols}" ySize="{rows}"/></SimpleSource>')
        for f in files[1:]:
            parts.append(f'<Overview><SourceFilename relativeToVRT="0">{escape(f)}</SourceFilename>'
                         f"<SourceBand>{k}</SourceBand></Overview>")
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)


def _finish(_stored: Any, files: Sequence[str], shapes: Sequence[tuple[int, int]], grid: GridSpec, path: str,
            names: Sequence[str], tags: Mapping[str, str], band_tags: Mapping[str, Mapping[str, str]]) -> str:
    """Tie the levels together in a VRT and copy it into a COG; move it into place."""
    target = Path(path)
    vrt = target.with_name(f".{target.name}.vrt")
    cog_tmp = target.with_name(f".{target.name}.cog-tmp")
    try:
        vrt.write_text(_vrt(files, shapes, grid, names, tags, band_tags))
        with rasterio.Env(GDAL_CACHEMAX=256):
            rasterio.shutil.copy(
                str(vrt), str(cog_tmp), driver="COG", compress="DEFLATE", predictor="FLOATING_POINT",
                blocksize=BLOCK, overviews="FORCE_USE_EXISTING" if len(files) > 1 else "NONE", sparse_ok="TRUE",
                bigtiff="IF_SAFER",
            )
        os.replace(cog_tmp, target)
    finally:
        for p in (*[Path(f) for f in files], vrt, cog_tmp):
            p.unlink(missing_ok=True)
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
        Lock serialising writes to the temporary files; default one process-local lock
        per file, or a ``distributed.Lock`` per file when a distributed client is active.
    """
    path = str(Path(path))
    if not path.lower().endswith((".tif", ".tiff")):
        raise OutputError(f"{path}: a GeoTIFF output must end in .tif")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    grid = grid_of(ds)
    names = list(variables) if variables is not None else [
        n for n, v in ds.data_vars.items() if v.dims == ("y", "x")]
    if not names:
        raise OutputError(f"{path}: nothing to write (no (y, x) variables)")
    levels = overview_levels(grid.shape)
    bands = [da.asarray(ds[n].data) for n in names]
    bands = [b if b.dtype == np.float32 else b.map_blocks(_as_float32, dtype=np.float32) for b in bands]
    pyramids = [_pyramid(b, levels) for b in bands]
    files, shapes = [], []
    try:
        for k in range(levels + 1):
            shape = pyramids[0][k].shape
            f = str(target.with_name(f".{target.name}.l{k}.tif"))
            scale = Affine.scale(grid.shape[1] / shape[1], grid.shape[0] / shape[0])
            _create(Path(f), grid, shape, grid.transform @ scale, len(names))
            files.append(f)
            shapes.append(shape)
    except rasterio.errors.RasterioIOError as exc:
        for f in files:
            Path(f).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot create the GeoTIFF ({exc})") from exc
    locks = [lock if lock is not None else _default_lock(f) for f in files]
    sources, targets = [], []
    for b, pyr in enumerate(pyramids, start=1):
        for k, arr in enumerate(pyr):
            sources.append(arr)
            targets.append(_BandWriter(files[k], b, arr.shape, locks[k], names[b - 1].endswith(("_count", "_weight"))))
    stored = da.store(sources, targets, lock=False, compute=False)
    all_tags = {k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float)}
    all_tags.update(tags or {})
    band_tags = {n: {k: ds[n].attrs[k] for k in ("units", "long_name") if k in ds[n].attrs} for n in names}
    result = dask.delayed(_finish, pure=False)(stored, files, shapes, grid, path, names, all_tags, band_tags)
    if compute:
        try:
            return result.compute()
        except BaseException:
            for f in files:
                Path(f).unlink(missing_ok=True)
            raise
    return result
