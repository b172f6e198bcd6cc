"""``mulens-sbi catalog``: bulk inference over many events, resumable, on one machine or on Ray.

On disk (``OUT/``):

* ``catalog.json`` — the run's identity (input kind, fingerprint of the ordered event ids, number of
  events, shard size, and the :class:`~mulens_sbi.catalog.infer.InferenceSettings`), the inputs that
  are not events (``skipped``), versions, and when finished ``complete: true`` with counts per status;
* ``parts/part-00000.parquet`` … — the rows of events ``[k·S, (k+1)·S)`` (S = ``shard_size``), each
  written to a temporary name and renamed atomically: a file with a final name is complete;
* ``catalog.parquet`` — when every part exists: all rows, sorted by ``index``, checked to hold each
  event exactly once (see :data:`mulens_sbi.catalog.infer.SCHEMA` for the columns).

**Resume.** Running the same command again after a kill keeps the finished parts, removes temporary
files and computes the missing parts only: nothing is lost and nothing is computed or written twice.
A folder holding a different run (other settings or other input) or foreign files is refused unless
``--overwrite``. Rows depend only on the settings and the shard (see :mod:`.infer`), so a resumed
run, a fresh run and a Ray run give the same table (up to ``time_s``).

**Engines.** ``local`` (default): shards one after another in this process. ``ray``: Ray Data — the
missing shards become a dataset of work items; ``map_batches`` runs them on a pool of actors
(:class:`RayShardWorker`, each loads the model once and streams its shard's rows from the parquet
input, or reads its event files); the driver receives each shard's rows as they finish and writes
the parts, so resumability is the same as for the local engine. ``ray_address`` connects to an
existing cluster (``ray start``, Slurm, KubeRay; see ``docs/catalog.md``); without it a local Ray
instance is started.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mulens_sbi import __version__
from mulens_sbi.catalog.infer import (
    CATALOG_REFINE,
    SCHEMA,
    BatchInference,
    InferenceSettings,
    degeneracy_available,
)
from mulens_sbi.catalog.inputs import EventRef, InputList, list_inputs
from mulens_sbi.restrict import parse_restrict
from mulens_sbi.settings_file import check_fields
from mulens_sbi.simulate import OutputExistsError

__all__ = ["CATALOG_FORMAT", "CatalogSettings", "read_catalog", "run_catalog"]

CATALOG_FORMAT = "mulens-sbi-catalog"
FORMAT_VERSION = 3  # 2: p_planet, p_planet_flow columns; 3: restricted_mass column
RUN_FILE = "catalog.json"
TABLE_FILE = "catalog.parquet"
PARTS = "parts"
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class CatalogSettings:
    """Settings of ``mulens-sbi catalog`` (see the module docstring).

    ``max_shards`` stops after that many new shards (as if the run were killed there; for tests and
    benchmarks of resumption). ``num_actors``/``cpus_per_actor``/``ray_address``/``ray_init`` apply
    to the Ray engine only (``ray_init``: extra ``ray.init`` keyword arguments for a local instance).
    Validated on construction (an error names the field and its allowed range); read from a TOML
    file by ``mulens-sbi catalog --settings FILE.toml`` (:mod:`mulens_sbi.settings_file`).
    """

    input: str
    out: str
    model: str = "roman"
    engine: str = "local"
    n_samples: int = 1000
    refine: str = "is"
    seed: int = 0
    shard_size: int = 64
    batch_size: int = 16
    chunk_size: int = 256
    degeneracy: bool = True
    overwrite: bool = False
    progress: bool = True
    max_shards: int | None = None
    num_actors: int | None = None
    cpus_per_actor: float = 1.0
    ray_address: str | None = None
    ray_init: dict | None = None
    restrict: str = ""

    def __post_init__(self) -> None:
        try:
            restrict_ok = parse_restrict([i for i in self.restrict.split(",") if i.strip()]) is not None
            problem = ""
        except ValueError as exc:
            restrict_ok, problem = False, f" ({exc})"
        checks = {
            "input": (isinstance(self.input, str) and self.input != "", "a non-empty path"),
            "out": (isinstance(self.out, str) and self.out != "", "a non-empty path"),
            "model": (isinstance(self.model, str) and self.model != "", "a model name or folder"),
            "engine": (self.engine in ENGINES, f"one of {', '.join(ENGINES)}"),
            "n_samples": (self.n_samples >= 2, ">= 2"),
            "refine": (self.refine in CATALOG_REFINE, f"one of {', '.join(CATALOG_REFINE)}"),
            "seed": (self.seed >= 0, ">= 0"),
            "shard_size": (self.shard_size >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "chunk_size": (self.chunk_size >= 1, ">= 1"),
            "max_shards": (self.max_shards is None or self.max_shards >= 0, "None or >= 0"),
            "num_actors": (self.num_actors is None or self.num_actors >= 1, "None or >= 1"),
            "cpus_per_actor": (self.cpus_per_actor > 0, "> 0"),
            "restrict": (restrict_ok, "comma-separated NAME=LOW:HIGH items, or empty" + problem),
        }
        check_fields(self, checks)

    def inference(self) -> InferenceSettings:
        return InferenceSettings(
            model=self.model,
            n_samples=self.n_samples,
            refine=self.refine,
            seed=self.seed,
            batch_size=self.batch_size,
            chunk_size=self.chunk_size,
            degeneracy=self.degeneracy,
            restrict=self.restrict,
        )


def part_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def _ours(p: Path) -> bool:
    return p.name in (RUN_FILE, TABLE_FILE, PARTS) or ".tmp-" in p.name


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


def _identity(settings: CatalogSettings, inputs: InputList) -> dict:
    inf = asdict(settings.inference())
    return {
        "format": CATALOG_FORMAT,
        "format_version": FORMAT_VERSION,
        "input": str(settings.input),
        "input_kind": inputs.kind,
        "input_fingerprint": inputs.fingerprint,
        "n_events": len(inputs.refs),
        "shard_size": settings.shard_size,
        "inference": inf,
        "version": __version__,
    }


_RESUME_KEYS = ("format_version", "input_fingerprint", "n_events", "shard_size", "inference")


def _prepare_out(out: Path, ident: dict, overwrite: bool) -> str:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    entries = sorted(out.iterdir()) if out.exists() else []
    if overwrite:
        for p in entries:
            if p.name == PARTS and p.is_dir():
                for q in p.iterdir():
                    if q.name.startswith("part-"):
                        q.unlink()
            elif _ours(p) and p.is_file():
                p.unlink()
        return "fresh"
    if not entries:
        return "fresh"
    run = out / RUN_FILE
    if not run.is_file():
        raise OutputExistsError(
            f"output folder {out} is not empty and holds no {RUN_FILE}: choose another --out "
            "or pass --overwrite"
        )
    try:
        old = json.loads(run.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise OutputExistsError(f"{run} cannot be read ({exc}); pass --overwrite to start again") from exc
    diff = [k for k in _RESUME_KEYS if old.get(k) != ident.get(k)]
    if old.get("format") != CATALOG_FORMAT or diff:
        what = ", ".join(f"{k}: {old.get(k)!r} there vs {ident.get(k)!r} now" for k in diff)
        raise OutputExistsError(
            f"output folder {out} holds a different catalog run ({what or 'another format'}); "
            "choose another --out or pass --overwrite"
        )
    foreign = [p.name for p in entries if not _ours(p)]
    if foreign:
        raise OutputExistsError(
            f"output folder {out} holds files that are not ours ({', '.join(foreign[:5])}); "
            "choose another --out or pass --overwrite"
        )
    return "resume"


def _rows_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _write_part(parts: Path, k: int, rows: list[dict], expected: list[EventRef]) -> None:
    got = [r["index"] for r in rows]
    want = [r.index for r in expected]
    if got != want:
        raise RuntimeError(
            f"shard {k}: rows for events {got[:5]}... do not match the shard's events {want[:5]}..."
        )
    tab = _rows_table(rows)
    _write_atomic(parts / part_name(k), lambda p: pq.write_table(tab, p, compression="zstd"))


def _shards(refs: tuple[EventRef, ...], size: int) -> list[list[EventRef]]:
    return [list(refs[i : i + size]) for i in range(0, len(refs), size)]


# ----------------------------------------------------------------------------------------------
def _run_local(settings: CatalogSettings, todo: list[int], shards, parts: Path, bar) -> int:
    worker = BatchInference(settings.inference())
    done = 0
    for k in todo:
        rows = worker.run_shard(k, shards[k], progress=bar.update)
        _write_part(parts, k, rows, shards[k])
        done += 1
    return done


class RayShardWorker:
    """A Ray Data actor: loads the model once; each call gets work items ``{"shard", "refs"}`` and
    returns the rows of those shards (a pyarrow table)."""

    def __init__(self, inference: dict):
        import mulens_sbi  # noqa: F401  (float64)

        self.worker = BatchInference(InferenceSettings(**inference))

    def __call__(self, batch: dict) -> pa.Table:
        rows = []
        for k, refs_json in zip(batch["shard"], batch["refs"], strict=True):
            refs = [EventRef.from_dict(d) for d in json.loads(str(refs_json))]
            rows.extend(self.worker.run_shard(int(k), refs))
        return _rows_table(rows)


def _ray_init(settings: CatalogSettings):
    import ray

    if ray.is_initialized():
        return False
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
        return True
    pkg_root = str(Path(__file__).resolve().parents[2])
    env = {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "PYTHONPATH": os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p),
    }
    kwargs = {"include_dashboard": False, "log_to_driver": False, "runtime_env": {"env_vars": env}}
    kwargs.update(settings.ray_init or {})
    ray.init(**kwargs)
    return True


def _run_ray(settings: CatalogSettings, todo: list[int], shards, parts: Path, bar) -> int:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError("the Ray engine needs ray[data]: pip install 'mulens-sbi[distributed]'") from exc
    started = _ray_init(settings)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        items = [{"shard": k, "refs": json.dumps([r.to_dict() for r in shards[k]])} for k in todo]
        cpus = ray.cluster_resources().get("CPU", 1.0)
        n_actors = settings.num_actors or max(1, int(cpus // max(settings.cpus_per_actor, 1e-9)))
        n_actors = max(1, min(n_actors, len(items)))
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            RayShardWorker,
            fn_constructor_kwargs={"inference": asdict(settings.inference())},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=settings.cpus_per_actor,
            batch_format="pyarrow",
        )
        pending: dict[int, list[dict]] = {}
        size = settings.shard_size
        done = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                k = int(row["index"]) // size
                pending.setdefault(k, []).append(row)
                if len(pending[k]) == len(shards[k]):
                    rows = sorted(pending.pop(k), key=lambda r: r["index"])
                    _write_part(parts, k, rows, shards[k])
                    bar.update(len(rows))
                    done += 1
        if pending:
            raise RuntimeError(f"Ray returned incomplete shards {sorted(pending)}")
        return done
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------
def run_catalog(settings: CatalogSettings, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) a catalog; returns a summary dict (``out``, ``n_events``, ``shards_made``,
    ``shards_reused``, ``complete``, ``status_counts``, ``wall_s``, ``events_per_s``)."""
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    inputs = list_inputs(settings.input)
    if not inputs.refs:
        raise ValueError(
            f"{settings.input}: no events found"
            + (f" (skipped: {'; '.join(inputs.skipped[:5])})" if inputs.skipped else "")
        )
    out = Path(settings.out)
    ident = _identity(settings, inputs)
    mode = _prepare_out(out, ident, settings.overwrite)
    parts = out / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    for p in list(parts.iterdir()) + list(out.iterdir()):
        if ".tmp-" in p.name:
            p.unlink()
    run_info = dict(
        ident,
        skipped=list(inputs.skipped),
        complete=False,
        engine=settings.engine,
        degeneracy_available=degeneracy_available(),
    )
    if mode == "fresh":
        _write_json(out / RUN_FILE, run_info)
    for s in inputs.skipped:
        log(f"not an event: {s}")
    shards = _shards(inputs.refs, settings.shard_size)
    todo = [k for k in range(len(shards)) if not (parts / part_name(k)).exists()]
    reused = len(shards) - len(todo)
    if settings.max_shards is not None:
        todo = todo[: settings.max_shards]
    n_todo = sum(len(shards[k]) for k in todo)
    initial = sum(len(shards[k]) for k in range(len(shards)) if (parts / part_name(k)).exists())
    with tqdm(
        total=len(inputs.refs), initial=initial, desc="catalog", unit="event", disable=not settings.progress
    ) as bar:
        t_work = time.perf_counter()
        if todo:
            runner = _run_ray if settings.engine == "ray" else _run_local
            made = runner(settings, todo, shards, parts, bar)
        else:
            made = 0
        work_s = time.perf_counter() - t_work
    complete = all((parts / part_name(k)).exists() for k in range(len(shards)))
    summary = {
        "out": str(out),
        "n_events": len(inputs.refs),
        "n_shards": len(shards),
        "shards_made": made,
        "shards_reused": reused,
        "complete": complete,
        "events_processed": n_todo,
        "work_s": work_s,
        "events_per_s": n_todo / work_s if work_s > 0 and n_todo else float("nan"),
    }
    if complete:
        table = _merge(out, len(shards), len(inputs.refs))
        counts = {}
        for st in table.column("status").to_pylist():
            counts[st] = counts.get(st, 0) + 1
        summary["status_counts"] = counts
        _write_json(out / RUN_FILE, dict(run_info, complete=True, status_counts=counts))
    summary["wall_s"] = time.perf_counter() - t_start
    return summary


def _merge(out: Path, n_shards: int, n_events: int) -> pa.Table:
    tabs = [pq.read_table(out / PARTS / part_name(k), schema=SCHEMA) for k in range(n_shards)]
    table = pa.concat_tables(tabs).sort_by("index")
    idx = table.column("index").to_pylist()
    if idx != list(range(n_events)):
        dup = len(idx) - len(set(idx))
        raise RuntimeError(f"{out}: the parts hold {len(idx)} rows ({dup} duplicated) for {n_events} events")
    _write_atomic(out / TABLE_FILE, lambda p: pq.write_table(table, p, compression="zstd"))
    return table


def read_catalog(out: str | os.PathLike) -> pa.Table:
    """The finished catalog table of a run folder (``catalog.parquet``)."""
    p = Path(out) / TABLE_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no finished catalog (run `mulens-sbi catalog` again to complete it)")
    return pq.read_table(p)


def settings_replace(settings: CatalogSettings, **kw) -> CatalogSettings:
    return dataclasses.replace(settings, **kw)
