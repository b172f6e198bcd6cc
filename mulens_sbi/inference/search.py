"""Global search for binary-lens solutions that does not need a sharp proposal.

At Roman or KMTNet S/N the χ² basin of a caustic crossing is a few percent wide in s and a few
degrees in alpha, so local fits from broad proposals end in false minima. The search places
candidates where the data say the anomaly is, as analysts and RTModel do:

1. **Single lens with the anomaly masked** (:func:`fit_single_lens`): a
   grid in (u_0, t_E) around the brightest part of the light curve, Levenberg–Marquardt, then the
   points whose smoothed residual departs by more than ``threshold``σ are masked and the fit is
   repeated (the anomaly no longer drags u_0 and t_E). When the mask takes the peak, u_0 and t_E
   are left to the wings, which fix only t_eff = u_0·t_E: :func:`single_lens_valley` gives the
   fits along that valley the masked data do not exclude, and each is a base for candidates too.
2. **Geometry of the anomaly** (:func:`anomaly_candidates`): at the anomaly's time t_a the single
   lens puts the source at ``p = R(alpha)·(τ_a, u_0)`` (MulensModel v3: ``x = τ cos α − u_0 sin α``,
   ``y = τ sin α + u_0 cos α``), at distance ``u_a = √(τ_a² + u_0²)`` from the primary. A
   planetary caustic lies on the binary axis at ``s − 1/s`` from the primary (companion side for
   s > 1; the far side, as a pair slightly off the axis, for s < 1; Gould & Loeb 1992, Han 2006),
   so ``|s − 1/s| = u_a`` gives s (wide and close) and alpha turns the axis onto ``p``. The grid
   spans q over the prior and s, alpha around these values by the caustic's size (∝ √q).
   An anomaly near the peak (u_a small) is a central caustic: a grid in s, q and alpha.
3. A coarse grid over the whole (s, q, alpha) prior on top of the single-lens fit, for stellar
   binaries whose light curve is not a single lens with a bump.

Every candidate's χ² (fluxes profiled) is evaluated in batches, and the best distinct ones go to
the local fits (:mod:`mulens_sbi.inference.localfit`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from mulens_sbi.inference.localfit import (
    chi2_batch,
    gauss_newton_hessian,
    levenberg_marquardt,
    profile_residuals,
    to_z,
)
from mulens_sbi.lightcurve import magnification_batch
from mulens_sbi.likelihood import PackedEvent

__all__ = [
    "Anomaly",
    "SingleLensFit",
    "anomaly_candidates",
    "evaluate_candidates",
    "fit_single_lens",
    "grid_candidates",
    "single_lens_valley",
]

SINGLE = ("t_0", "u_0", "t_E")
BINARY = ("t_0", "u_0", "t_E", "s", "q", "alpha")


@dataclass(frozen=True)
class SingleLensFit:
    """Point-source single-lens fit with some points masked.

    Attributes:
        params: ``t_0`` (HJD'), ``u_0`` (≥ 0: the sign is not measurable), ``t_E`` (days).
        chi2: χ² over the unmasked points; ``chi2_all``: over all points.
        mask: (N,) bool, True where a point was left out of the fit (padding excluded).
        cov: (3, 3) Gauss–Newton covariance of (t_0, u_0, ln t_E) on the unmasked points, or
            None where it is singular.
    """

    params: dict
    chi2: float
    chi2_all: float
    mask: np.ndarray
    cov: np.ndarray | None = None


@dataclass(frozen=True)
class Anomaly:
    """A stretch of data that departs from the single lens.

    Attributes:
        t_peak: time of the largest smoothed departure (HJD').
        t_start, t_end: first and last departing point (HJD').
        sign: +1 brighter than the single lens, −1 fainter.
        delta_chi2: Σ (r/σ)² over the stretch (single-lens residuals).
    """

    t_peak: float
    t_start: float
    t_end: float
    sign: int
    delta_chi2: float


def _masked(packed: PackedEvent, mask: np.ndarray) -> PackedEvent:
    return packed._replace(weight=jnp.where(jnp.asarray(mask), 0.0, packed.weight))


#: Cauchy scale (σ) of the single-lens fit: the anomaly's points must not drag it (a densely
#: covered caustic crossing can be a sixth of the data, hundreds of σ off)
SINGLE_SCALE = 3.0


def _single_chi2(packed: PackedEvent, params: Mapping, scale: float = 0.0) -> np.ndarray:
    z = jnp.asarray(to_z(params, SINGLE))
    return np.asarray(chi2_batch(z, SINGLE, {}, packed, scale))


def _pspl_fit(packed: PackedEvent, t_bright: float, t_span: tuple[float, float]) -> dict:
    u0 = np.geomspace(1e-3, 1.5, 24)
    te = np.geomspace(1.0, 300.0, 24)
    g = np.stack(np.meshgrid([t_bright], u0, te, indexing="ij"), axis=-1).reshape(-1, 3)
    cand = {"t_0": g[:, 0], "u_0": g[:, 1], "t_E": g[:, 2]}
    c = _single_chi2(packed, cand, SINGLE_SCALE)
    best = np.argsort(np.where(np.isfinite(c), c, np.inf))[:8]
    starts = {k: v[best] for k, v in cand.items()}
    res = levenberg_marquardt(packed, starts, SINGLE, max_iter=80, scale=SINGLE_SCALE,
                              bounds={"u_0": (1e-5, 3.0), "t_E": (0.1, 1e3), "t_0": t_span})
    i = int(np.argmin(res.chi2))
    p = res.physical()
    return {k: float(p[k][i]) for k in SINGLE}


def _single_model(packed: PackedEvent, params: Mapping, scale: float = SINGLE_SCALE) -> np.ndarray:
    """(N,) model flux of the single lens, each dataset's fluxes fitted on the points with weight
    > 0 by least squares, then again under Cauchy weights ``w/(1 + (r/scale)²)`` (as the robust
    cost of :func:`mulens_sbi.inference.localfit.chi2_batch` does)."""
    p = {k: jnp.asarray([v]) for k, v in params.items()}
    mag = magnification_batch(packed.t, p)[0]
    w0 = packed.weight
    w = w0
    passes = 2 if scale > 0 else 1
    for i in range(passes):
        r = profile_residuals(mag, w, packed.flux, packed.onehot)[0][0]
        if i < passes - 1:
            w = w0 / (1.0 + (r * jnp.sqrt(w0) / scale) ** 2)
    return np.asarray(packed.flux - r)


def fit_single_lens(
    packed: PackedEvent,
    *,
    threshold: float = 5.0,
    rounds: int = 3,
    window_days: float | None = None,
) -> tuple[SingleLensFit, list[Anomaly]]:
    """Single-lens fit that masks the anomalies it finds (see the module docstring).

    Args:
        packed: the event.
        threshold: a stretch departs when its running mean residual is beyond ``threshold``σ.
        rounds: fit–mask rounds.
        window_days: running window for the departure (default: 0.5% of the data span, at least
            3 points' worth).

    Returns:
        The final fit and the anomalies (largest Δχ² first).
    """
    t = np.asarray(packed.t)
    valid = np.asarray(packed.valid)
    w = np.asarray(packed.weight)
    f = np.asarray(packed.flux)
    sig = np.where(w > 0, 1.0 / np.sqrt(np.where(w > 0, w, 1.0)), np.inf)
    t_span = (float(t[valid].min()) - 50.0, float(t[valid].max()) + 50.0)
    oh = np.asarray(packed.onehot)
    # brightest point by dataset-normalized flux (robust: median of 5 around the max)
    z = np.zeros_like(f)
    for d in range(oh.shape[0]):
        m = (oh[d] > 0) & valid
        med = np.median(f[m])
        mad = np.median(np.abs(f[m] - med)) + 1e-300
        z[m] = (f[m] - med) / mad
    zs = np.convolve(np.where(valid, z, 0.0), np.ones(5) / 5, mode="same")
    t_bright = float(t[int(np.argmax(np.where(valid, zs, -np.inf)))])
    span = float(t[valid].max() - t[valid].min())
    cadence = float(np.median(np.diff(t[valid])))
    win = window_days if window_days is not None else max(0.005 * span, 3 * cadence)
    mask = ~valid.copy()
    prev_mask = mask
    params = None
    anomalies: list[Anomaly] = []
    for _ in range(rounds):
        pk = _masked(packed, mask)
        trial = _pspl_fit(pk, t_bright if params is None else params["t_0"], t_span)
        if params is not None and not (2e-5 < trial["u_0"] < 2.99 and 0.11 < trial["t_E"] < 999.0):
            # the mask took what constrains the single lens (on high-S/N ground data the whole peak
            # can depart from a first fit): the fit ran to a bound, so the previous round stands
            mask = prev_mask
            break
        params = trial
        prev_mask = mask
        model = _single_model(pk, params)
        r = np.where(valid, (f - model) / sig, 0.0)
        # running mean over the window (in time), significance √n · mean
        lo = np.searchsorted(t, t - win / 2)
        hi = np.searchsorted(t, t + win / 2, side="right")
        cs = np.concatenate([[0.0], np.cumsum(r)])
        cnt = np.maximum(hi - lo, 1)
        sig_run = (cs[hi] - cs[lo]) / np.sqrt(cnt)
        bad = valid & (np.abs(sig_run) > threshold)
        anomalies = _group(t, r, sig_run, bad, gap=2 * win)
        new_mask = ~valid.copy()
        for a in anomalies:
            pad = 0.5 * (a.t_end - a.t_start) + win
            new_mask |= (t >= a.t_start - pad) & (t <= a.t_end + pad)
        if np.array_equal(new_mask, mask):
            break
        if np.sum(valid & ~new_mask) < 10:
            break
        mask = new_mask
    pk = _masked(packed, mask)
    chi2 = float(_single_chi2(pk, {k: np.array([v]) for k, v in params.items()})[0])
    chi2_all = float(_single_chi2(packed, {k: np.array([v]) for k, v in params.items()})[0])
    h, ok = gauss_newton_hessian(jnp.asarray(to_z({k: np.array([v]) for k, v in params.items()}, SINGLE)),
                                 SINGLE, {}, pk)
    cov = None
    if bool(np.asarray(ok)[0]):
        try:
            cov = np.linalg.inv(np.asarray(h)[0])
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            cov = None
    return SingleLensFit(params=params, chi2=chi2, chi2_all=chi2_all, mask=mask & valid, cov=cov), anomalies


def single_lens_valley(
    packed: PackedEvent,
    single: SingleLensFit,
    *,
    steps: tuple = (-0.2, 0.2),
    delta: float = 9.0,
) -> list[dict]:
    """Single-lens fits along the u_0–t_E valley of the masked fit, where the data allow them.

    With the anomaly masked, what is left of the light curve can constrain u_0 poorly: when the
    anomaly covers the peak (a resonant or central caustic), only the wings remain, which fix
    t_eff = u_0·t_E but not u_0 (with the blend flux free). The anomaly's geometry then depends on
    where along that valley the trajectory is taken: on OGLE-2003-BLG-235 the masked fit has
    u_0 0.106, t_E 75.6 against the published 0.133, 61.5 (robust cost 1.5 apart), and candidates
    built on the fit put the caustic at the wrong place for the local fits to recover.

    Args:
        packed: the event.
        single: the masked fit (:func:`fit_single_lens`); its mask is used.
        steps: u_0 pinned at ``u_0·exp(step)`` (t_0 and t_E refitted on the robust cost, t_E
            started at the same t_eff).
        delta: a valley point is kept when its robust cost is within ``delta`` of the fit's.

    Returns:
        The kept valley points (dicts of t_0, u_0, t_E), closest to the fit's cost first.
    """
    pk = _masked(packed, single.mask)
    u_fit, te_fit = abs(single.params["u_0"]), single.params["t_E"]
    u0 = u_fit * np.exp(np.asarray(steps, dtype=float))
    starts = {"t_0": np.full(u0.size, single.params["t_0"]), "u_0": u0, "t_E": te_fit * u_fit / u0}
    t = np.asarray(packed.t)[np.asarray(packed.valid)]
    bounds = {"t_E": (0.1, 1e3), "t_0": (float(t.min()) - 50.0, float(t.max()) + 50.0)}
    res = levenberg_marquardt(pk, starts, SINGLE, max_iter=80, scale=SINGLE_SCALE, pin={"u_0": u0},
                              bounds=bounds)
    ref = float(_single_chi2(pk, {k: np.array([v]) for k, v in single.params.items()}, SINGLE_SCALE)[0])
    phys = res.physical()
    out = []
    for i in np.argsort(res.chi2):
        if np.isfinite(res.chi2[i]) and res.chi2[i] - ref < delta:
            out.append({k: float(phys[k][i]) for k in SINGLE})
    return out


def _group(t, r, sig_run, bad, gap) -> list[Anomaly]:
    idx = np.flatnonzero(bad)
    if idx.size == 0:
        return []
    groups = np.split(idx, np.flatnonzero(np.diff(t[idx]) > gap) + 1)
    out = []
    for g in groups:
        a, b = g[0], g[-1]
        seg = slice(a, b + 1)
        k = a + int(np.argmax(np.abs(sig_run[seg])))
        out.append(Anomaly(t_peak=float(t[k]), t_start=float(t[a]), t_end=float(t[b]),
                           sign=int(np.sign(sig_run[k]) or 1), delta_chi2=float(np.sum(r[seg] ** 2))))
    out.sort(key=lambda a: -a.delta_chi2)
    return out


def anomaly_candidates(
    single: Mapping,
    anomaly: Anomaly,
    *,
    q_grid: np.ndarray | None = None,
    n_s: int = 15,
    n_alpha: int = 25,
    central_u: float = 0.05,
) -> dict:
    """Binary-lens candidates that put a caustic where the source is at the anomaly's time.

    Returns a dict of (K,) arrays (t_0, u_0, t_E, s, q, alpha in degrees) with u_0 > 0 (the
    reflection u_0 → −u_0, alpha → −alpha gives the same light curve and is added later).
    """
    if q_grid is None:
        q_grid = np.geomspace(1e-5, 0.3, 19)
    t0, u0, te = single["t_0"], abs(single["u_0"]), single["t_E"]
    tau = (anomaly.t_peak - t0) / te
    u_a = math.hypot(tau, u0)
    phi_p = math.degrees(math.atan2(u0, tau))  # angle of p in the trajectory frame
    cols = {k: [] for k in BINARY}

    def add(s, q, alpha):
        n = s.size
        cols["t_0"].append(np.full(n, t0))
        cols["u_0"].append(np.full(n, u0))
        cols["t_E"].append(np.full(n, te))
        cols["s"].append(s)
        cols["q"].append(q)
        cols["alpha"].append(np.mod(alpha, 360.0))

    for q in q_grid:
        size = 2.0 * math.sqrt(q)  # planetary-caustic scale (θ_E) up to O(1) factors
        if u_a > central_u:
            for wide in (True, False):
                s0 = (u_a + math.sqrt(u_a**2 + 4)) / 2 if wide else (-u_a + math.sqrt(u_a**2 + 4)) / 2
                # companion at −x (MulensModel v3): a wide planet's caustic at x < 0 (angle 180°)
                a0 = (180.0 if wide else 0.0) - phi_p
                ds = np.linspace(-1.0, 1.0, n_s) * min(0.5, 1.5 * size / max(u_a, 0.05)) * 0.5
                da = np.linspace(-1.0, 1.0, n_alpha) * min(60.0, math.degrees(1.5 * size / max(u_a, 0.05)))
                gs, ga = np.meshgrid(ds, da, indexing="ij")
                add(s0 * np.exp(gs.ravel()), np.full(gs.size, q), a0 + ga.ravel())
        # central caustic (always tried for anomalies close to the peak, cheap otherwise)
        if u_a < 0.3:
            ls = np.linspace(math.log(0.3), math.log(3.3), n_s)
            al = np.linspace(0.0, 360.0, 2 * n_alpha, endpoint=False)
            gs, ga = np.meshgrid(ls, al, indexing="ij")
            add(np.exp(gs.ravel()), np.full(gs.size, q), ga.ravel())
    return {k: np.concatenate(v) for k, v in cols.items()}


def grid_candidates(single: Mapping, *, s_range=(0.2, 5.0), q_range=(1e-5, 1.0), n_s: int = 21, n_q: int = 11,
                    n_alpha: int = 36, u0_scale=(0.5, 1.0, 2.0), te_scale=(0.7, 1.0, 1.4)) -> dict:
    """A coarse grid over (s, q, alpha) and a few (u_0, t_E) scalings of the single-lens fit."""
    ls = np.linspace(math.log(s_range[0]), math.log(s_range[1]), n_s)
    lq = np.linspace(math.log(q_range[0]), math.log(q_range[1]), n_q)
    al = np.linspace(0.0, 360.0, n_alpha, endpoint=False)
    g = np.stack(np.meshgrid(ls, lq, al, np.asarray(u0_scale), np.asarray(te_scale), indexing="ij"),
                 axis=-1).reshape(-1, 5)
    u0 = max(abs(single["u_0"]), 1e-3)
    return {
        "t_0": np.full(len(g), single["t_0"]),
        "u_0": u0 * g[:, 3],
        "t_E": single["t_E"] * g[:, 4],
        "s": np.exp(g[:, 0]),
        "q": np.exp(g[:, 1]),
        "alpha": g[:, 2],
    }


def evaluate_candidates(packed: PackedEvent, cand: Mapping, *, names=BINARY, fixed: Mapping | None = None,
                        chunk: int = 2048, scale: float = 0.0, progress: bool = False) -> np.ndarray:
    """(K,) profile χ² of candidate parameter sets, in chunks of a fixed compiled size (the robust
    cost of :func:`mulens_sbi.inference.localfit.chi2_batch` where ``scale > 0``)."""
    from tqdm.auto import tqdm

    z = to_z(cand, names)
    k = z.shape[0]
    out = np.empty(k)
    fixed = {kk: float(v) for kk, v in (fixed or {}).items()}
    for i0 in tqdm(range(0, k, chunk), desc="candidates", disable=not progress, leave=False):
        idx = np.minimum(np.arange(i0, i0 + chunk), k - 1)
        c = np.asarray(chi2_batch(jnp.asarray(z[idx]), tuple(names), fixed, packed, scale))
        out[i0:min(i0 + chunk, k)] = c[: min(chunk, k - i0)]
    return out
