# SPDX-License-Identifier: Apache-2.0
"""The COG's tiles, compressed where the map's blocks are computed, placed into GDAL's COG frame.

Compressing the tiles is most of the work of writing a COG. GDAL's COG driver does it
in the one task that makes the file, after every block of the map is done; on a cluster
that task ran alone at the end of each map. Here each block's task compresses the
512 x 512 tiles that lie wholly inside it (:func:`owned_tiles`, :func:`encode_tile`), in
parallel with the other blocks, and the last task only compresses the few tiles that
straddle blocks (the coarse overview levels) and places them all:

* GDAL's COG driver writes the frame: the same file with every tile sparse (header,
  GDAL's structural-metadata ghost area, the image file directories with their
  georeferencing, tags and tile tables). No data are compressed for it.
* :func:`place_tiles` appends the tiles in the COG's order (the smallest overview
  first, then each larger level, the full resolution last; row-major within a level),
  each with the block leader and trailer the ghost area announces (its size as a
  4-byte integer before it, its last 4 bytes repeated after it), and fills in the tile
  offset and byte-count tables of every directory. Tiles without data stay sparse
  (offset and size 0), which GDAL reads as nodata.

The tiles are what GDAL's writer makes for the same options: float32, pixel-interleaved
bands, DEFLATE (zlib stream) without a predictor, edge tiles padded to 512 x 512.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

# libdeflate (the ``deflate`` package, as GDAL's own DEFLATE): at level 6 its tiles are as small as zlib's and
# GDAL's (a daily global_0p05 composite 21.7 MB), 2.8x faster than zlib; zlib-ng at level 6 is slower and its
# tiles 7 % larger. It releases the GIL.
from deflate import zlib_compress as _deflate

__all__ = ["TILE", "LEVEL", "TileSource", "holds_data", "encode_tile", "encode_tiles", "owned_tiles",
           "straddling_tiles", "place_tiles"]

#: Tile size of the COG (cells).
TILE = 512
#: DEFLATE level (GDAL's default for the COG driver).
LEVEL = 6

#: A compressed tile: its bytes, or ``(file, offset, size)`` of them in a block's tile file.
TileSource = bytes | bytearray | tuple[str, int, int]


def holds_data(tile: np.ndarray, zero_is_empty: bool = False) -> bool:
    """Whether a band's cells hold data: not all NaN; with ``zero_is_empty`` (counts, weights), some above 0."""
    if zero_is_empty:  # counts and weights are >= 0; NaN > 0 is False
        return bool(np.any(tile > 0))
    return not bool(np.isnan(tile).all())


def encode_tile(bands: Sequence[np.ndarray], zero_is_empty: Sequence[bool]) -> bytes | bytearray | None:
    """Kernel: one COG tile of all bands, DEFLATE-compressed; None if no band holds data.

    Parameters
    ----------
    bands : sequence of 2-D arrays
        The tile's cells of each band (at most :data:`TILE` x :data:`TILE`; edge tiles
        are smaller), any real dtype; written as float32.
    zero_is_empty : sequence of bool
        Per band: whether a tile of zeros (and NaN) holds no data (counts and weights);
        otherwise a band's tile holds no data when it is all NaN. A band's tile without
        data is written as NaN (nodata).

    Returns
    -------
    bytes, bytearray or None
        The zlib stream of the 512 x 512 x bands float32 little-endian tile (the cells
        beyond an edge tile's extent are NaN), or None when no band holds data.
    """
    rows, cols = bands[0].shape
    keep = [holds_data(b, z) for b, z in zip(bands, zero_is_empty, strict=True)]
    if not any(keep):
        return None
    buf = np.full((TILE, TILE, len(bands)), np.nan, "<f4")
    for k, (b, kept) in enumerate(zip(bands, keep, strict=True)):
        if kept:
            buf[:rows, :cols, k] = b
    return _deflate(buf.data, LEVEL)


def encode_tiles(jobs: Sequence[tuple[Any, Callable[[], Sequence[np.ndarray]]]], zero_is_empty: Sequence[bool],
                 threads: int = 1) -> list[tuple[Any, bytes | bytearray]]:
    """Compress tiles ``(key, bands())`` with ``threads`` threads (zlib releases the GIL); empty ones are left out."""
    def one(job: tuple[Any, Callable[[], Sequence[np.ndarray]]]) -> tuple[Any, bytes | bytearray | None]:
        return job[0], encode_tile(job[1](), zero_is_empty)

    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="eo-pipeline-deflate") as pool:
            done = list(pool.map(one, jobs))
    else:
        done = [one(j) for j in jobs]
    return [(k, data) for k, data in done if data is not None]


