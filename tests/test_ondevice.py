"""Training batches simulated on the device (``mulens_sbi.data.ondevice``) against the shard path.

A small whole-season spec (two 30-day seasons at a 3-hour cadence, 241 points, planetary and
stellar-binary lenses near resonance so that caustic crossings are common: P(C) ~ 3.6%) keeps the
CPU cost down; the code paths are the ones a Roman season takes. One enriched sampler is compiled
once for the module: its prior rows are plain prior draws (compared with the shard path), its
candidate slots are the enrichment (compared with ``simulate_conditioned`` and the prior's class
rate). Statistical checks: two-sample Kolmogorov–Smirnov p > 1e-3 per marginal, per-cell-group mean
differences within 5 standard errors, class probabilities within 4 combined standard errors; seeds
fixed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mulens_sbi.data.conditioned import simulate_conditioned
from mulens_sbi.data.ondevice import OnDeviceSettings, OnDeviceSimulator, allocate
from mulens_sbi.data.prebin import accepted_mask, bin_rows
from mulens_sbi.data.samplers import BinnedSimulator
from mulens_sbi.data.shards import make_shard, table_arrays
from mulens_sbi.preprocess import PreprocessConfig
from mulens_sbi.survey import Survey
from mulens_sbi.survey.device import (
    draw_prior,
    flux_sigma_jax,
    prior_probability_below,
    season_observations,
    season_tables,
)
from mulens_sbi.survey.noise import flux_sigma
from mulens_sbi.survey.priors import sample_parameters
from mulens_sbi.survey.spec import simulators_dir

CFG = PreprocessConfig()
BATCH = 256
N_BATCHES = 48
KS_P = 1e-3


def small_season_spec(path: Path, days: float = 30.0, cadence_min: float = 180.0) -> Path:
    """roman_season.toml with two short seasons, a coarse cadence and priors near resonance."""
    text = (simulators_dir() / "roman_season.toml").read_text()
    seasons = ((11449.125, 11449.125 + days), (11635.75, 11635.75 + days))
    text = re.sub(r"\[\[seasons\]\].*?(?=\[cadence\])",
                  "".join(f"[[seasons]]\nstart = {a}\nend = {b}\n\n" for a, b in seasons), text, flags=re.S)
    per = int(days * 1440.0 / cadence_min) + 1
    text = text.replace("interval_min = 15.16", f"interval_min = {cadence_min}")
    text = text.replace("n_points = 6840", f"n_points = {per}")
    priors = {"u_0": ("uniform", -0.5, 0.5), "t_E": ("log_uniform", 2.0, 30.0),
              "s": ("log_uniform", 0.5, 2.0), "q": ("log_uniform", 1e-3, 0.1)}
    for name, (dist, lo, hi) in priors.items():
        text = re.sub(rf"\[priors\.{name}\]\n.*?(?=\n\[)",
                      f'[priors.{name}]\ndist = "{dist}"\nlow = {lo}\nhigh = {hi}', text, flags=re.S)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Survey:
    return Survey.load(str(small_season_spec(tmp_path_factory.mktemp("od") / "small_season.toml")))


@pytest.fixture(scope="module")
def device_draws(survey):
    """N_BATCHES enriched batches (λ = 0.25) with the shard path's noise construction."""
    sim = OnDeviceSimulator(survey, CFG, BATCH, OnDeviceSettings(enrich_fraction=0.25,
                                                                 reference_noise="independent"),
                            pilot_key=jax.random.PRNGKey(1))
    outs = [jax.device_get(sim.draw(jax.random.PRNGKey(100 + i))) for i in range(N_BATCHES)]
    return sim, outs


def _ks(a, b) -> float:
    return float(stats.ks_2samp(np.asarray(a), np.asarray(b)).pvalue)


def _net_columns(theta: np.ndarray) -> dict[str, np.ndarray]:
    return {"dt_0": theta[:, 0], "u_0": theta[:, 1], "log t_E": np.log(theta[:, 2]),
            "log s": np.log(theta[:, 3]), "log q": np.log(theta[:, 4]), "alpha": theta[:, 5]}


