"""A settings file that dmst wrote is always accepted back, even when the encoder's sigmoid saturates.

With u = 0 or 1 the log-scale mapping lands rounding errors outside the ranges
(``compressor.attack_ms`` 100.00000000000004, ``eq.high_pass_freq_hz`` 15.999999999999998):
predictions are clamped where they are denormalised.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from dmst import schema
from dmst.cli import main
from dmst.encoder.model import DmstModel
from dmst.encoder.network import Encoder


def saturated_model(high: bool) -> DmstModel:
    encoder = Encoder()
    with torch.no_grad():
        encoder.default_logits.fill_(60.0 if high else -60.0)  # sigmoid gives exactly 1 (or 0) in float32
        for p in encoder.head.parameters():
            p.zero_()
    return DmstModel(encoder, name="saturated")


def test_the_unclamped_mapping_does_leave_the_ranges():
    # What the clamp is for (if this ever stops failing, the test below proves less).
    for u in (0.0, 1.0):
        values = schema.denormalize(torch.full((1, schema.NUM_PARAMS), u, dtype=torch.float64))
        assert any(not schema.BY_KEY[k].minimum <= float(v) <= schema.BY_KEY[k].maximum for k, v in values.items())


@pytest.mark.parametrize("high", [True, False])
def test_saturated_predictions_are_inside_the_ranges(high):
    audio = np.random.default_rng(0).standard_normal((1, 44100)).astype(np.float32) * 0.1
    params = saturated_model(high).predict(audio, 44100)
    schema.validate(params)  # raises on any value outside its range
    for p in schema.SCHEMA:
        if p.discrete:  # not predicted: the model's fixed value (the default here), whatever the sigmoid says
            assert params[p.group][p.name] == p.default
            continue
        assert params[p.group][p.name] == pytest.approx(p.maximum if high else p.minimum, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("high", [True, False])
def test_params_written_by_dmst_params_are_accepted_by_render(capsys, tmp_path, high):
    vocal = tmp_path / "vocal.wav"
    sf.write(vocal, np.random.default_rng(1).standard_normal(44100).astype(np.float32) * 0.1, 44100)
    model = tmp_path / "saturated.pt"
    saturated_model(high).save(model)
    assert main(["params", str(vocal), "--model", str(model)]) == 0
    out, err = capsys.readouterr()
    settings = tmp_path / "settings.json"
    settings.write_text(out)
    written = json.loads(out)
    assert written["compressor"]["attack_ms"] == pytest.approx(100.0 if high else 0.1, rel=1e-12)
    code = main(["render", str(vocal), "--params", str(settings), "-o", str(tmp_path / "out.wav"), "--bit-depth", "32f"])
    out, err = capsys.readouterr()
    assert code == 0, err
