"""Readers for the photometry formats of the microlensing surveys (one file → one Dataset).

=================  ============================================================================
format             layout (columns beyond those used are allowed, must be on every row, ignored)
=================  ============================================================================
``ogle``           OGLE EWS ``phot.dat``: no header; ``HJD  I  sigma_I  seeing  sky`` with the full
                   HJD (2,45x,xxx.x). Magnitudes (zero point 22 applied as for any magnitude).
``kmtnet-pysis``   KMTNet pySIS: ``# HJD  Δflux  flux_err  mag  mag_err [fwhm sky ...]`` with
                   HJD' (HJD − 2,450,000); the *difference flux* Δflux (may be negative) and its
                   error are used; the magnitude columns are not (undefined where Δflux < 0).
``kmtnet-tlc``     KMTNet TLC / pyDIA and the headerless KMTNet files MulensModel ships
                   (``.tlc``, ``.dia``, ``.pysis`` without a Δflux header, ``KCT01I.dat``,
                   ``KMTA12_I.dat``): ``HJD'  mag  mag_err [seeing sky]``.
``moa``            MOA light curve from the NASA Exoplanet Archive: an IPAC table of difference
                   fluxes in counts (``HJD``, ``flux``/``Relative_Flux`` and its error).
``ipac``           Any IPAC table (NASA Exoplanet Archive): time, value and error columns found by
                   name (``HJD``/``BJD``/``JD``/``HJD-2450000``/``MJD``; ``flux``/``Delta_flux``/
                   ``Relative_Flux``/``mag``/``RELATIVE_MAGNITUDE``; ``flux_err``/``mag_err``/
                   ``MAGNITUDE_UNCERTAINTY``/``Relative_Flux_Uncertainty``/``err``/``sigma``) or given
                   with ``columns=``. Rows may leave columns empty (fixed-width IPAC: the archive's
                   magnitude tables carry an empty ``RELATIVE_FLUX`` column); the value column with
                   data is used. ``\\TIME_SERIES_DATA_FILTER`` gives the band, ``\\TELESCOPE`` is
                   reported.
``plain``          ``time value err [more columns]`` (CSV or whitespace), optional header naming the
                   columns (``# HJD mag err``, ``t,flux,err``).
=================  ============================================================================

``format="auto"`` (:func:`detect_format`) decides from the file: an IPAC header (``\\`` or ``|``)
→ ``ipac``; a comment header naming a difference flux (``Δflux``, ``\\Delta_flux``, ``dflux``) →
``kmtnet-pysis``; a file named ``*phot.dat``, or with no header, ≥ 4 numeric columns and full HJD
times → ``ogle``; ``.tlc``/``.dia``/``.pysis`` or a KMTNet file name (``KMTC01_I``, ``KCT01I``) →
``kmtnet-tlc``; anything else → ``plain``.

Magnitude or flux: fixed by an explicit ``ogle``/``kmtnet-tlc``/``kmtnet-pysis``/``moa`` format,
else given by ``kind=``, else named by the header, else decided by the values
(:func:`mulens_sbi.readers._table.kind_by_value`; a file the values cannot decide is refused with
the options that decide it). An auto-detected KMTNet file of fluxes is read as ``kmtnet-pysis``.

All readers share the checks of :mod:`mulens_sbi.readers._table` (file:line errors, bad-row
handling with ``on_bad``, time order, HJD' conversion, flux scale). Each returns a
:class:`~mulens_sbi.event.Dataset`, or ``(Dataset, info)`` with ``return_info=True``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from mulens_sbi.event import Dataset
from mulens_sbi.readers._table import (
    DataFormatError,
    default_name,
    find_column,
    finish,
    header_time,
    numeric_columns,
    read_text,
    split_rows,
)

__all__ = [
    "FORMATS",
    "default_name",
    "detect_format",
    "read_dataset",
    "read_ipac",
    "read_kmtnet_pysis",
    "read_kmtnet_tlc",
    "read_moa",
    "read_ogle",
    "read_plain",
]

FORMATS = ("auto", "ogle", "kmtnet-pysis", "kmtnet-tlc", "moa", "ipac", "plain")
_DFLUX = re.compile(r"(δ|Δ|d|delta[_-]?)flux", re.IGNORECASE)
#: KMTNet file names: KMTC01_I.pysis (site C/S/A, field, band) and KCT01I.dat (CT/SA/SS)
_KMT_NAME = re.compile(r"^(?:KMT[ACS]\d{2}_([A-Z])|K(?:CT|SA|SS)\d{2}([A-Z]))(?![A-Za-z])")
TIME_NAMES = ("HJD-2450000", "HJD'", "HJD_2450000", "HJD", "BJD", "JD", "MJD", "time", "t")
FLUX_NAMES = ("Delta_flux", "dflux", "diff_flux", "cor_flux", "flux", "Relative_Flux")
MAG_NAMES = ("mag", "magnitude", "RELATIVE_MAGNITUDE", "I", "mag_I")
ERR_NAMES = {
    "flux": (
        "flux_err",
        "Delta_flux_err",
        "dflux_err",
        "e_flux",
        "fluxerr",
        "flux_error",
        "Relative_Flux_Uncertainty",
        "flux_uncertainty",
        "err",
        "sigma",
        "error",
    ),
    "mag": (
        "mag_err",
        "magerr",
        "e_mag",
        "mag_error",
        "MAGNITUDE_UNCERTAINTY",
        "mag_uncertainty",
        "err",
        "sigma",
        "error",
    ),
}
_NUMERIC_IPAC = ("double", "real", "float", "int", "integer", "long", "d", "r", "f", "i", "l")


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _kmt_band(path) -> str | None:
    m = _KMT_NAME.match(Path(path).name)
    return (m.group(1) or m.group(2)) if m else None


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
    if p.name.lower().endswith("phot.dat"):
        return "ogle"
    if p.suffix.lower() in (".tlc", ".dia", ".pysis") or _kmt_band(p) is not None:
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
# whitespace / CSV tables: ogle, kmtnet-*, plain


def _header_kind(tokens) -> str | None:
    if len(tokens) < 2:
        return None
    second = tokens[1].lower()
    if "mag" in second:
        return "mag"
    if "flux" in second:
        return "flux"
    return None


def _is_header(tokens) -> bool:
    """A comment line that names the columns: its first name is a time column or its second names
    a magnitude or flux."""
    if len(tokens) < 2:
        return False
    first = tokens[0]
    return (
        _header_kind(tokens) is not None
        or header_time(first) is not None
        or find_column([first], TIME_NAMES[:-2]) is not None
    )


def _columns_table(
    path,
    *,
    fmt: str,
    fixed_kind: str | None,
    kind: str | None,
    names: tuple[str, str, str] | None,
    name,
    band,
    time_format,
    zero_point,
    on_bad,
):
    """Read ``time value err [more]`` rows (the first three columns used).

    ``fixed_kind``: the format's kind (``kind`` must agree); else ``kind``, else the header's, else
    by value. ``names``: the three columns' names in messages (default: from the header or
    ``time``/``mag``/``err``)."""
    p, label, text = read_text(path)
    comments, rows = split_rows(text, label)
    header: list[str] | None = None
    header_line = 0
    header_is_comment = False
    first_data = rows[0][0] if rows else None
    for lineno, body in comments:
        if first_data is not None and lineno > first_data:
            break
        toks = [t for t in re.split(r"[,\s]+", body.lstrip("#").strip()) if t]
        if _is_header(toks):
            header, header_line, header_is_comment = toks, lineno, True
            break
    if rows and not _is_number(rows[0][1][0]):
        if header is None:
            header, header_line = rows[0][1], rows[0][0]
        rows = rows[1:]
    if not rows:
        raise DataFormatError(f"{label}: no data rows (the file is empty or holds only comments/header)")
    ncol = len(rows[0][1])
    if header is not None and not header_is_comment and len(header) != ncol:
        raise DataFormatError(
            f"{label}:{header_line}: header names {len(header)} columns but the first data row "
            f"(line {rows[0][0]}) has {ncol}"
        )
    hk = _header_kind(header) if header is not None else None
    if fixed_kind is not None:
        if kind is not None and kind != fixed_kind:
            raise ValueError(f"{label}: format {fmt!r} holds {fixed_kind}; kind={kind!r} contradicts it")
        kind, kind_from = fixed_kind, f"format {fmt}"
    elif kind is not None:
        if hk is not None and hk != kind:
            raise DataFormatError(
                f"{label}:{header_line}: the header's second column {header[1]!r} says {hk!r} but "
                f"kind={kind!r} was given"
            )
        kind_from = "given"
    elif hk is not None:
        kind, kind_from = hk, f"header line {header_line}"
    else:
        kind_from = "by value"
    if names is None:
        if header is not None and len(header) >= 3:
            names = (header[0], header[1], header[2])
        else:
            second = {"mag": "mag", "flux": "flux", None: "value"}[kind]
            names = ("time", second, "err")
    what = f" ({fmt}: {', '.join(names)}, ...)"
    if ncol < 3:
        raise DataFormatError(f"{label}:{rows[0][0]}: expected at least 3 columns{what}, found {ncol}")
    linenos, v = numeric_columns(rows, label, list(zip((0, 1, 2), names, strict=True)), ncol=ncol, what=what)
    ds, info = finish(
        label,
        linenos,
        v[:, 0],
        v[:, 1],
        v[:, 2],
        kind=kind,
        kind_from=kind_from,
        name=name or default_name(p),
        band=band,
        time_format=time_format,
        time_header=header[0] if header else None,
        zero_point=zero_point,
        on_bad=on_bad,
        col_names=names,
        info={
            "format": fmt,
            "n_columns": ncol,
            "header": header,
            "ignored_columns": list(range(4, ncol + 1)),
            "delimiter": "comma" if "," in text.splitlines()[rows[0][0] - 1] else "whitespace",
        },
    )
    return ds, info


def read_ogle(path, *, name=None, band="I", time_format="auto", on_bad="error"):
    """OGLE EWS ``phot.dat``: ``HJD I sigma_I seeing sky`` (see the module docstring)."""
    return _columns_table(
        path, fmt="ogle", fixed_kind="mag", kind=None, names=("HJD", "I", "sigma_I"), name=name, band=band,
        time_format=time_format, zero_point=None, on_bad=on_bad,
    )


def read_kmtnet_pysis(path, *, name=None, band=None, time_format="auto", zero_point=None, on_bad="error"):
    """KMTNet pySIS: ``HJD' Δflux flux_err mag mag_err ...``; uses the difference flux."""
    return _columns_table(
        path, fmt="kmtnet-pysis", fixed_kind="flux", kind=None, names=("HJD'", "Δflux", "flux_err"),
        name=name, band=band or _kmt_band(path) or "I", time_format=time_format, zero_point=zero_point,
        on_bad=on_bad,
    )


