# SPDX-License-Identifier: Apache-2.0
"""ESA Climate Change Initiative GHG Level-2 reader (``ESACCI-GHG-L2-{CH4,CO2}-*.nc``).

Layout (GHG-CCI CRDP L2 format): one dimension ``n`` (soundings), profile
dimension ``m``; variables ``xch4`` or ``xco2`` (units ``1e-9`` / ``1e-6``),
``<species>_uncertainty``, ``<species>_quality_flag`` (0 = good), ``time`` (seconds
since 1970-01-01), ``latitude``, ``longitude``. Global attributes carry
``platform``, ``sensor``, ``product_version`` and ``time_coverage_start/end``.
Float variables hold -9999.99 where undefined without declaring it in a
``_FillValue`` attribute (seen in the GOSAT OCPR v7.2 files); it is masked as fill.
"""

from __future__ import annotations

from dataclasses import replace

import dask.array as da
import numpy as np
import xarray as xr

from ..schema import SOUNDING_DIM, SPECIES
from ._netcdf import NCFile, VarInfo, lazy_raw
from .base import Reader, iso_utc, not_nat
from .oco_lite import _to_time, flag_ok

__all__ = ["ESACCIGHGReader"]

#: Fill value the CCI GHG L2 files write without declaring it in an attribute.
CCI_UNDECLARED_FILL = -9999.99


class ESACCIGHGReader(Reader):
    """ESA CCI GHG L2 XCH4/XCO2 (GOSAT, OCO-2, ... retrievals in the CCI format)."""

    name = "esacci_ghg_l2"
    description = "ESA CCI GHG L2"
    file_patterns = ("ESACCI-GHG-L2-CH4-*.nc", "ESACCI-GHG-L2-CO2-*.nc")
    default_chunk = 262144

    @staticmethod
    def _species(nc: NCFile) -> str | None:
        for name in ("xch4", "xco2"):
            if nc.has(name) and nc.has(f"{name}_quality_flag"):
                return name
        return None

    @staticmethod
    def _with_fill(info: VarInfo) -> VarInfo:
        """Declare the CCI's undeclared float fill value -9999.99 where no attribute gives one."""
        if info.dtype.kind != "f" or info.fill_value is not None:
            return info
        return replace(info, attrs={**info.attrs, "_FillValue": info.dtype.type(CCI_UNDECLARED_FILL)})

    def guess_can_open(self, nc: NCFile) -> bool:
        """Dimension ``n``, a CCI column with its quality flag, and CCI provenance attributes."""
        if "n" not in nc.dimensions() or self._species(nc) is None:
            return False
        project = str(nc.attrs.get("project", ""))
        ident = str(nc.attrs.get("id", ""))
        return "Climate Change Initiative" in project or ident.startswith("ESACCI-GHG")

    def open(
        self,
        nc: NCFile,
        *,
        qa_threshold: float | None = None,
        chunks: int | None = None,
    ) -> xr.Dataset:
        """Open a CCI GHG L2 file as the canonical schema (``xch4`` ppb or ``xco2`` ppm).

        Parameters
        ----------
        nc : NCFile
            The file.
        qa_threshold : float, optional
            Threshold on the common 0..1 quality scale, where ``<species>_quality_flag
            == 0`` (good) scores 1 and any other value 0; default 0.5 keeps the good
            soundings only; 0 disables the quality filter.
        chunks : int, optional
            Soundings per dask chunk.
        """
        name = self._species(nc) or "xch4"  # a forced reader on a file without a CCI column: name it
        info_s = SPECIES[name]
        required = [name, f"{name}_uncertainty", f"{name}_quality_flag", "time", "latitude", "longitude"]
        infos = self.require(nc, required)
        n = self.check_variable(nc, infos[name], shape=(None,)).shape[0]
        for p in required:
            self.check_variable(nc, infos[p], shape=(n,))
        col = infos[name]
        ch = (self.chunk_length(col, 0, chunks, self.default_chunk),)
        dims = (SOUNDING_DIM,)
        infos = {k: self._with_fill(v) for k, v in infos.items()}
        col = infos[name]
        value = self.read_converted(nc, col, info_s.units, ch)
        unc = self.read_converted(nc, infos[f"{name}_uncertainty"], info_s.units, ch)
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
            valid = valid & lazy_raw(nc, infos[f"{name}_quality_flag"], ch).map_blocks(
                flag_ok, threshold=q, dtype=bool, meta=np.empty((0,), dtype=bool)
            )
        data_vars = self.column_variables(info_s, value, name, unc, f"{name}_uncertainty", dims)
        data_vars["valid"] = xr.DataArray(valid, dims=dims)
        ds = xr.Dataset(data_vars, coords={
            "latitude": (dims, lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": (dims, lon, {"units": "degrees_east", "standard_name": "longitude"}),
            "time": (dims, time, {"standard_name": "time"}),
        })
        g = nc.attrs
        ident = str(g.get("id", nc.name))
        attrs = {
            "product": ident.rsplit("-", 2)[0] if ident.startswith("ESACCI") else "ESACCI-GHG-L2",
            "platform": str(g.get("platform", "")),
            "instrument": str(g.get("sensor", "")),
            "species": info_s.species,
            "processor_version": str(g.get("product_version", "")),
            "orbit": -1,
            "time_coverage_start": iso_utc(g.get("time_coverage_start")),
            "time_coverage_end": iso_utc(g.get("time_coverage_end")),
            "qa_threshold": q,
            "qa_rule": f"{name}_quality_flag == 0" if q > 0 else "none (qa_threshold=0): fill values only",
            "column_variable": name,
        }
        return self.finish(ds, nc, attrs)
