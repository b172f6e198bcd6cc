"""Plots: figure structure, lens positions and trajectory geometry (MulensModel v3 convention)."""

from __future__ import annotations

import numpy as np
import pytest

from mulens_sbi import plots


def _line(ax, label):
    for line in ax.get_lines():
        if line.get_label() == label:
            return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    raise AssertionError(f"no line labelled {label!r}")


def test_caustic_plot_geometry(tmp_path, monkeypatch):
    s, q, t_0, u_0, t_E, alpha = 1.3, 0.01, 100.0, 0.2, 20.0, 30.0
    monkeypatch.setattr(plots, "caustic_points", lambda s, q, n_points=512: None)  # fallback path
    fig = plots.plot_caustics(s, q, t_0, u_0, t_E, alpha, (60.0, 140.0), zoom=(-0.5, 0.0, 0.2))
    ax = fig.axes[0]
    assert "lens positions only" in ax.get_title()
    # primary at +s q/(1+q), companion at -s/(1+q) (MulensModel v3 centre-of-mass frame)
    assert _line(ax, "primary")[0][0] == pytest.approx(s * q / (1 + q), abs=1e-15)
    assert _line(ax, "companion")[0][0] == pytest.approx(-s / (1 + q), abs=1e-15)
    x, y = _line(ax, "source trajectory")
    # a straight line at distance |u_0| from the centre of mass, direction alpha
    assert np.min(np.hypot(x, y)) == pytest.approx(abs(u_0), rel=1e-6)
    a = np.deg2rad(alpha)
    assert np.allclose(np.diff(y) / np.diff(x), np.tan(a))
    # at t_0 (middle of the range) the source is at (-u_0 sin a, u_0 cos a)
    assert x[1000] == pytest.approx(-u_0 * np.sin(a), abs=1e-12)
    assert y[1000] == pytest.approx(u_0 * np.cos(a), abs=1e-12)
    fig.savefig(tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert len(fig.axes) == 2


def test_caustic_plot_uses_caustics_module():
    pytest.importorskip("mulens_sbi.lensing.caustics")
    from mulens_sbi.lensing.caustics import caustics

    fig = plots.plot_caustics(1.0, 0.1, 0.0, 0.1, 10.0, 45.0, (-20.0, 20.0))
    x, _ = _line(fig.axes[0], "caustics")
    assert np.allclose(x, np.asarray(caustics(1.0, 0.1, 512))[0].real)


def test_lightcurve_plot(tmp_path):
    t = np.linspace(0, 10, 200)
    model = 1.0 + 5.0 / (1.0 + (t - 5.0) ** 2)
    sigma = np.full_like(t, 0.05)
    flux = model + sigma * np.random.default_rng(0).standard_normal(t.size)
    fig = plots.plot_lightcurve(t, flux, sigma, model, zoom=(4.0, 6.0), band="W149", title="x")
    assert len(fig.axes) == 4
    data_ax = fig.axes[0]
    x, ymag = _line(data_ax, "true model")
    assert np.allclose(ymag, 22 - 2.5 * np.log10(model))
    assert data_ax.get_ylim()[0] > data_ax.get_ylim()[1]  # magnitudes: brighter is up
    # residual panel shows (data - model)/sigma
    res_ax = fig.axes[1]
    pts = [c for c in res_ax.containers]
    assert pts, "no error bars in the residual panel"
    yres = pts[0].lines[0].get_ydata()
    assert np.allclose(yres, (flux - model) / sigma)
    assert fig.axes[2].get_xlim() == pytest.approx((4.0, 6.0))
    fig.savefig(tmp_path / "lc.png")
    assert (tmp_path / "lc.png").stat().st_size > 5000


def test_fit_lightcurve_plot_with_fluxes_below_zero(tmp_path):
    """Difference fluxes (MOA, KMTNet pySIS) are negative at baseline when the blend flux is: those
    points have no magnitude and are not drawn, and the plot is made (it raised "'yerr' must not
    contain negative values" on OGLE-2003-BLG-235's MOA data)."""
    from mulens_sbi.event import Event
    from mulens_sbi.lightcurve import magnification

    t = np.linspace(0.0, 100.0, 300)
    p = {"t_0": 50.0, "u_0": 0.3, "t_E": 10.0}
    sigma = np.full_like(t, 0.4)
    noise = sigma * np.random.default_rng(1).standard_normal(t.size)
    flux = np.asarray(magnification(t, **p)) - 0.5 + noise
    assert (flux < 0).any()
    event = Event.single(t, flux, sigma, name="diff")
    draws = {k: np.full(3, v) for k, v in p.items()}
    fig = plots.plot_fit_lightcurve(event, draws, np.ones((3, 1)), np.full((3, 1), -0.5), p,
                                    np.array([1.0]), np.array([-0.5]))
    fig.savefig(tmp_path / "lc.png")
    assert (tmp_path / "lc.png").stat().st_size > 5000
