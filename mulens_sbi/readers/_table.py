"""Shared machinery of the readers: numeric rows with file:line errors, time scales, checks.

Every reader turns a file into ``(t_raw, value, error)`` columns with the line number of each row,
then :func:`finish` applies the same checks and conversions to all formats:

* non-finite values, errors <= 0, implausible magnitudes and rows that repeat another row exactly
  (same time, value and error) are *bad rows*: with ``on_bad="error"`` (default) the first one is a
  :class:`DataFormatError` naming ``file:line``, the column and the count; with ``on_bad="drop"``
  they are removed **and reported** (a ``UserWarning`` and ``info["dropped"]``, one
  ``file:line: reason`` entry per row) — never silently;
* rows out of time order are sorted by time (stable) and reported: a ``UserWarning`` naming the
  first such line and ``info["reordered"]`` (public survey files have them: KMTNet and MOA light
  curves are concatenated from several reductions). Two different measurements at the same time are
  kept (``info["repeated_times"]``);
* the time scale becomes HJD' = HJD − 2450000 (:func:`time_offset`: by the column's name, else by
  value);
* magnitudes become fluxes on zero point 22; fluxes are rescaled from ``zero_point`` to 22 when one
  is given, else kept in the file's units (``info["flux_scale"] = "instrumental"``; per-dataset F_s,
  F_b absorb any scale, only reported source magnitudes then need the zero point);
* a file that does not say whether its value column is a magnitude or a flux is decided by value
  (:func:`kind_by_value`), or refused when the values cannot tell.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mulens_sbi.event import MIN_POINTS, Dataset, mag_to_flux

__all__ = [
    "DataFormatError",
    "MAG_BAND",
    "MAG_REL_ERR",
    "TIME_FORMATS",
    "default_name",
    "find_column",
    "finish",
    "header_time",
    "kind_by_value",
    "numeric_columns",
    "read_text",
    "split_rows",
    "time_offset",
]

#: time scale → offset subtracted to get HJD' (days)
TIME_FORMATS = {"HJD": 2450000.0, "HJD'": 0.0, "HJD-2400000": 50000.0, "MJD": 49999.5}
#: :func:`kind_by_value`: magnitudes of microlensing targets lie in this range ...
MAG_BAND = (5.0, 30.0)
#: ... and their errors are a small fraction of the value (median σ/value at most this)
MAG_REL_ERR = 0.01
_DATA_SUFFIXES = (".dat", ".txt", ".csv", ".tbl", ".pysis", ".tlc", ".dia")


class DataFormatError(ValueError):
    """A problem in a data file; the message starts with ``file:line:`` where a line is known."""


def default_name(path) -> str:
    """The dataset name a reader gives a file: its name without the data extensions
    (``OB03235_MOA.tbl.txt`` → ``OB03235_MOA``)."""
    p = Path(path)
    name = p.name
    for _ in range(2):
        stem, dot, suffix = name.rpartition(".")
        if dot and stem and f".{suffix.lower()}" in _DATA_SUFFIXES:
            name = stem
        else:
            break
    return name if name != p.name else p.stem

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


def _scale_by_value(t_raw: np.ndarray) -> np.ndarray:
    """0: full HJD/JD (> 2,400,000); 1: HJD − 2,400,000 (40,000..100,000); 2: HJD' (< 40,000); 3: none."""
    return np.select([t_raw > 2.4e6, (t_raw > 4e4) & (t_raw < 1e5), t_raw < 4e4], [0, 1, 2], 3)


_SCALE_NAMES = ("HJD", "HJD-2400000", "HJD'")
_SCALE_CLASS = {"HJD": 0, "HJD-2400000": 1, "MJD": 1, "HJD'": 2}


def time_offset(
    t_raw: np.ndarray,
    linenos: np.ndarray,
    label: str,
    *,
    time_format: str = "auto",
    header: str | None = None,
    column: int = 1,
) -> tuple[str, str]:
    """Decide the time scale: returns ``(time_format, how)`` (a key of :data:`TIME_FORMATS`).

    ``auto``: by the header name (:func:`header_time`), else by value — all > 2,400,000 → full HJD/JD;
    all in 40,000..100,000 → HJD − 2,400,000; all < 40,000 → HJD' (so HJD − 2,450,000 written as
    8172.5 or as 172.5 + 8000 alike). Mixed ranges are an error naming the first row on another
    scale; so is a header naming a scale that the values contradict (``HJD-2450000`` over
    2,458,172.5)."""
    if time_format != "auto":
        if time_format not in TIME_FORMATS:
            raise ValueError(
                f"{label}: time_format must be 'auto' or one of {', '.join(TIME_FORMATS)}, "
                f"got {time_format!r}"
            )
        return time_format, "given"
    ranges = _scale_by_value(t_raw)
    named = header_time(header)
    if named is not None:
        wrong = np.flatnonzero(ranges != _SCALE_CLASS[named])
        if wrong.size:
            k = int(wrong[0])
            raise DataFormatError(
                f"{label}:{linenos[k]}: column {column} ({header}): {float(t_raw[k])!r} is not on the scale "
                f"the header names ({named}; {wrong.size} such row(s)); fix the header or pass time_format"
            )
        return named, f"header {header!r}"
    if np.any(ranges == 3) or np.unique(ranges).size > 1:
        k = int(np.flatnonzero((ranges != ranges[0]) | (ranges == 3))[0])
        what = (
            "is in none of the recognised ranges"
            if ranges[k] == 3
            else f"is on a different scale than line {linenos[0]} ({float(t_raw[0])!r})"
        )
        raise DataFormatError(
            f"{label}:{linenos[k]}: column {column} (time): {float(t_raw[k])!r} {what}; the readers "
            "recognise HJD (> 2,400,000), HJD − 2,400,000 (40,000..100,000) and HJD' (< 40,000): pass "
            "time_format"
        )
    return _SCALE_NAMES[int(ranges[0])], "by value"


