# SPDX-License-Identifier: Apache-2.0
"""Cloud-Optimized GeoTIFF writer for gridded (y, x) datasets.

One task per block of the map makes every band of that block, and every overview
level of it, and compresses the COG's 512 x 512 tiles that lie wholly in the block
(:mod:`._cog_tiles`) into a file of its own (no other task writes it, so no lock is
taken, and a worker compresses what it computed, in parallel with the other blocks).
Tiles without data are never written, and the overviews are computed here, per block
and only where there is data (NaN-aware 2 x 2 averages, like GDAL's AVERAGE
resampling), because GDAL would read every pixel of a mostly empty global grid to
build them. The tiles that straddle blocks (the coarse overview levels of a map of
several blocks) are made by the last task from the blocks' cells of that level, sparse
uncompressed GeoTIFFs read through a VRT. That task has GDAL's COG driver write the
frame (every tile sparse: float32, NaN nodata, DEFLATE without a predictor, 512 x 512
tiles, the overviews, georeferencing and tags), places every tile into it, and moves
the file into place: a failed run leaves nothing half-written. A band's tile without
data (all NaN; counts and weights: nothing above 0) is nodata, whatever the blocks.

The georeferencing comes from the map's ``x``/``y`` coordinates
(:meth:`GridSpec.from_dataset`), so maps cut, flipped, subsampled or coarsened with
plain xarray are written where their coordinates say, north-up. The temporary files
all carry the names of
:mod:`eo_pipeline.io._atomic`; any task that fails removes them and raises one
:class:`~eo_pipeline.errors.OutputError` naming the target, the cause and the fix.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import dask.array as da
import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil
import xarray as xr
from affine import Affine
from numba import njit
from rasterio.windows import Window

from ..binning import constant_view, uniform_view
from ..errors import OutputError
from ..grid import GridSpec, north_up
from ._atomic import (
    beyond_size_limit,
    compute_writer,
    create_atomically,
    done_marker,
    mark_done,
    private_name,
    remove_parts,
    remove_temporaries,
    temp_path,
    write_failed,
)
from ._cog_tiles import TILE, TileSource, encode_tiles, holds_data, owned_tiles, place_tiles, straddling_tiles
from ._graph import blocks_then

log = logging.getLogger(__name__)

__all__ = ["write_cog", "overview_levels"]

BLOCK = TILE  # the COG's tiles (512 cells), which the blocks' tasks compress
#: TIFF predictor of the COG tiles: none. On this pipeline's maps (sparse, NaN-filled, noisy
#: cell means) the floating-point predictor (3) made files larger and the copy slower: a daily
#: global_0p05 composite 27.6 MB in 2.59 s with it, 20.7 MB in 1.76 s without (DEFLATE level 6,
#: one thread); the demo's maps 0-25 % smaller without, one anomaly map 3 % larger.
PREDICTOR = "NO"
#: Threads that compress the tiles of a map that is one block (in this process; other maps compress a block per task).
TILE_THREADS = max(1, min(4, os.cpu_count() or 1))
#: GDAL's BIGTIFF creation option for the COG (classic TIFF unless the map could pass 4 GiB).
BIGTIFF = "IF_SAFER"


def tile_threads() -> int:
    """Threads that compress the tiles of a one-block map: :data:`TILE_THREADS` in this process; in a worker, its share.

    A map of several blocks compresses each block's tiles in that block's task, in
    parallel; a map that is one block (small maps; a job's single map up to
    :data:`~eo_pipeline.gridding.WRITTEN_IN_BLOCKS_ABOVE` cells) has only its one task to
    do it. A worker runs as many tasks at once as it has
    threads, and its machine may hold other workers, so a task there keeps to its one
    thread (as dask's nanny asks numpy's libraries to with ``OMP_NUM_THREADS=1``), plus
    the threads of the workers on the same host that the scheduler has nothing for at
    that moment, up to :data:`TILE_THREADS`. A worker alone (or whose neighbours are
    busy) compresses with one thread.
    """
    if "distributed" in sys.modules:  # a local run does not import it: nothing to ask
        from distributed import get_worker

        try:
            worker = get_worker()
        except ValueError:
            return TILE_THREADS
        return min(TILE_THREADS, 1 + _idle_neighbour_threads(worker))
    return TILE_THREADS


def _idle_neighbour_threads(worker: Any) -> int:
    """Count the threads of the other workers on ``worker``'s host that have no task (0 if the scheduler is silent)."""
    from urllib.parse import urlsplit

    from distributed.utils import sync

    try:
        processing = sync(worker.loop, worker.scheduler.processing, workers=None, callback_timeout=5)
        nthreads = sync(worker.loop, worker.scheduler.ncores, workers=None, callback_timeout=5)
    except Exception as exc:  # noqa: BLE001 - a scheduler that does not answer: keep to one thread
        log.debug("copy threads: the scheduler did not say which workers are idle (%s)", exc)
        return 0
    host = urlsplit(worker.address).hostname
    return sum(int(nthreads.get(w, 0)) for w, keys in processing.items()
               if w != worker.address and not keys and urlsplit(w).hostname == host)


