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
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

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
# A cell's window is a run of columns in each row within the radius, so moving one column
# to the right drops at most one cell per row and adds at most one. The kernel sorts the
# filled cells by value once, keeps the window as a bitset over those ranks (updated by
# the few cells that change per step) and walks pointers through it to the median and to
# the block of ranks closest to the median (the MAD): exact, with work per cell
# proportional to the rows in the window rather than to the cells in it.

_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)
_ONE_BIT = np.uint64(1)
#: Output rows per dask task of the moving median (each task also reads the rows within the radius).
_STRIP_ROWS = 96


@njit(cache=True, nogil=True)
def _bit_add(words: np.ndarray, summary: np.ndarray, q: int) -> None:  # pragma: no cover - compiled
    """Kernel: add rank ``q`` to the bitset ``words``; ``summary`` marks its non-empty words."""
    w = q >> 6
    words[w] |= _ONE_BIT << np.uint64(q & 63)
    summary[w >> 6] |= _ONE_BIT << np.uint64(w & 63)


@njit(cache=True, nogil=True)
def _bit_remove(words: np.ndarray, summary: np.ndarray, q: int) -> None:  # pragma: no cover - compiled
    """Kernel: remove rank ``q`` from the bitset (without a branch: a word empties about every other time)."""
    w = q >> 6
    x = words[w] & ~(_ONE_BIT << np.uint64(q & 63))
    words[w] = x
    summary[w >> 6] &= ~(np.uint64(x == 0) << np.uint64(w & 63))


@njit(cache=True, nogil=True)
def _next_set(words: np.ndarray, summary: np.ndarray, pos: int) -> int:  # pragma: no cover - compiled
    """Kernel: the smallest rank >= ``pos`` in the bitset, or ``64 * words.size`` if none."""
    nw = words.size
    pos = max(pos, 0)
    w = pos >> 6
    if w >= nw:
        return nw << 6
    x = words[w] & (_ALL_BITS << np.uint64(pos & 63))
    if x != 0:
        return (w << 6) + int(trailing_zeros(x))
    w += 1
    if w >= nw:
        return nw << 6
    s = w >> 6
    y = summary[s] & (_ALL_BITS << np.uint64(w & 63))
    while y == 0:
        s += 1
        if s >= summary.size:
            return nw << 6
        y = summary[s]
    w = (s << 6) + int(trailing_zeros(y))
    return (w << 6) + int(trailing_zeros(words[w]))


@njit(cache=True, nogil=True)
def _prev_set(words: np.ndarray, summary: np.ndarray, pos: int) -> int:  # pragma: no cover - compiled
    """Kernel: the largest rank <= ``pos`` in the bitset, or -1 if none."""
    if pos < 0:
        return -1
    pos = min(pos, (words.size << 6) - 1)
    w = pos >> 6
    x = words[w] & (_ALL_BITS >> np.uint64(63 - (pos & 63)))
    if x != 0:
        return (w << 6) + 63 - int(leading_zeros(x))
    w -= 1
    if w < 0:
        return -1
    s = w >> 6
    y = summary[s] & (_ALL_BITS >> np.uint64(63 - (w & 63)))
    while y == 0:
        s -= 1
        if s < 0:
            return -1
        y = summary[s]
    w = (s << 6) + 63 - int(leading_zeros(y))
    return (w << 6) + 63 - int(leading_zeros(words[w]))


