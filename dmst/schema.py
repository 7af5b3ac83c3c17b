"""The one parameter table of the dmst console.

Every parameter the encoder predicts, a preset overrides, or a user edits in JSON is
one row of :data:`SCHEMA`, in the order the encoder emits them.  The table alone
drives:

* normalisation: physical value <-> [0, 1] (log scale for frequencies, Q and
  times, linear for dB and fractions; a discrete row, one of a few ``choices``,
  by its index), used by the encoder's output head (which holds a discrete row
  at a fixed value instead of predicting it);
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

SCHEMA_VERSION = 3  # 2: the output stage is a loudness target (output.loudness_lufs), not a gain; 3: compressor detector
# family, gate, de-esser, post-compressor EQ, delay and reverb sends, true-peak limiter


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
    scale: str  # "log", "linear", or "discrete" (one of ``choices``)
    description: str
    choices: tuple[float, ...] = ()  # a discrete row: the only values it takes, in increasing order

    @property
    def key(self) -> str:
        return f"{self.group}.{self.name}"

    @property
    def discrete(self) -> bool:
        return bool(self.choices)

    def nearest(self, value):
        """The choice nearest to ``value`` (float or tensor) for a discrete row; ``value`` in range otherwise."""
        if not self.discrete:
            return torch.clamp(value, self.minimum, self.maximum) if torch.is_tensor(value) else min(max(value, self.minimum), self.maximum)
        if torch.is_tensor(value):
            choices = torch.tensor(self.choices, dtype=value.dtype, device=value.device)
            return choices[(value[..., None] - choices).abs().argmin(-1)]
        return min(self.choices, key=lambda c: abs(c - value))

    def normalize(self, value):
        """Physical value (float or tensor) -> [0, 1].  A discrete row: its choice's index over (count - 1)."""
        if self.discrete:
            n = len(self.choices) - 1
            if torch.is_tensor(value):
                choices = torch.tensor(self.choices, dtype=value.dtype, device=value.device)
                return (value[..., None] - choices).abs().argmin(-1).to(value.dtype) / n
            return self.choices.index(self.nearest(value)) / n
        if self.scale == "log":
            lo, hi = math.log(self.minimum), math.log(self.maximum)
            v = torch.log(value) if torch.is_tensor(value) else math.log(value)
            return (v - lo) / (hi - lo)
        return (value - self.minimum) / (self.maximum - self.minimum)

    def denormalize(self, u):
        """[0, 1] (float or tensor) -> physical value.  A discrete row: the choice at the rounded index (no gradient)."""
        if self.discrete:
            n = len(self.choices) - 1
            if torch.is_tensor(u):
                index = torch.round(u.detach() * n).clamp(0, n).long()
                return torch.tensor(self.choices, dtype=u.dtype, device=u.device)[index]
            return self.choices[min(max(round(u * n), 0), n)]
        if self.scale == "log":
            lo, hi = math.log(self.minimum), math.log(self.maximum)
            v = lo + u * (hi - lo)
            return torch.exp(v) if torch.is_tensor(v) else math.exp(v)
        return self.minimum + u * (self.maximum - self.minimum)


def _p(group, name, unit, lo, hi, default, scale, description):
    return Param(group, name, unit, float(lo), float(hi), float(default), scale, description)


def _choice(group, name, unit, choices, default, description):
    """A discrete row: only the values in ``choices``.  The encoder does not predict it; a model holds a fixed value."""
    choices = tuple(float(c) for c in choices)
    return Param(group, name, unit, choices[0], choices[-1], float(default), "discrete", description, choices)


