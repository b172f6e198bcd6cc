"""Partner search: predict the offset-degenerate partner of one solution, refine both with the exact
likelihood, and report Δχ².

**Prediction.** For a solution (t_0, u_0, t_E, s, q, alpha[, rho]) with axis crossing x0
(:func:`.relation.axis_crossing`), the partner has ``s' = f⁻¹(2·x0 − f(s))``, the same q, t_E and
alpha, the u_0 that keeps the crossing at x0 (``u_0' = (x0 − s'q/(1+q))·sin alpha``), and the t_0
that keeps the time of the crossing (``t_0' = t_× + t_E·u_0'·cot alpha``). When
``|ln(s'/s)| < 0.05·√q`` (far below a caustic's size) the trajectory crosses the axis at the
solution's own caustic and there is no distinct partner.

**Refinement.** Both the solution and the predicted partner are refined by the same local
optimizer, in z = (t_0, u_0, ln t_E, ln s, ln q, alpha): a short cross-entropy search (diagonal
Gaussian; ``population`` parameter sets per step, the best ``elite`` re-fit the Gaussian,
elitist, smoothed) on the profile χ² (each dataset's F_s, F_b solved by weighted least squares,
as in :func:`mulens_sbi.likelihood.evaluate`) — derivative-free, robust where point-source light
curves near caustics make the χ² rough — then a Levenberg–Marquardt polish on the whitened
residuals (Jacobian by central differences; the trial steps of one iteration, for 9 damping
values, share one batch), which follows the narrow, strongly correlated (u_0, t_0, alpha, s)
valley of a degenerate partner that a diagonal search cannot. Every likelihood call has the same
shape (``BATCH`` parameter sets × the event padded to a multiple of 1024 points): one compilation.

Δχ² = χ²(partner) − χ²(solution); the partner is **found** (a viable solution the flow may have
missed) when ``|Δχ²| < delta_chi2_max`` (default 10) and the refined partner is still distinct from
the solution (its ln s kept at least half the predicted distance from the solution's). A partner
with ``Δχ² ≤ −delta_chi2_max`` is flagged ``better``: the starting solution was not the best fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from mulens_sbi.degeneracy.relation import axis_crossing, crossing_time, partner_separation
from mulens_sbi.event import Event
from mulens_sbi.lightcurve import magnification_batch
from mulens_sbi.likelihood import pack_event

__all__ = ["PartnerResult", "predict_partner", "refine_solution", "search_partner"]

_LENS = ("t_0", "u_0", "t_E", "s", "q", "alpha")
_PAD = 1024
#: parameter sets per likelihood call (one compiled shape serves the whole search)
BATCH = 32


def predict_partner(solution: Mapping[str, float]) -> dict[str, float] | None:
    """The relation's partner of ``solution`` (see the module docstring); ``None`` if it coincides
    with the solution. Parameters in physical units (alpha in degrees); extra keys (rho) are kept."""
    p = {k: float(v) for k, v in solution.items() if k in _LENS or k == "rho"}
    x0 = float(axis_crossing(p["u_0"], p["alpha"], p["s"], p["q"]))
    if not math.isfinite(x0):
        return None
    s2 = float(partner_separation(p["s"], x0))
    if abs(math.log(s2 / p["s"])) < 0.05 * math.sqrt(p["q"]):  # far below a caustic's size
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
    population: int = BATCH,
    elite: int = 8,
    n_steps: int = 8,
    lm_steps: int = 30,
    seed: int = 0,
    packed=None,
) -> tuple[dict[str, float], float]:
    """Refine ``start`` on the profile χ² of ``event``: ``n_steps`` of cross-entropy search, then up
    to ``lm_steps`` Levenberg–Marquardt iterations (see the module docstring). ``rho`` (if given)
    stays fixed. Returns ``(best parameters, χ²)``; χ² is ``inf`` if no evaluated parameter set had a
    certified light curve."""
    if population > BATCH:
        raise ValueError(f"population must be <= {BATCH}, got {population}")
    rng = np.random.default_rng(seed)
    packed = packed if packed is not None else pack_event(event, pad_to=_pad(event.n_points))
    extra = {k: float(start[k]) for k in ("rho",) if k in start and start[k] is not None}
    mean = _to_z(start)
    t_e = float(start["t_E"])
    sd = np.array([0.003 * t_e, 0.02 * abs(start["u_0"]) + 1e-3, 0.01, 0.01, 0.2, 0.5])
    best_z = mean.copy()
    best_chi2 = _chi2_batch(packed, best_z[None], extra)[0]
    for _ in range(n_steps):
        pop = mean[None] + sd[None] * rng.standard_normal((population, 6))
        pop[0] = best_z
        chi2 = _chi2_batch(packed, pop, extra)
        order = np.argsort(chi2)
        if chi2[order[0]] < best_chi2:
            best_chi2, best_z = float(chi2[order[0]]), pop[order[0]].copy()
        el = pop[order[:elite]][np.isfinite(chi2[order[:elite]])]
        if el.shape[0] >= 2:
            mean = 0.7 * el.mean(axis=0) + 0.3 * mean
            sd = np.maximum(0.7 * el.std(axis=0) + 0.3 * sd, 1e-7 * (np.abs(mean) + 1e-3))
        else:
            sd = 0.5 * sd
    if lm_steps > 0 and np.isfinite(best_chi2):
        best_z, best_chi2 = _levenberg_marquardt(packed, best_z, extra, lm_steps)
    best = {k: float(v[0]) for k, v in _from_z(best_z, extra).items()}
    return best, float(best_chi2)


def _pad(n: int) -> int:
    return int(math.ceil(n / _PAD) * _PAD)


@jax.jit
def _residuals(z: jnp.ndarray, packed, extra: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Whitened residuals (B, N) of parameter sets z (B, 6) with each dataset's (F_s, F_b) solved by
    weighted least squares (0 at padding), and (B,) whether every real point was certified."""
    p = {"t_0": z[:, 0], "u_0": z[:, 1], "t_E": jnp.exp(z[:, 2]), "s": jnp.exp(z[:, 3]),
         "q": jnp.exp(z[:, 4]), "alpha": z[:, 5]}
    for k, v in extra.items():
        p[k] = jnp.full(z.shape[:1], v)
    mag, ok = magnification_batch(packed.t, p)
    good = jnp.all(ok | ~packed.valid[None, :], axis=1)
    a = jnp.where(ok, mag, 1.0)
    w, f, oh = packed.weight, packed.flux, packed.onehot
    s1 = jnp.maximum(oh @ w, 1e-300)  # (D,)
    abar = ((w * a) @ oh.T) / s1  # (B, D)
    fbar = (oh @ (w * f)) / s1  # (D,)
    da = a - abar @ oh
    df = f - fbar @ oh
    fs = ((w * da * df) @ oh.T) / jnp.maximum((w * da * da) @ oh.T, 1e-300)
    model = (fs @ oh) * da + fbar @ oh
    return jnp.sqrt(w) * (f - model), good


