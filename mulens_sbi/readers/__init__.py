"""Readers for real photometry: one implementation for ``fit``, ``catalog`` and the Python API.

* :func:`read_event` — data files (format auto-detected), folders of data files and manifests → one
  :class:`~mulens_sbi.event.Event`: what ``fit(...)`` and ``mulens-sbi fit FILE ...`` read;
* :func:`read_dataset` — one file of any supported format (:data:`FORMATS`: NASA Exoplanet Archive
  IPAC tables, OGLE EWS ``phot.dat``, MOA, KMTNet pySIS and TLC/DIA, MulensModel's and other plain
  tables) → a :class:`~mulens_sbi.event.Dataset` (HJD', fluxes on zero point 22 or the file's flux
  units; see :mod:`mulens_sbi.readers.formats`);
* :func:`read_manifest` — a TOML/JSON manifest naming an event's datasets → an Event
  (see :mod:`mulens_sbi.readers.manifest`);
* :func:`load_event` — a manifest or a single data file → an Event (``mulens-sbi catalog``).

Problems are :class:`DataFormatError` (a ``ValueError``) naming ``file:line`` and the column; bad rows
are never dropped silently. See ``docs/data.md``.
"""

from mulens_sbi.readers._table import TIME_FORMATS, DataFormatError
from mulens_sbi.readers.formats import FORMATS, detect_format, read_dataset
from mulens_sbi.readers.manifest import (
    DATA_SUFFIXES,
    data_files,
    is_manifest,
    load_event,
    read_event,
    read_manifest,
)

__all__ = [
    "DATA_SUFFIXES",
    "FORMATS",
    "TIME_FORMATS",
    "DataFormatError",
    "data_files",
    "detect_format",
    "is_manifest",
    "load_event",
    "read_dataset",
    "read_event",
    "read_manifest",
]
