"""Training-set simulator: batched light curves from a survey spec, written as parquet shards.

Each light curve: parameters drawn from the spec's priors, fixed-length observation times from the
survey cadence (see :mod:`mulens_sbi.survey.cadence`), the noiseless flux ``F = F_s·A + F_b``
(zero point 22) from :func:`mulens_sbi.magnification_batch`, the 1σ error ``sigma`` of the noise model
and ONE noisy realisation ``flux = flux_true + sigma·N(0, 1)``. Training code should draw fresh noise
on the fly from ``flux_true`` and ``sigma`` (:func:`mulens_sbi.survey.add_noise`); the stored
realisation is for inspection and for tests. Where ``mask`` is False (padding, or a point the
magnification solver could not certify, counted in ``n_unsolved``) ``flux_true``, ``sigma`` and
``flux`` are NaN.

On disk (``OUT/``):

* ``manifest.json`` – settings (survey name, spec text and sha256, seed, n, shard and batch size),
  versions, and when finished ``complete: true`` with each shard's rows and sha256;
* ``shard-00000.parquet`` … – ``shard_size`` light curves each (the last may be shorter). Shard ``i``
  is a pure function of ``(spec, seed, i, shard_size, batch_size)``: its random numbers come from
  ``numpy.random.default_rng(SeedSequence([seed, i]))``. A shard is written to a temporary name and
  renamed atomically, so a file with a final name is always complete. Re-running the same command
  after a kill resumes: existing shards are kept, temporary files removed, missing shards made.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT = "mulens-sbi-simulation"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.parquet"
#: columns holding one array of ``n_points`` per light curve
SERIES = ("t", "flux_true", "sigma", "flux", "mask")
_SERIES_TYPES = {
    "t": pa.float64(),
    "flux_true": pa.float32(),
    "sigma": pa.float32(),
    "flux": pa.float32(),
    "mask": pa.bool_(),
    "site": pa.int8(),
}
#: settings that must match for a resume
_RESUME_KEYS = ("format_version", "spec_sha256", "seed", "n", "shard_size", "batch_size", "condition")


class OutputExistsError(RuntimeError):
    """The output folder holds something this run must not overwrite."""


@dataclass(frozen=True)
class SimulateSettings:
    """Settings of ``mulens-sbi simulate`` (one run, one output folder)."""

    survey: str  # spec name ("roman") or path to a .toml file
    n: int
    out: str
    seed: int = 0
    shard_size: int = 1000
    batch_size: int = 128
    overwrite: bool = False
    progress: bool = True
    #: draw from the prior conditioned on an event class (see :mod:`mulens_sbi.conditioned`);
    #: None: plain prior draws
    condition: str | None = None
    #: mass-ratio bound of the planetary class (with ``condition``)
    q_max: float = 0.01
    #: worker processes making shards in parallel (1: in this process). Workers run JAX on the CPU;
    #: shards are pure functions of ``(spec, seed, index)``, so on the CPU the output does not
    #: depend on the number (a GPU in this process may differ at rounding level).
    workers: int = 1


@dataclass(frozen=True)
class SimulationSummary:
    out: str
    n: int
    n_shards: int
    shards_made: int
    shards_reused: int
    wall_s: float
    peak_rss_mb: float
    n_unsolved_points: int


# ----------------------------------------------------------------------------------------------
# Light curves in memory


def _magnification(survey, params: dict[str, np.ndarray], t: np.ndarray, batch_size: int):
    """A(t) and ok for all rows, computed in fixed-shape batches (padded by repeating the last row)."""
    from mulens_sbi import magnification_batch

    spec = survey.spec
    names = ["t_0", "u_0", "t_E"]
    if spec.model.lens == "binary":
        names += ["s", "q", "alpha"]
    if spec.model.source == "finite":
        names += ["rho", "limb_darkening"]
    b = t.shape[0]
    mags, oks = [], []
    for lo in range(0, b, batch_size):
        idx = np.minimum(np.arange(lo, lo + batch_size), b - 1)
        p = {k: params[k][idx] for k in names}
        try:
            a, ok = magnification_batch(t[idx], p)
        except (NotImplementedError, ImportError, AttributeError) as exc:
            if spec.model.source == "finite":
                raise NotImplementedError(
                    f"{spec.path}: model.source = 'finite' needs the finite-source magnification, which "
                    f"is not available in this version ({type(exc).__name__}: {exc}); use source = 'point'"
                ) from exc
            raise
        n_real = min(batch_size, b - lo)
        mags.append(np.asarray(a)[:n_real])
        oks.append(np.asarray(ok)[:n_real])
    return np.concatenate(mags), np.concatenate(oks)


def simulate_lightcurves(
    survey,
    rng: np.random.Generator,
    n: int,
    batch_size: int = 128,
    params: dict[str, np.ndarray] | None = None,
    field: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Simulate ``n`` light curves of a :class:`~mulens_sbi.survey.Survey` (all in memory).

    Args:
        survey: the loaded survey.
        rng: numpy generator; the draws are, in order: parameters, field classes, observation
            times, noise.
        n: number of light curves.
        batch_size: rows per call of the magnification solver (a fixed shape: one compile).
        params: fixed parameters instead of prior draws (dict of (n,) arrays incl. ``source_mag``
            and ``blend_fraction``); ``f_s``/``f_b`` are derived if missing.
        field: fixed field-class indices instead of draws.

    Returns:
        dict of numpy arrays: each parameter and ``f_s``, ``f_b``, ``field``, ``n_obs``,
        ``n_available``, ``n_unsolved`` of shape (n,); ``t``, ``flux_true``, ``sigma``, ``flux``,
        ``mask`` (and ``site`` for a ground survey) of shape (n, n_points).
    """
    from mulens_sbi.survey.noise import mag_to_flux

    if params is None:
        params = survey.sample_parameters(rng, n)
    else:
        params = {k: np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy() for k, v in params.items()}
        if "f_s" not in params:
            params["f_s"] = mag_to_flux(params["source_mag"])
            bf = params["blend_fraction"]
            params["f_b"] = params["f_s"] * bf / (1.0 - bf)
    obs = survey.observations(rng, params, field=field)
    mag, ok = _magnification(survey, params, obs.t, batch_size)
    flux_true = params["f_s"][:, None] * mag + params["f_b"][:, None]
    sigma = survey.flux_sigma(flux_true, obs.seeing)
    noise = rng.standard_normal(flux_true.shape)
    mask = obs.mask & ok
    unsolved = obs.mask & ~ok
    out = dict(params)
    out.update(
        field=obs.field.astype(np.int16),
        n_obs=mask.sum(axis=1).astype(np.int32),
        n_available=obs.n_available.astype(np.int32),
        n_unsolved=unsolved.sum(axis=1).astype(np.int32),
        t=obs.t,
        flux_true=np.where(mask, flux_true, np.nan).astype(np.float32),
        sigma=np.where(mask, sigma, np.nan).astype(np.float32),
        flux=np.where(mask, flux_true + sigma * noise, np.nan).astype(np.float32),
        mask=mask,
    )
    if survey.spec.is_ground:
        out["site"] = obs.site.astype(np.int8)
    return out


