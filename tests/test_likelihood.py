"""Likelihood with linear fluxes: against an independent numpy least-squares implementation, a 2-D
numerical integration over (F_s, F_b), and finite-difference gradients.

Data are generated with MulensModel's magnification (the independent forward model); the numpy
reference uses ``np.linalg.lstsq`` on each dataset's weighted design matrix ``[A, 1]/σ`` and a
brute-force χ². One jitted function (fixed padded shape) serves all binary-lens checks, so the
solver compiles once.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import MulensModel as mm
import numpy as np
import pytest

from mulens_sbi.event import Dataset, Event
from mulens_sbi.lightcurve import magnification_batch
from mulens_sbi.likelihood import evaluate, log_likelihood, pack_event

NAMES = ("t_0", "u_0", "t_E", "s", "q", "alpha")
# moderate planetary/resonant anomaly (~15%) without a caustic crossing (min distance 0.18 θ_E)
TRUTH = np.array([0.0, 0.3, 8.0, 1.1, 0.02, -60.0])
PAD = 256


def _mm_mag(t, theta):
    return mm.Model(dict(zip(NAMES, map(float, theta), strict=True))).get_magnification(t)


@pytest.fixture(scope="module")
def binary_event():
    rng = np.random.default_rng(11)
    # name, time range, points, F_s, F_b: different times, cadences and flux scales per dataset
    spec = [
        ("A", -16, 16, 120, 500.0, 80.0),
        ("B", -3, 3, 60, 2000.0, -150.0),
        ("C", -20, 20, 40, 40.0, 10.0),
    ]
    ds = []
    for name, lo, hi, n, fs, fb in spec:
        t = np.sort(rng.uniform(lo, hi, n))
        model = fs * _mm_mag(t, TRUTH) + fb
        sig = 0.01 * np.abs(model) + 0.5
        ds.append(Dataset(name, t, model + sig * rng.standard_normal(n), sig))
    return Event(ds, name="binary-test")


@pytest.fixture(scope="module")
def vg(binary_event):
    packed = pack_event(binary_event, pad_to=PAD)

    def f(theta):
        p = {k: theta[i][None] for i, k in enumerate(NAMES)}
        res = evaluate(p, packed)
        mag = magnification_batch(packed.t, p)[0][0]
        return res.marginal[0], (res, mag)

    return jax.jit(jax.value_and_grad(f, has_aux=True)), packed


def _reference(event, mags):
    """numpy: per dataset lstsq on [A, 1]/σ; returns chi2 per dataset, fs, fb, log det(AᵀWA)."""
    out = []
    for d, a in zip(event.datasets, mags, strict=True):
        x = np.stack([a, np.ones_like(a)], axis=1) / d.sigma[:, None]
        y = d.flux / d.sigma
        sol = np.linalg.lstsq(x, y, rcond=None)[0]
        chi2 = float(np.sum(((d.flux - (sol[0] * a + sol[1])) / d.sigma) ** 2))
        out.append((chi2, sol[0], sol[1], np.linalg.slogdet(x.T @ x)[1]))
    return out


def _split(event, packed, values):
    """Values at the packed (sorted union) times → per-dataset arrays in dataset time order."""
    onehot = np.asarray(packed.onehot)
    return [np.asarray(values)[onehot[i] > 0] for i in range(event.n_datasets)]


@pytest.mark.parametrize("k", range(4))
def test_matches_numpy_lstsq(binary_event, vg, k):
    fn, packed = vg
    theta = TRUTH * (1.0 + 0.01 * k * np.array([0, 1, 1, 1, 1, 1])) + np.array([0.02 * k, 0, 0, 0, 0, 0])
    (marg, (res, mag)), _ = fn(jnp.asarray(theta))
    assert bool(res.ok[0])
    mags = _split(binary_event, packed, mag)
    # our magnification equals MulensModel's at these points (anchors the whole chain)
    for d, a in zip(binary_event.datasets, mags, strict=True):
        np.testing.assert_allclose(a, _mm_mag(d.t, theta), rtol=1e-10)
    ref = _reference(binary_event, mags)
    chi2_ref = np.array([r[0] for r in ref])
    np.testing.assert_allclose(np.asarray(res.chi2_datasets[0]), chi2_ref, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(res.f_s[0]), [r[1] for r in ref], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(res.f_b[0]), [r[2] for r in ref], rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(float(res.profile[0]), -0.5 * chi2_ref.sum(), rtol=1e-10)
    marg_ref = -0.5 * chi2_ref.sum() + sum(math.log(2 * math.pi) - 0.5 * r[3] for r in ref)
    np.testing.assert_allclose(float(marg), marg_ref, rtol=1e-10)
    if k == 0:  # at the truth χ² is a χ² with N − 2D degrees of freedom (sanity of the noise model)
        n = binary_event.n_points
        assert abs(chi2_ref.sum() - (n - 6)) < 5 * math.sqrt(2 * n)


def test_gradient_matches_finite_differences(vg):
    fn, _ = vg
    theta = TRUTH + np.array([0.01, 0.002, 0.05, 0.003, 0.0005, 0.3])
    (_, _), grad = fn(jnp.asarray(theta))
    grad = np.asarray(grad)
    for i in range(6):
        h = 1e-6 * max(abs(theta[i]), 1e-2)
        up, dn = theta.copy(), theta.copy()
        up[i] += h
        dn[i] -= h
        fd = (float(fn(jnp.asarray(up))[0][0]) - float(fn(jnp.asarray(dn))[0][0])) / (2 * h)
        assert abs(grad[i] - fd) <= 1e-5 * abs(fd) + 1e-4, (NAMES[i], grad[i], fd)


def test_invalid_parameters_give_minus_inf_and_flag(vg):
    fn, _ = vg
    theta = TRUTH.copy()
    theta[2] = -1.0  # t_E < 0
    (marg, (res, _)), _ = fn(jnp.asarray(theta))
    assert not bool(res.ok[0])
    assert float(marg) == -np.inf and float(res.profile[0]) == -np.inf
    assert np.all(np.isnan(np.asarray(res.f_s)))


def _pspl_event(rng, u_0, fs, fb, sig, n=30):
    t = np.sort(rng.uniform(-30, 30, n))
    a = mm.Model(dict(t_0=0.0, u_0=u_0, t_E=10.0)).get_magnification(t)
    return Event.single(t, fs * a + fb + sig * rng.standard_normal(n), np.full(n, sig)), t, a


def _grid_log_integral(t, a, flux, sig, fs_lim, fb_lim, n=1201):
    fs = np.linspace(*fs_lim, n)[:, None]
    fb = np.linspace(*fb_lim, n)[None, :]
    w = 1.0 / sig**2
    # brute-force χ²(F_s, F_b) = Σ w (f − F_s a − F_b)², expanded into its raw sums
    sff, saf, sf = np.sum(w * flux**2), np.sum(w * a * flux), np.sum(w * flux)
    saa, sa, s1 = np.sum(w * a * a), np.sum(w * a), w * a.size
    chi2 = sff - 2 * fs * saf - 2 * fb * sf + fs**2 * saa + 2 * fs * fb * sa + fb**2 * s1
    fs, fb = fs[:, 0], fb[0]
    m = chi2.min()
    integ = np.trapezoid(np.trapezoid(np.exp(-0.5 * (chi2 - m)), fb, axis=1), fs)
    return math.log(integ) - 0.5 * m, chi2, fs, fb


def test_marginal_matches_2d_integration():
    rng = np.random.default_rng(3)
    ev, t, a = _pspl_event(rng, u_0=0.5, fs=100.0, fb=20.0, sig=3.0)
    packed = pack_event(ev)
    p = dict(t_0=jnp.array([0.0]), u_0=jnp.array([0.5]), t_E=jnp.array([10.0]))
    res = evaluate(p, packed)
    fs0, fb0 = float(res.f_s[0, 0]), float(res.f_b[0, 0])
    # ±9σ box around the optimum (σ from the exact covariance)
    x = np.stack([a, np.ones_like(a)], 1) / 3.0
    cov = np.linalg.inv(x.T @ x)
    hs, hb = 9 * math.sqrt(cov[0, 0]), 9 * math.sqrt(cov[1, 1])
    lims = (fs0 - hs, fs0 + hs), (fb0 - hb, fb0 + hb)
    ref, chi2, _, _ = _grid_log_integral(t, a, ev.datasets[0].flux, 3.0, *lims)
    assert abs(float(res.marginal[0]) - ref) < 1e-6
    # and the normalised form adds exactly −½ Σ log(2πσ²)
    res_n = evaluate(p, packed, normalize=True)
    const = -0.5 * ev.n_points * math.log(2 * math.pi * 9.0)
    assert abs(float(res_n.marginal[0]) - ref - const) < 1e-6
    assert abs(float(res_n.profile[0]) - (-0.5 * chi2.min() + const)) < 1e-3  # grid minimum


def test_positive_source_constraint():
    """F_s weakly determined (faint, slightly magnified source): the F_s > 0 marginal equals the
    grid integral over F_s > 0, and the constrained profile the grid minimum over F_s ≥ 0."""
    rng = np.random.default_rng(5)
    ev, t, a = _pspl_event(rng, u_0=1.5, fs=2.0, fb=100.0, sig=1.0)
    packed = pack_event(ev)
    p = dict(t_0=jnp.array([0.0]), u_0=jnp.array([1.5]), t_E=jnp.array([10.0]))
    free = evaluate(p, packed)
    pos = evaluate(p, packed, positive_source=True)
    fs_hat, err = float(free.f_s[0, 0]), float(free.f_s_err[0, 0])
    assert abs(fs_hat / err) < 3  # the truncation matters in this case
    x = np.stack([a, np.ones_like(a)], 1)
    cov = np.linalg.inv(x.T @ x)
    np.testing.assert_allclose(err, math.sqrt(cov[0, 0]), rtol=1e-10)
    fb0 = float(free.f_b[0, 0])
    hb = 9 * math.sqrt(cov[1, 1])
    ref_pos, chi2, fs_grid, _ = _grid_log_integral(
        t, a, ev.datasets[0].flux, 1.0, (0.0, max(fs_hat, 0) + 9 * err), (fb0 - hb, fb0 + hb), n=2001
    )
    assert abs(float(pos.marginal[0]) - ref_pos) < 1e-5
    assert float(pos.marginal[0]) < float(free.marginal[0])
    assert float(pos.f_s[0, 0]) >= 0
    assert abs(float(pos.chi2[0]) - chi2.min()) < 1e-3 * max(1.0, chi2.min())


def test_log_likelihood_kinds_and_errors():
    rng = np.random.default_rng(9)
    ev, _, _ = _pspl_event(rng, u_0=0.5, fs=100.0, fb=20.0, sig=3.0)
    packed = pack_event(ev, pad_to=40)
    p = dict(t_0=jnp.array([0.0, 0.1]), u_0=jnp.array([0.5, 0.4]), t_E=jnp.array([10.0, 11.0]))
    res = evaluate(p, pack_event(ev))
    np.testing.assert_allclose(np.asarray(log_likelihood(p, packed)), np.asarray(res.marginal), rtol=1e-12)
    np.testing.assert_allclose(
        np.asarray(log_likelihood(p, packed, kind="profile")), np.asarray(res.profile), rtol=1e-12
    )
    with pytest.raises(ValueError, match="kind"):
        log_likelihood(p, packed, kind="max")
    with pytest.raises(ValueError, match="unknown parameter"):
        evaluate({**p, "t_e": p["t_E"]}, packed)
    with pytest.raises(ValueError, match="pad_to"):
        pack_event(ev, pad_to=10)
