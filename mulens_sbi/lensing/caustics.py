"""Critical curves, caustics and caustic topology of a binary point lens.

Frame: MulensModel v3's centre-of-mass frame, lengths in θ_E of the total mass. The primary (mass
fraction ``m1 = 1/(1+q)``) sits at ``x = +s·q/(1+q)``, the companion (``m2 = q/(1+q)``) at
``x = −s/(1+q)``, both on the real axis. Complex numbers stand for ``x + i·y``.

Critical curves are where the Jacobian determinant ``1 − |κ|²`` of the lens map vanishes, with
``κ = m1/(z̄ − z1)² + m2/(z̄ − z2)²``. Writing ``κ̄ = e^{iφ}`` and clearing denominators gives, in the
solver frame (companion at 0, primary at ``s``: ``w = z + s/(1+q)``), the quartic

    w²(w − s)² − e^{−iφ}·[m1·w² + m2·(w − s)²] = 0,

solved with the generic Ehrlich–Aberth solver of :mod:`mulens_sbi.lensing.roots`. The grid of φ is
walked with :func:`jax.lax.scan`, each solve warm-started from the previous φ, so that each of the
four rows of the result is a continuous branch of the critical curves. Following the branches once
around (φ: 0 → 2π) permutes the four roots; the cycles of that permutation are the closed critical
curves (φ is monotonic along each curve away from topology transitions), which gives a numerical
count of caustics to set against the analytic boundaries of :func:`topology`.

Caustics are the images of the critical points under the lens equation
``ζ = z − m1/(z̄ − z1) − m2/(z̄ − z2)``.

All functions are pure JAX, jittable (``n_points`` static) and vmappable over ``s`` and ``q``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from mulens_sbi.lensing.polynomial import jacobian_kappa, lens_equation
from mulens_sbi.lensing.roots import solve_full

#: topology codes returned by :func:`topology`
CLOSE, INTERMEDIATE, WIDE = 0, 1, 2


def _quartic(phi: Array, s: Array, q: Array) -> Array:
    """Coefficients (highest first) of the critical-curve quartic in the solver frame."""
    m2 = q / (1.0 + q)
    m1 = 1.0 - m2
    e = jnp.exp(-1j * phi)
    one = jnp.ones_like(e)
    # w⁴ − 2s·w³ + (s² − e)·w² + 2·e·m2·s·w − e·m2·s²   (uses m1 + m2 = 1)
    del m1
    return jnp.stack([one, -2.0 * s * one, s * s - e, 2.0 * e * m2 * s, -e * m2 * s * s], axis=-1)


def _initial_roots(s: Array) -> Array:
    """Generic, asymmetric starting points around the roots' centroid ``s/2`` (solver frame)."""
    angles = jnp.asarray([0.4, 1.9, 3.5, 5.1])
    radius = 0.5 * s + 1.0
    return 0.5 * s + radius * jnp.exp(1j * angles)


@partial(jax.jit, static_argnames=("n_points",))
def _critical_scan(s: Array, q: Array, n_points: int) -> tuple[Array, Array]:
    """Critical points (solver frame) on ``n_points + 1`` values of φ from 0 to 2π inclusive.

    Returns ``(w, converged)`` of shapes (4, n_points + 1) and () (all solves converged).
    """
    s = jnp.asarray(s, dtype=jnp.float64)
    q = jnp.asarray(q, dtype=jnp.float64)
    phis = jnp.linspace(0.0, 2.0 * jnp.pi, n_points + 1)
    w0, c0 = solve_full(_quartic(phis[0], s, q), _initial_roots(s), max_iter=500)

    def step(carry, phi):
        w_prev, conv = carry
        w, c = solve_full(_quartic(phi, s, q), w_prev, max_iter=200)
        return (w, conv & c), w

    (_, conv), ws = jax.lax.scan(step, (w0, c0), phis[1:])
    w = jnp.concatenate([w0[None, :], ws], axis=0)
    return w.T, conv


@partial(jax.jit, static_argnames=("n_points",))
def critical_curves(s: Array, q: Array, n_points: int = 512) -> Array:
    """Critical curves of the binary lens (centre-of-mass frame, θ_E).

    Args:
        s: separation (θ_E), scalar.
        q: mass ratio companion/primary, scalar.
        n_points: number of values of φ (``κ̄ = e^{iφ}``), ``φ_k = 2πk/n_points``. With an even
            number, φ = 0 and π are on the grid, which holds the on-axis critical points (and so the
            on-axis cusps of the caustics) exactly.

    Returns:
        Complex array of shape (4, n_points): four branches, each continuous in φ.
    """
    w, _ = _critical_scan(s, q, n_points)
    return w[:, :-1] - s / (1.0 + q)


@partial(jax.jit, static_argnames=("n_points",))
def caustics(s: Array, q: Array, n_points: int = 512) -> Array:
    """Caustics: images of :func:`critical_curves` under the lens equation (centre-of-mass frame, θ_E).

    Returns a complex array of shape (4, n_points), point ``[i, k]`` being the image of critical point
    ``[i, k]``.
    """
    w, _ = _critical_scan(s, q, n_points)
    w = w[:, :-1]
    return lens_equation(w, s, q) - s / (1.0 + q)


def _permutation(w: Array) -> Array:
    """Where each branch ends after φ: 0 → 2π: index of the φ = 0 root nearest to its φ = 2π root."""
    d = jnp.abs(w[:, -1][:, None] - w[:, 0][None, :])
    return jnp.argmin(d, axis=1)


