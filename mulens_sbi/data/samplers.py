"""The training samplers: ``sampler(key, n) -> (theta_net, x[, weights])`` over pre-binned rows.

* :class:`BinnedSimulator` (host, numpy): rows drawn uniformly with replacement, fresh Gaussian
  noise ``err · N(0, 1)`` added to the binned noiseless flux, then step 5 of the preprocessing
  (:func:`mulens_sbi.preprocess.network_input`). So each epoch sees new noise.
* :class:`MixtureSimulator`: rows of the prior set and of a class-conditioned set
  (:mod:`mulens_sbi.data.conditioned`), with loss weights that keep the prior's objective.
* :class:`SharpEmphasis`: a loss weight on light curves with a sharp feature (a function of the data
  alone, so the posterior the loss targets is unchanged).
* :class:`DeviceSampler`: the same distributions drawn on the accelerator with ``jax.random``; its
  growing form is :class:`mulens_sbi.data.stream.StreamingSampler`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mulens_sbi.preprocess import PreprocessConfig, network_input

__all__ = ["BinnedSimulator", "MixtureSimulator", "SharpEmphasis", "DeviceSampler", "sharp_feature",
           "mixture_rows", "mixture_weights", "accepted_class_probability"]


@jax.jit
def _noisy(mean, err, noise):
    return mean + err * noise


def _rng_from_key(key) -> np.random.Generator:
    """A numpy generator seeded from a JAX key (typed or raw), so that a training step's rows and
    noise are a pure function of the loop's key."""
    seed = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                      else key).astype(np.uint32).tolist()
    return np.random.default_rng(seed)


class BinnedSimulator:
    """``simulate(key, n) -> (theta_net, x)`` over pre-binned rows with fresh noise per call.

    Rows are drawn uniformly with replacement by a numpy generator seeded from the JAX key (so the
    training loop's seeding and resumption stay exact)."""

    def __init__(self, binned: dict[str, np.ndarray], cfg: PreprocessConfig):
        self.theta = binned["theta_net"]
        self.mean = binned["mean"]
        self.err = binned["err"]
        self.count = binned["count"]
        self.cfg = cfg
        self._net = jax.jit(lambda m, e, c: network_input(m, e, c, cfg))

    def __len__(self) -> int:
        return self.theta.shape[0]

    def inputs(self, mean, err, count, rng: np.random.Generator):
        """Network inputs of binned noiseless rows with fresh noise drawn from ``rng``."""
        noise = rng.standard_normal(mean.shape, dtype=np.float32)
        return self._net(_noisy(mean, err, noise), err, count)

    def rows(self, idx: np.ndarray, rng: np.random.Generator):
        return jnp.asarray(self.theta[idx]), self.inputs(self.mean[idx], self.err[idx], self.count[idx], rng)

    def __call__(self, key, n: int):
        rng = _rng_from_key(key)
        idx = rng.integers(0, len(self), size=n)
        return self.rows(idx, rng)


@jax.jit
def sharp_feature(x):
    """(B,) the largest second difference of the normalized binned flux over three consecutive
    filled cells, in units of its own noise: ``max |f[i+1] − 2f[i] + f[i−1]| / sqrt(e[i+1]² + 4e[i]² +
    e[i−1]²)`` on the network input ``x`` (B, n_bins, 4). Pure noise gives ~N(0, 1) per triple;
    caustic crossings and cusp approaches give tens to thousands. A function of the observed light
    curve only."""
    f, e, has = x[..., 1], x[..., 2], x[..., 3] > 0
    d2 = f[..., 2:] - 2.0 * f[..., 1:-1] + f[..., :-2]
    v = e[..., 2:] ** 2 + 4.0 * e[..., 1:-1] ** 2 + e[..., :-2] ** 2
    ok = has[..., 2:] & has[..., 1:-1] & has[..., :-2]
    z = jnp.where(ok, jnp.abs(d2) / jnp.sqrt(jnp.maximum(v, 1e-30)), 0.0)
    return jnp.max(z, axis=-1)


