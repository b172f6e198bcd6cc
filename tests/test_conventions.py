"""Converters to and from VBMicrolensing's and pyLIMA's conventions, checked against the packages."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from mulens_sbi import conventions as cv
from mulens_sbi import source_trajectory
from mulens_sbi.lensing import point_source as ps

VBMicrolensing = pytest.importorskip("VBMicrolensing")


def _random_params(rng, n):
    return {
        "t_0": rng.uniform(-20, 20, n), "u_0": rng.uniform(-1, 1, n), "t_E": 10 ** rng.uniform(1, 2, n),
        "s": 10 ** rng.uniform(-0.7, 0.7, n), "q": 10 ** rng.uniform(-5, 0, n),
        "alpha": rng.uniform(0, 360, n), "rho": 10 ** rng.uniform(-4, -1, n),
    }


def test_vbm_round_trip(rng):
    p = _random_params(rng, 100)
    back = cv.from_vbm(cv.to_vbm(p))
    for k, v in p.items():
        np.testing.assert_allclose(back[k], v, rtol=1e-13, atol=1e-11, err_msg=k)
    v = cv.to_vbm(p)
    assert np.all((np.asarray(v["alpha"]) >= 0) & (np.asarray(v["alpha"]) < 2 * np.pi))
    x, y = rng.normal(size=5), rng.normal(size=5)
    np.testing.assert_array_equal(cv.from_vbm_position(*cv.to_vbm_position(x, y)), (x, y))


@pytest.mark.parametrize("blend", ["gblend", "fblend", "ftotal"])
def test_pylima_round_trip(rng, blend):
    p = _random_params(rng, 50)
    p["f_s"] = 10 ** rng.uniform(-1, 2, 50)
    p["f_b"] = rng.uniform(-0.5, 5, 50)
    d = cv.to_pylima(p, telescope="OGLE", blend=blend, time_offset=cv.HJD_OFFSET)
    assert f"{blend}_OGLE" in d and "fsource_OGLE" in d
    back = cv.from_pylima(d, telescope="OGLE", time_offset=cv.HJD_OFFSET)
    for k, v in p.items():
        np.testing.assert_allclose(back[k], v, rtol=1e-12, atol=1e-9, err_msg=k)


def test_flux_and_magnitude_conversions(rng):
    f = 10 ** rng.uniform(-2, 3, 100)
    m = cv.flux_to_mag(f)
    np.testing.assert_allclose(cv.mag_to_flux(m), f, rtol=1e-13)
    # the same brightness on pyLIMA's zero point: equal magnitudes
    f_p = cv.rescale_flux(f, cv.MULENSMODEL_ZERO_POINT, cv.PYLIMA_ZERO_POINT)
    np.testing.assert_allclose(cv.flux_to_mag(f_p, cv.PYLIMA_ZERO_POINT), m, atol=1e-12)
    # 22 mag is unit flux for MulensModel; 27.4 mag is unit flux for pyLIMA; 5.4 mag = factor 10^2.16
    assert float(cv.flux_to_mag(1.0)) == 22.0
    np.testing.assert_allclose(f_p / f, 10**2.16, rtol=1e-14)
    # gblend is independent of the zero point
    d = cv.to_pylima({"t_0": 0.0, "u_0": 0.1, "t_E": 10.0, "f_s": 2.0, "f_b": 3.0}, telescope="T")
    assert abs(float(d["gblend_T"]) - 1.5) < 1e-15
    with pytest.raises(ValueError, match="telescope"):
        cv.to_pylima({"t_0": 0.0, "u_0": 0.1, "t_E": 10.0, "f_s": 2.0, "f_b": 3.0})
    with pytest.raises(ValueError, match="f_s and f_b"):
        cv.to_pylima({"t_0": 0.0, "u_0": 0.1, "t_E": 10.0, "f_s": 2.0}, telescope="T")


def test_vbm_light_curve_mapping(rng):
    """BinaryLightCurve after to_vbm: the same source positions (to 1e-14) and magnification."""
    vbm = VBMicrolensing.VBMicrolensing()
    vbm.Tol, vbm.RelTol = 1e-10, 0.0
    p = _random_params(rng, 8)
    worst_lc, worst_mag0 = 0.0, 0.0
    for i in range(8):
        pi = {k: float(v[i]) for k, v in p.items()}
        t = pi["t_0"] + pi["t_E"] * np.linspace(-3, 3, 240)
        x, y = (np.asarray(a) for a in source_trajectory(t, pi["t_0"], pi["u_0"], pi["t_E"], pi["alpha"]))
        a_ours, ok = ps.magnification_points(jnp.asarray(x), jnp.asarray(y), pi["s"], pi["q"])
        assert bool(jnp.all(ok)), (pi, np.flatnonzero(~np.asarray(ok)))
        a_ours = np.asarray(a_ours)
        args = cv.vbm_param_list(cv.to_vbm({k: v for k, v in pi.items() if k != "rho"}), log_rho=np.log(1e-7))
        a_lc, y1, y2 = (np.asarray(r) for r in vbm.BinaryLightCurve(args, list(t)))
        xb, yb = cv.from_vbm_position(y1, y2)
        np.testing.assert_allclose(xb, x, atol=1e-13)
        np.testing.assert_allclose(yb, y, atol=1e-13)
        # BinaryMag0 at VBM's own positions: point source, exact comparison
        a_mag0 = np.array([vbm.BinaryMag0(pi["s"], pi["q"], u, v) for u, v in zip(y1, y2, strict=True)])
        worst_mag0 = max(worst_mag0, np.max(np.abs(a_mag0 / a_ours - 1)))
        # BinaryLightCurve is finite-source (BinaryMag2 with rho = 1e-7): agreement to ~1e-8
        worst_lc = max(worst_lc, np.max(np.abs(a_lc / a_ours - 1)))
    assert worst_mag0 < 1e-10, worst_mag0
    assert worst_lc < 1e-7, worst_lc


def test_vbm_mirror_mapping_is_not_the_geometric_one():
    """(u0, alpha) unchanged gives the mirror trajectory: same magnification, other positions."""
    vbm = VBMicrolensing.VBMicrolensing()
    t = np.linspace(-30, 30, 50)
    p = {"t_0": 0.0, "u_0": 0.2, "t_E": 20.0, "s": 1.2, "q": 0.1, "alpha": 30.0}
    x, y = (np.asarray(a) for a in source_trajectory(t, 0.0, 0.2, 20.0, 30.0))
    mirror = [np.log(1.2), np.log(0.1), 0.2, np.deg2rad(30.0), np.log(1e-7), np.log(20.0), 0.0]
    _, y1, y2 = (np.asarray(r) for r in vbm.BinaryLightCurve(mirror, list(t)))
    np.testing.assert_allclose(-y1, x, atol=1e-13)
    np.testing.assert_allclose(y2, -y, atol=1e-13)
    _, y1, y2 = (np.asarray(r) for r in vbm.BinaryLightCurve(
        cv.vbm_param_list(cv.to_vbm(p), log_rho=np.log(1e-7)), list(t)))
    np.testing.assert_allclose(y2, y, atol=1e-13)


@pytest.fixture(scope="module")
def pylima_event():
    pytest.importorskip("pyLIMA")
    from pyLIMA import event, telescopes

    t = np.linspace(2459940.0, 2460060.0, 400)
    lc = np.c_[t, np.full_like(t, 18.0), np.full_like(t, 0.01)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = event.Event(ra=270.0, dec=-30.0)
        ev.name = "test"
        tel = telescopes.Telescope(name="T", camera_filter="I", lightcurve=lc,
                                   lightcurve_names=["time", "mag", "err_mag"],
                                   lightcurve_units=["JD", "mag", "mag"])
        ev.telescopes.append(tel)
    return ev, tel, t


@pytest.mark.parametrize("blend", ["gblend", "fblend", "ftotal"])
def test_pylima_psbl_light_curve(pylima_event, rng, blend):
    from pyLIMA.models import PSBL_model

    ev, tel, t = pylima_event
    model = PSBL_model.PSBLmodel(ev, blend_flux_parameter=blend)
    p = _random_params(rng, 4)
    for i in range(4):
        pi = {k: float(v[i]) for k, v in p.items() if k != "rho"}
        pi["t_0"] = 10000.0 + 0.5 * pi["t_0"]  # HJD' near the light curve
        pi["f_s"], pi["f_b"] = 1.7, 0.4
        d = cv.to_pylima(pi, telescope="T", blend=blend, time_offset=cv.HJD_OFFSET)
        plist = [float(d[k]) for k in model.model_dictionnary]
        params = model.compute_pyLIMA_parameters(plist)
        x, y = (np.asarray(a) for a in source_trajectory(t - cv.HJD_OFFSET, pi["t_0"], pi["u_0"],
                                                         pi["t_E"], pi["alpha"]))
        traj = model.sources_trajectory(tel, params, data_type="photometry")
        xb, yb = cv.from_vbm_position(traj[0], traj[1])
        np.testing.assert_allclose(xb, x, atol=1e-10)
        np.testing.assert_allclose(yb, y, atol=1e-10)
        a_ours, ok = ps.magnification_points(jnp.asarray(x), jnp.asarray(y), pi["s"], pi["q"])
        assert bool(jnp.all(ok))
        a_ours = np.asarray(a_ours)
        # pyLIMA calls BinaryMag0; near caustics it and we differ by up to ~2e-9 (measured; a 40-digit
        # mpmath solve put most of that on BinaryMag0's side); the mapping itself is exact (positions)
        np.testing.assert_allclose(model.model_magnification(tel, params), a_ours, rtol=1e-8)
        flux_p = model.compute_the_microlensing_model(tel, params)["photometry"]
        # same magnitudes on each side's zero point
        np.testing.assert_allclose(cv.flux_to_mag(flux_p, cv.PYLIMA_ZERO_POINT),
                                   cv.flux_to_mag(1.7 * a_ours + 0.4), atol=1e-9)


def test_pylima_usbl_rho(pylima_event):
    """Finite source: pyLIMA's USBL equals VBMicrolensing BinaryMag2 at our mapped positions."""
    from pyLIMA.models import USBL_model

    ev, tel, t = pylima_event
    model = USBL_model.USBLmodel(ev, blend_flux_parameter="gblend")
    p = {"t_0": 10000.0, "u_0": -0.05, "t_E": 30.0, "s": 1.1, "q": 0.05, "alpha": 200.0, "rho": 3e-3,
         "f_s": 1.0, "f_b": 0.0}
    d = cv.to_pylima(p, telescope="T", time_offset=cv.HJD_OFFSET)
    params = model.compute_pyLIMA_parameters([float(d[k]) for k in model.model_dictionnary])
    a_p = np.asarray(model.model_magnification(tel, params))
    x, y = (np.asarray(a) for a in source_trajectory(t - cv.HJD_OFFSET, 10000.0, -0.05, 30.0, 200.0))
    vbm = VBMicrolensing.VBMicrolensing()
    vbm.RelTol = 1e-4
    a_v = np.array([vbm.BinaryMag2(1.1, 0.05, -u, v, 3e-3) for u, v in zip(x, y, strict=True)])
    assert np.max(a_v) > 5  # the trajectory passes the caustic region
    np.testing.assert_allclose(a_p, a_v, rtol=1e-3)
