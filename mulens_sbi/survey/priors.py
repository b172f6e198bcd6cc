"""Prior draws for the parameters of a survey spec (numpy ``Generator``; reproducible from a seed)."""

from __future__ import annotations

import numpy as np

from mulens_sbi.survey.noise import mag_to_flux
from mulens_sbi.survey.spec import Prior, SurveySpec


def _draw(prior: Prior, spec: SurveySpec, rng: np.random.Generator, n: int) -> np.ndarray:
    if prior.dist == "uniform":
        return rng.uniform(prior.low, prior.high, size=n)
    if prior.dist == "log_uniform":
        return 10.0 ** rng.uniform(np.log10(prior.low), np.log10(prior.high), size=n)
    if prior.dist == "fixed":
        return np.full(n, float(prior.value))
    if prior.dist == "seasons":  # uniform over the union of the observing seasons
        starts = np.array([s.start for s in spec.seasons])
        lengths = np.array([s.end - s.start for s in spec.seasons])
        k = rng.choice(len(starts), size=n, p=lengths / lengths.sum())
        return starts[k] + lengths[k] * rng.random(n)
    raise ValueError(f"unknown prior distribution {prior.dist!r}")  # pragma: no cover (validated)


def sample_parameters(spec: SurveySpec, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Draw ``n`` parameter sets: the spec's sampled parameters plus derived fluxes.

    Returns float64 arrays of shape (n,) for each name in ``spec.sampled_parameters()`` (alpha in
    degrees) and ``f_s``, ``f_b``: source and blend flux on MulensModel's zero point 22, with
    ``f_b = f_s · blend_fraction / (1 - blend_fraction)``.
    """
    out = {name: _draw(spec.priors[name], spec, rng, n) for name in spec.sampled_parameters()}
    out["f_s"] = mag_to_flux(out["source_mag"])
    bf = out["blend_fraction"]
    out["f_b"] = out["f_s"] * bf / (1.0 - bf)
    return out
