"""Finite-source binary-lens magnification (uniform and linearly limb-darkened sources).

Frame and units: MulensModel v3's centre-of-mass frame (primary at ``x = +s·q/(1+q)``, companion at
``x = −s/(1+q)``), lengths in θ_E. Limb darkening is linear with MulensModel's ``Γ``
(``I(r) ∝ 1 − Γ·(1 − 3/2·sqrt(1 − r²/ρ²))``; VBMicrolensing's ``a1 = 3Γ/(2 + Γ)``).

Method, per point:

1. *Far field.* The point-source images (warm-started along each trajectory) give ``A0`` and, by
   automatic differentiation through two Newton steps of the lens equation (exact to third order),
   the Laplacian ``∇²A`` at the source centre. A disc of radius ``r`` then has
   ``A ≈ A0 + r²/8·∇²A`` (quadrupole; ×(1 − Γ/5) for a limb-darkened disc).
2. *Routing.* The quadrupole value is kept only where the source is far from every caustic (a lower
   bound on the distance to the sampled caustics, :func:`mulens_sbi.lensing.caustics.caustics`,
   exceeds ``FAR_DIST·r``; the caustic sampling gap is included in the bound so that a small
   caustic between samples cannot be missed) *and* the quadrupole is small (``|Q| < FAR_QUAD·A0``,
   where the neglected hexadecapole is about ``4·(Q/A)²·A``). Everything else is integrated.
3. *Contour integration* (Green's theorem on the image boundaries). The source boundary
   ``ζ(θ) = c + r·e^{iθ}`` is sampled, the five roots are found (warm-started along the boundary),
   real images are classified, and images are linked between neighbouring samples (mutual nearest
   image of the same parity). The signed area is ``Σ p·[½·Im(z̄_a z_b) + Δθ²/12·Im(z̄'_a z'_b)]``
   (chord plus parabolic correction, ``dz/dθ = (dζ/dθ − κ·conj(dζ/dθ))/(1 − |κ|²)``), plus closing
   chords (with a parabolic correction from the unit tangents) where a pair of images of opposite
   parity appears or disappears at the critical curve. Per-segment error estimates drive adaptive
   bisection of θ in fixed-size passes until the summed estimate is below ``REL_TOL`` of the area;
   an item that does not converge within the sample budget is reported ``ok = False`` (NaN).
4. *Limb darkening* by annuli: ``A = (1 − Γ)·A_u(ρ) + (3Γ/2)·∫₀^{π/2} A_u(ρ sin t)·sin³t dt`` with
   Gauss–Legendre in ``t``; each annulus is routed (far field or contour) on its own.

Fixed shapes throughout: the points routed to contour integration are compacted
(``jnp.nonzero(size=…)``) and processed in chunks inside a ``lax.scan`` whose empty chunks are
skipped by ``lax.cond`` (a real branch, not vmapped). The adaptive sampling is computed under
``stop_gradient``; the final area is a differentiable function of the sampled image positions (one
Newton step from the stopped roots), so ``jax.grad`` works through the whole function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from mulens_sbi.lensing import point_source
from mulens_sbi.lensing.caustics import caustics
from mulens_sbi.lensing.polynomial import jacobian_kappa, lens_equation, lens_polynomial
from mulens_sbi.lensing.roots import solve_full

# ---- accuracy and routing knobs ------------------------------------------------------------------
#: target relative error of each contour integral (summed error estimate / area)
REL_TOL = 1e-3
#: far-field (quadrupole) only where the lower bound on the caustic distance exceeds FAR_DIST·r ...
FAR_DIST = 4.0
#: ... and the quadrupole term is below FAR_QUAD·A0
FAR_QUAD = 2e-3
#: caustic samples per branch (φ grid) for the routing test
N_CAUSTIC = 256
#: contour sampling: initial samples, samples added per pass, capacity
N_INIT = 64
N_ADD = 64
N_CAP = 512
#: items (source boundaries) per contour chunk
CHUNK = 32
#: Gauss–Legendre nodes of the limb-darkening radial integral
N_ANNULI = 8

_GL_T, _GL_W = np.polynomial.legendre.leggauss(N_ANNULI)
#: annulus radii as fractions of ρ and their weights (without the 3Γ/2 factor)
_ANN_T = 0.25 * np.pi * (_GL_T + 1.0)
_ANN_FRAC = np.sin(_ANN_T)
_ANN_W = 0.25 * np.pi * _GL_W * np.sin(_ANN_T) ** 3
_SENTINEL = 10.0
#: weights of the error-estimate terms (segment misfit, parabolic term, closing term, closing chord²)
ERR_SEG, ERR_PARAB, ERR_CLOSE, ERR_D2 = 1.0, 0.0, 1.0, 0.0


# ---- far field ------------------------------------------------------------------------------------
def _polish(z: Array, zeta: Array, s: Array, q: Array) -> Array:
    """One Newton step of the complex lens equation at image estimates ``z`` (solver frame)."""
    res = lens_equation(z, s, q) - zeta
    kap = jacobian_kappa(z, s, q)
    det = 1.0 - jnp.abs(kap) ** 2
    return z - (res - kap * jnp.conj(res)) / det


def _mag_from_images(xy: Array, z0: Array, mask: Array, s: Array, q: Array) -> Array:
    """Point-source magnification at ``xy`` (solver frame, 2 reals) from stopped images ``z0`` (5,).

    Two Newton steps make it exact to third order in the displacement, so first and second
    derivatives by AD are exact.
    """
    zeta = xy[0] + 1j * xy[1]
    z = jax.lax.stop_gradient(z0)
    z = _polish(z, zeta, s, q)
    z = _polish(z, zeta, s, q)
    det = 1.0 - jnp.abs(jacobian_kappa(z, s, q)) ** 2
    return jnp.sum(jnp.where(mask, 1.0 / jnp.abs(jnp.where(mask, det, 1.0)), 0.0))


def _far_field_one(zeta: Array, z0: Array, mask: Array, s: Array, q: Array) -> tuple[Array, Array]:
    xy = jnp.stack([zeta.real, zeta.imag])
    f = lambda v: _mag_from_images(v, z0, mask, s, q)  # noqa: E731
    hess = jax.hessian(f)(xy)
    return f(xy), hess[0, 0] + hess[1, 1]


_far_field = jax.vmap(_far_field_one)


def _caustic_lower_bound(zc: Array, s: Array, q: Array) -> Array:
    """Lower bound on the distance from source centres ``zc`` (B, N) (CoM frame) to the caustics.

    ``min_j(|zc − C_j| − g_j)`` with ``g_j`` the longer of the two chords from caustic sample ``C_j``
    to its neighbours on the same branch (a safe bound on how far the caustic strays between
    samples).
    """
    cau = jax.vmap(lambda ss, qq: caustics(ss, qq, N_CAUSTIC))(s, q)  # (B, 4, n)
    # chords to the neighbours on the same branch (the branch ends join other branches: no wrap)
    d = jnp.abs(jnp.diff(cau, axis=-1))
    gap = jnp.maximum(jnp.pad(d, ((0, 0), (0, 0), (1, 0))), jnp.pad(d, ((0, 0), (0, 0), (0, 1))))
    cau = cau.reshape(cau.shape[0], -1)
    gap = gap.reshape(gap.shape[0], -1)

    def one_row(args):
        z, c, g = args
        return jnp.min(jnp.abs(z[:, None] - c[None, :]) - g[None, :], axis=-1)

    return jax.lax.map(one_row, (zc, cau, gap))


# ---- contour integration ------------------------------------------------------------------------
def _link(theta: Array, z: Array, img: Array, ok_pt: Array, n: Array, zc: Array, r: Array,
          s: Array, q: Array) -> tuple[Array, Array]:
    """Area (signed sum) and per-segment error estimate for one boundary.

    Args:
        theta: (cap,) sorted sample angles, the first ``n`` valid.
        z: (cap, 5) image-plane roots (solver frame), differentiable.
        img: (cap, 5) real-image mask; ok_pt: (cap,) sample validity (3 or 5 images).
        zc, r: source centre (solver frame) and radius; s, q: lens.

    Returns ``(area, err)`` with ``err`` of shape (cap,) (segment j joins sample j to the next one;
    +inf marks a segment whose linking is inconsistent; 0 on unused slots).
    """
    cap = theta.shape[0]
    j = jnp.arange(cap)
    valid = j < n
    nxt = jnp.where(j + 1 < n, j + 1, 0)
    dth = jnp.where(j + 1 < n, theta[nxt] - theta, theta[0] + 2.0 * jnp.pi - theta)
    e = jnp.exp(1j * theta)
    dzeta = 1j * r * e
    kap = jacobian_kappa(z, s, q)
    det = 1.0 - jnp.abs(kap) ** 2
    par = det > 0
    dz = (dzeta[:, None] - kap * jnp.conj(dzeta[:, None])) / det
    sgn = jnp.where(par, 1.0, -1.0)

    zn, dzn, imgn, parn = z[nxt], dz[nxt], img[nxt], par[nxt]
    allowed = img[:, :, None] & imgn[:, None, :] & (par[:, :, None] == parn[:, None, :])
    dist = jnp.abs(zn[:, None, :] - z[:, :, None])  # [seg, a, b]
    dm = jnp.where(allowed, dist, jnp.inf)
    fwd = jnp.argmin(dm, axis=2)  # best b for each a
    bwd = jnp.argmin(dm, axis=1)  # best a for each b
    has_f = jnp.any(allowed, axis=2)
    has_b = jnp.any(allowed, axis=1)
    mutual = has_f & (jnp.take_along_axis(bwd, fwd, axis=1) == jnp.arange(5)[None, :])
    mutual_b = has_b & (jnp.take_along_axis(fwd, bwd, axis=1) == jnp.arange(5)[None, :])

    zb = jnp.take_along_axis(zn, fwd, axis=1)
    dzb = jnp.take_along_axis(dzn, fwd, axis=1)
    h = dth[:, None]
    chord = 0.5 * jnp.imag(jnp.conj(z) * zb)
    parab = h * h / 12.0 * jnp.imag(jnp.conj(dz) * dzb)
    seg_area = jnp.where(mutual, sgn * (chord + parab), 0.0)
    delta = (zb - z) - 0.5 * (dz + dzb) * h
    # remaining error of the parabolic rule ~ (cubic misfit of the chord) × (change of tangent)
    seg_err = jnp.where(mutual, ERR_SEG * jnp.abs(delta) * jnp.abs(dzb - dz) * h
                        + ERR_PARAB * jnp.abs(parab), 0.0)

    # images that disappear after sample j / appear at sample j+1: one pair of opposite parity
    dis = img & ~mutual
    app = imgn & ~mutual_b
    n_dis_p = jnp.sum(dis & par, axis=1)
    n_dis_m = jnp.sum(dis & ~par, axis=1)
    n_app_p = jnp.sum(app & parn, axis=1)
    n_app_m = jnp.sum(app & ~parn, axis=1)
    good = ((n_dis_p == n_dis_m) & (n_dis_p <= 1) & (n_app_p == n_app_m) & (n_app_p <= 1)
            & ok_pt & ok_pt[nxt])

    def closing(zz, dd, mask_p, mask_m, appear):
        ip = jnp.argmax(mask_p, axis=1)
        im = jnp.argmax(mask_m, axis=1)
        zp = jnp.take_along_axis(zz, ip[:, None], axis=1)[:, 0]
        zm = jnp.take_along_axis(zz, im[:, None], axis=1)[:, 0]
        up = jnp.take_along_axis(dd, ip[:, None], axis=1)[:, 0]
        um = jnp.take_along_axis(dd, im[:, None], axis=1)[:, 0]
        up = up / jnp.maximum(jnp.abs(up), 1e-300)
        um = um / jnp.maximum(jnp.abs(um), 1e-300)
        d2 = jnp.abs(zp - zm) ** 2
        # disappear: + track ends at zp, path goes to zm, then back along the − track
        # appear: path comes back along the − track to zm, jumps to zp, continues along +
        ch = jnp.where(appear, 0.5 * jnp.imag(jnp.conj(zm) * zp), 0.5 * jnp.imag(jnp.conj(zp) * zm))
        cu = jnp.where(appear, jnp.imag(jnp.conj(-um) * up), jnp.imag(jnp.conj(up) * (-um))) * d2 / 12.0
        has = jnp.any(mask_p, axis=1)
        return jnp.where(has, ch + cu, 0.0), jnp.where(has, ERR_CLOSE * jnp.abs(cu) + ERR_D2 * d2, 0.0)

    a_dis, e_dis = closing(z, dz, dis & par, dis & ~par, False)
    a_app, e_app = closing(zn, dzn, app & parn, app & ~parn, True)
    both = (n_dis_p > 0) & (n_app_p > 0)
    area_j = jnp.sum(seg_area, axis=1) + a_dis + a_app
    err_j = jnp.sum(seg_err, axis=1) + e_dis + e_app
    err_j = jnp.where(both, err_j + jnp.abs(area_j) + r * r, err_j)
    err_j = jnp.where(good, err_j, jnp.inf)
    area = jnp.sum(jnp.where(valid, area_j, 0.0))
    err = jnp.where(valid, err_j, 0.0)
    return area, err


def _classify_samples(theta, z, zc, r, s, q):
    zeta = zc[:, None] + r[:, None] * jnp.exp(1j * theta)
    _, img, ok = point_source.classify(zeta, z, s[:, None], q[:, None])
    return img, ok


_link_v = jax.vmap(_link)


def _plan(zc: Array, r: Array, s: Array, q: Array) -> tuple[Array, Array, Array, Array]:
    """Adaptive boundary sampling for K items (no gradients). Returns (theta, roots, n, converged)."""
    k = zc.shape[0]
    theta0 = jnp.broadcast_to(jnp.linspace(0.0, 2.0 * jnp.pi, N_INIT, endpoint=False), (k, N_INIT))
    zeta0 = zc[:, None] + r[:, None] * jnp.exp(1j * theta0)
    _, _, z0 = point_source._trajectory_solve(zeta0, s, q, want_roots=True)
    pad = N_CAP - N_INIT
    theta = jnp.concatenate([theta0, jnp.full((k, pad), _SENTINEL)], axis=1)
    z = jnp.concatenate([z0, jnp.zeros((k, pad, 5), z0.dtype)], axis=1)
    n = jnp.full((k,), N_INIT)

    def evaluate(theta, z, n):
        zs = jnp.where(jnp.isfinite(z), z, 0.0)
        img, okp = _classify_samples(theta, zs, zc, r, s, q)
        area, err = _link_v(theta, zs, img, okp, n, zc, r, s, q)
        conv = jnp.sum(err, axis=1) <= REL_TOL * jnp.abs(area)
        return area, err, conv

    def cond(state):
        theta, z, n, conv, _ = state
        return jnp.any(~conv & (n + N_ADD <= N_CAP))

    def body(state):
        theta, z, n, conv, err = state
        work = ~conv & (n + N_ADD <= N_CAP)
        e_sel = jnp.where(jnp.isfinite(err), err, 1e300)
        top_e, top_j = jax.lax.top_k(e_sel, N_ADD)
        jj = jnp.arange(N_CAP)[None, :]
        nxt = jnp.where(jj + 1 < n[:, None], jj + 1, 0)
        dth = jnp.where(jj + 1 < n[:, None], jnp.take_along_axis(theta, nxt, 1) - theta,
                        theta[:, :1] + 2.0 * jnp.pi - theta)
        th_sel = jnp.take_along_axis(theta, top_j, 1)
        new_th = jnp.mod(th_sel + 0.5 * jnp.take_along_axis(dth, top_j, 1), 2.0 * jnp.pi)
        take = work[:, None] & (top_e > 0)
        new_th = jnp.where(take, new_th, _SENTINEL)
        start = jnp.take_along_axis(z, top_j[:, :, None], 1)
        zeta_new = zc[:, None] + r[:, None] * jnp.exp(1j * new_th)
        z_new, _ = solve_full(lens_polynomial(zeta_new, s[:, None], q[:, None]), start, max_iter=60)
        slots = n[:, None] + jnp.arange(N_ADD)[None, :]
        rows = jnp.arange(k)[:, None]
        theta = theta.at[rows, slots].set(new_th, mode="drop")
        z = z.at[rows, slots].set(z_new, mode="drop")
        order = jnp.argsort(theta, axis=1)
        theta = jnp.take_along_axis(theta, order, 1)
        z = jnp.take_along_axis(z, order[:, :, None], 1)
        n = n + jnp.sum(take, axis=1)
        _, err, conv_new = evaluate(theta, z, n)
        return theta, z, n, jnp.where(work, conv_new, conv), err

    _, err0, conv0 = evaluate(theta, z, n)
    theta, z, n, conv, _ = jax.lax.while_loop(cond, body, (theta, z, n, conv0, err0))
    return theta, z, n, conv


def contour_magnification(zc: Array, r: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """Uniform-disc magnification of K source discs by contour integration (solver frame).

    Args:
        zc: complex source centres (K,), solver frame; r: radii (K,); s, q: (K,).

    Returns ``(A, ok)`` of shape (K,). Differentiable in all arguments (the sample angles are
    held fixed under differentiation).
    """
    sg = jax.lax.stop_gradient
    theta, z0, n, conv = _plan(sg(zc), sg(r), sg(s), sg(q))
    zs = jnp.where(jnp.isfinite(z0), z0, 0.0)
    img, okp = _classify_samples(theta, zs, sg(zc), sg(r), sg(s), sg(q))
    zeta = zc[:, None] + r[:, None] * jnp.exp(1j * theta)
    z = _polish(zs, zeta[:, :, None], s[:, None, None], q[:, None, None])
    area, err = _link_v(theta, z, img, okp, n, zc, r, s, q)
    mag = area / (jnp.pi * r * r)
    ok = conv & jnp.isfinite(mag) & (mag > 0)
    return jnp.where(ok, mag, jnp.nan), ok


# ---- assembly -------------------------------------------------------------------------------------
def _finite_core(zeta: Array, z0: Array, ok0: Array, lb: Array, s: Array, q: Array, rho: Array,
                 gamma: Array) -> tuple[Array, Array]:
    """Flat points (P,): solver-frame centres, point-source roots, caustic distance bound, params."""
    p = zeta.shape[0]
    zs = jnp.where(jnp.isfinite(z0), z0, 0.0)
    _, img, okc = point_source.classify(jax.lax.stop_gradient(zeta), jax.lax.stop_gradient(zs),
                                        jax.lax.stop_gradient(s), jax.lax.stop_gradient(q))
    a0, lap = _far_field(zeta, zs, img, s, q)
    ok0 = ok0 & okc & jnp.isfinite(a0) & jnp.isfinite(lap)

    frac = jnp.concatenate([jnp.ones(1), jnp.asarray(_ANN_FRAC)])  # (1 + N_ANNULI,)
    radii = rho[:, None] * frac[None, :]  # (P, M)
    wts = jnp.concatenate(
        [(1.0 - gamma)[:, None], 1.5 * gamma[:, None] * jnp.asarray(_ANN_W)[None, :]], axis=1
    )
    quad = radii**2 / 8.0 * lap[:, None]
    far = a0[:, None] + quad
    used = jnp.concatenate([jnp.ones((p, 1), bool), jnp.broadcast_to((gamma != 0)[:, None],
                                                                      (p, N_ANNULI))], axis=1)
    lb_ = jax.lax.stop_gradient(lb)[:, None]
    need = (lb_ < FAR_DIST * radii) | (jnp.abs(quad) > FAR_QUAD * jnp.abs(a0[:, None]))
    need = jax.lax.stop_gradient(need & used & ok0[:, None])

    m = need.size
    n_chunks = -(-m // CHUNK)
    flat_need = need.reshape(-1)
    count = jnp.sum(flat_need)
    idx = jnp.nonzero(flat_need, size=n_chunks * CHUNK, fill_value=m)[0]
    pt = jnp.minimum(idx // need.shape[1], p - 1)
    it_zc = zeta[pt].reshape(n_chunks, CHUNK)
    it_r = radii.reshape(-1)[jnp.minimum(idx, m - 1)].reshape(n_chunks, CHUNK)
    it_s = s[pt].reshape(n_chunks, CHUNK)
    it_q = q[pt].reshape(n_chunks, CHUNK)

    def chunk(carry, xs):
        c, zc_c, r_c, s_c, q_c = xs
        run = c * CHUNK < count
        res = jax.lax.cond(
            run,
            lambda a: contour_magnification(*a),
            lambda a: (jnp.zeros(CHUNK), jnp.zeros(CHUNK, bool)),
            (zc_c, r_c, s_c, q_c),
        )
        return carry, res

    _, (mag_c, ok_c) = jax.lax.scan(chunk, None, (jnp.arange(n_chunks), it_zc, it_r, it_s, it_q))
    vals = far.reshape(-1).at[idx].set(mag_c.reshape(-1), mode="drop")
    oks = jnp.ones(m, bool).at[idx].set(ok_c.reshape(-1), mode="drop")
    vals = vals.reshape(need.shape)
    oks = oks.reshape(need.shape)
    mag = jnp.sum(jnp.where(used, vals * wts, 0.0), axis=1)
    ok = ok0 & jnp.all(oks | ~used, axis=1) & jnp.isfinite(mag)
    return jnp.where(ok, mag, jnp.nan), ok


def binary_finite_trajectory(x: Array, y: Array, s: Array, q: Array, rho: Array,
                             gamma: Array) -> tuple[Array, Array]:
    """Finite-source binary-lens magnification along ordered trajectories.

    Args:
        x, y: source centres (θ_E, centre-of-mass frame), shape (B, N), ordered along each row.
        s, q, rho, gamma: shape (B,): separation, mass ratio, source radius (θ_E), linear
            limb-darkening Γ (0 = uniform).

    Returns:
        ``(A, ok)`` of shape (B, N); ``A`` is NaN where ``ok`` is False. Jittable, differentiable.
    """
    b, n = x.shape
    zeta = point_source.to_solver_frame(x, y, s[:, None], q[:, None])
    _, ok0, roots = point_source._trajectory_solve(jax.lax.stop_gradient(zeta), jax.lax.stop_gradient(s),
                                                   jax.lax.stop_gradient(q), want_roots=True)
    lb = _caustic_lower_bound(jax.lax.stop_gradient(x + 1j * y), jax.lax.stop_gradient(s),
                              jax.lax.stop_gradient(q))
    rep = lambda a: jnp.repeat(a, n)  # noqa: E731
    mag, ok = _finite_core(zeta.reshape(-1), roots.reshape(-1, 5), ok0.reshape(-1), lb.reshape(-1),
                           rep(s), rep(q), rep(rho), rep(gamma))
    return mag.reshape(b, n), ok.reshape(b, n)


def binary_finite_points(x: Array, y: Array, s: Array, q: Array, rho: Array,
                         gamma: Array) -> tuple[Array, Array]:
    """Finite-source binary-lens magnification at independent positions (broadcasting arrays).

    Same conventions as :func:`binary_finite_trajectory`; each point is solved from scratch.
    """
    x, y, s, q, rho, gamma = jnp.broadcast_arrays(*(jnp.asarray(a, dtype=float)
                                                    for a in (x, y, s, q, rho, gamma)))
    shape = x.shape
    x, y, s, q, rho, gamma = (a.reshape(-1) for a in (x, y, s, q, rho, gamma))
    zeta = point_source.to_solver_frame(x, y, s, q)
    sg = jax.lax.stop_gradient
    roots, conv = point_source.solve_points(sg(zeta), sg(s), sg(q))
    lb = jax.vmap(lambda zz, ss, qq: _caustic_lower_bound(zz[None, None], ss[None], qq[None])[0, 0])(
        sg(x + 1j * y), sg(s), sg(q))
    mag, ok = _finite_core(zeta, roots, conv, lb, s, q, rho, gamma)
    return mag.reshape(shape), ok.reshape(shape)
