"""Command line: ``mulens-sbi <command> [options]``.

Each command is a thin wrapper: an ``add_arguments(parser)`` that declares its options and a
``run(args)`` that turns them into a frozen settings object and calls ONE library function
(e.g. :func:`mulens_sbi.simulate.run_simulation`). Every command takes ``--settings FILE.toml``
(its settings class as TOML, :mod:`mulens_sbi.settings_file`: ``SimulateSettings``, ``DemoSettings``,
``TrainSettings``, ``ValidateSettings``, ``FitSettings``, ``CatalogSettings``,
``DegeneracySettings``); flags given on the command line override the file, and a bad file is an
error naming the file and the key. New commands are added by appending a :class:`Command` to
:data:`COMMANDS`. Errors the user can fix (bad spec, output exists, bad
value) print ``mulens-sbi <command>: error: ...`` and exit with status 2; nothing is overwritten
without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {v}")
    return v


def _add_settings_arg(p: argparse.ArgumentParser, cls_name: str) -> None:
    p.add_argument("--settings", default=None, metavar="FILE.toml",
                   help=f"read the {cls_name} from this TOML file (keys: its field names; nested tables "
                        "such as [train] for the network and loop settings); flags given on the command "
                        "line override it")


def _given(args: argparse.Namespace, flags: dict[str, tuple[str, Callable[[Any], Any]]]) -> dict[str, Any]:
    """The settings overrides of the flags given on the command line (``None``: not given; the flags'
    parser defaults are ``None`` so that a settings file can set them)."""
    out: dict[str, Any] = {}
    for dest, (key, conv) in flags.items():
        v = getattr(args, dest, None)
        if v is not None:
            out[key] = conv(v)
    return out


def _flag_name(args: argparse.Namespace, dest: str) -> str:
    """How the user writes ``dest`` on the command line: ``--flag``, or a positional's metavar."""
    for action in args._parser._actions:
        if action.dest == dest:
            return action.option_strings[0] if action.option_strings else (action.metavar or dest.upper())
    return f"--{dest.replace('_', '-')}"


def _settings(args: argparse.Namespace, cls: type, flags: dict[str, tuple[str, Callable[[Any], Any]]],
              required: tuple[str, ...], extra: dict[str, Any] | None = None) -> Any:
    """``cls`` from ``--settings`` (if given) with the explicitly given flags (and ``extra``) on top;
    without a file, from the flags and the dataclass defaults (the flags' documented defaults)."""
    from mulens_sbi.settings_file import load_settings, settings_from_dict

    overrides = {**_given(args, flags), **(extra or {})}
    if args.settings is None:
        missing = [_flag_name(args, d) for d in required if getattr(args, d, None) is None]
        if missing:
            args._parser.error(f"the following arguments are required (or give them in --settings): "
                               f"{', '.join(missing)}")
        return settings_from_dict(cls, {}, overrides, source="command line")
    return load_settings(args.settings, cls, overrides)


def _same(v: Any) -> Any:
    return v


def _true(v: Any) -> bool:
    return True


def _false(v: Any) -> bool:
    return False


# ----------------------------------------------------------------------------------------------
# simulate

#: simulate's flags: argparse dest -> (SimulateSettings key, converter of the given value)
SIMULATE_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "survey": ("survey", _same), "n": ("n", _same), "out": ("out", _same), "seed": ("seed", _same),
    "shard_size": ("shard_size", _same), "batch_size": ("batch_size", _same),
    "overwrite": ("overwrite", _true), "no_progress": ("progress", _false),
    "condition": ("condition", _same), "q_max": ("q_max", _same), "workers": ("workers", _same),
}


def _simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--survey",
        help="survey spec: a name under simulators/ (roman, kmtnet) or a path to a .toml file (required "
        "unless in --settings)",
    )
    p.add_argument("--n", type=_positive_int, help="number of light curves (required unless in --settings)")
    p.add_argument("--out", help="output folder (shards + manifest.json; required unless in --settings)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0); same seed, same set")
    p.add_argument(
        "--shard-size", type=_positive_int, default=1000, help="light curves per shard (default 1000)"
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=128,
        help="light curves per solver call (default 128; part of the run's identity)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="delete an existing simulation in --out and start again"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--condition",
        choices=("caustic-crossing",),
        default=None,
        help="draw from the prior conditioned on an event class: 'caustic-crossing' = q < --q-max and >= 1 "
        "data point with the source inside a caustic (exact rejection with a geometric pre-filter; the "
        "acceptance, i.e. the class probability, is recorded in the shards)",
    )
    p.add_argument("--q-max", type=float, default=0.01,
                   help="mass-ratio bound with --condition (default 0.01)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="processes making shards in parallel, each running JAX on the CPU (default 1); "
                        "the output is the same for any number")
    _add_settings_arg(p, "SimulateSettings")
    p.set_defaults(**{dest: None for dest in SIMULATE_FLAGS})


