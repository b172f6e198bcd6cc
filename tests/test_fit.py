"""fit(): importance sampling with the exact likelihood, summaries, input handling, CLI, NUTS refinement.

The amortized model is replaced here by *test doubles with the model interface* (``sample(event, n,
key) -> (samples, log_q)``, ``priors``) so that the claims about the fitting machinery can be checked
against an independent reference and fail when it is wrong:

* ``GaussianProposal``: a Gaussian in (t_0, u_0, log t_E, log s, log q, alpha), 1.5× wider than the
  linearised posterior and shifted from it by 1.7 σ (Mahalanobis). Reference: the linearised
  least-squares posterior of the same data — one Gauss–Newton step from the truth with the Fisher
  matrix of the model flux (finite differences of the magnification; fluxes as linear parameters).
  For this smooth (non-caustic-crossing) event the likelihood is close to Gaussian, so the
  importance-weighted mean must move from the shifted proposal onto the reference (tolerance 0.3 σ)
  and the weighted standard deviations must match the Fisher ones (tolerance 25%), while the
  unweighted proposal is off by more than 0.5 σ (so the test fails without correct weights).
* an untrained network wrapped in the real :class:`mulens_sbi.models.Model` (the real preprocessing
  runs, so its input checks and the "outside the view" bookkeeping are exercised).

A shipped-model end-to-end fit (the demo's) is in ``tests/test_demo.py``.
"""

from __future__ import annotations

import json
import math
import warnings

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

from mulens_sbi.cli import main
from mulens_sbi.event import Dataset, Event
from mulens_sbi.fit import FIT_FILES, fit, report_markdown
from mulens_sbi.plots import magnifications as _magnifications

NAMES = ("t_0", "u_0", "t_E", "s", "q", "alpha")
LOG = ("t_E", "s", "q")
TRUTH = {"t_0": 100.0, "u_0": 0.3, "t_E": 20.0, "s": 2.0, "q": 0.1, "alpha": 30.0}
F_S, F_B = 1.0, 0.3
PRIORS = {
    "t_0": {"dist": "seasons"},
    "u_0": ("uniform", -1.0, 1.0),
    "t_E": ("log_uniform", 1.0, 100.0),
    "s": ("log_uniform", 0.2, 5.0),
    "q": ("log_uniform", 1e-5, 1.0),
    "alpha": ("uniform", 0.0, 360.0),
}


def simulate(truth, n=2048, sig=0.02, span=40.0, seed=1, f_s=F_S, f_b=F_B):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(truth["t_0"] - span, truth["t_0"] + span, n))
    a = _magnifications(t, {k: np.array([v]) for k, v in truth.items()})[0]
    assert np.all(np.isfinite(a))
    f = f_s * a + f_b
    s = sig * f
    return t, f + s * rng.standard_normal(n), s


def to_z(p: dict) -> np.ndarray:
    return np.array([math.log(p[k]) if k in LOG else p[k] for k in NAMES], dtype=float)


def from_z(z: np.ndarray) -> dict:
    return {k: (np.exp(z[..., i]) if k in LOG else z[..., i]) for i, k in enumerate(NAMES)}


def linearised_posterior(t, flux, sigma, truth):
    """Gauss–Newton step from the truth and the Fisher covariance over (z, F_s, F_b)."""
    z0 = to_z(truth)
    h = 1e-5 * np.maximum(np.abs(z0), 1.0)
    zs = [z0 + sgn * h[i] * np.eye(6)[i] for i in range(6) for sgn in (1, -1)] + [z0]
    a = _magnifications(t, {k: np.array([from_z(z)[k] for z in zs]) for k in NAMES})
    jac = [(a[2 * i] - a[2 * i + 1]) / (2 * h[i]) * F_S for i in range(6)] + [a[-1], np.ones_like(t)]
    j = np.stack(jac, axis=1) / sigma[:, None]
    cov = np.linalg.inv(j.T @ j)
    r = (flux - (F_S * a[-1] + F_B)) / sigma
    return z0 + (cov @ (j.T @ r))[:6], cov[:6, :6]


