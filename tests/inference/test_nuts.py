"""NUTS reference fits: a binary-lens event recovered with two chains, a single-lens posterior
against the Laplace approximation, and the numpyro model's density against the sampler's."""

from __future__ import annotations

import math

import jax.numpy as jnp
import MulensModel as mm
import numpy as np
import pytest
from numpyro.infer.util import potential_energy

from mulens_sbi.event import Event
from mulens_sbi.inference import LensPrior, laplace_approximation, log_prior, parse_priors, run_nuts
from mulens_sbi.inference.nuts import _Space, make_model
from mulens_sbi.likelihood import log_likelihood, pack_event

BINARY = dict(t_0=0.0, u_0=0.3, t_E=8.0, s=1.1, q=0.02, alpha=-60.0)  # ~15% anomaly, no caustic crossing
BINARY_PRIORS = dict(
    t_0=("uniform", -1.0, 1.0), u_0=("uniform", 0.05, 1.0), t_E=("log_uniform", 1.0, 100.0),
    s=("log_uniform", 0.3, 3.0), q=("log_uniform", 1e-4, 0.1), alpha=("uniform", -180.0, 180.0),
)


def _simulate(params, t, fs, fb, rel_err, seed):
    rng = np.random.default_rng(seed)
    f = fs * mm.Model(params).get_magnification(t) + fb
    sig = rel_err * f
    return Event.single(t, f + sig * rng.standard_normal(t.size), sig)


@pytest.mark.slow
def test_binary_event_recovered_two_chains():
    """Roman-like 15.16-min cadence, 150 exposures drawn from a ±12-day window, 0.5% photometry."""
    rng = np.random.default_rng(1)
    t = np.sort(rng.choice(np.arange(-12.0, 12.0, 15.16 / 1440), 150, replace=False))
    ev = _simulate(BINARY, t, 15.8, 5.0, 0.005, seed=2)
    init = {k: np.array([v * 1.002 + 0.001, v * 1.004 + 0.002]) for k, v in BINARY.items()}
    samples, diag = run_nuts(ev, init, BINARY_PRIORS, num_warmup=150, num_samples=300, seed=0, chains=2)
    print("binary NUTS:", {k: diag[k] for k in ("time_s", "divergences", "accept_prob", "num_steps_mean")},
          diag["r_hat"])
    for k, v in BINARY.items():
        lo, hi = np.percentile(samples[k], [2.5, 97.5])
        assert lo < v < hi, (k, v, lo, hi)
        assert diag["r_hat"][k] < 1.05, (k, diag["r_hat"][k])
        assert diag["n_eff"][k] > 50, (k, diag["n_eff"][k])
    assert diag["divergences"] == 0
    assert samples["t_E"].shape == (600,) and diag["samples_by_chain"]["q"].shape == (2, 300)


SINGLE = dict(t_0=9100.0, u_0=0.2, t_E=20.0)  # realistic HJD'
SINGLE_PRIORS = dict(
    t_0=("uniform", 9090.0, 9110.0), u_0=("uniform", 0.01, 1.5), t_E=("log_uniform", 1.0, 200.0)
)


@pytest.fixture(scope="module")
def single_event():
    t = np.sort(np.random.default_rng(4).uniform(9060.0, 9140.0, 300))
    return _simulate(SINGLE, t, 50.0, 30.0, 0.01, seed=5)


def test_single_lens_matches_laplace(single_event):
    """Well-constrained single lens (blending marginalised): the NUTS posterior mean and standard
    deviation of (t_0, u_0, log t_E) match the Laplace approximation at the maximum — means within
    0.15 σ_Laplace, standard deviations within 15% (MC error with ~1000 effective samples: ~0.03 σ
    and ~3%; the rest allows for the posterior's small non-Gaussianity)."""
    lap = laplace_approximation(single_event, SINGLE, SINGLE_PRIORS)
    assert lap.names == ("t_0", "u_0", "t_E")
    samples, diag = run_nuts(
        single_event, SINGLE, SINGLE_PRIORS, num_warmup=300, num_samples=600, seed=1, chains=2,
        chain_method="vectorized",
    )
    z = np.stack([samples["t_0"], samples["u_0"], np.log(samples["t_E"])], axis=1)
    sd_lap = np.sqrt(np.diag(lap.cov))
    mean_err = (z.mean(0) - lap.mean) / sd_lap
    sd_ratio = z.std(0) / sd_lap
    print("laplace check:", mean_err, sd_ratio, diag["time_s"], diag["n_eff"])
    assert np.all(np.abs(mean_err) < 0.15), mean_err
    assert np.all(np.abs(sd_ratio - 1) < 0.15), sd_ratio
    assert max(diag["r_hat"].values()) < 1.05
    # the recorded log-likelihood is the likelihood of the recorded parameters
    packed = pack_event(single_event)
    idx = np.array([3, 700])
    ll = log_likelihood({k: jnp.asarray(samples[k][idx]) for k in SINGLE}, packed)
    np.testing.assert_allclose(np.asarray(ll), samples["log_likelihood"][idx], rtol=1e-9)
    # the truth lies within 3σ of the Laplace mean
    truth = np.array([SINGLE["t_0"], SINGLE["u_0"], math.log(SINGLE["t_E"])])
    assert np.all(np.abs(truth - lap.mean) < 3 * sd_lap)