class SharpEmphasis:
    """Wraps a simulator: rows whose light curve has a sharp feature (:func:`sharp_feature` above
    ``threshold``) get loss weight ``weight`` (H), the others 1 (times the wrapped simulator's own
    weights, if any).

    Why this leaves the posterior unchanged: the loss becomes ``E_p[h(x)·(−log q(θ|x))]`` with
    ``h > 0`` a function of the data ``x`` alone; for every ``x`` its minimizer over ``q(·|x)`` is
    still ``p(θ|x)``. What changes is where a finite network spends its capacity: on Roman, 9% of
    the prior's light curves (binary caustic crossings, cusp approaches, sharp high-magnification
    peaks) and 84% of the caustic-crossing planetary ones pass the default threshold of 8."""

    def __init__(self, sim, weight: float, threshold: float):
        if not weight >= 1.0:
            raise ValueError(f"sharp_weight must be >= 1, got {weight}")
        if not threshold > 0.0:
            raise ValueError(f"sharp_threshold must be > 0, got {threshold}")
        self.sim, self.weight, self.threshold = sim, float(weight), float(threshold)

    def __call__(self, key, n: int):
        theta, x, *w = self.sim(key, n)
        h = jnp.where(sharp_feature(x) > self.threshold, self.weight, 1.0).astype(jnp.float32)
        return theta, x, (w[0] * h if w else h)