def simulate_settings(args: argparse.Namespace):
    """The :class:`~mulens_sbi.simulate.SimulateSettings` of parsed ``simulate`` arguments."""
    from mulens_sbi.simulate import SimulateSettings

    return _settings(args, SimulateSettings, SIMULATE_FLAGS, ("survey", "n", "out"))


def _simulate_run(args: argparse.Namespace) -> int:
    from mulens_sbi.simulate import run_simulation

    settings = simulate_settings(args)
    s = run_simulation(settings)
    print(
        f"wrote {s.n} light curves in {s.n_shards} shards to {s.out} "
        f"({s.shards_made} made, {s.shards_reused} reused) in {s.wall_s:.1f} s, "
        f"peak memory {s.peak_rss_mb:.0f} MiB, {s.n_unsolved_points} unsolved points"
    )
    if settings.condition:
        from mulens_sbi.data.shards import condition_stats

        c = condition_stats(s.out)
        print(
            f"condition {c['condition']} (q < {c['q_max']}): {c['n_accepted']} of {c['n_candidates']} prior "
            f"candidates ({c['n_prefiltered']} simulated after the pre-filter); class probability "
            f"{c['probability']:.5f}" + (f" ± {c['probability_se']:.5f}" if c["probability_se"] else "")
        )
    return 0


# ----------------------------------------------------------------------------------------------
# demo


#: demo's flags: argparse dest -> (DemoSettings key, converter)
DEMO_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "out": ("out", _same), "seed": ("seed", _same), "overwrite": ("overwrite", _true), "n": ("n", _same),
    "mode": ("mode", _same),
}


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output folder for the plots and report (required unless in --settings)")
    p.add_argument("--seed", type=_nonneg_int, help="noise/cadence seed (default 0)")
    p.add_argument("--n", type=_positive_int, help="amortized samples of the fit demo (default 4096)")
    p.add_argument("--mode", choices=("auto", "fit", "simulate"),
                   help="auto (default): fit the shipped example event when the shipped model is present, "
                        "else simulate one; fit; simulate")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo in --out")
    _add_settings_arg(p, "DemoSettings")
    p.set_defaults(**{dest: None for dest in DEMO_FLAGS})


def demo_settings(args: argparse.Namespace):
    """The :class:`~mulens_sbi.demo.DemoSettings` of parsed ``demo`` arguments."""
    from mulens_sbi.demo import DemoSettings

    return _settings(args, DemoSettings, DEMO_FLAGS, ("out",))


def _demo_run(args: argparse.Namespace) -> int:
    from mulens_sbi.demo import run_demo

    report = run_demo(demo_settings(args))
    for name in report["files"]:
        print(f"wrote {name}")
    return 0


# ----------------------------------------------------------------------------------------------
# train