# fmt: off
SCHEMA: tuple[Param, ...] = (
    # Gate/expander (schema v3), before the EQ: room noise and breaths between phrases.  Range 0 dB: off (a bypass).
    _p("gate", "threshold_db",      "dBFS", -90,  -20,  -80,  "linear", "Level below which the downward expander turns the vocal down (linked peak, 20 ms hold)"),
    _p("gate", "ratio",             ":1",   1,    20,   2,    "log",    "Output dB change per input dB below the threshold (large: a gate)"),
    _p("gate", "range_db",          "dB",   0,    60,   0,    "linear", "Most the gate turns down (0: off, an exact bypass)"),
    _p("gate", "attack_ms",         "ms",   0.1,  50,   1,    "log",    "Time constant of the gate opening (63% of a step of the gain in dB)"),
    _p("gate", "release_ms",        "ms",   10,   1000, 100,  "log",    "Time constant of the gate closing, after the 20 ms hold (63% of a step)"),
    # EQ: RBJ-cookbook biquads, in this order in the signal path.
    _p("eq", "high_pass_freq_hz",   "Hz", 16,    500,   30,    "log",    "High-pass cutoff (Butterworth, of the order high_pass_slope_db sets)"),
    _choice("eq", "high_pass_slope_db", "dB/octave", (6, 12, 18, 24), 12, "High-pass slope: a Butterworth of order slope / 6 (12: schema v2's Q 0.707 section)"),
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
    # Compressor: soft knee; peak or RMS detector, ballistics on the gain in dB or on the linear envelope, feed-forward or feedback.
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
    _p("compressor", "feedback",        "",     0,    1,    0,    "linear", "Topology: 0 feed-forward (the detector reads the input), 1 feedback (it reads the output, 1176/LA-2A-style; same ratio and 63% times); gains blended in dB between"),
    # De-esser (schema v3): split-band; the sidechain band drives gain reduction on the high band only.  Range 0 dB: off.
    _p("deesser", "frequency_hz",   "Hz",   3000, 10000, 6500, "log",   "Centre of the sidechain band (two band-pass sections); the high band starts an octave below"),
    _p("deesser", "threshold_db",   "dBFS", -60,  0,    -30,  "linear", "Sidechain band level above which the high band is turned down (infinite ratio)"),
    _p("deesser", "range_db",       "dB",   0,    24,   0,    "linear", "Most the high band is turned down (0: off, an exact bypass)"),
    _p("deesser", "attack_ms",      "ms",   0.1,  10,   1,    "log",    "Time constant of gain reduction onset (63% of a step of the gain in dB)"),
    _p("deesser", "release_ms",     "ms",   10,   500,  60,   "log",    "Time constant of gain recovery (63% of a step of the gain in dB)"),
    # Post-compressor EQ (schema v3): a bell and a high shelf, as engineers boost after compressing.  0 dB gains: a bypass.
    _p("post_eq", "bell_freq_hz",       "Hz", 200,  12000, 3000,  "log",    "Post-compressor peaking band centre"),
    _p("post_eq", "bell_gain_db",       "dB", -12,  12,    0,     "linear", "Post-compressor peaking band gain"),
    _p("post_eq", "bell_q",             "",   0.3,  8,     1,     "log",    "Post-compressor peaking band Q"),
    _p("post_eq", "high_shelf_freq_hz", "Hz", 3000, 16000, 10000, "log",    "Post-compressor high-shelf corner frequency"),
    _p("post_eq", "high_shelf_gain_db", "dB", -12,  12,    0,     "linear", "Post-compressor high-shelf gain"),
    # Saturation: biased tanh waveshaper, oversampled, level-compensated.
    _p("saturation", "drive_db",        "dB",   0,    24,   0,    "linear", "Gain into the waveshaper (0 dB: programme barely touches the curve)"),
    _p("saturation", "asymmetry",       "",     0,    1,    0,    "linear", "Bias of the curve: 0 symmetric (odd harmonics), 1 strongly asymmetric (adds even harmonics)"),
    _p("saturation", "mix",             "",     0,    1,    1,    "linear", "Dry/wet balance: 0 dry, 1 fully saturated"),
    # Delay send (schema v3): feedback echo with loop filters and a ping-pong spread, returned in stereo.  send_db -60: off.
    _p("delay", "time_ms",          "ms",   20,   1000, 250,  "log",    "Time between the dry sound and the first echo, and between echoes"),
    _p("delay", "feedback",         "",     0,    0.9,  0.3,  "linear", "Level of each echo against the one before (linear gain)"),
    _p("delay", "low_pass_hz",      "Hz",   1000, 20000, 8000, "log",   "Low-pass in the feedback loop (12 dB/octave): each echo darker"),
    _p("delay", "high_pass_hz",     "Hz",   20,   2000, 150,  "log",    "High-pass in the feedback loop (12 dB/octave): each echo thinner"),
    _p("delay", "spread",           "",     0,    1,    0.5,  "linear", "Ping-pong: 0 every echo centred, 1 echoes alternately fully left and right (first left)"),
    _p("delay", "send_db",          "dB",   -60,  0,    -60,  "linear", "Return level of the delay (-60: off, exactly)"),
    # Reverb send (schema v3): seeded filtered-noise impulse response, returned in stereo.  send_db -60: off.
    _p("reverb", "decay_s",         "s",    0.2,  6,    1.2,  "log",    "RT60 at low and middle frequencies"),
    _p("reverb", "pre_delay_ms",    "ms",   0,    200,  20,   "linear", "Delay of the whole reverb return after the dry sound"),
    _p("reverb", "damping_hz",      "Hz",   1000, 20000, 8000, "log",   "Frequency at which the decay is half as long (high-frequency absorption)"),
    _p("reverb", "width",           "",     0,    1,    1,    "linear", "Stereo width of the return: 0 both channels the same, 1 uncorrelated"),
    _p("reverb", "send_db",         "dB",   -60,  0,    -60,  "linear", "Return level of the reverb for a steady noise-like send (-60: off, exactly)"),
    # Output: the chain's render is measured and set to this loudness, whatever the stages above did to the level.
    _p("output", "loudness_lufs",       "LUFS", -40,  -6,   -16,  "linear", "Integrated loudness (BS.1770) the finished vocal is delivered at"),
    # Limiter (schema v3), last: true-peak (4x oversampled), lookahead.  At 0 dBTP (the maximum) it is off.
    _p("limiter", "ceiling_dbtp",   "dBTP", -12,  0,    -1,   "linear", "Highest true peak of the delivery (ITU-R BS.1770 4x oversampled); 0: limiter off (a bypass, overs are reported)"),
    _p("limiter", "release_ms",     "ms",   1,    1000, 100,  "log",    "Time constant of the limiter's gain recovery (63% of a step)"),
)
# fmt: on

