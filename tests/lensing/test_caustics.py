"""Critical curves and caustics: identities, topology boundaries, analytic small-q limits.

References: Erdl & Schneider (1993) and Dominik (1999) for the close/wide boundaries; Han (2006) for
the planetary-caustic position ``s − 1/s`` from the primary; Chung et al. (2005) for the central
caustic width ``4q/(s − 1/s)²``. Frame: centre of mass, primary at ``+s·q/(1+q)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mulens_sbi.lensing import caustics as C
from mulens_sbi.lensing import point_source as ps

LENSES = [(1.0, 1.0), (0.5, 1e-3), (2.0, 1e-5), (0.6, 0.5), (1.5, 1e-2), (0.25, 1e-5), (4.0, 1.0),
          (0.8, 0.1), (1.2, 1e-4), (1.0, 3.0)]


@pytest.mark.parametrize("s,q", LENSES)
def test_critical_points_have_zero_determinant(s, q):
    z = C.critical_curves(s, q, 512)
    det = C.jacobian_determinant(z, s, q)
    assert np.all(np.isfinite(np.asarray(z)))
    assert float(jnp.max(jnp.abs(det))) < 1e-10


def test_caustic_points_are_images_of_critical_points():
    s, q = 0.9, 0.05
    z = C.critical_curves(s, q, 512)
    c = C.caustics(s, q, 512)
    # lens equation written out independently, in the centre-of-mass frame
    m1, m2 = 1 / (1 + q), q / (1 + q)
    z1, z2 = s * q / (1 + q), -s / (1 + q)
    zz = np.asarray(z)
    zeta = zz - m1 / (np.conj(zz) - z1) - m2 / (np.conj(zz) - z2)
    assert np.max(np.abs(zeta - np.asarray(c))) < 1e-12


def test_jit_and_vmap():
    s = jnp.asarray([0.5, 1.0, 2.0])
    q = jnp.asarray([1e-3, 1.0, 1e-2])
    batched = jax.jit(jax.vmap(lambda a, b: C.caustics(a, b, 64)))(s, q)
    for i in range(3):
        np.testing.assert_allclose(batched[i], C.caustics(s[i], q[i], 64), atol=1e-12)
    assert jax.vmap(C.topology)(s, q).tolist() == [0, 1, 2]


def test_boundaries_equal_mass_and_symmetry():
    # equal masses: s_c = 2^{-1/2}, s_w = 2 (Schneider & Weiss 1986)
    assert abs(float(C.close_boundary(1.0)) - 2**-0.5) < 1e-12
    assert abs(float(C.wide_boundary(1.0)) - 2.0) < 1e-12
    for q in [1e-4, 0.03, 0.4]:
        assert abs(float(C.close_boundary(q)) - float(C.close_boundary(1 / q))) < 1e-12
        assert abs(float(C.wide_boundary(q)) - float(C.wide_boundary(1 / q))) < 1e-12
        sc = float(C.close_boundary(q))
        # the defining relation of Dominik (1999)
        assert abs(sc**8 - (1 + q) ** 2 / (27 * q) * (1 - sc**4) ** 3) < 1e-12


@pytest.mark.parametrize("q", [1e-4, 1e-2, 0.3, 1.0])
def test_topology_boundaries_match_counted_caustics(q):
    """Just inside/outside each analytic boundary the counted number of closed curves changes."""
    sc, sw = float(C.close_boundary(q)), float(C.wide_boundary(q))
    counts = {1: C.INTERMEDIATE, 2: C.WIDE, 3: C.CLOSE}
    for s in [0.97 * sc, 1.03 * sc, 0.97 * sw, 1.03 * sw, 0.3 * sc, 2.5 * sw]:
        n = int(C.n_caustics_numerical(s, q, 1024))
        assert counts[n] == int(C.topology(s, q)), (s, q, n)


def _cusp_free_folds(c: np.ndarray, n_pick: int, rng: np.random.Generator):
    """Pick fold points (well away from cusps and from other folds) with their unit normals."""
    picks = []
    flat = c.ravel()
    for b, branch in enumerate(c):
        size = np.ptp(branch.real) + np.ptp(branch.imag)
        d = np.diff(branch)
        turn = np.abs(np.angle(d[1:] / d[:-1]))  # turn[j] is the turning angle at point j + 1
        # away from the branch ends (which join other branches) and from cusps, turning smoothly
        step = np.abs(d)
        # the φ sampling slows down to zero step at cusps: demand ordinary steps around the point
        good = [j + 1 for j in range(10, turn.size - 10)
                if np.all(turn[j - 3: j + 4] < 0.05) and np.all(step[j - 9: j + 11] > 0.5 * np.median(step))]
        keep = []
        for i in rng.permutation(good):
            # no other part of any caustic within 1e-3 of the branch size (thin cusp tails)
            others = np.ones(flat.size, dtype=bool)
            others[b * c.shape[1] + max(i - 20, 0): b * c.shape[1] + i + 21] = False
            if np.min(np.abs(flat[others] - branch[i])) > 1e-3 * size:
                keep.append(i)
            if len(keep) == n_pick:
                break
        for i in keep:
            t = branch[i + 1] - branch[i - 1]
            picks.append((branch[i], 1j * t / abs(t), size))
    return picks


@pytest.mark.parametrize("s,q", [(1.0, 1.0), (0.7, 1e-2), (1.8, 1e-3), (1.1, 0.2)])
def test_image_count_changes_across_fold(s, q, rng):
    """3 ↔ 5 images across the caustic; on the 5-image side A grows as ε^{-1/2} (fold)."""
    c = np.asarray(C.caustics(s, q, 512))
    picks = _cusp_free_folds(c, 4, rng)
    assert len(picks) >= 8
    pts = []
    for p, nrm, size in picks:  # ε relative to the size of the branch's caustic
        for eps in [1e-5 * size, 1e-7 * size]:
            pts += [p + eps * nrm, p - eps * nrm]
    pts = np.asarray(pts)
    zeta = ps.to_solver_frame(jnp.asarray(pts.real), jnp.asarray(pts.imag), s, q)
    sv, qv = jnp.full(pts.shape, s), jnp.full(pts.shape, q)
    roots, _ = ps.solve_points(zeta, sv, qv)
    # the convergence flag of the Aberth solve is not asserted here (it is tested, and currently
    # fails within ~1e-5 θ_E of folds, in test_point_source.py); the image classification is.
    mag, is_img, ok = ps.classify(zeta, roots, sv, qv)
    assert bool(jnp.all(ok))
    n = np.asarray(jnp.sum(is_img, axis=-1)).reshape(len(picks), 2, 2)
    mag = np.asarray(mag).reshape(len(picks), 2, 2)
    for k in range(len(picks)):
        for j in range(2):
            assert sorted(n[k, j]) == [3, 5], (s, q, picks[k], n[k, j])
        inside = int(np.argmax(n[k, 0]))  # the 5-image side
        # fold: A_inside − A_outside ∝ ε^{-1/2}; ε ratio 100 → ratio 10 (to O(sqrt ε))
        ratio = (mag[k, 1, inside] - mag[k, 1, 1 - inside]) / (mag[k, 0, inside] - mag[k, 0, 1 - inside])
        assert abs(ratio / 10.0 - 1.0) < 0.05, (s, q, picks[k], ratio)
        assert mag[k, 1, inside] > 100.0


def _on_axis(c: np.ndarray) -> np.ndarray:
    """Caustic points on the binary axis (φ = 0 and π sample the on-axis critical points exactly)."""
    flat = c.ravel()
    return flat[np.abs(flat.imag) < 1e-12 * (1 + np.abs(flat))]


@pytest.mark.parametrize("s", [0.5, 0.7, 1.4, 2.0, 3.0])
def test_central_caustic_width_chung2005(s):
    """On-axis width of the central caustic → 4q/(s − 1/s)²; the error shrinks ∝ q."""
    errs = []
    for q in [1e-4, 1e-5]:
        c = np.asarray(C.caustics(s, q, 512))
        xp, f = s * q / (1 + q), s - 1 / s
        on = _on_axis(c)
        on = on[np.abs(on - xp) < abs(f) / 2]
        assert on.size >= 2
        width = np.ptp(on.real)
        errs.append(width / (4 * q / f**2) - 1)
    assert abs(errs[1]) < 5e-3, errs
    assert 7.0 < errs[0] / errs[1] < 13.0, errs  # first-order convergence in q


@pytest.mark.parametrize("s", [1.4, 2.0, 3.0])
def test_wide_planetary_caustic_position_han2006(s):
    """The wide planetary caustic is centred s − 1/s from the primary, towards the companion."""
    offsets = []
    for q in [1e-4, 1e-5]:
        c = np.asarray(C.caustics(s, q, 512))
        xp, f = s * q / (1 + q), s - 1 / s
        on = _on_axis(c)
        pl = on[np.abs(on - xp) >= abs(f) / 2]
        centre = 0.5 * (pl.real.max() + pl.real.min())
        size = np.ptp(pl.real)
        assert size > 0.3 * np.sqrt(q) / s**2  # a caustic of size ~ sqrt(q) ...
        offsets.append((centre - (xp - f)) / q)  # ... centred to O(q)
    assert abs(offsets[1]) < 5.0, offsets
    assert abs(offsets[0] - offsets[1]) < 0.05 * max(abs(offsets[1]), 0.1), offsets


@pytest.mark.parametrize("s", [0.5, 0.7])
def test_close_planetary_caustics_han2006(s):
    """Close planet: two triangular caustics, mirror images in the axis, at x = x_primary − (s − 1/s)
    to O(q) (on the side away from the planet)."""
    q = 1e-5
    c = np.asarray(C.caustics(s, q, 512))
    xp, f = s * q / (1 + q), s - 1 / s
    off = [b for b in c if np.all(np.abs(b - xp) > abs(f) / 2)]
    assert len(off) == 2
    up, lo = sorted(off, key=lambda b: -b.imag.mean())
    assert np.all(up.imag > 0) and np.all(lo.imag < 0)
    np.testing.assert_allclose(np.sort_complex(up), np.sort_complex(np.conj(lo)), atol=1e-10)
    x_mid = 0.5 * (up.real.max() + up.real.min())
    assert abs(x_mid - (xp - f)) < 10 * q
    assert x_mid > xp  # the companion is at negative x


def test_distance_to_caustic_accuracy(rng):
    for s, q in [(1.0, 1.0), (1.2, 1e-3), (0.6, 0.3)]:
        c_fine = np.asarray(C.caustics(s, q, 4096)).ravel()
        size = np.ptp(c_fine.real)
        pts = rng.uniform(-1.5, 1.5, 200) + 1j * rng.uniform(-1.0, 1.0, 200)
        near = c_fine[::41]
        pts = np.concatenate([pts, near + 1e-3 * size * np.exp(1j * rng.uniform(0, 6.3, near.size))])
        x, y = jnp.asarray(pts.real), jnp.asarray(pts.imag)
        d = np.asarray(C.distance_to_caustic(x, y, s, q, 512))
        d_ref = np.asarray(C.distance_to_caustic(x, y, s, q, 4096))
        d_pts = np.min(np.abs(pts[:, None] - c_fine[None, :]), axis=1)
        assert np.all(d_ref <= d_pts + 1e-15)  # the distance to the polygon is below the vertex distance
        assert np.max(np.abs(d - d_ref)) < 1e-3 * size
        # points on the caustic have distance ~ 0
        on = c_fine[::50]
        d_on = np.asarray(C.distance_to_caustic(jnp.asarray(on.real), jnp.asarray(on.imag), s, q, 512))
        assert np.max(d_on) < 1e-3 * size
