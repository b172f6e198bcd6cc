"""Settings as data: validation on construction, TOML files (mulens_sbi.settings_file), the commands'
``--settings`` flag, the shipped models' stored settings replayed, the code's commit in provenance."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from mulens_sbi import cli
from mulens_sbi.npe import checkpoint
from mulens_sbi.npe.config import NPEConfig
from mulens_sbi.settings_file import SettingsError, dump_settings, load_settings, settings_from_dict
from mulens_sbi.simulate import SimulateSettings
from mulens_sbi.training import NETWORKS, TrainSettings
from mulens_sbi.validation import ValidateSettings

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _fine() -> TrainSettings:
    pre, emb, flow = NETWORKS["fine"]
    s = TrainSettings(data="sim", out="model", preprocess=pre, embedding=emb, flow=flow, enrich="cross",
                      checkpoint_dir="ck", sampler="device", budget_minutes=62.5, stream_rows=1000)
    return dataclasses.replace(s, train=dataclasses.replace(s.train, learning_rate=3e-5, seed=11))


# ----------------------------------------------------------------------------------------------
# validation on construction


@pytest.mark.parametrize(("cls", "base", "field", "value", "allowed"), [
    (TrainSettings, {"data": "d", "out": "o"}, "holdout_shards", -1, ">= 0"),
    (TrainSettings, {"data": "d", "out": "o"}, "enrich_fraction", 1.0, "0 < enrich_fraction < 1"),
    (TrainSettings, {"data": "d", "out": "o"}, "sharp_weight", 0.5, ">= 1"),
    (TrainSettings, {"data": "d", "out": "o"}, "sampler", "gpu", "one of host, device"),
    (TrainSettings, {"data": "d", "out": "o"}, "workers", 0, ">= 1"),
    (TrainSettings, {"data": "d", "out": "o"}, "stream_rows", -5, ">= 0"),
    (TrainSettings, {"data": "d", "out": "o"}, "data", "", "a non-empty path"),
    (SimulateSettings, {"survey": "roman", "n": 3, "out": "o"}, "n", 0, ">= 1"),
    (SimulateSettings, {"survey": "roman", "n": 3, "out": "o"}, "shard_size", 0, ">= 1"),
    (SimulateSettings, {"survey": "roman", "n": 3, "out": "o"}, "seed", -1, ">= 0"),
    (SimulateSettings, {"survey": "roman", "n": 3, "out": "o"}, "q_max", 0.0, "0 < q_max <= 1"),
    (SimulateSettings, {"survey": "roman", "n": 3, "out": "o"}, "condition", "binary",
     "None or one of caustic-crossing"),
    (SimulateSettings, {"survey": "roman", "n": 3, "out": "o"}, "workers", 0, ">= 1"),
    (ValidateSettings, {"model": "roman"}, "n", 0, ">= 1"),
    (ValidateSettings, {"model": "roman"}, "n_samples", 0, ">= 1"),
    (ValidateSettings, {"model": "roman"}, "holdout_shards", 0, ">= 1"),
    (ValidateSettings, {"model": "roman"}, "seed", -2, ">= 0"),
])
def test_settings_refuse_bad_values_naming_class_field_and_range(cls, base, field, value, allowed):
    msg = f"{cls.__name__}.{field}={value!r} is not allowed: {allowed}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        cls(**{**base, field: value})
    cls(**base)  # the defaults are valid


# ----------------------------------------------------------------------------------------------
# TOML files


@pytest.mark.parametrize("obj", [
    TrainSettings(data="d", out="o"),
    _fine(),
    SimulateSettings(survey="roman", n=5000, out="sim \"quoted\" é", seed=3, condition="caustic-crossing",
                     q_max=0.005, workers=2, progress=False),
    ValidateSettings(model="trained/roman", data="sim", n=20, caustic_data="cross", out=None),
])
def test_round_trip(obj, tmp_path):
    text = dump_settings(obj)
    back = load_settings(_write(tmp_path / "s.toml", text), type(obj))
    assert back == obj
    assert dump_settings(back) == text


def test_partial_file_takes_the_defaults_and_overrides_apply(tmp_path):
    f = _write(tmp_path / "t.toml", 'data = "d"\nout = "o"\n[train]\nmax_steps = 900\n')
    s = load_settings(f, TrainSettings, {"train.seed": 4, "workers": 2})
    default = TrainSettings(data="d", out="o")
    # a partial [train] is merged onto TrainSettings' own default (batch 128, not TrainConfig's 256)
    assert s == dataclasses.replace(default, workers=2,
                                    train=dataclasses.replace(default.train, max_steps=900, seed=4))


@pytest.mark.parametrize(("text", "pattern"), [
    ('data = "d"\nout = "o"\nlearning_rate = 0.1\n',
     r"unknown key 'learning_rate' \(TrainSettings has no field 'learning_rate'"),
    ('data = "d"\nout = "o"\n[train]\nlr = 0.1\n', r"unknown key 'train.lr' \(TrainConfig has no field"),
    ('data = "d"\nout = "o"\nworkers = "2"\n',
     r"key 'workers' \(TrainSettings.workers\) must be a whole number, got '2' \(str\)"),
    ('data = "d"\nout = "o"\nstop = 1\n', r"key 'stop' \(TrainSettings.stop\) must be true or false"),
    ('data = "d"\nout = "o"\n[flow]\nhidden = 128\n',
     r"key 'flow.hidden' \(FlowConfig.hidden\) must be an array"),
    ('data = "d"\nout = "o"\nsharp_weight = 0.5\n',
     r"TrainSettings.sharp_weight=0.5 is not allowed: >= 1"),
    ('data = "d"\nout = "o"\n[train]\nlearning_rate = -1\n',
     r"TrainConfig.learning_rate must be > 0, got -1.0 \(in table \[train\]\)"),
    ('out = "o"\n',
     r"TrainSettings.data='' is not allowed: a non-empty path \(empty with sampler = 'simulate'"),
    ('data = "d"\nout = "o"\nworkers = \n', r"TOML syntax error: .*line 3"),
])
def test_bad_file_names_the_file_and_the_key(tmp_path, text, pattern):
    f = _write(tmp_path / "bad.toml", text)
    with pytest.raises(SettingsError, match=re.escape(str(f)) + ": .*" + pattern):
        load_settings(f, TrainSettings)


def test_bad_override_is_refused():
    with pytest.raises(SettingsError, match=r"overrides: unknown key 'train.nope'"):
        settings_from_dict(TrainSettings, {"data": "d", "out": "o"}, {"train.nope": 1}, source="overrides")


# ----------------------------------------------------------------------------------------------
# the commands' --settings


def _parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_train_settings_file_with_command_line_overrides(tmp_path):
    f = _write(tmp_path / "t.toml", dump_settings(_fine()))
    s = cli.train_settings(_parse("train", "--settings", str(f), "--out", "elsewhere", "--max-steps", "700",
                                  "--no-progress", "--learning-rate", "0.001"))
    want = _fine()
    want = dataclasses.replace(want, out="elsewhere", progress=False,
                               train=dataclasses.replace(want.train, max_steps=700, learning_rate=1e-3))
    assert s == want
    # a flag given with its default value still overrides the file (the file says 'device')
    assert cli.train_settings(_parse("train", "--settings", str(f), "--sampler", "host")).sampler == "host"
    # --network replaces the file's network
    std = cli.train_settings(_parse("train", "--settings", str(f), "--network", "standard"))
    assert (std.preprocess, std.embedding, std.flow) == NETWORKS["standard"]
    # without --settings: the flags and the documented defaults, as before
    plain = cli.train_settings(_parse("train", "--data", "d", "--out", "o"))
    assert plain == TrainSettings(data="d", out="o")


def test_simulate_and_validate_settings_files(tmp_path):
    sim = SimulateSettings(survey="kmtnet", n=100, out="o", seed=9, workers=2)
    f = _write(tmp_path / "s.toml", dump_settings(sim))
    assert cli.simulate_settings(_parse("simulate", "--settings", str(f), "--seed", "0")) == \
        dataclasses.replace(sim, seed=0)
    assert cli.simulate_settings(_parse("simulate", "--survey", "roman", "--n", "3", "--out", "x")) == \
        SimulateSettings(survey="roman", n=3, out="x")
    val = ValidateSettings(model="roman", n=50, n_samples=100)
    g = _write(tmp_path / "v.toml", dump_settings(val))
    assert cli.validate_settings(_parse("validate", "--settings", str(g), "--overwrite")) == \
        dataclasses.replace(val, overwrite=True)


def test_missing_required_flag_without_settings_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["simulate", "--survey", "roman", "--n", "3"])
    assert exc.value.code == 2
    assert "required (or give them in --settings): --out" in capsys.readouterr().err


def test_bad_settings_file_on_the_command_line(tmp_path, capsys):
    f = _write(tmp_path / "v.toml", 'model = "roman"\nn_sample = 3\n')
    assert cli.main(["validate", "--settings", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"mulens-sbi validate: error: {f}: unknown key 'n_sample'" in err


# ----------------------------------------------------------------------------------------------
# the shipped models' stored settings replay


@pytest.mark.parametrize("name", ["roman", "kmtnet"])
def test_shipped_models_settings_replay(name):
    post = json.loads((ROOT / "trained" / name / "posterior.json").read_text())
    record = post["metadata"]["settings"]
    s = settings_from_dict(TrainSettings, record, source=f"trained/{name}/posterior.json")
    d = s.to_dict()
    assert {k: d[k] for k in record} == record  # every recorded value, exactly
    # fields added after the model was trained take their defaults
    default = TrainSettings(data="d", out="o").to_dict()
    assert {k: d[k] for k in d if k not in record} == {k: default[k] for k in d if k not in record}
    # they describe the stored network and training loop
    assert NPEConfig(flow=s.flow, embedding=s.embedding).to_dict() == post["config"]
    assert s.train.to_dict() == post["metadata"]["training"]["train_config"]
    # the shipped TOML file holds the same settings; the command replays them (paths overridable)
    toml = ROOT / "trained" / name / "train_settings.toml"
    assert load_settings(toml, TrainSettings) == s
    args = _parse("train", "--settings", str(toml), "--data", "here", "--out", "there")
    assert cli.train_settings(args) == dataclasses.replace(s, data="here", out="there")


# ----------------------------------------------------------------------------------------------
# provenance: the code's commit


def test_code_commit(monkeypatch):
    commit = checkpoint.code_commit()
    assert commit == "unknown" or re.fullmatch(r"[0-9a-f]{40}", commit)

    def fail(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", fail)
    assert checkpoint.code_commit() == "unknown"
    not_a_checkout = subprocess.CompletedProcess([], 128, "", "fatal: not a git repository")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: not_a_checkout)
    assert checkpoint.code_commit() == "unknown"
