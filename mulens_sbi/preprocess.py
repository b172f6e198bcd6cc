"""Light curve -> network input: the ONE preprocessing used both for training and for inference.

A light curve (times ``t`` in HJD', fluxes ``flux`` and 1-sigma errors ``sigma`` in any linear unit,
optional boolean ``mask``) becomes an array ``x`` of shape ``(n_bins, 4)`` with the channels of
:mod:`mulens_sbi.npe.embedding` (t_norm, flux_norm, sigma_norm, mask), plus a reference time
``t_ref``. The network learns ``dt_0 = t_0 - t_ref``; ``t_0 = t_ref + dt_0`` afterwards.

Steps (all defined from the data alone, never from the simulator's window):

1. **Clean.** Points with ``mask`` False are ignored. A masked-in point with a non-finite
   ``t``/``flux``/``sigma`` or ``sigma <= 0`` is an error naming the column and row (nothing is
   silently dropped); fewer than ``min_points`` points is an error.
2. **Reference time** ``t_ref`` (:func:`estimate_peak_time`): the time of the maximum of the
   inverse-variance weighted running mean of the flux over ``smooth_points`` consecutive points
   (in time order). This is a robust peak estimate; it is *not* the centre of the data window, so
   the network cannot learn "t_0 = window centre" (the simulator's window t_0 +- clip(2 t_E, 2, 150) d
   would otherwise give t_0 away and real data do not share it).
3. **Fixed time warp** (no data-derived scale): ``u = asinh((t - t_ref)/tau0) / asinh(H/tau0)``,
   ``t_norm = (u + 1)/2``; ``tau0 = 0.5`` d and ``H = 150`` d by default. Cells of equal width in
   ``t_norm`` are ~0.014 d (20 min) wide near t_ref, ~0.3 d at 10 d and ~4 d at 150 d from it, so
   the network sees absolute time scales (t_E in days) directly, with the finest resolution near
   the peak. Points with ``|t - t_ref| > H`` are outside the model's view and are not used (their
   number is reported in ``info["n_outside"]``).
4. **Binning** (:func:`bin_points`): inverse-variance weighted mean flux and its error
   ``1/sqrt(sum w)`` per cell; empty cells are flagged. (The weighted mean of Gaussian points is
   Gaussian with that error, so at training time noise can be drawn at the binned level — exact in
   distribution — which is how :mod:`mulens_sbi.data.prebin` makes it cheap.)
5. **Flux normalization** (:func:`network_input`, pure JAX, jittable): with ``b`` the
   ``base_quantile`` (10%) quantile of the non-empty cells' fluxes and ``a = max - b``,
   ``flux_norm = (flux - b)/a`` and ``sigma_norm = sigma/a``. Quantiles and the maximum are
   affine-equivariant, so ``x`` is exactly invariant under ``F -> c F + d`` (c > 0): the source and
   blend fluxes are linear nuisance parameters, recovered afterwards per dataset by the linear solve
   in :mod:`mulens_sbi.likelihood`. A flat light curve (``a <= 0``) is an error.

Training uses steps 1-4 once per stored light curve (with ``t_ref`` from the stored noisy flux)
and step 5 on every batch after drawing fresh noise; inference runs :func:`preprocess`, which is
steps 1-5 in the same code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "PreprocessConfig",
    "Prepared",
    "estimate_peak_time",
    "estimate_peak_time_jax",
    "bin_points",
    "bin_points_jax",
    "bin_edges",
    "network_input",
    "preprocess",
    "preprocess_event",
    "check_points",
]


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of the preprocessing (stored with every trained model).

    Attributes:
        n_bins: number of time cells (the network input length).
        tau0_days: scale of the asinh time warp (days): linear within ~tau0 of t_ref, logarithmic beyond.
        half_width_days: H, the view is t_ref +- H (days).
        smooth_points: running-mean length (points) of the peak-time estimate.
        base_quantile: quantile of the cell fluxes used as the flux baseline.
        min_points: fewest usable points (inside the view) accepted.
        min_cells: fewest non-empty cells accepted.
    """

    n_bins: int = 512
    tau0_days: float = 0.5
    half_width_days: float = 150.0
    smooth_points: int = 15
    base_quantile: float = 0.1
    min_points: int = 50
    min_cells: int = 16

    def __post_init__(self) -> None:
        if self.n_bins < 8:
            raise ValueError(f"PreprocessConfig.n_bins must be >= 8, got {self.n_bins}")
        if not (self.tau0_days > 0 and self.half_width_days > self.tau0_days):
            raise ValueError("PreprocessConfig: need 0 < tau0_days < half_width_days, got "
                             f"{self.tau0_days}, {self.half_width_days}")
        if self.smooth_points < 1:
            raise ValueError(f"PreprocessConfig.smooth_points must be >= 1, got {self.smooth_points}")
        if not 0 <= self.base_quantile < 1:
            raise ValueError(f"PreprocessConfig.base_quantile must be in [0, 1), got {self.base_quantile}")
        if self.min_points < 3 or self.min_cells < 2:
            raise ValueError("PreprocessConfig: min_points must be >= 3 and min_cells >= 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        return cls(**d)


@dataclass(frozen=True)
class Prepared:
    """A preprocessed light curve: network input ``x`` (n_bins, 4), its reference time ``t_ref``
    (HJD', days) and bookkeeping ``info`` (n_used, n_outside, n_cells)."""

    x: np.ndarray
    t_ref: float
    info: dict


# ----------------------------------------------------------------------------------------------
# checks


def check_points(t, flux, sigma, mask=None, *, name: str = "light curve") -> np.ndarray:
    """Validate one light curve; return the boolean mask of usable points.

    Raises ``ValueError`` naming the column and the first bad row if a masked-in point has a
    non-finite value or ``sigma <= 0``, or if shapes differ.
    """
    t = np.asarray(t, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if t.ndim != 1 or flux.shape != t.shape or sigma.shape != t.shape:
        raise ValueError(f"{name}: t, flux, sigma must be 1-D of equal length, got shapes {t.shape}, "
                         f"{flux.shape}, {sigma.shape}")
    m = np.ones(t.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != t.shape:
        raise ValueError(f"{name}: mask has shape {m.shape}, expected {t.shape}")
    for col, v in (("t", t), ("flux", flux), ("sigma", sigma)):
        bad = m & ~np.isfinite(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}: column {col!r} row {i}: non-finite value {v[i]} "
                             f"({int(bad.sum())} such rows); remove them or set mask=False there")
    bad = m & ~(sigma > 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: column 'sigma' row {i}: must be > 0, got {sigma[i]}")
    return m


# ----------------------------------------------------------------------------------------------
# steps 2-4 (numpy, batched over rows)


def estimate_peak_time(t, flux, sigma, mask, smooth_points: int = 15) -> np.ndarray:
    """Robust peak time per row: argmax of the inverse-variance weighted running mean of ``flux``
    over ``smooth_points`` consecutive usable points (time order). Shapes (B, N) -> (B,) or
    (N,) -> (). Rows must be sorted in time among their usable points; rows with no usable point
    give NaN."""
    t = np.asarray(t, dtype=np.float64)
    one = t.ndim == 1
    t, flux, sigma, mask = (np.atleast_2d(np.asarray(a)) for a in (t, flux, sigma, mask))
    mask = mask.astype(bool)
    # move usable points to the front of each row, keeping time order
    order = np.argsort(~mask, axis=1, kind="stable")
    tt = np.take_along_axis(t, order, 1)
    ff = np.take_along_axis(np.where(mask, flux, 0.0).astype(np.float64), order, 1)
    ss = np.take_along_axis(np.where(mask, sigma, 1.0).astype(np.float64), order, 1)
    mm = np.take_along_axis(mask, order, 1)
    w = np.where(mm, 1.0 / ss ** 2, 0.0)
    k = int(smooth_points)
    cw = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w, axis=1)], axis=1)
    cwf = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w * ff, axis=1)], axis=1)
    n_ok = mm.sum(axis=1)
    n = t.shape[1]
    kk = np.minimum(k, np.maximum(n_ok, 1))                      # window length per row
    starts = np.arange(n)[None, :]
    ends = starts + kk[:, None]
    valid = ends <= n_ok[:, None]
    ends_c = np.minimum(ends, n)
    sw = np.take_along_axis(cw, ends_c, 1) - cw[:, :n]
    swf = np.take_along_axis(cwf, ends_c, 1) - cwf[:, :n]
    run = np.where(valid & (sw > 0), swf / np.where(sw > 0, sw, 1.0), -np.inf)
    j = np.argmax(run, axis=1)
    # centre time of the best window: mean of its first and last times
    last = np.clip(j + kk - 1, 0, n - 1)
    t_first = np.take_along_axis(tt, j[:, None], 1)[:, 0]
    t_peak = 0.5 * (t_first + np.take_along_axis(tt, last[:, None], 1)[:, 0])
    t_peak = np.where(n_ok > 0, t_peak, np.nan)
    return t_peak[0] if one else t_peak


