"""Event classes of simulated light curves.

``caustic_crossing``: at least one used data point has the source inside a caustic (5 images),
computed with the point-source solver (:mod:`mulens_sbi.lensing.point_source`). The planetary
caustic-crossing class (``q < q_max`` and a caustic crossing, :func:`crossing_flags`) is what
:mod:`mulens_sbi.data.conditioned` draws, what the training's enrichment weights need and what the
validation reports separately: one definition, here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mulens_sbi.lensing.point_source import classify, to_solver_frame, trajectory_roots
from mulens_sbi.lightcurve import source_trajectory
from mulens_sbi.params import PHYSICAL_NAMES

__all__ = ["caustic_crossing", "crossing_flags"]


@jax.jit
def _five_images(x, y, used, s, q):
    """(M,) bool: some used point of each row (source at x + iy, centre-of-mass frame, ordered in
    time) has 5 images. The roots come from the warm-started trajectory solver (q <= 1)."""
    zeta = to_solver_frame(x, y, s, q)
    _, ok_t, z = trajectory_roots(zeta, s[:, 0], q[:, 0])
    _, is_img, ok = classify(zeta, z, s, q)
    return jnp.any((jnp.sum(is_img, axis=-1) == 5) & ok & ok_t & used, axis=-1)


def caustic_crossing(t, mask, params: dict[str, np.ndarray], chunk: int = 64) -> np.ndarray:
    """(M,) bool: at least one used data point has the source inside a caustic (5 images).

    ``t`` (M, L) must be sorted along each row (as the simulator writes it; padding repeats a time).
    Rows are processed ``chunk`` at a time (the last chunk padded), so every call with the same
    number of points per row reuses one compiled program."""
    t = np.asarray(t, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    m = t.shape[0]
    out = np.zeros(m, bool)
    for a in range(0, m, chunk):
        idx = np.minimum(np.arange(a, a + chunk), m - 1)
        p = {k: np.asarray(v, dtype=np.float64)[idx] for k, v in params.items()}
        x, y = source_trajectory(t[idx], p["t_0"][:, None], p["u_0"][:, None], p["t_E"][:, None],
                                 p["alpha"][:, None])
        res = np.asarray(_five_images(jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask[idx]),
                                      jnp.asarray(p["s"])[:, None], jnp.asarray(p["q"])[:, None]))
        n_real = min(chunk, m - a)
        out[a:a + n_real] = res[:n_real]
    return out


def crossing_flags(d: dict[str, np.ndarray], q_max: float) -> np.ndarray:
    """(rows,) bool: the caustic-crossing planetary rows (q < q_max and >= 1 used data point with the
    source inside a caustic) of simulate-style arrays (physical parameters, ``t``, ``mask``)."""
    flag = np.zeros(d["t"].shape[0], bool)
    sel = np.flatnonzero(d["q"] < q_max)
    if sel.size:
        flag[sel] = caustic_crossing(d["t"][sel], d["mask"][sel], {k: d[k][sel] for k in PHYSICAL_NAMES})
    return flag
