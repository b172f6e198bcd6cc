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
3. *Contour integration* (:mod:`mulens_sbi.lensing.contour`): the magnification of a uniform disc
   is ``(1/2π)∮ Σ_images (1 + Re(κ·e^{−2iθ}))/|1 − |κ|²| dθ`` around the source circle; caustic
   crossings are bracketed and bisected, the square-root singularities there are removed by a
   substitution, and arcs are integrated by Gauss–Kronrod 7/15 panels with refinement levels until
   the error estimate is below 1e-4; a circle that cannot be certified is ``ok = False`` (NaN).
4. *Limb darkening* by annuli: ``A = (1 − Γ)·A_u(ρ) + (3Γ/2)·∫₀^{π/2} A_u(ρ sin t)·sin³t dt`` with
   Gauss–Legendre in ``t`` (two panels of :data:`N_LD_NODES` nodes, split where the annulus
   radius equals the nearest caustic distance; six per panel left errors up to 1.4e-3 where a
   caustic lies inside the disc, twelve 3.5e-4); each annulus is routed (far field or contour)
   on its own.

Fixed shapes throughout: the circles routed to contour integration are compacted
(``jnp.nonzero(size=…)``) and processed chunk by chunk inside ``while_loop``s, so only they pay.
Gradients in every parameter. The far-field part is differentiated by JAX. Contour-integrated
values carry exact derivatives with respect to the source centre (hence t_0, u_0, t_E, alpha) and
radius (rho; and Γ through the annulus weights), from boundary means of the point-source
magnification, and with respect to s and q by differentiating the quadrature rule itself
(:func:`_contour`); a point whose lens derivative cannot be formed has a NaN tangent, never a
silent zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from mulens_sbi.lensing import contour, point_source
from mulens_sbi.lensing.caustics import caustics
from mulens_sbi.lensing.polynomial import jacobian_kappa, lens_equation

# ---- accuracy and routing knobs ------------------------------------------------------------------
#: far-field (quadrupole) only where the lower bound on the caustic distance exceeds FAR_DIST·r ...
FAR_DIST = 4.0
#: ... and the quadrupole term is below FAR_QUAD·A0
FAR_QUAD = 2e-3
#: caustic samples per branch (φ grid) for the routing test
N_CAUSTIC = 256
#: Gauss–Legendre nodes per panel of the limb-darkening radial integral; two panels in t, split where
#: the annulus radius ρ·sin t equals the distance to the nearest caustic sample (the kink of A(r))
N_LD_NODES = 12
N_ANNULI = 2 * N_LD_NODES
_GL_X, _GL_W = np.polynomial.legendre.leggauss(N_LD_NODES)


def _annuli(rho: Array, d_caustic: Array) -> tuple[Array, Array]:
    """Radii fractions (P, N_ANNULI) and weights ∫ sin³t dt (without 3Γ/2) of the LD annuli."""
    ratio = d_caustic / rho
    t0 = jnp.where(ratio < 0.98, jnp.arcsin(jnp.clip(ratio, 0.0, 0.98)), jnp.pi / 3.0)
    x = jnp.asarray(0.5 * (_GL_X + 1.0))
    w = jnp.asarray(0.5 * _GL_W)
    t0_ = t0[:, None]
    t = jnp.concatenate([t0_ * x, t0_ + (0.5 * jnp.pi - t0_) * x], axis=1)
    wt = jnp.concatenate([t0_ * w, (0.5 * jnp.pi - t0_) * w], axis=1) * jnp.sin(t) ** 3
    return jnp.sin(t), wt


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
    """``A0`` and the Laplacian ``∂²A/∂x² + ∂²A/∂y²`` at one source centre, by forward-over-forward
    differentiation along x and y (the full ``jax.hessian``, forward-over-reverse, cost 8 µs a point).
    The nested JVP along x also returns ``A0`` itself."""
    xy = jnp.stack([zeta.real, zeta.imag])
    f = lambda v: _mag_from_images(v, z0, mask, s, q)  # noqa: E731

    def second(e: Array) -> tuple[Array, Array]:
        """``(A0, d²A/de²)``: the primal and the second directional derivative along ``e``."""
        (a0, _), (_, d2) = jax.jvp(lambda v: jax.jvp(f, (v,), (e,)), (xy,), (e,))
        return a0, d2

    eye = jnp.eye(2, dtype=xy.dtype)
    (a0, d2x), (_, d2y) = second(eye[0]), second(eye[1])
    return a0, d2x + d2y


_far_field = jax.vmap(_far_field_one)


