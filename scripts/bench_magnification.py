"""Benchmark: binary-lens magnification, mulens-sbi (JAX) versus VBMicrolensing, same run, same machine.

Prints per-point costs and their ratios:

* point source along light curves — ours (`magnification_trajectory`, jitted, batched and single
  light curve) against VBMicrolensing's ``BinaryMag0`` called point by point from Python (its
  documented use), on the same random planetary/binary light curves; plus the agreement.
* finite source (ρ = 1e-3) along light curves with caustic crossings — ours against ``BinaryMag2``
  at ``RelTol = 1e-4`` (matched accuracy), when the finite-source module is present.

Usage: ``python scripts/bench_magnification.py [--curves 200] [--points 2000] [--seed 0]``.
VBMicrolensing is a benchmark-only dependency (``pip install -e '.[test]'``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor

import jax
import numpy as np

import mulens_sbi  # noqa: F401  (float64)
from mulens_sbi.lensing import point_source


def best_time(fn, *args, repeat: int = 5) -> float:
    """Best wall time of ``fn(*args)`` over ``repeat`` calls after one warm-up (seconds)."""
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def draw_curves(rng: np.random.Generator, n_curves: int, n_points: int):
    """Random binary light curves: log10 q in [-5, 0], s in [0.2, 5], |u_0| < 1, τ in [-2, 2]."""
    s = 10 ** rng.uniform(np.log10(0.2), np.log10(5.0), n_curves)
    q = 10 ** rng.uniform(-5.0, 0.0, n_curves)
    u0 = rng.uniform(-1.0, 1.0, n_curves)
    al = rng.uniform(0.0, 2 * np.pi, n_curves)
    tau = np.linspace(-2.0, 2.0, n_points)
    x = tau[None] * np.cos(al)[:, None] - u0[:, None] * np.sin(al)[:, None]
    y = tau[None] * np.sin(al)[:, None] + u0[:, None] * np.cos(al)[:, None]
    return x, y, s, q


def vbm_loop(fn, s, q, x, y, *extra) -> tuple[np.ndarray, float]:
    """Call a VBMicrolensing magnification point by point; returns values and seconds per point."""
    out = np.empty(x.size)
    xf, yf = x.reshape(-1).tolist(), y.reshape(-1).tolist()
    n = x.shape[1]
    t0 = time.perf_counter()
    for i, (a, b) in enumerate(zip(xf, yf, strict=True)):
        out[i] = fn(s[i // n], q[i // n], -a, b, *extra)
    dt = time.perf_counter() - t0
    return out.reshape(x.shape), dt / x.size


def _vbm_child(method: str, s, q, x, y, extra, rel_tol):
    import VBMicrolensing

    vbm = VBMicrolensing.VBMicrolensing()
    if rel_tol is not None:
        vbm.RelTol = rel_tol
        vbm.Tol = rel_tol
    return vbm_loop(getattr(vbm, method), s, q, x, y, *extra)


def vbm_reference(method: str, s, q, x, y, *extra, rel_tol: float | None = None):
    """``vbm_loop`` for ``VBMicrolensing.<method>`` in a fresh process that runs no JAX (it inherits
    this process's CPU affinity). Timed in this process, the reference loop shares the CPU with
    JAX's thread pool, and pinned to one core it ran up to 1.9x slower than alone."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        return ex.submit(_vbm_child, method, s, q, x, y, extra, rel_tol).result()


def bench_point_source(args) -> dict:
    rng = np.random.default_rng(args.seed)
    x, y, s, q = draw_curves(rng, args.curves, args.points)
    s_l, q_l = s.tolist(), q.tolist()
    fn = jax.jit(point_source.magnification_trajectory)
    t_batch = best_time(fn, x, y, s, q) / x.size
    one = (x[:1], y[:1], s[:1], q[:1])
    t_one = best_time(fn, *one) / args.points
    mag, ok = fn(x, y, s, q)
    n_ref = min(args.curves, args.ref_curves)
    ref, t_vbm = vbm_reference("BinaryMag0", s_l, q_l, x[:n_ref], y[:n_ref])
    rel = np.abs(np.asarray(mag[:n_ref]) / ref - 1.0)
    return {
        "points": int(x.size),
        "ours_batched_us": t_batch * 1e6,
        "ours_single_curve_us": t_one * 1e6,
        "vbm_BinaryMag0_us": t_vbm * 1e6,
        "speedup_batched": t_vbm / t_batch,
        "speedup_single_curve": t_vbm / t_one,
        "max_rel_diff": float(np.nanmax(rel)),
        "p99_rel_diff": float(np.nanpercentile(rel, 99)),
        "not_ok": int((~np.asarray(ok)).sum()),
    }


def caustic_crossing_curves(n_curves: int, n_points: int, seed: int):
    """Planetary and resonant light curves whose trajectories cross caustics (checked)."""
    rng = np.random.default_rng(seed + 1)
    from mulens_sbi.lensing import caustics as caus

    xs, ys, ss, qs = [], [], [], []
    while len(ss) < n_curves:
        s = rng.uniform(0.7, 1.5)
        q = 10 ** rng.uniform(-4, -2)
        cc = np.asarray(caus.caustics(s, q, 256)).reshape(-1)
        target = cc[rng.integers(cc.size)]
        al = rng.uniform(0.2, np.pi - 0.2)
        tau = np.linspace(-1.0, 1.0, n_points)
        # trajectory through the chosen caustic point
        u0 = -target.real * np.sin(al) + target.imag * np.cos(al)
        tau0 = target.real * np.cos(al) + target.imag * np.sin(al)
        tt = tau + tau0
        xs.append(tt * np.cos(al) - u0 * np.sin(al))
        ys.append(tt * np.sin(al) + u0 * np.cos(al))
        ss.append(s)
        qs.append(q)
    return np.array(xs), np.array(ys), np.array(ss), np.array(qs)


def bench_finite_source(args) -> dict | None:
    try:
        from mulens_sbi.lensing import finite
    except ImportError:
        return None
    rho = 1e-3
    x, y, s, q = caustic_crossing_curves(args.fs_curves, args.fs_points, args.seed)
    b = x.shape[0]
    r = np.full(b, rho)
    g = np.zeros(b)
    fn = jax.jit(finite.binary_finite_trajectory)
    t_ours = best_time(fn, x, y, s, q, r, g, repeat=3) / x.size
    mag, ok = fn(x, y, s, q, r, g)
    ref, t_vbm = vbm_reference("BinaryMag2", s.tolist(), q.tolist(), x, y, rho, rel_tol=1e-4)
    rel = np.abs(np.asarray(mag) / ref - 1.0)
    return {
        "points": int(x.size),
        "rho": rho,
        "ours_us": t_ours * 1e6,
        "vbm_BinaryMag2_us": t_vbm * 1e6,
        "speedup": t_vbm / t_ours,
        "max_rel_diff": float(np.nanmax(rel)),
        "p99_rel_diff": float(np.nanpercentile(rel, 99)),
        "not_ok": int((~np.asarray(ok)).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curves", type=int, default=200)
    ap.add_argument("--points", type=int, default=2000)
    ap.add_argument("--ref-curves", type=int, default=20, help="light curves evaluated by VBMicrolensing")
    ap.add_argument("--fs-curves", type=int, default=20)
    ap.add_argument("--fs-points", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    import VBMicrolensing

    info = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores ({platform.processor() or 'cpu'})",
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "VBMicrolensing": getattr(VBMicrolensing, "__version__", "?"),
    }
    print(json.dumps(info))
    ps = bench_point_source(args)
    print(
        f"point source: ours {ps['ours_batched_us']:.3f} us/pt batched ({args.curves} curves), "
        f"{ps['ours_single_curve_us']:.3f} us/pt single curve; VBMicrolensing BinaryMag0 "
        f"{ps['vbm_BinaryMag0_us']:.3f} us/pt; ratio {ps['speedup_batched']:.2f}x batched, "
        f"{ps['speedup_single_curve']:.2f}x single; max rel diff {ps['max_rel_diff']:.1e}"
    )
    fs = bench_finite_source(args)
    if fs is not None:
        print(
            f"finite source rho=1e-3 (caustic crossings): ours {fs['ours_us']:.2f} us/pt; "
            f"VBMicrolensing BinaryMag2 (RelTol 1e-4) {fs['vbm_BinaryMag2_us']:.2f} us/pt; "
            f"ratio {fs['speedup']:.2f}x; max rel diff {fs['max_rel_diff']:.1e}, "
            f"p99 {fs['p99_rel_diff']:.1e}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"info": info, "point_source": ps, "finite_source": fs}, fh, indent=2)


if __name__ == "__main__":
    main()