def _cell_groups(x: np.ndarray, groups: int = 16):
    """Per light curve and group of cells: filled fraction, mean normalized flux and mean log error
    over the filled cells."""
    has, fn, sn = x[..., 3], x[..., 1], x[..., 2]
    shape = (x.shape[0], groups, -1)
    n = has.reshape(shape).sum(2)
    return (has.reshape(shape).mean(2), (fn * has).reshape(shape).sum(2) / np.maximum(n, 1),
            (np.log(np.where(has > 0, sn, 1.0)) * has).reshape(shape).sum(2) / np.maximum(n, 1))


def test_device_priors_seasons_and_noise_equal_the_numpy_ones(survey, tmp_path):
    spec = survey.spec
    n = 4000
    got = jax.device_get(jax.jit(lambda k: draw_prior(spec, k, n))(jax.random.PRNGKey(0)))
    ref = sample_parameters(spec, np.random.default_rng(0), n)
    for name in ("t_0", "u_0", "t_E", "s", "q", "alpha", "source_mag", "blend_fraction", "f_s"):
        assert _ks(got[name], ref[name]) > KS_P, name
    np.testing.assert_allclose(got["f_b"], got["f_s"] * got["blend_fraction"] / (1 - got["blend_fraction"]))
    # q below q_max: the prior conditioned on it, with the probability it conditions on
    low = jax.device_get(draw_prior(spec, jax.random.PRNGKey(1), n, q_below=0.01))["q"]
    assert low.max() < 0.01 and _ks(low, ref["q"][ref["q"] < 0.01]) > KS_P
    assert prior_probability_below(spec, "q", 0.01) == pytest.approx(0.5)
    assert np.mean(ref["q"] < 0.01) == pytest.approx(0.5, abs=5 * np.sqrt(0.25 / n))
    # the noise model, space and ground
    flux = 10 ** np.linspace(-2, 3, 50)
    np.testing.assert_allclose(np.asarray(flux_sigma_jax(jnp.asarray(flux), spec.noise)),
                               flux_sigma(flux, spec.noise), rtol=1e-13)
    kmt = Survey.load("kmtnet").spec
    see = np.linspace(0.8, 2.5, 50)
    np.testing.assert_allclose(np.asarray(flux_sigma_jax(jnp.asarray(flux), kmt.noise, jnp.asarray(see))),
                               flux_sigma(flux, kmt.noise, see), rtol=1e-13)
    # whole-season observations of a ground survey (nights, weather, seeing, gaps) against the numpy
    # draw: KMTNet's 150-minute field class over its 244-day season
    text = (simulators_dir() / "kmtnet.toml").read_text()
    start, end = text.index("n_points = 2048"), text.index("max_half_width_days = 120.0")
    text = text[:start] + 'n_points = 17862\nwindow = "season"\n' + text[text.index("\n", end) + 1:]
    (tmp_path / "kmt_season.toml").write_text(text)
    ground = Survey.load(str(tmp_path / "kmt_season.toml"))
    tables = season_tables(ground.spec, ground.schedule)
    assert [tb.length for tb in tables] == [17862, 8928, 4464, 1785]
    m = 300
    t_0 = sample_parameters(ground.spec, np.random.default_rng(2), m)["t_0"]
    obs = ground.observations(np.random.default_rng(3), {"t_0": t_0, "t_E": np.ones(m)},
                              field=np.full(m, 3, np.int16))
    dev = jax.device_get(season_observations(ground.spec, tables[3], jax.random.PRNGKey(4), jnp.asarray(t_0)))
    assert np.all(dev["t"][dev["mask"]] >= 9630.5) and np.all(np.diff(dev["t"], axis=1) >= 0)
    assert _ks(obs.mask.sum(1), dev["mask"].sum(1)) > KS_P
    for k in range(3):  # seeing of the kept exposures, per site
        a = np.log(obs.seeing[obs.mask & (obs.site == k)])
        b = np.log(dev["seeing"][dev["mask"] & (dev["site"] == k)])
        assert abs(a.mean() - b.mean()) < 5 * np.hypot(a.std() / np.sqrt(a.size), b.std() / np.sqrt(b.size))


