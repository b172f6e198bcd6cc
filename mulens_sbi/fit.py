"""Fit one event: amortized posterior → importance sampling with the exact likelihood → summary.

``fit(data, model="roman")`` is the notebook entry point (``mulens-sbi fit FILE...`` the script one):

1. **Validate** the data (:func:`as_event`): an :class:`~mulens_sbi.event.Event`, a
   :class:`~mulens_sbi.event.Dataset`, files, folders or manifests (one dataset per file, read by
   :func:`mulens_sbi.readers.read_event`, formats auto-detected), or arrays ``(t, flux, sigma)``.
   NaN/inf, errors ≤ 0 and too few points are errors naming the dataset, column and row — never
   dropped silently.
2. **Amortized samples** from the model (``model.sample(event, n, key) → (samples, log_q)``,
   physical units, ``log q`` a density in the physical parameters). The shipped models read one
   dataset; with several, the flow sees the *proposal dataset* (default: the one with the most
   points) and the likelihood below sees all of them, so every dataset still informs the result.
   Points outside the model's view (``t_ref ± H``) are not seen by the flow (reported) but are used
   by the likelihood.
3. **Importance sampling** (``refine="is"``, default): for every sample the exact Gaussian
   likelihood with each dataset's (F_s, F_b) marginalised analytically
   (:func:`mulens_sbi.likelihood.evaluate`, ``kind="marginal"``), the prior (the model's training
   prior; t_0 uniform over the data span ± the model's view), and
   ``log w = log L + log π − log q`` (:func:`mulens_sbi.inference.importance.importance_weights`):
   weights, ESS, sample efficiency, log evidence and a verdict. Efficiency below 1% means the flow
   and the likelihood disagree: the result says so loudly (``status = "fail"``, a warning) and
   suggests ``refine="nuts"``.
4. ``refine="nuts"``: additionally numpyro NUTS on the same likelihood
   (:func:`mulens_sbi.inference.nuts.run_nuts`), chains started from weighted draws of step 3; the
   NUTS draws (equal weights) become the result, the importance diagnostics are kept.
   ``refine="none"``: the flow's samples as they are (equal weights, no likelihood check; fluxes from
   the likelihood's linear solve on the first 512 samples only).
5. **Summary** (:mod:`mulens_sbi.summary`): median and 68/95% intervals per parameter in physical
   units, modes, diagnostics, and per-dataset fluxes (weighted median and intervals of each sample's
   best-fit F_s, F_b; zero point 22) with source magnitude and blend fraction.

Each sample carries its own best-fit fluxes (the maximum over F_s, F_b at that θ, from the same
linear solve as the marginal likelihood), so light-curve draws need no further fitting.
"""

from __future__ import annotations

import inspect
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mulens_sbi.event import Dataset, Event
from mulens_sbi.fit_settings import FIT_SETTINGS_FILE, REFINE, FitSettings, fit_settings
from mulens_sbi.inference import exact as exact_stage
from mulens_sbi.inference.exact import ExactSettings
from mulens_sbi.inference.importance import (
    FAIL_EFFICIENCY,
    LensPrior,
    importance_weights,
    log_prior,
    parse_priors,
)
from mulens_sbi.inference.importance import MIN_ESS as IMPORTANCE_MIN_ESS
from mulens_sbi.inference.pareto import KHAT_GOOD, KHAT_MAX
from mulens_sbi.likelihood import evaluate, pack_event
from mulens_sbi.restrict import RESTRICT_ROUNDS, describe_restrict, no_sample_message, restrict_priors
from mulens_sbi.settings_file import dump_settings
from mulens_sbi.summary import (
    PLANET_Q,
    find_modes,
    planet_probability,
    summarize_parameters,
    to_jsonable,
    write_json,
)

__all__ = [
    "FIT_FILES",
    "REFINE",
    "FitResult",
    "FitSettings",
    "as_event",
    "evaluate_samples",
    "exact_posterior",
    "fit",
    "model_priors",
    "nuts_status",
    "save_fit",
]

#: files written by :func:`save_fit` / ``mulens-sbi fit``
FIT_FILES = ("samples.parquet", "summary.json", "report.md", "lightcurve.png", "corner.png", "caustics.png",
             "degeneracy.png", FIT_SETTINGS_FILE)
CONVENTIONS = (
    "MulensModel v3: t_0 in HJD' = HJD - 2450000 (days), u_0 and s in theta_E (u_0 signed), t_E in days, "
    "q = companion/primary, alpha in degrees; fluxes on zero point 22, F = F_s*A + F_b per dataset"
)
INTERVAL_NOTE = "central 68% = [0.16, 0.84] and 95% = [0.025, 0.975] weighted quantiles (inverted CDF)"
_PARAM_ORDER = ("t_0", "u_0", "t_E", "s", "q", "alpha", "rho", "limb_darkening")
_NONE_FLUX_SAMPLES = 512
#: an importance-sampling result with fewer effective samples than this is a failure, whatever its
#: efficiency (intervals from a handful of samples are not a posterior)
MIN_ESS = 30.0
_PAD = 1024


# ----------------------------------------------------------------------------------------------
# input


def as_event(data, *, kind: str | None = None, time_format: str = "auto", name: str | None = None) -> Event:
    """Turn ``data`` into a validated :class:`Event` (see the module docstring for what is accepted).

    ``kind``/``time_format`` are passed to :func:`mulens_sbi.readers.read_event` for files.
    Arrays: a tuple ``(t, flux, sigma)`` (HJD', fluxes on zero point 22) or a mapping with keys
    ``t, flux, sigma`` or ``t, mag, mag_err``.
    """
    if isinstance(data, Event):
        return data
    if isinstance(data, Dataset):
        return Event(datasets=(data,), name=name or data.name)
    if isinstance(data, str | os.PathLike):
        data = [data]
    if isinstance(data, Sequence) and data and all(isinstance(d, str | os.PathLike) for d in data):
        from mulens_sbi.readers import read_event

        return read_event(list(data), kind=kind, time_format=time_format, name=name)
    if isinstance(data, Sequence) and data and all(isinstance(d, Dataset) for d in data):
        return Event(datasets=tuple(data), name=name or "event")
    if isinstance(data, Mapping):
        if {"t", "flux", "sigma"} <= set(data):
            return Event.single(data["t"], data["flux"], data["sigma"], name=name or "event")
        if {"t", "mag", "mag_err"} <= set(data):
            ds = Dataset.from_magnitudes("data", data["t"], data["mag"], data["mag_err"])
            return Event(datasets=(ds,), name=name or "event")
        raise ValueError(f"data mapping needs keys t, flux, sigma or t, mag, mag_err; got {sorted(data)}")
    if isinstance(data, tuple) and len(data) == 3:
        return Event.single(*data, name=name or "event")
    raise ValueError(
        f"cannot fit data of type {type(data).__name__}: give an Event, a Dataset, file path(s) or "
        "(t, flux, sigma) arrays"
    )


def _load_model(model):
    if isinstance(model, str | os.PathLike):
        from mulens_sbi.models import load_model

        return load_model(model)
    if not hasattr(model, "sample"):
        raise ValueError(f"model must be a name, a path or a loaded model, got {type(model).__name__}")
    return model


def _half_width(mdl) -> float:
    cfg = getattr(mdl, "preprocess_config", None)
    return float(getattr(cfg, "half_width_days", None) or getattr(mdl, "half_width_days", None) or 150.0)


