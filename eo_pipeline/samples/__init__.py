# SPDX-License-Identifier: Apache-2.0
"""Deterministic synthetic sample scenes in the real products' layouts."""

from .scenes import make_daily_orbits, make_samples

__all__ = ["make_samples", "make_daily_orbits"]
