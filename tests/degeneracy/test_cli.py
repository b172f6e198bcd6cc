"""`mulens-sbi degeneracy SAMPLES --out DIR`: writes report.json and the figures from a samples file
as `mulens-sbi fit` writes it; refuses to overwrite; bad input is a clear error (exit 2)."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mulens_sbi.cli import main
from mulens_sbi.degeneracy import REPORT_FILES

from .cases import CASES, pair, two_modes

matplotlib.use("Agg")


def test_cli_degeneracy(tmp_path, capsys):
    """A two-mode inner–outer posterior in fit's samples.parquet layout (parameters, weight,
    log_likelihood, flux columns) → exit 0, all REPORT_FILES non-empty, report.json classifies the
    pair as in the analytic construction; a second run is refused (exit 2) until --overwrite; a file
    without 'alpha' is exit 2 with the column named."""
    _, s_b, q, alpha, x0, expected = CASES[2]
    pa_, pb = pair(s_b, q, alpha, x0)
    samp = two_modes(pa_, pb, np.random.default_rng(21))
    n = samp["s"].size
    cols = dict(samp, weight=np.full(n, 1.0 / n), log_likelihood=np.zeros(n))
    cols["f_s[W149]"] = np.ones(n)
    path = tmp_path / "samples.parquet"
    pq.write_table(pa.table(cols), path)
    out = tmp_path / "deg"
    assert main(["degeneracy", str(path), "--out", str(out)]) == 0
    for f in REPORT_FILES:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_modes"] == 2 and rep["pairs"][0]["classification"] == expected and rep["degenerate"]
    capsys.readouterr()
    assert main(["degeneracy", str(path), "--out", str(out), "--no-figures"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["degeneracy", str(path), "--out", str(out), "--no-figures", "--overwrite"]) == 0
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({k: v for k, v in cols.items() if k != "alpha"}), bad)
    capsys.readouterr()
    assert main(["degeneracy", str(bad), "--out", str(tmp_path / "x"), "--no-figures"]) == 2
    assert "'alpha'" in capsys.readouterr().err