def _count_cycles(perm: Array) -> Array:
    """Number of cycles of a permutation of 4 elements (as a float sum of 1/cycle length)."""
    idx = jnp.arange(4)
    length = jnp.zeros(4, dtype=jnp.int32)
    p = perm
    for k in range(1, 5):
        hit = (p == idx) & (length == 0)
        length = jnp.where(hit, k, length)
        p = perm[p]
    length = jnp.where(length == 0, 1, length)  # not a permutation (ambiguous match): count as 1-cycles
    return jnp.round(jnp.sum(1.0 / length)).astype(jnp.int32)


@partial(jax.jit, static_argnames=("n_points",))
def n_caustics_numerical(s: Array, q: Array, n_points: int = 512) -> Array:
    """Number of closed critical curves (= caustics), counted from the branch permutation.

    1 is intermediate (resonant), 2 wide, 3 close. Near a topology boundary (within roughly the φ step
    of it) the count is not reliable: use :func:`topology` for the analytic answer.
    """
    w, _ = _critical_scan(s, q, n_points)
    return _count_cycles(_permutation(w))


def close_boundary(q: Array, n_iter: int = 80) -> Array:
    """Separation ``s_c`` below which the lens is *close* (three caustics).

    Erdl & Schneider (1993), Dominik (1999):
    ``s_c⁸ = (1+q)²/(27q) · (1 − s_c⁴)³``. With ``u = s_c⁴`` the function ``u² − K(1−u)³`` rises
    monotonically from −K to 1 on [0, 1], so its single root is found by bisection (``n_iter`` steps;
    80 reach double precision).
    """
    q = jnp.asarray(q, dtype=jnp.float64)
    k = (1.0 + q) ** 2 / (27.0 * q)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        f = mid * mid - k * (1.0 - mid) ** 3
        return jnp.where(f > 0, lo, mid), jnp.where(f > 0, mid, hi)

    lo, hi = jax.lax.fori_loop(0, n_iter, body, (jnp.zeros_like(q), jnp.ones_like(q)))
    return (0.5 * (lo + hi)) ** 0.25


def wide_boundary(q: Array) -> Array:
    """Separation ``s_w`` above which the lens is *wide* (two caustics).

    Erdl & Schneider (1993), Dominik (1999): ``s_w = (m1^{1/3} + m2^{1/3})^{3/2}`` with mass fractions
    ``m1 = 1/(1+q)``, ``m2 = q/(1+q)``, i.e. ``(1 + q^{1/3})^{3/2} / sqrt(1 + q)``.
    """
    q = jnp.asarray(q, dtype=jnp.float64)
    return (1.0 + jnp.cbrt(q)) ** 1.5 / jnp.sqrt(1.0 + q)


def topology(s: Array, q: Array) -> Array:
    """Caustic topology from the analytic boundaries: 0 close (3 caustics), 1 intermediate (1), 2 wide (2).

    Works elementwise on arrays (jittable). Symmetric under ``q → 1/q``.
    """
    s = jnp.asarray(s, dtype=jnp.float64)
    return jnp.where(s < close_boundary(q), CLOSE, jnp.where(s > wide_boundary(q), WIDE, INTERMEDIATE))


def _segment_distance(p: Array, a: Array, b: Array) -> Array:
    """Distance from points ``p`` to segments ``[a, b]`` (complex), broadcasting."""
    ab = b - a
    len2 = jnp.maximum(jnp.abs(ab) ** 2, 1e-300)
    t = jnp.clip(jnp.real((p - a) * jnp.conj(ab)) / len2, 0.0, 1.0)
    return jnp.abs(p - (a + t * ab))


@partial(jax.jit, static_argnames=("n_points",))
def distance_to_caustic(x: Array, y: Array, s: Array, q: Array, n_points: int = 512) -> Array:
    """Distance (θ_E) from source positions to the caustics of one lens (centre-of-mass frame).

    The caustics are sampled at ``n_points`` values of φ per branch and joined into closed polygons
    (the φ = 2π end of each branch joins the start of the branch it continues into); the result is
    the exact distance to those polygons. The polygons cut the curved folds by at most the sagitta
    ``ℓ²/(8R)`` of a chord of length ℓ on a fold of curvature radius R, so the distance can be too
    large by that much (too small never by more than that either); at n_points = 512 the test suite
    measures the difference to a 16× finer sampling below 1e-3 of the caustic's size (see
    ``tests/lensing/test_caustics.py``). Use it as a triage measure (e.g. ``distance > k·rho``) with a
    safety factor, not as an exact quantity.

    Args:
        x, y: source positions (θ_E), any matching shapes.
        s, q: scalars (vmap for many lenses).
        n_points: samples per branch.

    Returns:
        Array of distances with the shape of ``x``.
    """
    w, _ = _critical_scan(s, q, n_points)
    c = lens_equation(w, s, q) - s / (1.0 + q)  # (4, n_points + 1), last column = φ = 2π
    a = c[:, :-1].reshape(-1)
    b = c[:, 1:].reshape(-1)
    p = (jnp.asarray(x) + 1j * jnp.asarray(y))[..., None]
    return jnp.min(_segment_distance(p, a, b), axis=-1)


def jacobian_determinant(z: Array, s: Array, q: Array) -> Array:
    """``det J = 1 − |κ|²`` at image-plane points ``z`` (centre-of-mass frame)."""
    k = jacobian_kappa(z + s / (1.0 + q), s, q)
    return 1.0 - jnp.abs(k) ** 2
