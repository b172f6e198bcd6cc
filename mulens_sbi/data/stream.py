"""Fresh simulations while training: ``mulens-sbi train --stream-prior N [--stream-enrich M]``.

Why: a network trained for many passes over a fixed set of light curves learns that set, and its
posteriors come out too narrow (the GPU-trained Roman model saw each curve ~46 times). On a GPU
machine the accelerator trains while the CPU cores idle, and simulating the whole set before
training leaves the accelerator idle instead. Streaming does both at once: worker processes
(JAX on the CPU) simulate further shards and pre-bin them, and the training batches are drawn from
a device-resident set that grows as the shards arrive.

What is streamed: the shards the training folders would get if their simulation were run with a
larger ``--n`` — shard ``k`` of a folder is a pure function of (spec, seed, k)
(:func:`mulens_sbi.data.shards.shard_rng`), so the streamed shards of ``--data`` are its shards
``n_shards, n_shards + 1, ...`` with its seed, and those of ``--enrich`` its next conditioned
shards. Streamed rows are pre-binned exactly like :func:`mulens_sbi.data.prebin.prepare_binned`
(tested), refused rows (too sparse for inference) are left out like the folder's, and prior rows get
their caustic-crossing class flag for the enrichment weights (the class probability stays the
enrichment folder's). They are not written to disk.

Reproducibility: the rows and their order are pure functions of the seeds, but *when* a shard joins
the set depends on the machine's speed, so a streamed run is not bit-reproducible (the batches of a
step depend on how many rows had arrived). A resumed run streams again from the first extra shard.
"""

from __future__ import annotations

import functools
import multiprocessing
import warnings
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mulens_sbi.data.classes import crossing_flags
from mulens_sbi.data.parallel import cpu_worker
from mulens_sbi.data.prebin import accepted_mask, bin_rows
from mulens_sbi.data.samplers import BinnedSimulator, DeviceSampler, MixtureSimulator, SharpEmphasis
from mulens_sbi.data.shards import make_shard, shard_rows, table_arrays
from mulens_sbi.preprocess import PreprocessConfig
from mulens_sbi.survey import Survey
from mulens_sbi.survey.spec import parse_spec

__all__ = ["StreamPlan", "StreamingSampler", "make_executor", "stream_shard"]

_ROW_KEYS = ("theta_net", "mean", "err", "count")


