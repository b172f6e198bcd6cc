"""The network: embedding + conditional flow, as one flax.linen module, and its initialization."""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mulens_sbi.npe.config import NPEConfig
from mulens_sbi.npe.embedding import make_embedding
from mulens_sbi.npe.flows import ConditionalFlow

__all__ = ["NPEModel", "init_params", "count_params"]


class NPEModel(nn.Module):
    """q(z | x) with z in the standardized network space (see ``transforms``).

    Methods (use with ``model.apply(params, ..., method=...)``):
      ``embed(x) -> c``; ``log_prob(z, x)``; ``log_prob_context(z, c)``;
      ``sample_context(u, c) -> (z, log q)`` mapping base noise u ~ N(0, I) to samples.
    """

    config: NPEConfig
    theta_dim: int

    def setup(self):
        dt = jnp.float32 if self.config.dtype == "float32" else jnp.float64
        self.embedding = make_embedding(self.config.embedding, dt)
        self.flow = ConditionalFlow(self.config.flow, self.theta_dim, dt)

    def embed(self, x):
        return self.embedding(x)

    def log_prob_context(self, z, c):
        return self.flow.log_prob(z, c)

    def log_prob(self, z, x):
        return self.flow.log_prob(z, self.embedding(x))

    def sample_context(self, u, c):
        return self.flow.sample_from_noise(u, c)

    def __call__(self, z, x):
        return self.log_prob(z, x)


def _key_seed(key: jax.Array) -> list[int]:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key).ravel()]


def init_params(config: NPEConfig, theta_dim: int, x_example, key: jax.Array):
    """Initialize parameters for observations shaped like ``x_example`` (with a leading batch axis).

    Returns (model, params). The parameter structure comes from ``jax.eval_shape(model.init)`` (a trace,
    no compilation); values are drawn host-side from a numpy generator seeded by ``key``, with the
    same scheme as the modules' own initializers: kernels LeCun-normal (truncated at 2 sigma,
    variance 1/fan_in), biases 0, LayerNorm scales 1, and layers named ``*_zero`` all zeros (so each
    flow layer starts as the identity). This avoids compiling the initializer (seconds on a CPU).
    """
    model = NPEModel(config, theta_dim)
    z = jnp.zeros((jax.tree_util.tree_leaves(x_example)[0].shape[0], theta_dim))
    shapes = jax.eval_shape(model.init, key, z, x_example)
    rng = np.random.default_rng(_key_seed(key))
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes))
    out = {}
    for path, sd in sorted(flat.items()):
        leaf, owner = path[-1], path[-2] if len(path) > 1 else ""
        if owner.endswith("_zero") or leaf == "bias":
            v = np.zeros(sd.shape)
        elif leaf == "scale":
            v = np.ones(sd.shape)
        elif leaf == "kernel":
            fan_in = int(np.prod(sd.shape[:-1]))
            t = rng.standard_normal(sd.shape)
            while np.any(np.abs(t) > 2):
                bad = np.abs(t) > 2
                t[bad] = rng.standard_normal(int(bad.sum()))
            v = t * np.sqrt(1.0 / fan_in) / _TRUNC_STD
        else:
            raise ValueError(f"init_params: no initialization rule for parameter {'/'.join(path)}")
        out[path] = jnp.asarray(v, dtype=sd.dtype)
    return model, flax.traverse_util.unflatten_dict(out)


#: standard deviation of a unit normal truncated to [-2, 2]
_TRUNC_STD = 0.87962566103423978


def count_params(params) -> int:
    return int(sum(a.size for a in jax.tree_util.tree_leaves(params)))
