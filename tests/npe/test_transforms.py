"""ParameterSpace: exact round trips, log-det against autodiff, bounds, validation, JSON."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from mulens_sbi.npe.transforms import ParameterSpace


@pytest.fixture
def space() -> ParameterSpace:
    return ParameterSpace.create(
        ["t_0", "u_0", "t_E", "s", "q", "alpha", "rho"],
        ["identity", "identity", "log", "log", "log10", "identity", "logit"],
        lower=[-50, -1.5, 1.0, 0.2, 1e-5, 0.0, 1e-4],
        upper=[50, 1.5, 300.0, 5.0, 1.0, 360.0, 0.05],
    )


def _draw(space: ParameterSpace, rng, n: int) -> np.ndarray:
    cols = []
    for t, lo, hi in zip(space.transforms, space.lower, space.upper, strict=True):
        if t in ("log", "log10"):
            cols.append(np.exp(rng.uniform(np.log(lo), np.log(hi), n)))
        else:
            cols.append(rng.uniform(lo, hi, n))
    return np.stack(cols, axis=-1)


def test_round_trip_and_standardization(space, rng):
    theta = _draw(space, rng, 1000)
    z = np.asarray(space.to_network(theta))
    back = np.asarray(space.to_physical(z))
    np.testing.assert_allclose(back, theta, rtol=1e-12, atol=1e-12)
    # bounds-derived standardization: each transformed box maps onto [-sqrt(3), sqrt(3)]
    # (rho, a logit, is open at its bounds: use an interior value there)
    edges = np.asarray(space.to_network(np.array([list(space.lower[:6]) + [0.001],
                                                  list(space.upper[:6]) + [0.001]])))
    np.testing.assert_allclose(edges[:, :6], [[-math.sqrt(3)] * 6, [math.sqrt(3)] * 6], atol=1e-12)


def test_log_det_matches_autodiff(space, rng):
    theta = _draw(space, rng, 20)
    for row in theta:
        jac = jax.jacfwd(space.to_network)(row)
        assert np.allclose(np.asarray(jac) - np.diag(np.diag(jac)), 0.0)  # elementwise map
        want = np.sum(np.log(np.abs(np.diag(np.asarray(jac)))))
        np.testing.assert_allclose(float(space.log_det_to_network(row)), want, rtol=1e-12)


def test_density_change_of_variables(rng):
    # z = (log t_E - loc)/scale standard normal  <=>  t_E log-normal: compare with the closed form
    sp = ParameterSpace.create(["t_E"], ["log"], lower=[0.0], upper=[math.inf], loc=[math.log(20)],
                               scale=[0.7])
    t = np.array([[3.0], [20.0], [55.0]])
    z = np.asarray(sp.to_network(t))[:, 0]
    logq = -0.5 * z ** 2 - 0.5 * math.log(2 * math.pi) + np.asarray(sp.log_det_to_network(t))
    lognormal = (-np.log(t[:, 0] * 0.7 * math.sqrt(2 * math.pi))
                 - (np.log(t[:, 0]) - math.log(20)) ** 2 / (2 * 0.49))
    np.testing.assert_allclose(logq, lognormal, rtol=1e-12)


def test_bounds_and_check(space, rng):
    theta = _draw(space, rng, 5)
    assert np.all(np.asarray(space.in_bounds(theta)))
    bad = theta.copy()
    bad[2, 2] = 400.0
    assert list(np.asarray(space.in_bounds(bad))) == [True, True, False, True, True]
    with pytest.raises(ValueError, match=r"'t_E' = 400 outside allowed range"):
        space.check(bad)
    bad = theta.copy()
    bad[0, 3] = -1.0
    with pytest.raises(ValueError, match="'s'"):
        space.check(bad)
    with pytest.raises(ValueError, match="last axis of size 7"):
        space.check(theta[:, :3])


def test_invalid_specs():
    with pytest.raises(ValueError, match="'x': transform 'logit' needs finite bounds"):
        ParameterSpace.create(["x"], ["logit"])
    with pytest.raises(ValueError, match="'x': unknown transform 'sqrt'"):
        ParameterSpace.create(["x"], ["sqrt"])
    with pytest.raises(ValueError, match="'x': transform 'log' needs lower >= 0"):
        ParameterSpace.create(["x"], ["log"], lower=[-1.0], upper=[1.0])
    with pytest.raises(ValueError, match="unique"):
        ParameterSpace.create(["x", "x"])


def test_json_round_trip_and_fit(space, rng):
    d = space.to_dict()
    text = json.dumps(d, allow_nan=False)  # infinite bounds must not leak as Infinity
    assert ParameterSpace.from_dict(json.loads(text)) == space
    open_space = ParameterSpace.create(["a", "b"], ["identity", "log"], lower=[-math.inf, 0.0])
    text = json.dumps(open_space.to_dict(), allow_nan=False)
    assert ParameterSpace.from_dict(json.loads(text)) == open_space
    theta = _draw(space, rng, 4000)
    fitted = space.standardized_from_samples(theta)
    z = np.asarray(fitted.to_network(theta))
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-10)
