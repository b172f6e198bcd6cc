"""Shared machinery of the survey readers: numeric rows with file:line errors, time scales, checks.

Every reader turns a file into ``(t_raw, value, error)`` columns with the line number of each row,
then :func:`finish` applies the same checks and conversions to all formats:

* non-finite values, errors <= 0 and implausible magnitudes are *bad rows*: with
  ``on_bad="error"`` (default) the first one is a :class:`DataFormatError` naming ``file:line``, the
  column and the count; with ``on_bad="drop"`` they are removed **and reported** (a
  ``UserWarning`` and ``info["dropped"]``, one ``file:line: reason`` entry per row) — never silently;
* times must be strictly increasing: an unsorted or repeated time is always an error naming both
  lines (the reader never reorders or merges rows);
* the time scale becomes HJD' = HJD − 2450000 (:func:`time_offset`: by the column's name, else by
  value, with the same rules as :mod:`mulens_sbi.io_simple`);
* magnitudes become fluxes on zero point 22; fluxes are rescaled from ``zero_point`` to 22 when one
  is given, else kept in the file's units (``info["flux_scale"] = "instrumental"``; per-dataset F_s,
  F_b absorb any scale, only reported source magnitudes then need the zero point).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mulens_sbi.event import MIN_POINTS, Dataset, mag_to_flux
from mulens_sbi.io_simple import TIME_FORMATS, DataFormatError

__all__ = [
    "DataFormatError",
    "TIME_FORMATS",
    "finish",
    "header_time",
    "read_text",
    "split_rows",
    "time_offset",
]

ON_BAD = ("error", "drop")


def read_text(path) -> tuple[Path, str, str]:
    """(path, label, text) of a UTF-8 text file; FileNotFoundError / DataFormatError otherwise."""
    p = Path(path)
    label = str(p)
    if not p.exists():
        raise FileNotFoundError(f"{label}: no such file")
    if p.is_dir():
        raise DataFormatError(f"{label}: is a folder, not a data file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFormatError(
            f"{label}: not a text file (UTF-8 decoding failed at byte {err.start})"
        ) from None
    return p, label, text


def header_time(token: str | None) -> str | None:
    """Time scale named by a column header (``HJD'``, ``HJD-2450000`` ...), or None if it names none.

    ``HJD``/``JD``/``BJD`` alone say nothing about an offset (files write HJD' under "HJD" too), so
    they return None and the scale is decided by value."""
    if token is None:
        return None
    t = token.lower().replace(" ", "").replace("−", "-").replace("’", "'")
    if t in (
        "hjd'",
        "hjd-2450000",
        "hjd_2450000",
        "hjdprime",
        "jd-2450000",
        "bjd-2450000",
        "hjd-245000.0",
        "hjd-2450000.0",
    ):
        return "HJD'"
    if t in ("hjd-2400000", "jd-2400000", "rjd", "bjd-2400000"):
        return "HJD-2400000"
    if t == "mjd":
        return "MJD"
    return None


def time_offset(
    t_raw: np.ndarray,
    linenos: np.ndarray,
    label: str,
    *,
    time_format: str = "auto",
    header: str | None = None,
) -> tuple[str, str]:
    """Decide the time scale: returns ``(time_format, how)`` (a key of :data:`TIME_FORMATS`).

    ``auto``: by the header name (:func:`header_time`), else by value — all > 2,400,000 → full HJD/JD;
    all in 40,000..100,000 → HJD − 2,400,000; all < 40,000 → HJD'. Mixed ranges are an error naming
    the first row on another scale."""
    if time_format != "auto":
        if time_format not in TIME_FORMATS:
            raise ValueError(
                f"{label}: time_format must be 'auto' or one of {', '.join(TIME_FORMATS)}, "
                f"got {time_format!r}"
            )
        return time_format, "given"
    named = header_time(header)
    if named is not None:
        return named, f"header {header!r}"
    ranges = np.select([t_raw > 2.4e6, (t_raw > 4e4) & (t_raw < 1e5), t_raw < 4e4], [0, 1, 2], 3)
    if np.any(ranges == 3) or np.unique(ranges).size > 1:
        k = int(np.flatnonzero((ranges != ranges[0]) | (ranges == 3))[0])
        what = (
            "is in none of the recognised ranges"
            if ranges[k] == 3
            else f"is on a different scale than line {linenos[0]} ({float(t_raw[0])!r})"
        )
        raise DataFormatError(
            f"{label}:{linenos[k]}: column 1 (time): {float(t_raw[k])!r} {what}; the readers recognise HJD "
            "(> 2,400,000), HJD − 2,400,000 (40,000..100,000) and HJD' (< 40,000): pass time_format"
        )
    return ("HJD", "HJD-2400000", "HJD'")[int(ranges[0])], "by value"


def split_rows(
    text: str, label: str, *, comment: str = "#", skip_prefixes: Sequence[str] = ()
) -> tuple[list[tuple[int, str]], list[tuple[int, list[str]]]]:
    """Split a whitespace table: returns (comment lines [(lineno, body)], data rows [(lineno, tokens)]).

    Blank lines are skipped; lines starting with ``comment`` or one of ``skip_prefixes`` go to the
    comment list. Commas count as separators only if the first data line has one."""
    comments: list[tuple[int, str]] = []
    rows: list[tuple[int, list[str]]] = []
    comma: bool | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(comment) or any(line.startswith(p) for p in skip_prefixes):
            comments.append((lineno, line))
            continue
        if comma is None:
            comma = "," in line
        toks = [t.strip() for t in line.split(",")] if comma else line.split()
        rows.append((lineno, toks))
    return comments, rows


def numeric_columns(
    rows: list[tuple[int, list[str]]],
    label: str,
    columns: Sequence[tuple[int, str]],
    *,
    ncol: int | None = None,
    what: str = "",
    null_tokens: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Parse the columns ``[(index, name), ...]`` of every row as floats.

    Every row must have ``ncol`` tokens (default: as many as the first row): a different count is
    an error naming the line. Text that is not a number is an error naming line, column and text;
    a token in ``null_tokens`` becomes NaN (a bad row, handled by :func:`finish`).
    Returns ``(linenos (n,), values (n, len(columns)))``."""
    if not rows:
        raise DataFormatError(f"{label}: no data rows (the file is empty or holds only comments/header)")
    ncol = len(rows[0][1]) if ncol is None else ncol
    need = max(i for i, _ in columns) + 1
    if ncol < need:
        raise DataFormatError(f"{label}:{rows[0][0]}: expected at least {need} columns{what}, found {ncol}")
    nulls = {s.lower() for s in null_tokens}
    out = np.empty((len(rows), len(columns)))
    for r, (lineno, toks) in enumerate(rows):
        if len(toks) != ncol:
            raise DataFormatError(
                f"{label}:{lineno}: expected {ncol} columns{what} (as on line {rows[0][0]}), "
                f"found {len(toks)}"
            )
        for c, (j, name) in enumerate(columns):
            cell = toks[j]
            if cell.lower() in nulls:
                out[r, c] = np.nan
                continue
            try:
                out[r, c] = float(cell)
            except ValueError:
                raise DataFormatError(
                    f"{label}:{lineno}: column {j + 1} ({name}): {cell!r} is not a number"
                ) from None
    return np.array([ln for ln, _ in rows]), out


def finish(
    label: str,
    linenos: np.ndarray,
    t_raw: np.ndarray,
    value: np.ndarray,
    error: np.ndarray,
    *,
    kind: str,
    name: str,
    band: str | None,
    time_format: str = "auto",
    time_header: str | None = None,
    zero_point: float | None = None,
    on_bad: str = "error",
    col_names: Sequence[str] = (),
    col_numbers: Sequence[int] = (1, 2, 3),
    info: dict | None = None,
) -> tuple[Dataset, dict]:
    """Checks and conversions shared by all formats (see the module docstring) → (Dataset, info)."""
    if on_bad not in ON_BAD:
        raise ValueError(f"{label}: on_bad must be one of {ON_BAD}, got {on_bad!r}")
    if kind not in ("mag", "flux"):
        raise ValueError(f"{label}: kind must be 'mag' or 'flux', got {kind!r}")
    if zero_point is not None and not (isinstance(zero_point, int | float) and math.isfinite(zero_point)):
        raise ValueError(f"{label}: zero_point must be a finite number, got {zero_point!r}")
    names = (
        list(col_names)
        if len(col_names) == 3
        else (["time", "mag", "mag_err"] if kind == "mag" else ["time", "flux", "flux_err"])
    )
    cols = (t_raw, value, error)
    reasons: list[tuple[int, str]] = []
    bad = np.zeros(t_raw.size, bool)
    for c, arr in enumerate(cols):
        nf = ~np.isfinite(arr) & ~bad
        for i in np.flatnonzero(nf):
            reasons.append(
                (int(i), f"column {col_numbers[c]} ({names[c]}): not a finite number (null/NaN/inf)")
            )
        bad |= nf
    nonpos = np.isfinite(error) & (error <= 0) & ~bad
    for i in np.flatnonzero(nonpos):
        reasons.append(
            (
                int(i),
                f"column {col_numbers[2]} ({names[2]}): uncertainty must be > 0, got {float(error[i])!r}",
            )
        )
    bad |= nonpos
    if kind == "mag":
        implaus = np.isfinite(value) & ((value < -5) | (value > 40)) & ~bad
        for i in np.flatnonzero(implaus):
            reasons.append(
                (
                    int(i),
                    f"column {col_numbers[1]} ({names[1]}): {float(value[i])!r} is not a plausible "
                    "magnitude (-5..40; survey placeholders such as 99.999 mark no measurement)",
                )
            )
        bad |= implaus
    reasons.sort()
    dropped = [f"{label}:{linenos[i]}: {why}" for i, why in reasons]
    if dropped and on_bad == "error":
        raise DataFormatError(
            f"{dropped[0]} ({len(dropped)} bad row(s) in the file; fix or remove them, or "
            "read with on_bad='drop' to drop them with a report)"
        )
    if dropped:
        warnings.warn(
            f"{label}: dropped {len(dropped)} bad row(s): "
            + "; ".join(dropped[:5])
            + (" ..." if len(dropped) > 5 else "")
            + " (all listed in info['dropped'])",
            UserWarning,
            stacklevel=3,
        )
        keep = ~bad
        linenos, t_raw, value, error = linenos[keep], t_raw[keep], value[keep], error[keep]
    if t_raw.size == 0:
        raise DataFormatError(f"{label}: no usable data rows ({len(dropped)} bad row(s) dropped)")
    tf, how = time_offset(t_raw, linenos, label, time_format=time_format, header=time_header)
    dt = np.diff(t_raw)
    wrong = np.flatnonzero(dt <= 0)
    if wrong.size:
        i = int(wrong[0]) + 1
        what = "repeats" if dt[wrong[0]] == 0 else "is earlier than"
        raise DataFormatError(
            f"{label}:{linenos[i]}: column {col_numbers[0]} (time): {float(t_raw[i])!r} {what} the time "
            f"on line {linenos[i - 1]} ({float(t_raw[i - 1])!r}); times must be strictly increasing "
            f"({wrong.size} such row(s)); the reader never reorders or merges rows: sort the file or remove "
            "the repeated rows"
        )
    if t_raw.size < MIN_POINTS:
        raise DataFormatError(
            f"{label}: only {t_raw.size} usable data row(s); at least {MIN_POINTS} are "
            "needed (source and blend flux are fitted per dataset)"
        )
    t = t_raw - TIME_FORMATS[tf]
    if kind == "mag":
        flux, sigma = mag_to_flux(value, error)
        scale = "zero point 22 (from magnitudes)"
    elif zero_point is not None:
        f = 10.0 ** (-0.4 * (zero_point - 22.0))
        flux, sigma = value * f, error * f
        scale = f"zero point 22 (rescaled from {zero_point:g})"
    else:
        flux, sigma = value.astype(float), error.astype(float)
        scale = "instrumental"
    try:
        ds = Dataset(name, t, flux, sigma, band=band)
    except ValueError as exc:  # not expected after the checks above; keep the file name
        raise DataFormatError(f"{label}: {exc}") from None
    out = dict(info or {})
    out.update(
        path=label,
        kind=kind,
        time_format=tf,
        time_format_from=how,
        offset=TIME_FORMATS[tf],
        n_rows=int(t_raw.size + len(dropped)),
        n_used=int(t_raw.size),
        dropped=dropped,
        flux_scale=scale,
        lines=linenos.tolist(),
    )
    return ds, out


def find_column(names: Sequence[str], candidates: Sequence[str]) -> int | None:
    """Index of the first of ``candidates`` among ``names`` (case- and punctuation-insensitive)."""
    norm = [re.sub(r"[^a-z0-9']", "", n.lower()) for n in names]
    for cand in candidates:
        c = re.sub(r"[^a-z0-9']", "", cand.lower())
        if c in norm:
            return norm.index(c)
    return None