def bin_edges(cfg: PreprocessConfig) -> np.ndarray:
    """Cell edges in days relative to t_ref, shape (n_bins + 1,)."""
    a = math.asinh(cfg.half_width_days / cfg.tau0_days)
    u = np.linspace(-1.0, 1.0, cfg.n_bins + 1)
    return cfg.tau0_days * np.sinh(u * a)


def warp(dt, cfg: PreprocessConfig):
    """t - t_ref (days) -> t_norm in [0, 1] for |dt| <= H."""
    a = math.asinh(cfg.half_width_days / cfg.tau0_days)
    return 0.5 * (np.arcsinh(np.asarray(dt) / cfg.tau0_days) / a + 1.0)


def bin_points(t, flux, sigma, mask, t_ref, cfg: PreprocessConfig):
    """Inverse-variance weighted binning onto the warped grid around ``t_ref``.

    Shapes (B, N) with t_ref (B,), or (N,) with a scalar. ``flux`` may be noiseless (training) or
    data. Returns ``(mean, err, count)`` each (B, n_bins) (or (n_bins,)): weighted mean flux,
    its 1-sigma error 1/sqrt(sum 1/sigma^2) and the number of points; empty cells have count 0,
    mean 0 and err 0. Points outside t_ref +- H or with mask False add nothing.
    """
    t = np.asarray(t, dtype=np.float64)
    one = t.ndim == 1
    t, flux, sigma, mask = (np.atleast_2d(np.asarray(a)) for a in (t, flux, sigma, mask))
    t_ref = np.atleast_1d(np.asarray(t_ref, dtype=np.float64))
    dt = t - t_ref[:, None]
    inside = mask.astype(bool) & (np.abs(dt) <= cfg.half_width_days) & np.isfinite(dt)
    tn = warp(np.where(inside, dt, 0.0), cfg)
    idx = np.clip(np.floor(tn * cfg.n_bins).astype(np.int64), 0, cfg.n_bins - 1)
    s = np.where(inside, sigma, 1.0).astype(np.float64)
    w = np.where(inside, 1.0 / s ** 2, 0.0)
    f = np.where(inside, flux, 0.0).astype(np.float64)
    b = t.shape[0]
    flat = (idx + cfg.n_bins * np.arange(b)[:, None]).ravel()
    size = b * cfg.n_bins
    sw = np.bincount(flat, weights=w.ravel(), minlength=size).reshape(b, cfg.n_bins)
    swf = np.bincount(flat, weights=(w * f).ravel(), minlength=size).reshape(b, cfg.n_bins)
    cnt = np.bincount(flat, weights=inside.ravel().astype(np.float64), minlength=size).reshape(b, cfg.n_bins)
    has = cnt > 0
    mean = np.where(has, swf / np.where(has, sw, 1.0), 0.0)
    err = np.where(has, 1.0 / np.sqrt(np.where(has, sw, 1.0)), 0.0)
    if one:
        return mean[0], err[0], cnt[0]
    return mean, err, cnt


