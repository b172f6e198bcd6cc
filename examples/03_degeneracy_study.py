"""A degeneracy study from a script: how far from the planetary caustic does the inner–outer
degeneracy of a wide planet survive in Roman data?

    python examples/03_degeneracy_study.py OUT [--quick] [--offsets K1 K2 ...] [--n N]
                                               [--refine auto|exact|is|none] [--partner | --no-partner]

Zhang, Gaudi & Bloom (2022): two binary-lens solutions A and B with the same q are degenerate when
``f(s_A) + f(s_B) = 2·x0`` (``f(s) = s − 1/s``, x0 where the source trajectory crosses the binary
axis; ``docs/degeneracy.md``). For a wide planet B (s_B = 1.3, q = 1e-4, alpha = 90°, t_E = 12 d)
and trajectories crossing the axis at ``x0 = f(s_B) + K·h`` outside its planetary caustic (h = the
caustic's half size ``2√q / (s√(s² − 1))``), for each offset K:

1. the relation's partner A (:func:`mulens_sbi.degeneracy.partner_separation`); a Roman light curve
   of B (cadence, gaps and noise of ``simulators/roman.toml``, W149 source 20 mag, 20% blend);
2. Δχ² of A and of the single lens against B's data (each with its best linear fluxes): how
   degenerate the pair is, and how strong the planet's signal;
3. the posterior of the event (:func:`mulens_sbi.fit.fit` with the shipped ``roman`` model and a
   :class:`~mulens_sbi.fit.FitSettings`) and the degeneracy analyzer on it (``result.degeneracy``,
   :func:`mulens_sbi.degeneracy.analyze`: modes, pairs tested against the relation);
4. optionally (``--partner``) the partner search from the truth B with the exact likelihood
   (:func:`mulens_sbi.degeneracy.search_partner`): is A a viable solution (Δχ² < 10)?

Writes ``OUT/study.json`` and ``OUT/study.md`` (one row per offset) and each offset's degeneracy
report (``OUT/offset_K/report.json`` and, unless ``--quick``, its figures).

``--quick``: offsets 1.5 and 5, 512 samples, ``refine="is"``, no partner search, no figures: about
a minute on 2 CPU cores, most of it compilation. The default (offsets 1.2 … 8, 4000 samples,
``refine="auto"``, partner search) runs the exact stage where the flow's importance sampling fails:
minutes per offset.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from mulens_sbi import magnification_batch
from mulens_sbi.degeneracy import partner_separation, search_partner, u0_for_crossing
from mulens_sbi.degeneracy.relation import f_sep
from mulens_sbi.event import Event
from mulens_sbi.fit import FitSettings, fit
from mulens_sbi.survey import Survey, mag_to_flux

S_B, Q, ALPHA, T_E = 1.3, 1e-4, 90.0, 12.0
SOURCE_MAG, BLEND_FRACTION = 20.0, 0.2
LENS = ("t_0", "u_0", "t_E", "s", "q", "alpha")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="small run: offsets 1.5 and 5, 512 samples, refine='is', no partner search")
    p.add_argument("--offsets", type=float, nargs="+", default=None, metavar="K",
                   help="x0 - f(s_B) in units of the planetary caustic's half size "
                        "(default 1.2 1.5 2 3 5 8)")
    p.add_argument("--n", type=int, default=None, help="amortized samples per fit (default 4000; 512 quick)")
    p.add_argument("--refine", choices=("auto", "exact", "is", "none"), default=None,
                   help="the fit's refinement (default auto; is with --quick)")
    p.add_argument("--partner", action=argparse.BooleanOptionalAction, default=None,
                   help="run the partner search from the truth (default: yes; no with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of the fits (default 0)")
    return p.parse_args(argv)


def crossing_at(s: float, x0: float, t_cross: float) -> dict[str, float]:
    """Lens parameters whose trajectory crosses the binary axis at ``x0`` (θ_E) at ``t_cross`` (HJD')."""
    u0 = float(u0_for_crossing(x0, ALPHA, s, Q))
    a = math.radians(ALPHA)
    return {"t_0": t_cross + T_E * u0 * math.cos(a) / math.sin(a), "u_0": u0, "t_E": T_E, "s": s,
            "q": Q, "alpha": ALPHA}


def chi2_linear(event: Event, magnification: np.ndarray) -> float:
    """χ² of ``event``'s one dataset against ``F_s·A + F_b`` with the best (F_s, F_b)."""
    d = event.datasets[0]
    design = np.stack([magnification, np.ones_like(magnification)], axis=1) / d.sigma[:, None]
    coef = np.linalg.lstsq(design, d.flux / d.sigma, rcond=None)[0]
    return float(np.sum((d.flux / d.sigma - design @ coef) ** 2))


def roman_event(b: dict, t_cross: float, survey: Survey, rng: np.random.Generator) -> Event:
    """A Roman W149 light curve of solution ``b``, 12 days around the axis crossing."""
    obs = survey.observations(rng, {"t_0": np.array([b["t_0"]]), "t_E": np.array([T_E])},
                              field=np.zeros(1, np.int16))
    keep = obs.mask[0] & (np.abs(obs.t[0] - t_cross) < 6.0)
    t = obs.t[0][keep]
    f_s = float(mag_to_flux(SOURCE_MAG))
    f_b = f_s * BLEND_FRACTION / (1.0 - BLEND_FRACTION)
    mag, _ = magnification_batch(t, {k: [b[k]] for k in LENS})
    flux = f_s * np.asarray(mag[0]) + f_b
    sigma = survey.flux_sigma(flux)
    return Event.single(t, flux + sigma * rng.standard_normal(t.size), sigma, name="degenerate-B")


def study_offset(k: float, args, settings: FitSettings, survey: Survey, out: Path) -> dict:
    season = survey.spec.seasons[0]
    t_cross = 0.5 * (season.start + season.end)
    half = 2 * math.sqrt(Q) / (S_B * math.sqrt(S_B**2 - 1))
    x0 = f_sep(S_B) + k * half
    s_a = float(partner_separation(S_B, x0))
    a, b = crossing_at(s_a, x0, t_cross), crossing_at(S_B, x0, t_cross)
    event = roman_event(b, t_cross, survey, np.random.default_rng(args.seed))
    t = event.datasets[0].t
    mag, _ = magnification_batch(t, {p: [a[p], b[p]] for p in LENS})
    mag = np.asarray(mag)
    u = np.hypot((t - b["t_0"]) / T_E, b["u_0"])
    single = (u * u + 2) / (u * np.sqrt(u * u + 4))
    chi2_b = chi2_linear(event, mag[1])
    row = {"offset_K": k, "x0": x0, "s_A": s_a, "s_B": S_B, "n_points": event.n_points,
           "delta_chi2_A_vs_B": chi2_linear(event, mag[0]) - chi2_b,
           "delta_chi2_single_lens_vs_B": chi2_linear(event, single) - chi2_b}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a failed importance sampling is in the result
        result = fit(event, "roman", settings=settings)
    deg = result.degeneracy
    row.update({"fit_status": result.status, "fit_method": result.method, "ess": result.summary["ess"],
                "n_modes": deg.n_modes if deg is not None else None,
                "verdict": deg.verdict if deg is not None else None,
                "pairs": [{"classification": p.classification, "holds": bool(p.holds), "z": p.z}
                          for p in (deg.pairs if deg is not None else [])],
                "mode_s": [m.representative["s"] for m in deg.modes] if deg is not None else []})
    if deg is not None:
        deg.save(out / f"offset_{k:g}", overwrite=True, figures=not args.quick)
    if args.partner:
        ps = search_partner(event, b, n_steps=4, lm_steps=10, seed=args.seed)
        row["partner_search"] = {"found": bool(ps.found), "delta_chi2": ps.delta_chi2,
                                 "s_partner": ps.refined_partner["s"] if ps.refined_partner else None,
                                 "line": ps.line()}
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.partner is None:
        args.partner = not args.quick
    offsets = args.offsets or ([1.5, 5.0] if args.quick else [1.2, 1.5, 2.0, 3.0, 5.0, 8.0])
    settings = FitSettings(n=args.n or (512 if args.quick else 4000),
                           refine=args.refine or ("is" if args.quick else "auto"), seed=args.seed,
                           degeneracy="modes", progress=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    survey = Survey.load("roman")
    rows = []
    lines = ["| K | x0 | s_A | Δχ² A vs B | Δχ² single lens vs B | fit | ESS | modes | pair "
             "| partner search |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k in offsets:
        r = study_offset(k, args, settings, survey, out)
        rows.append(r)
        pair = "; ".join(f"{p['classification']} ({'holds' if p['holds'] else 'fails'})"
                         for p in r["pairs"]) or "–"
        ps = r.get("partner_search")
        ps_text = "–" if ps is None else ps["line"]
        lines.append(f"| {k:g} | {r['x0']:.4f} | {r['s_A']:.4f} | {r['delta_chi2_A_vs_B']:.1f} | "
                     f"{r['delta_chi2_single_lens_vs_B']:.0f} | {r['fit_status']} ({r['fit_method']}) | "
                     f"{r['ess']:.1f} | {r['n_modes']} | {pair} | {ps_text} |")
        print(lines[-1], flush=True)
    (out / "study.json").write_text(json.dumps({"settings": settings.to_dict(), "s_B": S_B, "q": Q,
                                                "alpha": ALPHA, "t_E": T_E, "rows": rows}, indent=2,
                                               default=float) + "\n")
    (out / "study.md").write_text(
        f"# Inner–outer degeneracy of a wide planet (s_B = {S_B}, q = {Q:g}, alpha = {ALPHA:g}°) in Roman "
        f"data\n\nK: x0 − f(s_B) in units of the planetary caustic's half size. Command: `python "
        f"examples/03_degeneracy_study.py OUT{' --quick' if args.quick else ''}`.\n\n"
        + "\n".join(lines) + "\n")
    print(f"wrote {out / 'study.json'} and {out / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
