"""Plain tables (``time mag err`` / ``time flux err``, with or without a header) through the one reader:
values against independent conversions, every malformed input names file+line, and the former
``mulens_sbi.io_simple`` names are the readers' functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mulens_sbi.io_simple as io_simple
from mulens_sbi.readers import DataFormatError, read_event
from mulens_sbi.readers import read_dataset as read_table


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
        ("# t mag err\n1 19 0.01\n2 19 0.01\n3 nan 0.01\n", 4, "column 2 (mag): not a finite number"),
        ("# t mag err\n1 19 0.01\n2 19 0.01\n2 19 0.01\n", 4, "repeats the time on line 3 with the same"),
        ("# t mag err\n1 19 0.01\n2 19 0.01 8\n3 19 0.01\n", 3, "expected 3 columns"),
        ("# t mag err\n1 19 0.01\n2 19\n3 19 0.01\n", 3, "expected 3 columns"),
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
        ("", "the file is empty"),
        ("# only a comment\n\n", "no data rows"),
        ("# t mag err\n1 19 0.01\n2 19 0.01\n", "only 2 usable data row(s)"),
        # values that are magnitudes or zero-point-22 fluxes alike, errors 2.6% of the value
        ("1 19 0.5\n2 19.1 0.5\n3 19 0.5\n", ":1: column 2: cannot tell magnitudes from fluxes"),
        # most values look like magnitudes, some do not
        ("1 19 0.01\n2 19.1 0.01\n3 19 0.01\n4 50 0.01\n", "line 4, 50.0"),
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
    with pytest.raises(DataFormatError, match="event_dir: is a folder"):
        read_table(tmp_path / "event_dir")
    with pytest.raises(DataFormatError, match="event_dir: is a folder with no data files"):
        read_event(tmp_path / "event_dir")
    with pytest.raises(DataFormatError, match="not a text file"):
        read_table(write_bytes(tmp_path, b"\xff\xfe\x00\x81 binary"))


def write_bytes(tmp_path, data):
    p = tmp_path / "bin.dat"
    p.write_bytes(data)
    return p


def test_unsorted_rows_are_sorted_and_reported(tmp_path):
    p = write(tmp_path, "# t mag err\n1 19 0.01\n3 19.2 0.01\n2 19.1 0.01\n4 19 0.01\n")
    with pytest.warns(UserWarning, match=r"data.dat:4: column 1 \(time\): 2.0 is earlier than the time on"):
        ds, info = read_table(p, return_info=True)
    np.testing.assert_array_equal(ds.t, [1, 2, 3, 4])
    np.testing.assert_allclose(ds.flux, 10 ** (-0.4 * (np.array([19, 19.1, 19.2, 19]) - 22)), rtol=1e-13)
    assert info["reordered"] == 1 and info["lines"] == [2, 4, 3, 5]
    # two different measurements at the same time are kept (and counted)
    ds2, info2 = read_table(write(tmp_path, "# t mag err\n1 19 0.01\n2 19 0.01\n2 19.1 0.02\n", "r.dat"),
                            return_info=True)
    assert ds2.n == 3 and info2["repeated_times"] == 1 and info2["reordered"] == 0


def test_kind_by_value(tmp_path):
    mags = "1 19 0.01\n2 18.5 0.01\n3 19 0.02\n"
    ds, info = read_table(write(tmp_path, mags, "m.dat"), return_info=True)
    assert info["kind"] == "mag" and info["kind_from"].startswith("by value")
    fluxes = "1 -12.5 3\n2 240 4\n3 30 3\n"  # difference fluxes: negative and beyond any magnitude
    ds, info = read_table(write(tmp_path, fluxes, "f.dat"), return_info=True)
    assert info["kind"] == "flux" and ds.flux[0] == -12.5
    normalised = "1 1.00 0.01\n2 1.52 0.01\n3 1.01 0.01\n"
    assert read_table(write(tmp_path, normalised, "n.dat"), return_info=True)[1]["kind"] == "flux"
    # the option decides an ambiguous file
    amb = write(tmp_path, "1 19 0.5\n2 19.1 0.5\n3 19 0.5\n", "a.dat")
    assert read_table(amb, kind="flux").flux[1] == 19.1


def test_io_simple_names_are_the_readers():
    import mulens_sbi.readers as readers

    assert io_simple.read_table is readers.read_dataset and io_simple.read_event is readers.read_event
    assert io_simple.DataFormatError is readers.DataFormatError
