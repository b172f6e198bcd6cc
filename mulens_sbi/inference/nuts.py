"""Reference posterior of one event by NUTS (numpyro's kernel) on the exact likelihood.

The posterior:

* each free lens parameter lives in the *sampling space* — ``log_t_E``, ``log_s``, ``log_q``,
  ``log_rho`` (natural log) and ``t_0``, ``u_0``, ``alpha`` (degrees) linear — bounded by the image
  of its prior interval; where the physical prior is not uniform in that variable (``uniform`` on a
  log-sampled parameter, ``log_uniform`` on a linear one) the density carries ``log π(θ) +
  log|dθ/dz|``, so the posterior over θ is the one for the stated physical prior. For the sampler
  each bounded variable is mapped to R by numpyro's interval transform
  ``z = lo + (hi − lo)·sigmoid(u)`` (with its log-Jacobian).
* the fluxes are **marginalised analytically** (``kind="marginal"``, flat priors on each dataset's
  F_s, F_b; see :mod:`mulens_sbi.likelihood`), not sampled: 2 parameters fewer per dataset, and no
  funnel between F_s and the magnification. ``kind="profile"`` maximises them instead.

:func:`run_nuts` drives numpyro's NUTS kernel on that density directly (one compilation per
settings and event shape); :func:`make_model` is the same density as a numpyro model (sample sites
named as above, ``numpyro.factor`` for the likelihood and prior factors, physical values and ``log L``
as deterministic sites) for use with other numpyro tools — the two are tested to agree.

An uncertified magnification gives ``log L = −inf``: NUTS treats such a proposal as divergent and
rejects it (counted in ``divergences``).

Priors as in :func:`mulens_sbi.inference.importance.parse_priors` (survey ``Prior`` objects,
``(dist, low, high)`` tuples or ``("fixed", value)``); ``alpha`` is sampled on its prior interval
and not wrapped, so give it an interval that contains the posterior with margin.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer.hmc import hmc
from tqdm.auto import tqdm

from mulens_sbi.event import Event
from mulens_sbi.inference.importance import LOG_PARAMETERS, LensPrior, parse_priors, sampling_name
from mulens_sbi.likelihood import PackedEvent, log_likelihood, pack_event

__all__ = ["make_model", "run_nuts"]


def _needs_factor(pr: LensPrior) -> bool:
    return (pr.dist == "uniform") == pr.is_log  # prior not uniform in the sampling variable


def make_model(
    packed: PackedEvent,
    priors: Mapping[str, LensPrior],
    kind: str = "marginal",
    positive_source: bool = False,
):
    """The numpyro model (no arguments) of one packed event; ``priors`` from ``parse_priors``."""

    def model():
        theta = {}
        for name, pr in priors.items():
            if pr.dist == "fixed":
                theta[name] = jnp.asarray(pr.value)
                continue
            lo, hi = pr.sampling_bounds()
            z = numpyro.sample(sampling_name(name), dist.Uniform(lo, hi))
            x = jnp.exp(z) if pr.is_log else z
            if _needs_factor(pr):
                if pr.dist == "uniform":  # uniform in θ, sampled in log θ: density e^z/(hi−lo)
                    lp = z - math.log(pr.high - pr.low)
                else:  # log-uniform in θ, sampled linearly: density 1/(θ log(hi/lo))
                    lp = -jnp.log(x) - math.log(math.log(pr.high / pr.low))
                numpyro.factor(f"prior_{name}", lp + math.log(hi - lo))
            theta[name] = numpyro.deterministic(name, x) if pr.is_log else x
        ll = log_likelihood(
            {k: v[None] for k, v in theta.items()}, packed, kind=kind, positive_source=positive_source
        )[0]
        numpyro.deterministic("log_likelihood", ll)
        numpyro.factor("log_likelihood_factor", ll)

    return model


class _Space:
    """The free parameters: physical ↔ sampling space z (log for LOG_PARAMETERS) ↔ unconstrained u
    (``z = lo + (hi − lo)·sigmoid(u)``, numpyro's transform for an interval support)."""

    def __init__(self, priors: Mapping[str, LensPrior]):
        self.priors = priors
        self.names = tuple(k for k, pr in priors.items() if pr.dist != "fixed")
        self.fixed = {k: pr.value for k, pr in priors.items() if pr.dist == "fixed"}
        b = np.array([priors[k].sampling_bounds() for k in self.names])
        self.lo, self.hi = b[:, 0], b[:, 1]
        self.is_log = np.array([k in LOG_PARAMETERS for k in self.names])

    def physical(self, u):
        """(..., D) unconstrained → dict of physical arrays (...)."""
        z = self.lo + (self.hi - self.lo) * jax.nn.sigmoid(u)
        # exp only of the log-sampled columns: exp(t_0 ≈ 9000) would overflow and poison the gradient
        x = jnp.where(self.is_log, jnp.exp(jnp.where(self.is_log, z, 0.0)), z)
        return {k: x[..., i] for i, k in enumerate(self.names)}, z

    def log_prior_u(self, u):
        """log density of u (..., D): physical prior pushed to z, plus log|dz/du|."""
        _, z = self.physical(u)
        total = jnp.sum(jnp.log(self.hi - self.lo) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u), axis=-1)
        for i, k in enumerate(self.names):
            pr = self.priors[k]
            if not _needs_factor(pr):
                total = total - math.log(self.hi[i] - self.lo[i])
            elif pr.dist == "uniform":  # uniform in θ, sampled in log θ
                total = total + z[..., i] - math.log(pr.high - pr.low)
            else:  # log-uniform in θ, sampled linearly
                total = total - jnp.log(z[..., i]) - math.log(math.log(pr.high / pr.low))
        return total

    def unconstrained(self, init: Mapping, chains: int) -> np.ndarray:
        """Physical init (scalars or (chains,) arrays) → u of shape (chains, D), validated."""
        cols = []
        for name in self.names:
            pr = self.priors[name]
            if name not in init:
                raise ValueError(f"init lacks parameter {name!r} (physical units)")
            v = np.asarray(init[name], dtype=float)
            v = np.broadcast_to(v, (chains,)) if v.ndim == 0 else v
            if v.shape != (chains,):
                raise ValueError(f"init[{name!r}] must be a scalar or have shape ({chains},), got {v.shape}")
            if np.any(~np.isfinite(v)) or np.any(v <= pr.low) or np.any(v >= pr.high):
                raise ValueError(
                    f"init[{name!r}] = {v} must lie strictly inside the prior interval ({pr.low}, {pr.high})"
                )
            z = np.log(v) if pr.is_log else v
            lo, hi = pr.sampling_bounds()
            r = (z - lo) / (hi - lo)
            cols.append(np.log(r) - np.log1p(-r))
        return np.stack(cols, axis=-1)


