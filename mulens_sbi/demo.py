"""``mulens-sbi demo``: fit the shipped Roman example event with the shipped model — or, while no
trained model ships, simulate and plot one planetary caustic-crossing Roman event.

**Fit demo** (when ``trained/roman/`` and ``examples/events/roman_example/`` are present):
:func:`mulens_sbi.fit.fit` on ``roman_example.dat`` (a simulated Roman W149 light curve of a wide
planet whose trajectory crosses the planetary caustic; true parameters in ``truth.json``, see that
folder's README) with the shipped model: amortized samples, importance sampling with the exact
likelihood (ESS, sample efficiency, evidence), summary. Writes ``lightcurve.png`` (data, posterior
draws, truth, residuals, zoom on the anomaly), ``corner.png``, ``caustics.png`` (caustics and
trajectories of posterior draws), ``samples.parquet``, ``summary.json``, ``report.md`` (with a
truth-vs-posterior table) and ``report.json`` (the event's numbers as in the simulation demo, plus
the fit's summary). About a minute on a 2-core CPU, most of it JIT compilation.

**Simulation demo** (fallback, or ``DemoSettings(mode="simulate")``): the Roman survey spec
(cadence, noise), a wide planetary lens (s = 1.25, q = 1e-3) whose source trajectory is aimed at
the planetary caustic, one noisy light curve, and

* ``lightcurve.png`` – data with error bars, the true model, residuals, a zoom on the anomaly;
* ``caustics.png`` – caustics (or lens positions only, if the caustics module is missing), lens
  positions and the source trajectory;
* ``report.json`` / ``report.md`` – the event parameters and basic numbers.

The trajectory crosses the binary axis at ``x0 = −u_0/sin α`` (MulensModel v3 geometry). For a wide
planet the planetary caustic sits near ``x_pc = x_primary − (s − 1/s)``, so ``u_0 = −x_pc·sin α``
sends the source through it, at ``τ = −u_0·cos α / sin α``.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mulens_sbi import __version__
from mulens_sbi.fit import fit, report_markdown, save_fit
from mulens_sbi.fit_settings import FIT_SETTINGS_FILE
from mulens_sbi.lightcurve import magnification_batch
from mulens_sbi.models import available_models
from mulens_sbi.plots import plot_caustics, plot_lightcurve
from mulens_sbi.readers import read_event
from mulens_sbi.settings_file import check_fields
from mulens_sbi.simulate import OutputExistsError
from mulens_sbi.summary import to_jsonable
from mulens_sbi.survey import Survey, mag_to_flux

DEMO_FILES = ("lightcurve.png", "caustics.png", "report.json", "report.md")
FIT_DEMO_FILES = (
    "samples.parquet",
    "summary.json",
    "report.md",
    "report.json",
    "lightcurve.png",
    "corner.png",
    "caustics.png",
    FIT_SETTINGS_FILE,
)
DEMO_MODES = ("auto", "fit", "simulate")


@dataclass(frozen=True)
class DemoSettings:
    """Settings of ``mulens-sbi demo`` (validated on construction; ``--settings FILE.toml``).

    ``out``: output folder; ``seed``: noise/cadence seed of the simulation demo and the fit's seed
    (>= 0); ``survey``: the survey spec and shipped model; ``mode``: ``"auto"`` (fit when a shipped
    model and the example event exist, else simulate), ``"fit"`` or ``"simulate"``; ``n``: amortized
    samples of the fit demo (>= 2)."""

    out: str
    seed: int = 0
    overwrite: bool = False
    survey: str = "roman"
    mode: str = "auto"
    n: int = 4096

    def __post_init__(self) -> None:
        check_fields(self, {
            "out": (isinstance(self.out, str) and self.out != "", "a non-empty path"),
            "seed": (self.seed >= 0, ">= 0"),
            "survey": (isinstance(self.survey, str) and self.survey != "", "a survey name"),
            "mode": (self.mode in DEMO_MODES, f"one of {', '.join(DEMO_MODES)}"),
            "n": (self.n >= 2, ">= 2"),
        })


def demo_parameters(survey) -> dict[str, float]:
    """The demo event: a wide Jupiter-mass-ratio planet, trajectory through the planetary caustic."""
    s, q, alpha, t_E = 1.25, 1e-3, 50.0, 25.0
    x_primary = s * q / (1.0 + q)
    x_pc = x_primary - (s - 1.0 / s)  # planetary caustic on the axis, companion side
    a = np.deg2rad(alpha)
    u_0 = -x_pc * np.sin(a)
    season = survey.spec.seasons[0]
    t_0 = 0.5 * (season.start + season.end)
    return {
        "t_0": t_0,
        "u_0": float(u_0),
        "t_E": t_E,
        "s": s,
        "q": q,
        "alpha": alpha,
        "source_mag": 20.5,
        "blend_fraction": 0.2,
    }


def example_event_dir() -> Path | None:
    """``examples/events/roman_example/`` of the repository (found from the package), or None."""
    d = Path(__file__).resolve().parent.parent / "examples" / "events" / "roman_example"
    return d if (d / "roman_example.dat").is_file() and (d / "truth.json").is_file() else None


def fit_demo_available(survey: str = "roman") -> bool:
    """True when the shipped model for ``survey`` and the example event are both present."""
    return survey == "roman" and survey in available_models() and example_event_dir() is not None


def _prepare_out(out: Path, overwrite: bool, ours: tuple[str, ...]) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"output folder {out} is not empty: choose another --out or pass --overwrite"
            )
        for name in ours:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def run_demo(settings: DemoSettings) -> dict:
    """Run the demo into ``settings.out`` (see the module docstring); returns the report dict, whose
    ``files`` lists what was written."""
    use_fit = settings.mode == "fit" or (settings.mode == "auto" and fit_demo_available(settings.survey))
    if use_fit:
        return run_fit_demo(settings)
    return run_simulation_demo(settings)


def event_numbers(t, flux, sigma, p: dict, f_s: float, f_b: float) -> dict:
    """Numbers of a simulated binary event given its truth: the anomaly (axis-crossing) time, points
    within ±3 d of it, Δχ² of the true model against the point lens with the same (t_0, u_0, t_E),
    and χ² of the data against the truth."""
    a = np.deg2rad(p["alpha"])
    t_anom = p["t_0"] - p["u_0"] * np.cos(a) / np.sin(a) * p["t_E"]
    mag, ok = magnification_batch(np.asarray(t), {k: np.array([p[k]]) for k in ("t_0", "u_0", "t_E", "s", "q",
                                                                               "alpha")})
    flux_true = f_s * np.asarray(mag[0]) + f_b
    u = np.hypot((t - p["t_0"]) / p["t_E"], p["u_0"])
    flux_pspl = f_s * (u**2 + 2) / (u * np.sqrt(u**2 + 4)) + f_b
    chi2 = float(np.sum(((flux - flux_true) / sigma) ** 2))
    return {
        "anomaly_time": float(t_anom),
        "n_points": int(np.size(t)),
        "n_points_in_anomaly_window": int(np.sum(np.abs(t - t_anom) <= 3.0)),
        "delta_chi2_binary_vs_point_lens": float(np.sum(((flux_true - flux_pspl) / sigma) ** 2)),
        "chi2_data_vs_truth": chi2,
        "chi2_per_point": chi2 / max(np.size(t), 1),
        "n_uncertified_model_points": int(np.sum(~np.asarray(ok[0]))),
    }


def run_fit_demo(settings: DemoSettings) -> dict:
    """Fit the shipped example event with the shipped model; write figures, samples and reports."""
    t_start = time.perf_counter()
    out = Path(settings.out)
    _prepare_out(out, settings.overwrite, FIT_DEMO_FILES + DEMO_FILES)
    d = example_event_dir()
    if d is None:
        raise FileNotFoundError("examples/events/roman_example/ not found next to the package")
    truth_file = json.loads((d / "truth.json").read_text())
    p = truth_file["parameters"]
    event = read_event([d / "roman_example.dat"], name="roman_example")
    res = fit(event, settings.survey, n=settings.n, seed=settings.seed, progress=True)
    lens_truth = {k: p[k] for k in res.samples}
    files = [str(f) for f in save_fit(res, out, overwrite=True, truth=lens_truth)]
    ds = event.datasets[0]
    numbers = event_numbers(ds.t, ds.flux, ds.sigma, p, truth_file["f_s"], truth_file["f_b"])
    contained = {
        k: {
            "truth": p[k],
            "median": v["median"],
            "interval_68": v["interval_68"],
            "interval_95": v["interval_95"],
            "in_68": bool(_in_interval(p[k], v["interval_68"], k)),
            "in_95": bool(_in_interval(p[k], v["interval_95"], k)),
        }
        for k, v in res.summary["parameters"].items()
    }
    report = {
        "mode": "fit",
        "event": str(d / "roman_example.dat"),
        "model": settings.survey,
        "seed": settings.seed,
        "parameters": p,
        "f_s": truth_file["f_s"],
        "f_b": truth_file["f_b"],
        "n_unsolved_points": truth_file["n_unsolved_points"],
        **numbers,
        "status": res.status,
        "importance_sampling": res.importance,
        "truth_vs_posterior": contained,
        "wall_s": round(time.perf_counter() - t_start, 2),
        "versions": {"mulens_sbi": __version__, "python": platform.python_version()},
    }
    rows = "\n".join(
        f"| {k} | {c['truth']:.6g} | {c['median']:.6g} | "
        f"[{c['interval_68'][0]:.6g}, {c['interval_68'][1]:.6g}] | "
        f"[{c['interval_95'][0]:.6g}, {c['interval_95'][1]:.6g}] | {'yes' if c['in_95'] else 'NO'} |"
        for k, c in contained.items()
    )
    truth_rows = "\n".join(f"| {k} | {v:.6g} |" for k, v in p.items())
    md = (
        "# mulens-sbi demo: fit of the shipped Roman example event\n\n"
        f"Data: `{d / 'roman_example.dat'}` (simulated; see that folder's README). "
        f"Model: `{settings.survey}`.\n\n"
        "## True parameters\n\n| parameter | value |\n|---|---|\n" + truth_rows + "\n\n"
        "## Truth against the posterior\n\n| parameter | truth | median | 68% | 95% | truth in 95% |\n"
        "|---|---|---|---|---|---|\n" + rows + "\n\n"
        f"Δχ² of the true binary against the point lens (same t_0, u_0, t_E): "
        f"{numbers['delta_chi2_binary_vs_point_lens']:.4g}; χ²/point of the data against the truth: "
        f"{numbers['chi2_per_point']:.3f}; {numbers['n_points_in_anomaly_window']} points within ±3 d of "
        f"the anomaly at HJD' {numbers['anomaly_time']:.3f}. Wall time {report['wall_s']} s.\n\n"
        + report_markdown(res).replace("# Fit of", "## Fit of", 1)
    )
    (out / "report.md").write_text(md)
    (out / "report.json").write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    report["files"] = sorted(set(files) | {str(out / "report.json"), str(out / "report.md")})
    return report


def _in_interval(x: float, iv, name: str) -> bool:
    lo, hi = iv
    if name == "alpha":  # intervals on a continuous branch; compare modulo 360
        return any(lo <= x + k * 360.0 <= hi for k in (-1, 0, 1))
    return lo <= x <= hi


def _jsonable(obj):
    return to_jsonable(obj)


def run_simulation_demo(settings: DemoSettings) -> dict:
    """Simulate, plot and report the demo event into ``settings.out``. Returns the report dict."""
    t_start = time.perf_counter()
    out = Path(settings.out)
    _prepare_out(out, settings.overwrite, DEMO_FILES + FIT_DEMO_FILES)

    survey = Survey.load(settings.survey)
    rng = np.random.default_rng(settings.seed)
    p = demo_parameters(survey)
    f_s = float(mag_to_flux(p["source_mag"]))
    f_b = f_s * p["blend_fraction"] / (1.0 - p["blend_fraction"])
    params1 = {k: np.array([v]) for k, v in p.items()}
    obs = survey.observations(rng, params1, field=np.zeros(1, np.int16))
    a = np.deg2rad(p["alpha"])
    t_anom = p["t_0"] - p["u_0"] * np.cos(a) / np.sin(a) * p["t_E"]
    hw = float(np.clip(2.0 * p["t_E"], 0, None))
    n = survey.n_points
    dense = np.sort(
        np.concatenate(
            [
                np.linspace(p["t_0"] - hw, p["t_0"] + hw, n - n // 2),
                np.linspace(t_anom - 3.0, t_anom + 3.0, n // 2),
            ]
        )
    )
    lens = {k: np.array([p[k]] * 2) for k in ("t_0", "u_0", "t_E", "s", "q", "alpha")}
    mag, ok = magnification_batch(np.stack([obs.t[0], dense]), lens)
    mag, ok = np.asarray(mag), np.asarray(ok)
    mask = obs.mask[0] & ok[0]
    t = obs.t[0][mask]
    flux_true = f_s * mag[0][mask] + f_b
    sigma = survey.flux_sigma(flux_true, obs.seeing[0][mask])
    flux = flux_true + sigma * rng.standard_normal(t.size)
    dense_ok = ok[1]
    flux_dense = f_s * mag[1][dense_ok] + f_b
    # point-lens curve with the same (t_0, u_0, t_E): how strong is the planetary anomaly?
    u = np.hypot((t - p["t_0"]) / p["t_E"], p["u_0"])
    flux_pspl = f_s * (u**2 + 2) / (u * np.sqrt(u**2 + 4)) + f_b
    dchi2 = float(np.sum(((flux_true - flux_pspl) / sigma) ** 2))
    chi2 = float(np.sum(((flux - flux_true) / sigma) ** 2))
    zoom = (t_anom - 3.0, t_anom + 3.0)

    band = survey.spec.band
    fig = plot_lightcurve(
        t,
        flux,
        sigma,
        flux_true,
        t_dense=dense[dense_ok],
        flux_dense=flux_dense,
        zoom=zoom,
        band=band,
        title=f"demo: planetary caustic crossing, {survey.name} ({band})",
    )
    fig.savefig(out / "lightcurve.png", dpi=110)
    x_pc = p["s"] * p["q"] / (1 + p["q"]) - (p["s"] - 1 / p["s"])
    fig = plot_caustics(
        p["s"],
        p["q"],
        p["t_0"],
        p["u_0"],
        p["t_E"],
        p["alpha"],
        (p["t_0"] - hw, p["t_0"] + hw),
        t_data=t,
        zoom=(x_pc, 0.0, 0.2),
        title=f"s = {p['s']}, q = {p['q']:g}, α = {p['alpha']}°",
    )
    fig.savefig(out / "caustics.png", dpi=110)

    in_anom = (t >= zoom[0]) & (t <= zoom[1])
    report = {
        "survey": survey.name,
        "spec": survey.spec.path,
        "seed": settings.seed,
        "parameters": p,
        "conventions": "MulensModel v3 (CoM frame, alpha in degrees, t in HJD' = HJD - 2450000); "
        "fluxes on zero point 22 in the survey band",
        "finite_source": False,
        "f_s": f_s,
        "f_b": f_b,
        "baseline_mag": float(22.0 - 2.5 * np.log10(f_s + f_b)),
        "peak_magnification_dense_grid": float(np.nanmax(mag[1][dense_ok])),
        "anomaly_time": float(t_anom),
        "n_points": int(t.size),
        "n_available_before_subsampling": int(obs.n_available[0]),
        "n_unsolved_points": int((obs.mask[0] & ~ok[0]).sum()),
        "n_points_in_anomaly_window": int(in_anom.sum()),
        "delta_chi2_binary_vs_point_lens": dchi2,
        "chi2_data_vs_truth": chi2,
        "chi2_per_point": chi2 / max(t.size, 1),
        "caustics_plotted": _have_caustics(),
        "wall_s": round(time.perf_counter() - t_start, 2),
        "versions": {"mulens_sbi": __version__, "python": platform.python_version()},
        "files": [str(out / f) for f in DEMO_FILES],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    return report


def _have_caustics() -> bool:
    try:
        from mulens_sbi.lensing.caustics import caustics  # noqa: F401
    except (ImportError, AttributeError):
        return False
    return True


def _markdown(r: dict) -> str:
    p = r["parameters"]
    rows = "\n".join(f"| {k} | {v:.6g} |" for k, v in p.items())
    return f"""# mulens-sbi demo: simulated planetary caustic-crossing event

Survey spec: `{r["spec"]}` (seed {r["seed"]}). Conventions: {r["conventions"]}.

| parameter | value |
|---|---|
{rows}

| number | value |
|---|---|
| source flux F_s / blend flux F_b (zp 22) | {r["f_s"]:.4g} / {r["f_b"]:.4g} |
| baseline magnitude | {r["baseline_mag"]:.3f} |
| peak magnification (dense model grid) | {r["peak_magnification_dense_grid"]:.4g} |
| anomaly (axis crossing) at HJD' | {r["anomaly_time"]:.3f} |
| data points (before fixed-length subsampling) | {r["n_points"]} ({r["n_available_before_subsampling"]}) |
| points within ±3 d of the anomaly | {r["n_points_in_anomaly_window"]} |
| Δχ² binary vs point lens (same t_0, u_0, t_E) | {r["delta_chi2_binary_vs_point_lens"]:.4g} |
| χ² of the data against the truth, per point | {r["chi2_per_point"]:.3f} |
| caustics plotted | {r["caustics_plotted"]} |
| wall time (s) | {r["wall_s"]} |

Figures: `lightcurve.png`, `caustics.png`.
"""