def _caustic_lower_bound(zc: Array, s: Array, q: Array) -> tuple[Array, Array, Array]:
    """Lower bound on the distance from source centres ``zc`` (B, N) (CoM frame) to the caustics,
    the distance to the polyline through the caustic samples (both (B, N)), and the caustic samples
    (B, 4, N_CAUSTIC).

    ``min_j(|zc − C_j| − g_j)`` with ``g_j`` the longer of the two chords from caustic sample ``C_j``
    to its neighbours on the same branch (a safe bound on how far the caustic strays between
    samples).
    """
    cau = jax.vmap(lambda ss, qq: caustics(ss, qq, N_CAUSTIC))(s, q)  # (B, 4, n)
    samples = cau
    # chords to the neighbours on the same branch (the branch ends join other branches: no wrap)
    d = jnp.abs(jnp.diff(cau, axis=-1))
    gap = jnp.maximum(jnp.pad(d, ((0, 0), (0, 0), (1, 0))), jnp.pad(d, ((0, 0), (0, 0), (0, 1))))
    seg_a = cau[..., :-1].reshape(cau.shape[0], -1)
    seg_d = (cau[..., 1:] - cau[..., :-1]).reshape(cau.shape[0], -1)
    cau = cau.reshape(cau.shape[0], -1)
    gap = gap.reshape(gap.shape[0], -1)

    def one_row(args):
        z, c, g, a, d = args
        lb = jnp.min(jnp.abs(z[:, None] - c[None, :]) - g[None, :], axis=-1)
        # distance to the polyline through the samples (better than to the samples themselves)
        w = z[:, None] - a[None, :]
        tt = jnp.clip(jnp.real(w * jnp.conj(d[None, :])) / jnp.maximum(jnp.abs(d[None, :]) ** 2, 1e-300),
                      0.0, 1.0)
        return lb, jnp.min(jnp.abs(w - tt * d[None, :]), axis=-1)

    lb, dist = jax.lax.map(one_row, (zc, cau, gap, seg_a, seg_d))
    return lb, dist, samples


@jax.custom_jvp
def _contour(zeta: Array, r: Array, s: Array, q: Array, z_c: Array, todo: Array, cau: Array | None,
             row: Array | None, src: Array) -> Array:
    """Contour-integrated uniform-disc values (M,) where ``todo`` (NaN where not certified, 0 elsewhere).

    ``r``, ``todo`` and ``src`` are per circle (M,); ``zeta``, ``s``, ``q``, ``z_c`` and ``row`` per
    source centre (P,), circle ``i`` having centre ``src[i]`` (see
    :func:`mulens_sbi.lensing.contour.contour_flat`).

    Derivatives (the JVP rule below): ``A = (1/πr²)∬_disc A_ps`` gives ``∂A/∂c_x + i·∂A/∂c_y =
    (2/r)·a_exp`` and ``∂A/∂r = (2/r)(a_mean − A)`` from the boundary means of the point-source
    magnification; ``∂A/∂s`` and ``∂A/∂q`` at a fixed solver-frame centre come from differentiating
    the quadrature rule (:func:`mulens_sbi.lensing.contour.contour_flat` with ``derivs``), which is
    only done when the lens tangents are not zero. The rule is linear in the tangents, so
    ``jax.grad`` works too.
    """
    return contour.contour_flat(zeta, r, s, q, z_c, todo, cau=cau, row=row, src=src)[0]


def _contour_jvp(primals, tangents):
    zeta, r, s, q, z_c, todo, cau, row, src = primals
    dzeta, dr, ds, dq = tangents[:4]
    zero = jax.custom_derivatives.SymbolicZero
    lens = not (isinstance(ds, zero) and isinstance(dq, zero))
    out = contour.contour_flat(zeta, r, s, q, z_c, todo, derivs=lens, cau=cau, row=row, src=src)
    value, _, a_mean, a_exp = out[:4]
    # tangents per circle (the centre's ones for its centre-level arguments)
    dense = lambda t, like: jnp.zeros_like(like) if isinstance(t, zero) else t  # noqa: E731
    per_circle = lambda t, like: jnp.take(dense(t, like), src, axis=0)  # noqa: E731
    dzeta, dr = per_circle(dzeta, zeta), dense(dr, r)
    g = 2.0 / jnp.where(r > 0, r, 1.0)
    d = g * (jnp.real(a_exp) * jnp.real(dzeta) + jnp.imag(a_exp) * jnp.imag(dzeta) + (a_mean - value) * dr)
    if lens:
        d_sq = out[4]
        d = d + d_sq[:, 0] * per_circle(ds, s) + d_sq[:, 1] * per_circle(dq, q)
    return value, jnp.where(todo, d, 0.0)


_contour.defjvp(_contour_jvp, symbolic_zeros=True)


