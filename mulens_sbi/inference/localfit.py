"""Vectorized Levenberg–Marquardt: many local fits of one event at once, fluxes solved linearly.

The residual vector of one parameter set θ is ``r_n = (f_n − F_s,d·A(t_n; θ) − F_b,d)/σ_n`` with
each dataset's (F_s, F_b) the weighted least-squares solution for that θ (variable projection: the
fluxes are functions of θ and the Jacobian is taken through the 2×2 solve, so the Gauss–Newton
matrix is the one of the *profile* χ²). Parameters are optimized in the sampling space of
:mod:`mulens_sbi.inference.importance` (natural log of ``t_E``, ``s``, ``q``, ``rho``; ``t_0``
in HJD', ``u_0`` in θ_E and ``alpha`` in degrees linearly), each step projected onto a box (the
prior's, or ``bounds``).

K starts are stepped together: one Jacobian costs P forward-mode products (P = 6–7 parameters) of
the batched magnification, i.e. about P+1 likelihood evaluations of K light curves. Each start
keeps its own damping λ (Marquardt's scaling ``diag(JᵀJ)``): a step that lowers χ² is taken and
λ shrinks by 3, otherwise λ grows by 4 and the start stays. A start stops when its relative χ²
gain over the last step is below ``tol`` and λ is small, or after ``max_iter`` steps. Points whose
magnification is not certified make a trial step fail (χ² = ∞), never a silent wrong χ².

Pure JAX for one step (:func:`lm_step`, jitted on the number of parameters); the Python loop in
:func:`levenberg_marquardt` only keeps the bookkeeping and the progress bar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mulens_sbi.lightcurve import magnification_batch
from mulens_sbi.likelihood import PackedEvent

__all__ = [
    "FitBatch",
    "FD_STEPS",
    "chi2_batch",
    "fd_hessian",
    "gauss_newton_hessian",
    "levenberg_marquardt",
    "profile_residuals",
    "residuals_in_rows",
    "levenberg_marquardt_fd",
    "residual_rows",
    "to_physical",
    "to_z",
]

#: parameters optimized as their natural logarithm
LOG_NAMES = ("t_E", "s", "q", "rho")


def to_z(params: Mapping, names: Sequence[str]) -> np.ndarray:
    """Physical parameters (dict of (K,) arrays) → (K, P) optimization variables."""
    cols = []
    for k in names:
        v = np.atleast_1d(np.asarray(params[k], dtype=float))
        cols.append(np.log(v) if k in LOG_NAMES else v)
    return np.stack(cols, axis=1)


def to_physical(z, names: Sequence[str]) -> dict:
    """(K, P) optimization variables → dict of physical (K,) arrays (numpy or jax, as given)."""
    xp = jnp if isinstance(z, jax.Array) else np
    return {k: (xp.exp(z[:, i]) if k in LOG_NAMES else z[:, i]) for i, k in enumerate(names)}


def z_bounds(names: Sequence[str], bounds: Mapping | None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each (P,), of the optimization variables from a physical box ``{name: (low, high)}``
    (the logarithm for :data:`LOG_NAMES`; ±inf where a parameter has no bound)."""
    lo = np.full(len(names), -np.inf)
    hi = np.full(len(names), np.inf)
    for i, n in enumerate(names):
        if bounds and n in bounds:
            b0, b1 = bounds[n]
            lo[i], hi[i] = (math.log(b0), math.log(b1)) if n in LOG_NAMES else (b0, b1)
    return lo, hi