def model_priors(mdl, event: Event) -> dict:
    """The lens-parameter prior used for importance sampling: the prior the model was trained with
    (``mdl.priors`` if the object has one, else the survey spec stored in the model's metadata, else
    the named survey spec), with a ``seasons`` prior on t_0 replaced by a uniform one over the data
    span widened by the model's view (``t_first − H … t_last + H``, H = ``half_width_days``, 150 d):
    inside a season the training prior on t_0 is uniform, and the flow cannot put t_0 outside that
    interval. Returns :func:`mulens_sbi.inference.importance.parse_priors` objects."""
    pri = getattr(mdl, "priors", None)
    if pri is not None:
        pri = dict(pri)
    else:
        from mulens_sbi.survey.spec import load_spec, parse_spec

        prov = (getattr(mdl, "metadata", None) or {}).get("provenance", {})
        if prov.get("spec_text"):
            spec = parse_spec(prov["spec_text"], file=f"<spec of model {getattr(mdl, 'survey_name', '?')}>")
        elif getattr(mdl, "survey_name", None):
            spec = load_spec(mdl.survey_name)
        else:
            raise ValueError("the model carries no prior (no .priors, no survey spec in its metadata)")
        pri = dict(spec.priors)
    t0 = pri.get("t_0")
    dist = t0.get("dist") if isinstance(t0, Mapping) else getattr(t0, "dist", None)
    if t0 is None or dist == "seasons":
        t_lo, t_hi = event.time_range()
        h = _half_width(mdl)
        pri["t_0"] = ("uniform", t_lo - h, t_hi + h)
    names = set(getattr(mdl, "names", None) or _PARAM_ORDER)
    pri = {k: v for k, v in pri.items() if k in names}
    parsed, _ = parse_priors(pri)
    return parsed


def _proposal_event(event: Event, proposal_dataset: str | None) -> Event:
    if proposal_dataset is None:
        ds = max(event.datasets, key=lambda d: d.n)
    else:
        matches = [d for d in event.datasets if d.name == proposal_dataset]
        if not matches:
            raise ValueError(f"proposal_dataset {proposal_dataset!r} is not one of {list(event.names)}")
        ds = matches[0]
    return Event(datasets=(ds,), name=event.name)


# ----------------------------------------------------------------------------------------------
# likelihood over many samples, with fluxes


def _pad_size(n: int) -> int:
    return int(math.ceil(n / _PAD) * _PAD)


def evaluate_samples(
    event: Event, samples: Mapping[str, np.ndarray], *, chunk_size: int = 256, progress: bool = False
) -> dict[str, np.ndarray]:
    """Marginal log-likelihood, χ², and per-dataset best-fit (F_s, F_b) for every sample.

    The event is padded to a multiple of 1024 points and the samples are processed in chunks of
    ``chunk_size`` (the last padded), so one compiled shape serves many events and sample counts.
    Returns ``log_likelihood`` (n,), ``chi2`` (n,), ``f_s``, ``f_b``, ``f_s_err`` (n, D), ``ok`` (n,).
    """
    from tqdm.auto import tqdm

    packed = pack_event(event, pad_to=_pad_size(event.n_points))
    names = [k for k in _PARAM_ORDER if k in samples]
    n = int(np.asarray(samples[names[0]]).shape[0])
    d = event.n_datasets
    out = {
        "log_likelihood": np.empty(n),
        "chi2": np.empty(n),
        "f_s": np.empty((n, d)),
        "f_b": np.empty((n, d)),
        "f_s_err": np.empty((n, d)),
        "ok": np.empty(n, bool),
    }
    chunk = max(1, min(int(chunk_size), n))
    full = {k: np.asarray(samples[k], dtype=float) for k in names}
    starts = range(0, n, chunk)
    for i0 in tqdm(starts, desc="likelihood", disable=not progress, total=len(starts)):
        i1 = min(i0 + chunk, n)
        take = np.minimum(np.arange(i0, i0 + chunk), n - 1)
        res = evaluate({k: jnp.asarray(v[take]) for k, v in full.items()}, packed)
        m = i1 - i0
        out["log_likelihood"][i0:i1] = np.asarray(res.marginal)[:m]
        out["chi2"][i0:i1] = np.asarray(res.chi2)[:m]
        out["f_s"][i0:i1] = np.asarray(res.f_s)[:m]
        out["f_b"][i0:i1] = np.asarray(res.f_b)[:m]
        out["f_s_err"][i0:i1] = np.asarray(res.f_s_err)[:m]
        out["ok"][i0:i1] = np.asarray(res.ok)[:m]
    return out


# ----------------------------------------------------------------------------------------------
# result


