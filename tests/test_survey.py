"""Survey specs: validation errors, cadence statistics, noise model, prior draws."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from mulens_sbi.survey import SpecError, Survey, load_spec, mag_sigma, parse_spec
from mulens_sbi.survey.cadence import HJD_OFFSET, altitude, sun_radec
from mulens_sbi.survey.noise import add_noise, flux_sigma, mag_to_flux
from mulens_sbi.survey.spec import available_surveys, simulators_dir

ROMAN_TEXT = (simulators_dir() / "roman.toml").read_text()
KMT_TEXT = (simulators_dir() / "kmtnet.toml").read_text()


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _error(text: str, file: str = "bad.toml") -> str:
    with pytest.raises(SpecError) as exc:
        parse_spec(text, file)
    return str(exc.value)


# --- loading -------------------------------------------------------------------------------------


def test_shipped_specs_load_by_name_and_path(tmp_path, monkeypatch):
    assert {"roman", "kmtnet"} <= set(available_surveys())
    monkeypatch.chdir(tmp_path)  # the name resolves relative to the package, not the cwd
    roman = load_spec("roman")
    assert roman.name == "roman" and len(roman.seasons) == 6 and not roman.is_ground
    kmt = load_spec(str(simulators_dir() / "kmtnet.toml"))
    assert kmt.name == "kmtnet" and [s.name for s in kmt.sites] == ["CTIO", "SAAO", "SSO"]
    with pytest.raises(SpecError, match="unknown survey 'hubble'.*available: .*kmtnet.*roman"):
        load_spec("hubble")
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.toml")


# --- validation ----------------------------------------------------------------------------------


def test_unknown_key_names_file_and_dotted_path():
    msg = _error(_edit(ROMAN_TEXT, "read_noise_e = 12.12", "read_noise_e = 12.12\nreadnoise = 3"))
    assert msg.startswith("bad.toml: noise.readnoise: unknown key")
    assert "read_noise_e" in msg  # lists the allowed keys
    msg = _error(_edit(ROMAN_TEXT, 'name = "gbtds"', 'name = "gbtds"\ncolour = "red"'))
    assert msg.startswith("bad.toml: cadence.fields[0].colour: unknown key")
    msg = _error(_edit(ROMAN_TEXT, "[priors.s]", "[priors.spin]\ndist = 'fixed'\nvalue = 1.0\n[priors.s]"))
    assert msg.startswith("bad.toml: priors.spin: unknown key")


def test_out_of_range_names_key_and_range():
    msg = _error(_edit(ROMAN_TEXT, "interval_min = 15.16", "interval_min = 0.0"))
    assert msg == (
        "bad.toml: cadence.fields[0].interval_min: value 0.0 is out of range: "
        "must be a number >= 0.1 and <= 10080"
    )
    msg = _error(_edit(ROMAN_TEXT, "dropout = 0.01", "dropout = 1.0"))
    assert "cadence.dropout: value 1.0 is out of range: must be a number >= 0 and < 1" in msg
    msg = _error(_edit(ROMAN_TEXT, "low = 1e-5", "low = -1e-5"))
    assert "priors.q.low: value -1e-05 is out of range: must be a number > 0" in msg
    msg = _error(_edit(ROMAN_TEXT, "high = 0.9 ", "high = 1.0 "))
    assert "priors.blend_fraction.high: value 1.0 is out of range: must be a number >= 0 and < 1" in msg
    msg = _error(_edit(ROMAN_TEXT, "low = 0.2 ", "low = 7.0 "))
    assert "priors.s.high: must be greater than low = 7.0" in msg
    msg = _error(_edit(ROMAN_TEXT, "end = 11707.75", "end = 11600.0"))
    assert "seasons[1].end: must be greater than start = 11635.75" in msg


def test_wrong_type_and_missing_keys():
    msg = _error(_edit(ROMAN_TEXT, "n_points = 2048", 'n_points = "many"'))
    assert "lightcurve.n_points: expected an integer >= 8 and <= 1e+06, got a string 'many'" in msg
    msg = _error(_edit(ROMAN_TEXT, "n_points = 2048", "n_points = 2048.5"))
    assert "lightcurve.n_points: expected an integer" in msg
    msg = _error(_edit(ROMAN_TEXT, "exposure_s = 46.8", "exposure_s = true"))
    assert "noise.exposure_s: expected a number > 0, got a boolean True" in msg
    msg = _error(_edit(ROMAN_TEXT, 'source = "point"', 'source = "extended"'))
    assert "model.source: value 'extended' is not allowed: must be one of 'point', 'finite'" in msg
    msg = _error(_edit(ROMAN_TEXT, "exposure_s = 46.8", ""))
    assert "noise.exposure_s: missing required key" in msg
    msg = _error(_edit(ROMAN_TEXT, '[priors.q]\ndist = "log_uniform"', '[priors.q]\ndist = "fixed"'))
    assert "priors.q.value: missing: dist = 'fixed' needs value" in msg
    # a ground survey needs [visibility]
    msg = _error(re.sub(r"\[visibility\].*?\n\n", "", KMT_TEXT, flags=re.S))
    assert "visibility: missing" in msg
    # finite source needs a rho prior
    no_rho = re.sub(r"\[priors\.rho\].*?high = 1e-2\n", "", ROMAN_TEXT, flags=re.S)
    assert "priors.rho" not in no_rho
    parse_spec(no_rho, "ok.toml")  # point source: fine
    msg = _error(_edit(no_rho, 'source = "point"', 'source = "finite"'))
    assert "priors.rho: missing" in msg


def test_toml_syntax_error_names_line_and_column(tmp_path):
    lines = ROMAN_TEXT.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("exposure_s"))
    lines[i] = "exposure_s == 46.8"
    path = tmp_path / "broken.toml"
    path.write_text("\n".join(lines))
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    msg = str(exc.value)
    # "exposure_s =" is 12 characters: the stray second "=" is at column 13
    assert msg.startswith(f"{path}:{i + 1}:13: TOML syntax error at line {i + 1}, column 13"), msg


# --- cadence -------------------------------------------------------------------------------------


def test_roman_schedule_matches_spec():
    survey = Survey.load("roman")
    sch = survey.schedule[0]
    step_min = np.diff(sch.t) * 1440.0
    seasons = survey.spec.seasons
    within = step_min < 60.0
    assert np.median(step_min) == pytest.approx(15.16, abs=1e-6)
    assert np.allclose(step_min[within], 15.16, atol=1e-6)  # regular inside every season
    assert (~within).sum() == len(seasons) - 1  # the only long steps are the inter-season gaps
    per_season = [np.sum((sch.t >= s.start) & (sch.t <= s.end)) for s in seasons]
    assert per_season == [int(72 * 1440 / 15.16) + 1] * 6
    # GULLS/Penny et al. 2019 quote ~41,000 W149 exposures per field over the survey
    assert abs(sch.t.size - 41000) < 200


def test_roman_event_observations(rng):
    survey = Survey.load("roman")
    spec = survey.spec
    params = survey.sample_parameters(rng, 300)
    obs = survey.observations(rng, params)
    n = spec.lightcurve.n_points
    assert obs.t.shape == (300, n) and obs.mask.shape == (300, n)
    in_season = np.zeros_like(obs.mask)
    for s in spec.seasons:
        in_season |= (obs.t >= s.start) & (obs.t <= s.end)
    assert np.all(in_season[obs.mask])  # no observation in the gaps between seasons
    hw = np.clip(2.0 * params["t_E"], 2.0, 150.0)[:, None]
    assert np.all(np.abs(obs.t - params["t_0"][:, None])[obs.mask] <= hw.repeat(n, 1)[obs.mask] + 1e-9)
    assert np.all(np.diff(obs.t, axis=1) >= 0)  # sorted, padding repeats the last time
    # masks are a prefix; full when enough exposures survived
    k = obs.mask.sum(1)
    assert np.all(obs.mask == (np.arange(n)[None, :] < k[:, None]))
    assert np.all(k == np.minimum(obs.n_available, n))
    # dropout: survivors / scheduled exposures in the window ~ 1 - 0.01 (binomial, 5 sigma)
    sch = survey.schedule[0].t
    scheduled = sum(int(np.sum(np.abs(sch - t0) <= h)) for t0, h in zip(params["t_0"], hw[:, 0], strict=True))
    frac = obs.n_available.sum() / scheduled
    assert abs(frac - 0.99) < 5 * math.sqrt(0.01 * 0.99 / scheduled)


def test_season_window_spec_checks():
    season = _edit(ROMAN_TEXT, "n_points = 2048", 'window = "season"\nn_points = 6840')
    msg = _error(season)  # the event-window keys are not used by whole seasons
    assert "lightcurve.window_tE: not used by window = 'season'" in msg
    for key in ("window_tE", "min_half_width_days", "max_half_width_days"):
        season = re.sub(rf"\n{key} = [^\n]*", "", season)
    spec = parse_spec(season, "ok.toml")
    assert spec.lightcurve.window == "season" and spec.lightcurve.window_tE is None
    msg = _error(_edit(season, 'dist = "seasons"', 'dist = "uniform"\nlow = 11449.2\nhigh = 11500.0'))
    assert "priors.t_0.dist: lightcurve.window = 'season' needs t_0 inside a season" in msg
    msg = _error(_edit(ROMAN_TEXT, "window_tE = 2.0 ", ""))
    assert "lightcurve.window_tE: missing required key (window = 'event' needs it)" in msg
    with pytest.raises(SpecError, match="n_points must be >= the largest season's 6840 exposures, got 6000"):
        Survey(parse_spec(_edit(season, "n_points = 6840", "n_points = 6000"), "small.toml"))
    assert Survey.load("roman_season").n_points == 6840


def test_roman_whole_season_observations(rng):
    survey = Survey.load("roman_season")
    spec = survey.spec
    params = survey.sample_parameters(rng, 40)
    obs = survey.observations(rng, params)
    starts = np.array([s.start for s in spec.seasons])
    k = np.searchsorted(starts, params["t_0"], side="right") - 1
    lo, hi = starts[k], np.array([s.end for s in spec.seasons])[k]
    assert np.all(params["t_0"] >= lo) and np.all(params["t_0"] <= hi)
    inside = (obs.t >= lo[:, None]) & (obs.t <= hi[:, None])
    assert np.all(inside[obs.mask])  # only the season of t_0
    # nothing thinned: every surviving exposure is kept, ~99% of the 6840 (1% dropout, 5 sigma)
    assert np.all(obs.mask.sum(1) == obs.n_available)
    frac = obs.n_available.sum() / (40 * 6840)
    assert abs(frac - 0.99) < 5 * math.sqrt(0.01 * 0.99 / (40 * 6840))
    # the window does not depend on t_E: same first and last planned time for every event of a season
    first = obs.t[:, 0]
    assert np.all(np.abs(first - lo) < 1.0)


def test_sun_and_altitude_against_analytic_culminations():
    # June solstice 2022 (Jun 21 09:14 UT): solar declination = obliquity 23.436 deg
    jd_solstice = 2459751.885
    _, dec = sun_radec(jd_solstice)
    assert float(dec) == pytest.approx(23.436, abs=0.01)
    # March equinox 2022 (Mar 20 15:33 UT): RA and Dec ~ 0
    ra, dec = sun_radec(2459659.148)
    assert abs(float(dec)) < 0.01 and min(float(ra), 360 - float(ra)) < 0.03
    # lowest solar altitude over the solstice day at CTIO is -(90 - |lat + dec|) (lower culmination)
    lat, lon = -30.169, -70.806
    jd = jd_solstice - 0.5 + np.linspace(0, 1, 200001)
    sra, sdec = sun_radec(jd)
    alt = altitude(jd, sra, sdec, lat, lon)
    assert alt.min() == pytest.approx(-(90 - abs(lat + 23.436)), abs=0.02)
    assert alt.max() == pytest.approx(90 - abs(lat - 23.436), abs=0.02)
    # the bulge field culminates at 90 - |lat - dec|
    alt_b = altitude(jd, 268.5, -29.5, lat, lon)
    assert alt_b.max() == pytest.approx(90 - abs(lat + 29.5), abs=0.02)


def test_kmtnet_night_only_and_site_windows():
    survey = Survey.load("kmtnet")
    spec = survey.spec
    for sch in survey.schedule:
        for k, site in enumerate(spec.sites):
            t = sch.t[sch.site == k]
            assert t.size > 0
            # local mean solar time: observations only at night (sunset ~17-19h, sunrise ~5-7h)
            local_h = ((t + HJD_OFFSET + 0.5) * 24.0 + site.longitude_deg / 15.0) % 24.0
            assert np.all((local_h > 17.0) | (local_h < 7.5)), site.name
            sra, sdec = sun_radec(t + HJD_OFFSET)
            assert np.all(altitude(t + HJD_OFFSET, sra, sdec, site.latitude_deg, site.longitude_deg) < -12)
            assert np.all(altitude(t + HJD_OFFSET, 268.5, -29.5, site.latitude_deg, site.longitude_deg) > 30)
    # mid-season (June) the bulge is up most of the night: >= 8 h per night at CTIO in the 15-min class
    sch = survey.schedule[0]
    june = (sch.t > 9746.5) & (sch.t < 9756.5) & (sch.site == 0)
    per_night = june.sum() / 10 * 15.0 / 60.0
    assert 8.0 <= per_night <= 11.0
    # cadence of the field classes inside a night
    for sch, field in zip(survey.schedule, spec.cadence.fields, strict=True):
        d = np.diff(sch.t[sch.site == 0]) * 1440.0
        assert np.median(d) == pytest.approx(field.interval_min, abs=1e-6)


def test_kmtnet_weather_field_weights_and_gaps():
    spec = parse_spec(_edit(KMT_TEXT, "max_count = 1 ", "max_count = 0 "), "kmt_nogaps.toml")
    survey = Survey(spec)
    rng = np.random.default_rng(7)
    n_ev = 40
    params = {"t_0": np.full(n_ev, 9750.0), "t_E": np.full(n_ev, 30.0)}
    obs = survey.observations(rng, params, field=np.zeros(n_ev, np.int16))
    sch = survey.schedule[0]
    for k, site in enumerate(spec.sites):
        win = (np.abs(sch.t - 9750.0) <= 60.0) & (sch.site == k)
        nights = np.unique(sch.night[win])
        on_site = sch.site == k
        seen = np.array(
            [
                len(
                    np.unique(sch.night[on_site & np.isin(sch.t, obs.t[i][obs.mask[i] & (obs.site[i] == k)])])
                )
                for i in range(n_ev)
            ]
        )
        frac = seen.sum() / (nights.size * n_ev)
        sd = math.sqrt(site.clear_fraction * (1 - site.clear_fraction) / (nights.size * n_ev))
        assert abs(frac - site.clear_fraction) < 5 * sd, (site.name, frac)
    # field classes drawn with the spec's weights (5 sigma per class)
    from mulens_sbi.survey.cadence import draw_field

    f = draw_field(spec, rng, 20000)
    w = np.array([x.weight for x in spec.cadence.fields])
    w = w / w.sum()
    for i, wi in enumerate(w):
        assert abs(np.mean(f == i) - wi) < 5 * math.sqrt(wi * (1 - wi) / 20000)
    # random gaps: with max_count = 1 and 1-3 d gaps some events lose a stretch of >= 1 d of nights
    gappy = Survey(parse_spec(_edit(ROMAN_TEXT, "max_count = 0 ", "max_count = 3 "), "gaps.toml"))
    rng = np.random.default_rng(3)
    p = {"t_0": np.full(50, 11485.0), "t_E": np.full(50, 30.0)}
    o = gappy.observations(rng, p)
    longest = np.array([np.max(np.diff(o.t[i][o.mask[i]])) for i in range(50)])
    assert np.mean(longest >= 0.99) > 0.5  # a 1..5 d gap inside the +-36 d season window
    base = Survey.load("roman").observations(np.random.default_rng(3), p)
    assert np.all(
        np.array([np.max(np.diff(base.t[i][base.mask[i]])) for i in range(50)]) < 0.5
    )  # random subsampling only


# --- noise ---------------------------------------------------------------------------------------


def test_roman_noise_matches_gulls_precision_and_formula():
    noise = load_spec("roman").noise
    # GULLS / Penny et al. 2019: 0.01 mag at W149 = 21.15 (the NEA is calibrated to it, to 1%)
    assert float(mag_sigma(21.15, noise)) == pytest.approx(0.01, rel=0.01)
    # independent evaluation in electrons for a W149 = 23 star, by hand from the table numbers
    n_star = 10 ** (-0.4 * (23 - 27.615)) * 46.8
    sky_pix = (10 ** (-0.4 * (21.48 - 27.615)) * 0.11**2 + 1.072) * 46.8
    var = n_star + 26.0 * (sky_pix + 12.12**2)
    sig_mag = math.hypot(2.5 / math.log(10) * math.sqrt(var) / n_star, 0.001)
    assert float(mag_sigma(23.0, noise)) == pytest.approx(sig_mag, rel=1e-3)
    # bright end: the 1 mmag floor dominates
    assert float(mag_sigma(12.0, noise)) == pytest.approx(0.001, rel=0.1)
    # the sky agrees with the GULLS table's 3.43 counts/pix/s
    assert 10 ** (-0.4 * (21.48 - 27.615)) * 0.11**2 == pytest.approx(3.43, rel=0.01)


def test_ground_noise_grows_with_seeing():
    noise = load_spec("kmtnet").noise
    f = mag_to_flux(np.array([19.0, 19.0, 19.0]))
    s = flux_sigma(f, noise, np.array([0.8, 1.2, 2.0]))
    assert np.all(np.diff(s) > 0)
    nea = 2.266 * (1.2 / 0.4) ** 2
    n = f[0] * 10 ** (0.4 * (25.3 - 22)) * 60
    sky = 10 ** (-0.4 * (19.0 - 25.3)) * 0.16 * 60
    expect = math.hypot(math.sqrt(n + nea * (sky + 100.0)) / n * f[0], f[0] * 0.005 * math.log(10) / 2.5)
    assert s[1] == pytest.approx(expect, rel=1e-3)
    with pytest.raises(ValueError, match="needs the seeing"):
        flux_sigma(f, noise)


def test_empirical_noise_scatter(rng):
    noise = load_spec("roman").noise
    flux = mag_to_flux(rng.uniform(18, 25, 200_000))
    sigma = flux_sigma(flux, noise)
    chi = (add_noise(flux, sigma, rng) - flux) / sigma
    # chi^2 per point = 1 within 5 sigma of its sampling error sqrt(2/N) = 0.0032
    assert np.mean(chi**2) == pytest.approx(1.0, abs=5 * math.sqrt(2 / flux.size))
    assert abs(np.mean(chi)) < 5 / math.sqrt(flux.size)


# --- priors --------------------------------------------------------------------------------------


def _ks(u: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance of samples ``u`` from U(0, 1)."""
    u = np.sort(u)
    n = u.size
    return float(max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n)))


