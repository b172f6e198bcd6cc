"""Every public format on a real file (tests/data/real/, sources in its README.md): read without
options, the rows and values checked against an independent parse of the file (numpy.loadtxt with
explicit columns, and the archive's own NUMBER_OF_POINTS), band and telescope names; the malformed
cases made from the real files; and ``mulens-sbi fit A B ...`` reading them without options."""

from __future__ import annotations

import math
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import mulens_sbi.fit as fit_module
from mulens_sbi.cli import main
from mulens_sbi.readers import DataFormatError, read_dataset, read_event

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
LN10_04 = 0.4 * math.log(10.0)

# file, format found, kind, offset subtracted from the file's times, band, telescope (IPAC keyword)
CASES = [
    ("MB08310/CTIO_I_0300089_PLC_005.tbl", "ipac", "mag", 2450000.0, "I", "SMARTS Telescope (1.3 m)"),
    ("MB08310/Danish_0300089_PLC_006.tbl", "ipac", "mag", 2450000.0, "I", "Danish Telescope (1.54 m)"),
    ("OB03235/OB03235_OGLE.tbl.txt", "ipac", "mag", 2450000.0, "I", "Warsaw University Telescope (1.3 m)"),
    ("OB03235/OB03235_MOA.tbl.txt", "ipac", "flux", 2450000.0, "R", "MOA"),
    ("KB180003/KMTS12_I.pysis", "kmtnet-pysis", "flux", 0.0, "I", None),
    ("KB180003/KMTA12_I.pysis", "kmtnet-pysis", "flux", 0.0, "I", None),
    ("OB161195/KSS42I.dat", "kmtnet-tlc", "mag", 0.0, "I", None),
    ("OB140939/ob140939_OGLE.dat", "ogle", "mag", 2450000.0, "I", None),
    ("OB140939/ob140939_Spitzer.dat", "plain", "mag", 2450000.0, None, None),
    ("OB05086/starBLG234.6.I.218982.dat", "plain", "mag", 0.0, None, None),
    ("OB08092/phot_ob08092_O4.dat", "plain", "mag", 0.0, None, None),
]


def independent(path: Path) -> np.ndarray:
    """(time, value, error) of every data row, by numpy alone: IPAC keyword/header lines and '#'
    comments skipped, the first three whitespace columns (every file here writes its time, value and
    error first)."""
    return np.loadtxt(path, comments=("#", "\\", "|"), usecols=(0, 1, 2), ndmin=2)


def ipac_keyword(path: Path, key: str) -> str | None:
    m = re.search(rf'^\\{key}\s*=\s*"([^"]*)"', path.read_text(), re.M)
    return m.group(1) if m else None


def read_quietly(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds, info = read_dataset(path, return_info=True, **kw)
    return ds, info, [str(w.message) for w in caught]


@pytest.mark.parametrize("rel, fmt, kind, offset, band, telescope", CASES, ids=[c[0] for c in CASES])
def test_real_file_read_without_options(rel, fmt, kind, offset, band, telescope):
    path = REAL / rel
    ds, info, caught = read_quietly(path)
    raw = independent(path)
    assert info["format"] == fmt and info["kind"] == kind
    assert info["offset"] == offset
    assert ds.n == raw.shape[0] == info["n_rows"] and info["dropped"] == []
    n_archive = ipac_keyword(path, "NUMBER_OF_POINTS")
    if n_archive is not None:
        assert ds.n == int(n_archive)
    # the reader sorts rows out of time order (reported); compare in time order
    order = np.argsort(raw[:, 0], kind="stable")
    t, v, e = raw[order].T
    assert info["reordered"] == int(np.sum(np.diff(raw[:, 0]) < 0))
    assert (info["reordered"] > 0) == any("rows sorted by time" in m for m in caught)
    np.testing.assert_allclose(ds.t, t - offset, rtol=0, atol=1e-9)
    if kind == "mag":
        f = 10.0 ** (-0.4 * (v - 22.0))
        np.testing.assert_allclose(ds.flux, f, rtol=1e-12)
        np.testing.assert_allclose(ds.sigma, f * e * LN10_04, rtol=1e-12)
    else:
        np.testing.assert_array_equal(ds.flux, v)
        np.testing.assert_array_equal(ds.sigma, e)
    # first and last rows of the file, as written
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and ln.strip()[0] not in "#\\|"]
    first, last = (np.array(ln.split()[:3], float) for ln in (lines[0], lines[-1]))
    for row in (first, last):
        k = int(np.flatnonzero((raw[:, 0] == row[0]) & (raw[:, 1] == row[1]))[0])
        j = int(np.flatnonzero(order == k)[0])
        assert ds.t[j] == pytest.approx(row[0] - offset, abs=1e-9)
        expect = 10.0 ** (-0.4 * (row[1] - 22.0)) if kind == "mag" else row[1]
        assert ds.flux[j] == pytest.approx(expect, rel=1e-12)
    assert ds.band == band and info.get("telescope") == telescope
    assert ds.name == path.name.split(".tbl")[0].removesuffix(path.suffix)


