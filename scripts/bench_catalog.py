"""Catalog throughput: events per second for simulated Roman events, local vs Ray engine, and a run
killed halfway and restarted (same table, no duplicates).

    PYTHONPATH=. python scripts/bench_catalog.py [--n 1000] [--n-samples 64] [--workdir DIR]

1. simulates ``--n`` Roman events (``mulens_sbi.simulate``, seed 0, 2048 points each);
2. ``mulens-sbi catalog`` over the shards with the local engine, then with the Ray engine (a local
   Ray instance with all CPUs, ``--actors`` actors); events/s counted over the whole run (model
   loading and JIT compilation included) and over the shards after the first (steady state);
3. starts the local-engine command as a subprocess, kills it (SIGKILL) once half of the parts
   exist, runs the same command again, and compares the finished table with step 2's local table
   (every column but ``time_s``; floats to 1e-9 relative) and counts duplicate event indices.

Prints the figures; nothing is timed in the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def compare(a, b, skip=("time_s",), rtol=1e-9) -> tuple[bool, str]:
    import pyarrow as pa

    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False, f"shape {a.num_rows}x{a.num_columns} vs {b.num_rows}x{b.num_columns}"
    for name in a.column_names:
        if name in skip:
            continue
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        if a.schema.field(name).type == pa.float64():
            xa = np.array([np.nan if v is None else v for v in x], float)
            ya = np.array([np.nan if v is None else v for v in y], float)
            ok = np.allclose(xa, ya, rtol=rtol, atol=0, equal_nan=True)
        else:
            ok = x == y
        if not ok:
            return False, f"column {name} differs"
    return True, "identical"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="simulated events (default 1000)")
    ap.add_argument("--n-samples", type=int, default=64, help="flow samples per event (default 64)")
    ap.add_argument("--shard-size", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--actors", type=int, default=2, help="Ray actors (default 2)")
    ap.add_argument("--workdir", default=None, help="keep the files here (default: a temporary folder)")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-kill", action="store_true")
    args = ap.parse_args(argv)

    import jax

    import mulens_sbi  # noqa: F401
    from mulens_sbi.catalog import CatalogSettings, read_catalog, run_catalog
    from mulens_sbi.simulate import SimulateSettings, run_simulation

    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, jax "
        f"{jax.__version__} ({jax.default_backend()}), load {os.getloadavg()[0]:.1f}"
    )
    sim = work / "sim"
    t = time.perf_counter()
    if not (sim / "manifest.json").exists():
        run_simulation(
            SimulateSettings(survey="roman", n=args.n, out=str(sim), seed=0, shard_size=250, progress=False),
            log=lambda s: None,
        )
    print(f"simulated {args.n} Roman events in {time.perf_counter() - t:.1f} s")
    common = dict(
        input=str(sim),
        n_samples=args.n_samples,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        progress=False,
        overwrite=True,
    )

    def report(label, s, out):
        tab = read_catalog(out)
        ts = np.array(tab.column("time_s").to_pylist(), float)
        first = tab.column("index").to_numpy() < args.shard_size
        steady = (~first).sum() / ts[~first].sum() if (~first).any() else float("nan")
        print(
            f"{label}: {s['n_events']} events in {s['work_s']:.1f} s = {s['events_per_s']:.2f} events/s "
            f"(incl. model load + compile); per-event work after the first shard: {steady:.2f} events/s per "
            f"worker; status {s['status_counts']}"
        )
        return tab

    out_local = work / "cat_local"
    s_local = run_catalog(CatalogSettings(out=str(out_local), **common))
    tab_local = report("local engine", s_local, out_local)

    if not args.skip_ray:
        out_ray = work / "cat_ray"
        s_ray = run_catalog(
            CatalogSettings(
                out=str(out_ray),
                engine="ray",
                num_actors=args.actors,
                ray_init={"num_cpus": os.cpu_count()},
                **common,
            )
        )
        tab_ray = report(f"ray engine ({args.actors} actors)", s_ray, out_ray)
        ok, why = compare(tab_local, tab_ray)
        print(f"ray table vs local table: {why}")
        print(f"ratio ray/local events/s: {s_ray['events_per_s'] / s_local['events_per_s']:.2f}")

    if not args.skip_kill:
        out_kill = work / "cat_kill"
        cmd = [
            sys.executable,
            "-m",
            "mulens_sbi.cli",
            "catalog",
            str(sim),
            "--out",
            str(out_kill),
            "--n-samples",
            str(args.n_samples),
            "--shard-size",
            str(args.shard_size),
            "--batch-size",
            str(args.batch_size),
            "--no-progress",
        ]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        n_parts = -(-args.n // args.shard_size)
        proc = subprocess.Popen(
            cmd + ["--overwrite"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        t0 = time.perf_counter()
        while proc.poll() is None:
            have = (
                len(list((out_kill / "parts").glob("part-*.parquet"))) if (out_kill / "parts").exists() else 0
            )
            if have >= n_parts // 2:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.2)
        parts_at_kill = len(list((out_kill / "parts").glob("part-*.parquet")))
        tmp_left = len(list((out_kill / "parts").glob("*.tmp-*")))
        print(
            f"killed after {time.perf_counter() - t0:.1f} s with {parts_at_kill}/{n_parts} parts written "
            f"({tmp_left} partial temporary file(s) left)"
        )
        t1 = time.perf_counter()
        rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        tab_kill = read_catalog(out_kill)
        idx = tab_kill.column("index").to_pylist()
        ok, why = compare(tab_local, tab_kill)
        print(
            f"restart: exit {rc} in {time.perf_counter() - t1:.1f} s; {tab_kill.num_rows} rows, "
            f"{len(idx) - len(set(idx))} duplicates; vs uninterrupted local table: {why}"
        )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
