"""Conditional rational-quadratic neural spline flow (Durkan et al. 2019), flax.linen.

Direction convention: the flow maps parameters ``theta`` (network space, (..., D)) to base noise
``u = f(theta; c)`` with ``u ~ N(0, I)``; so

    log q(theta | c) = log N(f(theta; c); 0, I) + log|det df/dtheta|.

``f`` is a stack of layers, applied in order:
  1. (optional) a conditional elementwise affine map u = (theta - mu(c)) * exp(-log_sigma(c)),
  2. ``n_layers`` x [fixed permutation, then a rational-quadratic spline coupling layer].

A coupling layer keeps the first ``D // 2`` coordinates (after the permutation) and transforms the
others elementwise by monotone rational-quadratic splines on [-B, B] (identity outside, so the map
is a bijection of R^D) whose widths, heights and knot derivatives come from an MLP of
(kept coordinates, context). For D = 1 nothing is kept and the spline depends on the context only.
Every layer is initialised to the identity. Both directions are closed form, so ``log_prob`` and
``sample`` cost the same.

Shapes broadcast: ``theta`` (..., D) with ``context`` (..., C) of any broadcast-compatible leading
shape; the context's first Dense layer is evaluated on the context's own (smaller) shape, so
sampling n points for one observation embeds and projects the context once.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mulens_sbi.npe.config import FlowConfig

__all__ = [
    "rq_spline_forward",
    "rq_spline_inverse",
    "spline_params",
    "ConditionalFlow",
    "permutations",
]

_HI = jax.lax.Precision.HIGHEST
_ACT = {"gelu": nn.gelu, "silu": nn.silu, "relu": nn.relu, "tanh": jnp.tanh}


# ----------------------------------------------------------------------------- spline math
def spline_params(raw, bound: float, min_w: float, min_h: float, min_d: float):
    """Raw network outputs (..., 3K-1) -> knots.

    Returns (xk, yk, dk): knot x-positions (..., K+1), y-positions (..., K+1), derivatives (..., K+1)
    with the boundary derivatives fixed to 1 (continuous with the identity tails). All-zero raw
    outputs give the identity map (equal bins, unit derivatives).
    """
    k = (raw.shape[-1] + 1) // 3
    rw, rh, rd = raw[..., :k], raw[..., k:2 * k], raw[..., 2 * k:]
    w = min_w + (1 - min_w * k) * jax.nn.softmax(rw, axis=-1)
    h = min_h + (1 - min_h * k) * jax.nn.softmax(rh, axis=-1)
    # softplus(shift) = 1 - min_d so that raw = 0 gives derivative exactly 1
    shift = math.log(math.expm1(1.0 - min_d))
    d_inner = min_d + jax.nn.softplus(rd + shift)
    ones = jnp.ones(raw.shape[:-1] + (1,), raw.dtype)
    # cumulative sums as a product with a triangular matrix (K is small; compiles faster than cumsum),
    # first knot at -bound, last pinned exactly at +bound
    tri = jnp.asarray(np.triu(np.ones((k, k - 1))), raw.dtype)
    xk = jnp.concatenate([-ones, (2 * jnp.matmul(w, tri, precision=_HI) - 1), ones], axis=-1) * bound
    yk = jnp.concatenate([-ones, (2 * jnp.matmul(h, tri, precision=_HI) - 1), ones], axis=-1) * bound
    dk = jnp.concatenate([ones, d_inner, ones], axis=-1)
    return xk, yk, dk


def _gather(a, onehot):
    """a[..., i] for the one-hot bin selector (..., K) (a has K+1 or K entries; the last is unused)."""
    return jnp.sum(a[..., :onehot.shape[-1]] * onehot, axis=-1)


def _bin_index(knots, v):
    """One-hot (..., K) of the bin of v among knots (..., K+1); v is assumed clipped into range.

    (A one-hot select compiles and differentiates faster than a gather for the small K used.)"""
    k = knots.shape[-1] - 1
    idx = jnp.clip(jnp.sum(v[..., None] >= knots[..., 1:-1], axis=-1), 0, k - 1)
    return (idx[..., None] == jnp.arange(k)).astype(knots.dtype)


def rq_spline_forward(x, xk, yk, dk):
    """Monotone RQ spline y(x) and log dy/dx, elementwise; identity outside [xk[0], xk[-1]]."""
    lo, hi = xk[..., 0], xk[..., -1]
    inside = (x > lo) & (x < hi)
    xc = jnp.clip(x, lo, hi)
    i = _bin_index(xk, xc)
    x0, x1 = _gather(xk, i), _gather(xk[..., 1:], i)
    y0, y1 = _gather(yk, i), _gather(yk[..., 1:], i)
    d0, d1 = _gather(dk, i), _gather(dk[..., 1:], i)
    w, h = x1 - x0, y1 - y0
    s = h / w
    xi = (xc - x0) / w
    om = xi * (1 - xi)
    den = s + (d1 + d0 - 2 * s) * om
    y = y0 + h * (s * xi ** 2 + d0 * om) / den
    dydx = s ** 2 * (d1 * xi ** 2 + 2 * s * om + d0 * (1 - xi) ** 2) / den ** 2
    y = jnp.where(inside, y, x)
    logdet = jnp.where(inside, jnp.log(dydx), 0.0)
    return y, logdet


def rq_spline_inverse(y, xk, yk, dk):
    """Inverse of ``rq_spline_forward``: x(y) and log dy/dx at that x (of the forward map)."""
    lo, hi = yk[..., 0], yk[..., -1]
    inside = (y > lo) & (y < hi)
    yc = jnp.clip(y, lo, hi)
    i = _bin_index(yk, yc)
    x0, x1 = _gather(xk, i), _gather(xk[..., 1:], i)
    y0, y1 = _gather(yk, i), _gather(yk[..., 1:], i)
    d0, d1 = _gather(dk, i), _gather(dk[..., 1:], i)
    w, h = x1 - x0, y1 - y0
    s = h / w
    dy = yc - y0
    c2 = d1 + d0 - 2 * s
    a = h * (s - d0) + dy * c2
    b = h * d0 - dy * c2
    c = -s * dy
    disc = jnp.maximum(b ** 2 - 4 * a * c, 0.0)
    xi = (2 * c) / (-b - jnp.sqrt(disc))
    xi = jnp.clip(xi, 0.0, 1.0)
    x = x0 + xi * w
    om = xi * (1 - xi)
    den = s + c2 * om
    dydx = s ** 2 * (d1 * xi ** 2 + 2 * s * om + d0 * (1 - xi) ** 2) / den ** 2
    x = jnp.where(inside, x, y)
    logdet = jnp.where(inside, jnp.log(dydx), 0.0)
    return x, logdet


def permutations(dim: int, n_layers: int, seed: int) -> list[np.ndarray]:
    """Fixed permutations: layer 0 identity, odd layers reverse, other even layers random (seeded).

    With D//2 kept coordinates per coupling, the reversal guarantees that every coordinate is
    transformed at least once in any two consecutive layers.
    """
    rng = np.random.default_rng(seed)
    perms = []
    for i in range(n_layers):
        if i == 0:
            p = np.arange(dim)
        elif i % 2 == 1:
            p = np.arange(dim)[::-1].copy()
        else:
            p = rng.permutation(dim)
        perms.append(p)
    return perms


# ----------------------------------------------------------------------------- modules
class _Conditioner(nn.Module):
    """MLP of (kept coordinates, context) -> raw spline parameters (..., n_out, 3K-1)."""

    hidden: tuple[int, ...]
    n_out: int
    n_params: int
    activation: str
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, kept, context):
        act = _ACT[self.activation]
        dense = lambda n, name, **kw: nn.Dense(n, dtype=self.dtype, param_dtype=self.dtype,  # noqa: E731
                                              name=name, **kw)
        h = dense(self.hidden[0], "context_in")(context)
        if kept.shape[-1] > 0:
            h = h + dense(self.hidden[0], "kept_in", use_bias=False)(kept)
        h = act(h)
        for j, width in enumerate(self.hidden[1:]):
            h = act(dense(width, f"hidden_{j}")(h))
        out = dense(self.n_out * self.n_params, "out_zero", kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.zeros)(h)
        return out.reshape(out.shape[:-1] + (self.n_out, self.n_params))


class _AffineFirst(nn.Module):
    """Context-conditioned elementwise affine layer: u = (theta - mu(c)) * exp(-log_sigma(c))."""

    dim: int
    hidden: tuple[int, ...]
    activation: str
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, context):
        act = _ACT[self.activation]
        h = context
        for j, width in enumerate(self.hidden):
            h = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"hidden_{j}")(h))
        out = nn.Dense(2 * self.dim, dtype=self.dtype, param_dtype=self.dtype, name="out_zero",
                       kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)(h)
        mu, raw = out[..., :self.dim], out[..., self.dim:]
        log_sigma = 8.0 * jnp.tanh(raw / 8.0)  # soft clamp to (-8, 8)
        return mu, log_sigma


class ConditionalFlow(nn.Module):
    """Conditional RQ-NSF on R^dim. Methods: ``forward`` (theta -> u, logdet), ``inverse``
    (u -> theta, logdet of the forward map), ``log_prob(theta, context)``,
    ``sample_from_noise(u, context)``."""

    config: FlowConfig
    dim: int
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg = self.config
        self._perms = permutations(self.dim, cfg.n_layers, cfg.permutation_seed)
        self._inv_perms = [np.argsort(p) for p in self._perms]
        self._n_keep = self.dim // 2
        n_params = 3 * cfg.n_bins - 1
        self.conditioners = [
            _Conditioner(tuple(cfg.hidden), self.dim - self._n_keep, n_params, cfg.activation, self.dtype,
                         name=f"coupling_{i}")
            for i in range(cfg.n_layers)
        ]
        if cfg.affine_first:
            self.affine = _AffineFirst(self.dim, tuple(cfg.hidden[:1]), cfg.activation, self.dtype)

    def _knots(self, i, kept, context):
        cfg = self.config
        raw = self.conditioners[i](kept, context)
        return spline_params(raw, cfg.bound, cfg.min_bin_width, cfg.min_bin_height, cfg.min_derivative)

    def forward(self, theta, context):
        """theta (..., D) -> (u (..., D), log|det du/dtheta| (...))."""
        theta = jnp.asarray(theta, self.dtype)
        context = jnp.asarray(context, self.dtype)
        batch = jnp.broadcast_shapes(theta.shape[:-1], context.shape[:-1])
        x = jnp.broadcast_to(theta, batch + (self.dim,))
        logdet = jnp.zeros(batch, self.dtype)
        if self.config.affine_first:
            mu, log_sigma = self.affine(context)
            x = (x - mu) * jnp.exp(-log_sigma)
            logdet = logdet - jnp.sum(log_sigma, axis=-1)
        k = self._n_keep
        for i in range(self.config.n_layers):
            x = x[..., self._perms[i]]
            kept, rest = x[..., :k], x[..., k:]
            xk, yk, dk = self._knots(i, kept, context)
            rest, ld = rq_spline_forward(rest, xk, yk, dk)
            x = jnp.concatenate([kept, rest], axis=-1)
            logdet = logdet + jnp.sum(ld, axis=-1)
        return x, logdet

    def inverse(self, u, context):
        """u (..., D) -> (theta (..., D), log|det du/dtheta| at theta (...))."""
        u = jnp.asarray(u, self.dtype)
        context = jnp.asarray(context, self.dtype)
        batch = jnp.broadcast_shapes(u.shape[:-1], context.shape[:-1])
        x = jnp.broadcast_to(u, batch + (self.dim,))
        logdet = jnp.zeros(batch, self.dtype)
        k = self._n_keep
        for i in reversed(range(self.config.n_layers)):
            kept, rest = x[..., :k], x[..., k:]
            xk, yk, dk = self._knots(i, kept, context)
            rest, ld = rq_spline_inverse(rest, xk, yk, dk)
            x = jnp.concatenate([kept, rest], axis=-1)
            x = x[..., self._inv_perms[i]]
            logdet = logdet + jnp.sum(ld, axis=-1)
        if self.config.affine_first:
            mu, log_sigma = self.affine(context)
            x = x * jnp.exp(log_sigma) + mu
            logdet = logdet - jnp.sum(log_sigma, axis=-1)
        return x, logdet

    def log_prob(self, theta, context):
        """log q(theta | context) in network space, shape (...)."""
        u, logdet = self.forward(theta, context)
        base = -0.5 * jnp.sum(u ** 2, axis=-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return base + logdet

    def sample_from_noise(self, u, context):
        """Map base noise u ~ N(0, I) (..., D) to samples theta and their log q(theta | context)."""
        theta, logdet = self.inverse(u, context)
        u = jnp.asarray(u, self.dtype)
        base = -0.5 * jnp.sum(u ** 2, axis=-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return theta, base + logdet

    def __call__(self, theta, context):
        return self.log_prob(theta, context)
