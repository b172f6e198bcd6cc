"""The broad law of events without a clear anomaly (mulens_sbi.inference.broad)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mulens_sbi.inference.broad import PointLensMap, ProposalMixture, regime_map
from mulens_sbi.lightcurve import magnification

SINGLE = {"t_0": 100.0, "u_0": 0.3, "t_E": 20.0}
COV = np.diag([0.05, 0.004, 0.01]) ** 2


@pytest.mark.parametrize("regime", ["primary", "companion"])
def test_mapped_trajectory_tends_to_the_point_mass_light_curve(regime):
    """A wide binary (q = 0.4) along the trajectory mapped from a single lens about the primary (or
    the companion) magnifies like that single lens, up to the other mass's shear (∝ 1/s²): within
    0.5% at every time at s = 20, and the error falls by more than 8× from s = 5 to s = 20; the
    unmapped centre-of-mass trajectory is off by more than 10%."""
    q, alpha = 0.4, 57.0
    t = np.linspace(40.0, 160.0, 1201)
    single = np.asarray(magnification(t, **SINGLE))

    def error(s):
        eps, a = (float(v) for v in regime_map(regime, np.array(s), np.array(q)))
        t_e = SINGLE["t_E"] / eps
        p = {"t_0": SINGLE["t_0"] - a * math.cos(math.radians(alpha)) * t_e,
             "u_0": eps * SINGLE["u_0"] - a * math.sin(math.radians(alpha)), "t_E": t_e}
        binary = np.asarray(magnification(t, **p, s=s, q=q, alpha=alpha))
        return np.max(np.abs(binary / single - 1.0))

    assert error(20.0) < 0.005
    assert error(5.0) > 8 * error(20.0)
    naive = np.asarray(magnification(t, **SINGLE, s=20.0, q=q, alpha=alpha))
    assert np.max(np.abs(naive / single - 1.0)) > 0.1


@pytest.mark.parametrize("regime", ["centre_of_mass", "primary", "companion"])
def test_conditional_density_integrates_to_one(regime):
    """At fixed (s, q, alpha) the law of (t_0, u_0, t_E) integrates to 1 (3-D grid, 1%): the map's
    Jacobian is accounted for; and its draws, mapped back, have the single-lens law's centre."""
    law = PointLensMap(single=SINGLE, cov=COV, s_range=(0.2, 5.0), q_range=(1e-3, 1.0), df=50.0,
                       regimes={regime: (1.0, 0.0, 0.0)})
    s, q, alpha = 3.0, 0.5, 130.0
    eps, a = (float(v) for v in regime_map(regime, np.array(s), np.array(q)))
    ar = math.radians(alpha)
    total = 0.0
    for sign in (1.0, -1.0):  # the two signs of u_0' are two separate blobs
        t_e = np.exp(np.linspace(-0.08, 0.08, 61)) * SINGLE["t_E"] / eps
        u_0 = eps * sign * SINGLE["u_0"] - a * math.sin(ar) + np.linspace(-0.032, 0.032, 61) * eps
        dt0 = np.linspace(-0.4, 0.4, 61)
        tt, uu, t0 = np.meshgrid(t_e, u_0, dt0, indexing="ij")
        t0 = SINGLE["t_0"] - a * math.cos(ar) * tt + t0  # follows the map's shear in t_0
        pr = {"t_0": t0.ravel(), "u_0": uu.ravel(), "t_E": tt.ravel(), "s": np.full(tt.size, s),
              "q": np.full(tt.size, q), "alpha": np.full(tt.size, alpha)}
        dens = np.exp(law.log_prob(pr)).reshape(tt.shape)
        prior_sqa = 1.0 / (s * math.log(5.0 / 0.2)) / (q * math.log(1.0 / 1e-3)) / 360.0
        # integrate over t_0 (uniform step), u_0 (uniform step), t_E (log grid: dt_E = t_E dln t_E)
        total += np.sum(dens * tt) * (0.8 / 60) * (0.064 * eps / 60) * (0.16 / 60) / prior_sqa
    assert total == pytest.approx(1.0, abs=0.01)
    d = law.sample(20000, seed=1)
    e, a = regime_map(regime, d["s"], d["q"])
    te1 = e * d["t_E"]
    u1 = (d["u_0"] + a * np.sin(np.radians(d["alpha"]))) / e
    t01 = d["t_0"] + a * np.cos(np.radians(d["alpha"])) * d["t_E"]
    assert np.median(te1) == pytest.approx(SINGLE["t_E"], rel=0.005)
    assert np.median(np.abs(u1)) == pytest.approx(SINGLE["u_0"], abs=0.001)
    assert np.median(t01) == pytest.approx(SINGLE["t_0"], abs=0.005)
    assert 0.48 < np.mean(u1 > 0) < 0.52


def test_mixture_normalized_and_broad():
    """The full law (three regimes) and its mixture with a Gaussian: E_q[p/q] = 1 for p the
    centre-of-mass law alone (which the mixture contains), draws spread over the prior's s and
    q, and the mixture's components split the draws by origin."""
    full = PointLensMap(single=SINGLE, cov=COV, s_range=(0.2, 5.0), q_range=(1e-5, 1.0))
    com = PointLensMap(single=SINGLE, cov=COV, s_range=(0.2, 5.0), q_range=(1e-5, 1.0),
                       regimes={"centre_of_mass": (1.0, 0.0, 0.0)})
    d = full.sample(60000, seed=2)
    ratio = np.exp(com.log_prob(d) - full.log_prob(d))
    assert abs(ratio.mean() - 1.0) < 4 * ratio.std() / math.sqrt(ratio.size)
    assert np.ptp(np.percentile(np.log10(d["q"]), [10, 90])) > 3
    assert np.ptp(np.percentile(np.log10(d["s"]), [10, 90])) > 0.9  # ln-uniform over 0.2-5: 1.12

    class Gauss:  # a stand-in for the modes' mixture: one narrow Gaussian
        names = full.names
        means = np.zeros((1, 6))

        def __init__(self):
            self.mu = np.array([100.0, 0.3, 20.0, 1.0, 1e-3, 40.0])
            self.sd = np.array([0.01, 0.001, 0.05, 0.001, 1e-5, 0.1])

        def sample(self, n, seed=0):
            z = self.mu + self.sd * np.random.default_rng(seed).standard_normal((n, 6))
            return dict(zip(self.names, z.T, strict=True))

        def log_prob(self, p):
            z = np.stack([np.asarray(p[k]) for k in self.names], axis=1)
            return np.sum(-0.5 * ((z - self.mu) / self.sd) ** 2 - np.log(self.sd * math.sqrt(2 * math.pi)), 1)

        def component(self, p):
            return np.zeros(len(p["s"]), dtype=int)

    mix = ProposalMixture(Gauss(), full, (0.6, 0.4))
    d = mix.sample(5000, seed=4)
    comp = mix.component(d)
    assert 0.37 < np.mean(comp == 1) < 0.43
    assert np.all(np.abs(d["s"][comp == 0] - 1.0) < 0.01)
    with pytest.raises(ValueError, match="weights"):
        ProposalMixture(Gauss(), full, (0.6, 0.6))