def _resid_batch(packed, z: np.ndarray, extra) -> tuple[np.ndarray, np.ndarray]:
    """Residuals of up to BATCH parameter sets, padded to BATCH rows (one compiled shape)."""
    m = z.shape[0]
    zp = np.concatenate([z, np.repeat(z[-1:], BATCH - m, axis=0)]) if m < BATCH else z
    r, good = _residuals(jnp.asarray(zp), packed, {k: float(v) for k, v in extra.items()})
    return np.asarray(r)[:m], np.asarray(good)[:m]


def _chi2_batch(packed, z: np.ndarray, extra) -> np.ndarray:
    r, good = _resid_batch(packed, z, extra)
    c = np.sum(r * r, axis=1)
    return np.where(good & np.isfinite(c), c, np.inf)


_LAMBDAS = 10.0 ** np.arange(-5.0, 4.0)


def _levenberg_marquardt(packed, z0: np.ndarray, extra: dict, max_iter: int) -> tuple[np.ndarray, float]:
    """Levenberg–Marquardt on the whitened residuals in z; Jacobian by central differences and the
    trial steps for 9 damping values evaluated in the same batch (one call per iteration)."""
    z = np.asarray(z0, dtype=float)
    h = np.array([1e-5 * np.exp(z[2]), 1e-6 + 1e-5 * abs(z[1]), 1e-5, 1e-6, 1e-4, 1e-4])
    eye = np.eye(6) * h[None]
    r0, g0 = _resid_batch(packed, z[None], extra)
    chi2 = float(r0[0] @ r0[0]) if g0[0] else np.inf
    if not np.isfinite(chi2):
        return z, chi2
    r = r0[0]
    jac = None
    for _ in range(max_iter):
        if jac is None:
            rows = np.concatenate([z[None] + eye, z[None] - eye])
            rr, gg = _resid_batch(packed, rows, extra)
            if not gg.all():
                break
            jac = ((rr[:6] - rr[6:]) / (2 * h[:, None])).T  # (N, 6)
        hess = jac.T @ jac
        grad = jac.T @ r
        diag = np.diag(np.diag(hess) + 1e-12)
        steps = np.stack([-np.linalg.solve(hess + lam * diag, grad) for lam in _LAMBDAS])
        trial = _chi2_batch(packed, z[None] + steps, extra)
        k = int(np.argmin(trial))
        if not trial[k] < chi2:
            break
        gain = chi2 - trial[k]
        z = z + steps[k]
        chi2 = float(trial[k])
        r = _resid_batch(packed, z[None], extra)[0][0]
        jac = None
        if gain < 1e-3:
            break
    return z, chi2


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
    better: bool = False
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
    population: int = BATCH,
    elite: int = 8,
    n_steps: int = 8,
    lm_steps: int = 30,
    seed: int = 0,
) -> PartnerResult:
    """Predict the partner of ``solution`` and refine both on ``event`` (module docstring)."""
    missing = [k for k in _LENS if k not in solution]
    if missing:
        raise ValueError(f"partner search needs {', '.join(_LENS)}; the solution lacks {', '.join(missing)}")
    sol = {k: float(solution[k]) for k in (*_LENS, "rho") if k in solution}
    pred = predict_partner(sol)
    settings = {"population": population, "elite": elite, "n_steps": n_steps, "lm_steps": lm_steps,
                "seed": seed, "delta_chi2_max": delta_chi2_max}
    if pred is None:
        return PartnerResult(mode=mode, solution=sol, predicted=None, settings=settings,
                             note="no distinct partner: the trajectory crosses the axis at the solution's "
                                  "own caustic (x0 = f(s)) or runs parallel to the axis")
    packed = pack_event(event, pad_to=_pad(event.n_points))
    kw = {"population": population, "elite": elite, "n_steps": n_steps, "lm_steps": lm_steps,
          "packed": packed}
    ref_sol, chi_sol = refine_solution(event, sol, seed=seed, **kw)
    ref_par, chi_par = refine_solution(event, pred, seed=seed + 1, **kw)
    d = chi_par - chi_sol
    dist_pred = abs(math.log(pred["s"] / sol["s"]))
    distinct = abs(math.log(ref_par["s"] / ref_sol["s"])) > 0.5 * dist_pred
    found = bool(math.isfinite(d) and abs(d) < delta_chi2_max and distinct)
    better = bool(math.isfinite(d) and d <= -delta_chi2_max and distinct)
    if not math.isfinite(chi_par):
        note = "the partner's light curve could not be computed (uncertified magnification)"
    elif not distinct:
        note = "the refinement ran back to the solution: no distinct partner"
    elif found:
        note = f"viable partner (|Δχ²| < {delta_chi2_max:g})"
    elif better:
        note = (f"the partner fits much better than the solution (Δχ² ≤ −{delta_chi2_max:g}): the "
                "solution is not the best fit; the samples miss a better solution")
    else:
        note = f"partner disfavoured (Δχ² ≥ {delta_chi2_max:g})"
    return PartnerResult(mode=mode, solution=sol, predicted=pred, refined_solution=ref_sol,
                         refined_partner=ref_par, chi2_solution=chi_sol, chi2_partner=chi_par, delta_chi2=d,
                         distinct=distinct, found=found, better=better, note=note, settings=settings)