def profile_residuals(a: jax.Array, w: jax.Array, f: jax.Array, oh: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(K, N) flux residuals ``f − F_s·A − F_b``, each dataset's fluxes solved by weighted least
    squares (weights ``w``, (N,) or (K, N)), and (K,) flags of a solvable 2×2 system."""
    s1 = w @ oh.T
    s1_safe = jnp.where(s1 > 0, s1, 1.0)
    fbar = ((w * f) @ oh.T) / s1_safe
    abar = ((w * a) @ oh.T) / s1_safe
    da = a - abar @ oh
    df = f - fbar @ oh
    c_aa = (w * da * da) @ oh.T
    c_af = (w * da * df) @ oh.T
    degenerate = ~(c_aa > 0) | ~jnp.isfinite(c_aa)
    fs = c_af / jnp.where(degenerate, 1.0, c_aa)
    return df - (fs @ oh) * da, ~jnp.any(degenerate, axis=-1)


def _residuals(z: jax.Array, names: tuple, fixed: dict, packed: PackedEvent,
               scale: jax.Array | float = 0.0) -> tuple[jax.Array, jax.Array]:
    """(K, N) whitened residuals with fluxes profiled, and (K,) ok flags.

    ``scale > 0`` (in σ) makes them robust: the fluxes are solved again with Cauchy weights
    ``w/(1 + (r/scale)²)`` (held fixed under differentiation) and each residual becomes
    ``r·√(log(1 + u)/u)``, ``u = (r/scale)²``, so that ``Σ r̃² = Σ scale²·log(1 + (r/scale)²)``:
    a handful of points the model cannot follow (a caustic crossing seen by a point source)
    cost logarithmically instead of quadratically. ``scale = 0``: the plain residuals."""
    p = {k: (jnp.exp(z[:, i]) if k in LOG_NAMES else z[:, i]) for i, k in enumerate(names)}
    p.update({k: jnp.broadcast_to(jnp.asarray(v, dtype=jnp.float64), z.shape[:1]) for k, v in fixed.items()})
    mag, ok_pts = magnification_batch(packed.t, p)
    w, f, oh, valid = packed.weight, packed.flux, packed.onehot, packed.valid
    ok = jnp.all(ok_pts | ~valid[None, :], axis=1)
    a = jnp.where(ok[:, None] & ok_pts, mag, 1.0)
    e, solvable = profile_residuals(a, w, f, oh)
    r = jnp.sqrt(w) * e
    robust = scale > 0
    sc = jnp.where(robust, scale, 1.0)
    e_rob, solvable_rob = profile_residuals(a, jax.lax.stop_gradient(w / (1.0 + (r / sc) ** 2)), f, oh)
    r_rob = jnp.sqrt(w) * e_rob
    u = jnp.maximum((r_rob / sc) ** 2, 1e-12)
    r_rob = r_rob * jnp.sqrt(jnp.log1p(u) / u)
    r = jnp.where(robust, r_rob, r)
    return r, ok & jnp.where(robust, solvable_rob, solvable)


@partial(jax.jit, static_argnames=("names",))
def chi2_batch(z: jax.Array, names: tuple, fixed: dict, packed: PackedEvent,
               scale: jax.Array | float = 0.0) -> jax.Array:
    """(K,) profile χ² of K parameter vectors (∞ where the magnification is not certified); with
    ``scale > 0`` the robust cost of :func:`_residuals`."""
    r, ok = _residuals(z, names, fixed, packed, scale)
    return jnp.where(ok, jnp.sum(r * r, axis=1), jnp.inf)


@partial(jax.jit, static_argnames=("names",))
def _jacobian(z: jax.Array, names: tuple, fixed: dict, packed: PackedEvent, scale: jax.Array | float = 0.0):
    """Residuals (K, N), Jacobian (K, N, P) by P forward-mode products, ok (K,)."""

    def fr(zz):
        return _residuals(zz, names, fixed, packed, scale)[0]

    p = z.shape[1]
    basis = jnp.eye(p)

    def col(e):
        return jax.jvp(fr, (z,), (jnp.broadcast_to(e, z.shape),))[1]

    jac = jax.lax.map(col, basis)  # (P, K, N)
    r, ok = _residuals(z, names, fixed, packed, scale)
    jac = jnp.moveaxis(jac, 0, -1)
    ok = ok & jnp.all(jnp.isfinite(jac), axis=(1, 2))
    return r, jnp.where(ok[:, None, None], jac, 0.0), ok


@partial(jax.jit, static_argnames=("names",))
def lm_step(z, lam, chi2, names: tuple, fixed: dict, packed: PackedEvent, lo, hi, scale=0.0):
    """One Levenberg–Marquardt trial for every start: returns (z, λ, χ², accepted, gain)
    (χ² is the robust cost where ``scale > 0``). ``lo``, ``hi``: (K, P) box per start; a
    parameter with ``lo = hi`` is pinned."""
    r, jac, ok = _jacobian(z, names, fixed, packed, scale)
    jac = jac * (hi > lo)[:, None, :]  # pinned parameters (lo = hi) take no part in the step
    jtj = jnp.einsum("knp,knq->kpq", jac, jac)
    g = jnp.einsum("knp,kn->kp", jac, r)
    d = jnp.maximum(jnp.diagonal(jtj, axis1=1, axis2=2), 1e-12)
    a = jtj + lam[:, None, None] * jax.vmap(jnp.diag)(d)
    step = -jnp.linalg.solve(a, g[..., None])[..., 0]
    step = jnp.where(ok[:, None] & jnp.all(jnp.isfinite(step), axis=1, keepdims=True), step, 0.0)
    z_new = jnp.clip(z + step, lo, hi)
    chi2_new = chi2_batch(z_new, names, fixed, packed, scale)
    better = chi2_new < chi2
    z = jnp.where(better[:, None], z_new, z)
    lam = jnp.where(better, lam / 3.0, lam * 4.0)
    return z, jnp.clip(lam, 1e-9, 1e9), jnp.where(better, chi2_new, chi2), better, chi2 - chi2_new


@partial(jax.jit, static_argnames=("names",))
def gauss_newton_hessian(z, names: tuple, fixed: dict, packed: PackedEvent, scale=0.0):
    """(K, P, P) ``JᵀJ`` (the Gauss–Newton approximation of ½∇²χ² in z) and (K,) ok."""
    _, jac, ok = _jacobian(z, names, fixed, packed, scale)
    return jnp.einsum("knp,knq->kpq", jac, jac), ok


@dataclass(frozen=True)
class FitBatch:
    """Result of :func:`levenberg_marquardt` for K starts.

    Attributes:
        names: optimized parameters, in order (columns of ``z``).
        z: (K, P) optimized variables (log of ``LOG_NAMES``).
        chi2: (K,) profile χ² at ``z`` (∞ where never certified).
        chi2_start: (K,) χ² at the starts.
        iterations: steps taken (the same for all starts; converged starts stop moving).
        converged: (K,) the stopping rule was met before ``max_iter``.
        fixed: parameters held fixed.
    """

    names: tuple
    z: np.ndarray
    chi2: np.ndarray
    chi2_start: np.ndarray
    iterations: int
    converged: np.ndarray
    fixed: dict

    def physical(self) -> dict:
        out = to_physical(self.z, self.names)
        out.update({k: np.full(len(self.chi2), v) for k, v in self.fixed.items()})
        return out


def levenberg_marquardt(
    packed: PackedEvent,
    starts: Mapping,
    names: Sequence[str],
    *,
    fixed: Mapping | None = None,
    bounds: Mapping | None = None,
    max_iter: int = 60,
    tol: float = 1e-7,
    lam0: float = 1e-2,
    chunk: int = 128,
    fixed_chunk: bool = False,
    scale: float = 0.0,
    pin: Mapping | None = None,
    progress: bool = False,
    desc: str = "local fits",
) -> FitBatch:
    """Levenberg–Marquardt from K starts at once (see the module docstring).

    Args:
        packed: the event (:func:`mulens_sbi.likelihood.pack_event`).
        starts: physical starting values, dict of (K,) arrays holding every name in ``names``.
        names: the parameters to optimize, e.g. ``("t_0", "u_0", "t_E", "s", "q", "alpha")``.
        fixed: parameters held fixed (scalars), e.g. ``{"rho": 1e-3}``.
        bounds: name → (low, high) in physical units; the step is projected onto the box.
        max_iter: at most this many steps.
        tol: stop a start when its χ² gain of an accepted step is below ``tol·χ²`` (and λ < 1).
        lam0: initial damping.
        chunk: starts per compiled batch (pads the last chunk by repetition).
        fixed_chunk: every batch has exactly ``chunk`` rows, also when the call has fewer starts,
            so that calls of any size share one compiled program (each new batch size compiles
            the step anew: ~15 s for a binary lens on 2 CPU cores); otherwise a call with fewer
            starts than ``chunk`` runs as one batch of its own size.
        scale: > 0: minimize the robust cost of :func:`_residuals` (Cauchy, ``scale`` in σ) instead
            of χ²; ``FitBatch.chi2`` then holds that cost.
        pin: name → (K,) physical values held fixed per start (a profile: e.g. ``{"s": grid}``
            fits the other parameters at each start's own s). The name stays in ``names``.
    """
    names = tuple(names)
    fixed = {k: float(v) for k, v in (fixed or {}).items()}
    z0 = to_z(starts, names)
    k = z0.shape[0]
    lo, hi = z_bounds(names, bounds)
    lo = np.tile(lo, (k, 1))
    hi = np.tile(hi, (k, 1))
    for n, v in (pin or {}).items():
        i = names.index(n)
        v = np.broadcast_to(np.asarray(v, dtype=float), (k,))
        lo[:, i] = hi[:, i] = np.log(v) if n in LOG_NAMES else v
    z0 = np.clip(z0, lo, hi)
    z_out = np.empty_like(z0)
    c_out = np.empty(k)
    c_start = np.empty(k)
    conv_out = np.zeros(k, dtype=bool)
    chunk = max(1, chunk if fixed_chunk else min(chunk, k))
    n_chunks = -(-k // chunk)
    bar = tqdm(total=n_chunks * max_iter, desc=desc, disable=not progress, leave=False)
    iters = 0
    for c in range(n_chunks):
        idx = np.minimum(np.arange(c * chunk, (c + 1) * chunk), k - 1)
        z = jnp.asarray(z0[idx])
        jlo, jhi = jnp.asarray(lo[idx]), jnp.asarray(hi[idx])
        chi2 = chi2_batch(z, names, fixed, packed, scale)
        c_start_chunk = np.asarray(chi2)
        lam = jnp.full(chunk, lam0)
        done = np.zeros(chunk, dtype=bool)
        for it in range(max_iter):
            z, lam, chi2, better, gain = lm_step(z, lam, chi2, names, fixed, packed, jlo, jhi, scale)
            bar.update(1)
            gain_np, lam_np, chi2_np = np.asarray(gain), np.asarray(lam), np.asarray(chi2)
            small = np.asarray(better) & (gain_np < tol * np.maximum(chi2_np, 1.0)) & (lam_np < 1.0)
            done |= small | ~np.isfinite(chi2_np) | (lam_np >= 1e9)
            iters = max(iters, it + 1)
            if done.all():
                bar.update(max_iter - it - 1)
                break
        real = np.arange(c * chunk, min((c + 1) * chunk, k))
        z_out[real] = np.asarray(z)[: real.size]
        c_out[real] = np.asarray(chi2)[: real.size]
        c_start[real] = c_start_chunk[: real.size]
        conv_out[real] = done[: real.size]
    bar.close()
    return FitBatch(names=names, z=z_out, chi2=c_out, chi2_start=c_start, iterations=iters,
                    converged=conv_out, fixed=fixed)


@partial(jax.jit, static_argnames=("names",))
def residual_rows(z: jax.Array, names: tuple, packed: PackedEvent) -> tuple[jax.Array, jax.Array]:
    """(R, N) whitened residuals (fluxes profiled) and (R,) ok flags of R parameter vectors: the one
    compiled function of :func:`levenberg_marquardt_fd`."""
    return _residuals(z, names, {}, packed)


#: forward-difference steps of :func:`levenberg_marquardt_fd` (t_0 in units of t_E)
FD_STEPS = {"t_0": 1e-4, "u_0": 1e-4, "t_E": 1e-4, "s": 1e-5, "q": 1e-4, "alpha": 1e-3, "rho": 1e-3}


def _fd_steps(z: np.ndarray, names: tuple) -> np.ndarray:
    """(K, P) forward-difference steps in the optimization variables (:data:`FD_STEPS`; ``t_0``'s
    scaled by each row's t_E, whose variable is log t_E)."""
    h = np.tile([FD_STEPS.get(n, 1e-4) for n in names], (z.shape[0], 1))
    if "t_0" in names and "t_E" in names:
        h[:, names.index("t_0")] *= np.exp(z[:, names.index("t_E")])
    return h


def residuals_in_rows(packed: PackedEvent, z: np.ndarray, names: Sequence[str], rows: int = 8
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Whitened residuals (K, N) and their certificates (K,) of the parameter vectors ``z`` (K, P)
    in the optimization variables, ``rows`` at a time through one compiled shape (the last chunk
    padded by repeating its last row): the finite-source magnification compiles once for any K."""
    out_r, out_ok = [], []
    for i0 in range(0, z.shape[0], rows):
        idx = np.minimum(np.arange(i0, i0 + rows), z.shape[0] - 1)
        r, ok = residual_rows(jnp.asarray(z[idx]), tuple(names), packed)
        m = min(rows, z.shape[0] - i0)
        out_r.append(np.asarray(r)[:m])
        out_ok.append(np.asarray(ok)[:m])
    return np.concatenate(out_r), np.concatenate(out_ok)


def levenberg_marquardt_fd(
    packed: PackedEvent,
    starts: Mapping,
    names: Sequence[str],
    *,
    bounds: Mapping | None = None,
    max_iter: int = 30,
    tol: float = 1e-7,
    lam0: float = 1e-2,
    rows: int = 40,
    progress: bool = False,
    desc: str = "finite-source fits",
) -> FitBatch:
    """Levenberg–Marquardt with a forward-difference Jacobian (P + 1 residual evaluations a step).

    For the finite-source magnification, whose forward-mode derivative compiles for many minutes on
    a CPU while its value compiles in about a minute: every evaluation (the Jacobian's P + 1 rows
    per start and the trial steps) goes through one compiled function of ``rows`` parameter vectors,
    so the whole fit costs a single compilation. Steps: :data:`FD_STEPS` in the optimization
    variables (``t_0``'s times ``t_E``). At most ``rows // (P + 1)`` starts at once.
    """
    names = tuple(names)
    p = len(names)
    per = max(1, rows // (p + 1))
    z0 = to_z(starts, names)
    k = z0.shape[0]
    lo, hi = z_bounds(names, bounds)

    def resid(zz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return residuals_in_rows(packed, zz, names, rows)

    def chi2_of(r, ok):
        return np.where(ok, np.sum(r * r, axis=1), np.inf)

    z_out = np.empty_like(z0)
    c_out = np.empty(k)
    c_start = np.empty(k)
    conv = np.zeros(k, dtype=bool)
    iters = 0
    bar = tqdm(total=-(-k // per) * max_iter, desc=desc, disable=not progress, leave=False)
    for c0 in range(0, k, per):
        z = np.clip(z0[c0:c0 + per].copy(), lo, hi)
        kk = z.shape[0]
        r, ok = resid(z)
        chi2 = chi2_of(r, ok)
        c_start[c0:c0 + kk] = chi2
        lam = np.full(kk, lam0)
        done = ~np.isfinite(chi2)
        for it in range(max_iter):
            h = _fd_steps(z, names)
            zp = np.repeat(z[:, None, :], p, axis=1) + np.einsum("kp,pq->kpq", h, np.eye(p))
            rp, okp = resid(zp.reshape(-1, p))
            rp = rp.reshape(kk, p, -1)
            jac = np.transpose((rp - r[:, None, :]) / h[:, :, None], (0, 2, 1))  # (K, N, P)
            good = ok & okp.reshape(kk, p).all(axis=1)
            jtj = np.einsum("knp,knq->kpq", jac, jac)
            g = np.einsum("knp,kn->kp", jac, r)
            d = np.maximum(np.einsum("kpp->kp", jtj), 1e-12)
            a = jtj + lam[:, None, None] * np.einsum("kp,pq->kpq", d, np.eye(p))
            try:
                step = -np.linalg.solve(a, g[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = np.zeros_like(z)
            step[~good | done] = 0.0
            z_new = np.clip(z + step, lo, hi)
            r_new, ok_new = resid(z_new)
            chi2_new = chi2_of(r_new, ok_new)
            better = (chi2_new < chi2) & ~done
            gain = np.where(better, chi2 - chi2_new, 0.0)
            z[better], r[better], ok[better], chi2[better] = z_new[better], r_new[better], ok_new[better], \
                chi2_new[better]
            lam = np.clip(np.where(better, lam / 3.0, lam * 4.0), 1e-9, 1e9)
            done |= (better & (gain < tol * np.maximum(chi2, 1.0)) & (lam < 1.0)) | (lam >= 1e9)
            bar.update(1)
            iters = max(iters, it + 1)
            if done.all():
                bar.update(max_iter - it - 1)
                break
        z_out[c0:c0 + kk], c_out[c0:c0 + kk], conv[c0:c0 + kk] = z, chi2, done
    bar.close()
    return FitBatch(names=names, z=z_out, chi2=c_out, chi2_start=c_start, iterations=iters, converged=conv,
                    fixed={})


def fd_hessian(packed: PackedEvent, z: np.ndarray, names: Sequence[str], rows: int = 40,
               steps: np.ndarray | None = None) -> np.ndarray:
    """(K, P, P) Gauss–Newton ``JᵀJ`` with the forward-difference Jacobian of
    :func:`levenberg_marquardt_fd` (same compiled function); ``steps`` (K, P) replaces
    :data:`FD_STEPS`."""
    names = tuple(names)
    p = len(names)
    steps = _fd_steps(z, names) if steps is None else np.asarray(steps, dtype=float)
    out = np.empty((z.shape[0], p, p))
    for k in range(z.shape[0]):
        zz = np.concatenate([z[k:k + 1], z[k] + np.diag(steps[k])])
        r, _ = residuals_in_rows(packed, zz, names, rows)
        jac = ((r[1:] - r[0]) / steps[k][:, None]).T
        out[k] = jac.T @ jac
    return out