# ----------------------------------------------------------------------------------------------
# Shards


def shard_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of shard ``index``: depends only on ``(seed, index)``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def shard_rows(n: int, shard_size: int, index: int) -> int:
    return min(shard_size, n - index * shard_size)


def make_shard(survey, seed: int, index: int, n_rows: int, first_index: int, batch_size: int,
               condition: dict | None = None) -> pa.Table:
    """Simulate shard ``index`` and return it as an arrow table (one row per light curve).

    With ``condition`` (``{"condition": name, "q_max": float}``) the rows are prior draws conditioned
    on that event class (:func:`mulens_sbi.conditioned.simulate_conditioned`), and the table's
    schema metadata holds the shard's candidate / pre-filter / acceptance counts."""
    stats = None
    if condition is None:
        data = simulate_lightcurves(survey, shard_rng(seed, index), n_rows, batch_size=batch_size)
    else:
        from mulens_sbi.conditioned import simulate_conditioned
        data, stats = simulate_conditioned(survey, shard_rng(seed, index), n_rows,
                                           condition=condition["condition"], q_max=condition["q_max"],
                                           batch_size=batch_size)
    cols: dict[str, pa.Array] = {
        "index": pa.array(np.arange(first_index, first_index + n_rows, dtype=np.int64))
    }
    n_pts = survey.n_points
    for key, val in data.items():
        if val.ndim == 2:
            flat = pa.array(
                val.astype(_SERIES_TYPES[key].to_pandas_dtype()).reshape(-1), type=_SERIES_TYPES[key]
            )
            cols[key] = pa.FixedSizeListArray.from_arrays(flat, n_pts)
        else:
            cols[key] = pa.array(val)
    table = pa.table(cols)
    if stats is not None:
        table = table.replace_schema_metadata({"condition_stats": json.dumps(asdict(stats))})
    return table


def cpu_worker() -> None:
    """Initializer of worker processes: JAX on the CPU (on a GPU machine, many processes must not
    each claim the accelerator)."""
    import jax

    jax.config.update("jax_platforms", "cpu")


@functools.lru_cache(maxsize=4)
def _survey(spec: str):
    from mulens_sbi.survey import Survey

    return Survey.load(spec)


