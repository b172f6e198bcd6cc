"""analyze() on synthetic posteriors: degenerate pairs built from the relation (references: the
analytic relation, and test_relation.py's light-curve check that these pairs are degenerate),
non-degenerate pairs, reflection copies, one mode, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mulens_sbi.degeneracy import analyze, axis_crossing, partner_separation
from mulens_sbi.degeneracy.relation import f_sep

from .cases import CASES, cloud, lens, pair, two_modes


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_degenerate_pairs_are_found_and_classified(case):
    """Two Gaussian modes at the relation's pair (one mirrored copy each, 40% of samples): the report
    has exactly 2 modes with both reflection copies, the relation holds within its uncertainty
    (|z| < 3), its predicted s_A lies within 3σ of mode A's s, both modes' x0 equal the constructed x0
    within 3σ of the samples, and the class is the expected one."""
    name, s_b, q, alpha, x0, expected = case
    rng = np.random.default_rng(11)
    pa, pb = pair(s_b, q, alpha, x0)
    rep = analyze(two_modes(pa, pb, rng, reflect=0.4))
    assert rep.n_modes == 2, rep
    assert all(m.has_both_copies for m in rep.modes)
    (p,) = rep.pairs
    assert p.holds and abs(p.z) < 3, rep
    assert p.classification == expected, rep
    s_mode_a = rep.modes[p.a].samples["s"]
    assert abs(p.s_a_predicted - p.s_a) < 3 * np.std(s_mode_a) + 3 * q, rep
    for m in rep.modes:
        assert abs(np.median(m.x0) - x0) < 3 * np.std(m.x0), (name, np.median(m.x0), x0)
    assert rep.degenerate and "offset-degenerate pair" in rep.verdict


def test_non_degenerate_pairs_are_rejected():
    """Same x0 and q but s_A 5% off the relation, narrow modes → 'not this degeneracy' (relation off
    by > 3σ); q differing by 1 dex → 'not this degeneracy' (q); same s, different t_E → 'the modes do
    not differ in s'."""
    rng = np.random.default_rng(12)
    s_b, q, alpha = 1.3, 1e-3, 70.0
    x0 = f_sep(s_b) + 3 * math.sqrt(q)
    s_a = float(partner_separation(s_b, x0)) * 1.05
    rep = analyze(two_modes(lens(s_a, q, alpha, x0), lens(s_b, q, alpha, x0), rng, sd_log_s=0.002))
    (p,) = rep.pairs
    assert not p.holds and p.classification.startswith("not this degeneracy") and abs(p.z) > 3, rep
    assert not rep.degenerate and "no pair obeys" in rep.verdict

    pa, pb = pair(s_b, q, alpha, x0)
    pa["q"] = 1e-2
    rep = analyze(two_modes(pa, pb, rng))
    p = rep.pairs[0]  # the two heaviest modes (a Gaussian mode may shed a small spurious component)
    assert (p.a, p.b) == (0, 1) and rep.modes[0].weight + rep.modes[1].weight > 0.95
    assert not p.holds and "q differs" in p.classification, rep

    pa = lens(s_b, q, alpha, x0)
    pb = dict(pa, t_E=40.0)
    samples = {
        k: np.concatenate([cloud(pa, 400, rng, sd_log_s=0.002)[k], cloud(pb, 400, rng, sd_log_s=0.002)[k]])
        for k in pa
    }
    samples["t_0"] = samples["t_0"] + np.where(np.arange(800) < 400, 0.0, 5.0)
    rep = analyze(samples)
    assert rep.n_modes == 2
    assert all("do not differ in s" in p.classification for p in rep.pairs)


def test_reflection_copies_and_weights():
    """A posterior made only of the mirrored copy gives the same modes and x0 as the original (x0 is
    reflection invariant); importance weights are used: a mode given 3% of the samples but 50% of the
    weight carries 50% of the mass (±0.01)."""
    rng = np.random.default_rng(13)
    _, s_b, q, alpha, x0, _ = CASES[2]
    pa, pb = pair(s_b, q, alpha, x0)
    samp = two_modes(pa, pb, rng, n=(970, 30))
    mirrored = dict(samp, u_0=-samp["u_0"], alpha=np.mod(-samp["alpha"], 360.0))
    w = np.where(np.arange(1000) < 970, 0.5 / 970, 0.5 / 30)
    r1, r2 = analyze(samp, w), analyze(mirrored, w)
    assert r1.n_modes == r2.n_modes == 2
    for m1, m2 in zip(r1.modes, r2.modes, strict=True):
        assert m1.reflected_fraction == pytest.approx(0.0) and m2.reflected_fraction == pytest.approx(1.0)
        assert abs(m1.weight - 0.5) < 0.01
        np.testing.assert_allclose(np.sort(m1.x0), np.sort(m2.x0), atol=1e-12)
    np.testing.assert_allclose(
        np.sort(axis_crossing(samp["u_0"], samp["alpha"], samp["s"], samp["q"])),
        np.sort(np.concatenate([m.x0 for m in r1.modes])),
        atol=1e-12,
    )


