"""Benchmark: light curves per second delivered to training by a stream (`mulens-sbi train --stream-prior
/ --stream-enrich`) against simulating the same shards first and pre-binning them (the reference),
measured in the same run on this machine.

    PYTHONPATH=. python scripts/bench_stream.py [--survey roman] [--shards 4] [--shard-size 500]
                                                [--workers 2] [--cross-shards 1]

Reference: ``make_shard`` + ``prepare_binned``-equivalent pre-binning of each shard in this process,
one after the other. Stream: a ``StreamingSampler`` with ``--workers`` spawned processes, timed from
its creation until every shard has been added to the device arrays (worker start-up, JIT compilation
in each worker, simulation, pre-binning, transfer and the device update included). The conditioned
(caustic-crossing) shards are timed the same way on their own. Prints seconds per 1000 light curves
and per core for each kind (the cost model of ``scripts/train_gpu.sh``) and the ratio stream/reference.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survey", default="roman")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--cross-shards", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=77)
    a = ap.parse_args()

    import jax

    from mulens_sbi.data.samplers import BinnedSimulator, MixtureSimulator
    from mulens_sbi.data.stream import StreamingSampler, StreamPlan, stream_shard
    from mulens_sbi.survey import Survey
    from mulens_sbi.training import NETWORKS

    cfg = NETWORKS["fine"][0]
    spec = Survey.load(a.survey).spec
    plan = StreamPlan(spec_text=spec.text, seed=a.seed, first_shard=0, rows=a.shards * a.shard_size,
                      shard_size=a.shard_size, enrich_seed=a.seed + 1, enrich_first_shard=0,
                      enrich_rows=a.cross_shards * a.shard_size, enrich_shard_size=a.shard_size,
                      condition="caustic-crossing", workers=a.workers)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}); {a.survey}, shards of {a.shard_size}, 2048 cells")

    # warm-up: compile the solver and the class test in this process on small shards (the reference
    # then runs warm)
    small = StreamPlan(spec_text=spec.text, seed=a.seed + 9, first_shard=0, rows=8, shard_size=8,
                       enrich_seed=a.seed + 10, enrich_rows=8, enrich_shard_size=8,
                       condition="caustic-crossing")
    stream_shard(small, "prior", 0, 8, cfg)
    stream_shard(small, "enrich", 0, 8, cfg)
    t0 = time.perf_counter()
    n_ref = sum(len(stream_shard(plan, "prior", k, a.shard_size, cfg)["theta_net"]) for k in range(a.shards))
    ref_prior = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_ref_c = sum(len(stream_shard(plan, "enrich", k, a.shard_size, cfg)["theta_net"])
                  for k in range(a.cross_shards))
    ref_cross = time.perf_counter() - t0

    def run_stream(p: StreamPlan) -> tuple[float, dict]:
        b = {"theta_net": np.zeros((1, 6)), "mean": np.ones((1, cfg.n_bins), np.float32),
             "err": np.ones((1, cfg.n_bins), np.float32), "count": np.ones((1, cfg.n_bins), np.uint16)}
        base = BinnedSimulator(b, cfg)
        sim = base if p.condition is None else MixtureSimulator(base, np.zeros(1, bool), base, 0.25, 0.01)
        t = time.perf_counter()
        smp = StreamingSampler(sim, cfg, p)
        try:
            smp.poll(wait=True)
        finally:
            smp.close()
        return time.perf_counter() - t, smp.stats

    import dataclasses

    t_prior, st = run_stream(dataclasses.replace(plan, enrich_rows=0, enrich_seed=None, condition=None))
    t_cross, st_c = run_stream(dataclasses.replace(plan, rows=0, first_shard=a.shards))
    cores = min(a.workers, os.cpu_count() or 1)
    n_p, n_c = a.shards * a.shard_size, a.cross_shards * a.shard_size
    print(f"reference (this process, warm): prior {ref_prior:.1f} s for {n_p} ({n_ref} accepted), "
          f"caustic-crossing {ref_cross:.1f} s for {n_c} ({n_ref_c} accepted)")
    print(f"stream ({a.workers} workers, cold): prior {t_prior:.1f} s ({st['rows_added']} rows added), "
          f"caustic-crossing {t_cross:.1f} s ({st_c['enrich_rows_added']} rows added)")
    print(f"core-seconds per 1000 light curves (stream): prior {1000 * t_prior * cores / n_p:.1f}, "
          f"caustic-crossing {1000 * t_cross * cores / n_c:.1f}")
    print(f"ratio stream / reference, light curves per second: prior {ref_prior / t_prior:.2f}, "
          f"caustic-crossing {ref_cross / t_cross:.2f}")


if __name__ == "__main__":
    main()
