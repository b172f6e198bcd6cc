"""Posterior summaries of weighted samples: medians, credible intervals, modes, and a JSON writer.

**Intervals.** Central intervals from the weighted empirical CDF ``F(x) = Σ_{x_i ≤ x} w_i / Σ w_i``,
by the inverted CDF: the q-quantile is the smallest sample ``x_i`` with ``F(x_i) ≥ q`` (what
``numpy.quantile(x, q, weights=w, method="inverted_cdf")`` computes). The median is q = 0.5, the 68%
interval [0.16, 0.84], the 95% interval [0.025, 0.975]. Physical units throughout (t_0 in HJD',
t_E in days, s and rho in θ_E, alpha in degrees).

**alpha is an angle.** Before quantiles, alpha is moved onto one continuous branch: the cut is placed
in the widest empty arc of the samples (never inside the posterior mass), so a posterior centred on
0° is not torn into pieces near 0° and 360°. The median is reported in [0, 360); interval ends may
lie below 0 or above 360 (e.g. [−4.1, 3.9]), which is the honest way to write an interval across 0°.

**Modes.** A simple clustering (not a degeneracy analysis): in the standardized coordinates
(log10 s, log10 q, u_0, alpha, t_0) — those present — a weighted diagonal Gaussian mixture is fitted
for k = 1..``max_modes`` components (EM from k-means++ starts, fixed seed); k is chosen by BIC with
the importance-sampling ESS as the sample size; components whose connecting segment shows no density
dip (the mixture density stays above half the lower of the two peaks) are merged, so a curved
single mode is not split. Each sample goes to its most probable component; modes with less than
``min_weight`` of the posterior mass are not listed (their total mass is reported).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "PLANET_Q",
    "planet_probability",
    "INTERVALS",
    "MODE_COORDINATES",
    "find_modes",
    "fit_gmm",
    "log_gauss",
    "merge_groups",
    "parameter_summary",
    "summarize_parameters",
    "to_jsonable",
    "unwrap_angle",
    "weighted_quantile",
    "write_json",
]

#: interval name → (lower, upper) probability
INTERVALS = {"68": (0.16, 0.84), "95": (0.025, 0.975)}
#: coordinates of the mode clustering (those present are used)
MODE_COORDINATES = ("s", "q", "u_0", "alpha", "t_0")
_LOG_COORDS = ("s", "q")
_ANGLES = ("alpha",)


#: mass ratio below which a companion counts as a planet (the caustic-crossing class's ``q_max``)
PLANET_Q = 0.01


def planet_probability(q, weights=None, q_max: float = PLANET_Q) -> float:
    """Posterior probability that the companion is a planet: the (weighted) fraction of samples with
    mass ratio ``q < q_max`` (NaN samples ignored; NaN if none is left)."""
    q = np.asarray(q, dtype=float).reshape(-1)
    w = np.full(q.size, 1.0) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if w.shape != q.shape:
        raise ValueError(f"weights have {w.size} entries for {q.size} samples")
    ok = np.isfinite(q) & np.isfinite(w) & (w > 0)
    if not ok.any():
        return float("nan")
    return float(np.sum(w[ok] * (q[ok] < q_max)) / np.sum(w[ok]))


def _normalized(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=float).reshape(-1)
    if w.size != n:
        raise ValueError(f"weights have {w.size} entries for {n} samples")
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0")
    total = w.sum()
    if not total > 0:
        raise ValueError("all weights are zero")
    return w / total


def weighted_quantile(x, weights, q):
    """Quantile(s) ``q`` of samples ``x`` with weights (inverted weighted CDF; see module docstring)."""
    x = np.asarray(x, dtype=float).reshape(-1)
    w = _normalized(weights, x.size)
    keep = w > 0
    x, w = x[keep], w[keep]
    order = np.argsort(x, kind="stable")
    xs, cdf = x[order], np.cumsum(w[order])
    cdf /= cdf[-1]
    qa = np.asarray(q, dtype=float)
    if np.any((qa < 0) | (qa > 1)):
        raise ValueError(f"quantiles must be in [0, 1], got {q}")
    idx = np.searchsorted(cdf, qa, side="left")
    out = xs[np.clip(idx, 0, xs.size - 1)]
    return float(out) if np.ndim(q) == 0 else out


def unwrap_angle(deg, weights=None) -> np.ndarray:
    """Angles (degrees) moved onto one branch ``[cut, cut + 360)`` with the cut in the widest empty
    arc between samples of positive weight."""
    a = np.mod(np.asarray(deg, dtype=float), 360.0)
    w = _normalized(weights, a.size)
    pos = np.sort(a[w > 0])
    if pos.size < 2:
        return a
    gaps = np.diff(np.concatenate([pos, [pos[0] + 360.0]]))
    i = int(np.argmax(gaps))
    cut = pos[i] + 0.5 * gaps[i]  # middle of the widest gap
    return cut + np.mod(a - cut, 360.0)


def parameter_summary(x, weights=None, *, angle: bool = False) -> dict:
    """Median, mean, std and the 68%/95% central intervals of one parameter (see module docstring)."""
    x = np.asarray(x, dtype=float).reshape(-1)
    w = _normalized(weights, x.size)
    if angle:
        x = unwrap_angle(x, w)
    qs = [0.5] + [p for pair in INTERVALS.values() for p in pair]
    vals = weighted_quantile(x, w, qs)
    mean = float(np.sum(w * x))
    out = {
        "median": float(np.mod(vals[0], 360.0)) if angle else float(vals[0]),
        "mean": float(np.mod(mean, 360.0)) if angle else mean,
        "std": float(np.sqrt(np.sum(w * (x - mean) ** 2))),
    }
    shift = (vals[0] - np.mod(vals[0], 360.0)) if angle else 0.0
    for i, name in enumerate(INTERVALS):
        out[f"interval_{name}"] = [float(vals[1 + 2 * i] - shift), float(vals[2 + 2 * i] - shift)]
    return out


def summarize_parameters(samples: Mapping[str, np.ndarray], weights=None) -> dict:
    """:func:`parameter_summary` of every parameter (``alpha`` as an angle)."""
    return {k: parameter_summary(v, weights, angle=k in _ANGLES) for k, v in samples.items()}


# ----------------------------------------------------------------------------------------------
# Modes


def _coordinates(samples: Mapping, w: np.ndarray, coords: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    cols, names = [], []
    for k in coords:
        if k not in samples:
            continue
        v = np.asarray(samples[k], dtype=float)
        if k in _LOG_COORDS:
            v, name = np.log10(v), f"log10_{k}"
        elif k in _ANGLES:
            v, name = unwrap_angle(v, w), k
        else:
            name = k
        cols.append(v)
        names.append(name)
    if not cols:
        raise ValueError(f"find_modes: none of the coordinates {tuple(coords)} are in the samples")
    return np.stack(cols, axis=1), names


def log_gauss(x, mu, var):
    """(m, k) log N(x_i | mu_j, diag var_j)."""
    d = x[:, None, :] - mu[None, :, :]
    return -0.5 * np.sum(d * d / var[None] + np.log(2 * np.pi * var[None]), axis=2)


def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def fit_gmm(x, c, k, rng, n_iter=200, var_floor=1e-4):
    """Weighted diagonal GMM by EM; ``c`` are point weights summing to 1. Returns (pi, mu, var, ll)."""
    m, d = x.shape
    # k-means++ start
    centers = [x[rng.choice(m, p=c)]]
    for _ in range(1, k):
        d2 = np.min(np.sum((x[:, None, :] - np.array(centers)[None]) ** 2, axis=2), axis=1)
        p = c * d2
        if p.sum() <= 0:
            break
        centers.append(x[rng.choice(m, p=p / p.sum())])
    mu = np.array(centers)
    k = mu.shape[0]
    var = np.ones((k, d))
    pi = np.full(k, 1.0 / k)
    prev = -np.inf
    ll = -np.inf
    for _ in range(n_iter):
        lg = log_gauss(x, mu, var) + np.log(pi)[None]
        lse = _logsumexp(lg, axis=1)
        ll = float(np.sum(c * lse))
        r = np.exp(lg - lse[:, None]) * c[:, None]  # weighted responsibilities
        nk = r.sum(axis=0)
        keep = nk > 1e-8
        r, nk = r[:, keep], nk[keep]
        pi = nk / nk.sum()
        mu = (r.T @ x) / nk[:, None]
        var = np.maximum((r.T @ (x * x)) / nk[:, None] - mu * mu, var_floor)
        if ll - prev < 1e-8:
            break
        prev = ll
    return pi, mu, var, ll


def _mixture_logpdf(x, pi, mu, var):
    return _logsumexp(log_gauss(x, mu, var) + np.log(pi)[None], axis=1)


def merge_groups(pi, mu, var, dip: float = 0.5) -> list[int]:
    """Union components whose connecting segment has no density dip below ``dip``× the lower peak."""
    k = len(pi)
    parent = list(range(k))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ts = np.linspace(0.0, 1.0, 41)
    for i in range(k):
        for j in range(i + 1, k):
            seg = mu[i][None] + ts[:, None] * (mu[j] - mu[i])[None]
            logp = _mixture_logpdf(seg, pi, mu, var)
            if np.min(logp) >= math.log(dip) + min(logp[0], logp[-1]):
                parent[find(i)] = find(j)
    roots = [find(i) for i in range(k)]
    relabel = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return [relabel[r] for r in roots]


def find_modes(
    samples: Mapping[str, np.ndarray],
    weights=None,
    *,
    ess: float | None = None,
    log_likelihood=None,
    coordinates: Sequence[str] = MODE_COORDINATES,
    max_modes: int = 4,
    min_weight: float = 0.02,
    max_points: int = 4000,
    seed: int = 0,
) -> dict:
    """Separate the posterior mass into modes (see module docstring).

    Args:
        samples: physical samples, arrays (n,) (alpha in degrees).
        weights: importance weights (default equal).
        ess: effective sample size (default ``1/Σw²`` of the normalized weights); BIC's sample size.
        log_likelihood: optional (n,) values; each mode then reports its highest-likelihood sample.
        coordinates: clustering coordinates; ``s``, ``q`` enter as log10, ``alpha`` unwrapped.
        max_modes: the most components tried; min_weight: smallest listed mode mass.
        max_points: the clustering works on at most this many weighted draws.
        seed: random seed (k-means++ starts and the subsample).

    Returns:
        ``{"modes": [...], "n_modes": int, "unlisted_weight": float, "coordinates": [...],
        "method": str}``; each mode: ``weight``, ``n_samples``, ``parameters`` (a
        :func:`parameter_summary` per parameter) and ``best`` (highest-likelihood sample) if given.
    """
    names = list(samples)
    n = int(np.asarray(samples[names[0]]).shape[0])
    w = _normalized(weights, n)
    ess = float(1.0 / np.sum(w**2)) if ess is None else float(ess)
    rng = np.random.default_rng(seed)
    x_all, cnames = _coordinates(samples, w, coordinates)
    finite = np.all(np.isfinite(x_all), axis=1) & (w > 0)
    w_f = np.where(finite, w, 0.0)
    if w_f.sum() <= 0:
        raise ValueError("find_modes: no sample with positive weight and finite coordinates")
    w_f = w_f / w_f.sum()
    mu0 = np.sum(w_f[:, None] * np.where(finite[:, None], x_all, 0.0), axis=0)
    sd0 = np.sqrt(np.sum(w_f[:, None] * (np.where(finite[:, None], x_all, 0.0) - mu0) ** 2, axis=0))
    use = sd0 > 0
    z_all = np.where(finite[:, None], (x_all - mu0) / np.where(sd0 > 0, sd0, 1.0), 0.0)[:, use]

    # weighted subsample: draws by weight, duplicates become counts
    idx = rng.choice(n, size=min(max_points, max(n, 1)), replace=True, p=w_f)
    uniq, counts = np.unique(idx, return_counts=True)
    z, c = z_all[uniq], counts / counts.sum()
    n_eff = max(2.0, min(ess, float(counts.sum())))

    best_k, best = 1, None
    if z.shape[1] == 0 or uniq.size < 10 or ess < 20:
        method = "single mode assumed (too few effective samples or no spread to separate modes)"
        groups = [0]
        pi, mu, var = np.ones(1), np.zeros((1, z.shape[1])), np.ones((1, z.shape[1]))
    else:
        best_bic = np.inf
        d = z.shape[1]
        for k in range(1, max_modes + 1):
            fit = max((fit_gmm(z, c, k, rng) for _ in range(2 if k > 1 else 1)), key=lambda f: f[3])
            k_eff = len(fit[0])
            bic = -2.0 * n_eff * fit[3] + (k_eff * 2 * d + k_eff - 1) * math.log(n_eff)
            if bic < best_bic - 1e-9:
                best_bic, best_k, best = bic, k_eff, fit
        pi, mu, var, _ = best
        groups = merge_groups(pi, mu, var)
        method = (f"weighted diagonal Gaussian mixture, k = {best_k} by BIC (n_eff = {n_eff:.0f}), "
                  f"merged to {max(groups) + 1} by the density-dip test")

    if z.shape[1] == 0 or len(pi) == 1:
        label = np.zeros(n, dtype=int)
    else:
        lg = log_gauss(z_all, mu, var) + np.log(pi)[None]
        label = np.asarray(groups)[np.argmax(lg, axis=1)]
    ll = None if log_likelihood is None else np.asarray(log_likelihood, dtype=float)
    modes = []
    for g in range(max(groups) + 1):
        sel = (label == g) & (w_f > 0)
        mass = float(w_f[sel].sum())
        if mass <= 0:
            continue
        sub = {k: np.asarray(v)[sel] for k, v in samples.items()}
        mode = {
            "weight": mass,
            "n_samples": int(sel.sum()),
            "parameters": summarize_parameters(sub, w_f[sel]),
        }
        if ll is not None:
            ll_sel = np.where(np.isfinite(ll[sel]), ll[sel], -np.inf)
            j = int(np.argmax(ll_sel))
            mode["best"] = {k: float(v[j]) for k, v in sub.items()}
            mode["best"]["log_likelihood"] = float(ll_sel[j])
        modes.append(mode)
    modes.sort(key=lambda m: -m["weight"])
    listed = [m for m in modes if m["weight"] >= min_weight]
    return {
        "modes": listed,
        "n_modes": len(listed),
        "unlisted_weight": float(sum(m["weight"] for m in modes if m["weight"] < min_weight)),
        "coordinates": cnames,
        "method": method,
    }


# ----------------------------------------------------------------------------------------------
# JSON


def to_jsonable(obj):
    """numpy scalars/arrays → Python; non-finite floats → None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, os.PathLike):
        return str(obj)
    return obj


def write_json(data: Mapping, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``data`` as indented strict JSON (NaN/inf → null); refuse an existing file unless
    ``overwrite``."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists; pass overwrite=True (--overwrite) to replace it")
    p.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")
    return p
