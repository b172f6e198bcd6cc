"""Finite-source single-lens magnification against analytic limits, an independent quadrature and
VBMicrolensing (which also checks the Γ → a1 = 3Γ/(2+Γ) limb-darkening conversion)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy.integrate import quad

from mulens_sbi.lensing.single import finite_source, point_source


def _radial_reference(u: float, rho: float) -> float:
    """Uniform disc by an independent method: ∫ A_ps(R)·(arc of the lens-centred circle R inside
    the disc) dR / (πρ²), with scipy's adaptive quadrature."""

    def arc(r):
        if u == 0.0:
            return 2.0 * np.pi * r if r < rho else 0.0
        c = (r * r + u * u - rho * rho) / (2.0 * u * r)
        return 2.0 * r * np.arccos(np.clip(c, -1.0, 1.0))

    lo, hi = max(u - rho, 0.0), u + rho
    brk = [b for b in (abs(u - rho),) if lo < b < hi]
    f = lambda r: float(point_source(r)) * arc(r) if r > 0 else 2.0 * (np.pi if u == 0 else 0.0)  # noqa: E731
    val = quad(f, lo, hi, points=brk or None, limit=400, epsabs=0, epsrel=1e-12)[0]
    return val / (np.pi * rho * rho)


def test_center_analytic():
    rho = np.array([1e-4, 1e-3, 0.05, 0.5])
    a, ok = finite_source(0.0, rho, 0.0)
    assert np.all(ok)
    np.testing.assert_allclose(a, np.sqrt(1.0 + 4.0 / rho**2), rtol=1e-11)


@pytest.mark.parametrize("rho", [1e-4, 1e-2, 0.3])
def test_uniform_vs_independent_quadrature(rho):
    frac = np.array([0.0, 0.3, 0.9, 0.999, 1.0, 1.001, 1.1, 2.0, 10.0, 300.0])
    u = frac * rho
    a, ok = finite_source(u, rho, 0.0)
    assert np.all(ok)
    ref = np.array([_radial_reference(ui, rho) for ui in u])
    np.testing.assert_allclose(a, ref, rtol=1e-7)


def test_limb_darkened_vs_vbm_and_conversion():
    import VBMicrolensing

    vbm = VBMicrolensing.VBMicrolensing()
    # RelTol 1e-7: two orders below the tolerance checked (1e-9 cost ~20 s of reference time)
    vbm.RelTol = 1e-7
    vbm.Tol = 1e-7
    rng = np.random.default_rng(7)
    for rho in (1e-3, 0.05):
        u = rho * np.concatenate([[0.1, 0.5, 0.8, 1.3, 2.5], rng.uniform(3.0, 50.0, 4)])
        for gamma in (0.3, 0.7):
            a, ok = finite_source(u, rho, gamma)
            assert np.all(ok)
            vbm.a1 = 3.0 * gamma / (2.0 + gamma)
            ref = np.array([vbm.ESPLMagDark(ui, rho) for ui in u])
            np.testing.assert_allclose(a, ref, rtol=2e-5)
            # the naive a1 = Γ is measurably different: the conversion matters
            vbm.a1 = gamma
            wrong = np.array([vbm.ESPLMagDark(ui, rho) for ui in u[:3]])
            assert np.max(np.abs(np.asarray(a[:3]) / wrong - 1.0)) > 1e-3


def test_limb_darkened_center_quadrature():
    rho, gamma = 0.02, 0.6
    f = lambda t: np.sqrt(1.0 + 4.0 / (rho * np.sin(t)) ** 2) * np.sin(t) ** 3  # noqa: E731
    ref = (1 - gamma) * np.sqrt(1 + 4 / rho**2) + 1.5 * gamma * quad(f, 0, np.pi / 2, epsrel=1e-13)[0]
    a, _ = finite_source(0.0, rho, gamma)
    np.testing.assert_allclose(a, ref, rtol=1e-7)


def test_small_rho_tends_to_point_source():
    u = np.array([0.05, 0.3, 1.0, 2.0])
    for gamma in (0.0, 0.5):
        a, _ = finite_source(u, 1e-5, gamma)
        np.testing.assert_allclose(a, point_source(u), rtol=1e-7)
        a2, _ = finite_source(u, 1e-2, gamma)
        assert np.max(np.abs(np.asarray(a2) / point_source(u) - 1)) > 1e-6  # and it can differ


def test_bad_input_flagged():
    a, ok = finite_source(np.array([0.1, np.nan, 0.1]), np.array([0.01, 0.01, -1.0]), 0.0)
    assert ok.tolist() == [True, False, False]
    assert np.isfinite(a[0]) and np.isnan(a[1]) and np.isnan(a[2])


def test_gradient_matches_finite_differences():
    def f(p):
        return finite_source(p[0], p[1], p[2])[0]

    for p0 in (np.array([0.012, 0.01, 0.4]), np.array([0.3, 0.05, 0.2])):
        g = np.asarray(jax.grad(f)(p0))
        h = 1e-7 * np.maximum(np.abs(p0), 1e-3)
        fd = np.array([(f(p0 + h * e) - f(p0 - h * e)) / (2 * h[i]) for i, e in enumerate(np.eye(3))])
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6 * abs(float(f(p0))))