class GaussianProposal:
    """Test double of a trained model: Gaussian proposal in the sampling space (see module docstring)."""

    name = "gaussian-test-double"
    names = NAMES
    half_width_days = 150.0

    def __init__(self, mean, cov, scale=1.5, shift=None, priors=PRIORS):
        chol = np.linalg.cholesky(cov)
        self.mean = np.asarray(mean) + (0.0 if shift is None else chol @ np.asarray(shift))
        self.chol = chol * scale
        self.priors = priors
        self.calls = []

    def sample(self, event, n, key):
        self.calls.append(event)
        rng = np.random.default_rng(np.asarray(key).tolist())
        eps = rng.standard_normal((n, len(self.mean)))
        z = self.mean + eps @ self.chol.T
        log_q = (-0.5 * np.sum(eps**2, axis=1) - np.sum(np.log(np.diag(self.chol)))
                 - 0.5 * len(self.mean) * math.log(2 * math.pi))
        log_q = log_q - sum(z[:, NAMES.index(k)] for k in LOG)  # density in the physical parameters
        return from_z(z), log_q


@pytest.fixture(scope="module")
def binary():
    t, f, s = simulate(TRUTH)
    event = Event((Dataset("W149", t, f, s),), name="sim-binary")
    z_ref, cov = linearised_posterior(t, f, s, TRUTH)
    return event, z_ref, cov


@pytest.fixture(scope="module")
def binary_fit(binary):
    event, z_ref, cov = binary
    shift = 0.7 * np.array([1, -1, 1, -1, 1, -1])
    model = GaussianProposal(z_ref, cov, scale=1.5, shift=shift)
    res = fit(event, model, n=1024, seed=3, progress=False)
    return res, model


def test_importance_sampling_recovers_truth_and_reference(binary, binary_fit):
    event, z_ref, cov = binary
    res, model = binary_fit
    assert res.method == "is" and res.status == "ok", res.messages
    sd = np.sqrt(np.diag(cov))
    # the 95% intervals contain the truth
    for k in NAMES:
        lo, hi = res.summary["parameters"][k]["interval_95"]
        assert lo <= TRUTH[k] <= hi, (k, lo, hi, TRUTH[k])
    z = np.stack([np.log(res.samples[k]) if k in LOG else res.samples[k] for k in NAMES], axis=1)
    w = res.weights
    mean_w = w @ z
    std_w = np.sqrt(w @ (z - mean_w) ** 2)
    mean_q = z.mean(axis=0)
    assert np.all(np.abs(mean_w - z_ref) / sd < 0.3), (mean_w - z_ref) / sd
    assert np.all(np.abs(std_w / sd - 1.0) < 0.25), std_w / sd
    assert np.max(np.abs(mean_q - z_ref) / sd) > 0.5  # the proposal alone is off: the weights matter
    # diagnostics are reported and consistent with the weights
    imp = res.importance
    assert imp["n"] == 1024 and 0 < imp["efficiency"] <= 1
    assert imp["ess"] == pytest.approx(1.0 / np.sum(w**2), rel=1e-9)
    assert imp["efficiency"] == pytest.approx(imp["ess"] / 1024, rel=1e-9)
    # expected efficiency of a 1.5x wide proposal shifted by |shift| = 1.71 sigma in 6-D for a
    # Gaussian target: (c^2/sqrt(2c^2-1))^-6 * exp(-|shift|^2/(2c^2-1)) = 0.14; allow a factor 2
    assert 0.07 < imp["efficiency"] < 0.28
    assert math.isfinite(imp["log_evidence"]) and imp["log_evidence_err"] < 0.2
    assert res.summary["ess"] == pytest.approx(imp["ess"])
    assert "ESS" in repr(res) and "efficiency" in repr(res)


