# SPDX-License-Identifier: Apache-2.0
"""Reading the real whole S5P CH4 orbit into the canonical schema vs plain netCDF4 and h5py.

Target (issue 2): eo_pipeline's open + compute <= 1.3 x netCDF4 reading the same variables.
"""

from __future__ import annotations

import warnings
from typing import Any

import h5py
import netCDF4

from common import WHOLE_ORBIT, interleaved

VARS = ("latitude", "longitude", "methane_mixing_ratio", "delta_time", "time")


def netcdf4_read() -> list[Any]:
    with netCDF4.Dataset(WHOLE_ORBIT) as d:
        g = d["PRODUCT"]
        return [g[v][:] for v in VARS]  # masked arrays, fill values masked (netCDF4's default)


def h5py_read() -> list[Any]:
    with h5py.File(WHOLE_ORBIT, "r") as f:
        return [f["PRODUCT"][v][...] for v in VARS]  # raw, no decoding


def eo_pipeline_read() -> Any:
    import eo_pipeline as eo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = eo.open_product(WHOLE_ORBIT)
    return ds.compute()


def run(repeats: int = 9) -> dict[str, Any]:
    if not WHOLE_ORBIT.exists():
        return {"skipped": f"{WHOLE_ORBIT} not found"}
    t = interleaved({"netCDF4": netcdf4_read, "h5py": h5py_read, "eo_pipeline": eo_pipeline_read}, repeats)
    ratio = t["eo_pipeline"]["median"] / t["netCDF4"]["median"]
    return {"timings": t, "ratio_vs_netCDF4": ratio, "target": 1.3, "ok": ratio <= 1.3}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
