"""A minimal reader for plain photometry tables: ``time mag err`` or ``time flux err``.

One file is one :class:`~mulens_sbi.event.Dataset` (one telescope/band, with its own F_s, F_b in
the fit). Full survey readers (OGLE, KMTNet pySIS, MOA, IPAC tables) are a separate module; this one
reads the simplest tables people exchange.

**Layout.** Whitespace- or comma-separated columns; blank lines and lines starting with ``#`` are
skipped. The first three columns are time, magnitude or flux, and its 1σ error; further columns are
allowed (e.g. seeing, sky), must be present on every row, and are ignored (listed in the info dict).
Every data row must have the same number of columns.

**Magnitude or flux.** Taken from ``kind=`` (``"mag"`` or ``"flux"``) or from a header: a first
comment line (``# time mag err``) or first non-numeric line (``time,flux,err``) whose second name
contains ``mag`` or ``flux``. Without either the reader refuses — magnitudes and zero-point-22
fluxes of faint sources overlap in value, so guessing would be wrong silently. Magnitudes become
fluxes on MulensModel's zero point 22 (``σ_F = 0.4 ln10 F σ_m``); fluxes on another zero point are
rescaled with ``zero_point=`` (``F_22 = F·10^(−0.4(zp − 22))``). Difference fluxes may be negative.

**Time.** Returned as HJD' = HJD − 2450000 (days). ``time_format``:

* ``"auto"`` (default): by the header name (``HJD'``, ``HJD-2450000`` → HJD'; ``HJD-2400000``,
  ``RJD`` → subtract 50000; ``MJD`` → MJD = JD − 2400000.5, subtract 49999.5) or else by value:
  all times > 2,400,000 → full HJD/JD (subtract 2,450,000); all in 40,000..100,000 → HJD − 2,400,000
  (subtract 50,000); all below 40,000 → already HJD'. Values that mix these ranges are an error.
* ``"HJD"``, ``"HJD'"``, ``"HJD-2400000"``, ``"MJD"``: explicit.

JD vs HJD (≤ 8.3 min) and BJD are not converted: the reader cannot know which one a file holds.

**Errors** are :class:`DataFormatError` (a ``ValueError``) naming ``file:line`` and the column:
wrong column count, text in a number, non-finite values, errors ≤ 0, magnitude outside −5..40,
times not strictly increasing (unsorted or duplicated rows are reported, never reordered or
dropped), empty files, too few points.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mulens_sbi.event import MIN_POINTS, Dataset, Event, mag_to_flux

__all__ = ["DataFormatError", "TIME_FORMATS", "read_event", "read_table"]

#: time scale → offset subtracted to get HJD' (days)
TIME_FORMATS = {"HJD": 2450000.0, "HJD'": 0.0, "HJD-2400000": 50000.0, "MJD": 49999.5}
_COLUMN_NAMES = ("time", "value", "error")


class DataFormatError(ValueError):
    """A problem in a data file; the message starts with ``file:line:`` where a line is known."""


def _header_kind(tokens: Sequence[str]) -> str | None:
    if len(tokens) < 2:
        return None
    second = tokens[1].lower()
    if "mag" in second:
        return "mag"
    if "flux" in second:
        return "flux"
    return None


def _header_time(token: str) -> str | None:
    t = token.lower().replace(" ", "").replace("−", "-")
    if t in ("hjd'", "hjd-2450000", "hjd_2450000", "hjdprime", "jd-2450000", "bjd-2450000"):
        return "HJD'"
    if t in ("hjd-2400000", "jd-2400000", "rjd", "bjd-2400000"):
        return "HJD-2400000"
    if t == "mjd":
        return "MJD"
    return None


def _split(line: str, comma: bool) -> list[str]:
    if comma:
        return [tok.strip() for tok in line.split(",")]
    return line.split()


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def read_table(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    time_format: str = "auto",
    zero_point: float = 22.0,
    name: str | None = None,
    band: str | None = None,
    return_info: bool = False,
):
    """Read one ``time mag err`` / ``time flux err`` table into a :class:`Dataset` (module docstring).

    Args:
        path: the file.
        kind: ``"mag"`` or ``"flux"``; default from the header (error if there is none).
        time_format: ``"auto"`` or one of :data:`TIME_FORMATS`.
        zero_point: magnitude zero point of a flux file (fluxes are rescaled to zero point 22).
        name: dataset name (default: the file name without its extension).
        band: optional band label.
        return_info: also return a dict: ``kind``, ``time_format`` and how it was decided,
            ``offset`` subtracted, ``n_rows``, ``n_columns``, ``ignored_columns``, ``delimiter``.

    Raises:
        DataFormatError: naming the file, line and column of the first problem.
        FileNotFoundError: the file does not exist.
    """
    p = Path(path)
    label = str(p)
    if kind is not None and kind not in ("mag", "flux"):
        raise ValueError(f"{label}: kind must be 'mag' or 'flux', got {kind!r}")
    if time_format != "auto" and time_format not in TIME_FORMATS:
        raise ValueError(
            f"{label}: time_format must be 'auto' or one of {', '.join(TIME_FORMATS)}, got {time_format!r}"
        )
    if not (isinstance(zero_point, int | float) and math.isfinite(zero_point)):
        raise ValueError(f"{label}: zero_point must be a finite number, got {zero_point!r}")
    if not p.exists():
        raise FileNotFoundError(f"{label}: no such file")
    if p.is_dir():
        raise DataFormatError(f"{label}: is a folder; give the photometry files in it (e.g. {label}/*.dat)")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFormatError(
            f"{label}: not a text file (UTF-8 decoding failed at byte {err.start})"
        ) from None

    header: list[str] | None = None
    header_line = 0
    header_is_comment = False
    rows: list[tuple[int, list[str]]] = []
    comma: bool | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line.lstrip("#").strip()
            if header is None and not rows and body:
                toks = re.split(r"[,\s]+", body)
                if _header_kind(toks) is not None:
                    header, header_line, header_is_comment = toks, lineno, True
            continue
        if comma is None:
            comma = "," in line
        toks = _split(line, comma)
        if not rows and header is None and not _is_number(toks[0]):
            header, header_line = toks, lineno
            continue
        rows.append((lineno, toks))

    if not rows:
        raise DataFormatError(f"{label}: no data rows (the file is empty or holds only comments/header)")

    ncol = len(rows[0][1])
    if header is not None and not header_is_comment and len(header) != ncol:
        raise DataFormatError(
            f"{label}:{header_line}: header names {len(header)} columns but the first data row "
            f"(line {rows[0][0]}) has {ncol}"
        )
    if ncol < 3:
        raise DataFormatError(
            f"{label}:{rows[0][0]}: expected at least 3 columns (time, mag or flux, error), found {ncol}"
        )

    # kind
    hk = _header_kind(header) if header is not None else None
    if kind is None:
        if hk is None:
            raise DataFormatError(
                f"{label}: cannot tell magnitudes from fluxes: add a header line such as '# time mag err' "
                "or '# time flux err', or pass kind='mag' / kind='flux' (--kind on the command line)"
            )
        kind = hk
    elif hk is not None and hk != kind:
        raise DataFormatError(
            f"{label}:{header_line}: the header's second column {header[1]!r} says {hk!r} but kind={kind!r} "
            "was given"
        )
    names = ("time", "mag" if kind == "mag" else "flux", "err")

    data = np.empty((len(rows), 3))
    for i, (lineno, toks) in enumerate(rows):
        if len(toks) != ncol:
            raise DataFormatError(
                f"{label}:{lineno}: expected {ncol} columns (as on line {rows[0][0]}), found {len(toks)}"
            )
        for j in range(3):
            cell = toks[j]
            try:
                v = float(cell)
            except ValueError:
                raise DataFormatError(
                    f"{label}:{lineno}: column {j + 1} ({names[j]}): {cell!r} is not a number"
                ) from None
            if not math.isfinite(v):
                raise DataFormatError(
                    f"{label}:{lineno}: column {j + 1} ({names[j]}): value {cell!r} is not finite; "
                    "remove the row (nothing is dropped silently)"
                )
            data[i, j] = v
    linenos = np.array([ln for ln, _ in rows])

    def tok(i: int, j: int) -> str:
        return repr(rows[i][1][j])

    t_raw, val, err = data[:, 0], data[:, 1], data[:, 2]

    bad = np.flatnonzero(err <= 0)
    if bad.size:
        i = bad[0]
        raise DataFormatError(
            f"{label}:{linenos[i]}: column 3 (err): uncertainty must be > 0, got {tok(i, 2)} "
            f"({bad.size} such row(s))"
        )
    if kind == "mag":
        bad = np.flatnonzero((val < -5) | (val > 40))
        if bad.size:
            i = bad[0]
            raise DataFormatError(
                f"{label}:{linenos[i]}: column 2 (mag): {tok(i, 1)} is not a plausible magnitude (−5..40); "
                "is this a flux file? pass kind='flux'"
            )
    # time scale
    how = "given"
    if time_format == "auto":
        from_header = _header_time(header[0]) if header is not None else None
        if from_header is not None:
            time_format, how = from_header, f"header {header[0]!r}"
        else:
            ranges = np.select([t_raw > 2.4e6, (t_raw > 4e4) & (t_raw < 1e5), t_raw < 4e4], [0, 1, 2], 3)
            if np.any(ranges == 3) or np.unique(ranges).size > 1:
                k = np.flatnonzero((ranges != ranges[0]) | (ranges == 3))[0]
                what = (
                    "is in none of the recognised ranges"
                    if ranges[k] == 3
                    else f"is on a different scale than line {linenos[0]} ({tok(0, 0)})"
                )
                raise DataFormatError(
                    f"{label}:{linenos[k]}: column 1 (time): {tok(k, 0)} {what}; the reader recognises "
                    "HJD (> 2,400,000), HJD − 2,400,000 (40,000..100,000) and HJD' (< 40,000): pass "
                    "time_format explicitly"
                )
            time_format = ("HJD", "HJD-2400000", "HJD'")[int(ranges[0])]
            how = "by value"
    dt = np.diff(t_raw)
    bad = np.flatnonzero(dt <= 0)
    if bad.size:
        i = bad[0] + 1
        what = "duplicates" if dt[bad[0]] == 0 else "is earlier than"
        raise DataFormatError(
            f"{label}:{linenos[i]}: column 1 (time): {tok(i, 0)} {what} the time on line {linenos[i - 1]} "
            f"({tok(i - 1, 0)}); times must be strictly increasing ({bad.size} such row(s)); sort the file "
            "or merge/remove the repeated rows"
        )
    if len(rows) < MIN_POINTS:
        raise DataFormatError(
            f"{label}: only {len(rows)} data row(s); at least {MIN_POINTS} are needed (source and blend "
            "flux are fitted per dataset)"
        )

    offset = TIME_FORMATS[time_format]
    t = t_raw - offset

    ds_name = name if name is not None else p.stem
    if kind == "mag":
        flux, sigma = mag_to_flux(val, err)
    else:
        scale = 10.0 ** (-0.4 * (zero_point - 22.0))
        flux, sigma = val * scale, err * scale
    try:
        ds = Dataset(ds_name, t, flux, sigma, band=band)
    except ValueError as exc:  # should not happen after the checks above; keep the file name
        raise DataFormatError(f"{label}: {exc}") from None
    if not return_info:
        return ds
    info = {
        "path": label,
        "kind": kind,
        "time_format": time_format,
        "time_format_from": how,
        "offset": offset,
        "n_rows": len(rows),
        "n_columns": ncol,
        "ignored_columns": list(range(4, ncol + 1)),
        "delimiter": "comma" if comma else "whitespace",
        "header": header,
    }
    return ds, info


def read_event(
    paths: Sequence[str | os.PathLike],
    *,
    kind: str | None = None,
    time_format: str = "auto",
    zero_point: float = 22.0,
    name: str | None = None,
) -> Event:
    """Several files → one :class:`Event` (one dataset per file, each with its own F_s, F_b).

    Dataset names are the file names without extension, made unique with ``_2``, ``_3``, ... .
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise ValueError("read_event: no files given")
    datasets = []
    seen: dict[str, int] = {}
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        ds_name = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
        datasets.append(read_table(path, kind=kind, time_format=time_format, zero_point=zero_point,
                                   name=ds_name))
    ev_name = name if name is not None else Path(paths[0]).stem
    return Event(datasets=tuple(datasets), name=ev_name)
