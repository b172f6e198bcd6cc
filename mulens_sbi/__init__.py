"""mulens-sbi: simulation-based inference for gravitational microlensing events, on JAX.

Importing the package switches JAX to 64-bit floats (``jax_enable_x64``): the lens solvers are
float64 by default. Arrays passed in float32 stay float32 where a function says so.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

from mulens_sbi.lightcurve import (  # noqa: E402
    flux,
    magnification,
    magnification_batch,
    source_trajectory,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "flux",
    "magnification",
    "magnification_batch",
    "source_trajectory",
]
