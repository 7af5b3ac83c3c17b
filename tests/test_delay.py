"""The delay send: echo times, the fall per repeat, the off position, the ping-pong spread.

References: echo times are the positions of the echoes' peaks of an impulse
(interpolated by a parabola through the three samples around each peak); the fall per
repeat is the RMS of each echo of a 1 kHz tone burst, where the loop filters at their
extremes (20 Hz high-pass, 20 kHz low-pass) are flat to 0.001 dB, against
20 log10(feedback).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _dsp import both_paths, error_db, fit, gradients, rms_db
from dmst.effects.delay import delay

FLAT = dict(low_pass_hz=20000.0, high_pass_hz=20.0)


def peak_position(y: np.ndarray, around: int, radius: int = 30) -> float:
    seg = np.abs(y[around - radius: around + radius + 1])
    i = int(np.argmax(seg))
    a, b, c = seg[i - 1], seg[i], seg[i + 1]
    return around - radius + i + 0.5 * (a - c) / (a - 2 * b + c)


@pytest.mark.parametrize("fs", [44100, 48000])
@pytest.mark.parametrize("time_ms", [20.0, 123.4, 375.0, 1000.0])
def test_echo_times_within_one_sample(fs, time_ms):
    n = int(fs * (3.5 * time_ms / 1000)) + 400
    x = torch.zeros(1, 1, n, dtype=torch.float64)
    x[0, 0, 200] = 1.0
    y = delay(x, fs, time_ms=time_ms, feedback=0.5, spread=0.0, send_db=0.0, **FLAT)[0, 0].numpy()
    d = time_ms * fs / 1000
    for k in (1, 2, 3):
        got = peak_position(y, 200 + int(round(k * d)))
        assert abs(got - (200 + k * d)) < 1.0, (k, got - 200, k * d)


@pytest.mark.parametrize("feedback", [0.2, 0.5, 0.9])
def test_each_repeat_falls_by_the_feedback(feedback):
    fs = 44100
    d = int(0.1 * fs)
    n = 8 * d
    burst = int(0.02 * fs)  # 20 ms of 1 kHz (a Hann window keeps its spectrum near 1 kHz)
    x = np.zeros(n)
    x[:burst] = np.sin(2 * np.pi * 1000 * np.arange(burst) / fs) * np.hanning(burst)
    y = delay(torch.tensor(x)[None, None], fs, time_ms=100.0, feedback=feedback, spread=0.0, send_db=0.0, **FLAT)[0, 0].numpy()
    levels = [rms_db(y[k * d: k * d + burst + 200]) for k in range(1, 7)]
    assert abs(levels[0] - rms_db(x[: burst + 200])) < 0.05  # the first echo at the send's level
    for a, b in zip(levels, levels[1:]):
        assert abs((b - a) - 20 * math.log10(feedback)) < 0.5, (a, b)


def test_send_at_its_minimum_is_exactly_off():
    x = torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(0))
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            y = delay(x, 44100, time_ms=100.0, feedback=0.5, spread=1.0, send_db=-60.0, **FLAT)
        assert y.shape == (2, 2, 4000) and torch.count_nonzero(y) == 0
    y = delay(x, 44100, time_ms=100.0, feedback=0.5, spread=1.0, send_db=-59.8, **FLAT)  # just above the off zone (-60 + 0.1 dB)
    assert torch.count_nonzero(y) > 0


def test_spread_zero_is_mono_and_one_is_ping_pong():
    fs = 44100
    x = torch.zeros(1, 2, fs, dtype=torch.float64)
    x[0, :, 100] = 1.0  # a stereo send is summed to mono
    y = delay(x, fs, time_ms=100.0, feedback=0.5, spread=0.0, send_db=0.0, **FLAT)[0].numpy()
    assert np.array_equal(y[0], y[1])
    y = delay(x, fs, time_ms=100.0, feedback=0.5, spread=1.0, send_db=0.0, **FLAT)[0].numpy()
    d = int(0.1 * fs)
    for k in (1, 2, 3, 4):
        window = slice(100 + k * d - 100, 100 + k * d + 100)
        loud, quiet = (0, 1) if k % 2 else (1, 0)  # the first echo left, then right, ...
        assert rms_db(y[quiet, window]) < rms_db(y[loud, window]) - 60, k
        # Constant power: the panned echo carries both centred channels' energy.
        mono = delay(x, fs, time_ms=100.0, feedback=0.5, spread=0.0, send_db=0.0, **FLAT)[0].numpy()
        assert rms_db(y[loud, window]) == pytest.approx(rms_db(mono[0, window]) + 10 * math.log10(2), abs=0.01)


def test_loop_filters_shape_each_repeat():
    """A 4 kHz low-pass in the loop: each repeat of a 10 kHz burst loses the filter's attenuation once more."""
    fs = 44100
    d = int(0.1 * fs)
    burst = int(0.02 * fs)
    x = np.zeros(5 * d)
    x[:burst] = np.sin(2 * np.pi * 10000 * np.arange(burst) / fs) * np.hanning(burst)
    y = delay(torch.tensor(x)[None, None], fs, time_ms=100.0, feedback=0.9, low_pass_hz=4000.0, high_pass_hz=20.0,
              spread=0.0, send_db=0.0)[0, 0].numpy()
    w = 2 * np.pi * 10000 / fs
    # Butterworth (bilinear, pre-warped) magnitude at 10 kHz: 1 / sqrt(1 + (tan(w/2) / tan(wc/2))^4).
    attenuation = -10 * math.log10(1 + (math.tan(w / 2) / math.tan(np.pi * 4000 / fs)) ** 4)
    levels = [rms_db(y[k * d: k * d + burst + 400]) for k in (1, 2, 3)]
    for a, b in zip(levels, levels[1:]):
        assert abs((b - a) - (20 * math.log10(0.9) + attenuation)) < 0.5


