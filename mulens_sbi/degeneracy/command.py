"""``mulens-sbi degeneracy``: its settings as data and the one function the command calls.

:class:`DegeneracySettings` says which samples to analyse, with which event data (optional: enables
the partner search with the exact likelihood), and where the report goes; it validates on
construction and reads from TOML (``mulens-sbi degeneracy --settings FILE.toml``,
:mod:`mulens_sbi.settings_file`). :func:`run_degeneracy` refuses an output folder that already holds
report files (unless ``overwrite``) *before* the analysis, runs :func:`~.report.analyze` and writes
:data:`~.report.REPORT_FILES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mulens_sbi.degeneracy.report import REPORT_FILES, DegeneracyReport, analyze
from mulens_sbi.io_simple import read_event
from mulens_sbi.settings_file import check_fields
from mulens_sbi.simulate import OutputExistsError

__all__ = ["DegeneracySettings", "run_degeneracy"]


@dataclass(frozen=True)
class DegeneracySettings:
    """Settings of ``mulens-sbi degeneracy`` (validated on construction).

    Attributes:
        samples: posterior samples, parquet or CSV with columns s, q, u_0, alpha (degrees)
            [, t_0 (HJD'), t_E (days), weight, log_likelihood] (e.g. a fit's ``samples.parquet``).
        out: output folder (``report.json`` and the figures).
        data: the event's photometry files, one dataset each (empty: no partner search).
        seed: seed of the clustering, the pair draws and the partner search (>= 0).
        max_modes: at most this many modes (>= 1).
        min_weight: modes with less posterior mass are dropped (0 <= min_weight < 1).
        overwrite: replace report files already in ``out``.
        figures: write the figures (else ``report.json`` only).
    """

    samples: str
    out: str
    data: tuple[str, ...] = ()
    seed: int = 0
    max_modes: int = 4
    min_weight: float = 0.02
    overwrite: bool = False
    figures: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.data, list):
            object.__setattr__(self, "data", tuple(self.data))
        checks = {
            "samples": (isinstance(self.samples, str) and self.samples != "", "a non-empty path"),
            "out": (isinstance(self.out, str) and self.out != "", "a non-empty path"),
            "data": (isinstance(self.data, tuple) and all(isinstance(d, str) and d for d in self.data),
                     "file paths"),
            "seed": (self.seed >= 0, ">= 0"),
            "max_modes": (self.max_modes >= 1, ">= 1"),
            "min_weight": (0 <= self.min_weight < 1, "0 <= min_weight < 1"),
        }
        check_fields(self, checks)


def run_degeneracy(settings: DegeneracySettings) -> tuple[DegeneracyReport, list[Path]]:
    """Analyse ``settings.samples`` and write the report into ``settings.out``; returns the report
    and the files written. Raises :class:`mulens_sbi.simulate.OutputExistsError` (before any work)
    when ``out`` holds report files and ``overwrite`` is False."""
    out = Path(settings.out)
    names = REPORT_FILES if settings.figures else REPORT_FILES[:1]
    existing = [f for f in names if (out / f).exists()]
    if existing and not settings.overwrite:
        raise OutputExistsError(f"{out} already holds {', '.join(existing)}: choose another --out or pass "
                                "--overwrite")
    event = read_event(list(settings.data)) if settings.data else None
    report = analyze(settings.samples, event=event, max_modes=settings.max_modes,
                     min_weight=settings.min_weight, seed=settings.seed)
    files = report.save(out, overwrite=settings.overwrite, figures=settings.figures)
    return report, files