@dataclass(frozen=True)
class StreamPlan:
    """Which extra shards to simulate while training.

    Attributes:
        spec_text: the survey spec of the training folders (their manifest's ``spec_text``).
        seed, first_shard, rows: the prior folder's seed, its first missing shard index, and how many
            extra prior light curves to stream (0: none).
        enrich_seed, enrich_first_shard, enrich_rows: the same for the enrichment folder.
        condition, q_max: the enrichment folder's condition (None without enrichment).
        shard_size, enrich_shard_size, batch_size, enrich_batch_size: the folders' shard sizes and
            solver batch sizes (as in their manifests: a shard's light curves depend on its number of
            rows).
        workers: worker processes (does not change the rows; not part of the run's fingerprint).
    """

    spec_text: str
    seed: int
    first_shard: int
    rows: int
    enrich_seed: int | None = None
    enrich_first_shard: int = 0
    enrich_rows: int = 0
    condition: str | None = None
    q_max: float = 0.01
    shard_size: int = 1000
    enrich_shard_size: int = 1000
    batch_size: int = 128
    enrich_batch_size: int = 128
    workers: int = 1

    def __post_init__(self) -> None:
        if self.rows < 0 or self.enrich_rows < 0:
            raise ValueError(f"stream rows must be >= 0, got {self.rows} (prior) and {self.enrich_rows} "
                             f"(enrichment)")
        if self.first_shard < 0 or self.enrich_first_shard < 0:
            raise ValueError(f"first shard indices must be >= 0, got {self.first_shard} and "
                             f"{self.enrich_first_shard}")
        if self.enrich_rows and (self.condition is None or self.enrich_seed is None):
            raise ValueError("streaming enrichment rows needs an enrichment folder's condition and seed")
        if min(self.workers, self.shard_size, self.enrich_shard_size, self.batch_size,
               self.enrich_batch_size) < 1:
            raise ValueError(f"workers, shard sizes and batch sizes must be >= 1, got {self.workers}, "
                             f"{self.shard_size}, {self.enrich_shard_size}, {self.batch_size} and "
                             f"{self.enrich_batch_size}")

    def fingerprint(self) -> dict[str, Any]:
        """What determines the streamed rows (JSON-able; the spec is the training folder's): every
        field but ``spec_text`` and ``workers``."""
        return {k: v for k, v in asdict(self).items() if k not in ("spec_text", "workers")}

    def jobs(self) -> list[tuple[str, int, int]]:
        """``(kind, shard index, rows)`` in submission order: prior and enrichment shards interleaved in
        proportion to their numbers of shards (the kind with the smaller fraction submitted goes next),
        so that both sets grow throughout."""
        def shards(kind: str, first: int, rows: int, size: int) -> list[tuple[str, int, int]]:
            n = -(-rows // size) if rows else 0
            return [(kind, first + k, shard_rows(rows, size, k)) for k in range(n)]

        queues = {"prior": shards("prior", self.first_shard, self.rows, self.shard_size),
                  "enrich": shards("enrich", self.enrich_first_shard, self.enrich_rows,
                                   self.enrich_shard_size)}
        total = {k: len(v) for k, v in queues.items()}
        done = {"prior": 0, "enrich": 0}
        out = []
        while queues["prior"] or queues["enrich"]:
            kind = min((k for k in queues if queues[k]), key=lambda k: done[k] / total[k])
            out.append(queues[kind].pop(0))
            done[kind] += 1
        return out


@functools.lru_cache(maxsize=2)
def _survey_from_text(spec_text: str) -> Survey:
    return Survey(parse_spec(spec_text, file="<training folder spec_text>"))


def stream_shard(plan: StreamPlan, kind: str, index: int, rows: int, cfg: PreprocessConfig
                 ) -> dict[str, np.ndarray]:
    """Simulate shard ``index`` of the prior (``kind="prior"``) or enrichment folder and pre-bin it:
    the accepted rows' ``theta_net``, ``mean``, ``err``, ``count``, and for prior shards of an
    enriched run ``in_class`` (the caustic-crossing flag)."""
    survey = _survey_from_text(plan.spec_text)
    if kind == "prior":
        seed, cond, size, batch = plan.seed, None, plan.shard_size, plan.batch_size
    elif kind == "enrich":
        seed, size, batch = plan.enrich_seed, plan.enrich_shard_size, plan.enrich_batch_size
        cond = {"condition": plan.condition, "q_max": plan.q_max}
    else:
        raise ValueError(f"kind must be 'prior' or 'enrich', got {kind!r}")
    if rows > size:
        raise ValueError(f"shard {index}: {rows} rows, more than the shard size {size}")
    table = make_shard(survey, seed, index, rows, index * size, batch, cond)
    d = table_arrays(table)
    binned = bin_rows(d, cfg)
    keep = accepted_mask(binned, cfg)
    out = {k: binned[k][keep] for k in _ROW_KEYS}
    if kind == "prior" and plan.condition is not None:
        out["in_class"] = crossing_flags(d, plan.q_max)[keep]
    return out


def make_executor(workers: int) -> Executor:
    """The worker pool of a stream: ``workers`` spawned processes running JAX on the CPU (JAX is not
    fork-safe, and on a GPU machine the workers must not claim the accelerator)."""
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=cpu_worker)


def _set_rows(arrays: tuple, new: tuple, start: jax.Array) -> tuple:
    zero = jnp.zeros((), start.dtype)
    return tuple(jax.lax.dynamic_update_slice(a, b, (start,) + (zero,) * (a.ndim - 1))
                 for a, b in zip(arrays, new, strict=True))