def _spans(start: int, size: int, extent: int) -> list[tuple[int, int, int]]:
    """Tile indices along one axis that intersect ``[start, start + size)``: ``(index, first, last)`` cells."""
    first, last = start // TILE, (start + size - 1) // TILE
    return [(t, t * TILE, min((t + 1) * TILE, extent)) for t in range(first, last + 1)] if size > 0 else []


def owned_tiles(shape: tuple[int, int], origin: tuple[int, int],
                block: tuple[int, int]) -> tuple[list[tuple[int, int, int, int, int, int]], bool]:
    """The tiles of one level that lie wholly in a block, and whether the block has others.

    Parameters
    ----------
    shape : (rows, cols)
        The level's shape.
    origin : (row, col)
        The block's first cell in the level.
    block : (rows, cols)
        The block's shape in the level.

    Returns
    -------
    owned : list of (tile_row, tile_col, row, col, rows, cols)
        Each tile wholly inside the block, with its cells relative to the block.
    straddles : bool
        Whether a tile that reaches into the block also reaches beyond it.
    """
    rows = _spans(origin[0], block[0], shape[0])
    cols = _spans(origin[1], block[1], shape[1])
    inside_r = [(t, a, b) for t, a, b in rows if a >= origin[0] and b <= origin[0] + block[0]]
    inside_c = [(t, a, b) for t, a, b in cols if a >= origin[1] and b <= origin[1] + block[1]]
    owned = [(tr, tc, a - origin[0], c - origin[1], b - a, d - c) for tr, a, b in inside_r for tc, c, d in inside_c]
    return owned, len(inside_r) < len(rows) or len(inside_c) < len(cols)


