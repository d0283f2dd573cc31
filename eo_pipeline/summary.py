# SPDX-License-Identifier: Apache-2.0
"""Summary statistics of a canonical sounding dataset (what ``eo-pipeline info`` prints)."""

from __future__ import annotations

import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .errors import QualityWarning, warn
from .readers.base import iso_utc
from .schema import species_of

__all__ = ["summarize"]


def _minmax(a: da.Array, mask: da.Array) -> tuple[da.Array, da.Array]:
    sel = da.where(mask, a, np.nan)
    return da.nanmin(sel), da.nanmax(sel)


def summarize(ds: xr.Dataset) -> dict[str, Any]:
    """Compute counts, mean, value range, time span and bounding box in one pass.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical soundings from :func:`eo_pipeline.open_product`.

    Returns
    -------
    dict
        ``product``, ``reader``, ``species``, ``variable``, ``units``, ``n_total``
        (all soundings), ``n_valid`` (after fill values and QA), ``mean``, ``min``,
        ``max`` (of the valid values, in ``units``; None if no sounding is valid),
        ``time_start``/``time_end`` (ISO 8601 UTC of the valid soundings) and
        ``bbox`` ([west, south, east, north] in degrees of the valid sounding
        centres, None if none is valid), plus ``qa_threshold`` and ``qa_rule``.
        A dataset with no valid sounding gives a :class:`QualityWarning`.
    """
    info = species_of(ds)
    valid = ds["valid"].data
    value = ds[info.name].data
    n_valid = valid.sum()
    vsum = da.where(valid, value.astype(np.float64), 0.0).sum()
    vmin, vmax = _minmax(value.astype(np.float64), valid)
    lat_min, lat_max = _minmax(ds["latitude"].data.astype(np.float64), valid)
    lon_min, lon_max = _minmax(ds["longitude"].data.astype(np.float64), valid)
    t = ds["time"].data.astype("datetime64[ns]").astype(np.int64)
    nat = np.iinfo(np.int64).min
    t_min = da.where(valid, t, np.iinfo(np.int64).max).min()
    t_max = da.where(valid, t, nat).max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices when nothing is valid
        (n_valid, vsum, vmin, vmax, lat_min, lat_max, lon_min, lon_max, t_min, t_max) = dask.compute(
            n_valid, vsum, vmin, vmax, lat_min, lat_max, lon_min, lon_max, t_min, t_max
        )
    n_valid = int(n_valid)
    out: dict[str, Any] = {
        "file": ds.attrs.get("source_file", ""),
        "product": ds.attrs.get("product", ""),
        "reader": ds.attrs.get("reader", ""),
        "platform": ds.attrs.get("platform", ""),
        "instrument": ds.attrs.get("instrument", ""),
        "processor_version": ds.attrs.get("processor_version", ""),
        "orbit": ds.attrs.get("orbit", -1),
        "species": info.species,
        "variable": info.name,
        "units": info.units,
        "qa_threshold": ds.attrs.get("qa_threshold"),
        "qa_rule": ds.attrs.get("qa_rule", ""),
        "n_total": int(np.prod(ds[info.name].shape)),
        "n_valid": n_valid,
        "mean": None,
        "min": None,
        "max": None,
        "time_start": None,
        "time_end": None,
        "bbox": None,
        "time_coverage_start": ds.attrs.get("time_coverage_start", ""),
        "time_coverage_end": ds.attrs.get("time_coverage_end", ""),
    }
    if n_valid == 0:
        warn(
            f"{out['file']}: no sounding passes the fill-value and quality checks "
            f"({out['qa_rule']}); the result is empty",
            QualityWarning,
        )
        return out
    out.update(
        mean=float(vsum) / n_valid,
        min=float(vmin),
        max=float(vmax),
        time_start=iso_utc(np.datetime64(int(t_min), "ns")),
        time_end=iso_utc(np.datetime64(int(t_max), "ns")),
        bbox=[float(lon_min), float(lat_min), float(lon_max), float(lat_max)],
    )
    return out
