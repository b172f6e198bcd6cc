"""Light curves: source trajectories, magnification A(t) and flux, in MulensModel v3's convention.

The source position in the lens frame (θ_E, centre of mass at the origin, binary axis along x) is
``x = τ·cos α − u_0·sin α``, ``y = τ·sin α + u_0·cos α`` with ``τ = (t − t_0)/t_E`` and α in radians.
The primary lies at ``x = +s·q/(1+q)``, the companion at ``x = −s/(1+q)``. Flux is
``F = F_s·A(t) + F_b`` per dataset.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from mulens_sbi.lensing import point_source, single
from mulens_sbi.params import RANGES, check_parameters


def source_trajectory(t: Array, t_0: Array, u_0: Array, t_E: Array, alpha: Array) -> tuple[Array, Array]:
    """Source position (x, y) in θ_E at times ``t`` (days); ``alpha`` in degrees."""
    a = jnp.deg2rad(alpha)
    tau = (t - t_0) / t_E
    ca, sa = jnp.cos(a), jnp.sin(a)
    return tau * ca - u_0 * sa, tau * sa + u_0 * ca


def in_range_jax(name: str, value: Array) -> Array:
    """Traceable twin of :func:`mulens_sbi.params.in_range`: finite and inside the allowed range."""
    lo, hi, lo_in, hi_in = RANGES[name]
    ok = jnp.isfinite(value)
    ok &= (value >= lo) if lo_in else (value > lo)
    ok &= (value <= hi) if hi_in else (value < hi)
    return ok


def flux(mag: Array, f_s: Array, f_b: Array) -> Array:
    """Observed flux ``F_s·A + F_b`` (any consistent flux unit)."""
    return f_s * mag + f_b


@partial(jax.jit, static_argnames=("binary", "finite"))
def _batch_core(t, p, binary: bool, finite: bool):
    t_0, u_0, t_E = p["t_0"][:, None], p["u_0"][:, None], p["t_E"][:, None]
    if not binary:
        u = jnp.sqrt(((t - t_0) / t_E) ** 2 + u_0**2)
        if finite:
            return single.finite_source(u, p["rho"][:, None], p["limb_darkening"][:, None])
        mag = single.point_source(u)
        return mag, jnp.isfinite(mag)
    x, y = source_trajectory(t, t_0, u_0, t_E, p["alpha"][:, None])
    if finite:
        from mulens_sbi.lensing import finite as finite_mod

        return finite_mod.binary_finite_trajectory(
            x, y, p["s"], p["q"], p["rho"], p["limb_darkening"]
        )
    return point_source.magnification_trajectory(x, y, p["s"], p["q"])


def magnification_batch(t: Array, params: dict[str, Array]) -> tuple[Array, Array]:
    """Magnification for many parameter sets at once.

    Args:
        t: times (days, HJD'), shape (N,) shared by all sets or (B, N); sorted along the last axis
            (the binary solver warm-starts along it; unsorted input is still correct but slower).
        params: arrays of shape (B,) for ``t_0, u_0, t_E`` and, for a binary lens, ``s, q, alpha``;
            optional ``rho`` (finite source) and ``limb_darkening`` (linear Γ, default 0).

    Returns:
        ``(A, ok)`` of shape (B, N). Rows whose parameters are NaN, infinite or out of range, and
        points the solver could not certify, have ``A = NaN`` and ``ok = False``: a documented NaN
        with a flag, never a wrong finite number.
    """
    p = {k: jnp.atleast_1d(jnp.asarray(v, dtype=jnp.float64)) for k, v in params.items() if v is not None}
    binary = "s" in p
    finite = "rho" in p
    b = p["t_0"].shape[0]
    if finite:
        p.setdefault("limb_darkening", jnp.zeros(b))
    vmask = jnp.ones(b, dtype=bool)
    for name, v in p.items():
        vmask &= in_range_jax(name, v)
    safe = {
        "t_0": 0.0, "u_0": 0.1, "t_E": 10.0, "s": 1.0, "q": 1e-3, "alpha": 0.0, "rho": 1e-3,
        "limb_darkening": 0.0,
    }
    p = {k: jnp.where(vmask, v, safe[k]) for k, v in p.items()}
    t = jnp.broadcast_to(jnp.asarray(t, dtype=jnp.float64), (b, jnp.shape(t)[-1]))
    mag, ok = _batch_core(t, p, binary, finite)
    ok = ok & vmask[:, None] & jnp.isfinite(t)
    return jnp.where(ok, mag, jnp.nan), ok


def magnification(
    t: Array,
    t_0: float,
    u_0: float,
    t_E: float,
    s: float | None = None,
    q: float | None = None,
    alpha: float | None = None,
    rho: float | None = None,
    limb_darkening: float | None = None,
    *,
    return_ok: bool = False,
):
    """Magnification A(t) of one event, in MulensModel v3's convention exactly.

    Args:
        t: times in days (HJD'), any order.
        t_0, u_0, t_E: time of closest approach (days), impact parameter (θ_E, signed), Einstein
            time (days).
        s, q, alpha: separation (θ_E), mass ratio (companion/primary) and trajectory angle
            (degrees) of a binary lens; leave all three ``None`` for a single lens.
        rho: source radius (θ_E) for a finite source; ``None`` for a point source.
        limb_darkening: linear limb-darkening coefficient Γ in [0, 1] (needs ``rho``).
        return_ok: also return the per-point validity flag.

    The times are padded to a bucket length (:func:`padded_length`, at most 25% more points) so
    that calls with many different lengths share a few compiled programs.

    Raises:
        ValueError: a parameter is NaN, infinite or out of range (the message names it and the
            allowed range), or the binary parameters are only partly given.
    """
    given = [v is not None for v in (s, q, alpha)]
    if any(given) and not all(given):
        raise ValueError("a binary lens needs all of s, q and alpha (or none of them)")
    if limb_darkening is not None and rho is None:
        raise ValueError("limb_darkening needs a finite source: give rho as well")
    check_parameters(
        {"t_0": t_0, "u_0": u_0, "t_E": t_E, "s": s, "q": q, "alpha": alpha, "rho": rho,
         "limb_darkening": limb_darkening}
    )
    t_arr = np.asarray(t, dtype=float)
    if not np.all(np.isfinite(t_arr)):
        raise ValueError("times t contain NaN or infinite values")
    shape = t_arr.shape
    flat = t_arr.reshape(-1)
    order = np.argsort(flat, kind="stable")
    params = {"t_0": t_0, "u_0": u_0, "t_E": t_E, "s": s, "q": q, "alpha": alpha, "rho": rho,
              "limb_darkening": limb_darkening}
    n = flat.size
    # padded to a bucket length by repeating the last time, so that calls with many different
    # lengths share a few compiled programs (each new length otherwise compiles the solver anew,
    # ~6 s for a binary lens); the repeated points are cheap for the warm-started solver
    ts = np.pad(flat[order], (0, padded_length(n) - n), mode="edge") if n else flat
    mag, ok = magnification_batch(ts, {k: [v] for k, v in params.items() if v is not None})
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    mag = np.asarray(mag[0])[:n][inv].reshape(shape)
    ok = np.asarray(ok[0])[:n][inv].reshape(shape)
    return (mag, ok) if return_ok else mag


def padded_length(n: int) -> int:
    """Smallest length ``m·2^k`` (m in 4…7, at least 32) that holds ``n`` points: at most 25% padding,
    and about four compiled programs per doubling of the length."""
    size = 32
    while size < n:
        k = size.bit_length() - 3  # size = m·2^k with m in 4..7
        size += 1 << k
    return size
