"""Train a survey's amortized posterior: simulate output (or on-the-fly simulation) -> npe.train.

Data flow:

1. **Pre-binning** (once, :func:`mulens_sbi.data.prebin.prepare_binned`): every stored light curve of
   a ``mulens-sbi simulate`` folder goes through steps 1-4 of :mod:`mulens_sbi.preprocess` with its
   *noiseless* flux ``flux_true`` and the noise model's ``sigma``: ``t_ref`` is the peak estimate of
   the stored noisy realisation ``flux`` (a data-derived estimate, as at inference), then the
   inverse-variance binned noiseless flux and its error per cell. The result is cached in an ``.npz``
   next to the training output (``binned_cache``), keyed by the preprocessing settings.
2. **Noise on the fly** (every step, :class:`mulens_sbi.data.samplers.BinnedSimulator`): a batch of
   rows is drawn, fresh
   Gaussian noise ``err * N(0, 1)`` is added to the binned noiseless flux (exact in distribution:
   the weighted mean of Gaussian points is Gaussian with that error) and step 5 of the preprocessing
   (:func:`mulens_sbi.preprocess.network_input`) normalizes it. So each epoch sees new noise.
3. :func:`mulens_sbi.npe.train.train` with a :class:`mulens_sbi.npe.transforms.ParameterSpace` over
   ``(dt_0, u_0, t_E, s, q, alpha)`` (``dt_0 = t_0 - t_ref``; transforms identity, identity, log,
   log, log, identity), bounds from the survey spec's priors, standardization fitted on the training
   rows. A fixed validation set (held-out rows, noise drawn once from the seed) drives early stopping.

Shards: by default the last ``holdout_shards`` shards are never used here (they are for
``mulens-sbi validate``); of the remaining rows, ``val_size`` are the validation set.

**Simulation inside the training loop** (``sampler="simulate"``, ``survey=`` a spec with whole-season
windows): no shards at all. Every step's batch is drawn, simulated, binned and normalized on the
device by :class:`mulens_sbi.data.ondevice.OnDeviceSimulator` (settings in the ``[ondevice]`` table:
caustic-crossing enrichment, noise construction, sharp-feature emphasis); the validation set is the
prior rows of a few batches drawn with their own keys (noise fixed once), which also give the
standardization. A resumed run continues the same key sequence.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mulens_sbi.data.ondevice import OnDeviceSettings, OnDeviceSimulator
from mulens_sbi.data.prebin import NETWORK_NAMES, accepted_mask, accepted_rows, class_flags, prepare_binned
from mulens_sbi.data.samplers import (
    BinnedSimulator,
    DeviceSampler,
    MixtureSimulator,
    SharpEmphasis,
    accepted_class_probability,
)
from mulens_sbi.data.shards import condition_stats, shard_files
from mulens_sbi.data.stream import StreamingSampler, StreamPlan
from mulens_sbi.npe.checkpoint import code_commit, load_posterior, load_train_state, save_posterior, versions
from mulens_sbi.npe.config import EmbeddingConfig, FlowConfig, NPEConfig, TrainConfig
from mulens_sbi.npe.model import init_params
from mulens_sbi.npe.posterior import Posterior
from mulens_sbi.npe.train import adam_direction, differing_keys, warm_start_record
from mulens_sbi.npe.train import train as npe_train
from mulens_sbi.npe.transforms import ParameterSpace
from mulens_sbi.params import PHYSICAL_NAMES
from mulens_sbi.preprocess import PreprocessConfig
from mulens_sbi.settings_file import check_fields
from mulens_sbi.survey import Survey
from mulens_sbi.survey.spec import load_spec, parse_spec

__all__ = ["TrainSettings", "NETWORKS", "make_space", "run_training"]

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
        data: a ``mulens-sbi simulate`` output folder (not used by ``sampler="simulate"``).
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
            ``enrich_fraction`` and is weighted back to the prior (see
            :class:`mulens_sbi.data.samplers.MixtureSimulator`).
        enrich_fraction: the mixture weight λ of the enrichment rows (0 < λ < 1).
        sharp_weight: loss weight H >= 1 of light curves with a sharp feature (see
            :func:`mulens_sbi.data.samplers.sharp_feature`; a function of the network input only, so
            the posterior the loss targets is unchanged); 1 = off.
        sharp_threshold: the feature statistic's threshold (in units of its noise).
        sampler: ``host`` draws each batch's rows and noise with numpy on the host; ``device`` keeps
            the pre-binned set on the accelerator and draws them there with ``jax.random`` (same
            distribution, another random stream; the host path is too slow to feed a GPU);
            ``simulate`` simulates every batch afresh on the device from ``survey`` (no ``data``
            folder; :mod:`mulens_sbi.data.ondevice`).
        survey: with ``sampler="simulate"``: the survey spec (name or path) to simulate; it must
            set ``lightcurve.window = "season"``.
        ondevice: the on-device simulator's settings (``sampler="simulate"``): enrichment fraction
            and class, noise construction, sharp-feature emphasis.
        budget_minutes: fit the schedule's length to this wall time (see ``budget_s`` of
            :func:`mulens_sbi.npe.train.train`; 0 = ``max_steps`` steps).
        workers: processes for pre-binning and class flags (1 = this process).
        stream_rows: simulate this many further prior light curves *while training* (the next
            shards of ``data``, with its seed) and add them to the training set as they arrive
            (:mod:`mulens_sbi.data.stream`; needs ``sampler="device"``); 0 = off.
        stream_enrich_rows: the same for the enrichment folder (needs ``enrich``).
        stream_workers: processes simulating the streamed shards (0 = ``workers``).
        progress: show progress bars.
    """

    data: str = ""
    out: str = ""
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
    survey: str | None = None
    ondevice: OnDeviceSettings = field(default_factory=OnDeviceSettings)
    progress: bool = True

    def __post_init__(self) -> None:
        simulated = self.sampler == "simulate"
        checks = {
            "data": (isinstance(self.data, str) and (self.data != "") != simulated,
                     "a non-empty path (empty with sampler = 'simulate', which simulates every batch)"),
            "out": (isinstance(self.out, str) and self.out != "", "a non-empty path"),
            "holdout_shards": (self.holdout_shards >= 0, ">= 0"),
            "max_train_shards": (self.max_train_shards >= 0, ">= 0"),
            "max_minutes": (self.max_minutes >= 0, ">= 0"),
            "enrich_fraction": (0 < self.enrich_fraction < 1, "0 < enrich_fraction < 1"),
            "sharp_weight": (self.sharp_weight >= 1, ">= 1"),
            "sharp_threshold": (self.sharp_threshold > 0, "> 0"),
            "sampler": (self.sampler in ("host", "device", "simulate"), "one of host, device, simulate"),
            "survey": ((self.survey is not None and self.survey != "") == simulated,
                       "a survey spec name or path with sampler = 'simulate', and None otherwise"),
            "ondevice": (isinstance(self.ondevice, OnDeviceSettings), "an OnDeviceSettings"),
            "budget_minutes": (self.budget_minutes >= 0, ">= 0"),
            "workers": (self.workers >= 1, ">= 1"),
            "stream_rows": (self.stream_rows >= 0, ">= 0"),
            "stream_enrich_rows": (self.stream_enrich_rows >= 0, ">= 0"),
            "stream_workers": (self.stream_workers >= 0, ">= 0"),
            "preprocess": (isinstance(self.preprocess, PreprocessConfig), "a PreprocessConfig"),
            "embedding": (isinstance(self.embedding, EmbeddingConfig), "an EmbeddingConfig"),
            "flow": (isinstance(self.flow, FlowConfig), "a FlowConfig"),
            "train": (isinstance(self.train, TrainConfig), "a TrainConfig"),
        }
        check_fields(self, checks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["embedding"] = self.embedding.to_dict()
        d["flow"] = self.flow.to_dict()
        d["train"] = self.train.to_dict()
        d["ondevice"] = self.ondevice.to_dict()
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
# the command


class _TimeUp(Exception):
    pass


def _hardware() -> dict[str, Any]:
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
    if settings.sampler == "simulate":
        return _run_simulated(settings, log)
    out = Path(settings.out)
    if settings.sampler not in ("host", "device"):
        raise ValueError(f"sampler must be 'host', 'device' or 'simulate', got {settings.sampler!r}")
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
    acc = _wall_time(ckdir)
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
        "code_commit": code_commit(),
    }
    if data_info is not None:
        provenance["enrichment"] = data_info
    if settings.stop:
        return _export_checkpoint(settings, space, config, tc, val, ckdir, provenance, acc, t_prep, log,
                                  init_post)
    on_exit = None
    if plan is not None:
        sim = StreamingSampler(sim, settings.preprocess, plan)
        log(f"batches drawn on the device ({jax.devices()[0].device_kind}); streaming {plan.rows} prior and "
            f"{plan.enrich_rows} enrichment light curves from {plan.workers} worker processes")

        def on_exit():
            sim.close()
            s_ = sim.stats
            log(f"streamed {s_['rows_added']} prior rows ({s_['shards_added']} shards) and "
                f"{s_['enrich_rows_added']} enrichment rows ({s_['enrich_shards_added']} shards); "
                f"{s_['shards_not_added']} shards not finished in time")

    res, session, acc = _train_session(settings, space, config, sim, val, ckdir, provenance, init_post,
                                       data_info, acc, on_exit)
    if res is None:
        log(f"stopped after {session / 60:.1f} min (max_minutes); run the same command again to resume")
        return {"finished": False, "session_s": session}
    extra: dict[str, Any] = {"prebin_s_last_session": t_prep}
    if plan is not None:
        extra["stream_last_session"] = sim.stats
    return _save_trained(settings, res, acc, extra, int(n - tc.val_size), log)


