"""Light-curve preprocessing: invariances, binning against direct sums, noise at the binned level,
the peak-time reference, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mulens_sbi.event import Dataset, Event
from mulens_sbi.preprocess import (
    PreprocessConfig,
    bin_edges,
    bin_points,
    bin_points_jax,
    estimate_peak_time,
    estimate_peak_time_jax,
    network_input,
    preprocess,
    preprocess_event,
)

CFG = PreprocessConfig()


def pspl(t, t_0, u_0, t_E):
    """Paczynski single-lens magnification (analytic, independent of the package)."""
    u = np.sqrt(u_0 ** 2 + ((t - t_0) / t_E) ** 2)
    return (u ** 2 + 2) / (u * np.sqrt(u ** 2 + 4))


def make_lc(rng, t_0=1000.0, u_0=0.2, t_E=12.0, lo=-24.0, hi=24.0, n=1500, f_s=2.0, f_b=0.5, rel=0.01):
    t = np.sort(rng.uniform(t_0 + lo, t_0 + hi, n))
    ft = f_s * pspl(t, t_0, u_0, t_E) + f_b
    sig = rel * (f_s + f_b) * np.ones(n)
    return t, ft + sig * rng.standard_normal(n), sig, ft


def test_affine_invariance_in_flux(rng):
    # F -> c F + d (c > 0) with sigma -> c sigma must leave the network input unchanged
    t, f, s, _ = make_lc(rng)
    p1 = preprocess(t, f, s, cfg=CFG)
    p2 = preprocess(t, 37.5 * f - 12.0, 37.5 * s, cfg=CFG)
    assert p1.t_ref == p2.t_ref
    np.testing.assert_allclose(p2.x, p1.x, rtol=0, atol=1e-9)


def test_binning_matches_direct_weighted_mean(rng):
    t, f, s, _ = make_lc(rng)
    s = s * rng.uniform(0.5, 2.0, s.size)
    t_ref = 1000.3
    mean, err, cnt = bin_points(t, f, s, np.ones(t.size, bool), t_ref, CFG)
    edges = bin_edges(CFG) + t_ref
    for k in np.flatnonzero(cnt > 0)[::17]:
        sel = (t >= edges[k]) & (t < edges[k + 1])
        w = 1 / s[sel] ** 2
        assert cnt[k] == sel.sum()
        np.testing.assert_allclose(mean[k], np.sum(w * f[sel]) / np.sum(w), rtol=1e-12)
        np.testing.assert_allclose(err[k], 1 / np.sqrt(np.sum(w)), rtol=1e-12)
    assert cnt.sum() == np.sum(np.abs(t - t_ref) <= CFG.half_width_days)


def test_jax_peak_time_and_binning_equal_the_numpy_ones(rng):
    """The device twins of steps 2-4 (used by the on-device sampler) give the numpy results: rows
    with gaps, masked points, points outside the view, a row of 5 usable points and an empty row."""
    b, n = 12, 700
    t = np.sort(rng.uniform(-220.0, 220.0, (b, n)), axis=1)
    f = rng.normal(1.0, 0.1, (b, n)) + np.exp(-t**2 / 50.0)
    s = rng.uniform(0.01, 0.1, (b, n))
    m = rng.random((b, n)) > 0.3
    m[3] = False
    m[4] = np.arange(n) < 5
    ref = estimate_peak_time(t, f, s, m, 15)
    got = np.asarray(estimate_peak_time_jax(t, f, s, m, 15))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=0, atol=1e-12)
    t_ref = np.where(np.isnan(ref), 0.0, ref)
    for a, c in zip(bin_points(t, f, s, m, t_ref, CFG), bin_points_jax(t, f, s, m, t_ref, CFG), strict=True):
        np.testing.assert_allclose(np.asarray(c), a, rtol=1e-12, atol=1e-15)


def test_noise_at_binned_level_is_exact_in_distribution(rng):
    # binned(flux_true + sigma N) has per-cell mean binned(flux_true) and std err
    t, _, s, ft = make_lc(rng, n=400)
    s = s * rng.uniform(0.5, 2.0, s.size)
    m = np.ones(t.size, bool)
    mean0, err0, cnt = bin_points(t, ft, s, m, 1000.0, CFG)
    draws = 4000
    noisy = ft[None] + s[None] * rng.standard_normal((draws, t.size))
    mb, _, _ = bin_points(np.broadcast_to(t, noisy.shape), noisy, np.broadcast_to(s, noisy.shape),
                          np.ones(noisy.shape, bool), np.full(draws, 1000.0), CFG)
    has = cnt > 0
    z = (mb[:, has].mean(0) - mean0[has]) / (err0[has] / np.sqrt(draws))
    assert np.max(np.abs(z)) < 5.0
    ratio = mb[:, has].std(0) / err0[has]
    # std of a sample std from 4000 draws is ~1.1%; 6 sigma tolerance
    assert np.max(np.abs(ratio - 1)) < 0.07


def test_peak_time_is_the_peak_not_the_window_centre(rng):
    # asymmetric window: data from t_0 - 30 d to t_0 + 6 d; window centre is 12 d before the peak
    t, f, s, _ = make_lc(rng, t_0=2000.0, u_0=0.1, t_E=15.0, lo=-30, hi=6, n=2000)
    t_ref = estimate_peak_time(t, f, s, np.ones(t.size, bool), CFG.smooth_points)
    assert abs(t_ref - 2000.0) < 0.1          # peak width ~ 0.1 t_E = 1.5 d; smoothing over ~0.27 d
    assert abs(0.5 * (t[0] + t[-1]) - 2000.0) > 10


def test_masked_and_far_points_do_not_change_the_input(rng):
    t, f, s, _ = make_lc(rng)
    base = preprocess(t, f, s, cfg=CFG)
    # masked points with NaN values are ignored
    t2 = np.concatenate([t, [1001.0, 1002.0]])
    f2 = np.concatenate([f, [np.nan, 5.0]])
    s2 = np.concatenate([s, [np.nan, -1.0]])
    m2 = np.concatenate([np.ones(t.size, bool), [False, False]])
    p2 = preprocess(t2, f2, s2, m2, cfg=CFG)
    np.testing.assert_array_equal(p2.x, base.x)
    assert p2.info["n_masked"] == 2
    # points farther than H from the peak are outside the view: counted, no effect
    t3 = np.concatenate([t, base.t_ref + np.array([-400.0, 300.0])])
    p3 = preprocess(t3, np.concatenate([f, [f.min(), f.min()]]), np.concatenate([s, s[:2]]), cfg=CFG)
    np.testing.assert_array_equal(p3.x, base.x)
    assert p3.info["n_outside"] == 2


def test_network_input_channels(rng):
    t, f, s, _ = make_lc(rng)
    p = preprocess(t, f, s, cfg=CFG)
    x = p.x
    assert x.shape == (CFG.n_bins, 4)
    has = x[:, 3] > 0
    fl = x[has, 1]
    assert np.isclose(fl.max(), 1.0)
    assert np.isclose(np.sort(fl)[int(np.floor(0.1 * (has.sum() - 1)))], 0.0)
    assert np.all(x[has, 2] > 0) and np.all(x[~has, 1:3] == 0)
    np.testing.assert_allclose(x[:, 0], (np.arange(CFG.n_bins) + 0.5) / CFG.n_bins)
    # a flat row gives NaN (so training excludes it) rather than a silent number
    flat = np.asarray(network_input(np.ones((1, CFG.n_bins)), np.ones((1, CFG.n_bins)),
                                    np.ones((1, CFG.n_bins)), CFG))
    assert np.all(np.isnan(flat[..., 1]))


def test_bad_input_errors(rng):
    t, f, s, _ = make_lc(rng)
    f_bad = f.copy()
    f_bad[7] = np.nan
    with pytest.raises(ValueError, match=r"column 'flux' row 7"):
        preprocess(t, f_bad, s, cfg=CFG)
    s_bad = s.copy()
    s_bad[3] = 0.0
    with pytest.raises(ValueError, match=r"column 'sigma' row 3: must be > 0"):
        preprocess(t, f, s_bad, cfg=CFG)
    with pytest.raises(ValueError, match="usable points; the model needs at least 50"):
        preprocess(t[:20], f[:20], s[:20], cfg=CFG)
    with pytest.raises(ValueError, match="flat light curve"):
        preprocess(t, np.ones_like(f), s, cfg=CFG)
    with pytest.raises(ValueError, match="too short or too sparse"):
        tt = np.repeat(t[:3], 30)
        preprocess(tt, np.repeat(f[:3], 30), np.repeat(s[:3], 30), cfg=CFG)
    ev = Event((Dataset("a", t, f, s), Dataset("b", t, f, s)))
    with pytest.raises(ValueError, match="has 2 datasets"):
        preprocess_event(ev, CFG)
    one = preprocess_event(Event((Dataset("a", t, f, s),)), CFG)
    np.testing.assert_array_equal(one.x, preprocess(t, f, s, cfg=CFG).x)
