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

from mulens_sbi.lightcurve import magnification_batch, source_trajectory
from mulens_sbi.summary import unwrap_angle
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


def lens_positions(s: float, q: float) -> tuple[float, float]:
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
    x1, x2 = lens_positions(s, q)
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


# ----------------------------------------------------------------------------------------------
# Posterior plots (used by mulens_sbi.fit.FitResult)

_LOG_PARAMS = ("t_E", "s", "q", "rho")
_LABELS = {
    "t_0": "t_0 (HJD')",
    "u_0": "u_0",
    "t_E": "log10 t_E (d)",
    "s": "log10 s",
    "q": "log10 q",
    "alpha": "alpha (deg)",
    "rho": "log10 rho",
}


#: plots evaluate models in blocks of this many parameter sets and multiples of this many times, so
#: that one compiled shape serves every posterior plot (the solver's compile costs ~20 s)
PLOT_ROWS = 48
PLOT_POINTS = 4096


def magnifications(t: np.ndarray, params: dict) -> np.ndarray:
    """(B, N) magnification of B parameter sets (dict of (B,) arrays) at sorted times t; NaN where
    unsolved. Padded to (``PLOT_ROWS``, multiple of ``PLOT_POINTS``) blocks to reuse one compilation."""
    t = np.asarray(t, float)
    keys = [k for k in ("t_0", "u_0", "t_E", "s", "q", "alpha", "rho") if k in params]
    p = {k: np.atleast_1d(np.asarray(params[k], float)) for k in keys}
    b, n = p[keys[0]].size, t.size
    n_pad = int(np.ceil(n / PLOT_POINTS) * PLOT_POINTS)
    tp = np.concatenate([t, np.full(n_pad - n, t[-1])])
    out = []
    for i0 in range(0, b, PLOT_ROWS):
        take = np.minimum(np.arange(i0, i0 + PLOT_ROWS), b - 1)
        mag, ok = magnification_batch(tp, {k: v[take] for k, v in p.items()})
        out.append(np.where(np.asarray(ok), np.asarray(mag), np.nan)[: min(PLOT_ROWS, b - i0), :n])
    return np.concatenate(out, axis=0)


def anomaly_window(t: np.ndarray, a_best: np.ndarray, best: dict, threshold: float = 0.01
                   ) -> tuple[float, float] | None:
    """Interval where the best binary model ``a_best`` (magnification at sorted times ``t``) differs
    from the point lens with the same (t_0, u_0, t_E) by more than ``threshold`` (relative), padded by
    20% (at least 0.3 d); None if there is none or it covers more than half of the span of ``t``."""
    if "s" not in best:
        return None
    u = np.hypot((t - best["t_0"]) / best["t_E"], best["u_0"])
    a0 = (u**2 + 2) / (u * np.sqrt(u**2 + 4))
    dev = np.abs(a_best - a0) / a0 > threshold
    if not dev.any():
        return None
    lo, hi = t[dev].min(), t[dev].max()
    if hi - lo > 0.5 * (t.max() - t.min()):
        return None
    pad = max(0.2 * (hi - lo), 0.3)
    return float(lo - pad), float(hi + pad)


