"""Trained amortized posteriors: the registry of shipped models and the object that wraps one.

``load_model(name_or_path)`` returns a :class:`Model`. A *name* (``"roman"``) resolves to the
repository's top-level ``trained/<name>/`` folder, found from the package's own location (like
``simulators/`` in :mod:`mulens_sbi.survey.spec`), then ``mulens_sbi/data/trained/<name>/``; anything
containing a path separator (or an existing folder) is a path. A model folder holds
``weights.msgpack`` + ``posterior.json`` written by :func:`mulens_sbi.npe.checkpoint.save_posterior`;
the sidecar's metadata carries the preprocessing settings and the survey.

Interface (stable; used by ``mulens_sbi.fit``):

* ``model.preprocess(event_or_arrays) -> Prepared`` (``.x`` (n_bins, 4) network input, ``.t_ref``,
  ``.info``); accepts a :class:`mulens_sbi.event.Event` with one dataset, or a dict/tuple of arrays
  ``(t, flux, sigma[, mask])``.
* ``model.sample(event, n, key) -> (samples, log_q)``: ``samples`` a dict of (n,) numpy arrays in
  physical units (``t_0`` HJD', ``u_0``, ``t_E`` days, ``s``, ``q``, ``alpha`` degrees in [0, 360)),
  ``log_q`` (n,) the flow's log density of each sample in those physical units (t_0 = t_ref + dt_0
  is a shift: Jacobian 1). Samples outside the prior bounds are rejected and redrawn (see
  :mod:`mulens_sbi.npe.posterior`); ``info`` with ``return_info=True``.
* ``restrict={"q": (None, 0.01)}`` (``sample``, ``sample_batched``): the posterior under the prior
  restricted to a sub-range of some parameters (not ``t_0``), by rejection; ``None`` keeps the
  prior's bound; ``info["mass_within"]`` is the flow's mass inside (see :mod:`mulens_sbi.restrict`).
* ``model.log_prob(samples, event) -> (m,)`` the same density at given physical parameters.
* attributes: ``posterior`` (npe Posterior over the network names ``dt_0, u_0, t_E, s, q,
  alpha``), ``space`` (its ParameterSpace), ``survey_name``, ``preprocess_config``, ``names``
  (physical names), ``metadata``, ``path``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mulens_sbi.npe.checkpoint import load_posterior
from mulens_sbi.npe.posterior import Posterior
from mulens_sbi.npe.transforms import ParameterSpace
from mulens_sbi.params import PHYSICAL_NAMES
from mulens_sbi.preprocess import Prepared, PreprocessConfig, preprocess, preprocess_event
from mulens_sbi.restrict import restriction_box

__all__ = ["Model", "load_model", "trained_dir", "available_models"]


def trained_dir() -> Path:
    """The folder of the shipped models (repository ``trained/``, or ``mulens_sbi/data/trained``)."""
    pkg = Path(__file__).resolve().parent
    for cand in (pkg.parent / "trained", pkg / "data" / "trained"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"no trained/ folder found next to the package ({pkg.parent / 'trained'}) or "
                            f"inside it ({pkg / 'data' / 'trained'}); pass a model folder path instead")


def available_models() -> list[str]:
    """Names of the shipped models (sub-folders of :func:`trained_dir` with a posterior.json)."""
    try:
        d = trained_dir()
    except FileNotFoundError:
        return []
    return sorted(p.name for p in d.iterdir() if (p / "posterior.json").is_file())


def _resolve(name_or_path: str | Path) -> Path:
    s = str(name_or_path)
    p = Path(s).expanduser()
    if "/" in s or "\\" in s or p.is_dir():
        if not (p / "posterior.json").is_file():
            raise FileNotFoundError(f"{p}: not a model folder (no posterior.json)")
        return p
    d = trained_dir() / s
    if not (d / "posterior.json").is_file():
        raise FileNotFoundError(f"unknown model {s!r}: no {d / 'posterior.json'}; available: "
                                f"{', '.join(available_models()) or 'none'} (or pass a model folder path)")
    return d


@dataclass(frozen=True, eq=False)
class Model:
    """A trained amortized posterior for one survey (see the module docstring)."""

    posterior: Posterior
    preprocess_config: PreprocessConfig
    survey_name: str
    path: Path | None = None

    @property
    def space(self) -> ParameterSpace:
        return self.posterior.space

    @property
    def names(self) -> tuple[str, ...]:
        return PHYSICAL_NAMES

    @property
    def metadata(self) -> dict:
        return self.posterior.metadata

    # -------------------------------------------------------------------------------------------
    def preprocess(self, event, *, t_ref: float | None = None) -> Prepared:
        """Network input for an Event (one dataset) or arrays ``(t, flux, sigma[, mask])`` / a dict with
        those keys. Raises ``ValueError`` for bad input (see :func:`mulens_sbi.preprocess.preprocess`)."""
        if isinstance(event, Prepared):
            return event
        cfg = self.preprocess_config
        if hasattr(event, "datasets"):
            return preprocess_event(event, cfg, t_ref=t_ref)
        if isinstance(event, dict):
            return preprocess(event["t"], event["flux"], event["sigma"], event.get("mask"), cfg, t_ref=t_ref)
        if isinstance(event, (tuple, list)) and len(event) in (3, 4):
            return preprocess(*event, cfg=cfg, t_ref=t_ref) if len(event) == 4 else preprocess(
                event[0], event[1], event[2], None, cfg, t_ref=t_ref)
        raise TypeError(f"cannot preprocess a {type(event).__name__}; pass an Event, a dict or "
                        f"(t, flux, sigma)")

    def _to_physical(self, theta_net: np.ndarray, t_ref: float) -> dict[str, np.ndarray]:
        out = {n: np.asarray(theta_net[..., j]) for j, n in enumerate(PHYSICAL_NAMES)}
        out["t_0"] = theta_net[..., 0] + t_ref
        return out

    def within(self, restrict: dict | None):
        """``restrict`` ({name: (low, high)}, physical) as the posterior's ``within`` box, or None."""
        return None if not restrict else restriction_box(self.space, restrict)

    def sample(self, event, n: int, key: jax.Array | int = 0, *, return_info: bool = False,
               max_rounds: int = 20, restrict: dict | None = None):
        """``n`` posterior samples for one event: ``(samples dict, log_q (n,))`` (see module docstring).

        Samples that could not be drawn inside the prior bounds (and ``restrict``) in ``max_rounds``
        rounds are NaN, with a ``RuntimeWarning`` (the event is probably outside the training
        distribution, or the restriction holds little of the flow's mass)."""
        if isinstance(key, int):
            key = jax.random.PRNGKey(key)
        prep = self.preprocess(event)
        theta, info = self.posterior.sample(prep.x, n, key, max_rounds=max_rounds, return_info=True,
                                            within=self.within(restrict))
        samples = self._to_physical(np.asarray(theta), prep.t_ref)
        log_q = np.asarray(info["log_prob"])
        if return_info:
            info = dict(info)
            info["t_ref"] = prep.t_ref
            info["preprocess"] = prep.info
            return samples, log_q, info
        return samples, log_q

    def log_prob(self, samples: dict[str, Any], event) -> np.ndarray:
        """log q of physical parameters (dict of arrays with the physical names) given the event."""
        prep = self.preprocess(event)
        cols = [np.asarray(samples[n], dtype=np.float64) for n in PHYSICAL_NAMES]
        cols[0] = cols[0] - prep.t_ref
        theta = np.stack(cols, axis=-1)
        return np.asarray(self.posterior.log_prob(theta, prep.x))

    def sample_batched(self, xs: np.ndarray, t_ref: np.ndarray, n: int, key: jax.Array, *,
                       restrict: dict | None = None, max_rounds: int = 20, return_info: bool = False):
        """Many preprocessed inputs at once: ``xs`` (B, n_bins, 4), ``t_ref`` (B,) -> (samples dict of
        (B, n), log_q (B, n)[, info]). Used by validation and catalogs."""
        theta, info = self.posterior.sample_batched(xs, n, key, return_info=True, max_rounds=max_rounds,
                                                    within=self.within(restrict))
        out = {nm: theta[..., j] for j, nm in enumerate(PHYSICAL_NAMES)}
        out["t_0"] = theta[..., 0] + np.asarray(t_ref)[:, None]
        return (out, info["log_prob"], info) if return_info else (out, info["log_prob"])


def load_model(name_or_path: str | Path) -> Model:
    """Load a shipped model by name (``"roman"``) or a model folder by path."""
    d = _resolve(name_or_path)
    post = load_posterior(d)
    prov = post.metadata.get("provenance", {})
    if "preprocess" not in prov:
        raise ValueError(f"{d / 'posterior.json'}: metadata.provenance.preprocess missing (not a mulens_sbi "
                         f"light-curve model)")
    if tuple(post.space.names) != ("dt_0",) + PHYSICAL_NAMES[1:]:
        raise ValueError(f"{d / 'posterior.json'}: parameters {post.space.names} are not "
                         f"{('dt_0',) + PHYSICAL_NAMES[1:]}")
    return Model(post, PreprocessConfig.from_dict(prov["preprocess"]), str(prov.get("survey", "unknown")), d)
