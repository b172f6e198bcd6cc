"""Observation times: survey schedule (seasons, field cadence, night windows) and per-event draws.

The *schedule* of a field class is fixed by the spec: exposures every ``interval_min`` from each
season's start; a ground site keeps only the exposures taken when the Sun is below
``max_sun_alt_deg`` and the field above ``min_target_alt_deg`` (low-precision solar position of the
Astronomical Almanac, good to ~0.01°; JD is used for HJD, a ≤ 8.3 min difference). Each *event*
then sees a random subset: whole nights lost to weather per site (probability
``1 - clear_fraction``), single exposures lost at random (``dropout``), optional random multi-day
gaps, inside the event's window (:func:`window_bounds`): ``t_0 ± clip(window_tE·t_E,
min_half_width_days, max_half_width_days)`` for ``lightcurve.window = "event"``, or the whole observing
season that holds ``t_0`` for ``"season"`` (the survey's own window: no parameter but which season t_0
falls in decides it). A light curve has a fixed length ``n_points``: when more exposures survive, a
uniform random subset of ``n_points`` of them is kept (an extra random dropout, documented in
docs/surveys.md; never for season windows, whose ``n_points`` holds the largest season); when fewer,
the arrays are padded at the end with the last time and ``mask = False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mulens_sbi.survey.spec import SurveySpec

HJD_OFFSET = 2450000.0
_J2000 = 2451545.0


def sun_radec(jd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apparent solar right ascension and declination (degrees), Astronomical Almanac low precision."""
    n = np.asarray(jd, dtype=float) - _J2000
    L = np.deg2rad(280.460 + 0.9856474 * n)
    g = np.deg2rad(357.528 + 0.9856003 * n)
    lam = L + np.deg2rad(1.915) * np.sin(g) + np.deg2rad(0.020) * np.sin(2 * g)
    eps = np.deg2rad(23.439 - 4e-7 * n)
    ra = np.arctan2(np.cos(eps) * np.sin(lam), np.cos(lam))
    dec = np.arcsin(np.sin(eps) * np.sin(lam))
    return np.rad2deg(ra) % 360.0, np.rad2deg(dec)


def altitude(jd: np.ndarray, ra_deg, dec_deg, lat_deg: float, lon_deg: float) -> np.ndarray:
    """Altitude (degrees) of (ra, dec) seen from (lat, east lon) at Julian date ``jd``."""
    d = np.asarray(jd, dtype=float) - _J2000
    gmst = (280.46061837 + 360.98564736629 * d) % 360.0
    ha = np.deg2rad(gmst + lon_deg - np.asarray(ra_deg))
    lat, dec = np.deg2rad(lat_deg), np.deg2rad(np.asarray(dec_deg))
    return np.rad2deg(np.arcsin(np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(ha)))


def night_index(t: np.ndarray, lon_deg: float) -> np.ndarray:
    """Integer label of the local night (changes at local mean noon) for HJD' times ``t``."""
    return np.floor(np.asarray(t) + HJD_OFFSET + lon_deg / 360.0).astype(np.int64)


@dataclass(frozen=True)
class FieldSchedule:
    """All planned exposures of one field class, sorted by time."""

    t: np.ndarray  # HJD' (days), float64
    site: np.ndarray  # site index (0 for a space survey), int16
    night: np.ndarray  # global night label (site, local night) for weather/seeing, int64


def build_schedule(spec: SurveySpec) -> tuple[FieldSchedule, ...]:
    """The planned exposures of every field class (deterministic: no random numbers)."""
    out = []
    for field in spec.cadence.fields:
        step = field.interval_min / 1440.0
        # exposures at start + k·step for k = 0 .. floor((end - start)/step): all inside the season
        grid = np.concatenate(
            [s.start + step * np.arange(int(np.floor((s.end - s.start) / step)) + 1) for s in spec.seasons]
        )
        if not spec.is_ground:
            out.append(FieldSchedule(grid, np.zeros(grid.size, np.int16), np.zeros(grid.size, np.int64)))
            continue
        vis = spec.visibility
        assert vis is not None
        jd = grid + HJD_OFFSET
        sra, sdec = sun_radec(jd)
        ts, ss, ns = [], [], []
        for k, site in enumerate(spec.sites):
            sun_alt = altitude(jd, sra, sdec, site.latitude_deg, site.longitude_deg)
            tgt_alt = altitude(
                jd, vis.target_ra_deg, vis.target_dec_deg, site.latitude_deg, site.longitude_deg
            )
            keep = (sun_alt < vis.max_sun_alt_deg) & (tgt_alt > vis.min_target_alt_deg)
            ts.append(grid[keep])
            ss.append(np.full(int(keep.sum()), k, np.int16))
            ns.append(night_index(grid[keep], site.longitude_deg) * 16 + k)
        t, site_idx, night = np.concatenate(ts), np.concatenate(ss), np.concatenate(ns)
        order = np.argsort(t, kind="stable")
        out.append(FieldSchedule(t[order], site_idx[order], night[order]))
    return tuple(out)


@dataclass(frozen=True)
class Observations:
    """Fixed-length observation arrays for a batch of events, shape (B, n_points)."""

    t: np.ndarray  # HJD', float64; padded entries repeat the last time
    mask: np.ndarray  # bool: a real observation
    seeing: np.ndarray  # FWHM (arcsec) of the exposure's night; NaN for a space survey
    site: np.ndarray  # int16 site index
    field: np.ndarray  # (B,) int16 field-class index
    n_available: np.ndarray  # (B,) exposures that survived weather/dropout/gaps before subsampling


