"""Degeneracy analyzer: posterior modes tested against the offset degeneracy of Zhang, Gaudi & Bloom
(2022), ``f(s_A) + f(s_B) = 2·x0`` with ``f(s) = s − 1/s`` (see ``docs/degeneracy.md``).

* :mod:`.relation` — x0 in our convention, f, the partner separation, the residual (pure numpy).
* :mod:`.modes` — modes of a weighted posterior, reflection copies ``(u_0, alpha) → (−u_0, −alpha)``
  recognised.
* :mod:`.pairs` — the relation tested on a pair of modes, with uncertainty; classification; warnings.
* :mod:`.partner` — predict one solution's partner and refine it with the exact likelihood (Δχ²).
* :mod:`.report` — :func:`analyze` and :class:`DegeneracyReport` (text/markdown repr, JSON, files).
* :mod:`.plots` — caustics with x0, light curves and differences, the s_A–s_B plane.
* :mod:`.command` — :class:`~.command.DegeneracySettings` and :func:`~.command.run_degeneracy`, what
  ``mulens-sbi degeneracy`` calls (imported from there, not re-exported here).
"""

from __future__ import annotations

from mulens_sbi.degeneracy.modes import Mode, find_modes, fold_reflection
from mulens_sbi.degeneracy.pairs import PairResult, compare_modes
from mulens_sbi.degeneracy.partner import PartnerResult, predict_partner, refine_solution, search_partner
from mulens_sbi.degeneracy.relation import (
    axis_crossing,
    crossing_time,
    f_sep,
    inverse_f,
    partner_separation,
    relation_residual,
    u0_for_crossing,
)
from mulens_sbi.degeneracy.report import REPORT_FILES, DegeneracyReport, analyze, read_samples

__all__ = [
    "REPORT_FILES",
    "DegeneracyReport",
    "Mode",
    "PairResult",
    "PartnerResult",
    "analyze",
    "axis_crossing",
    "compare_modes",
    "crossing_time",
    "f_sep",
    "find_modes",
    "fold_reflection",
    "inverse_f",
    "partner_separation",
    "predict_partner",
    "read_samples",
    "refine_solution",
    "relation_residual",
    "search_partner",
    "u0_for_crossing",
]
