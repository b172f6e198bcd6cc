"""Catalog inputs: a folder of event files/manifests, or parquet light curves → ordered event refs.

**Folder.** Walked recursively in sorted order. Every manifest (``*.toml``, or ``*.json`` holding a
``datasets`` list) is one event, made of the files it names; every other data file (``.dat``,
``.txt``, ``.csv``, ``.tbl``, ``.pysis``, ``.tlc``, ``.dia``) not named by a manifest is a
single-dataset event read with ``format="auto"``. Other files (README, scripts, JSON that is not a
manifest) are not events: they are listed in ``skipped`` (written to the run's ``catalog.json``),
never ignored silently. The event id is the path relative to the folder, without the extension.

**Parquet.** A file, or a folder of ``*.parquet`` files (sorted; e.g. ``mulens-sbi simulate``
shards), one row per single-dataset event with list columns ``t`` (HJD') and either ``flux`` and
``sigma`` (zero point 22, or any linear unit) or ``mag`` and ``mag_err``; optional ``mask`` (True =
use the point; points with mask False are excluded because the table says so), optional ``event``
(a string id) or ``index`` (an integer id). Without either, the id is ``<file stem>#<row>``.

An :class:`EventRef` is cheap (a path, or a file and row); :func:`load_event` reads it when the
event is processed, so a bad event fails there, is recorded, and does not stop the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mulens_sbi.event import Dataset, Event
from mulens_sbi.readers import DATA_SUFFIXES
from mulens_sbi.readers import load_event as read_event_file
from mulens_sbi.readers.manifest import parse_manifest

__all__ = ["DATA_SUFFIXES", "EventRef", "InputList", "list_inputs", "load_event", "read_parquet_rows"]

PARQUET_COLUMNS = ("t", "flux", "sigma", "mag", "mag_err", "mask", "event", "index")


@dataclass(frozen=True)
class EventRef:
    """One event of the input: ``index`` (position in the catalog), ``event`` (id), ``source``
    (file, or ``file#row``), ``kind`` (``"file"`` or ``"parquet"``), ``path``, ``row``."""

    index: int
    event: str
    source: str
    kind: str
    path: str
    row: int = -1

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "event": self.event,
            "source": self.source,
            "kind": self.kind,
            "path": self.path,
            "row": self.row,
        }

    @classmethod
    def from_dict(cls, d: dict) -> EventRef:
        return cls(
            int(d["index"]), str(d["event"]), str(d["source"]), str(d["kind"]), str(d["path"]), int(d["row"])
        )


@dataclass(frozen=True)
class InputList:
    """The ordered events of an input, the files that are not events, and a fingerprint (sha256 of
    the ordered ids and sources) that a resumed run must match."""

    kind: str
    refs: tuple[EventRef, ...]
    skipped: tuple[str, ...]
    fingerprint: str


def _is_json_manifest(p: Path) -> bool:
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return True  # let the manifest reader report the problem for this event
    return isinstance(data, dict) and "datasets" in data


def _manifest_files(p: Path) -> set[Path]:
    try:
        data = parse_manifest(p)
    except (OSError, ValueError):
        return set()  # reported when the event is loaded
    out = set()
    for entry in data.get("datasets") or []:
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            out.add((p.parent / entry["file"]).resolve())
    return out


def _fingerprint(kind: str, refs) -> str:
    h = hashlib.sha256(kind.encode())
    for r in refs:
        h.update(f"\0{r.event}\0{r.source}".encode())
    return h.hexdigest()


def _list_folder(root: Path) -> InputList:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    manifests = [
        p
        for p in files
        if p.suffix.lower() == ".toml" or (p.suffix.lower() == ".json" and _is_json_manifest(p))
    ]
    named: set[Path] = set()
    for m in manifests:
        named |= _manifest_files(m)
    events, skipped = [], []
    for p in files:
        rel = p.relative_to(root)
        if p in manifests or (p.suffix.lower() in DATA_SUFFIXES and p.resolve() not in named):
            events.append(p)
        elif p.resolve() not in named:
            skipped.append(
                f"{rel}: not an event file (data suffixes: {', '.join(DATA_SUFFIXES)}; manifests .toml/.json)"
            )
    refs = []
    ids: dict[str, str] = {}
    for i, p in enumerate(events):
        rel = p.relative_to(root)
        eid = str(rel.with_suffix("")) if rel.suffix else str(rel)
        if eid in ids:  # e.g. event.toml and event.dat: keep both, ids made unique by the suffix
            eid = str(rel)
        ids[eid] = str(rel)
        refs.append(EventRef(i, eid, str(rel), "file", str(p)))
    return InputList("folder", tuple(refs), tuple(skipped), _fingerprint("folder", refs))


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.glob("*.parquet"))
    return [path]


