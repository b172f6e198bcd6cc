"""Pareto k̂ of importance weights, against scipy's generalized Pareto law and analytic tails."""

import math

import numpy as np
import pytest
from scipy.stats import genpareto

from mulens_sbi.inference.pareto import KHAT_GOOD, generalized_pareto_shape, pareto_khat


@pytest.mark.parametrize("xi", [-0.3, 0.1, 0.5, 0.9])
def test_shape_of_generalized_pareto_draws(xi):
    """The fitted shape of 4000 draws of scipy's generalized Pareto law is within 0.08 of the truth
    (the estimator's sd at this size is ~0.02; the prior's shrinkage towards 1/2 is 10/4010)."""
    x = genpareto.rvs(xi, scale=2.0, size=4000, random_state=np.random.default_rng(3))
    assert generalized_pareto_shape(x) == pytest.approx(xi, abs=0.08)


def test_khat_separates_good_and_bad_proposals():
    """Target N(0, 1), Gaussian proposal of sd s: the weights' tail index is 1 − s² for s < 1 and
    bounded (k̂ < 0) for s > 1. A wide proposal is reliable, a narrow one (s = 0.4: ξ = 0.84)
    is flagged, and a normal proposal for a Cauchy target (ξ = 1) too."""
    rng = np.random.default_rng(0)
    n = 20000

    def khat_gauss(s):
        z = rng.normal(0.0, s, n)
        return pareto_khat(-0.5 * z**2 + 0.5 * (z / s) ** 2)

    assert khat_gauss(2.0) < 0.0
    assert khat_gauss(0.9) < 0.5
    assert khat_gauss(0.4) > KHAT_GOOD
    z = rng.normal(size=n)
    assert pareto_khat(-np.log1p(z**2) + 0.5 * z**2) > 0.8


def test_khat_edge_cases():
    assert math.isnan(pareto_khat(np.zeros(100)))  # equal weights: nothing to fit
    assert math.isnan(pareto_khat(np.zeros(5)))  # too few draws
    lw = np.full(100, -np.inf)
    lw[:3] = 0.0
    assert math.isnan(pareto_khat(lw))  # three positive weights: too few to say
    one = np.full(1000, -50.0)
    one[7] = 0.0
    assert pareto_khat(one) == math.inf  # one draw carries all the weight
