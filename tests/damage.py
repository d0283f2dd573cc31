# SPDX-License-Identifier: Apache-2.0
"""Fault injection for the damaged-input tests: byte-level damage and layout changes.

Byte faults are placed with h5py: the superblock is everything before the root
group's object header (``h5py.h5o.get_info(file.id).addr``), object headers are found
the same way, and data chunks with ``dset.id.get_chunk_info`` / ``get_offset``.
Layout faults rewrite a copy with h5py (delete a group or variable, replace a variable
by one of another type or shape, overwrite values).
"""

from __future__ import annotations

import gc
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

GEO = "PRODUCT/SUPPORT_DATA/GEOLOCATIONS"

#: Column variable to damage, first present wins.
COLUMNS = (
    "PRODUCT/methane_mixing_ratio_bias_corrected",
    "PRODUCT/methane_mixing_ratio",
    "PRODUCT/carbonmonoxide_total_column_corrected",
    "PRODUCT/carbonmonoxide_total_column",
    "methane_mixing_ratio_blended",
    "xco2",
    "xch4",
)


def write_damaged_inputs(d: Path, source: Path) -> dict[str, Path]:
    """Three inputs in ``d`` that no reader can open, named as real products: a truncated
    copy of ``source`` (an S5P file), an HTML error page, and an empty OCO-2 file."""
    bad = {"truncated": d / "S5P_OFFL_L2__CH4____20230716T044407_20230716T062517_29795_03_020500_20230718T053012.nc",
           "text": d / "S5P_OFFL_L2__CH4____20230716T062518_20230716T080628_29796_03_020500_20230718T053012.nc",
           "empty": d / "oco2_LtCO2_230716_B11100Ar_230802141516s.nc4"}
    data = source.read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 3])
    bad["text"].write_text("<html>503 Service Unavailable</html>\n")
    bad["empty"].write_bytes(b"")
    return bad


@dataclass(frozen=True)
class ReaderSpec:
    """Where each reader's product keeps what the layout faults change."""

    reader: str
    fixture: str
    lat: str
    lon: str
    column: str
    missing_variable: str
    group: str | None = None
    lat_bounds: str | None = None
    lon_bounds: str | None = None
    swath: bool = False


SPECS: dict[str, ReaderSpec] = {
    "s5p_ch4": ReaderSpec("s5p_ch4", "ch4_file", "PRODUCT/latitude", "PRODUCT/longitude",
                          "PRODUCT/methane_mixing_ratio_bias_corrected", "PRODUCT/latitude", "PRODUCT",
                          f"{GEO}/latitude_bounds", f"{GEO}/longitude_bounds", swath=True),
    "s5p_co": ReaderSpec("s5p_co", "co_file", "PRODUCT/latitude", "PRODUCT/longitude",
                         "PRODUCT/carbonmonoxide_total_column_corrected", "PRODUCT/delta_time", "PRODUCT",
                         f"{GEO}/latitude_bounds", f"{GEO}/longitude_bounds", swath=True),
    "s5p_blended_ch4": ReaderSpec("s5p_blended_ch4", "blended_file", "latitude", "longitude",
                                  "methane_mixing_ratio_blended", "time_utc", None, "latitude_bounds",
                                  "longitude_bounds"),
    "oco2_lite": ReaderSpec("oco2_lite", "oco2_file", "latitude", "longitude", "xco2", "xco2_uncertainty",
                            "Sounding", "vertex_latitude", "vertex_longitude"),
    "oco3_lite": ReaderSpec("oco3_lite", "oco3_file", "latitude", "longitude", "xco2", "vertex_longitude",
                            "Retrieval", "vertex_latitude", "vertex_longitude"),
    "acos_lite": ReaderSpec("acos_lite", "acos_file", "latitude", "longitude", "xco2", "time", "Sounding"),
    "esacci_ghg_l2": ReaderSpec("esacci_ghg_l2", "cci_file", "latitude", "longitude", "xch4",
                                "xch4_uncertainty"),
}


# ----------------------------------------------------------------------------- fixture bodies
# Test modules declare them: ``_u = pytest.fixture(name="unraisable")(record_unraisable)``.
def record_unraisable(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record "Exception ignored" reports (pytest would otherwise turn them into warnings)."""
    seen: list[str] = []

    def hook(u: Any) -> None:
        seen.append(f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")

    monkeypatch.setattr(sys, "unraisablehook", hook)
    yield seen


def freeze_heap() -> Iterator[None]:
    """Move the long-lived heap (modules, caches) out of the collector's sight: gc.collect() stays quick."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def open_hdf5_files() -> int:
    """How many files the HDF5 library holds open in this process."""
    return len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))


