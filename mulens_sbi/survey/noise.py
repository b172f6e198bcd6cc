"""Photometric noise model (CCD equation with a systematic floor).

Fluxes are in MulensModel's system: ``F = 10^(-0.4 (m - 22))`` in the survey's band. The detector
collects ``N = F · 10^(0.4 (zp - 22)) · t_exp`` electrons from a total flux F (source and blend: both
are in the PSF), with ``zp`` the magnitude giving 1 e⁻/s. Per exposure

    var_N = N + A_psf · (B_sky + B_dark) · t_exp + A_psf · RN²,
    σ_F  = sqrt(var_N) / (10^(0.4 (zp - 22)) · t_exp),
    σ_F  ← sqrt(σ_F² + (F · floor · ln 10 / 2.5)²),

with ``B_sky = 10^(-0.4 (μ_sky - zp)) · pixel_scale²`` e⁻/pix/s, ``A_psf`` the PSF noise-equivalent area
in pixels (fixed for a space telescope, ``nea_per_fwhm2 · (FWHM / pixel_scale)²`` from the night's
seeing on the ground) and ``floor`` the systematic floor in magnitudes (Penny et al. 2019; Johnson
et al. 2020 use 1 mmag for Roman).
"""

from __future__ import annotations

import numpy as np

from mulens_sbi.survey.spec import Noise

#: MulensModel's magnitude zero point for fluxes
FLUX_ZERO_POINT = 22.0
_LN10_25 = np.log(10.0) / 2.5


def mag_to_flux(mag: np.ndarray) -> np.ndarray:
    """Magnitude → flux on the zero point 22."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - FLUX_ZERO_POINT))


def flux_to_mag(flux: np.ndarray) -> np.ndarray:
    """Flux on the zero point 22 → magnitude (NaN for flux <= 0)."""
    f = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, FLUX_ZERO_POINT - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


def psf_area(noise: Noise, seeing_arcsec: np.ndarray | float | None = None) -> np.ndarray:
    """PSF noise-equivalent area in pixels: fixed (space) or from the seeing FWHM (ground)."""
    if noise.nea_pix is not None:
        return np.asarray(noise.nea_pix, dtype=float)
    if seeing_arcsec is None:
        raise ValueError("a seeing-limited noise model (nea_per_fwhm2) needs the seeing FWHM")
    return noise.nea_per_fwhm2 * (np.asarray(seeing_arcsec, dtype=float) / noise.pixel_scale_arcsec) ** 2


def flux_sigma(flux: np.ndarray, noise: Noise, seeing_arcsec: np.ndarray | float | None = None) -> np.ndarray:
    """1σ flux uncertainty of one exposure for total flux ``flux`` (zero point 22), same unit."""
    f = np.asarray(flux, dtype=float)
    gain = 10.0 ** (0.4 * (noise.zero_point - FLUX_ZERO_POINT)) * noise.exposure_s  # e- per flux unit
    sky = 10.0 ** (-0.4 * (noise.sky_mag_arcsec2 - noise.zero_point)) * noise.pixel_scale_arcsec**2
    area = psf_area(noise, seeing_arcsec)
    var_e = np.maximum(f, 0.0) * gain + area * (
        (sky + noise.dark_e_per_pix_s) * noise.exposure_s + noise.read_noise_e**2
    )
    sigma = np.sqrt(var_e) / gain
    return np.sqrt(sigma**2 + (f * noise.systematic_floor_mag * _LN10_25) ** 2)


def mag_sigma(mag: np.ndarray, noise: Noise, seeing_arcsec: np.ndarray | float | None = None) -> np.ndarray:
    """1σ magnitude uncertainty (first order: 2.5/ln10 · σ_F/F) of a star of magnitude ``mag``."""
    f = mag_to_flux(mag)
    return flux_sigma(f, noise, seeing_arcsec) / (f * _LN10_25)


def add_noise(flux: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One Gaussian noise realisation ``flux + sigma·N(0, 1)`` (for on-the-fly training noise)."""
    return np.asarray(flux) + np.asarray(sigma) * rng.standard_normal(np.shape(flux))