def test_summary_equals_numpy_weighted_quantiles(binary_fit):
    res, _ = binary_fit
    for k in NAMES:
        x = res.samples[k]
        ref = np.quantile(x, [0.025, 0.16, 0.5, 0.84, 0.975], weights=res.weights, method="inverted_cdf")
        p = res.summary["parameters"][k]
        assert [p["interval_95"][0], p["interval_68"][0], p["median"], p["interval_68"][1],
                p["interval_95"][1]] == pytest.approx(ref, rel=0, abs=1e-12)
    assert res.summary["modes"]["n_modes"] == 1
    # the planet probability: importance-weighted, and the proposal's alone (its samples, unweighted)
    comp = res.summary["companion"]
    planet = res.samples["q"] < 0.01
    assert comp["q_max"] == 0.01
    assert comp["p_planet"] == pytest.approx(float(res.weights @ planet), abs=1e-12)
    assert comp["p_planet_flow"] == pytest.approx(float(planet.mean()), abs=1e-12)
    assert "Planet probability P(q < 0.01)" in report_markdown(res)


def test_fluxes_per_sample_are_the_least_squares_solution(binary, binary_fit):
    event, _, _ = binary
    res, _ = binary_fit
    d = event.datasets[0]
    i = res.best_index()
    a = _magnifications(d.t, {k: np.array([res.samples[k][i]]) for k in NAMES})[0]
    design = np.stack([a, np.ones_like(a)], axis=1) / d.sigma[:, None]
    (fs, fb), *_ = np.linalg.lstsq(design, d.flux / d.sigma, rcond=None)
    assert res.f_s[i, 0] == pytest.approx(fs, rel=1e-8) and res.f_b[i, 0] == pytest.approx(fb, rel=1e-7)
    fl = res.summary["fluxes"]["W149"]
    assert fl["f_s"]["interval_95"][0] <= F_S <= fl["f_s"]["interval_95"][1]
    assert fl["f_b"]["interval_95"][0] <= F_B <= fl["f_b"]["interval_95"][1]
    assert fl["source_mag"]["median"] == pytest.approx(22.0, abs=0.05)


def test_low_efficiency_is_flagged_never_silent(binary):
    event, z_ref, cov = binary
    # a narrow proposal 8 sigma away: the flow "disagrees" with the likelihood
    model = GaussianProposal(z_ref, cov, scale=0.5, shift=np.array([8.0, 0, 0, 0, 0, 0]))
    with pytest.warns(RuntimeWarning, match="flow and the likelihood disagree"):
        res = fit(event, model, n=256, seed=0, progress=False, refine="is")
    assert res.status == "fail" and res.summary["status"] == "fail"
    assert res.importance["efficiency"] < 0.01 or res.importance["ess"] < 30
    assert any("LOW SAMPLE EFFICIENCY" in m for m in res.summary["messages"])
    assert "LOW SAMPLE EFFICIENCY" in repr(res)
    # the weighted planet probability is not presented as if it were trustworthy
    assert "The importance sampling failed: the weighted value rests on ESS" in report_markdown(res)


def test_bad_inputs_give_clear_errors(binary):
    event, z_ref, cov = binary
    model = GaussianProposal(z_ref, cov)
    d = event.datasets[0]
    flux = d.flux.copy()
    flux[17] = np.nan
    with pytest.raises(ValueError, match=r"column 'flux' has 1 non-finite value.*row 17"):
        fit((d.t, flux, d.sigma), model, n=16, progress=False)
    with pytest.raises(ValueError, match="FitSettings.refine=.mcmc. is not allowed: one of none, is, auto"):
        fit(event, model, refine="mcmc")
    with pytest.raises(ValueError, match="look like full JD/HJD"):
        fit((d.t + 2450000.0, d.flux, d.sigma), model, n=16, progress=False)
    with pytest.raises(ValueError, match="proposal_dataset 'X' is not one of"):
        fit(event, model, n=16, proposal_dataset="X", progress=False)


