"""Saving and loading posteriors and training state, without pickle.

A saved posterior is a directory with two files:

  ``weights.msgpack``  the flax parameters (``flax.serialization`` msgpack: nested dicts of arrays,
                       portable across machines, devices and Python versions);
  ``posterior.json``   everything else, human readable: format tag, network config, parameter space
                       (names, transforms, bounds, standardization), package and library versions,
                       the weights' sha256 and per-array shapes/dtypes, and the caller's provenance
                       metadata (training settings, simulator spec, data size, hardware, ...).

``load_posterior`` checks the format tag, the sha256 and every array's shape and dtype, and returns
a ready ``Posterior``. Nothing is overwritten unless ``overwrite=True``; every file is written to a
temporary name and renamed, so a kill mid-write never leaves a half-written file under the final name.

Training state (used by ``train``): ``state_<step>.msgpack`` holds the arrays (parameters, optimizer
state, best parameters) and ``state.json`` is the commit record that names the current msgpack file
and its sha256, plus the scalar loop state; the json is renamed into place last, so the pair is always
consistent.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import flax
import flax.serialization as fser
import jax
import numpy as np
import optax

from mulens_sbi import __version__
from mulens_sbi.npe.config import NPEConfig
from mulens_sbi.npe.posterior import Posterior
from mulens_sbi.npe.transforms import ParameterSpace

__all__ = [
    "FORMAT",
    "save_posterior",
    "load_posterior",
    "save_train_state",
    "load_train_state",
    "versions",
    "code_commit",
]

FORMAT = "mulens_sbi.npe.posterior/1"
STATE_FORMAT = "mulens_sbi.npe.train_state/1"
WEIGHTS = "weights.msgpack"
SIDECAR = "posterior.json"


def versions() -> dict[str, str]:
    """Versions of the package and the libraries that define the weights' meaning."""
    return {
        "mulens_sbi": __version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def code_commit() -> str:
    """The git commit of this code (``git rev-parse HEAD`` in the package's folder), ``"unknown"``
    outside a git checkout or when git fails or is missing."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = res.stdout.strip()
    if res.returncode != 0 or len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        return "unknown"
    return commit


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _shapes(tree) -> dict[str, list]:
    flat = flax.traverse_util.flatten_dict(fser.to_state_dict(tree), sep="/")
    return {k: [list(np.shape(v)), str(np.asarray(v).dtype)] for k, v in sorted(flat.items())}


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def save_posterior(posterior: Posterior, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``weights.msgpack`` + ``posterior.json`` into ``directory`` (created if needed)."""
    d = Path(directory)
    for name in (WEIGHTS, SIDECAR):
        if (d / name).exists() and not overwrite:
            raise FileExistsError(f"{d / name} exists; pass overwrite=True to replace it")
    params = jax.device_get(posterior.params)
    blob = fser.to_bytes(params)
    sidecar = {
        "format": FORMAT,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": posterior.config.to_dict(),
        "parameter_space": posterior.space.to_dict(),
        "n_params": posterior.n_params,
        "weights": {"file": WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
                    "arrays": _shapes(params)},
        "metadata": _to_jsonable(posterior.metadata),
    }
    text = json.dumps(sidecar, indent=2, allow_nan=False)
    _atomic_write(d / WEIGHTS, blob)
    _atomic_write(d / SIDECAR, text.encode())
    return d


def load_posterior(directory: str | os.PathLike) -> Posterior:
    """Load a posterior saved by ``save_posterior``; verifies format, checksum, shapes and dtypes."""
    d = Path(directory)
    side_path = d / SIDECAR
    if not side_path.exists():
        raise FileNotFoundError(f"{side_path} not found (not a saved posterior directory)")
    try:
        side = json.loads(side_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{side_path}: line {e.lineno}, column {e.colno}: invalid JSON ({e.msg})") from e
    if side.get("format") != FORMAT:
        raise ValueError(f"{side_path}: format {side.get('format')!r} is not {FORMAT!r}")
    wpath = d / side["weights"]["file"]
    blob = wpath.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != side["weights"]["sha256"]:
        raise ValueError(f"{wpath}: sha256 {digest} does not match {side['weights']['sha256']} recorded in "
                         f"{side_path} (corrupted or mismatched weights)")
    params = fser.msgpack_restore(blob)
    got = _shapes(params)
    want = side["weights"]["arrays"]
    if got != want:
        diff = [k for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)]
        raise ValueError(f"{wpath}: arrays differ from {side_path} at {diff[:5]}")
    config = NPEConfig.from_dict(side["config"])
    space = ParameterSpace.from_dict(side["parameter_space"])
    params = jax.tree_util.tree_map(np.asarray, params)
    meta = dict(side.get("metadata", {}))
    meta["_loaded_from"] = {"path": str(d), "versions_at_save": side["versions"],
                            "created_utc": side["created_utc"]}
    return Posterior(config, space, params, meta)


# ----------------------------------------------------------------------------- training state
def save_train_state(directory: str | os.PathLike, arrays: dict, scalars: dict) -> None:
    """Atomically commit a training state: arrays to ``state_<step>.msgpack``, then ``state.json``."""
    d = Path(directory)
    step = int(scalars["step"])
    blob = fser.to_bytes(jax.device_get(arrays))
    name = f"state_{step:09d}.msgpack"
    _atomic_write(d / name, blob)
    rec = {"format": STATE_FORMAT, "arrays_file": name, "sha256": hashlib.sha256(blob).hexdigest(),
           "versions": versions(), **_to_jsonable(scalars)}
    _atomic_write(d / "state.json", json.dumps(rec, indent=1, allow_nan=True).encode())
    for old in d.glob("state_*.msgpack"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_train_state(directory: str | os.PathLike, template: dict) -> tuple[dict, dict] | None:
    """Return (arrays restored onto ``template``'s structure, scalars) or None if no state exists."""
    d = Path(directory)
    rec_path = d / "state.json"
    if not rec_path.exists():
        return None
    rec = json.loads(rec_path.read_text())
    if rec.get("format") != STATE_FORMAT:
        raise ValueError(f"{rec_path}: format {rec.get('format')!r} is not {STATE_FORMAT!r}")
    blob = (d / rec["arrays_file"]).read_bytes()
    if hashlib.sha256(blob).hexdigest() != rec["sha256"]:
        raise ValueError(f"{d / rec['arrays_file']}: checksum does not match {rec_path}")
    arrays = fser.from_bytes(template, blob)
    bad = [k for k, (a, b) in _zip_shapes(template, arrays).items() if a != b]
    if bad:
        raise ValueError(f"{d / rec['arrays_file']}: array shapes differ from the model at {bad[:5]}")
    return arrays, rec


def _zip_shapes(a, b) -> dict[str, tuple]:
    sa, sb = _shapes(a), _shapes(b)
    return {k: (sa.get(k), sb.get(k)) for k in set(sa) | set(sb)}
