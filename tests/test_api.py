"""The public API: validation errors, batch masking, exported names, gradients."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mulens_sbi
from mulens_sbi import magnification, magnification_batch

T = np.linspace(-20.0, 20.0, 64)
GOOD = {"t_0": 0.5, "u_0": 0.1, "t_E": 12.0, "s": 1.2, "q": 0.01, "alpha": 40.0}

# (parameter, bad value, fragment of the allowed range that the message must name)
BAD = [
    ("t_0", np.nan, "t_0"), ("t_0", np.inf, "t_0"),
    ("u_0", np.nan, "u_0"), ("u_0", -np.inf, "u_0"),
    ("t_E", 0.0, "0 < t_E"), ("t_E", -3.0, "0 < t_E"), ("t_E", np.nan, "0 < t_E"), ("t_E", np.inf, "t_E"),
    ("s", 0.0, "0 < s"), ("s", -1.0, "0 < s"), ("s", np.nan, "0 < s"),
    ("q", 0.0, "0 < q"), ("q", -0.1, "0 < q"), ("q", np.inf, "q"),
    ("alpha", np.nan, "alpha"), ("alpha", np.inf, "alpha"),
]


@pytest.mark.parametrize("name,value,allowed", BAD)
def test_bad_parameter_names_parameter_and_range(name, value, allowed):
    p = dict(GOOD, **{name: value})
    with pytest.raises(ValueError) as info:
        magnification(T, **p)
    msg = str(info.value)
    assert name in msg and allowed in msg, msg


@pytest.mark.parametrize("value", [-0.1, 1.5, np.nan])
def test_bad_limb_darkening(value):
    with pytest.raises(ValueError, match="limb_darkening"):
        magnification(T, 0.0, 0.1, 10.0, rho=0.01, limb_darkening=value)


@pytest.mark.parametrize("value", [-0.01, np.nan, np.inf])
def test_bad_rho(value):
    with pytest.raises(ValueError, match="rho"):
        magnification(T, 0.0, 0.1, 10.0, rho=value)


@pytest.mark.parametrize("missing", ["s", "q", "alpha"])
def test_partial_binary_parameters(missing):
    p = dict(GOOD)
    p[missing] = None
    with pytest.raises(ValueError, match="s, q and alpha"):
        magnification(T, **p)


def test_limb_darkening_needs_rho():
    with pytest.raises(ValueError, match="rho"):
        magnification(T, 0.0, 0.1, 10.0, limb_darkening=0.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_bad_times(bad):
    t = T.copy()
    t[5] = bad
    with pytest.raises(ValueError, match="times"):
        magnification(t, **GOOD)


def test_batch_masks_invalid_rows_only():
    rows = {k: np.full(6, v) for k, v in GOOD.items()}
    rows["t_E"][1] = -1.0
    rows["q"][3] = np.nan
    rows["s"][4] = np.inf
    mag, ok = magnification_batch(T, rows)
    mag, ok = np.asarray(mag), np.asarray(ok)
    for i in (1, 3, 4):
        assert np.all(np.isnan(mag[i])) and not ok[i].any()
    ref = magnification(T, **GOOD)
    for i in (0, 2, 5):
        assert ok[i].all()
        np.testing.assert_allclose(mag[i], ref, rtol=1e-12)


def test_lengths_share_one_compiled_program():
    """``magnification`` pads the times to a bucket length (repeating the last time), so light curves
    of many lengths share a few compiled programs; values are those of the same times in a longer
    call, and the padding stays within 25%."""
    from mulens_sbi.lightcurve import _batch_core, padded_length

    ref = magnification(T, **GOOD)  # 64 points: a bucket length, no padding
    before = _batch_core._cache_size()
    for n in (57, 60, 63):  # all padded to 64
        np.testing.assert_allclose(magnification(T[:n], **GOOD), ref[:n], rtol=1e-10)
    assert _batch_core._cache_size() == before
    sizes = np.array([padded_length(n) for n in range(33, 20000)])
    assert np.all(sizes >= np.arange(33, 20000)) and np.all(sizes <= 1.25 * np.arange(33, 20000))
    assert len(set(sizes.tolist())) < 40


def test_public_names_resolve():
    for name in mulens_sbi.__all__:
        assert hasattr(mulens_sbi, name), name
    # submodules named in the design are importable
    for mod in ["mulens_sbi.lensing.point_source", "mulens_sbi.lensing.caustics", "mulens_sbi.conventions",
                "mulens_sbi.params", "mulens_sbi.lightcurve"]:
        importlib.import_module(mod)


NAMES = ["t_0", "u_0", "t_E", "s", "q", "alpha"]


def _curve(theta, t):
    p = {k: theta[i][None] for i, k in enumerate(NAMES)}
    mag, _ = magnification_batch(t, p)
    return mag[0]


@pytest.mark.parametrize("case", [
    {"t_0": 0.5, "u_0": 0.1, "t_E": 12.0, "s": 1.2, "q": 0.01, "alpha": 40.0},
    {"t_0": -1.0, "u_0": -0.3, "t_E": 30.0, "s": 0.8, "q": 0.3, "alpha": 200.0},
])
def test_gradients_match_finite_differences(case):
    """jax.grad of a light-curve functional w.r.t. every parameter vs central differences (rel 1e-5)."""
    t = jnp.linspace(-15.0, 15.0, 48)
    w = jnp.cos(jnp.arange(48.0))  # a generic functional of the curve
    theta = jnp.asarray([case[k] for k in NAMES])

    def f(th):
        return jnp.sum(w * _curve(th, t))

    grad = np.asarray(jax.grad(f)(theta))
    assert np.all(np.isfinite(grad))
    for i, name in enumerate(NAMES):
        h = 1e-5 * max(abs(float(theta[i])), 1.0)
        e = jnp.zeros(6).at[i].set(h)
        fd = (float(f(theta + e)) - float(f(theta - e))) / (2 * h)
        assert abs(grad[i] - fd) <= 1e-5 * max(abs(fd), 1e-3), (name, grad[i], fd)
