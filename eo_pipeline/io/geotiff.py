# SPDX-License-Identifier: Apache-2.0
"""Cloud-Optimized GeoTIFF writer for gridded (y, x) datasets.

Every band and every overview level is written block by block through
:func:`dask.array.store` into sparse, tiled temporary GeoTIFFs next to the target
(each task opens its file by path, under a lock, as rioxarray does, because rasterio
datasets cannot be pickled). Blocks without data are never written, and overviews are
computed here, lazily and only where there is data (NaN-aware 2 x 2 averages, like
GDAL's AVERAGE resampling), because GDAL would read every pixel of a mostly empty
global grid to build them. A VRT then ties the levels together and GDAL's COG driver
copies it (float32, NaN nodata, DEFLATE without a predictor, 512 x 512
tiles, the overviews as they are) into the target, which is renamed into place: a
failed run leaves nothing half-written.

The georeferencing comes from the map's ``x``/``y`` coordinates
(:meth:`GridSpec.from_dataset`), so maps cut, flipped, subsampled or coarsened with
plain xarray are written where their coordinates say, north-up. The temporary files
are created by the first task of the graph and all carry the names of
:mod:`eo_pipeline.io._atomic`; any task that fails removes them and raises one
:class:`~eo_pipeline.errors.OutputError` naming the target, the cause and the fix.
"""

from __future__ import annotations

import os
import sys
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
from numba import njit
from rasterio.windows import Window

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

__all__ = ["write_cog", "overview_levels"]

BLOCK = 512
#: TIFF predictor of the COG tiles: none. On this pipeline's maps (sparse, NaN-filled, noisy
#: cell means) the floating-point predictor (3) made files larger and the copy slower: a daily
#: global_0p05 composite 27.6 MB in 2.59 s with it, 20.7 MB in 1.76 s without (DEFLATE level 6,
#: one thread); the demo's maps 0-25 % smaller without, one anomaly map 3 % larger.
PREDICTOR = "NO"
#: Threads GDAL's COG driver uses to compress tiles (the copy is the last step of a map), in this process.
COPY_THREADS = str(max(1, min(4, os.cpu_count() or 1)))


def copy_threads() -> str:
    """GDAL threads for the COG copy: :data:`COPY_THREADS`, or 1 inside a dask worker.

    A worker runs as many tasks at once as it has threads, and its machine may hold
    other workers: a task there keeps to its one thread (as dask's nanny asks numpy's
    libraries to with ``OMP_NUM_THREADS=1``).
    """
    if "distributed" in sys.modules:  # a local run does not import it: nothing to ask
        from distributed import get_worker

        try:
            get_worker()
        except ValueError:
            return COPY_THREADS
        return "1"
    return COPY_THREADS