# ---- assembly -------------------------------------------------------------------------------------
def _finite_core(zeta: Array, z0: Array, ok0: Array, lb: Array, dmin: Array, s: Array, q: Array, rho: Array,
                 gamma: Array, cau: Array | None, row: Array | None) -> tuple[Array, Array, Array]:
    """Flat points (P,): solver-frame centres, point-source roots, caustic distance bound, params;
    ``cau`` (R, 4, N_CAUSTIC) the lenses' caustics (CoM frame) and ``row`` (P,) each point's lens.
    Returns the magnification, its validity and the point source's image count at the centre (int8,
    0 where the point-source solve failed)."""
    p = zeta.shape[0]
    zs = jnp.where(jnp.isfinite(z0), z0, 0.0)
    _, img, okc = point_source.classify(jax.lax.stop_gradient(zeta), jax.lax.stop_gradient(zs),
                                        jax.lax.stop_gradient(s), jax.lax.stop_gradient(q))
    a0, lap = _far_field(zeta, zs, img, s, q)
    ok0 = ok0 & okc & jnp.isfinite(a0) & jnp.isfinite(lap)

    ann_frac, ann_w = _annuli(jax.lax.stop_gradient(rho), jax.lax.stop_gradient(dmin))
    frac = jnp.concatenate([jnp.ones((p, 1)), ann_frac], axis=1)  # (P, 1 + N_ANNULI)
    radii = rho[:, None] * frac
    wts = jnp.concatenate([(1.0 - gamma)[:, None], 1.5 * gamma[:, None] * ann_w], axis=1)
    quad = radii**2 / 8.0 * lap[:, None]
    far = a0[:, None] + quad
    used = jnp.concatenate([jnp.ones((p, 1), bool), (gamma != 0)[:, None] & (ann_w > 0)], axis=1)
    lb_ = jax.lax.stop_gradient(lb)[:, None]
    need = (lb_ < FAR_DIST * radii) | (jnp.abs(quad) > FAR_QUAD * jnp.abs(a0[:, None]))
    need = jax.lax.stop_gradient(need & used & ok0[:, None])

    # circles (P·(1 + N_ANNULI),): each annulus slot refers to its point's centre, lens and roots
    src = jnp.repeat(jnp.arange(p), need.shape[1])
    flat_need = need.reshape(-1)
    mag_c = _contour(zeta, radii.reshape(-1), s, q, zs, flat_need,
                     None if cau is None else jax.lax.stop_gradient(cau), row, src)
    ok_c = jnp.isfinite(mag_c)
    vals = jnp.where(flat_need, mag_c, far.reshape(-1))
    oks = jnp.where(flat_need, ok_c, True)
    vals = vals.reshape(need.shape)
    oks = oks.reshape(need.shape)
    mag = jnp.sum(jnp.where(used, vals * wts, 0.0), axis=1)
    ok = ok0 & jnp.all(oks | ~used, axis=1) & jnp.isfinite(mag)
    n_img = jnp.where(ok0, jnp.sum(img, axis=-1), 0).astype(jnp.int8)
    return jnp.where(ok, mag, jnp.nan), ok, n_img


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
    mag, ok, _ = binary_finite_trajectory_images(x, y, s, q, rho, gamma)
    return mag, ok


def binary_finite_trajectory_images(x: Array, y: Array, s: Array, q: Array, rho: Array,
                                    gamma: Array) -> tuple[Array, Array, Array]:
    """:func:`binary_finite_trajectory` and the point source's image count at every centre (int8: 5
    inside a caustic, 3 outside, 0 where the point-source solve failed; not differentiated): the
    caustic-crossing class test of :mod:`mulens_sbi.data.classes` at no extra solve."""
    b, n = x.shape
    zeta = point_source.to_solver_frame(x, y, s[:, None], q[:, None])
    _, ok0, roots = point_source.trajectory_roots(
        jax.lax.stop_gradient(zeta), jax.lax.stop_gradient(s), jax.lax.stop_gradient(q)
    )
    lb, dmin, cau = _caustic_lower_bound(jax.lax.stop_gradient(x + 1j * y), jax.lax.stop_gradient(s),
                                         jax.lax.stop_gradient(q))
    rep = lambda a: jnp.repeat(a, n)  # noqa: E731
    mag, ok, n_img = _finite_core(zeta.reshape(-1), roots.reshape(-1, 5), ok0.reshape(-1), lb.reshape(-1),
                                  dmin.reshape(-1), rep(s), rep(q), rep(rho), rep(gamma), cau,
                                  rep(jnp.arange(b)))
    return mag.reshape(b, n), ok.reshape(b, n), n_img.reshape(b, n)


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
    lb, dmin = jax.vmap(lambda zz, ss, qq: tuple(
        a[0, 0] for a in _caustic_lower_bound(zz[None, None], ss[None], qq[None])[:2]))(
        sg(x + 1j * y), sg(s), sg(q))
    # independent points may each have their own lens: the contour path computes caustics per circle
    mag, ok, _ = _finite_core(zeta, roots, conv, lb, dmin, s, q, rho, gamma, None, None)
    return mag.reshape(shape), ok.reshape(shape)
