# SPDX-License-Identifier: Apache-2.0
"""Writers without side effects: no global matplotlib state, temporaries with one naming
pattern, and one clear OutputError (and nothing left behind) on a full disk.

A full disk is simulated with a file size limit (``RLIMIT_FSIZE``) in a subprocess:
Python ignores SIGXFSZ, so writes beyond the limit fail with EFBIG, as they would with
ENOSPC on a full disk. (The tests run as root, so permissions cannot be used.)
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

from eo_pipeline.errors import OutputError
from eo_pipeline.grid import GridSpec
from eo_pipeline.io._atomic import (
    NO_SPACE,
    SIZE_LIMIT,
    remove_temporaries,
    temp_path,
    temporaries_of,
    write_failed,
)
from eo_pipeline.io.geotiff import write_cog
from eo_pipeline.io.netcdf import write_netcdf
from eo_pipeline.io.quicklook import quicklook
from eo_pipeline.regions import write_table

ROOT = Path(__file__).resolve().parents[1]

#: A map big enough for overviews and for files well beyond 100 kB (random values do not compress).
MAP_CODE = textwrap.dedent("""
    import numpy as np, xarray as xr, dask.array as da
    from eo_pipeline.grid import GridSpec
    g = GridSpec.from_bbox((0, 0, 24, 16), 0.02)
    v = da.random.default_rng(0).random(g.shape, chunks=512).astype("f4")
    ds = xr.Dataset({"v_mean": (("y", "x"), v, {"units": "1", "grid_mapping": "crs"})},
                    coords={**g.coords(), "crs": ((), np.int32(0), g.cf_grid_mapping())})