def plot_fit_lightcurve(
    event,
    draws: dict,
    draw_f_s: np.ndarray,
    draw_f_b: np.ndarray,
    best: dict,
    best_f_s: np.ndarray,
    best_f_b: np.ndarray,
    *,
    zoom: tuple[float, float] | None = None,
    truth: dict | None = None,
    title: str = "",
) -> Figure:
    """Posterior light curve: data of every dataset, model draws, best model, residuals.

    All datasets are put on the first dataset's flux scale with the best sample's fluxes,
    ``F' = (F − F_b,d)/F_s,d · F_s,0 + F_b,0`` (errors scaled by F_s,0/F_s,d), and shown as magnitudes
    (zero point 22). Each draw uses its own best-fit fluxes. Residuals are ``(data − best model)/σ``
    in each dataset's own units. ``zoom`` (default: :func:`anomaly_window`) adds a second column.

    Args:
        event: the :class:`mulens_sbi.event.Event`.
        draws: parameters of B draws (dict of (B,) arrays); draw_f_s, draw_f_b: (B, D) fluxes.
        best: parameters of the best sample; best_f_s, best_f_b: (D,) its fluxes.
        truth: optional true parameters (drawn dashed, with their own best-fit fluxes).
    """
    t_all = np.concatenate([d.t for d in event.datasets])
    b = len(next(iter(draws.values())))
    rows = {k: np.concatenate([np.asarray(draws[k], float), [best[k]]]) for k in draws}
    have_truth = truth is not None and all(k in truth for k in draws)
    if have_truth:
        rows = {k: np.append(v, float(truth[k])) for k, v in rows.items()}
    n_lin = max(PLOT_POINTS - np.unique(t_all).size, PLOT_POINTS // 2)
    grid = np.unique(np.concatenate([np.linspace(t_all.min(), t_all.max(), n_lin), t_all]))
    mags = magnifications(grid, rows)
    if zoom is None:
        zoom = anomaly_window(grid, mags[b], best)
    a_best_data = [mags[b][np.searchsorted(grid, d.t)] for d in event.datasets]
    grids = [grid]
    mag_sets = [mags]
    if zoom is not None:
        gz = np.linspace(zoom[0], zoom[1], PLOT_POINTS)
        grids.append(gz)
        mag_sets.append(magnifications(gz, rows))
    fs0, fb0 = float(best_f_s[0]), float(best_f_b[0])
    dfs, dfb = np.asarray(draw_f_s)[:, :1], np.asarray(draw_f_b)[:, :1]
    if have_truth:  # the truth's own best-fit fluxes for the first dataset (weighted least squares)
        d0 = event.datasets[0]
        a_t = mags[b + 1][np.searchsorted(grid, d0.t)]
        design = np.stack([a_t, np.ones_like(a_t)], axis=1) / d0.sigma[:, None]
        (fs_t, fb_t), *_ = np.linalg.lstsq(design, d0.flux / d0.sigma, rcond=None)

    ncol = 2 if zoom is not None else 1
    fig = Figure(figsize=(6.5 * ncol, 6.0), layout="constrained")
    gs = fig.add_gridspec(2, ncol, height_ratios=(3, 1))
    for col in range(ncol):
        ax = fig.add_subplot(gs[0, col])
        axr = fig.add_subplot(gs[1, col], sharex=ax)
        for j, d in enumerate(event.datasets):
            fs, fb = float(best_f_s[j]), float(best_f_b[j])
            f_al = (d.flux - fb) / fs * fs0 + fb0
            s_al = d.sigma * abs(fs0 / fs)
            with np.errstate(divide="ignore", invalid="ignore"):
                # no magnitude (NaN, not drawn) where the aligned flux is not positive: difference
                # fluxes (MOA, KMTNet pySIS) go below zero at baseline
                emag = np.where(f_al > 0, _MAG_PER_FLUX * s_al / f_al, np.nan)
            ax.errorbar(d.t, flux_to_mag(f_al), yerr=emag, fmt=".", ms=2, lw=0.4, alpha=0.6,
                        color=f"C{j}" if event.n_datasets > 1 else "0.35", label=d.name, zorder=1)
            res = (d.flux - (fs * a_best_data[j] + fb)) / d.sigma
            axr.plot(d.t, res, ".", ms=2, alpha=0.6, color=f"C{j}" if event.n_datasets > 1 else "0.35")
        g, mg = grids[col], mag_sets[col]
        f_draws = dfs * mg[:b] + dfb
        f_best = fs0 * mg[b] + fb0
        draw_alpha = min(1.0, max(0.05, 3.0 / max(b, 1)))
        for i in range(b):
            ax.plot(g, flux_to_mag(f_draws[i]), "-", color="C1", lw=0.5, alpha=draw_alpha,
                    zorder=2, label="posterior draws" if i == 0 else None)
        ax.plot(g, flux_to_mag(f_best), "-", color="C3", lw=1.0, zorder=3, label="best sample")
        if have_truth:
            ax.plot(g, flux_to_mag(fs_t * mg[b + 1] + fb_t), "--", color="k", lw=0.8, zorder=4,
                    label="truth")
        axr.axhline(0.0, color="C3", lw=1.0)
        ax.invert_yaxis()
        ax.set_ylabel(f"magnitude ({event.datasets[0].name} scale, zp 22)")
        axr.set_ylabel("(data − best)/σ")
        axr.set_xlabel("HJD − 2450000 (days)")
        if col == 1:
            ax.set_xlim(*zoom)
            m = flux_to_mag(f_best)
            m = m[np.isfinite(m)]
            if m.size:
                pad = 0.15 * (m.max() - m.min() + 1e-3)
                ax.set_ylim(m.max() + pad, m.min() - pad)
            ax.set_title("zoom on the anomaly", fontsize=10)
        else:
            ax.legend(loc="upper right", fontsize=7)
            if zoom is not None:
                ax.axvspan(*zoom, color="C0", alpha=0.1, lw=0)
    if title:
        fig.suptitle(title)
    return fig


def plot_corner(samples: dict, weights: np.ndarray, *, truth: dict | None = None,
                parameters: Sequence[str] | None = None, title: str = "") -> Figure:
    """Corner plot (the ``corner`` package) of weighted samples; t_E, s, q, rho on log10 axes, alpha
    unwrapped across 0°/360° (see :func:`mulens_sbi.summary.unwrap_angle`). Quantile lines at 16/50/84%."""
    import corner

    names = [k for k in (parameters or samples) if k in samples]
    w = np.asarray(weights, float)
    cols, labels, truths = [], [], []
    for k in names:
        v = np.asarray(samples[k], float)
        tv = None if truth is None or k not in truth else float(truth[k])
        if k in _LOG_PARAMS:
            v = np.log10(v)
            tv = None if tv is None else np.log10(tv)
        elif k == "alpha":
            v = unwrap_angle(v, w)
            if tv is not None:
                lo = v.min()
                tv = lo + np.mod(tv - lo, 360.0)
        cols.append(v)
        labels.append(_LABELS.get(k, k))
        truths.append(tv)
    data = np.stack(cols, axis=1)
    d = len(names)
    finite = np.all(np.isfinite(data), axis=1)
    keep = finite & (w > 0)
    note = ""
    if keep.sum() < 2 * d + 2:  # degenerate weights: show the unweighted samples, labelled as such
        keep, w = finite, np.ones_like(w)
        note = " — too few weighted samples: UNWEIGHTED proposal samples shown, not the posterior"
    lo, hi = data[keep].min(axis=0), data[keep].max(axis=0)
    pad = np.where(hi > lo, 0.0, 1e-6 * (np.abs(lo) + 1.0))  # a constant column still gets an axis
    ranges = [(float(a), float(b)) for a, b in zip(lo - pad, hi + pad, strict=True)]
    fig = Figure(figsize=(2.0 * d + 1, 2.0 * d + 1))
    corner.corner(data[keep], weights=w[keep], labels=labels, quantiles=[0.16, 0.5, 0.84], fig=fig,
                  range=ranges,
                  truths=truths if truth is not None else None, truth_color="C3", plot_datapoints=False,
                  show_titles=True, title_fmt=".4g", title_kwargs={"fontsize": 8},
                  label_kwargs={"fontsize": 9}, smooth=0.8)
    if title or note:
        fig.suptitle(title + note)
    return fig


def plot_caustic_draws(draws: Sequence[dict], t_range: tuple[float, float], *, n_points: int = 512,
                       title: str = "") -> Figure:
    """Caustics and source trajectories (over ``t_range``) of several posterior draws; the first draw
    (e.g. the best sample) is drawn solid and thick. A second panel zooms on the point where the
    first draw's trajectory passes closest to its caustic. Positions in θ_E, CoM frame (MulensModel v3)."""
    tt = np.linspace(t_range[0], t_range[1], 3000)
    fig = Figure(figsize=(11.0, 5.2), layout="constrained")
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
    focus = None
    extent = 1.5
    for i, p in enumerate(draws):
        color = "k" if i == 0 else f"C{i % 10}"
        lw, alpha = (1.3, 1.0) if i == 0 else (0.7, 0.6)
        ang = p.get("alpha", 0.0)  # a single lens has no axis: draw the trajectory along x
        xs, ys = (np.asarray(v) for v in source_trajectory(tt, p["t_0"], p["u_0"], p["t_E"], ang))
        caus = caustic_points(p["s"], p["q"], n_points) if "s" in p else None
        if i == 0 and caus is not None:
            c = np.atleast_2d(caus).ravel()
            dist = np.abs(c[:, None] - (xs + 1j * ys)[None, :])
            k = np.unravel_index(np.argmin(dist), dist.shape)
            focus = (float(c[k[0]].real), float(c[k[0]].imag), float(max(0.02, min(1.0, 4 * dist[k]))))
            extent = max(1.5, 1.2 * abs(lens_positions(p["s"], p["q"])[1]), 1.5 * abs(p["u_0"]))
        for ax in axes:
            if caus is not None:
                for br in np.atleast_2d(caus):
                    ax.plot(br.real, br.imag, ".", ms=0.6 if i else 1.0, color=color, alpha=alpha)
            ax.plot(xs, ys, "-", color=color, lw=lw, alpha=alpha, label="best sample" if i == 0 else None)
            if "s" in p:
                x1, x2 = lens_positions(p["s"], p["q"])
                ax.plot([x1, x2], [0.0, 0.0], "o", color=color, ms=3, alpha=alpha)
    for k, ax in enumerate(axes):
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("x (θ_E)")
        ax.set_ylabel("y (θ_E)")
        if k == 0:
            ax.set_xlim(-extent, extent)
            ax.set_ylim(-extent, extent)
            ax.set_title(f"{len(draws)} posterior samples (black: best)", fontsize=9)
        elif focus is not None:
            x, y, h = focus
            ax.set_xlim(x - h, x + h)
            ax.set_ylim(y - h, y + h)
            ax.set_title("closest approach to the caustic", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
