"""Restricted priors (``mulens_sbi.restrict``): parsing, the sampling box and the IS/NUTS priors."""

from __future__ import annotations

import numpy as np
import pytest

from mulens_sbi.inference.importance import parse_priors
from mulens_sbi.npe.transforms import ParameterSpace
from mulens_sbi.restrict import describe_restrict, parse_restrict, restrict_priors, restriction_box

SPACE = ParameterSpace.create(["dt_0", "u_0", "t_E", "s", "q", "alpha"],
                              ["identity", "identity", "log", "log", "log", "identity"],
                              lower=[-150, -1, 1, 0.2, 1e-5, 0], upper=[150, 1, 100, 5, 1, 360])


def test_parse_restrict():
    assert parse_restrict(["q=:0.01", "s=1:", "alpha=10:20"]) == {"q": (None, 0.01), "s": (1.0, None),
                                                                  "alpha": (10.0, 20.0)}
    assert describe_restrict(parse_restrict(["q=:0.01", "s=1:", "alpha=10:20"])) == \
        "q ≤ 0.01, 1 ≤ s, 10 ≤ alpha ≤ 20"
    for item, msg in [("q<0.01", "NAME=LOW:HIGH"), ("t_0=1:2", "cannot be restricted; allowed: u_0"),
                      ("q=a:0.1", "'a' is not a number"), ("q=:", "at least one bound"),
                      ("q=0.1:0.01", "LOW < HIGH"), ("q=:inf", "finite"), ("q=1:2:3", "NAME=LOW:HIGH")]:
        with pytest.raises(ValueError, match=msg):
            parse_restrict([item])
    with pytest.raises(ValueError, match="restricted twice"):
        parse_restrict(["q=:0.01", "q=0.001:"])


def test_restriction_box_fills_the_prior_and_checks_the_range():
    lo, hi = restriction_box(SPACE, {"q": (None, 0.01), "s": (1.0, None)})
    np.testing.assert_array_equal(lo, [-150, -1, 1, 1.0, 1e-5, 0])
    np.testing.assert_array_equal(hi, [150, 1, 100, 5, 0.01, 360])
    with pytest.raises(ValueError,
                       match=r"s range \[0.1, 5\] must be non-empty and inside the model's prior \[0.2, 5\]"):
        restriction_box(SPACE, {"s": (0.1, None)})
    with pytest.raises(ValueError, match="cannot be restricted"):
        restriction_box(SPACE, {"dt_0": (0.0, 1.0)})
    with pytest.raises(ValueError, match="'t_0' cannot be restricted"):
        restriction_box(SPACE, {"t_0": (0.0, 1.0)})
    with pytest.raises(ValueError, match="q needs at least one bound"):
        restriction_box(SPACE, {"q": (None, None)})


def test_restrict_priors_keeps_the_distribution_on_the_narrower_range():
    pri, _ = parse_priors({"t_0": ("uniform", 0, 100), "u_0": ("uniform", -1, 1),
                           "t_E": ("log_uniform", 1, 100),
                           "s": ("log_uniform", 0.2, 5), "q": ("log_uniform", 1e-5, 1),
                           "alpha": ("uniform", 0, 360)})
    r = restrict_priors(pri, {"q": (None, 0.01), "u_0": (0.0, None)})
    assert (r["q"].dist, r["q"].low, r["q"].high) == ("log_uniform", 1e-5, 0.01)
    assert (r["u_0"].dist, r["u_0"].low, r["u_0"].high) == ("uniform", 0.0, 1.0)
    assert r["s"] == pri["s"] and pri["q"].high == 1  # the input is untouched
    with pytest.raises(ValueError, match=r"q range \[1e-05, 2\] must be non-empty and inside"):
        restrict_priors(pri, {"q": (None, 2.0)})