@pytest.mark.slow
def test_on_device_batches_equal_the_shard_path_in_distribution(survey, device_draws):
    """Prior rows of the device batches against shards made, read and pre-binned by the shard path
    with fresh binned noise (the same construction): parameters, fluxes, numbers of points, the
    reference time and the network input cell by cell."""
    _, outs = device_draws
    blocks = [o["blocks"][0] for o in outs]
    prior = [~b["slot"] for b in blocks]
    theta_d = np.concatenate([b["theta_net"][p] for b, p in zip(blocks, prior, strict=True)])
    x_d = np.concatenate([b["x"][p] for b, p in zip(blocks, prior, strict=True)])
    par_d = {k: np.concatenate([b["params"][k][p] for b, p in zip(blocks, prior, strict=True)])
             for k in ("f_s", "f_b")}
    nobs_d = np.concatenate([b["mask"][p].sum(1) for b, p in zip(blocks, prior, strict=True)])
    acc_d = np.concatenate([b["accepted"][p] for b, p in zip(blocks, prior, strict=True)])
    n = theta_d.shape[0]
    d = table_arrays(make_shard(survey, 7, 0, n, 0, 256))
    binned = bin_rows(d, CFG)
    acc = accepted_mask(binned, CFG)
    assert acc.mean() == pytest.approx(acc_d.mean(), abs=0.02)
    sim = BinnedSimulator({k: binned[k][acc] for k in ("theta_net", "mean", "err", "count")}, CFG)
    theta_s, x_s = (np.asarray(a) for a in sim.rows(np.arange(int(acc.sum())), np.random.default_rng(8)))
    cols_s, cols_d = _net_columns(theta_s), _net_columns(theta_d[acc_d])
    for name in cols_s:
        assert _ks(cols_s[name], cols_d[name]) > KS_P, name
    assert _ks(np.log(d["f_s"]), np.log(par_d["f_s"])) > KS_P
    assert _ks(d["f_b"] / (d["f_s"] + d["f_b"]), par_d["f_b"] / (par_d["f_s"] + par_d["f_b"])) > KS_P
    assert _ks(d["mask"].sum(1), nobs_d) > KS_P
    for name, gs, gd in zip(("filled", "flux", "log sigma"), _cell_groups(x_s), _cell_groups(x_d[acc_d]),
                            strict=True):
        se = np.sqrt(gs.var(0) / len(gs) + gd.var(0) / len(gd))
        z = np.where(se > 0, (gs.mean(0) - gd.mean(0)) / np.where(se > 0, se, 1.0), 0.0)
        assert np.all(np.abs(z) < 5), (name, np.round(z, 1))
    assert np.all(np.isfinite(x_d))


