"""Single-lens (Paczyński) magnification, point and finite source.

``u`` is the lens–source separation and ``rho`` the source radius, both in θ_E. Limb darkening is
linear in MulensModel's convention: the surface brightness is
``I(r) ∝ 1 − Γ·(1 − 3/2·sqrt(1 − r²/ρ²))`` (``Γ = limb_darkening``; Γ = 0 is a uniform disc).

Finite source, uniform disc. For a single lens the two images of a source point at distance ``w``
from the lens lie on the lens–point line at distances ``(w ± sqrt(w² + 4))/2``; by Green's theorem
the total image area is ``½ ∮ w·sqrt(w² + 4) dφ`` over the source boundary (``φ`` the polar angle
around the lens), so ``A·πρ² = ½ ∮ w·sqrt(w² + 4) dφ``. With the boundary parametrised by its own
angle ``θ`` (``w = |u + ρ·e^{iθ}|``) the integrand is smooth and periodic but sharply peaked at
``θ = π`` when the lens is near the limb (``u ≈ ρ``); the integral over ``[0, π]`` (the integrand is
even in ``θ``) is therefore done with Gauss–Legendre panels graded geometrically towards ``θ = π``.

Limb darkening. With ``A_u(r)`` the uniform-disc magnification of radius ``r`` (same centre),
integrating by parts over annuli and substituting ``r = ρ·sin t`` removes the edge singularity:
``A = (1 − Γ)·A_u(ρ) + (3Γ/2)·∫₀^{π/2} A_u(ρ sin t)·sin³t dt``. ``A_u(r)`` has a logarithmic kink at
``r = u``; the ``t`` integral is split there and graded towards it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array

#: Gauss–Legendre nodes per panel for the boundary (θ) integral and number of graded panels
_THETA_NODES = 8
_THETA_LEVELS = 24
#: Gauss–Legendre nodes per panel and grading levels for the radial (limb-darkening) integral
_T_NODES = 4
_T_LEVELS = 10


def point_source(u: Array) -> Array:
    """Point-source magnification ``(u² + 2)/(u·sqrt(u² + 4))``."""
    u2 = u * u
    return (u2 + 2.0) / (jnp.abs(u) * jnp.sqrt(u2 + 4.0))


def _graded_rule(levels: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes/weights on [0, 1] from Gauss–Legendre panels graded geometrically towards 1.

    Panels are ``[1 − 2^{-k}, 1 − 2^{-k-1}]`` for ``k < levels`` plus ``[1 − 2^{-levels}, 1]``.
    """
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.concatenate([1.0 - 0.5 ** np.arange(levels + 1), [1.0]])
    xs, ws = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        xs.append(a + (b - a) * (x + 1.0) / 2.0)
        ws.append(w * (b - a) / 2.0)
    return np.concatenate(xs), np.concatenate(ws)


_TH_X, _TH_W = _graded_rule(_THETA_LEVELS, _THETA_NODES)
_T_X, _T_W = _graded_rule(_T_LEVELS, _T_NODES)


def _uniform(u: Array, rho: Array) -> Array:
    """Uniform-disc magnification (broadcast arrays, no validity test); ``u ≥ 0``, ``rho > 0``."""
    u = u[..., None]
    rho = rho[..., None]
    # 1 + cos θ = 2 sin²((π − θ)/2), written without cancellation near θ = π
    half_gap = 0.5 * jnp.pi * jnp.asarray(1.0 - _TH_X)
    c2 = 2.0 * jnp.sin(half_gap) ** 2
    w2 = (u - rho) ** 2 + 2.0 * u * rho * c2
    # (ρ + u cos θ)/w is bounded (→ sqrt((1+cos θ)/2) at u = ρ); guard the single point w = 0
    w = jnp.sqrt(jnp.maximum(w2, 1e-300))
    f = jnp.sqrt(w2 + 4.0) * ((rho - u) + u * c2) / w
    return jnp.sum(f * jnp.asarray(_TH_W), axis=-1) / rho[..., 0]


def _limb_darkened(u: Array, rho: Array, gamma: Array) -> Array:
    """Linear limb-darkened magnification (Γ = ``gamma``)."""
    inside = u < rho
    # arcsin only where its argument is < 1 (keeps the derivative finite)
    t_split = jnp.where(inside, jnp.arcsin(jnp.where(inside, u / rho, 0.0)), jnp.pi / 2)
    x = jnp.asarray(_T_X)
    w = jnp.asarray(_T_W)
    # left part [0, t_split] graded towards t_split, right part [t_split, π/2] graded towards t_split
    t_left = t_split[..., None] * x
    w_left = t_split[..., None] * w
    t_right = jnp.pi / 2 - (jnp.pi / 2 - t_split[..., None]) * x
    w_right = (jnp.pi / 2 - t_split[..., None]) * w
    t = jnp.concatenate([t_left, t_right], axis=-1)
    wt = jnp.concatenate([w_left, w_right], axis=-1)
    st = jnp.sin(t)
    r = jnp.maximum(rho[..., None] * st, 1e-300)
    a_r = _uniform(u[..., None], r)
    ld = jnp.sum(a_r * st**3 * wt, axis=-1)
    return (1.0 - gamma) * _uniform(u, rho) + 1.5 * gamma * ld


def finite_source(u: Array, rho: Array, limb_darkening: Array) -> tuple[Array, Array]:
    """Finite-source single-lens magnification, uniform or linearly limb-darkened.

    Args:
        u: lens–source separation (θ_E); the sign is ignored.
        rho: source radius (θ_E), > 0.
        limb_darkening: linear coefficient Γ in [0, 1] (MulensModel's ``gamma``; 0 = uniform).

    All arguments broadcast. Returns ``(A, ok)``; ``A`` is NaN where ``ok`` is False (non-finite
    input or ``rho ≤ 0``). Relative accuracy about 1e-8 (and about 1e-14·u/ρ from cancellation when
    u ≫ ρ), checked against
    MulensModel/VBMicrolensing and the analytic ``u = 0`` value in the tests). Differentiable.
    """
    u, rho, gamma = jnp.broadcast_arrays(
        jnp.abs(jnp.asarray(u, dtype=float)), jnp.asarray(rho, dtype=float),
        jnp.asarray(limb_darkening, dtype=float),
    )
    ok = jnp.isfinite(u) & jnp.isfinite(rho) & jnp.isfinite(gamma) & (rho > 0)
    u_s = jnp.where(ok, u, 1.0)
    rho_s = jnp.where(ok, rho, 1.0)
    g_s = jnp.where(ok, gamma, 0.0)
    mag = _limb_darkened(u_s, rho_s, g_s)
    ok = ok & jnp.isfinite(mag)
    return jnp.where(ok, mag, jnp.nan), ok
