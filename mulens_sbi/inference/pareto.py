"""The Pareto k̂ diagnostic of importance weights (Vehtari, Simpson, Gelman, Yao & Gabry 2024,
"Pareto smoothed importance sampling", JMLR 25, 72).

The largest weights of an importance sampler follow, in the limit, a generalized Pareto law
whose shape ξ says how many moments the weights have: ξ < 1/2, finite variance (the effective
sample size means what it says); 1/2 ≤ ξ < 0.7, estimates still usable with enough draws;
ξ ≥ 0.7, the estimate is dominated by a few draws and the ESS overstates what one has (the
proposal misses part of the posterior, or its tails are too light). k̂ is the fitted ξ of the
``M = min(⌈n/5⌉, ⌈3√n⌉)`` largest weights over the (M+1)-th, by the profile-likelihood Bayes
estimate of Zhang & Stephens (2009, Technometrics 51, 316) with the weakly informative prior of
Vehtari et al. (ξ shrunk towards 1/2 with weight 10 draws).

The sample threshold below which k̂ is not estimated: fewer than 5 tail draws give ``nan``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["KHAT_GOOD", "KHAT_MAX", "generalized_pareto_shape", "pareto_khat"]

#: k̂ at or below which importance-sampling estimates are reliable (Vehtari et al. 2024)
KHAT_GOOD = 0.7
#: k̂ above which the weights have no finite mean: the estimate is not usable at all
KHAT_MAX = 1.0


def generalized_pareto_shape(x: np.ndarray) -> float:
    """Shape ξ of a generalized Pareto law fitted to exceedances ``x`` (> 0, any order).

    The law: ``F(x) = 1 − (1 + ξ x/σ)^(−1/ξ)``. Zhang & Stephens' estimate: with ``θ = −ξ/σ``,
    the profile log-likelihood ``ℓ(θ) = n (log(−θ/ξ(θ)) − ξ(θ) − 1)`` where
    ``ξ(θ) = mean(log(1 − θ x))``, averaged over a grid of θ weighted by ``exp ℓ``; then the
    prior's shrinkage ``(n ξ + 10·½)/(n + 10)``.
    """
    x = np.sort(np.asarray(x, dtype=float).reshape(-1))
    n = x.size
    if n < 5 or not np.all(np.isfinite(x)) or x[-1] <= 0:
        return math.nan
    m = 30 + int(math.sqrt(n))
    quartile = x[max(int(n / 4 + 0.5) - 1, 0)]
    if quartile <= 0:
        quartile = x[x > 0][0]
    j = np.arange(1, m + 1, dtype=float)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (3.0 * quartile)
    xi = np.mean(np.log1p(-theta[:, None] * x[None, :]), axis=1)
    ell = n * (np.log(-theta / xi) - xi - 1.0)
    post = np.exp(ell - ell.max())
    post /= post.sum()
    theta_hat = float(np.sum(post * theta))
    xi_hat = float(np.mean(np.log1p(-theta_hat * x)))
    return (n * xi_hat + 10 * 0.5) / (n + 10)


def pareto_khat(log_weights: np.ndarray) -> float:
    """k̂ of unnormalised log importance weights (−inf entries are zero weights).

    Returns ``nan`` when fewer than 5 positive weights lie in the tail (too few draws to say), and
    ``inf`` when a single draw carries all the weight among at least 5 positive ones."""
    lw = np.asarray(log_weights, dtype=float).reshape(-1)
    lw = lw[np.isfinite(lw)]
    n = lw.size
    if n < 10:
        return math.nan
    tail = min(math.ceil(0.2 * n), math.ceil(3.0 * math.sqrt(n)))
    lw = np.sort(lw)
    top = lw[-tail:]
    cutoff = lw[-tail - 1]
    x = np.exp(top - lw[-1]) - math.exp(cutoff - lw[-1])  # exceedances, scaled by the largest weight
    x = x[x > 0]
    if x.size < 5:
        return math.inf if np.any(top > cutoff) else math.nan
    return generalized_pareto_shape(x)
