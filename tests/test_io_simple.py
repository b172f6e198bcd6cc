"""Plain-table reader: values against independent conversions, and every malformed input names file+line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mulens_sbi.io_simple import DataFormatError, read_event, read_table


def write(tmp_path, text, name="data.dat"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD_MAG = """# HJD mag err
2459000.10 19.50 0.010
2459000.20 19.40 0.012
2459000.30 19.30 0.011
2459000.40 19.45 0.020
"""


def test_magnitudes_full_hjd(tmp_path):
    ds, info = read_table(write(tmp_path, GOOD_MAG), return_info=True)
    # independent: zero point 22 by hand, sigma by the derivative of 10^(-0.4(m-22))
    m = np.array([19.5, 19.4, 19.3, 19.45])
    e = np.array([0.010, 0.012, 0.011, 0.020])
    f_ref = np.array([10 ** (-0.4 * (mi - 22.0)) for mi in m])
    np.testing.assert_allclose(ds.flux, f_ref, rtol=1e-13)
    np.testing.assert_allclose(ds.sigma, f_ref * e * math.log(10) / 2.5, rtol=1e-13)
    np.testing.assert_allclose(ds.t, [9000.10, 9000.20, 9000.30, 9000.40], atol=1e-9)
    assert info["kind"] == "mag" and info["time_format"] == "HJD" and info["time_format_from"] == "by value"
    assert ds.name == "data"


def test_flux_csv_header_and_time_scales(tmp_path):
    csv = "t,flux,flux_err,seeing\n9000.1,5.0,0.1,1.1\n9000.2,6.0,0.1,1.2\n9000.3,5.5,0.2,0.9\n"
    p = write(tmp_path, csv)
    ds, info = read_table(p, return_info=True)
    np.testing.assert_array_equal(ds.flux, [5.0, 6.0, 5.5])
    assert info["time_format"] == "HJD'" and info["ignored_columns"] == [4] and info["delimiter"] == "comma"
    # another zero point: F_22 = F * 10^(-0.4 (zp - 22)); zp 27.4 (pyLIMA) -> divide by 10^2.16
    ds2 = read_table(p, zero_point=27.4)
    np.testing.assert_allclose(ds2.flux, np.array([5.0, 6.0, 5.5]) / 10**2.16, rtol=1e-13)
    # HJD - 2400000 by value, and MJD by header name (MJD = JD - 2400000.5)
    rjd = "# t mag err\n59000.1 19 0.01\n59000.2 19 0.01\n59000.3 19 0.01\n"
    ds3 = read_table(write(tmp_path, rjd, "b.dat"))
    np.testing.assert_allclose(ds3.t, [9000.1, 9000.2, 9000.3], atol=1e-9)
    mjd = "# MJD mag err\n58999.6 19 0.01\n58999.7 19 0.01\n58999.8 19 0.01\n"
    ds4 = read_table(write(tmp_path, mjd, "c.dat"))
    np.testing.assert_allclose(ds4.t, [9000.1, 9000.2, 9000.3], atol=1e-9)
    ds5 = read_table(write(tmp_path, "1 19 0.01\n2 19 0.01\n3 19 0.01\n", "d.dat"), kind="mag",
                     time_format="HJD-2400000")
    np.testing.assert_allclose(ds5.t, [-49999, -49998, -49997])


def test_read_event_several_files(tmp_path):
    a = write(tmp_path, GOOD_MAG, "a.dat")
    b = write(tmp_path / "", GOOD_MAG.replace("19.", "18."), "b.dat")
    ev = read_event([a, b])
    assert ev.names == ("a", "b") and ev.n_points == 8


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("# t mag err\n1 19 0.01\n2 19 0.01 7\n3 19 0.01\n", 3, "expected 3 columns"),
        ("# t mag err\n1 19 0.01\n2 19.x 0.01\n3 19 0.01\n", 3, "column 2 (mag): '19.x' is not a number"),
        ("# t mag err\n1 19 0.01\n2 19 0.01\n3 nan 0.01\n", 4, "column 2 (mag): value 'nan' is not finite"),
        ("# t mag err\n1 19 0.01\n3 19 0.01\n2 19 0.01\n", 4, "is earlier than the time on line 3"),
        ("# t mag err\n1 19 0.01\n2 19 0.01\n2 19 0.01\n", 4, "duplicates the time on line 3"),
        ("# t mag err\n1 19 0.01\n2 19 0\n3 19 0.01\n", 3, "uncertainty must be > 0"),
        ("# t mag err\n1 19 0.01\n2 1900 0.01\n3 19 0.01\n", 3, "not a plausible magnitude"),
        ("1 19\n2 19\n3 19\n", 1, "expected at least 3 columns"),
        ("# t mag err\n2459000.1 19 0.01\n9000.2 19 0.01\n9000.3 19 0.01\n", 3, "different scale"),
        ("# t mag err\n1e6 19 0.01\n1.1e6 19 0.01\n1.2e6 19 0.01\n", 2, "none of the recognised ranges"),
        ("time,mag,err\n1,19,0.01,5\n", 1, "header names 3 columns"),
    ],
)
def test_malformed_inputs_name_file_and_line(tmp_path, text, line, fragment):
    p = write(tmp_path, text)
    with pytest.raises(DataFormatError) as exc:
        read_table(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:{line}:"), msg
    assert fragment in msg, msg


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "no data rows"),
        ("# only a comment\n\n", "no data rows"),
        ("# t mag err\n1 19 0.01\n2 19 0.01\n", "only 2 data row(s)"),
        ("1 19 0.01\n2 19 0.01\n3 19 0.01\n", "cannot tell magnitudes from fluxes"),
    ],
)
def test_empty_short_or_ambiguous_files(tmp_path, text, fragment):
    p = write(tmp_path, text)
    with pytest.raises(DataFormatError) as exc:
        read_table(p)
    assert str(exc.value).startswith(f"{p}:") and fragment in str(exc.value)


def test_argument_errors(tmp_path):
    p = write(tmp_path, GOOD_MAG)
    with pytest.raises(DataFormatError, match="says 'mag' but kind='flux'"):
        read_table(p, kind="flux")
    with pytest.raises(ValueError, match="time_format must be"):
        read_table(p, time_format="BJD")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_table(tmp_path / "missing.dat")
    (tmp_path / "event_dir").mkdir()
    with pytest.raises(DataFormatError, match="event_dir: is a folder; give the photometry files in it"):
        read_table(tmp_path / "event_dir")
    with pytest.raises(DataFormatError, match="not a text file"):
        read_table(write_bytes(tmp_path, b"\xff\xfe\x00\x81 binary"))


def write_bytes(tmp_path, data):
    p = tmp_path / "bin.dat"
    p.write_bytes(data)
    return p
