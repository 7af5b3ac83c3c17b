"""The one parameter table of the dmst console.

Every parameter the encoder predicts, a preset overrides, or a user edits in JSON is
one row of :data:`SCHEMA`, in the order the encoder emits them.  The table alone
drives:

* normalisation: physical value <-> [0, 1] (log scale for frequencies, Q and
  times, linear for dB and fractions), used by the encoder's output head;
* the nested params dict (``{"eq": {"high_pass_freq_hz": 80.0, ...}, ...}``) and
  its JSON form, always in physical units;
* validation of user-supplied values, with errors naming the parameter and range;
* the parameter table in the README (``python -m dmst.schema``).

Parameters are addressed by ``"group.name"`` keys, e.g. ``"compressor.attack_ms"``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch

SCHEMA_VERSION = 3  # 2: the output stage is a loudness target (output.loudness_lufs), not a gain; 3: compressor detector family


class ParamError(ValueError):
    """A parameter name or value that the schema does not accept."""


@dataclass(frozen=True)
class Param:
    group: str
    name: str
    unit: str
    minimum: float
    maximum: float
    default: float
    scale: str  # "log" or "linear"
    description: str

    @property
    def key(self) -> str:
        return f"{self.group}.{self.name}"

    def normalize(self, value):
        """Physical value (float or tensor) -> [0, 1]."""
        if self.scale == "log":
            lo, hi = math.log(self.minimum), math.log(self.maximum)
            v = torch.log(value) if torch.is_tensor(value) else math.log(value)
            return (v - lo) / (hi - lo)
        return (value - self.minimum) / (self.maximum - self.minimum)

    def denormalize(self, u):
        """[0, 1] (float or tensor) -> physical value."""
        if self.scale == "log":
            lo, hi = math.log(self.minimum), math.log(self.maximum)
            v = lo + u * (hi - lo)
            return torch.exp(v) if torch.is_tensor(v) else math.exp(v)
        return self.minimum + u * (self.maximum - self.minimum)


def _p(group, name, unit, lo, hi, default, scale, description):
    return Param(group, name, unit, float(lo), float(hi), float(default), scale, description)


# fmt: off
SCHEMA: tuple[Param, ...] = (
    # EQ: RBJ-cookbook biquads, in this order in the signal path.
    _p("eq", "high_pass_freq_hz",   "Hz", 16,    500,   30,    "log",    "High-pass cutoff (12 dB/octave, Butterworth Q 0.707)"),
    _p("eq", "low_shelf_freq_hz",   "Hz", 40,    500,   150,   "log",    "Low-shelf corner frequency"),
    _p("eq", "low_shelf_gain_db",   "dB", -12,   12,    0,     "linear", "Low-shelf gain"),
    _p("eq", "low_mid_freq_hz",     "Hz", 100,   1000,  300,   "log",    "Low-mid peaking band centre"),
    _p("eq", "low_mid_gain_db",     "dB", -12,   12,    0,     "linear", "Low-mid peaking band gain"),
    _p("eq", "low_mid_q",           "",   0.3,   8,     1.0,   "log",    "Low-mid peaking band Q"),
    _p("eq", "mid_freq_hz",         "Hz", 400,   4000,  1200,  "log",    "Mid peaking band centre"),
    _p("eq", "mid_gain_db",         "dB", -12,   12,    0,     "linear", "Mid peaking band gain"),
    _p("eq", "mid_q",               "",   0.3,   8,     1.0,   "log",    "Mid peaking band Q"),
    _p("eq", "presence_freq_hz",    "Hz", 1500,  10000, 4500,  "log",    "Presence peaking band centre"),
    _p("eq", "presence_gain_db",    "dB", -12,   12,    0,     "linear", "Presence peaking band gain"),
    _p("eq", "presence_q",          "",   0.3,   8,     1.0,   "log",    "Presence peaking band Q"),
    _p("eq", "high_shelf_freq_hz",  "Hz", 3000,  16000, 8000,  "log",    "High-shelf (air) corner frequency"),
    _p("eq", "high_shelf_gain_db",  "dB", -12,   12,    0,     "linear", "High-shelf (air) gain"),
    _p("eq", "low_pass_freq_hz",    "Hz", 3000,  20000, 18000, "log",    "Low-pass cutoff (12 dB/octave, Butterworth Q 0.707)"),
    # Compressor: feed-forward, soft knee; peak or RMS detector, ballistics on the gain in dB or on the linear envelope.
    _p("compressor", "threshold_db",    "dBFS", -60,  0,    -18,  "linear", "Level above which gain reduction starts (centre of the knee)"),
    _p("compressor", "ratio",           ":1",   1,    20,   2,    "log",    "Input dB change per output dB change above the knee"),
    _p("compressor", "knee_db",         "dB",   0,    24,   6,    "linear", "Width of the soft knee, centred on the threshold"),
    _p("compressor", "attack_ms",       "ms",   0.1,  100,  10,   "log",    "Time constant of gain reduction onset (63% of a step: of the gain in dB, or of the linear envelope)"),
    _p("compressor", "release_ms",      "ms",   10,   1000, 150,  "log",    "Time constant of gain recovery (63% of a step: of the gain in dB, or of the linear envelope)"),
    _p("compressor", "makeup_gain_db",  "dB",   -12,  24,   0,    "linear", "Gain after compression"),
    # Detector family (schema v3); the defaults are the v2 compressor exactly.
    _p("compressor", "detector_rms",    "",     0,    1,    0,    "linear", "Level detector: 0 instantaneous peak, 1 RMS over rms_window_ms (blended in dB between)"),
    _p("compressor", "rms_window_ms",   "ms",   1,    300,  20,   "log",    "Time constant of the RMS detector's mean square (63% of a step)"),
    _p("compressor", "linear_envelope", "",     0,    1,    0,    "linear", "Ballistics domain: 0 smoothing of the gain in dB, 1 attack/release on the linear level envelope (JUCE, analogue-style); gains blended in dB between"),
    # Saturation: biased tanh waveshaper, oversampled, level-compensated.
    _p("saturation", "drive_db",        "dB",   0,    24,   0,    "linear", "Gain into the waveshaper (0 dB: programme barely touches the curve)"),
    _p("saturation", "asymmetry",       "",     0,    1,    0,    "linear", "Bias of the curve: 0 symmetric (odd harmonics), 1 strongly asymmetric (adds even harmonics)"),
    _p("saturation", "mix",             "",     0,    1,    1,    "linear", "Dry/wet balance: 0 dry, 1 fully saturated"),
    # Output: the chain's render is measured and set to this loudness, whatever the stages above did to the level.
    _p("output", "loudness_lufs",       "LUFS", -40,  -6,   -16,  "linear", "Integrated loudness (BS.1770) the finished vocal is delivered at"),
)
# fmt: on

# Migration: the parameters each schema version added.  A file (settings JSON or model)
# written for an older readable version gets every parameter added since then at its
# default, which by design reproduces the older console exactly.  A new parameter group
# plugs in by listing its keys here under the version that adds it.
ADDED_IN: dict[int, tuple[str, ...]] = {
    3: ("compressor.detector_rms", "compressor.rms_window_ms", "compressor.linear_envelope"),
}
# Where training starts a parameter that a migrated model has not learned, in normalised
# units, when that is not its default: a blend whose default is 0 sits where the encoder's
# sigmoid has no slope, and Adam would need thousands of steps to move it.  (The migrated
# model still *predicts* the default until it is trained: see dmst.encoder.model.)
TRAINING_START: dict[str, float] = {"compressor.detector_rms": 0.5, "compressor.linear_envelope": 0.5}
OLDEST_READABLE_VERSION = 2  # version 1 had a plain output gain, not a loudness target: not convertible

KEYS: tuple[str, ...] = tuple(p.key for p in SCHEMA)
BY_KEY: dict[str, Param] = {p.key: p for p in SCHEMA}
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(p.group for p in SCHEMA))
NUM_PARAMS = len(SCHEMA)

# Flat dict of tensors: {"eq.high_pass_freq_hz": Tensor(batch), ...}; what effects consume.
FlatParams = dict[str, torch.Tensor]


def _describe(p: Param) -> str:
    unit = f" {p.unit}" if p.unit else ""
    return f"{p.key} must be between {p.minimum:g} and {p.maximum:g}{unit}"


# ---------------------------------------------------------------------------
# tensors <-> flat dicts <-> normalised vectors
# ---------------------------------------------------------------------------

def defaults(batch_size: int = 1, device=None, dtype=torch.float32) -> FlatParams:
    """The neutral default chain as a flat dict of (batch,) tensors."""
    return {p.key: torch.full((batch_size,), p.default, device=device, dtype=dtype) for p in SCHEMA}


def default_normalized(device=None) -> torch.Tensor:
    """The defaults as a (P,) vector in [0, 1]."""
    return torch.tensor([p.normalize(p.default) for p in SCHEMA], device=device, dtype=torch.float32)


def denormalize(u: torch.Tensor) -> FlatParams:
    """(batch, P) values in [0, 1] -> flat dict of physical (batch,) tensors."""
    if u.shape[-1] != NUM_PARAMS:
        raise ValueError(f"expected {NUM_PARAMS} normalised parameters, got {u.shape[-1]}")
    return {p.key: p.denormalize(u[..., i]) for i, p in enumerate(SCHEMA)}


def normalize(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Flat dict of physical (batch,) tensors -> (batch, P) in [0, 1]."""
    cols = [p.normalize(torch.as_tensor(params[p.key], dtype=torch.float64)) for p in SCHEMA]
    return torch.stack(cols, dim=-1).to(torch.float32)


