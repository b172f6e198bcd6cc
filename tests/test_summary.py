"""Summaries of weighted samples against independent computations (numpy's weighted quantiles, analytic
Gaussian quantiles), angle handling across 0°, mode separation on synthetic mixtures, strict JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mulens_sbi.summary import (
    find_modes,
    parameter_summary,
    summarize_parameters,
    unwrap_angle,
    weighted_quantile,
    write_json,
)


def test_quantiles_equal_numpy_weighted_inverted_cdf(rng):
    x = rng.standard_normal(5000) * 3.0 + 1.0
    w = rng.exponential(size=x.size) * (rng.uniform(size=x.size) > 0.2)  # some zero weights
    qs = [0.0, 0.025, 0.16, 0.5, 0.84, 0.975, 1.0]
    ours = weighted_quantile(x, w, qs)
    ref = np.quantile(x, qs, weights=w / w.sum(), method="inverted_cdf")
    np.testing.assert_array_equal(ours, ref)  # same definition, exact
    s = parameter_summary(x, w)
    ref68 = np.quantile(x, [0.16, 0.84], weights=w, method="inverted_cdf")
    np.testing.assert_array_equal(s["interval_68"], ref68)
    np.testing.assert_array_equal(s["interval_95"], np.quantile(x, [0.025, 0.975], weights=w,
                                                                method="inverted_cdf"))
    assert s["median"] == np.quantile(x, 0.5, weights=w, method="inverted_cdf")
    assert s["mean"] == pytest.approx(np.average(x, weights=w), rel=1e-12)


def test_importance_weighted_quantiles_match_target_gaussian(rng):
    # proposal N(0, 2^2), target N(1, 1): self-normalised weights must recover the target's quantiles
    x = rng.normal(0.0, 2.0, 200_000)
    logw = -0.5 * (x - 1.0) ** 2 + 0.5 * (x / 2.0) ** 2
    w = np.exp(logw - logw.max())
    s = parameter_summary(x, w)
    # analytic: median 1, 68% [1 - 0.9945, 1 + 0.9945], 95% [1 - 1.96, 1 + 1.96]
    z68 = 0.994457883
    assert s["median"] == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(s["interval_68"], [1 - z68, 1 + z68], atol=0.03)
    np.testing.assert_allclose(s["interval_95"], [1 - 1.959964, 1 + 1.959964], atol=0.05)


def test_alpha_across_zero(rng):
    a = rng.normal(0.0, 5.0, 20_000)
    s = parameter_summary(np.mod(a, 360.0), angle=True)
    lo68, hi68 = s["interval_68"]
    # reference on the unwrapped draws: numpy quantiles (equal weights)
    ref = np.quantile(a, [0.16, 0.5, 0.84], method="inverted_cdf")
    # the interval is written on the branch of the reported median (median in [0, 360)), so compare
    # modulo 360 and check that it is one contiguous piece around the median
    shift = lo68 - ref[0]
    assert abs(shift) < 1e-9 or abs(shift - 360.0) < 1e-9
    assert hi68 - lo68 == pytest.approx(ref[2] - ref[0], abs=1e-9)
    assert lo68 <= s["median"] <= hi68
    assert np.mod(s["median"] - ref[1] + 180.0, 360.0) - 180.0 == pytest.approx(0.0, abs=1e-9)
    assert s["std"] == pytest.approx(5.0, rel=0.03)
    # the cut sits in the widest empty arc: unwrapped values span < 360 and are contiguous
    u = unwrap_angle(np.mod(a, 360.0))
    assert u.max() - u.min() < 60.0
    # far from 0 nothing changes
    b = rng.normal(200.0, 3.0, 1000)
    assert parameter_summary(b, angle=True)["median"] == pytest.approx(np.median(b), abs=0.2)


def _mixture(rng, n, frac_wide, log_s=(-0.15, 0.15)):
    close = rng.uniform(size=n) > frac_wide
    ls = np.where(close, rng.normal(log_s[0], 0.01, n), rng.normal(log_s[1], 0.01, n))
    return {
        "t_0": rng.normal(9000.0, 0.05, n),
        "u_0": rng.normal(0.1, 0.005, n),
        "t_E": rng.normal(25.0, 0.3, n),
        "s": 10**ls,
        "q": 10 ** rng.normal(-3.0, 0.05, n),
        "alpha": np.mod(rng.normal(0.0, 2.0, n), 360.0),
    }, close


def test_modes_close_wide_with_weights(rng):
    # equal counts; the weights give the wide solution 25% of the mass
    s, close = _mixture(rng, 6000, 0.5)
    w = np.where(close, 3.0, 1.0)
    out = find_modes(s, w, seed=1)
    assert out["n_modes"] == 2, out["method"]
    m0, m1 = out["modes"]
    assert m0["weight"] == pytest.approx(0.75, abs=0.01) and m1["weight"] == pytest.approx(0.25, abs=0.01)
    assert m0["parameters"]["s"]["median"] == pytest.approx(10**-0.15, rel=0.01)
    assert m1["parameters"]["s"]["median"] == pytest.approx(10**0.15, rel=0.01)
    # per-mode intervals: the within-mode width (0.01 dex), not the mixture's
    lo, hi = m0["parameters"]["s"]["interval_68"]
    assert math.log10(hi / lo) == pytest.approx(0.02, rel=0.15)


def test_single_curved_mode_not_split(rng):
    n = 6000
    u = rng.normal(0.0, 1.0, n)
    s, _ = _mixture(rng, n, 0.0)
    s["t_0"] = 9000.0 + 0.3 * u
    s["u_0"] = 0.1 + 0.02 * u**2 + 0.002 * rng.standard_normal(n)  # banana in (t_0, u_0)
    out = find_modes(s, seed=0)
    assert out["n_modes"] == 1, out
    assert out["modes"][0]["weight"] == pytest.approx(1.0)


def test_modes_report_best_sample_and_few_samples():
    s = {"s": np.array([1.0, 1.1, 1.2]), "q": np.array([1e-3] * 3), "u_0": np.array([0.1, 0.2, 0.3])}
    out = find_modes(s, np.array([0.2, 0.5, 0.3]), log_likelihood=np.array([-3.0, -1.0, -2.0]))
    assert out["n_modes"] == 1 and "single mode assumed" in out["method"]
    assert out["modes"][0]["best"]["s"] == 1.1 and out["modes"][0]["best"]["log_likelihood"] == -1.0


def test_json_strict_and_no_overwrite(tmp_path):
    summ = summarize_parameters({"x": np.arange(5.0)})
    summ["bad"] = float("nan")
    summ["arr"] = np.array([1, 2])
    p = write_json(summ, tmp_path / "s.json")
    back = json.loads(p.read_text())
    assert back["bad"] is None and back["arr"] == [1, 2] and back["x"]["median"] == 2.0
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_json(summ, p)
    write_json(summ, p, overwrite=True)


def test_bad_weights():
    with pytest.raises(ValueError, match="all weights are zero"):
        weighted_quantile([1.0, 2.0], [0.0, 0.0], 0.5)
    with pytest.raises(ValueError, match="finite and >= 0"):
        weighted_quantile([1.0, 2.0], [1.0, -1.0], 0.5)