@dataclass
class FitResult:
    """Posterior of one event (see the module docstring).

    Attributes:
        event: the data that were fitted.
        samples: physical parameters (n,) each: t_0 (HJD'), u_0, t_E (days), s, q, alpha (degrees)[, rho].
        weights: normalized posterior weights (n,), sum 1 (equal for NUTS / ``refine="none"``).
        log_likelihood: (n,) flux-marginalised log-likelihood (NaN where not computed).
        f_s, f_b: (n, D) best-fit source and blend flux of each sample per dataset (zero point 22).
        dataset_names: the D dataset names, in the order of the flux columns.
        method: ``"none"``, ``"is"`` or ``"nuts"``.
        importance: diagnostics of the importance-sampling step (``None`` for ``refine="none"``):
            n, ess, efficiency, log_evidence, log_evidence_err, status, verdict, n_outside_prior,
            n_likelihood_failed.
        nuts: NUTS diagnostics (``refine="nuts"``): r_hat, n_eff, divergences, time_s, ...
        summary: the JSON-able summary (parameters, modes, fluxes, diagnostics, settings).
        status: ``"ok"``, ``"caution"``, ``"fail"`` or ``"unchecked"``; messages: warnings raised.
        log_prior, log_proposal: (n,) terms of the weights (NaN where not applicable).
    """

    event: Event
    samples: dict[str, np.ndarray]
    weights: np.ndarray
    log_likelihood: np.ndarray
    f_s: np.ndarray
    f_b: np.ndarray
    dataset_names: tuple[str, ...]
    method: str
    importance: dict | None
    nuts: dict | None
    summary: dict
    status: str
    messages: list[str] = field(default_factory=list)
    log_prior: np.ndarray | None = None
    log_proposal: np.ndarray | None = None
    timings: dict = field(default_factory=dict)
    #: :class:`mulens_sbi.degeneracy.DegeneracyReport` of the samples (modes vs the offset relation;
    #: no partner search unless ``fit(..., degeneracy="partner")``); None if not computed
    degeneracy: Any = None
    #: the settings the fit used (:class:`~mulens_sbi.fit_settings.FitSettings`); :func:`save_fit`
    #: writes them to ``fit_settings.toml``, which replays the fit
    settings: FitSettings | None = None

    @property
    def n(self) -> int:
        return int(self.weights.size)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(self.samples)

    def resample(self, n: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Equal-weight draws (with replacement, by weight); default n = round(ESS)."""
        ess = 1.0 / float(np.sum(self.weights**2))
        n = max(1, int(round(ess))) if n is None else int(n)
        idx = np.random.default_rng(seed).choice(self.n, size=n, replace=True, p=self.weights)
        return {k: v[idx] for k, v in self.samples.items()}

    def draw_indices(self, n: int, seed: int = 0) -> np.ndarray:
        """Indices of ``n`` distinct samples drawn by weight among those with fluxes (for plotting)."""
        pos = np.flatnonzero((self.weights > 0) & np.all(np.isfinite(self.f_s), axis=1))
        n = min(n, pos.size)
        p = self.weights[pos] / self.weights[pos].sum()
        return np.random.default_rng(seed).choice(pos, size=n, replace=False, p=p)

    def best_index(self) -> int:
        """Index of the sample with the highest log-likelihood + log-prior (finite weight)."""
        score = np.where(self.weights > 0, np.nan_to_num(self.log_likelihood, nan=-np.inf), -np.inf)
        if self.log_prior is not None:
            score = score + np.nan_to_num(self.log_prior, nan=0.0)
        if not np.any(np.isfinite(score)):
            return int(np.argmax(self.weights))
        return int(np.argmax(score))

    # --------------------------------------------------------------------------- plots
    def plot_lightcurve(
        self,
        n_draws: int = 40,
        seed: int = 0,
        zoom: tuple[float, float] | None = None,
        truth: Mapping | None = None,
    ):
        """Data of every dataset (aligned to the first dataset's flux scale), ``n_draws`` posterior
        model curves, the best sample's curve and residuals. Returns a matplotlib Figure."""
        from mulens_sbi.plots import plot_fit_lightcurve

        idx = self.draw_indices(n_draws, seed)
        best = self.best_index()
        return plot_fit_lightcurve(
            self.event,
            draws={k: v[idx] for k, v in self.samples.items()},
            draw_f_s=self.f_s[idx],
            draw_f_b=self.f_b[idx],
            best={k: float(v[best]) for k, v in self.samples.items()},
            best_f_s=self.f_s[best],
            best_f_b=self.f_b[best],
            zoom=zoom,
            truth=truth,
            title=f"{self.event.name}: {len(idx)} posterior draws ({self.method}, status {self.status})",
        )

    def plot_corner(self, truth: Mapping | None = None, parameters: Sequence[str] | None = None):
        """Corner plot of the weighted samples (log10 for t_E, s, q, rho). Returns a Figure."""
        from mulens_sbi.plots import plot_corner

        return plot_corner(
            self.samples,
            self.weights,
            truth=truth,
            parameters=parameters,
            title=f"{self.event.name} ({self.method})",
        )

    def plot_caustics(self, n_draws: int = 6, seed: int = 0):
        """Caustics and source trajectories of the best sample and ``n_draws`` posterior draws."""
        from mulens_sbi.plots import plot_caustic_draws

        idx = self.draw_indices(n_draws, seed)
        best = self.best_index()
        order = [best] + [int(i) for i in idx if i != best]
        draws = [{k: float(v[i]) for k, v in self.samples.items()} for i in order]
        return plot_caustic_draws(draws, self.event.time_range(), title=f"{self.event.name}: caustics")

    # --------------------------------------------------------------------------- output
    def to_table(self):
        """A pyarrow Table: parameters, ``weight``, ``log_likelihood``, ``log_prior``,
        ``log_proposal``, and ``f_s[<dataset>]``, ``f_b[<dataset>]`` per dataset."""
        import pyarrow as pa

        cols = {k: pa.array(np.asarray(v, dtype=float)) for k, v in self.samples.items()}
        cols["weight"] = pa.array(self.weights)
        cols["log_likelihood"] = pa.array(self.log_likelihood)
        nan = np.full(self.n, np.nan)
        cols["log_prior"] = pa.array(self.log_prior if self.log_prior is not None else nan)
        cols["log_proposal"] = pa.array(self.log_proposal if self.log_proposal is not None else nan)
        for j, name in enumerate(self.dataset_names):
            cols[f"f_s[{name}]"] = pa.array(self.f_s[:, j])
            cols[f"f_b[{name}]"] = pa.array(self.f_b[:, j])
        return pa.table(cols)

    def save(
        self,
        out: str | os.PathLike,
        *,
        overwrite: bool = False,
        figures: bool = True,
        truth: Mapping | None = None,
    ) -> list[Path]:
        """Write :data:`FIT_FILES` into ``out`` (see :func:`save_fit`)."""
        return save_fit(self, out, overwrite=overwrite, figures=figures, truth=truth)

    def __repr__(self) -> str:
        lines = [
            f"FitResult(event={self.event.name!r}, datasets={list(self.dataset_names)}, "
            f"n={self.n}, method={self.method!r}, status={self.status!r})"
        ]
        imp = self.importance
        if imp is not None:
            lines.append(
                f"  importance sampling: ESS {imp['ess']:.0f} of {imp['n']} "
                f"(efficiency {100 * imp['efficiency']:.2f}%), log Z = {imp['log_evidence']:.2f}"
                f" ± {imp['log_evidence_err']:.2f}"
            )
        if self.nuts is not None:
            rh = max(self.nuts["r_hat"].values()) if self.nuts.get("r_hat") else float("nan")
            lines.append(
                f"  NUTS: {self.nuts['n_samples']} draws, max R-hat {rh:.3f}, "
                f"{self.nuts['divergences']} divergences, {self.nuts['time_s']:.1f} s"
            )
        lines.append(f"  {'parameter':<8} {'median':>12}   {'68% interval':<27} {'95% interval':<27}")
        for k, s in self.summary["parameters"].items():
            lo1, hi1 = s["interval_68"]
            lo2, hi2 = s["interval_95"]
            lines.append(
                f"  {k:<8} {s['median']:>12.6g}   [{lo1:.6g}, {hi1:.6g}]".ljust(52)
                + f" [{lo2:.6g}, {hi2:.6g}]"
            )
        modes = self.summary.get("modes", {})
        if modes.get("n_modes", 1) > 1:
            parts = [
                f"s={m['parameters']['s']['median']:.4g}, q={m['parameters']['q']['median']:.3g} "
                f"({100 * m['weight']:.0f}%)"
                for m in modes["modes"]
                if "s" in m["parameters"]
            ]
            lines.append(f"  {modes['n_modes']} modes: " + "; ".join(parts))
        for name, fl in self.summary["fluxes"].items():
            lines.append(
                f"  fluxes [{name}]: F_s = {fl['f_s']['median']:.4g}, F_b = {fl['f_b']['median']:.4g}"
                f" (source mag {fl['source_mag']['median']:.3f}, zero point 22)"
            )
        if self.degeneracy is not None:
            lines.append(f"  degeneracy: {self.degeneracy.verdict}")
        for m in self.messages:
            lines.append(f"  ! {m}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return report_markdown(self)


# ----------------------------------------------------------------------------------------------
# the fit


def fit(
    data,
    model: Any = "roman",
    *,
    settings: FitSettings | None = None,
    n: int | None = None,
    refine: str | None = None,
    seed: int | None = None,
    proposal_dataset: str | None = None,
    chunk_size: int | None = None,
    nuts_warmup: int | None = None,
    nuts_samples: int | None = None,
    nuts_chains: int | None = None,
    progress: bool | None = None,
    kind: str | None = None,
    time_format: str | None = None,
    name: str | None = None,
    degeneracy: str | None = None,
    restrict: Mapping[str, tuple[float | None, float | None]] | None = None,
    exact: ExactSettings | None = None,
) -> FitResult:
    """Posterior of one event (see the module docstring for the steps).

    How the event is fitted is a :class:`~mulens_sbi.fit_settings.FitSettings` (``settings``,
    default ``FitSettings()``); each keyword below that is given (not None) overrides its field, so
    ``fit(data, n=4096)`` and ``fit(data, settings=FitSettings(n=4096))`` are the same fit. The
    settings used are in ``result.settings`` and ``summary["settings"]``, and :func:`save_fit` writes
    them to ``fit_settings.toml``, which replays the fit.

    Args:
        data: Event, Dataset, file path(s) or arrays (:func:`as_event`).
        model: a model name (``"roman"``), a model folder, or a loaded model object with
            ``sample(event, n, key) -> (samples, log_q)`` and priors (``.priors`` or ``.spec``).
        settings: the fit's settings (default ``FitSettings()``).
        n: number of amortized samples (proposal draws; default 10000).
        refine: ``"auto"`` (default: importance sampling of the flow; where that fails, the exact
            stage), ``"exact"`` (the exact stage always: global search, local fits, modes,
            importance sampling of the modes' mixture, :mod:`mulens_sbi.inference.exact`),
            ``"is"`` (importance sampling of the flow only), ``"nuts"`` (IS then NUTS) or ``"none"``.
        seed: seed of everything random (flow draws, NUTS, plot draws; default 0).
        proposal_dataset: the dataset the flow sees (default: the one with the most points).
        chunk_size: parameter sets per likelihood call (default 256).
        nuts_warmup, nuts_samples, nuts_chains: NUTS settings (per chain; default 300, 300, 2).
        progress: progress bars (default True).
        kind, time_format, name: passed to the file reader.
        degeneracy: ``"modes"`` (default): the degeneracy analysis of the samples
            (:func:`mulens_sbi.degeneracy.analyze`: modes tested against the offset relation);
            ``"partner"``: also the partner search with the exact likelihood (tens of seconds);
            ``"off"``: none. Stored as ``result.degeneracy`` and ``summary["degeneracy"]``.
        restrict: the posterior under the model's prior restricted to sub-ranges,
            ``{name: (low, high)}`` in physical units with ``None`` for the prior's own bound, e.g.
            ``{"q": (None, 0.01)}`` for "if the companion is a planet" (:mod:`mulens_sbi.restrict`).
            The flow is truncated by rejection, importance sampling and NUTS use the restricted
            prior, and ``summary["restrict"]`` reports the flow's probability of the restricted range.
        exact: settings of the exact stage (:class:`mulens_sbi.inference.exact.ExactSettings`).

    Returns:
        :class:`FitResult`.

    Raises:
        ValueError: a setting out of its range (the message names the field and the range), or data
            that cannot be fitted.
    """
    settings = fit_settings(
        settings, n=n, refine=refine, seed=seed, proposal_dataset=proposal_dataset, chunk_size=chunk_size,
        nuts_warmup=nuts_warmup, nuts_samples=nuts_samples, nuts_chains=nuts_chains, progress=progress,
        kind=kind, time_format=time_format, name=name, degeneracy=degeneracy, restrict=restrict, exact=exact,
    )
    st = settings
    n, refine, seed, proposal_dataset = int(st.n), st.refine, st.seed, st.proposal_dataset
    chunk_size, progress = st.chunk_size, st.progress
    kind, time_format, name = st.kind, st.time_format, st.name
    nuts_warmup, nuts_samples, nuts_chains = st.nuts_warmup, st.nuts_samples, st.nuts_chains
    degeneracy, exact, restrict = st.degeneracy, st.exact, st.restrict_ranges
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    event = as_event(data, kind=kind, time_format=time_format, name=name)
    t_lo, t_hi = event.time_range()
    if t_hi > 2_400_000.0:
        raise ValueError(
            f"event {event.name!r}: times up to {t_hi:.2f} look like full JD/HJD; fit expects HJD' = "
            "HJD - 2450000 (the file reader converts automatically; subtract 2450000 from arrays)"
        )
    mdl = _load_model(model)
    if isinstance(model, str | os.PathLike):
        model_label = str(model)
    else:
        model_label = str(
            getattr(mdl, "name", None) or getattr(mdl, "path", None) or getattr(mdl, "survey_name", None)
            or type(mdl).__name__
        )
    messages: list[str] = []

    # ---- amortized samples
    t0 = time.perf_counter()
    ev1 = _proposal_event(event, proposal_dataset)
    key = jax.random.PRNGKey(seed)
    restrict = dict(restrict or {})
    if restrict:
        if "restrict" not in inspect.signature(mdl.sample).parameters:
            raise ValueError(f"restrict: model {model_label!r} cannot sample a restricted prior "
                             "(its sample() takes no restrict argument)")
        with warnings.catch_warnings():  # unfilled samples are reported below, with the flow's mass
            warnings.simplefilter("ignore", RuntimeWarning)
            raw, log_q, info = mdl.sample(ev1, n, key, return_info=True, restrict=restrict,
                                          max_rounds=RESTRICT_ROUNDS)
    elif "return_info" in inspect.signature(mdl.sample).parameters:
        raw, log_q, info = mdl.sample(ev1, n, key, return_info=True)
    else:  # a minimal model object
        (raw, log_q), info = mdl.sample(ev1, n, key), {}
    raw = {k: np.asarray(v, dtype=float).reshape(-1) for k, v in raw.items()}
    log_q = np.asarray(log_q, dtype=float).reshape(-1)
    timings["flow_s"] = time.perf_counter() - t0
    names = [k for k in _PARAM_ORDER if k in raw]
    good = np.isfinite(log_q)
    for k in names:
        good &= np.isfinite(raw[k])
    n_missing = int((~good).sum())
    restriction = None
    if restrict:
        mass = float(np.asarray(info.get("mass_within", np.nan)).reshape(-1)[0])
        restriction = {"ranges": {k: list(v) for k, v in restrict.items()},
                       "text": describe_restrict(restrict),
                       "flow_mass": mass,
                       "note": "the posterior under the model's prior restricted to these ranges; flow_mass "
                               "is the flow's posterior probability of them (unrestricted prior)"}
        messages.append(f"prior restricted to {restriction['text']}: the flow gives this range "
                        f"{100 * mass:.3g}% of its posterior mass")
        if n_missing == n:
            raise ValueError(f"restrict: {no_sample_message(restrict, n)}")
        if n_missing:
            messages.append(f"{n_missing} of {n} samples could not be drawn inside the restricted range; "
                            "the posterior rests on the others")
    elif n_missing:
        messages.append(
            f"{n_missing} of {n} flow samples are missing (prior leakage: the flow puts mass outside the "
            "prior; the data may be outside the training distribution)"
        )
        if n_missing == n:
            raise ValueError(
                "the model returned no usable sample (all outside the prior); the light curve "
                "is probably unlike anything the model was trained on"
            )
    samples = {k: raw[k][good] for k in names}
    log_q = log_q[good]
    m = log_q.size
    p_planet_flow = planet_probability(samples["q"]) if "q" in samples else None
    view = info.get("preprocess") or {}
    if view.get("n_outside"):
        messages.append(
            f"{view['n_outside']} point(s) of dataset {ev1.datasets[0].name!r} lie more than "
            f"{_half_width(mdl):g} d from the peak estimate t_ref = {info.get('t_ref', float('nan')):.3f}, "
            "outside the model's view: the flow did not see them (the likelihood uses them)"
        )
    if event.n_datasets > 1:
        messages.append(
            f"the flow saw dataset {ev1.datasets[0].name!r}; the likelihood uses all "
            f"{event.n_datasets} datasets"
        )

    # ---- likelihood, prior, weights
    priors = model_priors(mdl, event)
    if restrict:
        priors = restrict_priors(priors, restrict)
    lp = np.asarray(log_prior(priors, {k: samples[k] for k in priors if priors[k].dist != "fixed"}))
    importance = None
    nuts_diag = None
    if refine == "none":
        k_eval = min(m, _NONE_FLUX_SAMPLES)
        t0 = time.perf_counter()
        ev = evaluate_samples(event, {k: v[:k_eval] for k, v in samples.items()}, chunk_size=chunk_size)
        timings["likelihood_s"] = time.perf_counter() - t0
        ll = np.full(m, np.nan)
        ll[:k_eval] = ev["log_likelihood"]
        f_s = np.full((m, event.n_datasets), np.nan)
        f_b = np.full((m, event.n_datasets), np.nan)
        f_s[:k_eval], f_b[:k_eval] = ev["f_s"], ev["f_b"]
        weights = np.full(m, 1.0 / m)
        status = "unchecked"
        messages.append("refine='none': amortized samples only, not checked against the likelihood")
        flux_w = np.where(np.arange(m) < k_eval, 1.0, 0.0)
    else:
        t0 = time.perf_counter()
        ev = evaluate_samples(event, samples, chunk_size=chunk_size, progress=progress)
        timings["likelihood_s"] = time.perf_counter() - t0
        ll, f_s, f_b = ev["log_likelihood"], ev["f_s"], ev["f_b"]
        # the proposal is the flow truncated to the prior (and to a restriction): the fraction of
        # draws the sampler kept is the mass of the untruncated density log_q it samples
        acceptance = float(np.asarray(info.get("acceptance", 1.0), dtype=float).reshape(-1)[0])
        imp = importance_weights(ll, lp, log_q, proposal_mass=acceptance)
        importance = {
            "n": imp.n,
            "n_requested": n,
            "ess": imp.ess,
            "efficiency": imp.efficiency,
            "log_evidence": imp.log_evidence,
            "proposal_acceptance": acceptance,
            "log_evidence_err": imp.log_evidence_err,
            "status": imp.status,
            "verdict": imp.verdict,
            "n_outside_prior": imp.n_outside_prior,
            "n_likelihood_failed": imp.n_likelihood_failed,
            "fail_efficiency": FAIL_EFFICIENCY,
        }
        status = imp.status
        if imp.ess <= 0 and refine not in ("nuts", "auto", "exact"):
            raise ValueError(f"importance sampling failed: {imp.verdict}")
        weights = imp.weights if imp.ess > 0 else np.full(m, 1.0 / m)
        flux_w = weights
        if (status == "fail" or imp.ess < MIN_ESS) and refine in ("auto", "exact"):
            status = "fail"
            messages.append(f"flow importance sampling: ESS {imp.ess:.1f} of {imp.n} "
                            f"({100 * imp.efficiency:.2g}%), too few to rely on")
        elif status == "fail" or imp.ess < MIN_ESS:
            status = "fail"
            msg = (
                f"LOW SAMPLE EFFICIENCY {100 * imp.efficiency:.2g}% (ESS {imp.ess:.1f} of {imp.n}; "
                f"fail below {100 * FAIL_EFFICIENCY:g}% or ESS {MIN_ESS:g}): the flow and the likelihood "
                "disagree; the importance-weighted posterior rests on too few samples. Use "
                "refine='nuts' (--refine nuts) or treat the result with great caution."
            )
            messages.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        elif status == "caution":
            messages.append(imp.verdict)

    exact_info = None
    method = "is" if refine == "auto" else refine
    if refine == "exact" or (refine == "auto" and status == "fail"):
        method = "exact"
        if refine == "auto":
            messages.append("importance sampling of the flow failed: the exact stage (global search, local "
                            "fits, importance sampling around every mode) gives the posterior below")
        t0 = time.perf_counter()
        flow_lp = (lambda th: mdl.log_prob(th, ev1)) if hasattr(mdl, "log_prob") and not restrict else None
        out = exact_posterior(event, priors, samples, ll, n, seed, exact, progress, chunk_size, messages,
                              flow_log_prob=flow_lp, flow_acceptance=acceptance if refine != "none" else 1.0)
        timings["exact_s"] = time.perf_counter() - t0
        if out is not None:
            samples, lp, log_q = out["samples"], out["log_prior"], out["log_proposal"]
            weights = out["weights"]
            ev = out["evaluation"]
            ll, f_s, f_b = ev["log_likelihood"], ev["f_s"], ev["f_b"]
            importance, status, exact_info = out["importance"], out["status"], out["info"]
            priors = out["priors"]
            names = [k for k in _PARAM_ORDER if k in samples]
            m = log_q.size
            flux_w = weights

    if refine == "nuts":
        from mulens_sbi.inference.nuts import run_nuts

        chains = int(nuts_chains)
        idx = np.random.default_rng(seed).choice(m, size=chains, replace=True, p=weights)
        init = {k: samples[k][idx] for k in names if priors.get(k) is not None and priors[k].dist != "fixed"}
        if chains == 1:
            init = {k: float(v[0]) for k, v in init.items()}
        t0 = time.perf_counter()
        prior_spec = {
            k: ((p.dist, p.low, p.high) if p.dist != "fixed" else ("fixed", p.value))
            for k, p in priors.items()
        }
        nuts_samples_, diag = run_nuts(
            event,
            init,
            prior_spec,
            num_warmup=nuts_warmup,
            num_samples=nuts_samples,
            seed=seed,
            chains=chains,
            pad_to=_pad_size(event.n_points),
            progress=progress,
        )
        timings["nuts_s"] = time.perf_counter() - t0
        samples = {k: np.asarray(nuts_samples_[k], dtype=float) for k in names}
        m = samples[names[0]].size
        ev = evaluate_samples(event, samples, chunk_size=chunk_size)
        ll, f_s, f_b = ev["log_likelihood"], ev["f_s"], ev["f_b"]
        lp = np.asarray(log_prior(priors, {k: samples[k] for k in priors if priors[k].dist != "fixed"}))
        log_q = np.full(m, np.nan)
        weights = np.full(m, 1.0 / m)
        flux_w = weights
        nuts_diag = {
            k: diag[k]
            for k in ("r_hat", "n_eff", "divergences", "accept_prob", "num_steps_mean", "time_s", "chains")
        }
        nuts_diag["n_samples"] = m
        nuts_diag["num_warmup"] = nuts_warmup
        rh_all = np.asarray(list(diag["r_hat"].values()), dtype=float)
        rh = float("nan")
        if chains > 1:
            rh = float(np.max(rh_all)) if np.all(np.isfinite(rh_all)) else math.inf
        if chains > 1 and rh > 1.05:
            messages.append(
                f"NUTS chains disagree (max R-hat {rh:.3f} > 1.05): run longer or check the modes"
            )
        if diag["divergences"]:
            messages.append(f"NUTS had {diag['divergences']} divergent transitions")
        n_eff_all = np.asarray(list(diag["n_eff"].values()), dtype=float)
        n_eff_min = float(np.min(n_eff_all)) if np.all(np.isfinite(n_eff_all)) else float("nan")
        status = nuts_status(rh, chains, diag["divergences"], m, n_eff_min)
        if status == "fail":
            msg = ("NUTS FAILED (R-hat, divergences or effective sample size; see the notes above): the "
                   "chains did not explore the posterior from where they started, typically a local "
                   "optimum of a caustic-crossing likelihood far from the global one. Do not use these "
                   "draws as a posterior.")
            messages.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)

    timings["total_s"] = time.perf_counter() - t_start
    summary = _build_summary(
        event,
        samples,
        weights,
        ll,
        lp,
        f_s,
        f_b,
        flux_w,
        method,
        importance,
        nuts_diag,
        status,
        messages,
        model_label,
        seed,
        n,
        timings,
        p_planet_flow,
    )
    summary["restrict"] = to_jsonable(restriction)
    summary["exact"] = to_jsonable(exact_info)
    summary["settings"] = to_jsonable(settings.to_dict())
    deg_report = None
    if degeneracy != "off":
        deg_report = _degeneracy(event, samples, weights, ll, degeneracy == "partner", seed, messages)
        summary["degeneracy"] = deg_report.to_dict() if deg_report is not None else None
        summary["messages"] = list(messages)
    return FitResult(
        event=event,
        samples=samples,
        weights=weights,
        log_likelihood=ll,
        f_s=f_s,
        f_b=f_b,
        dataset_names=event.names,
        method=method,
        importance=importance,
        nuts=nuts_diag,
        summary=summary,
        status=status,
        messages=messages,
        log_prior=lp,
        log_proposal=log_q,
        timings=timings,
        degeneracy=deg_report,
        settings=settings,
    )


def exact_posterior(event, priors, flow_samples, flow_ll, n, seed, settings=None, progress=False,
                    chunk_size=256, messages=None, flow_log_prob=None, flow_acceptance=1.0):
    """The exact stage (:mod:`mulens_sbi.inference.exact`), the public step shared by :func:`fit` and
    the catalog: modes (the flow's draws ``flow_samples`` with their log-likelihoods ``flow_ll`` are
    extra starts), their mixture proposal, ``n`` draws (seeded by ``seed``) importance-sampled with the
    exact likelihood and ``priors``.

    Returns a dict with ``samples`` (physical), ``evaluation`` (:func:`evaluate_samples`'s output),
    ``log_prior``, ``log_proposal``, ``weights`` (normalized), ``importance`` (ESS, efficiency,
    evidence, verdict), ``status``, ``info`` (the modes and how they were found) and ``priors``
    (with rho's when the data asked for a finite source), or ``None`` when no mode was found;
    notes go to ``messages``.

    With ``flow_log_prob`` (the flow's physical log density of a dict of parameters, e.g.
    ``lambda th: model.log_prob(th, event)``) and point-source modes, a share
    ``settings.flow_share`` of the proposal is the flow itself (truncated to the prior, of which it
    keeps ``flow_acceptance``; its draws are the first of ``flow_samples``, which must be iid draws of
    it): weakly constrained posteriors, which the modes' Student-t laws describe badly, are then
    still sampled (DINGO's defensive mixture)."""
    st = settings or ExactSettings()
    messages = [] if messages is None else messages
    binary = all(k in flow_samples for k in ("s", "q", "alpha"))
    if not binary:
        messages.append("the exact stage needs a binary-lens model; not run")
        return None
    search = exact_stage.find_modes(event, priors=priors, flow_samples=flow_samples,
                                    flow_chi2=-2.0 * np.asarray(flow_ll), settings=st, progress=progress)
    if not search.modes:
        messages.append("EXACT STAGE FAILED: no mode found (" + "; ".join(search.notes) + ")")
        return None
    priors = dict(priors)
    if any(m.finite for m in search.modes) and "rho" not in priors:
        priors["rho"] = LensPrior("rho", "log_uniform", float(st.rho_prior[0]), float(st.rho_prior[1]))
        messages.append(f"the data ask for a finite source: rho gets a log-uniform prior on "
                        f"[{st.rho_prior[0]:g}, {st.rho_prior[1]:g}] (the model's prior has none)")
    # modes outside the prior's support (e.g. a restricted range) cannot carry posterior mass
    inside = []
    for md in search.modes:
        pr = {k: np.array([md.params.get(k, st.rho_prior[0])]) for k in priors if priors[k].dist != "fixed"}
        inside.append(bool(np.isfinite(np.asarray(log_prior(priors, pr))[0])))
    if not any(inside):
        messages.append("EXACT STAGE: every mode found lies outside the prior's support (or the restricted "
                        "range); no posterior inside it")
        return None
    if not all(inside):
        messages.append(f"exact stage: {len(inside) - sum(inside)} mode(s) outside the prior's support "
                        "left out")
        search.modes = [md for md, ok in zip(search.modes, inside, strict=True) if ok]
    box = {k: (priors[k].low, priors[k].high) if k in priors and priors[k].dist == "log_uniform" else d
           for k, d in (("s", (0.2, 5.0)), ("q", (1e-5, 1.0)))}
    prop = modes_prop = exact_stage.exact_proposal(search, st, s_range=box["s"], q_range=box["q"])
    if any(md.finite for md in search.modes) and n > st.finite_draws:
        messages.append(f"exact stage: {st.finite_draws} draws instead of {n} (finite-source likelihood, "
                        "~50 ms a draw on 2 cores)")
        n = st.finite_draws
    use_flow = (flow_log_prob is not None and st.flow_share > 0 and "rho" not in prop.names
                and all(k in flow_samples for k in prop.names))
    n_flow_all = len(flow_samples["t_0"]) if use_flow else 0

    def draw_round(prop, n_round, key, flow_from):
        """``n_round`` draws of ``prop`` (with the flow's share), their prior, proposal density and
        likelihood; draws outside the prior's support are dropped and counted in ``keep``."""
        rng = np.random.default_rng(key)
        n_flow = int(rng.binomial(n_round, st.flow_share)) if use_flow else 0
        if flow_from + n_flow > n_flow_all:
            return None  # the flow's draws are used up
        draws = prop.sample(n_round - n_flow, seed=int(rng.integers(2**31)))
        if n_flow:
            take = slice(flow_from, flow_from + n_flow)
            draws = {k: np.concatenate([v, np.asarray(flow_samples[k], dtype=float)[take]])
                     for k, v in draws.items()}
        lp = np.asarray(log_prior(priors, {k: draws.get(k, np.full(n_round, st.rho_prior[0])) for k in priors
                                           if priors[k].dist != "fixed"}))
        keep = np.isfinite(lp)  # draws outside the support have zero weight: drop them, count them
        draws = {k: v[keep] for k, v in draws.items()}
        lp = lp[keep]
        log_q = prop.log_prob(draws)
        if use_flow:
            lf = np.asarray(flow_log_prob(draws), dtype=float) - math.log(max(flow_acceptance, 1e-300))
            lf = np.where(np.isfinite(lf), lf, -np.inf)
            log_q = np.logaddexp(math.log1p(-st.flow_share) + log_q, math.log(st.flow_share) + lf)
        ev = evaluate_samples(event, draws, chunk_size=chunk_size, progress=progress)
        return {"draws": draws, "lp": lp, "log_q": log_q, "ev": ev, "keep": keep, "n_flow": n_flow}

    def weigh(r):
        return importance_weights(r["ev"]["log_likelihood"], r["lp"], r["log_q"],
                                  proposal_mass=float(r["keep"].mean()))

    rounds = 0
    best = None
    while True:
        r = draw_round(prop, n, [seed, rounds], 0)
        imp = weigh(r)
        if best is None or imp.ess > best[1].ess:
            best = (r, imp, prop)
        # finite-source laws come from ensemble chains, which weighted moments of a few tens of
        # effective draws only spoil (OGLE-2003-BLG-235: efficiency 1.4% → 0.2% after one round):
        # their draws go to the final mixture instead
        if (imp.efficiency >= 0.1 or rounds >= st.adapt_rounds or not imp.ess > 0
                or any(md.finite for md in search.modes)):
            # an adapted mixture can do worse than the one before it: the round with the most
            # effective samples is the result
            break
        messages.append(f"exact stage: importance efficiency {100 * imp.efficiency:.2g}% "
                        f"(ESS {imp.ess:.1f}); the mixture adapted to the weighted draws (population Monte "
                        "Carlo) and redrawn")
        prop = prop.adapt(r["draws"], imp.weights)
        rounds += 1
    r, imp, prop = best
    # more draws of the same proposal until the effective sample size reaches the target: a
    # posterior wider or more curved than the modes' laws is still sampled, at a cost ∝ 1/efficiency
    n_max = st.finite_max_draws if "rho" in prop.names else st.max_draws
    extra = 0
    while 0 < imp.ess < st.target_ess and len(r["keep"]) + n <= n_max:
        more = draw_round(prop, n, [seed, 1000 + extra], r["n_flow"])
        if more is None:
            break
        extra += 1
        r = {"draws": {k: np.concatenate([r["draws"][k], more["draws"][k]]) for k in r["draws"]},
             "ev": {k: np.concatenate([r["ev"][k], more["ev"][k]]) for k in r["ev"]},
             "n_flow": r["n_flow"] + more["n_flow"],
             **{k: np.concatenate([r[k], more[k]]) for k in ("lp", "log_q", "keep")}}
        imp = weigh(r)
    if extra:
        messages.append(f"exact stage: {len(r['keep'])} draws of the final mixture ({extra} more "
                        f"batches) for ESS {imp.ess:.0f} (target {st.target_ess:g})")
    draws, lp, log_q, ev, keep = r["draws"], r["lp"], r["log_q"], r["ev"], r["keep"]
    n = len(keep)
    status, verdict = exact_status(imp.ess, imp.k_hat)
    importance = {
        "n": imp.n, "n_requested": n, "ess": imp.ess, "efficiency": imp.efficiency, "k_hat": imp.k_hat,
        "log_evidence": imp.log_evidence, "proposal_acceptance": float(keep.mean()),
        "log_evidence_err": imp.log_evidence_err,
        "status": status, "verdict": "; ".join([verdict] + imp.verdict.split("; ")[1:]),
        "n_outside_prior": imp.n_outside_prior,
        "n_likelihood_failed": imp.n_likelihood_failed, "fail_efficiency": FAIL_EFFICIENCY,
        "proposal": "exact-stage mixture of the modes",
    }
    weights = imp.weights if imp.ess > 0 else np.full(imp.n, 1.0 / imp.n)
    comp = modes_prop.component(draws)  # each draw's mode
    mode_w = [float(np.sum(weights[comp == k])) for k in range(len(search.modes))]
    # draws more likely from the broad law (an event without a clear anomaly) than from any mode's
    # carry the rest of the posterior
    info = search.to_dict()
    for md, w in zip(info["modes"], mode_w, strict=True):
        md["posterior_weight"] = w
    info["off_mode_weight"] = float(max(0.0, 1.0 - sum(mode_w)))
    info["chi2_dof_accept"] = st.accept_chi2_dof
    chi2_dof = search.chi2_dof()
    if not chi2_dof <= st.accept_chi2_dof:
        status = "fail"
        messages.append(f"EXACT STAGE: the best mode has chi2/dof {chi2_dof:.2f} > {st.accept_chi2_dof:g}: "
                        "no acceptable binary-lens solution was found (or the error bars are underestimated)")
    elif status == "fail":
        messages.append(f"EXACT STAGE: importance sampling around the modes: {verdict}")
    else:
        best = search.best
        messages.append(
            f"exact stage: {len(search.modes)} mode(s) within chi2 {st.keep_delta_chi2:g} of the best "
            f"(chi2 {best.chi2:.1f}, chi2/dof {chi2_dof:.3f}); importance sampling: {verdict}"
        )
    if status == "fail":
        warnings.warn(messages[-1], RuntimeWarning, stacklevel=3)
    return {"samples": draws, "evaluation": ev, "log_prior": lp, "log_proposal": log_q, "weights": weights,
            "importance": importance, "status": status, "info": info, "priors": priors}


def exact_status(ess: float, k_hat: float) -> tuple[str, str]:
    """Verdict on the exact stage's importance sampling from its effective sample size and the
    Pareto k̂ of its weights (:mod:`mulens_sbi.inference.pareto`; ``nan``: not estimable, e.g.
    equal weights). The number of draws grows until the ESS reaches its target, so the efficiency
    itself says nothing here; what matters is whether the weights can be trusted:

    * ``"ok"``: ESS ≥ 100 and k̂ ≤ 0.7 (the weights have a finite variance in practice);
    * ``"caution"``: ESS ≥ 30 and k̂ ≤ 1, not ok (usable but noisy, or a few draws dominate);
    * ``"fail"``: fewer than 30 effective samples, or k̂ > 1 (no finite mean: the proposal misses
      part of the posterior).
    """
    kh = "not estimable" if not math.isfinite(k_hat) else f"{k_hat:.2f}"
    heavy = math.isfinite(k_hat) and k_hat > KHAT_GOOD
    if not ess >= MIN_ESS or (math.isfinite(k_hat) and k_hat > KHAT_MAX) or k_hat == math.inf:
        return "fail", (f"fail: ESS {ess:.1f}, Pareto k-hat {kh}: the modes' laws do not describe the "
                        "posterior (too few effective draws or weights without a finite mean)")
    if ess < IMPORTANCE_MIN_ESS or heavy:
        return "caution", (f"caution: ESS {ess:.0f}, Pareto k-hat {kh}: usable but noisy"
                           + ("; a few draws dominate the weights" if heavy else ""))
    return "ok", f"ok: ESS {ess:.0f}, Pareto k-hat {kh}"


def nuts_status(r_hat_max: float, chains: int, divergences: int, n_samples: int, n_eff_min: float) -> str:
    """Verdict on a NUTS run: ``"fail"`` when the chains disagree badly (max split R-hat > 1.2, or not
    finite, with two or more chains), more than 10% of the draws diverged, or fewer than 20 effective
    samples (or a non-finite count: a stuck chain); ``"caution"`` for R-hat > 1.05, any divergence or
    fewer than 100 effective samples; else ``"ok"``. ``divergences`` and ``n_samples`` are totals
    over all chains (sampling phase); ``n_eff_min`` is the smallest effective sample size over the
    parameters (NaN if any is undefined)."""
    multi = chains > 1
    bad_rhat = multi and not (math.isfinite(r_hat_max) and r_hat_max <= 1.2)
    if bad_rhat or divergences > 0.1 * n_samples or not math.isfinite(n_eff_min) or n_eff_min < 20:
        return "fail"
    if (multi and r_hat_max > 1.05) or divergences > 0 or n_eff_min < 100:
        return "caution"
    return "ok"


def _degeneracy(event, samples, weights, ll, partner: bool, seed: int, messages: list[str]):
    """The degeneracy report of the fit's samples, or None (with a message) where it cannot be made
    (e.g. a single-lens fit has no s, q, alpha)."""
    from mulens_sbi.degeneracy import analyze

    if not all(k in samples for k in ("s", "q", "u_0", "alpha")):
        return None
    try:
        return analyze(samples, weights, event=event, log_likelihood=ll, partner=partner, seed=seed)
    except ValueError as exc:
        messages.append(f"degeneracy analysis not made: {exc}")
        return None


def _build_summary(
    event,
    samples,
    weights,
    ll,
    lp,
    f_s,
    f_b,
    flux_w,
    method,
    importance,
    nuts_diag,
    status,
    messages,
    model_label,
    seed,
    n,
    timings,
    p_planet_flow: float | None = None,
) -> dict:
    from mulens_sbi import __version__
    from mulens_sbi.summary import parameter_summary

    params = summarize_parameters(samples, weights)
    companion = None
    if "q" in samples:
        basis = {"none": "the flow's samples", "is": "the importance-weighted samples",
                 "exact": "the importance-weighted samples of the exact stage (mixture around the modes)",
                 "nuts": "the NUTS draws"}[method]
        companion = {
            "q_max": PLANET_Q,
            "p_planet": planet_probability(samples["q"], weights),
            "p_planet_flow": p_planet_flow,
            "basis": basis,
            "note": "P(q < q_max): the posterior fraction with a planetary mass ratio. The flow's value "
                    "is checked for reliability on held-out simulations (the model card's 'Planet "
                    "probability' table); the weighted value is exact only when the importance sampling "
                    "is ok, and NUTS explores the mode it starts in.",
        }
    ess = 1.0 / float(np.sum(weights**2))
    try:
        modes = find_modes(
            samples, weights, ess=ess, log_likelihood=np.where(np.isfinite(ll), ll, -np.inf), seed=seed
        )
    except ValueError as exc:
        modes = {"modes": [], "n_modes": 0, "method": f"not computed: {exc}"}
    fluxes = {}
    for j, name in enumerate(event.names):
        ok = (flux_w > 0) & np.isfinite(f_s[:, j]) & np.isfinite(f_b[:, j])
        if not ok.any():
            continue
        w = flux_w[ok]
        fs, fb = f_s[ok, j], f_b[ok, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            src_mag = np.where(fs > 0, 22.0 - 2.5 * np.log10(np.where(fs > 0, fs, 1.0)), np.nan)
            blend = fb / (fs + fb)
        fin = np.isfinite(src_mag)
        fluxes[name] = {
            "f_s": parameter_summary(fs, w),
            "f_b": parameter_summary(fb, w),
            "source_mag": parameter_summary(src_mag[fin], w[fin]) if fin.any() else None,
            "blend_fraction": parameter_summary(blend[np.isfinite(blend)], w[np.isfinite(blend)]),
            "n_points": int(event.datasets[j].n),
        }
    best = int(
        np.argmax(np.where(weights > 0, np.nan_to_num(ll, nan=-np.inf) + np.nan_to_num(lp, nan=0.0), -np.inf))
    )
    return to_jsonable(
        {
            "event": event.name,
            "datasets": list(event.names),
            "n_points": {d.name: d.n for d in event.datasets},
            "time_range": list(event.time_range()),
            "model": model_label,
            "method": method,
            "status": status,
            "messages": list(messages),
            "conventions": CONVENTIONS,
            "intervals": INTERVAL_NOTE,
            "parameters": params,
            "best_sample": {
                **{k: float(v[best]) for k, v in samples.items()},
                "log_likelihood": float(ll[best]) if np.isfinite(ll[best]) else None,
                "f_s": dict(zip(event.names, f_s[best].tolist(), strict=True)),
                "f_b": dict(zip(event.names, f_b[best].tolist(), strict=True)),
            },
            "modes": modes,
            "companion": companion,
            "fluxes": fluxes,
            "importance_sampling": importance,
            "nuts": None if nuts_diag is None else {k: v for k, v in nuts_diag.items()},
            "n_samples": int(weights.size),
            "ess": ess,
            "seed": seed,
            "n_requested": n,
            "timings_s": timings,
            "version": __version__,
        }
    )


# ----------------------------------------------------------------------------------------------
# writing


def check_output(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an output folder that already holds fit files unless ``overwrite`` (checked before a
    fit starts, so no time is wasted). Raises :class:`mulens_sbi.simulate.OutputExistsError`."""
    from mulens_sbi.simulate import OutputExistsError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    existing = [f for f in FIT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{out} already holds {', '.join(existing)}: choose another --out or pass --overwrite"
        )
    return out


def save_fit(
    result: FitResult,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    figures: bool = True,
    truth: Mapping | None = None,
) -> list[Path]:
    """Write samples (parquet), ``summary.json``, ``report.md``, the figures and the settings used
    (``fit_settings.toml``, when ``result.settings`` is set) into ``out`` (``truth``: known parameters
    of a simulated event, marked in the light-curve and corner plots).

    A folder holding any of :data:`FIT_FILES` is refused unless ``overwrite`` (then only those files
    are replaced; nothing else in the folder is touched).
    """
    import pyarrow.parquet as pq

    out = check_output(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    pq.write_table(result.to_table(), out / "samples.parquet", compression="zstd")
    written.append(out / "samples.parquet")
    written.append(write_json(result.summary, out / "summary.json", overwrite=True))
    if result.settings is not None:
        (out / FIT_SETTINGS_FILE).write_text(
            f"# the settings of this fit; replay: fit(data, model, settings=load_settings(this file, "
            f"FitSettings)) or `mulens-sbi fit FILE... --model {result.summary.get('model', 'MODEL')} "
            f"--settings this_file --out DIR`\n" + dump_settings(result.settings), encoding="utf-8")
        written.append(out / FIT_SETTINGS_FILE)
    if figures:
        for fname, fn in (
            ("lightcurve.png", lambda: result.plot_lightcurve(truth=truth)),
            ("corner.png", lambda: result.plot_corner(truth=truth)),
            ("caustics.png", result.plot_caustics),
            ("degeneracy.png", lambda: _degeneracy_figure(result)),
        ):
            fig = fn()
            fig.savefig(out / fname, dpi=110)
            written.append(out / fname)
    (out / "report.md").write_text(report_markdown(result, figures=figures))
    written.append(out / "report.md")
    return written


def _degeneracy_figure(result: FitResult):
    """The s_A–s_B plane of the degeneracy report (an explanatory blank figure if there is none)."""
    if result.degeneracy is not None:
        return result.degeneracy.plot_relation()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 2.0))
    fig.text(0.5, 0.5, "no degeneracy analysis (single-lens fit or degeneracy='off')", ha="center")
    return fig


def report_markdown(result: FitResult, figures: bool = True) -> str:
    """A short Markdown report: status, parameter table, modes, fluxes, diagnostics."""
    s = result.summary
    lines = [f"# Fit of {s['event']}", ""]
    lines.append(
        f"Model `{s['model']}`, method `{s['method']}`, status **{s['status']}**, "
        f"{s['n_samples']} samples (ESS {s['ess']:.0f}). {s['conventions']}."
    )
    lines.append("")
    for msg in s["messages"]:
        lines.append(f"> **Note:** {msg}")
        lines.append("")
    lines += ["| parameter | median | 68% interval | 95% interval |", "|---|---|---|---|"]
    for k, p in s["parameters"].items():
        lines.append(
            f"| {k} | {p['median']:.6g} | [{p['interval_68'][0]:.6g}, {p['interval_68'][1]:.6g}] | "
            f"[{p['interval_95'][0]:.6g}, {p['interval_95'][1]:.6g}] |"
        )
    lines.append("")
    comp = s.get("companion")
    if comp:
        flow = comp["p_planet_flow"]
        caveat = ""
        if s["method"] == "is" and s["status"] == "fail":
            caveat = (f" The importance sampling failed: the weighted value rests on ESS {s['ess']:.0f} "
                      "sample(s); the flow's value is the one checked for reliability (model card).")
        lines.append(
            f"Planet probability P(q < {comp['q_max']:g}): {comp['p_planet']:.3f} from {comp['basis']}"
            + (f" (flow alone: {flow:.3f})" if flow is not None and s["method"] != "none" else "") + "."
            + caveat
        )
        lines.append("")
    modes = s.get("modes") or {}
    if modes.get("modes"):
        lines += [
            f"Modes ({modes['method']}):",
            "",
            "| mode | weight | s | q | u_0 | alpha |",
            "|---|---|---|---|---|---|",
        ]
        for i, md in enumerate(modes["modes"]):
            p = md["parameters"]

            def med(k, p=p):
                return f"{p[k]['median']:.5g}" if k in p else "–"

            lines.append(
                f"| {i + 1} | {md['weight']:.3f} | {med('s')} | {med('q')} | {med('u_0')} | {med('alpha')} |"
            )
        lines.append("")
    lines += ["| dataset | points | F_s | F_b | source mag | blend fraction |", "|---|---|---|---|---|---|"]
    for name, fl in s["fluxes"].items():
        sm = fl["source_mag"]["median"] if fl["source_mag"] else float("nan")
        lines.append(
            f"| {name} | {fl['n_points']} | {fl['f_s']['median']:.5g} | {fl['f_b']['median']:.5g} | "
            f"{sm:.3f} | {fl['blend_fraction']['median']:.3f} |"
        )
    lines.append("")
    imp = s.get("importance_sampling")
    if imp:
        lines.append(
            f"Importance sampling: {imp['n']} proposal samples, ESS {imp['ess']:.1f}, sample efficiency "
            f"{100 * imp['efficiency']:.2f}%, log evidence {imp['log_evidence']:.3f} ± "
            f"{imp['log_evidence_err']:.3f} (flat flux priors; see mulens_sbi.likelihood). "
            f"Verdict: {imp['verdict']}"
        )
        lines.append("")
    ex = s.get("exact")
    if ex:
        lines += [
            f"## Exact stage: {len(ex['modes'])} mode(s)",
            "",
            f"Single lens with the anomaly masked ({ex['single_lens']['n_masked']} points): "
            + ", ".join(f"{k} {v:.5g}" for k, v in ex["single_lens"]["params"].items())
            + f"; {len(ex['anomalies'])} anomal{'y' if len(ex['anomalies']) == 1 else 'ies'}; "
            f"{ex['n_candidates']} candidates screened, {ex['n_local_fits']} local fits. Best chi2/dof "
            f"{ex['chi2_dof']:.3f} (acceptable up to {ex['chi2_dof_accept']:g}).",
            "",
            "| mode | chi2 | Δchi2 | posterior weight | s | q | u_0 | alpha | t_E | rho | found by |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for i, md in enumerate(ex["modes"]):
            p = md["params"]
            rho = f"{p['rho']:.3g}" if "rho" in p else "point source"
            pw = md.get("posterior_weight", float("nan"))
            lines.append(
                f"| {i} | {md['chi2']:.1f} | {md['delta_chi2']:.1f} | {pw:.3f} "
                f"| {p['s']:.5g} | {p['q']:.4g} | {p['u_0']:.5g} | {p['alpha']:.3f} | {p['t_E']:.4g} "
                f"| {rho} | "
                f"{md['origin']} ({md['n_starts']} starts) |"
            )
        if ex.get("off_mode_weight", 0.0) > 0.01:
            lines += ["", f"Posterior weight away from every mode (binaries that look like the single lens, "
                          f"over the (s, q, alpha) the data do not exclude): {ex['off_mode_weight']:.3f}."]
        lines += [""] + [f"- {n}" for n in ex["notes"]] + [""]
    nd = s.get("nuts")
    if nd:
        lines.append(
            f"NUTS: {nd['n_samples']} draws from {nd['chains']} chain(s), R-hat {nd['r_hat']}, "
            f"{nd['divergences']} divergences, {nd['time_s']:.1f} s."
        )
        lines.append("")
    deg = result.degeneracy
    if deg is not None:
        lines.append(f"Degeneracy (offset relation, Zhang, Gaudi & Bloom 2022): {deg.verdict}.")
        lines += [f"- {p.line()}" for p in deg.pairs]
        lines += [f"- partner search, {p.line()}" for p in deg.partners]
        if not deg.partners:
            lines.append("- partner search not run: `fit(..., degeneracy=\"partner\")` or "
                         "`mulens-sbi degeneracy samples.parquet --data FILE --out DIR`")
        lines.append("")
    t = s["timings_s"]
    lines.append("Timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in t.items()))
    if figures:
        lines += ["", "Figures: `lightcurve.png`, `corner.png`, `caustics.png`, `degeneracy.png`; samples: "
                  "`samples.parquet`."]
    return "\n".join(lines) + "\n"
