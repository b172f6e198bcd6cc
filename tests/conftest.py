"""Shared fixtures: fixed seeds, 64-bit JAX."""

from __future__ import annotations

import numpy as np
import pytest

import mulens_sbi  # noqa: F401  (enables float64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261128)
