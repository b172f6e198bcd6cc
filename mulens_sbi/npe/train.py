"""Training loop for the neural posterior estimator (forward-KL / maximum likelihood on simulations).

Data comes either from a simulator callable ``simulate(key, n) -> (theta, x)`` (theta physical,
(n, D); x an array or pytree of arrays with leading axis n), called afresh for every step (so
noise, gaps and dropout can be drawn on the fly), or from arrays ``data=(theta, x)``.

Reproducibility and resumption: everything random derives from ``TrainConfig.seed``:
``k_init, k_val, k_train = split(PRNGKey(seed), 3)``; the batch of step s uses ``fold_in(k_train, s)``
(simulator) or the shuffle ``permutation(fold_in(k_train, epoch))`` (arrays). A checkpoint stores the
parameters, optimizer state, best parameters and every scalar of the loop (losses, early-stopping
counters, history), so a run killed at any point and resumed from its last checkpoint ends with
bit-identical parameters to an uninterrupted run on the same device and library versions.

Rows whose theta (after the parameter transforms) or x contain NaN/inf are zeroed and excluded from
the loss (never silently: their count is in the history and a warning is issued at the end).

Optimizer: AdamW (global-norm clipping, Adam moments, decoupled weight decay) with the warm-up +
cosine schedule of ``make_schedule``.

Wrap a pure-JAX simulator in ``jax.jit`` yourself; the loop calls it as given. Nothing here is
device specific: the same code runs on CPU and GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from mulens_sbi.npe.checkpoint import load_train_state, save_train_state, versions
from mulens_sbi.npe.config import NPEConfig, TrainConfig
from mulens_sbi.npe.model import NPEModel, init_params
from mulens_sbi.npe.posterior import Posterior
from mulens_sbi.npe.transforms import ParameterSpace

__all__ = ["train", "TrainResult", "make_schedule"]

Simulator = Callable[[jax.Array, int], tuple[Any, Any]]


@dataclass
class TrainResult:
    """Outcome of ``train``: the posterior (best validation parameters) and the loop's record."""

    posterior: Posterior
    history: list[dict] = field(default_factory=list)
    best_step: int = -1
    best_val_loss: float = math.inf
    steps_done: int = 0
    stopped_early: bool = False
    n_nonfinite: int = 0
    wall_time_s: float = 0.0
    final_params: Any = None


def make_schedule(tc: TrainConfig) -> Callable[[int], float]:
    """Learning rate per step: linear warm-up from 0, then cosine decay to lr * final_lr_fraction."""
    if tc.warmup_steps > 0:
        return optax.warmup_cosine_decay_schedule(0.0, tc.learning_rate, tc.warmup_steps, tc.max_steps,
                                                  tc.learning_rate * tc.final_lr_fraction)
    return optax.cosine_decay_schedule(tc.learning_rate, tc.max_steps, tc.final_lr_fraction)


def adam_direction() -> optax.GradientTransformation:
    """The optimizer's update direction (Adam moments; its state is the optimizer state of a
    checkpoint)."""
    # AdamW without the learning rate: clip (traced max norm), Adam moments. The step size, weight
    # decay and clip norm are passed to the jitted step as arrays, so runs that differ only in those
    # (or in the schedule) share one compilation.
    return optax.scale_by_adam()


def _rows_finite(theta_z, x):
    ok = jnp.all(jnp.isfinite(theta_z), axis=-1)
    for leaf in jax.tree_util.tree_leaves(x):
        ok = ok & jnp.all(jnp.isfinite(leaf).reshape(leaf.shape[0], -1), axis=-1)
    return ok


def _loss(params, theta, x, config: NPEConfig, space: ParameterSpace, weights=None):
    """Mean of ``-weights · log q(theta | x)`` over the finite rows (weights 1 when None; with an
    enriched training mixture they are prior / mixture density ratios, mean 1 under the mixture)."""
    model = NPEModel(config, space.dim)
    z = space.to_network(theta)
    ok = _rows_finite(z, x)
    z = jnp.where(ok[:, None], z, 0.0)
    x = jax.tree_util.tree_map(
        lambda a: jnp.where(ok.reshape((-1,) + (1,) * (a.ndim - 1)), a, jnp.zeros((), a.dtype)), x)
    lp = model.apply(params, z, x).astype(jnp.result_type(float))
    if weights is not None:
        lp = lp * weights.astype(lp.dtype)
    n_ok = jnp.sum(ok)
    loss = -jnp.sum(jnp.where(ok, lp, 0.0)) / jnp.maximum(n_ok, 1)
    return loss, (n_ok, ok.shape[0] - n_ok)


