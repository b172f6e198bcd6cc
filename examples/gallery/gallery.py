"""Shared code of the gallery examples: the published solutions, the data files, the fit and the
comparison of our fit with the published answer.

Every numbered script (``01_ob03235.py``, ...) calls :func:`main` with its event's key. The published
parameters below are in **mulens-sbi's conventions** (MulensModel v3, docs/conventions.md): ``t_0``
in HJD' = HJD − 2450000, ``u_0`` signed from the centre of mass, ``alpha`` in degrees, ``rho`` in
θ_E. Where a value came from an older MulensModel example or from a paper in another convention,
its entry says how it was converted (``source`` and ``conversion``). README.md in this folder gives
the papers, the uncertainties and what is not certain.

The χ² at a published solution is computed with our exact likelihood
(:func:`mulens_sbi.likelihood.evaluate`: the magnification of the static binary lens — finite source
with ``rho``, no limb darkening — and each dataset's source and blend flux solved linearly), on the
data files as published (no error rescaling). Parallax and orbital motion, which some published
solutions include, are not modelled: only the static part of those solutions is evaluated.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
COMPARED = ("t_0", "u_0", "t_E", "s", "q", "alpha", "rho")

#: the gallery's events: data files (relative to ``data/``), the paper, the published solutions
EVENTS: dict[str, dict] = {
    "OB03235": {
        "name": "OGLE-2003-BLG-235 / MOA-2003-BLG-53",
        "files": ["OB03235/OB03235_OGLE.tbl.txt", "OB03235/OB03235_MOA.tbl.txt"],
        "paper": "Bond et al. 2004, ApJ 606, L155 (2004ApJ...606L.155B)",
        "kind": "planet (first microlensing planet), caustic crossing, 2 telescopes (OGLE I, MOA flux)",
        "solutions": [
            {
                "label": "published (wide, s > 1)",
                "params": {"t_0": 2848.06, "u_0": 0.133, "t_E": 61.5, "s": 1.120, "q": 0.0039,
                           "alpha": 43.8, "rho": 0.00096},
                "static": True,
                "source": "MulensModel's tutorial (rpoleski/MulensModel, its 1S2L model): "
                          "t_0 = 2452848.06, u_0 = 0.133, t_E = 61.5, "
                          "rho = 0.00096, q = 0.0039, s = 1.120, alpha = 223.8 (pre-v3 MulensModel); "
                          "Bond et al. 2004 Table 1",
                "conversion": "t_0 − 2450000; alpha 223.8 − 180 = 43.8 deg (MulensModel v3 turned alpha "
                              "by 180 deg; checked: MulensModel 3.12 gives chi2 1774.4 at 43.8 and 2850.4 "
                              "at 223.8 on these files, ours 1774.4 and 2850.4)",
            },
        ],
    },
    "MB08310": {
        "name": "MOA-2008-BLG-310",
        "files": [f"MB08310/{f}" for f in (
            "MOA_0300089_PLC_007.tbl", "Auck_0300089_PLC_001.tbl", "Bron_0300089_PLC_002.tbl",
            "Canopus_0300089_PLC_003.tbl", "CTIO_H_0300089_PLC_004.tbl", "CTIO_I_0300089_PLC_005.tbl",
            "Danish_0300089_PLC_006.tbl")],
        "paper": "Janczak et al. 2010, ApJ 711, 731 (2010ApJ...711..731J)",
        "kind": "planet (sub-Saturn, q = 3.3e-4), high magnification, finite source, 7 telescopes",
        "solutions": [
            {
                # the published planetary model's alpha is not given here (not verified), so its chi2
                # cannot be evaluated; the single-lens part is the reference the planet improves on
                "label": "published single lens (finite source), reference only",
                "params": {"t_0": 4656.39975, "u_0": 0.00300, "t_E": 11.14, "rho": 0.05487 / 11.14},
                "static": True,
                "source": "MulensModel examples/example_05_MB08310.py (rpoleski/MulensModel): t_0 = "
                          "2454656.39975, u_0 = 0.00300, t_E = 11.14, t_star = 0.05487 (point lens, "
                          "finite source, 'From Janczak et al. 2010')",
                "conversion": "t_0 − 2450000; rho = t_star / t_E = 0.004925",
            },
        ],
    },
    "OB161195": {
        "name": "OGLE-2016-BLG-1195 / MOA-2016-BLG-350",
        "files": [f"OB161195/{f}I.dat" for f in (
            "KCT01", "KCT41", "KCT42", "KSA01", "KSA41", "KSA42", "KSS01", "KSS41", "KSS42")],
        "paper": "Shvartzvald et al. 2017, ApJ 840, L3; Bond et al. 2017, MNRAS 469, 2434",
        "kind": "planet (q ~ 5e-5), close/wide degenerate, KMTNet 9 data sets (Spitzer not used)",
        "solutions": [
            {
                "label": "Shvartzvald+17 close (−,−), static part",
                "params": {"t_0": 7568.7692, "u_0": 0.05321, "t_E": 9.96, "s": 0.9842, "q": 5.43e-5,
                           "alpha": 124.514, "rho": 0.00290},
                "static": False,
                "source": "MulensModel use_case_31_flux_info.py / use_case_25 (rpoleski/MulensModel), "
                          "'Close-- model': t_0 = 2457568.7692, u_0 = -0.05321, t_E = 9.96, rho = 0.00290, "
                          "pi_E_N = -0.2154, pi_E_E = -0.380, alpha = -0.9684 rad, s = 0.9842, "
                          "q = 0.0000543 (pre-v3 MulensModel)",
                "conversion": "t_0 − 2450000; (u_0, alpha) = (-0.05321, -55.486 deg) in that (2018) use "
                              "case -> (+0.05321, 124.514 deg): alpha + 180 as for OB03235 and the sign "
                              "of u_0 flipped, chosen on the data: of the four distinct combinations "
                              "(+-u_0; alpha, alpha + 180) the static point-source chi2 on the nine files "
                              "is 11841.6 for this one, 13889.9, 24191.2 and 35547.4 for the others "
                              "(single lens 12438.8); parallax (pi_E_N, pi_E_E) dropped: the static part",
            },
        ],
    },
}


def event_files(key: str) -> list[Path]:
    """The data files of event ``key`` (absolute paths)."""
    return [DATA / f for f in EVENTS[key]["files"]]


def read(key: str):
    """The event's data as a :class:`mulens_sbi.event.Event` (the one reader, no options)."""
    from mulens_sbi.readers import read_event

    return read_event([str(p) for p in event_files(key)], name=key)


