"""Calibration diagnostics for amortized posteriors: SBC ranks, marginal and HPD coverage, TARP.

All functions take plain arrays over M test cases (theta_true drawn from the prior, x simulated from
it, posterior samples for each x) and return numpy arrays; ``coverage_report`` bundles them into a
JSON-able dict. Test cases with any non-finite value (a failed simulation, NaN samples from prior
leakage) are excluded and counted, never silently dropped.

Definitions (for a calibrated posterior each coverage equals its nominal level up to binomial noise
of sqrt(a(1-a)/M)):
  - SBC rank of parameter j: #{samples with theta_j < theta_true_j}, uniform on {0..n} if calibrated.
  - marginal (central-interval) coverage at level a: fraction of cases whose true value lies inside
    the central a-interval of the marginal samples, i.e. |rank/n - 1/2| <= a/2.
  - HPD coverage at level a: fraction of cases whose true value lies inside the joint a-highest-density
    region, i.e. whose HPD level #{samples with log q > log q(theta_true)}/n is <= a.
  - TARP (Lemos et al. 2023): random reference points; expected coverage of balls around them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "sbc_ranks",
    "marginal_coverage",
    "hpd_levels",
    "hpd_coverage",
    "tarp_coverage",
    "coverage_report",
    "DEFAULT_LEVELS",
]

DEFAULT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _finite_cases(samples: np.ndarray, theta_true: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float64)
    theta_true = np.asarray(theta_true, dtype=np.float64)
    if samples.ndim != 3 or theta_true.shape != (samples.shape[0], samples.shape[2]):
        raise ValueError(f"samples must be (M, n, D) and theta_true (M, D); got {samples.shape} and "
                         f"{theta_true.shape}")
    return np.all(np.isfinite(samples), axis=(1, 2)) & np.all(np.isfinite(theta_true), axis=1)


def sbc_ranks(samples, theta_true) -> np.ndarray:
    """Ranks (M, D) in {0..n}; rows of non-finite cases are -1."""
    samples = np.asarray(samples, dtype=np.float64)
    theta_true = np.asarray(theta_true, dtype=np.float64)
    ok = _finite_cases(samples, theta_true)
    ranks = np.sum(samples < theta_true[:, None, :], axis=1)
    ranks[~ok] = -1
    return ranks


def marginal_coverage(samples, theta_true, levels: Sequence[float] = DEFAULT_LEVELS) -> np.ndarray:
    """Central-interval coverage (L, D) per level and parameter, over finite cases."""
    samples = np.asarray(samples, dtype=np.float64)
    ranks = sbc_ranks(samples, theta_true)
    ok = ranks[:, 0] >= 0
    u = (ranks[ok] + 0.5) / (samples.shape[1] + 1)
    lev = np.asarray(levels, dtype=np.float64)[:, None, None]
    return np.mean(np.abs(u[None] - 0.5) <= lev / 2, axis=1)


def hpd_levels(log_prob_samples, log_prob_true) -> np.ndarray:
    """HPD level of the truth per case (M,): fraction of samples with higher density; NaN if non-finite.

    ``log_prob_samples`` (M, n): log q of each posterior sample; ``log_prob_true`` (M,): log q(theta_true).
    """
    lps = np.asarray(log_prob_samples, dtype=np.float64)
    lpt = np.asarray(log_prob_true, dtype=np.float64)
    lev = np.mean(lps > lpt[:, None], axis=1)
    bad = ~np.all(np.isfinite(lps), axis=1) | np.isnan(lpt)
    lev[bad] = np.nan
    return lev


def hpd_coverage(log_prob_samples, log_prob_true, levels: Sequence[float] = DEFAULT_LEVELS) -> np.ndarray:
    """Joint HPD-region coverage (L,) over finite cases."""
    lev = hpd_levels(log_prob_samples, log_prob_true)
    lev = lev[np.isfinite(lev)]
    return np.array([np.mean(lev <= a) for a in levels])


def tarp_coverage(samples, theta_true, levels: Sequence[float] = DEFAULT_LEVELS, *, seed: int = 0,
                  standardize: bool = True) -> np.ndarray:
    """TARP expected coverage (L,) with reference points drawn uniformly over the box spanned by the
    true parameters (after standardizing each parameter by the truths' mean and std)."""
    samples = np.asarray(samples, dtype=np.float64)
    theta_true = np.asarray(theta_true, dtype=np.float64)
    ok = _finite_cases(samples, theta_true)
    s, t = samples[ok], theta_true[ok]
    if standardize:
        mu, sd = t.mean(axis=0), t.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        s, t = (s - mu) / sd, (t - mu) / sd
    rng = np.random.default_rng(seed)
    ref = rng.uniform(t.min(axis=0), t.max(axis=0), size=t.shape)
    d_samp = np.linalg.norm(s - ref[:, None, :], axis=-1)
    d_true = np.linalg.norm(t - ref, axis=-1)
    f = np.mean(d_samp < d_true[:, None], axis=1)
    return np.array([np.mean(f <= a) for a in levels])


def coverage_report(samples, theta_true, *, names: Sequence[str] | None = None,
                    log_prob_samples=None, log_prob_true=None,
                    levels: Sequence[float] = DEFAULT_LEVELS, tarp: bool = True, seed: int = 0) -> dict:
    """All diagnostics as a JSON-able dict (plain lists and floats).

    Keys: levels, n_cases, n_excluded, n_samples, names, marginal_coverage {name: [per level]},
    max_marginal_deviation, sbc_ranks {name: [...]}, hpd_coverage (if log probs given), tarp_coverage.
    """
    samples = np.asarray(samples, dtype=np.float64)
    theta_true = np.asarray(theta_true, dtype=np.float64)
    m, n, d = samples.shape
    names = list(names) if names is not None else [f"theta_{j}" for j in range(d)]
    if len(names) != d:
        raise ValueError(f"names has {len(names)} entries, samples have D = {d}")
    ok = _finite_cases(samples, theta_true)
    ranks = sbc_ranks(samples, theta_true)
    cov = marginal_coverage(samples, theta_true, levels)
    lev = np.asarray(levels, dtype=np.float64)
    rep: dict = {
        "levels": lev.tolist(),
        "n_cases": int(ok.sum()),
        "n_excluded": int((~ok).sum()),
        "n_samples": int(n),
        "names": names,
        "marginal_coverage": {nm: cov[:, j].tolist() for j, nm in enumerate(names)},
        "max_marginal_deviation": float(np.max(np.abs(cov - lev[:, None]))) if ok.any() else None,
        "sbc_ranks": {nm: ranks[ok, j].tolist() for j, nm in enumerate(names)},
    }
    if log_prob_samples is not None and log_prob_true is not None:
        h = hpd_coverage(log_prob_samples, log_prob_true, levels)
        rep["hpd_coverage"] = h.tolist()
        rep["max_hpd_deviation"] = float(np.max(np.abs(h - lev)))
    if tarp:
        rep["tarp_coverage"] = tarp_coverage(samples, theta_true, levels, seed=seed).tolist()
    return rep