# ----------------------------------------------------------------------------------------------
# steps 2-4 in JAX (for light curves simulated on the device; equal to the numpy versions above)


def estimate_peak_time_jax(t, flux, sigma, mask, smooth_points: int = 15):
    """JAX twin of :func:`estimate_peak_time` for rows (B, N) -> (B,): the centre time of the best
    window of ``smooth_points`` consecutive usable points by inverse-variance weighted mean flux.
    Jittable (``smooth_points`` static); rows sorted in time among their usable points; NaN for a row
    with no usable point."""
    t, flux, sigma = (jnp.asarray(a, jnp.float64) for a in (t, flux, sigma))
    mask = jnp.asarray(mask, bool)
    n = t.shape[-1]
    order = jnp.argsort(~mask, axis=-1, stable=True)  # usable points first, in time order
    tt = jnp.take_along_axis(t, order, -1)
    ff = jnp.take_along_axis(jnp.where(mask, flux, 0.0), order, -1)
    ss = jnp.take_along_axis(jnp.where(mask, sigma, 1.0), order, -1)
    mm = jnp.take_along_axis(mask, order, -1)
    w = jnp.where(mm, 1.0 / ss**2, 0.0)
    zero = jnp.zeros(w.shape[:-1] + (1,), w.dtype)
    cw = jnp.concatenate([zero, jnp.cumsum(w, axis=-1)], axis=-1)
    cwf = jnp.concatenate([zero, jnp.cumsum(w * ff, axis=-1)], axis=-1)
    n_ok = jnp.sum(mm, axis=-1)
    kk = jnp.minimum(smooth_points, jnp.maximum(n_ok, 1))
    starts = jnp.arange(n)
    ends = starts + kk[..., None]
    valid = ends <= n_ok[..., None]
    ends_c = jnp.minimum(ends, n)
    sw = jnp.take_along_axis(cw, ends_c, -1) - cw[..., :n]
    swf = jnp.take_along_axis(cwf, ends_c, -1) - cwf[..., :n]
    run = jnp.where(valid & (sw > 0), swf / jnp.where(sw > 0, sw, 1.0), -jnp.inf)
    j = jnp.argmax(run, axis=-1)
    last = jnp.clip(j + kk - 1, 0, n - 1)
    t_first = jnp.take_along_axis(tt, j[..., None], -1)[..., 0]
    t_last = jnp.take_along_axis(tt, last[..., None], -1)[..., 0]
    return jnp.where(n_ok > 0, 0.5 * (t_first + t_last), jnp.nan)


