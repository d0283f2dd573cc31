# SPDX-License-Identifier: Apache-2.0
"""COG tiles compressed in the blocks' tasks and placed into GDAL's frame (eo_pipeline.io._cog_tiles).

Every level of every band read back with GDAL must equal a brute-force reference made
here with numpy from the map alone, whatever the map's blocks: level 0 the values as
float32; each overview the NaN-aware 2 x 2 mean of the level above; and a band's
512 x 512 tile without data (all NaN; counts and weights: nothing above 0) is nodata.
The file must pass rio-cogeo's COG validation, and its tiles must be laid out as the
ghost area announces (the smallest overview first, row-major, each tile with its size
before it and its last 4 bytes after it).
"""

from __future__ import annotations

import struct

import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
from rio_cogeo.cogeo import cog_validate

import eo_pipeline.io.geotiff as geotiff
from eo_pipeline.grid import GridSpec
from eo_pipeline.io._cog_tiles import TILE, encode_tile, owned_tiles, straddling_tiles
from eo_pipeline.io.geotiff import overview_levels, write_cog


def _coarsen(a: np.ndarray) -> np.ndarray:
    rows, cols = a.shape
    pad = np.full((2 * -(-rows // 2), 2 * -(-cols // 2)), np.nan)
    pad[:rows, :cols] = a
    q = pad.reshape(pad.shape[0] // 2, 2, pad.shape[1] // 2, 2)
    n = (~np.isnan(q)).sum(axis=(1, 3))
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(q, axis=(1, 3)) / np.maximum(n, 1), np.nan).astype(np.float32)


def _expected(values: np.ndarray, zero_is_empty: bool, levels: int) -> list[np.ndarray]:
    out, level = [], values
    for k in range(levels + 1):
        if k:
            level = _coarsen(level.astype(np.float64))
        shown = np.asarray(level, np.float32).copy()
        for r in range(0, shown.shape[0], TILE):
            for c in range(0, shown.shape[1], TILE):
                tile = level[r:r + TILE, c:c + TILE]
                if (not np.any(tile > 0)) if zero_is_empty else np.isnan(tile).all():
                    shown[r:r + TILE, c:c + TILE] = np.nan
        out.append(shown)
    return out


def _map(shape: tuple[int, int], seed: int) -> xr.Dataset:
    """A sparse map: patches of data on NaN (mean) and on 0 (count), with empty 512-tiles in between."""
    rng = np.random.default_rng(seed)
    g = GridSpec.from_bbox((0, 0, shape[1] * 0.01, shape[0] * 0.01), 0.01)
    assert g.shape == shape
    mean = np.full(shape, np.nan, np.float32)
    count = np.zeros(shape, np.int32)
    for _ in range(6):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(1, 400), rng.integers(1, 900)
        patch = (slice(r, r + h), slice(c, c + w))
        mean[patch] = rng.normal(1850, 30, mean[patch].shape).astype(np.float32)
        mean[patch][rng.random(mean[patch].shape) < 0.3] = np.nan
        count[patch] = rng.integers(0, 4, count[patch].shape)
    count[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = 7  # a lone sounding
    coords = {**g.coords(), "crs": ((), np.int32(0), g.cf_grid_mapping())}
    return xr.Dataset({"xch4_mean": (("y", "x"), mean, {"units": "ppb", "grid_mapping": "crs"}),
                       "xch4_count": (("y", "x"), count, {"units": "1", "grid_mapping": "crs"})}, coords=coords)


def _check(path, ds: xr.Dataset) -> None:
    valid, errors, _ = cog_validate(str(path))
    assert valid, errors
    shape = ds.xch4_mean.shape
    levels = overview_levels(shape)
    want = [_expected(ds[n].values, n.endswith("_count"), levels) for n in ("xch4_mean", "xch4_count")]
    with rasterio.open(path) as r:
        assert len(r.overviews(1)) == levels and r.block_shapes[0] == (TILE, TILE)
    for k in range(levels + 1):
        with rasterio.open(path, overview_level=k - 1) if k else rasterio.open(path) as r:
            got = r.read()
        for b in range(2):
            np.testing.assert_array_equal(got[b], want[b][k], err_msg=f"level {k}, band {b + 1}")
    _check_layout(path, levels)


def _check_layout(path, levels: int) -> None:
    """Tiles in the COG's order, each with its leader (size) and trailer (last 4 bytes), as the ghost area says."""
    import tifffile

    raw = path.read_bytes()
    assert b"BLOCK_LEADER=SIZE_AS_UINT4" in raw[:400] and b"BLOCK_TRAILER=LAST_4_BYTES_REPEATED" in raw[:400]
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert len(pages) == levels + 1
        ifd_end = max(p.offset for p in pages)
        previous = 0
        for page in pages[::-1]:  # the smallest overview's data first
            for offset, size in zip(page.dataoffsets, page.databytecounts, strict=True):
                if size == 0:
                    assert offset == 0
                    continue
                assert offset > previous and offset > ifd_end
                assert struct.unpack("<I", raw[offset - 4:offset])[0] == size
                assert raw[offset + size:offset + size + 4] == raw[offset + size - 4:offset + size]
                previous = offset


@pytest.mark.parametrize("shape, chunks", [
    ((1100, 2300), 2048),  # one block
    ((1100, 2300), 512),  # aligned blocks: levels 0 and 1 owned
    ((1100, 2300), (400, 880)),  # blocks that straddle tiles at every level
    ((3000, 2100), (1024, 2048)),
    ((300, 200), 64),  # no overviews, one tile, many blocks
])
def test_tiles_read_back_as_the_brute_force_reference(tmp_path, shape, chunks):
    ds = _map(shape, seed=hash(shape) % 1000)
    sizes = chunks if isinstance(chunks, tuple) else (chunks, chunks)
    path = write_cog(ds.chunk({"y": sizes[0], "x": sizes[1]}), tmp_path / "m.tif")
    _check(tmp_path / "m.tif", ds)
    assert path.endswith("m.tif")


def test_bigtiff_frames_take_64_bit_offsets(tmp_path, monkeypatch):
    monkeypatch.setattr(geotiff, "BIGTIFF", "YES")
    ds = _map((1100, 2300), seed=5)
    write_cog(ds.chunk({"y": 512, "x": 1024}), tmp_path / "big.tif")
    assert (tmp_path / "big.tif").read_bytes()[2:4] == b"+\x00"  # BigTIFF
    _check(tmp_path / "big.tif", ds)


def test_the_same_file_whatever_the_blocks(tmp_path):
    ds = _map((1500, 1700), seed=11)
    files = []
    for k, chunks in enumerate([None, 512, 256, (300, 1000)]):
        m = ds if chunks is None else ds.chunk({"y": chunks[0], "x": chunks[1]} if isinstance(chunks, tuple)
                                                else {"y": chunks, "x": chunks})
        write_cog(m, tmp_path / f"m{k}.tif")
        files.append(tmp_path / f"m{k}.tif")
    for f in files[1:]:
        for k in range(overview_levels(ds.xch4_mean.shape) + 1):
            with rasterio.open(files[0], overview_level=k - 1) if k else rasterio.open(files[0]) as a, \
                    rasterio.open(f, overview_level=k - 1) if k else rasterio.open(f) as b:
                np.testing.assert_array_equal(a.read(), b.read())


def test_owned_and_straddling_tiles_partition_each_level():
    """Every tile of a level is owned by exactly one block or made by the last task, never both."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        shape = (int(rng.integers(1, 3000)), int(rng.integers(1, 3000)))
        cuts = [sorted({0, *rng.integers(1, max(2, n), rng.integers(0, 5)).tolist()}) for n in shape]
        cuts = [[c for c in cs if c < n] for cs, n in zip(cuts, shape, strict=True)]
        seen: dict[tuple[int, int], int] = {}
        straddles = set(straddling_tiles(shape, cuts[0], cuts[1]))
        for i, r0 in enumerate(cuts[0]):
            r1 = cuts[0][i + 1] if i + 1 < len(cuts[0]) else shape[0]
            for j, c0 in enumerate(cuts[1]):
                c1 = cuts[1][j + 1] if j + 1 < len(cuts[1]) else shape[1]
                owned, partial = owned_tiles(shape, (r0, c0), (r1 - r0, c1 - c0))
                for tr, tc, r, c, h, w in owned:
                    assert (tr, tc) not in seen and (tr, tc) not in straddles
                    seen[(tr, tc)] = 1
                    assert (r0 + r, c0 + c) == (tr * TILE, tc * TILE)
                    assert (h, w) == (min(TILE, shape[0] - tr * TILE), min(TILE, shape[1] - tc * TILE))
                touching = {(tr, tc) for tr in range(r0 // TILE, (r1 - 1) // TILE + 1)
                            for tc in range(c0 // TILE, (c1 - 1) // TILE + 1)}
                assert partial == bool(touching & straddles)
        n = (-(-shape[0] // TILE)) * (-(-shape[1] // TILE))
        assert len(seen) + len(straddles) == n


def test_a_tile_is_float32_pixel_interleaved_deflate_and_none_when_empty():
    import zlib

    mean = np.array([[1.5, np.nan], [2.5, 3.0]], np.float32)
    count = np.array([[1, 0], [2, 0]], np.int32)
    data = encode_tile([mean, count], (False, True))
    tile = np.frombuffer(zlib.decompress(data), "<f4").reshape(TILE, TILE, 2)
    np.testing.assert_array_equal(tile[:2, :2, 0], mean)
    np.testing.assert_array_equal(tile[:2, :2, 1], count.astype(np.float32))
    assert np.isnan(tile[2:, :, :]).all() and np.isnan(tile[:, 2:, :]).all()  # beyond the edge: NaN
    assert encode_tile([np.full((2, 2), np.nan, np.float32), np.zeros((2, 2), np.int32)], (False, True)) is None
    only_mean = np.frombuffer(zlib.decompress(encode_tile([mean, np.zeros((2, 2), np.int32)], (False, True))),
                              "<f4").reshape(TILE, TILE, 2)
    assert np.isnan(only_mean[..., 1]).all()  # a count tile of zeros: no data, nodata


def test_empty_map_is_all_sparse(tmp_path):
    ds = _map((700, 900), seed=1)
    ds["xch4_mean"][:] = np.nan
    ds["xch4_count"][:] = 0
    write_cog(ds.chunk({"y": 512, "x": 512}), tmp_path / "e.tif")
    with rasterio.open(tmp_path / "e.tif") as r:
        assert np.isnan(r.read()).all()
    assert (tmp_path / "e.tif").stat().st_size < 10_000
    assert cog_validate(str(tmp_path / "e.tif"))[0]


def test_dask_blocks_of_a_broadcast_empty_block(tmp_path):
    """A block the data never touched (a broadcast view) writes no tile and no part."""
    ds = _map((1100, 1100), seed=2)
    mean = da.full(ds.xch4_mean.shape, np.nan, np.float32, chunks=512)
    ds = ds.assign(xch4_mean=(("y", "x"), mean, ds.xch4_mean.attrs)).chunk({"y": 512, "x": 512})
    write_cog(ds, tmp_path / "b.tif")
    _check(tmp_path / "b.tif", ds.compute())