def mixture_weights(fraction: float, p_class: float) -> tuple[float, float]:
    """``(w_class, w_other)``: the prior / mixture density ratios of :class:`MixtureSimulator` for a
    row in the class and one outside it, ``1 / ((1 − λ) + λ / P(C))`` and ``1 / (1 − λ)``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"enrich_fraction must be in (0, 1), got {fraction}")
    if not 0.0 < p_class < 1.0:
        raise ValueError(f"the class probability must be in (0, 1), got {p_class}")
    return 1.0 / ((1.0 - fraction) + fraction / p_class), 1.0 / (1.0 - fraction)


def accepted_class_probability(probability: float, enrich_accepted: float, base_accepted: float) -> float:
    """The class probability among the light curves inference accepts: the conditioned simulation's
    acceptance ``probability`` times the accepted share of the class rows over that of the prior rows
    (both sets are filtered alike before training)."""
    return probability * enrich_accepted / base_accepted


class MixtureSimulator:
    """Rows of a prior set (probability ``1 − λ``) and of a class-conditioned set (``λ``), with the
    loss weights that make the mixture's expected loss the prior's.

    The training distribution is ``p_mix = (1 − λ)·p + λ·p(·|C)``, with ``p(·|C) = p·1_C / P(C)``,
    so the density ratio of a row is ``w = p / p_mix = 1 / ((1 − λ) + λ·1_C / P(C))``: it needs the
    class flag ``1_C`` of every prior row (prior rows that happen to be in the class get the class
    weight) and the class probability ``P(C)`` (the conditioned simulation's acceptance). Under the
    mixture ``E[w] = 1`` and ``E[w·ℓ] = E_p[ℓ]``: the objective, hence the posterior it targets, is
    unchanged; what changes is that the class is seen in ``λ`` of the rows (many distinct light
    curves, each with a small weight) instead of in ``P(C)`` of them (a few, seen many times).
    """

    def __init__(self, base: BinnedSimulator, base_in_class: np.ndarray, enrich: BinnedSimulator,
                 fraction: float, p_class: float):
        self.base, self.enrich, self.fraction, self.p_class = base, enrich, fraction, p_class
        self.w_class, self.w_other = mixture_weights(fraction, p_class)
        self.w_base = np.where(np.asarray(base_in_class, bool), self.w_class, self.w_other).astype(np.float32)

    def __call__(self, key, n: int):
        rng = _rng_from_key(key)
        from_enrich = rng.random(n) < self.fraction
        i_base = rng.integers(0, len(self.base), size=n)
        i_enr = rng.integers(0, len(self.enrich), size=n)
        e = from_enrich[:, None]
        theta = np.where(e, self.enrich.theta[i_enr], self.base.theta[i_base])
        mean = np.where(e, self.enrich.mean[i_enr], self.base.mean[i_base])
        err = np.where(e, self.enrich.err[i_enr], self.base.err[i_base])
        count = np.where(e, self.enrich.count[i_enr], self.base.count[i_base])
        x = self.base.inputs(mean, err, count, rng)
        w = np.where(from_enrich, self.w_class, self.w_base[i_base]).astype(np.float32)
        return jnp.asarray(theta), x, jnp.asarray(w)


def mixture_rows(keys, base: tuple, enrich: tuple | None, w_base, n: int, fraction: float, w_class: float,
                 n_base: jax.Array | int | None = None, n_enrich: jax.Array | int | None = None):
    """``n`` rows drawn with ``jax.random`` (jittable) from the arrays ``base`` (a tuple of arrays with
    the rows first), or with ``enrich`` from the mixture ``(1 − λ)·base + λ·enrich`` of
    :class:`MixtureSimulator`, and their weights (``w_base[i]`` for base row i, ``w_class`` for
    enrichment rows; None without ``enrich``). ``keys`` = (rows, enrichment rows, mixture choice).
    ``n_base`` / ``n_enrich`` (traced integers allowed): draw from the first rows only (default all;
    the streaming sampler's arrays have room for rows still to come)."""
    k_row, k_enr, k_mix = keys
    i = jax.random.randint(k_row, (n,), 0, base[0].shape[0] if n_base is None else n_base)
    rows = tuple(a[i] for a in base)
    if enrich is None:
        return rows, None
    j = jax.random.randint(k_enr, (n,), 0, enrich[0].shape[0] if n_enrich is None else n_enrich)
    e = jax.random.uniform(k_mix, (n,)) < fraction
    rows = tuple(jnp.where(e.reshape((n,) + (1,) * (a.ndim - 1)), b[j], a)
                 for a, b in zip(rows, enrich, strict=True))
    return rows, jnp.where(e, jnp.float32(w_class), w_base[i])


def _draw_on_device(key, base, enrich, w_base, n: int, cfg: PreprocessConfig, fraction: float,
                    w_class: float, sharp: tuple[float, float] | None, n_base: jax.Array | int | None = None,
                    n_enrich: jax.Array | int | None = None):
    *keys, k_noise = jax.random.split(key, 4)
    (theta, mean, err, count), w = mixture_rows(keys, base, enrich, w_base, n, fraction, w_class,
                                                n_base, n_enrich)
    x = network_input(mean + err * jax.random.normal(k_noise, mean.shape, mean.dtype), err, count, cfg)
    if sharp is not None:
        h = jnp.where(sharp_feature(x) > sharp[1], jnp.float32(sharp[0]), jnp.float32(1.0))
        w = h if w is None else w * h
    return (theta, x) if w is None else (theta, x, w)


class DeviceSampler:
    """A host sampler's distribution (:class:`BinnedSimulator`, optionally in a
    :class:`MixtureSimulator` and/or wrapped by :class:`SharpEmphasis`), drawn on the accelerator:
    the pre-binned rows live in device memory, and the rows, the mixture choice and the noise of a
    batch come from ``jax.random`` with the step's key in one compiled function. Same rows, weights
    and noise distribution as the host path; another random stream.

    ``room`` / ``enrich_room``: extra, empty rows after the base / enrichment rows, for rows still to
    come (:class:`mulens_sbi.data.stream.StreamingSampler`); draws use the first ``n_base`` / ``n_enrich``
    rows only."""

    def __init__(self, sim: BinnedSimulator | MixtureSimulator | SharpEmphasis, cfg: PreprocessConfig,
                 room: int = 0, enrich_room: int = 0):
        sharp = None
        if isinstance(sim, SharpEmphasis):
            sharp, sim = (sim.weight, sim.threshold), sim.sim
        fraction, self.w_class, self.w_other = 0.0, 1.0, 1.0
        self.enrich, self.w_base, self.n_enrich = None, None, 0
        if isinstance(sim, MixtureSimulator):
            fraction, self.w_class, self.w_other = sim.fraction, sim.w_class, sim.w_other
            self.enrich, self.n_enrich = self._put(sim.enrich, enrich_room), len(sim.enrich)
            self.w_base = jnp.asarray(np.concatenate([sim.w_base, np.zeros(room, np.float32)]), jnp.float32)
            sim = sim.base
        if not isinstance(sim, BinnedSimulator):
            raise TypeError(f"{type(self).__name__}: cannot move a {type(sim).__name__} to the device")
        self.base, self.n_base = self._put(sim, room), len(sim)
        self._draw = jax.jit(functools.partial(_draw_on_device, cfg=cfg, fraction=fraction,
                                               w_class=self.w_class, sharp=sharp), static_argnames=("n",))

    @staticmethod
    def _put(sim: BinnedSimulator, room: int = 0) -> tuple:
        """The rows (theta as float32, mean, err, count) on the device, followed by ``room`` zero rows."""
        out = []
        for a in (sim.theta.astype(np.float32), sim.mean, sim.err, sim.count):
            if room:
                a = np.concatenate([a, np.zeros((room,) + a.shape[1:], a.dtype)])
            out.append(jnp.asarray(a))
        return tuple(out)

    def __call__(self, key: jax.Array, n: int) -> tuple:
        """A batch ``(theta_net, x[, weights])`` of ``n`` rows."""
        return self._draw(key, self.base, self.enrich, self.w_base, n=n, n_base=jnp.int32(self.n_base),
                          n_enrich=jnp.int32(max(self.n_enrich, 1)))
