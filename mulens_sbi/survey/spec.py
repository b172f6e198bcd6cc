"""Survey simulator specs: TOML files under ``simulators/`` loaded into frozen dataclasses.

A spec is *data*: seasons, cadence by field class, sites and weather, the photometric noise model,
light-curve length and the priors. Every key is validated on load; an unknown key, a wrong type or
an out-of-range value raises :class:`SpecError` naming the file, the full dotted key (e.g.
``cadence.fields[1].interval_min``) and the allowed range; a TOML syntax error names the file, line
and column. The schema is documented in ``docs/surveys.md``.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class SpecError(ValueError):
    """A survey spec that cannot be used; the message names the file and the key."""


# ----------------------------------------------------------------------------------------------
# Dataclasses (what the rest of the package uses)


@dataclass(frozen=True)
class Season:
    """One observing season, HJD' (days)."""

    start: float
    end: float


@dataclass(frozen=True)
class FieldClass:
    """A class of survey fields sharing one visit interval (minutes); ``weight`` = event fraction."""

    name: str
    interval_min: float
    weight: float


@dataclass(frozen=True)
class RandomGaps:
    """Per-event random gaps: 0..max_count gaps with lengths uniform in [min_days, max_days]."""

    max_count: int
    min_days: float
    max_days: float


@dataclass(frozen=True)
class Cadence:
    dropout: float
    fields: tuple[FieldClass, ...]
    random_gaps: RandomGaps


@dataclass(frozen=True)
class Site:
    """A ground site: position (degrees, east longitude positive), weather and seeing."""

    name: str
    latitude_deg: float
    longitude_deg: float
    clear_fraction: float
    seeing_median_arcsec: float
    seeing_sigma_dex: float


@dataclass(frozen=True)
class Visibility:
    target_ra_deg: float
    target_dec_deg: float
    max_sun_alt_deg: float
    min_target_alt_deg: float


@dataclass(frozen=True)
class Noise:
    """CCD-equation noise model; see :mod:`mulens_sbi.survey.noise`."""

    zero_point: float
    exposure_s: float
    pixel_scale_arcsec: float
    sky_mag_arcsec2: float
    dark_e_per_pix_s: float
    read_noise_e: float
    systematic_floor_mag: float
    nea_pix: float | None
    nea_per_fwhm2: float | None


@dataclass(frozen=True)
class LightCurveSpec:
    """Which exposures make a light curve.

    ``window = "event"``: the exposures in ``t_0 ± clip(window_tE·t_E, min_half_width_days,
    max_half_width_days)`` (days), randomly thinned to ``n_points`` when there are more.
    ``window = "season"``: every exposure of the observing season that holds ``t_0`` (the survey's
    own window, chosen without looking at t_E or any other parameter); ``n_points`` must hold the
    largest season, so nothing is thinned, and the three window keys are not used (None).
    """

    n_points: int
    window_tE: float | None
    min_half_width_days: float | None
    max_half_width_days: float | None
    window: str = "event"


@dataclass(frozen=True)
class Model:
    lens: str  # "single" | "binary"
    source: str  # "point" | "finite"


@dataclass(frozen=True)
class Prior:
    """``dist`` is one of ``uniform``, ``log_uniform``, ``fixed``, ``seasons``."""

    dist: str
    low: float | None = None
    high: float | None = None
    value: float | None = None


@dataclass(frozen=True)
class SurveySpec:
    name: str
    description: str
    band: str
    seasons: tuple[Season, ...]
    cadence: Cadence
    sites: tuple[Site, ...]  # empty for a space survey: continuous within seasons
    visibility: Visibility | None
    noise: Noise
    lightcurve: LightCurveSpec
    model: Model
    priors: dict[str, Prior]
    path: str
    sha256: str
    text: str

    @property
    def is_ground(self) -> bool:
        return len(self.sites) > 0

    def sampled_parameters(self) -> tuple[str, ...]:
        """Names of the parameters drawn for each light curve, in a fixed order."""
        names = ["t_0", "u_0", "t_E"]
        if self.model.lens == "binary":
            names += ["s", "q", "alpha"]
        if self.model.source == "finite":
            names += ["rho", "limb_darkening"]
        return tuple(names + ["source_mag", "blend_fraction"])