@pytest.fixture(scope="module")
def untrained_model():
    """The real Model wrapper and preprocessing around an untrained (identity-initialised) flow."""
    from mulens_sbi.models import Model
    from mulens_sbi.npe.config import EmbeddingConfig, FlowConfig, NPEConfig
    from mulens_sbi.npe.model import init_params
    from mulens_sbi.npe.posterior import Posterior
    from mulens_sbi.npe.transforms import ParameterSpace
    from mulens_sbi.preprocess import PreprocessConfig

    cfg = NPEConfig(flow=FlowConfig(n_layers=2, hidden=(16,)),
                    embedding=EmbeddingConfig(kind="binned_conv", out_dim=8, hidden=(16,), n_bins=64,
                                              channels=(8, 8)))
    space = ParameterSpace.create(("dt_0", "u_0", "t_E", "s", "q", "alpha"),
                                  ("identity", "identity", "log", "log", "log", "identity"),
                                  (-150, -1, 1, 0.2, 1e-5, 0), (150, 1, 100, 5, 1, 360))
    pcfg = PreprocessConfig()
    _, params = init_params(cfg, space.dim, np.zeros((1, pcfg.n_bins, 4)), jax.random.PRNGKey(0))
    return Model(Posterior(cfg, space, params), pcfg, "roman")


