"""Training batches simulated on the device: prior draws → light curves → network input, one jitted call.

The shard path (:mod:`mulens_sbi.data.shards` → :mod:`mulens_sbi.data.prebin` →
:mod:`mulens_sbi.data.samplers`) simulates light curves on CPU cores, stores them and draws batches
from the stored set, so a network sees each light curve many times. :class:`OnDeviceSimulator` makes
every batch from fresh prior draws inside one compiled function that runs on the accelerator next to
the training step: parameters from the survey's priors, the whole season of exposures holding t_0
(dropout, weather, gaps: :mod:`mulens_sbi.survey.device`), the binary-lens magnification along each
trajectory (:func:`mulens_sbi.lensing.point_source.magnification_trajectory_images`, float64), the
noise model, the peak estimate ``t_ref`` and the binning of :mod:`mulens_sbi.preprocess`, then
step 5 (:func:`mulens_sbi.preprocess.network_input`). Equal in distribution to the shard path with
the same spec (``tests/test_ondevice.py``); another random stream.

**Light curves as the survey delivers them.** The spec must set ``lightcurve.window = "season"``:
each light curve is the whole observing season holding t_0 at full cadence, whatever t_E is, so
nothing but the light curve's shape carries t_E (event windows ``t_0 ± 2 t_E`` gave it away through
the span and the number of points). Field classes are strata: each gets a fixed share of a batch
(its spec weight; rows weighted by ``weight·rows / rows_of_class`` so the expected loss is the
prior's) and its own light-curve length (its longest season).

**Caustic-crossing enrichment without a stored set** (``enrich_fraction`` λ > 0). The shard path
mixes a rejection-sampled conditioned set into each batch and weights rows back to the prior with
the class probability P(C). Here a batch of N rows holds ``n_p`` prior rows and ``k = round(λN)``
*candidate slots*: per field class, G lenses (s, q) from the prior below ``q_max``, each with
``per_lens`` trajectories from the prior (as :func:`mulens_sbi.data.conditioned.simulate_conditioned`
draws them), the geometric pre-filter (:func:`mulens_sbi.data.conditioned.may_cross_caustic`) over
the season, the survivors simulated in the slots, and the caustic-crossing ones kept (the image count
at the used points, :mod:`mulens_sbi.data.classes`'s definition). The G·per_lens candidates stand
for ``n_cand = G·per_lens / P(q < q_max)`` prior draws, of which only the class members are kept, so
with ``in_class`` the class flag of a row

    w = N / n_p                for prior rows outside the class,
    w = N / (n_p + n_cand)     for class rows (prior rows in the class and kept candidates),
    w = 0                      for candidates outside the class and empty slots,

makes ``E[Σ w·ℓ] / N = E_p[ℓ]`` exactly (class rows are seen among ``n_p + n_cand`` prior draws, the
others among ``n_p``); no estimate of P(C) is needed, and the weights are those of the shard path's
:class:`~mulens_sbi.data.samplers.MixtureSimulator` (``1/(1 − λ)`` and ``1/((1 − λ) + λ/P(C))``) with λ
the realised class share. G is fixed before training from a pilot of the pre-filter alone so that
the survivors overflow the slots rarely (mean + ``overflow_z`` standard deviations ≤ k); survivors
beyond the slots are dropped and counted (``n_overflow``, which would under-weight the class by
that share; 0 in the tests).

Rows that inference would refuse (fewer than ``min_points`` points in the view or ``min_cells``
filled cells) get weight 0, as the shard path leaves them out.

**Noise.** ``reference_noise = "shared"`` (default) bins the same noisy realisation that gives
``t_ref``, as real data do; ``"independent"`` bins the noiseless flux and adds fresh binned noise
(``err·N(0, 1)``), exactly the shard path's construction (t_ref from the stored realisation, noise
redrawn per batch).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from mulens_sbi.data.conditioned import caustic_geometry, may_cross_caustic
from mulens_sbi.data.samplers import sharp_feature
from mulens_sbi.lensing import finite, point_source, single
from mulens_sbi.lightcurve import source_trajectory
from mulens_sbi.preprocess import PreprocessConfig, bin_points_jax, estimate_peak_time_jax, network_input
from mulens_sbi.survey import Survey
from mulens_sbi.survey.device import (
    draw_prior,
    flux_sigma_jax,
    prior_probability_below,
    season_observations,
    season_tables,
)

__all__ = ["OnDeviceSettings", "OnDeviceSimulator", "allocate"]

#: diagnostics summed over the batches drawn (``OnDeviceSimulator.totals``)
DIAGNOSTICS = ("rows", "prior_rows", "slots", "refused", "in_class_prior", "in_class_candidates",
               "survivors", "overflow", "unsolved_points")


@dataclass(frozen=True)
class OnDeviceSettings:
    """Settings of :class:`OnDeviceSimulator` (stored with a model trained on it).

    Attributes:
        enrich_fraction: λ, the share of each batch's rows given to caustic-crossing candidates
            (0 = no enrichment; then every row is a prior draw).
        q_max: the planetary class bound (``q < q_max``), as ``mulens-sbi simulate --condition``.
        per_lens: candidate trajectories per (s, q) lens (caustics are computed once per lens).
        lens_groups: lenses per batch for the candidates (0 = choose from a pilot of the pre-filter,
            see ``overflow_z``).
        overflow_z: the pilot chooses the most lenses whose survivors, mean plus this many standard
            deviations, fit the slots.
        pilot_lenses: lenses in that pilot.
        reference_noise: ``"shared"`` (t_ref and the bins from one noisy realisation, as real data)
            or ``"independent"`` (the shard path's construction).
        sharp_weight, sharp_threshold: loss weight of light curves with a sharp feature
            (:class:`mulens_sbi.data.samplers.SharpEmphasis`; 1 = off).
    """

    enrich_fraction: float = 0.0
    q_max: float = 0.01
    per_lens: int = 16
    lens_groups: int = 0
    overflow_z: float = 4.0
    pilot_lenses: int = 4096
    reference_noise: str = "shared"
    sharp_weight: float = 1.0
    sharp_threshold: float = 8.0

    def __post_init__(self) -> None:
        checks = {
            "enrich_fraction": 0.0 <= self.enrich_fraction < 1.0,
            "q_max": 0.0 < self.q_max <= 1.0,
            "per_lens": isinstance(self.per_lens, int) and self.per_lens >= 1,
            "lens_groups": isinstance(self.lens_groups, int) and self.lens_groups >= 0,
            "overflow_z": self.overflow_z >= 0.0,
            "pilot_lenses": isinstance(self.pilot_lenses, int) and self.pilot_lenses >= 16,
            "reference_noise": self.reference_noise in ("shared", "independent"),
            "sharp_weight": self.sharp_weight >= 1.0,
            "sharp_threshold": self.sharp_threshold > 0.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            given = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"OnDeviceSettings: invalid {given} "
                             f"(enrich_fraction in [0, 1), 0 < q_max <= 1, per_lens >= 1, lens_groups >= 0, "
                             f"overflow_z >= 0, pilot_lenses >= 16, reference_noise 'shared' or "
                             f"'independent', sharp_weight >= 1, sharp_threshold > 0)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` rows over classes in proportion to ``weights`` (largest remainders)."""
    w = np.asarray(weights, float) / np.sum(weights)
    exact = total * w
    out = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - out), kind="stable")[: total - int(out.sum())]:
        out[i] += 1
    return [int(v) for v in out]


