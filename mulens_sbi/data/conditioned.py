"""Light curves drawn from the prior *conditioned* on a rare event class, by exact rejection.

Caustic-crossing planetary events (q < ``q_max`` and at least one used data point with the source
inside a caustic, i.e. 5 images) are 0.7% of Roman prior draws. A training or test set of them
straight from the prior costs ~145 simulations per event; this module needs ~1.4, still drawing
exactly from ``p(θ, data | class)``:

1. **Lenses.** ``(s, q)`` pairs are drawn from the prior; those with ``q >= q_max`` are rejected at
   once. Each kept lens gets ``per_lens`` trajectories: the other parameters (``t_0``, ``u_0``,
   ``t_E``, ``alpha``, fluxes) are fresh prior draws. The priors are independent per parameter, so
   every candidate is a prior draw (candidates that share a lens are dependent, not biased).
2. **Geometric pre-filter** (a necessary condition, so nothing of the class is lost): the caustics
   of the lens are sampled at ``_N_CAUSTIC`` points per branch (:func:`mulens_sbi.lensing.caustics`);
   a trajectory whose straight segment over the event's observation window
   (:func:`mulens_sbi.survey.cadence.window_bounds`: ``t_0 ± half_width(t_E)``, or the season) keeps farther
   than the longest caustic edge from every caustic point cannot cross an edge of the caustic
   polygon, so it cannot have a data point inside a caustic unless it lies wholly inside one, which
   needs a caustic at least as long as the segment (:func:`may_cross_caustic`: segments no longer
   than a bound on the caustic diameter always pass; that matters only for whole-season windows of
   long events, whose source moves less than 1 θ_E).
3. **Exact test.** The survivors are simulated in full (cadence, noise: the survey's
   :func:`mulens_sbi.data.lightcurves.simulate_lightcurves`) and kept when
   :func:`mulens_sbi.data.classes.caustic_crossing` (the point-source image count at the data points)
   says so. That is the same definition the validation uses for its caustic-crossing subset.

The acceptance ``accepted / candidates`` is an unbiased estimate of the class probability
``P(class)`` under the prior, reported with a standard error that treats the lenses as clusters
(:func:`probability_se`); training with an enriched mixture
(:mod:`mulens_sbi.data.samplers`) needs it to weight the rows back to the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mulens_sbi.data.classes import caustic_crossing
from mulens_sbi.data.lightcurves import simulate_lightcurves
from mulens_sbi.lensing.caustics import caustics
from mulens_sbi.lightcurve import source_trajectory
from mulens_sbi.survey.cadence import window_bounds

__all__ = ["CONDITIONS", "ConditionStats", "check_condition", "probability_se", "simulate_conditioned",
           "segment_near_caustics", "caustic_geometry", "may_cross_caustic"]

#: supported conditions (``mulens-sbi simulate --condition``)
CONDITIONS = ("caustic-crossing",)
#: caustic samples per branch for the pre-filter
_N_CAUSTIC = 256
_KEYS = ("t_0", "u_0", "t_E", "s", "q", "alpha")


def check_condition(spec, condition: str, q_max: float) -> None:
    """Raise ``ValueError`` unless ``condition`` is supported, the spec a binary lens and
    ``0 < q_max <= 1``."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    if spec.model.lens != "binary":
        raise ValueError(f"{spec.path}: condition {condition!r} needs a binary-lens survey spec "
                         f"(model.lens = 'binary'), got {spec.model.lens!r}")
    if not 0.0 < q_max <= 1.0:
        raise ValueError(f"q_max must be in (0, 1], got {q_max}")


