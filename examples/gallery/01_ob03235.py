"""Gallery 1: OGLE-2003-BLG-235 / MOA-2003-BLG-53, the first microlensing planet (Bond et al. 2004).

    python examples/gallery/01_ob03235.py OUT [--quick] [--n N] [--time-budget S] [--seed S]
                                              [--overwrite] [--published-only]

Reads the OGLE (I magnitudes) and MOA (difference fluxes) light curves in ``data/OB03235/`` (NASA
Exoplanet Archive tables as MulensModel ships them), fits them with the ``kmtnet`` model through
the exact stage (``fit(event, "kmtnet", refine="exact")``), writes the fit's files and
``comparison.md`` / ``comparison.json`` into OUT, and prints ours against the published solution
(t_0, u_0, t_E, s, q, alpha, rho) with the χ² of our best mode and of the published solution, both
with our exact likelihood on the same data.

``--quick``: 1024 flow samples, 12 local-fit starts, no basin hopping, a 120 s search budget, a
short ensemble chain (16 walkers x 80 steps) per finite-source mode, no
figures. ``--published-only``: no fit, only the χ² at the published solution (about a minute of
compilation on 2 cores).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gallery import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("OB03235", doc=__doc__))
