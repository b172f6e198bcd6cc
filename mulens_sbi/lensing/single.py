"""Single-lens (Paczyński) magnification.

``u`` is the lens–source separation in θ_E. The finite-source forms are filled in by
:mod:`mulens_sbi.lensing.finite` work; the point-source form is exact.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def point_source(u: Array) -> Array:
    """Point-source magnification ``(u² + 2)/(u·sqrt(u² + 4))``."""
    u2 = u * u
    return (u2 + 2.0) / (jnp.abs(u) * jnp.sqrt(u2 + 4.0))


def finite_source(u: Array, rho: Array, limb_darkening: Array) -> tuple[Array, Array]:
    """Finite-source single-lens magnification (uniform or linear limb darkening). Returns (A, ok)."""
    raise NotImplementedError("finite-source single-lens magnification is not implemented yet")
