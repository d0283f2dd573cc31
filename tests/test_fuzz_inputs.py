# SPDX-License-Identifier: Apache-2.0
"""Property-based fuzzing of damaged inputs: byte flips, truncations and overwrites.

For small real-layout files (the tiny S5P CH4, OCO-2 Lite and CCI fixtures),
``open_product`` followed by computing the whole dataset either succeeds or raises an
:class:`~eo_pipeline.errors.EOPipelineError` naming the file, never another exception;
nothing is printed at garbage collection and no HDF5 file handle is left open.
Deterministic (``derandomize=True``, no example database).
"""

from __future__ import annotations

import gc
import itertools
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eo_pipeline as eo
from eo_pipeline.errors import EOPipelineError
from eo_pipeline.readers import close_files

from .damage import freeze_heap, open_hdf5_files, record_unraisable

_unraisable = pytest.fixture(name="unraisable")(record_unraisable)
_frozen_heap = pytest.fixture(name="frozen_heap", scope="module")(freeze_heap)

#: One mutation: (kind, position, payload). Half the positions fall in the first 4 KB,
#: where the superblock, the root group and most object headers are.
POSITION = st.one_of(st.integers(0, 4095), st.integers(0, 2**31 - 1))
MUTATION = st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(0, 7).map(lambda b: bytes([1 << b]))),
    st.tuples(st.just("truncate"), POSITION, st.just(b"")),
    st.tuples(st.just("overwrite"), POSITION, st.binary(min_size=1, max_size=16)),
)
EXAMPLES = 60


def mutate(data: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    """Apply the mutations in order (positions wrap around the current length)."""
    out = bytearray(data)
    for kind, pos, payload in mutations:
        if not out:
            break
        pos %= len(out)
        if kind == "flip":
            out[pos] ^= payload[0]
        elif kind == "truncate":
            del out[pos:]
        else:
            out[pos:pos + len(payload)] = payload
    return bytes(out)


@pytest.mark.parametrize("fixture", ["ch4_file", "oco2_file", "cci_file"])
def test_mutated_files_open_and_compute_or_fail_cleanly(request, tmp_path, fixture, capfd, unraisable,
                                                        frozen_heap):
    source = Path(request.getfixturevalue(fixture))
    base = source.read_bytes()
    counter = itertools.count()
    outcomes = {"ok": 0, "error": 0}
    close_files()  # earlier tests' cached handles would otherwise count as "before"
    gc.collect()
    handles_before = open_hdf5_files()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(MUTATION, min_size=1, max_size=3))
    def check(mutations: list[tuple[str, int, bytes]]) -> None:
        # a fresh name per example: the handle cache is keyed by (path, mtime, size)
        path = tmp_path / f"{next(counter):04d}-{source.name}"
        path.write_bytes(mutate(base, mutations))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # quality/coordinate warnings are allowed outcomes
                ds = eo.open_product(path)
                ds.compute()
            outcomes["ok"] += 1
        except EOPipelineError as exc:
            assert path.name in str(exc), f"the error does not name the file: {exc}"
            assert "\n" not in str(exc)
            outcomes["error"] += 1
        finally:
            ds = None  # noqa: F841 - drop the last reference before collecting
            close_files()
            gc.collect()
        err = capfd.readouterr().err
        assert "Exception ignored" not in err and "Traceback" not in err, err
        assert unraisable == [], unraisable
        assert open_hdf5_files() == handles_before, "an HDF5 file handle was left open"
        path.unlink()

    check()
    assert sum(outcomes.values()) >= EXAMPLES // 2
    assert outcomes["error"] > 0  # the mutations do reach the library