@njit(cache=True, nogil=True)
def _sort_order(vals: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Kernel: the permutation that sorts float64 ``vals`` (no NaN) ascending; an LSD radix sort.

    The float bits are mapped to unsigned integers in the same order; 11-bit digits that
    every value shares are skipped (values from float32 maps leave 29 of the 64 bits zero).
    """
    n = vals.size
    bits = vals.view(np.uint64)
    key = np.empty(n, np.uint64)
    counts = np.zeros((6, 2048), np.int64)
    digit = np.uint64(2047)
    for i in range(n):
        b = bits[i]
        k = ~b if b >> np.uint64(63) else b | (_ONE_BIT << np.uint64(63))
        key[i] = k
        for d in range(6):
            counts[d, (k >> np.uint64(11 * d)) & digit] += 1
    order = np.arange(n)
    key2 = np.empty(n, np.uint64)
    order2 = np.empty(n, np.int64)
    for d in range(6):
        shift = np.uint64(11 * d)
        c = counts[d]
        if n == 0 or c[(key[0] >> shift) & digit] == n:
            continue
        total = 0
        for b in range(2048):
            t = c[b]
            c[b] = total
            total += t
        for i in range(n):
            k = key[i]
            b = (k >> shift) & digit
            key2[c[b]] = k
            order2[c[b]] = order[i]
            c[b] += 1
        key, key2 = key2, key
        order, order2 = order2, order
    return order


@njit(cache=True, nogil=True)
def _rank_filled(values: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Kernel: each filled cell's rank among the filled cells by value (-1 where empty) and the sorted values.

    Equal values get distinct ranks; the statistics depend only on the values.
    """
    rows, cols = values.shape
    n = 0
    for i in range(rows):
        for j in range(cols):
            if ok[i, j]:
                n += 1
    cell = np.empty(n, np.int64)
    vals = np.empty(n, np.float64)
    k = 0
    for i in range(rows):
        for j in range(cols):
            if ok[i, j]:
                cell[k] = i * cols + j
                vals[k] = values[i, j]
                k += 1
    order = _sort_order(vals)
    rank = np.full((rows, cols), -1, np.int32)
    sorted_values = np.empty(n, np.float64)
    for r in range(n):
        c = cell[order[r]]
        rank[c // cols, c % cols] = r
        sorted_values[r] = vals[order[r]]
    return rank, sorted_values


@njit(cache=True, nogil=True)
def _row_reach(y_km: np.ndarray, radius_km: float) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Kernel: first and last row of the unbroken run of rows within ``radius_km`` (km) of each row."""
    rows = y_km.size
    first = np.empty(rows, np.int64)
    last = np.empty(rows, np.int64)
    for i in range(rows):
        a = i
        while a > 0 and abs(y_km[a - 1] - y_km[i]) <= radius_km:
            a -= 1
        b = i
        while b < rows - 1 and abs(y_km[b + 1] - y_km[i]) <= radius_km:
            b += 1
        first[i] = a
        last[i] = b
    return first, last


@njit(cache=True, nogil=True)
def _window_rows(y_km: np.ndarray, x_km_per_col: np.ndarray, radius_km: float, i: int, i0: int, i1: int, cols: int,
                 band: np.ndarray, band_half: np.ndarray) -> int:  # pragma: no cover - compiled
    """Kernel: the rows of row ``i``'s window (from ``i0..i1``) and their half-widths; returns their number.

    A row at ``dy`` km reaches ``floor(sqrt(r^2 - dy^2) / dx)`` columns each side of the
    centre, ``dx`` the mean of the two rows' column spacing (km); a spacing that is not
    positive reaches every column.
    """
    nb = 0
    for r in range(i0, i1 + 1):
        dy = y_km[r] - y_km[i]
        rem = radius_km * radius_km - dy * dy
        if rem < 0:
            continue
        dx = 0.5 * (x_km_per_col[r] + x_km_per_col[i])
        h = cols
        if dx > 0:
            q = math.sqrt(rem) / dx
            h = int(math.floor(q)) if q < cols else cols
        band[nb] = r
        band_half[nb] = h
        nb += 1
    return nb


@njit(cache=True, nogil=True)
def _first_window(rank: np.ndarray, band: np.ndarray, band_half: np.ndarray, nb: int, words: np.ndarray,
                  summary: np.ndarray) -> int:  # pragma: no cover - compiled
    """Kernel: put the window of column 0 into the (empty) bitset; returns its size."""
    n = 0
    for t in range(nb):
        for c in range(min(rank.shape[1], band_half[t] + 1)):
            q = rank[band[t], c]
            if q >= 0:
                _bit_add(words, summary, q)
                n += 1
    return n


@njit(cache=True, nogil=True)
def _step_changes(rank: np.ndarray, band: np.ndarray, band_half: np.ndarray, nb: int, j: int, gone: np.ndarray,
                  came: np.ndarray) -> tuple[int, int]:  # pragma: no cover - compiled
    """Kernel: the ranks that leave and enter the window as its centre moves to column ``j``; their numbers.

    In each row the window spans ``j - h .. j + h``: column ``j - 1 - h`` leaves, ``j + h``
    enters. Empty cells (rank -1) are written and then overwritten, without a branch on the
    cloud mask (which a processor cannot predict).
    """
    cols = rank.shape[1]
    ng = 0
    nc = 0
    for t in range(nb):
        h = band_half[t]
        if j - 1 - h >= 0:
            q = rank[band[t], j - 1 - h]
            gone[ng] = q
            ng += q >= 0
        if j + h < cols:
            q = rank[band[t], j + h]
            came[nc] = q
            nc += q >= 0
    return ng, nc


@njit(cache=True, nogil=True)
def _apply_changes(words: np.ndarray, summary: np.ndarray, gone: np.ndarray, ng: int, came: np.ndarray, nc: int,
                   p: int, lo: int, hi: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """Kernel: update the bitset; returns the change of the window ranks under ``p`` and inside ``lo..hi``."""
    below = 0
    inside = 0
    for t in range(ng):
        q = gone[t]
        _bit_remove(words, summary, q)
        below -= q < p
        inside -= (lo <= q) & (q <= hi)
    for t in range(nc):
        q = came[t]
        _bit_add(words, summary, q)
        below += q < p
        inside += (lo <= q) & (q <= hi)
    return below, inside


@njit(cache=True, nogil=True)
def _median_rank(words: np.ndarray, summary: np.ndarray, p: int, below: int,
                 a: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """Kernel: move ``p`` to the window's ``a``-th smallest rank (0-based).

    ``below`` is the number of window ranks under ``p`` before and after the move.
    """
    while below > a:
        p = _prev_set(words, summary, p - 1)
        below -= 1
    p = _next_set(words, summary, p)
    while below < a:
        below += 1
        p = _next_set(words, summary, p + 1)
    return p, below


@njit(cache=True, nogil=True)
def _resize_block(words: np.ndarray, summary: np.ndarray, sval: np.ndarray, m: float, p: int, lo: int, hi: int,
                  inside: int, k: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """Kernel: trim ``lo..hi`` to window ranks and grow or shrink it to ``k`` of them, near ``m`` first.

    ``inside`` is the number of window ranks in ``lo..hi``; an empty run restarts at ``p``.
    """
    if inside <= 0:
        lo = p
        hi = p
        inside = 1
    else:
        lo = _next_set(words, summary, lo)
        hi = _prev_set(words, summary, hi)
    for _ in range(inside - k):
        if abs(sval[lo] - m) >= abs(sval[hi] - m):
            lo = _next_set(words, summary, lo + 1)
        else:
            hi = _prev_set(words, summary, hi - 1)
    for _ in range(k - inside):
        a = _prev_set(words, summary, lo - 1)
        b = _next_set(words, summary, hi + 1)
        if b >= sval.size or (a >= 0 and abs(sval[a] - m) <= abs(sval[b] - m)):
            lo = a
        else:
            hi = b
    return lo, hi


@njit(cache=True, nogil=True)
def _closest_block(words: np.ndarray, summary: np.ndarray, sval: np.ndarray, m: float, p: int, lo: int, hi: int,
                   inside: int, k: int) -> tuple[int, int, float, float]:  # pragma: no cover - compiled
    """Kernel: the ``k`` window values closest to ``m``, as the ranks ``lo..hi``; their largest distance and the next.

    The values nearest to ``m`` are a run of consecutive window ranks (distances fall, then
    rise, along the sorted values). The run moves from where it was (``inside`` window ranks
    in ``lo..hi``), is resized to ``k`` and slid while a neighbour outside is strictly closer
    than its far end. Then its largest distance is the ``k``-th smallest of all, and the
    smaller distance of its two outside neighbours the ``k + 1``-th (inf if none), because
    ``m`` is the window's median (``p`` its lower middle rank) and ``k = ceil(n / 2)``: no
    run of ``k`` values lies wholly on one side of ``m`` with a closer value beyond it.
    """
    lo, hi = _resize_block(words, summary, sval, m, p, lo, hi, inside, k)
    while True:
        b = _next_set(words, summary, hi + 1)
        if b < sval.size and abs(sval[b] - m) < abs(sval[lo] - m):
            lo = _next_set(words, summary, lo + 1)
            hi = b
            continue
        a = _prev_set(words, summary, lo - 1)
        if a >= 0 and abs(sval[a] - m) < abs(sval[hi] - m):
            hi = _prev_set(words, summary, hi - 1)
            lo = a
            continue
        break
    beyond = abs(sval[a] - m) if a >= 0 else math.inf
    if b < sval.size:
        beyond = min(beyond, abs(sval[b] - m))
    return lo, hi, max(abs(sval[lo] - m), abs(sval[hi] - m)), beyond


@njit(cache=True, nogil=True)
def _moving_median_kernel(values: np.ndarray, ok: np.ndarray, y_km: np.ndarray, x_km_per_col: np.ndarray,
                          radius_km: float, want_spread: bool, first: int = 0,
                          stop: int = -1) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Median (and 1.4826 MAD) of the filled cells within ``radius_km`` of every filled cell.

    Parameters
    ----------
    values : numpy.ndarray
        float64 (rows, columns) map.
    ok : numpy.ndarray
        bool (rows, columns), True at filled cells (their values must be finite).
    y_km : numpy.ndarray
        Each row's position, km.
    x_km_per_col : numpy.ndarray
        Each row's column spacing, km.
    radius_km : float
        Window radius, km. The window of row ``i`` holds the unbroken run of rows with
        ``|y_km - y_km[i]| <= radius_km``; a row at ``dy`` km gives the columns within
        ``floor(sqrt(radius_km^2 - dy^2) / dx)`` of the centre column, ``dx`` the mean of
        the two rows' column spacing (every column if ``dx`` is not positive), cut at the
        map's edges. The cell itself is always in its window.
    want_spread : bool
        Also compute 1.4826 x the median absolute deviation from the median.
    first, stop : int
        Compute rows ``first..stop-1`` only (``stop=-1``: to the last row); ``values``
        must hold every row within the radius of those.

    Returns
    -------
    tuple of numpy.ndarray
        Background (median) and spread, float32 (stop - first, columns), in the values'
        units; NaN at empty cells (the spread NaN everywhere without ``want_spread``). The
        median of an even count is the mean of the two middle values, as ``np.median``;
        both statistics are exact (computed in float64 from the window's values, rounded
        once to float32), as gathering and sorting each window would give them.
    """
    rows, cols = values.shape
    stop = rows if stop < 0 else stop
    rank, sval = _rank_filled(values, ok)
    words = np.zeros(max(1, (sval.size + 63) >> 6), np.uint64)
    summary = np.zeros((words.size + 63) >> 6, np.uint64)
    reach0, reach1 = _row_reach(y_km, radius_km)
    band = np.empty(rows, np.int64)  # the rows of a window and their half-widths
    band_half = np.empty(rows, np.int64)
    gone = np.empty(rows, np.int64)  # the ranks leaving / entering the window at one step
    came = np.empty(rows, np.int64)
    bg = np.full((stop - first, cols), np.nan, np.float32)
    sp = np.full((stop - first, cols), np.nan, np.float32)
    for i in range(first, stop):
        nb = _window_rows(y_km, x_km_per_col, radius_km, i, reach0[i], reach1[i], cols, band, band_half)
        n = _first_window(rank, band, band_half, nb, words, summary)  # the window size
        p = below = 0  # a rank, and the number of window ranks under it
        lo, hi, inside = 0, -1, 0  # a run of ranks, and the number of window ranks in it
        for j in range(cols):
            if j > 0:
                ng, nc = _step_changes(rank, band, band_half, nb, j, gone, came)
                d_below, d_inside = _apply_changes(words, summary, gone, ng, came, nc, p, lo, hi)
                n += nc - ng
                below += d_below
                inside += d_inside
            if rank[i, j] < 0:
                continue
            p, below = _median_rank(words, summary, p, below, (n - 1) // 2)
            m = sval[p] if n & 1 else (sval[p] + sval[_next_set(words, summary, p + 1)]) / 2
            bg[i - first, j] = m
            if want_spread:
                k = (n + 1) // 2
                lo, hi, dk, beyond = _closest_block(words, summary, sval, m, p, lo, hi, inside, k)
                inside = k
                sp[i - first, j] = 1.4826 * (dk if n & 1 else (dk + beyond) / 2)
        words[:] = 0
        summary[:] = 0
    return bg, sp


def _moving_block(values: np.ndarray, ok: np.ndarray, y_km: np.ndarray, x_km: np.ndarray, radius_km: float,
                  zscore: bool, first: int = 0, stop: int | None = None) -> np.ndarray:
    """Kernel over a strip of rows of a (..., y, x) block: background and spread of rows ``first..stop-1``, stacked.

    The block must hold every row within ``radius_km`` (km) of the output rows; ``y_km``
    and ``x_km`` (km) describe the block's rows. Returns float32 (2, ..., stop - first, x).
    """
    v = np.asarray(values, np.float64)
    o = np.asarray(ok, bool) & np.isfinite(v)
    rows, cols = v.shape[-2:]
    stop = rows if stop is None else stop
    y = np.ascontiguousarray(y_km, np.float64)
    x = np.ascontiguousarray(x_km, np.float64)
    v2 = v.reshape((-1, rows, cols))
    o2 = o.reshape((-1, rows, cols))
    out = np.empty((2, v2.shape[0], stop - first, cols), np.float32)
    for t in range(v2.shape[0]):
        out[0, t], out[1, t] = _moving_median_kernel(np.ascontiguousarray(v2[t]), np.ascontiguousarray(o2[t]), y, x,
                                                     float(radius_km), bool(zscore), int(first), int(stop))
    return out.reshape((2, *v.shape[:-2], stop - first, cols))


def _row_strips(y_km: np.ndarray, radius_km: float, strip_rows: int) -> list[tuple[int, int, int, int]]:
    """Tasks of the moving median: ``(lo, first, stop, hi)``, output rows ``first..stop-1`` from rows ``lo..hi-1``.

    ``strip_rows`` output rows per task; the input rows are those within ``radius_km`` (km)
    of the output rows, by the row positions ``y_km`` (km).
    """
    if y_km.size == 0:
        return [(0, 0, 0, 0)]
    reach0, reach1 = _row_reach(np.ascontiguousarray(y_km, np.float64), float(radius_km))
    strips = []
    for first in range(0, y_km.size, strip_rows):
        stop = min(y_km.size, first + strip_rows)
        strips.append((int(reach0[first:stop].min()), first, stop, int(reach1[first:stop].max()) + 1))
    return strips


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
    # row strips (with the rows within the radius around them) let one map use several cores
    parts = []
    meta = np.empty((0,) * (value.ndim + 1), np.float32)
    for lo, first, stop, hi in _row_strips(y_km, float(radius_km), _STRIP_ROWS):
        parts.append(da.map_blocks(_moving_block, value[..., lo:hi, :], ok[..., lo:hi, :], y_km[lo:hi], x_km[lo:hi],
                                   float(radius_km), zscore, first - lo, stop - lo, dtype=np.float32, meta=meta,
                                   new_axis=0, chunks=((2,), *value.chunks[:-2], (stop - first,), value.chunks[-1])))
    both = da.concatenate(parts, axis=-2).rechunk({value.ndim - 1: -1})
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
