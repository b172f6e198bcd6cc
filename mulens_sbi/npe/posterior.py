"""A trained amortized posterior: sample and evaluate q(theta | x) in physical units.

Prior leakage: the flow has support on all of R^D in network space, so a sample can fall outside
the prior bounds (``ParameterSpace.lower/upper``). With ``leakage="reject"`` (default) such samples
are discarded and replaced by fresh draws in at most ``max_rounds`` rounds of n draws per
observation; this never loops forever. An observation whose acceptance rate is too low to fill n
samples within ``max_rounds`` rounds gets NaN rows for the missing samples and a ``RuntimeWarning``
naming it; the per-observation acceptance rate is returned by ``return_info=True`` (a low rate is
itself a diagnostic: the observation is probably outside the training distribution). With
``leakage="keep"`` nothing is rejected and ``info["in_bounds"]`` flags the samples.

The returned samples then follow the flow's density truncated to the bounds, i.e. proportional to
``log_prob`` (which reports the untruncated flow density in physical units; -inf out of bounds).
Self-normalized importance weights do not need the truncation constant.

Restriction: ``within=(lower, upper)`` (physical units, in the order of ``space.names``) narrows the
accepted box further. Since the posterior under a prior restricted to a sub-box is the posterior
truncated to that box, this gives the posterior under the restricted prior (e.g. planetary
companions only, q < 0.01); ``info["mass_within"]`` (accepted / in-prior draws) then estimates the
flow's probability of the box. Rounds after the first draw only for the observations that still need
samples.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mulens_sbi.npe.config import NPEConfig
from mulens_sbi.npe.model import NPEModel, count_params
from mulens_sbi.npe.transforms import ParameterSpace

__all__ = ["Posterior"]


# Jitted kernels at module level, static in (config, space): every Posterior with the same
# architecture shares one compilation.
@functools.partial(jax.jit, static_argnames=("config", "dim"))
def _embed_fn(params, x, config: NPEConfig, dim: int):
    return NPEModel(config, dim).apply(params, x, method=NPEModel.embed)


@functools.partial(jax.jit, static_argnames=("n", "config", "space"))
def _draw_fn(params, c, key, n: int, config: NPEConfig, space: ParameterSpace):
    fdt = jnp.result_type(float)
    u = jax.random.normal(key, (c.shape[0], n, space.dim), dtype=c.dtype)
    z, lq = NPEModel(config, space.dim).apply(params, u, c[:, None, :], method=NPEModel.sample_context)
    z = z.astype(fdt)
    theta = space.to_physical(z)
    lq = lq.astype(fdt) + space.log_det_to_network(theta)  # p(theta) = q(z) |dz/dtheta|
    return theta, lq, space.in_bounds(theta)


@functools.partial(jax.jit, static_argnames=("config", "space"))
def _log_prob_fn(params, theta, c, config: NPEConfig, space: ParameterSpace):
    fdt = jnp.result_type(float)
    theta = theta.astype(fdt)
    ok = space.in_bounds(theta)
    safe = jnp.where(ok[..., None], theta, space.to_physical(jnp.zeros(space.dim, fdt)))
    z = space.to_network(safe)
    lq = NPEModel(config, space.dim).apply(params, z, c, method=NPEModel.log_prob_context).astype(fdt)
    lq = lq + space.log_det_to_network(safe)
    return jnp.where(ok, lq, -jnp.inf)


def _add_batch(x):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[None], x)


def _batch_size(xs) -> int:
    sizes = {np.shape(a)[0] for a in jax.tree_util.tree_leaves(xs)}
    if len(sizes) != 1:
        raise ValueError(f"observations must share one leading batch size, got sizes {sorted(sizes)}")
    return sizes.pop()


@dataclass(frozen=True, eq=False)
class Posterior:
    """Amortized posterior q(theta | x).

    Attributes:
        config: the network configuration.
        space: physical <-> network parameter space (names, transforms, bounds, standardization).
        params: flax parameters of ``NPEModel(config, space.dim)``.
        metadata: provenance (training settings, versions, ...), JSON-able.
    """

    config: NPEConfig
    space: ParameterSpace
    params: Any
    metadata: dict = field(default_factory=dict)

    @functools.cached_property
    def model(self) -> NPEModel:
        return NPEModel(self.config, self.space.dim)

    @property
    def names(self) -> tuple[str, ...]:
        return self.space.names

    @property
    def n_params(self) -> int:
        return count_params(self.params)

    # ----------------------------------------------------------------- public API
    def embed(self, xs):
        """Context vectors (B, C) for a batch of observations."""
        return _embed_fn(self.params, xs, self.config, self.space.dim)

    def sample(self, x, n: int, key: jax.Array, *, leakage: str = "reject", max_rounds: int = 20,
               return_info: bool = False, within: tuple[Any, Any] | None = None):
        """n samples (n, D) in physical units for ONE observation ``x`` (no batch axis)."""
        out = self.sample_batched(_add_batch(x), n, key, leakage=leakage, max_rounds=max_rounds,
                                  return_info=return_info, within=within)
        if return_info:
            samples, info = out
            return samples[0], {k: v[0] for k, v in info.items()}
        return out[0]

    def sample_batched(self, xs, n: int, key: jax.Array, *, leakage: str = "reject", max_rounds: int = 20,
                       max_points_per_call: int = 2 ** 20, return_info: bool = False,
                       within: tuple[Any, Any] | None = None):
        """n samples per observation, (B, n, D) physical, for a batch ``xs`` (leading axis B).

        Observations are processed in chunks of at most ``max_points_per_call // n`` (at least 1).
        ``within``: ``(lower, upper)`` (D,) physical bounds inside the prior's (see the module
        docstring); only with ``leakage="reject"``.
        ``info`` (if requested): ``log_prob`` (B, n) untruncated flow log density of each sample,
        ``acceptance`` (B,) fraction of draws inside the bounds (and ``within``), ``n_missing`` (B,)
        samples left NaN
        (leakage="reject"), ``in_bounds`` (B, n) (leakage="keep"), with ``within`` also ``mass_within``
        (B,): the fraction of in-prior draws inside the box, the flow's probability of the box.
        """
        if leakage not in ("reject", "keep"):
            raise ValueError(f"leakage must be 'reject' or 'keep', got {leakage!r}")
        box = None if within is None else self._check_within(within)
        if box is not None and leakage != "reject":
            raise ValueError("within= needs leakage='reject'")
        n = int(n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        b_total = _batch_size(xs)
        chunk = max(1, int(max_points_per_call) // n)
        outs, infos = [], []
        for start in range(0, b_total, chunk):
            key, sub = jax.random.split(key)
            xc = jax.tree_util.tree_map(lambda a, s=start: jnp.asarray(a)[s:s + chunk], xs)
            o, i = self._sample_chunk(xc, n, sub, leakage, max_rounds, box)
            outs.append(o)
            infos.append(i)
        samples = np.concatenate(outs, axis=0)
        info = {k: np.concatenate([i[k] for i in infos], axis=0) for k in infos[0]}
        if leakage == "reject" and np.any(info["n_missing"] > 0):
            bad = np.flatnonzero(info["n_missing"] > 0)
            what = "prior leakage or a restriction the flow gives little mass" if box is not None else \
                "prior leakage"
            warnings.warn(
                f"{what}: {len(bad)} observation(s) (first indices {bad[:10].tolist()}) could not be "
                f"filled with {n} in-bounds samples in {max_rounds} rounds (acceptance "
                f"{info['acceptance'][bad[:10]].round(4).tolist()}); missing samples are NaN",
                RuntimeWarning, stacklevel=2)
        return (samples, info) if return_info else samples

    def _check_within(self, within) -> tuple[np.ndarray, np.ndarray]:
        """``within`` as two (D,) float arrays, checked to lie inside the prior bounds."""
        lo, hi = (np.asarray(a, dtype=np.float64).reshape(-1) for a in within)
        plo, phi = np.asarray(self.space.lower, np.float64), np.asarray(self.space.upper, np.float64)
        if lo.shape != (self.space.dim,) or hi.shape != (self.space.dim,):
            raise ValueError(f"within must be two arrays of {self.space.dim} bounds "
                             f"({', '.join(self.names)})")
        for j, nm in enumerate(self.names):
            if not (plo[j] <= lo[j] < hi[j] <= phi[j]):
                raise ValueError(f"within: {nm} range [{lo[j]:g}, {hi[j]:g}] must be non-empty and inside "
                                 f"the prior [{plo[j]:g}, {phi[j]:g}]")
        return lo, hi

    def _draw(self, c, key, n, box):
        """Draws (b, n, D), their log q, whether each is accepted, and whether it is in the prior."""
        theta, lq, in_prior = (np.asarray(a)
                               for a in _draw_fn(self.params, c, key, n, self.config, self.space))
        ok = in_prior
        if box is not None:
            ok = in_prior & np.all((theta >= box[0]) & (theta <= box[1]), axis=-1)
        return theta, lq, ok, in_prior

    def _sample_chunk(self, xc, n, key, leakage, max_rounds, box=None):
        c = _embed_fn(self.params, xc, self.config, self.space.dim)
        b = c.shape[0]
        key, sub = jax.random.split(key)
        theta, lq, ok, in_prior = self._draw(c, sub, n, box)
        if leakage == "keep":
            return theta, {"log_prob": lq, "acceptance": ok.mean(axis=1), "in_bounds": ok}
        out = np.full((b, n, self.space.dim), np.nan)
        out_lq = np.full((b, n), np.nan)
        filled = np.zeros(b, dtype=np.int64)
        drawn = np.zeros(b, dtype=np.int64)
        accepted = np.zeros(b, dtype=np.int64)
        n_in_prior = np.zeros(b, dtype=np.int64)
        rows = np.arange(b)
        for r in range(max_rounds):
            if r > 0:
                # draw again only for the observations still short, padded to a power of two so that
                # a handful of compiled shapes serve every round
                short = np.flatnonzero(filled < n)
                size = min(1 << (len(short) - 1).bit_length(), b)  # never above the chunk's own size
                rows = np.concatenate([short, np.full(size - len(short), short[-1])])
                key, sub = jax.random.split(key)
                theta, lq, ok, in_prior = self._draw(c[rows], sub, n, box)
            first = np.r_[True, rows[1:] != rows[:-1]]  # padding repeats the last row: count it once
            theta, lq, ok, in_prior, rows = theta[first], lq[first], ok[first], in_prior[first], rows[first]
            need = filled[rows] < n
            drawn[rows] += np.where(need, n, 0)
            n_in_prior[rows] += np.where(need, in_prior.sum(axis=1), 0)
            ok = ok & need[:, None]
            accepted[rows] += ok.sum(axis=1)
            rank = np.cumsum(ok, axis=1) - 1 + filled[rows][:, None]
            take = ok & (rank < n)
            bb, jj = np.nonzero(take)
            out[rows[bb], rank[bb, jj]] = theta[bb, jj]
            out_lq[rows[bb], rank[bb, jj]] = lq[bb, jj]
            filled[rows] = np.minimum(filled[rows] + ok.sum(axis=1), n)
            if np.all(filled >= n):
                break
        info = {"log_prob": out_lq, "acceptance": accepted / np.maximum(drawn, 1), "n_missing": n - filled}
        if box is not None:
            # the flow's probability of the box given the prior bounds (what a restricted prior asks)
            with np.errstate(invalid="ignore", divide="ignore"):
                info["mass_within"] = np.where(n_in_prior > 0, accepted / np.maximum(n_in_prior, 1), np.nan)
        return out, info

    def log_prob(self, theta, x):
        """log q(theta | x) in physical units for ONE observation; theta (..., D) -> (...).

        Untruncated flow density times the Jacobian of the parameter transforms; -inf outside the
        prior bounds."""
        c = _embed_fn(self.params, _add_batch(x), self.config, self.space.dim)[0]
        return np.asarray(_log_prob_fn(self.params, jnp.asarray(theta), c, self.config, self.space))

    def log_prob_batched(self, theta, xs):
        """theta (B, m, D) for observations xs (leading axis B) -> (B, m)."""
        c = _embed_fn(self.params, xs, self.config, self.space.dim)
        theta = jnp.asarray(theta)
        if theta.ndim != 3 or theta.shape[0] != c.shape[0]:
            raise ValueError(f"theta must have shape (B={c.shape[0]}, m, D={self.space.dim}), "
                             f"got {theta.shape}")
        return np.asarray(_log_prob_fn(self.params, theta, c[:, None, :], self.config, self.space))
