"""Importance sampling of proposal samples with the exact likelihood (DINGO/nbi style), plus the
priors and transformed parameter space shared with NUTS, and a Laplace (Gaussian) proposal.

**Densities are in physical coordinates.** A proposal sample θ_i = (t_0, u_0, t_E, s, q, alpha[, rho])
(alpha in degrees) comes with ``log q(θ_i)``, the proposal's log-density *with respect to the
physical parameters*. A flow that models ``z = T(θ)`` (e.g. ``log t_E``) gives ``log q_z(z)``;
convert with ``log q(θ) = log q_z(z) + log|dz/dθ|`` — for this module's own sampling space
(natural log of ``t_E, s, q, rho``; the others linear) :func:`log_density_to_physical` does it.
The prior log-density (:func:`log_prior`) is also physical, so

    log w_i = log L(θ_i) + log π(θ_i) − log q(θ_i).

With ``W = Σ w_i``: normalised weights ``w_i/W``; effective sample size ``ESS = W²/Σ w_i²``; sample
efficiency ``ESS/n``; evidence ``Z ≈ W/n`` with standard error of ``log Z``
``√((n − ESS)/(n·ESS))`` (delta method on the sample mean of the weights, as in DINGO). The
evidence inherits the likelihood's constants (see :mod:`mulens_sbi.likelihood`: flat flux priors
and, unless ``normalize=True``, no Gaussian normalisation).

Priors are a mapping name → ``(dist, low, high)`` with ``dist`` ``"uniform"`` or ``"log_uniform"``,
``("fixed", value)``, or a :class:`mulens_sbi.survey.spec.Prior` (a survey spec's ``priors`` dict is
accepted directly). Flux priors (``source_mag``, ``blend_fraction``) are not used — the fluxes are
solved/marginalised analytically under flat priors — and :func:`parse_priors` returns their names
as ``ignored`` so callers can report them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mulens_sbi.event import Event
from mulens_sbi.inference.pareto import pareto_khat
from mulens_sbi.likelihood import log_likelihood, pack_event

__all__ = [
    "FLUX_PRIORS",
    "LOG_PARAMETERS",
    "GaussianProposal",
    "ImportanceResult",
    "LensPrior",
    "from_sampling_space",
    "importance_sample",
    "importance_weights",
    "laplace_approximation",
    "log_density_to_physical",
    "log_prior",
    "parse_priors",
    "priors_from_spec",
    "sampling_name",
    "to_sampling_space",
]

#: parameters sampled as their natural logarithm (the rest linearly)
LOG_PARAMETERS = ("t_E", "s", "q", "rho")
#: priors of a survey spec that concern the fluxes (solved analytically here, so not used)
FLUX_PRIORS = ("source_mag", "blend_fraction")
#: canonical order of lens parameters
ORDER = ("t_0", "u_0", "t_E", "s", "q", "alpha", "rho", "limb_darkening")
#: efficiency thresholds of the verdict
FAIL_EFFICIENCY = 0.01
GOOD_EFFICIENCY = 0.10
MIN_ESS = 100.0


# ----------------------------------------------------------------------------------------------
# Priors and the sampling space


@dataclass(frozen=True)
class LensPrior:
    """Prior of one lens parameter: ``uniform``/``log_uniform`` on [low, high] or ``fixed`` value."""

    name: str
    dist: str
    low: float | None = None
    high: float | None = None
    value: float | None = None

    @property
    def is_log(self) -> bool:
        """Sampled as log(parameter)?"""
        return self.name in LOG_PARAMETERS

    def sampling_bounds(self) -> tuple[float, float]:
        """Bounds of the sampling-space variable (log for ``LOG_PARAMETERS``)."""
        if self.is_log:
            return math.log(self.low), math.log(self.high)
        return float(self.low), float(self.high)


def _field(p, key):
    if isinstance(p, Mapping):
        return p.get(key)
    return getattr(p, key, None)


def parse_priors(priors: Mapping) -> tuple[dict[str, LensPrior], tuple[str, ...]]:
    """Validate priors; return ``({name: LensPrior}, ignored_flux_prior_names)``.

    Raises:
        ValueError: unknown parameter, unsupported distribution (e.g. ``seasons`` — give ``t_0`` a
            ``uniform`` prior on the event's window), bad bounds, a binary lens with only some of
            ``s, q, alpha``, or a missing ``t_0``/``u_0``/``t_E``.
    """
    out: dict[str, LensPrior] = {}
    ignored = []
    for name, p in priors.items():
        if name in FLUX_PRIORS:
            ignored.append(name)
            continue
        if name not in ORDER:
            raise ValueError(f"prior for unknown parameter {name!r}; known: {', '.join(ORDER + FLUX_PRIORS)}")
        if isinstance(p, tuple | list):
            if len(p) == 2 and p[0] == "fixed":
                dist, low, high, value = "fixed", None, None, p[1]
            elif len(p) == 3:
                (dist, low, high), value = p, None
            else:
                raise ValueError(f"prior {name}: expected (dist, low, high) or ('fixed', value), got {p!r}")
        else:
            dist, low, high, value = (_field(p, k) for k in ("dist", "low", "high", "value"))
        if dist == "fixed":
            if value is None or not math.isfinite(float(value)):
                raise ValueError(f"prior {name}: 'fixed' needs a finite value")
            out[name] = LensPrior(name, "fixed", value=float(value))
            continue
        if dist not in ("uniform", "log_uniform"):
            raise ValueError(
                f"prior {name}: distribution {dist!r} is not supported here; use 'uniform', 'log_uniform' "
                "or 'fixed' (a 'seasons' prior on t_0: give a uniform prior on the event's window)"
            )
        try:
            low, high = float(low), float(high)
        except (TypeError, ValueError):
            raise ValueError(
                f"prior {name}: {dist} needs numeric low and high, got {low!r}, {high!r}"
            ) from None
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"prior {name}: need finite low < high, got low={low}, high={high}")
        if (dist == "log_uniform" or name in LOG_PARAMETERS) and low <= 0:
            raise ValueError(f"prior {name}: {dist} on a log-sampled or log-uniform parameter needs low > 0")
        out[name] = LensPrior(name, dist, low, high)
    missing = [n for n in ("t_0", "u_0", "t_E") if n not in out]
    if missing:
        raise ValueError(f"priors missing for {missing}")
    binary = [n in out for n in ("s", "q", "alpha")]
    if any(binary) and not all(binary):
        raise ValueError("a binary lens needs priors for all of s, q and alpha")
    if "limb_darkening" in out and "rho" not in out:
        raise ValueError("limb_darkening needs a rho prior (finite source)")
    out = {n: out[n] for n in ORDER if n in out}
    return out, tuple(ignored)


def priors_from_spec(spec, t_0: tuple[float, float] | None = None) -> dict[str, LensPrior]:
    """Lens priors of a survey spec's model (``spec.sampled_parameters()``), ready for
    :func:`run_nuts`/:func:`importance_sample`.

    The flux priors (``source_mag``, ``blend_fraction``) are left out on purpose: the fluxes are
    solved or marginalised under flat priors. Priors the spec's model does not use (e.g. ``rho``
    with a point source) are not included. A ``seasons`` prior on ``t_0`` cannot be sampled here:
    pass ``t_0=(low, high)``, a window around the event (HJD').
    """
    names = [n for n in spec.sampled_parameters() if n not in FLUX_PRIORS]
    raw = {n: spec.priors[n] for n in names}
    if t_0 is not None:
        raw["t_0"] = ("uniform", float(t_0[0]), float(t_0[1]))
    elif spec.priors["t_0"].dist == "seasons":
        raise ValueError("the spec's t_0 prior is 'seasons': pass t_0=(low, high) around the event")
    return parse_priors(raw)[0]


def sampling_name(name: str) -> str:
    """Name of the sampling-space variable: ``log_t_E`` for log-sampled parameters, else ``name``."""
    return f"log_{name}" if name in LOG_PARAMETERS else name


def to_sampling_space(params: Mapping) -> dict:
    """Physical → sampling space (natural log of ``LOG_PARAMETERS``); keys by :func:`sampling_name`."""
    return {sampling_name(k): (jnp.log(v) if k in LOG_PARAMETERS else v) for k, v in params.items()}


def from_sampling_space(z: Mapping) -> dict:
    """Sampling space → physical (inverse of :func:`to_sampling_space`)."""
    out = {}
    for k, v in z.items():
        if k.startswith("log_") and k[4:] in LOG_PARAMETERS:
            out[k[4:]] = jnp.exp(v)
        else:
            out[k] = v
    return out


def log_density_to_physical(log_q_z, params: Mapping):
    """``log q(θ) = log q_z(z) − Σ_{log params} log θ_k`` for a density over this module's sampling
    space (``z_k = log θ_k`` for ``LOG_PARAMETERS``)."""
    out = jnp.asarray(log_q_z)
    for k, v in params.items():
        if k in LOG_PARAMETERS:
            out = out - jnp.log(v)
    return out


def log_prior(priors: Mapping[str, LensPrior], params: Mapping):
    """Physical prior log-density (B,) of ``params`` (arrays (B,)); −inf outside the support.

    ``uniform``: ``−log(high − low)``; ``log_uniform``: ``−log θ − log log(high/low)``. Fixed
    parameters are not densities and are skipped (they need not appear in ``params``).
    """
    total = None
    for name, pr in priors.items():
        if pr.dist == "fixed":
            continue
        if name not in params:
            raise ValueError(f"log_prior: parameter {name!r} missing from the samples")
        x = jnp.asarray(params[name], dtype=jnp.float64)
        inside = (x >= pr.low) & (x <= pr.high)
        if pr.dist == "uniform":
            lp = jnp.full_like(x, -math.log(pr.high - pr.low))
        else:
            lp = -jnp.log(jnp.where(inside, x, 1.0)) - math.log(math.log(pr.high / pr.low))
        lp = jnp.where(inside, lp, -jnp.inf)
        total = lp if total is None else total + lp
    return total


# ----------------------------------------------------------------------------------------------
# Importance weights


def _logsumexp(x: np.ndarray) -> float:
    m = np.max(x)
    if not np.isfinite(m):
        return float(m)
    return float(m + np.log(np.sum(np.exp(x - m))))


@dataclass(frozen=True)
class ImportanceResult:
    """Importance-sampling output; arrays of shape (n,).

    Attributes:
        log_weights: unnormalised ``log L + log π − log q`` (−inf for zero weight).
        weights: normalised weights (sum 1).
        log_likelihood, log_prior, log_proposal: the three terms.
        n, ess, efficiency: sample count, effective sample size, ``ess / n``.
        log_evidence, log_evidence_err: ``log(Σ w / n)`` and its standard error.
        n_outside_prior: samples with ``π = 0``; n_likelihood_failed: samples with ``log L = −inf``
            inside the prior (uncertified magnification or invalid parameters).
        status: ``"ok"``, ``"caution"`` or ``"fail"``; verdict: a sentence saying what to do.
        samples: the proposal samples (physical), if given.
        k_hat: the Pareto k̂ of the weights (:func:`mulens_sbi.inference.pareto.pareto_khat`;
            ≤ 0.7 reliable, > 0.7 a few draws dominate and the ESS overstates the precision;
            ``nan`` when not estimable, e.g. equal weights).
    """

    log_weights: np.ndarray
    weights: np.ndarray
    log_likelihood: np.ndarray
    log_prior: np.ndarray
    log_proposal: np.ndarray
    n: int
    ess: float
    efficiency: float
    log_evidence: float
    log_evidence_err: float
    n_outside_prior: int
    n_likelihood_failed: int
    status: str
    verdict: str
    samples: dict | None = None
    k_hat: float = math.nan

    def resample(self, n: int | None = None, seed: int = 0, samples: Mapping | None = None) -> dict:
        """Unweighted samples: ``n`` draws with replacement by weight (default ``round(ESS)``).

        Duplicates are expected (about n/ESS copies per distinct sample when n ≈ ESS)."""
        src = samples if samples is not None else self.samples
        if src is None:
            raise ValueError("resample: no samples stored; pass samples=")
        if self.ess <= 0:
            raise ValueError("resample: all weights are zero (" + self.verdict + ")")
        n = max(1, int(round(self.ess))) if n is None else int(n)
        idx = np.random.default_rng(seed).choice(self.n, size=n, replace=True, p=self.weights)
        return {k: np.asarray(v)[idx] for k, v in src.items()}

    def mean(self, samples: Mapping | None = None) -> dict:
        """Weighted posterior mean of each parameter."""
        src = samples if samples is not None else self.samples
        return {k: float(np.sum(self.weights * np.asarray(v))) for k, v in src.items()}

    def quantiles(self, qs=(0.025, 0.5, 0.975), samples: Mapping | None = None) -> dict:
        """Weighted quantiles of each parameter (piecewise-constant weighted CDF)."""
        src = samples if samples is not None else self.samples
        out = {}
        for k, v in src.items():
            v = np.asarray(v)
            o = np.argsort(v)
            cdf = np.cumsum(self.weights[o])
            out[k] = np.asarray([v[o][min(np.searchsorted(cdf, q), v.size - 1)] for q in qs])
        return out

    def summary(self) -> str:
        return (
            f"importance sampling: n={self.n}, ESS={self.ess:.1f}, efficiency={100 * self.efficiency:.2f}%, "
            f"log Z={self.log_evidence:.3f} ± {self.log_evidence_err:.3f}; {self.verdict}"
        )


def _verdict(n, ess, eff, n_out, n_fail) -> tuple[str, str]:
    notes = []
    if n_out:
        notes.append(f"{n_out} of {n} proposal samples lie outside the prior (weight 0)")
    if n_fail:
        notes.append(
            f"{n_fail} of {n} samples have an uncertified magnification or invalid parameters (weight 0); "
            "if many, the reweighted posterior may be biased near caustics"
        )
    if ess <= 0:
        status = "fail"
        msg = "fail: no proposal sample has non-zero weight; the proposal misses the posterior entirely"
    elif eff < FAIL_EFFICIENCY:
        status = "fail"
        msg = (
            f"fail: efficiency {100 * eff:.2g}% < {100 * FAIL_EFFICIENCY:g}%: flow and likelihood disagree: "
            "do not trust the amortized posterior; refine with NUTS"
        )
    elif eff < GOOD_EFFICIENCY or ess < MIN_ESS:
        status = "caution"
        msg = (
            f"caution: efficiency {100 * eff:.2g}%, ESS {ess:.0f}: the reweighted posterior is usable but "
            "noisy; draw more proposal samples (ESS grows ∝ n) or refine with NUTS"
        )
    else:
        status = "ok"
        msg = f"ok: efficiency {100 * eff:.2g}%, ESS {ess:.0f}: the proposal covers the posterior"
    return status, "; ".join([msg] + notes)


def importance_weights(
    log_likelihood, log_prior, log_proposal, samples: Mapping | None = None, proposal_mass: float = 1.0
) -> ImportanceResult:
    """Weights, ESS, efficiency, evidence and a verdict from the three log-densities (arrays (n,)).

    ``log_proposal`` must be finite (a sample has positive proposal density by construction); NaN
    in any input is an error. ``−inf`` likelihood or prior gives weight 0. ``proposal_mass`` in
    (0, 1]: when the samples come from a density truncated by rejection (a flow restricted to the
    prior box) while ``log_proposal`` is the untruncated one, the fraction of its mass kept
    (the sampler's acceptance); the proposal actually sampled is exp(log_proposal)/proposal_mass,
    so the log evidence gains log(proposal_mass) (weights and ESS are unchanged).
    """
    if not (isinstance(proposal_mass, int | float) and 0.0 < proposal_mass <= 1.0):
        raise ValueError(f"proposal_mass must be in (0, 1], got {proposal_mass!r}")
    ll = np.asarray(log_likelihood, dtype=float).reshape(-1)
    lp = np.asarray(log_prior, dtype=float).reshape(-1)
    lq = np.asarray(log_proposal, dtype=float).reshape(-1)
    if not (ll.size == lp.size == lq.size) or ll.size == 0:
        raise ValueError(f"need equal non-zero lengths, got {ll.size}, {lp.size}, {lq.size}")
    for label, arr in (("log_likelihood", ll), ("log_prior", lp), ("log_proposal", lq)):
        if np.any(np.isnan(arr)):
            bad = np.flatnonzero(np.isnan(arr))
            raise ValueError(f"{label} has {bad.size} NaN value(s), first at index {bad[0]}")
        if np.any(arr == np.inf):
            raise ValueError(f"{label} has +inf values")
    if not np.all(np.isfinite(lq)):
        raise ValueError("log_proposal must be finite for every sample")
    n = ll.size
    n_out = int(np.sum(lp == -np.inf))
    n_fail = int(np.sum((ll == -np.inf) & (lp > -np.inf)))
    logw = ll + lp - lq
    logw_sum = _logsumexp(logw)
    if np.isfinite(logw_sum):
        w = np.exp(logw - logw_sum)
        ess = float(1.0 / np.sum(w**2))
        log_z = logw_sum - math.log(n) + math.log(proposal_mass)
        log_z_err = math.sqrt(max(n - ess, 0.0) / (n * ess))
    else:
        w = np.zeros(n)
        ess, log_z, log_z_err = 0.0, -math.inf, math.inf
    eff = ess / n
    status, verdict = _verdict(n, ess, eff, n_out, n_fail)
    return ImportanceResult(
        log_weights=logw, weights=w, log_likelihood=ll, log_prior=lp, log_proposal=lq, n=n, ess=ess,
        efficiency=eff, log_evidence=log_z, log_evidence_err=log_z_err, n_outside_prior=n_out,
        n_likelihood_failed=n_fail, status=status, verdict=verdict,
        samples=None if samples is None else {k: np.asarray(v) for k, v in samples.items()},
        k_hat=pareto_khat(logw),
    )


@partial(jax.jit, static_argnames=("kind", "positive_source"))
def _chunk_log_likelihood(params, packed, kind, positive_source):
    return log_likelihood(params, packed, kind=kind, positive_source=positive_source)


def importance_sample(
    event: Event,
    samples: Mapping,
    log_proposal,
    priors: Mapping,
    *,
    kind: str = "marginal",
    positive_source: bool = False,
    chunk_size: int = 256,
    pad_to: int | None = None,
    progress: bool = True,
) -> ImportanceResult:
    """Reweight proposal samples of ``event`` with the exact likelihood.

    Args:
        event: the data.
        samples: physical parameters, arrays (n,) (alpha in degrees); parameters fixed by the
            priors may be omitted (the fixed value is used).
        log_proposal: (n,) proposal log-density in physical coordinates (see module docstring).
        priors: see :func:`parse_priors`.
        kind: ``"marginal"`` (fluxes integrated out) or ``"profile"``.
        chunk_size: parameter sets per likelihood call; the last chunk is padded so one compiled
            shape serves all chunks.
        pad_to: pad the event to this many points (reuse compiled shapes across events).
        progress: tqdm progress bar over chunks.
    """
    pri, _ = parse_priors(priors)
    packed = pack_event(event, pad_to=pad_to)
    names = [k for k in pri if pri[k].dist != "fixed"]
    missing = [k for k in names if k not in samples]
    if missing:
        raise ValueError(f"samples lack parameter(s) {missing}")
    n = int(np.asarray(samples[names[0]]).shape[0])
    full = {}
    for k, pr in pri.items():
        if pr.dist == "fixed":
            full[k] = np.full(n, pr.value)
        else:
            full[k] = np.asarray(samples[k], dtype=float).reshape(n)
    lp = np.asarray(log_prior(pri, {k: full[k] for k in names}))

    chunk_size = max(1, min(int(chunk_size), n))
    ll = np.empty(n)
    starts = range(0, n, chunk_size)
    for i0 in tqdm(starts, desc="likelihood", disable=not progress, total=len(starts)):
        i1 = min(i0 + chunk_size, n)
        take = np.minimum(np.arange(i0, i0 + chunk_size), n - 1)  # pad by repeating the last sample
        chunk = {k: jnp.asarray(v[take]) for k, v in full.items()}
        out = np.asarray(_chunk_log_likelihood(chunk, packed, kind, positive_source))
        ll[i0:i1] = out[: i1 - i0]
    return importance_weights(ll, lp, log_proposal, samples={k: full[k] for k in names})


# ----------------------------------------------------------------------------------------------
# Laplace (Gaussian) proposal in the sampling space


@dataclass(frozen=True)
class GaussianProposal:
    """Multivariate normal over the sampling space (``log`` of ``LOG_PARAMETERS``).

    Attributes:
        names: physical parameter names, in order.
        mean, cov: mean (D,) and covariance (D, D) of the sampling-space variables.
        fixed: parameters held fixed (name → value), added to every sample.
        log_posterior_max: the objective φ (log L + log prior + log Jacobian, sampling space) at the
            mean; ``log_evidence_laplace()`` gives the Laplace evidence.
    """

    names: tuple[str, ...]
    mean: np.ndarray
    cov: np.ndarray
    fixed: dict
    log_posterior_max: float = math.nan

    def log_evidence_laplace(self) -> float:
        """``φ_max + (D/2) log 2π + ½ log det Σ`` (same likelihood constants as the likelihood used)."""
        d = len(self.names)
        log_det = np.linalg.slogdet(self.cov)[1]
        return float(self.log_posterior_max + 0.5 * d * math.log(2 * math.pi) + 0.5 * log_det)

    def std_physical(self) -> dict:
        """Approximate 1σ in physical units (delta method: ``θ·σ_z`` for log-sampled parameters)."""
        sd = np.sqrt(np.diag(self.cov))
        return {
            k: float(math.exp(self.mean[i]) * sd[i]) if k in LOG_PARAMETERS else float(sd[i])
            for i, k in enumerate(self.names)
        }

    def physical_mean(self) -> dict:
        return {k: float(math.exp(self.mean[i]) if k in LOG_PARAMETERS else self.mean[i])
                for i, k in enumerate(self.names)}

    def sample(self, n: int, seed: int = 0, scale: float = 1.0) -> tuple[dict, np.ndarray]:
        """``n`` samples (physical, dict of (n,)) and their physical log-density ``log q(θ)``.

        ``scale`` widens the covariance by ``scale²`` (a safer proposal for importance sampling).
        """
        cov = self.cov * scale**2
        d = len(self.names)
        chol = np.linalg.cholesky(cov)
        eps = np.random.default_rng(seed).standard_normal((n, d))
        z = self.mean + eps @ chol.T
        log_norm = -np.sum(np.log(np.diag(chol))) - 0.5 * d * math.log(2 * math.pi)
        log_qz = -0.5 * np.sum(eps**2, axis=1) + log_norm
        phys = {}
        for i, k in enumerate(self.names):
            phys[k] = np.exp(z[:, i]) if k in LOG_PARAMETERS else z[:, i]
        log_q = np.asarray(log_density_to_physical(log_qz, phys))
        for k, v in self.fixed.items():
            phys[k] = np.full(n, v)
        return phys, log_q


@lru_cache(maxsize=16)
def _laplace_objective(prior_items: tuple, kind: str, positive_source: bool):
    """Jitted value and gradient of φ(z, packed) (see :func:`laplace_approximation`), cached on the
    priors and likelihood settings so that events of one padded shape share the compilation."""
    pri = dict(prior_items)
    names = tuple(k for k in pri if pri[k].dist != "fixed")
    fixed = {k: pr.value for k, pr in pri.items() if pr.dist == "fixed"}
    is_log = [k in LOG_PARAMETERS for k in names]

    def phi(z, packed):
        theta = {k: (jnp.exp(z[i]) if is_log[i] else z[i])[None] for i, k in enumerate(names)}
        theta.update({k: jnp.asarray([v]) for k, v in fixed.items()})
        ll = log_likelihood(theta, packed, kind=kind, positive_source=positive_source)[0]
        lp = 0.0
        for i, k in enumerate(names):  # normalised prior density inside the box + Jacobian
            pr = pri[k]
            if pr.dist == "log_uniform":
                lp = lp - jnp.log(theta[k][0]) - math.log(math.log(pr.high / pr.low))
            else:
                lp = lp - math.log(pr.high - pr.low)
            if is_log[i]:
                lp = lp + z[i]
        return ll + lp

    return jax.jit(jax.value_and_grad(phi))


def laplace_approximation(
    event: Event,
    init: Mapping,
    priors: Mapping,
    *,
    kind: str = "marginal",
    positive_source: bool = False,
    max_iter: int = 50,
    pad_to: int | None = None,
) -> GaussianProposal:
    """Maximum of the sampling-space posterior and the Laplace approximation around it.

    Objective ``φ(z) = log L(θ(z)) + log π(θ(z)) + log|dθ/dz|``: the sampling-space posterior
    density times Z, with the normalised physical prior (prior bounds are not enforced during the
    search but checked at the end), so the Laplace evidence is
    ``log Z ≈ φ_max + (D/2) log 2π + ½ log det Σ`` (``log_posterior_max`` holds φ_max).
    Maximised by damped Newton steps (Levenberg–Marquardt on the Hessian) from ``init``
    (physical); the covariance is ``(−∇²φ)⁻¹``. The Hessian is the symmetrised central finite
    difference of the exact (autodiff) gradient with steps of 1% of each parameter's current
    posterior σ (``1/√|H_ii|`` from the previous Hessian; ``1e-6·max(|z|, 1)`` at the start) — it
    works for every lens model, including the binary solver with its custom JVP.

    Raises:
        ValueError: the Hessian at the optimum is not negative definite, or the optimum lies
            outside the prior support.
    """
    pri, _ = parse_priors(priors)
    names = tuple(k for k in pri if pri[k].dist != "fixed")
    fixed = {k: pr.value for k, pr in pri.items() if pr.dist == "fixed"}
    packed = pack_event(event, pad_to=pad_to)
    is_log = np.array([k in LOG_PARAMETERS for k in names])
    vg_packed = _laplace_objective(tuple(pri.items()), kind, positive_source)

    def vg(z):
        return vg_packed(z, packed)

    steps = None  # finite-difference steps, 1e-2 of the current posterior σ once a Hessian exists

    def hessian(z):
        nonlocal steps
        d = z.size
        h = np.zeros((d, d))
        hs = steps if steps is not None else 1e-6 * np.maximum(np.abs(z), 1.0)
        for i in range(d):
            zp, zm = z.copy(), z.copy()
            zp[i] += hs[i]
            zm[i] -= hs[i]
            h[i] = (np.asarray(vg(jnp.asarray(zp))[1]) - np.asarray(vg(jnp.asarray(zm))[1])) / (2 * hs[i])
        h = 0.5 * (h + h.T)
        diag = np.abs(np.diag(h))
        if np.all(np.isfinite(diag)) and np.all(diag > 0):
            steps = 1e-2 / np.sqrt(diag)
        return h

    z = np.array([math.log(init[k]) if is_log[i] else float(init[k]) for i, k in enumerate(names)])
    val, g = vg(jnp.asarray(z))
    val, g = float(val), np.asarray(g)
    if not np.isfinite(val):
        raise ValueError("laplace_approximation: the likelihood is not finite at init")
    lam = 1e-3
    for _ in range(max_iter):
        hmat = hessian(z)
        improved = False
        for _ in range(30):
            a = -hmat + lam * np.diag(np.maximum(np.abs(np.diag(hmat)), 1e-12))
            try:
                step = np.linalg.solve(a, g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            v2, g2 = vg(jnp.asarray(z + step))
            v2 = float(v2)
            if np.isfinite(v2) and v2 >= val - 1e-12:
                improved = True
                z, dval, val, g = z + step, v2 - val, v2, np.asarray(g2)
                lam = max(lam / 10, 1e-9)
                break
            lam *= 10
        if not improved or dval < 1e-9:
            break
    hessian(z)  # refresh the steps at the optimum, then the final Hessian with them
    hmat = hessian(z)
    eig = np.linalg.eigvalsh(-hmat)
    if not np.all(eig > 0):
        raise ValueError(
            f"laplace_approximation: Hessian not negative definite at the optimum (eigenvalues {eig})"
        )
    cov = np.linalg.inv(-hmat)
    cov = 0.5 * (cov + cov.T)
    phys = {k: np.array([math.exp(z[i]) if is_log[i] else z[i]]) for i, k in enumerate(names)}
    if not np.isfinite(float(np.asarray(log_prior(pri, phys))[0])):
        raise ValueError(f"laplace_approximation: the optimum {phys} lies outside the prior support")
    return GaussianProposal(names=names, mean=z, cov=cov, fixed=fixed, log_posterior_max=val)