def read_kmtnet_tlc(path, *, name=None, band=None, time_format="auto", on_bad="error"):
    """KMTNet TLC / pyDIA magnitudes: ``HJD' mag mag_err [seeing sky]``."""
    return _columns_table(
        path, fmt="kmtnet-tlc", fixed_kind="mag", kind=None, names=("HJD'", "mag", "mag_err"), name=name,
        band=band or _kmt_band(path) or "I", time_format=time_format, zero_point=None, on_bad=on_bad,
    )


def read_plain(path, *, name=None, band=None, time_format="auto", zero_point=None, kind=None, on_bad="error"):
    """``time mag err`` / ``time flux err`` tables, with or without a header (module docstring)."""
    return _columns_table(
        path, fmt="plain", fixed_kind=None, kind=kind, names=None, name=name, band=band,
        time_format=time_format, zero_point=zero_point, on_bad=on_bad,
    )


def _read_kmtnet_auto(path, *, name=None, band=None, time_format="auto", zero_point=None, kind=None,
                      on_bad="error"):
    """An auto-detected KMTNet file without a Δflux header: magnitudes or fluxes from ``kind``, the
    header or the values; reported as ``kmtnet-tlc`` (magnitudes) or ``kmtnet-pysis`` (fluxes)."""
    ds, info = _columns_table(
        path, fmt="kmtnet", fixed_kind=None, kind=kind, names=None, name=name,
        band=band or _kmt_band(path) or "I", time_format=time_format,
        zero_point=zero_point if kind != "mag" else None, on_bad=on_bad,
    )
    info["format"] = "kmtnet-tlc" if info["kind"] == "mag" else "kmtnet-pysis"
    return ds, info


