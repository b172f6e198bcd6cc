"""``analyze(samples)``: modes → the offset relation on every pair → optional partner search → report.

Input: a mapping of (n,) arrays (dict, pandas DataFrame), a pyarrow Table, a parquet/CSV path (as
``mulens-sbi fit`` writes ``samples.parquet``: parameter columns plus ``weight`` and
``log_likelihood``), or a :class:`mulens_sbi.fit.FitResult`. Columns ``s, q, u_0, alpha`` are
required (alpha in degrees); ``t_0`` joins the clustering when present; ``t_E`` is needed for the
partner search and the light-curve figure.

Bad input: a missing required column, a non-numeric column, s ≤ 0 or q ≤ 0, or weights of the
wrong length / negative are a ``ValueError`` naming the column (and row). Rows with NaN/inf in a
used column or weight are **left out and counted** (``report.messages`` says how many, per
column); if none are left, ``ValueError``. A posterior with one mode gets a report with one mode,
no pairs and (with an event) the partner search; the verdict says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mulens_sbi.degeneracy.modes import Mode, find_modes
from mulens_sbi.degeneracy.pairs import PairResult, compare_modes
from mulens_sbi.degeneracy.partner import PartnerResult, predict_partner, search_partner
from mulens_sbi.summary import to_jsonable

__all__ = ["REPORT_FILES", "DegeneracyReport", "analyze", "read_samples"]

REQUIRED = ("s", "q", "u_0", "alpha")
OPTIONAL = ("t_0", "t_E", "rho")
#: files written by :meth:`DegeneracyReport.save` / ``mulens-sbi degeneracy``
REPORT_FILES = (
    "report.json",
    "degeneracy_caustics.png",
    "degeneracy_lightcurves.png",
    "degeneracy_relation.png",
)


def read_samples(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of a ``.parquet`` or ``.csv`` samples file as float arrays (CSV: a header row)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such samples file")
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        return {name: np.asarray(table[name].to_numpy(zero_copy_only=False)) for name in table.column_names}
    if p.suffix.lower() in (".csv", ".txt"):
        import csv

        with p.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            raise ValueError(f"{p}: empty file")
        header = [h.strip() for h in rows[0]]
        out = {}
        for j, name in enumerate(header):
            vals = []
            for i, row in enumerate(rows[1:], start=2):
                try:
                    vals.append(float(row[j]) if row[j].strip() != "" else np.nan)
                except (ValueError, IndexError):
                    raise ValueError(
                        f"{p}, line {i}, column {name!r}: not a number: "
                        f"{row[j] if j < len(row) else '<missing>'!r}"
                    ) from None
            out[name] = np.asarray(vals)
        return out
    raise ValueError(f"{p}: samples must be a .parquet or .csv file")


def _as_columns(samples) -> tuple[dict, object | None]:
    """Normalize the input to a dict of arrays; returns (columns, event or None)."""
    event = None
    if isinstance(samples, str | os.PathLike):
        return read_samples(samples), None
    if hasattr(samples, "samples") and hasattr(samples, "weights") and hasattr(samples, "event"):
        cols = dict(samples.samples)
        cols["weight"] = samples.weights
        if getattr(samples, "log_likelihood", None) is not None:
            cols["log_likelihood"] = samples.log_likelihood
        return cols, samples.event
    if hasattr(samples, "column_names") and hasattr(samples, "to_pydict"):  # pyarrow Table
        return {k: np.asarray(v) for k, v in samples.to_pydict().items()}, None
    if isinstance(samples, Mapping) or hasattr(samples, "columns"):
        keys = list(samples.columns) if hasattr(samples, "columns") else list(samples)
        return {str(k): np.asarray(samples[k]) for k in keys}, event
    raise ValueError(
        f"samples must be a mapping of arrays, a table, a FitResult or a file path, not "
        f"{type(samples).__name__}"
    )


def _numeric(name: str, v) -> np.ndarray:
    try:
        arr = np.asarray(v, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"samples: column {name!r} is not numeric") from None
    return arr


def _prepare(
    cols: dict, weights, log_likelihood
) -> tuple[dict, np.ndarray, np.ndarray | None, list[str], int]:
    missing = [k for k in REQUIRED if k not in cols]
    if missing:
        have = ", ".join(sorted(cols)) or "none"
        raise ValueError(
            f"samples lack column(s) {', '.join(repr(m) for m in missing)}: the degeneracy analysis needs "
            f"the binary-lens parameters {', '.join(REQUIRED)} (alpha in degrees); columns present: {have}"
        )
    use = [k for k in (*REQUIRED, *OPTIONAL) if k in cols]
    data = {k: _numeric(k, cols[k]) for k in use}
    n = data["s"].size
    for k, v in data.items():
        if v.size != n:
            raise ValueError(f"samples: column {k!r} has {v.size} values, column 's' has {n}")
    if n == 0:
        raise ValueError("samples: no rows")
    if weights is None and "weight" in cols:
        weights = cols["weight"]
    if log_likelihood is None and "log_likelihood" in cols:
        log_likelihood = cols["log_likelihood"]
    w = np.ones(n) if weights is None else _numeric("weight", weights)
    if w.size != n:
        raise ValueError(f"weights have {w.size} values for {n} samples")
    messages = []
    bad = np.zeros(n, dtype=bool)
    for k, v in data.items():
        nb = ~np.isfinite(v)
        if nb.any():
            messages.append(f"{int(nb.sum())} of {n} samples have NaN/inf in column {k!r} and were left out")
        bad |= nb
    nb = ~np.isfinite(w)
    if nb.any():
        messages.append(f"{int(nb.sum())} of {n} samples have a NaN/inf weight and were left out")
    bad |= nb
    for k in ("s", "q", "t_E", "rho"):
        if k in data:
            neg = ~bad & (data[k] <= 0)
            if neg.any():
                i = int(np.flatnonzero(neg)[0])
                raise ValueError(f"samples: column {k!r} must be > 0; row {i} has {data[k][i]!r}")
    neg = ~bad & (w < 0)
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise ValueError(f"samples: column 'weight' must be >= 0; row {i} has {w[i]!r}")
    keep = ~bad & (w > 0)
    if not keep.any():
        raise ValueError(
            "samples: no sample with finite values in "
            f"{', '.join(use)} and a positive weight is left to analyse"
        )
    ll = None if log_likelihood is None else _numeric("log_likelihood", log_likelihood)[keep]
    return {k: v[keep] for k, v in data.items()}, w[keep], ll, messages, n


@dataclass
class DegeneracyReport:
    """Result of :func:`analyze`. ``modes``, ``pairs`` and ``partners`` hold the details; ``verdict``
    is a one-line answer. ``event`` (if given) is kept for the figures, not serialized."""

    n_input: int
    n_used: int
    modes: list[Mode]
    pairs: list[PairResult]
    partners: list[PartnerResult]
    unlisted_weight: float
    method: str
    verdict: str
    messages: list[str] = field(default_factory=list)
    event: object | None = field(default=None, repr=False)
    seed: int = 0

    @property
    def n_modes(self) -> int:
        return len(self.modes)

    @property
    def degenerate(self) -> bool:
        """Some pair of modes obeys the offset relation, or the partner search found a viable partner."""
        return any(p.holds for p in self.pairs) or any(p.found for p in self.partners)

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "verdict": self.verdict,
                "degenerate": self.degenerate,
                "n_input": self.n_input,
                "n_used": self.n_used,
                "n_modes": self.n_modes,
                "unlisted_weight": self.unlisted_weight,
                "method": self.method,
                "messages": self.messages,
                "modes": [m.to_dict() for m in self.modes],
                "pairs": [p.to_dict() for p in self.pairs],
                "partner_search": [p.to_dict() for p in self.partners],
                "conventions": (
                    "MulensModel v3; x0 = s q/(1+q) + u_0/sin(alpha): where the trajectory crosses "
                    "the binary axis, from the primary towards the companion, theta_E; "
                    "f(s) = s - 1/s; relation f(s_A) + f(s_B) = 2 x0 (Zhang, Gaudi & Bloom 2022)"
                ),
                "seed": self.seed,
            }
        )

    def to_json(self, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> str:
        """The report as strict JSON (NaN → null); written to ``path`` if given (refused if it exists,
        unless ``overwrite``)."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        if path is not None:
            p = Path(path)
            if p.exists() and not overwrite:
                raise FileExistsError(f"{p} exists; pass overwrite=True (--overwrite) to replace it")
            p.write_text(text)
        return text

    # ------------------------------------------------------------------ text
    def lines(self) -> list[str]:
        out = [
            f"Degeneracy analysis: {self.verdict}",
            f"  {self.n_used} of {self.n_input} samples analysed; {self.n_modes} mode(s) "
            f"({self.unlisted_weight:.1%} of the mass in modes below the listing threshold)",
        ]
        for i, m in enumerate(self.modes):
            r = m.representative
            copies = (
                f"both reflection copies ({1 - m.reflected_fraction:.0%}/{m.reflected_fraction:.0%})"
                if m.has_both_copies
                else "one reflection copy"
            )
            out.append(
                f"  mode {i + 1}: weight {m.weight:.3f}, s = {m.median('s'):.4g}, q = {m.median('q'):.3g}, "
                f"u_0 = {m.median('u_0'):+.4f}, alpha = {m.median('alpha'):.1f}°, "
                f"x0 = {m.to_dict()['x0']['median']:+.4f}; {copies}"
                + (f"; best log L = {r['log_likelihood']:.1f}" if "log_likelihood" in r else "")
            )
        for p in self.pairs:
            out.append("  " + p.line())
            out += [f"    ! {w}" for w in p.warnings]
        for p in self.partners:
            out.append("  partner search, " + p.line())
        out += [f"  note: {m}" for m in self.messages]
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def to_markdown(self) -> str:
        md = [
            f"**Degeneracy analysis:** {self.verdict}",
            "",
            f"{self.n_used} of {self.n_input} samples analysed, {self.n_modes} mode(s).",
            "",
            "| mode | weight | s | q | u_0 | alpha | x0 | reflection copies |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, m in enumerate(self.modes):
            x0 = m.to_dict()["x0"]["median"]
            md.append(
                f"| {i + 1} | {m.weight:.3f} | {m.median('s'):.4g} | {m.median('q'):.3g} | "
                f"{m.median('u_0'):+.4f} | {m.median('alpha'):.1f} | {x0:+.4f} | "
                f"{'both' if m.has_both_copies else 'one'} |"
            )
        if self.pairs:
            md += [
                "",
                "| pair | class | f(s_a)+f(s_b)−2x0 | z | Δlog10 q | predicted s_a | s_a |",
                "|---|---|---|---|---|---|---|",
            ]
            for p in self.pairs:
                md.append(
                    f"| {p.a + 1}–{p.b + 1} | {p.classification} | {p.residual:+.4f} ± {p.residual_err:.4f} "
                    f"| {p.z:+.2f} | {p.dlog10_q:+.2f} ± {p.dlog10_q_err:.2f} | {p.s_a_predicted:.4g} | "
                    f"{p.s_a:.4g} |"
                )
            for p in self.pairs:
                md += [f"> {w}" for w in p.warnings]
        for p in self.partners:
            md += ["", "Partner search, " + p.line()]
        md += [f"> note: {m}" for m in self.messages]
        return "\n".join(md) + "\n"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    # ------------------------------------------------------------------ figures
    def plot_caustics(self):
        from mulens_sbi.degeneracy.plots import plot_mode_caustics

        return plot_mode_caustics(self)

    def plot_lightcurves(self, t=None):
        from mulens_sbi.degeneracy.plots import plot_mode_lightcurves

        return plot_mode_lightcurves(self, t)

    def plot_relation(self):
        from mulens_sbi.degeneracy.plots import plot_relation

        return plot_relation(self)

    def save(self, out: str | os.PathLike, *, overwrite: bool = False, figures: bool = True) -> list[Path]:
        """Write :data:`REPORT_FILES` into folder ``out`` (refused if any exists, unless ``overwrite``)."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a folder")
        names = REPORT_FILES if figures else REPORT_FILES[:1]
        existing = [f for f in names if (out / f).exists()]
        if existing and not overwrite:
            raise FileExistsError(
                f"{out} already holds {', '.join(existing)}: choose another --out or pass --overwrite"
            )
        out.mkdir(parents=True, exist_ok=True)
        self.to_json(out / "report.json", overwrite=True)
        written = [out / "report.json"]
        if figures:
            for name, fn in zip(
                REPORT_FILES[1:], (self.plot_caustics, self.plot_lightcurves, self.plot_relation), strict=True
            ):
                fn().savefig(out / name, dpi=110)
                written.append(out / name)
        return written


def _verdict(modes: list[Mode], pairs: list[PairResult], partners: list[PartnerResult]) -> str:
    holding = [p for p in pairs if p.holds]
    found = [p for p in partners if p.found]
    if holding:
        p = holding[0]
        txt = (
            f"modes {p.a + 1} and {p.b + 1} are an offset-degenerate pair ({p.classification}; relation "
            f"holds at z = {p.z:+.2f})"
        )
        if not p.informative:
            txt += ", but the test is uninformative (wide posteriors)"
        return txt
    if found:
        f = found[0]
        return (
            f"one mode; the partner search found a viable offset-degenerate partner at s = "
            f"{f.refined_partner['s']:.4g} (Δχ² = {f.delta_chi2:+.1f}) that the samples miss"
        )
    better = [p for p in partners if p.better]
    if better:
        b = better[0]
        return (
            f"the relation's partner of mode {b.mode + 1} (s = {b.refined_partner['s']:.4g}) fits far better "
            f"(Δχ² = {b.delta_chi2:+.1f}): the samples miss the best solution; check the fit's status"
        )
    if len(modes) == 1:
        if partners and partners[0].predicted is not None:
            return f"one mode; its predicted partner is disfavoured (Δχ² = {partners[0].delta_chi2:+.1f})"
        if partners:
            return "one mode; " + partners[0].note
        return "one mode: no pair to test (give the event to search for a missed partner)"
    return f"{len(modes)} modes, but no pair obeys the offset relation: not this degeneracy"


def analyze(
    samples,
    weights=None,
    event=None,
    *,
    log_likelihood=None,
    partner: bool | None = None,
    max_modes: int = 4,
    min_weight: float = 0.02,
    seed: int = 0,
    partner_kwargs: Mapping | None = None,
) -> DegeneracyReport:
    """Modes of a binary-lens posterior tested against the offset-degeneracy relation.

    Args:
        samples: see the module docstring (physical units, alpha in degrees).
        weights: (n,) posterior weights (default: the ``weight`` column, else equal).
        event: the data (:class:`mulens_sbi.event.Event`, optional): enables the partner search and
            the light-curve figure at the data's times.
        log_likelihood: (n,) values (default: the ``log_likelihood`` column); a mode's representative
            is then its highest-likelihood sample, else its weighted medians.
        partner: run the partner search from the heaviest mode (default: when ``event`` is given and
            the samples have t_0 and t_E). If the predicted partner is already one of the modes, it is
            reported as such and not refined.
        max_modes, min_weight: clustering settings (:func:`.modes.find_modes`).
        seed: seed of the clustering, the pair draws and the partner search.
        partner_kwargs: passed to :func:`.partner.search_partner` (population, n_steps, ...).

    Returns:
        :class:`DegeneracyReport`.
    """
    cols, ev = _as_columns(samples)
    event = event if event is not None else ev
    data, w, ll, messages, n_input = _prepare(cols, weights, log_likelihood)
    modes, unlisted, method = find_modes(
        data, w, log_likelihood=ll, max_modes=max_modes, min_weight=min_weight, seed=seed
    )
    pairs = [
        compare_modes(modes[i], modes[j], i, j, seed=seed)
        for i in range(len(modes))
        for j in range(i + 1, len(modes))
    ]
    can_search = event is not None and "t_0" in data and "t_E" in data
    if partner is None:
        partner = can_search
    elif partner and not can_search:
        raise ValueError("partner search needs the event and samples with t_0 and t_E")
    partners = []
    if partner and modes:
        sol = modes[0].representative
        pred = predict_partner(sol)
        match = None
        if pred is not None:
            for j, m in enumerate(modes[1:], start=1):
                lo, hi = m.summary["s"]["interval_95"]
                if lo * 0.98 <= pred["s"] <= hi * 1.02:
                    match = j
                    break
        if match is not None:
            partners.append(
                PartnerResult(
                    mode=0,
                    solution={k: float(v) for k, v in sol.items()},
                    predicted=pred,
                    matches_mode=match,
                    note=f"already found as mode {match + 1}",
                )
            )
        else:
            partners.append(search_partner(event, sol, mode=0, seed=seed, **dict(partner_kwargs or {})))
    return DegeneracyReport(
        n_input=n_input,
        n_used=int(w.size),
        modes=modes,
        pairs=pairs,
        partners=partners,
        unlisted_weight=unlisted,
        method=method,
        verdict=_verdict(modes, pairs, partners),
        messages=messages,
        event=event,
        seed=seed,
    )