def overview_levels(shape: tuple[int, int], block: int = BLOCK) -> int:
    """Number of 2x overview levels until the image fits in one block (the COG rule)."""
    rows, cols = shape
    n = 0
    while max(rows, cols) > block:
        rows, cols = -(-rows // 2), -(-cols // 2)
        n += 1
    return n


def _as_float32(block: np.ndarray) -> np.ndarray:
    """Kernel: cast to float32, keeping broadcast views of empty blocks as views."""
    if uniform_view(block):
        return constant_view(block.flat[0], block.shape, np.float32)
    return np.asarray(block, np.float32)


def _small_int(block: np.ndarray) -> bool:
    """Return whether ``block`` holds integers that fit int32 (counts): cast tile by tile as written, not as a whole."""
    return (block.dtype.kind in "iu" and block.dtype.itemsize < 4) or block.dtype == np.int32


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
        return constant_view(block.flat[0], out_shape, np.float32)
    if _small_int(block):  # counts: summed exactly in float64, without a float32 copy of the block
        return _coarsen2_nb(np.ascontiguousarray(block, np.int32))
    return _coarsen2_nb(np.ascontiguousarray(block, np.float32))


def _aligned(arr: da.Array, levels: int) -> da.Array:
    """``arr`` with every block but the last of each axis a multiple of ``2**levels`` cells.

    Then every overview level of a block is the 2 x 2 coarsening of the level above
    within that block, exactly as of the whole map, and a block's task makes all its
    levels alone.
    """
    step = 2**levels
    if all(c % step == 0 for dim in arr.chunks for c in dim[:-1]):
        return arr
    return arr.rechunk(tuple(max(step, round(arr.chunksize[d] / step) * step) for d in range(2)))


def _tiles(block: np.ndarray) -> list[tuple[Window, np.ndarray]]:
    """The 512-tiles of one band's block that hold data (not all NaN)."""
    if block.size == 0 or (uniform_view(block) and not holds_data(block.flat[:1])):
        return []
    rows, cols = block.shape
    return [(Window(c, r, min(BLOCK, cols - c), min(BLOCK, rows - r)), block[r:r + BLOCK, c:c + BLOCK])
            for r in range(0, rows, BLOCK) for c in range(0, cols, BLOCK)
            if holds_data(block[r:r + BLOCK, c:c + BLOCK])]


def _write_part(path: Path, bands: Sequence[np.ndarray], transform: Affine) -> bool:
    """Kernel: one level of one block, all bands, as a sparse tiled float32 GeoTIFF (nothing if empty).

    Only its tiles that hold data (zeros included: the last task decides what is empty
    on the COG's own tiles) are written; the others read back as nodata (NaN). The file
    is made under another name and moved into place, so a task run twice (a cluster
    reruns the tasks of a lost worker) never leaves or reads a half-made part.
    """
    writes = [(b, _tiles(block)) for b, block in enumerate(bands, start=1)]
    if not any(tiles for _, tiles in writes):
        return False
    rows, cols = bands[0].shape
    profile = {
        "driver": "GTiff", "dtype": "float32", "count": len(bands), "width": cols, "height": rows,
        "nodata": np.nan, "transform": transform, "tiled": True, "compress": "none", "sparse_ok": True,
        "interleave": "band",
        # tiles of 16 x k cells (GDAL's rule), at most 512: the small blocks of the coarse levels are one tile
        "blockxsize": min(BLOCK, -(-cols // 16) * 16), "blockysize": min(BLOCK, -(-rows // 16) * 16),
    }
    # a failed part is removed with the output's other temporaries by the caller (write_failed, after it
    # looked at their sizes), not here as create_atomically would
    part = private_name(path)
    try:
        with rasterio.open(part, "w", **profile) as dst:
            for b, tiles in writes:
                for window, tile in tiles:
                    dst.write(np.asarray(tile, np.float32), b, window=window)
    except rasterio.errors.RasterioError as exc:  # GDAL hides the operating system's error
        data = sum(tile.size for _, tiles in writes for _, tile in tiles) * 4
        if beyond_size_limit(data):
            raise OSError(errno.EFBIG, f"{part}: file size limit exceeded") from exc
        raise
    os.replace(part, path)
    return True


def _write_block(*blocks: np.ndarray, target: str, index: tuple[int, int], origin: tuple[int, int],
                 shapes: Sequence[tuple[int, int]], transform: Affine, zero_is_empty: Sequence[bool],
                 single: bool = False) -> dict[str, Any]:
    """Task: one block of every band, with all its overview levels: its COG tiles, compressed, in a file of its own.

    Level ``k`` of the block is the 2 x 2 coarsening of level ``k - 1`` (the block's
    origin is a multiple of ``2**levels`` cells, see :func:`_aligned`). The tiles of each
    level that lie wholly in the block are compressed here (:mod:`._cog_tiles`); where
    a level's tiles also reach into other blocks, the block's cells of that level go to a
    sparse uncompressed GeoTIFF, for the last task to make those tiles from. No other task
    writes these files, so no lock is taken. ``single``: the map is this one block (its
    tiles are then compressed with :func:`tile_threads` threads). Returns the parts
    ``(level, row, col, rows, cols, file)`` and the tiles ``(file, [(level, tile_row,
    tile_col, offset, size), ...])``; nothing once the output is done (a task rerun after
    the output was finished).
    """
    if done_marker(target).exists():
        return {"parts": [], "tiles": None}
    parts = []
    jobs: list[tuple[tuple[int, int, int], Any]] = []
    try:
        level = [b if _small_int(b) else _as_float32(b) for b in blocks]  # float32 passes through uncopied
        for k, shape in enumerate(shapes):
            if k:
                level = [_coarsen2(b) for b in level]
            at_k = (origin[0] >> k, origin[1] >> k)
            owned, straddles = owned_tiles(shape, at_k, level[0].shape)
            jobs += [((k, tr, tc), lambda lv=level, r=r, c=c, h=h, w=w: [b[r:r + h, c:c + w] for b in lv])
                     for tr, tc, r, c, h, w in owned]
            if straddles:  # cells for the tiles shared with other blocks; all their values (zeros too)
                path = temp_path(target, f"l{k}r{index[0]}c{index[1]}", suffix=".tif")
                # where the part lies (its cells in the level's grid); the VRT places it by its cell offsets
                at = transform @ Affine.scale(shapes[0][1] / shape[1], shapes[0][0] / shape[0]) \
                    @ Affine.translation(at_k[1], at_k[0])
                if _write_part(path, level, at):
                    parts.append((k, *at_k, *level[0].shape, str(path)))
        encoded = encode_tiles(jobs, zero_is_empty, tile_threads() if single else 1)
        tiles = None
        if encoded:
            path = temp_path(target, f"tr{index[0]}c{index[1]}", suffix=".bin")
            entries, offset = [], 0
            for key, data in encoded:
                entries.append((*key, offset, len(data)))
                offset += len(data)
            create_atomically(path, lambda part: _write_bytes(part, [data for _, data in encoded]))
            tiles = (str(path), entries)
    except Exception as exc:  # noqa: BLE001 - one clear message for any library failure
        raise write_failed(target, "GeoTIFF", exc) from exc
    return {"parts": parts, "tiles": tiles}


def _write_bytes(path: Path, chunks: Sequence[bytes | bytearray]) -> None:
    """Write ``chunks`` one after the other to ``path``."""
    with open(path, "wb") as f:
        for c in chunks:
            f.write(c)


def _metadata(items: Mapping[str, Any]) -> str:
    return "<Metadata>" + "".join(
        f'<MDI key="{escape(str(k), {chr(34): "&quot;"})}">{escape(str(v))}</MDI>' for k, v in items.items()
    ) + "</Metadata>"


def _sources(parts: Sequence[tuple[int, int, int, int, str]], band: int) -> str:
    return "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(f)}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{cols}" ySize="{rows}"/>'
        f'<DstRect xOff="{c}" yOff="{r}" xSize="{cols}" ySize="{rows}"/></SimpleSource>'
        for r, c, rows, cols, f in parts)


def _vrt(parts: Sequence[tuple[int, int, int, int, str]], shape: tuple[int, int], grid: GridSpec | None,
         names: Sequence[str], tags: Mapping[str, Any] | None = None,
         band_tags: Mapping[str, Mapping[str, Any]] | None = None, overviews: Sequence[str] = ()) -> str:
    """VRT XML of one level: the blocks' files ``(row, col, rows, cols, file)`` where they lie.

    Cells no file covers read as nodata (NaN). The full-resolution level carries the
    georeference, the tags and the other levels' VRTs as its overviews.
    """
    rows, cols = shape
    parts_xml = [f'<VRTDataset rasterXSize="{cols}" rasterYSize="{rows}">']
    if grid is not None:
        t = grid.transform
        parts_xml += [f"<SRS>{escape(grid.crs.to_wkt())}</SRS>",
                      f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>",
                      _metadata(tags or {})]
    for k, name in enumerate(names, start=1):
        parts_xml.append(f'<VRTRasterBand dataType="Float32" band="{k}"><NoDataValue>nan</NoDataValue>')
        if grid is not None:
            parts_xml.append(f"<Description>{escape(name)}</Description>{_metadata((band_tags or {}).get(name, {}))}")
        parts_xml.append(_sources(parts, k))
        for f in overviews:
            parts_xml.append(f'<Overview><SourceFilename relativeToVRT="0">{escape(f)}</SourceFilename>'
                             f"<SourceBand>{k}</SourceBand></Overview>")
        parts_xml.append("</VRTRasterBand>")
    parts_xml.append("</VRTDataset>")
    return "".join(parts_xml)


def _finish(written: Sequence[Mapping[str, Any]], shapes: Sequence[tuple[int, int]],
            grid: GridSpec, path: str, names: Sequence[str], tags: Mapping[str, str],
            band_tags: Mapping[str, Mapping[str, str]], straddling: Sequence[Sequence[tuple[int, int]]],
            zero_is_empty: Sequence[bool]) -> str:
    """Last task: the COG from the blocks' tiles, moved into place.

    GDAL's COG driver writes the frame (every tile sparse: header, directories,
    georeferencing, tags), the tiles that straddle blocks are made from the blocks'
    parts (a VRT per level), and :func:`~._cog_tiles.place_tiles` appends every tile
    and fills in the tile tables. The done marker is made once the COG is complete,
    before it moves into place; a rerun that finds the marker only finishes the move.
    """
    target = Path(path)
    cog_tmp = temp_path(target, "cog", suffix=".tif")
    marker = done_marker(target)
    if marker.exists():
        if cog_tmp.exists():
            os.replace(cog_tmp, target)
        remove_parts(target)
        return path
    try:
        by_level: list[list[tuple[int, int, int, int, str]]] = [[] for _ in shapes]
        tiles: dict[tuple[int, int, int], TileSource] = {}
        for block in written:
            for k, r, c, rows, cols, f in block["parts"]:
                by_level[k].append((r, c, rows, cols, f))
            if block["tiles"] is not None:
                name, entries = block["tiles"]
                for k, tr, tc, offset, size in entries:
                    tiles[(k, tr, tc)] = (name, offset, size)
        tiles.update(_straddling_tiles(target, by_level, shapes, names, straddling, zero_is_empty))
        # the frame: the levels as VRTs without sources (every tile nodata, so GDAL compresses nothing)
        overviews = []
        for k in range(1, len(shapes)):
            ovr = temp_path(target, f"o{k}", suffix=".vrt")
            ovr.write_text(_vrt([], shapes[k], None, names))
            overviews.append(str(ovr))
        vrt = temp_path(target, "vrt", suffix=".vrt")
        vrt.write_text(_vrt([], shapes[0], grid, names, tags, band_tags, overviews))
        with rasterio.Env(GDAL_CACHEMAX=64):
            rasterio.shutil.copy(
                str(vrt), str(cog_tmp), driver="COG", compress="DEFLATE", predictor=PREDICTOR,
                blocksize=BLOCK, overviews="FORCE_USE_EXISTING" if overviews else "NONE", sparse_ok="TRUE",
                bigtiff=BIGTIFF, num_threads="1",
            )
        place_tiles(cog_tmp, shapes, len(names), tiles)
        mark_done(target)
        os.replace(cog_tmp, target)
    except Exception as exc:  # noqa: BLE001
        raise write_failed(target, "GeoTIFF", exc) from exc
    remove_parts(target)
    return path


def _straddling_tiles(target: Path, by_level: Sequence[Sequence[tuple[int, int, int, int, str]]],
                      shapes: Sequence[tuple[int, int]], names: Sequence[str],
                      straddling: Sequence[Sequence[tuple[int, int]]],
                      zero_is_empty: Sequence[bool]) -> dict[tuple[int, int, int], bytes | bytearray]:
    """The tiles no single block holds, compressed from the blocks' parts of their level (read through a VRT)."""
    out: dict[tuple[int, int, int], bytes | bytearray] = {}
    for k, todo in enumerate(straddling):
        if not todo or not by_level[k]:
            continue
        vrt = temp_path(target, f"s{k}", suffix=".vrt")
        vrt.write_text(_vrt(by_level[k], shapes[k], None, names))
        rows, cols = shapes[k]
        with rasterio.Env(GDAL_CACHEMAX=64), warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # cells are all it needs
            src = rasterio.open(vrt)
        with src:
            def cells(tr: int, tc: int, src: Any = src, rows: int = rows, cols: int = cols) -> list[np.ndarray]:
                window = Window(tc * BLOCK, tr * BLOCK, min(BLOCK, cols - tc * BLOCK), min(BLOCK, rows - tr * BLOCK))
                return list(src.read(window=window))

            # one thread: GDAL datasets are not to be shared between threads
            out.update({(k, *key): data for key, data in encode_tiles(
                [((tr, tc), lambda tr=tr, tc=tc: cells(tr, tc)) for tr, tc in todo], zero_is_empty, 1)})
    return out


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
    # bands of other types are cast per block by the writing task (no extra task and copy
    # for int32 counts: tiles are cast as they are written, overviews sum them exactly)
    bands = [_aligned(b, levels) for b in bands]
    bands = [b if b.chunks == bands[0].chunks else b.rechunk(bands[0].chunks) for b in bands]
    shapes = [grid.shape]
    for _ in range(levels):
        shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
    remove_temporaries(target)  # of an earlier, killed writer: the tasks trust the parts they find
    zero_is_empty = tuple(n.endswith(("_count", "_weight", "_num_samples")) for n in names)
    starts = [np.concatenate(([0], np.cumsum(c[:-1]))).astype(int) for c in bands[0].chunks]

    single = bands[0].npartitions == 1

    def extra(index: tuple[int, ...]) -> dict[str, Any]:
        return {"target": path, "index": index, "origin": (int(starts[0][index[0]]), int(starts[1][index[1]])),
                "shapes": shapes, "transform": grid.transform, "zero_is_empty": zero_is_empty, "single": single}

    # the tiles of each level that a block boundary runs through: made by the last task
    straddling = [straddling_tiles(shape, [int(s) >> k for s in starts[0]], [int(s) >> k for s in starts[1]])
                  for k, shape in enumerate(shapes)]

    all_tags = {k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float)}
    all_tags.pop("grid", None)  # a cut of a named grid is no longer that grid
    all_tags.update(grid.identity_attrs())
    all_tags.update(tags or {})
    band_tags = {n: {k: ds[n].attrs[k] for k in ("units", "long_name") if k in ds[n].attrs} for n in names}
    result = blocks_then(None, [(bands, _write_block, extra)], _finish,
                         (shapes, grid, path, names, all_tags, band_tags, straddling, zero_is_empty),
                         token=(path, [b.name for b in bands], levels, all_tags, band_tags))
    return compute_writer(result, target) if compute else result
