"""The reverb send against Schroeder's RT60, measured onsets and its stereo image.

RT60: Schroeder backward integration of the impulse response (energy decay curve),
in the 1 kHz octave band (scipy Butterworth band-pass), a straight line fitted
between -5 and -35 dB (T30) and extrapolated to 60 dB, one response per setting.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from _dsp import both_paths, error_db, fit, gradients
from dmst.effects.reverb import reverb

UNDAMPED = 20000.0


def impulse_response(fs, seconds, **params):
    x = torch.zeros(1, 1, int(seconds * fs), dtype=torch.float64)
    x[0, 0, 0] = 1.0
    return reverb(x, fs, **params)[0].numpy()


def schroeder_rt60(h, fs, band=(707.0, 1414.0)):
    sos = scipy.signal.butter(4, band, "bandpass", fs=fs, output="sos")
    e = scipy.signal.sosfilt(sos, h) ** 2
    edc = np.cumsum(e[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    i5, i35 = int(np.argmax(edc_db < -5)), int(np.argmax(edc_db < -35))
    slope = np.polyfit(np.arange(i5, i35) / fs, edc_db[i5:i35], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("fs", [44100, 48000])
def test_rt60_by_schroeder_integration_within_10_percent(fs):
    for decay_s in (0.3, 1.0, 4.0):
        h = impulse_response(fs, 0.75 * decay_s + 0.1, decay_s=decay_s, pre_delay_ms=0.0, damping_hz=UNDAMPED, width=1.0,
                             send_db=0.0)
        for channel in h:
            measured = schroeder_rt60(channel, fs)
            assert abs(measured - decay_s) < 0.1 * decay_s, (decay_s, measured)


def test_damping_shortens_the_high_frequency_decay():
    """damping_hz = 4 kHz: in third-octave bands at 1, 4 and 8 kHz the RT60 is decay_s / (1 + (f / 4 kHz)^2), within 15 %."""
    fs = 44100
    h = impulse_response(fs, 1.6, decay_s=2.0, pre_delay_ms=0.0, damping_hz=4000.0, width=0.0, send_db=0.0)[0]
    for f in (1000.0, 4000.0, 8000.0):  # octave centres, where the model sets the decay (it interpolates between)
        expected = 2.0 / (1 + (f / 4000.0) ** 2)
        measured = schroeder_rt60(h, fs, (f / 2 ** (1 / 6), f * 2 ** (1 / 6)))
        assert abs(measured - expected) < 0.15 * expected, (f, measured, expected)


@pytest.mark.parametrize("pre_delay_ms", [0.0, 12.3, 80.0, 200.0])
def test_pre_delay_within_1_ms(pre_delay_ms):
    fs = 48000
    h = impulse_response(fs, 0.6, decay_s=0.5, pre_delay_ms=pre_delay_ms, damping_hz=UNDAMPED, width=1.0, send_db=0.0)
    envelope = np.abs(h).max(axis=0)
    onset = int(np.argmax(envelope > 0.05 * envelope.max()))  # 26 dB under the response's peak
    assert abs(onset / fs * 1000 - pre_delay_ms) < 1.0, onset / fs * 1000


def test_width_zero_gives_identical_channels_and_one_decorrelated_ones():
    fs = 44100
    x = torch.randn(1, 2, fs // 2, generator=torch.Generator().manual_seed(0))
    y = reverb(x, fs, decay_s=1.0, pre_delay_ms=10.0, damping_hz=8000.0, width=0.0, send_db=0.0)[0]
    assert torch.equal(y[0], y[1])
    h = impulse_response(fs, 1.0, decay_s=1.0, pre_delay_ms=0.0, damping_hz=8000.0, width=1.0, send_db=0.0)
    assert abs(np.corrcoef(h)[0, 1]) < 0.05


def test_send_at_its_minimum_is_exactly_off_and_level_is_the_send():
    fs = 44100
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 3 * fs, generator=g, dtype=torch.float64)
    assert torch.count_nonzero(reverb(x, fs, decay_s=1.0, pre_delay_ms=0.0, damping_hz=8000.0, width=1.0, send_db=-60.0)) == 0
    # Unit-energy response: steady white noise comes back at the send level (measured after the build-up).
    y = reverb(x, fs, decay_s=0.5, pre_delay_ms=0.0, damping_hz=UNDAMPED, width=1.0, send_db=-12.0)[0].numpy()
    level = 10 * np.log10(np.mean(y[:, fs:] ** 2) / np.mean(x[0, 0].numpy() ** 2))
    assert abs(level + 12.0) < 0.5


def test_is_deterministic():
    fs = 22050
    x = torch.randn(1, 1, fs, generator=torch.Generator().manual_seed(2))
    a = reverb(x, fs, decay_s=1.2, pre_delay_ms=20.0, damping_hz=6000.0, width=0.8, send_db=-6.0)
    b = reverb(x, fs, decay_s=1.2, pre_delay_ms=20.0, damping_hz=6000.0, width=0.8, send_db=-6.0)
    assert torch.equal(a, b)


def _voice(fs=22050, n=None):
    n = n or fs // 2
    t = torch.arange(n, dtype=torch.float64) / fs
    env = torch.exp(-t * 30) * (t < 0.1)
    return (env * sum(torch.sin(2 * math.pi * 220 * k * t) / k for k in range(1, 6))).reshape(1, 1, -1)


def test_render_path_equals_training_path():
    x = _voice(44100).float()
    fast, slow = both_paths(reverb, x, 44100, decay_s=1.5, pre_delay_ms=15.0, damping_hz=6000.0, width=0.7, send_db=-6.0)
    assert error_db(fast, slow) < -100.0


def test_gradients_reach_every_parameter():
    grads = gradients(reverb, _voice(), 22050, decay_s=0.8, pre_delay_ms=15.3, damping_hz=3000.0, width=0.6, send_db=-6.0,
                      loss=lambda y: (y[:, 0, :2000] ** 2).mean() + (y[:, 0] ** 2).mean() + 0.3 * (y[:, 1] ** 2).mean())
    for name, value in grads.items():
        assert math.isfinite(value) and value != 0.0, (name, value)


def test_recovers_known_settings_by_gradient_descent():
    """Decay, send level and width fitted from other values: the loss (the return's energy envelope in dB) falls >= 90 %."""
    fs = 16000
    x = _voice(fs, fs)
    fixed = dict(pre_delay_ms=20.0, damping_hz=6000.0)
    with torch.no_grad():
        target = reverb(x, fs, decay_s=0.8, send_db=-8.0, width=0.7, **fixed)

    def envelope_db(y):
        frames = y[0, :, : y.shape[-1] // 160 * 160].reshape(2, -1, 160)
        mid, side = frames.sum(0), frames[0] - frames[1]
        return torch.cat([10 * torch.log10(v.pow(2).mean(-1) + 1e-10) for v in (mid, side)])

    first, last, got = fit(reverb, x, fs, target, start=dict(decay_s=0.4, send_db=-16.0, width=0.3), fixed=fixed,
                           scales=dict(decay_s=1.0, send_db=10.0, width=1.0),
                           loss=lambda y, t: (envelope_db(y) - envelope_db(t)).pow(2).mean(), steps=60, lr=0.05)
    assert last < 0.1 * first, (first, last, got)


@pytest.mark.parametrize("fs, pre_delay_ms", [(44100, 0.0), (44100, 25.0), (48000, 25.3), (48000, 200.7)])
def test_response_ends_on_its_decay_line(fs, pre_delay_ms):
    """The impulse response's last 50 ms lie on the straight (dB) decay line fitted to the 400 ms before
    them, not above it: nothing wraps around to the end (the fractional pre-delay's ringing, a tone at Nyquist)."""
    from dmst.effects.reverb import reverb_response

    h = reverb_response(10**7, fs, torch.tensor([1.5]), torch.tensor([6000.0]), torch.tensor([0.8]),
                        torch.tensor([pre_delay_ms]), torch.float64)[0].numpy()
    window = fs // 100  # 10 ms
    for channel in h:
        frames = channel[: channel.size // window * window].reshape(-1, window)
        level = 10 * np.log10((frames ** 2).mean(axis=1))
        fit_frames, tail_frames = 40, 5
        t = np.arange(level.size)
        line = np.polyfit(t[-fit_frames - tail_frames:-tail_frames], level[-fit_frames - tail_frames:-tail_frames], 1)
        assert line[0] < 0  # it is decaying
        excess = level[-tail_frames:] - np.polyval(line, t[-tail_frames:])
        assert excess.max() < 3.0, excess  # a 10 ms frame of noise scatters by a dB or two
        assert level[-1] < level.max() - 80.0  # and it ends where it has decayed by 80 dB