def overview_levels(shape: tuple[int, int], block: int = BLOCK) -> int:
    """Number of 2x overview levels until the image fits in one block (the COG rule)."""
    rows, cols = shape
    n = 0
    while max(rows, cols) > block:
        rows, cols = -(-rows // 2), -(-cols // 2)
        n += 1
    return n


def uniform_view(block: np.ndarray) -> bool:
    """True for a constant broadcast view (stride 0 along every axis longer than 1).

    The finalize step returns such views for blocks without data, so they cost no
    memory; a view broadcast along one axis only is not constant and does not count.
    """
    return bool(block.size) and all(s == 0 for s, n in zip(block.strides, block.shape, strict=True) if n > 1)


def _as_float32(block: np.ndarray) -> np.ndarray:
    """Kernel: cast to float32, keeping broadcast views of empty blocks as views."""
    if uniform_view(block):
        return np.broadcast_to(np.float32(block.flat[0]), block.shape)
    return np.asarray(block, np.float32)


@njit(cache=True, nogil=True)
def _coarsen2_nb(block: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    rows, cols = block.shape
    out = np.empty(((rows + 1) // 2, (cols + 1) // 2), np.float32)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            total = 0.0
            n = 0
            for r in range(2 * i, min(2 * i + 2, rows)):
                for c in range(2 * j, min(2 * j + 2, cols)):
                    v = block[r, c]
                    if v == v:  # not NaN
                        total += v
                        n += 1
            out[i, j] = total / n if n else np.nan
    return out


def _coarsen2(block: np.ndarray) -> np.ndarray:
    """Kernel: NaN-aware mean of 2 x 2 cells (odd edges: of the cells there are); empty stays a view."""
    rows, cols = block.shape
    out_shape = (-(-rows // 2), -(-cols // 2))
    if uniform_view(block):
        return np.broadcast_to(np.asarray(block.flat[0], np.float32), out_shape)
    return _coarsen2_nb(np.ascontiguousarray(block, np.float32))


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
    """``__setitem__`` target: writes the non-empty 512-tiles of a block of one band, by path.

    A tile is empty when all its values are NaN, or, for bands where ``zero_is_empty``
    (counts and weights), NaN or 0. Empty tiles are never written, so they read back as
    nodata and cost nothing in the file (the bands are tiled apart, so this holds per band).

    A failed write removes the output's temporaries before the file's lock is released.
    A write that finds its temporary file gone (before or after failing) returns quietly:
    the task that removed it reports the failure, and the final task, which needs the
    file, can never complete the output without it.
    """

    def __init__(self, path: str, band: int, shape: tuple[int, int], lock: Any, zero_is_empty: bool,
                 target: str) -> None:
        self.target = target
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
        if block.size == 0 or (uniform_view(block) and self._empty(block.flat[:1])):
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
        with write_lock(self.target, self.lock, part=self.path):
            if not os.path.exists(self.path):
                return  # the output already failed (see the class docstring)
            try:
                with rasterio.open(self.path, "r+") as dst:
                    for window, tile in writes:
                        dst.write(np.asarray(tile, np.float32), self.band, window=window)
            except Exception as exc:  # noqa: BLE001 - one clear message for any library failure
                if not os.path.exists(self.path):
                    return
                raise write_failed(self.target, "GeoTIFF", exc) from exc

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("eo_pipeline._BandWriter", self.target, self.path, self.band, self.shape, self.zero_is_empty)


def _tile_edges(start: int, length: int) -> list[int]:
    """Offsets (relative to ``start``) that split [start, start + length) at multiples of BLOCK."""
    edges = [0]
    nxt = (start // BLOCK + 1) * BLOCK - start
    while nxt < length:
        edges.append(nxt)
        nxt += BLOCK
    edges.append(length)
    return edges


def _create(path: Path, grid: GridSpec, shape: tuple[int, int], transform: Affine, count: int) -> None:
    """Kernel: an empty, sparse, tiled float32 GeoTIFF, uncompressed (only the COG copy compresses, once)."""
    profile = {
        "driver": "GTiff", "dtype": "float32", "count": count, "width": shape[1], "height": shape[0],
        "crs": grid.crs.to_wkt(), "transform": transform, "nodata": np.nan, "tiled": True,
        "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "none", "sparse_ok": True,
        "bigtiff": "YES", "interleave": "band",  # bands tiled apart: a band's skipped tile reads as nodata
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


def _create_levels(target: str, files: Sequence[str], shapes: Sequence[tuple[int, int]], grid: GridSpec,
                   count: int) -> Sequence[str]:
    """First task: the empty temporary GeoTIFF of every level (inside the graph, so a failed compute cleans it).

    Safe to rerun (a cluster reruns the tasks of a lost worker): a level that exists was
    made by this run (the writer removed stale ones when it was built) and is kept with
    the blocks already written into it; nothing is made once the output is done.
    """
    if done_marker(target).exists():
        return files
    try:
        for f, shape in zip(files, shapes, strict=True):
            if Path(f).exists():
                continue
            scale = Affine.scale(grid.shape[1] / shape[1], grid.shape[0] / shape[0])
            create_atomically(f, lambda part, shape=shape, scale=scale: _create(
                part, grid, shape, grid.transform @ scale, count))
    except Exception as exc:  # noqa: BLE001 - one clear message for any library failure
        raise write_failed(target, "GeoTIFF", exc) from exc
    return files


def _write_block(_created: Any, block: np.ndarray, writer: _BandWriter, row0: int, col0: int, target: str) -> None:
    """Task: one block of one band and level into its temporary file."""
    try:
        writer[(slice(row0, row0 + block.shape[0]), slice(col0, col0 + block.shape[1]))] = block
    except Exception as exc:  # noqa: BLE001
        raise write_failed(target, "GeoTIFF", exc) from exc


def _finish(_stored: Any, files: Sequence[str], shapes: Sequence[tuple[int, int]], grid: GridSpec, path: str,
            names: Sequence[str], tags: Mapping[str, str], band_tags: Mapping[str, Mapping[str, str]]) -> str:
    """Last task: tie the levels together in a VRT, copy it into a COG, move that into place.

    The done marker is made once the COG copy is complete, before it moves into place;
    a rerun that finds the marker only finishes the move.
    """
    target = Path(path)
    vrt = temp_path(target, "vrt", suffix=".vrt")
    cog_tmp = temp_path(target, "cog", suffix=".tif")
    marker = done_marker(target)
    if marker.exists():
        if cog_tmp.exists():
            os.replace(cog_tmp, target)
        remove_parts(target)
        return path
    try:
        vrt.write_text(_vrt(files, shapes, grid, names, tags, band_tags))
        with rasterio.Env(GDAL_CACHEMAX=256):
            rasterio.shutil.copy(
                str(vrt), str(cog_tmp), driver="COG", compress="DEFLATE", predictor=PREDICTOR,
                blocksize=BLOCK, overviews="FORCE_USE_EXISTING" if len(files) > 1 else "NONE", sparse_ok="TRUE",
                bigtiff="IF_SAFER", num_threads=copy_threads(),
            )
        mark_done(target)
        os.replace(cog_tmp, target)
    except Exception as exc:  # noqa: BLE001
        raise write_failed(target, "GeoTIFF", exc) from exc
    remove_parts(target)
    return path


def _bands(ds: xr.Dataset, variables: Sequence[str] | None, path: str) -> list[str]:
    names = list(variables) if variables is not None else [
        n for n, v in ds.data_vars.items() if set(v.dims) == {"y", "x"}]
    if not names:
        raise OutputError(f"{path}: nothing to write (no (y, x) variables)")
    for n in names:
        if n not in ds.data_vars or set(ds[n].dims) != {"y", "x"}:
            dims = tuple(ds[n].dims) if n in ds.variables else "missing"
            raise OutputError(f"{path}: variable {n!r} is not a (y, x) map (dims {dims}); select one time step "
                              "first (ds.isel(time=k)) or leave it out of variables=")
    return names


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
        Gridded map with 1-D ``x``/``y`` cell-centre coordinates (CRS units) and a grid
        mapping (see :meth:`GridSpec.from_dataset`); cut, flipped, subsampled or
        coarsened maps are written where their coordinates say, north-up.
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
        Lock serialising writes to the temporary files; default a ``distributed.Lock``
        per file when a distributed client is active, else a lock per output shared by
        this process's threads and, through a lock file, by other processes
        (:func:`eo_pipeline.io._atomic.write_lock`).

    Returns
    -------
    str or dask.delayed.Delayed
        The path written, or the Delayed that writes it.

    Raises
    ------
    GridError
        The coordinates are not regular, or the map has no CRS (before anything is written).
    OutputError
        The file cannot be written (for example no space left on device, or the file
        size limit), with one line naming the target, the cause and the fix; no
        temporary file and no partial target is left behind.
    """
    path = str(Path(path))
    if not path.lower().endswith((".tif", ".tiff")):
        raise OutputError(f"{path}: a GeoTIFF output must end in .tif")
    target = Path(path)
    grid = GridSpec.from_dataset(ds)
    ds = north_up(ds)
    names = _bands(ds, variables, path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(target, "GeoTIFF", exc) from exc
    levels = overview_levels(grid.shape)
    bands = [da.asarray(ds[n].transpose("y", "x").data) for n in names]
    bands = [b if b.dtype == np.float32 else b.map_blocks(_as_float32, dtype=np.float32) for b in bands]
    pyramids = [_pyramid(b, levels) for b in bands]
    shapes = [arr.shape for arr in pyramids[0]]
    files = [str(temp_path(target, f"l{k}", suffix=".tif")) for k in range(levels + 1)]
    remove_temporaries(target)  # of an earlier, killed writer: the tasks trust the parts they find
    created = dask.delayed(_create_levels, pure=True)(path, files, shapes, grid, len(names))
    locks = [lock if lock is not None else cluster_lock(f) for f in files]
    jobs = []
    for b, pyr in enumerate(pyramids, start=1):
        for k, arr in enumerate(pyr):
            zero_is_empty = names[b - 1].endswith(("_count", "_weight", "_num_samples"))
            writer = _BandWriter(files[k], b, arr.shape, locks[k], zero_is_empty, path)
            jobs.append((arr, _write_block, lambda index, region, w=writer: (w, region[0].start, region[1].start, path)))
    all_tags = {k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float)}
    all_tags.pop("grid", None)  # a cut of a named grid is no longer that grid
    all_tags.update(grid.identity_attrs())
    all_tags.update(tags or {})
    band_tags = {n: {k: ds[n].attrs[k] for k in ("units", "long_name") if k in ds[n].attrs} for n in names}
    result = blocks_then(created, jobs, _finish, (files, shapes, grid, path, names, all_tags, band_tags),
                         token=(path, [a.name for a, _, _ in jobs], all_tags, band_tags))
    return compute_writer(result, target) if compute else result