# Module-level jitted kernels, static in the (hashable) configs: repeated or resumed runs with the same
# settings share one compilation.
@functools.partial(jax.jit, static_argnames=("config", "space"))
def _train_step(params, opt_state, theta, x, lr, clip_norm, weight_decay, config: NPEConfig,
                space: ParameterSpace, weights=None):
    """One AdamW step: clip by global norm, Adam direction, decoupled weight decay, step size lr
    (``weights``: per-row loss weights, None for 1)."""
    (loss, (_, n_bad)), grads = jax.value_and_grad(_loss, has_aux=True)(params, theta, x, config, space,
                                                                        weights)
    grads, _ = optax.clip_by_global_norm(clip_norm).update(grads, optax.EmptyState())
    direction, opt_state = adam_direction().update(grads, opt_state, params)
    params = jax.tree_util.tree_map(lambda p, d: p - lr * (d + weight_decay * p).astype(p.dtype),
                                    params, direction)
    return params, opt_state, loss, n_bad


@functools.partial(jax.jit, static_argnames=("config", "space"))
def _eval_step(params, theta, x, config: NPEConfig, space: ParameterSpace):
    loss, (n_ok, _) = _loss(params, theta, x, config, space)
    return loss * n_ok, n_ok


def _fingerprint(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _take(x, idx):
    return jax.tree_util.tree_map(lambda a: jnp.take(jnp.asarray(a), idx, axis=0), x)


def _n_rows(x) -> int:
    sizes = {np.shape(a)[0] for a in jax.tree_util.tree_leaves(x)}
    if len(sizes) != 1:
        raise ValueError(f"x leaves must share one leading size, got {sorted(sizes)}")
    return sizes.pop()


def differing_keys(a: dict, b: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Sorted keys (outside ``ignore``) whose values differ between the two dicts."""
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))


def warm_start_record(post: Posterior) -> dict[str, Any]:
    """What the metadata records of a warm start's initial model: its folder, steps, time, device and
    training-set size, its flow refit (``mulens_sbi.refit``) if it had one, its own warm start, and
    the steps and time of its whole lineage (itself, its refit and the models it was warm-started
    from), so that a fine-tuned model's card can say how every part of it was made."""
    tr = post.metadata.get("training", {})
    steps, wall = tr.get("steps_done") or 0, tr.get("train_wall_s_total") or 0.0
    before = tr.get("init_from") or {}
    rf = post.metadata.get("refit")
    refit = None if not rf else {
        k: rf.get(k) for k in ("data", "n_rows", "n_draws", "enrich", "n_enrich_rows", "steps_done",
                               "best_val_loss", "wall_time_s", "device")}
    return {"source": str(post.metadata.get("_loaded_from", {}).get("path", "in memory")),
            "steps_done": tr.get("steps_done"), "train_wall_s_total": tr.get("train_wall_s_total"),
            "device": tr.get("device"), "platform": tr.get("platform"),
            "n_train_rows": post.metadata.get("provenance", {}).get("n_train_rows"),
            "refit": refit, "init_from": before or None,
            "lineage_steps": steps + before.get("lineage_steps", before.get("steps_done") or 0),
            "lineage_wall_s": wall + ((refit["wall_time_s"] or 0.0) if refit else 0.0)
            + before.get("lineage_wall_s", before.get("train_wall_s_total") or 0.0)}


def _warm_start(params, post: Posterior, config: NPEConfig, space: ParameterSpace):
    """The trained posterior's weights, checked against a fresh initialization's tree."""
    diff = differing_keys(post.config.to_dict(), config.to_dict())
    if diff:
        raise ValueError(f"init_from: network configuration differs from this run's at {diff}")
    diff = differing_keys(post.space.to_dict(), space.to_dict())
    if diff:
        raise ValueError(f"init_from: parameter space differs from this run's at {diff} (train on the same "
                         f"simulation folder)")
    want = jax.tree_util.tree_structure(params)
    got = jax.tree_util.tree_structure(post.params)
    if want != got:
        raise ValueError("init_from: weight tree differs from this configuration's")
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(post.params), strict=True):
        if a.shape != np.shape(b):
            raise ValueError(f"init_from: weight shape {np.shape(b)} differs from {a.shape}")
    return jax.tree_util.tree_map(lambda a, b: jnp.asarray(b, a.dtype), params, post.params)


def train(
    space: ParameterSpace,
    config: NPEConfig,
    train_config: TrainConfig,
    *,
    simulate: Simulator | None = None,
    data: tuple[Any, Any] | None = None,
    validation_data: tuple[Any, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    provenance: dict | None = None,
    on_step: Callable[[int, float], None] | None = None,
    init_from: Posterior | None = None,
    data_info: dict | None = None,
    budget_s: float = 0.0,
) -> TrainResult:
    """Train q(theta | x); return the posterior with the best validation parameters.

    Args:
        space: parameter space (theta from the data is physical; the loss is in network space).
        config: network configuration; train_config: loop settings.
        simulate: ``simulate(key, n) -> (theta (n, D), x)`` or ``(theta, x, weights (n,))`` (per-row
            loss weights, e.g. for an enriched mixture); exactly one of simulate / data.
        data: ``(theta (N, D), x)`` arrays; ``val_size`` rows (seeded shuffle) are held out.
        validation_data: with ``simulate``: a fixed ``(theta, x)`` validation set (e.g. rows held out of
            a stored training set) used instead of ``simulate(k_val, val_size)``; its first ``val_size``
            rows are used.
        checkpoint_dir: where to checkpoint every ``checkpoint_every`` steps (and at the end).
        resume: continue from a checkpoint in ``checkpoint_dir`` (it must come from the same settings).
        overwrite: with ``resume=False``, discard an existing checkpoint instead of raising.
        progress: show a tqdm bar.
        provenance: JSON-able description of the data (simulator spec, survey, ...), stored in the
            posterior's metadata.
        on_step: called as ``on_step(step, loss)`` after each step (monitoring; an exception raised
            here stops training like a kill would).
        init_from: warm start (fine-tuning): begin from this trained posterior's weights instead of a
            random initialization, with a fresh optimizer and schedule. Its network configuration and
            parameter space must equal ``config`` and ``space`` (an error names the first difference).
        data_info: JSON-able description of the training data beyond its kind (e.g. an enrichment
            mixture); part of the checkpoint fingerprint, so a resume with other data is refused.
        budget_s: a wall-time budget (seconds, 0 = none) that sets the schedule's length: at the end
            of the learning-rate warm-up (which does not depend on the length) the step rate measured
            over the warm-up fixes the number of steps, ``min(max_steps, steps that fit in the time
            left)``, so the cosine decay ends when the time does. The number is stored in the
            checkpoint (a resume keeps it) and in the metadata (``max_steps_effective``); needs
            ``warmup_steps >= 50``.
    """
    if (simulate is None) == (data is None):
        raise ValueError("give exactly one of simulate= or data=")
    tc = train_config
    if budget_s and tc.warmup_steps < 50:
        raise ValueError(f"budget_s needs warmup_steps >= 50 (the step rate is measured during the "
                         f"warm-up), got {tc.warmup_steps}")
    t_wall = time.perf_counter()
    root = jax.random.PRNGKey(tc.seed)
    k_init, k_val, k_train = jax.random.split(root, 3)

    # ---------------------------------------------------------------- data
    if validation_data is not None and simulate is None:
        raise ValueError("validation_data= is only used with simulate=")
    if simulate is not None:
        if validation_data is None:
            theta_val, x_val = simulate(k_val, tc.val_size)
            source = {"kind": "simulator", "val_size": tc.val_size}
        else:
            theta_val = jnp.asarray(validation_data[0])[:tc.val_size]
            x_val = _take(validation_data[1], jnp.arange(min(tc.val_size, theta_val.shape[0])))
            if theta_val.shape[0] < tc.val_size:
                raise ValueError(f"validation_data has {theta_val.shape[0]} rows; val_size is {tc.val_size}")
            source = {"kind": "simulator", "val_size": tc.val_size, "validation": "given"}
        n_train = None
    else:
        theta_all, x_all = data
        theta_all = jnp.asarray(theta_all)
        n_all = _n_rows(x_all)
        if theta_all.shape != (n_all, space.dim):
            raise ValueError(f"data theta must have shape ({n_all}, {space.dim}), got {theta_all.shape}")
        if n_all < tc.val_size + tc.batch_size:
            raise ValueError(f"data has {n_all} rows; need at least val_size + batch_size = "
                             f"{tc.val_size + tc.batch_size}")
        perm = jax.random.permutation(k_val, n_all)
        val_idx, tr_idx = perm[:tc.val_size], perm[tc.val_size:]
        theta_val, x_val = theta_all[val_idx], _take(x_all, val_idx)
        theta_tr, x_tr = theta_all[tr_idx], _take(x_all, tr_idx)
        n_train = int(tr_idx.shape[0])
        source = {"kind": "arrays", "n_rows": n_all, "val_size": tc.val_size}
    if data_info:
        source = {**source, "data": data_info}
    theta_val = jnp.asarray(theta_val)
    x_val = jax.tree_util.tree_map(jnp.asarray, x_val)

    # ---------------------------------------------------------------- model/optimizer
    _, params = init_params(config, space.dim, _take(x_val, jnp.arange(1)), k_init)
    init_info = None
    if init_from is not None:
        params = _warm_start(params, init_from, config, space)
        init_info = warm_start_record(init_from)
        source = {**source, "init_from": init_info}
    opt_state = adam_direction().init(params)
    schedule = make_schedule(tc)

    def val_loss(params) -> float:
        tot, cnt = 0.0, 0
        for s in range(0, tc.val_size, tc.batch_size):
            idx = jnp.arange(s, min(s + tc.batch_size, tc.val_size))
            a, b = _eval_step(params, theta_val[idx], _take(x_val, idx), config, space)
            tot, cnt = tot + float(a), cnt + int(b)
        return tot / max(cnt, 1)

    if simulate is not None:
        def batch(step):
            return simulate(jax.random.fold_in(k_train, step), tc.batch_size)
    else:
        spe = n_train // tc.batch_size
        cache: dict[int, jax.Array] = {}

        def batch(step):
            epoch, j = divmod(step, spe)
            if epoch not in cache:
                cache.clear()
                cache[epoch] = jax.random.permutation(jax.random.fold_in(k_train, epoch), n_train)
            idx = cache[epoch][j * tc.batch_size:(j + 1) * tc.batch_size]
            return theta_tr[idx], _take(x_tr, idx)

    # ---------------------------------------------------------------- state / resume
    fingerprint = _fingerprint({"config": config.to_dict(), "train": tc.to_dict(), "space": space.to_dict(),
                                "source": source})
    st = {"step": 0, "best_val": math.inf, "best_step": -1, "bad_evals": 0, "history": [],
          "loss_sum": 0.0, "loss_count": 0, "n_nonfinite": 0, "finished": False, "stopped_early": False,
          "fingerprint": fingerprint, "max_steps": tc.max_steps, "budget_fixed": not budget_s}
    best_params = params
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckdir is not None and (ckdir / "state.json").exists():
        if not resume:
            if not overwrite:
                raise FileExistsError(f"{ckdir / 'state.json'} exists; pass resume=True to continue it or "
                                      f"overwrite=True to start over")
            shutil.rmtree(ckdir)
        else:
            template = {"params": params, "opt_state": opt_state, "best_params": params}
            loaded = load_train_state(ckdir, template)
            arrays, rec = loaded
            if rec.get("fingerprint") != fingerprint:
                raise ValueError(f"{ckdir / 'state.json'} was written by a run with different settings "
                                 f"(fingerprint {rec.get('fingerprint')} != {fingerprint}); use another "
                                 f"checkpoint_dir or resume=False, overwrite=True")
            params, opt_state, best_params = arrays["params"], arrays["opt_state"], arrays["best_params"]
            params = jax.tree_util.tree_map(jnp.asarray, params)
            best_params = jax.tree_util.tree_map(jnp.asarray, best_params)
            opt_state = jax.tree_util.tree_map(jnp.asarray, opt_state)
            st = {k: rec.get(k, st[k]) for k in st}  # (checkpoints before budgets lack the last two)

    def commit():
        if ckdir is not None:
            save_train_state(ckdir, {"params": params, "opt_state": opt_state, "best_params": best_params},
                             st)

    if not budget_s:
        st["budget_fixed"] = True  # a resume without a budget keeps the count it has
    schedule = make_schedule(dataclasses.replace(tc, max_steps=st["max_steps"]))
    # the rate is timed from a few steps into this session (the first ones compile) to >= 20 steps later
    probe_from = max(tc.warmup_steps // 4, st["step"] + 5)
    t_probe, probe_step = None, 0

    # ---------------------------------------------------------------- loop
    bar = tqdm(total=st["max_steps"], initial=st["step"], disable=not progress, desc="npe train",
               dynamic_ncols=True)
    try:
        while not st["finished"] and st["step"] < st["max_steps"]:
            step = st["step"]
            if not st["budget_fixed"] and t_probe is None and step >= probe_from:
                t_probe, probe_step = time.perf_counter(), step  # (a resume may start past probe_from)
            elif (not st["budget_fixed"] and t_probe is not None and step >= tc.warmup_steps
                  and step - probe_step >= 20):
                now = time.perf_counter()
                rate = (step - probe_step) / (now - t_probe)
                fit = step + int(0.95 * rate * (budget_s - (now - t_wall)))
                st["max_steps"] = max(step + 1, min(tc.max_steps, fit))
                st["budget_fixed"] = True
                schedule = make_schedule(dataclasses.replace(tc, max_steps=st["max_steps"]))
                bar.total = st["max_steps"]
                bar.refresh()
                commit()
            theta_b, x_b, *w_b = batch(step)
            params, opt_state, loss, n_bad = _train_step(
                params, opt_state, jnp.asarray(theta_b), x_b, jnp.float32(schedule(step)),
                jnp.float32(tc.clip_norm), jnp.float32(tc.weight_decay), config, space,
                jnp.asarray(w_b[0], jnp.float32) if w_b else None)
            loss_f = float(loss)
            st["step"] = step + 1
            st["loss_sum"] += loss_f
            st["loss_count"] += 1
            st["n_nonfinite"] += int(n_bad)
            if on_step is not None:
                on_step(step, loss_f)
            done = st["step"] >= st["max_steps"]
            if st["step"] % tc.eval_every == 0 or done:
                vl = val_loss(params)
                tl = st["loss_sum"] / max(st["loss_count"], 1)
                st["history"].append({"step": st["step"], "train_loss": tl, "val_loss": vl})
                st["loss_sum"], st["loss_count"] = 0.0, 0
                if vl < st["best_val"] - tc.min_delta:
                    st["best_val"], st["best_step"], st["bad_evals"] = vl, st["step"], 0
                    best_params = params
                else:
                    st["bad_evals"] += 1
                    if tc.patience and st["bad_evals"] >= tc.patience:
                        st["stopped_early"] = True
                        done = True
                bar.set_postfix(train=f"{tl:.3f}", val=f"{vl:.3f}", best=f"{st['best_val']:.3f}")
            bar.update(1)
            if done:
                st["finished"] = True
                commit()
            elif st["step"] % tc.checkpoint_every == 0:
                commit()
    finally:
        bar.close()

    if st["n_nonfinite"]:
        warnings.warn(f"{st['n_nonfinite']} training rows had non-finite theta/x and were excluded from the "
                      f"loss", RuntimeWarning, stacklevel=2)
    wall = time.perf_counter() - t_wall
    meta = {
        "training": {
            "train_config": tc.to_dict(),
            "data_source": source,
            "init_from": init_info,
            "steps_done": st["step"],
            "max_steps_effective": st["max_steps"],
            "budget_s": budget_s,
            "best_step": st["best_step"],
            "best_val_loss": st["best_val"],
            "stopped_early": st["stopped_early"],
            "n_nonfinite_rows": st["n_nonfinite"],
            "wall_time_s_last_session": wall,
            "device": str(jax.devices()[0].device_kind),
            "platform": jax.default_backend(),
            "versions": versions(),
            "history": st["history"],
        },
        "provenance": provenance or {},
    }
    post = Posterior(config, space, jax.device_get(best_params), meta)
    return TrainResult(post, st["history"], st["best_step"], st["best_val"], st["step"], st["stopped_early"],
                       st["n_nonfinite"], wall, jax.device_get(params))
