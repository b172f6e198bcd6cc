"""Benchmark: amortized inference against NUTS on the same event, same run, same machine.

Prints, for the shipped model (``--model``, default ``roman``) and the shipped Roman example event
(``examples/events/roman_example/``, 2048 points):

1. **10^4 posterior samples of one event** after warm-up (preprocessing + flow; median of
   ``--repeat`` calls) — the amortized step (target ≤ 1 s on the 2-core CPU);
2. **importance sampling** of those 10^4 samples with the exact likelihood (per-dataset fluxes
   marginalised), after warm-up, and the whole ``mulens_sbi.fit`` (flow + IS + summary, no figures);
3. **1000 events batched**: ``--batch-events`` fresh simulated Roman events (seeded), preprocessed,
   ``--batch-samples`` samples each through ``Model.sample_batched``; first call (with compilation)
   and a second, warm call;
4. **numpyro NUTS** on the same event with our likelihood (dense mass, ``--nuts-warmup`` +
   ``--nuts-samples`` draws, 1 chain, started at the true parameters — NUTS's best case, so the
   ratio is conservative; ``--nuts-init best`` starts at the best importance sample), wall time including
   its compilation (as a user experiences it) and the effective samples per second;

and the ratios NUTS / flow and NUTS / (flow + IS). Timings are wall times; the machine may be shared,
so compare ratios from the same run. Usage:

    PYTHONPATH=. python scripts/bench_inference.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

import mulens_sbi  # noqa: F401  (float64)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    jax.block_until_ready(jax.tree_util.tree_leaves(out))
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="roman")
    ap.add_argument("--n", type=int, default=10_000, help="posterior samples of the single event")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-events", type=int, default=1000)
    ap.add_argument("--batch-samples", type=int, default=1000)
    ap.add_argument("--nuts-warmup", type=int, default=300)
    ap.add_argument("--nuts-samples", type=int, default=300)
    ap.add_argument("--nuts-init", choices=("truth", "best"), default="truth")
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.repeat, args.batch_events, args.batch_samples = 1000, 1, 32, 100
        args.nuts_warmup, args.nuts_samples = 30, 30

    from mulens_sbi.demo import example_event_dir
    from mulens_sbi.fit import evaluate_samples, fit, model_priors
    from mulens_sbi.inference.importance import importance_weights, log_prior
    from mulens_sbi.inference.nuts import run_nuts
    from mulens_sbi.models import load_model
    from mulens_sbi.preprocess import preprocess
    from mulens_sbi.readers import read_event
    from mulens_sbi.validation import simulate_events

    res: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "load_avg": os.getloadavg(),
        },
        "settings": vars(args),
    }
    model = load_model(args.model)
    d = example_event_dir()
    if d is None:
        raise SystemExit("examples/events/roman_example/ not found")
    event = read_event([d / "roman_example.dat"], name="roman_example")
    key = jax.random.PRNGKey(0)

    # 1. amortized samples of one event
    _, t_first = timed(model.sample, event, args.n, key)
    times = []
    for r in range(args.repeat):
        _, dt = timed(model.sample, event, args.n, jax.random.PRNGKey(r + 1))
        times.append(dt)
    (samples, log_q), _ = timed(model.sample, event, args.n, key)
    res["flow_first_call_s"] = t_first
    res["flow_samples_s"] = float(np.median(times))
    print(
        f"1. {args.n} posterior samples, one event: first call {t_first:.2f} s (compile), "
        f"then {res['flow_samples_s']:.3f} s (median of {args.repeat})"
    )

    # 2. importance sampling and the whole fit
    evaluate_samples(event, {k: v[:256] for k, v in samples.items()})  # warm-up (compile)
    ev, t_ll = timed(evaluate_samples, event, samples)
    pri = model_priors(model, event)
    lp = np.asarray(log_prior(pri, samples))
    imp = importance_weights(ev["log_likelihood"], lp, log_q)
    res["likelihood_s"] = t_ll
    res["likelihood_us_per_point"] = t_ll / (args.n * event.n_points) * 1e6
    res["is_ess"], res["is_efficiency"] = imp.ess, imp.efficiency
    print(
        f"2. importance sampling of {args.n} samples x {event.n_points} points: {t_ll:.2f} s "
        f"({res['likelihood_us_per_point']:.2f} µs per point); ESS {imp.ess:.0f}, "
        f"efficiency {100 * imp.efficiency:.2f}%"
    )
    fr, t_fit = timed(fit, event, model, n=args.n, seed=0, progress=False)
    res["fit_s"] = t_fit
    print(f"   fit(n={args.n}, refine='is') after warm-up: {t_fit:.2f} s, status {fr.status}")

    # 3. many events batched
    sim = simulate_events("roman", args.batch_events, seed=1234, batch_size=128)
    xs, t_ref = [], []
    t0 = time.perf_counter()
    for i in range(args.batch_events):
        p = preprocess(sim["t"][i], sim["flux"][i], sim["sigma"][i], sim["mask"][i], model.preprocess_config)
        xs.append(p.x)
        t_ref.append(p.t_ref)
    t_pre = time.perf_counter() - t0
    xs, t_ref = np.stack(xs), np.asarray(t_ref)
    _, t_b1 = timed(model.sample_batched, xs, t_ref, args.batch_samples, jax.random.PRNGKey(7))
    _, t_b2 = timed(model.sample_batched, xs, t_ref, args.batch_samples, jax.random.PRNGKey(8))
    res.update(batch_preprocess_s=t_pre, batch_first_s=t_b1, batch_s=t_b2)
    print(
        f"3. {args.batch_events} events x {args.batch_samples} samples, batched: preprocessing "
        f"{t_pre:.2f} s, "
        f"sampling {t_b1:.2f} s first call, {t_b2:.2f} s warm "
        f"({1e3 * (t_pre + t_b2) / args.batch_events:.2f} ms per event)"
    )

    # 4. NUTS on the same event, our likelihood
    if args.nuts_init == "truth":
        truth = json.loads((d / "truth.json").read_text())["parameters"]
        init = {k: float(truth[k]) for k in fr.samples}
    else:
        best = fr.best_index()
        init = {k: float(fr.samples[k][best]) for k in fr.samples}
    prior_spec = {k: (p.dist, p.low, p.high) for k, p in pri.items()}
    (nuts_s, diag), t_nuts = timed(
        run_nuts,
        event,
        init,
        prior_spec,
        num_warmup=args.nuts_warmup,
        num_samples=args.nuts_samples,
        seed=0,
        chains=1,
        pad_to=2048,
    )
    n_eff = min(diag["n_eff"].values())
    res.update(
        nuts_s=t_nuts,
        nuts_min_n_eff=n_eff,
        nuts_divergences=diag["divergences"],
        nuts_steps_mean=diag["num_steps_mean"],
    )
    print(
        f"4. NUTS {args.nuts_warmup}+{args.nuts_samples} draws: {t_nuts:.1f} s (incl. compile), "
        f"min ESS {n_eff:.0f} ({n_eff / t_nuts:.2f} effective samples/s), {diag['divergences']} divergences, "
        f"{diag['num_steps_mean']:.0f} leapfrog steps per draw"
    )

    res["ratio_nuts_over_flow"] = t_nuts / res["flow_samples_s"]
    res["ratio_nuts_over_flow_plus_is"] = t_nuts / (res["flow_samples_s"] + t_ll)
    print(
        f"ratios: NUTS / flow samples = {res['ratio_nuts_over_flow']:.0f}x; "
        f"NUTS / (flow + importance sampling) = {res['ratio_nuts_over_flow_plus_is']:.1f}x"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
