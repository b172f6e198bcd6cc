"""The offset-degeneracy relation (Zhang, Gaudi & Bloom 2022): re-exported from
:mod:`mulens_sbi.lensing.offset`, where the geometry lives so that the exact stage
(:mod:`mulens_sbi.inference.exact`, a lower layer) can place partner starts with it."""

from mulens_sbi.lensing.offset import (  # noqa: F401
    __all__,
    axis_crossing,
    crossing_time,
    f_sep,
    inverse_f,
    partner_separation,
    relation_residual,
    u0_for_crossing,
)