# ----------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class _Num:
    """A number in (lo, hi) with inclusive/exclusive ends; ``integer`` for whole numbers."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_incl: bool = True
    hi_incl: bool = True
    integer: bool = False
    required: bool = True
    default: float | None = None

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        parts = []
        if math.isfinite(self.lo):
            parts.append(f"{'>=' if self.lo_incl else '>'} {self.lo:g}")
        if math.isfinite(self.hi):
            parts.append(f"{'<=' if self.hi_incl else '<'} {self.hi:g}")
        return (
            f"{kind} {' and '.join(parts)}"
            if parts
            else f"a finite {'integer' if self.integer else 'number'}"
        )


@dataclass(frozen=True)
class _Str:
    choices: tuple[str, ...] | None = None
    required: bool = True
    default: str | None = None

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices) if self.choices else "a string"


@dataclass(frozen=True)
class _Table:
    fields: dict[str, Any]
    required: bool = True


@dataclass(frozen=True)
class _Array:
    """An array of tables (``[[name]]``) with at least ``min_len`` entries."""

    item: _Table
    min_len: int = 1
    required: bool = True


POS = _Num(lo=0.0, lo_incl=False)
NONNEG = _Num(lo=0.0)
FRACTION_OPEN = _Num(lo=0.0, hi=1.0, hi_incl=False)

_PRIOR_FIELDS = {
    "dist": _Str(choices=("uniform", "log_uniform", "fixed", "seasons")),
    "low": _Num(required=False),
    "high": _Num(required=False),
    "value": _Num(required=False),
}

#: allowed values of each prior parameter (checked against a prior's low/high/value)
PRIOR_LIMITS: dict[str, _Num] = {
    "t_0": _Num(),
    "u_0": _Num(),
    "t_E": POS,
    "s": POS,
    "q": POS,
    "alpha": _Num(),
    "rho": POS,
    "limb_darkening": _Num(lo=0.0, hi=1.0),
    "source_mag": _Num(lo=-5.0, hi=40.0),
    "blend_fraction": _Num(lo=0.0, hi=1.0, hi_incl=False),
}

SCHEMA = _Table(
    {
        "survey": _Table({"name": _Str(), "description": _Str(required=False, default=""), "band": _Str()}),
        "seasons": _Array(_Table({"start": _Num(), "end": _Num()})),
        "cadence": _Table(
            {
                "dropout": FRACTION_OPEN,
                "random_gaps": _Table(
                    {
                        "max_count": _Num(lo=0, hi=100, integer=True),
                        "min_days": POS,
                        "max_days": POS,
                    },
                    required=False,
                ),
                "fields": _Array(
                    _Table(
                        {
                            "name": _Str(),
                            "interval_min": _Num(lo=0.1, hi=10080.0),
                            "weight": POS,
                        }
                    )
                ),
            }
        ),
        "visibility": _Table(
            {
                "target_ra_deg": _Num(lo=0.0, hi=360.0),
                "target_dec_deg": _Num(lo=-90.0, hi=90.0),
                "max_sun_alt_deg": _Num(lo=-90.0, hi=90.0),
                "min_target_alt_deg": _Num(lo=0.0, hi=90.0),
            },
            required=False,
        ),
        "sites": _Array(
            _Table(
                {
                    "name": _Str(),
                    "latitude_deg": _Num(lo=-90.0, hi=90.0),
                    "longitude_deg": _Num(lo=-180.0, hi=360.0),
                    "clear_fraction": _Num(lo=0.0, hi=1.0),
                    "seeing_median_arcsec": _Num(lo=0.05, hi=20.0),
                    "seeing_sigma_dex": _Num(lo=0.0, hi=1.0),
                }
            ),
            required=False,
        ),
        "noise": _Table(
            {
                "zero_point": _Num(lo=0.0, hi=50.0),
                "exposure_s": POS,
                "pixel_scale_arcsec": POS,
                "sky_mag_arcsec2": _Num(lo=0.0, hi=50.0),
                "dark_e_per_pix_s": NONNEG,
                "read_noise_e": NONNEG,
                "systematic_floor_mag": _Num(lo=0.0, hi=1.0),
                "nea_pix": _Num(lo=0.0, lo_incl=False, required=False),
                "nea_per_fwhm2": _Num(lo=0.0, lo_incl=False, required=False),
            }
        ),
        "lightcurve": _Table(
            {
                "n_points": _Num(lo=8, hi=1_000_000, integer=True),
                "window": _Str(choices=("event", "season"), required=False, default="event"),
                "window_tE": _Num(lo=0.0, lo_incl=False, required=False),
                "min_half_width_days": _Num(lo=0.0, lo_incl=False, required=False),
                "max_half_width_days": _Num(lo=0.0, lo_incl=False, required=False),
            }
        ),
        "model": _Table(
            {
                "lens": _Str(choices=("single", "binary")),
                "source": _Str(choices=("point", "finite")),
            }
        ),
        # keys are parameter names; each value is a prior table (checked below)
        "priors": _Table({name: _Table(_PRIOR_FIELDS, required=False) for name in PRIOR_LIMITS}),
    }
)


# ----------------------------------------------------------------------------------------------
# Validation


def _type_name(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "a table",
        list: "an array",
    }.get(type(v), type(v).__name__)


class _Validator:
    def __init__(self, file: str):
        self.file = file

    def fail(self, path: str, msg: str) -> SpecError:
        return SpecError(f"{self.file}: {path}: {msg}")

    def num(self, v: Any, spec: _Num, path: str) -> float | int:
        ok_type = isinstance(v, int) if spec.integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type:
            raise self.fail(path, f"expected {spec.describe()}, got {_type_name(v)} {v!r}")
        x = float(v)
        bad = not math.isfinite(x)
        bad |= (x < spec.lo) if spec.lo_incl else (x <= spec.lo)
        bad |= (x > spec.hi) if spec.hi_incl else (x >= spec.hi)
        if bad:
            raise self.fail(path, f"value {v!r} is out of range: must be {spec.describe()}")
        return int(v) if spec.integer else x

    def string(self, v: Any, spec: _Str, path: str) -> str:
        if not isinstance(v, str):
            raise self.fail(path, f"expected {spec.describe()}, got {_type_name(v)} {v!r}")
        if spec.choices and v not in spec.choices:
            raise self.fail(path, f"value {v!r} is not allowed: must be {spec.describe()}")
        return v

    def table(self, v: Any, spec: _Table, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(path or "<top level>", f"expected a table, got {_type_name(v)}")
        out: dict[str, Any] = {}
        for key in v:
            if key not in spec.fields:
                where = f"{path}.{key}" if path else key
                raise self.fail(where, f"unknown key; allowed keys here: {', '.join(spec.fields)}")
        for key, sub in spec.fields.items():
            where = f"{path}.{key}" if path else key
            if key not in v:
                if getattr(sub, "required", True):
                    raise self.fail(where, "missing required key")
                out[key] = getattr(sub, "default", None)
                continue
            out[key] = self.value(v[key], sub, where)
        return out

    def value(self, v: Any, spec: Any, path: str) -> Any:
        if isinstance(spec, _Num):
            return self.num(v, spec, path)
        if isinstance(spec, _Str):
            return self.string(v, spec, path)
        if isinstance(spec, _Table):
            return self.table(v, spec, path)
        if isinstance(spec, _Array):
            if not isinstance(v, list):
                raise self.fail(path, f"expected an array of tables ([[{path}]]), got {_type_name(v)}")
            if len(v) < spec.min_len:
                raise self.fail(
                    path, f"needs at least {spec.min_len} entr{'y' if spec.min_len == 1 else 'ies'}"
                )
            return [self.table(item, spec.item, f"{path}[{i}]") for i, item in enumerate(v)]
        raise TypeError(spec)  # pragma: no cover


def _check_prior(val: _Validator, name: str, p: dict[str, Any], path: str) -> Prior:
    dist = p["dist"]
    need = {"uniform": ("low", "high"), "log_uniform": ("low", "high"), "fixed": ("value",), "seasons": ()}[
        dist
    ]
    for key in need:
        if p[key] is None:
            raise val.fail(f"{path}.{key}", f"missing: dist = {dist!r} needs {', '.join(need)}")
    for key in ("low", "high", "value"):
        if key not in need and p[key] is not None:
            raise val.fail(
                f"{path}.{key}", f"not used by dist = {dist!r} (it needs {', '.join(need) or 'nothing'})"
            )
    if dist == "seasons" and name != "t_0":
        raise val.fail(f"{path}.dist", "dist = 'seasons' is only allowed for t_0")
    limits = PRIOR_LIMITS[name]
    for key in need:
        val.num(p[key], limits, f"{path}.{key}")
    if dist in ("uniform", "log_uniform") and not p["low"] < p["high"]:
        raise val.fail(f"{path}.high", f"must be greater than low = {p['low']!r}, got {p['high']!r}")
    if dist == "log_uniform" and p["low"] <= 0:
        raise val.fail(f"{path}.low", f"log_uniform needs low > 0, got {p['low']!r}")
    return Prior(dist=dist, low=p["low"], high=p["high"], value=p["value"])


def parse_spec(text: str, file: str = "<string>") -> SurveySpec:
    """Validate TOML text and build a :class:`SurveySpec`. Raises :class:`SpecError`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            line, col = int(m.group(1)), int(m.group(2))
            reason = msg[: m.start()].strip()
            raise SpecError(
                f"{file}:{line}:{col}: TOML syntax error at line {line}, column {col}: {reason}"
            ) from None
        raise SpecError(f"{file}: TOML syntax error: {msg}") from None
    val = _Validator(file)
    d = val.table(raw, SCHEMA, "")

    seasons = [Season(s["start"], s["end"]) for s in d["seasons"]]
    for i, s in enumerate(seasons):
        if not s.end > s.start:
            raise val.fail(f"seasons[{i}].end", f"must be greater than start = {s.start!r}, got {s.end!r}")
        if i and s.start < seasons[i - 1].end:
            raise val.fail(
                f"seasons[{i}].start",
                f"seasons must be sorted and not overlap: must be >= "
                f"seasons[{i - 1}].end = {seasons[i - 1].end!r}, got {s.start!r}",
            )

    c = d["cadence"]
    gaps = c["random_gaps"] or {"max_count": 0, "min_days": 1.0, "max_days": 1.0}
    if gaps["max_days"] < gaps["min_days"]:
        raise val.fail("cadence.random_gaps.max_days", f"must be >= min_days = {gaps['min_days']!r}")
    cadence = Cadence(
        dropout=c["dropout"],
        fields=tuple(FieldClass(**f) for f in c["fields"]),
        random_gaps=RandomGaps(**gaps),
    )

    sites = tuple(Site(**s) for s in (d["sites"] or []))
    vis = Visibility(**d["visibility"]) if d["visibility"] is not None else None
    if sites and vis is None:
        raise val.fail("visibility", "missing: a ground survey (with [[sites]]) needs a [visibility] table")
    if vis is not None and not sites:
        raise val.fail("visibility", "not used: [visibility] needs [[sites]] (a space survey has neither)")

    n = d["noise"]
    if sites:
        if n["nea_per_fwhm2"] is None or n["nea_pix"] is not None:
            raise val.fail(
                "noise.nea_per_fwhm2",
                "a ground survey (with [[sites]]) sets nea_per_fwhm2 "
                "(PSF area from the seeing) and not nea_pix",
            )
    elif n["nea_pix"] is None or n["nea_per_fwhm2"] is not None:
        raise val.fail(
            "noise.nea_pix",
            "a space survey (no [[sites]]) sets nea_pix (fixed PSF area) and not nea_per_fwhm2",
        )
    noise = Noise(**n)

    lc = LightCurveSpec(**d["lightcurve"])
    window_keys = ("window_tE", "min_half_width_days", "max_half_width_days")
    for key in window_keys:
        given = getattr(lc, key) is not None
        if lc.window == "event" and not given:
            raise val.fail(f"lightcurve.{key}", "missing required key (window = 'event' needs it)")
        if lc.window == "season" and given:
            raise val.fail(f"lightcurve.{key}", "not used by window = 'season' (whole seasons): remove it")
    if lc.window == "event" and lc.max_half_width_days < lc.min_half_width_days:
        raise val.fail(
            "lightcurve.max_half_width_days", f"must be >= min_half_width_days = {lc.min_half_width_days!r}"
        )
    model = Model(**d["model"])

    priors_raw = {k: v for k, v in d["priors"].items() if v is not None}
    needed = ["t_0", "u_0", "t_E", "source_mag", "blend_fraction"]
    if model.lens == "binary":
        needed += ["s", "q", "alpha"]
    if model.source == "finite":
        needed += ["rho"]
    for name in needed:
        if name not in priors_raw:
            raise val.fail(
                f"priors.{name}",
                f"missing: model (lens = {model.lens!r}, source = {model.source!r}) needs a prior for {name}",
            )
    if model.lens == "single":
        for name in ("s", "q", "alpha"):
            if name in priors_raw:
                raise val.fail(f"priors.{name}", "not used by model.lens = 'single': remove it")
    priors = {name: _check_prior(val, name, p, f"priors.{name}") for name, p in priors_raw.items()}
    if lc.window == "season" and priors["t_0"].dist != "seasons":
        raise val.fail("priors.t_0.dist", f"lightcurve.window = 'season' needs t_0 inside a season: dist "
                                          f"must be 'seasons', got {priors['t_0'].dist!r}")
    if model.source == "finite" and "limb_darkening" not in priors:
        priors["limb_darkening"] = Prior(dist="fixed", value=0.0)

    sv = d["survey"]
    return SurveySpec(
        name=sv["name"],
        description=sv["description"],
        band=sv["band"],
        seasons=tuple(seasons),
        cadence=cadence,
        sites=sites,
        visibility=vis,
        noise=noise,
        lightcurve=lc,
        model=model,
        priors=priors,
        path=file,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        text=text,
    )