#: train's flags: argparse dest -> (TrainSettings key, converter); ``--network`` is handled apart
TRAIN_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "data": ("data", _same), "out": ("out", _same), "checkpoint_dir": ("checkpoint_dir", _same),
    "holdout_shards": ("holdout_shards", _same), "max_steps": ("train.max_steps", _same),
    "batch_size": ("train.batch_size", _same), "learning_rate": ("train.learning_rate", _same),
    "seed": ("train.seed", _same), "max_minutes": ("max_minutes", _same), "stop": ("stop", _true),
    "overwrite": ("overwrite", _true), "init_from": ("init_from", _same), "enrich": ("enrich", _same),
    "enrich_fraction": ("enrich_fraction", _same), "sharp_weight": ("sharp_weight", _same),
    "sharp_threshold": ("sharp_threshold", _same), "patience": ("train.patience", _same),
    "sampler": ("sampler", _same), "budget_minutes": ("budget_minutes", _same),
    "warmup_steps": ("train.warmup_steps", _same), "eval_every": ("train.eval_every", _same),
    "checkpoint_every": ("train.checkpoint_every", _same), "workers": ("workers", _same),
    "stream_prior": ("stream_rows", _same), "stream_enrich": ("stream_enrich_rows", _same),
    "stream_workers": ("stream_workers", _same), "no_progress": ("progress", _false),
    "survey": ("survey", _same), "simulate_enrich": ("ondevice.enrich_fraction", _same),
}


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="a `mulens-sbi simulate` output folder (training set; required unless in "
                                  "--settings or with --sampler simulate)")
    p.add_argument("--out",
                   help="model folder to write (weights, posterior.json, training.json; required unless in "
                        "--settings)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="training-state folder (default OUT/_checkpoint); a killed run resumes from it")
    p.add_argument("--holdout-shards", type=_nonneg_int, default=5,
                   help="last shards kept out of training, for `validate` (default 5)")
    p.add_argument("--max-steps", type=_positive_int, default=4000, help="optimizer steps (default 4000)")
    p.add_argument("--batch-size", type=_positive_int, default=128,
                   help="light curves per step (default 128)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="training seed (default 0)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (resumably) after this many minutes in this session (default: no limit)")
    p.add_argument("--stop", action="store_true",
                   help="do not train: save the checkpoint's best parameters as the model now")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model / restart training")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="warm start (fine-tune) from this model folder's weights with a fresh schedule; the "
                        "network and the simulation folder must be the same")
    p.add_argument("--enrich", default=None, metavar="DIR",
                   help="a `mulens-sbi simulate --condition` folder of the same spec: rows of that rare "
                        "class make up --enrich-fraction of each batch, weighted back to the prior (the "
                        "target posterior is unchanged)")
    p.add_argument("--enrich-fraction", type=float, default=0.25,
                   help="share of each batch drawn from --enrich (default 0.25; in (0, 1))")
    p.add_argument("--sharp-weight", type=float, default=1.0,
                   help="loss weight of light curves with a sharp feature (caustic crossing, cusp "
                        "approach): a function of the data only, so the target posterior is unchanged "
                        "(default 1 = off)")
    p.add_argument("--sharp-threshold", type=float, default=8.0,
                   help="sharp-feature statistic threshold, in noise units (default 8)")
    p.add_argument("--patience", type=_nonneg_int, default=10,
                   help="early stopping after this many evaluations without improvement (0 = off; "
                        "default 10)")
    p.add_argument("--network", choices=("standard", "fine"), default=None,
                   help="preprocessing + network: 'standard' (512 time cells, the CPU default) or 'fine' "
                        "(2048 cells, residual blocks, a deeper flow; for a GPU); replaces the [preprocess], "
                        "[embedding] and [flow] of --settings")
    p.add_argument("--sampler", choices=("host", "device", "simulate"), default="host",
                   help="draw batches with numpy on the host (default) or with jax.random on the "
                        "accelerator, where the pre-binned set is kept (use 'device' on a GPU); 'simulate': "
                        "no --data, every batch is simulated afresh on the accelerator from --survey")
    p.add_argument("--survey", default=None, metavar="NAME|PATH",
                   help="with --sampler simulate: the survey spec to simulate (whole-season windows, "
                        "e.g. roman_season)")
    p.add_argument("--simulate-enrich", type=float, default=None, metavar="F",
                   help="with --sampler simulate: share of each batch given to caustic-crossing candidates, "
                        "weighted back to the prior (default 0 = off; [ondevice] enrich_fraction)")
    p.add_argument("--budget-minutes", type=float, default=0.0,
                   help="fit the learning-rate schedule to this wall time: the step rate measured during "
                        "the warm-up sets the number of steps (at most --max-steps; default: off)")
    p.add_argument("--warmup-steps", type=_nonneg_int, default=100,
                   help="learning-rate warm-up steps (default 100; at least 50 with --budget-minutes)")
    p.add_argument("--eval-every", type=_positive_int, default=200,
                   help="steps between validation losses (default 200)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=100,
                   help="steps between checkpoints (default 100)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="processes for pre-binning and class flags (default 1)")
    p.add_argument("--stream-prior", type=_nonneg_int, default=0, metavar="N",
                   help="simulate N further prior light curves (the next shards of --data) while "
                        "training and add them as they arrive (needs --sampler device; default 0)")
    p.add_argument("--stream-enrich", type=_nonneg_int, default=0, metavar="M",
                   help="the same for the --enrich folder (default 0)")
    p.add_argument("--stream-workers", type=_nonneg_int, default=0,
                   help="processes simulating the streamed shards (default: --workers)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _add_settings_arg(p, "TrainSettings (e.g. a model's stored settings, `dump_settings` of them)")
    p.set_defaults(**{dest: None for dest in TRAIN_FLAGS})


def train_settings(args: argparse.Namespace):
    """The :class:`~mulens_sbi.training.TrainSettings` of parsed ``train`` arguments (``--network``
    sets the preprocessing, embedding and flow; without it and without a file, ``standard``)."""
    from mulens_sbi.training import NETWORKS, TrainSettings

    extra = {}
    if args.network is not None:
        pre, emb, flow = NETWORKS[args.network]
        extra = {"preprocess": pre, "embedding": emb, "flow": flow}
    required = ("out",) if args.sampler == "simulate" else ("data", "out")
    return _settings(args, TrainSettings, TRAIN_FLAGS, required, extra)


def _train_run(args: argparse.Namespace) -> int:
    from mulens_sbi.training import run_training

    settings = train_settings(args)
    try:
        summary = run_training(settings)
    except FileExistsError as exc:
        print(f"mulens-sbi train: error: {exc}", file=sys.stderr)
        return 2
    return 0 if summary.get("finished") else 3


# ----------------------------------------------------------------------------------------------
# validate


#: validate's flags: argparse dest -> (ValidateSettings key, converter)
VALIDATE_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "model": ("model", _same), "data": ("data", _same), "n": ("n", _same), "n_samples": ("n_samples", _same),
    "holdout_shards": ("holdout_shards", _same), "caustic_data": ("caustic_data", _same),
    "other_spec": ("other_spec", _true),
    "out": ("out", _same), "seed": ("seed", _same), "overwrite": ("overwrite", _true),
    "no_progress": ("progress", _false),
}


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (roman) or model folder (required unless in --settings)")
    p.add_argument("--data", default=None,
                   help="simulate folder whose last --holdout-shards shards are held out (default: simulate "
                        "--n fresh events with the model's survey spec)")
    p.add_argument("--n", type=_positive_int, default=1000, help="number of events (default 1000)")
    p.add_argument("--n-samples", type=_positive_int, default=500, help="posterior samples per event")
    p.add_argument("--holdout-shards", type=_positive_int, default=5, help="held-out shards in --data")
    p.add_argument("--caustic-data", default=None, metavar="DIR",
                   help="a `mulens-sbi simulate --condition caustic-crossing` folder (not used in training): "
                        "the caustic-crossing figure is measured on its events instead of on the few "
                        "caustic crossings among the --n events")
    p.add_argument("--other-spec", action="store_true",
                   help="accept a --caustic-data folder simulated with another spec than the model's (to "
                        "compare models on the same events, e.g. on whole-season light curves)")
    p.add_argument("--out", default=None, help="output folder (default: the model folder)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="sampling / simulation seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing validation outputs")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _add_settings_arg(p, "ValidateSettings")
    p.set_defaults(**{dest: None for dest in VALIDATE_FLAGS})


def validate_settings(args: argparse.Namespace):
    """The :class:`~mulens_sbi.validation.ValidateSettings` of parsed ``validate`` arguments."""
    from mulens_sbi.validation import ValidateSettings

    return _settings(args, ValidateSettings, VALIDATE_FLAGS, ("model",))


def _validate_run(args: argparse.Namespace) -> int:
    from mulens_sbi.validation import run_validation

    settings = validate_settings(args)
    try:
        run_validation(settings)
    except FileExistsError as exc:
        print(f"mulens-sbi validate: error: {exc}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------------------------
# fit


#: fit's flags: argparse dest -> (FitSettings key, converter); FILE, --model, --out, --overwrite and
#: --no-figures say what is fitted and where it goes, not how, and are not settings
FIT_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "n": ("n", _same), "refine": ("refine", _same), "time_budget": ("exact.time_budget_s", _same),
    "seed": ("seed", _same), "restrict": ("restrict", tuple), "kind": ("kind", _same),
    "time_format": ("time_format", _same), "no_progress": ("progress", _false),
}


def _fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="photometry files in any supported format, detected from the file (NASA Exoplanet "
                        "Archive IPAC tables, OGLE, MOA, KMTNet pySIS/DIA, plain 'time mag err' tables), "
                        "folders of them or event manifests; one dataset per file, each with its own F_s, "
                        "F_b (docs/data.md)")
    p.add_argument("--model", default="roman", help="shipped model name (default roman) or a model folder")
    p.add_argument("--out", required=True,
                   help="output folder (samples.parquet, summary.json, report.md, fit_settings.toml, "
                        "figures)")
    p.add_argument("--n", type=_positive_int, help="amortized samples (default 10000)")
    p.add_argument("--refine", choices=("auto", "exact", "is", "nuts", "none"),
                   help="auto (default): importance sampling of the flow with the exact likelihood, and "
                        "where it fails the exact stage (global search, local fits, importance sampling "
                        "around every mode); exact: the exact stage always; is: flow importance sampling "
                        "only; nuts: IS, then NUTS started from it; none: flow only")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="time budget of the exact stage's search (default 600 s)")
    p.add_argument("--seed", type=_nonneg_int, help="random seed (default 0)")
    p.add_argument("--restrict", action="append", metavar="NAME=LOW:HIGH",
                   help="posterior under the prior restricted to a sub-range (repeatable; either bound may "
                        "be empty), e.g. --restrict q=:0.01 for 'if the companion is a planet'; "
                        "parameters u_0, t_E (days), s, q, alpha (degrees); replaces the file's restrict")
    p.add_argument("--kind", choices=("mag", "flux"),
                   help="the value column is magnitude or flux (default: from the format, the header, or "
                        "the values; needed only where the reader says it cannot tell)")
    p.add_argument("--time-format", choices=("auto", "HJD", "HJD'", "HJD-2400000", "MJD"),
                   help="time column scale (default auto: by header name or value)")
    p.add_argument("--overwrite", action="store_true", help="replace the fit files in an existing --out")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_settings_arg(p, "FitSettings (e.g. the fit_settings.toml a fit wrote; [exact] for the exact "
                         "stage)")
    p.set_defaults(**{dest: None for dest in FIT_FLAGS})


def fit_settings(args: argparse.Namespace):
    """The :class:`~mulens_sbi.fit_settings.FitSettings` of parsed ``fit`` arguments."""
    from mulens_sbi.fit_settings import FitSettings

    return _settings(args, FitSettings, FIT_FLAGS, ())


def _fit_run(args: argparse.Namespace) -> int:
    from mulens_sbi.fit import check_output, fit, save_fit

    settings = fit_settings(args)
    check_output(args.out, args.overwrite)  # refuse before spending time on the fit
    result = fit(args.files, args.model, settings=settings)
    files = save_fit(result, args.out, overwrite=args.overwrite, figures=not args.no_figures)
    print(repr(result))
    for f in files:
        print(f"wrote {f}")
    if result.status == "fail":
        if result.method == "nuts":
            print("mulens-sbi fit: WARNING: NUTS failed (R-hat, divergences or effective sample size); "
                  "see summary.json/report.md", file=sys.stderr)
        elif result.method == "exact":
            print("mulens-sbi fit: WARNING: the exact stage failed (" + result.messages[-1] + "); see "
                  "summary.json/report.md", file=sys.stderr)
        else:
            print("mulens-sbi fit: WARNING: the amortized posterior and the likelihood disagree (sample "
                  "efficiency below 1%); see summary.json/report.md and consider --refine nuts",
                  file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------
# catalog


#: catalog's flags: argparse dest -> (CatalogSettings key, converter)
CATALOG_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "input": ("input", _same), "out": ("out", _same), "model": ("model", _same), "engine": ("engine", _same),
    "n_samples": ("n_samples", _same), "refine": ("refine", _same), "seed": ("seed", _same),
    "restrict": ("restrict", ",".join), "shard_size": ("shard_size", _same),
    "batch_size": ("batch_size", _same), "actors": ("num_actors", _same),
    "ray_address": ("ray_address", _same), "overwrite": ("overwrite", _true),
    "no_progress": ("progress", _false),
}


def _catalog_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", nargs="?",
                   help="a folder of event files/manifests, or a parquet file/folder of light curves "
                        "(required unless in --settings)")
    p.add_argument("--model", help="shipped model name (default roman) or a model folder")
    p.add_argument("--out", help="output folder (catalog.json, parts/, catalog.parquet; required unless in "
                                 "--settings)")
    p.add_argument("--engine", choices=("local", "ray"),
                   help="local (default) or ray (Ray Data actors; --ray-address to join a cluster)")
    p.add_argument("--n-samples", type=_positive_int, help="flow samples per event (default 1000)")
    p.add_argument("--refine", choices=("is", "auto", "exact", "none"),
                   help="is: importance sampling of the flow with the exact likelihood (default); auto: "
                        "and the exact stage where that fails (as `fit`); exact: the exact stage for "
                        "every event; none: flow only")
    p.add_argument("--seed", type=_nonneg_int, help="random seed (default 0)")
    p.add_argument("--restrict", action="append", metavar="NAME=LOW:HIGH",
                   help="posterior under the prior restricted to a sub-range, as in `fit --restrict` "
                        "(repeatable); column restricted_mass: the flow's probability of the range")
    p.add_argument("--shard-size", type=_positive_int, help="events per output part (default 64)")
    p.add_argument("--batch-size", type=_positive_int, help="events per flow call (default 16)")
    p.add_argument("--actors", type=_positive_int, help="Ray actors (default: CPUs / 1)")
    p.add_argument("--ray-address", help="address of a running Ray cluster (default: start a local one)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing catalog in --out and start again")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_settings_arg(p, "CatalogSettings")
    p.set_defaults(**{dest: None for dest in CATALOG_FLAGS})


def catalog_settings(args: argparse.Namespace):
    """The :class:`~mulens_sbi.catalog.CatalogSettings` of parsed ``catalog`` arguments."""
    from mulens_sbi.catalog import CatalogSettings

    return _settings(args, CatalogSettings, CATALOG_FLAGS, ("input", "out"))


def _catalog_run(args: argparse.Namespace) -> int:
    from mulens_sbi.catalog import run_catalog

    s = run_catalog(catalog_settings(args))
    print(f"{s['n_events']} events in {s['n_shards']} parts ({s['shards_made']} made, {s['shards_reused']} "
          f"reused) in {s['wall_s']:.1f} s; status: {s.get('status_counts')}; "
          f"table: {s['out']}/catalog.parquet")
    return 0


# ----------------------------------------------------------------------------------------------
# degeneracy


#: degeneracy's flags: argparse dest -> (DegeneracySettings key, converter)
DEGENERACY_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "samples": ("samples", _same), "out": ("out", _same), "data": ("data", tuple), "seed": ("seed", _same),
    "max_modes": ("max_modes", _same), "min_weight": ("min_weight", _same),
    "overwrite": ("overwrite", _true), "no_figures": ("figures", _false),
}


