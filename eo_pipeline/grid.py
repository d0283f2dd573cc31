# SPDX-License-Identifier: Apache-2.0
"""Target grids as immutable values: CRS + affine transform + shape.

A :class:`GridSpec` is built once, normalises its CRS at construction, is
hashable, has a deterministic dask token, and never changes: every operation
returns a new value (the odc-geo GeoBox pattern). Grids are north-up (no rotation).

Named grids ship inside the package (``eo_pipeline/data/grids.yaml``); users add their own
in their configuration folder, through ``$EO_PIPELINE_GRIDS`` or in a job (see :func:`named_grid`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import yaml
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from .errors import ConfigError, EOPipelineError, GridError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["GridSpec", "north_up", "named_grid", "grid_names", "grid_sources", "user_grids_file", "load_grids",
           "ellipsoidal_band_area"]


@cache
def _crs(text: str) -> CRS:
    return CRS.from_user_input(text)


def _norm_crs(crs: Any) -> str:
    """Normalise any CRS input to a stable string: ``AUTH:CODE`` where possible, else WKT2."""
    try:
        c = CRS.from_user_input(crs)
    except CRSError as exc:
        raise GridError(f"unknown CRS {crs!r} ({exc}); give an EPSG code such as 'EPSG:4326' or a PROJ/WKT string") from exc
    auth = c.to_authority(min_confidence=100)
    return f"{auth[0]}:{auth[1]}" if auth else c.to_wkt()


class GridSpec:
    """A regular, north-up grid in any CRS that pyproj knows.

    Parameters
    ----------
    crs : str, int, pyproj.CRS
        The grid's CRS (normalised at construction).
    transform : affine.Affine
        Maps (col, row) of cell corners to CRS coordinates; ``b == d == 0`` and ``e < 0``.
    shape : (int, int)
        ``(rows, cols)``.
    name : str, optional
        Registry name, for file names and metadata.
    """

    __slots__ = ("_crs", "_transform", "_shape", "_name", "__dict__")

    def __init__(self, crs: Any, transform: Affine, shape: Sequence[int], name: str | None = None) -> None:
        transform = Affine(*tuple(transform)[:6])
        if transform.b != 0 or transform.d != 0:
            raise GridError(f"grid transform must be north-up (no rotation), got {transform!r}")
        if transform.a <= 0 or transform.e >= 0:
            raise GridError(f"grid transform needs a > 0 and e < 0 (north-up), got {transform!r}")
        rows, cols = (int(s) for s in shape)
        if rows < 1 or cols < 1:
            raise GridError(f"grid shape must be positive, got {tuple(shape)}")
        self._crs = _norm_crs(crs)
        self._transform = transform
        self._shape = (rows, cols)
        self._name = name

    # ------------------------------------------------------------ construction
    @classmethod
    def from_bbox(
        cls,
        bbox: Sequence[float],
        resolution: float | Sequence[float],
        crs: Any = "EPSG:4326",
        *,
        name: str | None = None,
    ) -> GridSpec:
        """Grid covering ``bbox`` = (west, south, east, north) in ``crs`` units.

        Parameters
        ----------
        bbox : sequence of 4 floats
            Bounds in the CRS's units (degrees for geographic CRSs, usually metres otherwise).
        resolution : float or (float, float)
            Cell size (x, y) in the same units, > 0. The grid starts at (west, north);
            if the extent is not a whole number of cells it is extended east/south.
        crs : CRS-like
            Any CRS pyproj understands; default WGS84 lon/lat.
        name : str, optional
            Registry name.
        """
        try:
            west, south, east, north = (float(v) for v in bbox)
        except (TypeError, ValueError) as exc:
            raise GridError(f"bbox must be 4 numbers (west, south, east, north), got {bbox!r}") from exc
        if isinstance(resolution, int | float):
            xres = yres = float(resolution)
        else:
            xres, yres = (float(r) for r in resolution)
        if not (xres > 0 and yres > 0) or not all(map(math.isfinite, (xres, yres))):
            raise GridError(f"resolution must be > 0, got {resolution!r}")
        if not (east > west and north > south):
            raise GridError(f"bbox must have east > west and north > south, got {bbox!r}")
        cols = _ncells(east - west, xres)
        rows = _ncells(north - south, yres)
        return cls(crs, Affine(xres, 0.0, west, 0.0, -yres, north), (rows, cols), name=name)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset | xr.DataArray) -> GridSpec:
        """The north-up grid on which the ``x``/``y`` coordinates of ``ds`` lie.

        The coordinates are the truth: a map cut (``isel``/``sel``), flipped, subsampled
        (``isel(x=slice(0, None, 2))``) or coarsened (``coarsen(x=2, y=2).mean()``) with
        plain xarray gives the grid it now covers. Cached attributes such as GDAL's
        ``GeoTransform`` are never trusted.

        Parameters
        ----------
        ds : xarray.Dataset or xarray.DataArray
            A map with 1-D ``x`` and ``y`` coordinates of cell centres (CRS units:
            degrees for lon/lat grids, usually metres otherwise), regularly spaced in
            either direction. The CRS comes from the grid mapping: the variable named by
            a ``grid_mapping`` attribute (or encoding) of a data variable, else a ``crs``
            coordinate, else a rioxarray-style ``spatial_ref`` coordinate (its
            ``crs_wkt``/``spatial_ref`` attribute, or its CF grid-mapping attributes).
            Without any, ``x``/``y`` in ``degrees_east``/``degrees_north`` mean EPSG:4326.

        Returns
        -------
        GridSpec
            North-up (``a > 0``, ``e < 0``) whatever the order of the coordinates; use
            :func:`north_up` to put the data in the same order. Its name is the
            dataset's ``grid`` attribute when that names a registered grid equal to the
            recovered one, else None.

        Raises
        ------
        GridError
            Missing or non-regular ``x``/``y`` (the message names the coordinate, its
            largest deviation from a regular spacing and the fix), or no CRS.

        Notes
        -----
        Spacing is regular when every centre lies within ``1e-6`` cells (or, for coarse
        floating-point types, 4 ulp of the largest value) of the straight line through
        the first and last ones: float64 round-off and coarsen's averaged centres pass,
        irregular axes do not. A dimension of size 1 has no spacing: only then is the
        cell size taken from the grid mapping's ``GeoTransform`` attribute (an error
        without one). Where that attribute agrees with the coordinates to ``1e-9``
        (relative), its cell size and its cell lattice are used to remove float
        round-off, so that an uncut map gives back exactly the grid it was made on.
        """
        xs = _axis_values(ds, "x")
        ys = _axis_values(ds, "y")
        mapping = _grid_mapping(ds)
        crs = _crs_of(ds, mapping)
        hint = _geotransform(mapping)
        x0, dx = _regular_axis(xs, "x", None if hint is None else hint.a)
        y0, dy = _regular_axis(ys, "y", None if hint is None else -hint.e)
        west = min(x0, x0 + dx * (xs.size - 1)) - abs(dx) / 2.0
        north = max(y0, y0 + dy * (ys.size - 1)) + abs(dy) / 2.0
        transform = _snap(Affine(abs(dx), 0.0, west, 0.0, -abs(dy), north), hint)
        grid = cls(crs, transform, (ys.size, xs.size))
        name = ds.attrs.get("grid")
        return grid.with_name(name) if isinstance(name, str) and name and _registered(name, grid) else grid

    # ------------------------------------------------------------ properties
    @property
    def crs(self) -> CRS:
        """The grid's :class:`pyproj.CRS`."""
        return _crs(self._crs)

    @property
    def crs_string(self) -> str:
        """Normalised CRS text (``EPSG:4326`` or WKT2)."""
        return self._crs

    @property
    def transform(self) -> Affine:
        """Affine transform of cell corners (GDAL convention)."""
        return self._transform

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self._shape

    @property
    def name(self) -> str | None:
        """Registry name, if any."""
        return self._name

    @property
    def resolution(self) -> tuple[float, float]:
        """Cell size ``(x, y)`` in CRS units (both positive)."""
        return self._transform.a, -self._transform.e

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of the outer cell edges, CRS units."""
        t, (rows, cols) = self._transform, self._shape
        return t.c, t.f + t.e * rows, t.c + t.a * cols, t.f

    @property
    def is_geographic(self) -> bool:
        """True for a longitude/latitude CRS."""
        return bool(self.crs.is_geographic)

    @property
    def units(self) -> str:
        """Units of the x/y coordinates (``degrees`` or the projected unit, e.g. ``metre``)."""
        if self.is_geographic:
            return "degrees"
        return self.crs.axis_info[0].unit_name if self.crs.axis_info else "unknown"

    @cached_property
    def x(self) -> np.ndarray:
        """Cell-centre x coordinates (float64, CRS units)."""
        return self._transform.c + self._transform.a * (np.arange(self._shape[1]) + 0.5)

    @cached_property
    def y(self) -> np.ndarray:
        """Cell-centre y coordinates (float64, CRS units), north to south."""
        return self._transform.f + self._transform.e * (np.arange(self._shape[0]) + 0.5)

    def x_edges(self) -> np.ndarray:
        """Cell edges in x (cols + 1 values)."""
        return self._transform.c + self._transform.a * np.arange(self._shape[1] + 1)

    def y_edges(self) -> np.ndarray:
        """Cell edges in y (rows + 1 values), north to south."""
        return self._transform.f + self._transform.e * np.arange(self._shape[0] + 1)

    # ------------------------------------------------------------ areas
    def cell_area(self) -> np.ndarray:
        """Exact area of every cell, m², shape ``(rows, 1)`` or ``(rows, cols)``.

        Geographic grids: the area on the CRS's ellipsoid of each lon/lat cell
        (bounded by two meridians and two parallels), exact in closed form, one value
        per row broadcast over columns (returned as ``(rows, 1)``).
        Projected grids: the cell's area in the projected plane (``xres * yres``,
        CRS units squared), which is the true area for an equal-area projection.
        """
        rows, cols = self._shape
        if self.is_geographic:
            ell = self.crs.ellipsoid
            a = ell.semi_major_metre
            inv_f = ell.inverse_flattening
            f = 0.0 if inv_f in (0, None) or not math.isfinite(inv_f) else 1.0 / inv_f
            lat = np.clip(self.y_edges(), -90.0, 90.0)
            band = ellipsoidal_band_area(lat[1:], lat[:-1], a, f)
            return (band * (self.resolution[0] / 360.0))[:, None]
        return np.full((rows, 1), self.resolution[0] * self.resolution[1])

    # ------------------------------------------------------------ indexing
    def rowcol(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column (int64) of the cells holding points (x, y); -1 where outside.

        Points exactly on an inner edge go to the cell east/south of it; the outer
        east/south edges belong to the last column/row.
        """
        t, (rows, cols) = self._transform, self._shape
        fc = (np.asarray(x, dtype=np.float64) - t.c) / t.a
        fr = (np.asarray(y, dtype=np.float64) - t.f) / t.e
        col = np.floor(fc)
        row = np.floor(fr)
        col = np.where(fc == cols, cols - 1, col)
        row = np.where(fr == rows, rows - 1, row)
        ok = (col >= 0) & (col < cols) & (row >= 0) & (row < rows) & np.isfinite(fc) & np.isfinite(fr)
        return np.where(ok, row, -1).astype(np.int64), np.where(ok, col, -1).astype(np.int64)

    def transformer_from(self, crs: Any = "EPSG:4326") -> Transformer:
        """A pyproj transformer from ``crs`` (always x=lon, y=lat order) to this grid's CRS."""
        return _transformer(_norm_crs(crs), self._crs)

    def lonlat_to_xy(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project WGS84 lon/lat (degrees) to grid coordinates (inf where impossible)."""
        if self._crs == "EPSG:4326":
            return np.asarray(lon, np.float64), np.asarray(lat, np.float64)
        x, y = self.transformer_from("EPSG:4326").transform(lon, lat, errcheck=False)
        return np.asarray(x, np.float64), np.asarray(y, np.float64)

    # ------------------------------------------------------------ tiling
    def tiles(self, tile: int = 512) -> Iterator[tuple[int, int, int, int]]:
        """Yield ``(row0, row1, col0, col1)`` of square tiles of ``tile`` cells, row-major."""
        rows, cols = self._shape
        for r0 in range(0, rows, tile):
            for c0 in range(0, cols, tile):
                yield r0, min(r0 + tile, rows), c0, min(c0 + tile, cols)

    # ------------------------------------------------------------ xarray helpers
    def coords(self) -> dict[str, tuple[str, np.ndarray, dict[str, str]]]:
        """CF coordinate variables (cell centres) for an xarray object on this grid."""
        if self.is_geographic:
            return {
                "y": ("y", self.y, {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude of cell centre", "axis": "Y"}),
                "x": ("x", self.x, {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude of cell centre", "axis": "X"}),
            }
        unit = "m" if self.units in ("metre", "meter") else self.units
        return {
            "y": ("y", self.y, {"units": unit, "standard_name": "projection_y_coordinate", "axis": "Y"}),
            "x": ("x", self.x, {"units": unit, "standard_name": "projection_x_coordinate", "axis": "X"}),
        }

    def cf_grid_mapping(self) -> dict[str, Any]:
        """Attributes of a CF ``crs`` grid-mapping variable (with ``crs_wkt`` and GDAL's ``GeoTransform``)."""
        attrs = dict(self.crs.to_cf())
        attrs.setdefault("long_name", "coordinate reference system")
        attrs["crs_wkt"] = self.crs.to_wkt()
        attrs["spatial_ref"] = attrs["crs_wkt"]
        t = self._transform
        attrs["GeoTransform"] = " ".join(str(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
        return attrs

    def identity_attrs(self) -> dict[str, str]:
        """The ``grid`` (its name; absent for an unnamed or cut grid) and ``grid_crs`` attributes of outputs."""
        return {"grid": self._name, "grid_crs": self._crs} if self._name else {"grid_crs": self._crs}

    def to_dict(self) -> dict[str, Any]:
        """Plain description (for metadata and YAML)."""
        return {"name": self._name, "crs": self._crs, "bounds": list(self.bounds),
                "resolution": list(self.resolution), "shape": list(self._shape)}

    # ------------------------------------------------------------ value semantics
    def _key(self) -> tuple[Any, ...]:
        return (self._crs, tuple(self._transform)[:6], self._shape)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GridSpec) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("eo_pipeline.GridSpec", *self._key())

    def __reduce__(self) -> tuple[Any, ...]:
        return (GridSpec, (self._crs, self._transform, self._shape, self._name))

    def __repr__(self) -> str:
        w, s, e, n = self.bounds
        label = f"{self._name!r}, " if self._name else ""
        return (f"GridSpec({label}crs={self._crs if len(self._crs) < 40 else self._crs[:37] + '...'}, "
                f"shape={self._shape}, res={self.resolution}, bounds=({w:g}, {s:g}, {e:g}, {n:g}))")

    def with_name(self, name: str | None) -> GridSpec:
        """The same grid under another name."""
        return GridSpec(self._crs, self._transform, self._shape, name=name)


def _ncells(extent: float, res: float) -> int:
    n = extent / res
    nearest = round(n)
    return int(nearest) if abs(n - nearest) < 1e-6 * max(1.0, abs(n)) else int(math.ceil(n))


# ------------------------------------------------------------------ grids of xarray objects

#: Deviation from a regular spacing accepted in ``x``/``y`` (cells): round-off, not resampling.
REGULAR_TOLERANCE = 1e-6
#: Relative agreement needed before a ``GeoTransform`` attribute is used to snap away round-off.
SNAP_TOLERANCE = 1e-9
_DEGREES_EAST = ("degrees_east", "degree_east", "degrees_e", "degree_e", "degreese", "degreee")
_DEGREES_NORTH = ("degrees_north", "degree_north", "degrees_n", "degree_n", "degreesn", "degreen")

_XR = TypeVar("_XR")


def north_up(ds: _XR) -> _XR:
    """``ds`` with ``y`` descending (north first) and ``x`` ascending (west first).

    The data are flipped to match, lazily (``isel`` with a reversed slice), so the
    result lines up with :meth:`GridSpec.from_dataset` (row 0 is the northern edge,
    column 0 the western one). Axes already in that order (and axes of size 1) are
    left alone; a dataset in north-up order is returned as it is.

    Parameters
    ----------
    ds : xarray.Dataset or xarray.DataArray
        A map with 1-D ``x`` and ``y`` coordinates (cell centres, CRS units).
    """
    flips: dict[str, slice] = {}
    for dim, descending in (("y", True), ("x", False)):
        values = _axis_values(ds, dim)
        if values.size > 1 and bool(values[0] > values[-1]) != descending:
            flips[dim] = slice(None, None, -1)
    return ds.isel(flips) if flips else ds  # type: ignore[attr-defined]


def _axis_values(ds: Any, dim: str) -> np.ndarray:
    """The 1-D coordinate values of dimension ``dim`` (float64), or a GridError saying what is missing."""
    if dim not in ds.dims or dim not in ds.coords:
        raise GridError(
            f"the map has no '{dim}' coordinate (dims {tuple(ds.dims)}); a map needs 1-D 'x' and 'y' coordinates "
            "of cell centres: rename its spatial dimensions to x/y (ds.rename(lon='x', lat='y')) and keep their "
            "coordinates")
    values = np.asarray(ds.coords[dim].values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
        raise GridError(f"coordinate '{dim}' must be 1-D numbers (cell centres), got {values.dtype} of shape "
                        f"{values.shape}")
    if values.size == 0:
        raise GridError(f"coordinate '{dim}' is empty: the map has no cells along {dim}; check the selection")
    if not np.isfinite(values).all():
        raise GridError(f"coordinate '{dim}' holds NaN or infinite values; a map needs finite cell centres")
    return values


def _regular_axis(values: np.ndarray, dim: str, size_one_step: float | None) -> tuple[float, float]:
    """First centre and signed spacing of a regularly spaced axis (see :meth:`GridSpec.from_dataset`)."""
    v = values.astype(np.float64)
    if v.size == 1:
        if size_one_step is None or not (math.isfinite(size_one_step) and size_one_step > 0):
            raise GridError(
                f"coordinate '{dim}' has a single value, so it gives no cell size, and the grid mapping has no "
                f"GeoTransform attribute to take it from; keep at least two cells along {dim} "
                f"(isel({dim}=slice(k, k + 2)) instead of isel({dim}=k)) or write the cell size in the grid mapping")
        return float(v[0]), size_one_step if dim == "x" else -size_one_step
    step = (v[-1] - v[0]) / (v.size - 1)
    if step == 0:
        raise GridError(f"coordinate '{dim}' holds {v.size} equal values ({v[0]!r}); cell centres must differ")
    fitted = v[0] + step * np.arange(v.size)
    deviation = float(np.max(np.abs(v - fitted)))
    ulp = 4.0 * np.finfo(values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64).eps
    tolerance = max(REGULAR_TOLERANCE * abs(step), ulp * float(np.max(np.abs(v))))
    if deviation > tolerance:
        worst = int(np.argmax(np.abs(v - fitted)))
        raise GridError(
            f"coordinate '{dim}' is not regularly spaced: its largest deviation from the even spacing "
            f"{step:.10g} between its first and last values is {deviation:.6g} ({deviation / abs(step):.3g} cells, "
            f"at index {worst}, {dim}={float(v[worst])!r}; tolerance {tolerance / abs(step):.1g} cells); maps are "
            "written on regular grids only: resample it onto evenly spaced "
            f"{dim} values first (e.g. with ds.interp or ds.reindex), or grid the soundings again")
    return float(v[0]), float(step)


def _grid_mapping(ds: Any) -> tuple[str, dict[str, Any]] | None:
    """Name and attributes of the grid-mapping variable of ``ds`` (see :meth:`GridSpec.from_dataset`)."""
    named: list[str] = []
    holders = [ds] if not hasattr(ds, "data_vars") else [ds, *ds.data_vars.values()]
    for var in holders:
        for source in (var.attrs, getattr(var, "encoding", {})):
            name = source.get("grid_mapping")
            if isinstance(name, str) and name.split(":")[0].strip() not in named:
                named.append(name.split(":")[0].strip())
    variables = ds.coords if not hasattr(ds, "data_vars") else ds.variables
    for name in [*named, "crs", "spatial_ref"]:
        if name in variables:
            attrs = dict(variables[name].attrs)
            if any(k in attrs for k in ("crs_wkt", "spatial_ref", "grid_mapping_name")):
                return name, attrs
    return None


def _crs_of(ds: Any, mapping: tuple[str, dict[str, Any]] | None) -> str:
    """The grid's CRS text from the grid mapping, or EPSG:4326 for plain lon/lat axes."""
    if mapping is not None:
        name, attrs = mapping
        text = attrs.get("crs_wkt") or attrs.get("spatial_ref")
        try:
            return _norm_crs(text if text else CRS.from_cf(attrs))
        except (GridError, CRSError) as exc:
            raise GridError(f"grid mapping '{name}' does not describe a CRS pyproj understands ({exc}); "
                            "replace it, e.g. with ds.rio.write_crs('EPSG:4326')") from exc
    x_units = str(ds.coords["x"].attrs.get("units", "")).lower()
    y_units = str(ds.coords["y"].attrs.get("units", "")).lower()
    if x_units in _DEGREES_EAST and y_units in _DEGREES_NORTH:
        return "EPSG:4326"
    raise GridError(
        "the map has no grid mapping (no 'crs' or 'spatial_ref' coordinate with a crs_wkt attribute, and no "
        "data variable whose grid_mapping attribute names one), and its x/y are not in degrees_east/"
        f"degrees_north (units {x_units or 'none'!r}/{y_units or 'none'!r}); give it a CRS, e.g. "
        "ds.rio.write_crs('EPSG:32650') or a 'crs' coordinate with GridSpec.cf_grid_mapping()")


def _geotransform(mapping: tuple[str, dict[str, Any]] | None) -> Affine | None:
    """The north-up GeoTransform attribute of the grid mapping, if any (a hint, never trusted)."""
    if mapping is None or "GeoTransform" not in mapping[1]:
        return None
    try:
        gt = [float(v) for v in str(mapping[1]["GeoTransform"]).replace(",", " ").split()]
    except ValueError:
        return None
    if len(gt) != 6 or not all(map(math.isfinite, gt)) or gt[2] != 0 or gt[4] != 0 or gt[1] <= 0 or gt[5] >= 0:
        return None
    return Affine(gt[1], gt[2], gt[0], gt[4], gt[5], gt[3])


def _snap(t: Affine, hint: Affine | None) -> Affine:
    """``t`` with round-off removed where ``hint`` (a GeoTransform attribute) agrees to SNAP_TOLERANCE.

    A cell size within SNAP_TOLERANCE (relative) of a whole multiple of the hint's (a cut,
    a subsample or a coarsened map of the hint's grid) becomes that multiple, and an
    edge within SNAP_TOLERANCE of the hint's half-cell lattice moves onto it.
    """
    if hint is None:
        return t
    a, c = _snap_axis(t.a, t.c, hint.a, hint.c)
    e, f = _snap_axis(t.e, t.f, hint.e, hint.f)
    return Affine(a, 0.0, c, 0.0, e, f)


def _snap_axis(step: float, edge: float, hint_step: float, hint_edge: float) -> tuple[float, float]:
    ratio = step / hint_step
    m = round(ratio)
    if m < 1 or abs(ratio - m) > SNAP_TOLERANCE * m:
        return step, edge
    half = hint_step / 2.0
    k = round((edge - hint_edge) / half)
    snapped = hint_edge + k * half
    scale = max(abs(step), abs(edge), abs(hint_edge))
    return m * hint_step, snapped if abs(edge - snapped) <= SNAP_TOLERANCE * scale else edge


def _registered(name: str, grid: GridSpec) -> bool:
    """True when ``name`` is a named grid equal to ``grid`` (so the recovered grid may keep the name)."""
    try:
        return named_grid(name) == grid
    except EOPipelineError:
        return False


@cache
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def ellipsoidal_band_area(lat_south: np.ndarray, lat_north: np.ndarray, a: float, f: float) -> np.ndarray:
    """Area (m²) of the full 360-degree band between two latitudes on an ellipsoid.

    Closed form via the authalic function
    ``q(phi) = sin(phi)/(1-e^2 sin^2 phi) + 1/(2e) ln((1+e sin phi)/(1-e sin phi))``:
    ``area = pi b^2 (q(north) - q(south))``; on a sphere (f = 0) it reduces to
    ``2 pi a^2 (sin north - sin south)``.
    """
    s1 = np.sin(np.radians(lat_south))
    s2 = np.sin(np.radians(lat_north))
    if f == 0:
        return 2.0 * np.pi * a * a * (s2 - s1)
    e2 = f * (2.0 - f)
    e = math.sqrt(e2)
    b2 = (a * (1.0 - f)) ** 2

    def q(s: np.ndarray) -> np.ndarray:
        return s / (1.0 - e2 * s * s) + np.log((1.0 + e * s) / (1.0 - e * s)) / (2.0 * e)

    return np.pi * b2 * (q(s2) - q(s1))


# ------------------------------------------------------------------ named grids

#: Environment variable listing extra grids files (``os.pathsep``-separated).
GRIDS_ENV = "EO_PIPELINE_GRIDS"


def user_grids_file() -> Path:
    """The user's own grids file: ``<user config folder>/eo_pipeline/grids.yaml``.

    On Linux that is ``$XDG_CONFIG_HOME/eo_pipeline/grids.yaml`` (default
    ``~/.config/eo_pipeline/grids.yaml``); platformdirs gives the usual place on
    macOS and Windows. The file need not exist.
    """
    import platformdirs

    return Path(platformdirs.user_config_dir("eo_pipeline", appauthor=False)) / "grids.yaml"


def grid_sources() -> list[str]:
    """Where named grids come from, lowest precedence first (for messages and ``eo-pipeline grids``).

    The built-in grids shipped inside the package, then the user's grids file
    (:func:`user_grids_file`, if it exists), then each file of ``$EO_PIPELINE_GRIDS``.
    A later source replaces a grid of the same name. A job config's ``grids:``
    section comes on top of all of these. The working directory is never searched.
    """
    out = ["built-in"]
    user = user_grids_file()
    if user.is_file():
        out.append(str(user))
    return out + [str(p) for p in _env_grid_files()]


def _env_grid_files() -> list[Path]:
    env = os.environ.get(GRIDS_ENV, "")
    files = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ConfigError(f"${GRIDS_ENV} names {', '.join(missing)}, which is not a file; "
                          f"fix the variable or create the file")
    return files


@cache
def _builtin_grids() -> dict[str, GridSpec]:
    """The named grids shipped in ``eo_pipeline/data/grids.yaml`` (read with importlib.resources)."""
    from importlib.resources import files

    text = files("eo_pipeline").joinpath("data", "grids.yaml").read_text(encoding="utf-8")
    return _parse_grids(text, "eo_pipeline/data/grids.yaml (built-in)")


def grid_from_mapping(name: str, spec: Any, where: str) -> GridSpec:
    """Build a grid from a YAML mapping ``{crs, bbox, resolution}``; errors name ``where``."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: grid {name!r} must be a mapping with crs, bbox and resolution")
    missing = [k for k in ("bbox", "resolution") if k not in spec]
    if missing:
        raise ConfigError(f"{where}: grid {name!r} lacks {', '.join(missing)}")
    try:
        return GridSpec.from_bbox(spec["bbox"], spec["resolution"], spec.get("crs", "EPSG:4326"), name=name)
    except GridError as exc:
        raise ConfigError(f"{where}: grid {name!r}: {exc}") from exc


def load_grids(path: str | Path) -> dict[str, GridSpec]:
    """Read named grids from a YAML file (``grids: {name: {crs, bbox, resolution}}``)."""
    p = Path(path)
    try:
        stat = p.stat()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read grids file ({exc})") from exc
    return dict(_load_grids_cached(str(p), stat.st_mtime_ns, stat.st_size))


@cache
def _load_grids_cached(path: str, mtime_ns: int, size: int) -> dict[str, GridSpec]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read grids file ({exc})") from exc
    return _parse_grids(text, str(p))


def _parse_grids(text: str, where: str) -> dict[str, GridSpec]:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    grids = doc.get("grids", doc) if isinstance(doc, dict) else None
    if not isinstance(grids, dict):
        raise ConfigError(f"{where}: expected a mapping 'grids: {{name: {{crs, bbox, resolution}}}}'")
    return {str(k): grid_from_mapping(str(k), v, f"{where}: grids.{k}") for k, v in grids.items()}


def _all_named() -> dict[str, GridSpec]:
    out = dict(_builtin_grids())
    user = user_grids_file()
    for f in ([user] if user.is_file() else []) + _env_grid_files():
        out.update(load_grids(f))
    return out


def grid_names() -> list[str]:
    """Names of the built-in grids and of those in the user's files (see :func:`grid_sources`)."""
    return sorted(_all_named())


def named_grid(name: str, extra: dict[str, GridSpec] | None = None) -> GridSpec:
    """Look up a named grid: ``extra`` (a job's ``grids:``) first, then :func:`grid_sources`."""
    if extra and name in extra:
        return extra[name]
    grids = _all_named()
    if name not in grids:
        raise GridError(
            f"unknown grid {name!r}; known grids: {', '.join(sorted(grids)) or 'none'} "
            f"(add it to {user_grids_file()}, to a file listed in ${GRIDS_ENV}, or to the job config's "
            "'grids:'; see configs/user_grids.yaml)"
        )
    return grids[name]
