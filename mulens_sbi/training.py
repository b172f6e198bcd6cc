"""Train a survey's amortized posterior: simulate output (or on-the-fly simulation) -> npe.train.

Data flow:

1. **Pre-binning** (once, :func:`prepare_binned`): every stored light curve of a
   ``mulens-sbi simulate`` folder goes through steps 1-4 of :mod:`mulens_sbi.preprocess` with its
   *noiseless* flux ``flux_true`` and the noise model's ``sigma``: ``t_ref`` is the peak estimate of
   the stored noisy realisation ``flux`` (a data-derived estimate, as at inference), then the
   inverse-variance binned noiseless flux and its error per cell. The result is cached in an ``.npz``
   next to the training output (``binned_cache``), keyed by the preprocessing settings.
2. **Noise on the fly** (every step, :class:`BinnedSimulator`): a batch of rows is drawn, fresh
   Gaussian noise ``err * N(0, 1)`` is added to the binned noiseless flux (exact in distribution:
   the weighted mean of Gaussian points is Gaussian with that error) and step 5 of the preprocessing
   (:func:`mulens_sbi.preprocess.network_input`) normalizes it. So each epoch sees new noise.
3. :func:`mulens_sbi.npe.train.train` with a :class:`mulens_sbi.npe.ParameterSpace` over
   ``(dt_0, u_0, t_E, s, q, alpha)`` (``dt_0 = t_0 - t_ref``; transforms identity, identity, log,
   log, log, identity), bounds from the survey spec's priors, standardization fitted on the training
   rows. A fixed validation set (held-out rows, noise drawn once from the seed) drives early stopping.

Shards: by default the last ``holdout_shards`` shards are never used here (they are for
``mulens-sbi validate``); of the remaining rows, ``val_size`` are the validation set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from mulens_sbi.npe.checkpoint import save_posterior
from mulens_sbi.npe.config import EmbeddingConfig, FlowConfig, NPEConfig, TrainConfig
from mulens_sbi.npe.train import train as npe_train
from mulens_sbi.npe.transforms import ParameterSpace
from mulens_sbi.preprocess import PreprocessConfig, bin_points, estimate_peak_time, network_input
from mulens_sbi.simulate import cpu_worker

if TYPE_CHECKING:
    from mulens_sbi.stream import StreamPlan

__all__ = [
    "TrainSettings",
    "PHYSICAL_NAMES",
    "NETWORK_NAMES",
    "make_space",
    "read_shards",
    "prepare_binned",
    "BinnedSimulator",
    "DeviceSampler",
    "NETWORKS",
    "mixture_rows",
    "mixture_weights",
    "run_training",
]

#: physical parameters of a binary-lens point-source model, in network order
PHYSICAL_NAMES = ("t_0", "u_0", "t_E", "s", "q", "alpha")
#: names on the network side (t_0 is learned relative to the data's reference time)
NETWORK_NAMES = ("dt_0", "u_0", "t_E", "s", "q", "alpha")
_TRANSFORMS = ("identity", "identity", "log", "log", "log", "identity")


#: named networks (``mulens-sbi train --network``): preprocessing, embedding and flow settings.
#: ``standard`` bins the light curve onto 512 warped cells (20 min at the peak, 0.3 d at 10 d from
#: it); ``fine`` onto 2048 (5 min at the peak, 0.07 d at 10 d), with a residual block per stage, a
#: wider context and a deeper flow: for anomalies far from the peak (planetary-caustic crossings),
#: meant for training on a GPU.
NETWORKS: dict[str, tuple[PreprocessConfig, EmbeddingConfig, FlowConfig]] = {
    "standard": (PreprocessConfig(),
                 EmbeddingConfig(kind="binned_conv", out_dim=64, hidden=(128,), n_bins=512,
                                 channels=(32, 32, 64, 64, 96, 128), blocks_per_stage=0, kernel_size=5),
                 FlowConfig(n_layers=6, hidden=(128, 128), n_bins=8)),
    "fine": (PreprocessConfig(n_bins=2048),
             EmbeddingConfig(kind="binned_conv", out_dim=128, hidden=(256,), n_bins=2048,
                             channels=(32, 48, 64, 96, 128, 128, 160, 192), blocks_per_stage=1,
                             kernel_size=5),
             FlowConfig(n_layers=8, hidden=(128, 128), n_bins=10)),
}


@dataclass(frozen=True)
class TrainSettings:
    """Everything ``mulens-sbi train`` needs (stored in the model's metadata).

    Attributes:
        data: a ``mulens-sbi simulate`` output folder.
        out: model folder to write (weights + posterior.json + training.json).
        checkpoint_dir: training-state folder (default ``<out>/_checkpoint``); a killed run resumes.
        holdout_shards: last shards kept out of training (for validation).
        max_train_shards: use at most this many shards for training (0 = all but the hold-out).
        binned_cache: cache file of the pre-binned set (default ``<checkpoint_dir>/binned_train.npz``).
        preprocess: preprocessing settings; embedding/flow/train: network and loop settings.
        max_minutes: stop (resumably) after this much wall time in this session (0 = no limit).
        stop: do not train: save the best parameters of the checkpoint as the model now (for a
            run that is out of time; the metadata records the steps actually done).
        overwrite: replace an existing model in ``out`` / restart the checkpoint.
        init_from: warm start from this model folder's weights (fine-tuning with a fresh schedule;
            same network and simulation folder); None trains from a random initialization.
        enrich: a ``mulens-sbi simulate --condition`` folder of the same spec (rare-event class,
            e.g. caustic crossings): each training row comes from it with probability
            ``enrich_fraction`` and is weighted back to the prior (see :class:`MixtureSimulator`).
        enrich_fraction: the mixture weight λ of the enrichment rows (0 < λ < 1).
        sharp_weight: loss weight H >= 1 of light curves with a sharp feature (see
            :func:`sharp_feature`; a function of the network input only, so the posterior the loss
            targets is unchanged); 1 = off.
        sharp_threshold: the feature statistic's threshold (in units of its noise).
        sampler: ``host`` draws each batch's rows and noise with numpy on the host; ``device`` keeps
            the pre-binned set on the accelerator and draws them there with ``jax.random`` (same
            distribution, another random stream; the host path is too slow to feed a GPU).
        budget_minutes: fit the schedule's length to this wall time (see ``budget_s`` of
            :func:`mulens_sbi.npe.train.train`; 0 = ``max_steps`` steps).
        workers: processes for pre-binning and class flags (1 = this process).
        stream_rows: simulate this many further prior light curves *while training* (the next
            shards of ``data``, with its seed) and add them to the training set as they arrive
            (:mod:`mulens_sbi.stream`; needs ``sampler="device"``); 0 = off.
        stream_enrich_rows: the same for the enrichment folder (needs ``enrich``).
        stream_workers: processes simulating the streamed shards (0 = ``workers``).
        progress: show progress bars.
    """

    data: str
    out: str
    checkpoint_dir: str | None = None
    holdout_shards: int = 5
    max_train_shards: int = 0
    binned_cache: str | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    embedding: EmbeddingConfig = field(default_factory=lambda: NETWORKS["standard"][1])
    flow: FlowConfig = field(default_factory=lambda: NETWORKS["standard"][2])
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=4000, batch_size=128, learning_rate=1e-3, warmup_steps=100, val_size=2048,
        eval_every=200, patience=10, checkpoint_every=100, seed=0))
    max_minutes: float = 0.0
    stop: bool = False
    overwrite: bool = False
    init_from: str | None = None
    enrich: str | None = None
    enrich_fraction: float = 0.25
    sharp_weight: float = 1.0
    sharp_threshold: float = 8.0
    sampler: str = "host"
    budget_minutes: float = 0.0
    workers: int = 1
    stream_rows: int = 0
    stream_enrich_rows: int = 0
    stream_workers: int = 0
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["embedding"] = self.embedding.to_dict()
        d["flow"] = self.flow.to_dict()
        d["train"] = self.train.to_dict()
        return d


# ----------------------------------------------------------------------------------------------
# parameter space


def make_space(survey_spec, theta_net: np.ndarray | None, cfg: PreprocessConfig) -> ParameterSpace:
    """The network-side space: bounds from the spec's priors (dt_0 within +- H), standardization from
    ``theta_net`` (rows of NETWORK_NAMES; None: from the bounds)."""
    lo, hi = [-cfg.half_width_days], [cfg.half_width_days]
    for name in NETWORK_NAMES[1:]:
        p = survey_spec.priors.get(name)
        if p is None or p.dist not in ("uniform", "log_uniform"):
            raise ValueError(f"survey {survey_spec.name!r}: prior of {name!r} must be uniform or log_uniform "
                             f"for this model, got {getattr(p, 'dist', None)!r}")
        lo.append(float(p.low))
        hi.append(float(p.high))
    space = ParameterSpace.create(NETWORK_NAMES, _TRANSFORMS, lo, hi)
    if theta_net is not None:
        space = space.standardized_from_samples(theta_net)
    return space


# ----------------------------------------------------------------------------------------------
# reading and pre-binning


_SERIES = ("t", "flux", "flux_true", "sigma", "mask")


def read_shards(files: list[Path], columns: tuple[str, ...] = PHYSICAL_NAMES + ("f_s", "f_b") + _SERIES
                ) -> dict[str, np.ndarray]:
    """Read some parquet shards of a simulate folder (series columns as (rows, n_points))."""
    parts = [table_arrays(pq.read_table(f, columns=list(columns)), columns) for f in files]
    return {c: np.concatenate([p[c] for p in parts]) for c in columns}


def table_arrays(tab: pa.Table, columns: tuple[str, ...] = PHYSICAL_NAMES + ("f_s", "f_b") + _SERIES
                 ) -> dict[str, np.ndarray]:
    """Columns of a shard's arrow table as numpy arrays (series columns as (rows, n_points))."""
    out = {}
    for c in columns:
        col = tab[c].combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            out[c] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(tab), -1)
        else:
            out[c] = col.to_numpy(zero_copy_only=False)
    return out