def _degeneracy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("samples", metavar="SAMPLES", nargs="?",
                   help="posterior samples: parquet or CSV with columns s, q, u_0, alpha (degrees) [, t_0, "
                        "t_E, weight, log_likelihood], e.g. the samples.parquet of `mulens-sbi fit` "
                        "(required unless in --settings)")
    p.add_argument("--out",
                   help="output folder (report.json, degeneracy_caustics.png, degeneracy_lightcurves.png, "
                        "degeneracy_relation.png; required unless in --settings)")
    p.add_argument("--data", nargs="+", metavar="FILE",
                   help="the event's photometry (one dataset per file): enables the partner search with the "
                        "exact likelihood and light curves at the data's times")
    p.add_argument("--seed", type=_nonneg_int, help="random seed (default 0)")
    p.add_argument("--max-modes", type=_positive_int, help="at most this many modes (default 4)")
    p.add_argument("--min-weight", type=float,
                   help="modes with less posterior mass are dropped (default 0.02)")
    p.add_argument("--overwrite", action="store_true", help="replace the report files in an existing --out")
    p.add_argument("--no-figures", action="store_true", help="write report.json only")
    _add_settings_arg(p, "DegeneracySettings")
    p.set_defaults(**{dest: None for dest in DEGENERACY_FLAGS})


