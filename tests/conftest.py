"""Shared fixtures: fixed seeds, 64-bit JAX, and a persistent JAX compilation cache.

Compilation dominates the suite's time. A persistent cache (keyed by the program and the JAX
version, so it can never return a wrong executable) lets the pytest-xdist workers and the Ray
actors started by the catalog tests reuse what another process already compiled. It lives in the
system temp folder; set ``JAX_COMPILATION_CACHE_DIR`` to move it.

Within one process a compiled program is reused outright, so CI runs pytest-xdist with
``--dist loadfile`` (README, ``.ci/run``): one worker runs a module's tests, which share their
module fixtures and compiled shapes (split across two workers, both compiled the same programs
side by side). Tests that share an expensive result therefore live in one module.
"""

from __future__ import annotations

import os
import tempfile

# before JAX is imported (here and in subprocesses, which inherit the environment)
_CACHE = os.path.join(tempfile.gettempdir(), f"mulens-sbi-tests-jax-cache-{os.getuid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mulens_sbi  # noqa: E402, F401  (enables float64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261128)
