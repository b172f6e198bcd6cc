"""Gallery 3: OGLE-2016-BLG-1195, a planet with q ~ 5e-5 and close and wide solutions
(Shvartzvald et al. 2017; Bond et al. 2017).

    python examples/gallery/03_ob161195.py OUT [--quick] [--n N] [--time-budget S] [--seed S]
                                               [--overwrite] [--published-only]

Reads the nine KMTNet light curves in ``data/OB161195/`` (headerless HJD', I, σ_I as MulensModel
ships them; CTIO, SAAO and SSO, fields 01, 41 and 42), fits them with the ``kmtnet`` model through
the exact stage (``fit(event, "kmtnet", refine="exact")``), writes the fit's files and
``comparison.md`` / ``comparison.json`` into OUT and prints ours against the published close
solution, whose parallax (measured with Spitzer, not used here) is dropped: its static part is
evaluated with our exact likelihood.

``--quick``: 1024 flow samples, 12 local-fit starts, no basin hopping, a 120 s search budget, a
short ensemble chain (16 walkers x 80 steps) per finite-source mode, no
figures. ``--published-only``: no fit, only the χ² at the published solution.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gallery import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("OB161195", doc=__doc__))
