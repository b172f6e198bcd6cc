"""Survey simulators: a spec (TOML data under ``simulators/``) turned into cadence, noise and priors.

>>> survey = Survey.load("roman")                       # or a path to a .toml file
>>> rng = np.random.default_rng(0)
>>> params = survey.sample_parameters(rng, 4)          # dict of (4,) arrays, alpha in degrees
>>> obs = survey.observations(rng, params)             # Observations: t, mask, seeing, ... (4, n_points)
>>> sigma = survey.flux_sigma(flux, obs.seeing)        # 1σ flux errors (zero point 22)
"""

from __future__ import annotations

import numpy as np

from mulens_sbi.survey.cadence import (
    Observations,
    build_schedule,
    draw_field,
    draw_observations,
    max_season_exposures,
)
from mulens_sbi.survey.noise import add_noise, flux_sigma, flux_to_mag, mag_sigma, mag_to_flux
from mulens_sbi.survey.priors import sample_parameters
from mulens_sbi.survey.spec import SpecError, SurveySpec, available_surveys, load_spec, parse_spec


class Survey:
    """A loaded survey spec plus its (deterministic, precomputed) exposure schedule."""

    def __init__(self, spec: SurveySpec):
        self.spec = spec
        self.schedule = build_schedule(spec)
        if spec.lightcurve.window == "season":
            most = max_season_exposures(spec, self.schedule)
            if spec.lightcurve.n_points < most:
                raise SpecError(f"{spec.path}: lightcurve.n_points: window = 'season' keeps whole seasons, "
                                f"so n_points must be >= the largest season's {most} exposures, got "
                                f"{spec.lightcurve.n_points}")

    @classmethod
    def load(cls, name_or_path: str) -> Survey:
        return cls(load_spec(name_or_path))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_points(self) -> int:
        return self.spec.lightcurve.n_points

    def sample_parameters(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Prior draws (see :func:`mulens_sbi.survey.priors.sample_parameters`)."""
        return sample_parameters(self.spec, rng, n)

    def observations(
        self, rng: np.random.Generator, params: dict[str, np.ndarray], field: np.ndarray | None = None
    ) -> Observations:
        """Observation times for events with ``params['t_0']``, ``params['t_E']``; field drawn if None."""
        t_0 = np.atleast_1d(np.asarray(params["t_0"], dtype=float))
        t_E = np.atleast_1d(np.asarray(params["t_E"], dtype=float))
        if field is None:
            field = draw_field(self.spec, rng, t_0.size)
        return draw_observations(self.spec, self.schedule, rng, t_0, t_E, np.asarray(field))

    def flux_sigma(self, flux: np.ndarray, seeing: np.ndarray | None = None) -> np.ndarray:
        """1σ flux errors for total flux ``flux`` (zero point 22) and per-exposure seeing."""
        return flux_sigma(flux, self.spec.noise, seeing if self.spec.is_ground else None)


__all__ = [
    "Observations",
    "SpecError",
    "Survey",
    "SurveySpec",
    "add_noise",
    "available_surveys",
    "flux_sigma",
    "flux_to_mag",
    "load_spec",
    "mag_sigma",
    "mag_to_flux",
    "parse_spec",
    "sample_parameters",
]