def degeneracy_settings(args: argparse.Namespace):
    """The :class:`~mulens_sbi.degeneracy.command.DegeneracySettings` of parsed ``degeneracy``
    arguments."""
    from mulens_sbi.degeneracy.command import DegeneracySettings

    return _settings(args, DegeneracySettings, DEGENERACY_FLAGS, ("samples", "out"))


def _degeneracy_run(args: argparse.Namespace) -> int:
    from mulens_sbi.degeneracy.command import run_degeneracy

    report, files = run_degeneracy(degeneracy_settings(args))
    print(repr(report))
    for f in files:
        print(f"wrote {f}")
    return 0


COMMANDS: list[Command] = [
    Command(
        "simulate",
        "simulate a training set of light curves from a survey spec",
        "Simulate light curves (parameters from the spec's priors, survey cadence, noise model) and "
        "write them as parquet shards with a manifest. A killed run resumes when the same command is "
        "run again; a folder holding anything else is refused unless --overwrite.",
        _simulate_args,
        _simulate_run,
    ),
    Command(
        "demo",
        "fit the shipped example event with the shipped model (plots and report)",
        "Fit the shipped Roman example event (examples/events/roman_example) with the shipped model and "
        "write its figures, summary and report; without a shipped model, simulate one planetary "
        "caustic-crossing event with the Roman spec and plot it.",
        _demo_args,
        _demo_run,
    ),
    Command(
        "train",
        "train a survey's amortized posterior (NPE) from a simulated training set",
        "Pre-bin a `mulens-sbi simulate` folder (last --holdout-shards shards held out), then train the "
        "neural posterior with noise redrawn on the fly; checkpoints let a killed run resume with the "
        "same command. Writes weights.msgpack, posterior.json and training.json to --out.",
        _train_args,
        _train_run,
    ),
    Command(
        "validate",
        "coverage / SBC / parameter recovery of a trained model on held-out events",
        "Run a trained model on held-out simulated events and write validation.json, coverage.png, "
        "recovery.png and sbc.png (per-parameter coverage at 50/68/90/95%, joint HPD, TARP, and the "
        "caustic-crossing planetary subset).",
        _validate_args,
        _validate_run,
    ),
    Command(
        "fit",
        "fit one event's light curve(s) with a trained model (posterior samples, summary, figures)",
        "Amortized posterior samples from a trained model, reweighted with the exact likelihood "
        "(importance sampling: ESS, sample efficiency, evidence), optionally refined by NUTS. Several "
        "FILEs are several datasets of one event. Writes samples.parquet, summary.json, report.md, "
        "lightcurve.png, corner.png and caustics.png to --out (refused if present, unless --overwrite).",
        _fit_args,
        _fit_run,
    ),
    Command(
        "catalog",
        "bulk inference over a folder of events or a parquet table of light curves (resumable)",
        "Amortized posteriors for many events at once (batched, jitted), importance-sampled with each "
        "event's exact multi-dataset likelihood; one parquet row per event (summaries, modes, degeneracy "
        "class, ESS, failure reason). Resumable: re-run the same command after a kill. --engine ray runs "
        "on Ray Data actors.",
        _catalog_args,
        _catalog_run,
    ),
    Command(
        "degeneracy",
        "test a posterior's modes against the offset degeneracy (close-wide, inner-outer, offset)",
        "Find the modes of posterior samples (reflection copies recognised), test every pair against the "
        "offset-degeneracy relation f(s_A) + f(s_B) = 2 x0 (Zhang, Gaudi & Bloom 2022) with an uncertainty, "
        "classify it, and with --data search for a partner the samples miss (exact likelihood, delta chi2). "
        "Writes report.json and figures to --out (refused if present, unless --overwrite).",
        _degeneracy_args,
        _degeneracy_run,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    from mulens_sbi import __version__

    parser = argparse.ArgumentParser(
        prog="mulens-sbi",
        description="Simulation-based inference for gravitational microlensing events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description)
        cmd.add_arguments(p)
        p.set_defaults(_command=cmd, _parser=p)
    return parser


def _compilation_cache() -> None:
    """A persistent JAX compilation cache for the command line: the exact stage's and the flow's
    programs compile once per machine and shape (minutes on a CPU) instead of once per process.
    ``MULENS_SBI_JAX_CACHE`` names the folder (default ``~/.cache/mulens-sbi/jax``; ``off``
    disables it); JAX's own ``JAX_COMPILATION_CACHE_DIR`` wins when set."""
    import os

    folder = os.environ.get("MULENS_SBI_JAX_CACHE", str(Path.home() / ".cache" / "mulens-sbi" / "jax"))
    if folder.lower() == "off" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mulens-sbi`` console script. Returns the exit status."""
    from mulens_sbi.simulate import OutputExistsError
    from mulens_sbi.survey import SpecError

    parser = build_parser()
    args = parser.parse_args(argv)
    _compilation_cache()
    try:
        return args._command.run(args)
    except (SpecError, OutputExistsError, ValueError, NotImplementedError, FileNotFoundError) as exc:
        print(f"mulens-sbi {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mulens-sbi {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
