"""Figures of a :class:`~mulens_sbi.degeneracy.report.DegeneracyReport` (matplotlib ``Figure``s, no
pyplot state). Positions in θ_E in MulensModel v3's centre-of-mass frame (primary at
``+s·q/(1+q)``, companion at ``−s/(1+q)``); alpha folded to the ``sin alpha ≥ 0`` copy.

* :func:`plot_mode_caustics` — one panel per mode: caustics, lenses, the representative trajectory
  and the axis crossing x0 (measured from the primary towards the companion) marked.
* :func:`plot_mode_lightcurves` — the modes' magnifications and their relative difference to mode 1.
* :func:`plot_relation` — the s_A–s_B plane: the relation's curve ``f(s_A) + f(s_B) = 2·x0`` at the
  measured x0 (with its ±1σ band), the close–wide line ``s_A·s_B = 1`` and each pair of modes.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from mulens_sbi.degeneracy.relation import partner_separation
from mulens_sbi.plots import anomaly_window, caustic_points, lens_positions, magnifications

__all__ = ["plot_mode_caustics", "plot_mode_lightcurves", "plot_relation"]

_MAX_PANELS = 4


def _rep(mode) -> dict:
    return mode.representative


def plot_mode_caustics(report, n_points: int = 512) -> Figure:
    modes = report.modes[:_MAX_PANELS]
    fig = Figure(figsize=(4.4 * max(1, len(modes)), 4.4), layout="constrained")
    for i, m in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), i + 1)
        p = _rep(m)
        s, q, u0, alpha = p["s"], p["q"], p["u_0"], p["alpha"]
        x1, x2 = lens_positions(s, q)
        x0 = float(np.median(m.x0))
        xc = x1 - x0  # crossing point in the CoM frame
        caus = caustic_points(s, q, n_points)
        pts = np.atleast_2d(caus).ravel() if caus is not None else np.array([x1 + 0j])
        if caus is not None:
            for br in np.atleast_2d(caus):
                ax.plot(br.real, br.imag, ".", ms=0.8, color="C3")
        a = np.deg2rad(alpha)
        tau = np.linspace(-3.0, 3.0, 3001)
        ax.plot(
            tau * np.cos(a) - u0 * np.sin(a),
            tau * np.sin(a) + u0 * np.cos(a),
            "-",
            color="C0",
            lw=1.0,
            label="trajectory",
        )
        ax.plot([x1], [0], "o", color="k", ms=6, label="primary")
        ax.plot([x2], [0], "o", color="0.5", ms=4, label="companion")
        ax.axhline(0.0, color="0.8", lw=0.6, zorder=0)
        ax.plot([xc], [0], "x", color="C2", ms=9, mew=2, label=f"x0 = {x0:+.4f}")
        d = np.abs(pts - xc)
        h = float(np.clip(2.5 * np.min(d) + 0.05, 0.05, 1.6))
        ax.set_xlim(xc - h, xc + h)
        ax.set_ylim(-h, h)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("x (θ_E)")
        ax.set_ylabel("y (θ_E)")
        ax.set_title(f"mode {i + 1} ({m.weight:.0%}): s = {s:.4g}, q = {q:.3g}", fontsize=9)
        ax.legend(loc="upper right", fontsize=6)
    fig.suptitle(
        "caustics, trajectory and axis crossing x0 (from the primary towards the companion)", fontsize=10
    )
    return fig


def _times(report, t) -> np.ndarray:
    if t is not None:
        return np.sort(np.asarray(t, dtype=float))
    ev = report.event
    if ev is not None:
        return np.unique(np.concatenate([d.t for d in ev.datasets]))
    p = _rep(report.modes[0])
    return np.linspace(p["t_0"] - 2 * p["t_E"], p["t_0"] + 2 * p["t_E"], 4000)


def plot_mode_lightcurves(report, t=None) -> Figure:
    fig = Figure(figsize=(9.0, 6.0), layout="constrained")
    modes = report.modes[:_MAX_PANELS]
    if not modes or not all("t_0" in _rep(m) and "t_E" in _rep(m) for m in modes):
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "light curves need t_0 and t_E in the samples", ha="center", va="center")
        ax.set_axis_off()
        return fig
    tt = _times(report, t)
    keys = [k for k in ("t_0", "u_0", "t_E", "s", "q", "alpha", "rho") if k in _rep(modes[0])]
    params = {k: np.array([_rep(m)[k] for m in modes]) for k in keys}
    mag = magnifications(tt, params)
    ax1 = fig.add_subplot(2, 1, 1)
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax1)
    for i in range(len(modes)):
        ax1.plot(tt, mag[i], "-", lw=1.0, color=f"C{i}", label=f"mode {i + 1}: s = {params['s'][i]:.4g}")
        if i:
            ax2.plot(
                tt, (mag[i] - mag[0]) / mag[0], "-", lw=1.0, color=f"C{i}", label=f"mode {i + 1} − mode 1"
            )
    win = anomaly_window(tt, mag[0], {k: float(params[k][0]) for k in keys}, threshold=0.002)
    if win is not None:
        ax1.set_xlim(*win)
    ax1.set_ylabel("magnification")
    ax1.legend(fontsize=7)
    ax2.axhline(0.0, color="0.6", lw=0.6)
    ax2.set_ylabel("(A_i − A_1)/A_1")
    ax2.set_xlabel("t (HJD')")
    if len(modes) > 1:
        ax2.legend(fontsize=7)
    fig.suptitle(
        "representative light curves of the modes" + (" (at the data's times)" if report.event else ""),
        fontsize=10,
    )
    return fig


def plot_relation(report) -> Figure:
    fig = Figure(figsize=(5.6, 5.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    grid = np.geomspace(0.2, 5.0, 400)
    ax.plot(grid, 1.0 / grid, ":", color="0.5", label="close–wide: s_A s_B = 1 (x0 = 0)")
    ax.plot(grid, grid, "-", color="0.85", lw=0.8)
    if report.pairs:
        for k, p in enumerate(report.pairs):
            c = f"C{k}"
            ax.plot(
                grid,
                partner_separation(grid, p.x0),
                "-",
                color=c,
                lw=1.2,
                label=f"relation at x0 = {p.x0:+.3f} (modes {p.a + 1}–{p.b + 1})",
            )
            lo = partner_separation(grid, p.x0 - p.x0_err)
            hi = partner_separation(grid, p.x0 + p.x0_err)
            ax.fill_between(grid, lo, hi, color=c, alpha=0.2, lw=0)
            for sa, sb, (la, ha), (lb, hb) in (
                (p.s_b, p.s_a, p.s_b_interval, p.s_a_interval),
                (p.s_a, p.s_b, p.s_a_interval, p.s_b_interval),
            ):
                ax.errorbar(
                    [sa],
                    [sb],
                    xerr=[[sa - la], [ha - sa]],
                    yerr=[[sb - lb], [hb - sb]],
                    fmt="o",
                    color=c,
                    ms=5,
                )
    else:
        for i, m in enumerate(report.modes):
            x0 = float(np.median(m.x0))
            s = m.median("s")
            ax.plot(
                grid,
                partner_separation(grid, x0),
                "-",
                color=f"C{i}",
                lw=1.0,
                label=f"relation at mode {i + 1}'s x0 = {x0:+.3f}",
            )
            ax.plot(
                [s],
                [float(partner_separation(s, x0))],
                "o",
                color=f"C{i}",
                label=f"mode {i + 1} → predicted partner",
            )
        for p in report.partners:
            if p.refined_partner is not None:
                ax.plot(
                    [p.solution["s"]],
                    [p.refined_partner["s"]],
                    "*",
                    color="k",
                    ms=10,
                    label=f"partner search: Δχ² = {p.delta_chi2:+.1f}",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.2, 5.0)
    ax.set_ylim(0.2, 5.0)
    ax.set_xlabel("s_A (θ_E)")
    ax.set_ylabel("s_B (θ_E)")
    ax.set_title("offset degeneracy: f(s_A) + f(s_B) = 2·x0, f(s) = s − 1/s", fontsize=9)
    ax.legend(fontsize=6, loc="upper right")
    return fig