def _wall_time(ckdir: Path) -> dict:
    """Training wall time accumulated over the sessions of a checkpoint folder (``wall_time.json``)."""
    path = ckdir / "wall_time.json"
    return json.loads(path.read_text()) if path.exists() else {"train_wall_s": 0.0, "sessions": 0}


def _train_session(settings: TrainSettings, space, config, sim, val, ckdir: Path, provenance: dict, init_post,
                   data_info, acc: dict, on_exit=None) -> tuple[Any, float, dict]:
    """One training session, stopped cleanly after ``settings.max_minutes`` (0: no limit).

    Returns the training result (None when the time ran out: the checkpoint resumes), the session's
    wall time in seconds, and the accumulated wall time ``acc`` plus this session, written to
    ``ckdir/wall_time.json``. ``on_exit`` runs however the session ends (e.g. closing a stream)."""
    start = time.perf_counter()

    def on_step(step, loss):
        if settings.max_minutes and time.perf_counter() - start > 60 * settings.max_minutes:
            raise _TimeUp

    res = None
    try:
        res = npe_train(space, config, settings.train, simulate=sim, validation_data=val,
                        checkpoint_dir=ckdir, resume=not settings.overwrite, overwrite=settings.overwrite,
                        progress=settings.progress, provenance=provenance, on_step=on_step,
                        init_from=init_post, data_info=data_info, budget_s=60.0 * settings.budget_minutes)
    except _TimeUp:
        pass
    finally:
        if on_exit is not None:
            on_exit()
    session = time.perf_counter() - start
    acc = {"train_wall_s": acc["train_wall_s"] + session, "sessions": acc["sessions"] + 1}
    (ckdir / "wall_time.json").write_text(json.dumps(acc))
    return res, session, acc


