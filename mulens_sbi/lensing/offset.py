"""The offset-degeneracy relation of Zhang, Gaudi & Bloom (2022) in MulensModel v3's convention.

**Geometry.** With ``τ = (t − t_0)/t_E`` and ``a = alpha`` (radians) the source is at
``x = τ·cos a − u_0·sin a``, ``y = τ·sin a + u_0·cos a`` (centre-of-mass frame, θ_E); the primary
(mass ``1/(1+q)``) is at ``x_1 = +s·q/(1+q)``, the companion at ``x_2 = −s/(1+q)``. The trajectory
crosses the binary axis (``y = 0``) at ``τ_× = −u_0·cos a / sin a``, where
``x_× = τ_×·cos a − u_0·sin a = −u_0·(cos²a + sin²a)/sin a = −u_0 / sin a``. The companion lies in
the −x direction from the primary, so the crossing *measured from the primary towards the
companion* is

    x0 = x_1 − x_× = s·q/(1+q) + u_0 / sin a        (θ_E).

x0 > 0 is the companion's side of the primary (where a wide planet's planetary caustic lies, at
``x0 ≈ s − 1/s``; the major image), x0 < 0 the far side (a close planet's two triangular caustics;
the minor image). x0 is unchanged by the reflection ``(u_0, a) → (−u_0, −a)``, which maps the
trajectory onto its mirror image in the binary axis and leaves the light curve unchanged.

**Relation.** With ``f(s) = s − 1/s``, solutions A and B of one event are offset-degenerate when
``f(s_A) + f(s_B) = 2·x0`` at (nearly) equal q. ``x0 = 0`` is the close–wide case
(``s_A·s_B = 1``). The partner of ``s_B`` is ``s_A = (c + √(c² + 4))/2`` with
``c = 2·x0 − f(s_B)`` (the positive root of ``s² − c·s − 1 = 0``). Propagation:
``∂s_A/∂x0 = 2 s_A²/(1 + s_A²)``, ``∂s_A/∂s_B = −(1 + s_B⁻²)/(1 + s_A⁻²)``.

The relation is exact to zeroth order in q for crossings of the axis; numerically (see
``docs/degeneracy.md``) the point where the two magnifications match lies within −1.5q … +0.2q of
x0, so the residual ``f(s_A) + f(s_B) − 2·x0`` of a true pair can be as large as ~3q; it weakens for
shallow trajectories (small ``|sin a|``) because the light curve then no longer samples the axis
crossing alone.

Functions here are pure, elementwise numpy (alpha in **degrees**).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "axis_crossing",
    "crossing_time",
    "f_sep",
    "inverse_f",
    "partner_separation",
    "relation_residual",
    "u0_for_crossing",
]


def f_sep(s):
    """``f(s) = s − 1/s`` (θ_E)."""
    return s - 1.0 / s


def inverse_f(c):
    """The positive s with ``f(s) = c``: ``(c + √(c² + 4))/2``, written as ``2/(√(c² + 4) − c)`` for
    c < 0 (same value, no cancellation)."""
    c = np.asarray(c, dtype=float)
    root = np.sqrt(c * c + 4.0)
    return np.where(c >= 0, 0.5 * (c + root), 2.0 / (root - c))


def axis_crossing(u_0, alpha, s, q):
    """x0: where the trajectory crosses the binary axis, measured from the primary towards the
    companion (θ_E): ``s·q/(1+q) + u_0/sin(alpha)``; ±inf for a trajectory parallel to the axis."""
    sin_a = np.sin(np.deg2rad(np.asarray(alpha, dtype=float)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(s) * np.asarray(q) / (1.0 + np.asarray(q)) + np.asarray(u_0) / sin_a


def u0_for_crossing(x0, alpha, s, q):
    """The u_0 whose trajectory (angle ``alpha``, degrees) crosses the axis at ``x0`` (inverse of
    :func:`axis_crossing`): ``(x0 − s·q/(1+q))·sin(alpha)``."""
    return (x0 - s * q / (1.0 + q)) * np.sin(np.deg2rad(alpha))


def crossing_time(t_0, u_0, t_E, alpha):
    """Time (HJD') at which the source crosses the binary axis: ``t_0 − t_E·u_0·cot(alpha)``."""
    a = np.deg2rad(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        return t_0 - t_E * u_0 * np.cos(a) / np.sin(a)


def partner_separation(s_b, x0):
    """The relation's partner ``s_A`` of ``s_B``: ``f(s_A) = 2·x0 − f(s_B)``."""
    return inverse_f(2.0 * x0 - f_sep(s_b))


def relation_residual(s_a, s_b, x0):
    """``f(s_A) + f(s_B) − 2·x0`` (θ_E); zero for an exact pair."""
    return f_sep(s_a) + f_sep(s_b) - 2.0 * x0