class StreamingSampler(DeviceSampler):
    """A :class:`~mulens_sbi.data.samplers.DeviceSampler` whose row set grows during training.

    Takes the same host sampler (:class:`BinnedSimulator`, optionally in a :class:`MixtureSimulator`
    and/or wrapped by :class:`SharpEmphasis`) for the rows already there, and a :class:`StreamPlan`.
    Device arrays have room for every planned row; each call draws from the rows that have arrived
    (uniform over them; the enrichment mixture and weights of the host sampler), and every
    ``poll_every`` calls the finished shards are added. Call :meth:`close` when done (also on error).
    """

    def __init__(self, sim: BinnedSimulator | MixtureSimulator | SharpEmphasis, cfg: PreprocessConfig,
                 plan: StreamPlan, poll_every: int = 10):
        if poll_every < 1:
            raise ValueError(f"poll_every must be >= 1, got {poll_every}")
        # a shard's rows are written padded to its shard size, so the arrays have that much slack
        # (a write never clips at the end)
        super().__init__(sim, cfg, room=plan.rows + plan.shard_size,
                         enrich_room=plan.enrich_rows + plan.enrich_shard_size)
        if (self.enrich is None) != (plan.condition is None):
            raise ValueError("the stream plan and the sampler disagree on enrichment")
        self.plan = plan
        self.poll_every = int(poll_every)
        donate = (0,) if jax.default_backend() != "cpu" else ()
        self._set = jax.jit(_set_rows, donate_argnums=donate)
        self._set_w = jax.jit(lambda a, b, s: jax.lax.dynamic_update_slice(a, b, (s,)), donate_argnums=donate)
        self._calls = 0
        self.stats: dict[str, Any] = {"plan": {**plan.fingerprint(), "workers": plan.workers},
                                      "initial_rows": self.n_base, "initial_enrich_rows": self.n_enrich,
                                      "shards_added": 0, "enrich_shards_added": 0, "rows_added": 0,
                                      "enrich_rows_added": 0, "rows_added_in_class": 0,
                                      "calls_at_last_shard": 0, "failed_shards": 0, "first_error": None}
        jobs = plan.jobs()
        self._pending: list[tuple[Future, str]] = []
        self._pool = None
        if jobs:
            self._pool = make_executor(plan.workers)
            self._pending = [(self._pool.submit(stream_shard, plan, kind, i, rows, cfg), kind)
                             for kind, i, rows in jobs]

    @property
    def pending(self) -> int:
        """Shards not yet added."""
        return len(self._pending)

    def poll(self, wait: bool = False) -> int:
        """Add the finished shards (all of them, waiting, with ``wait``); returns how many were added.

        A shard whose worker failed is counted in ``stats["failed_shards"]`` (the first error's text in
        ``stats["first_error"]``) with a ``RuntimeWarning``, and training goes on with the rows that are
        there: a lost worker must not end a training run."""
        added = 0
        for item in list(self._pending):
            fut, kind = item
            if not (wait or fut.done()):
                continue
            self._pending.remove(item)  # before the result: a failed shard is never handled twice
            try:
                rows = fut.result()
            except Exception as exc:  # noqa: BLE001 - any worker failure is recorded, not fatal
                self.stats["failed_shards"] += 1
                if self.stats["first_error"] is None:
                    self.stats["first_error"] = f"{type(exc).__name__}: {exc}"
                    warnings.warn(f"a streamed shard failed ({type(exc).__name__}: {exc}); training goes on "
                                  f"with the rows already there", RuntimeWarning, stacklevel=2)
                continue
            self._add(kind, rows)
            added += 1
        if added:
            self.stats["calls_at_last_shard"] = self._calls
        return added

    def _add(self, kind: str, rows: dict[str, np.ndarray]) -> None:
        m = rows["theta_net"].shape[0]
        if m == 0:
            return
        pad = self.plan.shard_size if kind == "prior" else self.plan.enrich_shard_size
        if m > pad:
            raise ValueError(f"a streamed shard has {m} rows, more than the shard size {pad}")

        def padded(a):
            out = np.zeros((pad,) + a.shape[1:], a.dtype)
            out[:m] = a
            return out

        new = tuple(padded(rows[k].astype(np.float32) if k == "theta_net" else rows[k]) for k in _ROW_KEYS)
        if kind == "prior":
            self.base = self._set(self.base, new, jnp.int32(self.n_base))
            if self.w_base is not None:
                w = np.where(rows["in_class"], self.w_class, self.w_other).astype(np.float32)
                self.w_base = self._set_w(self.w_base, padded(w), jnp.int32(self.n_base))
                self.stats["rows_added_in_class"] += int(rows["in_class"].sum())
            self.n_base += m
            self.stats["shards_added"] += 1
            self.stats["rows_added"] += m
        else:
            self.enrich = self._set(self.enrich, new, jnp.int32(self.n_enrich))
            self.n_enrich += m
            self.stats["enrich_shards_added"] += 1
            self.stats["enrich_rows_added"] += m

    def __call__(self, key: jax.Array, n: int) -> tuple:
        """A batch ``(theta_net, x[, weights])`` of ``n`` rows from the rows that have arrived."""
        self._calls += 1
        if self._pending and self._calls % self.poll_every == 0:
            self.poll()
        return super().__call__(key, n)

    def close(self) -> None:
        """Stop the workers: queued shards are dropped and shards being simulated are abandoned (the
        processes are terminated, so that a run out of time does not wait for them)."""
        if self._pool is not None:
            if not self._pending:
                self._pool.shutdown(wait=True)  # all shards are in: the workers are idle, exit cleanly
            else:
                # the executor has no public way to stop running workers before Python 3.14
                procs = list((getattr(self._pool, "_processes", None) or {}).values())
                self._pool.shutdown(wait=False, cancel_futures=True)
                for proc in procs:
                    if proc.is_alive():
                        proc.terminate()
            self._pool = None
        self.stats["shards_not_added"] = len(self._pending)
        self._pending = []
