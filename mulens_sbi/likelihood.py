"""Gaussian likelihood of an :class:`~mulens_sbi.event.Event` with linear fluxes solved per dataset.

Model: dataset ``d`` has fluxes ``f_n = F_s,d·A(t_n; θ) + F_b,d + ε_n`` with independent Gaussian
noise ``ε_n ~ N(0, σ_n²)``. For lens parameters θ = (t_0, u_0, t_E[, s, q, alpha][, rho]) the
magnification is computed once at the union of all times (``mulens_sbi.magnification_batch``),
then, per dataset, the two linear fluxes are solved in closed form (weighted least squares, the
2×2 normal equations ``M·(F_s, F_b)ᵀ = b`` with ``M = AᵀWA``, ``W = diag(1/σ²)``, here in the
numerically stable centred form). With ``χ²_min`` the minimum over the fluxes:

* profile log-likelihood   ``log L_prof = −½ χ²_min``
* marginal log-likelihood  ``log L_marg = log ∫∫ exp(−½χ²(F_s, F_b)) dF_s dF_b
  = −½ χ²_min + Σ_d [ log 2π − ½ log det M_d ]``

i.e. the fluxes are integrated out under a flat (improper) prior of density 1 per (flux unit)² on
each dataset's (F_s, F_b). The flat prior's normalisation is a constant in θ: it does not change
the posterior over θ, nor evidence ratios between lens models fitted to the same datasets; a proper
uniform prior over a box of area V_d would add ``−Σ_d log V_d``. With ``normalize=True`` both forms
also include the Gaussian normalisation ``−½ Σ_n log(2π σ_n²)`` (data-only), so that ``exp(log L)``
is the probability density of the data.

Optional constraint ``positive_source=True`` (prior F_s > 0, flat): the profile uses the
constrained minimum (``F_s = 0``, ``F_b`` = weighted mean flux when the free optimum has
``F_s ≤ 0``) and the marginal gains the exact truncation factor ``log Φ(F̂_s·√C_AA)`` per dataset
(the Gaussian integral restricted to ``F_s > 0``; ``1/√C_AA`` is the standard error of F̂_s).

Failure handling: if the magnification is not certified at any (real, unpadded) point, or the
parameters are NaN/out of range, or a dataset's magnification has no variation at all
(``det M = 0``), that parameter set gets ``log L = −inf`` and ``ok = False``; fluxes and χ² are then
NaN. Gradients stay finite (NaN-free) elsewhere in the batch.

Everything is batched over B parameter sets, pure and jittable; :func:`pack_event` turns an Event
into fixed-shape arrays (pad with ``pad_to`` to reuse compiled shapes across events).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import log_ndtr

from mulens_sbi.event import Event
from mulens_sbi.lightcurve import magnification_batch

__all__ = [
    "LENS_PARAMETERS",
    "LikelihoodResult",
    "PackedEvent",
    "evaluate",
    "log_likelihood",
    "pack_event",
]

#: lens/source parameters the likelihood accepts (alpha in degrees)
LENS_PARAMETERS = ("t_0", "u_0", "t_E", "s", "q", "alpha", "rho", "limb_darkening")
_LOG_2PI = math.log(2.0 * math.pi)


class PackedEvent(NamedTuple):
    """Fixed-shape arrays of an event (a JAX pytree). N = padded number of points, D = datasets.

    Attributes:
        t: (N,) all times, sorted (HJD'); padding repeats the last time.
        flux: (N,) fluxes (0 at padding).
        weight: (N,) ``1/σ²`` (0 at padding).
        onehot: (D, N) float, 1 where point n belongs to dataset d (0 at padding).
        valid: (N,) bool, False at padding.
        log_norm: scalar ``−½ Σ_n log(2π σ_n²)`` over the real points.
    """

    t: Array
    flux: Array
    weight: Array
    onehot: Array
    valid: Array
    log_norm: Array

    @property
    def n_datasets(self) -> int:
        return int(self.onehot.shape[0])


def pack_event(event: Event, pad_to: int | None = None) -> PackedEvent:
    """Merge the datasets of ``event`` into one time-sorted, optionally padded, set of arrays.

    Args:
        event: the event.
        pad_to: total length N ≥ number of points (default: no padding). Padding lets events of
            different sizes share one compiled likelihood.
    """
    t = np.concatenate([d.t for d in event.datasets])
    f = np.concatenate([d.flux for d in event.datasets])
    s = np.concatenate([d.sigma for d in event.datasets])
    idx = np.concatenate([np.full(d.n, i) for i, d in enumerate(event.datasets)])
    order = np.argsort(t, kind="stable")
    t, f, s, idx = t[order], f[order], s[order], idx[order]
    n = t.size
    n_pad = n if pad_to is None else int(pad_to)
    if n_pad < n:
        raise ValueError(f"pad_to={pad_to} is smaller than the event's {n} points")
    extra = n_pad - n
    onehot = np.zeros((event.n_datasets, n_pad))
    onehot[idx, np.arange(n)] = 1.0
    return PackedEvent(
        t=jnp.asarray(np.concatenate([t, np.full(extra, t[-1])])),
        flux=jnp.asarray(np.concatenate([f, np.zeros(extra)])),
        weight=jnp.asarray(np.concatenate([1.0 / s**2, np.zeros(extra)])),
        onehot=jnp.asarray(onehot),
        valid=jnp.asarray(np.arange(n_pad) < n),
        log_norm=jnp.asarray(-0.5 * float(np.sum(np.log(2.0 * np.pi * s**2)))),
    )


class LikelihoodResult(NamedTuple):
    """Batched likelihood output (B parameter sets, D datasets).

    Attributes:
        profile: (B,) ``−½χ²_min`` (+ normalisation if requested); −inf where not ok.
        marginal: (B,) flux-marginalised log-likelihood (see module docstring); −inf where not ok.
        chi2: (B,) χ² at the reported fluxes.
        chi2_datasets: (B, D) χ² per dataset.
        f_s, f_b: (B, D) best-fit source and blend flux per dataset.
        f_s_err: (B, D) standard error of F_s (with F_b free), ``1/√C_AA``.
        ok: (B,) bool, False if any real point's magnification is uncertified, the parameters are
            invalid, or a dataset is degenerate.
    """

    profile: Array
    marginal: Array
    chi2: Array
    chi2_datasets: Array
    f_s: Array
    f_b: Array
    f_s_err: Array
    ok: Array


def _as_batch(params: dict) -> dict:
    unknown = set(params) - set(LENS_PARAMETERS)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for the likelihood; known: {', '.join(LENS_PARAMETERS)}"
        )
    return {k: jnp.atleast_1d(jnp.asarray(v, dtype=jnp.float64)) for k, v in params.items() if v is not None}


@partial(jax.jit, static_argnames=("positive_source", "normalize"))
def evaluate(
    params: dict, packed: PackedEvent, positive_source: bool = False, normalize: bool = False
) -> LikelihoodResult:
    """Profile and marginal log-likelihood, χ² and best-fit fluxes for B parameter sets.

    Args:
        params: arrays of shape (B,) (or scalars, B = 1): ``t_0`` (HJD'), ``u_0``, ``t_E`` (days),
            for a binary lens ``s``, ``q``, ``alpha`` (degrees), optionally ``rho`` and
            ``limb_darkening``.
        packed: from :func:`pack_event`.
        positive_source: constrain F_s > 0 (see module docstring).
        normalize: include ``−½ Σ log(2π σ²)``.
    """
    p = _as_batch(params)
    mag, ok_pts = magnification_batch(packed.t, p)
    w, f, oh, valid = packed.weight, packed.flux, packed.onehot, packed.valid
    ok = jnp.all(ok_pts | ~valid[None, :], axis=1)
    a = jnp.where(ok[:, None] & ok_pts, mag, 1.0)  # NaN-free for the gradient of bad rows

    s1 = oh @ w  # (D,)
    s1_safe = jnp.where(s1 > 0, s1, 1.0)
    fbar = (oh @ (w * f)) / s1_safe  # (D,)
    abar = ((w * a) @ oh.T) / s1_safe  # (B, D)
    da = a - abar @ oh  # (B, N); padding: 0·... (weight 0 anyway)
    df = f - fbar @ oh  # (N,)
    c_aa = (w * da * da) @ oh.T  # (B, D)
    c_af = (w * da * df) @ oh.T  # (B, D)
    degenerate = ~(c_aa > 0) | ~jnp.isfinite(c_aa)
    ok = ok & ~jnp.any(degenerate, axis=1)
    c_aa_safe = jnp.where(degenerate, 1.0, c_aa)

    fs_free = c_af / c_aa_safe
    fs = jnp.maximum(fs_free, 0.0) if positive_source else fs_free
    fb = fbar[None, :] - fs * abar
    resid_free = f - (fs_free @ oh) * a - ((fbar[None, :] - fs_free * abar) @ oh)
    chi2_free_d = (w * resid_free**2) @ oh.T
    if positive_source:
        resid = f - (fs @ oh) * a - (fb @ oh)
        chi2_d = (w * resid**2) @ oh.T
    else:
        chi2_d = chi2_free_d
    chi2 = jnp.sum(chi2_d, axis=1)
    logdet = jnp.log(s1_safe)[None, :] + jnp.log(c_aa_safe)  # log det M_d, (B, D)
    marginal = -0.5 * jnp.sum(chi2_free_d, axis=1) + jnp.sum(_LOG_2PI - 0.5 * logdet, axis=1)
    if positive_source:
        marginal = marginal + jnp.sum(log_ndtr(fs_free * jnp.sqrt(c_aa_safe)), axis=1)
    profile = -0.5 * chi2
    if normalize:
        profile = profile + packed.log_norm
        marginal = marginal + packed.log_norm
    ninf = -jnp.inf
    nan = jnp.nan
    return LikelihoodResult(
        profile=jnp.where(ok, profile, ninf),
        marginal=jnp.where(ok, marginal, ninf),
        chi2=jnp.where(ok, chi2, nan),
        chi2_datasets=jnp.where(ok[:, None], chi2_d, nan),
        f_s=jnp.where(ok[:, None], fs, nan),
        f_b=jnp.where(ok[:, None], fb, nan),
        f_s_err=jnp.where(ok[:, None], 1.0 / jnp.sqrt(c_aa_safe), nan),
        ok=ok,
    )


def log_likelihood(
    params: dict,
    packed: PackedEvent,
    kind: str = "marginal",
    positive_source: bool = False,
    normalize: bool = False,
) -> Array:
    """(B,) log-likelihood: ``kind='marginal'`` (fluxes integrated out) or ``'profile'`` (maximised).

    −inf marks a parameter set whose magnification is not certified (see :func:`evaluate` for the
    flag and the best-fit fluxes). Jittable and differentiable in ``params``.
    """
    if kind not in ("marginal", "profile"):
        raise ValueError(f"kind must be 'marginal' or 'profile', got {kind!r}")
    res = evaluate(params, packed, positive_source=positive_source, normalize=normalize)
    return res.marginal if kind == "marginal" else res.profile
