"""Training-set simulator: light curves against VBMicrolensing, noise, shards, reproducibility, resume.

All runs share one small spec (Roman with 64 points per light curve) and one solver batch shape
(8 x 64), so the magnification solver compiles once per test session.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mulens_sbi.data.lightcurves import simulate_lightcurves
from mulens_sbi.data.shards import MANIFEST, read_simulation, shard_name
from mulens_sbi.simulate import OutputExistsError, SimulateSettings, run_simulation
from mulens_sbi.survey import Survey, parse_spec
from mulens_sbi.survey.spec import simulators_dir

N_POINTS = 64
BATCH = 8


def small_roman(tmp_path: Path) -> Path:
    """The shipped Roman spec with 64 points per light curve (a path usable by the CLI)."""
    text = (simulators_dir() / "roman.toml").read_text().replace("n_points = 2048", f"n_points = {N_POINTS}")
    path = tmp_path / "roman_small.toml"
    path.write_text(text)
    return path


def _settings(spec: Path, out: Path, **kw) -> SimulateSettings:
    base = dict(survey=str(spec), n=20, out=str(out), seed=0, shard_size=8, batch_size=BATCH, progress=False)
    base.update(kw)
    return SimulateSettings(**base)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # NaN == NaN here; exact otherwise


def test_lightcurves_match_vbmicrolensing(tmp_path):
    vbm = pytest.importorskip("VBMicrolensing")
    survey = Survey(parse_spec(small_roman(tmp_path).read_text(), "small.toml"))
    d = simulate_lightcurves(survey, np.random.default_rng(5), 16, batch_size=BATCH)
    vb = vbm.VBMicrolensing()
    n_checked = 0
    for i in range(16):
        a = np.deg2rad(d["alpha"][i])
        tau = (d["t"][i] - d["t_0"][i]) / d["t_E"][i]
        x = tau * np.cos(a) - d["u_0"][i] * np.sin(a)
        y = tau * np.sin(a) + d["u_0"][i] * np.cos(a)
        for j in np.flatnonzero(d["mask"][i]):
            mag = vb.BinaryMag0(d["s"][i], d["q"][i], -x[j], y[j])
            expect = d["f_s"][i] * mag + d["f_b"][i]
            assert d["flux_true"][i, j] == pytest.approx(expect, rel=2e-6)  # stored as float32
            n_checked += 1
    assert n_checked > 500
    assert d["n_unsolved"].sum() == 0
    # masked entries are NaN; the mask is what counts
    assert np.all(np.isnan(d["flux"][~d["mask"]])) and np.all(np.isfinite(d["flux"][d["mask"]]))


def test_noise_realisation_has_unit_chi2(tmp_path):
    survey = Survey(parse_spec(small_roman(tmp_path).read_text(), "small.toml"))
    d = simulate_lightcurves(survey, np.random.default_rng(11), 64, batch_size=BATCH)
    m = d["mask"]
    chi = ((d["flux"] - d["flux_true"]) / d["sigma"])[m].astype(float)
    assert chi.size > 3000
    # chi^2 per point = 1 within 5 sigma of sqrt(2/N) (float32 storage adds < 1e-4)
    assert np.mean(chi**2) == pytest.approx(1.0, abs=5 * math.sqrt(2 / chi.size))
    # sigma is the noise model evaluated at the noiseless flux
    np.testing.assert_allclose(d["sigma"][m], survey.flux_sigma(d["flux_true"][m].astype(float)), rtol=1e-6)


def test_same_seed_same_set_and_shards(tmp_path):
    spec = small_roman(tmp_path)
    s1 = run_simulation(_settings(spec, tmp_path / "a"), log=lambda _: None)
    run_simulation(_settings(spec, tmp_path / "b"), log=lambda _: None)
    a, b = read_simulation(tmp_path / "a"), read_simulation(tmp_path / "b")
    _assert_same(a, b)
    assert s1.n_shards == 3 and s1.shards_made == 3
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [MANIFEST] + [
        shard_name(i) for i in range(3)
    ]
    np.testing.assert_array_equal(a["index"], np.arange(20))
    assert a["t"].shape == (20, N_POINTS) and a["flux"].dtype == np.float32
    man = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert man["complete"] and [s["rows"] for s in man["shards"]] == [8, 8, 4]
    assert man["spec_text"] == spec.read_text()
    # another seed gives another set
    run_simulation(_settings(spec, tmp_path / "c", seed=1), log=lambda _: None)
    c = read_simulation(tmp_path / "c")
    assert not np.array_equal(a["t_0"], c["t_0"])


@pytest.mark.slow
def test_worker_processes_write_the_same_shards(tmp_path):
    """Shards are pure functions of (spec, seed, index): two worker processes give byte-identical
    shards to one process."""
    spec = small_roman(tmp_path)
    run_simulation(_settings(spec, tmp_path / "one"), log=lambda _: None)
    s = run_simulation(_settings(spec, tmp_path / "two", workers=2), log=lambda _: None)
    assert (s.shards_made, s.n_unsolved_points) == (3, 0)
    one = json.loads((tmp_path / "one" / MANIFEST).read_text())["shards"]
    two = json.loads((tmp_path / "two" / MANIFEST).read_text())["shards"]
    assert [x["sha256"] for x in one] == [x["sha256"] for x in two]
    with pytest.raises(ValueError, match="workers"):
        run_simulation(_settings(spec, tmp_path / "three", workers=0), log=lambda _: None)


def test_resume_after_kill_is_exact(tmp_path):
    spec = small_roman(tmp_path)
    run_simulation(_settings(spec, tmp_path / "ref"), log=lambda _: None)
    ref = read_simulation(tmp_path / "ref")
    out = tmp_path / "run"
    run_simulation(_settings(spec, out), log=lambda _: None)
    # simulate a kill during shard 2 after shard 1 was written: shard 2 missing, a half-written
    # temporary file left, manifest not marked complete
    (out / shard_name(2)).unlink()
    (out / f"{shard_name(2)}.tmp-12345").write_bytes(b"PAR1 half written")
    man = json.loads((out / MANIFEST).read_text())
    man["complete"] = False
    (out / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(ValueError, match="not complete"):
        read_simulation(out)
    messages: list[str] = []
    s = run_simulation(_settings(spec, out), log=messages.append)
    assert s.shards_made == 1 and s.shards_reused == 2
    assert messages and "resuming" in messages[0] and "2 of 3" in messages[0]
    assert not list(out.glob("*.tmp-*"))
    res = read_simulation(out)
    _assert_same(ref, res)
    assert np.unique(res["index"]).size == 20
    # a second kill mid-run: delete the first shard instead (shard i depends only on (seed, i))
    (out / shard_name(0)).unlink()
    run_simulation(_settings(spec, out), log=lambda _: None)
    _assert_same(ref, read_simulation(out))


def test_refuses_to_overwrite(tmp_path):
    spec = small_roman(tmp_path)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty.*--overwrite"):
        run_simulation(_settings(spec, out), log=lambda _: None)
    assert (out / "notes.txt").read_text() == "mine"
    out2 = tmp_path / "sim"
    run_simulation(_settings(spec, out2, n=6), log=lambda _: None)
    with pytest.raises(
        OutputExistsError, match=r"different simulation \(seed: 0 there vs 1 now.*--overwrite"
    ):
        run_simulation(_settings(spec, out2, n=6, seed=1), log=lambda _: None)
    with pytest.raises(OutputExistsError, match="n: 6 there vs 9 now"):
        run_simulation(_settings(spec, out2, n=9), log=lambda _: None)
    run_simulation(_settings(spec, out2, n=9, seed=1, overwrite=True), log=lambda _: None)
    d = read_simulation(out2)
    assert d["index"].size == 9 and len(list(out2.glob("shard-*.parquet"))) == 2
    fresh = tmp_path / "fresh"
    run_simulation(_settings(spec, fresh, n=9, seed=1), log=lambda _: None)
    _assert_same(d, read_simulation(fresh))