def _save_trained(settings: TrainSettings, res, acc: dict, extra: dict[str, Any], n_train_rows: int,
                  log) -> dict[str, Any]:
    """Write a finished run's model folder (posterior, settings, ``training.json``); returns the summary."""
    out = Path(settings.out)
    res.posterior.metadata["training"]["train_wall_s_total"] = acc["train_wall_s"]
    res.posterior.metadata["training"]["sessions"] = acc["sessions"]
    res.posterior.metadata["training"].update(extra)
    res.posterior.metadata["settings"] = settings.to_dict()
    save_posterior(res.posterior, out, overwrite=settings.overwrite or (out / "posterior.json").exists())
    summary = {"finished": True, "out": str(out), "steps": res.steps_done, "best_step": res.best_step,
               "best_val_loss": res.best_val_loss, "stopped_early": res.stopped_early,
               "n_params": res.posterior.n_params, "train_wall_s_total": acc["train_wall_s"],
               "n_train_rows": n_train_rows}
    (out / "training.json").write_text(json.dumps({**summary, "history": res.history}, indent=1))
    log(f"saved model to {out}: {res.steps_done} steps, best val loss {res.best_val_loss:.4f} at step "
        f"{res.best_step}, {res.posterior.n_params} parameters, {acc['train_wall_s'] / 60:.1f} min training")
    return summary


