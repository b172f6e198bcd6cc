"""Light-curve generation: batched light curves of a survey, in memory.

Each light curve: parameters drawn from the spec's priors, fixed-length observation times from the
survey cadence (see :mod:`mulens_sbi.survey.cadence`), the noiseless flux ``F = F_s·A + F_b``
(zero point 22) from :func:`mulens_sbi.lightcurve.magnification_batch`, the 1σ error ``sigma`` of
the noise model and ONE noisy realisation ``flux = flux_true + sigma·N(0, 1)``. Training code should
draw fresh noise on the fly from ``flux_true`` and ``sigma`` (:func:`mulens_sbi.survey.add_noise`);
the stored realisation is for inspection and for tests. Where ``mask`` is False (padding, or a point
the magnification solver could not certify, counted in ``n_unsolved``) ``flux_true``, ``sigma`` and
``flux`` are NaN.
"""

from __future__ import annotations

import numpy as np

from mulens_sbi.lightcurve import magnification_batch
from mulens_sbi.survey.noise import mag_to_flux

__all__ = ["simulate_lightcurves"]


def _magnification(survey, params: dict[str, np.ndarray], t: np.ndarray, batch_size: int):
    """A(t) and ok for all rows, computed in fixed-shape batches (padded by repeating the last row)."""
    spec = survey.spec
    names = ["t_0", "u_0", "t_E"]
    if spec.model.lens == "binary":
        names += ["s", "q", "alpha"]
    if spec.model.source == "finite":
        names += ["rho", "limb_darkening"]
    b = t.shape[0]
    mags, oks = [], []
    for lo in range(0, b, batch_size):
        idx = np.minimum(np.arange(lo, lo + batch_size), b - 1)
        p = {k: params[k][idx] for k in names}
        try:
            a, ok = magnification_batch(t[idx], p)
        except (NotImplementedError, ImportError, AttributeError) as exc:
            if spec.model.source == "finite":
                raise NotImplementedError(
                    f"{spec.path}: model.source = 'finite' needs the finite-source magnification, which "
                    f"is not available in this version ({type(exc).__name__}: {exc}); use source = 'point'"
                ) from exc
            raise
        n_real = min(batch_size, b - lo)
        mags.append(np.asarray(a)[:n_real])
        oks.append(np.asarray(ok)[:n_real])
    return np.concatenate(mags), np.concatenate(oks)


def simulate_lightcurves(
    survey,
    rng: np.random.Generator,
    n: int,
    batch_size: int = 128,
    params: dict[str, np.ndarray] | None = None,
    field: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Simulate ``n`` light curves of a :class:`~mulens_sbi.survey.Survey` (all in memory).

    Args:
        survey: the loaded survey.
        rng: numpy generator; the draws are, in order: parameters, field classes, observation
            times, noise.
        n: number of light curves.
        batch_size: rows per call of the magnification solver (a fixed shape: one compile).
        params: fixed parameters instead of prior draws (dict of (n,) arrays incl. ``source_mag``
            and ``blend_fraction``); ``f_s``/``f_b`` are derived if missing.
        field: fixed field-class indices instead of draws.

    Returns:
        dict of numpy arrays: each parameter and ``f_s``, ``f_b``, ``field``, ``n_obs``,
        ``n_available``, ``n_unsolved`` of shape (n,); ``t``, ``flux_true``, ``sigma``, ``flux``,
        ``mask`` (and ``site`` for a ground survey) of shape (n, n_points).
    """
    if params is None:
        params = survey.sample_parameters(rng, n)
    else:
        params = {k: np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy() for k, v in params.items()}
        if "f_s" not in params:
            params["f_s"] = mag_to_flux(params["source_mag"])
            bf = params["blend_fraction"]
            params["f_b"] = params["f_s"] * bf / (1.0 - bf)
    obs = survey.observations(rng, params, field=field)
    mag, ok = _magnification(survey, params, obs.t, batch_size)
    flux_true = params["f_s"][:, None] * mag + params["f_b"][:, None]
    sigma = survey.flux_sigma(flux_true, obs.seeing)
    noise = rng.standard_normal(flux_true.shape)
    mask = obs.mask & ok
    unsolved = obs.mask & ~ok
    out = dict(params)
    out.update(
        field=obs.field.astype(np.int16),
        n_obs=mask.sum(axis=1).astype(np.int32),
        n_available=obs.n_available.astype(np.int32),
        n_unsolved=unsolved.sum(axis=1).astype(np.int32),
        t=obs.t,
        flux_true=np.where(mask, flux_true, np.nan).astype(np.float32),
        sigma=np.where(mask, sigma, np.nan).astype(np.float32),
        flux=np.where(mask, flux_true + sigma * noise, np.nan).astype(np.float32),
        mask=mask,
    )
    if survey.spec.is_ground:
        out["site"] = obs.site.astype(np.int8)
    return out
