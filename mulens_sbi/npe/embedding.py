"""Embedding networks: observation -> context vector for the conditional flow (flax.linen).

Light-curve input convention (``BinnedConvEmbedding``): a padded array of fixed length N,
shape (..., N, 4), channels in this order:

    0  t_norm     time mapped to [0, 1] by the domain code (e.g. (t - t_start) / duration)
    1  flux_norm  normalized flux (the domain code removes the linear source/blend fluxes' scale)
    2  sigma_norm per-point 1-sigma error in the same units as flux_norm (> 0 where mask = 1)
    3  mask       1 for a real point, 0 for padding / dropped points

Design: points are scattered onto ``n_bins`` equal cells of t_norm in [0, 1] (points outside are
assigned to the first/last cell) with inverse-variance weights w = mask / sigma^2. Per cell the
network sees: weighted mean flux, a has-data flag, the error of the weighted mean, log(1 + count)
and the cell's position in [-1, 1]. Sums are permutation invariant and a masked point adds exactly
zero, so the output does not depend on masked points, on their values (NaN included: they are
replaced by 0 before use) or on the padded length N. Gaps are simply empty cells. A 1-D residual
CNN (stride-2 downsampling between stages) and mean+max pooling over cells follow, then an MLP head.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mulens_sbi.npe.config import EmbeddingConfig

__all__ = ["bin_light_curve", "BinnedConvEmbedding", "MLPEmbedding", "IdentityEmbedding", "make_embedding"]

_ACT = {"gelu": nn.gelu, "silu": nn.silu, "relu": nn.relu, "tanh": jnp.tanh}


def bin_light_curve(lc, n_bins: int):
    """Bin a padded light curve (..., N, 4) onto (..., n_bins, 5) features (see module docstring).

    Pure and jittable; masked points contribute exactly zero.
    """
    t, f, sig, m = lc[..., 0], lc[..., 1], lc[..., 2], lc[..., 3]
    valid = (m > 0) & jnp.isfinite(t) & jnp.isfinite(f) & jnp.isfinite(sig) & (sig > 0)
    t = jnp.where(valid, t, 0.0)
    f = jnp.where(valid, f, 0.0)
    sig = jnp.where(valid, sig, 1.0)
    w = jnp.where(valid, 1.0 / sig ** 2, 0.0)
    idx = jnp.clip(jnp.floor(t * n_bins).astype(jnp.int32), 0, n_bins - 1)
    lead = lc.shape[:-2]
    n = lc.shape[-2]
    idx2 = idx.reshape((-1, n))
    w2, f2, c2 = w.reshape((-1, n)), f.reshape((-1, n)), valid.reshape((-1, n)).astype(lc.dtype)
    rows = jnp.arange(idx2.shape[0])[:, None]
    zeros = jnp.zeros((idx2.shape[0], n_bins), lc.dtype)
    sw = zeros.at[rows, idx2].add(w2)
    swf = zeros.at[rows, idx2].add(w2 * f2)
    cnt = zeros.at[rows, idx2].add(c2)
    has = sw > 0
    safe = jnp.where(has, sw, 1.0)
    mean = jnp.where(has, swf / safe, 0.0)
    err = jnp.where(has, 1.0 / jnp.sqrt(safe), 0.0)
    pos = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, n_bins, dtype=lc.dtype), sw.shape)
    feats = jnp.stack([mean, has.astype(lc.dtype), err, jnp.log1p(cnt), pos], axis=-1)
    return feats.reshape(lead + (n_bins, 5))


class _ResBlock(nn.Module):
    channels: int
    kernel_size: int
    activation: str
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, h):
        act = _ACT[self.activation]
        conv = lambda name, **kw: nn.Conv(self.channels, (self.kernel_size,), padding="SAME",  # noqa: E731
                                          dtype=self.dtype, param_dtype=self.dtype, name=name, **kw)
        y = nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype, name="norm")(h)
        y = conv("conv1")(act(y))
        y = conv("conv2_zero", kernel_init=nn.initializers.zeros)(act(y))
        return h + y


class BinnedConvEmbedding(nn.Module):
    """Light curve (..., N, 4) -> context (..., out_dim). See the module docstring."""

    config: EmbeddingConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, lc):
        cfg = self.config
        act = _ACT[cfg.activation]
        lc = jnp.asarray(lc, self.dtype)
        if lc.ndim < 2 or lc.shape[-1] != 4:
            raise ValueError(f"BinnedConvEmbedding expects (..., N, 4) = (t_norm, flux, sigma, mask), got "
                             f"shape {lc.shape}")
        lead = lc.shape[:-2]
        h = bin_light_curve(lc, cfg.n_bins).reshape((-1, cfg.n_bins, 5))
        h = nn.Conv(cfg.channels[0], (cfg.kernel_size,), padding="SAME", dtype=self.dtype,
                    param_dtype=self.dtype, name="stem")(h)
        for s, ch in enumerate(cfg.channels):
            if s > 0:
                h = nn.Conv(ch, (3,), strides=(2,), padding="SAME", dtype=self.dtype, param_dtype=self.dtype,
                            name=f"down_{s}")(act(h))
            for b in range(cfg.blocks_per_stage):
                h = _ResBlock(ch, cfg.kernel_size, cfg.activation, self.dtype, name=f"stage{s}_block{b}")(h)
        h = act(nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype, name="final_norm")(h))
        h = jnp.concatenate([jnp.mean(h, axis=-2), jnp.max(h, axis=-2)], axis=-1)
        for j, width in enumerate(cfg.hidden):
            h = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"head_{j}")(h))
        h = nn.Dense(cfg.out_dim, dtype=self.dtype, param_dtype=self.dtype, name="out")(h)
        return h.reshape(lead + (cfg.out_dim,))


class MLPEmbedding(nn.Module):
    """Flat observation vector (..., F) -> context (..., out_dim)."""

    config: EmbeddingConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        act = _ACT[cfg.activation]
        h = jnp.asarray(x, self.dtype)
        for j, width in enumerate(cfg.hidden):
            h = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"hidden_{j}")(h))
        return nn.Dense(cfg.out_dim, dtype=self.dtype, param_dtype=self.dtype, name="out")(h)


class IdentityEmbedding(nn.Module):
    """The observation is the context: (..., F) -> (..., F)."""

    config: EmbeddingConfig
    dtype: jnp.dtype = jnp.float32

    def __call__(self, x):
        return jnp.asarray(x, self.dtype)


def make_embedding(config: EmbeddingConfig, dtype=jnp.float32, name: str | None = None) -> nn.Module:
    """Embedding module for ``config.kind``."""
    kinds = {"identity": IdentityEmbedding, "mlp": MLPEmbedding, "binned_conv": BinnedConvEmbedding}
    cls = kinds[config.kind]
    return cls(config, dtype, name=name)
