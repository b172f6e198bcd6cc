"""Readers for the photometry formats of the microlensing surveys (one file → one Dataset).

=================  ============================================================================
format             layout (columns beyond those used are allowed, must be on every row, ignored)
=================  ============================================================================
``ogle``           OGLE EWS ``phot.dat``: no header; ``HJD  I  sigma_I  seeing  sky`` with the full
                   HJD (2,45x,xxx.x). Magnitudes (zero point 22 applied as for any magnitude).
``kmtnet-pysis``   KMTNet pySIS: ``# HJD  Δflux  flux_err  mag  mag_err [fwhm sky ...]`` with
                   HJD' (HJD − 2,450,000); the *difference flux* Δflux (may be negative) and its
                   error are used; the magnitude columns are not (undefined where Δflux < 0).
``kmtnet-tlc``     KMTNet TLC / pyDIA (``.tlc``, ``.dia``, ``.pysis`` magnitude files): ``HJD'  mag
                   mag_err [seeing sky]`` (the MOA and OGLE re-reductions distributed with KMTNet
                   papers use the same three first columns).
``moa``            MOA light curve from the NASA Exoplanet Archive: an IPAC table with ``HJD``
                   (full), ``flux``, ``flux_err`` (difference flux in counts) and more columns.
``ipac``           Any IPAC table (NASA Exoplanet Archive): time, value and error columns found by
                   name (``HJD``/``BJD``/``JD``/``HJD-2450000``/``MJD``; ``flux``/``Delta_flux``/
                   ``mag``; ``flux_err``/``mag_err``/``err``/``sigma``) or given with ``columns=``.
``plain``          ``time mag err`` or ``time flux err`` (CSV or whitespace): :mod:`mulens_sbi.io_simple`.
=================  ============================================================================

``format="auto"`` (:func:`detect_format`) decides from the first lines: an IPAC header (``\\`` or
``|``) → ``ipac`` (``moa`` reading is the same); a comment header naming a difference flux
(``Δflux``, ``dflux``, ``delta_flux``) → ``kmtnet-pysis``; a file named ``*phot.dat`` or with no
header, ≥ 4 numeric columns and full HJD times → ``ogle``; ``.tlc``/``.dia``/``.pysis``
without a flux header → ``kmtnet-tlc``; anything else → ``plain``.

All readers share the checks of :mod:`mulens_sbi.readers._table` (file:line errors, bad-row
handling with ``on_bad``, strictly increasing times, HJD' conversion, flux scale). Each returns a
:class:`~mulens_sbi.event.Dataset`, or ``(Dataset, info)`` with ``return_info=True``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from mulens_sbi.event import Dataset
from mulens_sbi.io_simple import read_table
from mulens_sbi.readers._table import (
    DataFormatError,
    find_column,
    finish,
    numeric_columns,
    read_text,
    split_rows,
)

__all__ = ["FORMATS", "detect_format", "read_dataset"]

FORMATS = ("auto", "ogle", "kmtnet-pysis", "kmtnet-tlc", "moa", "ipac", "plain")
_DFLUX = re.compile(r"(δ|Δ|d|delta[_-]?)flux", re.IGNORECASE)
TIME_NAMES = ("HJD-2450000", "HJD'", "HJD_2450000", "HJD", "BJD", "JD", "MJD", "time", "t")
FLUX_NAMES = ("Delta_flux", "dflux", "diff_flux", "cor_flux", "flux")
MAG_NAMES = ("mag", "magnitude", "I", "mag_I")
ERR_NAMES = {
    "flux": (
        "flux_err",
        "Delta_flux_err",
        "dflux_err",
        "e_flux",
        "fluxerr",
        "flux_error",
        "err",
        "sigma",
        "error",
    ),
    "mag": ("mag_err", "magerr", "e_mag", "mag_error", "err", "sigma", "error"),
}
_NUMERIC_IPAC = ("double", "real", "float", "int", "integer", "long", "d", "r", "f", "i", "l")


# ----------------------------------------------------------------------------------------------
def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of a file from its name and first lines (see the module docstring)."""
    p, label, text = read_text(path)
    head = [ln.strip() for ln in text.splitlines()[:50] if ln.strip()]
    if not head:
        raise DataFormatError(f"{label}: the file is empty")
    if head[0].startswith("\\") or head[0].startswith("|"):
        return "ipac"
    comments = [ln.lstrip("#").strip() for ln in head if ln.startswith("#")]
    if any(_DFLUX.search(c) for c in comments):
        return "kmtnet-pysis"
    data = [ln for ln in head if not ln.startswith("#")]
    suffix = p.suffix.lower()
    if p.name.lower().endswith("phot.dat"):
        return "ogle"
    if suffix in (".tlc", ".dia", ".pysis"):
        return "kmtnet-tlc"
    if data and not comments:
        toks = data[0].replace(",", " ").split()
        try:
            vals = [float(x) for x in toks]
        except ValueError:
            return "plain"
        if len(vals) >= 4 and vals[0] > 2.4e6:
            return "ogle"
    return "plain"


