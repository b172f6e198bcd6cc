"""A survey's priors, whole-season cadence and noise model as pure JAX (for simulation on the device).

The numpy versions (:mod:`mulens_sbi.survey.priors`, :mod:`mulens_sbi.survey.cadence`,
:mod:`mulens_sbi.survey.noise`) draw with a ``numpy.random.Generator``; these draw the same
distributions with ``jax.random`` inside a compiled function, so that light curves can be simulated
on the accelerator inside a training step (:mod:`mulens_sbi.data.ondevice`). Another random stream:
equal in distribution, not draw by draw (``tests/test_ondevice.py`` compares them).

Only whole-season windows (``lightcurve.window = "season"``) are supported here: an event's light
curve is every exposure of the season holding ``t_0`` in its field class, less the exposures lost to
random dropout, to whole nights of bad weather (ground sites) and to random gaps; nothing is thinned.
Fixed shapes: a field class's light curves have the length of its longest season
(:class:`SeasonTables`); shorter seasons are padded with their last time and ``mask = False``.

Conventions as everywhere: times HJD' (days), alpha in degrees, fluxes on MulensModel's zero point 22
(``F = 10^(−0.4 (m − 22))``), seeing as a FWHM in arcsec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from mulens_sbi.survey.cadence import FieldSchedule
from mulens_sbi.survey.noise import FLUX_ZERO_POINT
from mulens_sbi.survey.spec import Noise, Prior, SurveySpec

__all__ = ["SeasonTables", "season_tables", "draw_prior", "prior_probability_below", "season_observations",
           "flux_sigma_jax", "mag_to_flux_jax"]

_LN10_25 = math.log(10.0) / 2.5


# ----------------------------------------------------------------------------------------------
# priors


def _draw_one(prior: Prior, spec: SurveySpec, key: Array, n: int, high: float | None = None) -> Array:
    """``n`` draws of one prior (float64); ``high`` truncates a uniform / log-uniform prior above."""
    hi = prior.high if high is None else min(float(prior.high), high)
    if prior.dist == "uniform":
        return jax.random.uniform(key, (n,), jnp.float64, prior.low, hi)
    if prior.dist == "log_uniform":
        return 10.0 ** jax.random.uniform(key, (n,), jnp.float64, math.log10(prior.low), math.log10(hi))
    if prior.dist == "fixed":
        return jnp.full((n,), float(prior.value))
    if prior.dist == "seasons":  # uniform over the union of the seasons
        starts = jnp.asarray([s.start for s in spec.seasons])
        lengths = jnp.asarray([s.end - s.start for s in spec.seasons])
        k1, k2 = jax.random.split(key)
        k = jax.random.choice(k1, len(spec.seasons), (n,), p=lengths / jnp.sum(lengths))
        return starts[k] + lengths[k] * jax.random.uniform(k2, (n,), jnp.float64)
    raise ValueError(f"unknown prior distribution {prior.dist!r}")  # pragma: no cover (validated)


def prior_probability_below(spec: SurveySpec, name: str, bound: float) -> float:
    """Prior probability that parameter ``name`` is below ``bound`` (uniform, log-uniform or fixed)."""
    p = spec.priors[name]
    if p.dist == "fixed":
        return float(p.value < bound)
    if p.dist == "uniform":
        return float(np.clip((bound - p.low) / (p.high - p.low), 0.0, 1.0))
    if p.dist == "log_uniform":
        return float(np.clip(math.log(bound / p.low) / math.log(p.high / p.low), 0.0, 1.0))
    raise ValueError(f"prior of {name!r}: probability below a bound needs uniform, log_uniform or fixed, "
                     f"got {p.dist!r}")


def draw_prior(spec: SurveySpec, key: Array, n: int, q_below: float | None = None) -> dict[str, Array]:
    """``n`` parameter sets from the spec's priors, as :func:`mulens_sbi.survey.priors.sample_parameters`
    returns them (each sampled name, ``f_s`` and ``f_b``; float64 (n,)), drawn with ``jax.random``.

    ``q_below``: draw q from its prior truncated to ``q < q_below`` (the prior conditioned on it;
    :func:`prior_probability_below` is the probability it conditions on). Jittable (``spec``, ``n``
    and ``q_below`` static)."""
    names = spec.sampled_parameters()
    keys = jax.random.split(key, len(names))
    out = {}
    for name, k in zip(names, keys, strict=True):
        high = q_below if (name == "q" and q_below is not None) else None
        if high is not None and spec.priors[name].dist not in ("uniform", "log_uniform"):
            raise ValueError(f"q_below needs a uniform or log_uniform q prior, got "
                             f"{spec.priors[name].dist!r}")
        out[name] = _draw_one(spec.priors[name], spec, k, n, high)
    out["f_s"] = mag_to_flux_jax(out["source_mag"])
    bf = out["blend_fraction"]
    out["f_b"] = out["f_s"] * bf / (1.0 - bf)
    return out


# ----------------------------------------------------------------------------------------------
# noise


def mag_to_flux_jax(mag: Array) -> Array:
    """Magnitude → flux on the zero point 22 (JAX twin of :func:`mulens_sbi.survey.noise.mag_to_flux`)."""
    return 10.0 ** (-0.4 * (mag - FLUX_ZERO_POINT))


def flux_sigma_jax(flux: Array, noise: Noise, seeing_arcsec: Array | None = None) -> Array:
    """1σ flux error of one exposure (JAX twin of :func:`mulens_sbi.survey.noise.flux_sigma`: CCD
    equation plus the systematic floor; ``seeing_arcsec`` FWHM for a ground survey, ignored (None) for a
    space one)."""
    gain = 10.0 ** (0.4 * (noise.zero_point - FLUX_ZERO_POINT)) * noise.exposure_s
    sky = 10.0 ** (-0.4 * (noise.sky_mag_arcsec2 - noise.zero_point)) * noise.pixel_scale_arcsec**2
    if noise.nea_pix is not None:
        area = noise.nea_pix
    else:
        if seeing_arcsec is None:
            raise ValueError("a seeing-limited noise model (nea_per_fwhm2) needs the seeing FWHM")
        area = noise.nea_per_fwhm2 * (seeing_arcsec / noise.pixel_scale_arcsec) ** 2
    var_e = jnp.maximum(flux, 0.0) * gain + area * ((sky + noise.dark_e_per_pix_s) * noise.exposure_s
                                                    + noise.read_noise_e**2)
    sigma = jnp.sqrt(var_e) / gain
    return jnp.sqrt(sigma**2 + (flux * noise.systematic_floor_mag * _LN10_25) ** 2)


# ----------------------------------------------------------------------------------------------
# whole-season cadence


@dataclass(frozen=True)
class SeasonTables:
    """The planned exposures of one field class, season by season, in fixed-shape arrays (numpy).

    Attributes:
        t: (n_seasons, L) times (HJD'); a season with fewer than L exposures repeats its last time.
        planned: (n_seasons, L) bool, a planned exposure (False on the padding).
        site: (n_seasons, L) site index of each exposure (0 for a space survey).
        night: (n_seasons, L) index of the exposure's (site, night) among the season's nights,
            0 .. n_nights − 1 (all 0 for a space survey).
        night_site: (n_seasons, n_nights) the site of each of those nights.
        n_nights: (n_seasons,) nights per season.
    """

    t: np.ndarray
    planned: np.ndarray
    site: np.ndarray
    night: np.ndarray
    night_site: np.ndarray
    n_nights: np.ndarray

    @property
    def length(self) -> int:
        """L, the fixed light-curve length of this field class."""
        return int(self.t.shape[1])


def season_tables(spec: SurveySpec, schedule: tuple[FieldSchedule, ...]) -> tuple[SeasonTables, ...]:
    """One :class:`SeasonTables` per field class from a survey's schedule
    (:func:`mulens_sbi.survey.cadence.build_schedule`)."""
    out = []
    for sch in schedule:
        bounds = [(int(np.searchsorted(sch.t, s.start, side="left")),
                   int(np.searchsorted(sch.t, s.end, side="right"))) for s in spec.seasons]
        length = max(max(hi - lo for lo, hi in bounds), 1)
        nights = [np.unique(sch.night[lo:hi], return_inverse=True) for lo, hi in bounds]
        n_nights = max(max(len(u) for u, _ in nights), 1)
        k = len(spec.seasons)
        t = np.zeros((k, length))
        planned = np.zeros((k, length), bool)
        site = np.zeros((k, length), np.int32)
        night = np.zeros((k, length), np.int32)
        night_site = np.zeros((k, n_nights), np.int32)
        for i, ((lo, hi), (uniq, inv)) in enumerate(zip(bounds, nights, strict=True)):
            m = hi - lo
            if m == 0:
                t[i] = spec.seasons[i].start
                continue
            t[i, :m], t[i, m:] = sch.t[lo:hi], sch.t[hi - 1]
            planned[i, :m] = True
            site[i, :m] = sch.site[lo:hi]
            night[i, :m] = inv
            night_site[i, :len(uniq)] = uniq % 16  # the schedule labels nights as night·16 + site
        out.append(SeasonTables(t, planned, site, night, night_site,
                                np.array([len(u) for u, _ in nights], np.int32)))
    return tuple(out)


def season_observations(spec: SurveySpec, tables: SeasonTables, key: Array, t_0: Array
                        ) -> dict[str, Array]:
    """Whole-season observations of events with peak times ``t_0`` (n,) in one field class.

    Each event gets every planned exposure of the season holding its ``t_0``; an exposure is lost
    with probability ``cadence.dropout``, a whole (site, night) with probability ``1 −
    clear_fraction`` of its site, and 0..``max_count`` random gaps of uniform length in
    ``[min_days, max_days]`` starting uniformly in the season remove what they cover (the draws of
    :func:`mulens_sbi.survey.cadence.draw_observations`). Seeing per (site, night) is log-normal.

    Returns a dict of ``t`` (n, L) float64, ``mask`` (n, L) bool (kept exposures), ``seeing``
    (n, L) FWHM (NaN for a space survey), ``site`` (n, L), ``season`` (n,) and ``window`` (n, 2)
    (the season's start and end). ``t_0`` outside every season is the caller's error (the prior
    ``seasons`` never draws one). Jittable (``spec`` and ``tables`` static: close over them).
    """
    n = t_0.shape[0]
    starts = jnp.asarray([s.start for s in spec.seasons])
    ends = jnp.asarray([s.end for s in spec.seasons])
    k = jnp.clip(jnp.searchsorted(starts, t_0, side="right") - 1, 0, len(spec.seasons) - 1)
    t = jnp.asarray(tables.t)[k]
    mask = jnp.asarray(tables.planned)[k]
    site = jnp.asarray(tables.site)[k]
    k_drop, k_night, k_see, k_gap = jax.random.split(key, 4)
    mask &= jax.random.uniform(k_drop, t.shape) >= spec.cadence.dropout
    seeing = jnp.full(t.shape, jnp.nan)
    if spec.is_ground:
        n_nights = tables.night_site.shape[1]
        night = jnp.asarray(tables.night)[k]
        night_site = jnp.asarray(tables.night_site)[k]  # (n, n_nights)
        clear = jnp.asarray([s.clear_fraction for s in spec.sites])[night_site]
        lost = jax.random.uniform(k_night, (n, n_nights)) >= clear
        med = jnp.asarray([s.seeing_median_arcsec for s in spec.sites])[night_site]
        sig = jnp.asarray([s.seeing_sigma_dex for s in spec.sites])[night_site]
        fwhm = med * 10.0 ** (sig * jax.random.normal(k_see, (n, n_nights)))
        mask &= ~jnp.take_along_axis(lost, night, axis=1)
        seeing = jnp.take_along_axis(fwhm, night, axis=1)
    gaps = spec.cadence.random_gaps
    lo, hi = starts[k], ends[k]
    if gaps.max_count > 0:
        kc, ks, kl = jax.random.split(k_gap, 3)
        count = jax.random.randint(kc, (n,), 0, gaps.max_count + 1)
        g0 = lo[:, None] + (hi - lo)[:, None] * jax.random.uniform(ks, (n, gaps.max_count), jnp.float64)
        gl = jax.random.uniform(kl, (n, gaps.max_count), jnp.float64, gaps.min_days, gaps.max_days)
        active = jnp.arange(gaps.max_count)[None, :] < count[:, None]
        inside = (t[:, :, None] >= g0[:, None, :]) & (t[:, :, None] < (g0 + gl)[:, None, :])
        mask &= ~jnp.any(inside & active[:, None, :], axis=-1)
    return {"t": t, "mask": mask, "seeing": seeing, "site": site, "season": k,
            "window": jnp.stack([lo, hi], axis=-1)}
