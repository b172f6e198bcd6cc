"""Fit one event from a script: the shipped simulated Roman event with the shipped ``roman`` model.

    python examples/01_fit_one_event.py OUT [--quick] [--n N] [--refine auto|exact|is|nuts|none]
                                            [--seed S] [--overwrite]

Reads ``examples/events/roman_example/roman_example.dat`` (a simulated Roman W149 light curve of a
wide planet crossing its planetary caustic; the true parameters are in ``truth.json`` next to it),
fits it with :func:`mulens_sbi.fit.fit`, writes the fit's files into ``OUT`` (``samples.parquet``,
``summary.json``, ``report.md``, ``fit_settings.toml`` and, unless ``--quick``, the figures) and
prints each parameter's posterior against the truth.

The settings are one :class:`mulens_sbi.fit.FitSettings`; the ``fit_settings.toml`` the fit writes
replays it (``fit(data, "roman", settings=load_settings(OUT / "fit_settings.toml", FitSettings))``,
or ``mulens-sbi fit roman_example.dat --settings OUT/fit_settings.toml --out OUT2``).

``--quick``: 1024 samples, importance sampling of the flow only (``refine="is"``), no figures:
about half a minute on 2 CPU cores, most of it compilation. Its result is honest rather than good:
for this caustic-crossing event the flow's importance sampling fails (status ``fail``). The default
(``refine="auto"``, 10000 samples) then runs the exact stage (global search, local fits, importance
sampling around every mode), which takes minutes and ends ``ok`` with the truth inside every 95%
interval.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from mulens_sbi.fit import FitSettings, fit, save_fit

EVENT = Path(__file__).resolve().parent / "events" / "roman_example"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="small run: 1024 samples, refine='is', no figures (about half a minute)")
    p.add_argument("--n", type=int, default=None, help="amortized samples (default 10000; 1024 with --quick)")
    p.add_argument("--refine", choices=("auto", "exact", "is", "nuts", "none"), default=None,
                   help="refinement (default auto; is with --quick)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace the fit files in an existing OUT")
    return p.parse_args(argv)


def in_interval(x: float, interval: list[float], name: str) -> bool:
    """``x`` inside ``interval`` (alpha in degrees: modulo 360, intervals lie on one branch)."""
    lo, hi = interval
    if name == "alpha":
        return (x - lo) % 360.0 <= hi - lo
    return lo <= x <= hi


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = FitSettings(
        n=args.n or (1024 if args.quick else 10_000),
        refine=args.refine or ("is" if args.quick else "auto"),
        seed=args.seed,
        progress=not args.quick,
    )
    truth = json.loads((EVENT / "truth.json").read_text())["parameters"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a failed importance sampling is in the result
        result = fit(EVENT / "roman_example.dat", "roman", settings=settings)
    print(result)
    lens_truth = {k: truth[k] for k in result.samples}
    files = save_fit(result, args.out, overwrite=args.overwrite, figures=not args.quick, truth=lens_truth)
    print(f"\n{'parameter':>9} {'truth':>12} {'median':>12} {'95% interval':>29}  truth inside")
    for k, p in result.summary["parameters"].items():
        lo, hi = p["interval_95"]
        inside = "yes" if in_interval(truth[k], p["interval_95"], k) else "NO"
        print(f"{k:>9} {truth[k]:12.6g} {p['median']:12.6g} [{lo:12.6g}, {hi:12.6g}]  {inside}")
    print(f"\nstatus {result.status} (method {result.method}); wrote {', '.join(f.name for f in files)} to "
          f"{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
