"""The demo command (the README's first command) and its fit of the shipped Roman example event
(``examples/events/roman_example``, truth known) with the shipped model.

That fit runs the exact stage (~100 s on 2 cores, most of it compilation on a fresh machine). The
demo makes it once, in the module fixture ``demo_run``, which records the call and its
``FitResult``; the tests of the fit itself (``fit()`` end to end, and a catalog row against it)
check that result instead of making the same fit again. CI runs pytest-xdist with
``--dist loadfile``: one worker runs this module, so the fixture runs once.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from mulens_sbi.cli import main

NAMES = ("t_0", "u_0", "t_E", "s", "q", "alpha")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "events" / "roman_example"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``mulens-sbi demo --out DIR`` run in-process: returns DIR, the exit status and the demo's calls
    of :func:`mulens_sbi.fit.fit`, each a dict of its ``args``, ``kwargs`` and the ``FitResult`` it
    returned (the real fit, only recorded)."""
    import mulens_sbi.demo as demo_module

    out = tmp_path_factory.mktemp("demo") / "demo"
    calls = []
    real_fit = demo_module.fit

    def recorded_fit(*args, **kwargs):
        res = real_fit(*args, **kwargs)
        calls.append({"args": args, "kwargs": kwargs, "result": res})
        return res

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo_module, "fit", recorded_fit)
        status = main(["demo", "--out", str(out)])
    return out, status, calls


@pytest.mark.slow
def test_demo_command(demo_run, capsys):
    """The fit demo's figures and reports, then the refusal to overwrite and ``--overwrite``."""
    out, status, calls = demo_run
    assert status == 0
    assert len(calls) == 1  # the fit demo: one fit of the shipped example event
    for name in ("lightcurve.png", "caustics.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and (out / name).stat().st_size > 20_000
    r = json.loads((out / "report.json").read_text())
    assert r["mode"] == "fit" and r["status"] == calls[0]["result"].status
    assert r["parameters"]["s"] == 1.25 and r["parameters"]["q"] == 1e-3
    # the planetary anomaly is covered and strong; the noise is consistent with the error bars
    assert r["n_points_in_anomaly_window"] > 50
    assert r["delta_chi2_binary_vs_point_lens"] > 1e3
    assert abs(r["chi2_per_point"] - 1.0) < 5 * np.sqrt(2.0 / r["n_points"])
    assert r["n_unsolved_points"] == 0
    assert "| s | 1.25 |" in (out / "report.md").read_text()
    # refuses to overwrite, then does with --overwrite (the simulation demo: the fit above already
    # showed the fit demo's outputs, and another exact-stage fit would double the test's time)
    assert main(["demo", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--overwrite", "--mode", "simulate"]) == 0


@pytest.mark.slow
def test_fit_shipped_model_on_example_event(demo_run):
    """End to end with the shipped model on the shipped simulated event (truth known): importance
    sampling of the wide flow fails (ESS of a few), so the default refine='auto' runs the exact
    stage, which must end with status ok and every true parameter inside its 95% interval; the
    best mode's chi2 is no worse than the truth's + 10 (the truth's chi2 from MulensModel). The fit
    is the demo's: ``fit(event, "roman", n=4096, seed=0)``, the defaults otherwise."""
    from mulens_sbi.models import available_models

    MM = pytest.importorskip("MulensModel")
    if "roman" not in available_models():
        pytest.fail("the shipped model trained/roman/ is missing")
    truth = json.loads((EXAMPLE / "truth.json").read_text())["parameters"]
    _, _, calls = demo_run
    assert len(calls) == 1
    call = calls[0]
    # the shipped model by name, the default refine ('auto'), a fixed seed
    assert call["args"][1] == "roman" and "refine" not in call["kwargs"] and call["kwargs"]["seed"] == 0
    res = call["result"]
    assert res.event.n_points == 2048 and res.summary["model"] == "roman"
    assert res.method == "exact" and res.status == "ok", res.messages
    for k in NAMES:
        lo, hi = res.summary["parameters"][k]["interval_95"]
        if k == "alpha":  # intervals are on one branch, their ends may lie outside 0..360
            assert (truth[k] - lo) % 360.0 <= hi - lo, (k, lo, hi, truth[k])
        else:
            assert lo <= truth[k] <= hi, (k, lo, hi, truth[k], res.status)
    ds = res.event.datasets[0]
    model = MM.Model({k: truth[k] for k in NAMES})
    model.set_magnification_methods([ds.t.min() - 1, "point_source", ds.t.max() + 1])
    mag = np.asarray(model.get_magnification(ds.t))
    a = np.stack([mag, np.ones_like(mag)], axis=1) / ds.sigma[:, None]
    coef = np.linalg.lstsq(a, ds.flux / ds.sigma, rcond=None)[0]
    chi2_truth = float(np.sum((ds.flux / ds.sigma - a @ coef) ** 2))
    assert res.summary["exact"]["modes"][0]["chi2"] < chi2_truth + 10


@pytest.mark.slow
def test_catalog_and_fit_share_the_exact_stage(demo_run):
    """One pipeline: a catalog row with refine='exact' and fit() on the same event and seed (the
    demo's, 4096 samples: its flow importance sampling fails, so refine='auto' runs the exact stage)
    reach the same best mode (the flows' draws, extra starts, differ by their keys and number) and
    the same posterior within its errors."""
    from mulens_sbi.catalog.infer import BatchInference, InferenceSettings
    from mulens_sbi.catalog.inputs import EventRef

    path = EXAMPLE / "roman_example.dat"
    ref = EventRef(index=0, event="roman_example", source=str(path), kind="file", path=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row = BatchInference(InferenceSettings(model="roman", n_samples=1000, refine="exact", seed=0,
                                               degeneracy=False)).run_shard(0, [ref])[0]
    _, _, calls = demo_run
    assert len(calls) == 1 and calls[0]["kwargs"]["seed"] == 0
    res = calls[0]["result"]
    assert res.event.n_points == 2048 and res.method == "exact"
    assert row["method"] == "exact" and row["status"] == res.status == "ok", row["messages"]
    cat_modes = json.loads(row["exact_json"])["modes"]
    fit_modes = res.summary["exact"]["modes"]
    assert abs(cat_modes[0]["chi2"] - fit_modes[0]["chi2"]) < 0.1
    for k in ("s", "q", "t_E"):
        sd = res.summary["parameters"][k]["std"]
        assert abs(row[f"{k}_median"] - res.summary["parameters"][k]["median"]) < 0.5 * sd + 1e-12
