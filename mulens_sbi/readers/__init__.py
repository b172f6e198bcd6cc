"""Readers for real photometry: survey formats, event manifests, one API.

* :func:`read_dataset` — one file of any supported format (:data:`FORMATS`: OGLE EWS ``phot.dat``,
  KMTNet pySIS and TLC/DIA, MOA and NASA Exoplanet Archive IPAC tables, plain CSV/whitespace
  tables) → a :class:`~mulens_sbi.event.Dataset` (HJD', fluxes on zero point 22 or the file's flux
  units; see :mod:`mulens_sbi.readers.formats`);
* :func:`read_manifest` — a TOML/JSON manifest naming an event's datasets → an
  :class:`~mulens_sbi.event.Event` (see :mod:`mulens_sbi.readers.manifest`);
* :func:`load_event` — a manifest or a single data file → an Event.

Problems are :class:`DataFormatError` (a ``ValueError``) naming ``file:line`` and the column; bad rows
are never dropped silently. See ``docs/data.md``.
"""

from mulens_sbi.readers._table import DataFormatError
from mulens_sbi.readers.formats import FORMATS, detect_format, read_dataset
from mulens_sbi.readers.manifest import is_manifest, load_event, read_manifest

__all__ = [
    "FORMATS",
    "DataFormatError",
    "detect_format",
    "is_manifest",
    "load_event",
    "read_dataset",
    "read_manifest",
]
