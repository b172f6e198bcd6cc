"""Coefficients of the binary-lens fifth-degree polynomial.

Frame (the *solver frame*): the companion (mass fraction ``m2 = q/(1+q)``) sits at the origin and the
primary (mass fraction ``m1 = 1/(1+q)``) at ``z = s`` on the real axis. Lengths are in units of the
Einstein radius θ_E of the total mass. Centring the frame on the lighter body keeps the
coefficients well conditioned for small ``q`` (the practice of VBMicrolensing).

The complex lens equation is ``ζ = z − m1/(z̄ − s) − m2/z̄``. Eliminating ``z̄`` with its conjugate
gives a polynomial of degree five in ``z`` whose roots contain all images (3 or 5 are real images,
the rest are false roots). The closed forms below were derived symbolically; the polynomial is
never built by ``jnp.polymul`` (which allocates badly under ``vmap``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def lens_polynomial(zeta: Array, s: Array, q: Array) -> Array:
    """Coefficients of the lens polynomial, highest degree first.

    Args:
        zeta: complex source position in the solver frame (θ_E).
        s: lens separation (θ_E).
        q: mass ratio companion/primary.

    Returns:
        Array of shape ``zeta.shape + (6,)`` with coefficients ``c5 … c0``.
    """
    a = s
    m2 = q / (1.0 + q)
    m1 = 1.0 - m2
    zb = jnp.conj(zeta)
    a2 = a * a
    zz = zeta * zb
    c5 = zb * (a - zb)
    c4 = a * m1 - zb * (m1 + m2) + zb * (2.0 * a * zb - 2.0 * a2 - a * zeta + zz)
    c3 = (
        a2 * a * zb
        - a2 * m1
        + 2.0 * a2 * zz
        - a2 * zb * zb
        - a * (m1 + m2) * zeta
        + 2.0 * a * m2 * zb
        - 2.0 * a * zz * zb
        + 2.0 * (m1 + m2) * zz
    )
    c2 = (
        -a2 * a * zz
        + a2 * m1 * (zeta + zb)
        + a2 * m2 * (2.0 * zeta - zb)
        + a2 * zz * zb
        - a * m1 * (m1 + m2)
        - 2.0 * a * zz * (m1 + 2.0 * m2)
        + (m1 + m2) ** 2 * zeta
    )
    c1 = -a * m2 * (a2 * zeta - a * m1 - 2.0 * a * zz + 2.0 * (m1 + m2) * zeta)
    c0 = a2 * m2 * m2 * zeta
    return jnp.stack([c5, c4, c3, c2, c1, c0], axis=-1)


def lens_equation(z: Array, s: Array, q: Array) -> Array:
    """Source position ``ζ(z) = z − m1/(z̄ − s) − m2/z̄`` in the solver frame (θ_E)."""
    m2 = q / (1.0 + q)
    m1 = 1.0 - m2
    zb = jnp.conj(z)
    return z - m1 / (zb - s) - m2 / zb


def jacobian_kappa(z: Array, s: Array, q: Array) -> Array:
    """``∂ζ/∂z̄ = m1/(z̄ − s)² + m2/z̄²``; the Jacobian determinant is ``1 − |κ|²``."""
    m2 = q / (1.0 + q)
    m1 = 1.0 - m2
    zb = jnp.conj(z)
    return m1 / (zb - s) ** 2 + m2 / (zb * zb)
