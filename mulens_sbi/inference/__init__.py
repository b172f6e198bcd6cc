"""Exact-likelihood inference for one event: NUTS reference fits and importance sampling of
proposal samples (e.g. from the neural posterior), with diagnostics. See ``docs/inference.md``."""

from __future__ import annotations

from mulens_sbi.inference.importance import (
    GaussianProposal,
    ImportanceResult,
    LensPrior,
    importance_sample,
    importance_weights,
    laplace_approximation,
    log_density_to_physical,
    log_prior,
    parse_priors,
    priors_from_spec,
)
from mulens_sbi.inference.nuts import make_model, run_nuts

__all__ = [
    "GaussianProposal",
    "ImportanceResult",
    "LensPrior",
    "importance_sample",
    "importance_weights",
    "laplace_approximation",
    "log_density_to_physical",
    "log_prior",
    "make_model",
    "parse_priors",
    "priors_from_spec",
    "run_nuts",
]
