# SPDX-License-Identifier: Apache-2.0
"""Windowed reading of one or more aligned raster tiles as one mosaic (rasterio).

Only the windows a computation asks for are read; several tiles (e.g. neighbouring
Hansen 10 x 10 degree tiles) form one virtual mosaic as long as they share CRS,
resolution and pixel alignment. Rasters that do not are rejected with a clear
message: canopy cover is never resampled silently.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from ..errors import ConfigError, InputFileNotFoundError, NotNetCDFError

__all__ = ["Mosaic", "grid_mismatch", "open_mosaic"]


def grid_mismatch(crs_a: Any, t_a: Affine, crs_b: Any, t_b: Affine) -> str | None:
    """Why two north-up rasters are not on one pixel grid: ``"crs"``, ``"resolution"``, ``"alignment"``; None if they are.

    Pixel sizes must agree to 1e-9 (relative) and origins must lie a whole number of
    pixels apart (to 1e-6 pixel).
    """
    if crs_a != crs_b:
        return "crs"
    if not (math.isclose(t_b.a, t_a.a, rel_tol=1e-9) and math.isclose(t_b.e, t_a.e, rel_tol=1e-9)):
        return "resolution"
    for off, res in ((t_b.c - t_a.c, t_a.a), (t_b.f - t_a.f, t_a.e)):
        if abs(off / res - round(off / res)) > 1e-6:
            return "alignment"
    return None


@dataclass(frozen=True)
class _Tile:
    path: str
    transform: Affine
    shape: tuple[int, int]
    nodata: float | None
    dtype: str


class Mosaic:
    """Aligned raster tiles read as one (band 1 of each).

    Parameters
    ----------
    paths : path or sequence of paths
        GeoTIFFs (or anything GDAL reads) sharing CRS, resolution and alignment.
    name : str
        What the rasters are (for messages), e.g. ``"treecover2000"``.
    """

    def __init__(self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], name: str = "raster") -> None:
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        self.name = name
        tiles: list[_Tile] = []
        crs = None
        for p in paths:
            p = Path(p)
            if not p.exists():
                raise InputFileNotFoundError(p)
            try:
                with rasterio.open(p) as r:
                    if crs is None:
                        crs = r.crs
                    elif r.crs != crs:
                        raise ConfigError(
                            f"{p}: {name} tiles are in different CRSs ({r.crs} vs {crs}); reproject them to one grid "
                            "first (canopy cover is never resampled silently)")
                    tiles.append(_Tile(str(p), r.transform, (r.height, r.width), r.nodata, r.dtypes[0]))
            except rasterio.errors.RasterioIOError as exc:
                raise NotNetCDFError(f"{p}: not a raster GDAL can read ({exc})") from exc
        if not tiles:
            raise ConfigError(f"no {name} raster given")
        t0 = tiles[0].transform
        for t in tiles[1:]:
            why = grid_mismatch(crs, t0, crs, t.transform)
            if why == "resolution":
                raise ConfigError(f"{t.path}: {name} tiles have different resolutions ({t.transform.a} vs {t0.a})")
            if why == "alignment":
                raise ConfigError(f"{t.path}: {name} tiles are not aligned on one pixel grid")
        self.crs = crs
        self.tiles = tiles
        west = min(t.transform.c for t in tiles)
        north = max(t.transform.f for t in tiles)
        east = max(t.transform.c + t.transform.a * t.shape[1] for t in tiles)
        south = min(t.transform.f + t.transform.e * t.shape[0] for t in tiles)
        self.transform = Affine(t0.a, 0.0, west, 0.0, t0.e, north)
        self.shape = (int(round((south - north) / t0.e)), int(round((east - west) / t0.a)))
        self.nodata = tiles[0].nodata
        self.dtype = tiles[0].dtype

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the CRS's units."""
        t, (rows, cols) = self.transform, self.shape
        return t.c, t.f + t.e * rows, t.c + t.a * cols, t.f

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y), positive."""
        return self.transform.a, -self.transform.e

    def same_grid(self, other: Mosaic) -> bool:
        """True if ``other`` has this mosaic's CRS, pixel size and alignment."""
        return grid_mismatch(self.crs, self.transform, other.crs, other.transform) is None

    def offset_in(self, other: Mosaic) -> tuple[int, int]:
        """(row, col) of this mosaic's origin in ``other``'s pixel grid."""
        dx = (self.transform.c - other.transform.c) / other.transform.a
        dy = (self.transform.f - other.transform.f) / other.transform.e
        return int(round(dy)), int(round(dx))

    @property
    def describe(self) -> str:
        """The first tile's path, and how many more there are (for messages)."""
        more = f" (+{len(self.tiles) - 1} more tiles)" if len(self.tiles) > 1 else ""
        return self.tiles[0].path + more

    def read_masked(self, row0: int, row1: int, col0: int, col1: int,
                    fill: Any = 0) -> tuple[np.ndarray, np.ndarray]:
        """Pixels [row0:row1, col0:col1] and where they are valid.

        ``valid`` is False where no tile covers a pixel (the data there is ``fill``)
        and where the pixel equals the tiles' nodata value (NaN counts as nodata for
        floating-point rasters).
        """
        shape = (row1 - row0, col1 - col0)
        out = np.full(shape, fill, dtype=np.result_type(self.dtype, np.min_scalar_type(fill)))
        covered = np.zeros(shape, dtype=bool)
        for t in self.tiles:
            r_off = int(round((t.transform.f - self.transform.f) / self.transform.e))
            c_off = int(round((t.transform.c - self.transform.c) / self.transform.a))
            a0, a1 = max(row0, r_off), min(row1, r_off + t.shape[0])
            b0, b1 = max(col0, c_off), min(col1, c_off + t.shape[1])
            if a0 >= a1 or b0 >= b1:
                continue
            with rasterio.open(t.path) as r:
                data = r.read(1, window=Window(b0 - c_off, a0 - r_off, b1 - b0, a1 - a0))
            out[a0 - row0:a1 - row0, b0 - col0:b1 - col0] = data
            covered[a0 - row0:a1 - row0, b0 - col0:b1 - col0] = True
        valid = covered
        if np.issubdtype(out.dtype, np.floating):
            valid &= ~np.isnan(out)
        if self.nodata is not None and not (isinstance(self.nodata, float) and math.isnan(self.nodata)):
            valid &= out != self.nodata
        return out, valid


def open_mosaic(source: Any, name: str) -> Mosaic | None:
    """A :class:`Mosaic` from a path, a list of paths or a Mosaic; None stays None."""
    if source is None or isinstance(source, Mosaic):
        return source
    return Mosaic(source, name)