def test_real_files_details():
    # the archive's magnitude tables carry an empty RELATIVE_FLUX column: read fixed-width
    _, info, _ = read_quietly(REAL / "MB08310/CTIO_I_0300089_PLC_005.tbl")
    assert info["header"] == ["JD", "RELATIVE_MAGNITUDE", "MAGNITUDE_UNCERTAINTY", "RELATIVE_FLUX",
                              "FLUX_UNCERTAINTY"]
    assert info["kind_from"] == "column 'RELATIVE_MAGNITUDE'" and info["time_format_from"] == "by value"
    assert info["keywords"]["TIME_REFERENCE_FRAME"] == "Heliocentric JD"
    # two measurements at the same time (Danish, line 26) are both kept
    ds, info, _ = read_quietly(REAL / "MB08310/Danish_0300089_PLC_006.tbl")
    assert info["repeated_times"] == 1 and ds.n == 51
    # the MOA table's difference fluxes (Relative_Flux, counts) go negative
    ds, info, _ = read_quietly(REAL / "OB03235/OB03235_MOA.tbl.txt")
    assert info["kind_from"] == "column 'Relative_Flux'" and ds.flux.min() < 0
    assert info["flux_scale"] == "instrumental"
    # KMTNet pySIS: '\Delta_flux' header, HJD' with 8000+ values; KMTA12 has one row out of order
    ds, info, caught = read_quietly(REAL / "KB180003/KMTA12_I.pysis")
    assert info["time_format"] == "HJD'" and 8100 < ds.t[0] < 8400 and info["reordered"] == 1
    assert re.search(r"KMTA12_I.pysis:183: column 1 \(time\): 8275.93535 is earlier than the time on "
                     r"line 182", caught[0])
    # headerless magnitudes decided by value
    for rel in ("OB161195/KSS42I.dat", "OB05086/starBLG234.6.I.218982.dat", "OB140939/ob140939_Spitzer.dat"):
        assert read_quietly(REAL / rel)[1]["kind_from"].startswith("by value")


def test_read_event_folders_and_files():
    ev = read_event([REAL / "MB08310", REAL / "OB03235"])
    assert ev.name == "MB08310"
    assert ev.names == ("CTIO_I_0300089_PLC_005", "Danish_0300089_PLC_006", "OB03235_MOA", "OB03235_OGLE")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ev = read_event(sorted((REAL / "KB180003").iterdir()) + [REAL / "OB161195/KSS42I.dat"], name="mixed")
    assert ev.names == ("KMTA12_I", "KMTS12_I", "KSS42I") and ev.name == "mixed"


# ------------------------------------------------------------------------------------------------
# malformed versions of the real files


def copy_edit(tmp_path, rel, edit):
    """Copy a real file, let ``edit(lines)`` change its lines; returns (path, edited line number)."""
    lines = (REAL / rel).read_text().splitlines()
    n = edit(lines)
    p = tmp_path / Path(rel).name
    p.write_text("\n".join(lines) + "\n")
    return p, n


def test_truncated_rows(tmp_path):
    def cut(lines, k=100):
        lines[k - 1] = " ".join(lines[k - 1].split()[:2])
        return k

    p, n = copy_edit(tmp_path, "OB161195/KSS42I.dat", cut)
    with pytest.raises(DataFormatError, match=rf"KSS42I.dat:{n}: expected 3 columns .* found 2"):
        read_dataset(p)
    # a fixed-width IPAC row that ends early: its error cell is empty, a bad row naming the column
    def end_early(lines, k=40):
        lines[k - 1] = lines[k - 1][: list(re.finditer(r"\S+", lines[k - 1]))[1].end()]
        return k

    p, n = copy_edit(tmp_path, "OB03235/OB03235_OGLE.tbl.txt", end_early)
    with pytest.raises(
        DataFormatError, match=rf"OB03235_OGLE.tbl.txt:{n}: column 3 \(MAGNITUDE_UNCERTAINTY\): not a finite"
    ):
        read_dataset(p)
    # a row with a value written across the column borders: the column count is wrong
    p, n = copy_edit(tmp_path, "MB08310/CTIO_I_0300089_PLC_005.tbl",
                     lambda lines: (lines.__setitem__(29, "2454656.4870 13.8 0.003 1 2 3"), 30)[1])
    with pytest.raises(DataFormatError, match=rf"CTIO_I_0300089_PLC_005.tbl:{n}: expected 5 columns"):
        read_dataset(p)


