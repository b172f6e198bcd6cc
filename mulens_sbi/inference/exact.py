"""The exact stage: every solution of a binary-lens event, then the exact posterior around them.

It does not need a sharp amortized proposal. Steps (:func:`find_modes`, :func:`exact_posterior`):

1. **Search** (:mod:`mulens_sbi.inference.search`): a single-lens fit with the anomaly masked,
   candidates placed by the anomaly's geometry, a coarse (s, q, alpha) grid, and the flow's best
   draws when given. Every candidate's χ² is screened on a thinned copy of the data (all points
   near the anomalies, every ``thin``-th point elsewhere).
2. **Local fits** (:mod:`mulens_sbi.inference.localfit`): Levenberg–Marquardt from the best
   distinct candidates, all at once, fluxes solved linearly.
3. **Modes**: converged optima merged when they lie within ``merge_sigma`` of each other in the
   metric of their Gauss–Newton covariance; each mode's reflection ``(u_0, alpha) → (−u_0,
   −alpha)`` (same light curve) and its offset-degeneracy partner (``f(s') = 2·x0 − f(s)``,
   :mod:`mulens_sbi.lensing.offset`) refined and added; modes within ``keep_delta_chi2`` of the
   best are kept.
4. **Finite source**: the best modes refitted with ``rho`` free from a few starts; ``rho`` is kept
   when it lowers χ² by more than ``rho_delta_chi2`` (the data ask for it), else left out.
5. **Posterior**: a mixture of multivariate Student-t laws (``df`` degrees of freedom, covariance
   the Gauss–Newton one scaled by ``scale²``) centred on the modes, weights ∝ their Laplace
   evidence mixed half-and-half with equal weights, plus a defensive share of the flow (when a
   same laws ``defensive_scale`` times wider. Its draws are
   importance-sampled with the exact likelihood and prior by the caller
   (:func:`mulens_sbi.inference.importance.importance_weights`): the ESS then measures how well
   the modes' Gaussians describe the exact posterior, and the evidence is the exact one.

Sampling space as in :mod:`mulens_sbi.inference.importance` (natural log of ``t_E, s, q, rho``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from mulens_sbi.event import Event
from mulens_sbi.inference.broad import PointLensMap, ProposalMixture
from mulens_sbi.inference.ensemble import ensemble_law
from mulens_sbi.inference.localfit import (
    LOG_NAMES,
    fd_hessian,
    gauss_newton_hessian,
    levenberg_marquardt,
    levenberg_marquardt_fd,
    residuals_in_rows,
    to_physical,
    to_z,
    z_bounds,
)
from mulens_sbi.inference.search import (
    BINARY,
    Anomaly,
    SingleLensFit,
    anomaly_candidates,
    evaluate_candidates,
    fit_single_lens,
    grid_candidates,
    single_lens_valley,
)
from mulens_sbi.lensing.offset import axis_crossing, partner_separation
from mulens_sbi.likelihood import PackedEvent, pack_event
from mulens_sbi.settings_file import check_fields

#: parameter vectors per call of the finite-source residuals: one fit's forward-difference Jacobian
#: (P + 1 = 8 rows); the rho grid and trial steps are padded to it (0.4 s a call for 2048 Roman points)
FD_ROWS = 8
#: starts per compiled Levenberg–Marquardt step (every stage uses it: one compilation per event shape)
LM_CHUNK = 16
#: every local-fit batch of the stage has LM_CHUNK rows: one compiled program whatever the number of starts
LM_BATCH = {"chunk": LM_CHUNK, "fixed_chunk": True}

__all__ = ["ExactSettings", "Mode", "ModeSearch", "MixtureProposal", "anomaly_residual_check",
           "exact_proposal", "find_modes"]


@dataclass(frozen=True)
class ExactSettings:
    """Settings of the exact stage (validated on construction).

    Attributes:
        n_starts: local fits from the best distinct candidates (≥ 1).
        first_iter: steps every start gets; the best third then runs to ``max_iter``.
        max_iter: Levenberg–Marquardt steps per fit.
        finite_iter: steps of a finite-source fit (forward-difference Jacobian, ~1 s a step).
        max_finite: at most this many modes get a finite-source fit (the best by the rho grid).
        finite_walkers, finite_steps: the ensemble MCMC that gives a finite-source mode its
            importance-sampling law (``finite_walkers · finite_steps`` finite-source evaluations
            per mode, the first half burn-in; a mirror image reuses its twin's).
        finite_draws: importance-sampling draws per round when a mode is finite-source.
        target_ess: after the population Monte Carlo rounds, more batches of draws from the best
            round's mixture until the effective sample size reaches this (> 0) ...
        max_draws, finite_max_draws: ... or the draws reach this many (point-source, finite-source
            mixtures; a finite-source draw costs ~50 ms on 2 cores, a point-source one ~0.3 ms).
        flow_share: share of the proposal drawn from the flow, when its density is given and the
            modes are point-source (:func:`mulens_sbi.fit.exact_posterior`).
        adapt_rounds: at most this many population Monte Carlo rounds
            (:meth:`MixtureProposal.adapt`) while the efficiency is below 10% (point-source
            mixtures only: a finite-source mode's law comes from its ensemble chain).
        hops: rounds of basin hopping (a cloud of candidates around the two best fits so far, the
            best 16 refitted).
        seed: seed of the hops' clouds.
        accept_chi2_dof: χ²/dof below which a fit is acceptable (the coarse grid is then skipped,
            and the verdict of the posterior requires it).
        thin: screening keeps every ``thin``-th point away from the anomalies (≥ 1).
        keep_delta_chi2: modes within this Δχ² of the best are kept (> 0).
        merge_sigma: optima closer than this (Mahalanobis, Gauss–Newton metric) are one mode.
        max_modes: at most this many modes (best first).
        finite: ``"auto"`` (rho when the data ask), ``"never"`` or ``"always"``.
        rho_delta_chi2: Δχ² by which rho must improve a mode to be kept (> 0).
        rho_starts: the rho grid (θ_E) tried at each point-source mode.
        df: Student-t degrees of freedom of the per-mode laws (> 2).
        scale: covariance scale of the per-mode laws (> 0).
        defensive: share of the defensive component (0 ≤ · < 1).
        defensive_scale: width factor of the defensive laws when no flow density is given.
        time_budget_s: stop adding starts and partner fits past this wall time (> 0).
        grid: include the coarse (s, q, alpha) grid (stellar binaries) when the anomaly's
            candidates give no acceptable fit.
        rho_prior: (low, high) of the log-uniform prior on rho when the data ask for a finite
            source and the model's prior has none (θ_E).
        robust_scale: the search (screening, local fits, hops) minimizes the Cauchy cost
            ``Σ c²·log(1 + (r/c)²)`` with ``c = robust_scale`` σ, so that the few points of a
            caustic crossing, which a point source cannot follow, do not decide where it goes;
            the optima are then polished on χ². 0: χ² throughout.
        broad_share, broad_delta_chi2: when the best binary mode beats the single lens by less than
            ``broad_delta_chi2`` (no clear anomaly: s, q and alpha are bounded only by what the
            data exclude), a :class:`mulens_sbi.inference.broad.PointLensMap` takes
            ``broad_share`` of the mixture: (s, q, alpha) from the prior, the trajectory mapped
            from the single-lens fit (its covariance from the best mode's) through the point mass
            the binary looks like (centre of mass, primary or companion).
        profile_points, profile_span: where rho matters, the valley of the point-source fit is
            scanned: s pinned at ``profile_points`` values within ``exp(±profile_span)`` of the
            fit's, the others refitted (robust cost), then χ² with rho at every point.
        valley_points, valley_delta: at most ``valley_points`` more single-lens bases for the
            anomaly's candidates, along the u_0–t_E valley of the masked single-lens fit (u_0 at
            ``exp(±0.2)`` times the fit's), each kept when its robust cost is within
            ``valley_delta`` of the fit's (:func:`mulens_sbi.inference.search.single_lens_valley`);
            their candidates use a q grid half as dense. 0: the fit alone.
        check_z: the best mode's clipped χ² excess on the anomaly's points above this (in standard
            deviations, :func:`anomaly_residual_check`) is reported as an anomaly the best mode does
            not explain.
    """

    n_starts: int = 48
    first_iter: int = 15
    max_iter: int = 60
    accept_chi2_dof: float = 2.0
    finite_iter: int = 30
    max_finite: int = 3
    finite_walkers: int = 24
    finite_steps: int = 240
    finite_draws: int = 1000
    target_ess: float = 300.0
    max_draws: int = 40000
    finite_max_draws: int = 4000
    adapt_rounds: int = 2
    flow_share: float = 0.2
    hops: int = 2
    seed: int = 0
    thin: int = 4
    keep_delta_chi2: float = 25.0
    merge_sigma: float = 5.0
    max_modes: int = 8
    finite: str = "auto"
    rho_delta_chi2: float = 10.0
    rho_starts: tuple = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    df: float = 5.0
    scale: float = 1.3
    defensive: float = 0.1
    defensive_scale: float = 3.0
    time_budget_s: float = 600.0
    grid: bool = True
    rho_prior: tuple = (1e-4, 0.05)
    robust_scale: float = 3.0
    broad_share: float = 0.7
    broad_delta_chi2: float = 100.0
    profile_points: int = 17
    profile_span: float = 0.12
    valley_points: int = 2
    valley_delta: float = 9.0
    check_z: float = 5.0

    def __post_init__(self):
        checks = {
            "n_starts": (self.n_starts >= 1, ">= 1"),
            "max_iter": (self.max_iter >= 1, ">= 1"),
            "first_iter": (self.first_iter >= 1, ">= 1"),
            "finite_iter": (self.finite_iter >= 1, ">= 1"),
            "max_finite": (self.max_finite >= 1, ">= 1"),
            "finite_walkers": (self.finite_walkers >= 16 and self.finite_walkers % 2 == 0,
                               "even and >= 16 (2P + 2 for the 7 finite-source parameters)"),
            "finite_steps": (self.finite_steps >= 4, ">= 4"),
            "finite_draws": (self.finite_draws >= 2, ">= 2"),
            "target_ess": (self.target_ess > 0, "> 0"),
            "max_draws": (self.max_draws >= 2, ">= 2"),
            "finite_max_draws": (self.finite_max_draws >= 2, ">= 2"),
            "hops": (self.hops >= 0, ">= 0"),
            "adapt_rounds": (self.adapt_rounds >= 0, ">= 0"),
            "flow_share": (0 <= self.flow_share < 1, "0 <= flow_share < 1"),
            "accept_chi2_dof": (self.accept_chi2_dof > 0, "> 0"),
            "thin": (self.thin >= 1, ">= 1"),
            "keep_delta_chi2": (self.keep_delta_chi2 > 0, "> 0"),
            "merge_sigma": (self.merge_sigma > 0, "> 0"),
            "max_modes": (self.max_modes >= 1, ">= 1"),
            "finite": (self.finite in ("auto", "never", "always"), "one of auto, never, always"),
            "rho_delta_chi2": (self.rho_delta_chi2 > 0, "> 0"),
            "rho_starts": (len(self.rho_starts) > 0 and all(0 < r < 1 for r in self.rho_starts),
                           "non-empty, each 0 < rho < 1"),
            "df": (self.df > 2, "> 2"),
            "scale": (self.scale > 0, "> 0"),
            "defensive": (0 <= self.defensive < 1, "0 <= defensive < 1"),
            "defensive_scale": (self.defensive_scale >= 1, ">= 1"),
            "time_budget_s": (self.time_budget_s > 0, "> 0"),
            "rho_prior": (len(self.rho_prior) == 2 and 0 < self.rho_prior[0] < self.rho_prior[1] < 1,
                          "(low, high) with 0 < low < high < 1"),
            "robust_scale": (self.robust_scale >= 0, ">= 0 (0: plain chi2)"),
            "broad_share": (0 <= self.broad_share < 1, "0 <= broad_share < 1"),
            "broad_delta_chi2": (self.broad_delta_chi2 >= 0, ">= 0"),
            "profile_points": (self.profile_points >= 0, ">= 0 (0: no valley scan)"),
            "profile_span": (0 < self.profile_span < 1, "0 < profile_span < 1"),
            "valley_points": (self.valley_points >= 0, ">= 0 (0: the single-lens fit alone)"),
            "valley_delta": (self.valley_delta > 0, "> 0"),
            "check_z": (self.check_z > 0, "> 0"),
        }
        check_fields(self, checks)


@dataclass
class Mode:
    """One solution: a local optimum of χ² (fluxes profiled).

    Attributes:
        params: physical parameters (alpha in degrees), floats.
        chi2: χ² at the optimum; ``names``: its free parameters (sampling space order).
        z: (P,) sampling-space optimum; ``cov``: (P, P) Gauss–Newton covariance ``(JᵀJ)⁻¹`` (a
            finite-source mode: its ensemble MCMC's covariance).
        n_starts: local fits that ended here; ``origin``: how it was found (``anomaly``,
            ``grid``, ``flow``, ``reflection``, ``partner``).
        finite: rho is a free parameter of this mode.
        law_z: centre of the mode's importance-sampling law when it is not the optimum ``z`` (a
            finite-source mode: the mean of its ensemble MCMC, whose covariance is then ``cov``).
    """

    params: dict
    chi2: float
    names: tuple
    z: np.ndarray
    cov: np.ndarray
    n_starts: int = 1
    origin: str = "search"
    finite: bool = False
    law_z: np.ndarray | None = None

    def to_dict(self) -> dict:
        sd = np.sqrt(np.clip(np.diag(self.cov), 0, None))
        err = {k: float(math.exp(self.z[i]) * sd[i]) if k in LOG_NAMES else float(sd[i])
               for i, k in enumerate(self.names)}
        return {"params": {k: float(v) for k, v in self.params.items()}, "errors": err,
                "chi2": float(self.chi2), "n_starts": int(self.n_starts), "origin": self.origin,
                "finite_source": bool(self.finite)}


@dataclass
class ModeSearch:
    """What :func:`find_modes` found and how."""

    modes: list
    single: SingleLensFit
    anomalies: list
    n_points: int
    n_candidates: int
    n_fits: int
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    check: dict | None = None

    @property
    def best(self) -> Mode:
        return self.modes[0]

    def chi2_dof(self) -> float:
        m = self.best
        return float(m.chi2 / max(self.n_points - len(m.names) - 2, 1))

    def to_dict(self) -> dict:
        best = self.modes[0].chi2 if self.modes else math.nan
        return {
            "modes": [dict(m.to_dict(), delta_chi2=float(m.chi2 - best)) for m in self.modes],
            "single_lens": {"params": self.single.params, "chi2": self.single.chi2_all,
                            "n_masked": int(self.single.mask.sum())},
            "anomalies": [asdict(a) for a in self.anomalies],
            "n_points": self.n_points,
            "chi2_dof": self.chi2_dof() if self.modes else math.nan,
            "n_candidates": self.n_candidates,
            "n_local_fits": self.n_fits,
            "timings": self.timings,
            "notes": self.notes,
            "anomaly_check": self.check,
        }


def _screen_packed(packed: PackedEvent, anomalies: list[Anomaly], thin: int) -> PackedEvent:
    """Zero weight on all but the anomaly stretches and every ``thin``-th point elsewhere, then
    drop the zero-weight points (a smaller compiled shape for the screening)."""
    t = np.asarray(packed.t)
    valid = np.asarray(packed.valid)
    keep = valid & (np.arange(t.size) % thin == 0)
    for a in anomalies:
        pad = 0.5 * (a.t_end - a.t_start) + 0.5
        keep |= valid & (t >= a.t_start - pad) & (t <= a.t_end + pad)
    idx = np.flatnonzero(keep)
    # pad to a multiple of 256 points (zero weight, not valid) so that events share compilations
    n_pad = int(math.ceil(idx.size / 256) * 256)
    idx = np.concatenate([idx, np.full(n_pad - idx.size, idx[-1])])
    real = np.arange(n_pad) < keep.sum()
    return PackedEvent(t=packed.t[idx], flux=jnp.where(real, packed.flux[idx], 0.0),
                       weight=jnp.where(real, packed.weight[idx], 0.0), onehot=packed.onehot[:, idx],
                       valid=jnp.where(real, packed.valid[idx], False), log_norm=packed.log_norm)


#: the q grid of the candidates built on the single-lens valley's points (half as dense as the fit's)
VALLEY_Q_GRID = np.geomspace(1e-5, 0.3, 10)

#: candidates per basin hop, and the spread of the cloud (log s, log q, alpha in degrees, log u_0,
#: log t_E, t_0 in units of t_E) around each centre
HOP_CLOUD = 2048
HOP_SPREAD = {"s": 0.06, "q": 0.7, "alpha": 6.0, "u_0": 0.1, "t_E": 0.05, "t_0": 0.01}


def _cloud(centres: Mapping, rng: np.random.Generator, n: int) -> dict:
    """``n`` candidates scattered around the centres (Gaussian, :data:`HOP_SPREAD`)."""
    k = len(centres["s"])
    which = rng.integers(k, size=n)
    g = rng.standard_normal((n, 6))
    c = {key: np.asarray(v)[which] for key, v in centres.items()}
    return {
        "t_0": c["t_0"] + HOP_SPREAD["t_0"] * c["t_E"] * g[:, 0],
        "u_0": c["u_0"] * np.exp(HOP_SPREAD["u_0"] * g[:, 1]),
        "t_E": c["t_E"] * np.exp(HOP_SPREAD["t_E"] * g[:, 2]),
        "s": c["s"] * np.exp(HOP_SPREAD["s"] * g[:, 3]),
        "q": np.minimum(c["q"] * np.exp(HOP_SPREAD["q"] * g[:, 4]), 1.0),
        "alpha": np.mod(c["alpha"] + HOP_SPREAD["alpha"] * g[:, 5], 360.0),
    }


def _cells(cand: Mapping) -> list[tuple]:
    """Each candidate's (log s, log q, alpha, log |u_0|) cell: 0.03 in ln s, 0.25 dex in q, 3° in
    alpha, 0.1 in ln |u_0|."""
    cell = (np.round(np.log(cand["s"]) / 0.03).astype(int), np.round(np.log10(cand["q"]) / 0.25).astype(int),
            np.round(np.asarray(cand["alpha"]) / 3.0).astype(int) % 120,
            np.round(np.log(np.abs(cand["u_0"]) + 1e-6) / 0.1).astype(int))
    return list(zip(*(c.tolist() for c in cell), strict=True))


def _distinct(cand: Mapping, chi2: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` best candidates, at most two per cell (:func:`_cells`)."""
    order = np.argsort(np.where(np.isfinite(chi2), chi2, np.inf))
    cells = _cells(cand)
    seen: dict = {}
    out = []
    for i in order:
        if not np.isfinite(chi2[i]):
            break
        key = cells[i]
        if seen.get(key, 0) >= 2:
            continue
        seen[key] = seen.get(key, 0) + 1
        out.append(i)
        if len(out) >= n:
            break
    return np.asarray(out, dtype=int)


def _distinct_parts(cand: Mapping, chi2: np.ndarray, part: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` distinct candidates (:func:`_distinct`), each part (a base of the anomaly's
    geometry) given its share ``n // parts`` of its own best first, the rest by rank over all.

    Ranked over all parts alone, the starts crowd into the one region whose unfitted candidates
    screen best (OGLE-2003-BLG-235: all 48 within 25° of one alpha) and a part whose candidates
    reach the right basin only after the local fit gets none (there: the candidates nearest the
    published solution rank 12th of 28 500 on the valley point u_0 0.129, 16 000th on the masked
    fit's u_0 0.106)."""
    parts = np.unique(part)
    if parts.size < 2:
        return _distinct(cand, chi2, n)
    share = max(1, n // parts.size)
    chosen: list[int] = []
    for j in parts:
        idx = np.flatnonzero(part == j)
        sub = {k: np.asarray(v)[idx] for k, v in cand.items()}
        chosen += idx[_distinct(sub, chi2[idx], share)].tolist()
    if len(chosen) < n:
        taken = set(chosen)
        for i in _distinct(cand, chi2, n + len(chosen)):
            if len(chosen) >= n:
                break
            if int(i) not in taken:
                chosen.append(int(i))
    chosen = np.asarray(chosen[:n], dtype=int)
    return chosen[np.argsort(chi2[chosen], kind="stable")]


def _invert(h: np.ndarray) -> tuple[np.ndarray, bool]:
    """Covariance ``h⁻¹`` of a Gauss–Newton matrix (inverted in its diagonal-scaled form) and
    whether it is positive definite; ``(1e-2·I, False)`` when it is not."""
    try:
        d = np.sqrt(np.clip(np.diag(h), 1e-300, None))
        c = np.linalg.inv(h / d[:, None] / d[None, :]) / d[:, None] / d[None, :]
        c = 0.5 * (c + c.T)
        np.linalg.cholesky(c)
        return c, True
    except np.linalg.LinAlgError:
        return np.eye(h.shape[0]) * 1e-2, False


def _covariances(packed, z, names, chunk: int = LM_CHUNK):
    """Gauss–Newton covariances of point-source optima (autodiff Jacobian, fixed compiled size)."""
    k_all = z.shape[0]
    out = []
    for i0 in range(0, k_all, chunk):
        idx = np.minimum(np.arange(i0, i0 + chunk), k_all - 1)
        h, ok = gauss_newton_hessian(jnp.asarray(z[idx]), tuple(names), {}, packed)
        for hk, okk in list(zip(np.asarray(h), np.asarray(ok), strict=True))[: min(chunk, k_all - i0)]:
            c, good = _invert(hk)
            out.append((c, good and bool(okk)))
    return out


def _fd_covariances(packed, z, names):
    """Gauss–Newton covariances of finite-source optima (forward-difference Jacobian); the modes
    kept get theirs from an ensemble MCMC (:func:`_ensemble_modes`)."""
    return [_invert(h) for h in fd_hessian(packed, z, names, rows=FD_ROWS)]


def _merge(z, chi2, covs, names, merge_sigma, origin, counts=None) -> list[Mode]:
    """Point-source optima (rows of ``z``) merged into modes, best χ² first: a row within
    ``merge_sigma`` of a mode (its Gauss–Newton metric) adds its start count (``counts``, default 1
    each) to that mode."""
    counts = np.ones(len(chi2), dtype=int) if counts is None else counts
    order = np.argsort(chi2)
    modes: list[Mode] = []
    for i in order:
        if not np.isfinite(chi2[i]):
            continue
        c, good = covs[i]
        if not good:
            continue
        hit = None
        for m in modes:
            d = z[i] - m.z
            if "alpha" in names:
                j = names.index("alpha")
                d[j] = (d[j] + 180.0) % 360.0 - 180.0
            try:
                dist = math.sqrt(float(d @ np.linalg.solve(m.cov, d)))
            except np.linalg.LinAlgError:
                dist = math.inf
            if dist < merge_sigma:
                hit = m
                break
        if hit is not None:
            hit.n_starts += int(counts[i])
            continue
        phys = {k: float(v[0]) for k, v in to_physical(z[i:i + 1], names).items()}
        modes.append(Mode(params=phys, chi2=float(chi2[i]), names=tuple(names), z=z[i].copy(), cov=c,
                          n_starts=int(counts[i]), origin=origin[i]))
    return modes


def _bounds(priors: Mapping | None, rho_prior: tuple = (1e-4, 0.05)) -> dict:
    """The optimization box: the prior's range where it has one (an optimum outside the prior's
    support carries no posterior mass), generous physical limits elsewhere; rho within the prior
    it gets when the model has none (``ExactSettings.rho_prior``): below it a finite-source fit
    slid to rho 1e-5 and stopped at χ² 2775 on a grazing crossing that, bounded at 1e-4, it
    solved (1996 against 1991 at the truth)."""
    out = {"u_0": (-3.0, 3.0), "t_E": (0.05, 2e3), "s": (0.05, 20.0), "q": (1e-7, 1.0),
           "rho": (float(rho_prior[0]), float(rho_prior[1]))}
    for k, p in (priors or {}).items():
        if getattr(p, "dist", None) in ("uniform", "log_uniform") and k in ("u_0", "s", "q", "t_E", "rho"):
            out[k] = (p.low, p.high)
    return out


def find_modes(
    event: Event,
    *,
    priors: Mapping | None = None,
    flow_samples: Mapping | None = None,
    flow_chi2: np.ndarray | None = None,
    settings: ExactSettings | None = None,
    progress: bool = False,
) -> ModeSearch:
    """Every binary-lens solution of ``event`` within ``settings.keep_delta_chi2`` of the best.

    Args:
        event: the data.
        priors: the lens priors (:func:`mulens_sbi.inference.importance.parse_priors`), used for
            the optimization box (the final posterior applies them exactly).
        flow_samples: optional proposal draws (physical, dict of arrays); with ``flow_chi2``
            (their χ², e.g. ``−2 log L``) the best distinct ones become starts too.
        settings: :class:`ExactSettings`.
    """
    st = settings or ExactSettings()
    t_begin = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    n_points = int(event.n_points)
    packed = pack_event(event, pad_to=int(math.ceil(n_points / 1024) * 1024))  # shared compiled shapes
    bounds = _bounds(priors, st.rho_prior)

    t0 = time.perf_counter()
    single, anomalies = fit_single_lens(packed)
    timings["single_lens_s"] = time.perf_counter() - t0

    # ---- candidates and local fits: the anomaly's geometry (and the flow) first, the grid when
    # no fit is acceptable yet
    t0 = time.perf_counter()
    screen = _screen_packed(packed, anomalies, st.thin)
    first_round = [(anomaly_candidates(single.params, a), "anomaly") for a in anomalies[:2]]
    if anomalies and st.valley_points > 0:
        valley = single_lens_valley(packed, single, delta=st.valley_delta)[: st.valley_points]
        for v in valley:
            first_round.append((anomaly_candidates(v, anomalies[0], q_grid=VALLEY_Q_GRID), "anomaly"))
        if valley:
            notes.append("single-lens valley: candidates also from " + ", ".join(
                f"u_0 {v['u_0']:.4g}, t_E {v['t_E']:.4g}" for v in valley)
                + f" (the masked fit: u_0 {single.params['u_0']:.4g}, t_E {single.params['t_E']:.4g})")
    rounds = [first_round]
    if st.grid or not anomalies:
        rounds.append([(grid_candidates(single.params), "grid")])
    n_candidates, n_fits = 0, 0
    z_fit, c_fit, o_fit = [], [], []
    plain_fit: list[float] = []  # χ² of the fits (c_fit holds the robust cost)
    for r, parts in enumerate(rounds):
        if r > 0 and plain_fit and np.min(plain_fit) / max(n_points - 8, 1) < st.accept_chi2_dof:
            notes.append("an acceptable fit came from the anomaly's geometry: the coarse grid was skipped")
            break
        if r > 0 and time.perf_counter() - t_begin > st.time_budget_s:
            notes.append("time budget spent before the coarse grid")
            break
        starts = {k: [] for k in BINARY}
        origin: list = []
        if parts:
            cand = {k: np.concatenate([p[k] for p, _ in parts]) for k in BINARY}
            org = np.concatenate([np.full(len(p["s"]), o) for p, o in parts])
            part = np.concatenate([np.full(len(p["s"]), j) for j, (p, _) in enumerate(parts)])
            c = evaluate_candidates(screen, cand, scale=st.robust_scale, progress=progress)
            n_candidates += len(c)
            pick = _distinct_parts(cand, c, part, st.n_starts)
            for k in BINARY:
                starts[k].append(cand[k][pick])
            origin += list(org[pick])
        if r == 0 and flow_samples is not None and flow_chi2 is not None:
            fs = {k: np.asarray(flow_samples[k], dtype=float) for k in BINARY}
            fpick = _distinct(fs, np.asarray(flow_chi2, dtype=float), max(4, st.n_starts // 4))
            for k in BINARY:
                starts[k].append(fs[k][fpick])
            origin += ["flow"] * len(fpick)
        if not origin:
            continue
        starts = {k: np.concatenate(v) for k, v in starts.items()}
        # two stages: a few steps for every start, then the best third to convergence
        first = levenberg_marquardt(packed, starts, BINARY, bounds=bounds, max_iter=st.first_iter,
                                    **LM_BATCH, scale=st.robust_scale, progress=progress,
                                    desc="local fits")
        keep = _distinct(first.physical(), first.chi2, max(1, st.n_starts // 3))
        second = levenberg_marquardt(packed, {k: v[keep] for k, v in first.physical().items()}, BINARY,
                                     bounds=bounds, max_iter=st.max_iter, **LM_BATCH,
                                     scale=st.robust_scale, progress=progress, desc="local fits")
        n_fits += len(first.chi2)
        plain_fit += list(evaluate_candidates(packed, second.physical(), chunk=LM_CHUNK))
        z_fit.append(second.z)
        c_fit.append(second.chi2)
        o_fit += [origin[i] for i in keep]
    # basin hopping: clouds of candidates around the best fits so far, screened, the best refitted
    rng = np.random.default_rng(st.seed)
    for _ in range(st.hops if z_fit else 0):
        if time.perf_counter() - t_begin > st.time_budget_s:
            notes.append("time budget spent before the basin hops")
            break
        zc, cc = np.concatenate(z_fit), np.concatenate(c_fit)
        centres = to_physical(zc[_distinct(to_physical(zc, BINARY), cc, 2)], BINARY)
        cloud = _cloud(centres, rng, HOP_CLOUD)
        c = evaluate_candidates(screen, cloud, scale=st.robust_scale, progress=progress)
        n_candidates += len(c)
        pick = _distinct(cloud, c, LM_CHUNK)
        hop = levenberg_marquardt(packed, {k: v[pick] for k, v in cloud.items()}, BINARY, bounds=bounds,
                                  max_iter=st.max_iter, **LM_BATCH, scale=st.robust_scale,
                                  progress=progress, desc="basin hops")
        n_fits += len(pick)
        z_fit.append(hop.z)
        c_fit.append(hop.chi2)
        o_fit += ["hop"] * len(pick)
    timings["search_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not z_fit:
        notes.append("no candidate could be evaluated")
        return ModeSearch([], single, anomalies, n_points, n_candidates, n_fits, timings, notes)
    z_fit, c_fit = np.concatenate(z_fit), np.concatenate(c_fit)
    robust_best, counts = None, None
    if st.robust_scale > 0:
        # the robust optima: starts of the finite-source valley scan; the best distinct ones are
        # polished on χ² (each counts the optima of its cell as the starts that reached it)
        phys = to_physical(z_fit, BINARY)
        robust_best = {k: v[_distinct(phys, c_fit, 4)] for k, v in phys.items()}
        pick = _distinct(phys, c_fit, LM_CHUNK)
        cells = _cells(phys)
        tally: dict = {}
        for c in cells:
            tally[c] = tally.get(c, 0) + 1
        counts = np.ones(pick.size, dtype=int)
        for j, i in enumerate(pick):
            counts[j] = max(tally.pop(cells[i], 1), 1)
        pol = levenberg_marquardt(packed, {k: v[pick] for k, v in phys.items()}, BINARY, bounds=bounds,
                                  max_iter=st.max_iter, **LM_BATCH, progress=progress, desc="polish")
        z_fit, c_fit, o_fit = pol.z, pol.chi2, [o_fit[i] for i in pick]
    covs = _covariances(packed, z_fit, BINARY)
    modes = _merge(z_fit, c_fit, covs, list(BINARY), st.merge_sigma, o_fit, counts)
    timings["modes_s"] = time.perf_counter() - t0
    if not modes:
        notes.append("no local fit converged to a certified optimum")
        return ModeSearch([], single, anomalies, n_points, n_candidates, n_fits, timings, notes)

    # ---- reflections and offset partners of the good modes
    t0 = time.perf_counter()
    best = modes[0].chi2
    good = [m for m in modes if m.chi2 - best < max(st.keep_delta_chi2, 0.01 * best)][: st.max_modes]
    extra = {k: [] for k in BINARY}
    extra_origin = []
    for m in good:
        p = m.params
        x0 = float(axis_crossing(p["u_0"], p["alpha"], p["s"], p["q"]))
        if np.isfinite(x0) and abs(x0) < 10:
            s_b = float(partner_separation(p["s"], x0))
            if abs(math.log(s_b / p["s"])) > 0.01:
                for k in BINARY:
                    extra[k].append(s_b if k == "s" else p[k])
                extra_origin.append("partner")
    if extra_origin and time.perf_counter() - t_begin < st.time_budget_s:
        ex = {k: np.asarray(v) for k, v in extra.items()}
        r2 = levenberg_marquardt(packed, ex, BINARY, bounds=bounds, max_iter=st.max_iter,
                                 **LM_BATCH, progress=progress, desc="partner fits")
        n_fits += len(r2.chi2)
        z_all = np.concatenate([np.stack([m.z for m in modes]), r2.z])
        c_all = np.concatenate([[m.chi2 for m in modes], r2.chi2])
        cov_all = [(m.cov, True) for m in modes] + _covariances(packed, r2.z, BINARY)
        counts = np.concatenate([[m.n_starts for m in modes], np.ones(len(r2.chi2), dtype=int)])
        modes = _merge(z_all, c_all, cov_all, list(BINARY), st.merge_sigma,
                       [m.origin for m in modes] + extra_origin, counts)
    timings["partners_s"] = time.perf_counter() - t0

    # ---- finite source
    t0 = time.perf_counter()
    best = modes[0].chi2
    modes = [m for m in modes if m.chi2 - best < max(st.keep_delta_chi2, 0.01 * best)][: st.max_modes]
    if st.finite != "never":
        modes, fnotes = _finite_source(packed, modes, st, bounds, progress, robust_best)
        notes += fnotes
        best = modes[0].chi2
        modes = [m for m in modes if m.chi2 - best < max(st.keep_delta_chi2, 0.01 * best)]
    timings["finite_source_s"] = time.perf_counter() - t0

    # ---- reflections (same light curve: a separate, equally good mode)
    refl = []
    for m in modes:
        z, cov = _mirror(m.z, m.cov, m.names)
        params = dict(m.params, u_0=-m.params["u_0"], alpha=float((-m.params["alpha"]) % 360.0))
        law_z = None if m.law_z is None else _mirror(m.law_z, m.cov, m.names)[0]
        refl.append(Mode(params=params, chi2=m.chi2, names=m.names, z=z, cov=cov, n_starts=0,
                         origin="reflection", finite=m.finite, law_z=law_z))
    modes = sorted(modes + refl, key=lambda m: m.chi2)
    check = anomaly_residual_check(packed, single, modes[0], z_max=st.check_z)
    if check is not None and check["flag"]:
        notes.append(
            f"the best mode does not explain the anomaly at HJD' {check['t_start']:.2f}-"
            f"{check['t_end']:.2f}: clipped chi2 excess {check['z']:.1f} sd on its {check['n']} points "
            f"({check['n_beyond']} beyond {check['clip']:g} sd, the largest at HJD' {check['t_worst']:.2f}; "
            f"residuals {check['scale_ratio']:.2g}x those outside it); "
            "a better solution the search did not reach may exist (or the data there have systematics)")
    timings["total_s"] = time.perf_counter() - t_begin
    return ModeSearch(modes, single, anomalies, n_points, n_candidates, n_fits, timings, notes, check)


#: the median of a χ²₁ variable; the mean of its lowest 80% (:func:`_trimmed_scale`)
CHI2_1_MEDIAN = 0.45494
CHI2_1_TRIMMED_80 = 0.43772


def _trimmed_scale(u: np.ndarray) -> float:
    """Error-scale estimate σ² of squared residuals ``u``: the mean of their lowest 80% over that
    mean for a χ²₁ variable: insensitive to the few points a model misses by far, and more precise
    than the median (relative sd 0.18 against 0.24 on 100 Gaussian points)."""
    u = np.sort(np.asarray(u, dtype=float))
    k = max(1, int(0.8 * u.size))
    return float(u[:k].mean() / CHI2_1_TRIMMED_80)


def _clipped_moments(c: float) -> tuple[float, float]:
    """Mean and variance of ``min(z², c²)`` for a standard normal z."""
    tail = math.erfc(c / math.sqrt(2.0))
    pdf = math.exp(-0.5 * c * c) / math.sqrt(2.0 * math.pi)
    m2 = (1.0 - tail) - 2.0 * c * pdf + c * c * tail
    m4 = 3.0 * (1.0 - tail) - 2.0 * (c**3 + 3.0 * c) * pdf + c**4 * tail
    return m2, m4 - m2 * m2


def anomaly_residual_check(packed: PackedEvent, single: SingleLensFit, mode: Mode, *, clip: float = 6.0,
                           z_max: float = 5.0, max_scale_ratio: float = 3.0) -> dict | None:
    """Does ``mode`` explain the anomaly the single lens left? A cheap check of the verdict.

    An acceptable χ²/dof says nothing about a short anomaly: on OGLE-2003-BLG-235 a wrong binary
    (s 0.60, q 0.033; χ²/dof 1.38) misses the caustic crossing by Δχ² 470 against the published
    solution, 2% of a χ² of 2100. Here the best mode's residuals on the points the single-lens fit
    masked (the anomalies, padded) are compared with what its residuals say the error bars are:
    per dataset, σ² = the larger of the median of r² outside the anomaly (÷ 0.455, the median of a
    χ²₁) and the mean of the lowest 80% of r² inside it (÷ that mean for a χ²₁, 0.438): error bars
    underestimated over the whole anomaly (at the peak) then do not count as a misfit, a handful of
    points far off do. ``min(r²/σ², clip²)`` is summed over the anomaly's points against its Gaussian
    mean and variance (clipped, so that one outlier cannot decide it); the excess of all datasets
    together, in standard deviations, is ``z``; ``flag`` when ``z > z_max`` and at least 2 points
    lie beyond ``clip``σ, or when the residuals inside are more than ``max_scale_ratio`` times
    those outside (``scale_ratio``: a mode that misses the whole anomaly, which its inside scale
    would otherwise absorb; a simulated OB03235-like event's wrong mode: 4.8, z 6.3 with one point
    beyond 6σ). Measured on OGLE-2003-BLG-235: the wrong mode above z = 9.5, the published solution
    refitted −1.8; on a simulated crossing with the error bars 1.5x too small inside the anomaly,
    the truth at most 2.7 in 20 noise draws.

    Returns None when no point was masked (no anomaly) or no dataset has 3 points in it and 10
    outside.
    """
    mask = np.asarray(single.mask) & np.asarray(packed.valid)
    if not mask.any():
        return None
    names = mode.names
    r, ok = residuals_in_rows(packed, mode.z[None, :], names, FD_ROWS)
    if not bool(ok[0]):
        return None
    r = r[0]
    valid = np.asarray(packed.valid)
    oh = np.asarray(packed.onehot) > 0
    t = np.asarray(packed.t)
    e2, v2 = _clipped_moments(clip)
    num = den = 0.0
    n_in = n_beyond = 0
    worst, worst_t = -1.0, math.nan
    per = []
    for d in range(oh.shape[0]):
        inside = oh[d] & mask
        outside = oh[d] & valid & ~mask
        if inside.sum() < 3 or outside.sum() < 10:
            continue
        sig2_out = np.median(r[outside] ** 2) / CHI2_1_MEDIAN
        sig2 = max(sig2_out, _trimmed_scale(r[inside] ** 2))
        u = r[inside] ** 2 / sig2
        x = np.minimum(u, clip**2)
        ex = float(x.sum() - x.size * e2)
        num += ex
        den += x.size * v2
        n_in += int(x.size)
        n_beyond += int(np.sum(u > clip**2))
        j = int(np.argmax(u))
        if u[j] > worst:
            worst, worst_t = float(u[j]), float(t[inside][j])
        per.append({"dataset": d, "n": int(x.size), "z": ex / math.sqrt(x.size * v2),
                    "error_scale": float(math.sqrt(sig2)), "scale_ratio": float(math.sqrt(sig2 / sig2_out))})
    if not per:
        return None
    z = num / math.sqrt(den)
    ratio = max(p["scale_ratio"] for p in per)
    flag = (z > z_max and n_beyond >= 2) or ratio > max_scale_ratio
    return {"z": float(z), "flag": bool(flag), "z_max": z_max, "clip": clip, "n": n_in, "n_beyond": n_beyond,
            "scale_ratio": float(ratio), "t_worst": worst_t, "t_start": float(t[mask].min()),
            "t_end": float(t[mask].max()), "datasets": per}


def _fs_chi2(packed, z: np.ndarray, names: tuple) -> np.ndarray:
    """χ² of finite-source parameter vectors (rows of ``z``), FD_ROWS at a time (one compilation)."""
    r, ok = residuals_in_rows(packed, z, names, FD_ROWS)
    return np.where(ok, np.sum(r**2, axis=1), np.inf)


def _with_rho(params: Mapping, rho: np.ndarray, names: tuple) -> np.ndarray:
    """z of every (parameter set, rho) pair: (K·R, P + 1), parameter sets outer."""
    k = len(np.asarray(params["s"]))
    full = {n: np.repeat(np.asarray(params[n], dtype=float), rho.size) for n in BINARY}
    full["rho"] = np.tile(rho, k)
    return to_z(full, names)


def _mirror(z: np.ndarray, cov: np.ndarray, names: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The mirror image (u_0, alpha) → (−u_0, −alpha) of a point and its covariance: the same light
    curve (the trajectory reflected about the binary axis)."""
    iu, ia = names.index("u_0"), names.index("alpha")
    z = np.array(z, dtype=float)
    z[..., iu], z[..., ia] = -z[..., iu], (-z[..., ia]) % 360.0
    jac = np.eye(len(names))
    jac[iu, iu] = jac[ia, ia] = -1.0
    return z, jac @ cov @ jac


#: the Gauss–Newton law of a finite-source mode is kept when χ² at ±1 sd along each of its axes rises
#: by an amount within these bounds (1 for an exact quadratic)
GN_CHECK = (0.5, 2.0)


def _gauss_newton_holds(chi2_fn: Callable[[np.ndarray], np.ndarray], mode: Mode) -> tuple[bool, np.ndarray]:
    """Does the mode's Gauss–Newton law describe χ² around it? χ² at ±1 sd along each eigenvector of
    its covariance (2P evaluations) must rise by :data:`GN_CHECK` (1 for a quadratic surface). On
    OGLE-2003-BLG-235's finite-source optimum it rose by 29–33 along the widest axis and by 0.03–0.11
    along another (a curved valley): the law fails and the mode gets an ensemble chain. Returns
    (holds, the 2P rises)."""
    e, v = np.linalg.eigh(mode.cov)
    if not np.all(e > 0):
        return False, np.full(2 * len(e), np.nan)
    steps = (v * np.sqrt(e)).T  # (P, P) rows: 1 sd along each axis
    pts = np.concatenate([mode.z + steps, mode.z - steps])
    if "alpha" in mode.names:
        j = mode.names.index("alpha")
        pts[:, j] %= 360.0
    rise = np.asarray(chi2_fn(pts), dtype=float) - mode.chi2
    ok = bool(np.all(np.isfinite(rise)) and np.all((rise > GN_CHECK[0]) & (rise < GN_CHECK[1])))
    return ok, rise


def _ensemble_modes(packed, modes: list[Mode], st: ExactSettings, bounds: Mapping, progress: bool
                    ) -> tuple[list[Mode], list[str]]:
    """Finite-source modes with their law from a short ensemble MCMC (:func:`ensemble_law`).

    The chain runs on exp(−χ²/2) inside the search's box (the priors of s, q, t_E and rho are
    log-uniform, i.e. flat in the fit's variables) from the mode's Gauss–Newton law. The mode's
    importance-sampling law becomes the chain's mean and covariance (``Mode.law_z``,
    ``Mode.cov``) and its optimum the best point visited where that beats the local fit (the
    forward-difference fit can stop short: OGLE-2003-BLG-235 ended at χ² 1649.0, 8 above the
    basin's optimum). A mode whose mirror image already has a chain gets the mirrored law. Modes
    more than ``keep_delta_chi2`` above the best, and modes whose Gauss–Newton law describes χ²
    around them (:func:`_gauss_newton_holds`), keep their Gauss–Newton law."""
    names = BINARY + ("rho",)
    lo, hi = z_bounds(names, bounds)
    ia = names.index("alpha")

    def log_prob(z: np.ndarray) -> np.ndarray:
        inside = np.all((z >= lo) & (z <= hi), axis=1)
        out = np.full(z.shape[0], -np.inf)
        if inside.any():
            zz = z[inside].copy()
            zz[:, ia] %= 360.0
            out[inside] = -0.5 * _fs_chi2(packed, zz, names)
        return out

    best = min(m.chi2 for m in modes)
    done: list[tuple[Mode, Mode]] = []  # (mode as it came, mode with its law)
    out, notes = [], []
    for i, m in enumerate(modes):
        twin = None
        for orig, new in done:
            zm, _ = _mirror(orig.z, orig.cov, names)
            d = m.z - zm
            d[ia] = (d[ia] + 180.0) % 360.0 - 180.0
            prec = np.linalg.pinv(orig.cov)
            if float(d @ prec @ d) < st.merge_sigma**2:
                twin = new
                break
        if twin is not None:
            z, _ = _mirror(twin.z, twin.cov, names)
            law_z, cov = _mirror(twin.law_z, twin.cov, names)
            phys = {k: float(v[0]) for k, v in to_physical(z[None], names).items()}
            out.append(Mode(params=phys, chi2=twin.chi2, names=names, z=z, cov=cov, n_starts=m.n_starts,
                            origin=m.origin, finite=True, law_z=law_z))
            continue
        if m.chi2 - best > st.keep_delta_chi2:
            out.append(m)
            continue
        holds, dchi = _gauss_newton_holds(lambda zz: _fs_chi2(packed, zz, names), m)
        if holds:
            out.append(m)
            notes.append(f"finite-source mode at chi2 {m.chi2:.1f}: its Gauss–Newton law holds (chi2 at "
                         f"±1 sd along its axes rises by {dchi.min():.2f}-{dchi.max():.2f}); no chain")
            continue
        law = ensemble_law(log_prob, m.z, m.cov, walkers=st.finite_walkers, steps=st.finite_steps,
                           seed=st.seed + i, periodic={ia: 360.0}, progress=progress)
        z, chi2 = m.z, m.chi2
        if -2.0 * law.best_log_prob < m.chi2:
            z, chi2 = law.best_z, -2.0 * law.best_log_prob
        try:
            np.linalg.cholesky(law.cov)
            cov = law.cov
        except np.linalg.LinAlgError:
            cov = m.cov
        phys = {k: float(v[0]) for k, v in to_physical(z[None], names).items()}
        new = Mode(params=phys, chi2=float(chi2), names=names, z=z, cov=cov, n_starts=m.n_starts,
                   origin=m.origin, finite=True, law_z=law.mean)
        done.append((m, new))
        out.append(new)
        notes.append(f"finite-source mode at chi2 {m.chi2:.1f}: ensemble MCMC ({st.finite_walkers} walkers x "
                     f"{st.finite_steps} steps, acceptance {law.acceptance:.2f}, autocorrelation "
                     f"{np.nanmax(law.tau):.0f} steps) gives its law; best point chi2 {chi2:.1f}")
    return out, notes


def _valley(packed, start: Mapping, rho: float, st: ExactSettings, bounds) -> tuple[np.ndarray, np.ndarray]:
    """The point-source valley around a robust optimum, seen with a finite source: s pinned at
    ``profile_points`` values within ``exp(±profile_span)``, the other parameters refitted on the
    robust cost, then χ² with rho at ``rho·(1/3, 1, 3)``. Returns (z, χ²) of every point."""
    names = BINARY + ("rho",)
    grid = start["s"] * np.exp(np.linspace(-st.profile_span, st.profile_span, st.profile_points))
    starts = {k: np.full(grid.size, start[k]) for k in BINARY}
    starts["s"] = grid
    prof = levenberg_marquardt(packed, starts, BINARY, bounds=bounds, max_iter=st.max_iter, **LM_BATCH,
                               scale=st.robust_scale, pin={"s": grid}, desc="valley")
    z = _with_rho(prof.physical(), rho * np.array([1 / 3, 1.0, 3.0]), names)
    return z, _fs_chi2(packed, z, names)


def _finite_source(packed, modes: list[Mode], st: ExactSettings, bounds, progress,
                   robust: Mapping | None = None) -> tuple[list[Mode], list]:
    """Does a mode need rho? χ² on a grid of rho at the point-source optimum first (one batch);
    only where some rho lowers χ² by more than ``rho_delta_chi2`` (or ``finite="always"``) a
    Levenberg–Marquardt fit with rho free from the best grid value.

    ``robust``: the search's robust optima (dict of arrays). Where the data ask for a finite source
    (a mode gains from rho, or rho at a robust optimum beats the best point-source mode by more
    than ``rho_delta_chi2``), the valleys of the two best robust optima are scanned
    (:func:`_valley`) and their best points become finite-source starts too.

    When the best point-source χ² is beyond what noise explains (dof + 5·√(2·dof)), the two best
    point-source modes (mirror images once) also get a finite-source fit from rho = the grid's
    smallest, whatever the grid says, and the valleys are scanned.
    """
    names = BINARY + ("rho",)
    rho_grid = np.asarray(st.rho_starts, dtype=float)
    chi = _fs_chi2(packed, _with_rho({k: [m.params[k] for m in modes] for k in BINARY}, rho_grid, names),
                   names).reshape(len(modes), rho_grid.size)
    out, notes = [], []
    todo = []  # (z start, χ² there, index of the point-source mode or -1)
    for i, m in enumerate(modes):
        finite_chi = chi[i][np.isfinite(chi[i])]
        gain = m.chi2 - finite_chi.min() if finite_chi.size else -np.inf
        if st.finite == "always" or gain > st.rho_delta_chi2:
            j = int(np.argmin(np.where(np.isfinite(chi[i]), chi[i], np.inf)))
            z0 = _with_rho({k: [m.params[k]] for k in BINARY}, rho_grid[j:j + 1], names)[0]
            todo.append((z0, chi[i, j], i))
        else:
            out.append(m)
            notes.append(f"mode {i}: rho in [{rho_grid.min():g}, {rho_grid.max():g}] lowers chi2 by at most "
                         f"{max(gain, 0.0):.1f} (< {st.rho_delta_chi2:g}): point source")
    best_ps = min(m.chi2 for m in modes)
    # A point-source optimum whose χ² the noise cannot explain (beyond dof + 5·√(2 dof)) may sit
    # where a finite source does far worse at the same parameters (measured: χ² 5868 as a point
    # source, 9.8e5 with rho 1e-4 there) while a finite-source fit started from it, rho at the grid's
    # smallest, reaches the truth's basin (1996 against 1991 at the truth). The two best
    # point-source modes that are not mirror images then get that start whatever the grid says.
    n_used = int(np.sum(np.asarray(packed.weight) > 0))
    dof = max(n_used - len(BINARY) - 2, 1)
    forced = []
    if best_ps > dof + 5.0 * math.sqrt(2.0 * dof) and st.finite != "never":
        taken: list[Mode] = []
        for i, m in enumerate(modes):
            if len(taken) == 2:
                break
            if any(abs(m.chi2 - o.chi2) < 1e-6 * max(1.0, o.chi2)
                   and abs(abs(m.params["u_0"]) - abs(o.params["u_0"])) < 1e-9 for o in taken):
                continue  # the reflection of a mode already taken: the same fit mirrored
            taken.append(m)
            z0 = _with_rho({k: [m.params[k]] for k in BINARY}, rho_grid[:1], names)[0]
            c0 = chi[i, 0]
            if not np.isfinite(c0):
                # uncertified there: seen on one of a mirror pair only (the contour integral's
                # certificate is not mirror-symmetric), so the mirror image starts instead
                mirror = dict(m.params, u_0=-m.params["u_0"], alpha=(-m.params["alpha"]) % 360.0)
                z0 = _with_rho({k: [mirror[k]] for k in BINARY}, rho_grid[:1], names)[0]
                c0 = float(_fs_chi2(packed, z0[None], names)[0])
                if not np.isfinite(c0):
                    continue
            if not any(t[2] == i and np.allclose(t[0], z0) for t in todo):
                forced.append((z0, c0, i))
        if forced:
            notes.append(f"the best point source has chi2 {best_ps:.1f} for {dof} degrees of freedom: "
                         f"finite-source fits start from the best {len(forced)} point-source mode(s) with "
                         f"rho {rho_grid[0]:g}")
    if robust is not None and st.profile_points > 0:
        n_r = len(robust["s"])
        rchi = _fs_chi2(packed, _with_rho(robust, rho_grid, names), names).reshape(n_r, rho_grid.size)
        order = np.argsort(np.min(rchi, axis=1))
        asked = bool(todo or forced)  # some point-source mode gains from rho, or none fits
        scanned: list[dict] = []
        for i in order:
            if len(scanned) == 2 or not np.isfinite(np.min(rchi[i])):
                break
            if not (asked or np.min(rchi[i]) < best_ps - st.rho_delta_chi2):
                continue
            start = {k: float(robust[k][i]) for k in BINARY}
            if any(abs(math.log(start["s"] / o["s"])) < st.profile_span / 2
                   and abs(math.log(start["q"] / o["q"])) < 0.25
                   and abs((start["alpha"] - o["alpha"] + 180.0) % 360.0 - 180.0) < 5.0 for o in scanned):
                continue  # the same valley
            scanned.append(start)
            zv, cv = _valley(packed, start, float(rho_grid[int(np.argmin(rchi[i]))]), st, bounds)
            for j in _distinct(to_physical(zv, names), cv, 2):
                if np.isfinite(cv[j]):
                    todo.append((zv[j], cv[j], -1))
            notes.append(f"valley scan around a robust optimum (s {start['s']:.4g}): best chi2 with rho "
                         f"{np.min(cv):.1f} (best point source {best_ps:.1f})")
    if len(todo) > st.max_finite:  # the fits cost ~15-60 s each: the best ones by their grid chi2
        todo.sort(key=lambda t: t[1])
        for _, _, i in todo[st.max_finite:]:
            if i >= 0:
                out.append(modes[i])
                notes.append(f"mode {i}: rho would lower chi2 but only the best {st.max_finite} starts get a "
                             "finite-source fit; kept as a point source")
        todo = todo[: st.max_finite]
    n_regular = len(todo)
    todo += forced  # besides those (their grid chi2 says nothing); their modes are in ``out`` already
    if todo:
        fs = to_physical(np.stack([t[0] for t in todo]), names)
        res = levenberg_marquardt_fd(packed, fs, names, bounds=bounds, max_iter=st.finite_iter, rows=FD_ROWS,
                                     progress=progress)
        covs = _fd_covariances(packed, res.z, names)
        keep, origin, counts = [], [], []
        superseded = set()  # point-source modes whose forced finite-source fit beats them
        for r, (_, _, i) in enumerate(todo):
            ref = modes[i].chi2 if i >= 0 else best_ps
            gain = ref - res.chi2[r]
            wanted = st.finite == "always" or gain > st.rho_delta_chi2
            if covs[r][1] and np.isfinite(res.chi2[r]) and wanted:
                if r >= n_regular and i >= 0:
                    superseded.add(i)
                keep.append(r)
                origin.append(modes[i].origin if i >= 0 else "valley")
                counts.append(modes[i].n_starts if i >= 0 else 1)
                notes.append(f"{f'mode {i}' if i >= 0 else 'valley start'}: rho = "
                             f"{math.exp(res.z[r, -1]):.3g} lowers chi2 by {gain:.1f}: finite source")
            elif i >= 0:
                if r < n_regular:
                    out.append(modes[i])
                notes.append(f"mode {i}: the finite-source fit did not improve chi2 enough ({gain:.1f})")
        if keep:  # finite-source optima merged among themselves as the point-source ones are
            merged = _merge(res.z[keep], res.chi2[keep], [covs[r] for r in keep], list(names), st.merge_sigma,
                            origin, np.asarray(counts))
            merged, enotes = _ensemble_modes(packed, merged, st, bounds, progress)
            out += merged
            notes += enotes
        if superseded:
            # the forced fit of a point-source mode improved χ² by more than rho_delta_chi2: that
            # mode is the finite-source mode's point-source shadow (OGLE-2016-BLG-1195: Δχ² 25
            # worse, yet it took 78% of the posterior weight beside the finite-source modes)
            out = [m for m in out if not any(m is modes[i] for i in superseded)]
            notes.append(f"point-source mode(s) {sorted(superseded)} replaced by their finite-source fits")
    out.sort(key=lambda m: m.chi2)
    return out, notes


@dataclass
class MixtureProposal:
    """Student-t mixture over the modes plus a defensive component, in the sampling space.

    ``log_prob`` returns the density with respect to the **physical** parameters (the log
    Jacobian of the log transforms subtracted), as importance sampling needs.
    """

    names: tuple
    means: np.ndarray  # (M, P)
    covs: np.ndarray  # (M, P, P)
    weights: np.ndarray  # (M,) of the mode components (sum 1 - defensive)
    df: float
    defensive: float
    defensive_scale: float

    def _t_logpdf(self, z: np.ndarray, scale: float) -> np.ndarray:
        m, p = self.means.shape
        out = np.empty((m, z.shape[0]))
        for k in range(m):
            cov = self.covs[k] * scale**2
            chol = np.linalg.cholesky(cov)
            d = z - self.means[k]
            if "alpha" in self.names:
                j = self.names.index("alpha")
                d[:, j] = (d[:, j] + 180.0) % 360.0 - 180.0
            sol = np.linalg.solve(chol, d.T)
            maha = np.sum(sol**2, axis=0)
            nu = self.df
            out[k] = (float(gammaln((nu + p) / 2) - gammaln(nu / 2)) - 0.5 * p * math.log(nu * math.pi)
                      - np.sum(np.log(np.diag(chol))) - 0.5 * (nu + p) * np.log1p(maha / nu))
        return out

    def sample(self, n: int, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        m, p = self.means.shape
        n_def = rng.binomial(n, self.defensive) if self.defensive > 0 else 0
        comp = rng.choice(m, size=n - n_def, p=self.weights / self.weights.sum())
        z = np.empty((n, p))
        for k in range(m):
            idx = np.flatnonzero(comp == k)
            z[idx] = self._draw(rng, k, idx.size, 1.0)
        if n_def:
            kk = rng.choice(m, size=n_def, p=self.weights / self.weights.sum())
            zd = np.empty((n_def, p))
            for k in range(m):
                idx = np.flatnonzero(kk == k)
                zd[idx] = self._draw(rng, k, idx.size, self.defensive_scale)
            z[n - n_def:] = zd
        if "alpha" in self.names:
            j = self.names.index("alpha")
            z[:, j] = np.mod(z[:, j], 360.0)
        return {k: np.asarray(v) for k, v in to_physical(z, self.names).items()}

    def _draw(self, rng, k, size, scale):
        p = self.means.shape[1]
        chol = np.linalg.cholesky(self.covs[k] * scale**2)
        g = rng.standard_normal((size, p))
        w = rng.chisquare(self.df, size=size) / self.df
        return self.means[k] + (g @ chol.T) / np.sqrt(w)[:, None]

    def log_prob(self, params: Mapping) -> np.ndarray:
        z = to_z(params, self.names)
        lw = np.log(self.weights / self.weights.sum() * (1.0 - self.defensive))
        parts = [self._t_logpdf(z.copy(), 1.0) + lw[:, None]]
        if self.defensive > 0:
            ld = np.log(self.weights / self.weights.sum() * self.defensive)
            parts.append(self._t_logpdf(z.copy(), self.defensive_scale) + ld[:, None])
        allp = np.concatenate(parts, axis=0)
        mx = np.max(allp, axis=0)
        lq_z = mx + np.log(np.sum(np.exp(allp - mx), axis=0))
        jac = sum(np.log(np.asarray(params[k], dtype=float)) for k in self.names if k in LOG_NAMES)
        return lq_z - jac

    def component(self, params: Mapping) -> np.ndarray:
        """Index of the mode component each point is most likely drawn from."""
        z = to_z(params, self.names)
        return np.argmax(self._t_logpdf(z, 1.0) + np.log(self.weights)[:, None], axis=0)


    def adapt(self, params: Mapping, weights: np.ndarray) -> MixtureProposal:
        """One round of population Monte Carlo: each component moved to the importance-weighted
        mean and covariance of the draws it owns (widened by 1.2) where those carry at least 2P
        effective samples; elsewhere the component stays and two more are added at its heaviest
        draw, with its covariance scaled by 1/4 and by 4 (too wide or too narrow a law)."""
        z = to_z(params, self.names)
        if "alpha" in self.names:
            j = self.names.index("alpha")
        comp = self.component(params)
        w = np.asarray(weights, dtype=float)
        p = z.shape[1]
        means, covs, wts = [], [], []
        for k in range(self.means.shape[0]):
            own = comp == k
            wk = w[own]
            tot = wk.sum()
            ess = tot**2 / np.sum(wk**2) if tot > 0 else 0.0
            if ess >= 2 * p:
                zk = z[own].copy()
                if "alpha" in self.names:  # unwrap around the component's centre
                    zk[:, j] = self.means[k, j] + (zk[:, j] - self.means[k, j] + 180.0) % 360.0 - 180.0
                mu = (wk[:, None] * zk).sum(0) / tot
                d = zk - mu
                c = (wk[:, None, None] * np.einsum("np,nq->npq", d, d)).sum(0) / tot * 1.2**2
                try:
                    np.linalg.cholesky(c)
                    means.append(mu)
                    covs.append(c)
                    wts.append(max(tot, 1e-3))
                    continue
                except np.linalg.LinAlgError:
                    pass
            means.append(self.means[k])
            covs.append(self.covs[k])
            wts.append(max(tot, 1e-3))
            if tot > 0:
                best = z[own][int(np.argmax(wk))]
                for f in (0.25, 4.0):
                    means.append(best)
                    covs.append(self.covs[k] * f)
                    wts.append(max(tot, 1e-3))
        wts = np.asarray(wts)
        wts = 0.8 * wts / wts.sum() + 0.2 / wts.size
        return MixtureProposal(names=self.names, means=np.asarray(means), covs=np.asarray(covs), weights=wts,
                               df=self.df, defensive=self.defensive, defensive_scale=self.defensive_scale)


def exact_proposal(search: ModeSearch, settings: ExactSettings | None = None, s_range: tuple = (0.2, 5.0),
                   q_range: tuple = (1e-5, 1.0)) -> MixtureProposal | ProposalMixture:
    """The mixture proposal of :func:`find_modes`'s modes (see the module docstring).

    Modes with and without rho are put on one footing: when some mode is finite-source, the
    point-source modes get ``rho`` at the smallest prior-like value 1e-5 with a narrow width
    (their light curve is then the point-source one to that precision).

    Without a clear anomaly (point-source modes, the best beating the single lens by less than
    ``settings.broad_delta_chi2``), a share ``settings.broad_share`` of the proposal is a
    :class:`mulens_sbi.inference.broad.PointLensMap` over the prior's ``s_range`` and ``q_range``:
    binaries that look like the single-lens fit (close, wide about the primary, wide about the
    companion), whatever (s, q, alpha) the data do not exclude.
    """
    st = settings or ExactSettings()
    modes = search.modes
    finite = any(m.finite for m in modes)
    names = BINARY + (("rho",) if finite else ())
    means, covs, logz = [], [], []
    for m in modes:
        centre = m.z if m.law_z is None else m.law_z
        mu = np.array([centre[m.names.index(k)] if k in m.names else math.log(1e-4) for k in names])
        c = np.zeros((len(names), len(names)))
        c[: len(m.names), : len(m.names)] = m.cov
        if len(m.names) < len(names):
            c[-1, -1] = 0.5**2
        means.append(mu)
        covs.append(c * st.scale**2)
        logz.append(-0.5 * m.chi2 + 0.5 * np.linalg.slogdet(m.cov)[1])
    logz = np.asarray(logz)
    w_ev = np.exp(logz - logz.max())
    w = 0.5 * w_ev / w_ev.sum() + 0.5 / len(modes)
    mix = MixtureProposal(names=names, means=np.asarray(means), covs=np.asarray(covs), weights=w,
                          df=st.df, defensive=st.defensive, defensive_scale=st.defensive_scale)
    best = modes[0]
    gain = search.single.chi2_all - best.chi2 if search.single is not None else math.inf
    if finite or not st.broad_share > 0 or not gain < st.broad_delta_chi2:
        return mix
    # no clear anomaly: the posterior spreads over whatever (s, q, alpha) the data do not exclude,
    # with the trajectory of the point mass the binary then looks like
    if getattr(search.single, "cov", None) is not None:
        # the single lens's own law (u_0 > 0), 1.5 times as wide: the binaries it stands for shift
        # the trajectory a little (the other mass's shear)
        cov = search.single.cov * (1.5 * st.scale) ** 2
    else:
        cov = best.cov[:3, :3] * st.scale**2
        if best.z[1] < 0:  # the map's law is written for u_0' > 0 (its mirror image is the other sign)
            flip = np.diag([1.0, -1.0, 1.0])
            cov = flip @ cov @ flip
    broad = PointLensMap(single=search.single.params, cov=cov, s_range=tuple(s_range), q_range=tuple(q_range),
                         df=st.df)
    return ProposalMixture(mix, broad, (1.0 - st.broad_share, st.broad_share))
