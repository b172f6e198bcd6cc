"""Parameter names, allowed ranges and validation.

Conventions (MulensModel v3): ``t_0`` in HJD' = HJD − 2450000 (days), ``u_0`` in θ_E (signed),
``t_E`` in days, ``s`` in θ_E, ``q`` = companion/primary mass, ``alpha`` in degrees, ``rho`` in θ_E,
``limb_darkening`` the linear limb-darkening coefficient Γ (MulensModel's ``gamma``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

#: physical parameters of a binary-lens point-source model, in the order the shipped models use
PHYSICAL_NAMES = ("t_0", "u_0", "t_E", "s", "q", "alpha")

#: allowed open/closed ranges per parameter: (low, high, low_inclusive, high_inclusive)
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "t_0": (-math.inf, math.inf, False, False),
    "u_0": (-math.inf, math.inf, False, False),
    "t_E": (0.0, math.inf, False, False),
    "s": (0.0, math.inf, False, False),
    "q": (0.0, math.inf, False, False),
    "alpha": (-math.inf, math.inf, False, False),
    "rho": (0.0, math.inf, True, False),
    "limb_darkening": (0.0, 1.0, True, True),
}


def describe_range(name: str) -> str:
    """Human-readable allowed range, e.g. ``'0 < t_E < inf'``."""
    lo, hi, lo_in, hi_in = RANGES[name]
    left = f"{lo:g} {'<=' if lo_in else '<'} " if math.isfinite(lo) else ""
    right = f" {'<=' if hi_in else '<'} {hi:g}" if math.isfinite(hi) else ""
    return f"{left}{name}{right} (finite)" if not left and not right else f"{left}{name}{right}"


def in_range(name: str, value: np.ndarray) -> np.ndarray:
    """Boolean mask: finite and inside the allowed range of ``name``."""
    lo, hi, lo_in, hi_in = RANGES[name]
    v = np.asarray(value, dtype=float)
    ok = np.isfinite(v)
    with np.errstate(invalid="ignore"):
        ok &= (v >= lo) if lo_in else (v > lo)
        ok &= (v <= hi) if hi_in else (v < hi)
    return ok


def check_parameters(params: Mapping[str, object]) -> None:
    """Raise ``ValueError`` naming the first parameter that is NaN, infinite or out of range.

    Parameters that are ``None`` are skipped (not used by the model).
    """
    for name, value in params.items():
        if value is None:
            continue
        if name not in RANGES:
            raise ValueError(f"unknown parameter {name!r}; known: {', '.join(RANGES)}")
        arr = np.asarray(value, dtype=float)
        bad = ~in_range(name, arr)
        if np.any(bad):
            first = float(arr.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]])
            raise ValueError(
                f"parameter {name}={first!r} is outside its allowed range: {describe_range(name)}"
            )