# Migration: the parameters each schema version added.  A file (settings JSON or model)
# written for an older readable version gets every parameter added since then at its
# default, which by design reproduces the older console exactly.  A new parameter group
# plugs in by listing its keys here under the version that adds it.
ADDED_IN: dict[int, tuple[str, ...]] = {
    3: ("compressor.detector_rms", "compressor.rms_window_ms", "compressor.linear_envelope", "compressor.feedback",
        "gate.threshold_db", "gate.ratio", "gate.range_db", "gate.attack_ms", "gate.release_ms",
        "deesser.frequency_hz", "deesser.threshold_db", "deesser.range_db", "deesser.attack_ms", "deesser.release_ms",
        "post_eq.bell_freq_hz", "post_eq.bell_gain_db", "post_eq.bell_q", "post_eq.high_shelf_freq_hz",
        "post_eq.high_shelf_gain_db",
        "delay.time_ms", "delay.feedback", "delay.low_pass_hz", "delay.high_pass_hz", "delay.spread", "delay.send_db",
        "reverb.decay_s", "reverb.pre_delay_ms", "reverb.damping_hz", "reverb.width", "reverb.send_db",
        "limiter.ceiling_dbtp", "limiter.release_ms",
        "eq.high_pass_slope_db"),
}
# Rows added to a version after files of that version were written: such a file may lack
# them, and means their default (before eq.high_pass_slope_db, every high-pass was 12 dB/octave;
# before compressor.feedback, every compressor was feed-forward).
ADDED_LATE: dict[int, tuple[str, ...]] = {3: ("eq.high_pass_slope_db", "compressor.feedback")}
LIMITER_OFF_DBTP = 0.0  # limiter.ceiling_dbtp at its maximum: the limiter is off (an exact bypass)
# The value a *settings file* of an older version gets for a parameter it lacks, where that is
# not the default: v2 had no limiter, so a v2 file gets it off and renders exactly as it did.
# (A migrated *model* predicts the defaults, limiter on: a v3 render of its predictions is the
# v2 render except where that went over -1 dBTP; see dmst.encoder.model.)
MIGRATED_VALUE: dict[str, float] = {"limiter.ceiling_dbtp": LIMITER_OFF_DBTP}
# Where training starts a parameter that a migrated model has not learned, in normalised
# units, when that is not its default: a blend whose default is 0 sits where the encoder's
# sigmoid has no slope, and Adam would need thousands of steps to move it.  (The migrated
# model still *predicts* the default until it is trained: see dmst.encoder.model.)
TRAINING_START: dict[str, float] = {
    "compressor.detector_rms": 0.5, "compressor.linear_envelope": 0.5, "compressor.feedback": 0.5,
    # An effect whose default is off has no gradient there (a send at -60 dB is exactly
    # zero; a range of 0 dB holds the gain at 0 dB): training starts it a little on.
    "gate.range_db": 0.2,            # 12 dB
    "gate.threshold_db": 0.7,        # -41 dBFS: at its default (-80) no level of a staged vocal reaches it
    "deesser.range_db": 0.125,       # 3 dB
    "deesser.threshold_db": 0.25,    # -45 dBFS: at its default (-30) the sidechain band of a staged vocal rarely reaches it
    "delay.send_db": 0.5,            # -30 dB
    "reverb.send_db": 0.5,           # -30 dB
}
OLDEST_READABLE_VERSION = 2  # version 1 had a plain output gain, not a loudness target: not convertible

