"""Proposals for the binary-lens posterior of an event without a clear anomaly.

When no binary mode beats the single lens by much, the data constrain the trajectory (t_0, u_0,
t_E) about as tightly as a single lens does, while (s, q, alpha) range over whatever the data do
not exclude: most of the prior. That posterior is not a blob around a mode but a curved sheet.
A wide binary (s ≫ 1) looks like a single lens of the **primary's** mass, at the primary's
position: with ``ε = √(1/(1+q))`` its Einstein radius and ``a = s·q/(1+q) − q/((1+q)·s)`` its x
position (MulensModel v3 centre-of-mass frame, ``docs/conventions.md``; the second term is the
companion's deflection there), the single-lens parameters
(t_0', u_0', t_E') about that point mass map to the binary's centre-of-mass ones by

    t_E = t_E'/ε,   u_0 = ε·u_0' − a·sin α,   t_0 = t_0' − a·cos α·t_E,

(the source's distance from the point mass, in units of its Einstein radius, is then the single
lens's at every time); a close binary (s ≪ 1) looks like a single lens of the total mass at
the centre of mass (ε = 1, a = 0); a wide binary with a heavy companion can show the companion's
(``ε = √(q/(1+q))``, ``a = −s/(1+q) + 1/((1+q)·s)``); the wide regimes only for s > 1.
:class:`PointLensMap` draws (s, q, alpha) from the prior's log-uniform/uniform laws,
(t_0', u_0', ln t_E') from a Student-t law around the single-lens fit (u_0' of either sign)
and maps them through one of these three regimes. The Jacobian of the map (t_0', u_0', t_E') →
(t_0, u_0, t_E) at fixed (s, q, alpha) is triangular with determinant ``1 · (1/ε) · ε = 1``,
so the density is the single-lens law's at the mapped-back point.

:class:`ProposalMixture` mixes such a law with the modes' mixture
(:class:`mulens_sbi.inference.exact.MixtureProposal`); densities are with respect to the physical
parameters (t_E, s, q linear; alpha in degrees), as importance sampling needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from jax.scipy.special import gammaln

__all__ = ["REGIMES", "PointLensMap", "ProposalMixture", "regime_map"]

BINARY = ("t_0", "u_0", "t_E", "s", "q", "alpha")
#: the point masses a binary can look like: name -> (weight, smallest q, smallest s drawn); the
#: wide regimes only for s > 1 (for close binaries the deflection term m_other/s has no meaning)
REGIMES = {"centre_of_mass": (0.4, 0.0, 0.0), "primary": (0.4, 0.0, 1.0), "companion": (0.2, 0.03, 1.0)}


def regime_map(regime: str, s: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ε, a) of the point mass a binary (s, q) looks like in ``regime``: its Einstein radius in
    units of the total mass's, and the x position (θ_E, centre-of-mass frame) of the point lens the
    source sees: the mass's own position moved towards the other mass by the other's nearly
    constant deflection there, ``m_other/s`` (mass fractions). What is left is the other mass's
    shear, ~``(m_other/m)/(s/ε)²``, which vanishes as 1/s² for wide binaries."""
    s, q = np.asarray(s, dtype=float), np.asarray(q, dtype=float)
    if regime == "centre_of_mass":
        return np.ones_like(s), np.zeros_like(s)
    if regime == "primary":
        return np.sqrt(1.0 / (1.0 + q)), s * q / (1.0 + q) - q / ((1.0 + q) * s)
    if regime == "companion":
        return np.sqrt(q / (1.0 + q)), -s / (1.0 + q) + 1.0 / ((1.0 + q) * s)
    raise ValueError(f"unknown regime {regime!r}; choose from {sorted(REGIMES)}")


def _t_logpdf(z: np.ndarray, mean: np.ndarray, cov: np.ndarray, df: float) -> np.ndarray:
    p = mean.size
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, (z - mean).T)
    maha = np.sum(sol**2, axis=0)
    return (float(gammaln((df + p) / 2) - gammaln(df / 2)) - 0.5 * p * math.log(df * math.pi)
            - np.sum(np.log(np.diag(chol))) - 0.5 * (df + p) * np.log1p(maha / df))


