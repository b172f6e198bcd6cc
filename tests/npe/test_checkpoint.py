"""Posterior save/load round trip (no pickle), integrity checks and bounded prior-leakage handling."""

from __future__ import annotations

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mulens_sbi.npe.checkpoint import FORMAT, load_posterior, save_posterior
from mulens_sbi.npe.config import EmbeddingConfig, FlowConfig, NPEConfig
from mulens_sbi.npe.model import init_params
from mulens_sbi.npe.posterior import Posterior
from mulens_sbi.npe.transforms import ParameterSpace

# same architecture as tests/npe/test_train.py (shares compiled kernels when run together)
CFG = NPEConfig(FlowConfig(n_layers=2, hidden=(32, 32)), EmbeddingConfig(kind="mlp", out_dim=8, hidden=(32,)))
SPACE = ParameterSpace.create(["t_E", "u_0"], ["log", "identity"], lower=[1.0, -2.0], upper=[300.0, 2.0])


@pytest.fixture(scope="module")
def posterior() -> Posterior:
    _, params = init_params(CFG, 2, jnp.zeros((1, 2)), jax.random.PRNGKey(0))
    gen = np.random.default_rng(4)
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * gen.standard_normal(a.shape).astype(a.dtype), params)
    return Posterior(CFG, SPACE, params, {"training": {"steps": 0}, "provenance": {"simulator": "toy"}})


