"""Physical parameters <-> the standardized space the network works in.

For parameter i with elementwise transform T_i (identity, log, log10 or logit) and standardization
(loc_i, scale_i):

    z_i = (T_i(theta_i) - loc_i) / scale_i          (network space)

``to_network``/``to_physical`` are pure, jittable and broadcast over leading axes (..., D).
``log_det_to_network(theta)`` = sum_i log|dz_i/dtheta_i|, so a density in network space converts to
physical units as ``log p(theta) = log q(z) + log_det_to_network(theta)``.

Bounds are physical prior bounds (may be infinite); they are used by ``in_bounds`` (rejection of
leaked samples), by ``check`` (host-side validation with an error naming the parameter) and by
``logit`` transforms, which map (lower, upper) onto R and need both bounds finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["TRANSFORMS", "ParameterSpace"]

TRANSFORMS = ("identity", "log", "log10", "logit")
_LN10 = math.log(10.0)


def _fwd(kind: str, x, lo: float, hi: float):
    if kind == "identity":
        return x
    if kind == "log":
        return jnp.log(x)
    if kind == "log10":
        return jnp.log10(x)
    u = (x - lo) / (hi - lo)
    return jnp.log(u) - jnp.log1p(-u)


def _inv(kind: str, y, lo: float, hi: float):
    if kind == "identity":
        return y
    if kind == "log":
        return jnp.exp(y)
    if kind == "log10":
        return jnp.exp(y * _LN10)
    return lo + (hi - lo) * (1.0 / (1.0 + jnp.exp(-y)))


def _logdet_fwd(kind: str, x, lo: float, hi: float):
    """log|dT/dx| elementwise."""
    if kind == "identity":
        return jnp.zeros_like(x)
    if kind == "log":
        return -jnp.log(x)
    if kind == "log10":
        return -jnp.log(x) - math.log(_LN10)
    return math.log(hi - lo) - jnp.log(x - lo) - jnp.log(hi - x)


@dataclass(frozen=True)
class ParameterSpace:
    """Names, transforms, prior bounds and standardization of the inferred parameters.

    Attributes:
        names: parameter names, in the order of the last axis of theta.
        transforms: one of ``TRANSFORMS`` per parameter.
        lower, upper: physical prior bounds (``-inf``/``inf`` allowed except for ``logit``; ``log``
            and ``log10`` need ``lower >= 0``).
        loc, scale: standardization in transformed space (scale > 0).
    """

    names: tuple[str, ...]
    transforms: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    loc: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        d = len(self.names)
        if d == 0:
            raise ValueError("ParameterSpace needs at least one parameter")
        if len(set(self.names)) != d:
            raise ValueError(f"ParameterSpace.names must be unique, got {self.names}")
        for fname in ("transforms", "lower", "upper", "loc", "scale"):
            if len(getattr(self, fname)) != d:
                raise ValueError(f"ParameterSpace.{fname} has length {len(getattr(self, fname))}, "
                                 f"expected {d} (one per name)")
        for n, t, lo, hi, sc, lc in zip(self.names, self.transforms, self.lower, self.upper, self.scale,
                                        self.loc, strict=True):
            if t not in TRANSFORMS:
                raise ValueError(f"parameter {n!r}: unknown transform {t!r}; allowed: {TRANSFORMS}")
            if not lo < hi or math.isnan(lo) or math.isnan(hi):
                raise ValueError(f"parameter {n!r}: need lower < upper, got [{lo}, {hi}]")
            if t in ("log", "log10") and lo < 0:
                raise ValueError(f"parameter {n!r}: transform {t!r} needs lower >= 0, got {lo}")
            if t == "logit" and not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"parameter {n!r}: transform 'logit' needs finite bounds, got [{lo}, {hi}]")
            if not (math.isfinite(sc) and sc > 0):
                raise ValueError(f"parameter {n!r}: scale must be finite and > 0, got {sc}")
            if not math.isfinite(lc):
                raise ValueError(f"parameter {n!r}: loc must be finite, got {lc}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def create(cls, names: Sequence[str], transforms: Sequence[str] | None = None,
               lower: Sequence[float] | None = None, upper: Sequence[float] | None = None,
               loc: Sequence[float] | None = None, scale: Sequence[float] | None = None) -> ParameterSpace:
        """Build a space; missing loc/scale come from the bounds when both are finite in transformed
        space (centre, and the std of a uniform over them: width/sqrt(12)), else (0, 1)."""
        d = len(names)
        transforms = tuple(transforms) if transforms is not None else ("identity",) * d
        lower = tuple(float(v) for v in lower) if lower is not None else (-math.inf,) * d
        upper = tuple(float(v) for v in upper) if upper is not None else (math.inf,) * d
        if loc is None or scale is None:
            lc, sc = [], []
            for t, lo, hi in zip(transforms, lower, upper, strict=False):
                if t == "logit":
                    lc.append(0.0)
                    sc.append(1.8138)  # std of the logistic distribution = pi/sqrt(3)
                    continue
                with np.errstate(divide="ignore", invalid="ignore"):
                    a = float(_fwd(t, np.float64(lo), lo, hi)) if (lo > 0 or t == "identity") else -math.inf
                    b = float(_fwd(t, np.float64(hi), lo, hi))
                if math.isfinite(a) and math.isfinite(b):
                    lc.append(0.5 * (a + b))
                    sc.append((b - a) / math.sqrt(12.0))
                else:
                    lc.append(0.0)
                    sc.append(1.0)
            loc = tuple(lc) if loc is None else loc
            scale = tuple(sc) if scale is None else scale
        return cls(tuple(names), tuple(transforms), lower, upper, tuple(float(v) for v in loc),
                   tuple(float(v) for v in scale))

    def standardized_from_samples(self, theta: np.ndarray) -> ParameterSpace:
        """A copy whose loc/scale are the mean/std of ``theta`` (physical, shape (n, D)) after the
        transforms; e.g. fitted on prior draws."""
        theta = np.asarray(theta, dtype=np.float64)
        self.check(theta)
        y = np.asarray(self.transform(theta))
        sd = y.std(axis=0)
        if np.any(sd <= 0):
            bad = [n for n, s in zip(self.names, sd, strict=True) if s <= 0]
            raise ValueError(f"cannot standardize: parameter(s) {bad} are constant in the samples")
        return ParameterSpace(self.names, self.transforms, self.lower, self.upper,
                              tuple(float(v) for v in y.mean(axis=0)), tuple(float(v) for v in sd))

    # ------------------------------------------------------------------ maps
    @property
    def dim(self) -> int:
        return len(self.names)

    def transform(self, theta):
        """Physical -> transformed (before standardization), (..., D)."""
        theta = jnp.asarray(theta)
        cols = [_fwd(t, theta[..., i], lo, hi) for i, (t, lo, hi)
                in enumerate(zip(self.transforms, self.lower, self.upper, strict=True))]
        return jnp.stack(cols, axis=-1)

    def to_network(self, theta):
        """Physical theta (..., D) -> standardized network space z (..., D)."""
        y = self.transform(theta)
        loc = jnp.asarray(self.loc, dtype=y.dtype)
        scale = jnp.asarray(self.scale, dtype=y.dtype)
        return (y - loc) / scale

    def to_physical(self, z):
        """Network space z (..., D) -> physical theta (..., D)."""
        z = jnp.asarray(z)
        y = z * jnp.asarray(self.scale, dtype=z.dtype) + jnp.asarray(self.loc, dtype=z.dtype)
        cols = [_inv(t, y[..., i], lo, hi) for i, (t, lo, hi)
                in enumerate(zip(self.transforms, self.lower, self.upper, strict=True))]
        return jnp.stack(cols, axis=-1)

    def log_det_to_network(self, theta):
        """sum_i log|dz_i/dtheta_i| at physical theta (...,), for densities: p(theta) = q(z)·|dz/dθ|."""
        theta = jnp.asarray(theta)
        terms = [_logdet_fwd(t, theta[..., i], lo, hi) - math.log(sc) for i, (t, lo, hi, sc)
                 in enumerate(zip(self.transforms, self.lower, self.upper, self.scale, strict=True))]
        return sum(terms[1:], terms[0])

    def in_bounds(self, theta):
        """Boolean (...,): all parameters finite and inside [lower, upper] (inclusive)."""
        theta = jnp.asarray(theta)
        lo = jnp.asarray(self.lower, dtype=theta.dtype)
        hi = jnp.asarray(self.upper, dtype=theta.dtype)
        ok = jnp.isfinite(theta) & (theta >= lo) & (theta <= hi)
        return jnp.all(ok, axis=-1)

    def check(self, theta) -> None:
        """Host-side validation: raise ``ValueError`` naming the first parameter that is not finite,
        outside its bounds or outside its transform's domain."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim == 0 or theta.shape[-1] != self.dim:
            raise ValueError(f"theta must have last axis of size {self.dim} ({', '.join(self.names)}), "
                             f"got shape {theta.shape}")
        for i, (n, t, lo, hi) in enumerate(zip(self.names, self.transforms, self.lower, self.upper,
                                               strict=True)):
            v = theta[..., i]
            bad = ~np.isfinite(v) | (v < lo) | (v > hi)
            if t in ("log", "log10"):
                bad |= v <= 0
            if t == "logit":
                bad |= (v <= lo) | (v >= hi)
            if np.any(bad):
                first = float(v.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]])
                op = "<" if t in ("log", "log10", "logit") and lo >= 0 else "<="
                lo_s = "0" if t in ("log", "log10") and lo <= 0 else f"{lo:g}"
                hi_op = "<" if t == "logit" else "<="
                raise ValueError(f"parameter {n!r} = {first:g} outside allowed range "
                                 f"{lo_s} {op} {n} {hi_op} {hi:g} (transform {t!r})")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict; infinite bounds are written as null."""
        def enc(v: float) -> float | None:
            return None if math.isinf(v) else float(v)

        return {
            "names": list(self.names),
            "transforms": list(self.transforms),
            "lower": [enc(v) for v in self.lower],
            "upper": [enc(v) for v in self.upper],
            "loc": list(self.loc),
            "scale": list(self.scale),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParameterSpace:
        lower = tuple(-math.inf if v is None else float(v) for v in d["lower"])
        upper = tuple(math.inf if v is None else float(v) for v in d["upper"])
        return cls(tuple(d["names"]), tuple(d["transforms"]), lower, upper,
                   tuple(float(v) for v in d["loc"]), tuple(float(v) for v in d["scale"]))
