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


# ---------------------------------------------------------------------------
# The tail a render keeps (console.render(tail=True), what dmst render does)
# ---------------------------------------------------------------------------

def _console_settings(**changes):
    from dmst import schema

    values = {k: float(v) for k, v in schema.flatten(schema.default_dict()).items()}
    values.update({"delay.send_db": -60.0, "reverb.send_db": -60.0, "limiter.ceiling_dbtp": 0.0}, **changes)
    return {k: torch.tensor([v]) for k, v in values.items()}


def _click_render(fs, seconds, tail, **changes):
    """The console's output for ``seconds`` of silence ending in a click (its last sample; staging fixed at 0 dB)."""
    from dmst.console import render

    x = torch.zeros(1, 1, int(seconds * fs))
    x[0, 0, -1] = 0.5
    with torch.no_grad():
        return render(x, fs, _console_settings(**changes), staging_db=torch.zeros(1), output_channels=2, tail=tail)[0]


def _frame_levels_db(y, fs, frame_ms=10.0):
    w = int(fs * frame_ms / 1000)
    mono = y.double().pow(2).mean(0)
    frames = mono[: mono.numel() // w * w].reshape(-1, w).mean(1)
    return 10 * torch.log10(frames.clamp_min(1e-30))


def test_a_reverb_send_runs_on_past_the_input_until_it_has_decayed_80_db():
    fs, seconds = 44100, 0.5
    y = _click_render(fs, seconds, True, **{"reverb.send_db": -6.0, "reverb.decay_s": 1.0, "reverb.damping_hz": 20000.0,
                                            "reverb.pre_delay_ms": 20.0})
    assert y.shape[-1] > seconds * fs + 1.0 * fs  # at least its RT60 longer
    level = _frame_levels_db(y, fs)
    start = level[int(seconds * fs / 441) + 3]  # the return 10-20 ms after its onset (the click itself is over)
    drop = float(start - level[-1])
    # It ends once decayed by 80 dB: its slowest band has (the whole return a little more, as its top octaves decay
    # faster even at this damping); a 10 ms frame of noise scatters a dB or two.
    assert 77.0 < drop < 90.0, drop
    cut = _click_render(fs, seconds, False, **{"reverb.send_db": -6.0, "reverb.decay_s": 1.0, "reverb.damping_hz": 20000.0,
                                               "reverb.pre_delay_ms": 20.0})
    assert cut.shape[-1] == int(seconds * fs)  # without the tail (training): the input's length


def test_a_delay_send_keeps_every_echo_down_to_80_db():
    fs, seconds, time_ms, feedback = 44100, 0.3, 200.0, 0.5
    y = _click_render(fs, seconds, True, **{"delay.send_db": -6.0, "delay.time_ms": time_ms, "delay.feedback": feedback,
                                            "delay.low_pass_hz": 20000.0,
                                            "delay.high_pass_hz": 20.0, "delay.spread": 0.0})
    click, period = int(seconds * fs) - 1, int(time_ms * fs / 1000)
    peaks = []
    for k in range(1, 1000):
        at = click + k * period
        if at + 50 > y.shape[-1]:
            break
        peaks.append(float(y[0, at - 50: at + 50].double().pow(2).sum()))  # each echo's energy
    levels = 10 * torch.log10(torch.tensor(peaks) / peaks[0])
    assert -86.0 < float(levels[-1]) < -74.0, levels  # the last echo kept is the one near -80 dB
    assert y.shape[-1] - (click + len(peaks) * period) < period  # and the output ends within one period after it


def test_sends_off_keep_the_input_length_and_samples_exactly():
    fs = 44100
    assert torch.equal(_click_render(fs, 0.5, True), _click_render(fs, 0.5, False))
    assert _click_render(fs, 0.5, True).shape[-1] == int(0.5 * fs)