def chi2_at(event, params: dict) -> dict:
    """χ² (total and per dataset) of ``params`` (our conventions) with our exact likelihood, fluxes
    solved per dataset; ``rho`` in ``params`` makes it finite-source (uniform disc)."""
    from mulens_sbi.likelihood import evaluate, pack_event

    names = ("t_0", "u_0", "t_E", "s", "q", "alpha", "rho")
    p = {k: np.atleast_1d(float(params[k])) for k in names if params.get(k) is not None}
    res = evaluate(p, pack_event(event))
    chi2 = float(np.asarray(res.chi2)[0])
    per = np.asarray(res.chi2_datasets)[0]
    n_points = int(sum(d.n for d in event.datasets))
    return {"chi2": chi2, "ok": bool(np.asarray(res.ok)[0]), "n_points": n_points,
            "chi2_datasets": {d.name: float(c) for d, c in zip(event.datasets, per, strict=True)}}


def refit_published(event, params: dict, max_iter: int = 25) -> dict:
    """A local fit started at a published solution with our likelihood (Levenberg–Marquardt,
    :func:`mulens_sbi.inference.localfit.levenberg_marquardt_fd`, every parameter of the solution
    free, finite source when it has ``rho``): the optimum of the published basin on these files,
    with its χ² — what our global search should reach if it finds that basin."""
    from mulens_sbi.inference.localfit import levenberg_marquardt_fd, to_physical
    from mulens_sbi.likelihood import pack_event

    names = tuple(k for k in COMPARED if params.get(k) is not None)
    starts = {k: np.atleast_1d(float(params[k])) for k in names}
    fb = levenberg_marquardt_fd(pack_event(event), starts, names, max_iter=max_iter)
    best = {k: float(np.asarray(v)[0]) for k, v in to_physical(fb.z, names).items()}
    return {"params": best, "chi2": float(fb.chi2[0]), "chi2_start": float(fb.chi2_start[0]),
            "iterations": int(fb.iterations), "converged": bool(fb.converged[0])}