def _write_shard(survey, seed: int, index: int, rows: int, shard_size: int, batch_size: int,
                 condition: dict | None, out: str) -> int:
    """Make and write shard ``index``; returns its number of unsolved points."""
    table = make_shard(survey, seed, index, rows, index * shard_size, batch_size, condition)
    _write_atomic(Path(out) / shard_name(index), lambda p: pq.write_table(table, p, compression="zstd"))
    return int(np.asarray(table["n_unsolved"]).sum())


def _shard_job(spec: str, *args) -> int:
    """:func:`_write_shard` in a worker process, which loads the spec once."""
    return _write_shard(_survey(spec), *args)


def condition_stats(out: str | Path) -> dict | None:
    """The summed condition counts of a conditioned simulation folder (None for a plain one):
    ``n_candidates``, ``n_prefiltered``, ``n_accepted``, ``probability`` (accepted / candidates, the
    class probability under the prior) and its standard error (lenses as clusters, see
    :func:`mulens_sbi.conditioned.probability_se`)."""
    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text())
    if not manifest.get("condition"):
        return None
    tot = {"n_candidates": 0, "n_prefiltered": 0, "n_accepted": 0, "n_lenses": 0, "sum_sq_per_lens": 0}
    for f in sorted(out.glob(SHARD_GLOB)):
        meta = pq.read_schema(f).metadata or {}
        if b"condition_stats" not in meta:
            raise ValueError(f"{f}: a shard of a conditioned simulation without its condition_stats")
        for k, v in json.loads(meta[b"condition_stats"]).items():
            tot[k] = tot.get(k, 0) + int(v)
    from mulens_sbi.conditioned import probability_se

    p = tot["n_accepted"] / max(tot["n_candidates"], 1)
    se = probability_se(tot["n_candidates"], tot["n_accepted"], tot["n_lenses"], tot["sum_sq_per_lens"])
    se = None if not np.isfinite(se) else se  # shards without per-lens counts: unknown (JSON null)
    return {**tot, "condition": manifest["condition"], "q_max": manifest.get("q_max"), "probability": p,
            "probability_se": se}


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, obj: dict) -> None:
    _write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _ours(p: Path) -> bool:
    return p.name == MANIFEST or (p.name.startswith("shard-") and ".parquet" in p.name) or ".tmp-" in p.name