# ----------------------------------------------------------------------------------------------
def _whitespace_table(
    path,
    *,
    fmt: str,
    cols: tuple[int, int, int],
    kind: str,
    names: tuple[str, str, str],
    name,
    band,
    time_format,
    zero_point,
    on_bad,
    min_columns: int,
):
    p, label, text = read_text(path)
    comments, rows = split_rows(text, label)
    if not rows:
        raise DataFormatError(f"{label}: no data rows (the file is empty or holds only comments)")
    ncol = len(rows[0][1])
    what = f" ({fmt}: {', '.join(names)}, ...)"
    if ncol < min_columns:
        raise DataFormatError(
            f"{label}:{rows[0][0]}: expected at least {min_columns} columns{what}, found {ncol}"
        )
    linenos, v = numeric_columns(rows, label, list(zip(cols, names, strict=True)), ncol=ncol, what=what)
    header = None
    for _, body in comments:
        toks = body.lstrip("#").split()
        if len(toks) >= 2 and toks[0].lower() not in ("column", "#"):
            header = toks
            break
    time_header = header[0] if header else None
    return finish(
        label,
        linenos,
        v[:, 0],
        v[:, 1],
        v[:, 2],
        kind=kind,
        name=name or p.stem,
        band=band,
        time_format=time_format,
        time_header=time_header,
        zero_point=zero_point,
        on_bad=on_bad,
        col_names=names,
        col_numbers=tuple(c + 1 for c in cols),
        info={"format": fmt, "n_columns": ncol, "header": header},
    )


def read_ogle(path, *, name=None, band="I", time_format="auto", on_bad="error"):
    """OGLE EWS ``phot.dat``: ``HJD I sigma_I seeing sky`` (see the module docstring)."""
    return _whitespace_table(
        path,
        fmt="ogle",
        cols=(0, 1, 2),
        kind="mag",
        names=("HJD", "I", "sigma_I"),
        name=name,
        band=band,
        time_format=time_format,
        zero_point=None,
        on_bad=on_bad,
        min_columns=3,
    )


def read_kmtnet_pysis(path, *, name=None, band="I", time_format="auto", zero_point=None, on_bad="error"):
    """KMTNet pySIS: ``HJD' Δflux flux_err mag mag_err ...``; uses the difference flux."""
    return _whitespace_table(
        path,
        fmt="kmtnet-pysis",
        cols=(0, 1, 2),
        kind="flux",
        names=("HJD'", "Δflux", "flux_err"),
        name=name,
        band=band,
        time_format=time_format,
        zero_point=zero_point,
        on_bad=on_bad,
        min_columns=3,
    )


def read_kmtnet_tlc(path, *, name=None, band="I", time_format="auto", on_bad="error"):
    """KMTNet TLC / pyDIA magnitudes: ``HJD' mag mag_err [seeing sky]``."""
    return _whitespace_table(
        path,
        fmt="kmtnet-tlc",
        cols=(0, 1, 2),
        kind="mag",
        names=("HJD'", "mag", "mag_err"),
        name=name,
        band=band,
        time_format=time_format,
        zero_point=None,
        on_bad=on_bad,
        min_columns=3,
    )


