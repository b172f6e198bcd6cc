"""Write the numbers of a trained model folder into its model card (README.md).

Usage: python scripts/build_model_card.py trained/roman [--notes NOTES.md]

Reads posterior.json (architecture, parameter count, training metadata), training.json (history)
and validation.json (from ``mulens-sbi validate``) and writes README.md: every figure in the card
comes from those files. ``--notes`` appends a hand-written section (design choices, limitations).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _fmt_cov(rep: dict, name: str, levels=(0.5, 0.68, 0.9, 0.95)) -> list[str]:
    lev = rep["levels"]
    return [f"{rep['marginal_coverage'][name][lev.index(a)]:.3f}" for a in levels]


def build(folder: Path, notes: str = "") -> str:
    side = json.loads((folder / "posterior.json").read_text())
    meta = side["metadata"]
    tr = meta["training"]
    prov = meta["provenance"]
    vpath = folder / "validation.json"
    val = json.loads(vpath.read_text()) if vpath.exists() else None
    cfg = side["config"]
    emb, flow = cfg["embedding"], cfg["flow"]
    tc = tr["train_config"]
    hist = tr["history"]
    hw = prov.get("hardware", {})
    wall = tr.get("train_wall_s_total", tr.get("wall_time_s_last_session", 0.0))
    # a warm start (``mulens-sbi train --init-from``): the earlier model's steps and time
    ws = tr.get("init_from") or tr.get("data_source", {}).get("init_from") or {}
    prior = None
    if ws:
        prior = {"steps": ws.get("lineage_steps", ws.get("steps_done") or 0),
                 "wall_s": ws.get("lineage_wall_s", ws.get("train_wall_s_total") or 0.0)}
    lines = [
        f"# Model card: `{folder.name}` — amortized posterior for {prov['survey']} binary-lens events",
        "",
        "Neural posterior estimator q(t_0, u_0, t_E, s, q, alpha | light curve) for the "
        f"`{prov['survey']}` survey simulator (binary lens, point source; one dataset). Load it with "
        f"`mulens_sbi.models.load_model(\"{folder.name}\")`; see `docs/npe.md`.",
        "",
        "## Training",
        "",
        "| item | value |",
        "|---|---|",
    ]
    on_device = bool(prov["simulation"].get("on_device"))
    if on_device:  # mulens-sbi train --sampler simulate: every batch simulated afresh
        n_sim = tr.get("light_curves_simulated") or tr["steps_done"] * tc["batch_size"]
        lines += [
            f"| training data | {n_sim:,} light curves simulated on the device inside the training steps "
            f"(`mulens-sbi train --sampler simulate --survey {prov['survey']}`): every batch fresh prior "
            f"draws, whole seasons at full cadence, none seen twice; {prov['n_val_rows']:,} prior light "
            "curves drawn once for early stopping |",
            "| noise | drawn per point with each light curve; t_ref and the bins from the same realisation"
            + (" (shard-path construction: fresh binned noise)" if
               meta.get("settings", {}).get("ondevice", {}).get("reference_noise") == "independent" else "")
            + " |",
        ]
    else:
        lines += [
            f"| training data | {prov['n_train_rows']:,} simulated light curves "
            f"({len(prov['train_shards'])} shards of "
            f"`mulens-sbi simulate --survey {prov['survey']} --n {prov['simulation']['n']} --seed "
            f"{prov['simulation']['seed']}`), {prov['n_val_rows']:,} more rows for early stopping; held out: "
            f"{', '.join(prov['holdout_shards'])} |",
            "| noise | redrawn every step at the binned level (exact in distribution) |",
        ]
    enr = prov.get("enrichment")
    od = (enr or {}).get("ondevice")
    if od and od["settings"]["enrich_fraction"] > 0:
        lay = od["layout"]
        diag = tr.get("ondevice_last_session") or {}
        lines.append(
            f"| enrichment (`--simulate-enrich`) | {od['settings']['enrich_fraction']:.0%} of each batch are "
            f"caustic-crossing candidate slots ({', '.join(str(x['lens_groups']) for x in lay)} lenses with "
            f"q < {od['settings']['q_max']} × {od['settings']['per_lens']} trajectories per batch, "
            "pre-filtered; the class members kept), weighted back to the prior (class rows "
            + ", ".join(f"{x['w_class']:.4f}" for x in lay) + ", others "
            + ", ".join(f"{x['w_other']:.4f}" for x in lay) + ")"
            + (f"; last session: {diag['in_class_prior']:,.0f} prior and {diag['in_class_candidates']:,.0f} "
               f"candidate class rows, slot overflow {diag['overflow']:,.0f}" if diag else "") + " |")
    if enr and enr.get("enrich"):
        c = enr["condition"]
        lines.append(
            f"| enrichment (`--enrich`) | {enr['n_enrich_rows']:,} {c['condition']} planetary light curves "
            f"(q < {c['q_max']}; `mulens-sbi simulate --condition {c['condition']}`, {c['n_accepted']:,} of "
            f"{c['n_candidates']:,} prior candidates: class probability {c['probability']:.5f}) in "
            f"{enr['enrich_fraction']:.0%} of each batch, weighted back to the prior (class rows "
            f"{enr['weight_class']:.4f}, others {enr['weight_other']:.4f}; "
            f"{enr['n_base_rows_in_class']} prior training rows are in the class) |")
    if enr and enr.get("sharp_weight", 1.0) != 1.0:
        lines.append(
            f"| emphasis (`--sharp-weight`) | light curves whose sharp-feature statistic exceeds "
            f"{enr['sharp_threshold']:g} weighted {enr['sharp_weight']:g} (a function of the data only: the "
            "target posterior is unchanged) |")
    planned = tr.get("max_steps_effective") or tc["max_steps"]
    lines += [
        f"| steps | {tr['steps_done']} of {planned} planned"
        + (f" (the step rate of the warm-up fitted to a {tr['budget_s'] / 60:g}-min budget)"
           if tr.get("budget_s") else "") + f" (batch {tc['batch_size']}, "
        f"{tr['steps_done'] * tc['batch_size']:,} light curves seen"
        + (", each once)" if on_device else
           f" ≈ {tr['steps_done'] * tc['batch_size'] / prov['n_train_rows']:.1f} epochs)")
        + (" — stopped by hand when the time budget ran out" if tr.get("stopped_by_user") else "")
        + (" — early stopping" if tr.get("stopped_early") else "") + " |",
        f"| optimizer | AdamW, peak lr {tc['learning_rate']:g}, {tc['warmup_steps']} warm-up steps, "
        "cosine decay "
        f"over {planned} steps, clip {tc['clip_norm']:g}, weight decay {tc['weight_decay']:g} |",
        f"| best validation loss (−log q, network space) | {tr['best_val_loss']:.4f} at step "
        f"{tr['best_step']} |",
        f"| training wall time | {wall / 60:.1f} min in {tr.get('sessions', 1)} session(s)"
        + (f", after {prior['steps']} steps ({prior['wall_s'] / 60:.1f} min"
           + (", its flow refit included" if ws.get("refit") else "")
           + f") of the model(s) it was warm-started from (`--init-from`); "
           f"{(wall + prior['wall_s']) / 60:.1f} min in all"
           if prior else "") + " |",
        (f"| hardware | {hw.get('platform', '?')} ({hw.get('cpu', '?')}, {hw.get('cpu_count', '?')} cores, "
         "shared with other jobs) — **no GPU** |" if hw.get("platform", "cpu") == "cpu" else
         f"| hardware | one {hw.get('device', '?')} GPU ("
         + ("it simulated every training light curve itself" if on_device else
            f"{hw.get('cpu_count', '?')} CPU cores simulated the training set in the same run") + ") |"),
        f"| network | {side['n_params']:,} parameters: binned 1-D CNN embedding ({emb['n_bins']} cells, "
        f"channels {emb['channels']}, kernel {emb['kernel_size']}"
        + (f", {emb['blocks_per_stage']} residual block(s) per stage" if emb.get("blocks_per_stage") else "")
        + f", context {emb['out_dim']}) + "
        "rational-quadratic spline "
        f"flow ({flow['n_layers']} coupling layers, hidden {flow['hidden']}, {flow['n_bins']} bins, "
        f"affine first layer) |",
        f"| versions | {', '.join(f'{k} {v}' for k, v in side['versions'].items())} |",
        "",
        "Validation loss history (step: val loss): "
        + ", ".join(f"{h['step']}: {h['val_loss']:.3f}" for h in hist) + ".",
        "",
    ]
    if ws.get("device"):  # (records written before the warm start kept its device have no row)
        wrf = ws.get("refit")
        at = next(i for i, line in enumerate(lines) if line.startswith("| versions |"))
        lines.insert(at,
            f"| warm start (`--init-from`) | every weight started from `{ws['source']}`: a network trained "
            f"{ws['steps_done']:,} steps on {ws['device']} ({ws['platform']})"
            + (f" on {ws['n_train_rows']:,} light curves" if ws.get("n_train_rows") else "")
            + (f", whose flow was then refit (`mulens_sbi.refit`) on {wrf['n_rows']:,} other light curves"
               + (f" and {wrf['n_enrich_rows']:,} caustic-crossing ones" if wrf.get("n_enrich_rows") else "")
               + f" × {wrf['n_draws']} noise draws ({wrf['steps_done']:,} steps, "
               f"{wrf['wall_time_s'] / 60:.1f} min on {wrf['device']}; best validation loss "
               f"{wrf['best_val_loss']:.4f})" if wrf else "")
            + " |")
    rf = meta.get("refit")
    if rf:
        rtc = rf["train_config"]
        at = next(i for i, line in enumerate(lines) if line.startswith("| versions |"))
        lines.insert(at,
            f"| flow refit (`mulens_sbi.refit`) | the flow above was replaced by one fitted from scratch on "
            f"{rf['n_rows']:,} other light curves ({len(rf['shards'])} shards of "
            f"`{Path(rf['data']).name}`) × "
            f"{rf['n_draws']} noise draws, contexts from the frozen embedding"
            + (f", enriched with {rf['n_enrich_rows']:,} `{Path(rf['enrich']).name}` light curves in "
               f"{rf['enrich_fraction']:.0%} of each batch (weights {rf['weight_class']:.4f} / "
               f"{rf['weight_other']:.4f})" if rf.get("enrich") else "")
            + f"; {rf['steps_done']} steps of batch {rtc['batch_size']} (lr {rtc['learning_rate']:g}, early "
            f"stopping on {rf['val_rows']:,} held-out rows), best validation loss "
            f"{rf['best_val_loss']:.4f} at "
            f"step {rf['best_step']}; {rf['wall_time_s'] / 60:.1f} min on {rf['device']} |")
    if val:
        m = val["n_cases"]
        lines += [
            "## Calibration on held-out events",
            "",
            f"`mulens-sbi validate --model trained/{folder.name} --data <simulate folder> --n "
            f"{val['settings']['n']}` "
            f"on {m} events of the held-out shards ({val['n_excluded']} excluded, "
            f"{val['n_preprocess_failed']} rejected by preprocessing), {val['n_samples']} posterior samples "
            f"each; {val['wall_s']:.0f} s on {val['machine']['platform']}. Central-interval coverage per "
            f"parameter (calibrated = nominal ± {2 * (0.5 * 0.5 / max(m, 1)) ** 0.5:.3f} at 50%, "
            f"± {2 * (0.1 * 0.9 / max(m, 1)) ** 0.5:.3f} at 90%, 2σ binomial):",
            "",
            "| parameter | 50% | 68% | 90% | 95% | median abs. error of the median | median 68% width |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in val["names"]:
            r = val["recovery"][n]
            sc = " (dex)" if r["scale"] == "log10" else ""
            lines.append(f"| {n} | " + " | ".join(_fmt_cov(val, n)) +
                         f" | {r['median_abs_error']:.3g}{sc} | {r['median_68_width']:.3g}{sc} |")
        lev = val["levels"]
        if "hpd_coverage" in val:
            lines.append("| joint HPD | " + " | ".join(f"{val['hpd_coverage'][lev.index(a)]:.3f}"
                                                     for a in (0.5, 0.68, 0.9, 0.95)) + " | | |")
        if "tarp_coverage" in val:
            lines.append("| TARP | " + " | ".join(f"{val['tarp_coverage'][lev.index(a)]:.3f}"
                                                for a in (0.5, 0.68, 0.9, 0.95)) + " | | |")
        worst = max(abs(c - a) for n in val["names"]
                    for a, c in zip(lev, val["marginal_coverage"][n], strict=True)
                    if a in (0.5, 0.68, 0.9, 0.95))
        lines += ["", f"Largest deviation from nominal at 50/68/90/95%: **{worst:.3f}** "
                  f"({'within' if worst <= 0.05 else 'MISSES'} the ±0.05 target)."]
        cc = val.get("caustic_crossing_planetary")
        if cc:
            f95 = cc["frac_truth_in_95_hpd_logs_logq"]
            f68 = cc["frac_truth_in_68_hpd_logs_logq"]
            lines += ["", f"Caustic-crossing planetary events ({cc['definition']}): {cc['n_events']} of the "
                      f"{cc['n_planetary']} held-out events with q < 0.01. True (log s, log q) inside the "
                      "95% "
                      f"highest-density region of the 2-D marginal (Gaussian KDE): "
                      f"**{f95:.3f}**" + (f"; inside the 68% region: {f68:.3f}." if f68 is not None else ".")
                      + (" Target 0.90: " + ("met." if f95 is not None and f95 >= 0.9 else "**missed**.")
                         if f95 is not None else "")]
        cs = val.get("caustic_crossing_planetary_set")
        if cs and cs["n_events"]:
            f95 = cs["frac_truth_in_95_hpd_logs_logq"]
            cond = cs.get("condition") or {}
            lines += ["", f"**Caustic-crossing planetary events, dedicated set**: {cs['n_events']} events of "
                      f"`mulens-sbi simulate --condition caustic-crossing --seed {cs.get('seed')}` (drawn "
                      "exactly from the prior conditioned on the class, not used in training; "
                      f"{cs['n_preprocess_failed']} refused by preprocessing). True (log s, log q) inside "
                      f"the 95% HPD region: **{f95:.3f}** ± {cs['binomial_se_95']:.3f}; 90%: "
                      f"{cs['frac_truth_in_90_hpd_logs_logq']:.3f}; 68%: "
                      f"{cs['frac_truth_in_68_hpd_logs_logq']:.3f}; 50%: "
                      f"{cs['frac_truth_in_50_hpd_logs_logq']:.3f}. Target 0.90 at 95%: "
                      + ("met" if f95 >= 0.9 else "**missed**")
                      + (" under the model's full prior (under the prior restricted to q < 0.01: below)."
                         if cs.get("planetary_prior") else ".")
                      + (f" (Class probability under the prior: {cond['probability']:.5f}.)" if cond else "")]
            lines += _selection_lines(cs)
        rel = val.get("planet_probability")
        figs = ("Figures: `coverage.png` (expected coverage per parameter, joint HPD), `recovery.png` "
                "(posterior median and 68% interval vs truth), `sbc.png` (rank histograms)")
        if rel:
            f95 = (cs or cc or {}).get("frac_truth_in_95_hpd_logs_logq")
            lines += _reliability_lines(rel, [c.get("planet_probability") for c in (cc, cs) if c], f95)
            figs += ", `reliability.png` (planet-probability reliability)"
        lines += ["", figs + ".", "", "![coverage](coverage.png)", "", "![recovery](recovery.png)", ""]
        if rel:
            lines += ["![reliability](reliability.png)", ""]
    if notes:
        lines += [notes.strip(), ""]
    return "\n".join(lines)


def _selection_lines(cs: dict) -> list[str]:
    """What a calibrated posterior would score on the dedicated caustic-crossing set, compared
    two-sidedly with the measured figures, and the figures under the prior restricted to q < 0.01,
    when validation.json has them."""
    from mulens_sbi.validation import MIN_RESTRICTED_SAMPLES

    cal, pl = cs.get("if_calibrated"), cs.get("planetary_prior")
    out = []
    if cal and cal.get("expected_frac_in_95_hpd") is not None:
        m = cs["n_events"]
        levels = (95, 90, 68, 50)
        def zscore(c: int) -> float:
            e = cal[f"expected_frac_in_{c}_hpd"]
            return (cs[f"frac_truth_in_{c}_hpd_logs_logq"] - e) / max(math.sqrt(e * (1 - e) / m), 1e-9)

        z = {c: zscore(c) for c in levels}
        if all(abs(v) <= 3 for v in z.values()):
            reading = ("Measured and expected agree within 3σ at every level: the shortfall from nominal is "
                       "the selection acting on the posterior's width across q = 0.01, not miscalibration; "
                       "only a network that extracts more from the light curve can narrow it.")
        elif all(v >= -3 for v in z.values()):
            reading = ("The measured figures lie *above* the expected ones (by up to "
                       f"{max(z.values()):.1f}σ): the flow is not over-confident on this set. Either it is "
                       "somewhat under-confident here, or the estimate misses part of the selection (it "
                       "conditions the draws on q < 0.01 only, not on a caustic crossing in the data). The "
                       "shortfall from nominal is the posterior's width across q = 0.01.")
        else:
            reading = ("The measured figures lie *below* the expected ones (by up to "
                       f"{-min(z.values()):.1f}σ): the flow is over-confident on this set.")
        out += ["", "**Why the figure is below 95%, in numbers.** The set is chosen by the *true* q "
                "(< 0.01), and a posterior is calibrated on sets of events chosen by the data, not on sets "
                "chosen by the truth: an event whose posterior straddles q = 0.01 enters the set only when "
                "its truth lies in the low-q tail. If the flow were the exact posterior, the expected "
                f"figure would be **{cal['expected_frac_in_95_hpd']:.3f}** at 95% "
                f"(90%: {cal['expected_frac_in_90_hpd']:.3f}, "
                f"68%: {cal['expected_frac_in_68_hpd']:.3f}, 50%: {cal['expected_frac_in_50_hpd']:.3f}), "
                f"computed from {cal['n_draws_per_event']} fresh flow draws per event conditioned on "
                "q < 0.01 (`validation.selected_coverage_if_calibrated`; "
                f"{cal.get('n_events_without_selected_draw', 0)} events without such a draw count 0). "
                "Measured: "
                + " / ".join(f"{cs[f'frac_truth_in_{c}_hpd_logs_logq']:.3f} ({z[c]:+.1f}σ)" for c in levels)
                + ". " + reading]
    if pl and pl.get("n_events"):
        f = pl["frac_truth_in_95_hpd_logs_logq"]
        verdict = "met" if f >= 0.9 else "**missed**"
        out += ["", "**Under the prior restricted to q < 0.01** (the set's condition on q; its other "
                "condition, a caustic crossing, is mostly visible in the data and is not imposed): the "
                "flow truncated to q < 0.01 (`fit --restrict q=:0.01`, `mulens_sbi.restrict`). Its 95% "
                f"(log s, log q) region holds the truth for **{f:.3f}** ± {pl['binomial_se_95']:.3f} of the "
                f"{pl['n_events']} events (90%: {pl['frac_truth_in_90_hpd_logs_logq']:.3f}, "
                f"68%: {pl['frac_truth_in_68_hpd_logs_logq']:.3f}, "
                f"50%: {pl['frac_truth_in_50_hpd_logs_logq']:.3f}"
                + ("; above nominal at 68% by more than 3σ: these restricted posteriors are somewhat "
                   "conservative" if pl["frac_truth_in_68_hpd_logs_logq"]
                   > 0.68 + 3 * math.sqrt(0.68 * 0.32 / pl["n_events"]) else "")
                + f"; {pl['n_too_few_samples']} events with "
                f"fewer than {MIN_RESTRICTED_SAMPLES} samples below q = 0.01 counted as misses; median flow "
                f"probability of q < 0.01: {pl['flow_mass_below_q_max_median']:.2f}). "
                f"Target 0.90 at 95%: {verdict}."]
    return out


def _reliability_lines(rel: dict, crossing: list[dict | None], f95: float | None) -> list[str]:
    """The planet-probability reliability table and, when the numbers support it, what it says about
    the caustic-crossing figure ``f95``."""
    q = rel["q_max"]
    ece, max_z = rel.get("ece"), rel.get("max_z")
    if ece is None:
        return []
    mz = "no bin of 10 events" if max_z is None else f"largest bin deviation {max_z:.1f} σ"
    lines = ["", f"**Planet probability.** The posterior's P(q < {q:g} | data) (fraction of samples) against "
             f"the fraction of held-out events with true q < {q:g}, binned by that probability "
             f"(expected calibration error {ece:.3f}; {mz}):",
             "",
             "| P(planet) bin | events | mean predicted | observed | ± 1σ |", "|---|---|---|---|---|"]
    for b in rel["bins"]:
        if b["n"]:
            lines.append(f"| [{b['lo']:g}, {b['hi']:g}) | {b['n']} | {b['predicted']:.3f} | "
                         f"{b['observed']:.3f} | {b['se']:.3f} |")
    reliable = max_z is not None and max_z <= 3.0 and ece < 0.03
    lines += ["", "Reliable (every bin of 10 or more events within 3σ and ECE < 0.03): "
              + ("yes." if reliable else "**no**.")]
    pp = [c for c in crossing if c and c.get("median") is not None]
    if pp:
        c = pp[-1]
        hi, lo = c["frac_truth_in_95_if_at_least_0.5"], c["frac_truth_in_95_if_below_0.5"]
        lines += ["", f"On the caustic-crossing planetary events the median posterior planet probability is "
                  f"{c['median']:.2f}; it is below 0.5 for {c['frac_below_0.5']:.2f} of them. Their true "
                  f"(log s, log q) is in the 95% region for "
                  + (f"{hi:.3f} of the {c['n_at_least_0.5']} with P(planet) ≥ 0.5" if hi is not None
                     else "none")
                  + " and for "
                  + (f"{lo:.3f} of the {c['n_below_0.5']} below" if lo is not None else "none below") + "."]
        if reliable and f95 is not None and f95 < 0.9 and lo is not None and (hi is None or lo < hi):
            lines[-1] += (" The caustic-crossing class is chosen by the true parameters, and an exact "
                          "posterior is calibrated on every set of events chosen by the data, not on one "
                          "chosen by the truth: with a reliable planet probability, the misses come from "
                          "events whose light curve the model's summary does not tell from a "
                          "stellar-binary caustic crossing (it gives a planet less than half the mass). "
                          "Recalibrating cannot fix that; a network that extracts more from the light "
                          "curve can.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--notes", default=None)
    a = ap.parse_args()
    folder = Path(a.folder)
    notes = Path(a.notes).read_text() if a.notes else ""
    (folder / "README.md").write_text(build(folder, notes))
    print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    main()
