"""Conditional RQ spline flow: exact identities (float64) and normalization."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mulens_sbi.npe.config import FlowConfig
from mulens_sbi.npe.flows import ConditionalFlow, rq_spline_forward, rq_spline_inverse, spline_params


def _perturbed_flow(dim: int, ctx: int, scale: float = 0.1, seed: int = 0, **cfg):
    """A float64 flow whose parameters are randomized (the initialization is the identity).

    scale 0.1 gives log|det| in about [-8, 1.5] over the test points: clearly non-trivial but
    well-conditioned (larger random weights make the 4-layer composition so ill-conditioned that the
    round trip loses precision in any float format)."""
    flow = ConditionalFlow(FlowConfig(**{"n_layers": 4, "hidden": (16, 16), **cfg}), dim, jnp.float64)
    params = flow.init(jax.random.PRNGKey(seed), jnp.zeros((1, dim)), jnp.zeros((1, ctx)))
    leaves, tdef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    return flow, jax.tree_util.tree_unflatten(tdef, leaves)


def _jit(flow, method):
    return jax.jit(lambda p, a, c: flow.apply(p, a, c, method=method))


def test_spline_identity_at_zero_and_monotone():
    x = jnp.linspace(-7, 7, 1001)
    xk, yk, dk = spline_params(jnp.zeros((1001, 3 * 8 - 1)), 5.0, 1e-3, 1e-3, 1e-3)
    y, ld = rq_spline_forward(x, xk, yk, dk)
    np.testing.assert_allclose(y, x, atol=1e-12)
    np.testing.assert_allclose(ld, 0.0, atol=1e-12)
    raw = jax.random.normal(jax.random.PRNGKey(3), (1, 23)) * 2
    xk, yk, dk = spline_params(jnp.broadcast_to(raw, (1001, 23)), 5.0, 1e-3, 1e-3, 1e-3)
    y, ld = rq_spline_forward(x, xk, yk, dk)
    assert np.all(np.diff(np.asarray(y)) > 0)
    # log-derivative against finite differences of y (central, h = 1e-6), away from knots
    h = 1e-6
    yp, _ = rq_spline_forward(x + h, xk, yk, dk)
    ym, _ = rq_spline_forward(x - h, xk, yk, dk)
    fd = np.log((np.asarray(yp) - np.asarray(ym)) / (2 * h))
    near_knot = np.min(np.abs(np.asarray(x)[:, None] - np.asarray(xk[0])[None]), axis=1) < 1e-4
    np.testing.assert_allclose(np.asarray(ld)[~near_knot], fd[~near_knot], atol=1e-6)
    xi, ldi = rq_spline_inverse(y, xk, yk, dk)
    np.testing.assert_allclose(xi, x, atol=1e-9)
    np.testing.assert_allclose(ldi, ld, atol=1e-9)


@pytest.mark.parametrize("dim", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_round_trip_and_logdet(dim):
    flow, params = _perturbed_flow(dim, ctx=3)
    theta = 2.5 * jax.random.normal(jax.random.PRNGKey(10), (64, dim))  # includes |theta| > bound tails
    ctx = jax.random.normal(jax.random.PRNGKey(11), (64, 3))
    u, ld = _jit(flow, flow.forward)(params, theta, ctx)
    assert not np.allclose(u, theta, atol=1e-2)  # non-trivial map
    back, ld_inv = _jit(flow, flow.inverse)(params, u, ctx)
    np.testing.assert_allclose(back, theta, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ld_inv, ld, atol=1e-6, rtol=0)
    jacobian = jax.jit(jax.jacfwd(lambda t, c: flow.apply(params, t, c, method=flow.forward)[0]))
    for i in range(4):
        jac = jacobian(theta[i], ctx[i])
        _, logabsdet = np.linalg.slogdet(np.asarray(jac))
        np.testing.assert_allclose(float(ld[i]), logabsdet, atol=1e-8)


def test_context_broadcasting():
    flow, params = _perturbed_flow(2, ctx=3)
    theta = jax.random.normal(jax.random.PRNGKey(1), (4, 7, 2))
    ctx = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
    log_prob = _jit(flow, flow.log_prob)
    lp_b = log_prob(params, theta, ctx[:, None, :])
    lp_full = log_prob(params, theta, jnp.broadcast_to(ctx[:, None, :], (4, 7, 3)))
    assert lp_b.shape == (4, 7)
    np.testing.assert_allclose(lp_b, lp_full, atol=1e-12)


def test_density_normalizes_1d_2d():
    flow1, p1 = _perturbed_flow(1, ctx=2, scale=0.2, seed=5)
    x = jnp.linspace(-15, 15, 6001)[:, None]
    for c in ([0.3, -1.0], [2.0, 0.5]):
        lp = _jit(flow1, flow1.log_prob)(p1, x, jnp.asarray(c))
        integral = float(jnp.sum(jnp.exp(lp)) * (x[1, 0] - x[0, 0]))
        assert abs(integral - 1.0) < 1e-3, integral
    flow2, p2 = _perturbed_flow(2, ctx=2, scale=0.1, seed=7)
    g = jnp.linspace(-12, 12, 801)
    xx, yy = jnp.meshgrid(g, g, indexing="ij")
    pts = jnp.stack([xx.ravel(), yy.ravel()], axis=-1)
    lp = _jit(flow2, flow2.log_prob)(p2, pts, jnp.asarray([0.7, -0.2]))
    integral = float(jnp.sum(jnp.exp(lp)) * (g[1] - g[0]) ** 2)
    assert abs(integral - 1.0) < 2e-3, integral


def test_samples_follow_log_prob():
    """Samples from the inverse map have the flow's own density: compare a histogram (1-D)."""
    flow, p = _perturbed_flow(1, ctx=2, scale=0.2, seed=5)
    c = jnp.asarray([0.3, -1.0])
    u = jax.random.normal(jax.random.PRNGKey(0), (200_000, 1))
    theta, lq = _jit(flow, flow.sample_from_noise)(p, u, c)
    log_prob = _jit(flow, flow.log_prob)
    lq_direct = log_prob(p, theta, c)
    np.testing.assert_allclose(lq, lq_direct, atol=1e-8)
    edges = np.linspace(-4, 4, 41)
    hist, _ = np.histogram(np.asarray(theta[:, 0]), bins=edges)
    mids = 0.5 * (edges[1:] + edges[:-1])
    fine = jnp.linspace(-4, 4, 40 * 50 + 1)[:, None]
    dens = np.exp(np.asarray(log_prob(p, fine, c)))
    mass = np.array([np.trapezoid(dens[i * 50:(i + 1) * 50 + 1], np.asarray(fine[i * 50:(i + 1) * 50 + 1, 0]))
                     for i in range(len(mids))])
    expected = mass * len(u)
    sel = expected > 50
    chi2 = np.sum((hist[sel] - expected[sel]) ** 2 / expected[sel])
    assert chi2 < sel.sum() + 5 * math.sqrt(2 * sel.sum()), (chi2, sel.sum())


@pytest.mark.slow
def test_float32_round_trip():
    flow = ConditionalFlow(FlowConfig(n_layers=4, hidden=(16, 16)), 3, jnp.float32)
    params = flow.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 2)))
    leaves, tdef = jax.tree_util.tree_flatten(params)
    leaves = [a + 0.1 * jax.random.normal(jax.random.PRNGKey(i), a.shape, a.dtype)
              for i, a in enumerate(leaves)]
    params = jax.tree_util.tree_unflatten(tdef, leaves)
    theta = jax.random.normal(jax.random.PRNGKey(1), (256, 3), jnp.float32)
    ctx = jax.random.normal(jax.random.PRNGKey(2), (256, 2), jnp.float32)
    u, _ = _jit(flow, flow.forward)(params, theta, ctx)
    assert u.dtype == jnp.float32
    back, _ = _jit(flow, flow.inverse)(params, u, ctx)
    np.testing.assert_allclose(back, theta, atol=1e-4)
