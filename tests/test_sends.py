"""Both sends in one convolution equal the two sends rendered apart, on both paths and a long file."""
from __future__ import annotations

import math

import torch

from _dsp import error_db
from dmst.effects.delay import delay
from dmst.effects.reverb import reverb
from dmst.effects.sends import sends

DELAY = dict(time_ms=210.0, feedback=0.5, low_pass_hz=7000.0, high_pass_hz=120.0, spread=0.8, send_db=-8.0)
REVERB = dict(decay_s=1.4, pre_delay_ms=18.0, damping_hz=7000.0, width=0.9, send_db=-12.0)


def _signal(fs, seconds, channels=1):
    t = torch.arange(int(fs * seconds), dtype=torch.float64) / fs
    burst = (torch.sin(2 * math.pi * 3 * t) > 0.6).double()
    return (burst * torch.sin(2 * math.pi * 330 * t)).expand(1, channels, -1).contiguous()


def test_one_convolution_equals_both_sends():
    fs = 22050
    for seconds in (2.0, 30.0):  # one FFT, and the partitioned path of a long file
        x = _signal(fs, seconds, channels=2)
        with torch.no_grad():
            apart = delay(x, fs, **DELAY) + reverb(x, fs, **REVERB)
            together = sends(x, fs, DELAY, REVERB)
        assert error_db(together, apart) < -100.0


def test_gradients_flow_through_both_sends_and_off_is_off():
    fs = 16000
    x = _signal(fs, 1.0)
    d = {k: torch.tensor([v], dtype=torch.float64, requires_grad=True) for k, v in DELAY.items()}
    r = {k: torch.tensor([v], dtype=torch.float64, requires_grad=True) for k, v in REVERB.items()}
    sends(x, fs, d, r).pow(2).mean().backward()
    for name, v in {**{"delay." + k: v for k, v in d.items()}, **{"reverb." + k: v for k, v in r.items()}}.items():
        assert v.grad is not None and math.isfinite(float(v.grad)) and float(v.grad) != 0.0, name
    off = sends(x, fs, {**DELAY, "send_db": -60.0}, {**REVERB, "send_db": -60.0})
    assert off.shape == (1, 2, x.shape[-1]) and torch.count_nonzero(off) == 0
