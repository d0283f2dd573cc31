# SPDX-License-Identifier: Apache-2.0
"""Backgrounds and anomalies of CO2/CH4, on soundings and on gridded Level-3 maps (lazy).

Methods (all return ``<species>_background`` and ``<species>_anomaly`` = value minus
background, and with ``zscore=True`` also ``<species>_zscore`` = anomaly divided by the
robust spread of the background sample, 1.4826 x its median absolute deviation):

``daily_median``
    Hakkarainen et al. (2016, GRL): the background is the median of the same day's
    (UTC) good-quality soundings inside the region; on a map, of the same time step's
    filled cells whose centre lies in the region. Values outside every region get NaN.
    Regions: the built-in set ``"hakkarainen2016"`` (East Asia 60-150 E, 0-60 N; Europe
    15 W-60 E, 0-60 N; North America 130-60 W, 0-60 N), user boxes
    ``{"name": ..., "bbox": [west, south, east, north]}`` and latitude bands
    ``{"name": ..., "lat_band": [south, north]}``. A value in several regions belongs to
    the first one listed.
``moving_median`` (maps only)
    The median of the filled cells whose centres lie within ``radius_km`` of the cell
    centre (the cell itself included), per time step: a local background for point-like
    enhancements such as CH4 from coal mines.
``climatology`` (maps with a time axis)
    The per-cell mean of the same calendar month over a stack of Level-3 composites
    (``climatology=`` another stack, default the data itself). A cell-month needs at least
    ``min_count`` values; with fewer the background is NaN and the reason is recorded.

Each result records its method and parameters in the attributes ``anomaly_method`` and
``anomaly_parameters`` (JSON), which the GeoTIFF writer copies into the file's tags.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from numba import njit

from .errors import QualityWarning, ReaderOptionError, warn
from .grid import GridSpec
from .schema import SPECIES, SpeciesInfo

__all__ = ["regional_anomaly", "Region", "REGION_SETS", "parse_regions", "MAD_SCALE"]

#: Scale of the median absolute deviation that estimates a normal standard deviation.
MAD_SCALE = 1.4826
METHODS = ("daily_median", "moving_median", "climatology")


@dataclass(frozen=True)
class Region:
    """A lon/lat box (degrees; ``west > east`` crosses the antimeridian)."""

    name: str
    west: float
    south: float
    east: float
    north: float

    def contains(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Kernel: True where (lon, lat) lies in the box (south/west edges inclusive)."""
        lon = (np.asarray(lon, np.float64) + 180.0) % 360.0 - 180.0
        lat = np.asarray(lat, np.float64)
        in_lat = (lat >= self.south) & (lat < self.north) | (lat == self.north) & (self.north == 90.0)
        if self.west <= self.east:
            in_lon = (lon >= self.west) & ((lon < self.east) | (self.east == 180.0))
        else:
            in_lon = (lon >= self.west) | (lon < self.east)
        return in_lat & in_lon

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description."""
        return {"name": self.name, "bbox": [self.west, self.south, self.east, self.north]}


REGION_SETS: dict[str, tuple[Region, ...]] = {
    "hakkarainen2016": (
        Region("east_asia", 60.0, 0.0, 150.0, 60.0),
        Region("europe", -15.0, 0.0, 60.0, 60.0),
        Region("north_america", -130.0, 0.0, -60.0, 60.0),
    ),
}


def parse_regions(regions: Any) -> tuple[Region, ...]:
    """Regions from a set name, :class:`Region` objects, or ``{"name", "bbox"|"lat_band"}`` dicts."""
    if isinstance(regions, str):
        if regions not in REGION_SETS:
            raise ReaderOptionError(f"unknown region set {regions!r}; built in: {sorted(REGION_SETS)}, "
                                    "or give boxes like {'name': 'shanxi', 'bbox': [110, 34, 115, 41]}")
        return REGION_SETS[regions]
    if isinstance(regions, Region):
        return (regions,)
    out: list[Region] = []
    for k, r in enumerate(regions):
        if isinstance(r, Region):
            out.append(r)
            continue
        if isinstance(r, str):
            out += list(parse_regions(r))
            continue
        if not isinstance(r, dict):
            raise ReaderOptionError(f"regions[{k}] must be a dict with 'bbox' or 'lat_band', got {r!r}")
        name = str(r.get("name", f"region_{k}"))
        if "bbox" in r:
            w, s, e, n = (float(v) for v in r["bbox"])
        elif "lat_band" in r:
            (s, n), w, e = (float(v) for v in r["lat_band"]), -180.0, 180.0
        else:
            raise ReaderOptionError(f"regions[{k}] ({name}) needs 'bbox': [W, S, E, N] or 'lat_band': [S, N]")
        if not (-90 <= s < n <= 90):
            raise ReaderOptionError(f"regions[{k}] ({name}): south must be below north, within -90..90")
        out.append(Region(name, w, s, e, n))
    if not out:
        raise ReaderOptionError("regions is empty")
    return tuple(out)


# --------------------------------------------------------------------------- helpers
def _species(ds: xr.Dataset, variable: str | None) -> tuple[SpeciesInfo, str]:
    if variable is not None:
        base = variable.removesuffix("_mean")
        if base not in SPECIES:
            raise ReaderOptionError(f"variable {variable!r} is not one of the species {sorted(SPECIES)}")
        return SPECIES[base], variable
    for name, info in SPECIES.items():
        if f"{name}_mean" in ds.data_vars:
            return info, f"{name}_mean"
        if name in ds.data_vars:
            return info, name
    raise ReaderOptionError("no CO2/CH4/CO column (xch4, xco2, xco or <species>_mean) in the dataset")


def _is_grid(ds: xr.Dataset, var: str) -> bool:
    return {"y", "x"} <= set(ds[var].dims)


def cell_lonlat(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat (degrees) of the cell centres of a gridded dataset, shape (y, x), in the dataset's order.

    The CRS is the one :meth:`GridSpec.from_dataset` finds (grid mapping, or plain lon/lat).
    """
    from pyproj import Transformer

    grid = GridSpec.from_dataset(ds)
    x, y = np.meshgrid(ds["x"].values, ds["y"].values)
    if grid.is_geographic:
        return x, y
    t = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    lon, lat = t.transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def _region_index(lon: np.ndarray, lat: np.ndarray, regions: Sequence[Region]) -> np.ndarray:
    """Kernel: index of the first region holding each point, -1 for none."""
    idx = np.full(np.shape(lon), -1, np.int32)
    for k in range(len(regions) - 1, -1, -1):
        idx = np.where(regions[k].contains(lon, lat), k, idx)
    return idx


