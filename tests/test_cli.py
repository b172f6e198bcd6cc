"""Command line: help texts, simulate end to end (in-process, to share the solver compile); the demo
command is tested in tests/test_demo.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mulens_sbi.cli import COMMANDS, main
from mulens_sbi.data.shards import read_simulation
from mulens_sbi.survey.spec import simulators_dir


def small_roman(tmp_path: Path) -> Path:
    text = (simulators_dir() / "roman.toml").read_text().replace("n_points = 2048", "n_points = 64")
    path = tmp_path / "roman_small.toml"
    path.write_text(text)
    return path


def test_help_via_console_entry_point(tmp_path):
    # python -m runs the same main() the console script calls; from another working directory
    r = subprocess.run(
        [sys.executable, "-m", "mulens_sbi.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    assert "usage: mulens-sbi" in r.stdout
    for cmd in ("simulate", "demo"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", [c.name for c in COMMANDS])
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: mulens-sbi {cmd}" in out and "--out" in out and "--overwrite" in out


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--survey", "roman", "--n", "0", "--out", "x"])
    assert exc.value.code == 2
    assert "expected a whole number >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])


def test_simulate_command(tmp_path, capsys):
    spec = str(small_roman(tmp_path))
    out = str(tmp_path / "sim")
    args = [
        "simulate",
        "--survey",
        spec,
        "--n",
        "10",
        "--out",
        out,
        "--seed",
        "3",
        "--shard-size",
        "4",
        "--batch-size",
        "8",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "wrote 10 light curves in 3 shards" in capsys.readouterr().out
    d = read_simulation(out)
    np.testing.assert_array_equal(d["index"], np.arange(10))
    # same command again: nothing to redo, same data
    assert main(args) == 0
    np.testing.assert_array_equal(read_simulation(out)["flux"], d["flux"])
    # another seed into the same folder: refused with a clear message, exit status 2
    assert main([*args[:7], "--seed", "4", *args[9:]]) == 2
    err = capsys.readouterr().err
    assert "mulens-sbi simulate: error:" in err and "--overwrite" in err
    # an unknown survey name lists the shipped ones
    assert main(["simulate", "--survey", "euclid", "--n", "1", "--out", str(tmp_path / "e")]) == 2
    assert "unknown survey 'euclid'" in capsys.readouterr().err
    # a broken spec file: file, line and column
    bad = tmp_path / "bad.toml"
    bad.write_text("[survey]\nname = roman\n")
    assert main(["simulate", "--survey", str(bad), "--n", "1", "--out", str(tmp_path / "b")]) == 2
    assert f"{bad}:2:8: TOML syntax error" in capsys.readouterr().err