def _list_parquet(path: Path) -> InputList:
    import pyarrow.parquet as pq

    files = _parquet_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no *.parquet files")
    refs, skipped = [], []
    seen: dict[str, str] = {}
    for f in files:
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        if "t" not in names or not ({"flux", "sigma"} <= names or {"mag", "mag_err"} <= names):
            raise ValueError(
                f"{f}: a light-curve table needs list columns t and flux, sigma (or mag, "
                f"mag_err); found {sorted(names)}"
            )
        n = pf.metadata.num_rows
        if "event" in names:
            ids = [str(x) for x in pf.read(columns=["event"]).column("event").to_pylist()]
        elif "index" in names:
            ids = [str(x) for x in pf.read(columns=["index"]).column("index").to_pylist()]
        else:
            ids = [f"{f.stem}#{r}" for r in range(n)]
        for r, eid in enumerate(ids):
            src = f"{f.name}#{r}"
            if eid in seen:
                raise ValueError(
                    f"{f}: row {r}: event id {eid!r} repeats {seen[eid]}; event ids must be unique"
                )
            seen[eid] = src
            refs.append(EventRef(len(refs), eid, src, "parquet", str(f), r))
    return InputList("parquet", tuple(refs), tuple(skipped), _fingerprint("parquet", refs))


def list_inputs(path: str | os.PathLike) -> InputList:
    """The events of a catalog input (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file() and p.suffix.lower() == ".parquet":
        return _list_parquet(p)
    if p.is_dir():
        if any(p.glob("*.parquet")):
            return _list_parquet(p)
        return _list_folder(p)
    raise ValueError(
        f"{p}: a catalog input is a folder of event files/manifests, a .parquet file or a folder "
        "of .parquet files"
    )


# ----------------------------------------------------------------------------------------------
def read_parquet_rows(path: str, rows: list[int], columns: list[str] | None = None):
    """The given rows (sorted ints) of a parquet file as a pyarrow Table, reading only the row groups
    that hold them (streamed: a catalog never loads a whole input table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    cols = [c for c in (columns or PARQUET_COLUMNS) if c in pf.schema_arrow.names]
    starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
    rows_arr = np.asarray(rows, dtype=np.int64)
    groups = sorted(set(np.searchsorted(starts, rows_arr, side="right") - 1))
    tables = []
    for g in groups:
        tab = pf.read_row_group(int(g), columns=cols)
        sel = rows_arr[(rows_arr >= starts[g]) & (rows_arr < starts[g + 1])] - starts[g]
        tables.append(tab.take(pa.array(sel)))
    return pa.concat_tables(tables)


def event_from_record(ref: EventRef, rec: dict) -> Event:
    """An Event from one parquet row (dict of column → value)."""
    t = np.asarray(rec["t"], dtype=float)
    mask = None if rec.get("mask") is None else np.asarray(rec["mask"], dtype=bool)
    name = "data"
    if rec.get("flux") is not None and rec.get("sigma") is not None:
        ds = Dataset.from_arrays(name, t, rec["flux"], rec["sigma"], mask=mask)
    elif rec.get("mag") is not None and rec.get("mag_err") is not None:
        keep = np.ones(t.shape, bool) if mask is None else mask
        ds = Dataset.from_magnitudes(
            name, t[keep], np.asarray(rec["mag"], float)[keep], np.asarray(rec["mag_err"], float)[keep]
        )
    else:
        raise ValueError(f"{ref.source}: the row has neither flux/sigma nor mag/mag_err values")
    return Event(datasets=(ds,), name=ref.event)


def load_event(ref: EventRef, record: dict | None = None) -> Event:
    """Read one event (a file or manifest through :mod:`mulens_sbi.readers`, or a parquet row)."""
    import warnings

    if ref.kind == "parquet":
        if record is None:
            record = read_parquet_rows(ref.path, [ref.row]).to_pylist()[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # an unsorted row is reported, not re-sorted quietly
            return event_from_record(ref, record)
    ev = read_event_file(ref.path)
    return Event(datasets=ev.datasets, name=ref.event if ev.name == Path(ref.path).stem else ev.name)