def test_model_density_matches_sampler_potential(single_event):
    """numpyro's potential energy of ``make_model`` (its own unconstrained space) equals the
    sampler's potential, for priors that need a density factor (uniform on a log-sampled t_E,
    log-uniform on the linearly sampled u_0) and plain ones, with a fixed parameter."""
    priors, _ = parse_priors(dict(
        t_0=("uniform", 9090.0, 9110.0), u_0=("log_uniform", 0.01, 1.5), t_E=("uniform", 1.0, 200.0),
    ))
    packed = pack_event(single_event)
    space = _Space(priors)
    u = np.array([0.3, -0.7, 0.2])
    theta, _ = space.physical(jnp.asarray(u))
    ll = log_likelihood({k: v[None] for k, v in theta.items()}, packed)[0]
    ours = -(ll + space.log_prior_u(jnp.asarray(u)))
    pe = potential_energy(make_model(packed, priors), (), {}, {"t_0": u[0], "u_0": u[1], "log_t_E": u[2]})
    assert abs(float(ours) - float(pe)) < 1e-9 * max(1.0, abs(float(pe)))


@pytest.mark.parametrize(
    "prior",
    [
        LensPrior("t_E", "uniform", 1.0, 200.0),  # uniform on a log-sampled parameter (factor)
        LensPrior("t_E", "log_uniform", 1.0, 200.0),
        LensPrior("u_0", "uniform", -1.0, 1.0),
        LensPrior("u_0", "log_uniform", 0.01, 1.5),  # log-uniform on a linear parameter (factor)
    ],
)
def test_unconstrained_prior_density(prior):
    """The sampler's density of u is the physical prior pushed forward: it integrates to one and
    equals π(θ(u))·|dθ/du| (derivative by central differences)."""
    space = _Space({prior.name: prior})
    grid = np.linspace(-40.0, 40.0, 400001)
    logp = np.asarray(space.log_prior_u(jnp.asarray(grid[:, None])))
    assert abs(np.trapezoid(np.exp(logp), grid) - 1.0) < 1e-6
    pri = {prior.name: prior}
    for u in (-2.0, 0.3, 1.7):
        x = lambda v: float(space.physical(jnp.asarray([v]))[0][prior.name])  # noqa: E731
        h = 1e-6
        jac = abs(x(u + h) - x(u - h)) / (2 * h)
        ref = float(log_prior(pri, {prior.name: jnp.asarray([x(u)])})[0]) + math.log(jac)
        assert abs(float(space.log_prior_u(jnp.asarray([u]))) - ref) < 1e-7


def test_input_errors(single_event):
    with pytest.raises(ValueError, match=r"init\['u_0'\].*strictly inside"):
        run_nuts(single_event, {**SINGLE, "u_0": 2.0}, SINGLE_PRIORS, num_warmup=1, num_samples=1)
    with pytest.raises(ValueError, match="init lacks parameter 't_E'"):
        run_nuts(single_event, {"t_0": 9100.0, "u_0": 0.2}, SINGLE_PRIORS, num_warmup=1, num_samples=1)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        run_nuts(single_event, {**SINGLE, "t_0": [9100.0, 9100.1, 9100.2]}, SINGLE_PRIORS, 1, 1, chains=2)
    with pytest.raises(ValueError, match="chain_method"):
        run_nuts(single_event, SINGLE, SINGLE_PRIORS, 1, 1, chain_method="parallel")
