# SPDX-License-Identifier: Apache-2.0
"""Temporary names of the writers, and one clear error when writing fails.

Every writer writes each output under hidden temporary names next to it and renames
the finished file into place, so a final name never holds a partial file. All those
names have one pattern, ``.{target.name}.{tag}.eo-tmp{suffix}`` (the suffix keeps the
extension GDAL or netCDF want, such as ``.tif``, ``.vrt`` or ``.nc``), so that
:func:`temporaries_of` finds everything an output may leave behind (even files the
libraries add to a temporary's name, like GDAL's ``.ovr.tmp``), and
:func:`remove_temporaries` cleans up after a failed or killed run.

When a write fails, :func:`write_failed` names the target, says why (no space left
on device, file size limit exceeded, or the library's message) and what to do, and
removes the output's temporaries.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import OutputError

__all__ = ["TEMP_MARK", "temp_path", "temporaries_of", "remove_temporaries", "done_marker", "mark_done", "private_name",
           "create_atomically", "remove_parts", "unlink_all", "compute_writer", "cluster_lock", "write_lock",
           "write_failed", "beyond_size_limit", "NO_SPACE", "SIZE_LIMIT"]

#: Marker in every temporary name (``.{name}.{tag}.eo-tmp{suffix}``).
TEMP_MARK = ".eo-tmp"
NO_SPACE = "no space left on device"
SIZE_LIMIT = "file size limit exceeded"
_TAG = re.compile(r"[A-Za-z0-9_-]+")
#: Free space (bytes) below which a failed write is put down to a full disk.
_NEARLY_FULL = 2**20


def temp_path(target: str | Path, tag: str, *, suffix: str | None = None) -> Path:
    """Hidden temporary name for one part of ``target``, in the target's folder.

    Parameters
    ----------
    target : path
        The final output file.
    tag : str
        Which part (letters, digits, ``_`` and ``-``), e.g. ``"l0"``, ``"vrt"``, ``"part"``.
    suffix : str, optional
        Extension of the temporary, for libraries that choose a format by it
        (default: the target's, e.g. ``.tif``).

    Returns
    -------
    pathlib.Path
        ``<folder>/.{target.name}.{tag}.eo-tmp{suffix}``.
    """
    target = Path(target)
    if not _TAG.fullmatch(tag):
        raise ValueError(f"temporary tag must be letters, digits, '_' or '-', got {tag!r}")
    suffix = target.suffix if suffix is None else suffix
    return target.with_name(f".{target.name}.{tag}{TEMP_MARK}{suffix}")


def temporaries_of(target: str | Path) -> list[Path]:
    """Every temporary file of ``target`` that exists now (sorted), whoever made it.

    Matches :func:`temp_path` names with any tag and anything after the marker, and
    only those: ``.x.tif.l0.eo-tmp.tif`` belongs to ``x.tif``, not to ``x``.
    """
    target = Path(target)
    prefix = f".{target.name}."
    name = re.compile(re.escape(prefix) + _TAG.pattern + re.escape(TEMP_MARK) + ".*", re.DOTALL)
    try:
        candidates = list(target.parent.iterdir())
    except OSError:
        return []
    return sorted(p for p in candidates if p.name.startswith(prefix) and name.fullmatch(p.name))


def unlink_all(paths: Iterable[Path]) -> list[Path]:
    """Delete the files ``paths``; returns those removed (one already gone is skipped: a task may race us)."""
    removed = []
    for p in paths:
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def remove_temporaries(target: str | Path) -> list[Path]:
    """Delete the temporaries of ``target`` (see :func:`temporaries_of`); returns those removed."""
    return unlink_all(temporaries_of(target))


def compute_writer(task: Any, target: str | Path) -> Any:
    """Compute a writer's Delayed now; its temporaries go afterwards, whether it failed or not.

    After a success only done markers can be left (see :func:`done_marker`); after a
    failure, the parts of the output.
    """
    try:
        return task.compute()
    finally:
        remove_temporaries(target)


def done_marker(target: str | Path) -> Path:
    """Marker ``.{name}.done.eo-tmp`` of an output whose parts are complete (its last task ran).

    Writers' tasks may run twice on a cluster (the scheduler reruns the tasks of a lost
    worker, even finished ones whose results it held). The last task of a writer
    creates this marker once the final file is complete and before moving it into
    place; the writer's tasks check it, so a rerun never recreates, rewrites or
    replaces an output that is already done. Like every temporary it is removed at the
    end of the run (and by the next run's clean-up).
    """
    return temp_path(target, "done", suffix="")


def on_cluster_worker() -> bool:
    """Whether this code runs in a task on a ``distributed`` worker (where tasks may be rerun)."""
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def cluster_lock(path: str | Path) -> Any:
    """A cluster-wide ``distributed.Lock`` for writes to ``path`` when a distributed client is active, else None.

    None means :func:`write_lock` serialises the writes itself, within this process and
    across the processes of this machine (dask's multiprocessing scheduler).
    """
    if "distributed" not in sys.modules:  # no client can be active: don't pay for importing it
        return None
    try:
        from distributed import Lock, get_client

        get_client()
        return Lock(f"eo-pipeline-write-{path}")
    except (ImportError, ValueError):
        return None


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _thread_lock(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


@contextlib.contextmanager
def write_lock(target: str | Path, lock: Any = None, part: str | Path | None = None) -> Iterator[None]:
    """Hold the lock that serialises writes into the temporaries of ``target``.

    ``lock`` (a ``distributed.Lock`` from :func:`cluster_lock`) is used when given.
    Otherwise the writes of this process's threads are serialised by a lock per
    output, and those of other processes on this machine (dask's multiprocessing
    scheduler runs the block writes of one file in several processes at once) by an
    operating-system lock on the hidden file ``.{name}.lock.eo-tmp`` next to the
    output (``filelock``: ``flock`` on POSIX, ``LockFileEx`` on Windows). Writing a
    TIFF or HDF5 file from two processes at once loses blocks without an error, so
    both locks are always taken. The lock file goes with the output's other
    temporaries when the output is finished (:func:`remove_parts`); when the output
    failed (its temporary ``part`` is gone), each writer that finds it so removes the
    lock file before letting go of it, so none is left behind.
    """
    if lock is not None:
        with lock:
            yield
        return
    from filelock import FileLock

    key = str(Path(target))
    lock_file = temp_path(key, "lock", suffix="")
    with _thread_lock(key), FileLock(str(lock_file)):
        try:
            yield
        finally:
            if part is not None and not os.path.exists(part):
                unlink_all([lock_file])


def mark_done(target: str | Path) -> None:
    """Create the :func:`done_marker` of ``target``, on cluster workers only.

    dask's local schedulers never rerun a finished task (a failure ends the compute), so
    there the marker is not needed and nothing is left in the folder; on a cluster the
    marker stays until the job's clean-up (``eo-pipeline run`` and ``grid`` remove it).
    """
    if on_cluster_worker():
        done_marker(target).touch()


def private_name(path: str | Path) -> Path:
    """A name beside ``path`` that is this process's and thread's own, to make ``path`` under.

    On a cluster the same task may run twice at once (a lost worker's tasks are rerun
    while the first copy may still be writing): each copy makes its file under its own
    name and moves it into place, so neither reads or leaves a half-made file.
    """
    path = Path(path)
    return path.with_name(f"{path.name}.new{os.getpid()}-{threading.get_ident()}")


def create_atomically(path: str | Path, create: Any) -> None:
    """Run ``create(tmp)`` to make a file under its :func:`private_name`, then move it to ``path``.

    A task killed while creating leaves no half-made file under ``path``, so a rerun
    that finds ``path`` can trust it.
    """
    path = Path(path)
    part = private_name(path)
    try:
        create(part)
        os.replace(part, path)
    finally:
        if part.exists():
            part.unlink()


def remove_parts(target: str | Path) -> list[Path]:
    """Delete the temporaries of ``target`` except its :func:`done_marker`."""
    keep = done_marker(target)
    return unlink_all(p for p in temporaries_of(target) if p != keep)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def beyond_size_limit(nbytes: int) -> bool:
    """Whether a file of ``nbytes`` bytes would reach this process's file size limit (``ulimit -f``).

    For writers whose library hides the operating system's error: a part that failed
    while it was to grow that large is put down to the limit even when its file is
    already gone (another task's failure removed the output's temporaries).
    """
    limit = _file_size_limit()
    return limit is not None and nbytes >= limit - min(_NEARLY_FULL, limit // 4)


def _cause(exc: BaseException, target: Path) -> str | None:
    """Why a write failed: NO_SPACE, SIZE_LIMIT or None (unknown).

    Libraries often hide the operating system's error (GDAL says "Write failed", HDF5
    "HDF error"), so besides errno and the messages, the file size limit and the free
    space are checked; call this before the temporaries are removed.
    """
    for e in _chain(exc):
        code = e.errno if isinstance(e, OSError) else None
        text = str(e).lower()
        if code in (errno.ENOSPC, errno.EDQUOT) or "no space left" in text or "disk full" in text \
                or "free disk space" in text:
            return NO_SPACE
        if code == errno.EFBIG or "file too large" in text or "file size limit" in text:
            return SIZE_LIMIT
    limit = _file_size_limit()
    if limit is not None:
        sizes = [p.stat().st_size for p in [*temporaries_of(target), target] if p.is_file()]
        if sizes and max(sizes) >= limit - min(_NEARLY_FULL, limit // 4):
            return SIZE_LIMIT
    try:
        if shutil.disk_usage(target.parent).free < _NEARLY_FULL:
            return NO_SPACE
    except OSError:
        pass
    return None


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} bytes"  # pragma: no cover


def _message(target: Path, what: str, exc: BaseException, cause: str | None) -> str:
    if cause == NO_SPACE:
        try:
            free = f" ({_size(shutil.disk_usage(target.parent).free)} free in {target.parent})"
        except OSError:
            free = ""
        return (f"{target}: cannot write the {what}: {NO_SPACE}{free}; free some space there or write the "
                "outputs to a folder on another disk, then run again")
    if cause == SIZE_LIMIT:
        limit = _file_size_limit()
        said = f" (this process may write files of at most {_size(limit)}, see 'ulimit -f')" if limit else ""
        return (f"{target}: cannot write the {what}: {SIZE_LIMIT}{said}; raise the limit ('ulimit -f unlimited') "
                "or write smaller outputs (a smaller or coarser grid, fewer variables), then run again")
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return f"{target}: cannot write the {what} ({reason}); check the output folder and its disk, then run again"


def write_failed(target: str | Path, what: str, exc: BaseException) -> OutputError:
    """The :class:`OutputError` for a failed write of ``target``; removes its temporaries.

    Parameters
    ----------
    target : path
        The final output file.
    what : str
        What was being written, for the message (``"GeoTIFF"``, ``"NetCDF file"``...).
    exc : BaseException
        The library's error. An :class:`OutputError` is returned as it is.

    Returns
    -------
    OutputError
        One line: the target, the cause (``no space left on device``, ``file size limit
        exceeded`` or the library's message) and the fix. Raise it ``from exc``.
    """
    target = Path(target)
    if isinstance(exc, OutputError):
        remove_temporaries(target)
        return exc
    message = _message(target, what, exc, _cause(exc, target))
    remove_temporaries(target)
    return OutputError(message)
