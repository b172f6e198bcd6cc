"""Small catalog inputs for the tests: analytic point-lens light curves (numpy, no solver compile)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

N_POINTS = 400


def pspl(t, t_0, u_0, t_e):
    u = np.sqrt(((t - t_0) / t_e) ** 2 + u_0**2)
    return (u**2 + 2) / (u * np.sqrt(u**2 + 4))


def light_curve(rng, t_0, u_0, t_e, n=N_POINTS, f_s=4.0, f_b=1.0):
    t = np.sort(rng.uniform(t_0 - 3 * t_e, t_0 + 3 * t_e, n))
    f = f_s * pspl(t, t_0, u_0, t_e) + f_b
    sig = 0.01 * f
    return t, f + sig * rng.standard_normal(n), sig


def write_parquet(path, n_events=8, seed=5):
    """``n_events`` rows; row 5 has a NaN flux on a used point, row 6 only 20 points (both must be
    recorded as errors). Returns the true parameters."""
    rng = np.random.default_rng(seed)
    truth = {
        "t_0": rng.uniform(9000, 9100, n_events),
        "u_0": rng.uniform(0.05, 0.6, n_events),
        "t_E": 10 ** rng.uniform(0.7, 1.6, n_events),
    }
    ts, fs, ss, ms = [], [], [], []
    for i in range(n_events):
        t, f, s = light_curve(rng, truth["t_0"][i], truth["u_0"][i], truth["t_E"][i])
        m = np.ones(t.size, bool)
        if i == 5:
            f[100] = np.nan
        if i == 6:
            m[20:] = False
        ts.append(t.tolist())
        fs.append(f.tolist())
        ss.append(s.tolist())
        ms.append(m.tolist())
    tab = pa.table(
        {"event": [f"ev{i:02d}" for i in range(n_events)], "t": ts, "flux": fs, "sigma": ss, "mask": ms}
    )
    pq.write_table(tab, path, row_group_size=3)
    return truth


def same_table(a, b, skip=("time_s",), rtol=1e-9):
    """Assert two catalog tables are equal: strings/ints exactly, floats to ``rtol`` (NaN == NaN)."""
    assert a.column_names == b.column_names
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        if name in skip:
            continue
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        if a.schema.field(name).type == pa.float64():
            xa = np.array([np.nan if v is None else v for v in x], float)
            ya = np.array([np.nan if v is None else v for v in y], float)
            np.testing.assert_allclose(xa, ya, rtol=rtol, atol=0, equal_nan=True, err_msg=name)
        else:
            assert x == y, name