def simulators_dir() -> Path:
    """The folder holding the shipped survey specs.

    The repository's top-level ``simulators/`` (found from this package's location, so it works
    from any working directory after ``pip install -e .``), or ``mulens_sbi/data/simulators`` when the
    specs are shipped inside an installed package.
    """
    pkg = Path(__file__).resolve().parent.parent
    for cand in (pkg.parent / "simulators", pkg / "data" / "simulators"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(
        f"no simulators/ folder found next to the package ({pkg.parent / 'simulators'}) or inside it "
        f"({pkg / 'data' / 'simulators'}); pass a spec file path instead"
    )


def available_surveys() -> list[str]:
    """Names of the shipped specs (file stems under :func:`simulators_dir`)."""
    return sorted(p.stem for p in simulators_dir().glob("*.toml"))


def resolve_spec_path(name_or_path: str | Path) -> Path:
    """A spec file from a name (``"roman"``) or a path (anything with a suffix or a separator)."""
    s = str(name_or_path)
    if s.endswith(".toml") or "/" in s or "\\" in s or Path(s).is_file():
        p = Path(s).expanduser()
        if not p.is_file():
            raise SpecError(f"{p}: survey spec file not found")
        return p
    p = simulators_dir() / f"{s}.toml"
    if not p.is_file():
        raise SpecError(
            f"unknown survey {s!r}: no {p}; available: {', '.join(available_surveys())} "
            f"(or pass a path to a .toml spec)"
        )
    return p


def load_spec(name_or_path: str | Path) -> SurveySpec:
    """Load and validate a survey spec by name (``"roman"``) or by path."""
    path = resolve_spec_path(name_or_path)
    return parse_spec(path.read_text(encoding="utf-8"), file=str(path))