# ----------------------------------------------------------------------------------------------
# IPAC tables


_KEYWORD = re.compile(r"^\\\s*([A-Za-z_][\w.-]*)\s*=\s*(.*)$")


def _band_from_filter(text: str | None) -> str | None:
    """``"I"``, ``"I (Johnson)"``, ``"Custom R (red wideband)"`` → the band letter; else the text."""
    if not text:
        return None
    m = re.search(r"(?<![A-Za-z])([UBVRIJHKZY])(?![A-Za-z])", text)
    return m.group(1) if m else text.strip()


def _ipac_cells(raw: str, pipes: list[int], ncol: int) -> list[str | None] | None:
    """A data row split on the header's ``|`` positions (fixed width): one cell per column, None
    where the row leaves a column empty; None if a value crosses a column border."""
    cells: list[str | None] = [None] * ncol
    for m in re.finditer(r"\S+", raw):
        a, b = m.start(), m.end() - 1
        k = max((i for i, p in enumerate(pipes) if p <= a), default=-1)
        if k < 0 or k >= ncol or b > pipes[k + 1] or cells[k] is not None:
            return None
        cells[k] = m.group(0)
    return cells


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
    default_band: str | None = None,
):
    """An IPAC table (``\\key = value`` / ``\\ comment`` lines, then ``|name|...|``, ``|type|``,
    optional ``|unit|`` and ``|null|`` lines, then data rows, whitespace-separated or fixed-width
    with empty cells).

    ``columns={"time": ..., "value": ..., "error": ...}`` names the columns to use (default: by
    name, see the module docstring); ``kind`` says whether the value is ``"mag"`` or ``"flux"``
    (default: from the column name; with both a flux and a magnitude column, the one with a value on
    every row, flux first). Null values (``null``, an empty cell, or the table's null line) are bad
    rows. ``band``: default the ``\\TIME_SERIES_DATA_FILTER`` keyword's band, else ``default_band``."""
    p, label, text = read_text(path)
    header_lines: list[tuple[int, str]] = []
    keywords: dict[str, str] = {}
    rows: list[tuple[int, str]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("\\"):
            m = _KEYWORD.match(line)
            if m and not rows:
                keywords[m.group(1).upper()] = m.group(2).strip().strip("\"'").strip()
            continue
        if line.startswith("|"):
            if rows:
                raise DataFormatError(f"{label}:{lineno}: a '|' header line after data rows")
            header_lines.append((lineno, raw.rstrip()))
            continue
        rows.append((lineno, raw.rstrip()))
    if not header_lines:
        raise DataFormatError(f"{label}: no IPAC header (a line '|name|name|...|' before the data)")

    def fields(raw: str) -> list[str]:
        return [c.strip() for c in raw.strip().strip("|").split("|")]

    names_line, names_raw = header_lines[0]
    names = fields(names_raw)
    ncol = len(names)
    pipes = [i for i, c in enumerate(names_raw) if c == "|"]
    for lineno, raw in header_lines[1:]:
        if len(fields(raw)) != ncol:
            raise DataFormatError(
                f"{label}:{lineno}: header line has {len(fields(raw))} fields, the names line "
                f"(line {names_line}) has {ncol}"
            )
    types = fields(header_lines[1][1]) if len(header_lines) > 1 else None
    nulls = {"null"}
    if len(header_lines) > 3:
        nulls |= {c.lower() for c in fields(header_lines[3][1]) if c}
    if not rows:
        raise DataFormatError(f"{label}: no data rows after the IPAC header")

    what = f" (the IPAC header names {ncol})"
    cells: list[tuple[int, list[str | None]]] = []
    fixed_width = len(pipes) == ncol + 1
    for lineno, raw in rows:
        toks: list[str | None] = list(raw.split())
        if len(toks) != ncol:
            by_pos = _ipac_cells(raw, pipes, ncol) if fixed_width and len(toks) < ncol else None
            if by_pos is None:
                raise DataFormatError(
                    f"{label}:{lineno}: expected {ncol} columns{what} (as on line {names_line}), "
                    f"found {len(toks)}"
                )
            toks = by_pos
        cells.append((lineno, toks))

    def n_null(j: int) -> int:
        return sum(1 for _, c in cells if c[j] is None or c[j].lower() in nulls)

    cols = dict(columns or {})
    unknown = set(cols) - {"time", "value", "error"}
    if unknown:
        raise ValueError(f"{label}: columns= takes keys time, value, error; got {sorted(unknown)}")

    def pick(role: str, cands) -> int:
        if role in cols:
            j = find_column(names, [cols[role]])
            if j is None:
                raise DataFormatError(
                    f"{label}:{names_line}: no column {cols[role]!r} (columns: {', '.join(names)})"
                )
            return j
        j = find_column(names, cands)
        if j is None:
            raise DataFormatError(
                f"{label}:{names_line}: no {role} column among {', '.join(names)} "
                f"(looked for {', '.join(cands)}); pass columns={{'{role}': NAME}}"
            )
        return j

    jt = pick("time", TIME_NAMES)
    if "value" in cols:
        jv = pick("value", ())
        kind = kind or ("mag" if "mag" in names[jv].lower() else "flux")
    elif kind is not None:
        jv = pick("value", FLUX_NAMES if kind == "flux" else MAG_NAMES)
    else:
        found = [(n_null(j), order, j, k) for order, (j, k) in enumerate(
            [(find_column(names, FLUX_NAMES), "flux"), (find_column(names, MAG_NAMES), "mag")]
        ) if j is not None]
        if not found:
            raise DataFormatError(
                f"{label}:{names_line}: no flux or magnitude column among "
                f"{', '.join(names)}; pass columns={{'value': NAME}} and kind"
            )
        _, _, jv, kind = min(found)
    je = pick("error", ERR_NAMES[kind])
    if types is not None:
        for j in (jt, jv, je):
            if types[j].lower() not in _NUMERIC_IPAC:
                raise DataFormatError(
                    f"{label}:{header_lines[1][0]}: column {names[j]!r} has IPAC type "
                    f"{types[j]!r}, not a number type"
                )
    used = [(jt, names[jt]), (jv, names[jv]), (je, names[je])]
    token_rows = [(ln, [("null" if c is None else c) for c in toks]) for ln, toks in cells]
    linenos, v = numeric_columns(token_rows, label, used, ncol=ncol, what=what, null_tokens=sorted(nulls))
    if band is None:
        band = _band_from_filter(keywords.get("TIME_SERIES_DATA_FILTER")) or default_band
    return finish(
        label,
        linenos,
        v[:, 0],
        v[:, 1],
        v[:, 2],
        kind=kind,
        kind_from=f"column {names[jv]!r}",
        name=name or default_name(p),
        band=band,
        time_format=time_format,
        time_header=names[jt],
        zero_point=zero_point,
        on_bad=on_bad,
        col_names=(names[jt], names[jv], names[je]),
        col_numbers=(jt + 1, jv + 1, je + 1),
        info={
            "format": fmt,
            "n_columns": ncol,
            "header": names,
            "ipac_types": types,
            "keywords": keywords,
            "telescope": keywords.get("TELESCOPE"),
        },
    )


def read_moa(path, *, name=None, band=None, time_format="auto", zero_point=None, on_bad="error"):
    """MOA (NASA Exoplanet Archive IPAC table): ``HJD`` and difference fluxes (``flux``/``flux_err``
    or ``Relative_Flux``/``Relative_Flux_Uncertainty``), in counts; band from the table's filter
    keyword, else ``R``."""
    return read_ipac(
        path, name=name, band=band, time_format=time_format, zero_point=zero_point, on_bad=on_bad,
        kind="flux", fmt="moa", default_band="R",
    )


_READERS = {
    "ogle": read_ogle,
    "kmtnet-pysis": read_kmtnet_pysis,
    "kmtnet-tlc": read_kmtnet_tlc,
    "moa": read_moa,
    "ipac": read_ipac,
    "plain": read_plain,
}
_FIXED_KIND = {"ogle": "mag", "kmtnet-tlc": "mag", "kmtnet-pysis": "flux", "moa": "flux"}


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
        name: dataset name (default: the file name without its data extensions).
        band: band label (default: the IPAC filter keyword, or per format: OGLE/KMTNet ``I``,
            MOA ``R``).
        time_format: ``"auto"`` or ``"HJD"``, ``"HJD'"``, ``"HJD-2400000"``, ``"MJD"``.
        zero_point: zero point of a flux column (rescaled to 22); default: kept as in the file.
        kind: ``"mag"``/``"flux"`` where the format does not fix it (default: the header's, or by
            value for a file without one).
        columns: ``ipac``: column names ``{"time", "value", "error"}``.
        on_bad: ``"error"`` (default) or ``"drop"`` (bad rows dropped and reported).
        return_info: also return the info dict (format, kind and how decided, time scale and how
            decided, dropped and reordered rows, ...).

    Raises:
        DataFormatError: naming the file, line and column of the first problem.
    """
    if format not in FORMATS:
        raise ValueError(f"{path}: format must be one of {', '.join(FORMATS)}, got {format!r}")
    if kind is not None and kind not in ("mag", "flux"):
        raise ValueError(f"{path}: kind must be 'mag' or 'flux', got {kind!r}")
    fmt = detect_format(path) if format == "auto" else format
    kwargs: dict = {"name": name, "time_format": time_format, "on_bad": on_bad, "band": band}
    fixed = _FIXED_KIND.get(fmt) if not (format == "auto" and fmt == "kmtnet-tlc") else None
    if fixed is not None and kind is not None and kind != fixed:
        raise ValueError(f"{path}: format {fmt!r} holds {fixed}; kind={kind!r} contradicts it")
    if zero_point is not None and (fixed == "mag" or kind == "mag"):
        raise ValueError(f"{path}: zero_point applies to flux files, not to the magnitude format {fmt!r}")
    if columns is not None and fmt != "ipac":
        raise ValueError(f"{path}: columns= applies to IPAC tables only (format {fmt!r})")
    if fmt == "kmtnet-tlc" and format == "auto":
        ds, info = _read_kmtnet_auto(path, zero_point=zero_point, kind=kind, **kwargs)
    else:
        if fmt in ("kmtnet-pysis", "moa", "ipac", "plain"):
            kwargs["zero_point"] = zero_point
        if fmt in ("ipac", "plain"):
            kwargs["kind"] = kind
        if fmt == "ipac":
            kwargs["columns"] = columns
        if fmt in ("ogle", "moa") and band is None:
            del kwargs["band"]  # the format's default
        ds, info = _READERS[fmt](path, **kwargs)
    if format == "auto":
        info["format_detected"] = True
    assert isinstance(ds, Dataset)
    if info["kind"] == "mag" and zero_point is not None:
        raise ValueError(f"{path}: zero_point applies to flux files; this one holds magnitudes")
    return (ds, info) if return_info else ds
