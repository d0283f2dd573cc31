# SPDX-License-Identifier: Apache-2.0
"""Exactly rounded sums for table values, so that the same job writes the same bits every run.

numpy's pairwise sums can differ in the last bit with the memory alignment of the data,
which would make two runs of one job write tables that differ in the 16th digit (and a
rerun after an interruption look different from an uninterrupted run). ``math.fsum``
is exactly rounded, so its result depends on neither order nor alignment.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fsum", "fweighted_mean"]


def fsum(values: np.ndarray) -> float:
    """Kernel: exactly rounded sum of ``values`` (any shape) as a float."""
    return math.fsum(np.asarray(values, np.float64).ravel().tolist())


def fweighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """Kernel: ``sum(w x) / sum(w)`` with exactly rounded sums (NaN when the weights sum to 0)."""
    v = np.asarray(values, np.float64).ravel()
    w = np.asarray(weights, np.float64).ravel()
    total = fsum(w)
    return fsum(w * v) / total if total != 0 else float("nan")
