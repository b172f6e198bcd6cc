"""Converters between mulens-sbi's parameter convention and VBMicrolensing's and pyLIMA's.

Our convention (MulensModel v3, see ``docs/conventions.md``): ``t_0`` (HJD' = HJD − 2450000, days),
``u_0`` (θ_E, signed), ``t_E`` (days), ``s`` (θ_E), ``q`` (companion/primary), ``alpha`` (degrees),
``rho`` (θ_E); source at ``x = τ·cos α − u_0·sin α``, ``y = τ·sin α + u_0·cos α`` with
``τ = (t − t_0)/t_E``, in the centre-of-mass frame with the primary at ``x = +s·q/(1+q)`` and the
companion at ``x = −s/(1+q)``. Flux ``F = f_s·A + f_b`` on MulensModel's magnitude zero point 22.

The mappings below were established numerically (``tests/test_conventions.py`` checks them against
VBMicrolensing 5.6 and pyLIMA 1.9.8 light curves and source positions):

* VBMicrolensing ``BinaryMag0(s, q, y1, y2)``: ``y1 = −x``, ``y2 = y`` (its frame is ours mirrored
  in x: primary at ``y1 = −s·q/(1+q)``).
* VBMicrolensing ``BinaryLightCurve(params, times)`` with ``params = [log_s, log_q, u0, alpha,
  log_rho, log_tE, t0]`` (natural logarithms, alpha in radians) puts the source at
  ``y1 = −(τ·cos α_V − u0_V·sin α_V)``, ``y2 = −(τ·sin α_V + u0_V·cos α_V)``; it reproduces our
  trajectory exactly when ``u0_V = −u_0`` and ``α_V = −alpha`` (radians). (``(u0_V, α_V) = (u_0,
  alpha)`` gives the mirror-image trajectory ``y → −y``, which has the same magnification: a light
  curve alone cannot tell the two apart, the source positions can.)
* pyLIMA (PSBL/USBL/FSBL, ``origin=['center_of_mass', [0, 0]]``, the default) computes the same
  source position as ``BinaryLightCurve`` from ``(t0, u0, tE, separation, mass_ratio, alpha[rad])``
  and passes it to ``BinaryMag0``: so again ``u0_P = −u_0``, ``alpha_P = −alpha`` in radians,
  ``separation = s``, ``mass_ratio = q``, ``rho`` unchanged. pyLIMA's other origins (``'primary'``,
  caustic-centred) shift t0/u0 by O(q) and are not handled here.
* pyLIMA fluxes use the zero point 27.4: ``F_P = F · 10^{0.4·(27.4 − 22)}``; its blending is one of
  ``gblend = f_b/f_s`` (dimensionless), ``fblend = f_b`` or ``ftotal = f_s + f_b`` (pyLIMA 1.9's
  default), each with ``fsource = f_s`` on its zero point; keys carry the telescope name
  (``fsource_<name>``).

All functions take and return dicts of scalars or arrays (``jax.numpy`` arithmetic, so they work on
NumPy and JAX arrays and under ``jit``). Alpha is reduced to [0, 360) degrees or [0, 2π) radians.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
from jax import Array

#: MulensModel's magnitude zero point (ours): ``mag = 22 − 2.5·log10(F)``
MULENSMODEL_ZERO_POINT = 22.0
#: pyLIMA's magnitude zero point (``pyLIMA.toolbox.brightness_transformation.ZERO_POINT``)
PYLIMA_ZERO_POINT = 27.4
#: HJD' = HJD − HJD_OFFSET (our time axis); pyLIMA works in full JD/HJD
HJD_OFFSET = 2450000.0
#: order of VBMicrolensing's ``BinaryLightCurve`` parameter list
VBM_LIGHTCURVE_ORDER = ("log_s", "log_q", "u0", "alpha", "log_rho", "log_tE", "t0")

_TWO_PI = 2.0 * jnp.pi


def _wrap_deg(a: Array) -> Array:
    return jnp.mod(a, 360.0)


def _wrap_rad(a: Array) -> Array:
    return jnp.mod(a, _TWO_PI)


# ----------------------------------------------------------------------------------- magnitudes


def flux_to_mag(flux: Array, zero_point: float = MULENSMODEL_ZERO_POINT) -> Array:
    """Magnitude ``zero_point − 2.5·log10(flux)``."""
    return zero_point - 2.5 * jnp.log10(flux)


def mag_to_flux(mag: Array, zero_point: float = MULENSMODEL_ZERO_POINT) -> Array:
    """Flux ``10^{0.4·(zero_point − mag)}``."""
    return 10.0 ** (0.4 * (zero_point - mag))


def rescale_flux(flux: Array, from_zero_point: float, to_zero_point: float) -> Array:
    """The same brightness expressed on another zero point: ``flux·10^{0.4·(to − from)}``."""
    return flux * 10.0 ** (0.4 * (to_zero_point - from_zero_point))


# ------------------------------------------------------------------------------- VBMicrolensing


def to_vbm_position(x: Array, y: Array) -> tuple[Array, Array]:
    """Our centre-of-mass (x, y) → VBMicrolensing ``BinaryMag0`` arguments ``(y1, y2) = (−x, y)``."""
    return -x, y


def from_vbm_position(y1: Array, y2: Array) -> tuple[Array, Array]:
    """VBMicrolensing ``(y1, y2)`` → our (x, y) = ``(−y1, y2)``."""
    return -y1, y2


def to_vbm(params: Mapping[str, Array]) -> dict[str, Array]:
    """Our parameters → VBMicrolensing ``BinaryLightCurve`` parameters.

    Args:
        params: ``t_0`` (days), ``u_0`` (θ_E), ``t_E`` (days), ``s`` (θ_E), ``q``, ``alpha``
            (degrees); optional ``rho`` (θ_E).

    Returns:
        ``log_s = ln s``, ``log_q = ln q``, ``u0 = −u_0``, ``alpha = −alpha`` (radians, in [0, 2π)),
        ``log_tE = ln t_E``, ``t0 = t_0`` (same time axis), and ``log_rho = ln rho`` when given.
        Use :func:`vbm_param_list` for the positional list.
    """
    out = {
        "log_s": jnp.log(params["s"]),
        "log_q": jnp.log(params["q"]),
        "u0": -jnp.asarray(params["u_0"]),
        "alpha": _wrap_rad(-jnp.deg2rad(params["alpha"])),
        "log_tE": jnp.log(params["t_E"]),
        "t0": jnp.asarray(params["t_0"]),
    }
    if params.get("rho") is not None:
        out["log_rho"] = jnp.log(params["rho"])
    return out


def from_vbm(vbm: Mapping[str, Array]) -> dict[str, Array]:
    """VBMicrolensing ``BinaryLightCurve`` parameters (see :func:`to_vbm`) → ours (alpha in [0, 360))."""
    out = {
        "t_0": jnp.asarray(vbm["t0"]),
        "u_0": -jnp.asarray(vbm["u0"]),
        "t_E": jnp.exp(vbm["log_tE"]),
        "s": jnp.exp(vbm["log_s"]),
        "q": jnp.exp(vbm["log_q"]),
        "alpha": _wrap_deg(-jnp.rad2deg(vbm["alpha"])),
    }
    if vbm.get("log_rho") is not None:
        out["rho"] = jnp.exp(vbm["log_rho"])
    return out


def vbm_param_list(vbm: Mapping[str, float], log_rho: float | None = None) -> list[float]:
    """Positional list for ``BinaryLightCurve`` in :data:`VBM_LIGHTCURVE_ORDER` (scalars only).

    ``log_rho`` fills in a missing source size (VBMicrolensing always needs one; a point source is
    approached with a tiny ρ).
    """
    d = dict(vbm)
    if "log_rho" not in d:
        if log_rho is None:
            raise ValueError("VBMicrolensing's BinaryLightCurve needs log_rho: give rho or log_rho")
        d["log_rho"] = log_rho
    return [float(d[k]) for k in VBM_LIGHTCURVE_ORDER]


# ----------------------------------------------------------------------------------------- pyLIMA

_BLENDS = ("gblend", "fblend", "ftotal")


def to_pylima(
    params: Mapping[str, Array],
    telescope: str | None = None,
    blend: str = "gblend",
    time_offset: float = 0.0,
) -> dict[str, Array]:
    """Our parameters → pyLIMA's (centre-of-mass origin).

    Args:
        params: ``t_0, u_0, t_E`` and, for a binary lens, ``s, q, alpha`` (degrees); optional ``rho``;
            optional fluxes ``f_s`` and ``f_b`` on our zero point 22 (both or neither).
        telescope: pyLIMA telescope name; flux keys become ``fsource_<name>`` etc. (required when
            fluxes are given).
        blend: pyLIMA's ``blend_flux_parameter``: ``'gblend'`` (``f_b/f_s``), ``'fblend'`` or
            ``'ftotal'``.
        time_offset: added to ``t_0`` (use :data:`HJD_OFFSET` when the pyLIMA telescopes hold full
            HJD and our ``t_0`` is HJD').

    Returns:
        ``t0, u0 (= −u_0), tE``, and ``separation (= s), mass_ratio (= q), alpha (= −alpha, radians
        in [0, 2π))``, ``rho``, fluxes on pyLIMA's zero point 27.4, as present in the input.
    """
    if blend not in _BLENDS:
        raise ValueError(f"blend must be one of {_BLENDS}, got {blend!r}")
    out: dict[str, Array] = {
        "t0": jnp.asarray(params["t_0"]) + time_offset,
        "u0": -jnp.asarray(params["u_0"]),
        "tE": jnp.asarray(params["t_E"]),
    }
    if params.get("s") is not None:
        out["separation"] = jnp.asarray(params["s"])
        out["mass_ratio"] = jnp.asarray(params["q"])
        out["alpha"] = _wrap_rad(-jnp.deg2rad(params["alpha"]))
    if params.get("rho") is not None:
        out["rho"] = jnp.asarray(params["rho"])
    if ("f_s" in params) != ("f_b" in params):
        raise ValueError("give both f_s and f_b, or neither")
    if "f_s" in params:
        if telescope is None:
            raise ValueError("pyLIMA flux parameters are per telescope: give telescope=<name>")
        f_s = rescale_flux(jnp.asarray(params["f_s"]), MULENSMODEL_ZERO_POINT, PYLIMA_ZERO_POINT)
        f_b = rescale_flux(jnp.asarray(params["f_b"]), MULENSMODEL_ZERO_POINT, PYLIMA_ZERO_POINT)
        out[f"fsource_{telescope}"] = f_s
        if blend == "gblend":
            out[f"gblend_{telescope}"] = f_b / f_s
        elif blend == "fblend":
            out[f"fblend_{telescope}"] = f_b
        else:
            out[f"ftotal_{telescope}"] = f_s + f_b
    return out


def from_pylima(pylima: Mapping[str, Array], telescope: str | None = None, time_offset: float = 0.0
                ) -> dict[str, Array]:
    """pyLIMA parameters (centre-of-mass origin) → ours; inverse of :func:`to_pylima`.

    The blending form is taken from whichever of ``gblend_<name>``, ``fblend_<name>``,
    ``ftotal_<name>`` is present; fluxes come back on our zero point 22 as ``f_s`` and ``f_b``.
    """
    out: dict[str, Array] = {
        "t_0": jnp.asarray(pylima["t0"]) - time_offset,
        "u_0": -jnp.asarray(pylima["u0"]),
        "t_E": jnp.asarray(pylima["tE"]),
    }
    if pylima.get("separation") is not None:
        out["s"] = jnp.asarray(pylima["separation"])
        out["q"] = jnp.asarray(pylima["mass_ratio"])
        out["alpha"] = _wrap_deg(-jnp.rad2deg(pylima["alpha"]))
    if pylima.get("rho") is not None:
        out["rho"] = jnp.asarray(pylima["rho"])
    if telescope is not None and f"fsource_{telescope}" in pylima:
        f_s = jnp.asarray(pylima[f"fsource_{telescope}"])
        present = [b for b in _BLENDS if f"{b}_{telescope}" in pylima]
        if len(present) != 1:
            raise ValueError(f"expected exactly one of {[f'{b}_{telescope}' for b in _BLENDS]}")
        v = jnp.asarray(pylima[f"{present[0]}_{telescope}"])
        f_b = {"gblend": f_s * v, "fblend": v, "ftotal": v - f_s}[present[0]]
        out["f_s"] = rescale_flux(f_s, PYLIMA_ZERO_POINT, MULENSMODEL_ZERO_POINT)
        out["f_b"] = rescale_flux(f_b, PYLIMA_ZERO_POINT, MULENSMODEL_ZERO_POINT)
    return out