@functools.lru_cache(maxsize=16)
def _chain_runner(
    prior_items: tuple,
    kind: str,
    positive_source: bool,
    num_warmup: int,
    num_samples: int,
    dense_mass: bool,
    target_accept: float,
    max_tree_depth: int,
    vectorized: bool,
):
    """A jitted ``(packed, u0, key) -> trace`` running one chain (init, warm-up, sampling in one
    ``lax.scan``); cached on the settings so events of the same padded shape reuse the compilation."""
    space = _Space(dict(prior_items))
    fixed = {k: jnp.asarray([v]) for k, v in space.fixed.items()}

    def potential_gen(packed):
        def potential(u):
            theta, _ = space.physical(u)
            p = {k: v[None] for k, v in theta.items()} | fixed
            ll = log_likelihood(p, packed, kind=kind, positive_source=positive_source)[0]
            return -(ll + space.log_prior_u(u))

        return potential

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")

    def one_chain(packed, u0, key):
        state = init_kernel(
            u0, num_warmup, dense_mass=dense_mass, target_accept_prob=target_accept,
            max_tree_depth=max_tree_depth, model_args=(packed,), rng_key=key,
        )

        def step(s, _):
            s = sample_kernel(s, model_args=(packed,))
            return s, (s.z, s.potential_energy, s.diverging, s.accept_prob, s.num_steps)

        _, trace = jax.lax.scan(step, state, None, length=num_warmup + num_samples)
        return trace

    if vectorized:
        return jax.jit(jax.vmap(one_chain, in_axes=(None, 0, 0)))
    return jax.jit(one_chain)