def test_real_preprocessing_errors_and_untrained_flow_fails_loudly(binary, untrained_model):
    event, _, _ = binary
    d = event.datasets[0]
    # too few points for the model (the preprocessing needs 50)
    with pytest.raises(ValueError, match="usable points; the model needs at least 50"):
        fit((d.t[:40], d.flux[:40], d.sigma[:40]), untrained_model, n=16, progress=False)
    # points far outside the model's view: used by the likelihood, not seen by the flow, reported.
    # An untrained flow is a prior-wide proposal: importance sampling must flag it, not hide it.
    t = np.concatenate([d.t[:-8], d.t[-1] + 400.0 + np.arange(8.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fit((t, d.flux, d.sigma), untrained_model, n=256, seed=0, progress=False, refine="is")
    assert res.status == "fail"
    assert any("outside the model's view" in m and m.startswith("8 point(s)") for m in res.messages)
    assert res.summary["model"] == "roman"


def test_cli_writes_outputs_and_refuses_overwrite(binary, binary_fit, tmp_path, monkeypatch, capsys):
    import mulens_sbi.fit as fit_module

    event, z_ref, cov = binary
    d = event.datasets[0]
    path = tmp_path / "event.dat"
    np.savetxt(path, np.stack([d.t, d.flux, d.sigma], axis=1), header="HJD' flux flux_err")
    model = GaussianProposal(z_ref, cov, shift=0.7 * np.array([1, -1, 1, -1, 1, -1]))
    monkeypatch.setattr(fit_module, "_load_model", lambda name: model)
    out = tmp_path / "out"
    args = ["fit", str(path), "--model", "roman", "--out", str(out), "--n", "512", "--no-progress"]
    assert main(args) == 0
    for f in FIT_FILES:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    summ = json.loads((out / "summary.json").read_text())
    assert set(summ["parameters"]) == set(NAMES)
    for k in NAMES:
        p = summ["parameters"][k]
        assert set(p) >= {"median", "interval_68", "interval_95"}
    assert summ["importance_sampling"]["ess"] > 0 and "efficiency" in summ["importance_sampling"]
    assert set(summ["fluxes"]) == {"event"}
    tab = pq.read_table(out / "samples.parquet").to_pydict()
    assert set(tab) >= set(NAMES) | {"weight", "log_likelihood", "log_prior", "log_proposal", "f_s[event]",
                                     "f_b[event]"}
    assert sum(tab["weight"]) == pytest.approx(1.0)
    assert len(model.calls) == 1 and model.calls[0].datasets[0].t[0] == pytest.approx(d.t[0])
    before = (out / "summary.json").read_text()
    capsys.readouterr()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before and len(model.calls) == 1  # refused before fitting
    assert main(args + ["--overwrite", "--no-figures", "--seed", "1"]) == 0


def test_fit_settings_are_recorded_and_replay(binary, tmp_path, monkeypatch, capsys):
    """A fit records its FitSettings (``result.settings``, ``summary["settings"]``,
    ``fit_settings.toml``); the file and the summary's record read back to the same settings, and a
    fit from them (in Python, and ``mulens-sbi fit --settings``) gives bit-identical samples and
    weights (keywords overriding ``settings=`` are tested in tests/test_settings_commands.py)."""
    import mulens_sbi.fit as fit_module
    from mulens_sbi.fit import FitSettings, save_fit
    from mulens_sbi.inference.exact import ExactSettings
    from mulens_sbi.settings_file import load_settings, settings_from_dict

    event, z_ref, cov = binary
    model = GaussianProposal(z_ref, cov, scale=1.5, shift=0.3 * np.ones(6))
    st = FitSettings(n=300, refine="is", seed=11, degeneracy="off", progress=False, chunk_size=128,
                     exact=ExactSettings(time_budget_s=42.0, n_starts=7))
    res = fit(event, model, settings=st)
    assert res.settings == st and res.summary["settings"]["exact"]["n_starts"] == 7
    out = tmp_path / "fit"
    save_fit(res, out, figures=False)
    replay = load_settings(out / "fit_settings.toml", FitSettings)
    assert replay == st
    assert settings_from_dict(FitSettings, json.loads((out / "summary.json").read_text())["settings"]) == st
    again = fit(event, model, settings=replay)
    for k in NAMES:
        np.testing.assert_array_equal(again.samples[k], res.samples[k])
    np.testing.assert_array_equal(again.weights, res.weights)
    # the command replays the recorded file (the data are a file there; the model is patched in)
    d = event.datasets[0]
    path = tmp_path / "event.dat"
    np.savetxt(path, np.stack([d.t, d.flux, d.sigma], axis=1), header="HJD' flux flux_err")
    monkeypatch.setattr(fit_module, "_load_model", lambda name: model)
    cli_out = tmp_path / "cli"
    assert main(["fit", str(path), "--out", str(cli_out), "--no-figures", "--settings",
                 str(out / "fit_settings.toml")]) == 0
    tab = pq.read_table(cli_out / "samples.parquet").to_pydict()
    np.testing.assert_array_equal(tab["s"], res.samples["s"])
    np.testing.assert_array_equal(tab["weight"], res.weights)
    assert load_settings(cli_out / "fit_settings.toml", FitSettings) == st
    # a bad file: an error naming the file and the key, before any work
    bad = tmp_path / "bad.toml"
    bad.write_text('n = 300\nrefine = "mcmc"\n')
    capsys.readouterr()
    assert main(["fit", str(path), "--out", str(tmp_path / "x"), "--settings", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"mulens-sbi fit: error: {bad}: FitSettings.refine='mcmc' is not allowed: one of" in err
    assert not (tmp_path / "x").exists()


PSPL = {"t_0": 50.0, "u_0": 0.2, "t_E": 15.0}


def pspl_flux(t, t_0, u_0, t_E, f_s, f_b):
    u = np.hypot((t - t_0) / t_E, u_0)
    return f_s * (u**2 + 2) / (u * np.sqrt(u**2 + 4)) + f_b


class PointLensProposal:
    """Test double for a single-lens model: a Gaussian over (t_0, u_0, log t_E), 1.5 times as wide as
    the linearised posterior (Gauss-Newton step from the truth, Fisher covariance; fluxes linear)."""

    name = "point-lens-test-double"
    names = ("t_0", "u_0", "t_E")
    half_width_days = 150.0
    priors = {"t_0": ("uniform", 0.0, 100.0), "u_0": ("uniform", -1.0, 1.0),
              "t_E": ("log_uniform", 1.0, 100.0)}

    def __init__(self, event, fluxes):
        z0 = np.array([PSPL["t_0"], PSPL["u_0"], math.log(PSPL["t_E"])])
        rows, resid = [], []
        for k, (d, (fs, fb)) in enumerate(zip(event.datasets, fluxes, strict=True)):
            cols = []
            for i in range(3):
                h = np.eye(3)[i] * 1e-6
                fp = pspl_flux(d.t, *(z0 + h)[:2], math.exp((z0 + h)[2]), fs, fb)
                fm = pspl_flux(d.t, *(z0 - h)[:2], math.exp((z0 - h)[2]), fs, fb)
                cols.append((fp - fm) / 2e-6)
            model = pspl_flux(d.t, *z0[:2], math.exp(z0[2]), fs, fb)
            block = np.zeros((d.n, 2 * event.n_datasets))
            block[:, 2 * k], block[:, 2 * k + 1] = (model - fb) / fs, 1.0
            rows.append(np.concatenate([np.stack(cols, axis=1), block], axis=1) / d.sigma[:, None])
            resid.append((d.flux - model) / d.sigma)
        j, r = np.concatenate(rows), np.concatenate(resid)
        cov = np.linalg.inv(j.T @ j)
        self.mu = z0 + (cov @ (j.T @ r))[:3]
        self.chol = 1.5 * np.linalg.cholesky(cov[:3, :3])

    def sample(self, event, n, key):
        rng = np.random.default_rng(np.asarray(key).tolist())
        eps = rng.standard_normal((n, 3))
        z = self.mu + eps @ self.chol.T
        log_q = (-0.5 * np.sum(eps**2, axis=1) - np.sum(np.log(np.diag(self.chol)))
                 - 1.5 * math.log(2 * math.pi))
        return {"t_0": z[:, 0], "u_0": z[:, 1], "t_E": np.exp(z[:, 2])}, log_q - z[:, 2]


def test_two_datasets_and_nuts_refinement():
    rng = np.random.default_rng(7)
    datasets = []
    fluxes = ((1.0, 0.2), (3.0, 1.5))
    for name, n, (fs, fb) in zip(("A", "B"), (300, 120), fluxes, strict=True):
        t = np.sort(rng.uniform(20.0, 80.0, n))
        f = pspl_flux(t, PSPL["t_0"], PSPL["u_0"], PSPL["t_E"], fs, fb)
        datasets.append(Dataset(name, t, f + 0.01 * f * rng.standard_normal(n), 0.01 * f))
    event = Event(tuple(datasets), name="two-sites")
    model = PointLensProposal(event, fluxes)
    res_is = fit(event, model, n=1024, seed=0, progress=False)
    assert res_is.status in ("ok", "caution")
    assert any("the flow saw dataset 'A'" in m for m in res_is.messages)
    for name, fs, fb in (("A", 1.0, 0.2), ("B", 3.0, 1.5)):
        fl = res_is.summary["fluxes"][name]
        assert fl["f_s"]["interval_95"][0] <= fs <= fl["f_s"]["interval_95"][1]
        assert fl["f_b"]["interval_95"][0] <= fb <= fl["f_b"]["interval_95"][1]
    res = fit(event, model, n=1024, seed=0, refine="nuts", nuts_warmup=150, nuts_samples=300, nuts_chains=1,
              progress=False)
    assert res.method == "nuts" and res.nuts["n_samples"] == 300 and res.importance is not None
    assert np.allclose(res.weights, 1.0 / 300)
    for k in PSPL:
        lo, hi = res.summary["parameters"][k]["interval_95"]
        assert lo <= PSPL[k] <= hi, (k, lo, hi)
        # NUTS and importance sampling estimate the same posterior (medians within 0.5 of the IS 1-sigma
        # width; both are noisy estimates with ESS of a few hundred)
        p_is = res_is.summary["parameters"][k]
        width = 0.5 * (p_is["interval_68"][1] - p_is["interval_68"][0])
        assert abs(res.summary["parameters"][k]["median"] - p_is["median"]) < 0.5 * width
    fig = res.plot_lightcurve(n_draws=5)
    assert len(fig.axes) == 2  # no anomaly zoom for a point lens


@pytest.mark.slow
def test_restricted_prior_truncates_the_flow_and_the_importance_prior(binary, untrained_model, capsys):
    """``restrict``: every sample lies in the restricted range; the flow's probability of the range is
    reported (checked against the in-range fraction of unrestricted draws, 4 binomial σ); the
    importance-sampling prior is the restricted one: its log density exceeds the full prior's by
    exactly log 4 (u_0 uniform on [-1, 1] -> [-1, 0]: log 2; s log-uniform on [0.2, 5] -> [1, 5]:
    log(ln 25 / ln 5) = log 2); a model without restricted sampling and a bad --restrict are refused."""
    from mulens_sbi.fit import model_priors
    from mulens_sbi.inference.importance import log_prior

    event, _, _ = binary
    restrict = {"s": (1.0, None), "u_0": (None, 0.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the untrained flow fails importance sampling
        res = fit(event, untrained_model, n=2000, seed=1, progress=False, restrict=restrict, degeneracy="off",
                  refine="is")
    assert np.all(res.samples["s"] >= 1.0) and np.all(res.samples["u_0"] <= 0.0) and res.n == 2000
    r = res.summary["restrict"]
    assert r["ranges"] == {"s": [1.0, None], "u_0": [None, 0.0]} and r["text"] == "1 ≤ s, u_0 ≤ 0"
    free, _ = untrained_model.sample(event, 20000, 7)
    ok = np.isfinite(free["s"])
    frac = np.mean((free["s"][ok] >= 1.0) & (free["u_0"][ok] <= 0.0))
    assert abs(r["flow_mass"] - frac) < 4 * math.sqrt(frac * (1 - frac) / 2000), (r["flow_mass"], frac)
    assert any(m.startswith("prior restricted to 1 ≤ s, u_0 ≤ 0") for m in res.messages)
    full = model_priors(untrained_model, event)
    lp_full = np.asarray(log_prior(full, {k: res.samples[k] for k in full}))
    np.testing.assert_allclose(res.log_prior - lp_full, math.log(4.0), atol=1e-9)
    with pytest.raises(ValueError, match="cannot sample a restricted prior"):
        fit(event, GaussianProposal(np.zeros(6), np.eye(6)), n=16, progress=False,
            restrict={"q": (None, 0.01)})
    with pytest.raises(ValueError, match=r"s range \[0.1, 5\] must be non-empty and inside the model's"):
        fit(event, untrained_model, n=16, progress=False, restrict={"s": (0.1, None)})
    assert main(["fit", "x.dat", "--out", "nowhere", "--restrict", "t_0=1:2"]) != 0
    assert "t_0' cannot be restricted" in capsys.readouterr().err


def test_nuts_status_rule():
    """The NUTS verdict: the demo event's stuck chains (R-hat 8.8, 594 of 600 divergent) fail, as do a
    stuck single chain (n_eff NaN) and one with 15 effective samples; mild problems are a caution."""
    from mulens_sbi.fit import nuts_status

    assert nuts_status(8.79, 2, 594, 600, 1.0) == "fail"
    assert nuts_status(math.inf, 4, 0, 600, 400.0) == "fail"  # stuck chains: R-hat not finite
    assert nuts_status(float("nan"), 1, 0, 300, float("nan")) == "fail"
    assert nuts_status(1.01, 2, 0, 600, 15.0) == "fail"
    assert nuts_status(1.01, 2, 61, 600, 400.0) == "fail"
    assert nuts_status(1.08, 2, 0, 600, 400.0) == "caution"
    assert nuts_status(1.01, 2, 3, 600, 400.0) == "caution"
    assert nuts_status(float("nan"), 1, 0, 300, 80.0) == "caution"
    assert nuts_status(1.01, 2, 0, 600, 400.0) == "ok"
    assert nuts_status(float("nan"), 1, 0, 300, 250.0) == "ok"


def test_exact_status_rule():
    """The exact stage's verdict from ESS and Pareto k-hat: efficiency plays no part (the draws grow
    until the ESS target); heavy-tailed weights are a caution (k-hat > 0.7) or a failure (> 1)."""
    from mulens_sbi.fit import exact_status

    assert exact_status(250.0, 0.3)[0] == "ok"
    assert exact_status(250.0, float("nan"))[0] == "ok"  # equal weights: k-hat not estimable
    assert exact_status(250.0, 0.8)[0] == "caution"
    assert exact_status(60.0, 0.3)[0] == "caution"
    assert exact_status(29.0, 0.3)[0] == "fail"
    assert exact_status(250.0, 1.2)[0] == "fail"
    assert exact_status(250.0, math.inf)[0] == "fail"
    assert "k-hat 0.80" in exact_status(250.0, 0.8)[1]


class RestrictableGaussian(GaussianProposal):
    """``GaussianProposal`` that can also be truncated to a restriction by rejection, reporting the
    fraction of draws kept (``acceptance``), as the real models do."""

    def sample(self, event, n, key, return_info=False, restrict=None, max_rounds=20):
        restrict = restrict or {}
        out, lqs, drawn, kept = [], [], 0, 0
        for r in range(max_rounds):
            smp, lq = GaussianProposal.sample(self, event, n, np.asarray(key).tolist() + [r])
            ok = np.ones(n, bool)
            for k, (lo, hi) in restrict.items():
                ok &= (smp[k] >= (-np.inf if lo is None else lo)) & (smp[k] <= (np.inf if hi is None else hi))
            drawn, kept = drawn + n, kept + int(ok.sum())
            out.append({k: v[ok] for k, v in smp.items()})
            lqs.append(lq[ok])
            if kept >= n:
                break
        # samples that could not be drawn are NaN, as the real sampler leaves them
        smp = {k: np.concatenate([np.concatenate([o[k] for o in out]), np.full(n, np.nan)])[:n]
               for k in NAMES}
        lq = np.concatenate([np.concatenate(lqs), np.full(n, np.nan)])[:n]
        info = {"acceptance": kept / drawn, "mass_within": kept / drawn}
        return (smp, lq, info) if return_info else (smp, lq)


def test_log_evidence_adds_up_over_a_split_prior(binary):
    """Evidence under restricted priors: with u_0 ~ U(-1, 1) split at u*, Z = P(A) Z_A + P(B) Z_B with
    P(A) = (u* + 1)/2, P(B) = (1 − u*)/2, within 4 of the reported standard errors. The flow is
    truncated to each half (about half its mass), so without the acceptance correction each Z_A,
    Z_B would come out about twice too large and the sum would miss by log 2."""
    event, z_ref, cov = binary
    model = RestrictableGaussian(z_ref, cov, scale=1.5)
    kw = {"n": 2048, "seed": 4, "progress": False, "degeneracy": "off"}
    full = fit(event, model, **kw).importance
    u_star = float(from_z(z_ref)["u_0"])
    a = fit(event, model, restrict={"u_0": (None, u_star)}, **kw).importance
    b = fit(event, model, restrict={"u_0": (u_star, None)}, **kw).importance
    assert 0.3 < a["proposal_acceptance"] < 0.7 and 0.3 < b["proposal_acceptance"] < 0.7
    z_sum = np.logaddexp(math.log((u_star + 1) / 2) + a["log_evidence"],
                         math.log((1 - u_star) / 2) + b["log_evidence"])
    err = math.sqrt(full["log_evidence_err"] ** 2 + a["log_evidence_err"] ** 2 + b["log_evidence_err"] ** 2)
    assert abs(z_sum - full["log_evidence"]) < 4 * err + 0.02, (z_sum, full["log_evidence"], err)
    assert err < 0.1  # so that a log 2 error could not pass
    # a range the proposal gives no mass: a clear error, not an empty posterior
    with pytest.raises(ValueError, match=r"no flow sample inside the restricted range q ≤ 0.0001 in 50"):
        fit(event, model, restrict={"q": (None, 1e-4)}, **dict(kw, n=16))
