"""Plots: light curves (data, model, residuals) and caustics with the source trajectory.

Built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global state): each function
returns a Figure; save it with ``fig.savefig(path)``. Fluxes are on MulensModel's zero point 22
and shown as magnitudes; positions in θ_E in MulensModel v3's centre-of-mass frame (primary at
``x = +s·q/(1+q)``, companion at ``x = −s/(1+q)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from mulens_sbi.survey.noise import flux_to_mag

_MAG_PER_FLUX = 2.5 / np.log(10.0)


def plot_lightcurve(
    t: np.ndarray,
    flux: np.ndarray,
    sigma: np.ndarray,
    flux_model: np.ndarray,
    *,
    t_dense: np.ndarray | None = None,
    flux_dense: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    zoom: tuple[float, float] | None = None,
    title: str = "",
    band: str = "",
) -> Figure:
    """Data with error bars and the model, with a residual panel ``(data − model)/σ`` below.

    Args:
        t, flux, sigma: data times (HJD'), fluxes and 1σ errors (zero point 22).
        flux_model: model flux at the data times (for the residuals).
        t_dense, flux_dense: the model on a dense grid for the curve (default: the data times).
        mask: points to show (default: finite flux).
        zoom: ``(t_start, t_end)``: add a second column zoomed on this interval.
        title, band: figure title and band name for the axis label.
    """
    t, flux, sigma, flux_model = (np.asarray(a, dtype=float) for a in (t, flux, sigma, flux_model))
    m = np.isfinite(flux) & np.isfinite(sigma) if mask is None else np.asarray(mask, bool) & np.isfinite(flux)
    if t_dense is None:
        t_dense, flux_dense = t[m], flux_model[m]
    ncol = 2 if zoom is not None else 1
    fig = Figure(figsize=(6.5 * ncol, 5.5), layout="constrained")
    gs = fig.add_gridspec(2, ncol, height_ratios=(3, 1))
    mag = flux_to_mag(flux[m])
    emag = _MAG_PER_FLUX * sigma[m] / flux[m]
    res = (flux[m] - flux_model[m]) / sigma[m]
    for col in range(ncol):
        ax = fig.add_subplot(gs[0, col])
        axr = fig.add_subplot(gs[1, col], sharex=ax)
        ax.errorbar(
            t[m], mag, yerr=emag, fmt=".", ms=2, lw=0.5, color="0.35", alpha=0.7, label="data", zorder=1
        )
        ax.plot(t_dense, flux_to_mag(flux_dense), "-", color="C3", lw=1.0, label="true model", zorder=2)
        axr.errorbar(t[m], res, yerr=np.ones_like(res), fmt=".", ms=2, lw=0.5, color="0.35", alpha=0.7)
        axr.axhline(0.0, color="C3", lw=1.0)
        ax.invert_yaxis()
        ax.set_ylabel(f"{band} magnitude" if band else "magnitude")
        axr.set_ylabel("(data − model)/σ")
        axr.set_xlabel("HJD − 2450000 (days)")
        if col == 1 and zoom is not None:
            ax.set_xlim(*zoom)
            inside = m & (t >= zoom[0]) & (t <= zoom[1])
            dense_in = (t_dense >= zoom[0]) & (t_dense <= zoom[1])
            mags = np.concatenate([flux_to_mag(flux[inside]), flux_to_mag(flux_dense[dense_in])])
            mags = mags[np.isfinite(mags)]
            if mags.size:
                pad = 0.05 * (mags.max() - mags.min() + 1e-3)
                ax.set_ylim(mags.max() + pad, mags.min() - pad)
            ax.set_title("zoom on the anomaly", fontsize=10)
        else:
            ax.legend(loc="upper right", fontsize=8)
            if zoom is not None:
                ax.axvspan(*zoom, color="C0", alpha=0.1, lw=0)
    if title:
        fig.suptitle(title)
    return fig


def _lens_positions(s: float, q: float) -> tuple[float, float]:
    """x of the primary and of the companion (centre-of-mass frame, θ_E)."""
    return s * q / (1.0 + q), -s / (1.0 + q)


def caustic_points(s: float, q: float, n_points: int = 512) -> np.ndarray | None:
    """Caustic points (complex, CoM frame) from :mod:`mulens_sbi.lensing.caustics`, or None if absent."""
    try:
        from mulens_sbi.lensing.caustics import caustics
    except (ImportError, AttributeError):
        return None
    return np.asarray(caustics(s, q, n_points))


def plot_caustics(
    s: float,
    q: float,
    t_0: float,
    u_0: float,
    t_E: float,
    alpha: float,
    t_range: tuple[float, float],
    *,
    rho: float | None = None,
    t_data: Sequence[float] | None = None,
    zoom: tuple[float, float, float] | None = None,
    n_points: int = 512,
    title: str = "",
) -> Figure:
    """Caustics, lens positions and the source trajectory over ``t_range`` (alpha in degrees).

    Falls back to the lens positions alone when :mod:`mulens_sbi.lensing.caustics` is not there.
    ``zoom = (x, y, half_width)`` adds a second panel around (x, y). ``t_data`` marks the source
    positions at the observation times; ``rho`` draws the source disc at t_0.
    """
    from mulens_sbi.lightcurve import source_trajectory

    x1, x2 = _lens_positions(s, q)
    tt = np.linspace(t_range[0], t_range[1], 2001)
    xs, ys = (np.asarray(v) for v in source_trajectory(tt, t_0, u_0, t_E, alpha))
    caus = caustic_points(s, q, n_points)
    npan = 2 if zoom is not None else 1
    fig = Figure(figsize=(5.5 * npan, 5.2), layout="constrained")
    for k in range(npan):
        ax = fig.add_subplot(1, npan, k + 1)
        if caus is not None:
            for i, branch in enumerate(np.atleast_2d(caus)):
                ax.plot(
                    branch.real, branch.imag, ".", ms=0.8, color="C3", label="caustics" if i == 0 else None
                )
        ax.plot([x1], [0.0], "o", color="k", ms=7, label="primary")
        ax.plot([x2], [0.0], "o", color="0.5", ms=max(3.0, 7 * q ** (1 / 3)), label="companion")
        ax.plot(xs, ys, "-", color="C0", lw=1.0, label="source trajectory")
        mid = len(tt) // 2
        ax.annotate(
            "",
            xy=(xs[mid + 20], ys[mid + 20]),
            xytext=(xs[mid], ys[mid]),
            arrowprops={"arrowstyle": "->", "color": "C0"},
        )
        if t_data is not None:
            xd, yd = (np.asarray(v) for v in source_trajectory(np.asarray(t_data), t_0, u_0, t_E, alpha))
            ax.plot(xd, yd, "|", color="C0", ms=3, alpha=0.5, label="observations")
        if rho is not None:
            x0, y0 = (float(v) for v in source_trajectory(t_0, t_0, u_0, t_E, alpha))
            ax.add_patch(_circle((x0, y0), rho))
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("x (θ_E)")
        ax.set_ylabel("y (θ_E)")
        if k == 0:
            half = max(1.5, abs(x2) * 1.3, abs(u_0) * 1.5)
            ax.set_xlim(-half, half)
            ax.set_ylim(-half, half)
            ax.legend(loc="upper right", fontsize=7)
            if caus is None:
                ax.set_title("caustics module not available: lens positions only", fontsize=9)
        else:
            x, y, h = zoom
            ax.set_xlim(x - h, x + h)
            ax.set_ylim(y - h, y + h)
            ax.set_title("zoom", fontsize=10)
    if title:
        fig.suptitle(title)
    return fig


def _circle(center: tuple[float, float], radius: float):
    from matplotlib.patches import Circle

    return Circle(center, radius, fill=False, color="C0", lw=0.8)