def _run_simulated(settings: TrainSettings, log) -> dict[str, Any]:
    """``run_training`` with ``sampler="simulate"``: every batch simulated on the device (see the
    module docstring)."""
    out = Path(settings.out)
    unused = {"enrich": settings.enrich, "stream_rows": settings.stream_rows,
              "stream_enrich_rows": settings.stream_enrich_rows,
              "sharp_weight": None if settings.sharp_weight == 1.0 else settings.sharp_weight}
    given = [k for k, v in unused.items() if v]
    if given:
        raise ValueError(f"sampler = 'simulate' simulates every batch on the device; {', '.join(given)} "
                         f"belong to the shard path (enrichment and emphasis: the [ondevice] settings)")
    if settings.embedding.kind != "binned_conv" or settings.embedding.n_bins != settings.preprocess.n_bins:
        raise ValueError(f"the embedding must be 'binned_conv' with n_bins = preprocess.n_bins "
                         f"({settings.preprocess.n_bins}), got {settings.embedding.kind!r} with "
                         f"{settings.embedding.n_bins}")
    if (out / "posterior.json").exists() and not settings.overwrite and not settings.stop:
        raise FileExistsError(f"{out / 'posterior.json'} exists; pass --overwrite to replace the model")
    spec = load_spec(settings.survey)
    survey = Survey(spec)
    tc = settings.train
    ckdir = Path(settings.checkpoint_dir) if settings.checkpoint_dir else out / "_checkpoint"
    ckdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root = jax.random.PRNGKey(tc.seed)
    sim = OnDeviceSimulator(survey, settings.preprocess, tc.batch_size, settings.ondevice,
                            pilot_key=jax.random.fold_in(root, 1))
    # validation rows: the accepted prior rows of batches with their own keys (noise drawn once)
    theta_val, x_val = sim.prior_rows(jax.random.fold_in(root, 2), tc.val_size)
    t_prep = time.perf_counter() - t0
    log(f"simulating every batch on the device ({jax.devices()[0].device_kind}): {tc.batch_size} rows of "
        f"{spec.name} whole seasons per step; validation set of {tc.val_size} prior light curves in "
        f"{t_prep:.0f} s")
    space = make_space(spec, np.asarray(theta_val, np.float64), settings.preprocess)
    init_post = None
    if settings.init_from:
        init_post = load_posterior(settings.init_from)
        space = _warm_start_space(space, init_post.space, settings.init_from)
    config = NPEConfig(flow=settings.flow, embedding=settings.embedding)
    desc = sim.describe()
    data_info = {"sampler": "simulate", "survey_sha256": spec.sha256, "ondevice": desc}
    provenance = {
        "survey": spec.name, "simulation": {"on_device": True, "spec_sha256": spec.sha256},
        "n_train_rows": None, "n_val_rows": int(tc.val_size), "preprocess": settings.preprocess.to_dict(),
        "physical_names": list(PHYSICAL_NAMES), "network_names": list(NETWORK_NAMES), "spec_text": spec.text,
        "hardware": _hardware(), "code_commit": code_commit(), "enrichment": data_info,
    }
    val = (theta_val, x_val)
    acc = _wall_time(ckdir)
    if settings.stop:
        return _export_checkpoint(settings, space, config, tc, val, ckdir, provenance, acc, t_prep, log,
                                  init_post)
    res, session, acc = _train_session(settings, space, config, sim, val, ckdir, provenance, init_post,
                                       data_info, acc)
    diag = sim.diagnostics()
    log(f"simulated {diag['rows']:.0f} light curves on the device this session ({diag['rows'] / session:.0f} "
        f"per second with training); class rows {diag['in_class_prior']:.0f} prior + "
        f"{diag['in_class_candidates']:.0f} enrichment, slot overflow {diag['overflow']:.0f}")
    if res is None:
        log(f"stopped after {session / 60:.1f} min (max_minutes); run the same command again to resume")
        return {"finished": False, "session_s": session, "ondevice": diag}
    extra = {"validation_set_s": t_prep, "ondevice_last_session": diag,
             "light_curves_simulated": int(res.steps_done * tc.batch_size)}
    return _save_trained(settings, res, acc, extra, int(res.steps_done * tc.batch_size), log)


def _stream_plan(settings: TrainSettings, manifest: dict, spec_text: str | None) -> StreamPlan:
    """The :class:`mulens_sbi.data.stream.StreamPlan` of a run: the next shards of ``data`` (and of
    ``enrich``), with their folders' seeds and shard sizes."""
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
    diff = differing_keys(space.to_dict(), init_space.to_dict(), ignore=("loc", "scale"))
    if diff:
        raise ValueError(f"init_from {source}: parameter space differs from this run's at {diff} "
                         f"(names, transforms and prior bounds must match)")
    return init_space


def _export_checkpoint(settings, space, config, tc, val, ckdir, provenance, acc, t_prep,
                       log, init_post=None) -> dict[str, Any]:
    """Save the checkpoint's best parameters as the model without training further (a warm start's
    initial model is recorded as in a trained model's metadata)."""
    _, params = init_params(config, space.dim, jax.tree_util.tree_map(lambda a: a[:1], val[1]),
                            jax.random.PRNGKey(0))
    loaded = load_train_state(ckdir, {"params": params, "opt_state": adam_direction().init(params),
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
