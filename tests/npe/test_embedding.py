"""Light-curve embedding: masked points, point order and padding length cannot change the output."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mulens_sbi.npe.config import EmbeddingConfig
from mulens_sbi.npe.embedding import BinnedConvEmbedding, MLPEmbedding, bin_light_curve

CFG = EmbeddingConfig(kind="binned_conv", out_dim=16, hidden=(32,), n_bins=64, channels=(8, 16),
                      kernel_size=5)


def _light_curve(rng, n_real: int, n_pad: int) -> np.ndarray:
    t = np.sort(rng.uniform(0, 1, n_real))
    t = t[(t < 0.3) | (t > 0.45)]  # a gap
    n_real = len(t)
    f = 1 + 2 * np.exp(-((t - 0.6) / 0.05) ** 2) + 0.01 * rng.standard_normal(n_real)
    sig = rng.uniform(0.005, 0.02, n_real)
    lc = np.zeros((n_real + n_pad, 4))
    lc[:n_real] = np.stack([t, f, sig, np.ones(n_real)], axis=-1)
    # padding filled with garbage: it must be ignored
    lc[n_real:, 0] = rng.uniform(-1, 2, n_pad)
    lc[n_real:, 1] = rng.standard_normal(n_pad) * 1e3
    lc[n_real:, 2] = rng.uniform(0, 1, n_pad)
    return lc


@pytest.fixture(scope="module")
def net():
    model = BinnedConvEmbedding(CFG, jnp.float64)
    # random weights everywhere (the residual blocks would start as identities); the structure comes
    # from a trace, which avoids compiling the initializer
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 300, 4)))
    gen = np.random.default_rng(1)
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(0.3 * gen.standard_normal(s.shape)), shapes)
    return jax.jit(lambda x: model.apply(params, x))


def test_masked_points_and_padding_do_not_matter(net, rng):
    lc = _light_curve(rng, 250, 50)
    lc300 = np.zeros((2, 300, 4))
    n = lc.shape[0]
    lc300[0, :n] = lc
    lc300[1, :n] = lc
    lc300[1, n:, :3] = rng.standard_normal((300 - n, 3)) * 50  # more garbage, different padding length
    lc300[1, n - 50:n, 1] = np.nan  # masked points may even be NaN
    out = np.asarray(net(jnp.asarray(lc300)))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], out[1], rtol=0, atol=1e-12)


def test_permutation_invariance_and_sensitivity(net, rng):
    lc = _light_curve(rng, 250, 300 - 250)
    n = lc.shape[0]
    full = np.zeros((300, 4))
    full[:n] = lc
    perm = rng.permutation(300)
    changed = full.copy()
    real = np.flatnonzero(full[:, 3] > 0)
    changed[real[len(real) // 2], 1] += 0.5  # one real point moves: the output must move
    out = np.asarray(net(jnp.asarray(np.stack([full, full[perm], changed]))))
    np.testing.assert_allclose(out[1], out[0], rtol=0, atol=1e-9)
    assert np.max(np.abs(out[2] - out[0])) > 1e-4


def test_binning_against_numpy(rng):
    lc = _light_curve(rng, 200, 20)
    feats = np.asarray(bin_light_curve(jnp.asarray(lc), 16))
    real = lc[lc[:, 3] > 0]
    idx = np.clip(np.floor(real[:, 0] * 16).astype(int), 0, 15)
    for b in range(16):
        sel = idx == b
        if not sel.any():
            assert feats[b, 1] == 0 and feats[b, 0] == 0 and feats[b, 3] == 0
            continue
        w = 1 / real[sel, 2] ** 2
        np.testing.assert_allclose(feats[b, 0], np.sum(w * real[sel, 1]) / w.sum(), rtol=1e-12)
        np.testing.assert_allclose(feats[b, 2], 1 / np.sqrt(w.sum()), rtol=1e-12)
        np.testing.assert_allclose(feats[b, 3], np.log1p(sel.sum()), rtol=1e-12)
    assert np.any(feats[:, 1] == 0)  # the gap leaves empty cells


def test_shapes_and_errors():
    mlp = MLPEmbedding(EmbeddingConfig(kind="mlp", out_dim=5, hidden=(7,)))
    p = mlp.init(jax.random.PRNGKey(0), jnp.zeros((3, 4)))
    assert mlp.apply(p, jnp.zeros((2, 3, 4))).shape == (2, 3, 5)
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 4\)"):
        BinnedConvEmbedding(CFG).init(jax.random.PRNGKey(0), jnp.zeros((1, 10, 3)))
    with pytest.raises(ValueError, match="n_bins"):
        EmbeddingConfig(kind="binned_conv", n_bins=100, channels=(8, 8, 8, 8))