def straddling_tiles(shape: tuple[int, int], row_starts: Sequence[int],
                     col_starts: Sequence[int]) -> list[tuple[int, int]]:
    """The tiles of one level that no single block holds: those a block boundary runs through.

    ``row_starts``/``col_starts`` are the blocks' first rows and columns in the level.
    """
    def cut(starts: Sequence[int], extent: int) -> set[int]:
        return {t for t in range(-(-extent // TILE)) for s in starts if t * TILE < s < min((t + 1) * TILE, extent)}

    rows, cols = cut(row_starts, shape[0]), cut(col_starts, shape[1])
    n_r, n_c = -(-shape[0] // TILE), -(-shape[1] // TILE)
    return [(r, c) for r in range(n_r) for c in range(n_c) if r in rows or c in cols]


# TIFF tags and field types used here
_WIDTH, _LENGTH, _COMPRESSION, _SAMPLES, _PLANAR = 256, 257, 259, 277, 284
_TILE_W, _TILE_L, _OFFSETS, _COUNTS = 322, 323, 324, 325
_FORMATS = {3: "H", 4: "I", 16: "Q"}


def _directories(f: Any) -> tuple[str, bool, list[dict[int, tuple[int, int, int, int]]]]:
    """Byte order, BigTIFF, and per directory ``tag -> (type, count, value-field position, inline value)``."""
    head = f.read(16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        raise ValueError("not a TIFF file")
    version = struct.unpack(order + "H", head[2:4])[0]
    big = version == 43
    if version not in (42, 43):
        raise ValueError(f"unknown TIFF version {version}")
    at = struct.unpack(order + "Q", head[8:16])[0] if big else struct.unpack(order + "I", head[4:8])[0]
    count_fmt, entry, value_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    dirs = []
    while at:
        f.seek(at)
        n = struct.unpack(order + count_fmt, f.read(struct.calcsize(count_fmt)))[0]
        raw = f.read(n * entry)
        tags: dict[int, tuple[int, int, int, int]] = {}
        for i in range(n):
            e = raw[i * entry:(i + 1) * entry]
            tag, typ = struct.unpack(order + "HH", e[:4])
            count = struct.unpack(order + value_fmt, e[4:4 + struct.calcsize(value_fmt)])[0]
            field = e[4 + struct.calcsize(value_fmt):]
            pos = at + struct.calcsize(count_fmt) + i * entry + 4 + struct.calcsize(value_fmt)
            inline = struct.unpack(order + _FORMATS[typ], field[:struct.calcsize(_FORMATS[typ])])[0] \
                if typ in _FORMATS and count == 1 else 0
            tags[tag] = (typ, count, pos, inline)
        dirs.append(tags)
        at = struct.unpack(order + value_fmt, f.read(struct.calcsize(value_fmt)))[0]
    return order, big, dirs


def _read(source: TileSource, opened: dict[str, Any]) -> bytes | bytearray:
    if not isinstance(source, tuple):  # compressed here (bytes or bytearray)
        return source
    name, offset, size = source
    f = opened.get(name)
    if f is None:
        f = opened[name] = open(name, "rb")  # noqa: SIM115 - closed by the caller
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise ValueError(f"{name}: {size} bytes of a tile expected at {offset}, {len(data)} found")
    return data


def place_tiles(path: str | Path, shapes: Sequence[tuple[int, int]], bands: int,
                tiles: Mapping[tuple[int, int, int], TileSource]) -> int:
    """Append the compressed tiles to GDAL's sparse COG frame at ``path`` and fill in its tile tables.

    Parameters
    ----------
    path : path
        The COG that GDAL's COG driver wrote with every tile sparse: one directory per
        level (``shapes[0]`` the full resolution, then each overview), 512 x 512 tiles,
        ``bands`` float32 samples per pixel, pixel-interleaved, DEFLATE.
    shapes : sequence of (rows, cols)
        The levels' shapes.
    tiles : mapping
        ``(level, tile_row, tile_col) -> bytes or (file, offset, size)``; tiles not in it
        stay sparse (nodata).

    Returns
    -------
    int
        The file's size in bytes.

    Raises
    ------
    ValueError
        The frame is not what was asked for, or an offset does not fit its table (a
        classic TIFF beyond 4 GiB).
    """
    opened: dict[str, Any] = {}
    try:
        with open(path, "r+b") as f:
            order, big, dirs = _directories(f)
            if len(dirs) != len(shapes):
                raise ValueError(f"{path}: {len(dirs)} image directories for {len(shapes)} levels")
            grids = []
            for k, (tags, (rows, cols)) in enumerate(zip(dirs, shapes, strict=True)):
                found = {t: tags[t][3] for t in (_WIDTH, _LENGTH, _TILE_W, _TILE_L, _COMPRESSION, _SAMPLES)
                         if t in tags}
                want = {_WIDTH: cols, _LENGTH: rows, _TILE_W: TILE, _TILE_L: TILE, _COMPRESSION: 8, _SAMPLES: bands}
                planar = tags[_PLANAR][3] if _PLANAR in tags else 1
                if found != want or planar != 1:
                    raise ValueError(f"{path}: level {k} is {found} (planar {planar}), expected {want} (planar 1)")
                n_r, n_c = -(-rows // TILE), -(-cols // TILE)
                if tags[_OFFSETS][1] != n_r * n_c or tags[_COUNTS][1] != n_r * n_c:
                    raise ValueError(f"{path}: level {k} has {tags[_OFFSETS][1]} tiles, expected {n_r * n_c}")
                grids.append((n_r, n_c))
            f.seek(0, 2)
            at = f.tell()
            offsets = [np.zeros(n_r * n_c, np.uint64) for n_r, n_c in grids]
            counts = [np.zeros(n_r * n_c, np.uint64) for n_r, n_c in grids]
            leader = order + "I"
            for k in reversed(range(len(shapes))):  # the smallest overview first, the full resolution last
                n_r, n_c = grids[k]
                for r in range(n_r):
                    for c in range(n_c):
                        source = tiles.get((k, r, c))
                        if source is None:
                            continue
                        data = _read(source, opened)
                        f.write(struct.pack(leader, len(data)))
                        f.write(data)
                        f.write(data[-4:])
                        offsets[k][r * n_c + c] = at + 4
                        counts[k][r * n_c + c] = len(data)
                        at += len(data) + 8
            for tags, offs, cnts in zip(dirs, offsets, counts, strict=True):
                for tag, values in ((_OFFSETS, offs), (_COUNTS, cnts)):
                    typ, count, pos, _ = tags[tag]
                    if typ not in _FORMATS:
                        raise ValueError(f"{path}: tile table of type {typ}")
                    fmt = _FORMATS[typ]
                    if values.size and int(values.max()) >= 1 << (8 * struct.calcsize(fmt)):
                        raise ValueError(f"{path}: a tile offset beyond what a classic TIFF holds (4 GiB); "
                                         "write it as BigTIFF")
                    packed = struct.pack(f"{order}{count}{fmt}", *(int(v) for v in values))
                    if len(packed) > (8 if big else 4):  # the table lies where the value field points
                        f.seek(pos)
                        where = struct.unpack(order + ("Q" if big else "I"), f.read(8 if big else 4))[0]
                        f.seek(where)
                    else:
                        f.seek(pos)
                    f.write(packed)
            return at
    finally:
        for h in opened.values():
            h.close()