# ----------------------------------------------------------------------------- locating structures
@dataclass(frozen=True)
class Layout:
    """Byte positions of a file's HDF5 structures."""

    size: int
    superblock_version: int
    root_header: int
    column: str
    column_header: int
    chunk_offset: int
    chunk_size: int


def locate(path: Path) -> Layout:
    """Find the superblock, the root and column object headers and the column's first chunk."""
    with h5py.File(path, "r") as f:
        version = f.id.get_create_plist().get_version()[0]
        root = h5py.h5o.get_info(f.id).addr
        column = next(c for c in COLUMNS if c in f)
        d = f[column]
        header = h5py.h5o.get_info(d.id).addr
        if d.chunks:
            info = d.id.get_chunk_info(0)
            offset, size = info.byte_offset, info.size
        else:
            offset, size = d.id.get_offset(), d.id.get_storage_size()
    return Layout(path.stat().st_size, version, root, column, header, int(offset), int(size))


# ----------------------------------------------------------------------------- byte faults
@dataclass(frozen=True)
class ByteFault:
    """One way of damaging a file's bytes."""

    kind: str       # truncation or flip
    where: str      # superblock, metadata, object_header, data, end
    name: str
    position: Callable[[Layout], int]


BYTE_FAULTS: tuple[ByteFault, ...] = (
    ByteFault("truncation", "superblock", "truncated_in_superblock", lambda L: 20),
    ByteFault("truncation", "metadata", "truncated_in_metadata", lambda L: L.root_header + 24),
    ByteFault("truncation", "data", "truncated_in_data_chunk", lambda L: L.chunk_offset + L.chunk_size // 2),
    ByteFault("truncation", "end", "one_byte_short", lambda L: L.size - 1),
    ByteFault("flip", "superblock", "flip_in_superblock_a", lambda L: 8 + (L.root_header - 8) // 3),
    ByteFault("flip", "superblock", "flip_in_superblock_b", lambda L: 8 + 2 * (L.root_header - 8) // 3),
    ByteFault("flip", "object_header", "flip_in_root_group_header", lambda L: L.root_header + 2),
    ByteFault("flip", "object_header", "flip_in_column_header", lambda L: L.column_header + 2),
    ByteFault("flip", "data", "flip_in_data_chunk", lambda L: L.chunk_offset + L.chunk_size // 2),
)


def apply_byte_fault(src: Path, dst: Path, fault: ByteFault, layout: Layout) -> Path:
    """Write ``src`` damaged by ``fault`` to ``dst``."""
    data = bytearray(src.read_bytes())
    pos = fault.position(layout)
    if fault.kind == "truncation":
        data = data[:pos]
    else:
        data[pos] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


# ----------------------------------------------------------------------------- layout faults
def _scales(d: h5py.Dataset) -> list[Any]:
    out = []
    for i in range(d.ndim):
        try:
            out.append(d.dims[i][0] if len(d.dims[i]) else None)
        except (KeyError, IndexError, RuntimeError):
            out.append(None)
    return out


def replace_variable(f: h5py.File, path: str, data: np.ndarray) -> None:
    """Replace a variable by ``data`` (another dtype or shape), keeping its attributes and scales."""
    old = f[path]
    skip = {"DIMENSION_LIST", "REFERENCE_LIST", "_FillValue", "CLASS", "NAME", "_Netcdf4Dimid",
            "_Netcdf4Coordinates"}
    attrs = {k: v for k, v in old.attrs.items() if k not in skip}
    scales = _scales(old)
    for i, s in enumerate(scales):
        if s is not None:
            old.dims[i].detach_scale(s)
    del f[path]
    new = f.create_dataset(path, data=data)
    for k, v in attrs.items():
        new.attrs[k] = v
    for i, s in enumerate(scales[: new.ndim]):
        if s is not None and new.shape[i] == s.shape[0]:
            new.dims[i].attach_scale(s)


def delete(f: h5py.File, path: str) -> None:
    """Delete a group or variable, detaching it from its dimension scales first."""
    obj = f[path]
    if isinstance(obj, h5py.Dataset):
        for i, s in enumerate(_scales(obj)):
            if s is not None:
                obj.dims[i].detach_scale(s)
    del f[path]


def fill_value(d: h5py.Dataset) -> Any:
    """The stored fill value of a variable (the CCI's undeclared -9999.99 if none is declared)."""
    for key in ("_FillValue", "missing_value"):
        if key in d.attrs:
            return np.asarray(d.attrs[key]).ravel()[0]
    return -9999.99


def file_index(spec: ReaderSpec, flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Index into the file's variable of canonical sounding number ``flat``."""
    if spec.swath:
        return (0, *np.unravel_index(flat, shape))
    return (flat,)


@dataclass
class LayoutFault:
    """One layout change and the outcome it must have."""

    name: str
    expect: str                      # "error" (exit 2) or "ok" (exit 0)
    error: str | None = None         # the EOPipelineError subclass expected
    needs_bounds: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


LAYOUT_FAULTS: tuple[LayoutFault, ...] = (
    LayoutFault("missing_group", "error", "UnknownProductError"),
    LayoutFault("missing_variable", "error", "MissingVariableError"),
    LayoutFault("wrong_dtype", "error", "VariableLayoutError"),
    LayoutFault("wrong_shape", "error", "VariableLayoutError"),
    LayoutFault("all_fill", "ok"),
    LayoutFault("nonfinite_coordinates", "ok"),
    LayoutFault("latitude_beyond_90", "ok"),
    LayoutFault("longitude_0_360", "ok"),
    LayoutFault("clockwise_corners", "ok", needs_bounds=True),
    LayoutFault("zero_area_footprints", "ok", needs_bounds=True),
)


def _wrap(lon: np.ndarray) -> np.ndarray:
    return (lon + 180.0) % 360.0 - 180.0


def _pick(spec: ReaderSpec, valid: np.ndarray, n: int) -> list[tuple[int, ...]]:
    """File indices of the first ``n`` valid soundings."""
    return [file_index(spec, int(k), valid.shape) for k in np.flatnonzero(valid.ravel())[:n]]


def _missing_group(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    delete(f, spec.group)
    return {}


def _missing_variable(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    delete(f, spec.missing_variable)
    return {}


def _wrong_dtype(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    replace_variable(f, spec.lat, np.full(f[spec.lat].shape, b"north", dtype="S5"))
    return {}


def _wrong_shape(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    replace_variable(f, spec.lat, f[spec.lat][...][..., :-1])
    return {}


def _all_fill(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    d = f[spec.column]
    d[...] = np.asarray(fill_value(d)).astype(d.dtype)
    return {}


def _nonfinite(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    i = _pick(spec, valid, 3)
    f[spec.lat][i[0]] = np.nan
    f[spec.lat][i[1]] = np.inf
    f[spec.lon][i[2]] = -np.inf
    return {"masked": 3, "warned": 2}  # NaN reads as missing (no warning); +-inf are counted


def _beyond_90(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    i = _pick(spec, valid, 2)
    f[spec.lat][i[0]] = 95.0
    f[spec.lat][i[1]] = -91.0
    return {"masked": 2}


def _longitudes(f: h5py.File, spec: ReaderSpec, shift: float, to_360: bool) -> None:
    for p in (spec.lon, spec.lon_bounds):
        if p is None:
            continue
        d = f[p]
        v = d[...].astype(np.float64)
        ok = np.abs(v) <= 360.0
        # multiples of 2**-10 degrees: exact in float32 both as -180..180 and as 0..360
        new = np.round(_wrap(v + shift) * 1024.0) / 1024.0
        if to_360:
            new = new % 360.0
        d[...] = np.where(ok, new, v).astype(d.dtype)


def _lon_0_360(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    _longitudes(f, spec, shift, to_360=True)
    return {}


def _lon_reference(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    _longitudes(f, spec, shift, to_360=False)
    return {}


def _clockwise(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    for p in (spec.lat_bounds, spec.lon_bounds):
        d = f[p]
        d[...] = d[...][..., ::-1]
    return {}


def _zero_area(f: h5py.File, spec: ReaderSpec, valid: np.ndarray, shift: float) -> dict[str, Any]:
    idx = _pick(spec, valid, 2)
    for centre, bounds in ((spec.lat, spec.lat_bounds), (spec.lon, spec.lon_bounds)):
        c = f[centre][...]
        b = f[bounds][...]
        for i in idx:
            b[i] = c[i]
        f[bounds][...] = b
    return {"degenerate": 2}


_APPLY: dict[str, Callable[[h5py.File, ReaderSpec, np.ndarray, float], dict[str, Any]]] = {
    "missing_group": _missing_group,
    "missing_variable": _missing_variable,
    "wrong_dtype": _wrong_dtype,
    "wrong_shape": _wrong_shape,
    "all_fill": _all_fill,
    "nonfinite_coordinates": _nonfinite,
    "latitude_beyond_90": _beyond_90,
    "longitude_0_360": _lon_0_360,
    "longitude_reference": _lon_reference,
    "clockwise_corners": _clockwise,
    "zero_area_footprints": _zero_area,
}


def apply_layout_fault(src: Path, dst: Path, spec: ReaderSpec, fault: str, valid: np.ndarray,
                       shift: float = 0.0) -> dict[str, Any]:
    """Copy ``src`` to ``dst`` with the layout fault ``fault``; return what the check needs.

    ``valid`` is the canonical valid mask of ``src`` (soundings to damage are picked
    among the valid ones); ``shift`` (degrees) moves longitudes for the 0..360 pair.
    """
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        return _APPLY[fault](f, spec, valid, shift)