# ----------------------------------------------------------------------------------------------
def read_ipac(
    path,
    *,
    name=None,
    band=None,
    time_format="auto",
    zero_point=None,
    on_bad="error",
    columns: Mapping[str, str] | None = None,
    kind: str | None = None,
    fmt: str = "ipac",
):
    """An IPAC table (``\\key = value`` / ``\\ comment`` lines, then ``|name|...|``, ``|type|``,
    optional ``|unit|`` and ``|null|`` lines, then whitespace-separated data rows).

    ``columns={"time": ..., "value": ..., "error": ...}`` names the columns to use (default: by
    name, see the module docstring); ``kind`` says whether the value is ``"mag"`` or ``"flux"``
    (default: from the column name). Null values (``null``, or the table's null line) are bad rows."""
    p, label, text = read_text(path)
    header_lines: list[tuple[int, list[str]]] = []
    rows: list[tuple[int, list[str]]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("\\"):
            continue
        if line.startswith("|"):
            if rows:
                raise DataFormatError(f"{label}:{lineno}: a '|' header line after data rows")
            header_lines.append((lineno, [c.strip() for c in line.strip("|").split("|")]))
            continue
        rows.append((lineno, line.split()))
    if not header_lines:
        raise DataFormatError(f"{label}: no IPAC header (a line '|name|name|...|' before the data)")
    names = header_lines[0][1]
    ncol = len(names)
    for lineno, cells in header_lines[1:]:
        if len(cells) != ncol:
            raise DataFormatError(
                f"{label}:{lineno}: header line has {len(cells)} fields, the names line "
                f"(line {header_lines[0][0]}) has {ncol}"
            )
    types = header_lines[1][1] if len(header_lines) > 1 else None
    nulls = {"null"}
    if len(header_lines) > 3:
        nulls |= {c for c in header_lines[3][1] if c}
    if not rows:
        raise DataFormatError(f"{label}: no data rows after the IPAC header")
    cols = dict(columns or {})
    unknown = set(cols) - {"time", "value", "error"}
    if unknown:
        raise ValueError(f"{label}: columns= takes keys time, value, error; got {sorted(unknown)}")

    def pick(role: str, cands) -> int:
        if role in cols:
            j = find_column(names, [cols[role]])
            if j is None:
                raise DataFormatError(
                    f"{label}:{header_lines[0][0]}: no column {cols[role]!r} (columns: {', '.join(names)})"
                )
            return j
        j = find_column(names, cands)
        if j is None:
            raise DataFormatError(
                f"{label}:{header_lines[0][0]}: no {role} column among {', '.join(names)} "
                f"(looked for {', '.join(cands)}); pass columns={{'{role}': NAME}}"
            )
        return j

    jt = pick("time", TIME_NAMES)
    if kind is None:
        jf = find_column(names, FLUX_NAMES) if "value" not in cols else None
        jm = find_column(names, MAG_NAMES) if "value" not in cols else None
        if "value" in cols:
            jv = pick("value", ())
            kind = "mag" if "mag" in names[jv].lower() else "flux"
        elif jf is not None:
            jv, kind = jf, "flux"
        elif jm is not None:
            jv, kind = jm, "mag"
        else:
            raise DataFormatError(
                f"{label}:{header_lines[0][0]}: no flux or magnitude column among "
                f"{', '.join(names)}; pass columns={{'value': NAME}} and kind"
            )
    else:
        jv = pick("value", FLUX_NAMES if kind == "flux" else MAG_NAMES)
    je = pick("error", ERR_NAMES[kind])
    if types is not None:
        for j in (jt, jv, je):
            if types[j].lower() not in _NUMERIC_IPAC:
                raise DataFormatError(
                    f"{label}:{header_lines[1][0]}: column {names[j]!r} has IPAC type "
                    f"{types[j]!r}, not a number type"
                )
    what = f" (the IPAC header names {ncol})"
    linenos, v = numeric_columns(
        rows,
        label,
        [(jt, names[jt]), (jv, names[jv]), (je, names[je])],
        ncol=ncol,
        what=what,
        null_tokens=sorted(nulls),
    )
    time_header = names[jt]
    return finish(
        label,
        linenos,
        v[:, 0],
        v[:, 1],
        v[:, 2],
        kind=kind,
        name=name or p.stem,
        band=band,
        time_format=time_format,
        time_header=time_header,
        zero_point=zero_point,
        on_bad=on_bad,
        col_names=(names[jt], names[jv], names[je]),
        col_numbers=(jt + 1, jv + 1, je + 1),
        info={"format": fmt, "n_columns": ncol, "header": names, "ipac_types": types},
    )


def read_moa(path, *, name=None, band="R", time_format="auto", zero_point=None, on_bad="error"):
    """MOA (NASA Exoplanet Archive IPAC table): ``HJD``, ``flux``, ``flux_err`` difference fluxes."""
    return read_ipac(
        path,
        name=name,
        band=band,
        time_format=time_format,
        zero_point=zero_point,
        on_bad=on_bad,
        columns={"time": "HJD", "value": "flux", "error": "flux_err"},
        kind="flux",
        fmt="moa",
    )


def read_plain(path, *, name=None, band=None, time_format="auto", zero_point=None, kind=None, on_bad="error"):
    """Plain ``time mag err`` / ``time flux err`` tables (:func:`mulens_sbi.io_simple.read_table`)."""
    if on_bad != "error":
        raise ValueError(f"{path}: format 'plain' reports every bad row as an error (on_bad='error' only)")
    ds, info = read_table(
        path,
        kind=kind,
        time_format=time_format,
        zero_point=22.0 if zero_point is None else zero_point,
        name=name,
        band=band,
        return_info=True,
    )
    info = dict(
        info,
        format="plain",
        dropped=[],
        n_used=ds.n,
        flux_scale="zero point 22" if info["kind"] == "mag" or zero_point is not None else "as in file",
    )
    return ds, info


_READERS = {
    "ogle": read_ogle,
    "kmtnet-pysis": read_kmtnet_pysis,
    "kmtnet-tlc": read_kmtnet_tlc,
    "moa": read_moa,
    "ipac": read_ipac,
    "plain": read_plain,
}


def read_dataset(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    name: str | None = None,
    band: str | None = None,
    time_format: str = "auto",
    zero_point: float | None = None,
    kind: str | None = None,
    columns: Mapping[str, str] | None = None,
    on_bad: str = "error",
    return_info: bool = False,
):
    """Read one photometry file of any supported format into a :class:`Dataset`.

    Args:
        path: the file.
        format: one of :data:`FORMATS` (``"auto"``: :func:`detect_format`).
        name: dataset name (default: the file name without extension).
        band: band label (default per format: OGLE/KMTNet ``I``, MOA ``R``).
        time_format: ``"auto"`` or ``"HJD"``, ``"HJD'"``, ``"HJD-2400000"``, ``"MJD"``.
        zero_point: zero point of a flux column (rescaled to 22); default: kept as in the file.
        kind: ``"mag"``/``"flux"`` for ``plain`` and ``ipac`` (default: from the header).
        columns: ``ipac``: column names ``{"time", "value", "error"}``.
        on_bad: ``"error"`` (default) or ``"drop"`` (bad rows dropped and reported; not for ``plain``).
        return_info: also return the info dict (format, time scale and how decided, dropped rows, ...).

    Raises:
        DataFormatError: naming the file, line and column of the first problem.
    """
    if format not in FORMATS:
        raise ValueError(f"{path}: format must be one of {', '.join(FORMATS)}, got {format!r}")
    fmt = detect_format(path) if format == "auto" else format
    kwargs: dict = {"name": name, "time_format": time_format, "on_bad": on_bad}
    if band is not None:
        kwargs["band"] = band
    if fmt in ("kmtnet-pysis", "moa", "ipac", "plain"):
        kwargs["zero_point"] = zero_point
    elif zero_point is not None:
        raise ValueError(f"{path}: zero_point applies to flux files, not to the magnitude format {fmt!r}")
    if fmt in ("ipac", "plain"):
        kwargs["kind"] = kind
    elif kind is not None and kind != ("flux" if fmt in ("kmtnet-pysis", "moa") else "mag"):
        raise ValueError(
            f"{path}: format {fmt!r} holds {'flux' if fmt in ('kmtnet-pysis', 'moa') else 'mag'}"
            f"; kind={kind!r} contradicts it"
        )
    if fmt == "ipac":
        kwargs["columns"] = columns
    elif columns is not None:
        raise ValueError(f"{path}: columns= applies to IPAC tables only (format {fmt!r})")
    ds, info = _READERS[fmt](path, **kwargs)
    if format == "auto":
        info["format_detected"] = True
    assert isinstance(ds, Dataset)
    return (ds, info) if return_info else ds


def default_name(path: str | os.PathLike) -> str:
    """The dataset name a reader gives a file by default (file name without its last extension)."""
    return Path(path).stem
