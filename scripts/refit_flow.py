"""Refit a trained model's flow on fresh simulations with its embedding frozen (see docs/npe.md).

Usage:
    python scripts/refit_flow.py MODEL SIM OUT [--enrich CROSS] [--work DIR] [--n-draws 4]
        [--holdout-shards 5] [--workers 2] [--overwrite]

SIM is a ``mulens-sbi simulate`` folder the model was not trained on (its last ``--holdout-shards``
shards are left for ``mulens-sbi validate``); CROSS a ``--condition caustic-crossing`` folder of the
same spec, mixed in with prior weights. The pre-binned sets, class flags and the refit's checkpoint
are kept in ``--work`` (default OUT/_refit).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mulens_sbi.refit import run_refit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--enrich", default=None)
    ap.add_argument("--enrich-fraction", type=float, default=0.25)
    ap.add_argument("--work", default=None)
    ap.add_argument("--n-draws", type=int, default=4)
    ap.add_argument("--holdout-shards", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args()
    run_refit(a.model, a.data, a.out, a.work or str(Path(a.out) / "_refit"), enrich=a.enrich,
              enrich_fraction=a.enrich_fraction, n_draws=a.n_draws, holdout_shards=a.holdout_shards,
              workers=a.workers, overwrite=a.overwrite)


if __name__ == "__main__":
    main()