@pytest.mark.slow
def test_enrichment_weights_keep_the_prior(survey, device_draws):
    """The candidate slots hold caustic-crossing rows drawn from the prior conditioned on the class
    (as ``simulate_conditioned`` draws them), and the weights make the batches' weighted class share
    the prior's class probability and their mean weight 1."""
    sim, outs = device_draws
    lay = sim.layout[0]
    assert lay["prior_rows"] == 192 and lay["slots"] == 64 and lay["lens_groups"] >= 4
    assert lay["n_cand"] == pytest.approx(lay["lens_groups"] * 16 / 0.5)
    assert lay["w_other"] == pytest.approx(256 / 192)
    assert lay["w_class"] == pytest.approx(256 / (192 + lay["n_cand"]))
    diag = {k: sum(float(o["diagnostics"][k]) for o in outs) for k in outs[0]["diagnostics"]}
    assert diag["overflow"] == 0 and diag["refused"] == 0
    w = np.concatenate([o["weights"] for o in outs])
    cls = np.concatenate([o["in_class"] for o in outs])
    slot = np.concatenate([o["blocks"][0]["slot"] for o in outs])
    assert np.all(w[slot & ~cls] == 0) and np.all(w[cls] == pytest.approx(lay["w_class"]))
    assert np.all(w[~slot & ~cls] == pytest.approx(lay["w_other"]))
    n_rows = w.size
    # E[Σw]/N = 1 and Σ w·1_C / N estimates P(C): against the conditioned simulation's acceptance
    data, cond = simulate_conditioned(survey, np.random.default_rng(5), 150, n_lens=1024, batch_size=128)
    p_ref = cond.probability
    k_lens = cond.n_candidates / cond.n_lenses
    se_ref = np.sqrt(max(cond.sum_sq_per_lens / k_lens**2 - cond.n_lenses * p_ref**2, 0.0)
                     / (cond.n_lenses - 1) / cond.n_lenses)
    # three estimates of P(C): the prior rows' class share, the candidates' (class rows among the
    # n_cand prior draws they stand for) and the weighted one the loss uses, Σ w·1_C / N; class rows
    # of candidates cluster by lens (16 trajectories each): standard errors from per-batch values
    r_prior = diag["in_class_prior"] / diag["prior_rows"]
    se_prior = np.sqrt(p_ref * (1 - p_ref) / diag["prior_rows"])
    per_cand = [float(o["diagnostics"]["in_class_candidates"]) / lay["n_cand"] for o in outs]
    per_batch = [float(np.sum(o["weights"] * o["in_class"])) / BATCH for o in outs]
    checks = {"prior rows": (r_prior, se_prior),
              "candidates": (np.mean(per_cand), np.std(per_cand, ddof=1) / np.sqrt(len(outs))),
              "weighted": (float(np.sum(w * cls)) / n_rows, np.std(per_batch, ddof=1) / np.sqrt(len(outs)))}
    print(f"P(C) conditioned simulation {p_ref:.4f} ± {se_ref:.4f}; " +
          "; ".join(f"{k} {v:.4f} ± {e:.4f}" for k, (v, e) in checks.items()))
    for name, (value, se) in checks.items():
        assert abs(value - p_ref) < 4 * np.hypot(se, se_ref), name
    batch_means = [o["weights"].mean() for o in outs]
    assert abs(float(w.mean()) - 1.0) < 4 * np.std(batch_means, ddof=1) / np.sqrt(len(outs))
    # the class rows of the candidate slots are conditioned prior draws
    rows = [o["blocks"][0] for o in outs]
    keep = [b["slot"] & b["in_class"] for b in rows]
    got = {k: np.concatenate([b["params"][k][m] for b, m in zip(rows, keep, strict=True)])
           for k in ("s", "q", "u_0")}
    assert got["q"].size >= 300 and np.all(got["q"] < 0.01)
    for name, f in (("s", np.log), ("q", np.log), ("u_0", np.abs)):
        assert _ks(f(got[name]), f(data[name])) > KS_P, name


def test_settings_layout_and_refusals(survey):
    assert allocate(10, [0.35, 0.15, 0.3, 0.2]) == [4, 1, 3, 2]
    assert sum(allocate(513, [1.0, 2.0, 3.0])) == 513
    with pytest.raises(ValueError, match="reference_noise='both'"):
        OnDeviceSettings(reference_noise="both")
    with pytest.raises(ValueError, match="enrich_fraction=1.0"):
        OnDeviceSettings(enrich_fraction=1.0)
    with pytest.raises(ValueError, match="lightcurve.window = 'season', got 'event'"):
        OnDeviceSimulator(Survey.load("roman"), CFG, 64)
    with pytest.raises(ValueError, match="at least 1 slot"):
        OnDeviceSimulator(survey, CFG, 4, OnDeviceSettings(enrich_fraction=0.05))
    sim = OnDeviceSimulator(survey, CFG, 8)
    with pytest.raises(ValueError, match="batches of 8 rows, asked for 16"):
        sim(jax.random.PRNGKey(0), 16)


