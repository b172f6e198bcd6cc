"""Make the simulated OGLE + KMTNet example event (seeded; rerun to reproduce the files exactly).

    PYTHONPATH=. python examples/events/ogle_kmtnet_example/make_example.py [--check]

One binary-lens event observed from the ground by three datasets in their survey formats:

* ``phot.dat`` — OGLE EWS format: full HJD, I magnitude (zero point 22), error, seeing, sky; one
  point per clear night over t_0 ± 60 d, 20% of nights lost to weather;
* ``KMTC01_I.pysis`` — KMTNet pySIS: HJD', difference flux Δflux = F − F_ref on an instrumental zero
  point 28 (negative below the reference), its error, mag, mag_err, fwhm, sky; 4 points per hour
  through Chilean nights (HJD' fraction 0.00–0.33) over t_0 ± 25 d, 30% of nights lost;
* ``KMTS01_I.tlc`` — KMTNet TLC: HJD', I magnitude on an instrumental scale 0.25 mag fainter, error,
  seeing, sky; 4 per hour through South-African nights (fraction 0.70–0.98) over t_0 ± 25 d.

The three datasets have different source and blend fluxes (calibration offsets, a reference-image
subtraction), which ``truth.json`` lists in each reader's units (``event.toml`` reads the pySIS file
with ``zero_point = 28``). Point-source binary magnification from ``mulens_sbi.magnification_batch``
(MulensModel v3 conventions); Gaussian noise with σ_F = 0.004·F ⊕ photon-like noise of the
baseline; values written with enough digits that rounding is ≪ the errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20261129
TRUTH = {"t_0": 9812.4, "u_0": 0.12, "t_E": 22.0, "s": 0.92, "q": 4e-3, "alpha": 35.0}
I_SOURCE, I_BLEND = 18.6, 19.3
KMTC_OFFSET, KMTS_OFFSET = 0.10, 0.25  # instrumental magnitude = I + offset
KMT_ZP, KMTC_REF_FRAC = 28.0, 0.8  # pySIS zero point; reference flux as a fraction of the baseline


def nightly(rng, t0, half, frac_lo, frac_hi, per_day, lost):
    t = []
    for night in np.arange(np.floor(t0 - half), np.ceil(t0 + half)):
        if rng.random() < lost:
            continue
        n = int(round((frac_hi - frac_lo) * per_day))
        tt = night + np.linspace(frac_lo, frac_hi, n, endpoint=False) + rng.uniform(0, 0.003, n)
        t.extend(tt)
    return np.array(t)


def make() -> tuple[dict[str, str], dict]:
    from mulens_sbi import magnification_batch

    rng = np.random.default_rng(SEED)
    f_src = 10 ** (-0.4 * (I_SOURCE - 22.0))
    f_bl = 10 ** (-0.4 * (I_BLEND - 22.0))
    base = f_src + f_bl
    t_ogle = nightly(rng, TRUTH["t_0"], 60.0, 0.15, 0.16, 96, 0.2)
    t_kmtc = nightly(rng, TRUTH["t_0"], 25.0, 0.00, 0.33, 96, 0.3)
    t_kmts = nightly(rng, TRUTH["t_0"], 25.0, 0.70, 0.98, 96, 0.3)
    lens = {k: np.array([v]) for k, v in TRUTH.items()}
    files: dict[str, str] = {}
    fluxes: dict[str, dict] = {}

    def magn(t):
        a, ok = magnification_batch(t, lens)
        assert bool(np.all(np.asarray(ok))), "uncertified magnification in the example"
        return np.asarray(a[0])

    def noisy(f_true):
        sig = np.sqrt((0.004 * f_true) ** 2 + 0.006**2 * base * f_true)
        return f_true + sig * rng.standard_normal(f_true.size), sig

    # OGLE (zero point 22, I)
    f, s = noisy(f_src * magn(t_ogle) + f_bl)
    m, e = 22.0 - 2.5 * np.log10(f), 2.5 / np.log(10) * s / f
    seeing = rng.uniform(0.9, 1.8, t_ogle.size)
    sky = rng.uniform(600, 1400, t_ogle.size)
    files["phot.dat"] = "".join(
        f"{ti + 2450000.0:.5f} {mi:.4f} {ei:.4f} {si:.2f} {ki:.1f}\n"
        for ti, mi, ei, si, ki in zip(t_ogle, m, e, seeing, sky, strict=True)
    )
    fluxes["OGLE"] = {"f_s": f_src, "f_b": f_bl}

    # KMTC pySIS: instrumental flux on zero point 28, minus a reference flux
    c = 10 ** (-0.4 * KMTC_OFFSET)  # instrumental / true on zero point 22
    f, s = noisy(c * (f_src * magn(t_kmtc) + f_bl))
    to28 = 10 ** (0.4 * (KMT_ZP - 22.0))
    f_ref = KMTC_REF_FRAC * c * base
    dflux, dferr = (f - f_ref) * to28, s * to28
    kmag = KMT_ZP - 2.5 * np.log10(f * to28)
    kerr = 2.5 / np.log(10) * s / f
    fwhm = rng.uniform(2.0, 4.5, t_kmtc.size)
    sky = rng.uniform(1500, 4000, t_kmtc.size)
    files["KMTC01_I.pysis"] = "# HJD Δflux flux_err mag mag_err fwhm sky\n" + "".join(
        f"{ti:.5f} {di:.3f} {ei:.3f} {mi:.4f} {me:.4f} {wi:.2f} {ki:.1f}\n"
        for ti, di, ei, mi, me, wi, ki in zip(t_kmtc, dflux, dferr, kmag, kerr, fwhm, sky, strict=True)
    )
    fluxes["KMTC01"] = {"f_s": c * f_src, "f_b": c * f_bl - f_ref}

    # KMTS TLC: magnitudes 0.25 mag fainter than I (instrumental)
    c = 10 ** (-0.4 * KMTS_OFFSET)
    f, s = noisy(c * (f_src * magn(t_kmts) + f_bl))
    m, e = 22.0 - 2.5 * np.log10(f), 2.5 / np.log(10) * s / f
    seeing = rng.uniform(1.0, 2.5, t_kmts.size)
    sky = rng.uniform(1500, 4000, t_kmts.size)
    files["KMTS01_I.tlc"] = "".join(
        f"{ti:.5f} {mi:.5f} {ei:.5f} {si:.2f} {ki:.1f}\n"
        for ti, mi, ei, si, ki in zip(t_kmts, m, e, seeing, sky, strict=True)
    )
    fluxes["KMTS01"] = {"f_s": c * f_src, "f_b": c * f_bl}

    truth = {
        "parameters": TRUTH,
        "fluxes": fluxes,
        "flux_units": "zero point 22 after the readers (pySIS read with zero_point = 28)",
        "n_points": {"OGLE": int(t_ogle.size), "KMTC01": int(t_kmtc.size), "KMTS01": int(t_kmts.size)},
        "seed": SEED,
        "conventions": "MulensModel v3; t_0 in HJD' = HJD - 2450000; alpha in degrees",
    }
    return files, truth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="verify the shipped files instead of writing them")
    args = ap.parse_args(argv)
    files, truth = make()
    files["truth.json"] = json.dumps(truth, indent=2) + "\n"
    if args.check:
        same = all((HERE / k).read_text() == v for k, v in files.items())
        print("shipped files reproduce" if same else "shipped files DIFFER from a fresh run")
        return 0 if same else 1
    for k, v in files.items():
        (HERE / k).write_text(v)
        print(f"wrote {HERE / k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
