"""Conditioned simulation (caustic-crossing planetary events) and the enriched training mixture.

References: a brute-force segment distance (dense sampling), plain prior draws classified one by
one (the class probability and the distribution of the class's parameters must match the
conditioned sampler's within their statistical errors), and expectations that the mixture weights
must restore exactly (E[w] = 1, E[w·1_C] = P(C)).

The survey is the shipped Roman spec cut to 256 points per light curve (cheap, same cadence and
priors); the class definition is data-based, so both sides use that same spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mulens_sbi.data.classes import caustic_crossing
from mulens_sbi.data.conditioned import (
    caustic_geometry,
    may_cross_caustic,
    probability_se,
    segment_near_caustics,
    simulate_conditioned,
)
from mulens_sbi.data.lightcurves import simulate_lightcurves
from mulens_sbi.data.samplers import BinnedSimulator, MixtureSimulator
from mulens_sbi.data.shards import condition_stats, read_simulation
from mulens_sbi.lightcurve import source_trajectory
from mulens_sbi.preprocess import PreprocessConfig
from mulens_sbi.simulate import OutputExistsError, SimulateSettings, run_simulation
from mulens_sbi.survey import Survey
from mulens_sbi.survey.cadence import half_width, window_bounds
from mulens_sbi.survey.spec import simulators_dir

N_POINTS = 256
KEYS = ("t_0", "u_0", "t_E", "s", "q", "alpha")


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    text = (simulators_dir() / "roman.toml").read_text().replace("n_points = 2048", f"n_points = {N_POINTS}")
    path = tmp_path_factory.mktemp("cond") / "roman_256.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def survey(spec_path) -> Survey:
    return Survey.load(str(spec_path))


@pytest.mark.slow
def test_segment_distance_against_dense_sampling():
    rng = np.random.default_rng(0)
    L, M, K = 3, 50, 40
    p0 = rng.normal(size=(L, M)) + 1j * rng.normal(size=(L, M))
    p1 = p0 + rng.normal(scale=0.5, size=(L, M)) + 1j * rng.normal(scale=0.5, size=(L, M))
    pts = rng.normal(size=(L, K)) + 1j * rng.normal(size=(L, K))
    u = np.linspace(0.0, 1.0, 20001)
    seg = p0[..., None] + u * (p1 - p0)[..., None]  # (L, M, U)
    dense = np.min(np.abs(seg[..., None, :] - pts[:, None, :, None]), axis=(-1, -2))  # (L, M)
    for radius in (0.05, 0.1, 0.2):
        r = np.full(L, radius)
        got = np.asarray(segment_near_caustics(p0, p1, pts, r))
        # dense sampling overestimates the distance by at most half a sampling step
        sure = np.abs(dense - radius) > np.abs(p1 - p0) / 20000
        np.testing.assert_array_equal(got[sure], (dense <= radius)[sure])
        assert sure.mean() > 0.95 and 0 < got.sum() < got.size


@pytest.mark.slow
def test_prefilter_keeps_every_caustic_crossing(survey):
    """The geometric pre-filter is a necessary condition: no event of the class is rejected by it.
    Candidates are drawn near resonance (big caustics) so that many of them cross."""
    rng = np.random.default_rng(11)
    n = 512
    p = survey.sample_parameters(rng, n)
    p["s"] = 10 ** rng.uniform(-0.15, 0.15, n)
    p["q"] = 10 ** rng.uniform(-3.5, -2.0, n)
    p["u_0"] = rng.uniform(-0.3, 0.3, n)
    d = simulate_lightcurves(survey, rng, n, batch_size=128, params=p)
    exact = caustic_crossing(d["t"], d["mask"], {k: d[k] for k in KEYS})
    pts, edge, _ = caustic_geometry(jnp.asarray(p["s"]), jnp.asarray(p["q"]))
    hw = half_width(survey.spec, p["t_E"])
    ends = []
    for sg in (-1.0, 1.0):
        x, y = source_trajectory(p["t_0"] + sg * hw, p["t_0"], p["u_0"], p["t_E"], p["alpha"])
        ends.append(np.asarray(x) + 1j * np.asarray(y))
    # one lens per candidate: (n, 1) segments against (n, K) caustic points
    near = np.asarray(segment_near_caustics(ends[0][:, None], ends[1][:, None], pts, edge))[:, 0]
    assert exact.sum() >= 40                   # the check has something to check
    assert not np.any(exact & ~near)           # necessary condition
    assert near.mean() < 0.8                   # and it does filter


@pytest.mark.slow
def test_prefilter_keeps_every_caustic_crossing_of_whole_seasons(tmp_path):
    """Whole-season windows of long events: the source moves less than a caustic's size over the
    season, so a path can lie wholly inside a caustic without passing near its edge; the pre-filter
    must keep those too (``may_cross_caustic``'s length test). The geometry holds for any q: big
    caustics of stellar binaries make such paths common."""
    text = (simulators_dir() / "roman_season.toml").read_text()
    text = text.replace("interval_min = 15.16", "interval_min = 60.0")
    text = text.replace("n_points = 6840", "n_points = 1729")
    path = tmp_path / "roman_season.toml"
    path.write_text(text)
    survey = Survey.load(str(path))
    rng = np.random.default_rng(12)
    n = 384
    p = survey.sample_parameters(rng, n)
    p["s"] = 10 ** rng.uniform(-0.1, 0.1, n)
    p["q"] = 10 ** rng.uniform(-0.5, 0.0, n)   # stellar binaries: resonant caustics ~1 θ_E across
    p["u_0"] = rng.uniform(-0.1, 0.1, n)
    p["t_E"] = 10 ** rng.uniform(1.8, 2.0, n)  # 72-day seasons: paths of 0.7-1.1 θ_E
    d = simulate_lightcurves(survey, rng, n, batch_size=128, params=p)
    exact = caustic_crossing(d["t"], d["mask"], {k: d[k] for k in KEYS})
    pts, edge, diam = caustic_geometry(jnp.asarray(p["s"]), jnp.asarray(p["q"]))
    ends = []
    for t_end in window_bounds(survey.spec, p["t_0"], p["t_E"]):
        x, y = source_trajectory(t_end, p["t_0"], p["u_0"], p["t_E"], p["alpha"])
        ends.append(np.asarray(x) + 1j * np.asarray(y))
    keep = np.asarray(may_cross_caustic(ends[0][:, None], ends[1][:, None], pts, edge, diam))[:, 0]
    near = np.asarray(segment_near_caustics(ends[0][:, None], ends[1][:, None], pts, edge))[:, 0]
    assert exact.sum() >= 40
    assert not np.any(exact & ~keep)           # necessary condition
    assert np.any(exact & ~near)               # which the edge test alone would break


@pytest.fixture(scope="module")
def conditioned(survey):
    return simulate_conditioned(survey, np.random.default_rng(5), 300, n_lens=1024)


def test_conditioned_draws_are_in_the_class(conditioned):
    d, st = conditioned
    assert d["t"].shape == (300, N_POINTS)
    assert np.all(d["q"] < 0.01)
    assert np.all(caustic_crossing(d["t"], d["mask"], {k: d[k] for k in KEYS}))
    assert st.n_accepted >= 300 and st.n_prefiltered >= st.n_accepted and st.n_candidates > st.n_prefiltered


@pytest.mark.slow
def test_conditioned_draws_match_plain_prior_rejection(survey, conditioned):
    """Brute force: plain prior draws, each classified. The class probability must agree with the
    conditioned sampler's acceptance, and the class's (log s, log q, |u_0|) distributions with the
    conditioned draws' (two-sample Kolmogorov-Smirnov, p > 1e-3)."""
    from scipy.stats import ks_2samp

    d, st = conditioned
    rng = np.random.default_rng(21)
    hits = []
    n_plain = 0
    for _ in range(12):
        b = simulate_lightcurves(survey, rng, 4096, batch_size=512)
        n_plain += 4096
        sel = np.flatnonzero(b["q"] < 0.01)
        c = caustic_crossing(b["t"][sel], b["mask"][sel], {k: b[k][sel] for k in KEYS}, chunk=512)
        hits.append({k: b[k][sel][c] for k in KEYS})
    plain = {k: np.concatenate([h[k] for h in hits]) for k in KEYS}
    k_plain = len(plain["q"])
    p_plain = k_plain / n_plain
    se_plain = np.sqrt(p_plain * (1 - p_plain) / n_plain)
    se_cond = probability_se(st.n_candidates, st.n_accepted, st.n_lenses, st.sum_sq_per_lens)
    assert k_plain >= 150
    assert abs(st.probability - p_plain) < 3.5 * np.hypot(se_plain, se_cond), (st.probability, p_plain)
    for name, f in (("s", np.log10), ("q", np.log10), ("u_0", np.abs)):
        assert ks_2samp(f(plain[name]), f(d[name])).pvalue > 1e-3, name


def test_probability_se_matches_the_binomial_without_sharing():
    # one candidate per lens: the cluster formula is the binomial one (up to n / (n - 1))
    n, k = 10000, 70
    got = probability_se(n, k, n, k)
    p = k / n
    assert got == pytest.approx(np.sqrt(p * (1 - p) / (n - 1)), rel=1e-12)


def _fake_binned(theta_col0: np.ndarray, n_bins: int = 16) -> dict[str, np.ndarray]:
    n = theta_col0.shape[0]
    theta = np.zeros((n, 6))
    theta[:, 0] = theta_col0
    theta[:, 2:5] = 1.0
    mean = np.ones((n, n_bins), np.float32)
    mean[:, n_bins // 2] = 3.0
    return {"theta_net": theta, "mean": mean, "err": np.full((n, n_bins), 0.01, np.float32),
            "count": np.full((n, n_bins), 4, np.uint16)}


def test_mixture_weights_restore_prior_expectations():
    cfg = PreprocessConfig(n_bins=16, min_points=4, min_cells=4)
    rng = np.random.default_rng(0)
    n_base = 5000
    in_class = rng.random(n_base) < 0.02
    p_class = in_class.mean()
    # theta[:, 0] carries a marker: 1 for class rows (base or enriched), a N(0, 1) value otherwise
    base = _fake_binned(np.where(in_class, 1.0, rng.normal(size=n_base)))
    enrich = _fake_binned(np.ones(800))
    mix = MixtureSimulator(BinnedSimulator(base, cfg), in_class, BinnedSimulator(enrich, cfg), 0.3, p_class)
    ws, cls, th = [], [], []
    for i in range(60):
        theta, x, w = mix(jax.random.PRNGKey(i), 512)
        assert x.shape == (512, 16, 4) and np.all(np.isfinite(np.asarray(x)))
        ws.append(np.asarray(w))
        th.append(np.asarray(theta)[:, 0])
    w, th = np.concatenate(ws), np.concatenate(th)
    cls = th == 1.0
    # share of class rows in the mixture: (1 - λ) p + λ
    assert cls.mean() == pytest.approx(0.7 * p_class + 0.3, abs=0.01)
    # E_mix[w] = 1 and E_mix[w·1_C] = P(C): the weighted loss is the prior's
    assert w.mean() == pytest.approx(1.0, abs=0.01)
    assert np.mean(w * cls) == pytest.approx(p_class, rel=0.05)
    prior_mean = np.mean(np.where(in_class, 0.0, base["theta_net"][:, 0]))
    assert np.mean(w * np.where(cls, 0.0, th)) == pytest.approx(prior_mean, abs=0.02)
    with pytest.raises(ValueError, match="enrich_fraction"):
        MixtureSimulator(BinnedSimulator(base, cfg), in_class, BinnedSimulator(enrich, cfg), 1.0, p_class)


@pytest.mark.slow
def test_simulate_cli_condition_records_and_refuses_a_mixed_resume(spec_path, tmp_path):
    from mulens_sbi.cli import main

    out = tmp_path / "cross"
    assert main(["simulate", "--survey", str(spec_path), "--n", "40", "--seed", "3", "--shard-size", "20",
                 "--batch-size", "64", "--condition", "caustic-crossing", "--out", str(out),
                 "--no-progress"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["condition"] == "caustic-crossing" and man["q_max"] == 0.01 and man["complete"]
    st = condition_stats(out)
    assert st["n_accepted"] >= 40 and 0.002 < st["probability"] < 0.02 and st["probability_se"] > 0
    d = read_simulation(out)
    assert d["t"].shape == (40, N_POINTS)
    assert np.all(caustic_crossing(d["t"], d["mask"], {k: d[k] for k in KEYS}))
    # the same folder with plain draws is another simulation: refused without --overwrite
    with pytest.raises(OutputExistsError, match="condition"):
        run_simulation(SimulateSettings(survey=str(spec_path), n=40, out=str(out), seed=3, shard_size=20,
                                        batch_size=64, progress=False), log=lambda m: None)
    with pytest.raises(SystemExit):
        main(["simulate", "--survey", str(spec_path), "--n", "4", "--out", str(tmp_path / "x"),
              "--condition", "binary"])


def test_weights_that_depend_on_the_data_only_leave_the_posterior_unchanged():
    """The principle behind ``SharpEmphasis``, on a conjugate model with an analytic posterior:
    theta ~ N(0, 1), x = theta + N(0, 1), so p(theta | x) = N(x/2, 1/2). A Gaussian q(theta | x) =
    N(a·x + b, v) fitted by weighted maximum likelihood (weighted least squares) recovers a = 1/2,
    b = 0, v = 1/2 with weights h(x) (20 where |x| > 1.5), and does not with weights h(theta)."""
    rng = np.random.default_rng(0)
    n = 400_000
    theta = rng.normal(size=n)
    x = theta + rng.normal(size=n)

    def fit(w):
        A = np.stack([x, np.ones(n)], axis=1)
        coef = np.linalg.solve(A.T @ (w[:, None] * A), A.T @ (w * theta))
        v = np.sum(w * (theta - A @ coef) ** 2) / np.sum(w)
        return coef[0], coef[1], v

    for w in (np.ones(n), np.where(np.abs(x) > 1.5, 20.0, 1.0)):
        a, b, v = fit(w)
        assert a == pytest.approx(0.5, abs=0.01) and abs(b) < 0.01 and v == pytest.approx(0.5, abs=0.01)
    a, b, v = fit(np.where(np.abs(theta) > 1.5, 20.0, 1.0))   # a function of theta: biased
    assert abs(a - 0.5) > 0.1 or abs(v - 0.5) > 0.1


def test_sharp_feature_statistic_and_emphasis_weights():
    from mulens_sbi.data.samplers import SharpEmphasis, sharp_feature

    rng = np.random.default_rng(3)
    n_bins, b = 512, 200
    err = np.full((b, n_bins), 0.01)
    flat = 0.3 + err * rng.normal(size=(b, n_bins))
    has = np.ones((b, n_bins))
    has[:, ::7] = 0.0          # empty cells are skipped, not read
    flat[:, ::7] = 50.0

    def net(f):
        m = f.shape[0]
        return jnp.asarray(np.stack([np.zeros_like(f), f, err[:m], has[:m]], axis=-1), jnp.float32)

    z = np.asarray(sharp_feature(net(flat)))
    # noise only: the maximum of ~300 |N(0, 1)| values (third-order neighbours correlated)
    assert np.all(z < 6.0) and 2.0 < np.median(z) < 4.5
    # a smooth curve (curvature well under the noise) stays low; a jump of 0.5 (z ≈ 20) is found
    tt = np.linspace(-1, 1, n_bins)
    smooth = flat + 0.5 * np.exp(-tt ** 2 / 0.1)
    assert np.all(np.asarray(sharp_feature(net(smooth))) < 6.5)
    jump = flat.copy()
    jump[:, 300:] += 0.5
    zj = np.asarray(sharp_feature(net(jump)))
    assert np.all(zj > 8.0)

    class Fixed:
        def __len__(self):
            return b

        def __call__(self, key, n):
            x = net(np.concatenate([flat[: n // 2], jump[: n - n // 2]]))
            return jnp.zeros((n, 6)), x, jnp.full((n,), 0.5, jnp.float32)

    theta, x, w = SharpEmphasis(Fixed(), 20.0, 8.0)(jax.random.PRNGKey(0), 40)
    np.testing.assert_allclose(np.asarray(w), np.r_[np.full(20, 0.5), np.full(20, 10.0)])
    with pytest.raises(ValueError, match="sharp_weight"):
        SharpEmphasis(Fixed(), 0.5, 8.0)


def test_condition_is_checked_before_anything_is_written(spec_path, tmp_path):
    from types import SimpleNamespace

    from mulens_sbi.data.conditioned import check_condition

    single = SimpleNamespace(path="single.toml", model=SimpleNamespace(lens="single"))
    with pytest.raises(ValueError, match=r"single.toml: condition 'caustic-crossing' needs a binary-lens"):
        check_condition(single, "caustic-crossing", 0.01)
    with pytest.raises(ValueError, match="condition must be one of"):
        check_condition(Survey.load(str(spec_path)).spec, "binary", 0.01)
    with pytest.raises(ValueError, match=r"SimulateSettings.q_max=0.0 is not allowed: 0 < q_max <= 1"):
        run_simulation(SimulateSettings(survey=str(spec_path), n=4, out=str(tmp_path / "c"),
                                        condition="caustic-crossing", q_max=0.0, progress=False),
                       log=lambda m: None)
    assert not (tmp_path / "c").exists()