def run_nuts(
    event: Event,
    init: Mapping,
    priors: Mapping,
    num_warmup: int = 500,
    num_samples: int = 500,
    seed: int = 0,
    chains: int = 1,
    *,
    kind: str = "marginal",
    positive_source: bool = False,
    chain_method: str = "sequential",
    dense_mass: bool = True,
    target_accept: float = 0.8,
    max_tree_depth: int = 8,
    pad_to: int | None = None,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Sample the posterior of ``event`` with NUTS started from ``init``.

    The sampler is numpyro's NUTS kernel (``numpyro.infer.hmc.hmc``, windowed adaptation of step
    size and mass matrix during warm-up) driven by one jitted function per chain — initialisation,
    warm-up and sampling compile together once (the lens solver's compilation dominates start-up;
    numpyro's ``MCMC`` front end would compile it three to four times). The log-density is exactly
    that of :func:`make_model` in numpyro's unconstrained space (tested).

    Args:
        event: the data.
        init: starting point, physical units (alpha in degrees): a scalar per free parameter, or an
            array of shape (chains,) per parameter (e.g. draws from the flow), strictly inside the
            prior box.
        priors: see module docstring; flux priors of a survey spec are ignored with a warning.
        num_warmup, num_samples: per chain.
        seed: PRNG seed (same seed and settings → same samples).
        chains: number of chains; ``chain_method`` ``"sequential"`` (a Python loop over one compiled
            chain) or ``"vectorized"`` (``vmap`` over chains; one call, lock-step trees).
        kind: ``"marginal"`` (fluxes integrated out) or ``"profile"``.
        dense_mass, target_accept, max_tree_depth: NUTS settings (a dense mass matrix, adapted in
            warm-up, because t_E, u_0 and the blending are strongly correlated).
        pad_to: pad the event to this many points: the compiled sampler is cached on the settings
            and reused for every event of the same padded shape and number of datasets.
        progress: tqdm bar over chains (sequential); a chain itself runs as one compiled call.

    Returns:
        ``(samples, diagnostics)``. ``samples``: physical parameters and ``log_likelihood`` as
        arrays of shape (chains·num_samples,), chains concatenated (fixed parameters repeated).
        ``diagnostics``: ``r_hat``, ``n_eff`` (dicts per free parameter: numpyro's split-R̂ and
        effective sample size over the chains, on the physical values), ``divergences`` (int,
        sampling phase), ``divergences_warmup``, ``accept_prob`` (mean), ``num_steps_mean``
        (leapfrog steps per sample), ``time_s`` (wall time including compilation), ``chains``,
        ``kind``, ``ignored_priors``, ``samples_by_chain`` (arrays (chains, num_samples)).
    """
    if chain_method not in ("sequential", "vectorized"):
        raise ValueError(f"chain_method must be 'sequential' or 'vectorized', got {chain_method!r}")
    if kind not in ("marginal", "profile"):
        raise ValueError(f"kind must be 'marginal' or 'profile', got {kind!r}")
    pri, ignored = parse_priors(priors)
    if ignored:
        warnings.warn(
            f"run_nuts: flux priors {list(ignored)} are not used (fluxes are marginalised analytically "
            "under flat priors)",
            UserWarning,
            stacklevel=2,
        )
    space = _Space(pri)
    u_init = space.unconstrained(init, chains)
    packed = pack_event(event, pad_to=pad_to)
    run = _chain_runner(
        tuple(pri.items()), kind, positive_source, int(num_warmup), int(num_samples), bool(dense_mass),
        float(target_accept), int(max_tree_depth), chain_method == "vectorized",
    )
    keys = jax.random.split(jax.random.PRNGKey(seed), chains)
    t0 = time.perf_counter()
    if chain_method == "vectorized":
        traces = run(packed, jnp.asarray(u_init), keys)
    else:
        outs = [
            run(packed, jnp.asarray(u_init[c]), keys[c])
            for c in tqdm(range(chains), desc="NUTS chains", disable=not progress)
        ]
        traces = tuple(jnp.stack(parts) for parts in zip(*outs, strict=True))
    traces = jax.tree_util.tree_map(np.asarray, jax.block_until_ready(traces))
    elapsed = time.perf_counter() - t0
    u, pe, div, acc, nsteps = traces  # (chains, total, ...)
    u_s = u[:, num_warmup:]
    theta, _ = space.physical(jnp.asarray(u_s))
    by_chain = {k: np.asarray(v) for k, v in theta.items()}
    by_chain["log_likelihood"] = -pe[:, num_warmup:] - np.asarray(space.log_prior_u(jnp.asarray(u_s)))
    names = space.names
    r_hat = {k: float(split_gelman_rubin(by_chain[k])) for k in names}
    n_eff = {k: float(effective_sample_size(by_chain[k])) for k in names}
    samples = {k: v.reshape(-1) for k, v in by_chain.items()}
    for k, v in space.fixed.items():
        samples[k] = np.full(chains * num_samples, v)
    diagnostics = {
        "r_hat": r_hat,
        "n_eff": n_eff,
        "divergences": int(np.sum(div[:, num_warmup:])),
        "divergences_warmup": int(np.sum(div[:, :num_warmup])),
        "accept_prob": float(np.mean(acc[:, num_warmup:])),
        "num_steps_mean": float(np.mean(nsteps[:, num_warmup:])),
        "time_s": elapsed,
        "chains": chains,
        "kind": kind,
        "ignored_priors": ignored,
        "samples_by_chain": by_chain,
    }
    return samples, diagnostics
