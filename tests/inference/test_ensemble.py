"""The ensemble law of a finite-source mode (:mod:`mulens_sbi.inference.ensemble`), checked on laws
whose moments are known analytically."""

import numpy as np
import pytest

from mulens_sbi.inference.ensemble import ensemble_law


def _gaussian(mean, cov):
    prec = np.linalg.inv(cov)

    def log_prob(z):
        d = np.atleast_2d(z) - mean
        return -0.5 * np.einsum("ni,ij,nj->n", d, prec, d)
    return log_prob


def test_the_chain_recovers_a_correlated_gaussian_from_a_wrong_start_law():
    # 5-D, scales over a factor 300, correlations up to 0.70 (condition number 124); the start
    # law is the diagonal of the truth shrunk 10x (the Gauss-Newton law of a curved finite-source
    # valley was 10x too narrow in t_0): the chain's moments must still match the truth's
    rng = np.random.default_rng(2)
    p = 5
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    sd = np.array([0.01, 0.1, 1.0, 3.0, 0.3])
    corr = q @ np.diag([0.02, 0.3, 1.0, 1.2, 2.48]) @ q.T
    dd = np.sqrt(np.diag(corr))
    corr = corr / dd[:, None] / dd[None, :]
    cov = corr * sd[:, None] * sd[None, :]
    mean = np.array([2848.0, 0.13, 4.1, 0.11, -5.5])
    law = ensemble_law(_gaussian(mean, cov), mean + 0.5 * sd, np.diag(sd**2) / 100.0, walkers=32, steps=1200,
                       seed=1)
    # tolerances: the kept half has ~600 x 32 draws with autocorrelation times of ~30-60 steps,
    # i.e. several hundred independent draws: means to ~0.15 sd, variances to ~20%
    assert np.all(np.abs(law.mean - mean) / sd < 0.15), (law.mean - mean) / sd
    ratio = np.diag(law.cov) / sd**2
    assert np.all((ratio > 0.75) & (ratio < 1.3)), ratio
    got = law.cov / np.sqrt(np.outer(np.diag(law.cov), np.diag(law.cov)))
    assert np.max(np.abs(got - corr)) < 0.1, np.max(np.abs(got - corr))
    assert 0.15 < law.acceptance < 0.8
    assert law.n_evaluations == 32 * 1200 + 32
    assert law.best_log_prob <= 0.0 and law.best_log_prob > -2.0  # near the top of a 5-D law


def test_a_circular_variable_is_unwrapped_around_the_start():
    # alpha at 359.8 deg with sd 0.5 deg: half the samples wrap to ~0; the moments must not see 360
    mean = np.array([0.0, 359.8])
    cov = np.diag([1.0, 0.25])

    def log_prob(z):
        d = np.atleast_2d(z) - mean
        d[:, 1] = (d[:, 1] + 180.0) % 360.0 - 180.0
        return -0.5 * (d[:, 0] ** 2 + d[:, 1] ** 2 / 0.25)

    law = ensemble_law(log_prob, mean, cov, walkers=16, steps=600, seed=3, periodic={1: 360.0})
    assert abs(law.mean[1] - 359.8) < 0.1
    assert 0.18 < law.cov[1, 1] < 0.33
    assert 0.0 <= law.best_z[1] < 360.0


def test_bad_settings_are_refused_with_their_range():
    with pytest.raises(ValueError, match="walkers=6 is not allowed: even and >= 2P"):
        ensemble_law(_gaussian(np.zeros(3), np.eye(3)), np.zeros(3), np.eye(3), walkers=6)
    with pytest.raises(ValueError, match="steps=3 is not allowed: >= 4"):
        ensemble_law(_gaussian(np.zeros(3), np.eye(3)), np.zeros(3), np.eye(3), walkers=8, steps=3)
    with pytest.raises(ValueError, match="burn_temperature=0.5 is not allowed: >= 1"):
        ensemble_law(_gaussian(np.zeros(3), np.eye(3)), np.zeros(3), np.eye(3), walkers=8,
                     burn_temperature=0.5)
