"""Settings as data: a frozen settings dataclass read from and written to a TOML file.

``load_settings(path, cls, overrides)`` reads a TOML file whose top-level keys are the fields of
``cls`` (a dataclass; fields that are themselves dataclasses are TOML tables, e.g. ``[train]`` of
:class:`mulens_sbi.training.TrainSettings`; a ``dict`` field is an inline table), refuses unknown
keys and values of the wrong type with an error naming the file and the key, applies ``overrides``
(command-line flags) and constructs ``cls``, whose own validation (``__post_init__``) then runs. A
key left out takes the field's default; a nested table given in part is merged onto the field's
default. ``dump_settings(obj)`` writes the TOML that ``load_settings`` reads back to an equal object
(``None`` values are left out: TOML has no null, and every optional field here defaults to ``None``).

Generic: it knows dataclasses and type hints, nothing of microlensing (layer "foundations").
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SettingsError", "check_fields", "load_settings", "settings_from_dict", "dump_settings"]


class SettingsError(ValueError):
    """A settings file or record that cannot be read: the message names the source and the key."""


def check_fields(obj: Any, checks: Mapping[str, tuple[bool, str]]) -> None:
    """Raise ``ValueError("Cls.field=value is not allowed: <allowed>")`` for the first failed check
    (``checks``: field name → (passes, allowed range in words)); the settings classes' validation."""
    for name, (ok, allowed) in checks.items():
        if not ok:
            raise ValueError(f"{type(obj).__name__}.{name}={getattr(obj, name)!r} is not allowed: {allowed}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint: Any) -> str:
    if hint is float:
        return "a number"
    if hint is int:
        return "a whole number"
    if hint is bool:
        return "true or false"
    if hint is str:
        return "a string"
    origin = typing.get_origin(hint)
    if hint is tuple or origin is tuple:
        return "an array"
    if hint is dict or origin is dict:
        return "a table"
    if dataclasses.is_dataclass(hint):
        return f"a table ({hint.__name__})"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    return getattr(hint, "__name__", str(hint))


class _Bad(Exception):
    pass


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint``; raises :class:`_Bad` when it is not of that type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a)
            except _Bad:
                pass
        raise _Bad
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Bad
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Bad
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Bad
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Bad
    if hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Bad
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args:
            if len(args) != len(value):
                raise _Bad
            return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
        if any(isinstance(v, (dict, list)) for v in value):
            raise _Bad
        return tuple(value)
    if hint is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _Bad
    raise _Bad


def _as_dict(obj: Any) -> dict[str, Any]:
    """A dataclass's fields, nested dataclasses as dicts (tuples kept)."""
    return {f.name: (_as_dict(getattr(obj, f.name)) if dataclasses.is_dataclass(getattr(obj, f.name))
                     else getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys (``"train.max_steps"``) as nested dicts."""
    out: dict[str, Any] = {}
    for key, v in overrides.items():
        *head, last = key.split(".")
        d = out
        for h in head:
            d = d.setdefault(h, {})
        if isinstance(v, Mapping) and isinstance(d.get(last), Mapping):
            d[last] = _merge(d[last], v)
        else:
            d[last] = v
    return out


def _build(cls: type, data: Mapping[str, Any], source: str, prefix: str = "") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SettingsError(f"{source}: unknown key '{prefix}{unknown[0]}' ({cls.__name__} has no field "
                            f"{unknown[0]!r}; known: {', '.join(fields)})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        hint = hints[name]
        if name not in data:
            if _default(f) is dataclasses.MISSING:
                raise SettingsError(f"{source}: missing key '{key}' ({cls.__name__}.{name} has no default)")
            continue
        value = data[name]
        if dataclasses.is_dataclass(hint):
            if isinstance(value, hint):
                kwargs[name] = value
                continue
            if not isinstance(value, Mapping):
                raise SettingsError(f"{source}: key '{key}' ({cls.__name__}.{name}) must be "
                                    f"{_type_name(hint)}, got {value!r}")
            base = _default(f)
            merged = _merge(_as_dict(base), value) if dataclasses.is_dataclass(base) else dict(value)
            kwargs[name] = _build(hint, merged, source, prefix=f"{key}.")
            continue
        try:
            kwargs[name] = _coerce(value, hint)
        except _Bad:
            raise SettingsError(f"{source}: key '{key}' ({cls.__name__}.{name}) must be {_type_name(hint)}, "
                                f"got {value!r} ({type(value).__name__})") from None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        where = f" (in table [{prefix[:-1]}])" if prefix else ""
        raise SettingsError(f"{source}: {exc}{where}") from exc


def settings_from_dict(cls: type, data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                       source: str = "settings") -> Any:
    """``cls`` from a plain dict (e.g. a model's stored ``metadata["settings"]`` or a parsed TOML
    file), with the checks of :func:`load_settings`; ``source`` names it in errors."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    merged = _merge(dict(data), _nest(overrides or {}))
    return _build(cls, merged, source)


def load_settings(path: str | Path, cls: type, overrides: Mapping[str, Any] | None = None) -> Any:
    """Read ``cls`` from the TOML file ``path``, then apply ``overrides`` (keys are field names,
    dotted for nested tables: ``{"train.max_steps": 10}``) and construct it (its validation runs).

    Raises:
        SettingsError: (a ``ValueError``) naming the file and the key: unknown key, wrong type,
            missing required key, a value its class refuses, or a TOML syntax error (with its line).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: TOML syntax error: {exc}") from None
    return settings_from_dict(cls, data, overrides, source=str(path))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):  # an inline table
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} ({type(v).__name__}) to TOML")


def _dump(obj: Any, table: str, lines: list[str]) -> None:
    nested = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            nested.append((f.name, v))
        elif v is not None:
            lines.append(f"{f.name} = {_toml_value(v)}")
    for name, v in nested:
        key = f"{table}.{name}" if table else name
        lines.append("")
        lines.append(f"[{key}]")
        _dump(v, key, lines)


def dump_settings(obj: Any) -> str:
    """TOML text of the settings dataclass ``obj`` (``None`` fields left out) that
    :func:`load_settings` reads back to an object equal to ``obj``."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"{obj!r} is not a dataclass instance")
    lines = [f"# {type(obj).__name__}"]
    _dump(obj, "", lines)
    return "\n".join(lines) + "\n"
