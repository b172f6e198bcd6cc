"""Settings of one event's fit (:func:`mulens_sbi.fit.fit`) as data: a frozen, validated dataclass.

``FitSettings`` holds *how* an event is fitted (samples, refinement, seed, restricted prior, the
exact stage's settings, the file reader's options); *what* is fitted (the data and the model) is
given to :func:`~mulens_sbi.fit.fit` apart. It validates on construction (an error names the field
and its allowed range), reads from and writes to TOML with :mod:`mulens_sbi.settings_file`
(``load_settings(path, FitSettings)``, ``dump_settings(settings)``; the exact stage's settings are
the table ``[exact]``), and a fit records the one it used (``summary["settings"]`` and
``fit_settings.toml`` in the output folder), so a fit replays from its own output::

    settings = load_settings("out/fit_settings.toml", FitSettings)
    fit(data, model, settings=settings)   # the same samples and weights

A restricted prior is stored as the command line's ``NAME=LOW:HIGH`` items (TOML has no null for
an open bound): ``restrict = ["q=:0.01"]``; :attr:`FitSettings.restrict_ranges` parses them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mulens_sbi.inference.exact import ExactSettings
from mulens_sbi.io_simple import TIME_FORMATS
from mulens_sbi.restrict import format_restrict, parse_restrict
from mulens_sbi.settings_file import check_fields

__all__ = ["DEGENERACY", "FIT_SETTINGS_FILE", "REFINE", "FitSettings", "fit_settings"]

#: the refinement methods of :func:`mulens_sbi.fit.fit`
REFINE = ("none", "is", "auto", "exact", "nuts")
#: the degeneracy analyses of :func:`mulens_sbi.fit.fit`
DEGENERACY = ("off", "modes", "partner")
#: the file in a fit's output folder that holds the settings it used
FIT_SETTINGS_FILE = "fit_settings.toml"


def _restrict_problem(items: tuple[str, ...]) -> str | None:
    """Why ``items`` is not a valid restriction (the parser's message), or None."""
    try:
        parse_restrict(list(items))
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class FitSettings:
    """How :func:`mulens_sbi.fit.fit` fits one event (validated on construction).

    Attributes:
        n: amortized samples (proposal draws; >= 2).
        refine: ``"auto"`` (importance sampling of the flow, the exact stage where it fails),
            ``"exact"``, ``"is"``, ``"nuts"`` or ``"none"`` (see :func:`mulens_sbi.fit.fit`).
        seed: seed of everything random (flow draws, NUTS, plot draws; >= 0).
        proposal_dataset: the dataset the flow sees (None: the one with the most points).
        chunk_size: parameter sets per likelihood call (>= 1).
        nuts_warmup, nuts_samples, nuts_chains: NUTS warm-up steps (>= 0), draws (>= 1) and chains
            (>= 1), per chain.
        progress: progress bars.
        kind: the files' second column is ``"mag"`` or ``"flux"`` (None: from the header).
        time_format: ``"auto"`` or one of :data:`mulens_sbi.io_simple.TIME_FORMATS`.
        name: the event's name when read from files (None: from the file names).
        degeneracy: ``"modes"``, ``"partner"`` or ``"off"`` (the degeneracy analysis of the samples).
        restrict: a restricted prior as ``NAME=LOW:HIGH`` items (physical units: t_E days, alpha
            degrees; either bound may be empty), e.g. ``("q=:0.01",)``; empty: the model's prior.
        exact: settings of the exact stage (:class:`mulens_sbi.inference.exact.ExactSettings`; its
            ``time_budget_s`` is the search's wall-time budget in seconds).
    """

    n: int = 10_000
    refine: str = "auto"
    seed: int = 0
    proposal_dataset: str | None = None
    chunk_size: int = 256
    nuts_warmup: int = 300
    nuts_samples: int = 300
    nuts_chains: int = 2
    progress: bool = True
    kind: str | None = None
    time_format: str = "auto"
    name: str | None = None
    degeneracy: str = "modes"
    restrict: tuple[str, ...] = ()
    exact: ExactSettings = field(default_factory=ExactSettings)

    def __post_init__(self) -> None:
        if isinstance(self.restrict, list):  # a list from a caller: stored as a tuple (hashable)
            object.__setattr__(self, "restrict", tuple(self.restrict))
        problem = _restrict_problem(self.restrict) if isinstance(self.restrict, tuple) else "not a tuple"
        checks = {
            "n": (self.n >= 2, ">= 2"),
            "refine": (self.refine in REFINE, f"one of {', '.join(REFINE)}"),
            "seed": (self.seed >= 0, ">= 0"),
            "proposal_dataset": (self.proposal_dataset is None or self.proposal_dataset != "",
                                 "None or a dataset name"),
            "chunk_size": (self.chunk_size >= 1, ">= 1"),
            "nuts_warmup": (self.nuts_warmup >= 0, ">= 0"),
            "nuts_samples": (self.nuts_samples >= 1, ">= 1"),
            "nuts_chains": (self.nuts_chains >= 1, ">= 1"),
            "kind": (self.kind in (None, "mag", "flux"), "None, mag or flux"),
            "time_format": (self.time_format == "auto" or self.time_format in TIME_FORMATS,
                            f"auto or one of {', '.join(TIME_FORMATS)}"),
            "degeneracy": (self.degeneracy in DEGENERACY, f"one of {', '.join(DEGENERACY)}"),
            "restrict": (problem is None, f"NAME=LOW:HIGH items ({problem})"),
            "exact": (isinstance(self.exact, ExactSettings), "an ExactSettings"),
        }
        check_fields(self, checks)

    @property
    def restrict_ranges(self) -> dict[str, tuple[float | None, float | None]]:
        """``restrict`` parsed: ``{name: (low, high)}`` (None for the prior's own bound; empty: none)."""
        return parse_restrict(list(self.restrict))

    def replace(self, **changes: Any) -> FitSettings:
        """A copy with ``changes`` (validated again); ``restrict`` may be a ``{name: (low, high)}``
        mapping and ``time_budget_s`` sets ``exact.time_budget_s``."""
        if isinstance(changes.get("restrict"), Mapping):
            changes["restrict"] = format_restrict(changes["restrict"])
        if "time_budget_s" in changes:
            changes["exact"] = dataclasses.replace(changes.get("exact", self.exact),
                                                   time_budget_s=changes.pop("time_budget_s"))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the exact stage's settings as a dict, tuples as lists): the record in a fit's
        ``summary["settings"]``, read back by ``settings_from_dict(FitSettings, d)``."""
        def plain(v: Any) -> Any:
            return list(v) if isinstance(v, tuple) else v

        d = {k: plain(v) for k, v in dataclasses.asdict(self).items()}
        d["exact"] = {k: plain(v) for k, v in d["exact"].items()}
        return d


def fit_settings(settings: FitSettings | None = None, **overrides: Any) -> FitSettings:
    """``settings`` (default ``FitSettings()``) with the ``overrides`` that are not None (the keyword
    arguments of :func:`mulens_sbi.fit.fit`; see :meth:`FitSettings.replace`)."""
    base = FitSettings() if settings is None else settings
    if not isinstance(base, FitSettings):
        raise TypeError(f"settings must be a FitSettings, got {type(base).__name__}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**given) if given else base