def _bin_rows(d: dict[str, np.ndarray], cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    mask = d["mask"].astype(bool)
    t_ref = estimate_peak_time(d["t"], d["flux"], d["sigma"], mask, cfg.smooth_points)
    mean, err, cnt = bin_points(d["t"], d["flux_true"], d["sigma"], mask, t_ref, cfg)
    theta = np.stack([d[n] for n in PHYSICAL_NAMES], axis=1).astype(np.float64)
    theta_net = theta.copy()
    theta_net[:, 0] = theta[:, 0] - t_ref
    return {"theta_net": theta_net, "t_ref": t_ref, "mean": mean.astype(np.float32),
            "err": err.astype(np.float32), "count": np.minimum(cnt, 65535).astype(np.uint16),
            "f_s": d["f_s"], "f_b": d["f_b"]}


def shard_files(data: str | Path) -> list[Path]:
    files = sorted(Path(data).glob("shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{data}: no shard-*.parquet files (not a mulens-sbi simulate folder)")
    return files


def _cached(cache: str | Path | None, key_obj: dict, compute) -> dict[str, np.ndarray]:
    """``compute()`` (a dict of arrays), cached in the ``.npz`` ``cache`` under a key hashed from
    ``key_obj``: a cache written with another key is recomputed and replaced (atomically)."""
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()[:16]
    if cache is not None and Path(cache).exists():
        z = np.load(cache)
        if str(z["key"]) == key:
            return {k: z[k] for k in z.files if k != "key"}
    out = compute()
    if cache is not None:
        tmp = Path(str(cache) + ".tmp.npz")
        np.savez(tmp, key=np.array(key), **out)
        tmp.rename(cache)
    return out


def _files_key(files: list[Path]) -> dict:
    return {"files": [f.name for f in files], "sizes": [f.stat().st_size for f in files]}


def map_files(fn, files: list[Path], workers: int, desc: str, progress: bool) -> list:
    """``[fn(f) for f in files]``, in ``workers`` spawned CPU processes when ``workers > 1`` (``fn``
    must be picklable: a module-level function or a ``functools.partial`` of one)."""
    if workers <= 1 or len(files) < 2:
        return [fn(f) for f in tqdm(files, desc=desc, disable=not progress)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(files)), mp_context=ctx, initializer=cpu_worker) as pool:
        return list(tqdm(pool.map(fn, files), total=len(files), desc=desc, disable=not progress))


def _bin_file(f: Path, cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    return _bin_rows(read_shards([f]), cfg)


def prepare_binned(files: list[Path], cfg: PreprocessConfig, cache: str | Path | None = None,
                   progress: bool = True, workers: int = 1) -> dict[str, np.ndarray]:
    """Pre-bin shards (see the module docstring); cached in ``cache`` if given."""

    def compute():
        parts = map_files(functools.partial(_bin_file, cfg=cfg), files, workers, "pre-binning shards",
                          progress)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    return _cached(cache, {"cfg": cfg.to_dict(), **_files_key(files)}, compute)


# ----------------------------------------------------------------------------------------------
# noise on the fly


def accepted_mask(binned: dict[str, np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """(rows,) bool: the pre-binned rows that :func:`mulens_sbi.preprocess.preprocess` would accept
    (at least ``min_points`` points in the view and ``min_cells`` filled cells)."""
    cnt = binned["count"]
    return (cnt.sum(axis=1) >= cfg.min_points) & ((cnt > 0).sum(axis=1) >= cfg.min_cells)


def accepted_rows(binned: dict[str, np.ndarray], cfg: PreprocessConfig) -> tuple[dict[str, np.ndarray], int]:
    """The pre-binned rows that :func:`mulens_sbi.preprocess.preprocess` would accept (see
    :func:`accepted_mask`), and how many were dropped."""
    keep = accepted_mask(binned, cfg)
    n_drop = int((~keep).sum())
    if not n_drop:
        return binned, 0
    return {k: v[keep] for k, v in binned.items()}, n_drop


@jax.jit
def _noisy(mean, err, noise):
    return mean + err * noise


def _rng_from_key(key) -> np.random.Generator:
    """A numpy generator seeded from a JAX key (typed or raw), so that a training step's rows and
    noise are a pure function of the loop's key."""
    seed = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                      else key).astype(np.uint32).tolist()
    return np.random.default_rng(seed)


class BinnedSimulator:
    """``simulate(key, n) -> (theta_net, x)`` over pre-binned rows with fresh noise per call.

    Rows are drawn uniformly with replacement by a numpy generator seeded from the JAX key (so the
    training loop's seeding and resumption stay exact)."""

    def __init__(self, binned: dict[str, np.ndarray], cfg: PreprocessConfig):
        self.theta = binned["theta_net"]
        self.mean = binned["mean"]
        self.err = binned["err"]
        self.count = binned["count"]
        self.cfg = cfg
        self._net = jax.jit(lambda m, e, c: network_input(m, e, c, cfg))

    def __len__(self) -> int:
        return self.theta.shape[0]

    def inputs(self, mean, err, count, rng: np.random.Generator):
        """Network inputs of binned noiseless rows with fresh noise drawn from ``rng``."""
        noise = rng.standard_normal(mean.shape, dtype=np.float32)
        return self._net(_noisy(mean, err, noise), err, count)

    def rows(self, idx: np.ndarray, rng: np.random.Generator):
        return jnp.asarray(self.theta[idx]), self.inputs(self.mean[idx], self.err[idx], self.count[idx], rng)

    def __call__(self, key, n: int):
        rng = _rng_from_key(key)
        idx = rng.integers(0, len(self), size=n)
        return self.rows(idx, rng)


@jax.jit
def sharp_feature(x):
    """(B,) the largest second difference of the normalized binned flux over three consecutive
    filled cells, in units of its own noise: ``max |f[i+1] − 2f[i] + f[i−1]| / sqrt(e[i+1]² + 4e[i]² +
    e[i−1]²)`` on the network input ``x`` (B, n_bins, 4). Pure noise gives ~N(0, 1) per triple;
    caustic crossings and cusp approaches give tens to thousands. A function of the observed light
    curve only."""
    f, e, has = x[..., 1], x[..., 2], x[..., 3] > 0
    d2 = f[..., 2:] - 2.0 * f[..., 1:-1] + f[..., :-2]
    v = e[..., 2:] ** 2 + 4.0 * e[..., 1:-1] ** 2 + e[..., :-2] ** 2
    ok = has[..., 2:] & has[..., 1:-1] & has[..., :-2]
    z = jnp.where(ok, jnp.abs(d2) / jnp.sqrt(jnp.maximum(v, 1e-30)), 0.0)
    return jnp.max(z, axis=-1)


class SharpEmphasis:
    """Wraps a simulator: rows whose light curve has a sharp feature (:func:`sharp_feature` above
    ``threshold``) get loss weight ``weight`` (H), the others 1 (times the wrapped simulator's own
    weights, if any).

    Why this leaves the posterior unchanged: the loss becomes ``E_p[h(x)·(−log q(θ|x))]`` with
    ``h > 0`` a function of the data ``x`` alone; for every ``x`` its minimizer over ``q(·|x)`` is
    still ``p(θ|x)``. What changes is where a finite network spends its capacity: on Roman, 9% of
    the prior's light curves (binary caustic crossings, cusp approaches, sharp high-magnification
    peaks) and 84% of the caustic-crossing planetary ones pass the default threshold of 8."""

    def __init__(self, sim, weight: float, threshold: float):
        if not weight >= 1.0:
            raise ValueError(f"sharp_weight must be >= 1, got {weight}")
        if not threshold > 0.0:
            raise ValueError(f"sharp_threshold must be > 0, got {threshold}")
        self.sim, self.weight, self.threshold = sim, float(weight), float(threshold)

    def __call__(self, key, n: int):
        theta, x, *w = self.sim(key, n)
        h = jnp.where(sharp_feature(x) > self.threshold, self.weight, 1.0).astype(jnp.float32)
        return theta, x, (w[0] * h if w else h)


def mixture_weights(fraction: float, p_class: float) -> tuple[float, float]:
    """``(w_class, w_other)``: the prior / mixture density ratios of :class:`MixtureSimulator` for a
    row in the class and one outside it, ``1 / ((1 − λ) + λ / P(C))`` and ``1 / (1 − λ)``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"enrich_fraction must be in (0, 1), got {fraction}")
    if not 0.0 < p_class < 1.0:
        raise ValueError(f"the class probability must be in (0, 1), got {p_class}")
    return 1.0 / ((1.0 - fraction) + fraction / p_class), 1.0 / (1.0 - fraction)


def accepted_class_probability(probability: float, enrich_accepted: float, base_accepted: float) -> float:
    """The class probability among the light curves inference accepts: the conditioned simulation's
    acceptance ``probability`` times the accepted share of the class rows over that of the prior rows
    (both sets are filtered alike before training)."""
    return probability * enrich_accepted / base_accepted


class MixtureSimulator:
    """Rows of a prior set (probability ``1 − λ``) and of a class-conditioned set (``λ``), with the
    loss weights that make the mixture's expected loss the prior's.

    The training distribution is ``p_mix = (1 − λ)·p + λ·p(·|C)``, with ``p(·|C) = p·1_C / P(C)``,
    so the density ratio of a row is ``w = p / p_mix = 1 / ((1 − λ) + λ·1_C / P(C))``: it needs the
    class flag ``1_C`` of every prior row (prior rows that happen to be in the class get the class
    weight) and the class probability ``P(C)`` (the conditioned simulation's acceptance). Under the
    mixture ``E[w] = 1`` and ``E[w·ℓ] = E_p[ℓ]``: the objective, hence the posterior it targets, is
    unchanged; what changes is that the class is seen in ``λ`` of the rows (many distinct light
    curves, each with a small weight) instead of in ``P(C)`` of them (a few, seen many times).
    """

    def __init__(self, base: BinnedSimulator, base_in_class: np.ndarray, enrich: BinnedSimulator,
                 fraction: float, p_class: float):
        self.base, self.enrich, self.fraction, self.p_class = base, enrich, fraction, p_class
        self.w_class, self.w_other = mixture_weights(fraction, p_class)
        self.w_base = np.where(np.asarray(base_in_class, bool), self.w_class, self.w_other).astype(np.float32)

    def __call__(self, key, n: int):
        rng = _rng_from_key(key)
        from_enrich = rng.random(n) < self.fraction
        i_base = rng.integers(0, len(self.base), size=n)
        i_enr = rng.integers(0, len(self.enrich), size=n)
        e = from_enrich[:, None]
        theta = np.where(e, self.enrich.theta[i_enr], self.base.theta[i_base])
        mean = np.where(e, self.enrich.mean[i_enr], self.base.mean[i_base])
        err = np.where(e, self.enrich.err[i_enr], self.base.err[i_base])
        count = np.where(e, self.enrich.count[i_enr], self.base.count[i_base])
        x = self.base.inputs(mean, err, count, rng)
        w = np.where(from_enrich, self.w_class, self.w_base[i_base]).astype(np.float32)
        return jnp.asarray(theta), x, jnp.asarray(w)


def _flags_file(f: Path, q_max: float) -> np.ndarray:
    return crossing_flags(read_shards([f], columns=PHYSICAL_NAMES + ("t", "mask")), q_max)


def crossing_flags(d: dict[str, np.ndarray], q_max: float) -> np.ndarray:
    """(rows,) bool: the caustic-crossing planetary rows (q < q_max and >= 1 used data point with the
    source inside a caustic) of simulate-style arrays (physical parameters, ``t``, ``mask``)."""
    from mulens_sbi.validation import caustic_crossing

    flag = np.zeros(d["t"].shape[0], bool)
    sel = np.flatnonzero(d["q"] < q_max)
    if sel.size:
        flag[sel] = caustic_crossing(d["t"][sel], d["mask"][sel], {k: d[k][sel] for k in PHYSICAL_NAMES})
    return flag


def mixture_rows(keys, base: tuple, enrich: tuple | None, w_base, n: int, fraction: float, w_class: float,
                 n_base: jax.Array | int | None = None, n_enrich: jax.Array | int | None = None):
    """``n`` rows drawn with ``jax.random`` (jittable) from the arrays ``base`` (a tuple of arrays with
    the rows first), or with ``enrich`` from the mixture ``(1 − λ)·base + λ·enrich`` of
    :class:`MixtureSimulator`, and their weights (``w_base[i]`` for base row i, ``w_class`` for
    enrichment rows; None without ``enrich``). ``keys`` = (rows, enrichment rows, mixture choice).
    ``n_base`` / ``n_enrich`` (traced integers allowed): draw from the first rows only (default all;
    the streaming sampler's arrays have room for rows still to come)."""
    k_row, k_enr, k_mix = keys
    i = jax.random.randint(k_row, (n,), 0, base[0].shape[0] if n_base is None else n_base)
    rows = tuple(a[i] for a in base)
    if enrich is None:
        return rows, None
    j = jax.random.randint(k_enr, (n,), 0, enrich[0].shape[0] if n_enrich is None else n_enrich)
    e = jax.random.uniform(k_mix, (n,)) < fraction
    rows = tuple(jnp.where(e.reshape((n,) + (1,) * (a.ndim - 1)), b[j], a)
                 for a, b in zip(rows, enrich, strict=True))
    return rows, jnp.where(e, jnp.float32(w_class), w_base[i])


def _draw_on_device(key, base, enrich, w_base, n: int, cfg: PreprocessConfig, fraction: float,
                    w_class: float, sharp: tuple[float, float] | None, n_base: jax.Array | int | None = None,
                    n_enrich: jax.Array | int | None = None):
    *keys, k_noise = jax.random.split(key, 4)
    (theta, mean, err, count), w = mixture_rows(keys, base, enrich, w_base, n, fraction, w_class,
                                                n_base, n_enrich)
    x = network_input(mean + err * jax.random.normal(k_noise, mean.shape, mean.dtype), err, count, cfg)
    if sharp is not None:
        h = jnp.where(sharp_feature(x) > sharp[1], jnp.float32(sharp[0]), jnp.float32(1.0))
        w = h if w is None else w * h
    return (theta, x) if w is None else (theta, x, w)


class DeviceSampler:
    """A host sampler's distribution (:class:`BinnedSimulator`, optionally in a
    :class:`MixtureSimulator` and/or wrapped by :class:`SharpEmphasis`), drawn on the accelerator:
    the pre-binned rows live in device memory, and the rows, the mixture choice and the noise of a
    batch come from ``jax.random`` with the step's key in one compiled function. Same rows, weights
    and noise distribution as the host path; another random stream.

    ``room`` / ``enrich_room``: extra, empty rows after the base / enrichment rows, for rows still to
    come (:class:`mulens_sbi.stream.StreamingSampler`); draws use the first ``n_base`` / ``n_enrich``
    rows only."""

    def __init__(self, sim: BinnedSimulator | MixtureSimulator | SharpEmphasis, cfg: PreprocessConfig,
                 room: int = 0, enrich_room: int = 0):
        sharp = None
        if isinstance(sim, SharpEmphasis):
            sharp, sim = (sim.weight, sim.threshold), sim.sim
        fraction, self.w_class, self.w_other = 0.0, 1.0, 1.0
        self.enrich, self.w_base, self.n_enrich = None, None, 0
        if isinstance(sim, MixtureSimulator):
            fraction, self.w_class, self.w_other = sim.fraction, sim.w_class, sim.w_other
            self.enrich, self.n_enrich = self._put(sim.enrich, enrich_room), len(sim.enrich)
            self.w_base = jnp.asarray(np.concatenate([sim.w_base, np.zeros(room, np.float32)]), jnp.float32)
            sim = sim.base
        if not isinstance(sim, BinnedSimulator):
            raise TypeError(f"{type(self).__name__}: cannot move a {type(sim).__name__} to the device")
        self.base, self.n_base = self._put(sim, room), len(sim)
        self._draw = jax.jit(functools.partial(_draw_on_device, cfg=cfg, fraction=fraction,
                                               w_class=self.w_class, sharp=sharp), static_argnames=("n",))

    @staticmethod
    def _put(sim: BinnedSimulator, room: int = 0) -> tuple:
        """The rows (theta as float32, mean, err, count) on the device, followed by ``room`` zero rows."""
        out = []
        for a in (sim.theta.astype(np.float32), sim.mean, sim.err, sim.count):
            if room:
                a = np.concatenate([a, np.zeros((room,) + a.shape[1:], a.dtype)])
            out.append(jnp.asarray(a))
        return tuple(out)

    def __call__(self, key: jax.Array, n: int) -> tuple:
        """A batch ``(theta_net, x[, weights])`` of ``n`` rows."""
        return self._draw(key, self.base, self.enrich, self.w_base, n=n, n_base=jnp.int32(self.n_base),
                          n_enrich=jnp.int32(max(self.n_enrich, 1)))


def class_flags(files: list[Path], condition: str, q_max: float, cache: str | Path | None = None,
                progress: bool = True, workers: int = 1) -> np.ndarray:
    """(rows,) bool: which rows of the shards are in the class (for ``caustic-crossing``: q < q_max
    and >= 1 used data point with the source inside a caustic), cached like the pre-binned set."""
    if condition != "caustic-crossing":
        raise ValueError(f"unknown condition {condition!r}")

    def compute():
        parts = map_files(functools.partial(_flags_file, q_max=q_max), files, workers, f"{condition} flags",
                          progress)
        return {"flags": np.concatenate(parts)}

    return _cached(cache, {"condition": condition, "q_max": q_max, **_files_key(files)}, compute)["flags"]


# ----------------------------------------------------------------------------------------------
# the command


class _TimeUp(Exception):
    pass


def _hardware() -> dict[str, Any]:
    import os
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "cpu": cpu,
            "cpu_count": os.cpu_count()}


def run_training(settings: TrainSettings, log=print) -> dict[str, Any]:
    """Train and save a model folder; returns a summary dict. Resumable: run the same settings again
    after a kill (or after ``max_minutes`` ran out: the summary then has ``finished: False``)."""
    from mulens_sbi.survey.spec import load_spec, parse_spec

    out = Path(settings.out)
    if settings.sampler not in ("host", "device"):
        raise ValueError(f"sampler must be 'host' or 'device', got {settings.sampler!r}")
    if settings.workers < 1 or settings.budget_minutes < 0:
        raise ValueError(f"workers must be >= 1 and budget_minutes >= 0, got {settings.workers} and "
                         f"{settings.budget_minutes}")
    streaming = settings.stream_rows > 0 or settings.stream_enrich_rows > 0
    if settings.stream_rows < 0 or settings.stream_enrich_rows < 0 or settings.stream_workers < 0:
        raise ValueError(f"stream_rows, stream_enrich_rows and stream_workers must be >= 0, got "
                         f"{settings.stream_rows}, {settings.stream_enrich_rows} and "
                         f"{settings.stream_workers}")
    if streaming and settings.sampler != "device":
        raise ValueError("streaming (stream_rows / stream_enrich_rows) needs sampler='device'")
    if settings.stream_enrich_rows and not settings.enrich:
        raise ValueError("stream_enrich_rows needs an enrichment folder (enrich)")
    if settings.embedding.kind != "binned_conv" or settings.embedding.n_bins != settings.preprocess.n_bins:
        raise ValueError(f"the embedding must be 'binned_conv' with n_bins = preprocess.n_bins "
                         f"({settings.preprocess.n_bins}), got {settings.embedding.kind!r} with "
                         f"{settings.embedding.n_bins}")
    if (out / "posterior.json").exists() and not settings.overwrite and not settings.stop:
        raise FileExistsError(f"{out / 'posterior.json'} exists; pass --overwrite to replace the model")
    mpath = Path(settings.data) / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(f"{mpath} not found (not a mulens-sbi simulate folder)")
    manifest = json.loads(mpath.read_text())
    spec_text = manifest.get("spec_text")
    spec = (parse_spec(spec_text, file=f"{mpath}:spec_text") if spec_text
            else load_spec(manifest["survey"]))
    files = shard_files(settings.data)
    if settings.holdout_shards >= len(files):
        raise ValueError(f"holdout_shards = {settings.holdout_shards} leaves no training shard of "
                         f"{len(files)}")
    train_files = files[:len(files) - settings.holdout_shards]
    if settings.max_train_shards:
        train_files = train_files[:settings.max_train_shards]
    plan = _stream_plan(settings, manifest, spec_text) if streaming else None  # checked before any work
    ckdir = Path(settings.checkpoint_dir) if settings.checkpoint_dir else out / "_checkpoint"
    ckdir.mkdir(parents=True, exist_ok=True)
    cache = settings.binned_cache or str(ckdir / "binned_train.npz")
    t0 = time.perf_counter()
    binned = prepare_binned(train_files, settings.preprocess, cache, settings.progress, settings.workers)
    enrich = None
    if settings.enrich:
        enrich = _enrichment(settings, spec, manifest, train_files, ckdir)
        binned["in_class"] = enrich["base_flags"]
    # train only on light curves that inference would accept (preprocess refuses fewer than
    # min_points points in the view or fewer than min_cells filled cells): otherwise the network
    # spends capacity on inputs it is never given (7% of a KMTNet set)
    binned, n_refused = accepted_rows(binned, settings.preprocess)
    if n_refused:
        log(f"{n_refused} of {n_refused + binned['theta_net'].shape[0]} training light curves are too "
            f"sparse for the model (fewer than {settings.preprocess.min_points} points or "
            f"{settings.preprocess.min_cells} filled cells) and are left out, as inference would refuse them")
    t_prep = time.perf_counter() - t0
    tc = settings.train
    n = binned["theta_net"].shape[0]
    if n < tc.val_size + tc.batch_size:
        raise ValueError(f"{n} training rows; need at least val_size + batch_size = "
                         f"{tc.val_size + tc.batch_size}")
    # fixed split: the last val_size rows (rows are in shard order, i.e. random) are validation
    tr = {k: v[:n - tc.val_size] for k, v in binned.items()}
    va = {k: v[n - tc.val_size:] for k, v in binned.items()}
    space = make_space(spec, tr["theta_net"], settings.preprocess)
    init_post = None
    if settings.init_from:
        from mulens_sbi.npe.checkpoint import load_posterior
        init_post = load_posterior(settings.init_from)
        space = _warm_start_space(space, init_post.space, settings.init_from)
    sim = BinnedSimulator(tr, settings.preprocess)
    data_info = None
    if enrich is not None:
        p_class = accepted_class_probability(enrich["stats"]["probability"], enrich["accepted_frac"],
                                             n / (n + n_refused))
        sim = MixtureSimulator(sim, tr["in_class"], BinnedSimulator(enrich["binned"], settings.preprocess),
                               settings.enrich_fraction, p_class)
        data_info = {"enrich": str(settings.enrich), "enrich_fraction": settings.enrich_fraction,
                     "condition": enrich["stats"], "p_class_accepted_rows": p_class,
                     "n_enrich_rows": int(enrich["binned"]["theta_net"].shape[0]),
                     "n_base_rows_in_class": int(tr["in_class"].sum()),
                     "weight_class": sim.w_class, "weight_other": sim.w_other}
        log(f"enrichment: {data_info['n_enrich_rows']} {enrich['stats']['condition']} rows from "
            f"{settings.enrich} in {settings.enrich_fraction:.0%} of each batch; class probability "
            f"{p_class:.5f} ({data_info['n_base_rows_in_class']} of {len(sim.base)} prior rows); weights "
            f"{sim.w_class:.4f} (class) and {sim.w_other:.4f} (other)")
    if settings.sharp_weight != 1.0:
        sim = SharpEmphasis(sim, settings.sharp_weight, settings.sharp_threshold)
        data_info = {**(data_info or {}), "sharp_weight": settings.sharp_weight,
                     "sharp_threshold": settings.sharp_threshold}
        log(f"sharp-feature emphasis: light curves with sharp_feature > {settings.sharp_threshold:g} "
            f"weighted {settings.sharp_weight:g}")
    if plan is not None:
        # the checkpoint's fingerprint: what determines the rows (not the number of workers)
        data_info = {**(data_info or {}), "stream": plan.fingerprint()}
    elif settings.sampler == "device":
        sim = DeviceSampler(sim, settings.preprocess)
        data_info = {**(data_info or {}), "sampler": "device"}
        log(f"batches drawn on the device ({jax.devices()[0].device_kind})")
    val = BinnedSimulator(va, settings.preprocess).rows(np.arange(tc.val_size),
                                                       np.random.default_rng([tc.seed, 7]))
    config = NPEConfig(flow=settings.flow, embedding=settings.embedding)
    # wall time accumulated over sessions
    acc_path = ckdir / "wall_time.json"
    acc = json.loads(acc_path.read_text()) if acc_path.exists() else {"train_wall_s": 0.0, "sessions": 0}
    start = time.perf_counter()

    def on_step(step, loss):
        if settings.max_minutes and time.perf_counter() - start > 60 * settings.max_minutes:
            raise _TimeUp

    provenance = {
        "survey": spec.name,
        "simulation": {"folder": str(settings.data), "seed": manifest.get("seed"), "n": manifest.get("n"),
                       "spec_sha256": manifest.get("spec_sha256")},
        "n_train_rows": int(n - tc.val_size), "n_val_rows": int(tc.val_size),
        "n_refused_sparse": n_refused,
        "train_shards": [f.name for f in train_files],
        "holdout_shards": [f.name for f in files[len(files) - settings.holdout_shards:]],
        "preprocess": settings.preprocess.to_dict(), "physical_names": list(PHYSICAL_NAMES),
        "network_names": list(NETWORK_NAMES), "spec_text": spec_text, "hardware": _hardware(),
    }
    if data_info is not None:
        provenance["enrichment"] = data_info
    if settings.stop:
        return _export_checkpoint(settings, space, config, tc, val, ckdir, provenance, acc, t_prep, log,
                                  init_post)
    finished = True
    if plan is not None:
        from mulens_sbi.stream import StreamingSampler

        sim = StreamingSampler(sim, settings.preprocess, plan)
        log(f"batches drawn on the device ({jax.devices()[0].device_kind}); streaming {plan.rows} prior and "
            f"{plan.enrich_rows} enrichment light curves from {plan.workers} worker processes")
    try:
        res = npe_train(space, config, tc, simulate=sim, validation_data=val, checkpoint_dir=ckdir,
                        resume=not settings.overwrite, overwrite=settings.overwrite,
                        progress=settings.progress, provenance=provenance, on_step=on_step,
                        init_from=init_post, data_info=data_info, budget_s=60.0 * settings.budget_minutes)
    except _TimeUp:
        finished = False
    finally:
        if plan is not None:
            sim.close()
            s_ = sim.stats
            log(f"streamed {s_['rows_added']} prior rows ({s_['shards_added']} shards) and "
                f"{s_['enrich_rows_added']} enrichment rows ({s_['enrich_shards_added']} shards); "
                f"{s_['shards_not_added']} shards not finished in time")
    session = time.perf_counter() - start
    acc = {"train_wall_s": acc["train_wall_s"] + session, "sessions": acc["sessions"] + 1}
    acc_path.write_text(json.dumps(acc))
    if not finished:
        log(f"stopped after {session / 60:.1f} min (max_minutes); run the same command again to resume")
        return {"finished": False, "session_s": session}
    res.posterior.metadata["training"]["train_wall_s_total"] = acc["train_wall_s"]
    res.posterior.metadata["training"]["sessions"] = acc["sessions"]
    res.posterior.metadata["training"]["prebin_s_last_session"] = t_prep
    if plan is not None:
        res.posterior.metadata["training"]["stream_last_session"] = sim.stats
    res.posterior.metadata["settings"] = settings.to_dict()
    save_posterior(res.posterior, out, overwrite=settings.overwrite or (out / "posterior.json").exists())
    summary = {"finished": True, "out": str(out), "steps": res.steps_done, "best_step": res.best_step,
               "best_val_loss": res.best_val_loss, "stopped_early": res.stopped_early,
               "n_params": res.posterior.n_params, "train_wall_s_total": acc["train_wall_s"],
               "n_train_rows": int(n - tc.val_size)}
    (out / "training.json").write_text(json.dumps({**summary, "history": res.history}, indent=1))
    log(f"saved model to {out}: {res.steps_done} steps, best val loss {res.best_val_loss:.4f} at step "
        f"{res.best_step}, {res.posterior.n_params} parameters, {acc['train_wall_s'] / 60:.1f} min training")
    return summary


def _stream_plan(settings: TrainSettings, manifest: dict, spec_text: str | None) -> StreamPlan:
    """The :class:`mulens_sbi.stream.StreamPlan` of a run: the next shards of ``data`` (and of
    ``enrich``), with their folders' seeds and shard sizes."""
    from mulens_sbi.stream import StreamPlan

    if not spec_text:
        raise ValueError(f"{settings.data}: its manifest has no spec_text; streaming needs the spec the "
                         f"folder was simulated with")
    if manifest.get("condition"):
        raise ValueError(f"{settings.data}: a conditioned simulation ({manifest['condition']}); streaming "
                         f"extends the prior folder with prior draws, so --data must be a plain one")
    kw: dict[str, Any] = {}
    if settings.enrich:
        em = _enrich_manifest(settings, manifest)
        kw = {"enrich_seed": int(em["seed"]), "enrich_first_shard": int(em["n_shards"]),
              "enrich_rows": settings.stream_enrich_rows, "condition": em["condition"],
              "q_max": float(em["q_max"]), "enrich_shard_size": int(em["shard_size"]),
              "enrich_batch_size": int(em.get("batch_size", 128))}
    return StreamPlan(spec_text=spec_text, seed=int(manifest["seed"]), first_shard=int(manifest["n_shards"]),
                      rows=settings.stream_rows, shard_size=int(manifest["shard_size"]),
                      batch_size=int(manifest.get("batch_size", 128)),
                      workers=settings.stream_workers or settings.workers, **kw)


def _enrich_manifest(settings: TrainSettings, manifest: dict) -> dict:
    """The enrichment folder's manifest, checked: a complete conditioned simulation of the spec of
    ``data`` (whose manifest is ``manifest``)."""
    epath = Path(settings.enrich) / "manifest.json"
    if not epath.exists():
        raise FileNotFoundError(f"{epath} not found (--enrich must be a mulens-sbi simulate --condition "
                                f"folder)")
    em = json.loads(epath.read_text())
    if not em.get("condition"):
        raise ValueError(f"{settings.enrich}: not a conditioned simulation (made without --condition)")
    if not em.get("complete"):
        raise ValueError(f"{settings.enrich}: the simulation is not complete (run its command again)")
    if em.get("spec_sha256") != manifest.get("spec_sha256"):
        raise ValueError(f"{settings.enrich}: simulated with another survey spec (sha256 "
                         f"{str(em.get('spec_sha256'))[:12]}… vs {str(manifest.get('spec_sha256'))[:12]}… of "
                         f"{settings.data})")
    return em


def _enrichment(settings: TrainSettings, spec, manifest: dict, train_files: list[Path], ckdir: Path
                ) -> dict[str, Any]:
    """Read and check an enrichment folder: its pre-binned accepted rows, its condition counts, the
    class flags of the prior training rows, and the fraction of its rows inference accepts."""
    from mulens_sbi.simulate import condition_stats

    _enrich_manifest(settings, manifest)
    stats = condition_stats(settings.enrich)
    files = shard_files(settings.enrich)
    eb = prepare_binned(files, settings.preprocess, ckdir / "binned_enrich.npz", settings.progress,
                        settings.workers)
    keep = accepted_mask(eb, settings.preprocess)
    flags = class_flags(train_files, stats["condition"], float(stats["q_max"]), ckdir / "class_flags.npz",
                        settings.progress, settings.workers)
    return {"binned": {k: v[keep] for k, v in eb.items()}, "stats": stats,
            "accepted_frac": float(keep.mean()), "base_flags": flags}


def _warm_start_space(space: ParameterSpace, init_space: ParameterSpace, source: str) -> ParameterSpace:
    """The parameter space of a warm start: the initial model's, whose standardization its network
    was trained in (this run's training rows may differ, e.g. sparse rows left out, and would give a
    slightly different one). Names, transforms and bounds must be this run's."""
    from mulens_sbi.npe.train import differing_keys

    diff = differing_keys(space.to_dict(), init_space.to_dict(), ignore=("loc", "scale"))
    if diff:
        raise ValueError(f"init_from {source}: parameter space differs from this run's at {diff} "
                         f"(names, transforms and prior bounds must match)")
    return init_space


def _export_checkpoint(settings, space, config, tc, val, ckdir, provenance, acc, t_prep,
                       log, init_post=None) -> dict[str, Any]:
    """Save the checkpoint's best parameters as the model without training further (a warm start's
    initial model is recorded as in a trained model's metadata)."""
    from mulens_sbi.npe.checkpoint import load_train_state, versions
    from mulens_sbi.npe.model import init_params
    from mulens_sbi.npe.posterior import Posterior
    from mulens_sbi.npe.train import _direction, warm_start_record

    _, params = init_params(config, space.dim, jax.tree_util.tree_map(lambda a: a[:1], val[1]),
                            jax.random.PRNGKey(0))
    loaded = load_train_state(ckdir, {"params": params, "opt_state": _direction().init(params),
                                      "best_params": params})
    if loaded is None:
        raise FileNotFoundError(f"{ckdir / 'state.json'}: no checkpoint to save")
    arrays, rec = loaded
    meta = {
        "training": {"train_config": tc.to_dict(), "steps_done": rec["step"], "best_step": rec["best_step"],
                     "best_val_loss": rec["best_val"], "stopped_early": False,
                     "stopped_by_user": rec["step"] < rec.get("max_steps", tc.max_steps),
                     "max_steps_effective": rec.get("max_steps", tc.max_steps),
                     "n_nonfinite_rows": rec["n_nonfinite"], "history": rec["history"],
                     "train_wall_s_total": acc["train_wall_s"], "sessions": acc["sessions"],
                     "prebin_s_last_session": t_prep, "device": str(jax.devices()[0].device_kind),
                     "platform": jax.default_backend(), "versions": versions(),
                     "init_from": None if init_post is None else warm_start_record(init_post)},
        "provenance": provenance,
        "settings": settings.to_dict(),
    }
    post = Posterior(config, space, jax.device_get(arrays["best_params"]), meta)
    out = Path(settings.out)
    save_posterior(post, out, overwrite=settings.overwrite or (out / "posterior.json").exists())
    summary = {"finished": True, "stopped_by_user": rec["step"] < rec.get("max_steps", tc.max_steps),
               "out": str(out),
               "steps": rec["step"],
               "best_step": rec["best_step"], "best_val_loss": rec["best_val"], "n_params": post.n_params,
               "train_wall_s_total": acc["train_wall_s"], "n_train_rows": provenance["n_train_rows"]}
    (out / "training.json").write_text(json.dumps({**summary, "history": rec["history"]}, indent=1))
    log(f"saved the checkpoint's best parameters (step {rec['best_step']} of {rec['step']}, val loss "
        f"{rec['best_val']:.4f}) to {out}")
    return summary
