"""Batched inference for catalogs: a batch of event refs → one result row per event.

:class:`BatchInference` loads the model once (a Ray actor holds one) and runs, for a batch of events:

1. **read** each event (:func:`mulens_sbi.catalog.inputs.load_event`);
2. **preprocess** its proposal dataset (the one with the most points, as in :func:`mulens_sbi.fit.fit`)
   onto the model's binned input grid, so any sampling works;
3. **amortized samples** for the whole batch in one jitted call
   (:meth:`mulens_sbi.models.Model.sample_batched`; the batch is padded to ``batch_size`` so every
   call has one compiled shape); the key of batch ``b`` of shard ``k`` is
   ``fold_in(fold_in(PRNGKey(seed), k), b)``, so a shard's rows depend only on the run's settings,
   not on the engine or on which worker ran it;
4. ``refine="is"`` (default): **importance sampling** per event with the exact multi-dataset
   likelihood (each dataset its own F_s, F_b marginalised; :func:`mulens_sbi.fit.evaluate_samples`,
   jitted, padded shapes) and the model's prior (:func:`mulens_sbi.fit.model_priors`);
   ``refine="none"``: the flow's samples with equal weights (status ``unchecked``);
   with ``restrict`` (e.g. ``"q=:0.01"``, :mod:`mulens_sbi.restrict`) the flow is truncated to the
   range and the importance-sampling prior restricted to it; ``restricted_mass`` is the flow's
   probability of the range;
5. **summaries** (:mod:`mulens_sbi.summary`): weighted medians and 68/95% intervals, the planet
   probability P(q < 0.01) (weighted and the flow's alone), modes, the best sample and its
   per-dataset fluxes; the **degeneracy** classification of
   :func:`mulens_sbi.degeneracy.analyze` (without the partner search) when that package is present.

Any exception in steps 1–5 for one event becomes that event's row with ``status = "error"`` and
``failure_reason`` (``"<step>: <message>"``); the other events go on.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mulens_sbi.catalog.inputs import EventRef, event_from_record, load_event, read_parquet_rows
from mulens_sbi.restrict import RESTRICT_ROUNDS, no_sample_message, parse_restrict, restrict_priors

__all__ = [
    "CATALOG_REFINE",
    "PARAMS",
    "SCHEMA",
    "BatchInference",
    "InferenceSettings",
    "degeneracy_available",
    "empty_row",
]

PARAMS = ("t_0", "u_0", "t_E", "s", "q", "alpha")
#: refinements a catalog run accepts (as :func:`mulens_sbi.fit.fit`'s, without NUTS)
CATALOG_REFINE = ("is", "auto", "exact", "none")
_STATS = ("median", "lo68", "hi68", "lo95", "hi95")


def _schema() -> pa.Schema:
    f = [
        ("index", pa.int64()),
        ("event", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("failure_reason", pa.string()),
        ("n_datasets", pa.int32()),
        ("datasets", pa.string()),
        ("n_points", pa.int64()),
        ("proposal_dataset", pa.string()),
        ("t_ref", pa.float64()),
        ("flow_acceptance", pa.float64()),
        ("n_samples", pa.int64()),
        ("ess", pa.float64()),
        ("efficiency", pa.float64()),
        ("log_evidence", pa.float64()),
        ("log_evidence_err", pa.float64()),
    ]
    for p in PARAMS:
        f += [(f"{p}_{s}", pa.float64()) for s in _STATS]
    f += [(f"best_{p}", pa.float64()) for p in PARAMS]
    f += [
        ("p_planet", pa.float64()),
        ("p_planet_flow", pa.float64()),
        ("restricted_mass", pa.float64()),
        ("best_log_likelihood", pa.float64()),
        ("best_chi2", pa.float64()),
        ("n_modes", pa.int32()),
        ("modes_json", pa.string()),
        ("fluxes_json", pa.string()),
        ("degenerate", pa.bool_()),
        ("degeneracy", pa.string()),
        ("degeneracy_json", pa.string()),
        ("method", pa.string()),
        ("exact_json", pa.string()),
        ("messages", pa.string()),
        ("time_s", pa.float64()),
    ]
    return pa.schema(f)


#: the columns of a catalog (one row per event); ``time_s`` is the only non-reproducible one
SCHEMA = _schema()


def empty_row(ref: EventRef) -> dict:
    row = {name: None for name in SCHEMA.names}
    row.update(index=ref.index, event=ref.event, source=ref.source)
    return row


@dataclass(frozen=True)
class InferenceSettings:
    """What determines the rows (part of a run's identity): model, samples, refinement, seed, sizes."""

    model: str = "roman"
    n_samples: int = 1000
    refine: str = "is"
    seed: int = 0
    batch_size: int = 16
    chunk_size: int = 256
    degeneracy: bool = True
    #: a restricted prior, comma-separated ``NAME=LOW:HIGH`` items (``mulens-sbi fit --restrict``); "" none
    restrict: str = ""

    @property
    def restrict_map(self) -> dict:
        """``restrict`` parsed: ``{name: (low, high)}`` (empty without a restriction)."""
        return parse_restrict([i for i in self.restrict.split(",") if i.strip()]) if self.restrict else {}

    def __post_init__(self) -> None:
        _ = self.restrict_map  # validates the items
        if self.refine not in CATALOG_REFINE:
            raise ValueError(f"refine must be one of {', '.join(CATALOG_REFINE)} for catalogs, "
                             f"got {self.refine!r}")
        for k in ("n_samples", "batch_size", "chunk_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.n_samples < 2:
            raise ValueError(f"n_samples must be >= 2, got {self.n_samples}")


def degeneracy_available() -> bool:
    try:
        from mulens_sbi.degeneracy import analyze  # noqa: F401
    except ImportError:
        return False
    return True


class BatchInference:
    """Holds a loaded model; :meth:`run_shard` turns event refs into rows (see the module docstring)."""

    def __init__(self, settings: InferenceSettings):
        from mulens_sbi.models import load_model

        self.settings = settings
        self.model = load_model(settings.model)
        self.restrict = settings.restrict_map
        self.model.within(self.restrict)  # a range outside the model's prior fails here, not per event
        self.has_degeneracy = settings.degeneracy and degeneracy_available()

    # ------------------------------------------------------------------------------------------
    def run_shard(self, shard: int, refs: list[EventRef], progress=None) -> list[dict]:
        """Rows of one shard's events, in the order given (batches of ``batch_size``)."""
        rows: list[dict] = []
        records = self._parquet_records(refs)
        bs = self.settings.batch_size
        for b, start in enumerate(range(0, len(refs), bs)):
            batch = refs[start : start + bs]
            rows.extend(self.run_batch(batch, self._key(shard, b), records))
            if progress is not None:
                progress(len(batch))
        return rows

    def _key(self, shard: int, batch: int):
        import jax

        return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.settings.seed), shard), batch)

    @staticmethod
    def _parquet_records(refs: list[EventRef]) -> dict[int, dict]:
        by_file: dict[str, list[EventRef]] = {}
        for r in refs:
            if r.kind == "parquet":
                by_file.setdefault(r.path, []).append(r)
        out: dict[int, dict] = {}
        for path, rs in by_file.items():
            try:
                tab = read_parquet_rows(path, sorted(r.row for r in rs))
            except Exception:  # noqa: BLE001 - reported per event by load_event below
                continue
            recs = tab.to_pylist()
            for r, rec in zip(sorted(rs, key=lambda x: x.row), recs, strict=True):
                out[r.index] = rec
        return out

    # ------------------------------------------------------------------------------------------
    def run_batch(self, refs: list[EventRef], key, records: dict[int, dict] | None = None) -> list[dict]:
        """Rows for one batch of events (never raises for a bad event)."""
        records = records or {}
        s = self.settings
        t_batch = time.perf_counter()
        rows = {r.index: empty_row(r) for r in refs}
        events, preps = {}, {}
        for r in refs:
            row = rows[r.index]
            try:
                if r.kind == "parquet" and r.index in records:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", UserWarning)
                        ev = event_from_record(r, records[r.index])
                else:
                    ev = load_event(r)
                row.update(n_datasets=ev.n_datasets, datasets=",".join(ev.names), n_points=ev.n_points)
            except Exception as exc:  # noqa: BLE001
                self._fail(row, "read", exc)
                continue
            try:
                ds = max(ev.datasets, key=lambda d: d.n)
                from mulens_sbi.event import Event

                prep = self.model.preprocess(Event(datasets=(ds,), name=ev.name))
                row.update(proposal_dataset=ds.name, t_ref=prep.t_ref)
                events[r.index], preps[r.index] = ev, prep
            except Exception as exc:  # noqa: BLE001
                self._fail(row, "preprocess", exc)
        ok = [r for r in refs if r.index in preps]
        if ok:
            try:
                xs = np.stack([preps[r.index].x for r in ok])
                t_ref = np.array([preps[r.index].t_ref for r in ok])
                pad = s.batch_size - len(ok)
                if pad > 0:  # one compiled shape for every batch
                    xs = np.concatenate([xs, np.repeat(xs[:1], pad, axis=0)])
                    t_ref = np.concatenate([t_ref, np.repeat(t_ref[:1], pad)])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # leakage: reported per event below
                    samples, log_q, info = self.model.sample_batched(
                        xs, t_ref, s.n_samples, key, restrict=self.restrict, return_info=True,
                        **({"max_rounds": RESTRICT_ROUNDS} if self.restrict else {}))
                if self.restrict:
                    for j, r in enumerate(ok):
                        rows[r.index]["restricted_mass"] = float(info["mass_within"][j])
                acceptance = np.asarray(info["acceptance"], dtype=float)
                samples = {k: np.asarray(v) for k, v in samples.items()}
                log_q = np.asarray(log_q)
            except Exception as exc:  # noqa: BLE001
                for r in ok:
                    self._fail(rows[r.index], "flow", exc)
                ok = []
            for j, r in enumerate(ok):
                t0 = time.perf_counter()
                try:
                    self._event_posterior(
                        rows[r.index], events[r.index], {k: v[j] for k, v in samples.items()}, log_q[j],
                        float(acceptance[j]),
                    )
                except Exception as exc:  # noqa: BLE001
                    self._fail(rows[r.index], "posterior", exc)
                rows[r.index]["time_s"] = time.perf_counter() - t0
        share = (time.perf_counter() - t_batch) / max(len(refs), 1)
        for row in rows.values():
            row["time_s"] = share if row["time_s"] is None else row["time_s"]
        return [rows[r.index] for r in refs]

    @staticmethod
    def _fail(row: dict, step: str, exc: BaseException) -> None:
        row["status"] = "error"
        msg = str(exc).strip() or type(exc).__name__
        row["failure_reason"] = f"{step}: {type(exc).__name__}: {msg}"[:2000]

    # ------------------------------------------------------------------------------------------
    def _event_posterior(self, row: dict, event, raw: dict, log_q: np.ndarray,
                         acceptance: float = 1.0) -> None:
        from mulens_sbi.event import Event
        from mulens_sbi.fit import MIN_ESS, evaluate_samples, exact_posterior, model_priors
        from mulens_sbi.inference.importance import importance_weights, log_prior
        from mulens_sbi.summary import find_modes, planet_probability, summarize_parameters, to_jsonable

        s = self.settings
        good = np.isfinite(log_q)
        for p in PARAMS:
            good &= np.isfinite(raw[p])
        messages = []
        row["flow_acceptance"] = float(good.mean())
        if not good.any() and self.restrict:
            raise ValueError(no_sample_message(self.restrict, good.size))
        if not good.any():
            raise ValueError(
                "the model returned no usable sample (all outside the prior): the light curve is "
                "probably unlike anything the model was trained on"
            )
        if not good.all():
            why = "(outside the prior or the restricted range)" if self.restrict else "(prior leakage)"
            messages.append(f"{int((~good).sum())} of {good.size} flow samples missing {why}")
        samples = {p: raw[p][good] for p in PARAMS}
        lq = log_q[good]
        m = lq.size
        if s.refine in ("is", "auto", "exact"):
            priors = model_priors(self.model, event)
            if self.restrict:
                priors = restrict_priors(priors, self.restrict)
            lp = np.asarray(log_prior(priors, {k: samples[k] for k in priors if priors[k].dist != "fixed"}))
            ev = evaluate_samples(event, samples, chunk_size=s.chunk_size)
            ll = ev["log_likelihood"]
            # the flow was truncated to the prior (and restriction): `acceptance` of its mass
            imp = importance_weights(ll, lp, lq, proposal_mass=acceptance)
            diag = {"ess": imp.ess, "efficiency": imp.efficiency, "log_evidence": imp.log_evidence,
                    "log_evidence_err": imp.log_evidence_err, "verdict": imp.verdict}
            status = "fail" if (imp.status == "fail" or imp.ess < MIN_ESS) else imp.status
            weights = imp.weights
            row["method"] = "is"
            if s.refine == "exact" or (s.refine == "auto" and status == "fail"):
                # the same public step as fit(): global search, local fits, IS around every mode
                view = Event(datasets=(max(event.datasets, key=lambda d: d.n),), name=event.name)
                flow_lp = None if self.restrict else (lambda th: self.model.log_prob(th, view))
                out = exact_posterior(event, priors, samples, ll, s.n_samples, s.seed, messages=messages,
                                      flow_log_prob=flow_lp, flow_acceptance=acceptance)
                if out is None:
                    raise ValueError("exact stage: " + (messages[-1] if messages else "no mode found"))
                samples = {p: out["samples"][p] for p in PARAMS}
                ev, lp, weights, status = out["evaluation"], out["log_prior"], out["weights"], out["status"]
                ll = ev["log_likelihood"]
                diag = {k: out["importance"][k] for k in diag}
                row["method"] = "exact"
                row["exact_json"] = json.dumps(to_jsonable(out["info"]))
                m = ll.size
            if not diag["ess"] > 0:
                raise ValueError(f"importance sampling failed: {diag['verdict']}")
            row.update(
                ess=diag["ess"],
                efficiency=diag["efficiency"],
                log_evidence=diag["log_evidence"],
                log_evidence_err=diag["log_evidence_err"],
            )
            if status != "ok":
                messages.append(diag["verdict"])
            best = int(np.argmax(np.where(weights > 0, ll + lp, -np.inf)))
            row.update(best_log_likelihood=float(ll[best]), best_chi2=float(ev["chi2"][best]))
            fluxes = {
                name: {
                    "f_s": float(ev["f_s"][best, d]),
                    "f_b": float(ev["f_b"][best, d]),
                    "f_s_err": float(ev["f_s_err"][best, d]),
                }
                for d, name in enumerate(event.names)
            }
            ll_modes = np.where(np.isfinite(ll), ll, -np.inf)
        else:
            weights = np.full(m, 1.0 / m)
            status = "unchecked"
            best = 0
            fluxes = {}
            ll_modes = None
            row.update(ess=float(m), efficiency=1.0)
        row["status"] = status
        row["n_samples"] = m
        row["p_planet"] = planet_probability(samples["q"], weights)
        row["p_planet_flow"] = planet_probability(samples["q"])
        summ = summarize_parameters(samples, weights)
        for p in PARAMS:
            ps = summ[p]
            row[f"{p}_median"] = ps["median"]
            row[f"{p}_lo68"], row[f"{p}_hi68"] = ps["interval_68"]
            row[f"{p}_lo95"], row[f"{p}_hi95"] = ps["interval_95"]
            row[f"best_{p}"] = float(samples[p][best])
        ess = 1.0 / float(np.sum(weights**2))
        try:
            modes = find_modes(samples, weights, ess=ess, log_likelihood=ll_modes, seed=s.seed)
            row["n_modes"] = int(modes["n_modes"])
            short = [
                {
                    "weight": md["weight"],
                    **{
                        p: md["parameters"][p]["median"]
                        for p in ("s", "q", "u_0", "alpha", "t_0", "t_E")
                        if p in md["parameters"]
                    },
                }
                for md in modes["modes"]
            ]
            row["modes_json"] = json.dumps(to_jsonable(short))
        except ValueError as exc:
            messages.append(f"modes not computed: {exc}")
        row["fluxes_json"] = json.dumps(to_jsonable(fluxes)) if fluxes else None
        if self.has_degeneracy:
            try:
                from mulens_sbi.degeneracy import analyze

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rep = analyze(samples, weights, partner=False, seed=s.seed)
                d = rep.to_dict()
                row["degenerate"] = bool(rep.degenerate)
                held = [p.classification for p in rep.pairs if p.holds]
                row["degeneracy"] = (
                    ",".join(held) if held else ("single mode" if rep.n_modes <= 1 else "none")
                )
                row["degeneracy_json"] = json.dumps(d)
            except Exception as exc:  # noqa: BLE001
                messages.append(f"degeneracy analysis failed: {type(exc).__name__}: {exc}")
        row["messages"] = " | ".join(messages) if messages else None
        if not math.isfinite(row["ess"]):
            raise ValueError("non-finite ESS")
