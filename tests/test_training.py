"""End to end on a tiny set: simulate shards -> pre-binning -> train a tiny NPE -> load -> sample ->
validate (library and CLI).

To stay fast (< ~60 s on 2 cores) the light curves are made by the real ``run_simulation``
(Roman cadence, noise, priors, shards, manifest) on a 256-point copy of the Roman spec, with the
binary-lens solver replaced by the analytic single-lens (Paczynski) magnification, so that no solver
compile is needed. The data then carry information on (t_0, u_0, t_E) only, which is what the
assertions use: the tiny network must learn t_0 and t_E (posterior medians correlated with the
truths on held-out events), and must stay close to the prior for the planet parameters.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import jax
import numpy as np
import pytest

import mulens_sbi.data.lightcurves as lightcurves_mod
import mulens_sbi.simulate as simulate_mod
from mulens_sbi.cli import main
from mulens_sbi.data.prebin import accepted_mask, accepted_rows, class_flags, prepare_binned
from mulens_sbi.data.samplers import BinnedSimulator, DeviceSampler, MixtureSimulator, SharpEmphasis
from mulens_sbi.data.shards import condition_stats, read_simulation, shard_files
from mulens_sbi.models import load_model
from mulens_sbi.npe.config import EmbeddingConfig, FlowConfig, TrainConfig
from mulens_sbi.preprocess import PreprocessConfig
from mulens_sbi.survey.spec import resolve_spec_path
from mulens_sbi.training import TrainSettings, run_training
from mulens_sbi.validation import ValidateSettings, run_validation

N_BINS = 64


def _pspl(survey, params, t, batch_size):
    u = np.sqrt(params["u_0"][:, None] ** 2 + ((t - params["t_0"][:, None]) / params["t_E"][:, None]) ** 2)
    return (u ** 2 + 2) / (u * np.sqrt(u ** 2 + 4)), np.ones(t.shape, bool)


@pytest.fixture(scope="module")
def tiny_sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    text = resolve_spec_path("roman").read_text()
    text = re.sub(r"(?m)^n_points = 2048", "n_points = 256", text)
    (d / "tiny.toml").write_text(text)
    mp = pytest.MonkeyPatch()
    mp.setattr(lightcurves_mod, "_magnification", _pspl)
    try:
        simulate_mod.run_simulation(simulate_mod.SimulateSettings(
            survey=str(d / "tiny.toml"), n=1800, out=str(d / "sim"), seed=3, shard_size=600, batch_size=600,
            progress=False), log=lambda m: None)
    finally:
        mp.undo()
    return d


def _settings(d, **kw):
    pre = PreprocessConfig(n_bins=N_BINS, min_points=20, min_cells=8)
    return TrainSettings(
        data=str(d / "sim"), out=str(d / "model"), checkpoint_dir=str(d / "ckpt"), holdout_shards=1,
        preprocess=pre,
        embedding=EmbeddingConfig(kind="binned_conv", out_dim=16, hidden=(32,), n_bins=N_BINS,
                                  channels=(8, 16, 16), blocks_per_stage=0, kernel_size=5),
        flow=FlowConfig(n_layers=3, hidden=(32, 32), n_bins=6),
        train=TrainConfig(max_steps=200, batch_size=64, learning_rate=3e-3, warmup_steps=20, val_size=256,
                          eval_every=50, patience=0, checkpoint_every=50, seed=0),
        progress=False, **kw)


@pytest.fixture(scope="module")
def trained(tiny_sim):
    s = _settings(tiny_sim, max_minutes=1e-6)
    first = run_training(s, log=lambda m: None)       # stops after one step (time limit): resumable
    assert first["finished"] is False
    assert not (tiny_sim / "model" / "posterior.json").exists()
    summary = run_training(dataclasses.replace(s, max_minutes=0.0), log=lambda m: None)
    return tiny_sim, summary


def test_binned_simulator_is_seeded_and_redraws_noise(tiny_sim):
    cfg = PreprocessConfig(n_bins=N_BINS, min_points=20, min_cells=8)
    b = prepare_binned(shard_files(tiny_sim / "sim")[:1], cfg, tiny_sim / "b.npz", progress=False)
    sim = BinnedSimulator(b, cfg)
    k = jax.random.PRNGKey(5)
    th1, x1 = sim(k, 32)
    th2, x2 = sim(k, 32)
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
    th3, x3 = sim.rows(np.arange(4), np.random.default_rng(1))
    th4, x4 = sim.rows(np.arange(4), np.random.default_rng(2))
    np.testing.assert_array_equal(np.asarray(th3), np.asarray(th4))
    assert not np.allclose(np.asarray(x3)[..., 1], np.asarray(x4)[..., 1])    # fresh noise
    assert x1.shape == (32, N_BINS, 4)
    # the network-side t_0 is relative to the data's peak estimate, not the window centre
    assert np.median(np.abs(b["theta_net"][:, 0])) < 0.5 * np.median(b["theta_net"][:, 2])


@pytest.mark.slow
def test_device_sampler_draws_the_host_distribution(tiny_sim, tmp_path):
    """The device sampler (rows, mixture, noise and weights drawn with jax.random in one compiled
    function) against the host sampler it is built from: same rows in the same proportions (binomial,
    4 sigma), same weights per row, and per-cell mean and spread of the normalized flux within
    sampling error (5 sigma over 64 cells; spread within 15%). Also: worker processes pre-bin and
    flag exactly like one process."""
    cfg = PreprocessConfig(n_bins=N_BINS, min_points=20, min_cells=8)
    files = shard_files(tiny_sim / "sim")[:2]
    b = prepare_binned(files, cfg, None, progress=False)
    b2 = prepare_binned(files, cfg, None, progress=False, workers=2)
    for k in b:
        np.testing.assert_array_equal(b[k], b2[k], err_msg=k)
    np.testing.assert_array_equal(class_flags(files, "caustic-crossing", 0.01, None, False),
                                  class_flags(files, "caustic-crossing", 0.01, None, False, workers=2))
    pick = lambda rows: {k: v[rows] for k, v in b.items()}  # noqa: E731
    base, enrich = BinnedSimulator(pick([0, 1]), cfg), BinnedSimulator(pick([2]), cfg)
    # threshold 3: about the noise's own maximum over the cells, so a good share of draws is flagged
    host = SharpEmphasis(MixtureSimulator(base, np.array([True, False]), enrich, 0.3, 0.1), 3.0, 3.0)
    dev = DeviceSampler(host, cfg)
    n = 4000
    th_h, x_h, w_h = (np.asarray(a) for a in host(jax.random.PRNGKey(1), n))
    th_d, x_d, w_d = (np.asarray(a) for a in dev(jax.random.PRNGKey(1), n))
    th_again = np.asarray(dev(jax.random.PRNGKey(1), n)[1])
    np.testing.assert_array_equal(th_again, x_d)                       # a pure function of the key
    assert not np.array_equal(np.asarray(dev(jax.random.PRNGKey(2), n)[1]), x_d)
    rows = np.asarray(b["theta_net"][[0, 1, 2]], np.float32)
    which = lambda th: np.argmin(np.abs(th[:, None, :] - rows[None]).sum(-1), axis=1)  # noqa: E731
    r_h, r_d = which(th_h), which(th_d)
    np.testing.assert_allclose(th_d, rows[r_d], rtol=1e-6)
    sharp_shares = []
    for r, p in ((0, 0.35), (1, 0.35), (2, 0.3)):
        sd = np.sqrt(p * (1 - p) / n)
        assert abs(np.mean(r_h == r) - p) < 4 * sd and abs(np.mean(r_d == r) - p) < 4 * sd
        # the weight of a row, up to the sharp-feature factor (1 or 3), is the mixture's
        wh, wd = w_h[r_h == r], w_d[r_d == r]
        w_mix = {0: host.sim.w_class, 1: host.sim.w_other, 2: host.sim.w_class}[r]
        assert set(np.round(wh / w_mix, 5)) <= {1.0, 3.0} and set(np.round(wd / w_mix, 5)) <= {1.0, 3.0}
        sh, sd_ = np.mean(wh > 1.5 * w_mix), np.mean(wd > 1.5 * w_mix)   # share of sharp-flagged draws
        sharp_shares.append(sh)
        assert abs(sh - sd_) < 5 * np.sqrt(0.25 / len(wh) + 0.25 / len(wd)), (r, sh, sd_)
        fh, fd = x_h[r_h == r][..., 1], x_d[r_d == r][..., 1]
        se = np.sqrt(fh.var(0) / len(fh) + fd.var(0) / len(fd)) + 1e-9
        assert np.max(np.abs(fh.mean(0) - fd.mean(0)) / se) < 5
        has = x_h[r_h == r][0, :, 3] > 0
        np.testing.assert_allclose(fd.std(0)[has], fh.std(0)[has], rtol=0.15)
    assert any(0.05 < x < 0.95 for x in sharp_shares), sharp_shares  # the emphasis is exercised


def test_training_end_to_end(trained):
    d, summary = trained
    assert summary["finished"] and summary["steps"] == 200
    hist = json.loads((d / "model" / "training.json").read_text())["history"]
    assert hist[-1]["step"] == 200
    # it learned: best validation loss well below the first evaluation's
    assert summary["best_val_loss"] < hist[0]["val_loss"] - 0.3
    model = load_model(str(d / "model"))
    assert model.names == ("t_0", "u_0", "t_E", "s", "q", "alpha")
    assert model.preprocess_config.n_bins == N_BINS
    # provenance records the code's commit (or "unknown" outside a checkout)
    from mulens_sbi.npe.checkpoint import code_commit

    assert model.posterior.metadata["provenance"]["code_commit"] == code_commit()
    # held-out events (last shard): medians of t_0 and t_E track the truths
    tab = read_simulation(d / "sim")
    rows = np.arange(1200, 1240)
    med = {"t_0": [], "t_E": [], "q": []}
    for i in rows:
        smp, lq = model.sample((tab["t"][i], tab["flux"][i], tab["sigma"][i], tab["mask"][i]), 100,
                               jax.random.PRNGKey(int(i)))
        assert set(smp) == set(model.names) and lq.shape == (100,) and np.all(np.isfinite(lq))
        assert np.all((smp["alpha"] >= 0) & (smp["alpha"] <= 360)) and np.all(smp["t_E"] > 0)
        for k in med:
            med[k].append(np.median(smp[k]))
    dt0 = np.abs(np.array(med["t_0"]) - tab["t_0"][rows]) / tab["t_E"][rows]
    assert np.median(dt0) < 0.1
    r = np.corrcoef(np.log(med["t_E"]), np.log(tab["t_E"][rows]))[0, 1]
    assert r > 0.6
    # q is not in the (single-lens) data: its posterior median stays near the prior's median (1e-2.5)
    assert abs(np.median(np.log10(med["q"])) + 2.5) < 1.0


@pytest.mark.slow
def test_validate_library_and_cli(trained, tmp_path):
    d, _ = trained
    rep = run_validation(ValidateSettings(model=str(d / "model"), data=str(d / "sim"), n=60, n_samples=64,
                                          out=str(tmp_path / "v"), holdout_shards=1, caustic_subset=False,
                                          progress=False), log=lambda m: None)
    assert rep["n_cases"] + rep["n_excluded"] == 60 - rep["n_preprocess_failed"]
    for n in ("t_0", "u_0", "t_E", "s", "q", "alpha"):
        cov = np.asarray(rep["marginal_coverage"][n])
        assert cov.shape == (len(rep["levels"]),) and np.all(np.diff(cov) >= 0)
    saved = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert saved["figures"] == ["coverage.png", "recovery.png", "sbc.png", "reliability.png"]
    assert all((tmp_path / "v" / f).stat().st_size > 1000 for f in saved["figures"])
    # the planet-probability reliability covers every event, its bins in order
    rel = saved["planet_probability"]
    assert rel["q_max"] == 0.01 and sum(b["n"] for b in rel["bins"]) == rep["n_cases"] + rep["n_excluded"]
    assert all(b["lo"] <= b["predicted"] <= b["hi"] for b in rel["bins"] if b["n"])
    args = ["validate", "--model", str(d / "model"), "--data", str(d / "sim"), "--n", "40",
            "--n-samples", "50",
            "--holdout-shards", "1", "--out", str(tmp_path / "v"), "--no-progress"]
    assert main(args) == 2                      # outputs exist, no --overwrite
    with pytest.raises(SystemExit):
        main(["train", "--data", str(d / "sim")])   # --out is required


def test_warm_start_continues_from_the_trained_model(trained, tmp_path):
    """``init_from``: training starts from the given model's weights (its validation loss at the first
    evaluation is near the trained model's best, far below a fresh start's), the metadata says so,
    and a model with another network is refused with the difference named."""
    d, summary = trained
    s = dataclasses.replace(
        _settings(d), out=str(tmp_path / "ft"), checkpoint_dir=str(tmp_path / "ck"),
        init_from=str(d / "model"),
        train=dataclasses.replace(_settings(d).train, max_steps=50, learning_rate=1e-4, warmup_steps=5))
    ft = run_training(s, log=lambda m: None)
    hist = json.loads((tmp_path / "ft" / "training.json").read_text())["history"]
    fresh = json.loads((d / "model" / "training.json").read_text())["history"][0]["val_loss"]
    assert hist[0]["val_loss"] < summary["best_val_loss"] + 0.2 < fresh
    meta = load_model(str(tmp_path / "ft")).posterior.metadata["training"]
    assert meta["init_from"]["steps_done"] == 200 and meta["init_from"]["source"].endswith("model")
    assert ft["steps"] == 50
    # saving the checkpoint again (--stop) keeps the warm-start record
    run_training(dataclasses.replace(s, stop=True), log=lambda m: None)
    meta = load_model(str(tmp_path / "ft")).posterior.metadata["training"]
    assert not meta["stopped_by_user"] and meta["init_from"]["steps_done"] == 200  # it had finished
    assert meta["init_from"]["lineage_steps"] == 200
    bad = dataclasses.replace(s, out=str(tmp_path / "bad"), checkpoint_dir=str(tmp_path / "ck2"),
                              flow=FlowConfig(n_layers=2, hidden=(32, 32), n_bins=6))
    with pytest.raises(ValueError, match="network configuration differs"):
        run_training(bad, log=lambda m: None)


def test_warm_start_keeps_the_initial_models_standardization(trained, tmp_path):
    """A warm start on other training rows (here one more shard held out, as when sparse rows are
    left out) keeps the initial model's standardization, which its network was trained in, instead
    of refusing; a space with other bounds is refused with the difference named."""
    from mulens_sbi.training import _warm_start_space

    d, _ = trained
    s = dataclasses.replace(
        _settings(d), out=str(tmp_path / "ft"), checkpoint_dir=str(tmp_path / "ck"), holdout_shards=2,
        init_from=str(d / "model"),
        train=dataclasses.replace(_settings(d).train, max_steps=20, learning_rate=1e-4, warmup_steps=5,
                                  eval_every=10, checkpoint_every=10))
    run_training(s, log=lambda m: None)
    init_space = load_model(str(d / "model")).posterior.space
    new_space = load_model(str(tmp_path / "ft")).posterior.space
    assert new_space.to_dict() == init_space.to_dict()
    # the space this run would have fitted on its own rows differs in loc (else the test shows nothing)
    cfg = _settings(d).preprocess
    one_shard = prepare_binned(shard_files(d / "sim")[:1], cfg, progress=False)["theta_net"]
    own = init_space.standardized_from_samples(one_shard[: len(one_shard) - 256])
    assert not np.allclose(own.to_dict()["loc"], init_space.to_dict()["loc"])
    wider = init_space.to_dict()
    wider["upper"] = [u * 2 for u in wider["upper"]]
    with pytest.raises(ValueError, match=r"parameter space differs .*\['upper'\]"):
        _warm_start_space(type(init_space).from_dict(wider), init_space, "m")


def test_training_keeps_only_light_curves_inference_accepts(tiny_sim):
    """Rows that ``preprocess`` would refuse (too few points or filled cells) are left out of training,
    and the rows kept are exactly those ``preprocess`` accepts."""
    from mulens_sbi.preprocess import preprocess

    cfg = PreprocessConfig(n_bins=N_BINS, min_points=20, min_cells=8)
    b = prepare_binned(shard_files(tiny_sim / "sim")[:1], cfg, tiny_sim / "b2.npz", progress=False)
    # make a few rows sparse by hand: 10 points in one cell, and 30 points over 4 cells
    b = {k: v.copy() for k, v in b.items()}
    b["count"][0] = 0
    b["count"][0, 5] = 10
    b["count"][1] = 0
    b["count"][1, 3:7] = [8, 8, 7, 7]
    kept, n_drop = accepted_rows(b, cfg)
    assert n_drop >= 2 and kept["theta_net"].shape[0] == b["theta_net"].shape[0] - n_drop
    # on the real (unmodified) rows the rule agrees with preprocess
    tab = read_simulation(tiny_sim / "sim")
    b0 = prepare_binned(shard_files(tiny_sim / "sim")[:1], cfg, tiny_sim / "b3.npz", progress=False)
    cnt = b0["count"]
    ok_rule = (cnt.sum(axis=1) >= cfg.min_points) & ((cnt > 0).sum(axis=1) >= cfg.min_cells)
    for i in range(40):
        try:
            preprocess(tab["t"][i], tab["flux"][i], tab["sigma"][i], tab["mask"][i], cfg)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == bool(ok_rule[i]), i


@pytest.mark.slow
def test_training_with_an_enriched_mixture(trained, tmp_path):
    """``enrich``: a conditioned folder of the same spec joins the batches with the mixture weights
    (recorded in the model's metadata, with the class probability and the prior rows in the class);
    a plain folder or one of another spec is refused with the reason."""
    d, _ = trained
    spec = str(d / "tiny.toml")
    simulate_mod.run_simulation(simulate_mod.SimulateSettings(
        survey=spec, n=40, out=str(tmp_path / "cross"), seed=4, shard_size=40, batch_size=128,
        progress=False, condition="caustic-crossing"), log=lambda m: None)
    s = dataclasses.replace(
        _settings(d), out=str(tmp_path / "enr"), checkpoint_dir=str(tmp_path / "ck"),
        init_from=str(d / "model"), enrich=str(tmp_path / "cross"), enrich_fraction=0.3,
        train=dataclasses.replace(_settings(d).train, max_steps=30, learning_rate=1e-4, warmup_steps=5,
                                  eval_every=15, checkpoint_every=15))
    out = run_training(s, log=lambda m: None)
    assert out["finished"] and out["steps"] == 30
    enr = load_model(str(tmp_path / "enr")).posterior.metadata["provenance"]["enrichment"]
    cond = condition_stats(tmp_path / "cross")
    assert enr["n_enrich_rows"] == 40 and enr["enrich_fraction"] == 0.3
    assert enr["condition"]["n_accepted"] == cond["n_accepted"] >= 40
    lam, p = 0.3, enr["p_class_accepted_rows"]
    assert p == pytest.approx(cond["probability"], rel=0.1)
    assert enr["weight_class"] == pytest.approx(1 / ((1 - lam) + lam / p))
    assert enr["weight_other"] == pytest.approx(1 / (1 - lam))
    with pytest.raises(ValueError, match="not a conditioned simulation"):
        run_training(dataclasses.replace(s, out=str(tmp_path / "x"), checkpoint_dir=str(tmp_path / "ck2"),
                                         enrich=str(d / "sim")), log=lambda m: None)
    other = tmp_path / "other.toml"
    other.write_text((d / "tiny.toml").read_text() + "\n# another spec\n")
    simulate_mod.run_simulation(simulate_mod.SimulateSettings(
        survey=str(other), n=5, out=str(tmp_path / "cross2"), seed=4, shard_size=5, batch_size=128,
        progress=False, condition="caustic-crossing"), log=lambda m: None)
    with pytest.raises(ValueError, match="another survey spec"):
        run_training(dataclasses.replace(s, out=str(tmp_path / "y"), checkpoint_dir=str(tmp_path / "ck3"),
                                         enrich=str(tmp_path / "cross2")), log=lambda m: None)


def test_validate_caustic_data_refuses_a_plain_folder(trained, tmp_path):
    """``--caustic-data`` must be a conditioned (caustic-crossing) folder: a plain simulation is
    refused with the reason, before any output is written."""
    d, _ = trained
    with pytest.raises(ValueError, match="not a --condition caustic-crossing simulation"):
        run_validation(ValidateSettings(model=str(d / "model"), data=str(d / "sim"), n=20, n_samples=16,
                                        out=str(tmp_path / "v"), holdout_shards=1, caustic_subset=False,
                                        caustic_data=str(d / "sim"), progress=False), log=lambda m: None)
    assert not (tmp_path / "v" / "validation.json").exists()


@pytest.mark.slow
def test_refit_flow_keeps_the_embedding_and_learns_a_new_flow(trained, tmp_path):
    """``mulens_sbi.refit.run_refit``: the embedding is the trained model's, bit for bit; the flow is
    fitted anew on contexts of the training shards and must recover t_0 and t_E on held-out events as
    the trained model does (same tolerances as ``test_training_end_to_end``); the model loads and
    samples like any other; an existing output is not overwritten."""
    from mulens_sbi.npe.checkpoint import load_posterior
    from mulens_sbi.refit import run_refit

    d, _ = trained
    tc = TrainConfig(max_steps=300, batch_size=64, learning_rate=3e-3, warmup_steps=20, val_size=200,
                     eval_every=50, patience=0, checkpoint_every=100, seed=0)
    kw = dict(n_draws=2, holdout_shards=1, val_rows=200, train=tc, progress=False, log=lambda m: None)
    with pytest.warns(RuntimeWarning, match="was trained on"):  # (this tiny test reuses the training set)
        out = run_refit(str(d / "model"), str(d / "sim"), str(tmp_path / "rf"), str(tmp_path / "w"), **kw)
    assert out["steps"] == 300
    old, new = load_posterior(d / "model"), load_posterior(tmp_path / "rf")
    for a, b in zip(jax.tree_util.tree_leaves(old.params["params"]["embedding"]),
                    jax.tree_util.tree_leaves(new.params["params"]["embedding"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(old.params["params"]["flow"])[0]),
                           np.asarray(jax.tree_util.tree_leaves(new.params["params"]["flow"])[0]))
    rec = new.metadata["refit"]
    assert rec["n_draws"] == 2 and rec["history"][-1]["val_loss"] < rec["history"][0]["val_loss"] - 0.3
    model = load_model(str(tmp_path / "rf"))
    tab = read_simulation(d / "sim")
    rows = np.arange(1200, 1240)
    med_t0, med_te = [], []
    for i in rows:
        smp, _ = model.sample((tab["t"][i], tab["flux"][i], tab["sigma"][i], tab["mask"][i]), 100,
                              jax.random.PRNGKey(int(i)))
        med_t0.append(np.median(smp["t_0"]))
        med_te.append(np.median(smp["t_E"]))
    assert np.median(np.abs(np.array(med_t0) - tab["t_0"][rows]) / tab["t_E"][rows]) < 0.1
    assert np.corrcoef(np.log(med_te), np.log(tab["t_E"][rows]))[0, 1] > 0.6
    with pytest.raises(FileExistsError, match="overwrite"):
        run_refit(str(d / "model"), str(d / "sim"), str(tmp_path / "rf"), str(tmp_path / "w"), **kw)
    assert rec["model_weights_sha256"] and rec["model"] == str(d / "model")
    # a warm start from the refitted model records the refit in its lineage (the card shows it)
    from mulens_sbi.npe.train import warm_start_record

    ws = warm_start_record(new)
    assert ws["refit"]["n_draws"] == 2 and ws["refit"]["steps_done"] == 300
    assert ws["steps_done"] == 200 and ws["lineage_steps"] == 200       # the network's own steps
    assert ws["lineage_wall_s"] == pytest.approx(new.metadata["training"]["train_wall_s_total"]
                                                 + rec["wall_time_s"])
    with pytest.raises(ValueError, match="n_draws"):
        run_refit(str(d / "model"), str(d / "sim"), str(tmp_path / "rf2"), str(tmp_path / "w"),
                  **{**kw, "n_draws": 0})


def test_bad_training_and_refit_settings_are_refused_up_front(tiny_sim, tmp_path):
    """Settings out of range are named in the error, before any data is read or written."""
    from mulens_sbi.refit import run_refit

    # TrainSettings refuses them on construction (before anything is written)
    for kw, match in (({"sampler": "gpu"}, "TrainSettings.sampler='gpu' is not allowed: one of host, device"),
                      ({"workers": 0}, "TrainSettings.workers=0 is not allowed: >= 1"),
                      ({"budget_minutes": -1.0}, "TrainSettings.budget_minutes=-1.0 is not allowed: >= 0")):
        with pytest.raises(ValueError, match=re.escape(match)):
            dataclasses.replace(_settings(tiny_sim), out=str(tmp_path / "m"),
                                checkpoint_dir=str(tmp_path / "c"), **kw)
    with pytest.raises(ValueError, match="enrich_fraction must be in"):
        run_refit("no-model", str(tiny_sim / "sim"), str(tmp_path / "r"), str(tmp_path / "w"),
                  enrich_fraction=1.5)
    assert not any((tmp_path / d).exists() for d in ("m", "c", "r", "w"))


# ----------------------------------------------------------------------------------------------
# streaming (mulens_sbi.data.stream): the workers are threads here, so that the single-lens stand-in for
# the solver applies to them too (real runs use spawned processes: make_executor)


@pytest.fixture()
def threaded_stream(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import mulens_sbi.data.stream as stream_mod

    monkeypatch.setattr(lightcurves_mod, "_magnification", _pspl)
    monkeypatch.setattr(stream_mod, "make_executor", lambda workers: ThreadPoolExecutor(workers))
    return stream_mod


def _plan(d, **kw):
    from mulens_sbi.data.stream import StreamPlan

    man = json.loads((d / "sim" / "manifest.json").read_text())
    return StreamPlan(spec_text=man["spec_text"], seed=man["seed"], shard_size=man["shard_size"],
                      batch_size=man["batch_size"], **kw)


def test_a_streamed_shard_is_the_folders_shard_pre_binned(tiny_sim, threaded_stream):
    """``stream_shard(plan, "prior", k)`` is shard k of the folder (same seed), pre-binned and
    filtered exactly as ``prepare_binned`` + ``accepted_mask`` do, with the class flags of
    ``class_flags``: streaming extends the folder, it does not simulate something else."""

    cfg = PreprocessConfig(n_bins=N_BINS, min_points=20, min_cells=8)
    f = shard_files(tiny_sim / "sim")[1]
    ref = prepare_binned([f], cfg, None, progress=False)
    keep = accepted_mask(ref, cfg)
    assert keep.sum() > 0
    plan = _plan(tiny_sim, first_shard=1, rows=600, condition="caustic-crossing", enrich_seed=9)
    got = threaded_stream.stream_shard(plan, "prior", 1, 600, cfg)
    for k in ("theta_net", "mean", "err", "count"):
        np.testing.assert_array_equal(got[k], ref[k][keep], err_msg=k)
    flags = class_flags([f], "caustic-crossing", 0.01, None, False)
    np.testing.assert_array_equal(got["in_class"], flags[keep])
    with pytest.raises(ValueError, match="more than the shard size"):
        threaded_stream.stream_shard(plan, "prior", 1, 601, cfg)


def test_the_streaming_sampler_grows_and_draws_the_new_rows(tiny_sim, threaded_stream):
    """Starting from shard 0, streaming shards 1 and 2: after they arrive the device set is the three
    shards' accepted rows in order, the prior weights of the new rows follow their class flags, and
    draws come from the whole set in proportion (binomial, 4σ) and never from the empty room."""
    cfg = PreprocessConfig(n_bins=N_BINS, min_points=20, min_cells=8)
    files = shard_files(tiny_sim / "sim")
    b0 = prepare_binned(files[:1], cfg, None, progress=False)
    b0 = {k: v[threaded_stream.accepted_mask(b0, cfg)] for k, v in b0.items()}
    n0 = len(b0["theta_net"])
    flags0 = np.zeros(n0, bool)
    flags0[:3] = True
    enrich = BinnedSimulator({k: v[:5] for k, v in b0.items()}, cfg)
    host = MixtureSimulator(BinnedSimulator(b0, cfg), flags0, enrich, 0.3, 0.1)
    plan = _plan(tiny_sim, first_shard=1, rows=1200, condition="caustic-crossing", enrich_seed=9)
    smp = threaded_stream.StreamingSampler(host, cfg, plan, poll_every=1)
    try:
        assert smp.n_base == n0 and smp.pending == 2
        smp.poll(wait=True)
        ref = prepare_binned(files[:3], cfg, None, progress=False)
        ref = {k: v[threaded_stream.accepted_mask(ref, cfg)] for k, v in ref.items()}
        n = len(ref["theta_net"])
        assert smp.n_base == n and smp.stats["rows_added"] == n - n0 and smp.stats["shards_added"] == 2
        np.testing.assert_array_equal(np.asarray(smp.base[0][:n]), ref["theta_net"].astype(np.float32))
        np.testing.assert_array_equal(np.asarray(smp.base[1][:n]), ref["mean"])
        flags = class_flags(files[1:3], "caustic-crossing", 0.01, None, False)
        b12 = prepare_binned(files[1:3], cfg, None, progress=False)
        f_new = flags[threaded_stream.accepted_mask(b12, cfg)]
        np.testing.assert_allclose(np.asarray(smp.w_base[n0:n]),
                                   np.where(f_new, host.w_class, host.w_other))
        assert np.all(np.asarray(smp.base[0][n:]) == 0)                 # the room left is empty
        draws = 4000
        theta, x, w = smp(jax.random.PRNGKey(3), draws)
        theta = np.asarray(theta)
        assert not np.any(np.all(theta == 0, axis=1))                  # never an empty row
        from_new = np.isin(theta[:, 2], ref["theta_net"][n0:, 2].astype(np.float32))
        e = np.isin(theta[:, 2], b0["theta_net"][:5, 2].astype(np.float32))  # rows of the enrichment set
        p_new = 0.7 * (n - n0) / n
        m_new = from_new & ~e
        assert abs(m_new.mean() - p_new) < 4 * np.sqrt(p_new * (1 - p_new) / draws) + 0.01
    finally:
        smp.close()


class _SyncExecutor:
    """Runs each job at submission (so the first poll finds every shard done: deterministic tests)."""

    def __init__(self, workers):
        pass

    def submit(self, fn, *args):
        from concurrent.futures import Future

        fut = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the sampler like a worker's error
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait=True, cancel_futures=False):
        pass


@pytest.fixture()
def sync_stream(monkeypatch):
    import mulens_sbi.data.stream as stream_mod

    monkeypatch.setattr(lightcurves_mod, "_magnification", _pspl)
    monkeypatch.setattr(stream_mod, "make_executor", _SyncExecutor)
    return stream_mod


def test_stream_plan_interleaves_the_two_sets_and_checks_its_fields():
    from mulens_sbi.data.stream import StreamPlan

    plan = StreamPlan(spec_text="x", seed=1, first_shard=5, rows=3500, shard_size=1000, enrich_seed=2,
                      enrich_first_shard=7, enrich_rows=150, enrich_shard_size=100,
                      condition="caustic-crossing")
    assert plan.jobs() == [("prior", 5, 1000), ("enrich", 7, 100), ("prior", 6, 1000), ("prior", 7, 1000),
                           ("enrich", 8, 50), ("prior", 8, 500)]
    assert "workers" not in plan.fingerprint() and "spec_text" not in plan.fingerprint()
    for bad, match in (({"rows": -1}, "rows must be >= 0"), ({"first_shard": -1}, "first shard"),
                       ({"workers": 0}, "workers"), ({"condition": None}, "condition and seed")):
        kw = {**dict(spec_text="x", seed=1, first_shard=0, rows=10, enrich_seed=2, enrich_rows=5,
                     condition="caustic-crossing"), **bad}
        with pytest.raises(ValueError, match=match):
            StreamPlan(**kw)


def test_a_failed_streamed_shard_is_recorded_and_training_data_go_on(tiny_sim, sync_stream, monkeypatch):
    cfg = PreprocessConfig(n_bins=N_BINS, min_points=20, min_cells=8)
    b0 = prepare_binned(shard_files(tiny_sim / "sim")[:1], cfg, None, progress=False)
    real = sync_stream.stream_shard

    def flaky(plan, kind, index, rows, cfg):
        if index == 2:
            raise RuntimeError("worker lost")
        return real(plan, kind, index, rows, cfg)

    monkeypatch.setattr(sync_stream, "stream_shard", flaky)
    smp = sync_stream.StreamingSampler(BinnedSimulator(b0, cfg), cfg,
                                       _plan(tiny_sim, first_shard=1, rows=1200))
    with pytest.warns(RuntimeWarning, match="worker lost"):
        assert smp.poll() == 1
    assert smp.pending == 0 and smp.stats["failed_shards"] == 1 and "worker lost" in smp.stats["first_error"]
    assert smp.poll(wait=True) == 0 and smp.stats["shards_added"] == 1       # nothing handled twice
    theta, x = smp(jax.random.PRNGKey(0), 16)
    assert theta.shape == (16, 6)
    with pytest.raises(ValueError, match="poll_every"):
        sync_stream.StreamingSampler(BinnedSimulator(b0, cfg), cfg, _plan(tiny_sim, first_shard=1, rows=0),
                                     poll_every=0)


@pytest.mark.slow
def test_training_with_a_stream(trained, tmp_path, sync_stream):
    """``stream_rows`` / ``stream_enrich_rows`` with an enrichment folder: the next shard of each
    folder (its seed, index and size) joins the training set at the first poll, exactly the rows
    ``stream_shard`` makes; the metadata records them. A resume with another number of workers is
    accepted (workers do not change the rows); streaming without the device sampler, enrichment rows
    without an enrichment folder, or a conditioned --data folder are refused before any work."""
    d, _ = trained
    simulate_mod.run_simulation(simulate_mod.SimulateSettings(
        survey=str(d / "tiny.toml"), n=40, out=str(tmp_path / "cross"), seed=4, shard_size=40, batch_size=128,
        progress=False, condition="caustic-crossing"), log=lambda m: None)
    s = dataclasses.replace(
        _settings(d), out=str(tmp_path / "st"), checkpoint_dir=str(tmp_path / "ck"), sampler="device",
        enrich=str(tmp_path / "cross"), enrich_fraction=0.3, stream_rows=600, stream_enrich_rows=40,
        stream_workers=1,
        train=dataclasses.replace(_settings(d).train, max_steps=40, eval_every=20, checkpoint_every=20))
    out = run_training(s, log=lambda m: None)
    assert out["finished"] and out["steps"] == 40
    meta = load_model(str(tmp_path / "st")).posterior.metadata
    st = meta["training"]["stream_last_session"]
    plan = st["plan"]
    assert (plan["seed"], plan["first_shard"], plan["rows"], plan["shard_size"]) == (3, 3, 600, 600)
    assert (plan["enrich_seed"], plan["enrich_first_shard"], plan["enrich_rows"], plan["enrich_shard_size"],
            plan["enrich_batch_size"], plan["q_max"]) == (4, 1, 40, 40, 128, 0.01)
    from mulens_sbi.data.stream import StreamPlan

    man = json.loads((d / "sim" / "manifest.json").read_text())
    ref = StreamPlan(spec_text=man["spec_text"], **{k: v for k, v in plan.items() if k != "workers"})
    cfg = _settings(d).preprocess
    n_prior = len(sync_stream.stream_shard(ref, "prior", 3, 600, cfg)["theta_net"])
    n_enr = len(sync_stream.stream_shard(ref, "enrich", 1, 40, cfg)["theta_net"])
    assert st["shards_added"] == 1 and st["rows_added"] == n_prior > 0
    assert st["enrich_shards_added"] == 1 and st["enrich_rows_added"] == n_enr > 0
    assert st["failed_shards"] == 0 and st["shards_not_added"] == 0
    # resume (the finished checkpoint) with another number of workers: same fingerprint
    again = run_training(dataclasses.replace(s, out=str(tmp_path / "st2"), stream_workers=2),
                         log=lambda m: None)
    assert again["finished"] and again["steps"] == 40
    with pytest.raises(ValueError, match="needs sampler='device'"):
        run_training(dataclasses.replace(s, sampler="host", out=str(tmp_path / "x")), log=lambda m: None)
    with pytest.raises(ValueError, match="needs an enrichment folder"):
        run_training(dataclasses.replace(s, enrich=None, out=str(tmp_path / "y")), log=lambda m: None)
    with pytest.raises(ValueError, match="conditioned simulation"):
        run_training(dataclasses.replace(s, data=str(tmp_path / "cross"), holdout_shards=0,
                                         out=str(tmp_path / "z"), checkpoint_dir=str(tmp_path / "ck4")),
                     log=lambda m: None)
    assert not (tmp_path / "ck4").exists()                                  # refused before any work
    # a --data folder whose manifest lacks spec_text (the workers need the exact spec): refused
    bare = tmp_path / "bare"
    shutil.copytree(d / "sim", bare)
    man_bare = json.loads((bare / "manifest.json").read_text())
    del man_bare["spec_text"]
    (bare / "manifest.json").write_text(json.dumps(man_bare))
    with pytest.raises(ValueError, match="has no spec_text"):
        run_training(dataclasses.replace(s, data=str(bare), out=str(tmp_path / "w"),
                                         checkpoint_dir=str(tmp_path / "ck5")), log=lambda m: None)
    assert not (tmp_path / "ck5").exists()


@pytest.mark.slow
def test_streaming_in_spawned_workers_matches_this_process():
    """The real path: a spawned worker process (JAX on the CPU, the binary-lens solver) streams a
    shard; its rows equal ``stream_shard`` run here (shards are pure functions of (spec, seed, index))."""
    from mulens_sbi.data.stream import StreamingSampler, StreamPlan, stream_shard

    text = re.sub(r"(?m)^n_points = 2048", "n_points = 256", resolve_spec_path("roman").read_text())
    cfg = PreprocessConfig(n_bins=N_BINS, min_points=20, min_cells=8)
    b = {"theta_net": np.ones((2, 6)), "mean": np.ones((2, N_BINS), np.float32),
         "err": np.ones((2, N_BINS), np.float32), "count": np.ones((2, N_BINS), np.uint16)}
    plan = StreamPlan(spec_text=text, seed=5, first_shard=2, rows=16, shard_size=16, batch_size=16, workers=1)
    smp = StreamingSampler(BinnedSimulator(b, cfg), cfg, plan)
    try:
        smp.poll(wait=True)
    finally:
        smp.close()
    ref = stream_shard(plan, "prior", 2, 16, cfg)
    m = len(ref["theta_net"])
    assert smp.n_base == 2 + m and m > 0
    np.testing.assert_array_equal(np.asarray(smp.base[0][2:2 + m]), ref["theta_net"].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(smp.base[2][2:2 + m]), ref["err"])
