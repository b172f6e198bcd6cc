"""Calibration of a trained light-curve model on held-out simulations (``mulens-sbi validate``).

For M held-out events (the last ``holdout_shards`` shards of a ``mulens-sbi simulate`` folder, never
seen in training; or a fresh on-the-fly simulation) with their stored noisy light curve, the model
is run through the *inference* path (:func:`mulens_sbi.preprocess.preprocess` per event, then the
flow), and :mod:`mulens_sbi.npe.diagnostics` gives:

* per-parameter central-interval coverage at the levels ``LEVELS`` (incl. 50/68/90/95%) — the
  expected-coverage curve; a calibrated posterior follows the diagonal within binomial noise
  sqrt(a(1-a)/M) (0.016 at 50% for M = 1000);
* joint HPD coverage (flow density of the truth vs of the samples), TARP coverage and SBC ranks;
* parameter recovery: posterior median and 68% interval against the truth;
* for *caustic-crossing planetary events* (q < 0.01 and at least one data point with the source
  inside a caustic, i.e. 5 images — :func:`mulens_sbi.data.classes.caustic_crossing`): the
  fraction whose true (log s, log q) lies in the 95% highest-density region of the 2-D marginal
  (Gaussian KDE of the samples in (log10 s, log10 q), Scott bandwidth);
* the reliability of the posterior's *planet probability* P(q < 0.01 | x) (the fraction of samples
  with q < 0.01): events binned by that probability, against the fraction of them whose true q is
  below 0.01. An exact posterior is reliable on every set of events chosen by the data alone; the
  caustic-crossing class is chosen by the true parameters, so a model can be reliable here and still
  miss the caustic-crossing figure, when its summary of the light curve does not tell planetary from
  stellar-binary caustic crossings. The caustic-crossing set reports that planet probability too.

Outputs in ``out``: ``validation.json`` (all numbers, the settings, and the figure list),
``coverage.png``, ``recovery.png``, ``sbc.png``, ``reliability.png``. Nothing is overwritten without
``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from mulens_sbi.data.classes import caustic_crossing
from mulens_sbi.data.lightcurves import simulate_lightcurves
from mulens_sbi.data.shards import condition_stats, read_shards, read_simulation, shard_files
from mulens_sbi.models import load_model
from mulens_sbi.npe.diagnostics import coverage_report, hpd_levels
from mulens_sbi.preprocess import preprocess
from mulens_sbi.settings_file import check_fields
from mulens_sbi.summary import PLANET_Q, planet_probability
from mulens_sbi.survey import Survey

__all__ = ["ValidateSettings", "LEVELS", "run_validation", "validate_arrays",
           "kde_hpd_level", "kde_hpd_levels", "selected_coverage_if_calibrated",
           "simulate_events", "class_reliability", "planet_probabilities"]

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.7, 0.8, 0.9, 0.95)
FIGURES = ("coverage.png", "recovery.png", "sbc.png", "reliability.png")
#: bin edges of the predicted class probability in :func:`class_reliability`
RELIABILITY_EDGES = (0.0, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 1.0)


@dataclass(frozen=True)
class ValidateSettings:
    """Settings of ``mulens-sbi validate``.

    Attributes:
        model: model name (``roman``) or folder.
        data: a simulate folder whose last ``holdout_shards`` shards are held out (None: simulate
            ``n`` fresh events with the model's survey spec and ``seed``).
        n: number of events.
        n_samples: posterior samples per event.
        out: output folder (default: the model folder).
        seed: sampling (and fresh-simulation) seed.
        holdout_shards: number of held-out shards at the end of ``data``.
        caustic_subset: also evaluate the caustic-crossing planetary subset (runs the lens solver).
        caustic_data: a ``mulens-sbi simulate --condition caustic-crossing`` folder of the model's
            spec, not used in training: the caustic-crossing figure is measured on all its events
            (hundreds, instead of the ~1% of ``n`` held-out events that cross a caustic).
        other_spec: accept a ``caustic_data`` folder simulated with another spec than the model's
            (to compare models on the same events, e.g. an event-window model on whole-season
            light curves; the report records it). ``data`` is never checked against the spec.
        overwrite: replace existing outputs.
        progress: progress bars.
    """

    model: str
    data: str | None = None
    n: int = 1000
    n_samples: int = 500
    out: str | None = None
    seed: int = 0
    holdout_shards: int = 5
    caustic_subset: bool = True
    caustic_data: str | None = None
    other_spec: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "model": (isinstance(self.model, str) and self.model != "", "a model name or folder"),
            "n": (self.n >= 1, ">= 1"),
            "n_samples": (self.n_samples >= 1, ">= 1"),
            "seed": (self.seed >= 0, ">= 0"),
            "holdout_shards": (self.holdout_shards >= 1, ">= 1"),
        }
        check_fields(self, checks)


# ----------------------------------------------------------------------------------------------
# HPD levels


def _kde(samples_2d: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Gaussian KDE (Scott bandwidth) of ``samples`` (n, 2), all finite, at ``points`` (m, 2)."""
    s = np.asarray(samples_2d, dtype=np.float64)
    n, d = s.shape
    cov = np.cov(s.T) * n ** (-2.0 / (d + 4))
    cov += np.eye(d) * 1e-12
    inv = np.linalg.inv(cov)
    diff = np.asarray(points, dtype=np.float64)[:, None, :] - s[None, :, :]
    return np.mean(np.exp(-0.5 * np.einsum("abi,ij,abj->ab", diff, inv, diff)), axis=1)


def kde_hpd_levels(samples_2d: np.ndarray, points_2d: np.ndarray) -> np.ndarray:
    """HPD level of each of ``points`` (m, 2) under a Gaussian KDE (Scott bandwidth) of ``samples``
    (n, 2): the fraction of samples whose KDE density exceeds the point's. A point lies in the
    c HPD region <=> its level <= c."""
    s = np.asarray(samples_2d, dtype=np.float64)
    s = s[np.all(np.isfinite(s), axis=1)]
    ds = _kde(s, s)
    dt = _kde(s, np.asarray(points_2d, dtype=np.float64).reshape(-1, 2))
    return np.mean(ds[None, :] > dt[:, None], axis=1)


def kde_hpd_level(samples_2d: np.ndarray, truth_2d: np.ndarray) -> float:
    """HPD level of ``truth`` under a Gaussian KDE (Scott bandwidth) of ``samples`` (n, 2): the fraction
    of samples whose KDE density exceeds the truth's. Truth in the 95% HPD region <=> level <= 0.95."""
    return float(kde_hpd_levels(samples_2d, np.asarray(truth_2d, dtype=np.float64)[None])[0])


def selected_coverage_if_calibrated(regions: np.ndarray, draws: np.ndarray, selected: np.ndarray,
                                    levels=(0.5, 0.68, 0.9, 0.95)) -> dict[str, Any]:
    """What the (log s, log q) HPD figures of events chosen by their *true* parameters would be if
    the posterior were exact.

    Choosing events by a property of the truth (here q < 0.01) is not choosing them by the data, and
    a calibrated posterior need not cover at the nominal rate on such a subset: an event whose
    posterior straddles q = 0.01 enters the subset only when its truth lies in the low-q tail. If
    the flow q(θ|x) were the exact posterior, the joint law of (x, θ_true) on the subset would be
    p(x | A) q(θ | x, A), so the expected figure at level c is the mean over the subset's events of
    Q(HPD_c ∩ A | x) / Q(A | x). Each term is estimated with fresh flow draws (independent of the
    ones that built the region), ``draws`` (M, m, 2) in (log10 s, log10 q), of which ``selected``
    (M, m) satisfy A; ``regions`` (M, n, 2) are the samples that define each event's HPD regions
    (the same ones the truth is scored against). An event without a selected draw gives A almost no
    mass, so its truth would lie outside the region: it counts 0 (and is counted). ``levels``: the
    HPD credibilities to report.

    Compare the measured figure with this one two-sidedly (binomial error of the set): below it,
    the flow is over-confident on the subset; above it, under-confident (or the selection is only
    partly captured by ``selected``, e.g. a condition on the trajectory as well as on q); equal,
    the shortfall from nominal is the selection acting on the posterior's width."""
    per_event = {c: [] for c in levels}
    n_none = 0
    for k in range(regions.shape[0]):
        pts = draws[k][selected[k] & np.all(np.isfinite(draws[k]), axis=1)]
        if not len(pts):
            n_none += 1
            for c in levels:
                per_event[c].append(0.0)
            continue
        lv = kde_hpd_levels(regions[k], pts)
        for c in levels:
            per_event[c].append(float(np.mean(lv <= c)))
    out = {f"expected_frac_in_{round(100 * c)}_hpd": (float(np.mean(v)) if v else None)
           for c, v in per_event.items()}
    return {**out, "n_events": int(regions.shape[0]), "n_events_without_selected_draw": n_none,
            "n_draws_per_event": int(draws.shape[1])}


# ----------------------------------------------------------------------------------------------
# data


def _holdout(data: str, holdout_shards: int, n: int) -> dict[str, np.ndarray]:
    files = shard_files(data)
    if holdout_shards < 1 or holdout_shards > len(files):
        raise ValueError(f"holdout_shards must be in 1..{len(files)}, got {holdout_shards}")
    d = read_shards(files[len(files) - holdout_shards:])
    m = d["t"].shape[0]
    if n > m:
        raise ValueError(f"{data}: the {holdout_shards} held-out shards have {m} light curves, asked for {n}")
    return {k: v[:n] for k, v in d.items()}


def simulate_events(survey: str, n: int, seed: int, batch_size: int = 64) -> dict[str, np.ndarray]:
    """n fresh light curves of a survey spec (name or path), seeded."""
    sv = Survey.load(survey)
    return simulate_lightcurves(sv, np.random.default_rng([int(seed), 4242]), n, batch_size=batch_size)


# ----------------------------------------------------------------------------------------------
# the computation


def _prepare(model, d: dict[str, np.ndarray], progress: bool, desc: str = "preprocess"
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Each event of ``d`` through :func:`mulens_sbi.preprocess.preprocess`: the network inputs
    (float32) and reference times of the accepted ones, the (M,) accepted mask, and the refusals
    (row and message)."""
    m = d["t"].shape[0]
    xs, t_ref, failed = [], [], []
    ok = np.zeros(m, bool)
    for i in tqdm(range(m), desc=desc, disable=not progress):
        try:
            p = preprocess(d["t"][i], d["flux"][i], d["sigma"][i], d["mask"][i], model.preprocess_config,
                           name=f"event {i}")
        except ValueError as e:
            failed.append({"row": i, "error": str(e)})
            continue
        ok[i] = True
        xs.append(p.x)
        t_ref.append(p.t_ref)
    return np.stack(xs).astype(np.float32), np.asarray(t_ref), ok, failed


def _logs_logq_levels(S: np.ndarray, theta: np.ndarray, rows) -> np.ndarray:
    """KDE HPD levels of the true (log10 s, log10 q) (columns 3, 4) under the samples ``S`` (M, n, D),
    for the events ``rows``."""
    return np.asarray([kde_hpd_level(np.log10(S[k][:, [3, 4]]), np.log10(theta[k, [3, 4]])) for k in rows])


def validate_arrays(model, d: dict[str, np.ndarray], n_samples: int, seed: int = 0, progress: bool = False,
                    crossing: bool = True) -> dict[str, Any]:
    """All diagnostics for events ``d`` (simulate-style arrays incl. the physical parameters, ``t``,
    ``flux``, ``sigma``, ``mask``); returns a JSON-able report plus the raw arrays under ``_raw``."""
    names = model.names
    xs_ok, t_ref, ok, failed = _prepare(model, d, progress)
    theta = np.stack([np.asarray(d[n], dtype=np.float64) for n in names], axis=1)[ok]
    t0 = time.perf_counter()
    samp, _ = model.sample_batched(xs_ok, t_ref, n_samples, jax.random.PRNGKey(seed))
    t_sample = time.perf_counter() - t0
    S = np.stack([samp[n] for n in names], axis=-1)  # (M, n, D) physical
    theta_net = theta.copy()
    theta_net[:, 0] -= t_ref
    S_net = S.copy()
    S_net[..., 0] -= t_ref[:, None]
    lq_s = model.posterior.log_prob_batched(S_net, xs_ok) if n_samples > 0 else None
    lq_t = model.posterior.log_prob_batched(theta_net[:, None, :], xs_ok)[:, 0]
    rep = coverage_report(S, theta, names=list(names), log_prob_samples=lq_s, log_prob_true=lq_t,
                          levels=LEVELS, seed=seed)
    rep["n_preprocess_failed"] = len(failed)
    rep["preprocess_failures"] = failed[:20]
    rep["sampling_s"] = t_sample
    # recovery
    med = np.nanmedian(S, axis=1)
    lo, hi = np.nanpercentile(S, [16, 84], axis=1)
    rep["recovery"] = {}
    for j, n in enumerate(names):
        tr = theta[:, j]
        f = np.log10 if n in ("t_E", "s", "q") else (lambda v: v)
        err = f(med[:, j]) - f(tr)
        rep["recovery"][n] = {"scale": "log10" if n in ("t_E", "s", "q") else "linear",
                              "median_abs_error": float(np.median(np.abs(err))),
                              "median_68_width": float(np.median(f(hi[:, j]) - f(lo[:, j])))}
    p_planet = planet_probabilities(S)
    rep["planet_probability"] = {"q_max": PLANET_Q,
                                 **class_reliability(p_planet, theta[:, 4] < PLANET_Q)}
    # caustic-crossing planetary events
    if crossing:
        sel = np.flatnonzero(theta[:, 4] < 0.01)
        idx_all = np.flatnonzero(ok)[sel]
        params = {k: np.asarray(d[k])[idx_all] for k in ("t_0", "u_0", "t_E", "s", "q", "alpha")}
        cross = caustic_crossing(np.asarray(d["t"])[idx_all], np.asarray(d["mask"])[idx_all], params)
        levels = _logs_logq_levels(S, theta, sel[cross])
        rep["caustic_crossing_planetary"] = {
            **_crossing_figures(levels), "n_planetary": int(len(sel)), "source": "the held-out events",
            "planet_probability": _crossing_planet_probability(p_planet[sel[cross]], levels)}
    rep["_raw"] = {"theta": theta, "samples": S, "hpd_levels": hpd_levels(lq_s, lq_t), "median": med,
                   "lo": lo, "hi": hi}
    return rep


def class_reliability(p_pred: np.ndarray, in_class: np.ndarray,
                      edges: tuple[float, ...] = RELIABILITY_EDGES) -> dict[str, Any]:
    """Reliability of predicted class probabilities.

    Events are binned by ``p_pred`` (M,) in [0, 1] (bins ``[e_k, e_k+1)``, the last one closed;
    ``edges`` increasing from 0 to 1); events whose prediction is NaN (no usable sample) are left out
    and counted in ``n_excluded``. Per bin: the number of events, the mean predicted probability, the
    observed fraction of ``in_class`` (M,) bool, and its binomial standard error
    ``sqrt(max(p(1 − p), 1/n) / n)`` at the mean prediction p (the floor 1/n keeps a bin whose
    predictions are all near 0 or 1 from claiming a near-zero error). ``ece``: the expected
    calibration error Σ_k (n_k/M)·|observed_k − predicted_k| over the M events kept; ``max_z``: the
    largest |observed − predicted|/SE over bins of at least 10 events (a reliable predictor keeps it
    within a few units; None when no bin has 10)."""
    p = np.asarray(p_pred, dtype=float)
    y = np.asarray(in_class, dtype=bool)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"p_pred and in_class must be 1-D of one length, got {p.shape} and {y.shape}")
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0) or e[0] != 0.0 or e[-1] != 1.0:
        raise ValueError(f"edges must increase from 0 to 1, got {list(edges)}")
    keep = ~np.isnan(p)
    p, y = p[keep], y[keep]
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p_pred must be probabilities in [0, 1] (or NaN)")
    k = np.clip(np.searchsorted(e, p, side="right") - 1, 0, len(e) - 2)
    bins, ece, max_z = [], 0.0, None
    for b in range(len(e) - 1):
        sel = k == b
        n = int(sel.sum())
        row: dict[str, Any] = {"lo": float(e[b]), "hi": float(e[b + 1]), "n": n}
        if n:
            pred, obs = float(p[sel].mean()), float(y[sel].mean())
            se = float(np.sqrt(max(pred * (1 - pred), 1.0 / n) / n))
            row.update(predicted=pred, observed=obs, se=se)
            ece += n / len(p) * abs(obs - pred)
            if n >= 10:
                max_z = max(max_z or 0.0, abs(obs - pred) / se)
        bins.append(row)
    return {"n_events": int(len(p)), "n_excluded": int((~keep).sum()), "bins": bins,
            "ece": float(ece) if len(p) else None, "max_z": max_z}


def planet_probabilities(S: np.ndarray) -> np.ndarray:
    """(M,) posterior probability that the companion is a planet (q < ``PLANET_Q``) of M events from
    their samples ``S`` (M, n, D) in the physical order (q in column 4); NaN samples are ignored, and
    an event without a usable sample gets NaN (the per-event form of
    :func:`mulens_sbi.summary.planet_probability`)."""
    return np.array([planet_probability(q, q_max=PLANET_Q) for q in S[..., 4]])


def _crossing_planet_probability(p_planet: np.ndarray, levels: np.ndarray) -> dict[str, Any]:
    """On caustic-crossing planetary events: how much posterior mass the model gives to a planet,
    and the 95% figure split by whether it gives a planet at least half the mass."""
    hi = p_planet >= 0.5  # NaN (no usable sample) counts as below

    def frac(sel):
        return float(np.mean(levels[sel] <= 0.95)) if sel.any() else None

    fin = p_planet[np.isfinite(p_planet)]
    return {"median": float(np.median(fin)) if fin.size else None,
            "frac_below_0.5": float(np.mean(~hi)) if p_planet.size else None,
            "frac_truth_in_95_if_at_least_0.5": frac(hi), "n_at_least_0.5": int(hi.sum()),
            "frac_truth_in_95_if_below_0.5": frac(~hi), "n_below_0.5": int((~hi).sum())}


def _crossing_figures(levels: np.ndarray) -> dict[str, Any]:
    """The caustic-crossing figures from the KDE HPD levels of the true (log s, log q)."""
    m = len(levels)

    def frac(a):
        if not m:
            return None
        return float(np.mean(levels <= a))

    out = {"definition": "q < 0.01 and >= 1 data point with the source inside a caustic (5 images)",
           "n_events": int(m), "frac_truth_in_95_hpd_logs_logq": frac(0.95),
           "frac_truth_in_68_hpd_logs_logq": frac(0.68), "frac_truth_in_50_hpd_logs_logq": frac(0.5),
           "frac_truth_in_90_hpd_logs_logq": frac(0.9)}
    if m:
        f = out["frac_truth_in_95_hpd_logs_logq"]
        out["binomial_se_95"] = float(np.sqrt(max(f * (1 - f), 0.95 * 0.05) / m))
    return out


#: fewer accepted samples than this under the planetary prior: the event counts as a miss
MIN_RESTRICTED_SAMPLES = 20


def crossing_coverage(model, d: dict[str, np.ndarray], n_samples: int, seed: int = 0,
                      progress: bool = False, diagnose: bool = True) -> dict[str, Any]:
    """Caustic-crossing figures on events ``d`` that are all caustic-crossing planetary events (a
    ``--condition caustic-crossing`` simulation): for each, the HPD level of the true (log s, log q)
    under a KDE of ``n_samples`` flow samples; events that preprocessing refuses are counted.

    With ``diagnose`` (default) two more figures explain the result:

    * ``if_calibrated``: what the figures would be if the flow were the exact posterior
      (:func:`selected_coverage_if_calibrated`, ``n_samples`` fresh draws per event);
    * ``planetary_prior``: the same figures for the posterior under the prior restricted to
      q < 0.01, the set's condition on q (:mod:`mulens_sbi.restrict`: the flow truncated to
      q < 0.01 by rejection, at most 20 rounds; ``fit --restrict`` uses 50). The set's other
      condition, a caustic crossing in the data, is not imposed on either figure (it would need the
      lens equation solved along every draw's trajectory); it is mostly visible in the data. An
      event left with fewer than ``MIN_RESTRICTED_SAMPLES`` samples counts as a miss."""
    names = model.names
    xs, t_ref, keep, failed = _prepare(model, d, progress, "preprocess (caustic set)")
    theta = np.stack([np.asarray(d[n], dtype=np.float64) for n in names], axis=1)[keep]
    key = jax.random.PRNGKey(seed)
    samp, _ = model.sample_batched(xs, t_ref, n_samples, key)
    S = np.stack([samp[n] for n in names], axis=-1)
    levels = _logs_logq_levels(S, theta, range(theta.shape[0]))
    out = {**_crossing_figures(levels), "n_preprocess_failed": len(failed),
           "planet_probability": _crossing_planet_probability(planet_probabilities(S), levels)}
    if diagnose:
        draws, _ = model.sample_batched(xs, t_ref, n_samples, jax.random.fold_in(key, 1))
        dq = np.asarray(draws["q"])
        out["if_calibrated"] = {
            "selection": f"true q < {PLANET_Q:g} (the caustic-crossing condition is not imposed on the "
                         "draws)",
            **selected_coverage_if_calibrated(np.log10(S[..., [3, 4]]),
                                              np.log10(np.stack([draws["s"], dq], axis=-1)), dq < PLANET_Q)}
        with warnings.catch_warnings():  # events the restriction cannot fill are counted below
            warnings.simplefilter("ignore", RuntimeWarning)
            rs, _, info = model.sample_batched(xs, t_ref, n_samples, jax.random.fold_in(key, 2),
                                               restrict={"q": (None, PLANET_Q)}, return_info=True)
        R = np.log10(np.stack([rs["s"], rs["q"]], axis=-1))
        n_acc = np.sum(np.all(np.isfinite(R), axis=-1), axis=1)
        lv_r = np.array([kde_hpd_level(R[k], np.log10(theta[k, [3, 4]])) if n_acc[k] >= MIN_RESTRICTED_SAMPLES
                         else np.inf for k in range(len(R))])
        out["planetary_prior"] = {
            "prior": f"the model's prior restricted to q < {PLANET_Q:g} (the set's condition on q)",
            **{k: v for k, v in _crossing_figures(lv_r).items() if k != "definition"},
            "n_too_few_samples": int(np.sum(n_acc < MIN_RESTRICTED_SAMPLES)),
            "flow_mass_below_q_max_median": float(np.median(info["mass_within"]))}
    out["_levels"] = levels
    return out


def _figures(rep: dict, out: Path, title: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = rep["names"]
    lev = np.asarray(rep["levels"])
    m = rep["n_cases"]
    files = []
    fig, ax = plt.subplots(figsize=(5.5, 5))
    band = 2 * np.sqrt(lev * (1 - lev) / max(m, 1))
    ax.fill_between(lev, lev - band, lev + band, color="0.85", label="±2σ binomial")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for n in names:
        ax.plot(lev, rep["marginal_coverage"][n], "o-", ms=3, label=n)
    if "hpd_coverage" in rep:
        ax.plot(lev, rep["hpd_coverage"], "ks-", ms=3, label="joint HPD")
    ax.set_xlabel("nominal credibility")
    ax.set_ylabel("empirical coverage")
    ax.set_title(f"{title}: coverage, {m} held-out events", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=90)
    plt.close(fig)
    files.append("coverage.png")

    raw = rep["_raw"]
    fig, axs = plt.subplots(2, 3, figsize=(11, 7))
    for j, (n, ax) in enumerate(zip(names, axs.ravel(), strict=True)):
        tr, md, lo, hi = raw["theta"][:, j], raw["median"][:, j], raw["lo"][:, j], raw["hi"][:, j]
        if n == "t_0":
            tr, md, lo, hi = 0 * tr, md - tr, lo - tr, hi - tr
            ax.set_ylabel("posterior − true t_0 (d)")
            ax.set_xlabel("event")
            xs = np.arange(len(tr))
            ax.errorbar(xs, md, yerr=[md - lo, hi - md], fmt=".", ms=2, lw=0.3, alpha=0.5)
            ax.set_yscale("symlog", linthresh=0.1)
        else:
            ax.errorbar(tr, md, yerr=[md - lo, hi - md], fmt=".", ms=2, lw=0.3, alpha=0.5)
            ax.plot([np.nanmin(tr), np.nanmax(tr)], [np.nanmin(tr), np.nanmax(tr)], "k--", lw=1)
            if n in ("t_E", "s", "q"):
                ax.set_xscale("log")
                ax.set_yscale("log")
            ax.set_xlabel(f"true {n}")
            ax.set_ylabel(f"posterior median {n} (68%)")
        ax.set_title(n, fontsize=9)
    fig.suptitle(f"{title}: parameter recovery", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "recovery.png", dpi=80)
    plt.close(fig)
    files.append("recovery.png")

    fig, axs = plt.subplots(1, len(names), figsize=(2.2 * len(names), 2.4))
    ns = rep["n_samples"]
    for n, ax in zip(names, axs, strict=True):
        ax.hist(rep["sbc_ranks"][n], bins=20, range=(0, ns), color="C0")
        ax.axhline(m / 20, color="k", lw=1)
        ax.set_title(n, fontsize=9)
        ax.set_yticks([])
    fig.suptitle(f"{title}: SBC rank histograms", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "sbc.png", dpi=80)
    plt.close(fig)
    files.append("sbc.png")

    files.append(_reliability_figure(rep, out, title))
    return files


def _reliability_figure(rep: dict, out: Path, title: str) -> str:
    """``reliability.png``: the planet-probability reliability of ``rep`` (a validation report)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = rep["planet_probability"]
    rows = [b for b in rel["bins"] if b["n"] >= 10]  # smaller bins say little (their table row stays)
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.errorbar([b["predicted"] for b in rows], [b["observed"] for b in rows],
                yerr=[2 * b["se"] for b in rows], fmt="o", ms=4, color="C0", label="held-out events (±2σ)")
    for b in rows:
        ax.annotate(str(b["n"]), (b["predicted"], b["observed"]), fontsize=6, xytext=(4, -8),
                    textcoords="offset points")
    for key, colour in (("caustic_crossing_planetary_set", "C3"), ("caustic_crossing_planetary", "C1")):
        c = rep.get(key, {}).get("planet_probability")
        if c and c["median"] is not None:
            where = "dedicated set" if key.endswith("set") else "held-out"
            ax.axvline(c["median"], color=colour, lw=1, ls=":",
                       label=f"median on caustic-crossing planets ({where})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"posterior P(q < {rel['q_max']:g})")
    ax.set_ylabel(f"fraction with true q < {rel['q_max']:g}")
    ece = "n/a" if rel["ece"] is None else f"{rel['ece']:.3f}"
    ax.set_title(f"{title}: planet-probability reliability (ECE {ece})", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=90)
    plt.close(fig)
    return "reliability.png"


def _check_crossing_folder(model, folder: Path, other_spec: bool = False) -> dict:
    """The manifest of a ``--caustic-data`` folder, checked: a complete caustic-crossing simulation
    (q_max 0.01) of the spec the model was trained on (of any spec with ``other_spec``)."""
    mpath = folder / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(f"{mpath} not found (--caustic-data must be a mulens-sbi simulate "
                                f"--condition caustic-crossing folder)")
    man = json.loads(mpath.read_text())
    if man.get("condition") != "caustic-crossing" or man.get("q_max") != 0.01:
        raise ValueError(f"{folder}: not a --condition caustic-crossing simulation with q_max 0.01 "
                         f"(condition {man.get('condition')!r}, q_max {man.get('q_max')!r})")
    spec_text = model.metadata.get("provenance", {}).get("spec_text")
    if (spec_text and hashlib.sha256(spec_text.encode()).hexdigest() != man.get("spec_sha256")
            and not other_spec):
        raise ValueError(f"{folder}: simulated with another survey spec than the model was trained on "
                         f"(--other-spec to compare models on the same events)")
    return man


def _crossing_set(model, settings: ValidateSettings) -> dict[str, Any]:
    """Caustic-crossing figures on a conditioned simulation folder."""
    folder = Path(settings.caustic_data)
    man = _check_crossing_folder(model, folder, settings.other_spec)
    d = read_simulation(folder)
    res = crossing_coverage(model, d, settings.n_samples, settings.seed, settings.progress)
    res.pop("_levels")
    return {**res, "source": str(folder), "seed": man.get("seed"), "condition": condition_stats(folder),
            "survey": man.get("survey"), "spec_sha256": man.get("spec_sha256")}


def run_validation(settings: ValidateSettings, log=print) -> dict[str, Any]:
    """Run the validation, write validation.json and the figures; return the report (without raw arrays)."""
    model = load_model(settings.model)
    out = Path(settings.out) if settings.out else Path(model.path)
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / "validation.json"] + [out / f for f in FIGURES]
    existing = [p for p in targets if p.exists()]
    if existing and not settings.overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace the validation outputs")
    if settings.caustic_data:
        _check_crossing_folder(model, Path(settings.caustic_data), settings.other_spec)  # before the work
    t0 = time.perf_counter()
    if settings.data:
        d = _holdout(settings.data, settings.holdout_shards, settings.n)
        source = {"kind": "held-out shards", "data": settings.data, "holdout_shards": settings.holdout_shards}
    else:
        spec_text = model.metadata.get("provenance", {}).get("spec_text")
        survey = model.survey_name
        if spec_text:
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
                fh.write(spec_text)
                survey = fh.name
        d = simulate_events(survey, settings.n, settings.seed)
        source = {"kind": "fresh simulation", "survey": model.survey_name, "seed": settings.seed}
    rep = validate_arrays(model, d, settings.n_samples, settings.seed, settings.progress,
                          crossing=settings.caustic_subset)
    if settings.caustic_data:
        rep["caustic_crossing_planetary_set"] = _crossing_set(model, settings)
    rep["wall_s"] = time.perf_counter() - t0
    rep["settings"] = asdict(settings)
    rep["source"] = source
    rep["model"] = str(model.path)
    rep["machine"] = {"platform": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
                      "python": platform.python_version()}
    rep["figures"] = _figures(rep, out, f"{model.survey_name} model")
    rep.pop("_raw")
    rep["sbc_ranks"] = {k: v for k, v in rep["sbc_ranks"].items()}
    (out / "validation.json").write_text(json.dumps(rep, indent=1))
    lev = rep["levels"]
    key = (0.5, 0.68, 0.9, 0.95)
    log("coverage (nominal: " + ", ".join(f"{a:.2f}" for a in lev if a in key) + ")")
    for n in rep["names"]:
        row = [c for a, c in zip(lev, rep["marginal_coverage"][n], strict=True) if a in key]
        log(f"  {n:6s} " + "  ".join(f"{c:.3f}" for c in row))
    rel = rep["planet_probability"]
    if rel["ece"] is not None:
        mz = "n/a (no bin of 10 events)" if rel["max_z"] is None else f"{rel['max_z']:.1f} sigma"
        log(f"planet probability P(q < {rel['q_max']:g}): expected calibration error {rel['ece']:.3f}, "
            f"largest bin deviation {mz}")
    for key in ("caustic_crossing_planetary", "caustic_crossing_planetary_set"):
        c = rep.get(key)
        if c and c["n_events"]:
            pp = c["planet_probability"]
            log(f"caustic-crossing planets ({c['source']}): true (log s, log q) in the 95% HPD region for "
                f"{c['frac_truth_in_95_hpd_logs_logq']:.3f} of {c['n_events']}, in the 68% region for "
                f"{c['frac_truth_in_68_hpd_logs_logq']:.3f}; posterior planet probability median "
                f"{pp['median']:.2f}, below 0.5 for {pp['frac_below_0.5']:.2f} of them")
    log(f"wrote {out / 'validation.json'} and {', '.join(rep['figures'])} in {rep['wall_s']:.0f} s")
    return rep
