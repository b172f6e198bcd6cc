"""Derivatives of the contour-integrated finite-source magnification (binary lens).

``A = (1/πr²)∬_disc A_ps`` gives exact derivatives with respect to the source centre and radius
from boundary means of the point-source magnification; they are checked against central finite
differences of the magnification itself, at points whose disc straddles a caustic (so the contour
path, not the far-field expansion, is used). The derivative in s and q is documented as NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mulens_sbi.lensing import finite
from mulens_sbi.lensing.caustics import caustics

#: central-difference step as a fraction of rho, and the relative tolerance: the values are
#: accurate to ~1e-6 relative, so the differences carry ~1e-6·A/h of noise
H_FRAC = 2e-3
RTOL = 2e-2


def test_centre_and_radius_derivatives_match_finite_differences():
    s, q, rho = 1.05, 2e-3, 0.01
    cau = np.asarray(caustics(s, q, 256))
    # on the central caustic's fold, away from its cusps, so the disc is cut by the caustic
    c = cau.ravel()[np.argmin(np.abs(cau.ravel() - (s * q / (1 + q) - 0.02 + 0.01j)))]
    x0, y0 = float(c.real) + 0.3 * rho, float(c.imag)
    h = H_FRAC * rho
    # one batched call: three points with unit tangents (x, y, rho), one with a tangent in s,
    # then the six shifted points for the central differences (zero tangents)
    xs = np.array([x0, x0, x0, x0, x0 + h, x0 - h, x0, x0, x0, x0])
    ys = np.array([y0, y0, y0, y0, y0, y0, y0 + h, y0 - h, y0, y0])
    rs = np.array([rho] * 8 + [rho + h, rho - h])
    ss = np.full(10, s)
    dx, dy, dr, ds = (np.zeros(10) for _ in range(4))
    dx[0], dy[1], dr[2], ds[3] = 1.0, 1.0, 1.0, 1.0

    def f(x, y, r, s_):
        return finite.binary_finite_points(x, y, s_, jnp.full(10, q), r, jnp.zeros(10))

    (a, ok), (da, _) = jax.jit(lambda *p: jax.jvp(f, p[:4], p[4:]))(xs, ys, rs, ss, dx, dy, dr, ds)
    a, ok, da = np.asarray(a), np.asarray(ok), np.asarray(da)
    assert ok.all()
    fd = np.array([(a[4] - a[5]) / (2 * h), (a[6] - a[7]) / (2 * h), (a[8] - a[9]) / (2 * h)])
    assert np.all(np.abs(fd) > 1.0)  # the comparison is not trivial
    np.testing.assert_allclose(da[:3], fd, rtol=RTOL)
    # no boundary formula for the lens parameters: NaN, never a silent zero
    assert np.isnan(da[3])
