# SPDX-License-Identifier: Apache-2.0
"""Peak memory of a many-day composite written to COGs, run in a fresh process (for test_scale.py).

    python membound.py DAYS OUT_DIR [SYS_PATH]

With ``EO_MEMBOUND_METHOD=srf`` in the environment the days are oversampled (method
``srf``, each sounding a 1 km field of view) instead of point-binned.

Each day is one lazily generated product whose soundings fill a 1024 x 1024 lon/lat
grid (about 1.3 million point soundings, in chunks), so that a day's partial sums and
maps weigh tens of MB. The composite's daily maps are written as COGs with one
``dask.compute``, as a job does. Prints the peak resident memory in MB.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

if len(sys.argv) > 3:
    sys.path.insert(0, sys.argv[3])

import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

N_PER_DAY = 1_300_000
CHUNK = 260_000
BBOX = (100.0, 20.0, 110.24, 30.24)  # 1024 x 1024 cells of 0.01 degree


def _gen(block_id=None, *, day: int, what: str) -> np.ndarray:
    k = block_id[0]
    rng = np.random.default_rng(1000 * day + k)
    lon = rng.uniform(BBOX[0], BBOX[2], CHUNK)
    lat = rng.uniform(BBOX[1], BBOX[3], CHUNK)
    if what == "lon":
        return lon
    if what == "lat":
        return lat
    if what == "x":
        return (1900 + 10 * np.sin(lon) + rng.normal(0, 5, CHUNK)).astype("f4")
    if what == "u":
        return np.full(CHUNK, 8.0, "f4")
    if what == "valid":
        return np.ones(CHUNK, bool)
    return np.full(CHUNK, np.datetime64("2023-07-01T06:00", "ns") + np.timedelta64(day, "D"))


def day_product(day: int) -> xr.Dataset:
    chunks = ((CHUNK,) * (N_PER_DAY // CHUNK),)
    dims = ("sounding",)

    def arr(what: str, dtype: object) -> da.Array:
        return da.map_blocks(_gen, day=day, what=what, chunks=chunks, dtype=dtype,
                             meta=np.empty((0,), dtype), name=f"membound-{what}-{day}")

    t0 = np.datetime64("2023-07-01T05:00") + np.timedelta64(day, "D")
    return xr.Dataset(
        {"xch4": (dims, arr("x", np.float32), {"units": "ppb"}),
         "xch4_uncertainty": (dims, arr("u", np.float32), {"units": "ppb"}),
         "valid": (dims, arr("valid", bool))},
        coords={"longitude": (dims, arr("lon", np.float64)), "latitude": (dims, arr("lat", np.float64)),
                "time": (dims, arr("time", "datetime64[ns]"))},
        attrs={"source_file": f"synthetic-day-{day}", "time_coverage_start": f"{t0}Z",
               "time_coverage_end": f"{t0 + np.timedelta64(2, 'h')}Z", "synthetic": "yes"})


def main() -> None:
    days, out = int(sys.argv[1]), Path(sys.argv[2])
    import eo_pipeline as eo
    from eo_pipeline.pipeline import compute_outputs, write_level3

    grid = eo.GridSpec.from_bbox(BBOX, 0.01)
    method = os.environ.get("EO_MEMBOUND_METHOD", "point")
    extra = {"fov_diameter_km": 1.0} if method == "srf" else {}
    l3 = eo.composite([day_product(d) for d in range(days)], grid, period="day", method=method, **extra)
    tasks, outputs = write_level3(l3, out, "xch4", ("geotiff",))
    compute_outputs(tasks, "threads")
    assert len(outputs) == days and all(Path(o).exists() for o in outputs)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


if __name__ == "__main__":
    main()
