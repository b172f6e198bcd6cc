"""Event data containers: magnitude conversion, validation messages, sorting, immutability."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mulens_sbi.event import MIN_POINTS, Dataset, Event, flux_to_mag, mag_to_flux


def test_magnitude_conversion_zero_point_22():
    d = Dataset.from_magnitudes("I", [1.0, 2.0, 3.0], [22.0, 19.5, 17.0], [0.01, 0.02, 0.1], band="I")
    np.testing.assert_allclose(d.flux, [1.0, 10.0, 100.0], rtol=1e-14)
    # σ_F = 0.4 ln10 F σ_m, and it matches the derivative of the conversion numerically
    np.testing.assert_allclose(d.sigma, 0.4 * math.log(10) * d.flux * np.array([0.01, 0.02, 0.1]), rtol=1e-14)
    h = 1e-6
    deriv = (mag_to_flux(19.5 - h) - mag_to_flux(19.5 + h)) / (2 * h)
    np.testing.assert_allclose(d.sigma[1] / 0.02, deriv, rtol=1e-8)
    np.testing.assert_allclose(flux_to_mag(d.flux), [22.0, 19.5, 17.0], rtol=1e-14)
    assert np.isnan(flux_to_mag(-1.0))
    assert d.band == "I" and d.n == 3


def test_nonfinite_values_name_dataset_column_and_row():
    t = np.arange(5.0)
    f = np.ones(5)
    f[3] = np.nan
    with pytest.raises(ValueError, match=r"dataset 'KMT-A'.*'flux'.*1 non-finite.*row 3"):
        Dataset("KMT-A", t, f, np.ones(5))
    t2 = t.copy()
    t2[1] = np.inf
    with pytest.raises(ValueError, match=r"dataset 'X'.*'t'.*row 1"):
        Dataset("X", t2, np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match=r"'mag_err'.*row 0"):
        Dataset.from_magnitudes("M", t, np.full(5, 19.0), [np.nan, 1, 1, 1, 1])


def test_sigma_length_and_minimum_points():
    with pytest.raises(ValueError, match=r"dataset 'D'.*'sigma' must be > 0.*row 2.*value 0\.0"):
        Dataset("D", np.arange(4.0), np.ones(4), [1.0, 1.0, 0.0, -1.0])
    with pytest.raises(ValueError, match=r"differ in length"):
        Dataset("D", np.arange(4.0), np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=rf"has 2 point\(s\); at least {MIN_POINTS}"):
        Dataset("D", [1.0, 2.0], [1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"must be 1-D"):
        Dataset("D", np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"not numeric"):
        Dataset("D", ["a", "b", "c"], np.ones(3), np.ones(3))


def test_unsorted_times_are_sorted_with_warning_rows_kept_together():
    t = np.array([3.0, 1.0, 2.0, 2.0])
    f = np.array([30.0, 10.0, 20.0, 21.0])
    s = np.array([0.3, 0.1, 0.2, 0.21])
    with pytest.warns(UserWarning, match="dataset 'U': times were not sorted"):
        d = Dataset("U", t, f, s)
    np.testing.assert_array_equal(d.t, [1.0, 2.0, 2.0, 3.0])
    np.testing.assert_array_equal(d.flux, [10.0, 20.0, 21.0, 30.0])  # stable: ties keep input order
    np.testing.assert_array_equal(d.sigma, [0.1, 0.2, 0.21, 0.3])


def test_immutable_and_copied():
    t = np.arange(4.0)
    d = Dataset("D", t, np.ones(4), np.ones(4))
    t[0] = 100.0
    assert d.t[0] == 0.0  # a copy was taken
    with pytest.raises(ValueError):
        d.t[0] = 5.0  # read-only
    with pytest.raises(AttributeError):
        d.name = "E"  # frozen


def test_from_arrays_uses_explicit_mask():
    t = np.array([0.0, 1.0, 2.0, 3.0, 3.0])
    f = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    mask = np.array([True, True, True, True, False])
    d = Dataset.from_arrays("sim", t, f, np.ones(5), mask=mask)
    assert d.n == 4
    with pytest.raises(ValueError, match="non-finite"):
        Dataset.from_arrays("sim", t, f, np.ones(5))  # without the mask the NaN is an error
    with pytest.raises(ValueError, match="shape"):
        Dataset.from_arrays("sim", t, f, np.ones(5), mask=mask[:3])


def test_event_validation_and_properties():
    a = Dataset("A", [0.0, 1.0, 5.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    b = Dataset("B", [-2.0, 1.5, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0])
    ev = Event([a, b], name="OB-1")
    assert ev.datasets == (a, b) and ev.n_datasets == 2 and ev.n_points == 7
    assert ev.names == ("A", "B") and ev.time_range() == (-2.0, 5.0)
    assert Event(a).n_datasets == 1
    with pytest.raises(ValueError, match="repeated: \\['A'\\]"):
        Event([a, a])
    with pytest.raises(ValueError, match="at least one dataset"):
        Event([])
    with pytest.raises(ValueError, match=r"datasets\[1\] is a dict"):
        Event([a, {}])
    single = Event.single([0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], name="e", dataset="OGLE")
    assert single.names == ("OGLE",) and single.name == "e"
