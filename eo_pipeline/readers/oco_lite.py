# SPDX-License-Identifier: Apache-2.0
"""OCO-2, OCO-3 and GOSAT ACOS L2 Lite (``*_LtCO2_*.nc4``) readers.

Layout (ACOS L2 Lite Output, the format of all three): root dimension
``sounding_id``; root variables ``sounding_id``, ``time`` (seconds since
1970-01-01), ``latitude``, ``longitude``, ``xco2`` [ppm], ``xco2_uncertainty``,
``xco2_quality_flag`` (0 = good), and for OCO-2/OCO-3 ``vertex_latitude`` /
``vertex_longitude`` (``sounding_id, vertices=4``); groups ``Sounding/``
(operation_mode, footprint, orbit, land_fraction, ...) and ``Retrieval/`` (psurf, ...).
Floats use ``missing_value``/``_FillValue`` -999999. Global attributes
``Sensor``/``Platform``/``BuildId`` identify the mission and processor build.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import EOPipelineWarning, VariableLayoutError, warn
from ..schema import CORNER_DIM, SOUNDING_DIM, SPECIES
from ._netcdf import NCFile, lazy_raw, seconds_to_datetime64
from .base import NUMERIC, Reader, iso_utc, not_nat

__all__ = ["OCO2LiteReader", "OCO3LiteReader", "ACOSLiteReader", "flag_ok"]

#: Per-sounding variables passed through when present: canonical name -> (path, units)
LITE_EXTRAS: dict[str, tuple[str, str | None]] = {
    "operation_mode": ("Sounding/operation_mode", None),
    "footprint": ("Sounding/footprint", None),
    "orbit": ("Sounding/orbit", None),
    "land_fraction": ("Sounding/land_fraction", "percent"),
    "surface_pressure": ("Retrieval/psurf", "hPa"),
}


def flag_ok(flag: np.ndarray, threshold: float) -> np.ndarray:
    """Kernel: quality score ``1 - (flag != 0)`` > ``threshold`` (flag 0 = good).

    Binary flag products map onto the common 0..1 quality scale: a good sounding
    scores 1, any other flag value scores 0.
    """
    score = (flag == 0).astype(np.float32)
    return score > threshold


def _to_time(values: np.ndarray, epoch: np.datetime64, ns_per_unit: int, fill: Any) -> np.ndarray:
    return seconds_to_datetime64(values, epoch, ns_per_unit, fill_value=fill)


class _LiteReader(Reader):
    """Shared logic of the three Lite-file readers."""

    sensors: ClassVar[tuple[str, ...]]
    platform: ClassVar[str]
    has_vertices: ClassVar[bool]
    product: ClassVar[str]
    default_chunk = 262144

    def _is_lite(self, nc: NCFile) -> bool:
        return (
            nc.has("xco2") and nc.has("xco2_quality_flag") and nc.has("sounding_id")
            and nc.has_group("Sounding") and nc.has_group("Retrieval")
        )

    def _sensor(self, nc: NCFile) -> str:
        sensor = str(nc.attrs.get("Sensor", nc.attrs.get("sensor", ""))).strip()
        if sensor:
            return sensor
        if not nc.has("vertex_latitude"):
            return "TANSO-FTS"
        return "OCO-3" if nc.has("Sounding/pma_elevation_angle") else "OCO-2"

    def guess_can_open(self, nc: NCFile) -> bool:
        """Claim an ACOS-style Lite file whose ``Sensor`` attribute names this mission."""
        return self._is_lite(nc) and self._sensor(nc) in self.sensors

    def open(
        self,
        nc: NCFile,
        *,
        qa_threshold: float | None = None,
        chunks: int | None = None,
    ) -> xr.Dataset:
        """Open a Lite file as the canonical schema (``xco2`` in ppm, 1-D ``sounding``).

        Parameters
        ----------
        nc : NCFile
            The file.
        qa_threshold : float, optional
            Threshold on the common 0..1 quality scale, where ``xco2_quality_flag == 0``
            (good) scores 1 and any other flag 0; valid when score > threshold. The
            default 0.5 keeps exactly the soundings flagged good, as the Lite data
            user's guide recommends; 0 disables the quality filter (fill values -999999
            are still masked).
        chunks : int, optional
            Soundings per dask chunk.
        """
        required = ["latitude", "longitude", "time", "xco2", "xco2_uncertainty", "xco2_quality_flag"]
        if self.has_vertices:
            required += ["vertex_latitude", "vertex_longitude"]
        infos = self.require(nc, required + ["sounding_id"])
        col = self.check_variable(nc, infos["xco2"], shape=(None,))
        n = col.shape[0]
        for p in required + ["sounding_id"]:
            self.check_variable(nc, infos[p], shape=(n, None) if p.startswith("vertex_") else (n,))
        ch = (self.chunk_length(col, 0, chunks, self.default_chunk),)
        dims = (SOUNDING_DIM,)
        value = self.read_converted(nc, col, "ppm", ch)
        unc = self.read_converted(nc, infos["xco2_uncertainty"], "ppm", ch)
        lat = self.read_coordinate(nc, infos["latitude"], ch, "latitude")
        lon = self.read_coordinate(nc, infos["longitude"], ch, "longitude")
        tinfo = infos["time"]
        ns_per_unit, epoch = self.time_units(nc, tinfo, "seconds since 1970-01-01")
        epoch = epoch if epoch is not None else np.datetime64("1970-01-01", "ns")
        time = lazy_raw(nc, tinfo, ch).map_blocks(
            _to_time, epoch=epoch, ns_per_unit=ns_per_unit, fill=tinfo.fill_value,
            dtype="datetime64[ns]", meta=np.empty((0,), dtype="datetime64[ns]"),
        )
        q = self.check_threshold(qa_threshold, 0.5)
        valid = da.isfinite(value) & da.isfinite(lat) & da.isfinite(lon) & not_nat(time)
        if q > 0:
            valid = valid & lazy_raw(nc, infos["xco2_quality_flag"], ch).map_blocks(
                flag_ok, threshold=q, dtype=bool, meta=np.empty((0,), dtype=bool)
            )
        data_vars = self.column_variables(SPECIES["xco2"], value, "xco2", unc, "xco2_uncertainty", dims)
        data_vars["valid"] = xr.DataArray(valid, dims=dims)
        if self.has_vertices:
            for name, src, units, axis in (("latitude_bounds", "vertex_latitude", "degrees_north", "latitude"),
                                           ("longitude_bounds", "vertex_longitude", "degrees_east", "longitude")):
                info = infos[src]
                data_vars[name] = xr.DataArray(
                    self.read_coordinate(nc, info, (*ch, info.shape[-1]), axis, corners=True),
                    dims=(*dims, CORNER_DIM),
                    attrs={"units": units, "source_variable": src, "corner_order": "vertices 1-4 as in the file"},
                )
        for name, (path, units) in LITE_EXTRAS.items():
            if nc.has(path):
                info = nc.variable(path)
                try:
                    self.check_variable(nc, info, kinds=NUMERIC, shape=(n,))
                except VariableLayoutError as exc:  # optional pass-through: leave it out, say why
                    warn(f"{exc}; {name} is left out", EOPipelineWarning)
                    continue
                arr = self.read_float(nc, info, ch) if info.dtype.kind == "f" else lazy_raw(nc, info, ch)
                attrs = {"source_variable": path} | ({"units": units} if units else {})
                data_vars[name] = xr.DataArray(arr, dims=dims, attrs=attrs)
        coords = {
            "latitude": (dims, lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": (dims, lon, {"units": "degrees_east", "standard_name": "longitude"}),
            "time": (dims, time, {"standard_name": "time"}),
            "sounding_id": (dims, lazy_raw(nc, infos["sounding_id"], ch), {"long_name": "sounding id"}),
        }
        ds = xr.Dataset(data_vars, coords=coords)
        start, end = self._coverage(nc, tinfo.path, col.shape[0], epoch, ns_per_unit, tinfo.fill_value)
        build = str(nc.attrs.get("BuildId", ""))
        if not build:
            m = re.search(r"_(B\d{4,6}\w*?)_", nc.name)
            build = m.group(1) if m else ""
        attrs = {
            "product": self.product,
            "platform": str(nc.attrs.get("Platform", self.platform)),
            "instrument": self._sensor(nc),
            "species": "CO2",
            "processor_version": build,
            "orbit": -1,
            "time_coverage_start": start,
            "time_coverage_end": end,
            "qa_threshold": q,
            "qa_rule": "xco2_quality_flag == 0" if q > 0 else "none (qa_threshold=0): fill values only",
            "column_variable": "xco2",
        }
        return self.finish(ds, nc, attrs)

    @staticmethod
    def _coverage(nc: NCFile, path: str, n: int, epoch: np.datetime64, ns: int, fill: Any) -> tuple[str, str]:
        """First and last sounding times (two scalar reads; Lite files are time-ordered)."""
        if n == 0:
            return "", ""
        ends = seconds_to_datetime64(nc.read_small(path, [0, n - 1]), epoch, ns, fill_value=fill)
        ends = ends[~np.isnat(ends)]
        if ends.size == 0:
            return "", ""
        return iso_utc(ends.min()), iso_utc(ends.max())


class OCO2LiteReader(_LiteReader):
    """OCO-2 L2 Lite FP (``oco2_LtCO2_*.nc4``)."""

    name = "oco2_lite"
    description = "OCO-2 L2 Lite CO2"
    file_patterns = ("oco2_LtCO2_*.nc4",)
    sensors = ("OCO-2",)
    platform = "OCO-2"
    has_vertices = True
    product = "OCO2_L2_Lite_FP"


class OCO3LiteReader(_LiteReader):
    """OCO-3 L2 Lite FP (``oco3_LtCO2_*.nc4``)."""

    name = "oco3_lite"
    description = "OCO-3 L2 Lite CO2"
    file_patterns = ("oco3_LtCO2_*.nc4",)
    sensors = ("OCO-3",)
    platform = "ISS"
    has_vertices = True
    product = "OCO3_L2_Lite_FP"


class ACOSLiteReader(_LiteReader):
    """GOSAT ACOS L2 Lite (``acos_LtCO2_*.nc4``): as OCO-2 but without vertices."""

    name = "acos_lite"
    description = "GOSAT ACOS L2 Lite CO2"
    file_patterns = ("acos_LtCO2_*.nc4",)
    sensors = ("TANSO-FTS", "GOSAT", "TANSO-FTS-2", "GOSAT-2")
    platform = "GOSAT"
    has_vertices = False
    product = "ACOS_L2_Lite_FP"