def test_round_trip(posterior, tmp_path):
    save_posterior(posterior, tmp_path / "model")
    side = json.loads((tmp_path / "model" / "posterior.json").read_text())
    assert side["format"] == FORMAT
    assert side["parameter_space"]["names"] == ["t_E", "u_0"]
    assert side["parameter_space"]["transforms"] == ["log", "identity"]
    assert {"mulens_sbi", "jax", "flax"} <= set(side["versions"])
    assert side["metadata"]["provenance"] == {"simulator": "toy"}
    assert side["n_params"] == posterior.n_params
    loaded = load_posterior(tmp_path / "model")
    assert loaded.config == posterior.config and loaded.space == posterior.space
    for a, b in zip(jax.tree_util.tree_leaves(posterior.params), jax.tree_util.tree_leaves(loaded.params),
                    strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    xs = jnp.asarray([[0.3, -0.2], [1.0, 0.5]])
    s1 = posterior.sample_batched(xs, 64, jax.random.PRNGKey(1))
    s2 = loaded.sample_batched(xs, 64, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(posterior.log_prob(s1[0], xs[0]), loaded.log_prob(s1[0], xs[0]))
    assert np.all(np.isfinite(s1)) and np.all(np.asarray(SPACE.in_bounds(s1)))


def test_no_overwrite_and_integrity(posterior, tmp_path):
    d = save_posterior(posterior, tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_posterior(posterior, d)
    save_posterior(posterior, d, overwrite=True)
    blob = bytearray((d / "weights.msgpack").read_bytes())
    blob[-3] ^= 0xFF
    (d / "weights.msgpack").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="sha256"):
        load_posterior(d)
    (d / "posterior.json").write_text('{"format": 1,\n "x": }')
    with pytest.raises(ValueError, match="line 2, column"):
        load_posterior(d)
    with pytest.raises(FileNotFoundError):
        load_posterior(tmp_path / "nothing")


def test_log_prob_is_a_density_in_physical_units(posterior):
    """Integrate q(t_E, u_0 | x) over a grid in physical units: the Jacobian of log t_E is included."""
    x = jnp.asarray([0.3, -0.2])
    te = np.exp(np.linspace(np.log(1.0), np.log(300.0), 801))
    u0 = np.linspace(-2, 2, 401)
    g = np.stack(np.meshgrid(te, u0, indexing="ij"), axis=-1)
    lp = posterior.log_prob(g, x)
    mass = np.trapezoid(np.trapezoid(np.exp(lp), u0, axis=1), te)
    # mass inside the prior box = acceptance of the sampler
    _, info = posterior.sample(x, 20000, jax.random.PRNGKey(2), return_info=True)
    assert abs(mass - info["acceptance"]) < 0.01, (mass, info["acceptance"])
    assert posterior.log_prob(np.array([400.0, 0.0]), x) == -math.inf


def test_leakage_is_bounded(posterior):
    """A prior box far from the flow's mass: sampling stops after max_rounds with NaNs and a warning."""
    tight = ParameterSpace(SPACE.names, SPACE.transforms, (1.0, -2.0), (1.001, -1.999), SPACE.loc,
                           SPACE.scale)
    post = Posterior(CFG, tight, posterior.params)
    with pytest.warns(RuntimeWarning, match="prior leakage"):
        s, info = post.sample(jnp.asarray([0.3, -0.2]), 64, jax.random.PRNGKey(0), max_rounds=3,
                              return_info=True)
    assert np.isnan(s).any() and info["n_missing"] > 0 and info["acceptance"] < 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, info = posterior.sample(jnp.asarray([0.3, -0.2]), 64, jax.random.PRNGKey(0), leakage="keep",
                                   return_info=True)
    assert s.shape == (64, 2) and info["in_bounds"].shape == (64,)


def test_within_is_the_flow_truncated_to_a_box(posterior):
    """``within=`` (a restricted prior): every sample lies in the box, ``mass_within`` equals the
    quadrature of q over the box divided by its integral over the prior box (within 4 binomial σ of
    the in-prior draws, plus 0.002 for the quadrature), and the
    samples' mean t_E matches the truncated density's mean from the same quadrature (within 3 standard
    errors). Three observations with different masses exercise the rounds that redraw only the rows
    still short."""
    xs = jnp.asarray([[0.3, -0.2], [1.0, 0.5], [-0.7, 0.9]])
    box = (np.array([1.0, 0.2]), np.array([300.0, 2.0]))  # u_0 > 0.2
    s, info = posterior.sample_batched(xs, 4000, jax.random.PRNGKey(5), within=box, return_info=True)
    assert np.all(np.isfinite(s)) and np.all(info["n_missing"] == 0)
    assert np.all(s[..., 1] >= 0.2) and np.all(np.asarray(SPACE.in_bounds(s)))
    te = np.exp(np.linspace(np.log(1.0), np.log(300.0), 801))
    u0 = np.linspace(-2, 2, 801)
    g = np.stack(np.meshgrid(te, u0, indexing="ij"), axis=-1)
    for k in range(3):
        dens = np.exp(posterior.log_prob(g, xs[k]))
        inside = (u0 >= 0.2)[None, :]
        m_prior = np.trapezoid(np.trapezoid(dens, u0, axis=1), te)
        m_box = np.trapezoid(np.trapezoid(np.where(inside, dens, 0.0), u0, axis=1), te)
        mass = m_box / m_prior
        n_in = 4000 / info["mass_within"][k]  # in-prior draws made (about)
        tol = 4 * np.sqrt(mass * (1 - mass) / n_in) + 0.002
        assert abs(info["mass_within"][k] - mass) < tol, (k, info["mass_within"][k], mass, tol)
        mean_te = np.trapezoid(te * np.trapezoid(np.where(inside, dens, 0.0), u0, axis=1), te) / m_box
        se = s[k, :, 0].std() / np.sqrt(s.shape[1])
        assert abs(s[k, :, 0].mean() - mean_te) < 3 * se + 0.005 * mean_te, (k, s[k, :, 0].mean(), mean_te)
    with pytest.raises(ValueError, match="u_0 range .* inside the prior"):
        posterior.sample_batched(xs, 10, jax.random.PRNGKey(5),
                                 within=(np.array([1.0, -3.0]), np.array([300.0, 2.0])))
    with pytest.raises(ValueError, match="leakage='reject'"):
        posterior.sample_batched(xs, 10, jax.random.PRNGKey(5), within=box, leakage="keep")
