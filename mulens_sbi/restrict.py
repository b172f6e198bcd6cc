"""Restricted priors: the posterior given that some parameters lie in a sub-range of the prior.

An astronomer often asks a narrower question than the model's prior: *if* the companion is a
planet (q < 0.01), where are s and q? *if* the lens is a close binary (s < 1), ...? Under a prior
restricted to a box B inside the training prior, p_B(θ | x) ∝ p(x | θ) p(θ) 1_B(θ), which is the
full posterior truncated to B and renormalized. So the amortized posterior answers it by rejection
(:meth:`mulens_sbi.npe.posterior.Posterior.sample_batched` with ``within=``), and the fraction of
in-prior draws inside B (``info["mass_within"]``) estimates the flow's posterior probability of B.
Importance sampling and NUTS use the same restricted prior (:func:`restrict_priors`), so the
likelihood check answers the same question.

A restriction is ``{name: (low, high)}`` in physical units (``t_E`` days, ``alpha`` degrees), either
bound ``None`` for the prior's own; on the command line ``NAME=LOW:HIGH`` with either side empty
(``q=:0.01``). ``t_0`` cannot be restricted (the network sees it relative to the peak estimate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

__all__ = ["RESTRICTABLE", "RESTRICT_ROUNDS", "parse_restrict", "format_restrict", "restriction_box",
           "restrict_priors", "describe_restrict", "no_sample_message"]

#: parameters a restriction may name (physical names of the amortized models)
RESTRICTABLE = ("u_0", "t_E", "s", "q", "alpha")
#: rounds of n flow draws for a restricted prior (fit, catalog): a range holding less than 1/rounds
#: (2%) of the flow's mass leaves some samples missing, less than about 1/(rounds n) leaves none
RESTRICT_ROUNDS = 50

Restriction = Mapping[str, tuple[float | None, float | None]]


def _number(text: str, item: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--restrict {item!r}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"--restrict {item!r}: bounds must be finite, got {text!r}")
    return v


def parse_restrict(items: Sequence[str]) -> dict[str, tuple[float | None, float | None]]:
    """``["q=:0.01", "s=1:"]`` -> ``{"q": (None, 0.01), "s": (1.0, None)}``; a clear error for a bad
    item (unknown parameter, not ``NAME=LOW:HIGH``, non-numeric, empty range, a name given twice)."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for item in items:
        name, eq, rng = item.partition("=")
        name = name.strip()
        if not eq or rng.count(":") != 1:
            raise ValueError(f"--restrict {item!r}: expected NAME=LOW:HIGH with either side empty, "
                             "e.g. q=:0.01")
        if name not in RESTRICTABLE:
            raise ValueError(f"--restrict {item!r}: parameter {name!r} cannot be restricted; "
                             f"allowed: {', '.join(RESTRICTABLE)}")
        if name in out:
            raise ValueError(f"--restrict {item!r}: {name} is restricted twice")
        lo_s, hi_s = rng.split(":")
        lo, hi = _number(lo_s, item), _number(hi_s, item)
        if lo is None and hi is None:
            raise ValueError(f"--restrict {item!r}: give at least one bound")
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"--restrict {item!r}: need LOW < HIGH")
        out[name] = (lo, hi)
    return out


def format_restrict(restrict: Restriction) -> tuple[str, ...]:
    """``{"q": (None, 0.01), "s": (1.0, None)}`` -> ``("q=:0.01", "s=1.0:")``: the command-line items
    that :func:`parse_restrict` reads back to the same ranges (bounds written with ``repr``, exact)."""
    def bound(v) -> str:
        return "" if v is None else repr(float(v))

    return tuple(f"{name}={bound(lo)}:{bound(hi)}" for name, (lo, hi) in restrict.items())


def _resolved(name: str, rng, prior_lo: float, prior_hi: float) -> tuple[float, float]:
    """(low, high) of one restriction with ``None`` filled from the prior, checked to lie inside it."""
    if name not in RESTRICTABLE:
        raise ValueError(f"restrict: parameter {name!r} cannot be restricted; "
                         f"allowed: {', '.join(RESTRICTABLE)}")
    try:
        lo, hi = rng
    except (TypeError, ValueError):
        raise ValueError(f"restrict: {name} needs a (low, high) pair, got {rng!r}") from None
    if lo is None and hi is None:
        raise ValueError(f"restrict: {name} needs at least one bound (low or high)")
    lo = prior_lo if lo is None else float(lo)
    hi = prior_hi if hi is None else float(hi)
    if not (prior_lo <= lo < hi <= prior_hi):
        raise ValueError(f"restrict: {name} range [{lo:g}, {hi:g}] must be non-empty and inside the model's "
                         f"prior [{prior_lo:g}, {prior_hi:g}]")
    return lo, hi


def restriction_box(space, restrict: Restriction) -> tuple[np.ndarray, np.ndarray]:
    """The ``within`` box (lower, upper), in the order of ``space.names``, of a restriction; the
    other parameters keep the prior's bounds."""
    lo = np.asarray(space.lower, dtype=np.float64).copy()
    hi = np.asarray(space.upper, dtype=np.float64).copy()
    names = list(space.names)
    for name, rng in restrict.items():
        if name not in RESTRICTABLE:
            raise ValueError(f"restrict: parameter {name!r} cannot be restricted; "
                             f"allowed: {', '.join(RESTRICTABLE)}")
        if name not in names:
            raise ValueError(f"restrict: the model has no parameter {name!r} (it has {', '.join(names)})")
        j = names.index(name)
        lo[j], hi[j] = _resolved(name, rng, lo[j], hi[j])
    return lo, hi


def restrict_priors(priors: Mapping, restrict: Restriction) -> dict:
    """:func:`mulens_sbi.inference.importance.parse_priors` objects with the restricted ranges: the same
    distribution (uniform or log-uniform) on the narrower interval."""
    out = dict(priors)
    for name, rng in restrict.items():
        p = out.get(name)
        if p is None or p.dist == "fixed":
            raise ValueError(f"restrict: {name} has no uniform or log-uniform prior to restrict")
        lo, hi = _resolved(name, rng, float(p.low), float(p.high))
        out[name] = replace(p, low=lo, high=hi)
    return out


def describe_restrict(restrict: Restriction) -> str:
    """Human-readable restriction, e.g. ``"q ≤ 0.01, 1 ≤ s"``."""
    parts = []
    for name, (lo, hi) in restrict.items():
        if lo is not None and hi is not None:
            parts.append(f"{lo:g} ≤ {name} ≤ {hi:g}")
        elif hi is not None:
            parts.append(f"{name} ≤ {hi:g}")
        else:
            parts.append(f"{lo:g} ≤ {name}")
    return ", ".join(parts)


def no_sample_message(restrict: Restriction, n: int, rounds: int = RESTRICT_ROUNDS) -> str:
    """The error when ``rounds`` rounds of ``n`` flow draws left no sample inside the restriction."""
    return (f"no flow sample inside the restricted range {describe_restrict(restrict)} in {rounds} rounds "
            f"of {n} draws (the flow gives it less than about {1 / (rounds * n):.1g} of its mass)")
