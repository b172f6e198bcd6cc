"""Partner search: predict the offset-degenerate partner of one solution, refine both with the exact
likelihood, and report Δχ².

**Prediction.** For a solution (t_0, u_0, t_E, s, q, alpha[, rho]) with axis crossing x0
(:func:`.relation.axis_crossing`), the partner has ``s' = f⁻¹(2·x0 − f(s))``, the same q, t_E and
alpha, the u_0 that keeps the crossing at x0 (``u_0' = (x0 − s'q/(1+q))·sin alpha``), and the t_0 that
keeps the time of the crossing (``t_0' = t_× + t_E·u_0'·cot alpha``). When ``|ln(s'/s)| < 0.005``
the trajectory crosses the axis at the solution's own caustic and there is no distinct partner.

**Refinement.** Both the solution and the predicted partner are refined by the same local,
derivative-free optimizer: a cross-entropy search (diagonal Gaussian over t_0, u_0, ln t_E, ln s,
ln q, alpha; ``population`` parameter sets per step, the best ``elite`` re-fit the Gaussian,
elitist, smoothed) on the profile χ² of :func:`mulens_sbi.likelihood.evaluate` (each dataset's
F_s, F_b solved exactly). Derivative-free because point-source light curves near caustics have
rough χ² surfaces; batched so that one compiled shape serves every step. Δχ² = χ²(partner) −
χ²(solution); the partner is **found** (a viable solution the flow may have missed) when
``Δχ² < delta_chi2_max`` (default 10) and the refined partner is still distinct from the solution
(its ln s kept at least half the predicted distance from the solution's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from mulens_sbi.degeneracy.relation import axis_crossing, crossing_time, partner_separation
from mulens_sbi.event import Event
from mulens_sbi.likelihood import evaluate, pack_event

__all__ = ["PartnerResult", "predict_partner", "refine_solution", "search_partner"]

_LENS = ("t_0", "u_0", "t_E", "s", "q", "alpha")
_PAD = 1024


def predict_partner(solution: Mapping[str, float]) -> dict[str, float] | None:
    """The relation's partner of ``solution`` (see the module docstring); ``None`` if it coincides
    with the solution. Parameters in physical units (alpha in degrees); extra keys (rho) are kept."""
    p = {k: float(v) for k, v in solution.items() if k in _LENS or k == "rho"}
    x0 = float(axis_crossing(p["u_0"], p["alpha"], p["s"], p["q"]))
    if not math.isfinite(x0):
        return None
    s2 = float(partner_separation(p["s"], x0))
    if abs(math.log(s2 / p["s"])) < 0.005:
        return None
    a = math.radians(p["alpha"])
    t_x = float(crossing_time(p["t_0"], p["u_0"], p["t_E"], p["alpha"]))
    u2 = (x0 - s2 * p["q"] / (1.0 + p["q"])) * math.sin(a)
    out = dict(p)
    out.update(s=s2, u_0=u2, t_0=t_x + p["t_E"] * u2 * math.cos(a) / math.sin(a))
    return out


def _to_z(p: Mapping[str, float]) -> np.ndarray:
    return np.array([p["t_0"], p["u_0"], math.log(p["t_E"]), math.log(p["s"]), math.log(p["q"]), p["alpha"]])


def _from_z(z: np.ndarray, extra: Mapping[str, float]) -> dict[str, np.ndarray]:
    z = np.atleast_2d(z)
    out = {"t_0": z[:, 0], "u_0": z[:, 1], "t_E": np.exp(z[:, 2]), "s": np.exp(z[:, 3]),
           "q": np.exp(z[:, 4]), "alpha": z[:, 5]}
    for k, v in extra.items():
        out[k] = np.full(z.shape[0], float(v))
    return out


def refine_solution(
    event: Event,
    start: Mapping[str, float],
    *,
    population: int = 64,
    elite: int = 8,
    n_steps: int = 12,
    seed: int = 0,
    packed=None,
) -> tuple[dict[str, float], float]:
    """Cross-entropy refinement of ``start`` on the profile χ² of ``event`` (see the module
    docstring). ``rho`` (if given) stays fixed. Returns ``(best parameters, χ²)``; χ² is ``inf`` if
    no evaluated parameter set had a certified light curve."""
    rng = np.random.default_rng(seed)
    packed = packed if packed is not None else pack_event(event, pad_to=_pad(event.n_points))
    extra = {k: float(start[k]) for k in ("rho",) if k in start and start[k] is not None}
    mean = _to_z(start)
    t_e = float(start["t_E"])
    sd = np.array([0.003 * t_e, 0.02 * abs(start["u_0"]) + 1e-3, 0.01, 0.01, 0.2, 0.5])
    best_z, best_chi2 = mean.copy(), _chi2(packed, mean[None], extra)[0]
    for _ in range(n_steps):
        pop = mean[None] + sd[None] * rng.standard_normal((population, 6))
        pop[0] = best_z
        chi2 = _chi2(packed, pop, extra)
        order = np.argsort(chi2)
        if chi2[order[0]] < best_chi2:
            best_chi2, best_z = float(chi2[order[0]]), pop[order[0]].copy()
        el = pop[order[:elite]][np.isfinite(chi2[order[:elite]])]
        if el.shape[0] >= 2:
            mean = 0.7 * el.mean(axis=0) + 0.3 * mean
            sd = np.maximum(0.7 * el.std(axis=0) + 0.3 * sd, 1e-7 * (np.abs(mean) + 1e-3))
        else:
            sd = 0.5 * sd
    best = {k: float(v[0]) for k, v in _from_z(best_z, extra).items()}
    return best, float(best_chi2)


def _pad(n: int) -> int:
    return int(math.ceil(n / _PAD) * _PAD)


def _chi2(packed, z: np.ndarray, extra) -> np.ndarray:
    p = _from_z(z, extra)
    res = evaluate({k: jnp.asarray(v) for k, v in p.items()}, packed)
    c = np.asarray(res.chi2, dtype=float)
    return np.where(np.isfinite(c), c, np.inf)


@dataclass
class PartnerResult:
    """Outcome of a partner search from one mode's solution."""

    mode: int
    solution: dict[str, float]
    predicted: dict[str, float] | None
    refined_solution: dict[str, float] | None = None
    refined_partner: dict[str, float] | None = None
    chi2_solution: float = float("nan")
    chi2_partner: float = float("nan")
    delta_chi2: float = float("nan")
    distinct: bool = False
    found: bool = False
    matches_mode: int | None = None
    note: str = ""
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def line(self) -> str:
        if self.predicted is None:
            return f"mode {self.mode + 1}: {self.note}"
        head = (f"mode {self.mode + 1}: predicted partner s = {self.predicted['s']:.4g} "
                f"(u_0 = {self.predicted['u_0']:+.4f}, t_0 = {self.predicted['t_0']:.3f})")
        if self.matches_mode is not None:
            return head + f" — already found as mode {self.matches_mode + 1}"
        if self.refined_partner is None:
            return head + f" — {self.note}"
        rp = self.refined_partner
        return head + (f" → refined s = {rp['s']:.4g}, q = {rp['q']:.3g}; "
                       f"Δχ² = {self.delta_chi2:+.1f} ({self.note})")


