"""Pre-binning: stored light curves onto the network's cells, once, cached.

Every stored light curve of a ``mulens-sbi simulate`` folder goes through steps 1-4 of
:mod:`mulens_sbi.preprocess` with its *noiseless* flux ``flux_true`` and the noise model's ``sigma``:
``t_ref`` is the peak estimate of the stored noisy realisation ``flux`` (a data-derived estimate, as
at inference), then the inverse-variance binned noiseless flux and its error per cell. Noise is drawn
later, per batch (:mod:`mulens_sbi.data.samplers`): the weighted mean of Gaussian points is Gaussian
with that error, so this is exact in distribution. Results are cached in an ``.npz`` keyed by the
preprocessing settings and the files; the class flags of the rows (for enrichment) likewise.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from mulens_sbi.data.classes import crossing_flags
from mulens_sbi.data.parallel import map_files
from mulens_sbi.data.shards import read_shards
from mulens_sbi.params import PHYSICAL_NAMES
from mulens_sbi.preprocess import PreprocessConfig, bin_points, estimate_peak_time

__all__ = ["NETWORK_NAMES", "bin_rows", "prepare_binned", "accepted_mask", "accepted_rows", "class_flags"]

#: names on the network side (t_0 is learned relative to the data's reference time)
NETWORK_NAMES = ("dt_0", "u_0", "t_E", "s", "q", "alpha")


def bin_rows(d: dict[str, np.ndarray], cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    """Pre-bin simulate-style rows (:data:`~mulens_sbi.data.shards.TRAINING_COLUMNS`): the reference
    time ``t_ref`` from the noisy ``flux`` (as at inference), the inverse-variance binned noiseless
    ``flux_true`` per cell (``mean``, ``err``, ``count``), ``theta_net`` (rows of
    :data:`NETWORK_NAMES`: ``t_0`` as ``dt_0 = t_0 − t_ref``) and the fluxes ``f_s``, ``f_b``."""
    mask = d["mask"].astype(bool)
    t_ref = estimate_peak_time(d["t"], d["flux"], d["sigma"], mask, cfg.smooth_points)
    mean, err, cnt = bin_points(d["t"], d["flux_true"], d["sigma"], mask, t_ref, cfg)
    theta = np.stack([d[n] for n in PHYSICAL_NAMES], axis=1).astype(np.float64)
    theta_net = theta.copy()
    theta_net[:, 0] = theta[:, 0] - t_ref
    return {"theta_net": theta_net, "t_ref": t_ref, "mean": mean.astype(np.float32),
            "err": err.astype(np.float32), "count": np.minimum(cnt, 65535).astype(np.uint16),
            "f_s": d["f_s"], "f_b": d["f_b"]}


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


def _bin_file(f: Path, cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    return bin_rows(read_shards([f]), cfg)


def prepare_binned(files: list[Path], cfg: PreprocessConfig, cache: str | Path | None = None,
                   progress: bool = True, workers: int = 1) -> dict[str, np.ndarray]:
    """Pre-bin shards (see the module docstring); cached in ``cache`` if given."""

    def compute():
        parts = map_files(functools.partial(_bin_file, cfg=cfg), files, workers, "pre-binning shards",
                          progress)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    return _cached(cache, {"cfg": cfg.to_dict(), **_files_key(files)}, compute)


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


def _flags_file(f: Path, q_max: float) -> np.ndarray:
    return crossing_flags(read_shards([f], columns=PHYSICAL_NAMES + ("t", "mask")), q_max)


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
