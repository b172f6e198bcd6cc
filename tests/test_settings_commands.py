"""Settings as data for the inference commands: ``FitSettings`` (``fit``), ``CatalogSettings``
(``catalog``), ``DemoSettings`` (``demo``) and ``DegeneracySettings`` (``degeneracy``) validate on
construction, round-trip through TOML, and the commands read ``--settings FILE.toml`` with the flags
on top; a bad file is an error naming the file and the key. Nothing here fits an event (the replay
of a fit's own ``fit_settings.toml`` is in tests/test_fit.py)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from mulens_sbi import cli
from mulens_sbi.catalog import CatalogSettings
from mulens_sbi.degeneracy.command import DegeneracySettings
from mulens_sbi.demo import DemoSettings
from mulens_sbi.fit_settings import FitSettings, fit_settings
from mulens_sbi.inference.exact import ExactSettings
from mulens_sbi.settings_file import SettingsError, dump_settings, load_settings, settings_from_dict


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


CAT = {"input": "events", "out": "cat"}
DEG = {"samples": "samples.parquet", "out": "deg"}


@pytest.mark.parametrize(("cls", "base", "field", "value", "allowed"), [
    (FitSettings, {}, "n", 1, ">= 2"),
    (FitSettings, {}, "refine", "mcmc", "one of none, is, auto, exact, nuts"),
    (FitSettings, {}, "seed", -1, ">= 0"),
    (FitSettings, {}, "chunk_size", 0, ">= 1"),
    (FitSettings, {}, "nuts_chains", 0, ">= 1"),
    (FitSettings, {}, "kind", "counts", "None, mag or flux"),
    (FitSettings, {}, "time_format", "JD", "auto or one of HJD, HJD', HJD-2400000, MJD"),
    (FitSettings, {}, "degeneracy", "all", "one of off, modes, partner"),
    (FitSettings, {}, "restrict", ("q=0.01",), "NAME=LOW:HIGH items (--restrict 'q=0.01': expected"),
    (FitSettings, {}, "restrict", ("t_0=1:2",),
     "NAME=LOW:HIGH items (--restrict 't_0=1:2': parameter 't_0' cannot"),
    (CatalogSettings, CAT, "engine", "dask", "one of local, ray"),
    (CatalogSettings, CAT, "refine", "nuts", "one of is, auto, exact, none"),
    (CatalogSettings, CAT, "n_samples", 1, ">= 2"),
    (CatalogSettings, CAT, "shard_size", 0, ">= 1"),
    (CatalogSettings, CAT, "cpus_per_actor", 0.0, "> 0"),
    (CatalogSettings, CAT, "restrict", "q=:0.01,x=1:2", "comma-separated NAME=LOW:HIGH items"),
    (CatalogSettings, CAT, "input", "", "a non-empty path"),
    (DemoSettings, {"out": "o"}, "mode", "plot", "one of auto, fit, simulate"),
    (DemoSettings, {"out": "o"}, "n", 1, ">= 2"),
    (DemoSettings, {"out": "o"}, "seed", -3, ">= 0"),
    (DegeneracySettings, DEG, "max_modes", 0, ">= 1"),
    (DegeneracySettings, DEG, "min_weight", 1.0, "0 <= min_weight < 1"),
    (DegeneracySettings, DEG, "out", "", "a non-empty path"),
])
def test_settings_refuse_bad_values_naming_class_field_and_range(cls, base, field, value, allowed):
    msg = f"{cls.__name__}.{field}={value!r} is not allowed: {allowed}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        cls(**{**base, field: value})
    cls(**base)  # the defaults are valid


def test_the_exact_stage_settings_are_validated_inside_fit_settings(tmp_path):
    f = _write(tmp_path / "f.toml", "n = 100\n[exact]\ndf = 1.5\n")
    with pytest.raises(SettingsError, match=re.escape(f"{f}: ExactSettings.df=1.5 is not allowed: > 2 "
                                                      "(in table [exact])")):
        load_settings(f, FitSettings)


@pytest.mark.parametrize("obj", [
    FitSettings(),
    FitSettings(n=512, refine="is", seed=4, proposal_dataset="W149", kind="mag", time_format="HJD'",
                name="ev \"one\"", degeneracy="partner", restrict=("q=:0.01", "s=1.0:2.5"), progress=False,
                exact=ExactSettings(time_budget_s=30.0, rho_starts=(1e-3, 1e-2), finite="never")),
    CatalogSettings(**CAT, engine="ray", restrict="q=:0.01", num_actors=3,
                    ray_init={"num_cpus": 2, "x": "y"}),
    DemoSettings(out="demo", n=256, mode="fit"),
    DegeneracySettings(**DEG, data=("a.dat", "b.dat"), figures=False, min_weight=0.05),
])
def test_round_trip(obj, tmp_path):
    text = dump_settings(obj)
    back = load_settings(_write(tmp_path / "s.toml", text), type(obj))
    assert back == obj
    assert dump_settings(back) == text


def test_fit_settings_overrides_and_record():
    base = FitSettings(n=500, seed=3, restrict=("q=:0.01",))
    # keywords that are not None override; a restriction may be given as a mapping
    s = fit_settings(base, n=None, seed=7, restrict={"s": (1, None), "u_0": (None, 0.0)}, time_budget_s=None)
    assert (s.n, s.seed, s.restrict) == (500, 7, ("s=1.0:", "u_0=:0.0"))
    assert s.restrict_ranges == {"s": (1.0, None), "u_0": (None, 0.0)}
    assert fit_settings(None) == FitSettings() and fit_settings(base) is base
    assert fit_settings(base, time_budget_s=5.0).exact == ExactSettings(time_budget_s=5.0)
    with pytest.raises(ValueError, match=r"FitSettings.n=1 is not allowed: >= 2"):
        fit_settings(base, n=1)
    with pytest.raises(TypeError, match="must be a FitSettings"):
        fit_settings({"n": 3})
    # the summary's record (plain JSON values, nulls kept) reads back to the same settings
    assert settings_from_dict(FitSettings, s.to_dict()) == s


def test_fit_command_reads_settings_and_flags_override(tmp_path):
    st = FitSettings(n=777, refine="exact", seed=5, restrict=("q=:0.01",), kind="flux",
                     exact=ExactSettings(time_budget_s=90.0, n_starts=12))
    f = _write(tmp_path / "fit_settings.toml", dump_settings(st))
    got = cli.fit_settings(_parse("fit", "a.dat", "--out", "o", "--settings", str(f), "--refine", "is",
                                  "--time-budget", "20", "--restrict", "s=1:", "--no-progress"))
    assert got == dataclasses.replace(st, refine="is", restrict=("s=1:",), progress=False,
                                      exact=dataclasses.replace(st.exact, time_budget_s=20.0))
    # without a file: the flags on FitSettings' defaults (the documented defaults)
    assert cli.fit_settings(_parse("fit", "a.dat", "--out", "o")) == FitSettings()
    assert cli.fit_settings(_parse("fit", "a.dat", "--out", "o", "--n", "64", "--seed", "2")) == \
        FitSettings(n=64, seed=2)


def test_catalog_demo_degeneracy_commands_read_settings(tmp_path):
    cat = CatalogSettings(**CAT, n_samples=256, refine="auto", shard_size=8, restrict="q=:0.01")
    f = _write(tmp_path / "c.toml", dump_settings(cat))
    assert cli.catalog_settings(_parse("catalog", "--settings", str(f), "--seed", "3")) == \
        dataclasses.replace(cat, seed=3)
    assert cli.catalog_settings(_parse("catalog", "other", "--settings", str(f), "--restrict", "s=1:",
                                       "--restrict", "u_0=:0")) == \
        dataclasses.replace(cat, input="other", restrict="s=1:,u_0=:0")
    assert cli.catalog_settings(_parse("catalog", "in", "--out", "o")) == CatalogSettings(input="in", out="o")

    demo = DemoSettings(out="d", n=128, mode="simulate", seed=4)
    g = _write(tmp_path / "d.toml", dump_settings(demo))
    assert cli.demo_settings(_parse("demo", "--settings", str(g), "--overwrite")) == \
        dataclasses.replace(demo, overwrite=True)
    assert cli.demo_settings(_parse("demo", "--out", "x")) == DemoSettings(out="x")

    deg = DegeneracySettings(**DEG, data=("ev.dat",), max_modes=3)
    h = _write(tmp_path / "g.toml", dump_settings(deg))
    assert cli.degeneracy_settings(_parse("degeneracy", "--settings", str(h), "--no-figures")) == \
        dataclasses.replace(deg, figures=False)
    assert cli.degeneracy_settings(_parse("degeneracy", "s.csv", "--out", "o", "--data", "a", "b")) == \
        DegeneracySettings(samples="s.csv", out="o", data=("a", "b"))


@pytest.mark.parametrize(("argv", "text", "pattern"), [
    (["fit", "a.dat", "--out", "o"], "n = 100\nrefine = \"mcmc\"\n",
     r"FitSettings.refine='mcmc' is not allowed"),
    (["fit", "a.dat", "--out", "o"], "n = 100\n[exact]\ntime_budget = 5\n",
     r"unknown key 'exact.time_budget' \(ExactSettings has no field 'time_budget'"),
    (["fit", "a.dat", "--out", "o"], "n = \"many\"\n", r"key 'n' \(FitSettings.n\) must be a whole number"),
    (["catalog"], "input = \"in\"\nout = \"o\"\nengine = \"dask\"\n",
     r"CatalogSettings.engine='dask' is not allowed: one of local, ray"),
    (["catalog"], "out = \"o\"\n", r"missing key 'input' \(CatalogSettings.input has no default\)"),
    (["demo"], "out = \"o\"\nmode = \"plot\"\n", r"DemoSettings.mode='plot' is not allowed"),
    (["degeneracy"], "samples = \"s\"\nout = \"o\"\ndata = \"ev.dat\"\n",
     r"key 'data' \(DegeneracySettings.data\) must be an array"),
])
def test_bad_settings_file_exits_2_naming_file_and_key(argv, text, pattern, tmp_path, capsys):
    f = _write(tmp_path / "bad.toml", text)
    assert cli.main(argv + ["--settings", str(f)]) == 2
    err = capsys.readouterr().err
    assert re.search(re.escape(f"mulens-sbi {argv[0]}: error: {f}: ") + ".*" + pattern, err), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("argv", "missing"), [
    (["catalog", "--out", "o"], "INPUT"),
    (["catalog", "in"], "--out"),
    (["demo"], "--out"),
    (["degeneracy", "--out", "o"], "SAMPLES"),
])
def test_required_without_settings_exits_2(argv, missing, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert f"required (or give them in --settings): {missing}" in capsys.readouterr().err