@dataclass
class ConditionStats:
    """Book-keeping of one conditioned draw.

    Attributes:
        n_candidates: prior draws considered (incl. those rejected for q >= q_max).
        n_prefiltered: candidates passing the geometric pre-filter (simulated in full).
        n_accepted: candidates in the class.
        n_lenses: (s, q) draws; each stands for ``n_candidates / n_lenses`` candidates.
        sum_sq_per_lens: sum over lenses of the squared number of accepted candidates (for the
            standard error: candidates that share a lens are not independent).
    """

    n_candidates: int = 0
    n_prefiltered: int = 0
    n_accepted: int = 0
    n_lenses: int = 0
    sum_sq_per_lens: int = 0

    @property
    def probability(self) -> float:
        """Estimated prior probability of the class (accepted / candidates)."""
        return self.n_accepted / max(self.n_candidates, 1)


def probability_se(n_candidates: int, n_accepted: int, n_lenses: int, sum_sq_per_lens: int) -> float:
    """Standard error of ``n_accepted / n_candidates`` with the lenses as independent clusters of
    ``n_candidates / n_lenses`` candidates each (the plain binomial error would understate it)."""
    if n_lenses < 2 or n_candidates < 1:
        return float("nan")
    k = n_candidates / n_lenses
    p = n_accepted / n_candidates
    var = (sum_sq_per_lens / k**2 - n_lenses * p**2) / (n_lenses - 1)
    return float(np.sqrt(max(var, 0.0) / n_lenses))


def caustic_geometry(s, q, n_points: int = _N_CAUSTIC):
    """The pre-filter's view of lenses ``s``, ``q`` (L,): their caustic samples (L, 4·n_points)
    (complex, centre-of-mass frame, θ_E), the longest edge between neighbouring samples (L,) and the
    sum over the four branches of their bounding-box diagonals (L,), an upper bound on the diameter
    of any caustic (a closed caustic is made of whole branches). Jittable."""
    c = jax.vmap(lambda a, b: caustics(a, b, n_points=n_points))(s, q)  # (L, 4, n)
    edge = jnp.max(jnp.abs(jnp.diff(c, axis=-1)), axis=(-1, -2))
    # closing edge of each branch: to the nearest branch start (branches permute over a turn)
    close = jnp.min(jnp.abs(c[:, :, -1][:, :, None] - c[:, :, 0][:, None, :]), axis=-1)
    edge = jnp.maximum(edge, jnp.max(close, axis=-1))
    span = lambda a: jnp.max(a, axis=-1) - jnp.min(a, axis=-1)  # noqa: E731
    diam = jnp.sum(jnp.hypot(span(c.real), span(c.imag)), axis=-1)
    return c.reshape(c.shape[0], -1), edge, diam


_caustic_geometry = jax.jit(caustic_geometry)


def segment_near_caustics(p0, p1, pts, radius):
    """(L, M) bool: the segment ``p0[l, m]``–``p1[l, m]`` (complex, (L, M)) passes within
    ``radius[l]`` of some point of ``pts[l]`` ((L, K) complex). Jittable."""
    p0, p1, pts = jnp.asarray(p0), jnp.asarray(p1), jnp.asarray(pts)
    d = (p1 - p0)[..., None]  # (L, M, 1)
    rel = pts[:, None, :] - p0[..., None]  # (L, M, K)
    len2 = jnp.maximum(jnp.abs(d) ** 2, 1e-300)
    u = jnp.clip((rel.real * d.real + rel.imag * d.imag) / len2, 0.0, 1.0)
    dist = jnp.min(jnp.abs(rel - u * d), axis=-1)
    return dist <= jnp.asarray(radius)[:, None]


def may_cross_caustic(p0, p1, pts, edge, diam):
    """(L, M) bool, a necessary condition for the segment ``p0``–``p1`` (complex (L, M), the source's
    path over the observation window) to have a point inside a caustic of lens ``l``: it passes
    within the longest caustic edge of a caustic sample (it may cross the caustic polygon), or it is
    too short to rule out lying wholly inside a caustic (no longer than the caustic diameter bound
    plus two edges). ``pts``, ``edge``, ``diam`` from :func:`caustic_geometry`. Jittable."""
    reach = jnp.asarray(diam) + 2.0 * jnp.asarray(edge)
    short = jnp.abs(jnp.asarray(p1) - jnp.asarray(p0)) <= reach[:, None]
    return segment_near_caustics(p0, p1, pts, edge) | short