def _keys_block(lon: np.ndarray, lat: np.ndarray, time: np.ndarray, regions: tuple[Region, ...]) -> np.ndarray:
    """Kernel: group key = day (UTC, days since 1970) x n_regions + region; -1 outside."""
    reg = _region_index(lon, lat, regions)
    day = np.asarray(time).astype("datetime64[D]").astype(np.int64)
    key = day * len(regions) + reg
    return np.where(reg >= 0, key, -1)


def _samples(keys: np.ndarray, values: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chunk step: the (key, value) pairs of one block that enter the background."""
    sel = ok.ravel() & (keys.ravel() >= 0) & np.isfinite(values.ravel())
    return keys.ravel()[sel], values.ravel()[sel].astype(np.float64)


def group_stats(*pairs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kernel: per-key median, robust spread (1.4826 x MAD) and sample size of values.

    Exact medians need every value of a group at once, so blocks send only their
    compact (key, value) samples here.
    """
    keys = np.concatenate([p[0] for p in pairs]) if pairs else np.empty(0, np.int64)
    vals = np.concatenate([p[1] for p in pairs]) if pairs else np.empty(0)
    if keys.size == 0:
        e = np.empty(0)
        return np.empty(0, np.int64), e, e, np.empty(0, np.int64)
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], vals[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    ends = np.append(starts[1:], keys.size)
    med = np.empty(starts.size)
    spread = np.empty(starts.size)
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        v = vals[a:b]
        med[i] = np.median(v)
        spread[i] = MAD_SCALE * np.median(np.abs(v - med[i]))
    return keys[starts], med, spread, (ends - starts).astype(np.int64)


def _lookup(keys: np.ndarray, table: tuple[np.ndarray, ...], which: int) -> np.ndarray:
    """Kernel: the statistic ``which`` (1 median, 2 spread) of each element's group; NaN without one."""
    ukeys, stat = table[0], table[which]
    out = np.full(keys.shape, np.nan, np.float32)
    if ukeys.size == 0:
        return out
    pos = np.clip(np.searchsorted(ukeys, keys), 0, ukeys.size - 1)
    hit = (keys >= 0) & (ukeys[pos] == keys)
    out[hit] = stat[pos[hit]]
    return out


def _zscore(value: np.ndarray, background: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Kernel: (value - background) / spread, NaN where the spread is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.asarray(value, np.float64) - background) / spread
    return np.where(np.asarray(spread) > 0, z, np.nan).astype(np.float32)


def _finish(ds: xr.Dataset, info: SpeciesInfo, var: str, background: Any, spread: Any, zscore: bool,
            method: str, params: dict[str, Any]) -> xr.Dataset:
    dims = ds[var].dims
    value = ds[var]
    units = info.units
    out = ds.copy()
    common = {"anomaly_method": method, "anomaly_parameters": json.dumps(params, sort_keys=True)}
    if "grid_mapping" in value.attrs:
        common["grid_mapping"] = value.attrs["grid_mapping"]
    bg = xr.DataArray(background, dims=dims, coords=value.coords)
    out[f"{info.name}_background"] = bg.assign_attrs(
        units=units, long_name=f"background {info.name} ({method})", **common)
    # the anomaly is the cell's statistic minus a background: it keeps the statistic's CF cell methods
    methods = {"cell_methods": value.attrs["cell_methods"]} if "cell_methods" in value.attrs else {}
    out[f"{info.name}_anomaly"] = (value - bg).astype(np.float32).assign_attrs(
        units=units, long_name=f"{info.name} minus its background ({method})", **methods, **common)
    if zscore:
        sp = xr.DataArray(spread, dims=dims, coords=value.coords)
        z = xr.apply_ufunc(_zscore, value, bg, sp, dask="parallelized", output_dtypes=[np.float32])
        out[f"{info.name}_zscore"] = z.assign_attrs(
            units="1", long_name=f"{info.name} anomaly / robust spread (1.4826 MAD) of the background sample",
            **common)
    out.attrs.update(anomaly_method=method, anomaly_parameters=common["anomaly_parameters"])
    return out


# --------------------------------------------------------------------------- daily median
def _per_chunk_tables(keys: da.Array, value: da.Array, ok: da.Array) -> tuple[da.Array, da.Array]:
    """Background and spread of a gridded time stack, one median table per time chunk.

    A time step's background depends only on that step's cells, so each chunk of time
    steps gets its own table: computing a few steps never touches the others.
    """
    kb = keys.to_delayed()
    vb = value.to_delayed()
    ob = ok.to_delayed()
    nt, ny, nx = kb.shape
    stats = dask.delayed(group_stats, pure=True)
    samples = dask.delayed(_samples, pure=True)
    lookup = dask.delayed(_lookup, pure=True)
    bg_rows, sp_rows = [], []
    for ti in range(nt):
        table = stats(*[samples(kb[ti, yi, xi], vb[ti, yi, xi], ob[ti, yi, xi]) for yi in range(ny) for xi in range(nx)])
        bg_rows.append([[da.from_delayed(lookup(kb[ti, yi, xi], table, 1), dtype=np.float32,
                                         shape=(value.chunks[0][ti], value.chunks[1][yi], value.chunks[2][xi]))
                         for xi in range(nx)] for yi in range(ny)])
        sp_rows.append([[da.from_delayed(lookup(kb[ti, yi, xi], table, 2), dtype=np.float32,
                                         shape=(value.chunks[0][ti], value.chunks[1][yi], value.chunks[2][xi]))
                         for xi in range(nx)] for yi in range(ny)])
    return da.block(bg_rows), da.block(sp_rows)


def _daily_median(ds: xr.Dataset, info: SpeciesInfo, var: str, regions: tuple[Region, ...], zscore: bool) -> xr.Dataset:
    value = da.asarray(ds[var].data)
    grid = _is_grid(ds, var)
    if grid:
        lon, lat = cell_lonlat(ds)
        reg = _region_index(lon, lat, regions).astype(np.int64)
        count_var = var.replace("_mean", "_count")
        ok = da.asarray(ds[count_var].data) > 0 if count_var in ds else da.isfinite(value)
        if "time" in ds[var].dims:
            t_index = da.arange(ds.sizes["time"], chunks=value.chunks[0])
            reg_b = da.from_array(reg, chunks=value.chunks[-2:])
            keys = da.where(reg_b[None] >= 0, t_index[:, None, None] * len(regions) + reg_b[None, :, :], -1)
        else:
            keys = da.from_array(np.where(reg >= 0, reg, -1), chunks=value.chunks)
    else:
        keys = da.map_blocks(_keys_block, da.asarray(ds["longitude"].data), da.asarray(ds["latitude"].data),
                             da.asarray(ds["time"].data).rechunk(value.chunks), regions, dtype=np.int64)
        ok = da.asarray(ds["valid"].data)
    keys = keys.rechunk(value.chunks)
    ok = ok.rechunk(value.chunks)
    if grid and value.ndim == 3:
        bg, sp = _per_chunk_tables(keys, value, ok)
    else:
        pairs = [dask.delayed(_samples, pure=True)(k, v, o) for k, v, o in zip(
            keys.to_delayed().ravel(), value.to_delayed().ravel(), ok.to_delayed().ravel(), strict=True)]
        table = dask.delayed(group_stats, pure=True)(*pairs)
        bg = da.map_blocks(_lookup, keys, table, 1, dtype=np.float32)
        sp = da.map_blocks(_lookup, keys, table, 2, dtype=np.float32)
    params = {"regions": [r.to_dict() for r in regions], "statistic": "median",
              "period": "time step" if grid else "day (UTC)"}
    return _finish(ds, info, var, bg, sp, zscore, "daily_median", params)


# --------------------------------------------------------------------------- moving median
@njit(cache=True, nogil=True)
def _moving_median_kernel(values, ok, y_km, x_km_per_col, radius_km, want_spread):  # pragma: no cover - compiled
    """Median (and 1.4826 MAD) of the filled cells within ``radius_km`` of every filled cell.

    ``y_km`` is each row's position (km, increasing with the row index), ``x_km_per_col``
    each row's column spacing (km); distances use the local spacing of the two rows' mean.
    """
    rows, cols = values.shape
    bg = np.full((rows, cols), np.nan, np.float32)
    sp = np.full((rows, cols), np.nan, np.float32)
    buf = np.empty(rows * cols if rows * cols < 1_000_000 else 1_000_000)
    for i in range(rows):
        # rows within the radius
        i0 = i
        while i0 > 0 and abs(y_km[i0 - 1] - y_km[i]) <= radius_km:
            i0 -= 1
        i1 = i
        while i1 < rows - 1 and abs(y_km[i1 + 1] - y_km[i]) <= radius_km:
            i1 += 1
        for j in range(cols):
            if not ok[i, j]:
                continue
            n = 0
            for r in range(i0, i1 + 1):
                dy = y_km[r] - y_km[i]
                rem = radius_km * radius_km - dy * dy
                if rem < 0:
                    continue
                dx = 0.5 * (x_km_per_col[r] + x_km_per_col[i])
                half = int(math.floor(math.sqrt(rem) / dx)) if dx > 0 else cols
                for c in range(max(0, j - half), min(cols, j + half + 1)):
                    if ok[r, c] and n < buf.size:
                        buf[n] = values[r, c]
                        n += 1
            if n == 0:
                continue
            m = np.median(buf[:n])
            bg[i, j] = m
            if want_spread:
                dev = np.abs(buf[:n] - m)
                sp[i, j] = 1.4826 * np.median(dev)
    return bg, sp


def _moving_block(values: np.ndarray, ok: np.ndarray, y_km: np.ndarray, x_km: np.ndarray, radius_km: float,
                  zscore: bool) -> np.ndarray:
    """Kernel over one (y, x) slice (or a stack of them): returns background and spread stacked."""
    v = np.asarray(values, np.float64)
    o = np.asarray(ok, bool) & np.isfinite(v)
    if v.ndim == 2:
        bg, sp = _moving_median_kernel(v, o, y_km, x_km, radius_km, zscore)
        return np.stack([bg, sp])
    out = [np.stack(_moving_median_kernel(v[t], o[t], y_km, x_km, radius_km, zscore)) for t in range(v.shape[0])]
    return np.stack(out, axis=1)


def _row_spacing_km(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (km) and column spacing (km) per row of a grid."""
    y = ds["y"].values.astype(np.float64)
    x = ds["x"].values.astype(np.float64)
    dx = abs(x[1] - x[0]) if x.size > 1 else 1.0
    if ds["x"].attrs.get("units") == "degrees_east":
        km_lat = 111.32
        y_km = -y * km_lat  # rows run north to south: increasing row index, increasing y_km
        x_km = dx * km_lat * np.cos(np.radians(y))
        return y_km, x_km
    unit = 1e-3 if ds["x"].attrs.get("units") in ("m", "metre", "meter") else 1.0
    return -y * unit, np.full(y.size, dx * unit)


def _moving_median(ds: xr.Dataset, info: SpeciesInfo, var: str, radius_km: float, zscore: bool) -> xr.Dataset:
    if not _is_grid(ds, var):
        raise ReaderOptionError("method='moving_median' works on gridded maps; grid the soundings first")
    if not radius_km or radius_km <= 0:
        raise ReaderOptionError(f"radius_km must be > 0, got {radius_km!r}")
    value = da.asarray(ds[var].data)
    count_var = var.replace("_mean", "_count")
    ok = da.asarray(ds[count_var].data) > 0 if count_var in ds else da.isfinite(value)
    full = {value.ndim - 2: -1, value.ndim - 1: -1}
    value = value.rechunk(full)
    ok = ok.rechunk(value.chunks)
    y_km, x_km = _row_spacing_km(ds)
    both = da.map_blocks(_moving_block, value, ok, y_km, x_km, float(radius_km), zscore, dtype=np.float32,
                         new_axis=0, chunks=((2,), *value.chunks))
    params = {"radius_km": float(radius_km), "statistic": "median", "includes_centre_cell": True}
    return _finish(ds, info, var, both[0], both[1], zscore, "moving_median", params)


# --------------------------------------------------------------------------- climatology
def _climatology(ds: xr.Dataset, info: SpeciesInfo, var: str, climatology: xr.Dataset | None, min_count: int,
                 zscore: bool) -> xr.Dataset:
    if not _is_grid(ds, var) or "time" not in ds[var].dims:
        raise ReaderOptionError("method='climatology' needs gridded composites with a time axis (eo_pipeline.composite)")
    stack = (climatology if climatology is not None else ds)[var]
    if "time" not in stack.dims:
        raise ReaderOptionError("the climatology stack needs a time axis")
    if min_count < 1:
        raise ReaderOptionError(f"min_count must be >= 1, got {min_count}")
    months_in_stack = stack["time"].dt.month
    per_month = np.bincount(months_in_stack.values, minlength=13)[1:]
    needed = sorted(set(ds["time"].dt.month.values.tolist()))
    short = [m for m in needed if per_month[m - 1] < min_count]
    reason = ""
    if short:
        reason = (f"climatology stack has fewer than min_count={min_count} composites for month(s) {short} "
                  f"({per_month.tolist()} per calendar month); background is NaN there")
        warn(f"{reason}; give a longer stack or a smaller min_count", QualityWarning)
    grouped = stack.groupby("time.month")
    clim = grouped.mean(skipna=True)
    counts = grouped.count()
    clim = clim.where(counts >= min_count)
    bg = clim.sel(month=ds["time"].dt.month).drop_vars("month")
    spread = None
    if zscore:
        dev = abs(stack - clim.sel(month=stack["time"].dt.month).drop_vars("month"))
        mad = dev.groupby("time.month").median(skipna=True) * MAD_SCALE
        spread = mad.where(counts >= min_count).sel(month=ds["time"].dt.month).drop_vars("month").data
    params = {"statistic": "mean of the same calendar month", "min_count": int(min_count),
              "stack_start": str(stack["time"].values.min())[:10], "stack_end": str(stack["time"].values.max())[:10],
              "composites_per_month": per_month.tolist()}
    out = _finish(ds, info, var, bg.transpose(*ds[var].dims).data, spread, zscore, "climatology", params)
    if reason:
        out.attrs["anomaly_note"] = reason
        out[f"{info.name}_anomaly"].attrs["note"] = reason
    return out


# --------------------------------------------------------------------------- public entry point
def regional_anomaly(
    data: xr.Dataset,
    *,
    method: str = "daily_median",
    regions: Any = "hakkarainen2016",
    zscore: bool = False,
    radius_km: float = 100.0,
    climatology: xr.Dataset | None = None,
    min_count: int = 3,
    variable: str | None = None,
) -> xr.Dataset:
    """Add ``<species>_background`` and ``<species>_anomaly`` (and ``_zscore``) to soundings or maps.

    Parameters
    ----------
    data : xarray.Dataset
        Soundings from :func:`eo_pipeline.open_product` (uses ``valid``), or a gridded
        Level-3 dataset from :func:`eo_pipeline.grid_soundings` / :func:`composite`
        (uses ``<species>_mean`` where ``<species>_count`` > 0).
    method : {"daily_median", "moving_median", "climatology"}
        See the module documentation.
    regions : str or sequence
        ``daily_median`` only: a built-in set name or boxes / latitude bands.
    zscore : bool
        Also return ``<species>_zscore``: anomaly / (1.4826 x MAD of the background sample).
    radius_km : float
        ``moving_median`` window radius, km (default 100).
    climatology : xarray.Dataset, optional
        ``climatology`` stack of composites (default: ``data`` itself).
    min_count : int
        ``climatology``: composites needed per cell and calendar month (default 3).
    variable : str, optional
        Column to use when the dataset holds several.

    Returns
    -------
    xarray.Dataset
        ``data`` with the new variables (lazy), in the column's units; NaN where no
        background exists (outside every region, no neighbours, short climatology).
    """
    if method not in METHODS:
        raise ReaderOptionError(f"method must be one of {METHODS}, got {method!r}")
    info, var = _species(data, variable)
    if method == "daily_median":
        return _daily_median(data, info, var, parse_regions(regions), zscore)
    if method == "moving_median":
        return _moving_median(data, info, var, radius_km, zscore)
    return _climatology(data, info, var, climatology, int(min_count), zscore)