""")


def small_map(chunks: int | None = 64) -> xr.Dataset:
    g = GridSpec.from_bbox((0, 0, 3, 2), 0.02)
    v = np.random.default_rng(1).random(g.shape).astype("f4")
    ds = xr.Dataset({"v_mean": (("y", "x"), v, {"units": "1", "grid_mapping": "crs"})},
                    coords={**g.coords(), "crs": ((), np.int32(0), g.cf_grid_mapping())})
    return ds.chunk({"y": chunks, "x": chunks}) if chunks else ds


def run_python(code: str, *, env: dict[str, str] | None = None, fsize: int | None = None):
    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})}, preexec_fn=limit if fsize else None)


# ------------------------------------------------------------------------------ matplotlib
@pytest.mark.parametrize("backend", ["svg", None])
def test_quicklooks_in_threads_leave_the_backend_alone_and_never_import_pyplot(tmp_path, backend):
    code = MAP_CODE + textwrap.dedent(f"""
        import sys, matplotlib
        from concurrent.futures import ThreadPoolExecutor
        before = matplotlib.get_backend(auto_select=False)
        import eo_pipeline
        from eo_pipeline.io.quicklook import quicklook
        small = ds.isel(x=slice(0, 300), y=slice(0, 200))
        with ThreadPoolExecutor(4) as pool:
            paths = list(pool.map(lambda k: quicklook(small, "v_mean", f"{tmp_path}/q{{k}}.png"), range(6)))
        assert len(paths) == 6
        assert "matplotlib.pyplot" not in sys.modules, "eo_pipeline imported matplotlib.pyplot"
        after = matplotlib.get_backend(auto_select=False)
        assert after == before, (before, after)
        print("backend", after)
    """)
    env = {"MPLBACKEND": backend} if backend else {}
    if not backend:
        env["MPLBACKEND"] = ""
    proc = run_python(code, env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"q{k}.png" for k in range(6)]
    for k in range(6):
        assert (tmp_path / f"q{k}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if backend:
        assert proc.stdout.split()[-1] == backend


# ------------------------------------------------------------------------------ temporaries
def test_temporary_names_have_one_pattern():
    target = Path("/data/out/x.tif")
    assert temp_path(target, "l0") == Path("/data/out/.x.tif.l0.eo-tmp.tif")
    assert temp_path(target, "vrt", suffix=".vrt") == Path("/data/out/.x.tif.vrt.eo-tmp.vrt")
    assert temp_path(Path("m.nc"), "part") == Path(".m.nc.part.eo-tmp.nc")
    with pytest.raises(ValueError):
        temp_path(target, "a.b")


def test_temporaries_of_finds_its_own_and_no_others(tmp_path):
    target = tmp_path / "x.tif"
    mine = [temp_path(target, "l0"), temp_path(target, "vrt", suffix=".vrt"),
            tmp_path / ".x.tif.cog.eo-tmp.tif.ovr.tmp"]  # what GDAL may add to a temporary's name
    others = [temp_path(tmp_path / "x", "l0"), temp_path(tmp_path / "x.tif.tif", "l0"), tmp_path / ".x.tif.tmp",
              tmp_path / "x.tif"]
    for p in mine + others:
        p.write_bytes(b"")
    assert temporaries_of(target) == sorted(mine)
    assert remove_temporaries(target) == sorted(mine)
    assert sorted(tmp_path.iterdir()) == sorted(others)


def test_every_file_seen_while_writing_is_a_temporary_of_its_target(tmp_path):
    ds = small_map()
    targets = [tmp_path / "m.tif", tmp_path / "m.nc", tmp_path / "m.png"]
    seen: set[Path] = set()

    class Watch(Callback):
        def _posttask(self, key, result, dsk, state, id):  # noqa: A002 - dask's signature
            seen.update(tmp_path.iterdir())

    writes = [write_cog(ds, targets[0], compute=False), write_netcdf(ds, targets[1], compute=False),
              quicklook(ds, "v_mean", targets[2], compute=False)]
    assert list(tmp_path.iterdir()) == []  # nothing is created before the compute
    with Watch():
        dask.compute(*writes, scheduler="threads")
    temporaries = {p for p in seen if p not in targets}
    assert temporaries, "the writers made no temporary files?"
    owned = {p for t in targets for p in temporaries if p.name.startswith(f".{t.name}.") and ".eo-tmp" in p.name}
    assert owned == temporaries
    assert sorted(tmp_path.iterdir()) == sorted(targets)


def test_failure_messages_name_the_target_the_cause_and_the_fix(tmp_path):
    target = tmp_path / "x.nc"
    part = temp_path(target, "part")
    part.write_bytes(b"partial")
    err = write_failed(target, "NetCDF file", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(err, OutputError) and isinstance(err, OSError)
    text = str(err)
    assert text.startswith(f"{target}: cannot write the NetCDF file: {NO_SPACE}") and "free some space" in text
    assert not part.exists()
    err = write_failed(target, "GeoTIFF", RuntimeError("TIFFAppendToStrip: File too large"))
    assert SIZE_LIMIT in str(err) and "ulimit -f" in str(err)
    err = write_failed(target, "GeoTIFF", RuntimeError("something\nelse"))
    assert str(err) == f"{target}: cannot write the GeoTIFF (something else); check the output folder and its disk, " \
                       "then run again"


def test_table_writer_failure_is_one_output_error(tmp_path):
    import pandas as pd

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"not_a_folder/t.csv: cannot write the table"):
        write_table(pd.DataFrame({"a": [1]}), blocker / "t.csv")
    write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder", "t.csv"]


def test_hotspot_writer_uses_the_temporary_names_and_one_error(tmp_path):
    import geopandas as gpd

    from eo_pipeline.hotspots import write_hotspots

    empty = gpd.GeoDataFrame({"id": []}, geometry=gpd.GeoSeries([], crs="EPSG:4326"))
    assert write_hotspots(empty, tmp_path / "h") == [str(tmp_path / "h.geojson"), str(tmp_path / "h.csv")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv", "h.geojson"]
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"not_a_folder/h.geojson: cannot write the hotspot GeoJSON"):
        write_hotspots(empty, blocker / "h")


# ------------------------------------------------------------------------------ full disk
WRITE = {
    "cog": "from eo_pipeline.io.geotiff import write_cog as w; task = w(ds, target, compute={compute})",
    "netcdf": "from eo_pipeline.io.netcdf import write_netcdf as w; task = w(ds, target, compute={compute})",
    "quicklook": "from eo_pipeline.io.quicklook import quicklook as w; "
                 "task = w(ds, 'v_mean', target, max_pixels=4000, compute={compute})",
}
SUFFIX = {"cog": ".tif", "netcdf": ".nc", "quicklook": ".png"}


@pytest.mark.parametrize("writer", list(WRITE))
def test_a_full_disk_gives_one_output_error_and_leaves_nothing(tmp_path, writer):
    """Written now and as a Delayed run by ``dask.compute``, each into its own folder, in one subprocess."""
    targets = {compute: tmp_path / ("now" if compute else "delayed") / f"map{SUFFIX[writer]}"
               for compute in (True, False)}
    for target in targets.values():
        target.parent.mkdir()
    runs = "".join(textwrap.dedent(f"""
        target = {str(target)!r}
        try:
            {WRITE[writer].format(compute=compute)}
            if not {compute}:
                dask.compute(task)
            print("written", target)
        except OutputError as exc:
            print(f"OutputError: {{exc}}", file=sys.stderr)
            failed += 1
    """) for compute, target in targets.items())
    code = MAP_CODE + "import sys, dask\nfrom eo_pipeline.errors import OutputError\nfailed = 0\n" + runs + \
        "sys.exit(failed)\n"
    proc = run_python(code, fsize=100_000)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    # GDAL's own "File too large" notes from threads still running may interleave with the messages
    messages = re.findall(r"OutputError: (.*?then run again)", proc.stderr)
    assert len(messages) == 2, proc.stderr
    for message, target in zip(messages, targets.values(), strict=True):
        assert message.startswith(f"{target}: cannot write the ")
        assert f": {SIZE_LIMIT} (" in message and "ulimit -f unlimited" in message
    assert "Traceback" not in proc.stderr
    for target in targets.values():
        assert list(target.parent.iterdir()) == []


# ------------------------------------------------------------------ tasks rerun on a cluster


def _rerun_first_task_after(writer_prefix: str, rerun_prefix: str):
    """Callback: after the first ``writer_prefix`` task finishes, run the ``rerun_prefix`` task once more.

    This is what a cluster does when the worker holding a finished task's result dies
    while later tasks still need it: the task runs again, after other tasks have used
    its first result.
    """
    state_: dict[str, Any] = {"done": False, "first": None}

    def prefix(key: Any) -> str:
        return str(key[0] if isinstance(key, tuple) else key)

    class Rerun(Callback):
        def _pretask(self, key, dsk, state):
            if state_["first"] is None and prefix(key).startswith(rerun_prefix):
                task = dsk[key]  # the first such task, with the values it is given
                state_["first"] = (task, {d: state["cache"][d] for d in task.dependencies})

        def _posttask(self, key, result, dsk, state, id):  # noqa: A002 - dask's signature
            if state_["done"] or not prefix(key).startswith(writer_prefix):
                return
            state_["done"] = True
            task, values = state_["first"]
            task(values)

    return Rerun(), state_


@pytest.mark.parametrize("kind", ["geotiff", "netcdf"])
def test_writer_tasks_can_run_again_on_a_cluster(tmp_path, monkeypatch, kind):
    """A first task rerun after blocks were written, and the writer's tasks rerun after it finished: same file.

    The GeoTIFF writer's first tasks are its block tasks (each writes files of its own):
    one runs again after another finished; the NetCDF writer's is the file's creation.
    """
    import eo_pipeline.io._atomic as atomic

    ds = small_map(chunks=32)
    write, create = (write_cog, "_write_block") if kind == "geotiff" else (write_netcdf, "_create")
    suffix = ".tif" if kind == "geotiff" else ".nc"
    reference = tmp_path / f"reference{suffix}"
    write(ds, reference)
    monkeypatch.setattr(atomic, "on_cluster_worker", lambda: True)  # as in a task on a distributed worker
    target = tmp_path / f"m{suffix}"
    rerun, seen = _rerun_first_task_after("_write_block", create)
    with rerun:
        dask.compute(write(ds, target, compute=False), scheduler="synchronous")
    assert seen["done"]
    _same_file_content(reference, target, kind)
    # the first and the last task again after the output is done (their results were lost with a
    # worker, and the client still needs the last one's): the file must not change
    target2 = tmp_path / f"again{suffix}"
    w = write(ds, target2, compute=False)
    dask.compute(w, scheduler="synchronous")
    before = target2.read_bytes()
    graph = dict(w.__dask_graph__())
    for prefix in (create, "_finish"):
        key = [k for k in graph if str(k[0] if isinstance(k, tuple) else k).startswith(prefix)][0]
        graph[key]({d: (np.zeros((32, 32), np.float32) if prefix == "_write_block" else None)
                    for d in graph[key].dependencies})
    assert target2.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted(
        atomic.done_marker(t).name for t in (target, target2))  # the job's clean-up removes these


def _same_file_content(a: Path, b: Path, kind: str) -> None:
    if kind == "geotiff":
        import rasterio

        with rasterio.open(a) as ra, rasterio.open(b) as rb:
            assert (ra.transform, ra.crs, ra.tags(), ra.overviews(1)) == (rb.transform, rb.crs, rb.tags(), rb.overviews(1))
            np.testing.assert_array_equal(ra.read(), rb.read())
            for k in range(len(ra.overviews(1))):
                with rasterio.open(a, overview_level=k) as oa, rasterio.open(b, overview_level=k) as ob:
                    np.testing.assert_array_equal(oa.read(), ob.read())
    else:
        with xr.open_dataset(a) as xa, xr.open_dataset(b) as xb:
            xr.testing.assert_identical(xa.drop_attrs(deep=False), xb.drop_attrs(deep=False))


# ------------------------------------------------------------------------------ several processes, one file


@pytest.mark.parametrize("kind", ["geotiff", "netcdf"])
def test_block_writes_from_several_processes_lose_nothing(tmp_path, kind):
    """dask's multiprocessing scheduler writes the blocks of one output from several processes at once.

    Two processes writing into one TIFF (or HDF5) file at the same time lose blocks without
    any error (seen as NaN holes in a run's maps): the writers hold a lock file too.
    """
    ds = small_map(chunks=16)  # 7 x 10 blocks, all in the same 512-tile
    write = write_cog if kind == "geotiff" else write_netcdf
    suffix = ".tif" if kind == "geotiff" else ".nc"
    reference = tmp_path / f"reference{suffix}"
    write(ds, reference)
    for k in range(3):
        target = tmp_path / f"m{k}{suffix}"
        dask.compute(write(ds, target, compute=False), scheduler="processes", num_workers=2)
        _same_file_content(reference, target, kind)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # the lock files went too


def test_write_lock_excludes_other_processes(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        from eo_pipeline.io._atomic import write_lock
        for _ in range(20):
            with write_lock({str(tmp_path / 'x.tif')!r}):
                t0 = time.monotonic_ns()
                time.sleep(0.005)
                print(t0, time.monotonic_ns(), flush=True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(2)]
    spans = sorted(tuple(map(int, line.split())) for p in procs for line in p.communicate(timeout=120)[0].split("\n")
                   if line)
    assert len(spans) == 40
    assert all(a[1] <= b[0] for a, b in zip(spans[:-1], spans[1:], strict=True))  # never two at once