def canonical(params: dict, like: dict | None = None) -> dict:
    """``params`` mapped to ``q ≤ 1`` (``q → 1/q``, ``alpha → 180 − alpha``, ``u_0 → −u_0``: the same
    lens seen from the other body) and, when ``like`` is given, to the sign of its ``u_0`` (the mirror
    image ``(u_0, alpha) → (−u_0, −alpha)``, the same light curve), so that the numbers compare."""
    p = dict(params)
    if p.get("q", 0.0) > 1.0:
        p["q"] = 1.0 / p["q"]
        p["alpha"] = 180.0 - p["alpha"]
        p["u_0"] = -p["u_0"]
    if like is not None and np.sign(p["u_0"]) != np.sign(like["u_0"]):
        p["u_0"] = -p["u_0"]
        p["alpha"] = -p["alpha"]
    if "alpha" in p:
        p["alpha"] = p["alpha"] % 360.0
    return p


def parse_args(argv, doc: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("out", help="output folder (the fit's files and comparison.json / comparison.md)")
    ap.add_argument("--quick", action="store_true",
                    help="reduced run: 1024 flow samples, 12 starts, no hops, 120 s budget, no figures")
    ap.add_argument("--n", type=int, default=None, help="flow samples (default 10000; 1024 with --quick)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="exact stage's search budget in seconds (default 600; 120 with --quick)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--overwrite", action="store_true", help="replace the fit's files in an existing OUT")
    ap.add_argument("--published-only", action="store_true",
                    help="no fit: only the chi2 at the published solutions (about a minute, compilation)")
    ap.add_argument("--reuse", action="store_true",
                    help="compare an existing fit in OUT (its summary.json) instead of fitting again")
    ap.add_argument("--no-refit", action="store_true",
                    help="skip the local fit started at each published solution (a minute or two)")
    return ap.parse_args(argv)


def fit_event(key: str, args: argparse.Namespace):
    """Run ``fit(event, model="kmtnet", refine="exact")`` with the example's settings."""
    from mulens_sbi.fit import FitSettings, fit
    from mulens_sbi.inference.exact import ExactSettings

    if args.quick:
        exact = ExactSettings(n_starts=12, hops=0, max_finite=1, finite_draws=256, finite_walkers=16,
                              finite_steps=80, time_budget_s=args.time_budget or 120.0, seed=args.seed)
    else:
        exact = ExactSettings(time_budget_s=args.time_budget or 600.0, seed=args.seed)
    settings = FitSettings(n=args.n or (1024 if args.quick else 10_000), refine="exact", seed=args.seed,
                           progress=False, name=key, exact=exact)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a failed stage is in the result's status
        return fit(read(key), "kmtnet", settings=settings)


def best_mode(summary: dict) -> dict | None:
    """The lowest-χ² mode of the exact stage (its parameters), else the best sample."""
    modes = ((summary.get("exact") or {}).get("modes")) or []
    if modes:
        return dict(modes[0]["params"])
    best = summary.get("best_sample") or {}
    return {k: best[k] for k in COMPARED if k in best} or None


def _fmt(v, name: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if name == "t_0":
        return f"{v:.3f}"
    return f"{v:.4g}" if name else f"{v:.1f}"


def comparison_markdown(key: str, rows: list[dict], ours: dict | None, ours_chi2: dict | None,
                        status: str | None, modes: list | None = None) -> str:
    ev = EVENTS[key]
    lines = [f"# {ev['name']}: ours against {ev['paper']}", ""]
    if ours is None:
        lines += [f"Our fit: not run or no solution (status {status}).", ""]
    head = "| solution | " + " | ".join(COMPARED) + " | χ² (ours, exact likelihood) | Δχ² to our best |"
    lines += [head, "|" + "---|" * (len(COMPARED) + 3)]
    best = ours_chi2["chi2"] if ours_chi2 else math.nan
    if ours is not None:
        lines.append("| **ours (best mode)** | " + " | ".join(_fmt(ours.get(k), k) for k in COMPARED)
                     + f" | {_fmt(best)} | 0 |")
    for r in rows:
        lines.append(f"| {r['label']} | " + " | ".join(_fmt(r["params"].get(k), k) for k in COMPARED)
                     + f" | {_fmt(r['chi2'])} | {_fmt(r['chi2'] - best)} |")
    if modes:
        lines += ["", "Modes of our exact stage (mirror images (u_0, α) → (−u_0, −α) and duplicates within "
                  "Δχ² 0.001 merged, their posterior weights summed):", "",
                  "| mode | origin | " + " | ".join(COMPARED) + " | χ² | Δχ² | posterior weight |",
                  "|" + "---|" * (len(COMPARED) + 5)]
        groups: list[dict] = []
        for i, m in enumerate(modes):
            p = canonical(m["params"], {"u_0": 1.0})
            w = float(m.get("posterior_weight") or 0.0)
            for g in groups:
                if abs(m["chi2"] - g["chi2"]) < 1e-3 and abs(p.get("s", 0) - g["p"].get("s", 0)) < 1e-3:
                    g["w"] += w
                    break
            else:
                groups.append({"i": i, "origin": m["origin"], "p": p, "chi2": m["chi2"],
                               "d": m["delta_chi2"], "w": w})
        for g in groups:
            vals = " | ".join(_fmt(g["p"].get(k), k) for k in COMPARED)
            lines.append(f"| {g['i']} | {g['origin']} | {vals} | {_fmt(g['chi2'])} | {_fmt(g['d'])} | "
                         f"{g['w']:.3g} |")
    n = rows[0]["n_points"] if rows else (ours_chi2 or {}).get("n_points")
    lines += ["", f"{n} points; χ² on the published error bars (no rescaling); status of our fit: {status}.",
              "Published solutions with parallax or orbital motion are evaluated static "
              "(those terms dropped)."]
    return "\n".join(lines) + "\n"


def main(key: str, argv=None, doc: str = "") -> int:
    """Fit event ``key`` (unless ``--published-only``), write the fit and the comparison to OUT, print
    ours against the published solutions."""
    args = parse_args(argv, doc or __doc__)
    out = Path(args.out)
    ev = EVENTS[key]
    event = read(key)
    print(f"{ev['name']}: {', '.join(f'{d.name} ({d.n})' for d in event.datasets)}")
    t0 = time.perf_counter()
    rows = []
    for sol in ev["solutions"]:
        c = chi2_at(event, sol["params"])
        rows.append({"label": sol["label"], "params": sol["params"], "static": sol["static"], **c})
        print(f"published {sol['label']}: chi2 {c['chi2']:.1f} for {c['n_points']} points "
              f"({', '.join(f'{k} {v:.1f}' for k, v in c['chi2_datasets'].items())})")
        if not args.no_refit and "s" in sol["params"]:
            r = refit_published(event, sol["params"], max_iter=10 if args.quick else 25)
            rows.append({"label": f"{sol['label']}, refitted with our likelihood", "params": r["params"],
                         "static": True, "refit": r, **chi2_at(event, r["params"])})
            found = ", ".join(f"{k} {v:.5g}" for k, v in r["params"].items())
            print(f"  refitted from there: chi2 {r['chi2']:.1f} after {r['iterations']} steps "
                  f"(converged {r['converged']}): {found}")
    timings = {"published_chi2_s": time.perf_counter() - t0}
    ours = ours_chi2 = None
    status = "not run"
    summary = None
    if args.reuse:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        status = summary["status"]
    elif not args.published_only:
        from mulens_sbi.fit import save_fit

        t0 = time.perf_counter()
        result = fit_event(key, args)
        timings["fit_s"] = time.perf_counter() - t0
        print(result)
        try:
            save_fit(result, out, overwrite=args.overwrite, figures=not args.quick)
        except Exception as exc:  # a figure that fails must not lose the fit
            print(f"saving the figures failed ({type(exc).__name__}: {exc}); saved without figures")
            save_fit(result, out, overwrite=True, figures=False)
        summary = result.summary
        status = result.status
    if summary is not None:
        raw = best_mode(summary)
        if raw is not None:
            like = ev["solutions"][0]["params"] if ev["solutions"] else None
            ours = canonical(raw, like)
            ours_chi2 = chi2_at(event, raw)
    out.mkdir(parents=True, exist_ok=True)
    modes = ((summary or {}).get("exact") or {}).get("modes")
    md = comparison_markdown(key, rows, ours, ours_chi2, status, modes)
    (out / "comparison.md").write_text(md, encoding="utf-8")
    record = {"event": key, "paper": ev["paper"], "status": status, "ours": ours, "ours_chi2": ours_chi2,
              "published": rows, "timings_s": timings, "quick": args.quick,
              "exact_modes": modes}
    (out / "comparison.json").write_text(json.dumps(record, indent=1, default=float), encoding="utf-8")
    print()
    print(md)
    return 0
