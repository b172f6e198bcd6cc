"""Event manifests: a small TOML or JSON file naming the datasets of one event.

TOML (``event.toml``)::

    name = "KMT-2024-BLG-0001"          # optional; default: the manifest's file name
    [[datasets]]
    file = "phot.dat"                    # relative to the manifest's folder
    format = "ogle"                      # a format of mulens_sbi.readers (default "auto")
    name = "OGLE-I"                      # optional; default: the file name without extension
    band = "I"                           # optional
    use = true                           # optional (default true); false: listed, not read
    [[datasets]]
    file = "KMTC01_I.pysis"
    format = "kmtnet-pysis"
    name = "KMTC01"
    # optional per dataset: time_format, zero_point, kind, columns = {time=, value=, error=}, on_bad

JSON (``event.json``) holds the same keys: ``{"name": ..., "datasets": [{"file": ...}, ...]}``.

Every dataset with ``use = true`` is read (each with its own F_s, F_b in the fit); unknown keys,
missing files, repeated dataset names and a manifest with no dataset in use are errors naming the
manifest (and the dataset's position). Reading errors of a data file name that file and its line.

:func:`read_event` is the one entry point of ``fit``, ``mulens-sbi fit`` and the Python API: any mix
of data files (format auto-detected), folders of data files and manifests → one Event.
:func:`load_event` (``catalog``) reads one manifest or one file through the same functions.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mulens_sbi.event import Event
from mulens_sbi.readers._table import DataFormatError, default_name
from mulens_sbi.readers.formats import FORMATS, read_dataset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DATA_SUFFIXES",
    "MANIFEST_SUFFIXES",
    "data_files",
    "is_manifest",
    "load_event",
    "parse_manifest",
    "read_event",
    "read_manifest",
]

MANIFEST_SUFFIXES = (".toml", ".json")
#: the file name endings read as data files in a folder (``read_event``, ``mulens-sbi catalog``)
DATA_SUFFIXES = (".dat", ".txt", ".csv", ".tbl", ".pysis", ".tlc", ".dia")
_EVENT_KEYS = {"name", "datasets", "notes", "truth"}
_DATASET_KEYS = {
    "file",
    "format",
    "name",
    "band",
    "use",
    "time_format",
    "zero_point",
    "kind",
    "columns",
    "on_bad",
    "notes",
}


def is_manifest(path: str | os.PathLike) -> bool:
    """True for a ``.toml``/``.json`` file (an event manifest)."""
    return Path(path).suffix.lower() in MANIFEST_SUFFIXES


def parse_manifest(path: Path) -> dict:
    """A manifest file's table (TOML or JSON), unchecked beyond being a table; ``DataFormatError``
    naming the file (and line) when it cannot be parsed."""
    label = str(path)
    if not path.exists():
        raise FileNotFoundError(f"{label}: no such manifest")
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise DataFormatError(f"{label}: the manifest is empty")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{label}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataFormatError(f"{label}: not valid TOML ({exc})") from None
    if not isinstance(data, dict):
        raise DataFormatError(f"{label}: the manifest must be a table/object with a 'datasets' list")
    return data


def read_manifest(path: str | os.PathLike, *, return_info: bool = False):
    """Read a manifest and every dataset it marks ``use = true`` into an :class:`Event`.

    With ``return_info`` also returns ``{"manifest", "datasets": [per-dataset info incl. use],
    "unused": [names]}``."""
    path = Path(path)
    label = str(path)
    data = parse_manifest(path)
    unknown = set(data) - _EVENT_KEYS
    if unknown:
        raise DataFormatError(f"{label}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_EVENT_KEYS)}")
    entries = data.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise DataFormatError(f"{label}: needs a non-empty 'datasets' list ([[datasets]] tables in TOML)")
    base = path.parent
    datasets, infos, unused, seen = [], [], [], {}
    for i, entry in enumerate(entries, start=1):
        where = f"{label}: datasets[{i}]"
        if not isinstance(entry, dict):
            raise DataFormatError(f"{where}: must be a table/object, got {type(entry).__name__}")
        bad = set(entry) - _DATASET_KEYS
        if bad:
            raise DataFormatError(f"{where}: unknown key(s) {sorted(bad)}; allowed: {sorted(_DATASET_KEYS)}")
        if "file" not in entry or not isinstance(entry["file"], str):
            raise DataFormatError(f"{where}: needs 'file' (a path relative to the manifest)")
        use = entry.get("use", True)
        if not isinstance(use, bool):
            raise DataFormatError(f"{where}: 'use' must be true or false, got {use!r}")
        fmt = entry.get("format", "auto")
        if fmt not in FORMATS:
            raise DataFormatError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}")
        file = (
            (base / entry["file"]).resolve() if not Path(entry["file"]).is_absolute() else Path(entry["file"])
        )
        ds_name = entry.get("name") or default_name(entry["file"])
        if ds_name in seen:
            raise DataFormatError(
                f"{where}: dataset name {ds_name!r} repeats datasets[{seen[ds_name]}]; give each "
                "dataset its own 'name'"
            )
        seen[ds_name] = i
        if not use:
            unused.append(ds_name)
            infos.append({"name": ds_name, "file": str(file), "format": fmt, "use": False})
            continue
        if not file.exists():
            raise FileNotFoundError(f"{where}: file {entry['file']!r} not found (looked for {file})")
        kwargs = {
            k: entry[k]
            for k in ("band", "time_format", "zero_point", "kind", "columns", "on_bad")
            if k in entry
        }
        try:
            ds, info = read_dataset(file, fmt, name=ds_name, return_info=True, **kwargs)
        except TypeError as exc:  # e.g. a string where a number belongs
            raise DataFormatError(f"{where}: {exc}") from None
        datasets.append(ds)
        infos.append(dict(info, name=ds_name, use=True))
    if not datasets:
        raise DataFormatError(f"{label}: no dataset has use = true ({len(unused)} listed, all unused)")
    name = data.get("name") or path.stem
    event = Event(datasets=tuple(datasets), name=str(name))
    if return_info:
        return event, {"manifest": label, "datasets": infos, "unused": unused}
    return event


def load_event(path: str | os.PathLike, *, format: str = "auto", return_info: bool = False, **kwargs):
    """An :class:`Event` from a manifest (``.toml``/``.json``) or from one data file (one dataset,
    read by :func:`mulens_sbi.readers.read_dataset` with ``format`` and ``kwargs``)."""
    if is_manifest(path):
        if kwargs or format != "auto":
            raise ValueError(f"{path}: reader options go into the manifest, not the call")
        return read_manifest(path, return_info=return_info)
    ds, info = read_dataset(path, format, return_info=True, **kwargs)
    event = Event(datasets=(ds,), name=Path(path).stem)
    if return_info:
        return event, {"manifest": None, "datasets": [dict(info, name=ds.name, use=True)], "unused": []}
    return event


def data_files(folder: str | os.PathLike) -> list[Path]:
    """The data files directly in ``folder`` (sorted): names ending in :data:`DATA_SUFFIXES`, not
    hidden, not a README. ``DataFormatError`` if there are none."""
    root = Path(folder)
    files = sorted(
        p
        for p in root.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in DATA_SUFFIXES
        and not p.name.lower().lstrip("0").startswith("readme")
    )
    if not files:
        raise DataFormatError(
            f"{root}: is a folder with no data files (names ending in {', '.join(DATA_SUFFIXES)})"
        )
    return files


def read_event(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    kind: str | None = None,
    time_format: str = "auto",
    zero_point: float | None = None,
    name: str | None = None,
    on_bad: str = "error",
    return_info: bool = False,
):
    """Files, folders and manifests → one :class:`Event` (one dataset per file, each with its own
    F_s, F_b): what ``fit`` and ``mulens-sbi fit FILE ...`` read.

    * a data file: read with ``format="auto"`` (:func:`mulens_sbi.readers.read_dataset`) and
      ``kind``, ``time_format``, ``zero_point``, ``on_bad``;
    * a folder: its data files (:func:`data_files`), each as above;
    * a manifest (``.toml``/``.json``): its datasets with the manifest's options (passing reader
      options as well is an error).

    Dataset names are the file names without their data extensions, made unique with ``_2``,
    ``_3``, ...; the event's name is ``name``, else the manifest's, else the first path's.
    With ``return_info`` also returns ``{"datasets": [per-dataset info]}``."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("read_event: no files given")
    options = {"kind": kind, "time_format": time_format, "zero_point": zero_point, "on_bad": on_bad}
    given = {k: v for k, v in options.items() if v != {"time_format": "auto", "on_bad": "error"}.get(k)}
    datasets, infos, seen = [], [], {}
    ev_name = name

    def add(ds, info) -> None:
        base = ds.name
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            ds = type(ds)(f"{base}_{seen[base]}", ds.t, ds.flux, ds.sigma, band=ds.band)
        datasets.append(ds)
        infos.append(dict(info, name=ds.name))

    for path in paths:
        p = Path(path)
        if is_manifest(p):
            if given:
                raise ValueError(
                    f"{p}: reader options ({', '.join(sorted(given))}) go into the manifest, not the call"
                )
            ev, minfo = read_manifest(p, return_info=True)
            for ds, info in zip(ev.datasets, [d for d in minfo["datasets"] if d["use"]], strict=True):
                add(ds, info)
            ev_name = ev_name or ev.name
            continue
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        files = data_files(p) if p.is_dir() else [p]
        for f in files:
            ds, info = read_dataset(f, return_info=True, **options)
            add(ds, info)
        ev_name = ev_name or (p.name if p.is_dir() else default_name(p))
    event = Event(datasets=tuple(datasets), name=str(ev_name))
    return (event, {"datasets": infos}) if return_info else event