def test_one_mode_and_warnings():
    """One mode: one mode, no pairs, a verdict saying so. A shallow (alpha = 10°) pair and a q = 0.1
    pair get their warnings."""
    rng = np.random.default_rng(14)
    p = lens(1.3, 1e-3, 70.0, 0.7)
    rep = analyze(cloud(p, 500, rng, sd_log_s=0.003))
    assert rep.n_modes == 1 and rep.pairs == [] and rep.partners == []
    assert rep.verdict.startswith("one mode")
    pa, pb = pair(1.3, 1e-3, 10.0, f_sep(1.3) + 0.1)
    rep = analyze(two_modes(pa, pb, rng))
    assert any("shallow crossing" in w for w in rep.pairs[0].warnings)
    pa, pb = pair(1.3, 0.1, 70.0, f_sep(1.3) + 0.5)
    rep = analyze(two_modes(pa, pb, rng))
    assert any("large mass ratio" in w for w in rep.pairs[0].warnings)


def test_bad_input_gets_clear_answers(tmp_path):
    """NaN rows are left out and counted; a missing column, a non-positive s, wrong weights, and all-NaN
    samples are ValueErrors naming the problem; the JSON is strict and complete; files are not
    overwritten without overwrite=True; parquet and CSV inputs (with a 'weight' column) give the same
    report as the arrays."""
    rng = np.random.default_rng(15)
    pa, pb = pair(1.3, 1e-3, 70.0, f_sep(1.3) + 0.1)
    samp = two_modes(pa, pb, rng)
    samp["s"][:7] = np.nan
    samp["alpha"][7:10] = np.inf
    rep = analyze(samp)
    assert rep.n_used == 800 - 10 and rep.n_input == 800
    assert any("7 of 800" in m and "'s'" in m for m in rep.messages)
    assert any("3 of 800" in m and "'alpha'" in m for m in rep.messages)
    assert rep.n_modes == 2
    with pytest.raises(ValueError, match="'q'"):
        analyze({k: v for k, v in samp.items() if k != "q"})
    bad = dict(samp, s=np.where(np.arange(800) == 20, -1.0, samp["s"]))
    with pytest.raises(ValueError, match="'s' must be > 0; row 20"):
        analyze(bad)
    with pytest.raises(ValueError, match="weights have 3 values"):
        analyze(samp, np.ones(3))
    with pytest.raises(ValueError, match="no sample"):
        analyze(dict(samp, q=np.full(800, np.nan)))
    with pytest.raises(ValueError, match="not numeric"):
        analyze(dict(samp, u_0=np.array(["x"] * 800, dtype=object)))
    d = json.loads(rep.to_json())
    assert d["n_modes"] == 2 and len(d["pairs"]) == 1 and d["pairs"][0]["holds"] is True
    assert "f(s_A) + f(s_B) = 2 x0" in d["conventions"]
    rep.save(tmp_path / "out", figures=False)
    with pytest.raises(FileExistsError):
        rep.save(tmp_path / "out", figures=False)
    # files
    import pyarrow as pa_
    import pyarrow.parquet as pq

    ok = {k: v[10:] for k, v in samp.items()}
    ok["weight"] = np.full(790, 1 / 790)
    pq.write_table(pa_.table(ok), tmp_path / "s.parquet")
    names = list(ok)
    rows = np.stack([ok[k] for k in names], axis=1)
    (tmp_path / "s.csv").write_text(
        ",".join(names) + "\n" + "\n".join(",".join(repr(float(x)) for x in r) for r in rows) + "\n"
    )
    r_arr = analyze({k: v for k, v in ok.items() if k != "weight"})
    for f in ("s.parquet", "s.csv"):
        r_f = analyze(tmp_path / f)
        assert r_f.n_modes == r_arr.n_modes
        assert r_f.pairs[0].z == pytest.approx(r_arr.pairs[0].z, rel=1e-9)
    (tmp_path / "bad.csv").write_text("s,q,u_0,alpha\n1,0.001,0.1,40\n1,abc,0.1,40\n")
    with pytest.raises(ValueError, match="line 3, column 'q'"):
        analyze(tmp_path / "bad.csv")
