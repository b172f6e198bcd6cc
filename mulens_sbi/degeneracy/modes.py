"""Modes of a weighted binary-lens posterior, with reflection copies recognised.

**Reflection.** ``(u_0, alpha) → (−u_0, −alpha)`` mirrors the trajectory in the binary axis and
leaves every light curve unchanged (MulensModel v3 convention; the lens is symmetric about its
axis), so a posterior may hold two copies of every solution. Before clustering, every sample is
*folded* onto the canonical copy with ``sin(alpha) ≥ 0`` (``alpha`` in [0°, 180°)); each mode then
reports how its weight splits between the sample's own copy (``sin alpha ≥ 0``) and the reflected
one, so copies are never counted as separate modes. x0 (:mod:`.relation`) is invariant under the
reflection.

**Clustering.** In the standardized coordinates (log10 s, log10 q, u_0, alpha, t_0) of the folded
samples (t_0 only if present) a weighted diagonal Gaussian mixture is fitted for k = 1..max_modes
(BIC with the ESS as sample size) and components with no density dip between them are merged —
the same procedure as :func:`mulens_sbi.summary.find_modes` (whose mixture code is reused here), but
returning each mode's samples. Modes with less than ``min_weight`` of the mass are dropped and their
mass reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mulens_sbi.degeneracy.relation import axis_crossing
from mulens_sbi.summary import fit_gmm, log_gauss, merge_groups, summarize_parameters, weighted_quantile

__all__ = ["Mode", "find_modes", "fold_reflection"]

#: columns the clustering uses, in order (those present)
COORDINATES = ("s", "q", "u_0", "alpha", "t_0")


def fold_reflection(u_0: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map every sample onto the copy with ``sin(alpha) ≥ 0``.

    Returns ``(u_0_folded, alpha_folded in [0, 180], reflected)``, ``reflected`` True where the
    sample was the mirrored copy (``alpha`` in (180°, 360°) mod 360).
    """
    a = np.mod(np.asarray(alpha, dtype=float), 360.0)
    refl = a > 180.0
    return np.where(refl, -u_0, u_0), np.where(refl, 360.0 - a, a), refl


@dataclass
class Mode:
    """One mode of the posterior (physical units; ``alpha`` folded to [0°, 180°]).

    Attributes:
        weight: fraction of the posterior mass in this mode (of the analysed, finite samples).
        index: indices of the mode's samples in the input arrays.
        samples: the mode's samples, folded (``u_0``, ``alpha`` on the ``sin alpha ≥ 0`` copy).
        weights: their weights, normalized to 1 within the mode.
        reflected_fraction: share of the mode's weight that came from the mirrored copy
            (``(−u_0, −alpha)``); 0 or 1 when only one copy is present.
        summary: median/mean/std/68%/95% per parameter (:func:`mulens_sbi.summary.parameter_summary`).
        representative: the highest-likelihood sample if a log-likelihood was given, else the
            weighted medians.
        x0: (n,) axis crossing of each sample (θ_E, from the primary towards the companion).
    """

    weight: float
    index: np.ndarray
    samples: dict[str, np.ndarray]
    weights: np.ndarray
    reflected_fraction: float
    summary: dict
    representative: dict[str, float]
    x0: np.ndarray = field(repr=False)

    @property
    def n_samples(self) -> int:
        return int(self.index.size)

    @property
    def has_both_copies(self) -> bool:
        """Both reflection copies carry at least 5% of the mode's weight."""
        return 0.05 <= self.reflected_fraction <= 0.95

    def median(self, name: str) -> float:
        return float(self.summary[name]["median"])

    def to_dict(self) -> dict:
        return {
            "weight": self.weight,
            "n_samples": self.n_samples,
            "reflection_copies": {
                "as_given": 1.0 - self.reflected_fraction,
                "reflected": self.reflected_fraction,
                "both_present": self.has_both_copies,
            },
            "representative": self.representative,
            "x0": {
                "median": float(weighted_quantile(self.x0, self.weights, 0.5)),
                "interval_68": [float(v) for v in weighted_quantile(self.x0, self.weights, [0.16, 0.84])],
            },
            "parameters": self.summary,
        }


