"""Point-source binary-lens magnification.

Coordinates at this module's interface are MulensModel v3's *centre-of-mass frame*: the origin is
the centre of mass, the primary (mass fraction ``1/(1+q)``) lies at ``x = +s·q/(1+q)`` and the
companion at ``x = −s/(1+q)``, lengths in θ_E. (This was checked numerically against MulensModel
3.12; see ``tests/lensing/test_point_source.py``.) Internally the solver frame of
:mod:`mulens_sbi.lensing.polynomial` is used.

Two solvers share one image classifier:

* :func:`magnification_points` — independent points (any order): a full Ehrlich–Aberth solve each.
* :func:`magnification_trajectory` — ordered points along source trajectories: the roots at each
  point are predicted from the two previous points (linear extrapolation), polished with two Newton
  steps per root and *checked*; a step where any point fails the check (correction too large, two
  roots too close, or an image count other than 3 or 5) is redone for the whole segment batch with a
  full Aberth solve. Nothing unchecked is returned.

Every result comes with a boolean ``ok``: False means the magnification could not be certified and
the value is NaN (never a silent wrong number).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from mulens_sbi.lensing.polynomial import lens_polynomial
from mulens_sbi.lensing.roots import initial_guess, solve_full

#: absolute lens-equation residual (θ_E) under which a root is a real image
IMAGE_TOL = 1e-7
#: a second Newton correction larger than this times the distance to the nearest other root sends
#: the step to a full solve (the error left is then about STEP_TOL² times that distance)
STEP_TOL = 1e-5
#: two root estimates closer than this (θ_E) are treated as a collapse and re-solved
MIN_SEP = 1e-7


def to_solver_frame(x: Array, y: Array, s: Array, q: Array) -> Array:
    """Complex source position in the solver frame from centre-of-mass frame (x, y)."""
    return (x + s / (1.0 + q)) + 1j * y


def classify(zeta: Array, z: Array, s: Array, q: Array) -> tuple[Array, Array, Array]:
    """Magnification, image mask and validity from the five roots.

    Real images are the roots whose lens-equation residual, divided by the local stretch
    ``1 + |κ|`` of the map (the image-position error it implies), is below :data:`IMAGE_TOL`; their
    number must be 3 or 5. Returns ``(A, is_image, ok)``; ``A`` is NaN where ``ok`` is False.
    Written in real arithmetic (it runs once per point and dominates the cost otherwise).
    """
    s_ = s[..., None]
    m2 = q[..., None] / (1.0 + q[..., None])
    m1 = 1.0 - m2
    x, y = z.real, z.imag
    # 1/conj(z - s) = (z - s)/|z - s|² and 1/conj(z) = z/|z|²
    ax = x - s_
    ia = 1.0 / (ax * ax + y * y)
    ib = 1.0 / (x * x + y * y)
    ar, ai = ax * ia, y * ia
    br, bi = x * ib, y * ib
    dx = x - m1 * ar - m2 * br - zeta.real[..., None]
    dy = y - m1 * ai - m2 * bi - zeta.imag[..., None]
    kr = m1 * (ar * ar - ai * ai) + m2 * (br * br - bi * bi)
    ki = 2.0 * (m1 * ar * ai + m2 * br * bi)
    k2 = kr * kr + ki * ki
    # squared form of |resid| <= tol·(1+|z|)·(1+|κ|), with the bound (1+a)² >= 1 + a²
    lim = IMAGE_TOL * IMAGE_TOL * (1.0 + x * x + y * y) * (1.0 + k2)
    is_image = dx * dx + dy * dy <= lim
    n_img = jnp.sum(is_image, axis=-1)
    mag = jnp.sum(jnp.where(is_image, 1.0 / jnp.abs(1.0 - k2), 0.0), axis=-1)
    ok = ((n_img == 3) | (n_img == 5)) & jnp.isfinite(mag)
    return jnp.where(ok, mag, jnp.nan), is_image, ok


def solve_points(zeta: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """All five roots for independent source positions (solver frame). Returns (roots, converged)."""
    coeffs = lens_polynomial(zeta, s, q)
    return solve_full(coeffs, initial_guess(zeta, s, q))


def magnification_points(x: Array, y: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """Point-source magnification at independent positions (centre-of-mass frame, θ_E).

    All arguments broadcast together. Returns ``(A, ok)``.
    """
    x, y, s, q = jnp.broadcast_arrays(x, y, s, q)
    shape = x.shape
    x, y, s, q = (a.reshape(-1) for a in (x, y, s, q))
    zeta = to_solver_frame(x, y, s, q)
    z, conv = solve_points(zeta, s, q)
    mag, _, ok = classify(zeta, z, s, q)
    ok = ok & conv
    return jnp.where(ok, mag, jnp.nan).reshape(shape), ok.reshape(shape)


def _newton(coeffs: Array, z: Array) -> tuple[Array, Array]:
    """One Newton step per root in real arithmetic. Returns (roots, |correction|)."""
    cr = coeffs.real[..., None, :]
    ci = coeffs.imag[..., None, :]
    x, y = z.real, z.imag
    pr = jnp.broadcast_to(cr[..., 0], x.shape)
    pi = jnp.broadcast_to(ci[..., 0], x.shape)
    dr = jnp.zeros_like(x)
    di = jnp.zeros_like(x)
    for k in range(1, 6):
        dr, di = dr * x - di * y + pr, dr * y + di * x + pi
        pr, pi = pr * x - pi * y + cr[..., k], pr * y + pi * x + ci[..., k]
    den = 1.0 / (dr * dr + di * di)
    wr = (pr * dr + pi * di) * den
    wi = (pi * dr - pr * di) * den
    return (x - wr) + 1j * (y - wi), jnp.sqrt(wr * wr + wi * wi)


def _separation(z: Array) -> Array:
    """Distance from each root to its nearest neighbour, shape (..., 5)."""
    d = jnp.abs(z[..., :, None] - z[..., None, :]) + jnp.eye(5) * 1e300
    return jnp.min(d, axis=-1)


def _segment_scan(zeta: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """Roots along segments. ``zeta`` has shape (M, L) (segment, step); ``s``, ``q`` shape (M,).

    Returns roots (M, L, 5) and the number of full re-solves used (diagnostic).
    """
    m = zeta.shape[0]
    k_small = max(8, m // 32)
    z_first, _ = solve_points(zeta[:, 0], s, q)
    # the second point is polished by Aberth from the first, which keeps the roots' order
    z_second, _ = solve_full(lens_polynomial(zeta[:, 1], s, q), z_first)

    def resolve(coeffs, z0, zt, reinit, ss, qq):
        z0 = jnp.where(reinit[:, None], initial_guess(zt, ss, qq), z0)
        return solve_full(coeffs, z0)[0]

    def repair_few(args):
        # gather the (at most k_small) bad lanes, solve them alone, scatter back
        z_try, zt, coeffs, reinit, bad = args
        idx = jnp.nonzero(bad, size=k_small, fill_value=m)[0]
        take = lambda a: jnp.take(a, idx, axis=0, mode="clip")  # noqa: E731
        z_fix = resolve(take(coeffs), take(z_try), take(zt), take(reinit), take(s), take(q))
        return z_try.at[idx].set(z_fix, mode="drop")

    def repair_all(args):
        z_try, zt, coeffs, reinit, bad = args
        # lanes that are fine stop after one Aberth step, which leaves them unchanged to ~1e-13
        return jnp.where(bad[:, None], resolve(coeffs, z_try, zt, reinit, s, q), z_try)

    def repair(args):
        return jax.lax.cond(jnp.sum(args[-1]) <= k_small, repair_few, repair_all, args)

    def step(carry, zt):
        z_prev, z_prev2, n_repair = carry
        coeffs = lens_polynomial(zt, s, q)
        guess = 2.0 * z_prev - z_prev2
        z_new, _ = _newton(coeffs, guess)
        z_new, w = _newton(coeffs, z_new)
        _, _, ok = classify(zt, z_new, s, q)
        sep = _separation(z_new)
        # Newton's error after the second step is about |w|²/sep: demand |w| ≤ STEP_TOL·sep
        reinit = ~ok | jnp.any(sep < MIN_SEP, axis=-1)
        bad = reinit | jnp.any(w > STEP_TOL * sep, axis=-1)
        args = (z_new, zt, coeffs, reinit, bad)
        z_new = jax.lax.cond(jnp.any(bad), repair, lambda a: a[0], args)
        # a restarted lane has new root order: restart its extrapolation too
        z_prev_next = jnp.where(reinit[:, None], z_new, z_prev)
        return (z_new, z_prev_next, n_repair + jnp.sum(bad, dtype=jnp.int32)), z_new

    zs = jnp.swapaxes(zeta[:, 2:], 0, 1)
    (_, _, n_repair), z_rest = jax.lax.scan(step, (z_second, z_first, jnp.int32(0)), zs)
    roots = jnp.concatenate(
        [z_first[:, None, :], z_second[:, None, :], jnp.swapaxes(z_rest, 0, 1)], axis=1
    )
    return roots, n_repair


def magnification_trajectory(
    x: Array, y: Array, s: Array, q: Array, segment: int = 64
) -> tuple[Array, Array]:
    """Point-source magnification along ordered source trajectories (centre-of-mass frame, θ_E).

    Args:
        x, y: positions of shape (B, N), ordered along each trajectory.
        s, q: shape (B,).
        segment: points per warm-started segment; segments are solved in parallel.

    Returns:
        ``(A, ok)`` of shape (B, N).
    """
    b, n = x.shape
    n_seg = -(-n // segment)
    pad = n_seg * segment - n
    xp = jnp.pad(x, ((0, 0), (0, pad)), mode="edge")
    yp = jnp.pad(y, ((0, 0), (0, pad)), mode="edge")
    sp = jnp.repeat(s, n_seg)
    qp = jnp.repeat(q, n_seg)
    zeta = to_solver_frame(xp, yp, s[:, None], q[:, None]).reshape(b * n_seg, segment)
    roots, _ = _segment_scan(zeta, sp, qp)
    mag, _, ok = classify(zeta, roots, sp[:, None], qp[:, None])
    mag = mag.reshape(b, n_seg * segment)[:, :n]
    ok = ok.reshape(b, n_seg * segment)[:, :n]
    return mag, ok