def _prepare_out(out: Path, manifest: dict, overwrite: bool) -> str:
    """Check the output folder; returns 'fresh' or 'resume'. Raises OutputExistsError."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    entries = sorted(out.iterdir()) if out.exists() else []
    if overwrite:
        for p in entries:
            if _ours(p):
                p.unlink()
        return "fresh"
    if not entries:
        return "fresh"
    mpath = out / MANIFEST
    if not mpath.is_file():
        raise OutputExistsError(
            f"output folder {out} is not empty and holds no {MANIFEST}: refusing to write into it; "
            f"choose another --out or pass --overwrite"
        )
    try:
        old = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise OutputExistsError(f"{mpath} cannot be read ({exc}); pass --overwrite to start again") from exc
    diff = [k for k in _RESUME_KEYS if old.get(k) != manifest.get(k)]
    if old.get("format") != FORMAT or diff:
        what = ", ".join(f"{k}: {old.get(k)!r} there vs {manifest.get(k)!r} now" for k in diff)
        raise OutputExistsError(
            f"output folder {out} holds a different simulation ({what or 'another format'}); "
            f"choose another --out or pass --overwrite"
        )
    foreign = [p.name for p in entries if not _ours(p)]
    if foreign:
        raise OutputExistsError(
            f"output folder {out} holds files that are not ours ({', '.join(foreign[:5])}); "
            f"choose another --out or pass --overwrite"
        )
    return "resume"


def run_simulation(settings: SimulateSettings, log: Callable[[str], None] = print) -> SimulationSummary:
    """Simulate ``settings.n`` light curves into ``settings.out`` (resumable; see module doc)."""
    import jax
    from tqdm import tqdm

    from mulens_sbi import __version__
    from mulens_sbi.survey import Survey

    if settings.n < 1:
        raise ValueError(f"n = {settings.n}: the number of light curves must be >= 1")
    if settings.shard_size < 1 or settings.batch_size < 1:
        raise ValueError("shard_size and batch_size must be >= 1")
    if settings.workers < 1:
        raise ValueError(f"workers = {settings.workers}: must be >= 1")
    t_start = time.perf_counter()
    survey = Survey.load(settings.survey)
    spec = survey.spec
    cond = None
    if settings.condition is not None:
        from mulens_sbi.conditioned import check_condition

        check_condition(spec, settings.condition, settings.q_max)  # before anything is written
        cond = {"condition": settings.condition, "q_max": settings.q_max}
    out = Path(settings.out)
    n_shards = -(-settings.n // settings.shard_size)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "survey": spec.name,
        "spec_path": spec.path,
        "spec_sha256": spec.sha256,
        "spec_text": spec.text,
        "seed": settings.seed,
        "n": settings.n,
        "shard_size": settings.shard_size,
        "batch_size": settings.batch_size,
        "n_shards": n_shards,
        "n_points": survey.n_points,
        "condition": settings.condition,
        "q_max": settings.q_max if settings.condition else None,
        "parameters": list(spec.sampled_parameters()),
        "versions": {
            "mulens_sbi": __version__,
            "jax": jax.__version__,
            "numpy": np.__version__,
            "pyarrow": pa.__version__,
            "python": platform.python_version(),
        },
        "settings": asdict(settings),
        "complete": False,
    }
    mode = _prepare_out(out, manifest, settings.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob("*.tmp-*"):  # leftovers of a killed run: never complete shards
        p.unlink()
    done = {i for i in range(n_shards) if (out / shard_name(i)).is_file()}
    for i in sorted(done):
        rows = pq.ParquetFile(out / shard_name(i)).metadata.num_rows
        if rows != shard_rows(settings.n, settings.shard_size, i):
            raise OutputExistsError(
                f"{out / shard_name(i)} has {rows} rows, expected "
                f"{shard_rows(settings.n, settings.shard_size, i)}; pass --overwrite"
            )
    if mode == "resume":
        log(f"resuming in {out}: {len(done)} of {n_shards} shards already there")
    _write_json(out / MANIFEST, manifest)

    n_unsolved = 0
    todo = [i for i in range(n_shards) if i not in done]
    with tqdm(
        total=settings.n,
        initial=sum(shard_rows(settings.n, settings.shard_size, i) for i in done),
        unit="lc",
        desc=f"simulate {spec.name}",
        disable=not settings.progress,
    ) as bar:
        if settings.workers == 1 or len(todo) < 2:
            for i in todo:
                rows = shard_rows(settings.n, settings.shard_size, i)
                n_unsolved += _write_shard(survey, settings.seed, i, rows, settings.shard_size,
                                           settings.batch_size, cond, str(out))
                bar.update(rows)
        else:
            # spawned (JAX is not fork-safe) CPU workers; each loads the spec once and makes whole shards
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(settings.workers, len(todo)), mp_context=ctx,
                                     initializer=cpu_worker) as pool:
                jobs = {pool.submit(_shard_job, settings.survey, settings.seed, i,
                                    shard_rows(settings.n, settings.shard_size, i), settings.shard_size,
                                    settings.batch_size, cond, str(out)): i for i in todo}
                try:
                    for job in as_completed(jobs):
                        n_unsolved += job.result()
                        bar.update(shard_rows(settings.n, settings.shard_size, jobs[job]))
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # do not wait for the queued shards
                    raise

    wall = time.perf_counter() - t_start
    # KiB on Linux -> MiB; with workers, the largest worker's if larger
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0
    manifest.update(
        complete=True,
        shards=[
            {
                "file": shard_name(i),
                "rows": shard_rows(settings.n, settings.shard_size, i),
                "sha256": _sha256(out / shard_name(i)),
            }
            for i in range(n_shards)
        ],
        last_run={
            "wall_s": round(wall, 3),
            "peak_rss_mb": round(peak, 1),
            "shards_made": len(todo),
            "shards_reused": len(done),
            "n_unsolved_points": n_unsolved,
        },
    )
    _write_json(out / MANIFEST, manifest)
    return SimulationSummary(str(out), settings.n, n_shards, len(todo), len(done), wall, peak, n_unsolved)


def read_simulation(path: str | Path, allow_incomplete: bool = False) -> dict[str, np.ndarray]:
    """Read a simulation folder into numpy arrays (series columns shaped (N, n_points)), by index.

    Raises ``ValueError`` if the run is not complete (unless ``allow_incomplete``).
    """
    out = Path(path)
    manifest = json.loads((out / MANIFEST).read_text())
    if not manifest.get("complete") and not allow_incomplete:
        raise ValueError(f"{out}: simulation is not complete (re-run the same command to resume)")
    files = sorted(out.glob(SHARD_GLOB))
    if not files:
        raise ValueError(f"{out}: no shards")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    res: dict[str, np.ndarray] = {}
    n_pts = int(manifest["n_points"])
    for name in table.column_names:
        col = table[name].combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            res[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, n_pts)
        else:
            res[name] = col.to_numpy(zero_copy_only=False)
    order = np.argsort(res["index"], kind="stable")
    return {k: v[order] for k, v in res.items()}