@pytest.mark.parametrize("name", ["roman", "kmtnet"])
def test_prior_draws_in_range_with_right_distribution(name, rng):
    spec = load_spec(name)
    n = 20_000
    p = Survey(spec).sample_parameters(rng, n)
    crit = 1.95 / math.sqrt(n)  # KS critical value at 0.1% (fixed seed: deterministic)
    for key, prior in spec.priors.items():
        if key not in p:
            continue
        v = p[key]
        if prior.dist == "uniform":
            assert v.min() >= prior.low and v.max() <= prior.high
            assert _ks((v - prior.low) / (prior.high - prior.low)) < crit, key
        elif prior.dist == "log_uniform":
            assert v.min() >= prior.low and v.max() <= prior.high
            lo, hi = math.log10(prior.low), math.log10(prior.high)
            assert _ks((np.log10(v) - lo) / (hi - lo)) < crit, key
    # t_0: uniform over the seasons (each season gets its share, inside it uniform)
    t0 = p["t_0"]
    lengths = np.array([s.end - s.start for s in spec.seasons])
    for s, w in zip(spec.seasons, lengths / lengths.sum(), strict=True):
        inside = (t0 >= s.start) & (t0 <= s.end)
        assert abs(inside.mean() - w) <= 5 * math.sqrt(w * (1 - w) / n)
        assert _ks((t0[inside] - s.start) / (s.end - s.start)) < 1.95 / math.sqrt(inside.sum())
    assert np.sum([(t0 >= s.start) & (t0 <= s.end) for s in spec.seasons]) == n
    # derived fluxes
    assert np.allclose(p["f_s"], 10 ** (-0.4 * (p["source_mag"] - 22.0)), rtol=1e-12)
    assert np.allclose(p["f_b"] / (p["f_s"] + p["f_b"]), p["blend_fraction"], rtol=1e-9, atol=1e-12)


def test_fixed_prior(tmp_path: Path):
    text = _edit(
        ROMAN_TEXT,
        '[priors.q]\ndist = "log_uniform"\nlow = 1e-5',
        '[priors.q]\ndist = "fixed"\nvalue = 1e-3\n#',
    )
    text = _edit(text, "high = 1.0\n[priors.alpha]", "[priors.alpha]")
    p = Survey(parse_spec(text, "fixed.toml")).sample_parameters(np.random.default_rng(0), 10)
    assert np.all(p["q"] == 1e-3)