def _voice(fs=22050, n=None):
    n = n or fs // 2
    t = torch.arange(n, dtype=torch.float64) / fs
    env = torch.exp(-t * 20) * (t < 0.1)
    return (env * sum(torch.sin(2 * math.pi * 220 * k * t) / k for k in range(1, 6))).reshape(1, 1, -1)


def test_render_path_equals_training_path():
    x = _voice(44100).float()
    fast, slow = both_paths(delay, x, 44100, time_ms=180.0, feedback=0.6, low_pass_hz=6000.0, high_pass_hz=150.0,
                            spread=0.7, send_db=-6.0)
    assert error_db(fast, slow) < -100.0


def test_gradients_reach_every_parameter():
    grads = gradients(delay, _voice(), 22050, time_ms=180.3, feedback=0.6, low_pass_hz=6000.0, high_pass_hz=150.0,
                      spread=0.7, send_db=-6.0, loss=lambda y: (y[:, 0] ** 2).mean() + 0.3 * (y[:, 1] ** 2).mean())
    for name, value in grads.items():
        assert math.isfinite(value) and value != 0.0, (name, value)


def test_recovers_known_settings_by_gradient_descent():
    """Feedback, send level and spread fitted from other values, then the delay time from 8 ms off: loss falls >= 90 %."""
    fs = 22050
    x = _voice(fs)
    truth = dict(time_ms=150.0, feedback=0.5, low_pass_hz=8000.0, high_pass_hz=100.0, spread=0.6, send_db=-6.0)
    with torch.no_grad():
        target = delay(x, fs, **truth)

    def loss(y, t):
        return (y - t).pow(2).mean()

    first, last, got = fit(delay, x, fs, target, start=dict(feedback=0.2, send_db=-12.0, spread=0.2),
                           fixed=dict(time_ms=150.0, low_pass_hz=8000.0, high_pass_hz=100.0),
                           scales=dict(feedback=1.0, send_db=10.0, spread=1.0), loss=loss, steps=60, lr=0.05)
    assert last < 0.1 * first, (first, last, got)

    def smooth(y):  # the delay time is found on the echoes' envelopes: a waveform loss has local minima every period
        frames = y.pow(2).sum(1)[0, : y.shape[-1] // 64 * 64].reshape(-1, 64).mean(-1)
        return torch.nn.functional.avg_pool1d(frames[None, None], 9, 1, 4)[0, 0]

    first, last, got = fit(delay, x, fs, target, start=dict(time_ms=158.0), fixed={k: v for k, v in truth.items() if k != "time_ms"},
                           scales=dict(time_ms=10.0), loss=lambda y, t: (smooth(y) - smooth(t)).pow(2).mean(), steps=60, lr=0.05)
    assert last < 0.1 * first and abs(got["time_ms"] - 150.0) < 1.0, (first, last, got)


def test_long_signals_use_partitioned_convolution_equal_to_scipy():
    """A 25 s send (the partitioned overlap-add path) against scipy's direct FFT convolution of the same response."""
    import scipy.signal as ss

    from dmst.effects._sends import PARTITIONED_MIN_LENGTH, convolve_mono

    fs = 22050
    n = 25 * fs
    assert n >= PARTITIONED_MIN_LENGTH
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 2, n)))
    h = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 2, 3 * fs)))
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            y = convolve_mono(x.clone().requires_grad_(grad), h).detach().numpy()
        for c in range(2):
            want = ss.fftconvolve(x[0].mean(0).numpy(), h[0, c].numpy())[:n]
            assert error_db(y[0, c], want) < -250.0