def _magnification(spec, t: Array, p: dict[str, Array]) -> tuple[Array, Array, Array]:
    """``(A, ok, n_images)`` (n, L) along the rows' trajectories (n_images 0 for a single lens)."""
    t_0, u_0, t_E = p["t_0"][:, None], p["u_0"][:, None], p["t_E"][:, None]
    if spec.model.lens == "single":
        u = jnp.sqrt(((t - t_0) / t_E) ** 2 + u_0**2)
        if spec.model.source == "finite":
            mag, ok = single.finite_source(u, p["rho"][:, None], p["limb_darkening"][:, None])
        else:
            mag = single.point_source(u)
            ok = jnp.isfinite(mag)
        return mag, ok, jnp.zeros(mag.shape, jnp.int8)
    x, y = source_trajectory(t, t_0, u_0, t_E, p["alpha"][:, None])
    if spec.model.source == "finite":
        return finite.binary_finite_trajectory_images(x, y, p["s"], p["q"], p["rho"], p["limb_darkening"])
    return point_source.magnification_trajectory_images(x, y, p["s"], p["q"])


class OnDeviceSimulator:
    """``simulate(key, n) -> (theta_net, x, weights)``: fresh whole-season light curves of a survey,
    simulated, binned and normalized in one jitted function (see the module docstring).

    Args:
        survey: a :class:`~mulens_sbi.survey.Survey` with ``lightcurve.window = "season"``.
        cfg: the preprocessing (the network's cells).
        batch_size: N, rows per batch (``simulate`` is called with this n).
        settings: :class:`OnDeviceSettings`.
        pilot_key: key of the pilot that fixes the lenses per batch (enrichment only).

    Attributes: ``layout`` (rows, slots and lenses per field class, the loss weights),
    ``totals`` (running sums of :data:`DIAGNOSTICS` over the batches drawn; one device array, read
    them with :meth:`diagnostics`).
    """

    def __init__(self, survey: Survey, cfg: PreprocessConfig, batch_size: int,
                 settings: OnDeviceSettings | None = None, pilot_key: Array | None = None):
        spec = survey.spec
        self.survey, self.spec, self.cfg = survey, spec, cfg
        self.settings = settings = settings or OnDeviceSettings()
        if spec.lightcurve.window != "season":
            raise ValueError(f"{spec.path}: the on-device sampler simulates whole seasons: the spec needs "
                             f"lightcurve.window = 'season', got {spec.lightcurve.window!r}")
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}")
        enrich = settings.enrich_fraction > 0.0
        if enrich and spec.model.lens != "binary":
            raise ValueError(f"{spec.path}: caustic-crossing enrichment needs a binary lens")
        self.batch_size = int(batch_size)
        self.tables = season_tables(spec, survey.schedule)
        field_w = [f.weight for f in spec.cadence.fields]
        k_total = int(round(settings.enrich_fraction * batch_size)) if enrich else 0
        if enrich and not 1 <= k_total <= batch_size - len(field_w):
            raise ValueError(f"enrich_fraction {settings.enrich_fraction} gives {k_total} candidate slots of "
                             f"{batch_size} rows; need at least 1 slot and 1 prior row per field class")
        n_prior = allocate(batch_size - k_total, field_w)
        if min(n_prior) < 1:
            raise ValueError(f"batch_size {batch_size} leaves a field class without prior rows "
                             f"({n_prior}); use a larger batch")
        slots = allocate(k_total, field_w) if enrich else [0] * len(field_w)
        self.p_q_below = prior_probability_below(spec, "q", settings.q_max) if enrich else 1.0
        if enrich and self.p_q_below <= 0.0:
            raise ValueError(f"{spec.path}: the q prior has no mass below q_max = {settings.q_max}")
        wsum = float(np.sum(field_w))
        self.layout: list[dict[str, Any]] = []
        for f, (n_p, k) in enumerate(zip(n_prior, slots, strict=True)):
            self.layout.append({"field": f, "name": spec.cadence.fields[f].name, "prior_rows": n_p,
                                "slots": k, "length": self.tables[f].length,
                                "share": field_w[f] / wsum})
        if enrich:
            key = jax.random.PRNGKey(0) if pilot_key is None else pilot_key
            for f, lay in enumerate(self.layout):
                if lay["slots"] == 0:
                    lay.update(lens_groups=0, n_cand=0.0)
                    continue
                g = settings.lens_groups or self._pilot(jax.random.fold_in(key, f), f, lay["slots"])
                lay.update(lens_groups=int(g), n_cand=g * settings.per_lens / self.p_q_below)
        for lay in self.layout:
            scale = batch_size * lay["share"]
            lay["w_other"] = scale / lay["prior_rows"]
            lay["w_class"] = scale / (lay["prior_rows"] + lay.get("n_cand", 0.0))
        self._draw = jax.jit(self._batch)
        self.totals = jnp.zeros(len(DIAGNOSTICS), jnp.float64)  # (one add per step, no host sync)

    # ------------------------------------------------------------------ pieces (pure)

    def _rows(self, key: Array, f: int, p: dict[str, Array]) -> dict[str, Array]:
        """Simulate, bin and normalize rows with parameters ``p`` in field class ``f``."""
        spec, cfg = self.spec, self.cfg
        k_obs, k_noise, k_bin = jax.random.split(key, 3)
        obs = season_observations(spec, self.tables[f], k_obs, p["t_0"])
        t = obs["t"]
        mag, ok, n_img = _magnification(spec, t, p)
        mask = obs["mask"] & ok
        unsolved = jnp.sum(obs["mask"] & ~ok, axis=1)
        flux_true = p["f_s"][:, None] * jnp.where(mask, mag, 1.0) + p["f_b"][:, None]
        sigma = flux_sigma_jax(flux_true, spec.noise, obs["seeing"] if spec.is_ground else None)
        flux = flux_true + sigma * jax.random.normal(k_noise, t.shape, jnp.float64)
        t_ref = estimate_peak_time_jax(t, flux, sigma, mask, cfg.smooth_points)
        t_ref_safe = jnp.where(jnp.isfinite(t_ref), t_ref, p["t_0"])
        if self.settings.reference_noise == "shared":
            mean, err, count = bin_points_jax(t, flux, sigma, mask, t_ref_safe, cfg)
            mean, err = mean.astype(jnp.float32), err.astype(jnp.float32)
        else:  # the shard path: noiseless bins, fresh binned noise
            mean, err, count = bin_points_jax(t, flux_true, sigma, mask, t_ref_safe, cfg)
            mean, err = mean.astype(jnp.float32), err.astype(jnp.float32)
            mean = mean + err * jax.random.normal(k_bin, mean.shape, jnp.float32)
        accepted = ((jnp.sum(count, axis=1) >= cfg.min_points) & (jnp.sum(count > 0, axis=1) >= cfg.min_cells)
                    & jnp.isfinite(t_ref))
        x = network_input(mean, err, count, cfg)
        names = ("t_0", "u_0", "t_E", "s", "q", "alpha")
        theta = jnp.stack([p[k] if k != "t_0" else p[k] - t_ref_safe for k in names], axis=1)
        in_class = jnp.zeros(t.shape[0], bool)
        if spec.model.lens == "binary":
            in_class = (p["q"] < self.settings.q_max) & jnp.any(mask & (n_img == 5), axis=1)
        return {"theta_net": theta.astype(jnp.float32), "x": x, "accepted": accepted, "in_class": in_class,
                "t": t, "mask": mask, "flux_true": flux_true, "sigma": sigma, "flux": flux, "t_ref": t_ref,
                "mean": mean, "err": err, "count": count, "unsolved": unsolved, "params": p}

    def _candidates(self, key: Array, f: int, g: int, k: int) -> tuple[dict[str, Array], Array, Array]:
        """``k`` candidate slots (of field class ``f``) from ``g`` lenses below ``q_max``: the slot
        parameters, which slots hold a pre-filter survivor, and the number of survivors."""
        st, spec = self.settings, self.spec
        k_lens, k_traj = jax.random.split(key)
        lens = draw_prior(spec, k_lens, g, q_below=st.q_max)
        cand = draw_prior(spec, k_traj, g * st.per_lens)
        cand["s"], cand["q"] = jnp.repeat(lens["s"], st.per_lens), jnp.repeat(lens["q"], st.per_lens)
        survive = self._prefilter(lens, cand).reshape(-1)
        n_surv = jnp.sum(survive)
        idx = jnp.nonzero(survive, size=k, fill_value=0)[0]
        valid = jnp.arange(k) < n_surv
        return {name: v[idx] for name, v in cand.items()}, valid, n_surv

    def _prefilter(self, lens: dict[str, Array], cand: dict[str, Array]) -> Array:
        """(G, per_lens) bool: candidates whose path over their season may cross a caustic."""
        pts, edge, diam = caustic_geometry(lens["s"], lens["q"])
        starts = jnp.asarray([s.start for s in self.spec.seasons])
        ends = jnp.asarray([s.end for s in self.spec.seasons])
        k = jnp.clip(jnp.searchsorted(starts, cand["t_0"], side="right") - 1, 0, len(starts) - 1)
        g = lens["s"].shape[0]
        ends_xy = []
        for t_end in (starts[k], ends[k]):
            x, y = source_trajectory(t_end, cand["t_0"], cand["u_0"], cand["t_E"], cand["alpha"])
            ends_xy.append((x + 1j * y).reshape(g, -1))
        return may_cross_caustic(ends_xy[0], ends_xy[1], pts, edge, diam)

    def _pilot(self, key: Array, f: int, slots: int) -> int:
        """Lenses per batch for ``slots`` candidate slots: survivors per lens from a pilot of the
        pre-filter, then the most lenses with mean + overflow_z·sd survivors within the slots."""
        st = self.settings
        chunk = 512
        counts = []
        fn = jax.jit(lambda kk: self._prefilter(*self._pilot_draw(kk, chunk)).sum(axis=1))
        for i in range(-(-st.pilot_lenses // chunk)):
            counts.append(np.asarray(fn(jax.random.fold_in(key, i))))
        c = np.concatenate(counts)[: st.pilot_lenses].astype(float)
        m, v = max(float(c.mean()), 1e-9), float(c.var(ddof=1))
        z = st.overflow_z
        root = (-z * math.sqrt(v) + math.sqrt(z * z * v + 4.0 * m * slots)) / (2.0 * m)
        self.pilot = {"survivors_per_lens_mean": m, "survivors_per_lens_var": v, "lenses": int(c.size)}
        return max(int(math.floor(root * root)), 1)

    def _pilot_draw(self, key: Array, g: int) -> tuple[dict[str, Array], dict[str, Array]]:
        st = self.settings
        k_lens, k_traj = jax.random.split(key)
        lens = draw_prior(self.spec, k_lens, g, q_below=st.q_max)
        cand = draw_prior(self.spec, k_traj, g * st.per_lens)
        return lens, cand

    def _batch(self, key: Array) -> dict[str, Any]:
        """One batch: per field class, its prior rows then its candidate slots (pure, jitted)."""
        st = self.settings
        thetas, xs, ws, flags, diag = [], [], [], [], {k: jnp.zeros((), jnp.float64) for k in DIAGNOSTICS}
        blocks = []
        for lay in self.layout:
            f, n_p, k = lay["field"], lay["prior_rows"], lay["slots"]
            k_prior, k_sim, k_cand = jax.random.split(jax.random.fold_in(key, f), 3)
            p = draw_prior(self.spec, k_prior, n_p)
            is_slot = jnp.arange(n_p + k) >= n_p
            valid = jnp.ones(n_p + k, bool)  # a prior row or a slot holding a pre-filter survivor
            if k:  # prior rows and candidate slots are simulated together (one compiled solver)
                cand, valid, n_surv = self._candidates(k_cand, f, lay["lens_groups"], k)
                p = {name: jnp.concatenate([v, cand[name]]) for name, v in p.items()}
                valid = jnp.concatenate([jnp.ones(n_p, bool), valid])
                diag["slots"] += k
                diag["survivors"] += n_surv
                diag["overflow"] += jnp.maximum(n_surv - k, 0)
            rows = self._rows(k_sim, f, p)
            cls, acc = rows["in_class"] & valid, rows["accepted"]
            w = jnp.where(cls, lay["w_class"], jnp.where(is_slot, 0.0, lay["w_other"])) * acc
            diag["prior_rows"] += n_p
            diag["in_class_prior"] += jnp.sum(cls & acc & ~is_slot)
            if k:
                diag["in_class_candidates"] += jnp.sum(cls & acc & is_slot)
            diag["refused"] += jnp.sum(~acc & ~is_slot)
            diag["unsolved_points"] += jnp.sum(rows["unsolved"])
            if st.sharp_weight != 1.0:
                w = w * jnp.where(sharp_feature(rows["x"]) > st.sharp_threshold, st.sharp_weight, 1.0)
            thetas.append(rows["theta_net"])
            xs.append(rows["x"])
            ws.append(w.astype(jnp.float32))
            flags.append(cls)
            blocks.append({**rows, "in_class": cls, "weight": w, "slot": is_slot, "valid": valid})
        diag["rows"] += self.batch_size
        return {"theta_net": jnp.concatenate(thetas), "x": jnp.concatenate(xs),
                "weights": jnp.concatenate(ws), "in_class": jnp.concatenate(flags), "diagnostics": diag,
                "blocks": blocks}

    # ------------------------------------------------------------------ interface

    def draw(self, key: Array) -> dict[str, Any]:
        """One batch with everything: ``theta_net`` (N, 6) float32, ``x`` (N, n_bins, 4), ``weights``
        (N,), ``in_class`` (N,; False for empty slots), ``diagnostics`` and ``blocks`` (per field class:
        its rows' parameters, times, fluxes, binned values, flags, ``weight``, ``slot`` (a candidate
        slot) and ``valid`` (a prior row or a slot holding a pre-filter survivor)). For tests and
        inspection."""
        return self._draw(key)

    @functools.cached_property
    def _train_fn(self):
        def fn(key):
            out = self._batch(key)
            prior_ok = jnp.concatenate([~b["slot"] & b["accepted"] for b in out["blocks"]])
            diag = jnp.stack([jnp.asarray(out["diagnostics"][k], jnp.float64) for k in DIAGNOSTICS])
            return out["theta_net"], out["x"], out["weights"], prior_ok, diag
        return jax.jit(fn)

    def __call__(self, key: Array, n: int) -> tuple[Array, Array, Array]:
        """A training batch ``(theta_net, x, weights)`` of ``n`` rows (``n`` must be ``batch_size``)."""
        if n != self.batch_size:
            raise ValueError(f"this on-device sampler makes batches of {self.batch_size} rows, asked for {n}")
        theta, x, w, _, diag = self._train_fn(key)
        self.totals = self.totals + diag
        return theta, x, w

    def prior_rows(self, key: Array, n: int) -> tuple[Array, Array]:
        """``n`` accepted prior rows ``(theta_net, x)``, unweighted (a validation set: the prior rows
        of batches drawn with ``fold_in(key, i)``, i = 0, 1, ...; the same compiled function as the
        training batches). Not counted in :attr:`totals`."""
        thetas, xs, got, i = [], [], 0, 0
        while got < n:
            theta, x, _, ok, _ = self._train_fn(jax.random.fold_in(key, i))
            ok = np.asarray(ok)
            thetas.append(np.asarray(theta)[ok])
            xs.append(np.asarray(x)[ok])
            got += int(ok.sum())
            i += 1
            if i > 100 and got == 0:
                raise RuntimeError("no accepted prior rows in 100 batches (every light curve refused)")
        return jnp.asarray(np.concatenate(thetas)[:n]), jnp.asarray(np.concatenate(xs)[:n])

    def diagnostics(self) -> dict[str, float]:
        """The running sums of :data:`DIAGNOSTICS` (host floats; this waits for the device)."""
        return dict(zip(DIAGNOSTICS, (float(v) for v in np.asarray(self.totals)), strict=True))

    def describe(self) -> dict[str, Any]:
        """JSON-able description (settings, layout, pilot): for the model's provenance."""
        return {"settings": self.settings.to_dict(), "batch_size": self.batch_size,
                "layout": [dict(lay) for lay in self.layout], "p_q_below_q_max": self.p_q_below,
                "pilot": getattr(self, "pilot", None), "spec_sha256": self.spec.sha256}
