"""Synthetic offset-degenerate pairs built from the relation (shared by the degeneracy tests).

Each case: (name, s_B, q, alpha [deg], x0 [θ_E], expected class). Solution B has s_B; solution A has
``s_A = f⁻¹(2·x0 − f(s_B))``; both cross the binary axis at x0 at the same time (t_× = 0) with the
same q, t_E, alpha. Chosen so that no trajectory crosses a caustic (a point source at a fold makes
the comparison of light curves meaningless): planetary cases pass ``3·√q`` outside the wide
planetary caustic or ``√q`` off the close one's axis point; central/resonant cases pass 0.05–0.1 θ_E
from the central caustic.
"""

from __future__ import annotations

import math

import numpy as np

from mulens_sbi.degeneracy.relation import f_sep, partner_separation, u0_for_crossing

T_E = 20.0

CASES = [
    ("close-wide q=1e-4", 0.8, 1e-4, 90.0, 0.0, "close-wide"),
    ("major q=1e-5", 1.3, 1e-5, 90.0, f_sep(1.3) + 3 * math.sqrt(1e-5), "inner-outer (major-image side)"),
    ("major q=1e-3", 1.3, 1e-3, 90.0, f_sep(1.3) + 3 * math.sqrt(1e-3), "inner-outer (major-image side)"),
    ("major q=1e-2", 1.3, 1e-2, 90.0, f_sep(1.3) + 3 * math.sqrt(1e-2), "inner-outer (major-image side)"),
    ("minor q=1e-5", 0.75, 1e-5, 90.0, f_sep(0.75) + math.sqrt(1e-5), "inner-outer (minor-image side)"),
    ("minor q=1e-4", 0.75, 1e-4, 90.0, f_sep(0.75) + math.sqrt(1e-4), "inner-outer (minor-image side)"),
    ("central q=1e-3", 0.8, 1e-3, 90.0, 0.05, "offset (central caustics)"),
    ("resonant q=1e-3", 0.95, 1e-3, 90.0, 0.1, "offset (resonant caustic)"),
]


def lens(s: float, q: float, alpha: float, x0: float, t_x: float = 0.0) -> dict[str, float]:
    """Parameters crossing the axis at ``x0`` at time ``t_x`` (HJD')."""
    u0 = float(u0_for_crossing(x0, alpha, s, q))
    a = math.radians(alpha)
    return {
        "t_0": t_x + T_E * u0 * math.cos(a) / math.sin(a),
        "u_0": u0,
        "t_E": T_E,
        "s": s,
        "q": q,
        "alpha": alpha,
    }


def pair(s_b: float, q: float, alpha: float, x0: float) -> tuple[dict, dict]:
    """(solution A, solution B) of the relation."""
    s_a = float(partner_separation(s_b, x0))
    return lens(s_a, q, alpha, x0), lens(s_b, q, alpha, x0)


def cloud(p: dict, n: int, rng: np.random.Generator, *, sd_log_s: float, reflect: float = 0.0) -> dict:
    """A Gaussian posterior-like cloud of ``n`` samples around ``p``; a fraction ``reflect`` mirrored
    by (u_0, alpha) → (−u_0, −alpha)."""
    out = {
        "t_0": p["t_0"] + 0.01 * rng.standard_normal(n),
        "u_0": p["u_0"] + 3e-4 * rng.standard_normal(n),
        "t_E": p["t_E"] * np.exp(0.01 * rng.standard_normal(n)),
        "s": p["s"] * np.exp(sd_log_s * rng.standard_normal(n)),
        "q": p["q"] * np.exp(0.1 * rng.standard_normal(n)),
        "alpha": p["alpha"] + 0.3 * rng.standard_normal(n),
    }
    r = rng.random(n) < reflect
    out["u_0"] = np.where(r, -out["u_0"], out["u_0"])
    out["alpha"] = np.mod(np.where(r, -out["alpha"], out["alpha"]), 360.0)
    return out


def two_modes(pa: dict, pb: dict, rng, n=(500, 300), reflect: float = 0.0, sd_log_s: float | None = None):
    """Samples of two modes (equal weights per sample)."""
    sd = sd_log_s if sd_log_s is not None else 0.1 * abs(math.log(pa["s"] / pb["s"]))
    a = cloud(pa, n[0], rng, sd_log_s=sd, reflect=reflect)
    b = cloud(pb, n[1], rng, sd_log_s=sd, reflect=reflect)
    return {k: np.concatenate([a[k], b[k]]) for k in a}
