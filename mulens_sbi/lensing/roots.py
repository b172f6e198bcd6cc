"""Simultaneous polynomial root finding (Ehrlich–Aberth), any small degree ``n``.

All functions are pure and work on a trailing axis: coefficients ``(..., n+1)`` (highest degree
first) and roots ``(..., n)``. They are jittable; no Python control flow depends on data. Used for
the degree-5 lens polynomial and the degree-4 critical-curve polynomial.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array


def _horner(coeffs: Array, z: Array) -> tuple[Array, Array]:
    """Value and derivative of the polynomial at each root estimate."""
    c = coeffs[..., None, :]
    p = jnp.broadcast_to(c[..., 0], z.shape)
    dp = jnp.zeros_like(z)
    for k in range(1, coeffs.shape[-1]):
        dp = dp * z + p
        p = p * z + c[..., k]
    return p, dp


def newton_step(coeffs: Array, z: Array) -> Array:
    """One Newton update of every root estimate on its own (no repulsion between them): a third of
    the cost of :func:`aberth_step`, quadratically convergent from good warm starts, but two
    estimates may converge to the same root (callers follow with Aberth steps and a certificate)."""
    p, dp = _horner(coeffs, z)
    w = p / dp
    return z - jnp.where(jnp.isfinite(w), w, 0.0)


def aberth_step(coeffs: Array, z: Array) -> tuple[Array, Array]:
    """One Ehrlich–Aberth update of all root estimates.

    Returns the new estimates and the absolute size of each correction.
    """
    p, dp = _horner(coeffs, z)
    ratio = p / dp
    diff = z[..., :, None] - z[..., None, :]
    eye = jnp.eye(z.shape[-1], dtype=bool)
    inv = jnp.where(eye, 0.0, 1.0 / jnp.where(eye, 1.0, diff))
    repulsion = jnp.sum(inv, axis=-1)
    w = ratio / (1.0 - ratio * repulsion)
    w = jnp.where(jnp.isfinite(w), w, 0.0)
    return z - w, jnp.abs(w)


def initial_guess(zeta: Array, s: Array, q: Array) -> Array:
    """Starting points for a full solve, from the single-lens images and the lens positions.

    Solver frame: companion at 0, primary at ``s``.
    """
    m1 = 1.0 / (1.0 + q)
    x_cm = s * m1
    w = zeta - x_cm
    aw = jnp.maximum(jnp.abs(w), 1e-3)
    root = jnp.sqrt(1.0 + 4.0 / (aw * aw))
    major = x_cm + 0.5 * w * (1.0 + root)
    minor = x_cm + 0.5 * w * (1.0 - root)
    rot = jnp.exp(1j * jnp.asarray([0.7, 2.9, 4.4], dtype=jnp.float64)).astype(zeta.dtype)
    near2 = 0.3 * rot[0] * jnp.ones_like(zeta)
    near1 = s + 0.3 * rot[1] * jnp.ones_like(zeta)
    mid = 0.5 * s + 0.6 * rot[2] * jnp.ones_like(zeta)
    return jnp.stack([major, minor, near1, near2, mid], axis=-1)


def solve_full(coeffs: Array, z0: Array, max_iter: int = 80, tol: float = 1e-13) -> tuple[Array, Array]:
    """Solve from ``z0`` until every correction is below ``tol·(1+|z|)`` or ``max_iter`` steps.

    Returns ``(roots, converged)`` where ``converged`` is a boolean per polynomial.
    """

    def cond(state):
        i, _, done = state
        return (i < max_iter) & ~jnp.all(done)

    def body(state):
        i, z, done = state
        z_new, step = aberth_step(coeffs, z)
        z_new = jnp.where(done[..., None], z, z_new)
        ok = jnp.all(step <= tol * (1.0 + jnp.abs(z_new)), axis=-1)
        return i + 1, z_new, done | ok

    done0 = jnp.zeros(coeffs.shape[:-1], dtype=bool)
    _, z, done = jax.lax.while_loop(cond, body, (0, z0, done0))
    return z, done