def stack(items: Iterable[Mapping[str, Mapping[str, float]]], device=None) -> FlatParams:
    """A list of nested dicts (one per batch item) -> flat dict of (batch,) tensors."""
    items = [flatten(validate(it)) for it in items]
    return {k: torch.tensor([it[k] for it in items], dtype=torch.float32, device=device) for k in KEYS}


def unstack(params: Mapping[str, torch.Tensor]) -> list[dict[str, dict[str, float]]]:
    """Flat dict of (batch,) tensors -> list of nested dicts of Python floats."""
    cols = {k: torch.as_tensor(params[k]).detach().reshape(-1).double().cpu().tolist() for k in KEYS}
    n = len(cols[KEYS[0]])
    return [nest({k: cols[k][i] for k in KEYS}) for i in range(n)]


# ---------------------------------------------------------------------------
# nested dicts (the user-facing form)
# ---------------------------------------------------------------------------

def nest(flat: Mapping[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {g: {} for g in GROUPS}
    for p in SCHEMA:
        out[p.group][p.name] = float(flat[p.key])
    return out


def flatten(nested: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {p.key: float(nested[p.group][p.name]) for p in SCHEMA}


def default_dict() -> dict[str, dict[str, float]]:
    return nest({p.key: p.default for p in SCHEMA})


def check_key(group: str, name: str | None = None) -> None:
    """Raise ParamError naming the unknown group or parameter and listing the valid ones."""
    if group not in GROUPS:
        raise ParamError(f"unknown parameter group '{group}'; valid groups: {', '.join(GROUPS)}")
    if name is not None and f"{group}.{name}" not in BY_KEY:
        valid = ", ".join(p.name for p in SCHEMA if p.group == group)
        raise ParamError(f"unknown parameter '{group}.{name}'; valid {group} parameters: {valid}")


def check_value(key: str, value) -> float:
    """Type- and range-check one user-supplied value; returns it as float."""
    p = BY_KEY[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(f"{key} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < p.minimum or v > p.maximum:
        raise ParamError(f"{key} = {value!r} is out of range: {_describe(p)}")
    return v


def validate(nested: Mapping, partial: bool = False) -> dict[str, dict[str, float]]:
    """Check a user-supplied nested dict: known groups and names, numeric, in range.

    With ``partial=False`` every parameter must be present.  Returns a clean copy
    (floats, schema order).  Raises :class:`ParamError` with a one-line message.
    """
    if not isinstance(nested, Mapping):
        raise ParamError(f"parameters must be an object of groups ({', '.join(GROUPS)}), got {type(nested).__name__}")
    for group, values in nested.items():
        check_key(group)
        if not isinstance(values, Mapping):
            raise ParamError(f"parameter group '{group}' must be an object of name: value pairs")
        for name, value in values.items():
            check_key(group, name)
            check_value(f"{group}.{name}", value)
    out: dict[str, dict[str, float]] = {}
    for p in SCHEMA:
        if p.group in nested and p.name in nested[p.group]:
            out.setdefault(p.group, {})[p.name] = float(nested[p.group][p.name])
        elif not partial:
            raise ParamError(f"missing parameter '{p.key}' ({_describe(p)})")
    return out


def clamp(nested: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Clamp every value of a nested dict into its schema range (for computed values, not user input)."""
    out = {}
    for group, values in nested.items():
        out[group] = {}
        for name, v in values.items():
            p = BY_KEY[f"{group}.{name}"]
            out[group][name] = min(max(float(v), p.minimum), p.maximum)
    return out


# ---------------------------------------------------------------------------
# migration from older schema versions
# ---------------------------------------------------------------------------

def check_version(version, what: str = "file") -> int:
    """The schema version of a file if this dmst can read it; else a one-line ParamError."""
    if isinstance(version, bool) or not isinstance(version, int) or not OLDEST_READABLE_VERSION <= version <= SCHEMA_VERSION:
        raise ParamError(f"{what} has schema_version {version!r}, which is not supported; this dmst reads versions "
                         f"{OLDEST_READABLE_VERSION} to {SCHEMA_VERSION} (re-export it, or use the dmst that wrote it)")
    return version


def added_since(version: int) -> tuple[str, ...]:
    """The keys the current schema has that a file of ``version`` lacks, in schema order."""
    new = {k for v, keys in ADDED_IN.items() if v > version for k in keys}
    return tuple(k for k in KEYS if k in new)


def keys_of_version(version: int) -> tuple[str, ...]:
    """The parameter keys, in order, of a (readable) schema ``version``."""
    missing = set(added_since(version))
    return tuple(k for k in KEYS if k not in missing)


def migrate(nested: Mapping, version: int) -> dict:
    """A nested dict of an older ``version`` with every parameter added since at its default.

    Values the file has are kept as they are (validation comes after).  Only groups and
    names are filled in; nothing else is interpreted.
    """
    check_version(version)
    out = {g: dict(v) if isinstance(v, Mapping) else v for g, v in nested.items()}
    for key in added_since(version):
        p = BY_KEY[key]
        group = out.setdefault(p.group, {})
        if isinstance(group, dict):
            group.setdefault(p.name, p.default)
    return out


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------

def to_json(nested: Mapping[str, Mapping[str, float]], **meta) -> str:
    """Nested params -> JSON text. ``meta`` (model name, presets...) goes under "meta".

    Python's float repr round-trips exactly, so JSON -> dict gives back the same floats.
    """
    doc = {"schema_version": SCHEMA_VERSION, **({"meta": meta} if meta else {})}
    doc.update(nest(flatten(nested)))
    return json.dumps(doc, indent=2)


def from_json(text: str) -> dict[str, dict[str, float]]:
    """JSON text (as written by :func:`to_json`, possibly hand-edited) -> validated nested params.

    A file of an older readable schema version is migrated (:func:`migrate`): the
    parameters added since get their defaults, so it renders as it did.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParamError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(doc, dict):
        raise ParamError("parameters JSON must be an object")
    version = check_version(doc.pop("schema_version", SCHEMA_VERSION), "parameters JSON")
    doc.pop("meta", None)
    return validate(migrate(doc, version))


# ---------------------------------------------------------------------------
# docs
# ---------------------------------------------------------------------------

def markdown_table() -> str:
    rows = ["| parameter | unit | min | max | default | scale | meaning |", "|---|---|---|---|---|---|---|"]
    for p in SCHEMA:
        rows.append(f"| `{p.key}` | {p.unit or '-'} | {p.minimum:g} | {p.maximum:g} | {p.default:g} | {p.scale} | {p.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
