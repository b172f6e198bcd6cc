"""The shipped models (Roman, KMTNet): each loads by name, samples in physical units, and is calibrated
on a small set of FRESH simulations of its survey (never seen in training; fixed seed).

Tolerance (fixed before looking at the result): per parameter, the central-interval coverage at 50%
and 90% must lie within 0.05 (allowed systematic miscalibration, the target in the model card) plus
3 binomial standard deviations sqrt(a(1-a)/M) of its nominal value, over M = 150 events.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from mulens_sbi.models import available_models, load_model
from mulens_sbi.validation import simulate_events, validate_arrays

M = 150


@pytest.fixture(scope="module", params=["roman", "kmtnet"])
def model(request):
    if request.param not in available_models():
        pytest.fail(f"the shipped model trained/{request.param}/ is missing")
    return load_model(request.param)


def test_loads_and_samples(model):
    survey = model.survey_name
    assert survey in ("roman", "kmtnet")
    assert model.space.names == ("dt_0", "u_0", "t_E", "s", "q", "alpha")
    assert model.posterior.n_params > 100_000
    d = simulate_events(survey, 8, seed=11, batch_size=8)
    i = int(np.argmax(np.sum(d["mask"], axis=1)))  # a well-sampled one (sparse ones are refused)
    d = {k: v[i:i + 1] for k, v in d.items()}
    smp, lq = model.sample((d["t"][0], d["flux"][0], d["sigma"][0], d["mask"][0]), 300, jax.random.PRNGKey(0))
    assert lq.shape == (300,) and np.all(np.isfinite(lq))
    assert np.all((smp["q"] >= 1e-5) & (smp["q"] <= 1)) and np.all((smp["s"] >= 0.2) & (smp["s"] <= 5))
    # log_prob of the returned samples reproduces their log_q (same density, physical units)
    lq2 = model.log_prob(smp, (d["t"][0], d["flux"][0], d["sigma"][0], d["mask"][0]))
    np.testing.assert_allclose(lq2, lq, rtol=0, atol=2e-3)


@pytest.mark.slow
def test_calibration_on_fresh_simulations(model):
    d = simulate_events(model.survey_name, M, seed=20261128, batch_size=M)
    rep = validate_arrays(model, d, n_samples=200, seed=1, crossing=False)
    assert rep["n_excluded"] == 0
    # a simulated light curve may be refused by preprocessing (fewer than 50 usable points: 7.3% of
    # KMTNet's held-out set, none of Roman's); never silently (they are counted)
    assert rep["n_preprocess_failed"] <= (0.15 if model.survey_name == "kmtnet" else 0.0) * M
    lev = rep["levels"]
    bad = []
    m = M - rep["n_preprocess_failed"]
    for a in (0.5, 0.9):
        j = lev.index(a)
        tol = 0.05 + 3 * math.sqrt(a * (1 - a) / m)
        for n, cov in rep["marginal_coverage"].items():
            if abs(cov[j] - a) > tol:
                bad.append(f"{n} at {a}: {cov[j]:.3f} (tolerance ±{tol:.3f})")
    assert not bad, "miscalibrated: " + "; ".join(bad)


@pytest.mark.slow
def test_caustic_crossing_figure_of_the_model_card_reproduces(model):
    """The caustic-crossing figures the model card reports (``caustic_crossing_planetary_set`` of
    validation.json: the fraction of caustic-crossing planetary events whose true (log s, log q) lies
    in the 95% HPD region, under the full prior and under the set's own prior q < 0.01) are
    reproduced on FRESH conditioned events (another seed) within 3 binomial standard deviations, and
    so is what an exact posterior of the flow's width would score there (``if_calibrated``)."""
    import json
    from pathlib import Path

    from mulens_sbi.data.conditioned import simulate_conditioned
    from mulens_sbi.survey import Survey
    from mulens_sbi.validation import crossing_coverage

    card = json.loads((Path(model.path) / "validation.json").read_text())["caustic_crossing_planetary_set"]
    f_card = card["frac_truth_in_95_hpd_logs_logq"]
    assert card["n_events"] >= 500
    n = 80
    d, _ = simulate_conditioned(Survey.load(model.survey_name), np.random.default_rng(20261129), n)
    rep = crossing_coverage(model, d, n_samples=300, seed=2)
    m = rep["n_events"]
    assert m >= n - rep["n_preprocess_failed"] and rep["n_preprocess_failed"] <= 0.15 * n
    f = rep["frac_truth_in_95_hpd_logs_logq"]
    assert abs(f - f_card) <= 3 * math.sqrt(f_card * (1 - f_card) / m), (f, f_card, m)
    # what an exact posterior of the flow's width would score on the set (chosen by the true q): the
    # card's value reproduces within 3 binomial standard errors
    e_card = card["if_calibrated"]["expected_frac_in_95_hpd"]
    e = rep["if_calibrated"]["expected_frac_in_95_hpd"]
    assert abs(e - e_card) <= 3 * math.sqrt(e_card * (1 - e_card) / m), (e, e_card, m)
    # under the set's own prior (the flow truncated to q < 0.01) the card's figure reproduces too
    p_card = card["planetary_prior"]["frac_truth_in_95_hpd_logs_logq"]
    p = rep["planetary_prior"]["frac_truth_in_95_hpd_logs_logq"]
    assert p_card >= 0.90 and rep["planetary_prior"]["n_events"] == m
    assert abs(p - p_card) <= 3 * math.sqrt(p_card * (1 - p_card) / m), (p, p_card, m)
