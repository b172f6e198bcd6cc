"""Event data: photometric datasets of one microlensing event, validated on construction.

A :class:`Dataset` is one telescope/band/pipeline: times ``t`` (HJD' = HJD − 2450000, days), fluxes
``flux`` and 1σ uncertainties ``sigma`` on MulensModel's magnitude zero point 22
(``F = 10^(−0.4 (m − 22))``). Each dataset gets its own source and blend flux in the likelihood
(``F = F_s·A(t) + F_b``), so datasets must not be merged across instruments.

Validation (every problem is a ``ValueError`` naming the dataset, the column and the row):

* ``t``, ``flux``, ``sigma`` must be 1-D, of equal length and finite (NaN/inf are reported with
  the first offending row and the number of bad rows; nothing is dropped silently — remove such
  rows yourself, or use :meth:`Dataset.from_arrays` with an explicit ``mask``).
* ``sigma`` must be > 0.
* at least :data:`MIN_POINTS` points (two linear fluxes are fitted per dataset, plus at least one
  degree of freedom).
* **unsorted times are sorted** (stable, the rows move together), with a ``UserWarning`` naming the
  dataset: the likelihood needs time order for the binary-lens solver's warm starts, and sorting
  loses no data. Ties in time are allowed.

Arrays are stored as read-only float64 copies, so a frozen dataclass really is immutable.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MIN_POINTS",
    "ZERO_POINT",
    "Dataset",
    "Event",
    "flux_to_mag",
    "mag_to_flux",
]

#: magnitude zero point of the flux system (MulensModel's)
ZERO_POINT = 22.0
#: smallest number of points a dataset may have (2 linear fluxes + 1 degree of freedom)
MIN_POINTS = 3
_LN10_04 = 0.4 * math.log(10.0)


def mag_to_flux(mag, mag_err=None):
    """Magnitudes (zero point 22) → flux ``10^(−0.4 (m − 22))``; with ``mag_err`` also
    ``σ_F = 0.4·ln 10·F·σ_m`` (first-order propagation)."""
    f = 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - ZERO_POINT))
    if mag_err is None:
        return f
    return f, _LN10_04 * f * np.asarray(mag_err, dtype=float)


def flux_to_mag(flux):
    """Flux (zero point 22) → magnitude; NaN where ``flux <= 0``."""
    f = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, ZERO_POINT - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


def _column(name: str, col: str, values) -> np.ndarray:
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"dataset {name!r}: column {col!r} is not numeric: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"dataset {name!r}: column {col!r} must be 1-D, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"dataset {name!r}: column {col!r} has {rows.size} non-finite value(s) (NaN or inf); "
            f"first at row {rows[0]} (value {float(arr[rows[0]])!r}). Remove or mask these rows explicitly."
        )
    return arr


@dataclass(frozen=True)
class Dataset:
    """One photometric dataset of an event (see the module docstring for units and validation).

    Attributes:
        name: label (unique within an event), e.g. ``"OGLE-I"``.
        t: times, HJD' (days), sorted on construction.
        flux: fluxes on zero point 22 (any linear unit works if used consistently).
        sigma: 1σ flux uncertainties, > 0, same unit as ``flux``.
        band: optional band label (informational).
    """

    name: str
    t: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    band: str | None = None

    def __post_init__(self) -> None:
        name = str(self.name)
        t = _column(name, "t", self.t)
        flux = _column(name, "flux", self.flux)
        sigma = _column(name, "sigma", self.sigma)
        if not (t.size == flux.size == sigma.size):
            raise ValueError(
                f"dataset {name!r}: columns differ in length: t {t.size}, flux {flux.size}, "
                f"sigma {sigma.size}"
            )
        nonpos = sigma <= 0
        if nonpos.any():
            rows = np.flatnonzero(nonpos)
            raise ValueError(
                f"dataset {name!r}: column 'sigma' must be > 0; {rows.size} value(s) are not, first at "
                f"row {rows[0]} (value {float(sigma[rows[0]])!r})"
            )
        if t.size < MIN_POINTS:
            raise ValueError(
                f"dataset {name!r}: has {t.size} point(s); at least {MIN_POINTS} are needed "
                "(source and blend flux are fitted per dataset)"
            )
        if np.any(np.diff(t) < 0):
            order = np.argsort(t, kind="stable")
            warnings.warn(
                f"dataset {name!r}: times were not sorted; rows sorted by time (no data dropped)",
                UserWarning,
                stacklevel=3,
            )
            t, flux, sigma = t[order], flux[order], sigma[order]
        for arr in (t, flux, sigma):
            arr.setflags(write=False)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "flux", flux)
        object.__setattr__(self, "sigma", sigma)

    @property
    def n(self) -> int:
        """Number of points."""
        return int(self.t.size)

    @classmethod
    def from_magnitudes(
        cls, name: str, t, mag, mag_err, band: str | None = None
    ) -> Dataset:
        """Build from magnitudes: ``F = 10^(−0.4 (m − 22))``, ``σ_F = 0.4·ln 10·F·σ_m``.

        Non-finite magnitudes or errors, and ``mag_err <= 0``, are reported by row (as
        ``flux``/``sigma`` problems of this dataset) like any other bad input.
        """
        m = _column(str(name), "mag", mag)
        e = _column(str(name), "mag_err", mag_err)
        if m.size != e.size:
            raise ValueError(f"dataset {name!r}: columns differ in length: mag {m.size}, mag_err {e.size}")
        f, sf = mag_to_flux(m, e)
        return cls(name=name, t=t, flux=f, sigma=sf, band=band)

    @classmethod
    def from_arrays(
        cls, name: str, t, flux, sigma, mask=None, band: str | None = None
    ) -> Dataset:
        """Build from fixed-length arrays with a boolean ``mask`` (True = keep), e.g. a row of a
        simulated training set (``mulens_sbi.data.shards.read_simulation``): rows with ``mask=False``
        are excluded because the caller says so; all kept rows are validated as usual."""
        if mask is None:
            return cls(name=name, t=t, flux=flux, sigma=sigma, band=band)
        keep = np.asarray(mask, dtype=bool)
        cols = [np.asarray(c, dtype=float) for c in (t, flux, sigma)]
        for col, c in zip(("t", "flux", "sigma"), cols, strict=True):
            if c.shape != keep.shape:
                raise ValueError(
                    f"dataset {name!r}: column {col!r} has shape {c.shape} but mask has {keep.shape}"
                )
        return cls(name=name, t=cols[0][keep], flux=cols[1][keep], sigma=cols[2][keep], band=band)


@dataclass(frozen=True)
class Event:
    """A microlensing event: one or more :class:`Dataset` (each with its own F_s, F_b).

    Attributes:
        datasets: tuple of datasets with unique names (a list is converted).
        name: event label.
    """

    datasets: tuple[Dataset, ...]
    name: str = "event"

    def __post_init__(self) -> None:
        ds = self.datasets
        if isinstance(ds, Dataset):
            ds = (ds,)
        ds = tuple(ds)
        if not ds:
            raise ValueError(f"event {self.name!r}: needs at least one dataset")
        for i, d in enumerate(ds):
            if not isinstance(d, Dataset):
                raise ValueError(f"event {self.name!r}: datasets[{i}] is a {type(d).__name__}, not a Dataset")
        names = [d.name for d in ds]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"event {self.name!r}: dataset names must be unique; repeated: {dup}")
        object.__setattr__(self, "datasets", ds)
        object.__setattr__(self, "name", str(self.name))

    @property
    def n_datasets(self) -> int:
        return len(self.datasets)

    @property
    def n_points(self) -> int:
        """Total number of points over all datasets."""
        return sum(d.n for d in self.datasets)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.datasets)

    def time_range(self) -> tuple[float, float]:
        """(first, last) time over all datasets, HJD'."""
        return (min(float(d.t[0]) for d in self.datasets), max(float(d.t[-1]) for d in self.datasets))

    @classmethod
    def single(
        cls, t, flux, sigma, name: str = "event", dataset: str = "data", band: str | None = None
    ) -> Event:
        """An event with one dataset."""
        return cls(datasets=(Dataset(dataset, t, flux, sigma, band=band),), name=name)

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset], name: str = "event") -> Event:
        return cls(datasets=tuple(datasets), name=name)