def test_non_numeric_cells(tmp_path):
    def garble(lines, k=50, col=1):
        toks = lines[k - 1].split()
        toks[col] = toks[col][:2] + "x" + toks[col][2:]
        lines[k - 1] = " ".join(toks)
        return k

    p, n = copy_edit(tmp_path, "OB140939/ob140939_OGLE.dat", garble)
    with pytest.raises(DataFormatError, match=rf"ob140939_OGLE.dat:{n}: column 2 \(I\): '15x\.\d+' is not a"):
        read_dataset(p)
    p, n = copy_edit(tmp_path, "OB03235/OB03235_MOA.tbl.txt", lambda lines: garble(lines, 200, 2))
    with pytest.raises(
        DataFormatError, match=rf"OB03235_MOA.tbl.txt:{n}: column 3 \(Relative_Flux_Uncertainty\): '.*x.*'"
    ):
        read_dataset(p)
    p, n = copy_edit(tmp_path, "KB180003/KMTS12_I.pysis", lambda lines: garble(lines, 10, 0))
    with pytest.raises(DataFormatError, match=rf"KMTS12_I.pysis:{n}: column 1 \(HJD'\): '.*x.*' is not a"):
        read_dataset(p)


def test_ambiguous_headerless_file(tmp_path):
    """KSS42I.dat written as zero-point-22 fluxes (20 at baseline, errors 3-7%): the numbers could be
    magnitudes, so the reader refuses and names the option; with it, the same dataset as the magnitudes."""
    raw = independent(REAL / "OB161195/KSS42I.dat")
    f = 10.0 ** (-0.4 * (raw[:, 1] - 22.0))
    p = tmp_path / "KSS42I_flux.txt"
    np.savetxt(p, np.column_stack([raw[:, 0], f, f * raw[:, 2] * LN10_04]), fmt="%.6f")
    with pytest.raises(DataFormatError, match=r"KSS42I_flux.txt:1: column 2: cannot tell magnitudes from "
                                              r"fluxes.*kind='flux' \(--kind on the command line\)"):
        read_dataset(p)
    ds_mag = read_dataset(REAL / "OB161195/KSS42I.dat")
    ds = read_dataset(p, kind="flux")
    np.testing.assert_allclose(ds.flux, ds_mag.flux, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# mulens-sbi fit reads the public files without options


class _Stop(Exception):
    pass


@pytest.fixture
def fit_reads(monkeypatch):
    """Run ``mulens-sbi fit`` up to the model: record the Event the command's reader built, then stop
    (the inference itself is tested elsewhere)."""
    seen = []
    real_as_event = fit_module.as_event

    def recording(*args, **kwargs):
        ev = real_as_event(*args, **kwargs)
        seen.append(ev)
        return ev

    def stop(_model):
        raise _Stop

    monkeypatch.setattr(fit_module, "as_event", recording)
    monkeypatch.setattr(fit_module, "_load_model", stop)
    return seen


def test_cli_fit_reads_public_files(tmp_path, fit_reads):
    files = [REAL / "OB03235/OB03235_OGLE.tbl.txt", REAL / "OB03235/OB03235_MOA.tbl.txt"]
    with pytest.raises(_Stop):
        main(["fit", *map(str, files), "--model", "kmtnet", "--out", str(tmp_path / "a"), "--refine", "none"])
    ev = fit_reads[-1]
    assert ev.names == ("OB03235_OGLE", "OB03235_MOA") and ev.n_points == 285 + 1250
    assert ev.time_range() == pytest.approx((1647.138264, 3315.51341))  # HJD', MOA from 2000, OGLE to 2004
    # KMTNet: pySIS and headerless .dat, and a folder of IPAC tables
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(_Stop):
            main(["fit", str(REAL / "KB180003/KMTS12_I.pysis"), str(REAL / "OB161195/KSS42I.dat"),
                  "--out", str(tmp_path / "b"), "--refine", "none"])
    assert fit_reads[-1].names == ("KMTS12_I", "KSS42I") and fit_reads[-1].n_points == 37 + 712
    with pytest.raises(_Stop):
        main(["fit", str(REAL / "MB08310"), "--out", str(tmp_path / "c"), "--refine", "none"])
    assert fit_reads[-1].n_datasets == 2 and fit_reads[-1].name == "MB08310"


def test_cli_fit_ambiguous_file_names_the_option(tmp_path, capsys):
    shutil.copy(REAL / "OB08092/phot_ob08092_O4.dat", tmp_path / "ok.dat")
    p = tmp_path / "amb.dat"
    p.write_text("9000.1 19.0 0.5\n9000.2 19.1 0.5\n9000.3 19.0 0.5\n")
    assert main(["fit", str(tmp_path / "ok.dat"), str(p), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "amb.dat:1: column 2: cannot tell magnitudes from fluxes" in err and "--kind" in err
