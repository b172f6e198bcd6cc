"""Event manifests (TOML and JSON): datasets with their formats, bands and use flags -> one Event;
every problem names the manifest and the dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mulens_sbi.readers import DataFormatError, load_event, read_dataset, read_manifest

DATA = Path(__file__).resolve().parents[1] / "data" / "readers"

TOML = """
name = "SIM-2020-BLG-0001"
[[datasets]]
file = "ogle_phot.dat"
format = "ogle"
name = "OGLE"
[[datasets]]
file = "KMTC01_I.pysis"
format = "kmtnet-pysis"
name = "KMTC01"
zero_point = 28.0
[[datasets]]
file = "KMTS01_I.tlc"
name = "KMTS01"
band = "I"
[[datasets]]
file = "moa_gb13.tbl"
format = "moa"
use = false
"""


@pytest.fixture
def folder(tmp_path):
    for name in ("ogle_phot.dat", "KMTC01_I.pysis", "KMTS01_I.tlc", "moa_gb13.tbl", "moa_null.tbl"):
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path


def test_toml_manifest(folder):
    (folder / "event.toml").write_text(TOML)
    ev, info = read_manifest(folder / "event.toml", return_info=True)
    assert ev.name == "SIM-2020-BLG-0001" and ev.names == ("OGLE", "KMTC01", "KMTS01")
    assert info["unused"] == ["moa_gb13"] and [d["use"] for d in info["datasets"]] == [
        True,
        True,
        True,
        False,
    ]
    # each dataset equals the direct read of its file with the same options
    direct = [
        read_dataset(folder / "ogle_phot.dat", "ogle"),
        read_dataset(folder / "KMTC01_I.pysis", "kmtnet-pysis", zero_point=28.0),
        read_dataset(folder / "KMTS01_I.tlc"),
    ]
    for a, b in zip(ev.datasets, direct, strict=True):
        np.testing.assert_array_equal(a.t, b.t)
        np.testing.assert_array_equal(a.flux, b.flux)
        np.testing.assert_array_equal(a.sigma, b.sigma)
    assert [d.band for d in ev.datasets] == ["I", "I", "I"]
    assert load_event(folder / "event.toml").names == ev.names


def test_json_manifest_same_event(folder):
    (folder / "event.toml").write_text(TOML)
    entries = [
        {"file": "ogle_phot.dat", "format": "ogle", "name": "OGLE"},
        {"file": "KMTC01_I.pysis", "format": "kmtnet-pysis", "name": "KMTC01", "zero_point": 28.0},
        {"file": "KMTS01_I.tlc", "name": "KMTS01", "band": "I"},
        {"file": "moa_gb13.tbl", "format": "moa", "use": False},
    ]
    (folder / "event.json").write_text(json.dumps({"name": "SIM-2020-BLG-0001", "datasets": entries}))
    a, b = read_manifest(folder / "event.toml"), read_manifest(folder / "event.json")
    assert a.names == b.names
    for da, db in zip(a.datasets, b.datasets, strict=True):
        np.testing.assert_array_equal(da.flux, db.flux)


def test_single_file_event(folder):
    ev = load_event(folder / "moa_gb13.tbl")
    assert ev.n_datasets == 1 and ev.name == "moa_gb13"


@pytest.mark.parametrize(
    "text, match",
    [
        ("", r"event.toml: the manifest is empty"),
        ("name = 'x'\n", r"needs a non-empty 'datasets' list"),
        (
            "[[datasets]]\nfile = 'ogle_phot.dat'\ncolour = 'red'\n",
            r"datasets\[1\]: unknown key\(s\) \['colour'\]",
        ),
        ("[[datasets]]\nfile = 'nope.dat'\n", r"datasets\[1\]: file 'nope.dat' not found"),
        ("[[datasets]]\nfile = 'ogle_phot.dat'\nuse = 'yes'\n", r"'use' must be true or false"),
        ("[[datasets]]\nfile = 'ogle_phot.dat'\nformat = 'fits'\n", r"format 'fits' is not one of"),
        (
            "[[datasets]]\nfile = 'ogle_phot.dat'\n[[datasets]]\nfile = 'ogle_phot.dat'\n",
            r"datasets\[2\]: dataset name 'ogle_phot' repeats datasets\[1\]",
        ),
        ("[[datasets]]\nfile = 'ogle_phot.dat'\nuse = false\n", r"no dataset has use = true"),
        ("[[datasets]\nfile = 'x'\n", r"not valid TOML"),
        ("[[datasets]]\nfile = 'moa_null.tbl'\nformat = 'moa'\n", r"moa_null.tbl:13: column 2 \(flux\)"),
    ],
)
def test_manifest_errors(folder, text, match):
    (folder / "event.toml").write_text(text)
    with pytest.raises((DataFormatError, FileNotFoundError), match=match):
        read_manifest(folder / "event.toml")


def test_bad_rows_dropped_through_the_manifest_are_reported(folder):
    (folder / "event.toml").write_text(
        "[[datasets]]\nfile = 'moa_null.tbl'\nformat = 'moa'\non_bad = 'drop'\n"
    )
    with pytest.warns(UserWarning, match="moa_null.tbl:13"):
        ev, info = read_manifest(folder / "event.toml", return_info=True)
    assert ev.datasets[0].n == 23 and len(info["datasets"][0]["dropped"]) == 1
    (folder / "bad.json").write_text('{"datasets": [\n{"file": 1,}]}')
    with pytest.raises(DataFormatError, match=r"bad.json:2: not valid JSON"):
        read_manifest(folder / "bad.json")
