"""The shard format of a simulation folder (``mulens-sbi simulate``), and its one reader.

On disk (``OUT/``):

* ``manifest.json`` – settings (survey name, spec text and sha256, seed, n, shard and batch size),
  versions, and when finished ``complete: true`` with each shard's rows and sha256;
* ``shard-00000.parquet`` … – ``shard_size`` light curves each (the last may be shorter), one row per
  light curve: ``index``, the parameters, ``f_s``, ``f_b``, ``field``, ``n_obs``, ``n_available``,
  ``n_unsolved`` and the series ``t``, ``flux_true``, ``sigma``, ``flux``, ``mask`` (and ``site``) as
  fixed-size lists of ``n_points``. Shard ``i`` is a pure function of ``(spec, seed, i, shard_size,
  batch_size)``: its random numbers come from ``numpy.random.default_rng(SeedSequence([seed, i]))``
  (:func:`shard_rng`). A shard of a conditioned simulation holds its condition counts in the table's
  schema metadata (``condition_stats``).

Reading: :func:`table_arrays` turns a shard's arrow table into numpy arrays (series as
``(rows, n_points)``); :func:`read_shards` reads some shard files (some columns) through it and
:func:`read_simulation` a whole folder (every column, checked complete, ordered by ``index``).
Writing a folder (resumable, atomic renames) is :func:`mulens_sbi.simulate.run_simulation`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mulens_sbi.data.conditioned import probability_se, simulate_conditioned
from mulens_sbi.data.lightcurves import simulate_lightcurves
from mulens_sbi.params import PHYSICAL_NAMES

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "SHARD_GLOB", "SERIES", "TRAINING_COLUMNS", "shard_rng",
           "shard_name", "shard_rows", "make_shard", "shard_files", "table_arrays", "read_shards",
           "read_simulation", "condition_stats"]

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
#: the columns training reads (:func:`read_shards`' default)
TRAINING_COLUMNS = PHYSICAL_NAMES + ("f_s", "f_b", "t", "flux", "flux_true", "sigma", "mask")


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
    on that event class (:func:`mulens_sbi.data.conditioned.simulate_conditioned`), and the table's
    schema metadata holds the shard's candidate / pre-filter / acceptance counts."""
    stats = None
    if condition is None:
        data = simulate_lightcurves(survey, shard_rng(seed, index), n_rows, batch_size=batch_size)
    else:
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


def shard_files(data: str | Path) -> list[Path]:
    """The shard files of a simulation folder, in order (``FileNotFoundError`` when there is none)."""
    files = sorted(Path(data).glob(SHARD_GLOB))
    if not files:
        raise FileNotFoundError(f"{data}: no shard-*.parquet files (not a mulens-sbi simulate folder)")
    return files


def table_arrays(tab: pa.Table, columns: tuple[str, ...] | None = TRAINING_COLUMNS) -> dict[str, np.ndarray]:
    """Columns of a shard's arrow table as numpy arrays (series columns as (rows, n_points)); None:
    every column."""
    out = {}
    for c in tab.column_names if columns is None else columns:
        col = tab[c].combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            out[c] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(tab), -1)
        else:
            out[c] = col.to_numpy(zero_copy_only=False)
    return out


def read_shards(files: list[Path], columns: tuple[str, ...] | None = TRAINING_COLUMNS
                ) -> dict[str, np.ndarray]:
    """Read some parquet shards of a simulation folder, in the order given (series columns as (rows,
    n_points)); ``columns`` None: every column."""
    parts = [table_arrays(pq.read_table(f, columns=None if columns is None else list(columns)), columns)
             for f in files]
    names = list(parts[0]) if columns is None else columns
    return {c: np.concatenate([p[c] for p in parts]) for c in names}


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
    res = read_shards(files, columns=None)
    order = np.argsort(res["index"], kind="stable")
    return {k: v[order] for k, v in res.items()}


def condition_stats(out: str | Path) -> dict | None:
    """The summed condition counts of a conditioned simulation folder (None for a plain one):
    ``n_candidates``, ``n_prefiltered``, ``n_accepted``, ``probability`` (accepted / candidates, the
    class probability under the prior) and its standard error (lenses as clusters, see
    :func:`mulens_sbi.data.conditioned.probability_se`)."""
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
    p = tot["n_accepted"] / max(tot["n_candidates"], 1)
    se = probability_se(tot["n_candidates"], tot["n_accepted"], tot["n_lenses"], tot["sum_sq_per_lens"])
    se = None if not np.isfinite(se) else se  # shards without per-lens counts: unknown (JSON null)
    return {**tot, "condition": manifest["condition"], "q_max": manifest.get("q_max"), "probability": p,
            "probability_se": se}
