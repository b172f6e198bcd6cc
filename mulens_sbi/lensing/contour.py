"""Uniform-disc binary-lens magnification by a boundary integral over the *source* circle.

Frame: the solver frame of :mod:`mulens_sbi.lensing.polynomial` (companion at 0, primary at ``s``),
lengths in θ_E.

Formula. For a source disc of radius ``r`` with boundary ``ζ(θ) = c + r·e^{iθ}``, Green's theorem
gives the total image area as ``½ Σ_i p_i ∮ Im(z̄_i dz_i)`` (``p_i`` the parity, the sum over the
images of the boundary point). The conjugate lens equation ``z̄ = ζ̄ + m1/(z − s) + m2/z`` turns
``z̄ dz`` into ``ζ̄ dz`` plus exact logarithmic differentials whose parity-weighted sum vanishes (the
oriented boundary of the image region winds zero times around each lens, which lies outside it),
and ``∮ Im(c̄ dz) = 0``. With ``dz/dθ = (dζ − κ·dζ̄)/(1 − |κ|²)`` this leaves

    A = (1/2π) ∮ F(θ) dθ,   F(θ) = Σ_images (1 + Re(κ_i·e^{−2iθ})) / |1 − |κ_i|²|,

a plain one-dimensional integral of image *magnifications* around the source circle: no image
positions, no linking of images between samples, no cancellation between distant image tracks.
``F`` is analytic except where the circle crosses a caustic, where a pair of images appears with
``F ~ |θ − θ_c|^{−½}``.

Method, per source circle:

1. *Crossings.* ``N0`` uniform samples around the circle, plus :data:`N_HINT` samples placed
   between the circle's intersections with the sampled caustic polyline (so that a crossing pair
   closer together than the uniform spacing, e.g. a cusp poking in, is still straddled), give the
   number of images per sample (roots warm-started from the point-source roots at the centre by
   Newton and Ehrlich–Aberth steps, each certified — see :func:`_solve_warm`). Each change of the
   count brackets a caustic crossing. Newton's method on the fold conditions from the bracket
   (:func:`_fold_locate`) locates most of them directly; the others are bisected and then located
   to rounding level by secant steps on the merging pair's discriminant ``(z_a − z_b)²`` (the
   residual test behind the counts cannot resolve a crossing closer than ~1e-7 θ_E in the source
   plane). Where rounding noise in
   the ill-conditioned polynomial keeps the secant from converging, Newton's method on the fold
   conditions of the lens equation (:func:`_fold_newton`) polishes the crossing instead; a circle
   with a crossing located by neither, or whose crossings lose their order, is refused. On each
   arc the image count is then known, and the images at a node are the roots with the smallest
   residuals.
   A circle without crossings first tries the trapezoid rule on its uniform samples
   (:func:`_trapezoid`); only the circles it cannot certify go on to the quadrature below.
2. *Quadrature.* Between consecutive crossings ``θ_a < θ_b`` the substitution
   ``θ = θ_a + (θ_b − θ_a)·(1 − cos πu)/2`` makes the integrand analytic in ``u`` (the square-root
   singularities become regular), and each arc is split into equal ``u`` panels integrated with the
   Gauss–Kronrod 7/15 pair. A circle without crossings is one periodic arc. The error estimate
   must be below :data:`REL_TOL` of the result: QUADPACK's ``resasc·min(1, (200·|K15 − G7|/
   resasc)^1.5)`` per panel on the uniform levels (with 4 or 16 panels, ``|K15 − G7|`` alone once
   passed a value 3e-2 off), ``Σ|K15 − G7|`` (an over-estimate of the K15 error on analytic
   integrands) on the adaptive level.
3. *Levels.* Circles that do not meet the target are recomputed with four times as many panels
   (levels of :data:`LEVEL_PANELS`), compacted into narrower chunks; their crossings (step 1) are
   found once and kept with them in a small buffer per level, not recomputed. A refined value also
   counts as converged when it agrees within :data:`REL_TOL` with the previous level's (both from
   certified nodes): ``|K15 − G7|`` over-estimates the K15 error by orders of magnitude on these
   integrands, and on some circles stops shrinking while the values agree.
4. *Adaptive rounds* (:func:`_adaptive`). At the last level, a circle that is still not converged
   gets up to :data:`N_ADAPT` rounds, each cutting its :data:`N_SPLIT` panels with the largest
   ``|K15 − G7|`` (or an uncertified node) into four: narrow peaks of the integrand (a circle
   passing close to a cusp or a fold without crossing it, or holding a small caustic) are resolved
   where they are. A panel next to a crossing is cut only if the crossing's angle was refined to
   rounding level by the secant steps.

A circle that fails after the last round, has samples or nodes whose roots cannot be certified,
more than :data:`MAX_CROSS` crossings, a crossing that bisection could not bracket cleanly or that
was not located to rounding level, or a node
whose residual test disagrees with its arc's image count away from the located crossings (a crossing
pair that no sample straddled), is returned with ``ok = False`` and NaN.

Every root used is certified: after one further Newton step the correction is at most 1e-5 times
the distance to the nearest other root and no two roots are closer than 1e-7 (as in
:func:`mulens_sbi.lensing.point_source.solve_certified`, which is the fallback for roots that the
warm start does not certify). The one exception: nodes closer than :data:`NEAR_DOUBLE` to a
crossing located to rounding level, whose merging pair is a near-double root (finite, accurate to
~eps/separation, and of negligible weight).

The computation is forward-only (``stop_gradient``); it also returns the boundary means of the
point-source magnification that give the exact derivatives with respect to the source centre and
radius (:func:`contour_flat`); see :mod:`mulens_sbi.lensing.finite` for how gradients are handled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from mulens_sbi.lensing import point_source
from mulens_sbi.lensing.caustics import caustics
from mulens_sbi.lensing.polynomial import lens_polynomial
from mulens_sbi.lensing.roots import aberth_step, newton_step

#: target of the Gauss–Kronrod error estimate, relative to the magnification
REL_TOL = 1e-4
#: samples around the circle used to find the caustic crossings (a uniform grid: on a circle without
#: crossings, also a trapezoid rule; see _trapezoid)
N0 = 64
#: a trapezoid value on the N0 samples is accepted when it differs from the rule on every second
#: sample by at most TRAP_TOL of the value
TRAP_TOL = 1e-5
#: ... and the circle keeps at least TRAP_CLEAR·r from the caustic polyline (see _trapezoid)
TRAP_CLEAR = 0.25
#: extra samples placed between the circle's crossings with the caustic polyline (see _caustic_hints)
N_HINT = 16
#: caustic samples per branch for those hints
N_CAUSTIC = 256
#: most caustic crossings handled per circle (more → ok = False)
MAX_CROSS = 8
#: bisection steps locating a crossing (bracket 2π/N0 → 2π/N0·2^−N_BISECT)
N_BISECT = 20
#: source-plane distance (θ_E) from a located crossing within which the residual test's image count
#: may disagree with the arc's (false roots of the merging pair pass it there)
NEAR_CROSSING = 1e-5
#: source-plane distance (θ_E) from a crossing located to rounding level within which a node's roots
#: (a near-double pair, accurate to ~eps/separation) need not pass the certificate: its weight in
#: the integral is ~1e-9 of the arc's, and only the adaptive rounds put nodes that close
NEAR_DOUBLE = 1e-12
#: secant steps on the pair discriminant that refine each bisected crossing to rounding level
N_SECANT = 3
#: Newton steps on the fold conditions that polish a crossing where the secant steps did not
#: converge, and the last step (source plane, θ_E, relative to 1 + |centre|) that counts as converged
N_FOLD_NEWTON = 5
FOLD_STEP = 1e-12
#: Newton steps on the fold conditions that locate a crossing from its sample bracket (the first
#: attempt; brackets where they fail are bisected)
N_FOLD_LOCATE = 8
#: brackets bisected together (those the fold Newton steps did not locate: ~15% on the benchmark)
BISECT_BATCH = 16
#: crossings located together per circle of a chunk (the valid brackets are compacted: most circles
#: sent to contour integration pass near a caustic without crossing it; more brackets → more batches)
LOCATE_PER_CIRCLE = 1
#: Newton steps, then Ehrlich–Aberth steps, of a warm start (before the certifying Newton step):
#: on the benchmark's crossing samples 2 + 2 cost 640 ns a point and left 8.4% uncertified, 0 + 5
#: cost 1090 ns and left 6.7%
N_WARM_NEWTON = 2
N_WARM = 2
#: further steps for the warm starts that fail the certificate, before a full solve (15 leave no
#: failing sample or node on the benchmark circles, 7 left most bisection steps to a full solve)
N_WARM_MORE = 15
#: circles per chunk of the first stage (crossings, and the trapezoid rule where there are none)
CROSS_CHUNK = 64
#: panels per circle at each Gauss–Kronrod refinement level, and circles per chunk at that level
LEVEL_PANELS = (4, 16, 64)
LEVEL_CHUNK = (32, 16, 1)
#: the last level then cuts the N_SPLIT panels with the largest error estimate of each unconverged
#: circle into four, for up to N_ADAPT rounds (see _adaptive)
N_SPLIT = 16
N_ADAPT = 8
#: certificate (as in point_source.solve_certified)
#: with derivatives: their Kronrod–Gauss estimate must be below D_REL_TOL of s·∂A/∂s (q·∂A/∂q) plus
#: REL_TOL of A; a circle is refined until both the value and the derivatives meet their targets,
#: and a derivative ten times worse than its target at the last level is NaN
D_REL_TOL = 1e-3
STEP_TOL = 1e-5
MIN_SEP = 1e-7
#: certificate of quadrature nodes and samples: looser, because nodes cluster at the crossings,
#: where two roots nearly coincide and float64 roots are only accurate to ~eps/separation; after
#: the Newton step the error left is about NODE_STEP_TOL²·sep, a relative error of ~1e-6 in 1/|J|
NODE_STEP_TOL = 1e-3
NODE_MIN_SEP = 1e-10

# Gauss–Kronrod 7/15 on [-1, 1] (QUADPACK's table; exactness checked in the tests)
_XGK = np.array([0.991455371120812639206854697526329, 0.949107912342758524526189684047851,
                 0.864864423359769072789712788640926, 0.741531185599394439863864773280788,
                 0.586087235467691130294144845693013, 0.405845151377397166906606412076961,
                 0.207784955007898467600689403773245, 0.0])
_WGK = np.array([0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
                 0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
                 0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
                 0.204432940075298892414161999234649, 0.209482141084727828012999174891714])
GK_X = np.concatenate([-_XGK[:-1], _XGK[::-1]])
GK_WK = np.concatenate([_WGK[:-1], _WGK[::-1]])
_G7X, _G7W = np.polynomial.legendre.leggauss(7)
GK_WG = np.zeros(15)
GK_WG[1::2] = _G7W  # Gauss nodes are the odd-indexed Kronrod nodes


# ---- roots ---------------------------------------------------------------------------------------
def _root_distances(z: Array) -> Array:
    """Pairwise distances (..., 5, 5) between the five roots, ``inf`` on the diagonal."""
    d = jnp.abs(z[..., :, None] - z[..., None, :])
    return jnp.where(jnp.eye(5, dtype=bool), jnp.inf, d)


def _closest_pair(z: Array) -> tuple[Array, Array]:
    """The two roots (..., ) of the closest pair among the five (..., 5)."""
    d = _root_distances(z)
    flat = jnp.argmin(d.reshape(d.shape[:-2] + (25,)), axis=-1)
    za = jnp.take_along_axis(z, (flat // 5)[..., None], -1)[..., 0]
    zb = jnp.take_along_axis(z, (flat % 5)[..., None], -1)[..., 0]
    return za, zb


def _certify(coeffs: Array, z: Array, step_tol: float = STEP_TOL, min_sep: float = MIN_SEP
             ) -> tuple[Array, Array]:
    """One Newton step on every root and the certificate (see module docstring)."""
    c = coeffs[..., None, :]
    p = jnp.broadcast_to(c[..., 0], z.shape)
    dp = jnp.zeros_like(z)
    for k in range(1, 6):
        dp = dp * z + p
        p = p * z + c[..., k]
    corr = p / dp
    z = z - corr
    sep = jnp.min(_root_distances(z), axis=-1)
    good = (jnp.abs(corr) <= step_tol * sep) & (sep >= min_sep) & jnp.isfinite(corr)
    return z, jnp.all(good, axis=-1)


def _solve_warm(zeta: Array, s: Array, q: Array, z0: Array) -> tuple[Array, Array]:
    """Certified roots (..., 5) at ``zeta`` from nearby roots ``z0``; full solve where needed.

    ``N_WARM_NEWTON`` Newton and ``N_WARM`` Ehrlich–Aberth steps from ``z0``, then the certificate.
    The points that fail it are compacted a chunk at a time and given ``N_WARM_MORE`` further
    Aberth steps (most had only not yet converged: a root pair about to merge at a caustic converges
    slowly), and those that still fail are solved from scratch by :func:`point_source.solve_points`.
    Returns ``(roots, certified)``.
    """
    shape = zeta.shape
    coeffs = lens_polynomial(zeta, s, q)
    z = z0
    for _ in range(N_WARM_NEWTON):
        z = newton_step(coeffs, z)
    for _ in range(N_WARM):
        z, _ = aberth_step(coeffs, z)
    z, cert = _certify(coeffs, z, NODE_STEP_TOL, NODE_MIN_SEP)
    zf = zeta.reshape(-1)
    sf, qf = jnp.broadcast_to(s, shape).reshape(-1), jnp.broadcast_to(q, shape).reshape(-1)
    cf = coeffs.reshape(-1, 6)
    z, cert = z.reshape(-1, 5), cert.reshape(-1)
    n = zf.shape[0]
    chunk = min(n, max(16, n // 16))

    def body(state):
        z, cert, todo = state
        idx = jnp.nonzero(todo, size=chunk, fill_value=n)[0]
        take = lambda a: jnp.take(a, idx, axis=0, mode="clip")  # noqa: E731
        ct, zt = take(cf), take(z)
        for _ in range(N_WARM_MORE):
            zt, _ = aberth_step(ct, zt)
        zt, ok = _certify(ct, zt, NODE_STEP_TOL, NODE_MIN_SEP)

        def full(_):
            zn, _ = point_source.solve_points(take(zf), take(sf), take(qf))
            zn, cn = _certify(ct, zn, NODE_STEP_TOL, NODE_MIN_SEP)
            return jnp.where(ok[:, None], zt, zn), ok | cn

        zt, ok = jax.lax.cond(jnp.all(ok | (idx >= n)), lambda _: (zt, ok), full, None)
        z = z.at[idx].set(zt, mode="drop")
        cert = cert.at[idx].set(ok, mode="drop")
        return z, cert, todo.at[idx].set(False, mode="drop")

    z, cert, _ = jax.lax.while_loop(lambda st: jnp.any(st[2]), body, (z, cert, ~cert))
    return z.reshape(shape + (5,)), cert.reshape(shape)


def _images(zeta: Array, z: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """Image mask (..., 5) and sample validity (3 or 5 images), by :func:`_scaled_residual`."""
    img = _scaled_residual(zeta, z, s, q) <= point_source.IMAGE_TOL
    n = jnp.sum(img, axis=-1)
    return img, (n == 3) | (n == 5)


def _residual_kappa(zeta: Array, z: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """Lens-equation residual ``ζ − ζ(z)`` and ``κ`` at the roots ``z`` (..., 5) (solver frame)."""
    m2 = (q / (1.0 + q))[..., None]
    m1 = 1.0 - m2
    s_ = s[..., None]
    zb = jnp.conj(z)
    res = zeta[..., None] - (z - m1 / (zb - s_) - m2 / zb)
    kap = m1 / (zb - s_) ** 2 + m2 / zb**2
    return res, kap


def _newton_step(zeta: Array, z: Array, s: Array, q: Array) -> Array:
    """The step ``dz`` (..., 5) of one Newton iteration of the (non-analytic) lens equation at the
    roots ``z``: ``dz = (res − κ·conj(res))/(1 − |κ|²)`` (solver frame)."""
    res, kap = _residual_kappa(zeta, z, s, q)
    return (res - kap * jnp.conj(res)) / (1.0 - jnp.real(kap * jnp.conj(kap)))


def _scaled_residual(zeta: Array, z: Array, s: Array, q: Array) -> Array:
    """Lens-equation residual of each root (..., 5) over ``(1 + |κ|)·d_lens`` (``classify``'s image
    test, without its squared form), after one Newton step of the lens equation on every root.

    The polynomial roots of an image next to the companion of a small-q lens can be off by ~1e-7
    (the polynomial is ill-conditioned there) while the lens equation pins the image down: one
    lens-equation Newton step takes an image's residual to rounding level, whereas a false root has
    no solution nearby and keeps its residual. A step longer than 1e-3 of the distance to the
    nearest other root is not taken (it could carry a false root next to another root's image).
    """
    dz = _newton_step(zeta, z, s, q)
    sep = jnp.min(_root_distances(z), axis=-1)
    z = jnp.where(jnp.isfinite(dz) & (jnp.abs(dz) <= 1e-3 * sep), z + dz, z)
    res, kap = _residual_kappa(zeta, z, s, q)
    d_lens = jnp.minimum(jnp.abs(z - s[..., None]), jnp.abs(z))
    return jnp.abs(res) / ((1.0 + jnp.abs(kap)) * d_lens)


def _images_expected(zeta: Array, z: Array, s: Array, q: Array, n_expect: Array) -> tuple[Array, Array]:
    """The ``n_expect`` (3 or 5) roots with the smallest scaled residual are the images.

    Near a caustic crossing the residual test of ``classify`` cannot tell the merging pair's false
    roots (on the 3-image side) from images: their residual shrinks like the distance to the caustic.
    The arc's image count is known from the located crossings, so the images are chosen by rank.
    Returns ``(is_image (..., 5), agrees)`` where ``agrees`` says the residual test gives the same
    count (it may disagree only next to a crossing).
    """
    r = _scaled_residual(zeta, z, s, q)
    r = jnp.where(jnp.isfinite(r), r, jnp.inf)
    # each root's rank by residual (ties by index), from the 5×5 comparisons: half the cost of a
    # double argsort on XLA's CPU backend
    i = jnp.arange(5)
    rj, ri = r[..., None, :], r[..., :, None]
    ahead = (rj < ri) | ((rj == ri) & (i[None, :] < i[:, None]))
    rank = jnp.sum(ahead, axis=-1)
    img = rank < n_expect[..., None]
    n_cls = jnp.sum(r <= point_source.IMAGE_TOL, axis=-1)
    return img, n_cls == n_expect


def _pair_discriminant(z: Array) -> Array:
    """``(z_a − z_b)²`` for the closest pair of roots (..., 5): analytic along the circle, with a
    simple zero where that pair merges, i.e. at a fold-caustic crossing."""
    za, zb = _closest_pair(z)
    return (za - zb) ** 2


def _integrand(zeta: Array, z: Array, img: Array, e2: Array, s: Array, q: Array) -> Array:
    """F(θ) = Σ_images (1 + Re(κ·e^{−2iθ}))/|1 − |κ|²| with ``e2 = e^{−2iθ}`` (one lens-equation
    Newton polish of the images first), and the point-source magnification Σ 1/|1 − |κ|²|."""
    dz = _newton_step(zeta, z, s, q)
    z = jnp.where(img & jnp.isfinite(dz), z + dz, z)
    _, kap = _residual_kappa(zeta, z, s, q)
    det = 1.0 - jnp.real(kap * jnp.conj(kap))
    num = 1.0 + jnp.real(kap * e2[..., None])
    inv = jnp.where(img, 1.0 / jnp.abs(jnp.where(img, det, 1.0)), 0.0)
    return jnp.sum(num * inv, axis=-1), jnp.sum(inv, axis=-1)


# ---- one circle, one level ----------------------------------------------------------------------
def _caustic_hints(zc: Array, r: Array, s: Array, q: Array, cau: Array | None = None) -> tuple[Array, Array]:
    """Sample angles (K, N_HINT) that separate the circles' crossings with the caustic *polyline*,
    and a clearance (K,): a lower bound on the distance from each circle to the caustic, from the
    distance to the polyline (negative where they meet).

    Each circle is intersected with the segments of the sampled caustics
    (:func:`mulens_sbi.lensing.caustics.caustics`, N_CAUSTIC points per branch, solver frame); the
    midpoints between consecutive intersection angles are returned (padding repeats the first
    uniform sample). Added to the uniform samples they put a sample between the two crossings of a
    pair that the uniform samples would straddle (a cusp poking into the circle, a grazing fold).
    The polyline is only a hint: crossings are still detected from image counts. ``cau``: the
    circles' caustics (K, 4, N_CAUSTIC) in the centre-of-mass frame when already computed (a light
    curve shares one lens), else computed here.
    """
    k = zc.shape[0]
    if cau is None:
        cau = jax.vmap(lambda ss, qq: caustics(ss, qq, N_CAUSTIC))(s, q)
    cau = cau + (s / (1.0 + q))[:, None, None]
    # segments along each branch, plus each branch end joined to the nearest branch start
    end, start = cau[:, :, -1], cau[:, :, 0]
    join = jnp.take_along_axis(start, jnp.argmin(jnp.abs(end[:, :, None] - start[:, None, :]), -1), 1)
    a = jnp.concatenate([cau[:, :, :-1], end[..., None]], -1).reshape(k, -1)
    b = jnp.concatenate([cau[:, :, 1:], join[..., None]], -1).reshape(k, -1)
    d = b - a
    w = a - zc[:, None]
    # |w + t·d|² = r²: t² |d|² + 2 t Re(w d̄) + |w|² − r² = 0
    aa = jnp.maximum(jnp.abs(d) ** 2, 1e-300)
    bb = jnp.real(w * jnp.conj(d))
    cc = jnp.abs(w) ** 2 - r[:, None] ** 2
    disc = bb * bb - aa * cc
    sq = jnp.sqrt(jnp.maximum(disc, 0.0))
    ts = jnp.stack([(-bb - sq) / aa, (-bb + sq) / aa], -1)  # (K, S, 2)
    hit = ((disc > 0)[..., None] & (ts >= 0.0) & (ts < 1.0)).reshape(k, -1)
    # the first N_HINT intersections in segment order (a circle rarely meets the polyline more
    # often, and then has more crossings than MAX_CROSS anyway); compacting them before taking
    # angles and sorting costs a fifth of sorting all 2·4·N_CAUSTIC candidates per circle
    sel = jax.vmap(lambda h: jnp.nonzero(h, size=N_HINT, fill_value=0)[0])(hit)  # (K, N_HINT)
    n_hit = jnp.minimum(jnp.sum(hit, axis=1), N_HINT)
    seg, t_sel = sel // 2, jnp.take_along_axis(ts.reshape(k, -1), sel, 1)
    pt = jnp.take_along_axis(w, seg, 1) + t_sel * jnp.take_along_axis(d, seg, 1)
    hit_k = jnp.arange(N_HINT)[None, :] < n_hit[:, None]
    ang = jnp.sort(jnp.where(hit_k, jnp.mod(jnp.angle(pt), 2.0 * jnp.pi), jnp.inf), axis=1)
    nxt = jnp.roll(ang, -1, axis=1)
    last = jnp.arange(N_HINT)[None, :] == (n_hit - 1)[:, None]
    nxt = jnp.where(last, ang[:, :1] + 2.0 * jnp.pi, nxt)
    mid = jnp.mod(0.5 * (ang + nxt), 2.0 * jnp.pi)
    pad = jnp.pi / N0  # the first uniform sample
    # distance from the circle to each segment (zero where they intersect), less a margin for how far
    # the caustic strays from the chord: half the segment's length times the turning angle (up to
    # 1 rad) to its neighbours on the branch. A cusp between two samples sticks out by up to about
    # half the chord, and its neighbouring segments then point in nearly opposite directions; a
    # smooth arc strays by about a quarter of that bound (chord × turning angle / 8)
    t_near = jnp.clip(-bb / aa, 0.0, 1.0)
    d_near = jnp.abs(w + t_near * d)
    d_far = jnp.maximum(jnp.abs(w), jnp.abs(w + d))
    rr = r[:, None]
    gap = jnp.where(rr < d_near, d_near - rr, jnp.where(rr > d_far, rr - d_far, 0.0))
    h = jnp.sqrt(aa).reshape(k, 4, -1)
    u = d.reshape(k, 4, -1) / jnp.maximum(h, 1e-300)
    # |Δu| = 2 sin(turn/2) at the joints along a branch: the turning angle up to ~1 rad, above 1 from
    # 1.05 rad on (no arctangent: this runs for every segment of every circle)
    turn = jnp.abs(u[..., 1:] - u[..., :-1])
    end_pad = jnp.full(turn.shape[:2] + (1,), 2.0)  # a branch's first and its closing segment
    turn = jnp.maximum(jnp.concatenate([end_pad, turn], -1), jnp.concatenate([turn, end_pad], -1))
    margin = 0.5 * h * jnp.minimum(1.0, jnp.where(jnp.isfinite(turn), turn, 2.0))
    clear = jnp.min(gap - margin.reshape(k, -1), axis=1)
    return jnp.where(hit_k, mid, pad), clear


def _locate(zc, r, s, q, lo, hi, z_lo, z_hi, n_lo, n_hi):
    """Bisection then secant refinement of P bracketed crossings, each with its own circle and lens
    (all arrays flat over the brackets: angles (P,), roots (P, 5)). Returns the final bracket and its
    roots, ``bad`` (an ambiguous bisection step while the bracket was still wide), the crossing
    angle (secant-refined where that converged next to the bracket, else the bracket's midpoint) and
    the roots there."""
    width = jnp.maximum(hi - lo, 1e-6)  # the sample bracket, before bisection narrows it

    def bisect(_, st):
        lo, hi, z_lo, z_hi, bad, frozen = st
        mid = 0.5 * (lo + hi)
        zeta = zc + r * jnp.exp(1j * mid)
        start = jnp.where((n_lo >= n_hi)[..., None], z_lo, z_hi)
        z, cert = _solve_warm(zeta, s, q, start)
        img, okc = _images(zeta, z, s, q)
        okc = okc & cert
        nm = jnp.sum(img, axis=-1)
        clear = okc & ((nm == n_lo) | (nm == n_hi)) & ~frozen
        # an ambiguous count (the new pair is barely resolved) ends the bisection of that crossing;
        # it only matters while the bracket is still wide
        bad = bad | (~clear & ~frozen & (hi - lo > 1e-4))
        frozen = frozen | ~clear
        low_side = clear & (nm == n_lo)
        high_side = clear & (nm == n_hi)
        lo = jnp.where(low_side, mid, lo)
        hi = jnp.where(high_side, mid, hi)
        z_lo = jnp.where(low_side[..., None], z, z_lo)
        z_hi = jnp.where(high_side[..., None], z, z_hi)
        return lo, hi, z_lo, z_hi, bad, frozen

    lo, hi, z_lo, z_hi, bad, _ = jax.lax.fori_loop(
        0, N_BISECT, bisect, (lo, hi, z_lo, z_hi, jnp.zeros(lo.shape, bool), jnp.zeros(lo.shape, bool)))

    # The residual test behind the image counts cannot resolve a crossing closer than ~1e-7 θ_E in
    # the source plane (1e-3 rad on a ρ = 1e-4 circle), which is far too coarse for the quadrature's
    # endpoint substitution. Secant steps on the merging pair's discriminant D(θ) = (z_a − z_b)²,
    # which has a simple zero at the crossing, locate it to rounding level.
    def disc(th, start):
        z, cert = _solve_warm(zc + r * jnp.exp(1j * th), s, q, start)
        return _pair_discriminant(z), z, cert

    d0, _, c0 = disc(jnp.stack([lo, hi]), jnp.stack([z_lo, z_hi]))

    def secant(_, st):
        t1, t2, d1, d2, _ = st
        dd = d2 - d1
        step = jnp.real(d2 * jnp.conj(dd)) / jnp.maximum(jnp.abs(dd) ** 2, 1e-300) * (t2 - t1)
        t3 = t2 - jnp.where(jnp.isfinite(step), step, 0.0)
        d3, z3, _ = disc(t3, z_hi)
        return t2, t3, d2, d3, z3

    t1, t2, _, d2, z_sec = jax.lax.fori_loop(0, N_SECANT, secant, (lo, hi, d0[0], d0[1], z_hi))
    mid = 0.5 * (lo + hi)
    # Accept the refined crossing if the bracket's ends were certified, the steps converged onto a
    # zero of D and stayed next to the bracket. The roots at the iterates themselves cannot be
    # certified: at the crossing the pair is a double root (the certificate's separation test
    # fails by design), but D there is still computed to rounding level.
    scale = jnp.abs(d0[0]) + jnp.abs(d0[1])
    refined = (c0[0] & c0[1] & jnp.isfinite(t2) & (jnp.abs(t2 - t1) < 1e-9) & (jnp.abs(d2) <= 1e-3 * scale)
               & (jnp.abs(t2 - mid) < width))
    # Where the polynomial is ill-conditioned (a small circle far from the lens centre), D carries
    # rounding noise of ~1e-14 that leaves the secant iterates jittering ~1e-8 rad apart, and the
    # residual test behind the bisection can sit ~1e-5 rad off the crossing: the crossing is then
    # polished by Newton's method on the fold conditions of the lens equation itself
    # (:func:`_crossing_system`), which are well conditioned there.
    z_mid = _pair_midpoint(z_sec)
    theta_n, _, converged = _fold_newton(t2, z_mid, zc, r, s, q, N_FOLD_NEWTON)
    polished = c0[0] & c0[1] & converged & (jnp.abs(theta_n - mid) < width)
    theta_c = jnp.where(refined, t2, jnp.where(polished, theta_n, mid))
    return dict(lo=lo, hi=hi, z_lo=z_lo, z_hi=z_hi, bad=bad, theta_c=theta_c, z_cross=z_mid,
                refined=refined | polished)


def _fold_solve(th: Array, z: Array, zc: Array, r: Array, sq: Array, steps: int) -> tuple[Array, Array]:
    """``steps`` Newton steps on the fold conditions (:func:`_crossing_system`) of one circle from
    ``v = (θ, Re z, Im z)``: returns the final ``v`` (3,) and the last step (3,)."""
    v = jnp.stack([th, jnp.real(z), jnp.imag(z)])
    f = lambda v: _crossing_system(v, sq, zc, r)  # noqa: E731
    step = jnp.zeros(3, dtype=v.dtype)
    for _ in range(steps):
        step = jnp.linalg.solve(jax.jacfwd(f)(v), f(v))
        v = v - step
    return v, step


def _pair_midpoint(z: Array) -> Array:
    """Midpoint (...,) of the closest pair of the roots ``z`` (..., 5): next to the critical point
    where that pair merges."""
    za, zb = _closest_pair(z)
    return 0.5 * (za + zb)


def _fold_newton(th: Array, z: Array, zc: Array, r: Array, s: Array, q: Array, steps: int
                 ) -> tuple[Array, Array, Array]:
    """``steps`` Newton steps on the fold conditions (:func:`_crossing_system`) of P circles from
    angles ``th`` (P,) and points ``z`` (P,) next to the critical point (solver frame). Returns the
    crossing angles, the critical points and ``converged``: the angle is finite and its last step,
    in the source plane, at most ``FOLD_STEP·(1 + |centre|)`` (rounding level)."""

    def one(th_, z_, zc_, r_, s_, q_):
        v, step = _fold_solve(th_, z_, zc_, r_, jnp.stack([s_, q_]), steps)
        return v[0], v[1] + 1j * v[2], jnp.abs(step[0])

    th, zcrit, moved = jax.vmap(one)(th, z, zc, r, s, q)
    return th, zcrit, jnp.isfinite(th) & (moved * r <= FOLD_STEP * (1.0 + jnp.abs(zc)))


def _fold_locate(zc, r, s, q, lo, hi, z_lo, z_hi, n_lo, n_hi):
    """Newton's method on the fold conditions (:func:`_crossing_system`) for P bracketed crossings
    (flat arrays as in :func:`_locate`), started at the bracket's middle from the midpoint of the
    closest pair of roots at the end with more images (where the merging pair are two images next
    to the critical curve), else at the other end. Accepted (``refined``) where the last angle step
    is at rounding level and the crossing lies strictly inside the bracket: a point of the critical
    curve that maps onto the circle there is a caustic crossing. Returns the crossing angles, the
    critical points and ``refined``; the others are left to the bisection (:func:`_locate`)."""
    mid = 0.5 * (lo + hi)
    more = (n_lo >= n_hi)[:, None]

    def attempt(z_end):
        th, zcrit, converged = _fold_newton(mid, _pair_midpoint(z_end), zc, r, s, q, N_FOLD_LOCATE)
        return th, zcrit, converged & jnp.isfinite(zcrit) & (th > lo) & (th < hi)

    th1, z1, ok1 = attempt(jnp.where(more, z_lo, z_hi))
    th2, z2, ok2 = attempt(jnp.where(more, z_hi, z_lo))
    ok = ok1 | ok2
    th = jnp.where(ok1, th1, th2)
    return dict(theta_c=jnp.where(ok, th, mid), z_cross=jnp.where(ok1, z1, z2), refined=ok)


def _crossings(zc, r, s, q, z_c, cau=None):
    """Stage 1 for K circles. Returns a dict of crossing angles, counts and warm-start candidates."""
    k = zc.shape[0]
    ns = N0 + N_HINT
    th_u = (jnp.arange(N0) + 0.5) * (2.0 * jnp.pi / N0)
    hints, clear = _caustic_hints(zc, r, s, q, cau)
    th_all = jnp.concatenate([jnp.broadcast_to(th_u, (k, N0)), hints], 1)
    perm = jnp.argsort(th_all, axis=1)
    th0 = jnp.take_along_axis(th_all, perm, 1)
    zeta0 = zc[:, None] + r[:, None] * jnp.exp(1j * th0)
    s2, q2 = s[:, None], q[:, None]
    z0, cert0 = _solve_warm(zeta0, s2, q2, jnp.broadcast_to(z_c[:, None, :], (k, ns, 5)))
    img0, okc0 = _images(zeta0, z0, s2, q2)
    n0 = jnp.sum(img0, axis=-1)
    nxt = (jnp.arange(ns) + 1) % ns
    change = (n0 != n0[:, nxt]) & (th0 != th0[:, nxt])
    ncross = jnp.sum(change, axis=1)
    ok = jnp.all(cert0 & okc0, axis=1) & (ncross <= MAX_CROSS) & (ncross % 2 == 0)
    idx = jax.vmap(lambda c: jnp.nonzero(c, size=MAX_CROSS, fill_value=0)[0])(change)  # (K, C)
    valid = jnp.arange(MAX_CROSS)[None, :] < ncross[:, None]
    rows = jnp.arange(k)[:, None]
    br = dict(lo=th0[rows, idx], hi=th0[rows, nxt[idx]] + jnp.where(nxt[idx] == 0, 2.0 * jnp.pi, 0.0),
              z_lo=z0[rows, idx], z_hi=z0[rows, nxt[idx]], n_lo=n0[rows, idx], n_hi=n0[rows, nxt[idx]])
    # Locate only the valid brackets (most circles sent here have none, most others two). First,
    # Newton's method on the fold conditions from each bracket (:func:`_fold_locate`): no polynomial
    # solves, and it lands on the crossing for ~85% of the benchmark brackets. The rest (Newton left
    # the bracket or did not converge) are bisected (:func:`_locate`). Both passes take the valid
    # slots compacted into batches, and scatter back into the (K, MAX_CROSS) slots; empty slots keep
    # their (unrefined) sample bracket.
    n_slots = k * MAX_CROSS
    flat = {key: v.reshape((n_slots,) + v.shape[2:]) for key, v in br.items()}
    out0 = {key: flat[key] for key in ("lo", "hi", "z_lo", "z_hi")} | dict(
        bad=jnp.zeros(n_slots, bool), theta_c=0.5 * (flat["lo"] + flat["hi"]),
        z_cross=_pair_midpoint(flat["z_hi"]), refined=jnp.zeros(n_slots, bool))

    def batches(todo: Array, batch: int, locate, out: dict) -> dict:
        """Run ``locate`` on the slots ``todo`` (n_slots,), ``batch`` at a time, into ``out``."""
        n_batches = -(-n_slots // batch)
        order = jnp.nonzero(todo, size=n_batches * batch, fill_value=n_slots)[0]
        n_todo = jnp.sum(todo)

        def body(st):
            b, out = st
            sel = jax.lax.dynamic_slice(order, (b * batch,), (batch,))
            take = lambda a: jnp.take(a, sel, axis=0, mode="clip")  # noqa: E731
            circ = jnp.minimum(sel // MAX_CROSS, k - 1)
            got = locate(zc[circ], r[circ], s[circ], q[circ], *(take(flat[key]) for key in
                         ("lo", "hi", "z_lo", "z_hi", "n_lo", "n_hi")))
            out = {key: v.at[sel].set(got[key], mode="drop") for key, v in out.items() if key in got} | {
                key: v for key, v in out.items() if key not in got}
            return b + 1, out

        return jax.lax.while_loop(lambda st: st[0] * batch < n_todo, body, (jnp.int32(0), out0 | out))[1]

    flat_valid = valid.reshape(-1)
    newton_batch = min(n_slots, max(k * LOCATE_PER_CIRCLE, 2 * MAX_CROSS))
    out = batches(flat_valid, newton_batch, _fold_locate, {})
    out = batches(flat_valid & ~out["refined"], min(n_slots, BISECT_BATCH), _locate, out)
    loc = {key: v.reshape((k, MAX_CROSS) + v.shape[1:]) for key, v in out.items()}
    # a failed bisection step (uncertified or odd image count) only costs location accuracy; the
    # quadrature nodes are checked on their own, so keep going but refuse the circle if it happened
    ok = ok & ~jnp.any(loc["bad"] & valid, axis=1)
    theta_c = jnp.where(valid, loc["theta_c"], 10.0 * jnp.pi)
    # the located crossings must keep the order of their brackets, strictly: every arc (crossing a
    # to the next) must end after it starts (a polish that landed on a neighbouring crossing of a
    # cusp's pair would leave an arc of zero length)
    ta, tb = _arc_bounds(theta_c, jnp.broadcast_to(jnp.arange(MAX_CROSS), theta_c.shape), ncross)
    ok = ok & ~jnp.any(valid & ~(tb > ta), axis=1)
    # a crossing that neither the secant steps nor the fold polish located to rounding level is
    # known only to the residual test's resolution (~1e-7 θ_E in the source plane, up to 1e-3 rad
    # on a small circle): next to it the endpoint substitution misplaces the square-root
    # singularity, and on a cusp-grazing circle (two crossings 1e-9 θ_E apart) values were 1e-3 off
    ok = ok & ~jnp.any(valid & ~loc["refined"], axis=1)
    # image count on the arc that starts at each crossing
    n_arc = jnp.where(valid, br["n_hi"], n0[:, :1])
    cand_th = jnp.concatenate([th0, loc["lo"], loc["hi"]], 1)
    cand_z = jnp.concatenate([z0, loc["z_lo"], loc["z_hi"]], 1)
    # the samples' index in the uniform grid (-1: a hint) and image masks, for :func:`_trapezoid`
    u_idx = jnp.where(perm < N0, perm, -1)
    return dict(ok=ok, ncross=ncross, theta_c=theta_c, n_arc=n_arc, n_first=n0[:, 0], u_idx=u_idx, img0=img0,
                clear=clear, cand_th=cand_th, cand_z=cand_z, z_cross=loc["z_cross"], valid=valid,
                refined=loc["refined"] & valid)


def _crossing_system(v: Array, sq: Array, zc: Array, r: Array) -> Array:
    """The caustic-crossing conditions (3,) for ``v = (θ, x, y)``, ``sq = (s, q)`` (solver frame):
    the critical point ``z = x + iy`` (``|κ| = 1``) maps to the circle point ``zc + r·e^{iθ}``."""
    th, z = v[0], v[1] + 1j * v[2]
    m2 = sq[1] / (1.0 + sq[1])
    m1 = 1.0 - m2
    zb = jnp.conj(z)
    e = z - m1 / (zb - sq[0]) - m2 / zb - zc - r * jnp.exp(1j * th)
    kap = m1 / (zb - sq[0]) ** 2 + m2 / zb**2
    return jnp.stack([jnp.real(e), jnp.imag(e), jnp.real(kap * jnp.conj(kap)) - 1.0])


def _crossing_sensitivity(theta_c: Array, z_cross: Array, zc: Array, r: Array, s: Array, q: Array
                          ) -> tuple[Array, Array]:
    """``(dθ_c/d(s, q) (K, C, 2), good (K, C))``: how each located crossing moves with the lens at a
    fixed circle (solver frame), by the implicit function theorem on :func:`_crossing_system`
    started from ``z_cross`` (K, C), the critical point found with the crossing (a few Newton steps
    first make the system consistent).
    ``good`` is False where Newton did not land on the located crossing."""
    def one(th, z, zc_, r_, s_, q_):
        sq = jnp.stack([s_, q_])
        v, _ = _fold_solve(th, z, zc_, r_, sq, 4)
        jv = jax.jacfwd(lambda v: _crossing_system(v, sq, zc_, r_))(v)
        jp = jax.jacfwd(lambda sq: _crossing_system(v, sq, zc_, r_))(sq)
        dv = -jnp.linalg.solve(jv, jp)
        moved = jnp.abs(jnp.mod(v[0] - th + jnp.pi, 2.0 * jnp.pi) - jnp.pi)
        good = jnp.all(jnp.isfinite(dv)) & (moved < 1e-6)
        return dv[0], good

    b = lambda a: jnp.broadcast_to(a[:, None], theta_c.shape)  # noqa: E731
    fn = jax.vmap(jax.vmap(one))
    return fn(theta_c, z_cross, b(zc), b(r), b(s), b(q))


def _trapezoid(zc, r, s, q, cr, derivs: bool = False) -> tuple[Array, Array, dict]:
    """The trapezoid rule on the ``N0`` uniform samples of :func:`_crossings`, for circles without
    caustic crossings: ``(A, converged, extra)`` (K,), ``extra`` as in :func:`_totals`.

    Without crossings ``F(θ)`` is periodic and analytic, and the trapezoid rule on ``N`` points
    converges geometrically, like ``exp(−N·η)`` with ``η ≈ ln(1 + d/r)`` for a caustic at distance
    ``d`` from the circle. Two conditions:

    - *Clearance.* The circle keeps at least :data:`TRAP_CLEAR`·r from the caustic polyline (less
      half a segment's length, for a cusp cut off between samples; :func:`_caustic_hints`), so that
      ``η ≳ 0.22`` and no feature of ``F`` is narrower than about two sample spacings. Without it a
      limb-darkening annulus passing 2e-3·r from a small caustic inside the disc gave rules on 16,
      32 and 64 samples that agreed to 2e-6 while all missing half the integral: ``F`` there is a
      narrow spike without the power-law tails of the point-source magnification.
    - *Convergence.* The rule on all ``N0`` samples differs from the rule on every second sample by
      at most :data:`TRAP_TOL` of the value (with geometric convergence its own error is about the
      square of that), and by less than the rules on every second and every fourth sample differ
      (the convergence has set in).

    Circles that fail go on to the Gauss–Kronrod levels. With ``derivs`` the s and q derivatives of
    the rules (at a fixed solver-frame circle, through one Newton step of the lens equation, as in
    :func:`_panel_sums`) must pass the same test against their :data:`D_REL_TOL` targets.
    """
    ns = cr["u_idx"].shape[1]
    th, z, u = cr["cand_th"][:, :ns], cr["cand_z"][:, :ns], cr["u_idx"]
    zeta = zc[:, None] + r[:, None] * jnp.exp(1j * th)
    uniform = u >= 0
    w64 = jnp.where(uniform, 1.0 / N0, 0.0)
    w32 = jnp.where(uniform & (u % 2 == 0), 2.0 / N0, 0.0)
    w16 = jnp.where(uniform & (u % 4 == 0), 4.0 / N0, 0.0)

    def rules(sl, ql):
        f, aps = _integrand(zeta, z, cr["img0"], jnp.exp(-2j * th), sl[:, None], ql[:, None])
        return jnp.sum(w64 * f, 1), jnp.sum(w32 * f, 1), jnp.sum(w16 * f, 1), aps

    t64, t32, t16, aps = rules(s, q)
    d1, d2 = jnp.abs(t64 - t32), jnp.abs(t32 - t16)
    good = cr["ok"] & (cr["ncross"] == 0) & (cr["clear"] >= TRAP_CLEAR * r) & jnp.isfinite(t64) & (t64 > 0)
    conv = good & (d1 <= TRAP_TOL * t64) & (d1 <= jnp.maximum(d2, 1e-13 * t64))
    extra = dict(a_mean=jnp.sum(w64 * aps, 1), a_exp=jnp.sum(w64 * aps * jnp.exp(1j * th), 1), good=conv)
    if derivs:
        one, nil = jnp.ones_like(s), jnp.zeros_like(s)
        (ds64, ds32, ds16), (dq64, dq32, dq16) = (jax.jvp(lambda sl, ql: rules(sl, ql)[:3], (s, q), t)[1]
                                                   for t in ((one, nil), (nil, one)))

        def passes(x, d64, d32, d16):
            e1, e2 = jnp.abs(x * (d64 - d32)), jnp.abs(x * (d32 - d16))
            tol = D_REL_TOL * jnp.abs(x * d64) + REL_TOL * t64
            shrinks = e1 <= jnp.maximum(e2, 1e-13 * tol)
            return jnp.isfinite(d64) & (e1 <= (TRAP_TOL / REL_TOL) * tol) & shrinks

        d_conv = passes(s, ds64, ds32, ds16) & passes(q, dq64, dq32, dq16)
        extra.update(d_sq=jnp.stack([ds64, dq64], -1), d_ok=d_conv, d_conv=d_conv)
    return t64, conv, extra


def _uniform_panels(ncross: Array, n_panels: int) -> dict:
    """``n_panels`` panels per circle shared equally by its arcs, each arc cut into equal ``u``
    panels: arc index, ``u_lo``, ``width`` and ``active`` (K, P) (an arc gets no panel when there
    are more arcs than panels: the circle is then not converged at this level)."""
    p = n_panels
    n_arcs = jnp.maximum(ncross, 1)
    ppa = p // n_arcs  # panels per arc (0 → too many arcs for this level)
    kk = jnp.arange(p)[None, :]
    ppa_s = jnp.maximum(ppa, 1)[:, None]
    a = kk // ppa_s
    j = kk % ppa_s
    active = (a < n_arcs[:, None]) & (ppa[:, None] > 0)
    width = jnp.broadcast_to(1.0 / ppa_s, a.shape)
    return dict(arc=jnp.minimum(a, MAX_CROSS - 1), u_lo=j * width, width=width, active=active)


def _arc_end(arc: Array, ncross: Array) -> Array:
    """Index of the crossing that ends each arc (the next one; the last arc wraps to crossing 0)."""
    return jnp.minimum(jnp.where(arc + 1 < ncross[:, None], arc + 1, 0), MAX_CROSS - 1)


def _arc_bounds(theta_c: Array, arc: Array, ncross: Array) -> tuple[Array, Array]:
    """Start and end angles ``(θ_a, θ_b)`` (K, …) of the arcs ``arc``: from crossing ``a`` to the
    next, the last arc ending at crossing 0 plus 2π."""
    ta = jnp.take_along_axis(theta_c, arc, 1)
    tb = jnp.take_along_axis(theta_c, _arc_end(arc, ncross), 1)
    return ta, jnp.where(arc + 1 < ncross[:, None], tb, tb + 2.0 * jnp.pi)


def _agree(mag: Array, good: Array, before: Array, before_good: Array) -> Array:
    """Two successive evaluations (both from certified nodes) that agree within REL_TOL: counted as
    converged, since ``|K15 − G7|`` over-estimates the K15 error by orders of magnitude here."""
    return good & before_good & (jnp.abs(mag - before) <= REL_TOL * mag)


def _nodes(theta_c: Array, ncross: Array, panels: dict) -> tuple[Array, Array]:
    """Quadrature nodes θ (K, P, 15) and weights' factor w·dθ/du·du/dx (K, P, 15) of the panels.

    Panel ``[u_lo, u_lo + width]`` of arc ``a`` (from crossing ``a`` to the next) in the endpoint
    substitution ``θ = θ_a + (θ_b − θ_a)·(1 − cos πu)/2``; a circle without crossings is one
    periodic arc ``θ = 2πu``.
    """
    arc, width = panels["arc"], panels["width"]
    ta, tb = _arc_bounds(theta_c, arc, ncross)
    u = panels["u_lo"][..., None] + width[..., None] * (0.5 * (jnp.asarray(GK_X) + 1.0))  # (K, P, 15)
    du = 0.5 * width[..., None]
    crossing = (ncross > 0)[:, None, None]
    span = (tb - ta)[..., None]
    th_cos = ta[..., None] + span * 0.5 * (1.0 - jnp.cos(jnp.pi * u))
    jac_cos = span * 0.5 * jnp.pi * jnp.sin(jnp.pi * u)
    th = jnp.where(crossing, th_cos, 2.0 * jnp.pi * u)
    jac = jnp.where(crossing, jac_cos, 2.0 * jnp.pi) * du
    return th, jac


def _nearest_angle(cand: Array, th: Array) -> Array:
    """Index (N,) of the candidate angle (C,) nearest to each angle ``th`` (N,) around the circle,
    by binary search in the sorted candidates (the two neighbours, wrapping at 2π)."""
    two_pi = 2.0 * jnp.pi
    c = jnp.mod(cand, two_pi)
    order = jnp.argsort(c)
    cs = c[order]
    t = jnp.mod(th, two_pi)
    i = jnp.searchsorted(cs, t)
    lo, hi = (i - 1) % c.shape[0], i % c.shape[0]
    dist = lambda a: jnp.abs(jnp.mod(t - a + jnp.pi, two_pi) - jnp.pi)  # noqa: E731
    return order[jnp.where(dist(cs[lo]) <= dist(cs[hi]), lo, hi)]


def _panel_sums(zc, r, s, q, cr, panels: dict, derivs: bool = False, prev=None) -> dict:
    """Quadrature sums per panel for K circles, from their crossings ``cr`` (:func:`_crossings`,
    computed once per circle and reused by every level) and the panels (arc, ``u_lo``, ``width``,
    ``active``, each (K, P); see :func:`_nodes`); ``prev``: earlier nodes (angles (K, n), certified
    roots (K, n, 5)) as extra warm starts.

    Returns per panel (K, P): the Kronrod and Gauss sums ``ik``, ``ig`` of ``∫F dθ``, the panel's
    share of the boundary means ``am``, ``ae`` (see :func:`contour_flat`), ``pgood`` (every node
    certified and consistent with its arc's image count, or the panel inactive), ``nodes`` (angles
    (K, 15P), roots (K, 15P, 5)) and, with ``derivs``, the s and q derivatives of the Kronrod and
    Gauss sums (``dsk``, ``dsg``, ``dqk``, ``dqg``) and ``d_ok`` (K,) (every crossing's lens
    sensitivity formed). The derivatives differentiate the quadrature itself: in the endpoint
    substitution the integrand is analytic in ``u`` *and* in the lens parameters, so the exact
    derivative of the rule follows from the derivatives of the crossing angles
    (:func:`_crossing_sensitivity`) and of the images at the nodes (one Newton step of the lens
    equation about the converged roots gives the implicit-function derivative).
    """
    k, p = panels["arc"].shape
    arc, active = panels["arc"], panels["active"]
    th, jac = _nodes(cr["theta_c"], cr["ncross"], panels)
    thf = th.reshape(k, p * 15)
    # warm start from the nearest candidate: the samples, the two ends of every crossing bracket
    # and the earlier nodes (denser next to the crossings and the peaks)
    cand_th, cand_z = cr["cand_th"], cr["cand_z"]
    if prev is not None:
        cand_th = jnp.concatenate([cand_th, prev[0]], 1)
        cand_z = jnp.concatenate([cand_z, prev[1]], 1)
    near = jax.vmap(_nearest_angle)(cand_th, thf)
    z0 = jnp.take_along_axis(cand_z, near[..., None], 1)
    zeta = zc[:, None] + r[:, None] * jnp.exp(1j * thf)
    s2, q2 = s[:, None], q[:, None]
    z, cert = _solve_warm(zeta, s2, q2, z0)
    n_expect = jnp.where(cr["ncross"][:, None] > 0, jnp.take_along_axis(cr["n_arc"], arc, 1),
                         cr["n_first"][:, None])
    n_node = jnp.broadcast_to(n_expect[..., None], (k, p, 15)).reshape(k, p * 15)
    img, agrees = _images_expected(zeta, z, s2, q2, n_node)
    # the residual test may disagree with the arc's count only next to a crossing (see
    # _images_expected); elsewhere a disagreement is a crossing pair missed by the samples
    dth = jnp.abs(jnp.mod(thf[:, :, None] - cr["theta_c"][:, None, :] + jnp.pi, 2.0 * jnp.pi) - jnp.pi)
    near = jnp.min(dth, axis=2) * r[:, None] < NEAR_CROSSING
    okc = agrees | near
    # a node closer than NEAR_DOUBLE to a crossing located to rounding level has a near-double root
    # that no certificate can pass; its roots are finite and its weight negligible, so it counts
    dth_sharp = jnp.where(cr["refined"][:, None, :], dth, jnp.inf)
    tight = (jnp.min(dth_sharp, axis=2) * r[:, None] < NEAR_DOUBLE) & jnp.all(jnp.isfinite(z), axis=-1)
    good_node = ((cert & okc) | tight).reshape(k, p, 15)
    use = active[..., None] & good_node
    wk, wg = jnp.asarray(GK_WK), jnp.asarray(GK_WG)

    def rule(sl, ql, dth_c):
        """(K15, G7) panel sums (K, P) and the point-source boundary terms, as functions of the lens
        (and of the crossing angles through ``dth_c``, their linear change)."""
        th_l, jac_l = _nodes(cr["theta_c"] + dth_c, cr["ncross"], panels)
        th_l = th_l.reshape(k, p * 15)
        zeta_l = zc[:, None] + r[:, None] * jnp.exp(1j * th_l)
        f, aps = _integrand(zeta_l, z, img, jnp.exp(-2j * th_l), sl[:, None], ql[:, None])
        fj = jnp.where(use, f.reshape(k, p, 15) * jac_l, 0.0)
        return jnp.sum(fj * wk, axis=2), jnp.sum(fj * wg, axis=2), aps, fj

    zero = jnp.zeros_like(cr["theta_c"])
    ik, ig, aps, fj = rule(s, q, zero)
    # boundary means of the point-source magnification, for the derivatives (see contour_flat)
    fa = jnp.where(use, aps.reshape(k, p, 15) * jac, 0.0)
    out = dict(ik=ik, ig=ig, ie=_panel_error(ik, ig, fj), am=jnp.sum(fa * wk, axis=2) / (2.0 * jnp.pi),
               ae=jnp.sum(fa * jnp.exp(1j * th) * wk, axis=2) / (2.0 * jnp.pi),
               pgood=jnp.all(good_node | ~active[..., None], axis=2), nodes=(thf, z))
    if derivs:
        sens, sens_ok = _crossing_sensitivity(cr["theta_c"], cr["z_cross"], zc, r, s, q)
        sens = jnp.where(cr["valid"][..., None], sens, 0.0)

        def panel_of(sl, ql):
            return rule(sl, ql, sens[..., 0] * (sl - s)[:, None] + sens[..., 1] * (ql - q)[:, None])[:2]

        one, nil = jnp.ones_like(s), jnp.zeros_like(s)
        out["dsk"], out["dsg"] = jax.jvp(panel_of, (s, q), (one, nil))[1]
        out["dqk"], out["dqg"] = jax.jvp(panel_of, (s, q), (nil, one))[1]
        out["d_ok"] = jnp.all(sens_ok | ~cr["valid"], axis=1)
    return out


def _panel_error(ik: Array, ig: Array, fj: Array) -> Array:
    """QUADPACK's error estimate of a 7/15 panel (K, P) from its Kronrod and Gauss sums and the
    weighted node values ``fj`` (K, P, 15): ``resasc·min(1, (200·|K15 − G7|/resasc)^1.5)`` with
    ``resasc`` the Kronrod sum of ``|f − mean f|``. On a well-resolved panel it is far below
    ``|K15 − G7|``; on a panel that barely resolves a peak it is up to ~30× above, where
    ``|K15 − G7|`` alone was seen to pass by chance (4 panels on a circle with a 6e-3 rad arc
    between two crossings: estimate 9e-5 relative, error 3e-2)."""
    diff = jnp.abs(ik - ig)
    resasc = jnp.sum(jnp.asarray(GK_WK) * jnp.abs(fj - 0.5 * ik[..., None]), axis=-1)
    safe = jnp.where(resasc > 0, resasc, 1.0)
    return jnp.where(resasc > 0, resasc * jnp.minimum(1.0, (200.0 * diff / safe) ** 1.5), diff)


def _totals(ps: dict, active: Array, cr: dict, s: Array, q: Array, derivs: bool, quadpack: bool = False
            ) -> tuple[Array, Array, Array, dict]:
    """Sum the panels (:func:`_panel_sums`) of K circles: ``(A, converged, rel_err, extra)``, the
    error from QUADPACK's panel estimates (``quadpack``) or from ``Σ|K15 − G7|``;
    ``extra`` holds the boundary means ``a_mean``, ``a_exp``, ``good`` and, with ``derivs``,
    ``d_sq`` (K, 2) (``dA/ds``, ``dA/dq`` at a fixed solver-frame circle), ``d_ok`` and ``d_conv``.
    """
    two_pi = 2.0 * jnp.pi
    mag = jnp.sum(ps["ik"], axis=1) / two_pi
    err = jnp.sum(ps["ie"] if quadpack else jnp.abs(ps["ik"] - ps["ig"]), axis=1) / two_pi
    good = jnp.all(ps["pgood"], axis=1) & cr["ok"] & jnp.any(active, axis=1)
    good = good & jnp.isfinite(mag) & (mag > 0)
    conv = good & (err <= REL_TOL * mag)
    extra = dict(a_mean=jnp.sum(ps["am"], axis=1), a_exp=jnp.sum(ps["ae"], axis=1), good=good)
    if derivs:
        d_s, g_s, d_q, g_q = (jnp.sum(ps[key], axis=1) / two_pi for key in ("dsk", "dsg", "dqk", "dqg"))
        # the derivative's own Kronrod–Gauss estimate, on s·∂A/∂s and q·∂A/∂q
        e_s, e_q = jnp.abs(s * (d_s - g_s)), jnp.abs(q * (d_q - g_q))
        tol_s = D_REL_TOL * jnp.abs(s * d_s) + REL_TOL * mag
        tol_q = D_REL_TOL * jnp.abs(q * d_q) + REL_TOL * mag
        d_conv = (e_s <= tol_s) & (e_q <= tol_q)
        d_ok = ps["d_ok"] & jnp.isfinite(d_s) & jnp.isfinite(d_q) & (e_s <= 10 * tol_s) & (e_q <= 10 * tol_q)
        extra.update(d_sq=jnp.stack([d_s, d_q], axis=-1), d_ok=d_ok, d_conv=d_conv, tol_sq=(tol_s, tol_q))
    return mag, conv, err / mag, extra


def _level(zc, r, s, q, cr, level: int, derivs: bool = False, prev=None):
    """Magnification of K circles at one uniform refinement level (``LEVEL_PANELS[level]`` panels
    shared by the arcs), from their crossings ``cr`` and ``prev``, the previous level's nodes.

    Returns ``(A, converged, hopeless, rel_err, extra)``; ``extra`` as in :func:`_totals`, plus the
    ``nodes``.
    """
    panels = _uniform_panels(cr["ncross"], LEVEL_PANELS[level])
    ps = _panel_sums(zc, r, s, q, cr, panels, derivs, prev)
    # the uniform levels (4 and 16 panels) use QUADPACK's estimate: with so few panels |K15 − G7|
    # alone can pass by chance (see _panel_error); the adaptive level keeps |K15 − G7|, which cost
    # 2 µs a point less on the benchmark curves with the same values
    mag, conv, rel, extra = _totals(ps, panels["active"], cr, s, q, derivs, quadpack=True)
    extra.pop("tol_sq", None)
    # circles that cannot get better with more panels (bad samples, too many crossings, hidden
    # crossings): stop refining them
    return mag, conv, ~cr["ok"], rel, dict(extra, nodes=ps["nodes"])


def _adaptive(zc, r, s, q, cr, derivs: bool, prev, before: Array, before_good: Array):
    """The last level: ``LEVEL_PANELS[-1]`` uniform panels, then up to :data:`N_ADAPT` rounds that
    each cut the :data:`N_SPLIT` panels with the largest Kronrod–Gauss difference (or an uncertified
    node) of each unconverged circle into four.

    Narrow peaks of the integrand (a circle passing close to a cusp or a fold without crossing it,
    or holding a small caustic) are thereby resolved where they are, at the cost of one more
    evaluation of a uniform level's size per round. Converged as in :func:`_totals`, or when a
    round changes the value by at most :data:`REL_TOL` (the uniform panels' value is compared with
    the previous level's, ``before``). The uniform panels are evaluated as round 0 of the same
    loop (one traced evaluation). Returns what :func:`_level` returns.
    """
    k = zc.shape[0]
    p0 = LEVEL_PANELS[-1]
    n_new = 4 * N_SPLIT
    assert p0 == n_new, "the uniform panels are evaluated as one round of the loop"
    uniform = _uniform_panels(cr["ncross"], p0)
    hopeless = ~cr["ok"]
    cap = p0 + 3 * N_SPLIT * N_ADAPT
    # the panel table: empty slots are inactive and add nothing
    zeros = lambda dtype: jnp.zeros((k, cap), dtype)  # noqa: E731
    table = dict(arc=zeros(uniform["arc"].dtype), u_lo=zeros(float), width=zeros(float), active=zeros(bool),
                 ik=zeros(float), ig=zeros(float), ie=zeros(float), am=zeros(float), ae=zeros(complex),
                 pgood=jnp.ones((k, cap), bool))
    res = dict(mag=before, conv=jnp.zeros(k, bool), rel=jnp.full(k, jnp.inf), a_mean=jnp.zeros(k),
               a_exp=jnp.zeros(k, complex), good=before_good)
    if derivs:
        table.update({key: zeros(float) for key in ("dsk", "dsg", "dqk", "dqg")})
        res.update(d_sq=jnp.zeros((k, 2)), d_ok=jnp.zeros(k, bool), d_conv=jnp.zeros(k, bool),
                   tol_sq=(jnp.ones(k), jnp.ones(k)))
    assert prev[0].shape[1] == N_SPLIT * 15, "round 0 takes the previous level's nodes as warm starts"
    # the nodes of each slot, the warm starts of its children
    nth, nz = jnp.zeros((k, cap, 15)), jnp.zeros((k, cap, 15, 5), complex)
    rows = jnp.arange(k)[:, None]
    quarter = jnp.arange(4)

    def is_done(res):
        return (res["conv"] & res["d_conv"] if derivs else res["conv"]) | hopeless

    def split(it, table, nth, nz, res):
        """The children of the panels cut in round ``it`` ≥ 1 (K, 4S) and their slots."""
        scale = REL_TOL * jnp.where(jnp.isfinite(res["mag"]) & (res["mag"] > 0), res["mag"], 1.0)
        prio = table["ie"] / (2.0 * jnp.pi * scale[:, None])
        if derivs:
            tol_s, tol_q = (jnp.where(jnp.isfinite(t) & (t > 0), t, 1.0) for t in res["tol_sq"])
            e_s = jnp.abs(s[:, None] * (table["dsk"] - table["dsg"])) / tol_s[:, None]
            e_q = jnp.abs(q[:, None] * (table["dqk"] - table["dqg"])) / tol_q[:, None]
            prio = prio + (e_s + e_q) / (2.0 * jnp.pi)
        prio = jnp.where(table["pgood"] & jnp.isfinite(prio), prio, jnp.inf)
        # a panel at an end of an arc is cut only if that crossing's angle was refined to rounding
        # level: otherwise its children's nodes would come closer to the crossing than the angle's
        # error (a node on the wrong side takes the merging pair's false roots as images)
        arc = table["arc"]
        sharp_a = jnp.take_along_axis(cr["refined"], arc, 1)
        sharp_b = jnp.take_along_axis(cr["refined"], _arc_end(arc, cr["ncross"]), 1)
        last = table["u_lo"] + table["width"] >= 1.0 - 1e-12
        at_end = (cr["ncross"] > 0)[:, None] & (((table["u_lo"] <= 0.0) & ~sharp_a) | (last & ~sharp_b))
        prio = jnp.where(table["active"] & ~at_end, prio, -1.0)
        top, parent = jax.lax.top_k(prio, N_SPLIT)  # (K, S)
        pick = lambda key: jnp.take_along_axis(table[key], parent, 1)[..., None]  # noqa: E731
        width = pick("width") / 4.0
        child = dict(arc=jnp.broadcast_to(pick("arc"), (k, N_SPLIT, 4)),
                     u_lo=pick("u_lo") + quarter * width,
                     width=jnp.broadcast_to(width, (k, N_SPLIT, 4)),
                     active=jnp.broadcast_to(pick("active"), (k, N_SPLIT, 4)))
        # the first quarter takes its parent's slot, the other three new slots
        new_slot = p0 + 3 * N_SPLIT * (it - 1) + 3 * jnp.arange(N_SPLIT)[:, None] + quarter - 1
        slot = jnp.where(quarter == 0, parent[..., None], new_slot)
        slot = jnp.where((top >= 0.0)[..., None], slot, cap)
        # warm starts: the parents' nodes (every child lies inside its parent)
        near = (jnp.take_along_axis(nth, parent[..., None], 1).reshape(k, N_SPLIT * 15),
                jnp.take_along_axis(nz, parent[..., None, None], 1).reshape(k, N_SPLIT * 15, 5))
        return {key: v.reshape(k, n_new) for key, v in child.items()}, slot.reshape(k, n_new), near

    def body(st):
        it, table, nth, nz, res = st
        live = ~is_done(res)
        child, slot, near = split(it, table, nth, nz, res)
        # round 0: the uniform panels, warm-started from the previous level's nodes
        child, near = jax.tree.map(lambda u, c: jnp.where(it == 0, u, c), (uniform, prev), (child, near))
        slot = jnp.where(it == 0, jnp.arange(p0)[None, :], slot)
        slot = jnp.where(live[:, None], slot, cap)
        got = _panel_sums(zc, r, s, q, cr, child, derivs, near)
        g_th, g_z = got.pop("nodes")
        d_ok = got.pop("d_ok", None)
        table = {key: v.at[rows, slot].set(dict(child, **got)[key], mode="drop") for key, v in table.items()}
        nth = nth.at[rows, slot].set(g_th.reshape(k, n_new, 15), mode="drop")
        nz = nz.at[rows, slot].set(g_z.reshape(k, n_new, 15, 5), mode="drop")
        mag, conv, rel, extra = _totals(dict(table, d_ok=d_ok), table["active"], cr, s, q, derivs)
        # two successive evaluations that agree within REL_TOL also converge: the Kronrod–Gauss
        # difference over-estimates the error of K15 by orders of magnitude on these integrands
        conv = conv | _agree(mag, extra["good"], res["mag"], res["good"])
        new = dict(extra, mag=mag, conv=conv, rel=rel)
        # a circle whose value has converged keeps it while its derivatives are refined
        value_keys = ("mag", "conv", "rel", "a_mean", "a_exp", "good")
        keep_v = ~live | res["conv"]

        def update(key, old, upd):
            keep = keep_v if key in value_keys else ~live
            return jax.tree.map(lambda o, u: jnp.where(keep.reshape((-1,) + (1,) * (o.ndim - 1)), o, u),
                                old, upd)

        res = {key: update(key, res[key], new[key]) for key in res}
        return it + 1, table, nth, nz, res

    _, _, _, _, res = jax.lax.while_loop(lambda st: (st[0] <= N_ADAPT) & jnp.any(~is_done(st[4])), body,
                                         (jnp.int32(0), table, nth, nz, res))
    res.pop("tol_sq", None)
    mag, conv, rel = res.pop("mag"), res.pop("conv"), res.pop("rel")
    return mag, conv, hopeless, rel, dict(res, nodes=prev)


def contour_flat(zc: Array, r: Array, s: Array, q: Array, z_c: Array, todo: Array,
                 derivs: bool = False, cau: Array | None = None, row: Array | None = None,
                 src: Array | None = None) -> tuple[Array, ...]:
    """Uniform-disc magnification for the circles of flat arrays (M,) where ``todo`` is True.

    Args:
        zc: complex centres (solver frame); r: radii (θ_E); s, q: lens; z_c: certified point-source
            roots at the centres (M, 5) (warm starts); todo: which circles to compute.
        src: optional (M,) index of each circle's row in ``zc``, ``s``, ``q``, ``z_c`` and ``row``,
            which then hold one row per source centre (P,) (circles of one centre with several
            radii, the limb-darkening annuli, share them); ``r`` and ``todo`` stay per circle.
        derivs: also return the derivatives with respect to ``s`` and ``q`` at a fixed solver-frame
            circle (about three times the cost of the value).
        cau, row: optional caustics table (R, 4, N_CAUSTIC) (centre-of-mass frame, from
            :func:`mulens_sbi.lensing.caustics.caustics` of each circle's lens) and each circle's row
            in it (M,): saves recomputing the caustics per circle (circles of one light curve share
            their lens).

    Returns ``(A, ok, a_mean, a_exp)`` (M,): values where ``todo`` (NaN where not ok), zeros
    elsewhere, and the boundary means ``a_mean = (1/2π)∮ A_ps dθ`` and ``a_exp = (1/2π)∮ A_ps e^{iθ} dθ``
    of the point-source magnification, from the same nodes. Since ``A = (1/πr²)∬_disc A_ps``,
    ``∂A/∂c_x + i ∂A/∂c_y = (2/r)·a_exp`` and ``∂A/∂r = (2/r)(a_mean − A)``: the derivatives with
    respect to the source centre and radius (see :mod:`mulens_sbi.lensing.finite`). With
    ``derivs``, a fifth output ``d_sq`` (M, 2) holds ``(∂A/∂s, ∂A/∂q)`` from the converged level
    (NaN where they could not be formed). Inputs are not differentiated (``stop_gradient``).
    """
    sg = jax.lax.stop_gradient
    zc, r, s, q, z_c = sg(zc), sg(r), sg(s), sg(q), sg(z_c)
    m = r.shape[0]
    vals = dict(mag=jnp.zeros(m), ok=jnp.zeros(m, bool), a_mean=jnp.zeros(m),
                a_exp=jnp.zeros(m, complex), good=jnp.zeros(m, bool))
    if derivs:
        vals.update(d_sq=jnp.zeros((m, 2)), d_ok=jnp.zeros(m, bool))
    # stage 0: the crossings, and the trapezoid rule for circles without any (_trapezoid); stage
    # l ≥ 1: Gauss–Kronrod level l − 1 (_level, the last one _adaptive)
    n_lv = 1 + len(LEVEL_PANELS)
    chunks = [min(c, m) for c in (CROSS_CHUNK,) + LEVEL_CHUNK]

    def at_point(idx: Array) -> Array:
        """Rows of the point-level arrays (``zc``, ``s``, ``q``, ``z_c``, ``row``) of circles ``idx``."""
        return idx if src is None else jnp.take(src, idx, mode="clip")

    def crossings_of(idx):
        take = lambda a: jnp.take(a, at_point(idx), axis=0, mode="clip")  # noqa: E731
        cau_k = None if cau is None else jnp.take(cau, take(row), axis=0, mode="clip")
        return _crossings(take(zc), jnp.take(r, idx, mode="clip"), take(s), take(q), take(z_c), cau_k)

    # Circles that a level leaves unconverged wait, with their crossings, in that level's buffer
    # for the next level; a level runs when its buffer holds a full chunk (or nothing upstream is
    # left), deepest first. A level (l−1) chunk runs only while buffer l holds less than a chunk,
    # so buffer l never holds more than chunks[l] − 1 + chunks[l−1] circles. With them wait the
    # nodes of level l − 1 (``prev``: angles, roots), the nearest warm starts for level l's nodes.
    cr_like = jax.eval_shape(crossings_of, jnp.zeros(1, jnp.int32))
    # the circles to do, in order, padded (with m: empty slots) to whole level-0 chunks
    n_todo = jnp.sum(todo, dtype=jnp.int32)
    order = jnp.nonzero(todo, size=-(-m // chunks[0]) * chunks[0], fill_value=m)[0].astype(jnp.int32)
    caps = [0] + [chunks[lv] - 1 + chunks[lv - 1] for lv in range(1, n_lv)]

    def empty_buffer(lv: int) -> dict:
        cap, n_prev = caps[lv], LEVEL_PANELS[lv - 2] * 15 if lv >= 2 else 0
        return dict(idx=jnp.full(cap, m, jnp.int32),
                    cr={key: jnp.zeros((cap,) + a.shape[1:], a.dtype) for key, a in cr_like.items()},
                    prev=(jnp.zeros((cap, n_prev)), jnp.zeros((cap, n_prev, 5), complex)))

    bufs = [None] + [empty_buffer(lv) for lv in range(1, n_lv)]
    counts = jnp.zeros(n_lv, jnp.int32)

    def run_level(level, vals, idx, cr, prev, live):
        """One chunk at ``level``: circles ``idx`` (m = empty slot), their crossings and the previous
        level's nodes (None at level 0); returns the updated values, which circles go on to the next
        level and this level's nodes."""
        take = lambda a: jnp.take(a, idx, axis=0, mode="clip")  # noqa: E731
        pt = lambda a: jnp.take(a, at_point(idx), axis=0, mode="clip")  # noqa: E731
        args = (pt(zc), take(r), pt(s), pt(q), cr)
        if level == 0:
            a, conv, extra = _trapezoid(*args, derivs)
            hopeless, k = ~cr["ok"], idx.shape[0]
            extra["nodes"] = (jnp.zeros((k, 0)), jnp.zeros((k, 0, 5), complex))
        elif level == n_lv - 1:
            before = (take(vals["mag"]), take(vals["good"]))
            a, conv, hopeless, _, extra = _adaptive(*args, derivs, prev, *before)
        else:
            prev = prev if prev[0].shape[1] > 0 else None  # Gauss–Kronrod level 0: no earlier nodes
            a, conv, hopeless, _, extra = _level(*args, level - 1, derivs, prev)
        nodes = extra.pop("nodes")
        if 1 < level < n_lv - 1:
            # two successive levels (4× the panels) that agree within REL_TOL also converge: the
            # Kronrod–Gauss difference over-estimates the error of K15 by orders of magnitude on
            # these integrands, and fails to shrink where a few nodes sit in the rounding zone of
            # a located crossing
            before, before_good = take(vals["mag"]), take(vals["good"])
            conv = conv | _agree(a, extra["good"], before, before_good)
        done = conv & extra.pop("d_conv") if derivs else conv
        new = dict(mag=a, ok=conv, **extra)
        if level > 0 and derivs:
            # a circle refined for its derivatives keeps the value it converged with
            kept = take(vals["ok"])
            for key in ("mag", "ok", "a_mean", "a_exp", "good"):
                new[key] = jnp.where(kept, take(vals[key]), new[key])
        # circles that cannot get better with more panels (bad samples, too many crossings, hidden
        # crossings) stop here
        return new, live & ~done & ~hopeless, nodes

    def push(bufs, counts, level, keep, idx, cr, nodes):
        """Append the circles ``keep`` of a chunk, with the nodes of the level they come from, to
        buffer ``level``."""
        if level >= n_lv:
            return bufs, counts
        pos = jnp.where(keep, counts[level] + jnp.cumsum(keep) - 1, caps[level])
        put = lambda b, v: b.at[pos].set(v, mode="drop")  # noqa: E731
        bufs = list(bufs)
        bufs[level] = jax.tree.map(put, bufs[level], dict(idx=idx.astype(jnp.int32), cr=cr, prev=nodes))
        return bufs, counts.at[level].add(jnp.sum(keep, dtype=jnp.int32))

    def branch(level):
        chunk = chunks[level]

        def go(st):
            vals, done0, bufs, counts = st
            if level == 0:
                idx = jax.lax.dynamic_slice(order, (done0,), (chunk,))
                live = idx < m
                cr, prev = crossings_of(idx), None
                done0 = done0 + chunk
            else:
                buf, n = bufs[level], counts[level]
                live = jnp.arange(chunk) < n
                idx = jnp.where(live, buf["idx"][:chunk], m)
                # empty slots compute a copy of the first circle (dropped), not zeros
                cr, prev = jax.tree.map(lambda v: jnp.where(live.reshape((-1,) + (1,) * (v.ndim - 1)),
                                                            v[:chunk], v[:1]), (buf["cr"], buf["prev"]))
                shift = lambda v: jnp.concatenate([v[chunk:], v[:chunk]])  # noqa: E731
                bufs = list(bufs)
                bufs[level] = jax.tree.map(shift, buf)
                counts = counts.at[level].add(-jnp.minimum(n, chunk))
            new, nxt, nodes = run_level(level, vals, idx, cr, prev, live)
            bufs, counts = push(bufs, counts, level + 1, nxt, idx, cr, nodes)
            # the chunk's results, padded to the widest chunk, are scattered into the values after
            # the switch: updated inside a branch, the (M,) values were copied on every iteration
            # (3 µs a point when M counts every limb-darkening annulus slot)
            fill = max(chunks) - chunk
            idx = jnp.concatenate([idx, jnp.full(fill, m, idx.dtype)])
            new = jax.tree.map(lambda v: jnp.concatenate([v, jnp.zeros((fill,) + v.shape[1:], v.dtype)]), new)
            return (idx, new), done0, bufs, counts

        return go

    def which(st):
        _, done0, _, counts = st
        level = jnp.int32(0)
        upstream_empty = done0 >= n_todo
        for lv in range(1, n_lv):
            ready = (counts[lv] >= chunks[lv]) | ((counts[lv] > 0) & upstream_empty)
            level = jnp.where(ready, lv, level)
            upstream_empty = upstream_empty & (counts[lv] == 0)
        return level

    def body(st):
        vals = st[0]
        (idx, new), done0, bufs, counts = jax.lax.switch(which(st), [branch(lv) for lv in range(n_lv)], st)
        vals = {key: v.at[idx].set(new[key], mode="drop") for key, v in vals.items()}
        return vals, done0, bufs, counts

    state0, _, _, _ = jax.lax.while_loop(lambda st: (st[1] < n_todo) | jnp.any(st[3] > 0), body,
                                         (vals, jnp.int32(0), bufs, counts))
    ok = state0["ok"] & todo
    mag = jnp.where(ok | ~todo, jnp.where(todo, state0["mag"], 0.0), jnp.nan)
    out = (mag, ok, state0["a_mean"], state0["a_exp"])
    if derivs:
        d_ok = ok & state0["d_ok"]
        out = out + (jnp.where(d_ok[:, None], state0["d_sq"], jnp.where(todo[:, None], jnp.nan, 0.0)),)
    return out