def search_partner(
    event: Event,
    solution: Mapping[str, float],
    *,
    mode: int = 0,
    delta_chi2_max: float = 10.0,
    population: int = 64,
    elite: int = 8,
    n_steps: int = 12,
    seed: int = 0,
) -> PartnerResult:
    """Predict the partner of ``solution`` and refine both on ``event`` (module docstring)."""
    missing = [k for k in _LENS if k not in solution]
    if missing:
        raise ValueError(f"partner search needs {', '.join(_LENS)}; the solution lacks {', '.join(missing)}")
    sol = {k: float(solution[k]) for k in (*_LENS, "rho") if k in solution}
    pred = predict_partner(sol)
    settings = {"population": population, "elite": elite, "n_steps": n_steps, "seed": seed,
                "delta_chi2_max": delta_chi2_max}
    if pred is None:
        return PartnerResult(mode=mode, solution=sol, predicted=None, settings=settings,
                             note="no distinct partner: the trajectory crosses the axis at the solution's "
                                  "own caustic (x0 = f(s)) or runs parallel to the axis")
    packed = pack_event(event, pad_to=_pad(event.n_points))
    kw = {"population": population, "elite": elite, "n_steps": n_steps, "packed": packed}
    ref_sol, chi_sol = refine_solution(event, sol, seed=seed, **kw)
    ref_par, chi_par = refine_solution(event, pred, seed=seed + 1, **kw)
    d = chi_par - chi_sol
    dist_pred = abs(math.log(pred["s"] / sol["s"]))
    distinct = abs(math.log(ref_par["s"] / ref_sol["s"])) > 0.5 * dist_pred
    found = bool(math.isfinite(d) and d < delta_chi2_max and distinct)
    if not math.isfinite(chi_par):
        note = "the partner's light curve could not be computed (uncertified magnification)"
    elif not distinct:
        note = "the refinement ran back to the solution: no distinct partner"
    elif found:
        note = f"viable partner (Δχ² < {delta_chi2_max:g})"
    else:
        note = f"partner disfavoured (Δχ² ≥ {delta_chi2_max:g})"
    return PartnerResult(mode=mode, solution=sol, predicted=pred, refined_solution=ref_sol,
                         refined_partner=ref_par, chi2_solution=chi_sol, chi2_partner=chi_par, delta_chi2=d,
                         distinct=distinct, found=found, note=note, settings=settings)
