"""Presets: named, readable nudges applied on top of a predicted (or hand-written) mix.

A preset is a one-line description plus operations on parameters of
:mod:`dmst.schema`, written in YAML (the built-ins are ``presets.yaml`` at the top of
the project)::

    smooth:
      description: Gentler compression, softer top, a touch of low end
      compressor:
        ratio: {mul: 0.75}          # scale
        attack_ms: {mul: 1.5}
      eq:
        high_shelf_gain_db: {add: -2}   # offset in the parameter's unit
        high_shelf_freq_hz: {set: 10000}  # absolute value

``amount`` (0..2) scales every change of a preset: ``add`` becomes ``value + A*delta``,
``mul`` becomes ``value * factor**A`` (geometric, so 0 is no change, 1 the preset, 2
twice the preset) and ``set`` becomes ``value + A*(target - value)`` (interpolation;
A > 1 goes past the target).  Every result is clamped to the schema's range (a
discrete row, such as ``eq.high_pass_slope_db``, lands on its nearest choice).  Presets
stack in the order given, each applied to the result of the previous one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import yaml

from . import schema

OPERATIONS = ("set", "add", "mul")
MIN_AMOUNT, MAX_AMOUNT = 0.0, 2.0

# The built-in presets live at the project's top level (next to the package) so they
# are easy to find and edit; a copy inside the package wins when one is installed there.
_BUILTIN_CANDIDATES = (
    Path(__file__).resolve().parent / "presets.yaml",
    Path(__file__).resolve().parent.parent / "presets.yaml",
)


class PresetError(ValueError):
    """A preset file, preset name or amount that cannot be used (one-line message)."""


@dataclass(frozen=True)
class Change:
    """One operation of a preset on one parameter, e.g. ``compressor.ratio mul 1.6``."""

    key: str  # "group.name", as in schema.KEYS
    operation: str  # "set", "add" or "mul"
    value: float

    def apply(self, current: float, amount: float) -> float:
        """The new (unclamped) value of the parameter at this ``amount``."""
        if self.operation == "add":
            return current + amount * self.value
        if self.operation == "mul":
            return current * self.value**amount
        return current + amount * (self.value - current)  # set: interpolate towards the target

    def describe(self) -> str:
        unit = schema.BY_KEY[self.key].unit
        unit = "" if not unit or unit == ":1" else f" {unit}"
        if self.operation == "add":
            unit = {" dBFS": " dB", " LUFS": " LU"}.get(unit, unit)  # an offset of a level is in dB, of a loudness in LU
            return f"{self.key} {self.value:+g}{unit}"
        if self.operation == "mul":
            return f"{self.key} x{self.value:g}"
        return f"{self.key} = {self.value:g}{unit}"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    changes: tuple[Change, ...]
    source: str = "built-in"  # file the preset was read from

    @property
    def keys(self) -> tuple[str, ...]:
        """The parameters this preset touches, in the order it applies them."""
        return tuple(c.key for c in self.changes)


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------

def builtin_path() -> Path:
    """The file holding the built-in presets."""
    for path in _BUILTIN_CANDIDATES:
        if path.is_file():
            return path
    raise PresetError(f"built-in presets file not found (looked for {_BUILTIN_CANDIDATES[-1]}); reinstall dmst")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_change(where: str, key: str, spec) -> Change:
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise PresetError(
            f"{where}: {key} must be one operation like {{add: 2}}; valid operations: {', '.join(OPERATIONS)}"
        )
    (operation, value), = spec.items()
    if operation not in OPERATIONS:
        raise PresetError(f"{where}: unknown operation '{operation}' for {key}; valid operations: {', '.join(OPERATIONS)}")
    if not _is_number(value):
        raise PresetError(f"{where}: {key} {operation} must be a number, got {value!r}")
    value = float(value)
    if operation == "mul" and value <= 0:
        raise PresetError(f"{where}: {key} mul must be a factor above 0, got {value:g}")
    if operation == "set":
        try:
            schema.check_value(key, value)
        except schema.ParamError as e:
            raise PresetError(f"{where}: set {e}") from None
    return Change(key, operation, value)


def parse_preset(name, body, source: str = "built-in") -> Preset:
    """One preset from its YAML form (``body``: the mapping under the preset's name)."""
    where = f"{source}: preset '{name}'"
    if not isinstance(name, str) or not name:
        raise PresetError(f"{source}: preset names must be text, got {name!r}")
    if not isinstance(body, Mapping):
        raise PresetError(
            f"{where} must be a mapping with a description and groups ({', '.join(schema.GROUPS)}), "
            f"got {type(body).__name__}"
        )
    description = body.get("description")
    if not isinstance(description, str) or not description.strip():
        raise PresetError(f"{where} needs a one-line 'description: ...'")
    changes = []
    for group, params in body.items():
        if group == "description":
            continue
        try:
            schema.check_key(str(group))
        except schema.ParamError as e:
            raise PresetError(f"{where}: {e}") from None
        if not isinstance(params, Mapping):
            raise PresetError(f"{where}: group '{group}' must map parameter names to operations like {{add: 2}}")
        for param, spec in params.items():
            try:
                schema.check_key(group, str(param))
            except schema.ParamError as e:
                raise PresetError(f"{where}: {e}") from None
            changes.append(_parse_change(where, f"{group}.{param}", spec))
    return Preset(name, " ".join(description.split()), tuple(changes), source)


def read_presets_file(path) -> dict[str, Preset]:
    """All presets of one YAML file, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PresetError(f"presets file {path} not found; check the path") from None
    except IsADirectoryError:
        raise PresetError(f"presets file {path} is a folder; pass a .yaml file") from None
    except UnicodeDecodeError:
        raise PresetError(f"presets file {path} is not UTF-8 text; pass a .yaml file") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise PresetError(f"presets file {path} is not valid YAML{at}: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise PresetError(f"presets file {path} must map preset names to presets, got {type(doc).__name__}")
    return {name: parse_preset(name, body, str(path)) for name, body in doc.items()}


def load_presets(extra_paths: Iterable = ()) -> dict[str, Preset]:
    """The built-in presets, with each file of ``extra_paths`` merged over them (same name replaces)."""
    presets = read_presets_file(builtin_path())
    presets = {name: Preset(p.name, p.description, p.changes, "built-in") for name, p in presets.items()}
    for path in extra_paths:
        presets.update(read_presets_file(path))
    return presets


# ---------------------------------------------------------------------------
# applying
# ---------------------------------------------------------------------------

def check_amount(amount) -> float:
    if not _is_number(amount) or not MIN_AMOUNT <= amount <= MAX_AMOUNT:
        raise PresetError(
            f"amount must be a number between {MIN_AMOUNT:g} and {MAX_AMOUNT:g} "
            f"(0: no change, 1: the preset, 2: twice the preset), got {amount!r}"
        )
    return float(amount)


def get_presets(names: Sequence[str], presets: Mapping[str, Preset]) -> list[Preset]:
    """Look ``names`` up, with an error listing the valid names for an unknown one."""
    out = []
    for name in names:
        if name not in presets:
            raise PresetError(f"unknown preset '{name}'; valid presets: {', '.join(presets)}")
        out.append(presets[name])
    return out


def _clamped_copy(params: Mapping) -> dict[str, float]:
    """Check the structure of nested ``params`` and return a flat, clamped copy in schema order."""
    for group, values in params.items():
        schema.check_key(group)
        if not isinstance(values, Mapping):
            raise schema.ParamError(f"parameter group '{group}' must be a dict of name: value pairs")
        for name, value in values.items():
            schema.check_key(group, name)
            try:
                ok = math.isfinite(float(value)) and not isinstance(value, (bool, str))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise schema.ParamError(f"{group}.{name} must be a number, got {value!r}")
    return schema.flatten(schema.validate(schema.clamp(params)))


def apply_presets(
    params: Mapping[str, Mapping[str, float]],
    names: Sequence[str] | str,
    amount: float = 1.0,
    presets: Mapping[str, Preset] | None = None,
) -> dict[str, dict[str, float]]:
    """Apply presets ``names`` in order to nested ``params``; returns a new nested dict.

    ``params`` must be complete (every schema parameter); values are clamped into range
    first, since a float32 prediction can sit a hair outside it.  ``presets`` defaults
    to :func:`load_presets`.  The input is never modified.
    """
    if isinstance(names, str):
        names = [names]
    amount = check_amount(amount)
    if presets is None:
        presets = load_presets()
    chosen = get_presets(list(names), presets)
    if not isinstance(params, Mapping):
        raise schema.ParamError(f"parameters must be a nested dict of groups ({', '.join(schema.GROUPS)})")
    flat = _clamped_copy(params)
    for preset in chosen:
        for change in preset.changes:
            p = schema.BY_KEY[change.key]
            flat[change.key] = p.nearest(change.apply(flat[change.key], amount))  # in range; a discrete row: a choice
    return schema.nest(flat)


def describe_preset(preset: Preset) -> str:
    """The changes of ``preset``, one per line, e.g. ``compressor.ratio x1.6``."""
    if not preset.changes:
        return "no changes"
    return "\n".join(c.describe() for c in preset.changes)


__all__ = [
    "Change", "OPERATIONS", "Preset", "PresetError", "apply_presets", "builtin_path", "check_amount",
    "describe_preset", "get_presets", "load_presets", "parse_preset", "read_presets_file",
]
