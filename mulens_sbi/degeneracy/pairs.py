"""Test a pair of posterior modes against the offset-degeneracy relation and classify it.

For modes A and B, ``M`` paired draws (one from each mode, by weight; fixed seed) give per draw

* ``x0 = (x0_A + x0_B)/2`` — both modes describe one trajectory, so their crossings agree;
* the residual ``r = f(s_A) + f(s_B) − 2·x0`` (θ_E; :mod:`.relation`);
* the relation's prediction ``s_A,pred = f⁻¹(2·x0 − f(s_B))`` and ``Δlog10 s = log10(s_A/s_A,pred)``;
* ``Δlog10 q = log10(q_A/q_B)``.

The residual's uncertainty is the spread of ``r`` over the draws (the samples' uncertainty,
propagated exactly, correlations within each mode included) added in quadrature to a model
tolerance ``3·q`` (the relation holds to zeroth order in q: the on-axis point where a true pair's
magnifications match lies within −1.5q … +0.2q of x0, so ``|r| ≲ 3q``). The relation **holds** when
``|z| = |mean r|/σ < 3``, the mass ratios agree (``|Δlog10 q| < 2·√(σ_q² + 0.15²)``, i.e. within
0.3 dex plus the samples' spread) and the two modes really differ in s. The test is flagged
**uninformative** when the prediction's spread in log10 s exceeds half the modes' separation in
log10 s: then any pair of separations would pass.

Classification (when the relation holds): both s > 1 → *inner–outer, major-image side* (planetary
caustics on the companion's side, x0 > 0); both s < 1 → *inner–outer, minor-image side*; one
close and one wide with x0 consistent with 0 (within 2σ + 3q) → *close–wide*; otherwise *offset*
(with the caustic topologies named: central or resonant). Otherwise *not this degeneracy*.

Warnings: a shallow crossing (``|sin alpha| < sin 20°``: the light curve no longer samples the axis
crossing alone; pairs' light curves differ by ~6% at 15° for q = 1e-4) and a large mass ratio
(q > 0.03: the relation is zeroth order in q).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mulens_sbi.degeneracy.modes import Mode
from mulens_sbi.degeneracy.relation import f_sep, partner_separation
from mulens_sbi.lensing.caustics import CLOSE, WIDE, close_boundary, wide_boundary

__all__ = [
    "CLASSES",
    "LARGE_Q",
    "PairResult",
    "SHALLOW_DEG",
    "compare_modes",
]

#: classification labels
CLASSES = (
    "close-wide",
    "inner-outer (major-image side)",
    "inner-outer (minor-image side)",
    "offset",
    "not this degeneracy",
)
#: |sin alpha| below sin(SHALLOW_DEG) is a shallow crossing
SHALLOW_DEG = 20.0
#: mass ratios above this get a warning
LARGE_Q = 0.03
#: z beyond which the relation fails
Z_MAX = 3.0
#: tolerance (dex, 1σ) on the equality of q
Q_TOL_DEX = 0.15


@dataclass
class PairResult:
    """The relation tested on modes ``a`` and ``b`` (indices into the report's modes)."""

    a: int
    b: int
    s_a: float
    s_b: float
    s_a_interval: tuple[float, float]
    s_b_interval: tuple[float, float]
    x0: float
    x0_err: float
    x0_difference: float
    s_a_predicted: float
    s_a_predicted_interval: tuple[float, float]
    residual: float
    residual_err_samples: float
    residual_err_model: float
    z: float
    dlog10_s: float
    dlog10_q: float
    dlog10_q_err: float
    holds: bool
    informative: bool
    classification: str
    topologies: tuple[str, str]
    warnings: list[str] = field(default_factory=list)

    @property
    def residual_err(self) -> float:
        return math.hypot(self.residual_err_samples, self.residual_err_model)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["residual_err"] = self.residual_err
        return d

    def line(self) -> str:
        """One line for the text report."""
        return (f"modes {self.a + 1}-{self.b + 1}: {self.classification}; "
                f"s = {self.s_a:.4g} & {self.s_b:.4g}, "
                f"x0 = {self.x0:+.4f} ± {self.x0_err:.4f}, f(s_a)+f(s_b)-2x0 = {self.residual:+.4f} ± "
                f"{self.residual_err:.4f} (z = {self.z:+.2f}), Δlog10 q = {self.dlog10_q:+.2f} ± "
                f"{self.dlog10_q_err:.2f}" + ("" if self.informative else " [uninformative]"))


def _topology_name(s: float, q: float) -> str:
    code = CLOSE if s < float(close_boundary(q)) else (WIDE if s > float(wide_boundary(q)) else 1)
    return {CLOSE: "close", WIDE: "wide"}.get(code, "resonant")


def _q16_84(x):
    lo, hi = np.quantile(x, [0.16, 0.84])
    return float(lo), float(hi)


def _draws(mode: Mode, m: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(mode.n_samples, size=m, replace=True, p=mode.weights)


def compare_modes(
    mode_a: Mode, mode_b: Mode, a: int, b: int, *, n_draws: int = 4000, seed: int = 0
) -> PairResult:
    """Test the relation on two modes (see the module docstring)."""
    rng = np.random.default_rng(seed)
    ia, ib = _draws(mode_a, n_draws, rng), _draws(mode_b, n_draws, rng)
    sa, sb = mode_a.samples["s"][ia], mode_b.samples["s"][ib]
    qa, qb = mode_a.samples["q"][ia], mode_b.samples["q"][ib]
    x0a, x0b = mode_a.x0[ia], mode_b.x0[ib]
    x0 = 0.5 * (x0a + x0b)
    r = f_sep(sa) + f_sep(sb) - 2.0 * x0
    pred = partner_separation(sb, x0)
    dls = np.log10(sa) - np.log10(pred)
    dlq = np.log10(qa) - np.log10(qb)
    q_bar = float(10 ** np.median(0.5 * (np.log10(qa) + np.log10(qb))))
    r_mean, r_sd = float(np.mean(r)), float(np.std(r))
    err_model = 3.0 * q_bar
    z = r_mean / math.hypot(r_sd, err_model)
    dlq_mean, dlq_sd = float(np.mean(dlq)), float(np.std(dlq))
    q_ok = abs(dlq_mean) < 2.0 * math.hypot(dlq_sd, Q_TOL_DEX)
    ls_a, ls_b = np.log10(sa), np.log10(sb)
    sep = abs(float(np.median(ls_a) - np.median(ls_b)))
    sep_err = math.hypot(float(np.std(ls_a)), float(np.std(ls_b)))
    distinct = sep > max(2.0 * sep_err, 1e-4)
    informative = float(np.std(np.log10(pred))) < 0.5 * sep
    holds = bool(abs(z) < Z_MAX and q_ok and distinct)
    s_a_med, s_b_med = float(np.median(sa)), float(np.median(sb))
    x0_med, x0_sd = float(np.median(x0)), float(np.std(x0))
    topo = (_topology_name(s_a_med, float(np.median(qa))), _topology_name(s_b_med, float(np.median(qb))))
    if not distinct:
        cls = "not this degeneracy"
        why = "the modes do not differ in s"
    elif not holds:
        cls = "not this degeneracy"
        reasons = [f"relation off by {abs(z):.1f} σ"] if abs(z) >= Z_MAX else []
        if not q_ok:
            reasons.append(f"q differs by {dlq_mean:+.2f} dex")
        why = "; ".join(reasons)
    elif s_a_med > 1 and s_b_med > 1:
        cls, why = "inner-outer (major-image side)", ""
    elif s_a_med < 1 and s_b_med < 1:
        cls, why = "inner-outer (minor-image side)", ""
    elif abs(x0_med) <= 2.0 * x0_sd + err_model:
        cls, why = "close-wide", ""
    else:
        cls = "offset"
        why = "resonant caustic" if "resonant" in topo else "central caustics"
    warn = []
    alphas = np.concatenate([mode_a.samples["alpha"][ia], mode_b.samples["alpha"][ib]])
    sin_med = float(np.median(np.abs(np.sin(np.deg2rad(alphas)))))
    if sin_med < math.sin(math.radians(SHALLOW_DEG)):
        warn.append(f"shallow crossing (|sin alpha| = {sin_med:.2f}, alpha within {SHALLOW_DEG:g}° of the "
                    "binary axis): the relation is a statement about the axis crossing and weakens here")
    if q_bar > LARGE_Q:
        warn.append(f"large mass ratio (q = {q_bar:.3g} > {LARGE_Q:g}): the relation holds only to zeroth "
                    "order in q")
    if not informative and distinct:
        warn.append("uninformative: the samples' spread allows almost any pair of separations")
    return PairResult(
        a=a, b=b, s_a=s_a_med, s_b=s_b_med, s_a_interval=_q16_84(sa), s_b_interval=_q16_84(sb),
        x0=x0_med, x0_err=x0_sd, x0_difference=float(np.median(x0a - x0b)),
        s_a_predicted=float(np.median(pred)), s_a_predicted_interval=_q16_84(pred),
        residual=r_mean, residual_err_samples=r_sd, residual_err_model=err_model, z=float(z),
        dlog10_s=float(np.median(dls)), dlog10_q=dlq_mean, dlog10_q_err=dlq_sd, holds=holds,
        informative=informative, classification=cls + (f" ({why})" if why else ""), topologies=topo,
        warnings=warn,
    )
