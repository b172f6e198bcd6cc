"""Gallery 2: MOA-2008-BLG-310, a sub-Saturn planet at high magnification (Janczak et al. 2010).

    python examples/gallery/02_mb08310.py OUT [--quick] [--n N] [--time-budget S] [--seed S]
                                              [--overwrite] [--published-only]

Reads the seven light curves in ``data/MB08310/`` (NASA Exoplanet Archive tables as MulensModel
ships them: MOA, Auckland, Bronberg, Canopus, CTIO I and H, Danish), fits them with the ``kmtnet``
model through the exact stage (``fit(event, "kmtnet", refine="exact")``), writes the fit's files and
``comparison.md`` / ``comparison.json`` into OUT and prints ours against the published values. The
published planetary model's alpha is not in this gallery (see README.md), so only the published
single-lens, finite-source part is evaluated with our exact likelihood: the reference the planet
improves on (Δχ² ≈ 880 in the paper, on its own error bars).

``--quick``: 1024 flow samples, 12 local-fit starts, no basin hopping, a 120 s search budget, a
short ensemble chain (16 walkers x 80 steps) per finite-source mode, no
figures. ``--published-only``: no fit, only the χ² at the published values.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gallery import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("MB08310", doc=__doc__))
