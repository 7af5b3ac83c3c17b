"""The parameter table: normalisation round trips, JSON, validation messages, docs."""
from __future__ import annotations

import json
from pathlib import Path
import math
import re

import numpy as np
import pytest
import torch

from dmst import schema
from dmst.schema import BY_KEY, KEYS, SCHEMA, ParamError


def _random_physical(rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    """n random physical values per parameter, spread across the whole range (log-uniform for log scales)."""
    out = {}
    for p in SCHEMA:
        if p.discrete:
            v = rng.choice(p.choices, n)
        elif p.scale == "log":
            v = np.exp(rng.uniform(math.log(p.minimum), math.log(p.maximum), n))
        else:
            v = rng.uniform(p.minimum, p.maximum, n)
        v[:2] = [p.minimum, p.maximum]  # the ends themselves
        out[p.key] = torch.tensor(v, dtype=torch.float64)
    return out


def test_physical_normalized_physical_round_trip():
    """physical -> [0, 1] (float32) -> physical returns every value within 1e-4 relative (+1e-6 of the range, for values near 0)."""
    phys = _random_physical(np.random.default_rng(0), 1000)
    u = schema.normalize(phys)
    assert u.shape == (1000, len(SCHEMA))
    assert float(u.min()) >= -1e-6 and float(u.max()) <= 1 + 1e-6
    back = schema.denormalize(u)
    for p in SCHEMA:
        got, want = back[p.key].double(), phys[p.key]
        tol = 1e-4 * want.abs() + 1e-6 * (p.maximum - p.minimum)
        assert torch.all((got - want).abs() <= tol), p.key


def test_normalization_is_log_or_linear_as_declared():
    """The geometric (log) or arithmetic (linear) midpoint of each range maps to 0.5; ends map to 0 and 1."""
    for p in SCHEMA:
        if p.discrete:
            continue
        mid = math.sqrt(p.minimum * p.maximum) if p.scale == "log" else (p.minimum + p.maximum) / 2
        assert p.normalize(mid) == pytest.approx(0.5, abs=1e-9), p.key
        assert p.normalize(p.minimum) == pytest.approx(0.0, abs=1e-12)
        assert p.normalize(p.maximum) == pytest.approx(1.0, abs=1e-12)
        assert p.denormalize(0.5) == pytest.approx(mid, rel=1e-9)


def test_denormalize_rejects_wrong_width():
    """A vector with the wrong number of parameters is refused."""
    with pytest.raises(ValueError, match=str(len(SCHEMA))):
        schema.denormalize(torch.zeros(2, len(SCHEMA) - 1))


def _random_nested(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    flat = {k: float(v[2]) for k, v in _random_physical(rng, 3).items()}
    return schema.nest(flat)


def test_dict_json_dict_is_exact():
    """nested dict -> JSON -> nested dict gives back bit-identical floats."""
    for seed in range(5):
        d = _random_nested(seed)
        text = schema.to_json(d, model="test")
        assert json.loads(text)["schema_version"] == schema.SCHEMA_VERSION
        assert schema.from_json(text) == d


def test_stack_unstack_round_trip():
    """A batch of nested dicts -> (batch,) tensors -> nested dicts keeps values (float32 precision)."""
    items = [_random_nested(s) for s in range(3)]
    back = schema.unstack(schema.stack(items))
    for a, b in zip(items, back):
        for k in KEYS:
            g, n = k.split(".")
            assert b[g][n] == pytest.approx(a[g][n], rel=1e-6)


def _valid() -> dict:
    return schema.default_dict()


def test_rejects_unknown_group():
    """An unknown group is named, with the valid groups listed."""
    d = _valid()
    d["chorus"] = {"mix": 0.2}
    with pytest.raises(ParamError) as e:
        schema.validate(d)
    msg = str(e.value)
    assert "chorus" in msg and all(g in msg for g in schema.GROUPS)
    with pytest.raises(ParamError, match="reverb"):
        schema.from_json(json.dumps(d))


def test_rejects_unknown_parameter_and_lists_valid_names():
    """An unknown parameter is named and every valid name of its group is listed."""
    d = _valid()
    d["compressor"]["treshold_db"] = -20.0
    for call in (lambda: schema.validate(d), lambda: schema.from_json(json.dumps(d))):
        with pytest.raises(ParamError) as e:
            call()
        msg = str(e.value)
        assert "treshold_db" in msg
        for p in SCHEMA:
            if p.group == "compressor":
                assert p.name in msg


@pytest.mark.parametrize("key", ["eq.high_pass_freq_hz", "compressor.ratio", "saturation.mix", "output.loudness_lufs"])
@pytest.mark.parametrize("side", ["below", "above"])
def test_rejects_out_of_range_with_name_and_range(key, side):
    """An out-of-range value is refused with the parameter's name and its min and max in the message."""
    p = BY_KEY[key]
    d = _valid()
    span = p.maximum - p.minimum
    d[p.group][p.name] = p.minimum - 0.01 * span if side == "below" else p.maximum + 0.01 * span
    for call in (lambda: schema.validate(d), lambda: schema.from_json(json.dumps(d))):
        with pytest.raises(ParamError) as e:
            call()
        msg = str(e.value)
        assert key in msg and f"{p.minimum:g}" in msg and f"{p.maximum:g}" in msg


@pytest.mark.parametrize("bad", ["12", None, [1.0], True, float("nan"), float("inf")])
def test_rejects_non_numbers(bad):
    """Strings, null, lists, booleans, NaN and inf are refused, naming the parameter."""
    d = _valid()
    d["eq"]["mid_gain_db"] = bad
    with pytest.raises(ParamError, match=re.escape("eq.mid_gain_db")):
        schema.validate(d)


def test_rejects_missing_parameter():
    """A missing parameter is named (unless partial=True)."""
    d = _valid()
    del d["saturation"]["asymmetry"]
    with pytest.raises(ParamError, match=re.escape("saturation.asymmetry")):
        schema.validate(d)
    with pytest.raises(ParamError, match=re.escape("saturation.asymmetry")):
        schema.from_json(json.dumps(d))
    assert "asymmetry" not in schema.validate(d, partial=True)["saturation"]


def test_rejects_invalid_json_and_wrong_version():
    """Broken JSON and an unknown schema_version are refused with ParamError."""
    with pytest.raises(ParamError, match="JSON"):
        schema.from_json("{not json")
    doc = json.loads(schema.to_json(_valid()))
    doc["schema_version"] = 99
    with pytest.raises(ParamError, match="99"):
        schema.from_json(json.dumps(doc))


def test_defaults_lie_within_ranges():
    """Every default is inside its [min, max], min < max, log ranges are positive, and the default tensors agree."""
    d = schema.defaults(batch_size=3)
    for p in SCHEMA:
        assert p.minimum < p.maximum
        assert p.minimum <= p.default <= p.maximum, p.key
        assert p.scale in ("log", "linear") and not p.choices or p.scale == "discrete" and p.default in p.choices
        if p.scale == "log":
            assert p.minimum > 0
        assert d[p.key].shape == (3,) and torch.all(d[p.key] == torch.tensor(p.default, dtype=torch.float32))
    u = schema.default_normalized()
    assert torch.all((u >= 0) & (u <= 1))
    schema.validate(schema.default_dict())  # the default chain is itself valid


def test_keys_are_group_dot_name_and_unique():
    """Every key is `group.name` (lower snake case), keys are unique and groups come in contiguous runs."""
    assert len(set(KEYS)) == len(KEYS) == schema.NUM_PARAMS == len(SCHEMA)
    for p, k in zip(SCHEMA, KEYS):
        assert k == f"{p.group}.{p.name}"
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*\.[a-z0-9]+(_[a-z0-9]+)*", k), k
    seen = []
    for p in SCHEMA:
        if not seen or seen[-1] != p.group:
            assert p.group not in seen, f"group {p.group} is split"
            seen.append(p.group)
    assert tuple(seen) == schema.GROUPS


def test_markdown_table_has_one_row_per_parameter():
    """The README table has a header, a separator and exactly one row per parameter, in schema order."""
    lines = schema.markdown_table().splitlines()
    assert lines[0].startswith("| parameter") and set(lines[1]) <= set("|-")
    rows = lines[2:]
    assert len(rows) == len(SCHEMA)
    for row, p in zip(rows, SCHEMA):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == f"`{p.key}`"
        assert float(cells[2]) == p.minimum and float(cells[3]) == p.maximum and float(cells[4]) == p.default


def test_a_v3_file_written_before_the_late_rows_reads_them_as_their_defaults():
    """v3 settings files written before eq.high_pass_slope_db and compressor.feedback existed lack
    them: they are read (not refused) with the slope at 12 dB/octave and the compressor feed-forward,
    the console those files were written for; the values the file has are kept."""
    d = _valid()
    d["compressor"]["ratio"] = 4.0
    doc = json.loads(schema.to_json(d))
    del doc["eq"]["high_pass_slope_db"], doc["compressor"]["feedback"]
    read = schema.from_json(json.dumps(doc))
    assert read["eq"]["high_pass_slope_db"] == 12.0 and read["compressor"]["feedback"] == 0.0
    assert read["compressor"]["ratio"] == 4.0
    assert set(schema.ADDED_LATE[3]) == {"eq.high_pass_slope_db", "compressor.feedback"}


def test_a_v3_model_written_before_the_late_rows_loads_and_predicts_their_defaults(tmp_path):
    """A v3 model file from before the late rows (its output head one row short for each) loads:
    the head grows, and the model predicts the slope at 12 dB/octave and a feed-forward compressor,
    with every other setting as the file's head gives it."""
    from dmst.encoder.model import load_model, read_checkpoint
    full = read_checkpoint(Path(__file__).resolve().parents[1] / "dmst" / "models" / "default.pt")
    late = schema.ADDED_LATE[3]
    keep = [i for i, k in enumerate(KEYS) if k not in late]
    state = dict(full["state_dict"])
    last = max((k for k in state if k.startswith("head.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1]))
    for name in (last, last[: -len("weight")] + "bias", "default_logits"):
        state[name] = state[name][keep]
    old = {**full, "state_dict": state, "schema": [r for r in full["schema"] if r["group"] + "." + r["name"] not in late],
           "migrated": {"from_version": 3,
                        "defaults": [k for k in full.get("migrated", {}).get("defaults", []) if k not in late]}}
    old["config"] = {k: v for k, v in full["config"].items() if k != "fixed"}
    torch.save(old, tmp_path / "old.pt")
    x = np.sin(2 * np.pi * 220 * np.arange(44100) / 44100)[None] * 0.1
    got = load_model(tmp_path / "old.pt").predict(x, 44100)
    want = load_model("default").predict(x, 44100)
    assert got["eq"]["high_pass_slope_db"] == 12.0 and got["compressor"]["feedback"] == 0.0
    assert want["compressor"]["feedback"] != 0.0  # the bundled model learned its feedback: the test can tell
    for key in KEYS:
        if key not in late:
            group, name = key.split(".")
            assert got[group][name] == want[group][name], key