def bin_points_jax(t, flux, sigma, mask, t_ref, cfg: PreprocessConfig):
    """JAX twin of :func:`bin_points` for rows (B, N) with ``t_ref`` (B,): ``(mean, err, count)``
    (B, n_bins) of the inverse-variance weighted binning onto the warped cells (float64; empty cells
    0, 0, 0). Jittable (``cfg`` static)."""
    t, flux, sigma = (jnp.asarray(a, jnp.float64) for a in (t, flux, sigma))
    t_ref = jnp.asarray(t_ref, jnp.float64)
    dt = t - t_ref[..., None]
    inside = jnp.asarray(mask, bool) & (jnp.abs(dt) <= cfg.half_width_days) & jnp.isfinite(dt)
    a = math.asinh(cfg.half_width_days / cfg.tau0_days)
    tn = 0.5 * (jnp.arcsinh(jnp.where(inside, dt, 0.0) / cfg.tau0_days) / a + 1.0)
    idx = jnp.clip(jnp.floor(tn * cfg.n_bins).astype(jnp.int32), 0, cfg.n_bins - 1)
    s = jnp.where(inside, sigma, 1.0)
    w = jnp.where(inside, 1.0 / s**2, 0.0)
    f = jnp.where(inside, flux, 0.0)
    b = t.shape[0]
    flat = (idx + cfg.n_bins * jnp.arange(b)[:, None]).reshape(-1)
    size = b * cfg.n_bins

    def total(v):
        return jnp.zeros(size, v.dtype).at[flat].add(v.reshape(-1)).reshape(b, cfg.n_bins)

    sw, swf, cnt = total(w), total(w * f), total(inside.astype(jnp.float64))
    has = cnt > 0
    mean = jnp.where(has, swf / jnp.where(has, sw, 1.0), 0.0)
    err = jnp.where(has, 1.0 / jnp.sqrt(jnp.where(has, sw, 1.0)), 0.0)
    return mean, err, cnt


# ----------------------------------------------------------------------------------------------
# step 5 (JAX, jittable, batched)