@dataclass(frozen=True)
class PointLensMap:
    """A binary-lens law that looks like a single lens (see the module docstring).

    Attributes:
        single: the single-lens fit's ``t_0`` (days), ``u_0`` (θ_E, its sign is ignored), ``t_E``
            (days).
        cov: (3, 3) covariance of (t_0, u_0, ln t_E) of the single-lens law (before ``df``) for
            ``u_0 > 0``; the law for ``u_0 < 0`` is its mirror image (u_0's covariances negated).
        s_range, q_range: the prior's bounds on s and q (log-uniform laws on them).
        df: Student-t degrees of freedom of the single-lens law.
        regimes: name -> (weight, smallest q, smallest s) of the point masses the binary may look
            like (:data:`REGIMES`).
    """

    single: Mapping
    cov: np.ndarray
    s_range: tuple
    q_range: tuple
    df: float = 5.0
    regimes: Mapping = None

    names = BINARY

    def __post_init__(self):
        if self.regimes is None:
            object.__setattr__(self, "regimes", dict(REGIMES))
        lo_s, hi_s = self.s_range
        lo_q, hi_q = self.q_range
        if not (0 < lo_s < hi_s and 0 < lo_q < hi_q):
            raise ValueError(f"s_range {self.s_range} and q_range {self.q_range} must be 0 < low < high")
        if np.asarray(self.cov).shape != (3, 3):
            raise ValueError("cov must be (3, 3): t_0, u_0, ln t_E")
        np.linalg.cholesky(self.cov)  # positive definite, or LinAlgError
        if not self.df > 0:
            raise ValueError(f"df must be > 0, got {self.df}")

    def _active(self):
        """Regimes whose (s, q) ranges are not empty, with normalized weights, and their lowest q
        and s."""
        lows = {r: (max(self.q_range[0], qmin), max(self.s_range[0], smin))
                for r, (_, qmin, smin) in self.regimes.items()}
        act = {r: v[0] for r, v in self.regimes.items()
               if lows[r][0] < self.q_range[1] and lows[r][1] < self.s_range[1] and v[0] > 0}
        tot = sum(act.values())
        return {r: w / tot for r, w in act.items()}, lows

    def _centres(self):
        mu = np.array([self.single["t_0"], abs(self.single["u_0"]), math.log(self.single["t_E"])])
        flip = np.diag([1.0, -1.0, 1.0])
        return ((mu, np.asarray(self.cov)), (flip @ mu, flip @ np.asarray(self.cov) @ flip))

    def sample(self, n: int, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        act, lows = self._active()
        names = list(act)
        reg = rng.choice(len(names), size=n, p=[act[r] for r in names])
        s, q = np.empty(n), np.empty(n)
        for k, r in enumerate(names):
            idx = reg == k
            q[idx] = np.exp(rng.uniform(math.log(lows[r][0]), math.log(self.q_range[1]), idx.sum()))
            s[idx] = np.exp(rng.uniform(math.log(lows[r][1]), math.log(self.s_range[1]), idx.sum()))
        alpha = rng.uniform(0.0, 360.0, n)
        sign = rng.random(n) < 0.5
        z = np.empty((n, 3))
        for flag, (mu, cov) in zip((True, False), self._centres(), strict=True):
            idx = sign == flag
            g = rng.standard_normal((idx.sum(), 3)) @ np.linalg.cholesky(cov).T
            z[idx] = mu + g / np.sqrt(rng.chisquare(self.df, idx.sum()) / self.df)[:, None]
        eps, a = np.empty(n), np.empty(n)
        for k, r in enumerate(names):
            idx = reg == k
            eps[idx], a[idx] = regime_map(r, s[idx], q[idx])
        ar = np.radians(alpha)
        t_e = np.exp(z[:, 2]) / eps
        return {"t_0": z[:, 0] - a * np.cos(ar) * t_e, "u_0": eps * z[:, 1] - a * np.sin(ar), "t_E": t_e,
                "s": s, "q": q, "alpha": alpha}

    def log_prob(self, params: Mapping) -> np.ndarray:
        """Log density with respect to the physical (t_0, u_0, t_E, s, q, alpha)."""
        p = {k: np.asarray(params[k], dtype=float) for k in BINARY}
        act, lows = self._active()
        ar = np.radians(p["alpha"])
        centres = self._centres()
        parts = []
        for r, w in act.items():
            eps, a = regime_map(r, p["s"], p["q"])
            t_e1 = eps * p["t_E"]
            z = np.stack([p["t_0"] + a * np.cos(ar) * p["t_E"], (p["u_0"] + a * np.sin(ar)) / eps,
                          np.log(t_e1)], axis=1)
            lz = np.logaddexp(*[_t_logpdf(z, mu, cov, self.df) for mu, cov in centres]) + math.log(0.5)
            q_lo, s_lo = lows[r]
            inside = ((p["q"] >= q_lo) & (p["q"] <= self.q_range[1])
                      & (p["s"] >= s_lo) & (p["s"] <= self.s_range[1]))
            log_sq = (-np.log(p["q"]) - math.log(math.log(self.q_range[1] / q_lo))
                      - np.log(p["s"]) - math.log(math.log(self.s_range[1] / s_lo)) - math.log(360.0))
            lp = math.log(w) + lz - np.log(t_e1) + log_sq
            parts.append(np.where(inside, lp, -np.inf))
        allp = np.stack(parts)
        mx = np.max(allp, axis=0)
        safe = np.where(np.isfinite(mx), mx, 0.0)
        return np.where(np.isfinite(mx), safe + np.log(np.sum(np.exp(allp - safe), axis=0)), -np.inf)


@dataclass(frozen=True)
class ProposalMixture:
    """``weights[0]`` of the modes' mixture (``modes``, with ``component`` and ``adapt``) and
    ``weights[1]`` of a fixed law ``other`` (e.g. :class:`PointLensMap`) over the same names."""

    modes: object
    other: object
    weights: Sequence

    def __post_init__(self):
        w = np.asarray(self.weights, dtype=float)
        if w.shape != (2,) or np.any(w <= 0) or abs(w.sum() - 1) > 1e-9:
            raise ValueError(f"weights must be two positive numbers summing to 1, got {self.weights}")
        if tuple(self.modes.names) != tuple(self.other.names):
            raise ValueError(f"names differ: {self.modes.names} vs {self.other.names}")

    @property
    def names(self) -> tuple:
        return tuple(self.modes.names)

    def sample(self, n: int, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        n_other = int(rng.binomial(n, self.weights[1]))
        a = self.modes.sample(n - n_other, seed=int(rng.integers(2**31)))
        b = self.other.sample(n_other, seed=int(rng.integers(2**31)))
        return {k: np.concatenate([np.asarray(a[k], dtype=float), np.asarray(b[k], dtype=float)]) for k in a}

    def _parts(self, params):
        return (math.log(self.weights[0]) + self.modes.log_prob(params),
                math.log(self.weights[1]) + self.other.log_prob(params))

    def log_prob(self, params: Mapping) -> np.ndarray:
        return np.logaddexp(*self._parts(params))

    def component(self, params: Mapping) -> np.ndarray:
        """The modes' component index, or the number of modes' components for draws more likely
        from ``other``."""
        lm, lo = self._parts(params)
        comp = np.asarray(self.modes.component(params))
        return np.where(lo > lm, self.modes.means.shape[0], comp)

    def adapt(self, params: Mapping, weights: np.ndarray) -> ProposalMixture:
        """The modes' mixture adapted to the draws it owns (``other`` stays as it is)."""
        lm, lo = self._parts(params)
        w = np.where(lo > lm, 0.0, np.asarray(weights, dtype=float))
        if not w.sum() > 0:
            return self
        return ProposalMixture(self.modes.adapt(params, w / w.sum()), self.other, self.weights)
