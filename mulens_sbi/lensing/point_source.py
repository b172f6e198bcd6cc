"""Point-source binary-lens magnification.

Coordinates at this module's interface are MulensModel v3's *centre-of-mass frame*: the origin is
the centre of mass, the primary (mass fraction ``1/(1+q)``) lies at ``x = +s·q/(1+q)`` and the
companion at ``x = −s/(1+q)``, lengths in θ_E (checked numerically against MulensModel 3.12 in the
tests). Internally the solver frame of :mod:`mulens_sbi.lensing.polynomial` is used.

Two solvers share one image classifier:

* :func:`magnification_points` — independent points (any order): a full Ehrlich–Aberth solve each.
* :func:`magnification_trajectory` — ordered points along source trajectories: the roots at each
  point are predicted by quadratic extrapolation in arc length from the three previous points and
  corrected by ``SCAN_NEWTON`` Newton steps, the last of which *certifies* the point (last
  correction tiny against the root separation, no collapsed roots, 3 or 5 images); uncertified
  points are solved again from scratch (Aberth). Nothing unchecked is returned.

Every result comes with a boolean ``ok``: False means the magnification could not be certified and
the value is NaN (never a silent wrong number).

Performance notes: the hot loops use real arithmetic with the root axis *first* (shape (5, M)), which
XLA vectorizes about twice as well as complex (M, 5) arrays. Both solvers are differentiable: the
roots carry a custom JVP from the implicit-function theorem, ``dz = −(Σ dc_k z^(5−k)) / p'(z)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from mulens_sbi.lensing.polynomial import lens_polynomial
from mulens_sbi.lensing.roots import initial_guess, solve_full

#: lens-equation residual, divided by (1+|κ|) and by the distance to the nearest lens, under which
#: a root is a real image
IMAGE_TOL = 1e-7
#: after the final polishing Newton step, a correction larger than this times the distance to the
#: nearest other root marks the point for a full re-solve (error left about STEP_TOL²·sep)
STEP_TOL = 1e-5
#: two root estimates closer than this (θ_E; relative to the distance to the nearest lens when that
#: is below 1) are treated as a collapse and re-solved
MIN_SEP = 1e-7
#: Newton steps per point along a trajectory (the certificate is on the last); with 2, a quarter of
#: the points of a sparse light curve (Δτ ≈ 0.02) failed the certificate although their roots were
#: good, and their re-solve cost more than the third step costs everywhere
SCAN_NEWTON = 3
#: Newton steps for the second point of each warm-started segment (constant prediction)
FIRST_STEP_NEWTON = 4


def to_solver_frame(x: Array, y: Array, s: Array, q: Array) -> Array:
    """Complex source position in the solver frame from centre-of-mass frame (x, y)."""
    return (x + s / (1.0 + q)) + 1j * y


# ---------------------------------------------------------------------------------------------
# real-arithmetic kernels, root axis first: roots (5, ...), coefficients (6, ...)


def _coeffs_t(zeta: Array, s: Array, q: Array) -> tuple[Array, Array]:
    c = lens_polynomial(zeta, s, q)
    return jnp.moveaxis(c.real, -1, 0), jnp.moveaxis(c.imag, -1, 0)


def _newton_t(cr: Array, ci: Array, x: Array, y: Array) -> tuple[Array, Array, Array]:
    """One Newton step for every root. Returns new (x, y) and the squared correction."""
    pr = jnp.broadcast_to(cr[0], x.shape)
    pi = jnp.broadcast_to(ci[0], x.shape)
    dr = jnp.zeros_like(x)
    di = jnp.zeros_like(x)
    for k in range(1, 6):
        dr, di = dr * x - di * y + pr, dr * y + di * x + pi
        pr, pi = pr * x - pi * y + cr[k], pr * y + pi * x + ci[k]
    den = 1.0 / (dr * dr + di * di)
    wr = (pr * dr + pi * di) * den
    wi = (pi * dr - pr * di) * den
    return x - wr, y - wi, wr * wr + wi * wi


def _root_certificate(corr2: Array, x: Array, y: Array, s: Array) -> Array:
    """Per-root certificate (5, ...): the last Newton correction (squared, ``corr2``) is at most
    ``STEP_TOL`` times the distance to the nearest other root, and that distance is not a collapse
    (at least ``MIN_SEP``, scaled down next to a lens where roots legitimately crowd: the pair next
    to a companion of mass ratio q sits ~q/|ζ| from it)."""
    sep2 = _sep2_t(x, y)
    d2 = jnp.minimum(jnp.minimum(x * x + y * y, (x - s) ** 2 + y * y), 1.0)
    return (corr2 <= (STEP_TOL * STEP_TOL) * sep2) & (sep2 >= (MIN_SEP * MIN_SEP) * d2)


def _sep2_t(x: Array, y: Array) -> Array:
    """Squared distance from each root to its nearest other root, shape (5, ...)."""
    d = {}
    for i in range(5):
        for j in range(i + 1, 5):
            d[i, j] = (x[i] - x[j]) ** 2 + (y[i] - y[j]) ** 2
    out = []
    for i in range(5):
        others = [d[min(i, j), max(i, j)] for j in range(5) if j != i]
        m = others[0]
        for o in others[1:]:
            m = jnp.minimum(m, o)
        out.append(m)
    return jnp.stack(out)


def _classify_t(zr: Array, zi: Array, x: Array, y: Array, s: Array, q: Array) -> tuple[Array, Array, Array]:
    """Classifier on root-axis-first real arrays: zeta parts (...), roots (5, ...)."""
    m2 = q / (1.0 + q)
    m1 = 1.0 - m2
    # 1/conj(z − s) = (z − s)/|z − s|² and 1/conj(z) = z/|z|²
    ax = x - s
    ia = 1.0 / (ax * ax + y * y)
    ib = 1.0 / (x * x + y * y)
    ar, ai = ax * ia, y * ia
    br, bi = x * ib, y * ib
    dx = x - m1 * ar - m2 * br - zr
    dy = y - m1 * ai - m2 * bi - zi
    kr = m1 * (ar * ar - ai * ai) + m2 * (br * br - bi * bi)
    ki = 2.0 * (m1 * ar * ai + m2 * br * bi)
    k2 = kr * kr + ki * ki
    # squared form of |residual| / (1+|κ|) <= tol·d, with d the distance to the nearest lens and
    # (1+a)² >= 1 + a²: the residual divided by the stretch is the image-position error it implies,
    # which must be small against the only length scale near a lens (a false root next to a
    # low-mass companion can otherwise pass on its enormous κ)
    d2_lens = 1.0 / jnp.maximum(ia, ib)
    lim = (IMAGE_TOL * IMAGE_TOL) * d2_lens * (1.0 + k2)
    is_image = dx * dx + dy * dy <= lim
    n_img = jnp.sum(is_image, axis=0)
    # One Newton step on the lens equation itself for the real images: δz + κ·conj(δz) = r with
    # r = ζ − ζ(z), so δz = (r − κ·conj(r)) / (1 − |κ|²). The polynomial's roots lose digits to
    # coefficient cancellation at high magnification; the lens equation does not.
    det = 1.0 - k2
    nr = -dx + (kr * dx + ki * dy)
    ni = -dy + (ki * dx - kr * dy)
    ex, ey = nr / det, ni / det
    small = (ex * ex + ey * ey) <= 1e-6 * d2_lens
    use = is_image & small & jnp.isfinite(ex + ey)
    x = jnp.where(use, x + ex, x)
    y = jnp.where(use, y + ey, y)
    ax = x - s
    ia = 1.0 / (ax * ax + y * y)
    ib = 1.0 / (x * x + y * y)
    ar, ai = ax * ia, y * ia
    br, bi = x * ib, y * ib
    kr = m1 * (ar * ar - ai * ai) + m2 * (br * br - bi * bi)
    ki = 2.0 * (m1 * ar * ai + m2 * br * bi)
    k2 = kr * kr + ki * ki
    mag = jnp.sum(jnp.where(is_image, 1.0 / jnp.abs(1.0 - k2), 0.0), axis=0)
    ok = ((n_img == 3) | (n_img == 5)) & jnp.isfinite(mag)
    return jnp.where(ok, mag, jnp.nan), is_image, ok


def classify(zeta: Array, z: Array, s: Array, q: Array) -> tuple[Array, Array, Array]:
    """Magnification, image mask and validity from the five roots.

    Args:
        zeta: source positions in the solver frame, shape (...).
        z: the five roots, shape (..., 5).
        s, q: broadcastable to ``zeta``.

    Real images are the roots whose lens-equation residual, divided by the local stretch
    ``1 + |κ|`` of the map (the image-position error it implies) and by the distance to the nearest
    lens, is below :data:`IMAGE_TOL`; their number must be 3 or 5.
    Returns ``(A, is_image (..., 5), ok)``; ``A`` is NaN where not ok.
    """
    zt = jnp.moveaxis(z, -1, 0)
    mag, is_image, ok = _classify_t(zeta.real, zeta.imag, zt.real, zt.imag, s, q)
    return mag, jnp.moveaxis(is_image, 0, -1), ok


# ---------------------------------------------------------------------------------------------
# independent points


def solve_points(zeta: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """All five roots for independent source positions (solver frame). Returns (roots, converged)."""
    coeffs = lens_polynomial(zeta, s, q)
    return solve_full(coeffs, initial_guess(zeta, s, q))


def _implicit_root_jvp(primals, tangents, roots):
    """Tangent of polynomial roots: ``dz = −(Σ dc_k z^(5−k)) / p'(z)`` (implicit-function theorem)."""
    zeta, s, q = primals
    c, dc = jax.jvp(lens_polynomial, (zeta, s, q), tangents)
    z = jax.lax.stop_gradient(roots)
    # uncertified points carry NaN roots; give them distinct finite stand-ins so that the linear
    # map stays finite (reverse mode multiplies its coefficients by zero cotangents there)
    z = jnp.where(jnp.isfinite(z), z, 2.0 + jnp.arange(z.shape[-1]) * 1j)
    c_ = c[..., None, :]
    dc_ = dc[..., None, :]
    p = jnp.broadcast_to(c_[..., 0], z.shape)
    dp = jnp.zeros_like(z)
    dpc = jnp.broadcast_to(dc_[..., 0], z.shape)
    for k in range(1, 6):
        dp = dp * z + p
        p = p * z + c_[..., k]
        dpc = dpc * z + dc_[..., k]
    return -dpc / dp


