"""New arrays of one value whose untouched memory costs nothing: the empty cells of a map.

A global map from one orbit holds data in a few percent of its cells; the rest hold the
statistic's empty value (0 or NaN). Filling a 0.05 degree global float32 map (104 MB)
writes every page of it, and on a virtual machine the page faults of fresh memory cost
more than the gridding itself. Here:

- zero-filled arrays of at least :data:`MIN_TEMPLATE_BYTES` are fresh anonymous
  mappings, whose zero pages the kernel provides on first touch. ``np.zeros`` does the
  same but advises huge pages for large arrays, and a scattered write then zeroes 2 MB
  for each 4 kB touched, with stalls of 0.05-0.15 s while the kernel compacts memory;
- arrays of any other value (NaN) of at least :data:`MIN_TEMPLATE_BYTES` are private
  copy-on-write mappings of an in-memory file (``memfd``) that holds the value once:
  reading an untouched page maps the shared template page, writing it copies that one
  page. A template is made once per value and size, shared by the arrays made from it,
  and kept for the next ones while it is at most :data:`KEEP_FRACTION` of the
  machine's memory.

Both are ordinary writable ``numpy.ndarray`` objects with the value in every cell. On
systems without ``os.memfd_create`` (not Linux) the arrays come from ``np.full``.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from dataclasses import dataclass
from math import prod

import numpy as np

#: Arrays smaller than this (bytes) are made with ``np.full``: the mapping is not worth it.
MIN_TEMPLATE_BYTES = 32 * 2**20

#: Templates up to this fraction of physical memory are kept for the next array.
KEEP_FRACTION = 1 / 8

# reentrant: a mapping's finalizer (_unmapped) may run from the garbage collector while
# this thread holds the lock in _mapped
_lock = threading.RLock()


@dataclass
class _Template:
    """A memfd holding one value in every element: its descriptor, size, and the mappings made from it."""

    fd: int
    size: int
    keep: bool
    live: int = 0
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


_templates: dict[tuple[str, bytes], _Template] = {}  # (dtype, value bytes) -> the largest template made


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _new_template(dtype: np.dtype, value: np.generic, nbytes: int) -> _Template:
    fd = os.memfd_create(f"eo_pipeline-fill-{dtype.str}", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, nbytes)
        # reserve the pages now: short of memory, this raises (ENOSPC, ENOMEM) where
        # writing through the mapping would kill the process with SIGBUS
        os.posix_fallocate(fd, 0, nbytes)
        with mmap.mmap(fd, nbytes) as m:
            np.frombuffer(m, dtype).fill(value)
    except BaseException:
        os.close(fd)
        raise
    return _Template(fd, nbytes, keep=nbytes <= KEEP_FRACTION * _physical_memory())


def _unmapped(t: _Template) -> None:
    """A mapping of ``t`` went away: close a template that is not kept once nothing maps it."""
    with _lock:
        t.live -= 1
        if t.live == 0 and not t.keep:
            t.close()
            for key, cur in list(_templates.items()):
                if cur is t:
                    del _templates[key]


def _mapped(dtype: np.dtype, value: np.generic, nbytes: int) -> mmap.mmap:
    """A private copy-on-write mapping of ``nbytes`` bytes of the value's template.

    A template is shared by every array made while one of them lives, and kept after
    that if it is at most :data:`KEEP_FRACTION` of physical memory; a larger array
    than the template replaces it (arrays already made keep theirs).
    """
    key = (dtype.str, value.tobytes())
    with _lock:
        t = _templates.get(key)
        if t is None or t.size < nbytes:
            if t is not None:  # replaced: closed now, or by its last mapping's end
                del _templates[key]
                t.keep = False
                if t.live == 0:
                    t.close()
            t = _templates[key] = _new_template(dtype, value, nbytes)
        t.live += 1  # before mapping: a finalizer running meanwhile must not close it
        try:
            m = mmap.mmap(t.fd, nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            _unmapped(t)
            raise
        weakref.finalize(m, _unmapped, t)
    return m


def release() -> None:
    """Close the templates (arrays already made keep their own mapping)."""
    with _lock:
        for t in _templates.values():
            t.close()
        _templates.clear()


def filled(shape: tuple[int, ...], dtype: np.dtype | type | str, value: float) -> np.ndarray:
    """A new writable C-contiguous array of ``shape`` and ``dtype`` holding ``value`` in every element.

    Equal to ``np.full(shape, value, dtype)``, but pages that are never written cost
    neither filling nor fresh memory (see the module's docstring).
    """
    dtype = np.dtype(dtype)
    v = dtype.type(value)
    zero = not v.tobytes().strip(b"\0")
    n = prod(shape)
    nbytes = n * dtype.itemsize
    if nbytes < MIN_TEMPLATE_BYTES or dtype.hasobject or not hasattr(mmap, "MAP_PRIVATE"):
        return np.zeros(shape, dtype) if zero else np.full(shape, v, dtype)
    if zero:  # anonymous memory, without the huge-page advice numpy gives its own (see the module's docstring)
        return np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE), dtype, count=n).reshape(shape)
    if not hasattr(os, "memfd_create"):
        return np.full(shape, v, dtype)
    try:
        m = _mapped(dtype, v, nbytes)
    except OSError:  # no in-memory file or no room for its template: fill as numpy does
        return np.full(shape, v, dtype)
    return np.frombuffer(m, dtype, count=n).reshape(shape)
