# SPDX-License-Identifier: Apache-2.0
"""Sentinel-5P TROPOMI Level-2 readers: CH4, CO, and the blended TROPOMI+GOSAT CH4.

Layouts follow the S5P Product User Manuals (PUM) of the KNMI/SRON processors:
data in the ``PRODUCT`` group with dimensions ``(time=1, scanline, ground_pixel)``,
corners in ``PRODUCT/SUPPORT_DATA/GEOLOCATIONS/{latitude,longitude}_bounds``, fill
value 9.96921e36 for floats, and ``qa_value`` stored as ubyte with scale 0.01.
The blended product (Balasus et al. 2023) is flat: one ``nobs`` dimension, no groups.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import (
    MissingVariableError,
    QualityWarning,
    ReaderOptionError,
    VariableLayoutError,
    warn,
)
from ..schema import CORNER_DIM, SOUNDING_DIM, SPECIES, SWATH_DIMS, SpeciesInfo
from ._netcdf import NCFile, VarInfo, lazy_raw, seconds_to_datetime64
from .base import INTEGER, STRING, Reader, as_int, iso_utc, not_nat

__all__ = ["S5PCH4Reader", "S5PCOReader", "S5PBlendedCH4Reader"]

GEO = "PRODUCT/SUPPORT_DATA/GEOLOCATIONS"
SURFACE_CLASSIFICATION = "PRODUCT/SUPPORT_DATA/INPUT_DATA/surface_classification"
#: Reference epoch of the S5P ``time`` variable ("seconds since 2010-01-01").
S5P_EPOCH = np.datetime64("2010-01-01T00:00:00", "ns")


def _qa_ok(raw: np.ndarray, threshold_raw: float, fill: int | None) -> np.ndarray:
    """Kernel: ``qa_value > threshold`` compared on the stored integers."""
    ok = raw > threshold_raw
    if fill is not None:
        ok &= raw != fill
    return ok


def _not_water(raw: np.ndarray, fill: int | None) -> np.ndarray:
    """Kernel: True unless bits 0-1 of ``surface_classification`` say water (value 1)."""
    ok = (raw & 3) != 1
    if fill is not None:
        ok &= raw != fill
    return ok


def _scanline_times(delta: np.ndarray, epoch: np.datetime64, ns_per_unit: int, fill: Any) -> np.ndarray:
    return seconds_to_datetime64(delta, epoch, ns_per_unit, fill_value=fill)


def _qa_threshold_raw(qa: VarInfo, threshold: float) -> float:
    """Return the threshold on the stored scale (0.5 -> 50 for ubyte with scale 0.01).

    Raises
    ------
    VariableLayoutError
        ``scale_factor``/``add_offset`` are not finite numbers (or the scale is 0).
    """
    try:
        scale = float(qa.attrs.get("scale_factor", 1.0))
        offset = float(qa.attrs.get("add_offset", 0.0))
        if not (np.isfinite(scale) and np.isfinite(offset) and scale != 0.0):
            raise ValueError
    except (TypeError, ValueError):
        raise VariableLayoutError(
            f"{qa.path} has scale_factor {qa.attrs.get('scale_factor')!r} and add_offset "
            f"{qa.attrs.get('add_offset')!r}, which are not usable numbers; the file is damaged"
        ) from None
    return round((threshold - offset) / scale, 6)


def _granule_attrs(nc: NCFile, short_name: str) -> dict[str, Any]:
    g = nc.attrs
    granule = nc.group_attrs("METADATA/GRANULE_DESCRIPTION")
    return {
        "product": f"S5P_{short_name}",
        "platform": "Sentinel-5P",
        "instrument": str(g.get("sensor", granule.get("InstrumentName", "TROPOMI"))),
        "processor_version": str(g.get("processor_version", granule.get("ProcessorVersion", ""))),
        "product_version": str(g.get("product_version", "")),
        "orbit": as_int(g.get("orbit", -1)),
        "time_coverage_start": iso_utc(g.get("time_coverage_start", granule.get("GranuleStart"))),
        "time_coverage_end": iso_utc(g.get("time_coverage_end", granule.get("GranuleEnd"))),
        "processing_mode": str(granule.get("ProcessingMode", "")),
    }


class _S5PSwathReader(Reader):
    """Shared logic of the S5P swath products (``PRODUCT`` group, 2-D swath)."""

    short_name: ClassVar[str]
    species_info: ClassVar[SpeciesInfo]
    title_prefix: ClassVar[str]
    #: variant name -> PRODUCT variable
    variants: ClassVar[dict[str, str]]
    precision: ClassVar[str]
    default_qa: ClassVar[float] = 0.5
    default_chunk = 1024

    def guess_can_open(self, nc: NCFile) -> bool:
        """Match ``METADATA/GRANULE_DESCRIPTION@ProductShortName``, else title/id attributes."""
        if not nc.has_group("PRODUCT"):
            return False
        granule = nc.group_attrs("METADATA/GRANULE_DESCRIPTION")
        if "ProductShortName" in granule:
            return str(granule["ProductShortName"]) == self.short_name
        title = str(nc.attrs.get("title", ""))
        ident = str(nc.attrs.get("id", ""))
        return title.startswith(self.title_prefix) or f"_{self.short_name}_" in ident

    # ------------------------------------------------------------------ parts
    def _default_variant(self, nc: NCFile) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _column_path(self, nc: NCFile, variant: str | None) -> str:
        if variant is None:
            return self.variants[self._default_variant(nc)]
        if variant not in self.variants:
            raise ReaderOptionError(
                f"variant must be one of {sorted(self.variants)}, got {variant!r}"
            )
        path = self.variants[variant]
        if not nc.has(path) and nc.has("PRODUCT/latitude"):
            present = [v for v, p in self.variants.items() if nc.has(p)]
            raise MissingVariableError(
                f"{nc.path}: variant={variant!r} needs {path}, which this file does not contain "
                f"(processor {nc.attrs.get('processor_version', '?')}); variants present: {present}"
            )
        return path

    def _times(self, nc: NCFile, delta: VarInfo, chunks: tuple[int, ...]) -> da.Array:
        ns_per_unit, epoch = self.time_units(nc, delta, "milliseconds")
        if epoch is None:  # older processors: "milliseconds" relative to PRODUCT/time
            tinfo = self.check_variable(nc, nc.variable("PRODUCT/time"), shape=(1,))
            t_ns, t_epoch = self.time_units(nc, tinfo, "seconds since 2010-01-01")
            ref = seconds_to_datetime64(
                nc.read_small(tinfo.path).ravel(), t_epoch if t_epoch is not None else S5P_EPOCH, t_ns,
                fill_value=tinfo.fill_value,
            )[0]
            if np.isnat(ref):
                raise VariableLayoutError(
                    f"{nc.path}: PRODUCT/time holds no usable reference time, which delta_time (units "
                    "'milliseconds') needs; the file is damaged: download it again"
                )
            epoch = ref
        raw = lazy_raw(nc, delta, chunks)[0]
        return raw.map_blocks(
            _scanline_times, epoch=epoch, ns_per_unit=ns_per_unit, fill=delta.fill_value,
            dtype="datetime64[ns]", meta=np.empty((0,), dtype="datetime64[ns]"),
        )

    def _qa(
        self, nc: NCFile, qa_threshold: float | None, chunks: tuple[int, ...], shape: tuple[int, ...]
    ) -> tuple[da.Array | None, float, str]:
        path = "PRODUCT/qa_value"
        if not nc.has(path):
            if qa_threshold not in (None, 0, 0.0):
                raise MissingVariableError(
                    f"{nc.path}: qa_threshold={qa_threshold} needs PRODUCT/qa_value, which this "
                    "subset lacks; pass qa_threshold=0 to use it without QA filtering"
                )
            self.warn_no_qa(nc, "PRODUCT/qa_value")
            return None, 0.0, "none: PRODUCT/qa_value absent from this subset"
        q = self.check_threshold(qa_threshold, self.default_qa)
        if q == 0.0:
            return None, 0.0, "none (qa_threshold=0): fill values only"
        info = self.check_variable(nc, nc.variable(path), shape=shape)
        try:
            thr = _qa_threshold_raw(info, q)
        except VariableLayoutError as exc:
            raise VariableLayoutError(f"{nc.path}: {exc}") from None
        ok = lazy_raw(nc, info, chunks)[0].map_blocks(
            _qa_ok, threshold_raw=thr, fill=info.fill_value, dtype=bool,
            meta=np.empty((0, 0), dtype=bool),
        )
        return ok, q, f"qa_value > {q:g}"

    def _bounds(self, nc: NCFile, chunks: tuple[int, ...], shape: tuple[int, ...]) -> dict[str, xr.DataArray]:
        paths = [f"{GEO}/latitude_bounds", f"{GEO}/longitude_bounds"]
        if not all(nc.has(p) for p in paths):
            return {}
        out = {}
        for p, units, axis in zip(paths, ("degrees_north", "degrees_east"), ("latitude", "longitude"), strict=True):
            info = self.check_variable(nc, nc.variable(p), shape=(*shape, None))
            arr = self.read_coordinate(nc, info, (*chunks, info.shape[-1]), axis, corners=True)[0]
            out[p.rsplit("/", 1)[1]] = xr.DataArray(
                arr, dims=(*SWATH_DIMS, CORNER_DIM),
                attrs={"units": units, "source_variable": p,
                       "corner_order": "(scanline-,pixel-), (scanline-,pixel+), (scanline+,pixel+), (scanline+,pixel-)"},
            )
        return out

    def _extras(
        self, nc: NCFile, chunks: tuple[int, ...], shape: tuple[int, ...], *, surface_classification: bool,
        drop_water: bool, averaging_kernel: bool,
    ) -> tuple[dict[str, xr.DataArray], da.Array | None]:
        extra: dict[str, xr.DataArray] = {}
        not_water = None
        if surface_classification or drop_water:
            info = self.require(nc, [SURFACE_CLASSIFICATION])[SURFACE_CLASSIFICATION]
            self.check_variable(nc, info, kinds=INTEGER, shape=shape)
            raw = lazy_raw(nc, info, chunks)[0]
            if surface_classification:
                extra["surface_classification"] = xr.DataArray(
                    raw, dims=SWATH_DIMS,
                    attrs={k: info.attrs[k] for k in ("long_name", "flag_values", "flag_masks", "flag_meanings") if k in info.attrs}
                    | {"source_variable": SURFACE_CLASSIFICATION},
                )
            if drop_water:
                not_water = raw.map_blocks(
                    _not_water, fill=info.fill_value, dtype=bool, meta=np.empty((0, 0), dtype=bool)
                )
        if averaging_kernel:
            path = "PRODUCT/SUPPORT_DATA/DETAILED_RESULTS/column_averaging_kernel"
            info = self.check_variable(nc, self.require(nc, [path])[path], shape=(*shape, None))
            arr = self.read_float(nc, info, (*chunks, info.shape[-1]))[0]
            extra[f"{self.species_info.name}_averaging_kernel"] = xr.DataArray(
                arr, dims=(*SWATH_DIMS, info.dims[-1]),
                attrs={"units": str(info.attrs.get("units", "1")), "long_name": "column averaging kernel",
                       "source_variable": path},
            )
        return extra, not_water

    # ------------------------------------------------------------------ open
    def _open_swath(
        self, nc: NCFile, *, qa_threshold: float | None, variant: str | None,
        surface_classification: bool, drop_water: bool, averaging_kernel: bool,
        chunks: int | None, derive_corners: bool = False,
    ) -> xr.Dataset:
        col_path = self._column_path(nc, variant)
        infos = self.require(
            nc, ["PRODUCT/latitude", "PRODUCT/longitude", "PRODUCT/delta_time", "PRODUCT/time", col_path]
        )
        col = self.check_variable(nc, infos[col_path], shape=(1, None, None))
        shape3 = col.shape
        n_scan, n_pix = col.shape[1:]
        for p in ("PRODUCT/latitude", "PRODUCT/longitude"):
            self.check_variable(nc, infos[p], shape=shape3)
        self.check_variable(nc, infos["PRODUCT/delta_time"], shape=(1, n_scan))
        cs = self.chunk_length(col, 1, chunks, self.default_chunk)
        ch3 = (1, cs, n_pix)
        lat = self.read_coordinate(nc, infos["PRODUCT/latitude"], ch3, "latitude")[0]
        lon = self.read_coordinate(nc, infos["PRODUCT/longitude"], ch3, "longitude")[0]
        units = self.species_info.units
        value = self.read_converted(nc, col, units, ch3)[0]
        prec_path = self.precision
        prec = None
        if nc.has(prec_path):
            prec_info = self.check_variable(nc, nc.variable(prec_path), shape=shape3)
            prec = self.read_converted(nc, prec_info, units, ch3)[0]
        t_line = self._times(nc, infos["PRODUCT/delta_time"], (1, cs))
        time = da.broadcast_to(t_line[:, None], (n_scan, n_pix))
        qa_ok, q, rule = self._qa(nc, qa_threshold, ch3, shape3)
        extra, not_water = self._extras(
            nc, ch3, shape3, surface_classification=surface_classification, drop_water=drop_water,
            averaging_kernel=averaging_kernel,
        )
        valid = da.isfinite(value) & da.isfinite(lat) & da.isfinite(lon) & not_nat(time)
        if qa_ok is not None:
            valid = valid & qa_ok
        if not_water is not None:
            valid = valid & not_water
            rule += "; surface_classification not water"
        data_vars = self.column_variables(
            self.species_info, value, col_path, prec, prec_path if prec is not None else None, SWATH_DIMS
        )
        data_vars["valid"] = xr.DataArray(valid, dims=SWATH_DIMS)
        data_vars.update(self._bounds(nc, ch3, shape3))
        data_vars.update(extra)
        coords = {
            "latitude": xr.DataArray(lat, dims=SWATH_DIMS, attrs={"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": xr.DataArray(lon, dims=SWATH_DIMS, attrs={"units": "degrees_east", "standard_name": "longitude"}),
            "time": xr.DataArray(time, dims=SWATH_DIMS, attrs={"standard_name": "time", "long_name": "scanline time (UTC)"}),
        }
        ds = xr.Dataset(data_vars, coords=coords)
        attrs = _granule_attrs(nc, self.short_name)
        attrs.update(species=self.species_info.species, qa_threshold=q, qa_rule=rule,
                     column_variable=col_path)
        if "latitude_bounds" in ds:
            attrs["corners_source"] = "product"
        elif derive_corners:
            from ..footprints import with_derived_corners

            ds = with_derived_corners(ds)
        return self.finish(ds, nc, attrs)


class S5PCH4Reader(_S5PSwathReader):
    """Sentinel-5P TROPOMI L2 CH4 (``S5P_*_L2__CH4____*.nc``), as ``xch4`` in ppb."""

    name = "s5p_ch4"
    description = "Sentinel-5P TROPOMI L2 CH4"
    file_patterns = ("S5P_*_L2__CH4____*.nc",)
    short_name = "L2__CH4___"
    title_prefix = "TROPOMI/S5P Methane"
    species_info = SPECIES["xch4"]
    variants = {
        "bias_corrected": "PRODUCT/methane_mixing_ratio_bias_corrected",
        "bias_corrected_destriped": "PRODUCT/methane_mixing_ratio_bias_corrected_destriped",
        "uncorrected": "PRODUCT/methane_mixing_ratio",
    }
    precision = "PRODUCT/methane_mixing_ratio_precision"

    def _default_variant(self, nc: NCFile) -> str:
        if nc.has(self.variants["bias_corrected"]):
            return "bias_corrected"
        if nc.has(self.variants["uncorrected"]):
            warn(
                f"{nc.name}: no methane_mixing_ratio_bias_corrected in this subset; using the "
                "uncorrected PRODUCT/methane_mixing_ratio (pass variant='uncorrected' to silence)",
                QualityWarning,
            )
            return "uncorrected"
        return "bias_corrected"  # let require() name the missing variable

    def open(
        self,
        nc: NCFile,
        *,
        qa_threshold: float | None = None,
        variant: Literal["bias_corrected", "bias_corrected_destriped", "uncorrected"] | None = None,
        surface_classification: bool = False,
        drop_water: bool = False,
        averaging_kernel: bool = False,
        chunks: int | None = None,
        derive_corners: bool = False,
    ) -> xr.Dataset:
        """Open an S5P L2 CH4 file as the canonical schema.

        Parameters
        ----------
        nc : NCFile
            The file.
        qa_threshold : float, optional
            Threshold on the **0..1** ``qa_value`` scale (the file stores ubyte 0..100
            with scale_factor 0.01; the comparison is made on the stored integers so that
            float rounding never flips a pixel). A pixel is valid when
            ``qa_value > qa_threshold``, as the S5P CH4 PUM recommends. Default 0.5.
            0 disables QA filtering (fill values are still masked). Subsets without
            ``qa_value`` open with a warning and are not QA-filtered.
        variant : {"bias_corrected", "bias_corrected_destriped", "uncorrected"}, optional
            Which column to read, in ppb: ``methane_mixing_ratio_bias_corrected`` (default;
            falls back with a warning to ``methane_mixing_ratio`` for subsets without it),
            ``..._bias_corrected_destriped`` (where the processor wrote it) or
            ``methane_mixing_ratio``.
        surface_classification : bool
            Add the product's ``surface_classification`` flags (uint8).
        drop_water : bool
            Mark pixels classified as water (bits 0-1 == 1) invalid.
        averaging_kernel : bool
            Add ``xch4_averaging_kernel`` (dims scanline, ground_pixel, layer), lazily.
        chunks : int, optional
            Scanlines per dask chunk (default: whole storage chunks, about 1024).
        derive_corners : bool
            Where the file has no ``latitude_bounds``/``longitude_bounds`` (e.g. variable
            subsets), derive them from the pixel centres (see
            :mod:`eo_pipeline.footprints`); they carry ``corners = "derived ..."`` and the
            dataset ``corners_source = "derived"``. Files with corners keep theirs.
        """
        return self._open_swath(
            nc, qa_threshold=qa_threshold, variant=variant, surface_classification=surface_classification,
            drop_water=drop_water, averaging_kernel=averaging_kernel, chunks=chunks, derive_corners=derive_corners,
        )


class S5PCOReader(_S5PSwathReader):
    """Sentinel-5P TROPOMI L2 CO (``S5P_*_L2__CO_____*.nc``), as ``xco`` in mol m-2."""

    name = "s5p_co"
    description = "Sentinel-5P TROPOMI L2 CO"
    file_patterns = ("S5P_*_L2__CO_____*.nc",)
    short_name = "L2__CO____"
    title_prefix = "TROPOMI/S5P CO"
    species_info = SPECIES["xco"]
    variants = {
        "corrected": "PRODUCT/carbonmonoxide_total_column_corrected",
        "uncorrected": "PRODUCT/carbonmonoxide_total_column",
    }
    precision = "PRODUCT/carbonmonoxide_total_column_precision"

    def _default_variant(self, nc: NCFile) -> str:
        return "corrected" if nc.has(self.variants["corrected"]) else "uncorrected"

    def open(
        self,
        nc: NCFile,
        *,
        qa_threshold: float | None = None,
        variant: Literal["corrected", "uncorrected"] | None = None,
        surface_classification: bool = False,
        drop_water: bool = False,
        averaging_kernel: bool = False,
        chunks: int | None = None,
        derive_corners: bool = False,
    ) -> xr.Dataset:
        """Open an S5P L2 CO file as the canonical schema (``xco`` in mol m-2).

        Parameters
        ----------
        nc : NCFile
            The file.
        qa_threshold : float, optional
            Threshold on the **0..1** ``qa_value`` scale (stored as ubyte with scale 0.01);
            valid when ``qa_value > qa_threshold``; default 0.5 as the CO PUM recommends;
            0 disables QA filtering.
        variant : {"corrected", "uncorrected"}, optional
            ``carbonmonoxide_total_column_corrected`` where the processor wrote it (the
            default then), else ``carbonmonoxide_total_column``.
        surface_classification, drop_water, averaging_kernel, chunks, derive_corners
            As for :meth:`S5PCH4Reader.open`.
        """
        return self._open_swath(
            nc, qa_threshold=qa_threshold, variant=variant, surface_classification=surface_classification,
            drop_water=drop_water, averaging_kernel=averaging_kernel, chunks=chunks, derive_corners=derive_corners,
        )


_BLND_NAME = re.compile(
    r"S5P_BLND_L2__CH4____(?P<start>\d{8}T\d{6})_(?P<end>\d{8}T\d{6})_(?P<orbit>\d{5})_(?P<coll>\d{2})_(?P<proc>\d{6})_"
)


def _parse_one_utc(text: str) -> np.datetime64:
    try:
        return np.datetime64(text, "ns")
    except (ValueError, OverflowError):
        return np.datetime64("NaT", "ns")


def _parse_utc_strings(values: np.ndarray) -> np.ndarray:
    """Kernel: ISO 8601 strings (bytes or str, trailing Z) to datetime64[ns]; blanks and garbage -> NaT."""
    flat = [
        (v.decode("ascii", errors="replace") if isinstance(v, bytes | np.bytes_) else str(v)).strip().rstrip("Z")
        or "NaT"
        for v in np.asarray(values, dtype=object).ravel()
    ]
    try:
        out = np.array(flat, dtype="datetime64[ns]")
    except (ValueError, OverflowError):  # a damaged string: parse one by one
        out = np.array([_parse_one_utc(t) for t in flat], dtype="datetime64[ns]")
    return out.reshape(np.shape(values))


class S5PBlendedCH4Reader(Reader):
    """Blended TROPOMI+GOSAT CH4 (``S5P_BLND_L2__CH4____*.nc``; Balasus et al. 2023)."""

    name = "s5p_blended_ch4"
    description = "Sentinel-5P blended TROPOMI+GOSAT CH4"
    file_patterns = ("S5P_BLND_L2__CH4____*.nc",)
    default_chunk = 262144

    def guess_can_open(self, nc: NCFile) -> bool:
        """Claim a flat ``nobs`` file with ``methane_mixing_ratio_blended``."""
        return "nobs" in nc.dimensions() and nc.has("methane_mixing_ratio_blended")

    def open(
        self,
        nc: NCFile,
        *,
        qa_threshold: float | None = None,
        chunks: int | None = None,
    ) -> xr.Dataset:
        """Open a blended TROPOMI+GOSAT file (``xch4`` = ``methane_mixing_ratio_blended``, ppb).

        Parameters
        ----------
        nc : NCFile
            The file.
        qa_threshold : float, optional
            Threshold on the 0..1 ``qa_value`` scale, valid when ``qa_value > qa_threshold``;
            default 0.5. The producer keeps only ``qa_value == 1`` soundings, so the
            default removes nothing; 0 disables the check.
        chunks : int, optional
            Soundings per dask chunk.
        """
        paths = ["latitude", "longitude", "methane_mixing_ratio_blended", "time_utc"]
        infos = self.require(nc, paths)
        col = self.check_variable(nc, infos["methane_mixing_ratio_blended"], shape=(None,))
        n = col.shape[0]
        for p in ("latitude", "longitude"):
            self.check_variable(nc, infos[p], shape=(n,))
        self.check_variable(nc, infos["time_utc"], kinds=STRING, shape=(n,))
        ch = (self.chunk_length(col, 0, chunks, self.default_chunk),)
        lat = self.read_coordinate(nc, infos["latitude"], ch, "latitude")
        lon = self.read_coordinate(nc, infos["longitude"], ch, "longitude")
        value = self.read_converted(nc, col, "ppb", ch)
        prec = None
        if nc.has("methane_mixing_ratio_precision"):
            prec_info = self.check_variable(nc, nc.variable("methane_mixing_ratio_precision"), shape=(n,))
            prec = self.read_converted(nc, prec_info, "ppb", ch)
        tinfo = infos["time_utc"]
        time = lazy_raw(nc, tinfo, ch).map_blocks(
            _parse_utc_strings, dtype="datetime64[ns]", meta=np.empty((0,), dtype="datetime64[ns]")
        )
        valid = da.isfinite(value) & da.isfinite(lat) & da.isfinite(lon) & not_nat(time)
        if nc.has("qa_value"):
            q = self.check_threshold(qa_threshold, 0.5)
            rule = f"qa_value > {q:g}" if q > 0 else "none (qa_threshold=0): fill values only"
            if q > 0:
                qinfo = self.check_variable(nc, nc.variable("qa_value"), shape=(n,))
                try:
                    thr = _qa_threshold_raw(qinfo, q)
                except VariableLayoutError as exc:
                    raise VariableLayoutError(f"{nc.path}: {exc}") from None
                valid = valid & lazy_raw(nc, qinfo, ch).map_blocks(
                    _qa_ok, threshold_raw=thr, fill=qinfo.fill_value,
                    dtype=bool, meta=np.empty((0,), dtype=bool),
                )
        else:
            if qa_threshold not in (None, 0, 0.0):
                raise MissingVariableError(f"{nc.path}: qa_threshold given but the file has no qa_value")
            self.warn_no_qa(nc, "qa_value")
            q, rule = 0.0, "none: qa_value absent"
        dims = (SOUNDING_DIM,)
        data_vars = self.column_variables(
            SPECIES["xch4"], value, "methane_mixing_ratio_blended", prec,
            "methane_mixing_ratio_precision" if prec is not None else None, dims,
        )
        data_vars["valid"] = xr.DataArray(valid, dims=dims)
        if nc.has("latitude_bounds") and nc.has("longitude_bounds"):
            for name, units, axis in (("latitude_bounds", "degrees_north", "latitude"),
                                      ("longitude_bounds", "degrees_east", "longitude")):
                info = self.check_variable(nc, nc.variable(name), shape=(n, None))
                data_vars[name] = xr.DataArray(
                    self.read_coordinate(nc, info, (*ch, info.shape[-1]), axis, corners=True),
                    dims=(*dims, CORNER_DIM),
                    attrs={"units": units, "source_variable": name},
                )
        ds = xr.Dataset(data_vars, coords={
            "latitude": (dims, lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": (dims, lon, {"units": "degrees_east", "standard_name": "longitude"}),
            "time": (dims, time, {"standard_name": "time"}),
        })
        m = _BLND_NAME.search(nc.name)
        if n:
            first_last = _parse_utc_strings(nc.read_small(tinfo.path, [0, n - 1]))
            start, end = iso_utc(first_last[0]), iso_utc(first_last[-1])
        else:
            start = end = ""
        attrs = {
            "product": "S5P_BLND_L2__CH4___",
            "platform": "Sentinel-5P",
            "instrument": "TROPOMI",
            "species": "CH4",
            "processor_version": (m.group("proc") if m else str(nc.attrs.get("processor_version", ""))),
            "orbit": int(m.group("orbit")) if m else as_int(nc.attrs.get("orbit", -1)),
            "time_coverage_start": start,
            "time_coverage_end": end,
            "qa_threshold": q,
            "qa_rule": rule,
            "column_variable": "methane_mixing_ratio_blended",
            "title": str(nc.attrs.get("Title", nc.attrs.get("title", ""))),
        }
        return self.finish(ds, nc, attrs)
