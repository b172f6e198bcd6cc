"""Survey readers: every format read from a small file in that format, values checked against an
independent conversion of the file's own text, and every malformed file gets an error naming file,
line and column (tests/data/readers/, made by make_test_files.py there)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from mulens_sbi.readers import DataFormatError, detect_format, read_dataset

DATA = Path(__file__).resolve().parents[1] / "data" / "readers"
LN10_04 = 0.4 * math.log(10.0)


def columns(path, skip="#", usecols=(0, 1, 2)):
    """Independent parse: numeric columns of the non-comment lines, and their 1-based line numbers."""
    rows, lines = [], []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        s = line.strip()
        if not s or s[0] in skip:
            continue
        tok = s.replace(",", " ").split()
        try:
            rows.append([float(tok[j]) for j in usecols])
        except ValueError:
            continue  # a header line
        lines.append(i)
    return np.array(rows), lines


def mag_flux(m, e):
    f = 10.0 ** ((22.0 - m) / 2.5)
    return f, e * f * LN10_04


def test_ogle_phot_dat_full_hjd_magnitudes():
    ds, info = read_dataset(DATA / "ogle_phot.dat", "ogle", return_info=True)
    raw, lines = columns(DATA / "ogle_phot.dat")
    f, s = mag_flux(raw[:, 1], raw[:, 2])
    np.testing.assert_allclose(ds.t, raw[:, 0] - 2450000.0, atol=1e-9)
    np.testing.assert_allclose(ds.flux, f, rtol=1e-13)
    np.testing.assert_allclose(ds.sigma, s, rtol=1e-13)
    assert info["time_format"] == "HJD" and info["time_format_from"] == "by value"
    assert info["n_columns"] == 5 and info["lines"] == lines and info["dropped"] == []
    assert ds.band == "I" and ds.name == "ogle_phot"


def test_kmtnet_pysis_difference_flux_hjd_prime():
    p = DATA / "KMTC01_I.pysis"
    ds, info = read_dataset(p, "kmtnet-pysis", return_info=True)
    raw, _ = columns(p)
    np.testing.assert_allclose(ds.t, raw[:, 0], atol=1e-12)  # HJD' already
    np.testing.assert_array_equal(ds.flux, raw[:, 1])
    np.testing.assert_array_equal(ds.sigma, raw[:, 2])
    assert np.any(ds.flux < 0)  # difference fluxes below the reference stay negative
    assert info["time_format"] == "HJD'" and info["flux_scale"] == "instrumental"
    # a zero point rescales to 22: F_22 = F * 10^(-0.4 (zp - 22))
    ds28 = read_dataset(p, "kmtnet-pysis", zero_point=28.0)
    np.testing.assert_allclose(ds28.flux, raw[:, 1] * 10 ** (-0.4 * 6.0), rtol=1e-13)


def test_kmtnet_tlc_and_archive_ipac_magnitudes():
    ds = read_dataset(DATA / "KMTS01_I.tlc", "kmtnet-tlc")
    raw, _ = columns(DATA / "KMTS01_I.tlc")
    f, s = mag_flux(raw[:, 1], raw[:, 2])
    np.testing.assert_allclose(ds.t, raw[:, 0], atol=1e-12)
    np.testing.assert_allclose(ds.flux, f, rtol=1e-13)
    np.testing.assert_allclose(ds.sigma, s, rtol=1e-13)
    ds2, info = read_dataset(DATA / "archive_kmt.tbl", "ipac", return_info=True)
    raw2, _ = columns(DATA / "archive_kmt.tbl", skip="\\|")
    f2, s2 = mag_flux(raw2[:, 1], raw2[:, 2])
    np.testing.assert_allclose(ds2.t, raw2[:, 0], atol=1e-12)
    np.testing.assert_allclose(ds2.flux, f2, rtol=1e-13)
    np.testing.assert_allclose(ds2.sigma, s2, rtol=1e-13)
    assert info["kind"] == "mag" and info["time_format_from"] == "header 'HJD-2450000'"


def test_moa_ipac_table_full_hjd_flux():
    p = DATA / "moa_gb13.tbl"
    for fmt in ("moa", "ipac", "auto"):
        ds, info = read_dataset(p, fmt, return_info=True)
        raw, _ = columns(p, skip="\\|", usecols=(0, 1, 2))
        np.testing.assert_allclose(ds.t, raw[:, 0] - 2450000.0, atol=1e-9)
        np.testing.assert_array_equal(ds.flux, raw[:, 1])
        np.testing.assert_array_equal(ds.sigma, raw[:, 2])
        assert info["kind"] == "flux" and info["time_format"] == "HJD"
    assert ds.band is None  # generic ipac: no band unless given
    assert read_dataset(p, "moa").band == "R"
    # a column chosen by name: JD instead of HJD
    ds_jd = read_dataset(p, "ipac", columns={"time": "JD"})
    np.testing.assert_allclose(ds_jd.t, ds.t - 0.002, atol=1e-9)


def test_plain_csv_via_io_simple():
    ds, info = read_dataset(DATA / "plain.csv", return_info=True)
    raw, _ = columns(DATA / "plain.csv")
    f, s = mag_flux(raw[:, 1], raw[:, 2])
    np.testing.assert_allclose(ds.flux, f, rtol=1e-13)
    np.testing.assert_allclose(ds.sigma, s, rtol=1e-13)
    assert info["format"] == "plain" and info["format_detected"]


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("ogle_phot.dat", "ogle"),
        ("KMTC01_I.pysis", "kmtnet-pysis"),
        ("KMTS01_I.tlc", "kmtnet-tlc"),
        ("moa_gb13.tbl", "ipac"),
        ("archive_kmt.tbl", "ipac"),
        ("plain.csv", "plain"),
    ],
)
def test_detect_format(name, fmt):
    assert detect_format(DATA / name) == fmt


def line_of(path, predicate):
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if predicate(line):
            return i
    raise AssertionError("no such line")


def test_wrong_column_count():
    p = DATA / "ogle_wrong_columns.dat"
    with pytest.raises(DataFormatError, match=r"ogle_wrong_columns.dat:7: expected 5 columns .* found 4"):
        read_dataset(p, "ogle")
    p = DATA / "moa_wrong_columns.tbl"
    n = line_of(p, lambda s: s.strip().startswith("2") and len(s.split()) == 7)
    with pytest.raises(
        DataFormatError, match=rf"moa_wrong_columns.tbl:{n}: expected 8 columns \(the IPAC header"
    ):
        read_dataset(p, "moa")


def test_text_in_a_number():
    p = DATA / "ogle_text_in_number.dat"
    tok = Path(p).read_text().splitlines()[9].split()[1]
    with pytest.raises(
        DataFormatError, match=rf"ogle_text_in_number.dat:10: column 2 \(I\): '{tok}' is not a number"
    ):
        read_dataset(p, "ogle")


def test_empty_file():
    with pytest.raises(DataFormatError, match=r"empty.dat: .*empty"):
        read_dataset(DATA / "empty.dat")
    for fmt in ("ogle", "kmtnet-tlc", "kmtnet-pysis"):
        with pytest.raises(DataFormatError, match=r"empty.dat: no data rows"):
            read_dataset(DATA / "empty.dat", fmt)


def test_unsorted_and_duplicate_times():
    # rows out of order (as in public KMTNet files): sorted, with a warning naming the line
    with pytest.warns(
        UserWarning, match=r"ogle_unsorted.dat:13: column 1 \(time\): .* is earlier than the time on line 12"
    ):
        ds, info = read_dataset(DATA / "ogle_unsorted.dat", "ogle", return_info=True)
    raw, lines = columns(DATA / "ogle_unsorted.dat")
    order = np.argsort(raw[:, 0], kind="stable")
    np.testing.assert_allclose(ds.t, raw[order, 0] - 2450000.0, atol=1e-9)
    assert info["reordered"] == 1 and info["lines"] == [lines[i] for i in order]
    # a row repeated exactly is a bad row
    with pytest.raises(
        DataFormatError, match=r"ogle_duplicate.dat:16: column 1 \(time\): .* repeats the time on line 15"
    ):
        read_dataset(DATA / "ogle_duplicate.dat", "ogle")
    with pytest.warns(UserWarning, match=r"dropped 1 bad row\(s\): .*ogle_duplicate.dat:16"):
        assert read_dataset(DATA / "ogle_duplicate.dat", "ogle", on_bad="drop").n == 24


def test_bad_rows_error_or_dropped_with_report():
    p = DATA / "ogle_placeholder.dat"
    with pytest.raises(
        DataFormatError, match=r"ogle_placeholder.dat:5: column 2 \(I\): 99.999 is not a plausible"
    ):
        read_dataset(p, "ogle")
    with pytest.warns(UserWarning, match=r"dropped 1 bad row\(s\): .*ogle_placeholder.dat:5"):
        ds, info = read_dataset(p, "ogle", on_bad="drop", return_info=True)
    assert ds.n == 23 and info["n_rows"] == 24 and len(info["dropped"]) == 1
    assert 5 not in info["lines"]
    # NaN in a pySIS error column and a null in an IPAC flux column
    with pytest.raises(DataFormatError, match=r"KMTC01_I_nan.pysis:5: column 3 \(flux_err\): not a finite"):
        read_dataset(DATA / "KMTC01_I_nan.pysis", "kmtnet-pysis")
    with pytest.raises(DataFormatError, match=r"moa_null.tbl:13: column 2 \(flux\): not a finite"):
        read_dataset(DATA / "moa_null.tbl", "moa")
    with pytest.warns(UserWarning, match="moa_null.tbl:13"):
        assert read_dataset(DATA / "moa_null.tbl", "moa", on_bad="drop").n == 23


def test_other_refusals(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_dataset(tmp_path / "missing.dat", "ogle")
    with pytest.raises(ValueError, match="format must be one of"):
        read_dataset(DATA / "ogle_phot.dat", "ogle3")
    with pytest.raises(ValueError, match="zero_point applies to flux files"):
        read_dataset(DATA / "ogle_phot.dat", "ogle", zero_point=25.0)
    # too few rows after the header
    p = tmp_path / "short.pysis"
    p.write_text("# HJD Δflux flux_err mag mag_err\n9000.1 10 1 19 0.1\n9000.2 11 1 19 0.1\n")
    with pytest.raises(DataFormatError, match=r"short.pysis: only 2 usable data row"):
        read_dataset(p)
    # times on two scales in one file
    p = tmp_path / "mixed_phot.dat"
    p.write_text("2459000.1 19 0.01 1 1\n2459000.2 19 0.01 1 1\n9000.3 19 0.01 1 1\n")
    with pytest.raises(
        DataFormatError, match=r"mixed_phot.dat:3: column 1 \(time\): 9000.3 is on a different scale"
    ):
        read_dataset(p)
    # an IPAC table whose value column is text
    p = tmp_path / "t.tbl"
    p.write_text("|HJD|mag|mag_err|\n|double|char|double|\n 9000.1 a 0.1\n")
    with pytest.raises(DataFormatError, match=r"t.tbl:2: column 'mag' has IPAC type 'char'"):
        read_dataset(p)
    assert re.search("HJD", "HJD")
