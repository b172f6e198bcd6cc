"""``mulens-sbi simulate``: a training set of light curves written as a folder of parquet shards.

The light curves are :func:`mulens_sbi.data.lightcurves.simulate_lightcurves` (or, with a condition,
:func:`mulens_sbi.data.conditioned.simulate_conditioned`); the folder's format and its reader are
:mod:`mulens_sbi.data.shards`. This module writes a folder: shard ``i`` is a pure function of
``(spec, seed, i, shard_size, batch_size)``; a shard is written to a temporary name and renamed
atomically, so a file with a final name is always complete. Re-running the same command after a kill
resumes: existing shards are kept, temporary files removed, missing shards made.
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

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from mulens_sbi import __version__
from mulens_sbi.data.conditioned import CONDITIONS, check_condition
from mulens_sbi.data.parallel import cpu_worker
from mulens_sbi.data.shards import FORMAT, FORMAT_VERSION, MANIFEST, make_shard, shard_name, shard_rows
from mulens_sbi.settings_file import check_fields
from mulens_sbi.survey import Survey

__all__ = ["OutputExistsError", "SimulateSettings", "SimulationSummary", "run_simulation"]

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
    #: draw from the prior conditioned on an event class (see :mod:`mulens_sbi.data.conditioned`);
    #: None: plain prior draws
    condition: str | None = None
    #: mass-ratio bound of the planetary class (with ``condition``)
    q_max: float = 0.01
    #: worker processes making shards in parallel (1: in this process). Workers run JAX on the CPU;
    #: shards are pure functions of ``(spec, seed, index)``, so on the CPU the output does not
    #: depend on the number (a GPU in this process may differ at rounding level).
    workers: int = 1

    def __post_init__(self) -> None:
        checks = {
            "survey": (isinstance(self.survey, str) and self.survey != "", "a spec name or path"),
            "n": (self.n >= 1, ">= 1"),
            "out": (isinstance(self.out, str) and self.out != "", "a non-empty path"),
            "seed": (self.seed >= 0, ">= 0"),
            "shard_size": (self.shard_size >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "condition": (self.condition is None or self.condition in CONDITIONS,
                          "None or one of " + ", ".join(CONDITIONS)),
            "q_max": (0 < self.q_max <= 1, "0 < q_max <= 1"),
            "workers": (self.workers >= 1, ">= 1"),
        }
        check_fields(self, checks)


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


@functools.lru_cache(maxsize=4)
def _survey(spec: str) -> Survey:
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