KEYS: tuple[str, ...] = tuple(p.key for p in SCHEMA)
BY_KEY: dict[str, Param] = {p.key: p for p in SCHEMA}
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(p.group for p in SCHEMA))
NUM_PARAMS = len(SCHEMA)
DISCRETE_KEYS: tuple[str, ...] = tuple(p.key for p in SCHEMA if p.discrete)  # held fixed by a model, not predicted

# Flat dict of tensors: {"eq.high_pass_freq_hz": Tensor(batch), ...}; what effects consume.
FlatParams = dict[str, torch.Tensor]


def _describe(p: Param) -> str:
    unit = f" {p.unit}" if p.unit else ""
    if p.discrete:
        return f"{p.key} must be one of {', '.join(f'{c:g}' for c in p.choices)}{unit}"
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


def training_start_normalized(device=None) -> torch.Tensor:
    """Where training starts, as a (P,) vector in [0, 1]: the defaults, with :data:`TRAINING_START` over them."""
    u = default_normalized(device)
    for key, value in TRAINING_START.items():
        u[KEYS.index(key)] = value
    return u


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
    if p.discrete and v not in p.choices:
        raise ParamError(f"{key} = {value!r} is not a valid choice: {_describe(p)}")
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
    """Clamp every value of a nested dict into its schema range, a discrete one to its nearest choice
    (for computed values, not user input)."""
    return {group: {name: BY_KEY[f"{group}.{name}"].nearest(float(v)) for name, v in values.items()}
            for group, values in nested.items()}


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


def may_lack(version: int) -> tuple[str, ...]:
    """The keys a file of ``version`` may lack and still be read: those added since, and those added late to it."""
    late = set(ADDED_LATE.get(version, ()))
    return tuple(k for k in KEYS if k in late or k in set(added_since(version)))


def keys_of_version(version: int) -> tuple[str, ...]:
    """The parameter keys, in order, of a (readable) schema ``version``."""
    missing = set(added_since(version))
    return tuple(k for k in KEYS if k not in missing)


def migrate(nested: Mapping, version: int) -> dict:
    """A nested dict of an older ``version`` with every parameter added since (or added late to
    ``version``, :data:`ADDED_LATE`) at its default (or its :data:`MIGRATED_VALUE`: the limiter
    off), so that it renders as it did.

    Values the file has are kept as they are (validation comes after).  Only groups and
    names are filled in; nothing else is interpreted.
    """
    check_version(version)
    out = {g: dict(v) if isinstance(v, Mapping) else v for g, v in nested.items()}
    for key in may_lack(version):
        p = BY_KEY[key]
        group = out.setdefault(p.group, {})
        if isinstance(group, dict):
            group.setdefault(p.name, MIGRATED_VALUE.get(key, p.default))
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
        scale = "one of " + ", ".join(f"{c:g}" for c in p.choices) if p.discrete else p.scale
        rows.append(f"| `{p.key}` | {p.unit or '-'} | {p.minimum:g} | {p.maximum:g} | {p.default:g} | {scale} | {p.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