def _standardized(cols: list[np.ndarray], w: np.ndarray) -> np.ndarray:
    x = np.stack(cols, axis=1)
    mu = np.sum(w[:, None] * x, axis=0)
    sd = np.sqrt(np.sum(w[:, None] * (x - mu) ** 2, axis=0))
    keep = sd > 0
    return ((x - mu) / np.where(keep, sd, 1.0))[:, keep]


def find_modes(
    samples: Mapping[str, np.ndarray],
    weights: np.ndarray,
    *,
    log_likelihood: np.ndarray | None = None,
    max_modes: int = 4,
    min_weight: float = 0.02,
    max_points: int = 4000,
    seed: int = 0,
) -> tuple[list[Mode], float, str]:
    """Cluster finite, validated samples (dict of (n,) arrays with ``s, q, u_0, alpha`` and
    optionally ``t_0``; ``weights`` (n,) ≥ 0, sum > 0) into modes (see the module docstring).

    Returns ``(modes sorted by weight, unlisted weight, method description)``.
    """
    n = int(np.asarray(samples["s"]).size)
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    u0f, af, refl = fold_reflection(np.asarray(samples["u_0"], float), np.asarray(samples["alpha"], float))
    folded = {k: np.asarray(v, dtype=float) for k, v in samples.items()}
    folded["u_0"], folded["alpha"] = u0f, af
    cols = [np.log10(folded["s"]), np.log10(folded["q"]), u0f, af]
    if "t_0" in folded:
        cols.append(folded["t_0"])
    z_all = _standardized(cols, w)
    ess = float(1.0 / np.sum(w**2))
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=min(max_points, n), replace=True, p=w)
    uniq, counts = np.unique(idx, return_counts=True)
    z, c = z_all[uniq], counts / counts.sum()
    n_eff = max(2.0, min(ess, float(counts.sum())))
    if z.shape[1] == 0 or uniq.size < 10 or ess < 20:
        label = np.zeros(n, dtype=int)
        method = (f"one mode assumed: too few effective samples (ESS {ess:.1f}, {uniq.size} distinct draws) "
                  "or no spread to separate modes")
    else:
        d = z.shape[1]
        best, best_bic, best_k = None, np.inf, 1
        for k in range(1, max_modes + 1):
            fit = max((fit_gmm(z, c, k, rng) for _ in range(3 if k > 1 else 1)), key=lambda f: f[3])
            k_eff = len(fit[0])
            bic = -2.0 * n_eff * fit[3] + (k_eff * 2 * d + k_eff - 1) * math.log(n_eff)
            if bic < best_bic - 1e-9:
                best, best_bic, best_k = fit, bic, k_eff
        pi, mu, var, _ = best
        groups = np.asarray(merge_groups(pi, mu, var))
        label = groups[np.argmax(log_gauss(z_all, mu, var) + np.log(pi)[None], axis=1)]
        method = (f"weighted diagonal Gaussian mixture on reflection-folded (log10 s, log10 q, u_0, alpha"
                  f"{', t_0' if 't_0' in folded else ''}), k = {best_k} by BIC (n_eff = {n_eff:.0f}), "
                  f"{groups.max() + 1} after merging components without a density dip")
    x0_all = axis_crossing(u0f, af, folded["s"], folded["q"])
    ll = None if log_likelihood is None else np.asarray(log_likelihood, dtype=float)
    modes, unlisted = [], 0.0
    for g in np.unique(label):
        sel = np.flatnonzero((label == g) & (w > 0))
        mass = float(w[sel].sum())
        if mass <= 0:
            continue
        if mass < min_weight:
            unlisted += mass
            continue
        wm = w[sel] / mass
        sub = {k: v[sel] for k, v in folded.items()}
        summ = summarize_parameters(sub, wm)
        if ll is not None and np.any(np.isfinite(ll[sel])):
            j = int(np.argmax(np.where(np.isfinite(ll[sel]), ll[sel], -np.inf)))
            rep = {k: float(v[j]) for k, v in sub.items()}
            rep["log_likelihood"] = float(ll[sel][j])
        else:
            rep = {k: float(summ[k]["median"]) for k in sub}
        modes.append(Mode(weight=mass, index=sel, samples=sub, weights=wm,
                          reflected_fraction=float(np.sum(wm * refl[sel])), summary=summ,
                          representative=rep, x0=x0_all[sel]))
    modes.sort(key=lambda m: -m.weight)
    return modes, unlisted, method
