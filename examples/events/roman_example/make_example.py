"""Make the shipped simulated Roman example event (seeded; rerun to reproduce the files exactly).

    PYTHONPATH=. python examples/events/roman_example/make_example.py [--check]

Writes ``roman_example.dat`` (``HJD  W149_mag  mag_err``, full HJD) and ``truth.json`` next to this
script. With ``--check`` it only verifies that the shipped files equal what it would write.

The event: a wide planet (s = 1.25, q = 1e-3, alpha = 50 deg, t_E = 25 d) whose source trajectory
crosses the binary axis at the planetary caustic (u_0 = -x_pc sin(alpha), x_pc = s q/(1+q) - (s - 1/s),
the same geometry as ``mulens-sbi demo``'s simulated event), point source, W149 source magnitude 20.5,
20% of the baseline flux blended; t_0 in the middle of the first Roman season of
``simulators/roman.toml``. Cadence, window (t_0 +- 2 t_E), dropout, fixed length (2048 points) and
noise follow that spec (``mulens_sbi.survey``); noise seed 20261128.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20261128
HJD_OFFSET = 2450000.0


def truth_parameters(survey) -> dict:
    s, q, alpha, t_e = 1.25, 1e-3, 50.0, 25.0
    x_pc = s * q / (1.0 + q) - (s - 1.0 / s)
    u_0 = -x_pc * np.sin(np.deg2rad(alpha))
    season = survey.spec.seasons[0]
    return {"t_0": 0.5 * (season.start + season.end), "u_0": float(u_0), "t_E": t_e, "s": s, "q": q,
            "alpha": alpha, "source_mag": 20.5, "blend_fraction": 0.2}


def make() -> tuple[str, dict]:
    from mulens_sbi import magnification_batch
    from mulens_sbi.survey import Survey, mag_to_flux

    survey = Survey.load("roman")
    rng = np.random.default_rng(SEED)
    p = truth_parameters(survey)
    f_s = float(mag_to_flux(p["source_mag"]))
    f_b = f_s * p["blend_fraction"] / (1.0 - p["blend_fraction"])
    obs = survey.observations(rng, {k: np.array([p[k]]) for k in ("t_0", "t_E")}, field=np.zeros(1, np.int16))
    lens = {k: np.array([p[k]]) for k in ("t_0", "u_0", "t_E", "s", "q", "alpha")}
    mag, ok = magnification_batch(obs.t[0], lens)
    keep = obs.mask[0] & np.asarray(ok[0])
    t = obs.t[0][keep]
    flux_true = f_s * np.asarray(mag[0])[keep] + f_b
    sigma = survey.flux_sigma(flux_true)
    flux = flux_true + sigma * rng.standard_normal(t.size)
    mag_obs = 22.0 - 2.5 * np.log10(flux)
    mag_err = 2.5 / np.log(10.0) * sigma / flux
    lines = [
        "# Simulated Roman W149 light curve (mulens-sbi examples/events/roman_example, seed "
        f"{SEED}); see README.md",
        "# HJD mag mag_err",
    ]
    rows = zip(t, mag_obs, mag_err, strict=True)
    lines += [f"{ti + HJD_OFFSET:.6f} {mi:.5f} {ei:.5f}" for ti, mi, ei in rows]
    truth = {
        "parameters": p,
        "f_s": f_s,
        "f_b": f_b,
        "zero_point": 22.0,
        "n_points": int(t.size),
        "n_unsolved_points": int((obs.mask[0] & ~np.asarray(ok[0])).sum()),
        "seed": SEED,
        "conventions": "MulensModel v3; t_0 in HJD' = HJD - 2450000; alpha in degrees; "
        "fluxes on zero point 22",
    }
    return "\n".join(lines) + "\n", truth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="verify the shipped files instead of writing them")
    args = ap.parse_args(argv)
    text, truth = make()
    truth_text = json.dumps(truth, indent=2) + "\n"
    data_path, truth_path = HERE / "roman_example.dat", HERE / "truth.json"
    if args.check:
        same = data_path.read_text() == text and truth_path.read_text() == truth_text
        print("shipped files reproduce" if same else "shipped files DIFFER from a fresh run")
        return 0 if same else 1
    data_path.write_text(text)
    truth_path.write_text(truth_text)
    print(f"wrote {data_path} ({truth['n_points']} points) and {truth_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