_may_cross = jax.jit(may_cross_caustic)


def _candidates(survey, rng: np.random.Generator, n_lens: int, per_lens: int, q_max: float,
                stats: ConditionStats) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Prior candidates that pass the pre-filter (a dict of (m,) arrays) and the index of each one's
    lens among this round's ``n_lens``, or None."""
    lens = survey.sample_parameters(rng, n_lens)
    stats.n_candidates += n_lens * per_lens
    stats.n_lenses += n_lens
    keep = np.flatnonzero(lens["q"] < q_max)
    if keep.size == 0:
        return None
    s, q = lens["s"][keep], lens["q"][keep]
    pts, edge, diam = (np.asarray(a) for a in _caustic_geometry(jnp.asarray(s), jnp.asarray(q)))
    m = keep.size * per_lens
    p = survey.sample_parameters(rng, m)
    which = np.repeat(np.arange(keep.size), per_lens)
    p["s"], p["q"] = s[which], q[which]
    ends = []
    for t_end in window_bounds(survey.spec, p["t_0"], p["t_E"]):
        x, y = source_trajectory(t_end, p["t_0"], p["u_0"], p["t_E"], p["alpha"])
        ends.append((np.asarray(x) + 1j * np.asarray(y)).reshape(keep.size, per_lens))
    near = np.asarray(_may_cross(ends[0], ends[1], pts, edge, diam)).reshape(-1)
    stats.n_prefiltered += int(near.sum())
    if not near.any():
        return None
    return {k: v[near] for k, v in p.items()}, keep[which[near]]


def simulate_conditioned(survey, rng: np.random.Generator, n: int, condition: str = "caustic-crossing",
                         q_max: float = 0.01, per_lens: int = 16, n_lens: int = 4096,
                         batch_size: int = 128, progress: bool = False) -> tuple[dict[str, np.ndarray],
                                                                                 ConditionStats]:
    """``n`` light curves of ``survey`` drawn from the prior conditioned on ``condition``.

    Args:
        survey: a loaded :class:`~mulens_sbi.survey.Survey` (binary lens).
        rng: numpy generator (all draws, in a fixed order: reproducible from its seed).
        n: light curves wanted.
        condition: ``"caustic-crossing"``: ``q < q_max`` and >= 1 used data point with the source
            inside a caustic (5 images).
        q_max: the mass-ratio bound of the planetary class.
        per_lens: trajectories drawn per ``(s, q)`` lens (caustics are computed once per lens).
        n_lens: lenses drawn per round.
        batch_size: rows per call of the magnification solver.
        progress: show a progress bar.

    Returns:
        ``(data, stats)``: ``data`` as :func:`mulens_sbi.data.lightcurves.simulate_lightcurves` returns it
        (n rows, in the order drawn), and the candidate / pre-filter / acceptance counts.
    """
    check_condition(survey.spec, condition, q_max)
    if n < 1 or per_lens < 1 or n_lens < 1:
        raise ValueError("n, per_lens and n_lens must be >= 1")
    stats = ConditionStats()
    parts: list[dict[str, np.ndarray]] = []
    got = 0
    with tqdm(total=n, desc=f"simulate {condition}", unit="lc", disable=not progress) as bar:
        while got < n:
            res = _candidates(survey, rng, n_lens, per_lens, q_max, stats)
            if res is None:
                continue
            cand, lens = res
            m = len(cand["q"])
            data = simulate_lightcurves(survey, rng, m, batch_size=batch_size, params=cand)
            hit = caustic_crossing(data["t"], data["mask"], {k: data[k] for k in _KEYS})
            stats.n_accepted += int(hit.sum())
            stats.sum_sq_per_lens += int(np.sum(np.bincount(lens[hit], minlength=n_lens) ** 2))
            take = np.flatnonzero(hit)[: n - got]
            if take.size:
                parts.append({k: v[take] for k, v in data.items()})
                got += take.size
                bar.update(take.size)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return out, stats
