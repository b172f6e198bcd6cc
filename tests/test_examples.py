"""examples/: the numbered scripts run as a user runs them (a subprocess, ``--quick``) and write what
they say; examples/README.md lists every one of them.

The runs take half a minute to a minute and a half each on 2 cores (compilation, the shipped model)
and are ``slow``; the fast set only checks that each script imports and parses its options."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mulens_sbi.catalog import CatalogSettings, read_catalog
from mulens_sbi.fit import FIT_FILES, FitSettings
from mulens_sbi.settings_file import load_settings
from mulens_sbi.simulate import SimulateSettings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = ("01_fit_one_event.py", "02_catalog.py", "03_degeneracy_study.py")
NAMES = ("t_0", "u_0", "t_E", "s", "q", "alpha")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name[:2]}", EXAMPLES / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_numbered_example_is_listed_and_parses_its_options():
    found = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert found == list(SCRIPTS)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for name in (*SCRIPTS, "degeneracy.ipynb"):
        assert f"`{name}`" in readme, name
    for name in SCRIPTS:
        mod = _load(name)
        args = mod.parse_args(["out_dir", "--quick"])
        assert args.out == "out_dir" and args.quick
        with pytest.raises(SystemExit) as exc:
            mod.parse_args(["--no-such-option"])
        assert exc.value.code == 2


def _run(name: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                       cwd=cwd, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow
def test_01_fit_one_event(tmp_path):
    out = tmp_path / "fit"
    stdout = _run("01_fit_one_event.py", str(out), "--quick", cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "roman" and summary["method"] == "is" and summary["n_requested"] == 1024
    assert summary["status"] in ("ok", "caution", "fail") and set(summary["parameters"]) == set(NAMES)
    for f in FIT_FILES:  # --quick writes no figures
        assert (out / f).is_file() == (not f.endswith(".png")), f
    assert load_settings(out / "fit_settings.toml", FitSettings) == FitSettings(n=1024, refine="is",
                                                                                progress=False)
    truth = json.loads((EXAMPLES / "events" / "roman_example" / "truth.json").read_text())["parameters"]
    for k in NAMES:  # one printed row per parameter: truth, then the summary's median
        m = re.search(rf"^\s*{k}\s+(\S+)\s+(\S+)\s+\[", stdout, re.M)
        assert m, (k, stdout)
        assert float(m.group(1)) == pytest.approx(truth[k], rel=1e-5)
        assert float(m.group(2)) == pytest.approx(summary["parameters"][k]["median"], rel=1e-5)


@pytest.mark.slow
def test_02_catalog(tmp_path):
    out = tmp_path / "cat"
    _run("02_catalog.py", str(out), "--quick", cwd=tmp_path)
    sim = load_settings(out / "simulate_settings.toml", SimulateSettings)
    cat = load_settings(out / "catalog_settings.toml", CatalogSettings)
    assert (sim.n, cat.n_samples, cat.refine, cat.input) == (4, 256, "is", sim.out)
    rows = read_catalog(cat.out).to_pylist()
    assert [r["event"] for r in rows] == ["0", "1", "2", "3"]
    result = json.loads((out / "truth_vs_catalog.json").read_text())
    assert result["catalog"]["n_events"] == 4 and len(result["events"]) == 4
    from mulens_sbi.data.shards import read_simulation

    truth = read_simulation(sim.out)
    for r, e in zip(rows, result["events"], strict=True):
        assert e["t_E_true"] == pytest.approx(float(truth["t_E"][int(r["event"])]))
        if r["status"] != "error":
            assert e["t_E_in_95"] == (r["t_E_lo95"] <= e["t_E_true"] <= r["t_E_hi95"])


@pytest.mark.slow
def test_03_degeneracy_study(tmp_path):
    """One offset with the partner search from the truth: the relation's partner is viable in the
    Roman data (|Δχ²| < 10) and the search lands within 3% of s_A."""
    out = tmp_path / "deg"
    _run("03_degeneracy_study.py", str(out), "--quick", "--offsets", "1.5", "--partner", cwd=tmp_path)
    study = json.loads((out / "study.json").read_text())
    (row,) = study["rows"]
    assert row["offset_K"] == 1.5 and row["s_A"] > study["s_B"]
    assert abs(row["delta_chi2_A_vs_B"]) < 10 < row["delta_chi2_single_lens_vs_B"]
    ps = row["partner_search"]
    assert ps["found"] and abs(ps["delta_chi2"]) < 10, ps
    assert abs(ps["s_partner"] / row["s_A"] - 1) < 0.03
    assert (out / "offset_1.5" / "report.json").is_file()
    assert "| 1.5 |" in (out / "study.md").read_text()