def solve_certified(zeta: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """Full solve plus the trajectory solver's certificate: returns (roots (..., 5), certified).

    Aberth's own stopping rule (every correction below 1e-13) can stall next to a caustic, where
    two roots nearly coincide and converge slowly although they are accurate; the certificate is
    the one used along trajectories instead: after one more Newton step the correction must be at
    most ``STEP_TOL`` times the distance to the nearest other root, and no two roots may be closer
    than ``MIN_SEP``.
    """
    z, _ = solve_points(zeta, s, q)
    cr, ci = _coeffs_t(zeta, s, q)
    x, y = jnp.moveaxis(z.real, -1, 0), jnp.moveaxis(z.imag, -1, 0)
    x, y, corr2 = _newton_t(cr, ci, x, y)
    certified = jnp.all(_root_certificate(corr2, x, y, s) & jnp.isfinite(x + y), axis=0)
    return jnp.moveaxis(x + 1j * y, 0, -1), certified


@jax.custom_jvp
def roots_points(zeta: Array, s: Array, q: Array) -> Array:
    """Differentiable roots (..., 5) at independent positions; NaN where they are not certified."""
    z, certified = solve_certified(zeta, s, q)
    return jnp.where(certified[..., None], z, jnp.nan)


@roots_points.defjvp
def _roots_points_jvp(primals, tangents):
    roots = roots_points(*primals)
    return roots, _implicit_root_jvp(primals, tangents, roots)


def magnification_points(x: Array, y: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """Point-source magnification at independent positions (centre-of-mass frame, θ_E).

    All arguments broadcast together. Returns ``(A, ok)``; differentiable in all arguments.
    """
    x, y, s, q = jnp.broadcast_arrays(x, y, s, q)
    x, q = _lighter_companion(x, q)
    zeta = to_solver_frame(x, y, s, q)
    z = roots_points(zeta, s, q)
    mag, _, ok = classify(zeta, z, s, q)
    return _far_field(x, y, s, q, mag, ok)


def _lighter_companion(x: Array, q: Array) -> tuple[Array, Array]:
    """Map q > 1 to 1/q by mirroring the frame (x → −x), so the solver frame is always centred on
    the lighter body. The magnification is unchanged (the two bodies swap roles and places)."""
    flip = q > 1.0
    return jnp.where(flip, -x, x), jnp.where(flip, 1.0 / jnp.where(flip, q, 1.0), q)


#: far field: beyond ``FAR_BASE + FAR_PER_S·s`` (θ_E) from the centre of mass the three images
#: (major, and one next to each lens) are found by Newton's method on the lens equation from their
#: asymptotic positions, without the polynomial, which is ill-conditioned there (the pair of roots
#: next to each lens is only ~m/r apart). Checked against 40-digit solutions in the tests.
FAR_BASE = 10.0
FAR_PER_S = 3.0


def _far_field_images(x: Array, y: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """Magnification from the three far-field images (CoM frame in, q ≤ 1). Returns (A, ok)."""
    m2 = q / (1.0 + q)
    m1 = 1.0 - m2
    zeta = to_solver_frame(x, y, s, q)
    c = s * m1  # centre of mass in the solver frame (companion at 0, primary at s)
    w = zeta - c
    aw2 = jnp.maximum(jnp.real(w * jnp.conj(w)), 1e-30)
    major = c + 0.5 * w * (1.0 + jnp.sqrt(1.0 + 4.0 / aw2))
    near1 = s - m1 / jnp.conj(zeta - s)
    near2 = -m2 / jnp.conj(zeta)
    z = jnp.stack([major, near1, near2], axis=0)
    for _ in range(6):
        zb = jnp.conj(z)
        r = zeta - (z - m1 / (zb - s) - m2 / zb)
        kappa = m1 / (zb - s) ** 2 + m2 / zb**2
        det = 1.0 - jnp.real(kappa * jnp.conj(kappa))
        z = z + (r - kappa * jnp.conj(r)) / det
    zb = jnp.conj(z)
    resid = jnp.abs(zeta - (z - m1 / (zb - s) - m2 / zb))
    kappa = m1 / (zb - s) ** 2 + m2 / zb**2
    k2 = jnp.real(kappa * jnp.conj(kappa))
    d_lens = jnp.minimum(jnp.abs(z), jnp.abs(z - s))
    ok = jnp.all(resid <= IMAGE_TOL * d_lens * (1.0 + jnp.sqrt(k2)), axis=0)
    # the three images must be distinct (each near its own attractor)
    ok &= (jnp.abs(z[0] - z[1]) > 0) & (jnp.abs(z[1] - z[2]) > 0) & (jnp.abs(z[0] - z[2]) > 0)
    mag = jnp.sum(1.0 / jnp.abs(1.0 - k2), axis=0)
    return jnp.where(ok, mag, jnp.nan), ok


def _far_field(x: Array, y: Array, s: Array, q: Array, mag: Array, ok: Array) -> tuple[Array, Array]:
    """Replace the polynomial result by the far-field images beyond ``FAR_BASE + FAR_PER_S·s``.

    Skipped (``lax.cond``) when no point is that far, the common case for points near the peak,
    where it cost as much as the polynomial solve itself."""
    far = x * x + y * y > (FAR_BASE + FAR_PER_S * s) ** 2

    def replace(_):
        # evaluate the far-field formula at a harmless position where it is not used
        xs = jnp.where(far, x, FAR_BASE + FAR_PER_S * s + 1.0)
        ys = jnp.where(far, y, 0.0)
        mag_far, ok_far = _far_field_images(xs, ys, s, q)
        return jnp.where(far, mag_far, mag), jnp.where(far, ok_far, ok)

    return jax.lax.cond(jnp.any(far), replace, lambda _: (mag, ok), None)


# ---------------------------------------------------------------------------------------------
# trajectories


def _extrapolation_weights(h1: Array, h2: Array, h3: Array) -> tuple[Array, Array, Array]:
    """Lagrange weights predicting a value at arc position 0 from nodes −h1, −h1−h2, −h1−h2−h3.

    Quadratic where all three spacings are positive, linear where only the first two are, constant
    otherwise (start of a segment, repeated times, padding).
    """
    tiny = 1e-12
    g1 = h1 > tiny
    g2 = g1 & (h2 > tiny)
    g3 = g2 & (h3 > tiny)
    h2s = jnp.where(g2, h2, 1.0)
    h3s = jnp.where(g3, h3, 1.0)
    a1 = -h1
    a2 = a1 - h2s
    a3 = a2 - h3s
    q1 = a2 * a3 / ((a1 - a2) * (a1 - a3))
    q2 = -a1 * a3 / ((a1 - a2) * (a2 - a3))
    q3 = a1 * a2 / ((a1 - a3) * (a2 - a3))
    l1 = (h1 + h2s) / h2s
    l2 = -h1 / h2s
    w1 = jnp.where(g3, q1, jnp.where(g2, l1, 1.0))
    w2 = jnp.where(g3, q2, jnp.where(g2, l2, 0.0))
    w3 = jnp.where(g3, q3, 0.0)
    return w1, w2, w3


def _to_t(z: Array) -> tuple[Array, Array]:
    return z.real.T, z.imag.T


def _segment_scan(zeta: Array, s: Array, q: Array, want_roots: bool, want_images: bool = False) -> tuple:
    """Magnification along segments. ``zeta`` (M, L) (segment, step); ``s``, ``q`` shape (M,).

    The first point of each segment is solved in full (Aberth). Each later step predicts the roots
    by quadratic extrapolation in arc length from the three previous steps, corrects them with
    Newton steps and *certifies* them on the last (``SCAN_NEWTON`` in all): the point is certified when that
    last correction is at most ``STEP_TOL`` times the distance to the nearest other root (error
    left about ``STEP_TOL²·sep``), no two roots are closer than ``MIN_SEP`` and there are 3 or 5
    images. Nothing is repaired inside the scan (a ``cond`` there costs more than it saves): a lane
    that lags behind converges again over the next steps, and uncertified points are re-solved
    afterwards. Doing all per-point work inside the scan keeps the data in cache. The second point
    of each segment has only the first to predict from (a constant guess), so it gets
    ``FIRST_STEP_NEWTON`` Newton steps outside the scan; with two it failed the certificate on about
    two lanes in three, half of all re-solves on dense light curves.

    Returns ``(mag, ok)`` of shape (M, L) and, if ``want_roots``, the roots (M, L, 5), or if
    ``want_images`` the number of real images (M, L) (int8).
    """
    z_first, conv = solve_points(zeta[:, 0], s, q)
    mag0, img0, ok0 = classify(zeta[:, 0], z_first, s, q)
    ok0 = ok0 & conv

    def step(hist, zt, n_newton=SCAN_NEWTON):
        x1, y1, x2, y2, x3, y3, p1, p2, p3 = hist
        cr, ci = _coeffs_t(zt, s, q)
        w1, w2, w3 = _extrapolation_weights(jnp.abs(zt - p1), jnp.abs(p1 - p2), jnp.abs(p2 - p3))
        x = w1 * x1 + w2 * x2 + w3 * x3
        y = w1 * y1 + w2 * y2 + w3 * y3
        for _ in range(n_newton):
            x, y, corr2 = _newton_t(cr, ci, x, y)
        mag, img, ok = _classify_t(zt.real, zt.imag, x, y, s, q)
        ok &= jnp.all(_root_certificate(corr2, x, y, s), axis=0)
        if want_roots:
            out = (mag, ok, x, y)
        elif want_images:
            out = (mag, ok, jnp.sum(img, axis=0).astype(jnp.int8))
        else:
            out = (mag, ok)
        return (x, y, x1, y1, x2, y2, zt, p1, p2), out

    x0, y0 = _to_t(z_first)
    z0 = zeta[:, 0]
    hist = (x0, y0, x0, y0, x0, y0, z0, z0, z0)
    # per output: mag, ok (M, L) and, with want_roots, root parts (5, M, L); the step axis is last
    if want_roots:
        first = [(mag0, ok0, x0, y0)]
    elif want_images:
        first = [(mag0, ok0, jnp.sum(img0, axis=-1).astype(jnp.int8))]
    else:
        first = [(mag0, ok0)]
    if zeta.shape[1] > 1:
        hist, out1 = step(hist, zeta[:, 1], FIRST_STEP_NEWTON)
        first.append(out1)
    cols = [jnp.stack(parts, axis=-1) for parts in zip(*first, strict=True)]
    if zeta.shape[1] > 2:
        _, outs = jax.lax.scan(step, hist, zeta[:, 2:].T)
        cols = [jnp.concatenate([c, jnp.moveaxis(o, 0, -1)], axis=-1)
                for c, o in zip(cols, outs, strict=True)]
    mag, ok = cols[0], cols[1]
    if want_images and not want_roots:
        return mag, ok, cols[2]
    if not want_roots:
        return mag, ok
    # roots: (5, M, L) parts -> (M, L, 5)
    roots = jnp.moveaxis(cols[2] + 1j * cols[3], 0, -1)
    return mag, ok, roots


def _resolve_uncertified(zeta: Array, s: Array, q: Array, mag: Array, ok: Array, roots: Array | None,
                         n_img: Array | None = None):
    """Solve the uncertified points of flat arrays (P,) again from scratch, a chunk at a time.

    Points that still fail keep ``ok = False`` and get NaN magnification (and NaN roots; an image
    count of 0). Returns ``(mag, ok, roots)``, and ``n_img`` too when it is given.
    """
    p = zeta.shape[0]
    chunk = min(p, max(64, p // 64))

    def body(state):
        mag, ok, roots, n_img, todo = state
        idx = jnp.nonzero(todo, size=chunk, fill_value=p)[0]
        take = lambda a: jnp.take(a, idx, axis=0, mode="clip")  # noqa: E731
        zt, st, qt = take(zeta), take(s), take(q)
        zf, certified = solve_certified(zt, st, qt)
        mf, imf, okf = classify(zt, zf, st, qt)
        okf = okf & certified
        mag = mag.at[idx].set(jnp.where(okf, mf, jnp.nan), mode="drop")
        ok = ok.at[idx].set(okf, mode="drop")
        if roots is not None:
            roots = roots.at[idx].set(jnp.where(okf[:, None], zf, jnp.nan), mode="drop")
        if n_img is not None:
            counts = jnp.where(okf, jnp.sum(imf, axis=-1), 0).astype(n_img.dtype)
            n_img = n_img.at[idx].set(counts, mode="drop")
        return mag, ok, roots, n_img, todo.at[idx].set(False, mode="drop")

    mag, ok, roots, n_img, _ = jax.lax.while_loop(lambda st: jnp.any(st[4]), body,
                                                  (mag, ok, roots, n_img, ~ok))
    return (mag, ok, roots) if n_img is None else (mag, ok, roots, n_img)


def _trajectory_solve(zeta: Array, s: Array, q: Array, want_roots: bool, want_images: bool = False) -> tuple:
    """Segments (M, L) solved and their uncertified points re-solved: ``(mag, ok)`` (M, L), plus the
    roots (M, L, 5) with ``want_roots`` or else the image counts (M, L) with ``want_images``."""
    m, seg = zeta.shape
    res = _segment_scan(zeta, s, q, want_roots, want_images)
    flat = (zeta.reshape(-1), jnp.repeat(s, seg), jnp.repeat(q, seg))
    roots = res[2].reshape(m * seg, 5) if want_roots else None
    n_img = res[2].reshape(-1) if want_images and not want_roots else None
    out = _resolve_uncertified(*flat, res[0].reshape(-1), res[1].reshape(-1), roots, n_img)
    mag, ok = out[0].reshape(m, seg), out[1].reshape(m, seg)
    if want_roots:
        return mag, ok, out[2].reshape(m, seg, 5)
    return (mag, ok, out[3].reshape(m, seg)) if want_images else (mag, ok)


def trajectory_roots(zeta: Array, s: Array, q: Array, segment: int | None = None
                     ) -> tuple[Array, Array, Array]:
    """Certified magnification, validity and roots along trajectories (not differentiable).

    Args:
        zeta: solver-frame source positions (M, L), ordered along each row.
        s, q: shape (M,), with q <= 1 (mirror the frame for q > 1, see ``_lighter_companion``).
        segment: points per warm-started segment; each row is cut into segments solved side by
            side (by default :func:`default_segment`). Solving whole rows as single segments
            leaves the scan a few lanes wide and latency-bound (10× slower on 20 rows of 1000).

    Returns:
        ``(A, ok, roots)`` of shapes (M, L), (M, L), (M, L, 5); roots of uncertified points are NaN.
    """
    m, n = zeta.shape
    mag, ok, roots = _trajectory_solve(*_to_segments(zeta, s, q, segment), want_roots=True)
    return (mag.reshape(m, -1)[:, :n], ok.reshape(m, -1)[:, :n], roots.reshape(m, -1, 5)[:, :n])


def _to_segments(zeta: Array, s: Array, q: Array, segment: int | None) -> tuple[Array, Array, Array]:
    """Rows ``zeta`` (M, N) cut into warm-started segments of ``segment`` points (by default
    :func:`default_segment`), the last padded by repeating the row's last point: returns the
    segments (M·S, L) and their ``s``, ``q`` (M·S,). Row i's points are rows ``i·S … i·S+S−1``,
    so ``a.reshape(M, -1)[:, :N]`` undoes it."""
    m, n = zeta.shape
    segment = default_segment(m, n) if segment is None else segment
    segment = max(2, min(segment, n))
    n_seg = -(-n // segment)
    zp = jnp.pad(zeta, ((0, 0), (0, n_seg * segment - n)), mode="edge").reshape(m * n_seg, segment)
    return zp, jnp.repeat(s, n_seg), jnp.repeat(q, n_seg)


@jax.custom_jvp
def _magnification_segments(zeta: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """Certified magnification and validity (M, L) along segments ``zeta`` (M, L); ``s``, ``q`` (M,)."""
    return _trajectory_solve(zeta, s, q, want_roots=False)


@_magnification_segments.defjvp
def _magnification_segments_jvp(primals, tangents):
    zeta, s, q = primals
    dzeta, ds, dq = tangents
    mag, ok, roots = _trajectory_solve(zeta, s, q, want_roots=True)
    shape = zeta.shape
    ss, qq = jnp.broadcast_to(s[:, None], shape), jnp.broadcast_to(q[:, None], shape)
    dss, dqq = jnp.broadcast_to(ds[:, None], shape), jnp.broadcast_to(dq[:, None], shape)
    droots = _implicit_root_jvp((zeta, ss, qq), (dzeta, dss, dqq), roots)
    _, dmag = jax.jvp(
        lambda a, b, c, z: classify(a, z, b, c)[0], (zeta, ss, qq, roots), (dzeta, dss, dqq, droots)
    )
    return (mag, ok), (dmag, np.zeros(ok.shape, dtype=jax.dtypes.float0))


def default_segment(n_curves: int, n_points: int) -> int:
    """Warm-start segment length: long segments amortize the cold start of each segment, enough
    segments keep every scan step wide enough to vectorize."""
    total = n_curves * n_points
    seg = 128
    while seg > 16 and total // seg < 512:
        seg //= 2
    return seg


def magnification_trajectory_images(
    x: Array, y: Array, s: Array, q: Array, segment: int | None = None
) -> tuple[Array, Array, Array]:
    """:func:`magnification_trajectory` and the number of real images at every point (int8: 3, or 5
    with the source inside a caustic; 0 where ``ok`` is False). Not differentiable (for simulation:
    the image count gives the event classes of :mod:`mulens_sbi.data.classes` at no extra solve).
    Points beyond the far-field radius have 3 images."""
    b, n = x.shape
    x, q_row = _lighter_companion(x, q[:, None])
    q = q_row[:, 0]
    zeta = to_solver_frame(x, y, s[:, None], q[:, None])
    mag, ok, n_img = _trajectory_solve(*_to_segments(zeta, s, q, segment), want_roots=False, want_images=True)
    cut = lambda a: a.reshape(b, -1)[:, :n]  # noqa: E731
    mag, ok, n_img = cut(mag), cut(ok), cut(n_img)
    far = x * x + y * y > (FAR_BASE + FAR_PER_S * s[:, None]) ** 2
    mag, ok = _far_field(x, y, s[:, None], q[:, None], mag, ok)
    n_img = jnp.where(far, jnp.int8(3), n_img)
    return mag, ok, jnp.where(ok, n_img, jnp.int8(0))


def magnification_trajectory(
    x: Array, y: Array, s: Array, q: Array, segment: int | None = None
) -> tuple[Array, Array]:
    """Point-source magnification along ordered source trajectories (centre-of-mass frame, θ_E).

    Args:
        x, y: positions of shape (B, N), ordered along each trajectory (irregular spacing and gaps
            are fine; unordered points are still correct but cost more re-solves).
        s, q: shape (B,).
        segment: points per warm-started segment (segments are solved in parallel); by default
            chosen from the problem size by :func:`default_segment`.

    Returns:
        ``(A, ok)`` of shape (B, N); differentiable in all arguments.
    """
    b, n = x.shape
    x, q_row = _lighter_companion(x, q[:, None])
    q = q_row[:, 0]
    zeta = to_solver_frame(x, y, s[:, None], q[:, None])
    mag, ok = _magnification_segments(*_to_segments(zeta, s, q, segment))
    mag, ok = mag.reshape(b, -1)[:, :n], ok.reshape(b, -1)[:, :n]
    return _far_field(x, y, s[:, None], q[:, None], mag, ok)
