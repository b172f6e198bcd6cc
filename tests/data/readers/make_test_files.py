"""Write the small reader test files in this folder (seeded; rerun to reproduce them exactly).

    PYTHONPATH=. python tests/data/readers/make_test_files.py

One simulated point-lens event (t_0 = 9005.0 HJD', u_0 = 0.3, t_E = 10 d) written in every supported
format, plus malformed copies. Expected values are checked in tests/readers/ from the file text
itself (independent conversions), so the numbers here need not be known to the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
T0, U0, TE = 9005.0, 0.3, 10.0


def pspl(t):
    u = np.sqrt(((t - T0) / TE) ** 2 + U0**2)
    return (u**2 + 2) / (u * np.sqrt(u**2 + 4))


def main() -> None:
    rng = np.random.default_rng(20261128)
    n = 24
    t = np.sort(9000.0 + 10.0 * rng.random(n))
    a = pspl(t)
    # OGLE: I-band magnitudes, full HJD, seeing, sky
    f_s, f_b = 10 ** (-0.4 * (19.0 - 22)), 10 ** (-0.4 * (19.8 - 22))
    f = f_s * a + f_b
    sig = 0.01 * f
    fo = f + sig * rng.standard_normal(n)
    mag = 22 - 2.5 * np.log10(fo)
    err = 2.5 / np.log(10) * sig / fo
    seeing = 1.0 + 0.5 * rng.random(n)
    sky = 900 + 300 * rng.random(n)
    ogle = [
        f"{ti + 2450000:.5f} {mi:.3f} {ei:.3f} {si:.2f} {ki:.1f}"
        for ti, mi, ei, si, ki in zip(t, mag, err, seeing, sky, strict=True)
    ]
    (HERE / "ogle_phot.dat").write_text("\n".join(ogle) + "\n")
    bad = list(ogle)
    bad[6] = " ".join(bad[6].split()[:4])
    (HERE / "ogle_wrong_columns.dat").write_text("\n".join(bad) + "\n")
    bad = list(ogle)
    toks = bad[9].split()
    toks[1] = toks[1] + "x"
    bad[9] = " ".join(toks)
    (HERE / "ogle_text_in_number.dat").write_text("\n".join(bad) + "\n")
    bad = list(ogle)
    bad[11], bad[12] = bad[12], bad[11]
    (HERE / "ogle_unsorted.dat").write_text("\n".join(bad) + "\n")
    bad = list(ogle)
    bad.insert(15, bad[14])
    (HERE / "ogle_duplicate.dat").write_text("\n".join(bad) + "\n")
    bad = list(ogle)
    toks = bad[4].split()
    toks[1], toks[2] = "99.999", "9.999"
    bad[4] = " ".join(toks)
    (HERE / "ogle_placeholder.dat").write_text("\n".join(bad) + "\n")
    (HERE / "empty.dat").write_text("")

    # KMTNet pySIS: HJD', difference flux (negative at baseline possible), its error, mag, mag_err, fwhm, sky
    f_s2, f_ref = 2500.0, 6000.0  # instrumental units; F = F_s A + F_b with F_b = blend - reference
    dflux = f_s2 * a + 700.0 - f_ref + 30.0 * rng.standard_normal(n)
    dferr = np.full(n, 30.0) * (1 + 0.2 * rng.random(n))
    tot = dflux + f_ref
    kmag = 28.0 - 2.5 * np.log10(tot)
    kerr = 2.5 / np.log(10) * dferr / tot
    rows = [
        f"{ti:.5f} {di:.3f} {ei:.3f} {mi:.4f} {me:.4f} {si:.2f} {ki:.1f}"
        for ti, di, ei, mi, me, si, ki in zip(t + 0.01, dflux, dferr, kmag, kerr, seeing, sky, strict=True)
    ]
    head = "# HJD Δflux flux_err mag mag_err fwhm sky\n"
    (HERE / "KMTC01_I.pysis").write_text(head + "\n".join(rows) + "\n")
    bad = list(rows)
    toks = bad[3].split()
    toks[2] = "nan"
    bad[3] = " ".join(toks)
    (HERE / "KMTC01_I_nan.pysis").write_text(head + "\n".join(bad) + "\n")

    # KMTNet TLC: HJD', mag, mag_err, seeing, sky (no header)
    tmag = 22 - 2.5 * np.log10(f + sig * rng.standard_normal(n)) + 0.3
    tlc = [
        f"{ti:.5f} {mi:.4f} {ei:.4f} {si:.2f} {ki:.1f}"
        for ti, mi, ei, si, ki in zip(t + 0.02, tmag, err, seeing, sky, strict=True)
    ]
    (HERE / "KMTS01_I.tlc").write_text("\n".join(tlc) + "\n")

    # MOA (NASA Exoplanet Archive IPAC table): HJD (full), flux, flux_err, obsID, JD, fwhm, sky, airmass
    mflux = 1445.0 * 10 ** (-0.4 * (19.4 - 20)) * (a - 1.0) + 20.0 * rng.standard_normal(n)
    merr = 20.0 * (1 + 0.1 * rng.random(n))
    hdr = [
        "\\fixlen = T",
        "\\ MOA light curve (simulated for mulens-sbi tests)",
        "\\ field = gb13, chip = 5",
        "|           HJD|        flux|    flux_err|  obsID|            JD|  fwhm|    sky| airmass|",
        "|        double|      double|      double|   char|        double|double| double|  double|",
        "|          days|      counts|      counts|       |          days|arcsec| counts|        |",
        "|          null|        null|        null|   null|          null|  null|   null|    null|",
    ]
    moa = [
        f" {ti + 2450000.0:13.5f} {fi:12.3f} {ei:12.3f} {'B' + str(1000 + i):>7s} "
        f"{ti + 2450000.0 - 0.002:14.5f} {si:6.2f} {ki:7.1f} {1.1 + 0.01 * i:8.3f}"
        for i, (ti, fi, ei, si, ki) in enumerate(zip(t + 0.03, mflux, merr, seeing, sky, strict=True))
    ]
    (HERE / "moa_gb13.tbl").write_text("\n".join(hdr + moa) + "\n")
    bad = list(moa)
    bad[5] = bad[5].replace(f"{mflux[5]:12.3f}", f"{'null':>12s}")
    (HERE / "moa_null.tbl").write_text("\n".join(hdr + bad) + "\n")
    bad = list(moa)
    bad[7] = " ".join(bad[7].split()[:-1])
    (HERE / "moa_wrong_columns.tbl").write_text("\n".join(hdr + bad) + "\n")

    # NASA Exoplanet Archive style IPAC table with HJD' and magnitudes
    nex_hdr = [
        "\\ KMTNet light curve, archive style (simulated)",
        "|HJD-2450000  |mag     |mag_err |",
        "|double       |double  |double  |",
    ]
    nex = [f" {ti:12.5f}  {mi:7.4f}  {ei:7.4f}" for ti, mi, ei in zip(t + 0.04, mag + 0.1, err, strict=True)]
    (HERE / "archive_kmt.tbl").write_text("\n".join(nex_hdr + nex) + "\n")

    # plain CSV
    csv = ["time,mag,err"] + [f"{ti:.5f},{mi:.4f},{ei:.4f}" for ti, mi, ei in zip(t, mag, err, strict=True)]
    (HERE / "plain.csv").write_text("\n".join(csv) + "\n")


if __name__ == "__main__":
    main()
