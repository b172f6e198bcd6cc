"""Benchmark: light curves per second simulated on the device and consumed by training, against the
network's training step alone, measured in the same run on the same device.

    PYTHONPATH=. python scripts/bench_train.py [--survey roman_season] [--network fine] [--batch 512]
                                               [--steps 30] [--enrich 0.25] [--json OUT.json]

Three timings, each after its own compilation (warm):

* **simulation alone**: ``--steps`` calls of the on-device sampler
  (:class:`mulens_sbi.data.ondevice.OnDeviceSimulator`: prior draws, caustic-crossing candidates,
  whole-season light curves, noise, peak estimate, binning, network input), waiting for the last;
* **network step alone**: the training loop (:func:`mulens_sbi.npe.train.train`) fed one fixed batch
  already on the device, so that only the optimizer step and the loop's own work are timed;
* **simulation + training**: the same loop fed by the sampler, as ``mulens-sbi train --sampler simulate``
  runs it.

Light curves per second are batch rows per second (candidate slots included: they are simulated and
trained on, with weight 0 when outside the class). Also printed: the cost per simulated point and the
on-device diagnostics (class rows, slot overflow). Timings are wall-clock on whatever device JAX
picks (``JAX_PLATFORMS=cpu`` forces the CPU); compare only numbers from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survey", default="roman_season", help="a whole-season spec (name or path)")
    ap.add_argument("--network", default="fine", choices=("standard", "fine"))
    ap.add_argument("--batch", type=int, default=512, help="rows per batch")
    ap.add_argument("--steps", type=int, default=30, help="timed steps of each kind")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before each timing")
    ap.add_argument("--enrich", type=float, default=0.25, help="share of candidate slots (0 = none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the figures to this file")
    a = ap.parse_args()

    import jax

    from mulens_sbi.data.ondevice import OnDeviceSettings, OnDeviceSimulator
    from mulens_sbi.npe.config import NPEConfig, TrainConfig
    from mulens_sbi.npe.train import train
    from mulens_sbi.survey import Survey
    from mulens_sbi.training import NETWORKS, make_space

    cfg, emb, flow = NETWORKS[a.network]
    survey = Survey.load(a.survey)
    dev = jax.devices()[0]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}: {dev.device_kind}); {survey.name}, {a.network} network "
          f"({cfg.n_bins} cells), batch {a.batch}, enrichment {a.enrich}")
    key = jax.random.PRNGKey(a.seed)
    t0 = time.perf_counter()
    sim = OnDeviceSimulator(survey, cfg, a.batch, OnDeviceSettings(enrich_fraction=a.enrich),
                            pilot_key=jax.random.fold_in(key, 1))
    t_pilot = time.perf_counter() - t0
    points = sum((lay["prior_rows"] + lay["slots"]) * lay["length"] for lay in sim.layout)
    t0 = time.perf_counter()
    theta, x, w = jax.block_until_ready(sim(jax.random.fold_in(key, 2), a.batch))
    t_compile_sim = time.perf_counter() - t0

    # simulation alone
    for i in range(a.warmup):
        jax.block_until_ready(sim(jax.random.fold_in(key, 100 + i), a.batch))
    t0 = time.perf_counter()
    out = None
    for i in range(a.steps):
        out = sim(jax.random.fold_in(key, 1000 + i), a.batch)
    jax.block_until_ready(out)
    t_sim = (time.perf_counter() - t0) / a.steps

    space = make_space(survey.spec, np.asarray(theta, np.float64)[np.asarray(w) > 0], cfg)
    config = NPEConfig(flow=flow, embedding=emb)
    val = (theta[:8], x[:8])
    tc = TrainConfig(max_steps=a.warmup + a.steps + 1, batch_size=a.batch, learning_rate=1e-4, warmup_steps=0,
                     val_size=8, eval_every=10**9, patience=0, checkpoint_every=10**9, seed=a.seed)

    def timed_loop(simulate) -> tuple[float, float]:
        """Seconds per step over the timed steps of a training loop, and the first call's seconds."""
        stamps: list[float] = []
        t_start = time.perf_counter()
        train(space, config, tc, simulate=simulate, validation_data=val, progress=False,
              on_step=lambda step, loss: stamps.append(time.perf_counter()))
        first = stamps[0] - t_start
        lo = a.warmup
        return (stamps[lo + a.steps] - stamps[lo]) / a.steps, first

    fixed = (theta, x, w)
    t_net, t_compile_net = timed_loop(lambda k, n: fixed)
    t_both, _ = timed_loop(sim)
    diag = sim.diagnostics()
    res = {
        "device": dev.device_kind, "platform": jax.default_backend(), "jax": jax.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "survey": survey.name, "network": a.network, "n_bins": cfg.n_bins, "batch": a.batch,
        "enrich_fraction": a.enrich, "layout": sim.layout, "points_per_batch": points,
        "pilot_s": t_pilot, "compile_sim_s": t_compile_sim, "first_net_step_s": t_compile_net,
        "sim_s_per_batch": t_sim, "net_s_per_step": t_net, "sim_and_train_s_per_step": t_both,
        "lc_per_s_sim_alone": a.batch / t_sim, "lc_per_s_net_alone": a.batch / t_net,
        "lc_per_s_sim_and_train": a.batch / t_both, "ns_per_point_sim": 1e9 * t_sim / points,
        "diagnostics": diag,
    }
    print(f"pilot {t_pilot:.1f} s, sampler compile + first batch {t_compile_sim:.1f} s, first network step "
          f"{t_compile_net:.1f} s")
    print(f"simulation alone:      {t_sim * 1e3:9.1f} ms per batch  {a.batch / t_sim:10.1f} light curves/s  "
          f"({1e9 * t_sim / points:.1f} ns per point, {points} points)")
    print(f"network step alone:    {t_net * 1e3:9.1f} ms per step   {a.batch / t_net:10.1f} light curves/s")
    print(f"simulation + training: {t_both * 1e3:9.1f} ms per step   {a.batch / t_both:10.1f} light curves/s")
    share = (diag["in_class_prior"] + diag["in_class_candidates"]) / max(diag["rows"], 1.0)
    print(f"diagnostics over {diag['rows']:.0f} rows: class rows {diag['in_class_prior']:.0f} prior + "
          f"{diag['in_class_candidates']:.0f} from {diag['slots']:.0f} slots ({diag['survivors']:.0f} "
          f"survivors, overflow {diag['overflow']:.0f}); refused {diag['refused']:.0f}; unsolved points "
          f"{diag['unsolved_points']:.0f}; class share {share:.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