@pytest.mark.slow
def test_training_with_batches_simulated_on_the_device(survey, tmp_path):
    """``run_training(sampler="simulate")``: no data folder; stops on its time limit and resumes;
    the model records the on-device settings and what was simulated; the CLI builds the settings."""
    from mulens_sbi.cli import build_parser, train_settings
    from mulens_sbi.models import load_model
    from mulens_sbi.npe.config import EmbeddingConfig, FlowConfig, TrainConfig
    from mulens_sbi.training import TrainSettings, run_training

    n_bins = 64
    settings = TrainSettings(
        out=str(tmp_path / "model"), checkpoint_dir=str(tmp_path / "ckpt"), sampler="simulate",
        survey=survey.spec.path, preprocess=PreprocessConfig(n_bins=n_bins, min_points=20, min_cells=8),
        embedding=EmbeddingConfig(kind="binned_conv", out_dim=16, hidden=(32,), n_bins=n_bins,
                                  channels=(8, 16, 16), blocks_per_stage=0, kernel_size=5),
        flow=FlowConfig(n_layers=3, hidden=(32, 32), n_bins=6),
        train=TrainConfig(max_steps=60, batch_size=64, learning_rate=3e-3, warmup_steps=10, val_size=128,
                          eval_every=20, patience=0, checkpoint_every=20, seed=0),
        ondevice=OnDeviceSettings(enrich_fraction=0.25, pilot_lenses=1024), max_minutes=1e-6, progress=False)
    first = run_training(settings, log=lambda m: None)
    assert first["finished"] is False and first["ondevice"]["rows"] == 64.0
    summary = run_training(TrainSettings(**{**settings.__dict__, "max_minutes": 0.0}), log=lambda m: None)
    assert summary["finished"] and summary["steps"] == 60 and summary["n_train_rows"] == 60 * 64
    hist = json.loads((tmp_path / "model" / "training.json").read_text())["history"]
    assert summary["best_val_loss"] < hist[0]["val_loss"]
    model = load_model(str(tmp_path / "model"))
    meta = model.posterior.metadata
    assert meta["settings"]["sampler"] == "simulate"
    assert meta["settings"]["ondevice"]["enrich_fraction"] == 0.25
    od = meta["training"]["ondevice_last_session"]  # (the first session's step was not checkpointed)
    assert od["rows"] == 60 * 64 and od["overflow"] == 0 and od["slots"] == 60 * 16
    assert meta["provenance"]["enrichment"]["ondevice"]["layout"][0]["slots"] == 16
    # the shard path's options are refused with this sampler
    with pytest.raises(ValueError, match="enrich"):
        run_training(TrainSettings(**{**settings.__dict__, "enrich": "x", "overwrite": True}))
    with pytest.raises(ValueError, match="data"):
        TrainSettings(data="d", out="o", sampler="simulate", survey="roman_season")
    with pytest.raises(ValueError, match="survey"):
        TrainSettings(data="d", out="o", survey="roman_season")
    args = build_parser().parse_args(["train", "--sampler", "simulate", "--survey", "roman_season",
                                      "--out", "o", "--simulate-enrich", "0.2"])
    s = train_settings(args)
    assert s.sampler == "simulate" and s.survey == "roman_season" and s.data == ""
    assert s.ondevice.enrich_fraction == 0.2
    # the shipped (event-window) model against whole-season events: validate --other-spec accepts a
    # caustic-crossing set of another spec (here the same spec, edited)

    from mulens_sbi.simulate import SimulateSettings, run_simulation
    from mulens_sbi.validation import ValidateSettings, run_validation

    other = tmp_path / "other.toml"
    other.write_text(Path(survey.spec.path).read_text() + "\n# another spec\n")
    run_simulation(SimulateSettings(survey=str(other), n=4, out=str(tmp_path / "cross"), seed=4, shard_size=4,
                                    condition="caustic-crossing", progress=False), log=lambda m: None)
    v = ValidateSettings(model=str(tmp_path / "model"), n=10, n_samples=50,
                         caustic_data=str(tmp_path / "cross"), out=str(tmp_path / "val"), progress=False)
    with pytest.raises(ValueError, match="another survey spec"):
        run_validation(v, log=lambda m: None)
    rep = run_validation(dataclasses.replace(v, other_spec=True), log=lambda m: None)
    assert rep["caustic_crossing_planetary_set"]["n_events"] == 4