def network_input(mean, err, count, cfg: PreprocessConfig):
    """Binned flux (..., n_bins) -> network input (..., n_bins, 4) = (t_norm, flux_norm, sigma_norm,
    mask). Affine-invariant in the flux (see the module docstring). Rows with no non-empty cell or a
    flat flux give NaN (the training loop excludes such rows; :func:`preprocess` raises first)."""
    mean = jnp.asarray(mean)
    err = jnp.asarray(err, mean.dtype)
    has = jnp.asarray(count) > 0
    n_has = jnp.sum(has, axis=-1)
    big = jnp.asarray(jnp.finfo(mean.dtype).max, mean.dtype)
    srt = jnp.sort(jnp.where(has, mean, big), axis=-1)
    k = jnp.clip(jnp.floor(cfg.base_quantile * (n_has - 1)).astype(jnp.int32), 0, cfg.n_bins - 1)
    base = jnp.take_along_axis(srt, k[..., None], axis=-1)[..., 0]
    top = jnp.max(jnp.where(has, mean, -big), axis=-1)
    amp = top - base
    ok = (n_has > 0) & (amp > 0)
    amp_safe = jnp.where(ok, amp, 1.0)
    fn = jnp.where(has, (mean - base[..., None]) / amp_safe[..., None], 0.0)
    sn = jnp.where(has, err / amp_safe[..., None], 0.0)
    fn = jnp.where(ok[..., None], fn, jnp.nan)
    centres = (jnp.arange(cfg.n_bins, dtype=mean.dtype) + 0.5) / cfg.n_bins
    tn = jnp.broadcast_to(centres, fn.shape)
    return jnp.stack([tn, fn, sn, has.astype(mean.dtype)], axis=-1)


_network_input_jit = jax.jit(network_input, static_argnames=("cfg",))

# ----------------------------------------------------------------------------------------------
# the whole thing, for one light curve


def preprocess(t, flux, sigma, mask=None, cfg: PreprocessConfig | None = None, *,
               name: str = "light curve", t_ref: float | None = None) -> Prepared:
    """Steps 1-5 for one light curve (inference). See the module docstring.

    ``t_ref`` may be given (e.g. to reuse a previous estimate); by default it is estimated.
    Raises ``ValueError`` for non-finite values, non-positive errors, too few points inside the view,
    too few non-empty cells, or a flat light curve.
    """
    cfg = cfg or PreprocessConfig()
    m = check_points(t, flux, sigma, mask, name=name)
    t = np.asarray(t, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if m.sum() < cfg.min_points:
        raise ValueError(f"{name}: {int(m.sum())} usable points; the model needs at least {cfg.min_points}")
    order = np.argsort(np.where(m, t, np.inf), kind="stable")
    t, flux, sigma, m = t[order], flux[order], sigma[order], m[order]
    if t_ref is None:
        t_ref = float(estimate_peak_time(t, flux, sigma, m, cfg.smooth_points))
    inside = m & (np.abs(t - t_ref) <= cfg.half_width_days)
    n_used = int(inside.sum())
    if n_used < cfg.min_points:
        raise ValueError(f"{name}: only {n_used} points within t_ref +- {cfg.half_width_days:g} d of "
                         f"the peak estimate t_ref = {t_ref:.4f}; the model needs at least {cfg.min_points}")
    mean, err, cnt = bin_points(t, flux, sigma, m, t_ref, cfg)
    n_cells = int((cnt > 0).sum())
    if n_cells < cfg.min_cells:
        raise ValueError(f"{name}: the points fill only {n_cells} of {cfg.n_bins} time cells (need "
                         f"{cfg.min_cells}); the light curve is too short or too sparse for this model")
    x = np.asarray(_network_input_jit(mean, err, cnt, cfg))
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: flat light curve (no brightening above the baseline); cannot normalize")
    info = {"n_used": n_used, "n_outside": int(m.sum()) - n_used, "n_masked": int((~m).sum()),
            "n_cells": n_cells}
    return Prepared(x, float(t_ref), info)


def preprocess_event(event, cfg: PreprocessConfig | None = None, *, t_ref: float | None = None) -> Prepared:
    """:func:`preprocess` for a :class:`mulens_sbi.event.Event` with exactly one dataset (the shipped
    models are single-dataset; several telescopes need a model trained for them)."""
    ds = getattr(event, "datasets", None)
    if ds is None:
        raise TypeError(f"expected a mulens_sbi.event.Event, got {type(event).__name__}")
    if len(ds) != 1:
        raise ValueError(f"event {event.name!r} has {len(ds)} datasets; this model takes exactly one "
                         f"(datasets: {', '.join(d.name for d in ds)})")
    d = ds[0]
    return preprocess(d.t, d.flux, d.sigma, None, cfg, name=f"event {event.name!r} dataset {d.name!r}",
                      t_ref=t_ref)
