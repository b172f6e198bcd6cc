"""Training on problems with analytic posteriors; calibration; resume after a kill.

Tolerances (fixed seeds; a few hundred steps of a ~5k-parameter network on a CPU):
  conjugate Gaussian x ~ N(theta, diag(sigma^2)), theta ~ N(0, I), sigma = (0.5, 1.0):
    posterior mean within 0.15 posterior-sd, posterior sd within 12 %, over 10 observations;
    marginal and HPD coverage at 50 % and 90 % within +-0.1 over 200 test cases.
  bimodal x = theta^2 + N(0, 0.1^2): at x = 1 both modes (theta ~ +-1) hold 35-65 % of the mass,
    < 5 % of the samples lie at |theta| < 0.5 (analytic: ~0), and |theta| averages within 0.05 of the
    analytic value.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mulens_sbi.npe.config import EmbeddingConfig, FlowConfig, NPEConfig, TrainConfig
from mulens_sbi.npe.diagnostics import coverage_report
from mulens_sbi.npe.train import train
from mulens_sbi.npe.transforms import ParameterSpace

SIG = np.array([0.5, 1.0])
SPACE = ParameterSpace.create(["a", "b"], loc=[0.0, 0.0], scale=[1.0, 1.0])
CFG = NPEConfig(FlowConfig(n_layers=2, hidden=(32, 32)), EmbeddingConfig(kind="mlp", out_dim=8, hidden=(32,)))


@functools.partial(jax.jit, static_argnums=1)
def simulate_gauss(key, n):
    k1, k2 = jax.random.split(key)
    theta = jax.random.normal(k1, (n, 2))
    return theta, theta + jnp.asarray(SIG) * jax.random.normal(k2, (n, 2))


def analytic(x):
    return x / (1 + SIG ** 2), np.sqrt(SIG ** 2 / (1 + SIG ** 2))


@pytest.fixture(scope="module")
def gauss():
    tc = TrainConfig(max_steps=800, batch_size=256, learning_rate=3e-3, warmup_steps=20, val_size=512,
                     eval_every=100, patience=0, seed=1)
    return train(SPACE, CFG, tc, simulate=simulate_gauss, progress=False)


def test_gaussian_posterior_moments(gauss):
    post = gauss.posterior
    assert gauss.steps_done == 800 and np.isfinite(gauss.best_val_loss)
    # expected KL(p || q) over the joint, estimated on 2000 fresh pairs (low-variance: log p - log q)
    th, x = simulate_gauss(jax.random.PRNGKey(77), 2000)
    mu, sd = analytic(np.asarray(x))
    logp = np.sum(-0.5 * ((np.asarray(th) - mu) / sd) ** 2 - np.log(sd * np.sqrt(2 * np.pi)), axis=-1)
    logq = post.log_prob_batched(np.asarray(th)[:, None, :], x)[:, 0]
    kl = float(np.mean(logp - logq))
    print("expected KL", kl, "+-", float(np.std(logp - logq) / np.sqrt(2000)))
    assert kl < 0.05
    theta, xs = simulate_gauss(jax.random.PRNGKey(99), 10)
    samples = post.sample_batched(xs, 4000, jax.random.PRNGKey(5))
    mu, sd = analytic(np.asarray(xs))
    err_mean = np.abs(samples.mean(axis=1) - mu) / sd
    err_sd = np.abs(samples.std(axis=1) / sd - 1)
    print("max |mean err|/sd", err_mean.max(), "max |sd ratio - 1|", err_sd.max())
    assert err_mean.max() < 0.15
    assert err_sd.max() < 0.12


def test_gaussian_coverage(gauss):
    post = gauss.posterior
    theta, xs = simulate_gauss(jax.random.PRNGKey(123), 200)
    samples, info = post.sample_batched(xs, 500, jax.random.PRNGKey(7), return_info=True)
    lp_true = post.log_prob_batched(np.asarray(theta)[:, None, :], xs)[:, 0]
    rep = coverage_report(samples, np.asarray(theta), names=SPACE.names, log_prob_samples=info["log_prob"],
                          log_prob_true=lp_true, levels=(0.5, 0.9))
    print({k: rep[k] for k in ("marginal_coverage", "hpd_coverage", "tarp_coverage")})
    assert rep["n_cases"] == 200 and rep["n_excluded"] == 0
    for name in SPACE.names:
        np.testing.assert_allclose(rep["marginal_coverage"][name], [0.5, 0.9], atol=0.1)
    np.testing.assert_allclose(rep["hpd_coverage"], [0.5, 0.9], atol=0.1)
    np.testing.assert_allclose(rep["tarp_coverage"], [0.5, 0.9], atol=0.1)
    # the log density of the samples agrees with log_prob evaluated afresh
    lp_again = post.log_prob_batched(samples[:3, :10], jax.tree_util.tree_map(lambda a: a[:3], xs))
    np.testing.assert_allclose(lp_again, info["log_prob"][:3, :10], atol=1e-4)


def test_calibration_detects_a_wrong_posterior(gauss):
    """The coverage check can fail: samples from a posterior 2x too narrow are flagged."""
    theta, xs = simulate_gauss(jax.random.PRNGKey(123), 200)
    mu, sd = analytic(np.asarray(xs))
    narrow = mu[:, None, :] + 0.5 * sd * np.random.default_rng(0).standard_normal((200, 500, 2))
    rep = coverage_report(narrow, np.asarray(theta), levels=(0.5, 0.9), tarp=False)
    assert rep["max_marginal_deviation"] > 0.2


@functools.partial(jax.jit, static_argnums=1)
def simulate_square(key, n):
    k1, k2 = jax.random.split(key)
    theta = jax.random.normal(k1, (n, 1))
    return theta, theta ** 2 + 0.1 * jax.random.normal(k2, (n, 1))


@pytest.mark.slow
def test_bimodal_posterior():
    space = ParameterSpace.create(["theta"], loc=[0.0], scale=[1.0])
    cfg = NPEConfig(FlowConfig(n_layers=2, hidden=(32, 32), n_bins=8), EmbeddingConfig(kind="mlp", out_dim=8,
                                                                                        hidden=(32,)))
    tc = TrainConfig(max_steps=1000, batch_size=256, learning_rate=3e-3, warmup_steps=20, val_size=512,
                     eval_every=200, patience=0, seed=2)
    post = train(space, cfg, tc, simulate=simulate_square, progress=False).posterior
    s = post.sample(jnp.asarray([1.0]), 20000, jax.random.PRNGKey(3))[:, 0]
    g = np.linspace(-4, 4, 80001)
    logp = -0.5 * g ** 2 - 0.5 * ((1.0 - g ** 2) / 0.1) ** 2
    p = np.exp(logp - logp.max())
    p /= p.sum()
    frac_pos, frac_mid, mean_abs = np.mean(s > 0), np.mean(np.abs(s) < 0.5), np.mean(np.abs(s))
    print("P(theta>0)", frac_pos, "P(|theta|<0.5)", frac_mid, "E|theta|", mean_abs, "analytic",
          np.sum(p * np.abs(g)))
    assert 0.35 < frac_pos < 0.65
    assert frac_mid < 0.05
    assert abs(mean_abs - np.sum(p * np.abs(g))) < 0.05


RESUME_TC = TrainConfig(max_steps=60, batch_size=256, learning_rate=3e-3, warmup_steps=10, val_size=512,
                        eval_every=20, checkpoint_every=20, patience=0, seed=3)


class Killed(Exception):
    pass


def test_resume_after_kill_is_bit_identical(tmp_path):
    ref = train(SPACE, CFG, RESUME_TC, simulate=simulate_gauss, progress=False)

    def kill_at_45(step, loss):
        if step == 45:
            raise Killed

    with pytest.raises(Killed):
        train(SPACE, CFG, RESUME_TC, simulate=simulate_gauss, checkpoint_dir=tmp_path, progress=False,
              on_step=kill_at_45)
    seen = []
    res = train(SPACE, CFG, RESUME_TC, simulate=simulate_gauss, checkpoint_dir=tmp_path, progress=False,
                on_step=lambda step, loss: seen.append(step))
    assert seen[0] == 40  # restarted from the checkpoint at step 40, redoing 40..59
    for a, b in zip(jax.tree_util.tree_leaves(ref.final_params), jax.tree_util.tree_leaves(res.final_params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree_util.tree_leaves(ref.posterior.params),
                    jax.tree_util.tree_leaves(res.posterior.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ref.history == res.history
    # a finished run resumes to the same result without training
    again = train(SPACE, CFG, RESUME_TC, simulate=simulate_gauss, checkpoint_dir=tmp_path, progress=False,
                  on_step=lambda step, loss: pytest.fail("should not train"))
    assert again.history == ref.history
    # different settings refuse to resume from this checkpoint; no silent overwrite either
    other = TrainConfig(**{**RESUME_TC.to_dict(), "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="different settings"):
        train(SPACE, CFG, other, simulate=simulate_gauss, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        train(SPACE, CFG, RESUME_TC, simulate=simulate_gauss, checkpoint_dir=tmp_path, progress=False,
              resume=False)


@pytest.mark.slow
def test_time_budget_sets_the_schedule_length_once(tmp_path):
    """``budget_s``: the step count is fixed at the end of the warm-up from the measured rate (capped
    by max_steps), the run ends there, and a resumed run keeps the count it fixed."""
    tc = TrainConfig(max_steps=10 ** 6, batch_size=64, learning_rate=1e-3, warmup_steps=60, val_size=128,
                     eval_every=50, patience=0, checkpoint_every=1, seed=2)

    def kill_after_fix(step, loss):
        # the count is fixed and committed at step 60 (the end of the warm-up, >= 20 steps after the
        # rate probe started at step 15), before that step trains; killing right there keeps the test
        # independent of the machine's speed (a slow machine fixes the count at 61)
        if step == 60:
            raise Killed

    with pytest.raises(Killed):
        train(SPACE, CFG, tc, simulate=simulate_gauss, checkpoint_dir=tmp_path, progress=False, budget_s=8.0,
              on_step=kill_after_fix)
    res = train(SPACE, CFG, tc, simulate=simulate_gauss, checkpoint_dir=tmp_path, progress=False,
                budget_s=1e-3)  # a resume keeps the count fixed in the first session
    meta = res.posterior.metadata["training"]
    n = meta["max_steps_effective"]
    assert 60 < n < 10 ** 6 and res.steps_done == n
    assert json.loads((tmp_path / "state.json").read_text())["max_steps"] == n
    # a run killed with its last checkpoint inside the warm-up, before the count was fixed, fixes it
    # after the resume (timing steps of the new session) instead of running to max_steps
    tc2 = TrainConfig(**{**tc.to_dict(), "checkpoint_every": 40, "max_steps": 20000})

    def kill_after_warmup(step, loss):
        if step == 45:
            raise Killed

    with pytest.raises(Killed):
        train(SPACE, CFG, tc2, simulate=simulate_gauss, checkpoint_dir=tmp_path / "b", progress=False,
              budget_s=3.0, on_step=kill_after_warmup)
    assert not json.loads((tmp_path / "b" / "state.json").read_text())["budget_fixed"]
    res2 = train(SPACE, CFG, tc2, simulate=simulate_gauss, checkpoint_dir=tmp_path / "b", progress=False,
                 budget_s=3.0)
    n2 = res2.posterior.metadata["training"]["max_steps_effective"]
    assert 65 <= n2 < 20000 and res2.steps_done == n2
    # a budget larger than max_steps needs leaves max_steps; too short a warm-up is refused
    small = TrainConfig(**{**tc.to_dict(), "max_steps": 70, "checkpoint_every": 100})
    assert train(SPACE, CFG, small, simulate=simulate_gauss, progress=False, budget_s=600.0).steps_done == 70
    with pytest.raises(ValueError, match="warmup_steps >= 50"):
        train(SPACE, CFG, TrainConfig(**{**tc.to_dict(), "warmup_steps": 10}), simulate=simulate_gauss,
              progress=False, budget_s=5.0)


def test_array_data_and_nonfinite_rows():
    theta, x = simulate_gauss(jax.random.PRNGKey(0), 2000)
    x = np.asarray(x).copy()
    x[::50, 0] = np.nan  # 2 % failed simulations
    tc = TrainConfig(max_steps=30, batch_size=256, warmup_steps=5, val_size=512, eval_every=10, patience=0)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = train(SPACE, CFG, tc, data=(np.asarray(theta), x), progress=False)
    assert res.n_nonfinite > 0
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in res.history)
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
    with pytest.raises(ValueError, match="exactly one"):
        train(SPACE, CFG, tc, progress=False)
