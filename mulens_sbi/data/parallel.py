"""Worker processes for the data pipeline: spawned, JAX on the CPU."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jax
from tqdm.auto import tqdm

__all__ = ["cpu_worker", "map_files"]


def cpu_worker() -> None:
    """Initializer of worker processes: JAX on the CPU (on a GPU machine, many processes must not
    each claim the accelerator)."""
    jax.config.update("jax_platforms", "cpu")


def map_files(fn, files: list[Path], workers: int, desc: str, progress: bool) -> list:
    """``[fn(f) for f in files]``, in ``workers`` spawned CPU processes when ``workers > 1`` (``fn``
    must be picklable: a module-level function or a ``functools.partial`` of one)."""
    if workers <= 1 or len(files) < 2:
        return [fn(f) for f in tqdm(files, desc=desc, disable=not progress)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(files)), mp_context=ctx, initializer=cpu_worker) as pool:
        return list(tqdm(pool.map(fn, files), total=len(files), desc=desc, disable=not progress))