def kind_by_value(
    value: np.ndarray, error: np.ndarray, linenos: np.ndarray, label: str, *, column: int = 2
) -> tuple[str, str]:
    """Magnitudes or fluxes, from the values of a file that does not say: ``(kind, how)``.

    * magnitudes: at least 90% of the values in :data:`MAG_BAND` (5..30) and, on those rows, a
      median error of at most :data:`MAG_REL_ERR` (1%) of the value (photometry to 0.05 mag at
      I = 17 is 0.3%; the same numbers read as fluxes on zero point 22 would be an 18.3–20.3 mag
      source measured to better than 1% everywhere). Values outside the band on the other rows are
      left to :func:`finish`'s plausibility check (a 99.999 placeholder is a bad row there);
    * fluxes: fewer than half of the values in the band (difference fluxes around zero, counts,
      normalised fluxes around 1);
    * anything else is refused: :class:`DataFormatError` naming the file, the first data line and
      the column, and the options that decide it.
    """
    ok = np.isfinite(value) & np.isfinite(error)
    v, e, lines = value[ok], error[ok], linenos[ok]
    if v.size == 0:
        raise DataFormatError(f"{label}: no finite values in column {column} to tell magnitudes from fluxes")
    band = (v >= MAG_BAND[0]) & (v <= MAG_BAND[1])
    frac = float(band.mean())
    rel = float(np.median(np.abs(e[band]) / v[band])) if band.any() else math.inf
    if frac >= 0.9 and rel <= MAG_REL_ERR:
        return "mag", (
            f"by value: {frac:.0%} of column {column} in {MAG_BAND[0]:g}..{MAG_BAND[1]:g}, median error "
            f"{rel:.2%} of the value"
        )
    if frac < 0.5:
        return "flux", f"by value: {1 - frac:.0%} of column {column} outside the magnitude range"
    if frac >= 0.9:
        why = (
            f"{frac:.0%} of its values lie in {MAG_BAND[0]:g}..{MAG_BAND[1]:g}, where magnitudes and fluxes "
            f"on zero point 22 overlap, and their median error ({rel:.1%} of the value) is large for "
            "magnitudes"
        )
    else:
        k = int(np.flatnonzero(~band)[0])
        why = (
            f"{frac:.0%} of its values lie in the magnitude range {MAG_BAND[0]:g}..{MAG_BAND[1]:g} and "
            f"the rest do not (first: line {lines[k]}, {float(v[k])!r})"
        )
    raise DataFormatError(
        f"{label}:{linenos[0]}: column {column}: cannot tell magnitudes from fluxes: {why}. Add a header "
        "line such as '# time mag err' or '# time flux err', or pass kind='mag' / kind='flux' (--kind on "
        "the command line)"
    )


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
    kind: str | None,
    name: str,
    band: str | None,
    time_format: str = "auto",
    time_header: str | None = None,
    zero_point: float | None = None,
    on_bad: str = "error",
    col_names: Sequence[str] = (),
    col_numbers: Sequence[int] = (1, 2, 3),
    info: dict | None = None,
    kind_from: str = "format",
) -> tuple[Dataset, dict]:
    """Checks and conversions shared by all formats (see the module docstring) → (Dataset, info).

    ``kind=None``: magnitudes or fluxes decided by :func:`kind_by_value`; ``kind_from`` says how a
    given ``kind`` was decided (reported as ``info["kind_from"]``)."""
    if on_bad not in ON_BAD:
        raise ValueError(f"{label}: on_bad must be one of {ON_BAD}, got {on_bad!r}")
    if kind is None:
        kind, kind_from = kind_by_value(value, error, linenos, label, column=col_numbers[1])
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
    first_seen: dict[tuple[float, float, float], int] = {}
    for i in np.flatnonzero(~bad):
        key = (float(t_raw[i]), float(value[i]), float(error[i]))
        if key in first_seen:
            reasons.append(
                (
                    int(i),
                    f"column {col_numbers[0]} (time): {key[0]!r} repeats the time on line "
                    f"{linenos[first_seen[key]]} with the same value and error (a duplicated row)",
                )
            )
            bad[i] = True
        else:
            first_seen[key] = int(i)
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
    tf, how = time_offset(
        t_raw, linenos, label, time_format=time_format, header=time_header, column=col_numbers[0]
    )
    wrong = np.flatnonzero(np.diff(t_raw) < 0)
    if wrong.size:
        i = int(wrong[0]) + 1
        warnings.warn(
            f"{label}:{linenos[i]}: column {col_numbers[0]} (time): {float(t_raw[i])!r} is earlier than "
            f"the time on line {linenos[i - 1]} ({float(t_raw[i - 1])!r}); {wrong.size} row(s) out of time "
            "order, rows sorted by time (none dropped; info['reordered'])",
            UserWarning,
            stacklevel=3,
        )
        order = np.argsort(t_raw, kind="stable")
        linenos, t_raw, value, error = linenos[order], t_raw[order], value[order], error[order]
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
        reordered=int(wrong.size),
        repeated_times=int(np.sum(np.diff(t_raw) == 0)),
        kind_from=kind_from,
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