def half_width(spec: SurveySpec, t_E: np.ndarray) -> np.ndarray:
    """Half-width (days) of the event window for Einstein times ``t_E`` (``window = "event"``)."""
    lc = spec.lightcurve
    if lc.window != "event":
        raise ValueError(f"{spec.path}: half_width is defined for lightcurve.window = 'event', not "
                         f"{lc.window!r}; use window_bounds")
    return np.clip(
        lc.window_tE * np.asarray(t_E, dtype=float), lc.min_half_width_days, lc.max_half_width_days
    )


def season_index(spec: SurveySpec, t_0: np.ndarray) -> np.ndarray:
    """Index of the season holding each ``t_0`` (HJD', days); -1 where none does."""
    t_0 = np.asarray(t_0, dtype=float)
    starts = np.array([s.start for s in spec.seasons])
    ends = np.array([s.end for s in spec.seasons])
    k = np.searchsorted(starts, t_0, side="right") - 1
    inside = (k >= 0) & (t_0 <= ends[np.clip(k, 0, None)])
    return np.where(inside, k, -1)


def window_bounds(spec: SurveySpec, t_0: np.ndarray, t_E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` (HJD', days) of each event's observation window: ``t_0 ± half_width(t_E)``
    (``window = "event"``) or the season holding ``t_0`` (``"season"``; a ``t_0`` outside every season
    is an error). The window keeps the exposures with ``lo <= t <= hi``."""
    t_0 = np.asarray(t_0, dtype=float)
    if spec.lightcurve.window == "event":
        hw = half_width(spec, t_E)
        return t_0 - hw, t_0 + hw
    k = season_index(spec, t_0)
    if np.any(k < 0):
        bad = float(t_0[np.flatnonzero(k < 0)[0]])
        raise ValueError(f"{spec.path}: t_0 = {bad} is in no season (lightcurve.window = 'season')")
    starts = np.array([s.start for s in spec.seasons])
    ends = np.array([s.end for s in spec.seasons])
    return starts[k], ends[k]


def max_season_exposures(spec: SurveySpec, schedule: tuple[FieldSchedule, ...]) -> int:
    """The largest number of planned exposures of one field class in one season."""
    most = 0
    for sch in schedule:
        for s in spec.seasons:
            lo = np.searchsorted(sch.t, s.start, side="left")
            hi = np.searchsorted(sch.t, s.end, side="right")
            most = max(most, int(hi - lo))
    return most


def draw_field(spec: SurveySpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """Field-class index per event, drawn with the spec's weights."""
    w = np.array([f.weight for f in spec.cadence.fields], dtype=float)
    return rng.choice(len(w), size=n, p=w / w.sum()).astype(np.int16)


def draw_observations(
    spec: SurveySpec,
    schedule: tuple[FieldSchedule, ...],
    rng: np.random.Generator,
    t_0: np.ndarray,
    t_E: np.ndarray,
    field: np.ndarray,
) -> Observations:
    """Observation times for each event (weather, dropout, gaps, fixed length); see module doc."""
    n_pts = spec.lightcurve.n_points
    b = len(t_0)
    w_lo, w_hi = window_bounds(spec, t_0, t_E)
    out_t = np.empty((b, n_pts))
    out_m = np.zeros((b, n_pts), bool)
    out_see = np.full((b, n_pts), np.nan)
    out_site = np.zeros((b, n_pts), np.int16)
    n_avail = np.zeros(b, np.int64)
    clear = np.array([s.clear_fraction for s in spec.sites] or [1.0])
    see_med = np.array([s.seeing_median_arcsec for s in spec.sites] or [np.nan])
    see_sig = np.array([s.seeing_sigma_dex for s in spec.sites] or [0.0])
    gaps = spec.cadence.random_gaps
    for i in range(b):
        sch = schedule[int(field[i])]
        if spec.lightcurve.window == "event":
            lo, hi = np.searchsorted(sch.t, [w_lo[i], w_hi[i]], side="left")
        else:  # the whole season, both ends included
            lo = np.searchsorted(sch.t, w_lo[i], side="left")
            hi = np.searchsorted(sch.t, w_hi[i], side="right")
        t, site, night = sch.t[lo:hi], sch.site[lo:hi], sch.night[lo:hi]
        keep = rng.random(t.size) >= spec.cadence.dropout
        seeing = np.full(t.size, np.nan)
        if spec.is_ground and t.size:
            nights, inv = np.unique(night, return_inverse=True)
            nsite = (nights % 16).astype(int)
            lost = rng.random(nights.size) >= clear[nsite]
            fwhm = see_med[nsite] * 10.0 ** (see_sig[nsite] * rng.standard_normal(nights.size))
            keep &= ~lost[inv]
            seeing = fwhm[inv]
        if gaps.max_count > 0:
            k = int(rng.integers(0, gaps.max_count + 1))
            starts = rng.uniform(w_lo[i], w_hi[i], size=k)
            lengths = rng.uniform(gaps.min_days, gaps.max_days, size=k)
            for g0, gl in zip(starts, lengths, strict=True):
                keep &= ~((t >= g0) & (t < g0 + gl))
        idx = np.flatnonzero(keep)
        n_avail[i] = idx.size
        if idx.size > n_pts:
            idx = np.sort(rng.choice(idx, size=n_pts, replace=False))
        m = idx.size
        out_t[i, :m] = t[idx]
        out_t[i, m:] = t[idx[-1]] if m else t_0[i]
        out_m[i, :m] = True
        out_see[i, :m] = seeing[idx]
        out_site[i, :m] = site[idx]
    return Observations(out_t, out_m, out_see, out_site, np.asarray(field, np.int16), n_avail)
