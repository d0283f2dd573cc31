"""New arrays of one value whose untouched memory costs nothing: the empty cells of a map.

A global map from one orbit holds data in a few percent of its cells; the rest hold the
statistic's empty value (0 or NaN). Filling a 0.05 degree global float32 map (104 MB)
writes every page of it, and on a virtual machine the page faults of fresh memory cost
more than the gridding itself. Here:

- zero-filled arrays come from ``np.zeros``: the C library maps fresh zero pages, which
  the kernel provides on first touch;
- arrays of any other value (NaN) of at least :data:`MIN_TEMPLATE_BYTES` are private
  copy-on-write mappings of an in-memory file (``memfd``) that holds the value once:
  reading an untouched page maps the shared template page, writing it copies that one
  page. The template is made once per value and size and kept while it is at most
  :data:`KEEP_FRACTION` of the machine's memory.

Both are ordinary writable ``numpy.ndarray`` objects with the value in every cell. On
systems without ``os.memfd_create`` (not Linux) the arrays come from ``np.full``.
"""

from __future__ import annotations

import mmap
import os
import threading
from math import prod

import numpy as np

#: Arrays smaller than this (bytes) are made with ``np.full``: the mapping is not worth it.
MIN_TEMPLATE_BYTES = 32 * 2**20

#: Templates up to this fraction of physical memory are kept for the next array.
KEEP_FRACTION = 1 / 8

_lock = threading.Lock()
_templates: dict[tuple[str, bytes], tuple[int, int]] = {}  # (dtype, value bytes) -> (fd, size)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _template(dtype: np.dtype, value: np.generic, nbytes: int) -> int:
    """File descriptor of a memfd of at least ``nbytes`` bytes holding ``value`` in every element."""
    key = (dtype.str, value.tobytes())
    with _lock:
        fd, size = _templates.get(key, (-1, 0))
        if size >= nbytes:
            return os.dup(fd)
        fd_new = os.memfd_create(f"eo_pipeline-fill-{dtype.str}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd_new, nbytes)
            with mmap.mmap(fd_new, nbytes) as m:
                np.frombuffer(m, dtype).fill(value)
        except BaseException:
            os.close(fd_new)
            raise
        if fd >= 0:
            os.close(fd)
            del _templates[key]
        if nbytes <= KEEP_FRACTION * _physical_memory():
            _templates[key] = (fd_new, nbytes)
            return os.dup(fd_new)
        return fd_new


def release() -> None:
    """Close the kept templates (arrays already made keep their own mapping)."""
    with _lock:
        for fd, _ in _templates.values():
            os.close(fd)
        _templates.clear()


def filled(shape: tuple[int, ...], dtype: np.dtype | type | str, value: float) -> np.ndarray:
    """A new writable C-contiguous array of ``shape`` and ``dtype`` holding ``value`` in every element.

    Equal to ``np.full(shape, value, dtype)``, but pages that are never written cost
    neither filling nor fresh memory (see the module's docstring).
    """
    dtype = np.dtype(dtype)
    v = dtype.type(value)
    if not v.tobytes().strip(b"\0"):
        return np.zeros(shape, dtype)
    n = prod(shape)
    nbytes = n * dtype.itemsize
    if nbytes < MIN_TEMPLATE_BYTES or not hasattr(os, "memfd_create") or dtype.hasobject:
        return np.full(shape, v, dtype)
    fd = _template(dtype, v, nbytes)
    try:
        m = mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)  # the mapping keeps the file alive
    return np.frombuffer(m, dtype, count=n).reshape(shape)