@pytest.mark.slow
def test_finite_source_training_curves_agree_with_vbmicrolensing(tmp_path):
    """A finite-source spec (ρ log-uniform in 1e-3..1e-2, trajectories through resonant and central
    caustics): every certified magnification of a random on-device batch, read back from its
    noiseless flux, agrees with VBMicrolensing ``BinaryMag2`` (RelTol 1e-5) within 1e-3 relative; the
    batch holds caustic crossings where the finite source matters (≥ 1% from the point source), and
    uncertified points (masked and counted, as in the shard path) are rare. Slow: compiling the
    contour integrator for the batch takes minutes on the CPU."""
    import VBMicrolensing

    from mulens_sbi.lightcurve import source_trajectory

    path = small_season_spec(tmp_path / "finite.toml")
    text = path.read_text().replace('source = "point"', 'source = "finite"')
    near = {"u_0": (-0.1, 0.1), "s": (0.8, 1.25), "q": (1e-3, 1e-2), "rho": (1e-3, 1e-2)}
    for name, (lo, hi) in near.items():
        text = re.sub(rf"\[priors\.{name}\]\n.*?(?=\n\[)",
                      f'[priors.{name}]\ndist = "{"uniform" if name == "u_0" else "log_uniform"}"\n'
                      f"low = {lo}\nhigh = {hi}", text, flags=re.S)
    path.write_text(text)
    survey = Survey.load(str(path))
    assert survey.spec.model.source == "finite"
    sim = OnDeviceSimulator(survey, CFG, 16, OnDeviceSettings(enrich_fraction=0.25, pilot_lenses=256),
                            pilot_key=jax.random.PRNGKey(0))
    out = jax.device_get(sim.draw(jax.random.PRNGKey(11)))
    b, diag = out["blocks"][0], out["diagnostics"]
    p = b["params"]
    mag = (b["flux_true"] - p["f_b"][:, None]) / p["f_s"][:, None]
    x, y = (np.asarray(a) for a in source_trajectory(b["t"], p["t_0"][:, None], p["u_0"][:, None],
                                                      p["t_E"][:, None], p["alpha"][:, None]))
    vbm = VBMicrolensing.VBMicrolensing()
    vbm.RelTol, vbm.Tol = 1e-5, 1e-7
    worst, finite_effect, n_pts = 0.0, 0.0, 0
    for i in range(mag.shape[0]):
        for j in np.flatnonzero(b["mask"][i]):
            ref = vbm.BinaryMag2(p["s"][i], p["q"][i], -x[i, j], y[i, j], p["rho"][i])
            worst = max(worst, abs(mag[i, j] / ref - 1.0))
            point = vbm.BinaryMag0(p["s"][i], p["q"][i], -x[i, j], y[i, j])
            finite_effect = max(finite_effect, abs(ref / point - 1.0))
            n_pts += 1
    print(f"{n_pts} points, worst relative error {worst:.2e}, largest finite-source effect "
          f"{finite_effect:.2e}, class rows {int(out['in_class'].sum())}, unsolved "
          f"{diag['unsolved_points']:.0f}")
    assert worst < 1e-3
    assert finite_effect > 1e-2 and out["in_class"].sum() >= 1
    assert diag["unsolved_points"] <= 0.01 * n_pts
