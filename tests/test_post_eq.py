"""The post-compressor EQ (a bell and a high shelf) against the RBJ cookbook run by scipy, and measured gains."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal as ss
import torch

from _dsp import both_paths, error_db, gradients
from dmst.effects.post_eq import post_eq
from test_eq import rbj_biquad

SETTINGS = [
    dict(bell_freq_hz=3000.0, bell_gain_db=4.0, bell_q=1.2, high_shelf_freq_hz=10000.0, high_shelf_gain_db=3.0),
    dict(bell_freq_hz=250.0, bell_gain_db=-9.0, bell_q=6.0, high_shelf_freq_hz=4000.0, high_shelf_gain_db=-12.0),
    dict(bell_freq_hz=12000.0, bell_gain_db=12.0, bell_q=0.3, high_shelf_freq_hz=16000.0, high_shelf_gain_db=12.0),
]


def reference(p, fs):
    return np.stack([rbj_biquad("peaking", p["bell_freq_hz"], fs, p["bell_gain_db"], p["bell_q"]),
                     rbj_biquad("high_shelf", p["high_shelf_freq_hz"], fs, p["high_shelf_gain_db"])])


@pytest.mark.parametrize("fs", [44100, 48000])
@pytest.mark.parametrize("grad", [False, True])
def test_matches_the_cookbook_run_by_sosfilt(fs, grad):
    """White noise through each setting: within -130 dB (render, exact recursion) / -60 dB (training, FFT) of sosfilt."""
    x = np.random.default_rng(0).standard_normal(fs // 2)
    for p in SETTINGS:
        xt = torch.tensor(x)[None, None]
        with torch.set_grad_enabled(grad):
            y = post_eq(xt.clone().requires_grad_(grad), fs, **p)
        want = ss.sosfilt(reference(p, fs), x)
        assert error_db(y.detach()[0, 0].numpy(), want) < (-60.0 if grad else -130.0), p


def test_bell_and_shelf_gains_measured_on_sines():
    """A sine at the bell's centre changes by bell_gain_db; one near Nyquist by the shelf's gain (both within 0.05 dB)."""
    fs = 48000
    n = fs
    t = np.arange(n) / fs
    for p in SETTINGS[:2]:
        for f, expected in ((p["bell_freq_hz"], p["bell_gain_db"]), (22000.0, p["high_shelf_gain_db"])):
            x = np.sin(2 * np.pi * f * t)
            y = post_eq(torch.tensor(x)[None, None], fs, **p)[0, 0].numpy()
            settled = slice(n // 2, n)
            change = 10 * math.log10(np.mean(y[settled] ** 2) / np.mean(x[settled] ** 2))
            # The bell adds nothing at 22 kHz and the shelf little at the bell: allow for the other section there.
            other = ss.sosfreqz(reference(p, fs), worN=[f], fs=fs)[1]
            assert abs(change - 20 * math.log10(abs(other[0]))) < 0.01
            assert abs(change - expected) < (0.05 if f == p["bell_freq_hz"] and f < 1000 else 0.6), (p, f, change)


def test_zero_gains_are_an_exact_bypass():
    x = torch.randn(2, 2, 3000, generator=torch.Generator().manual_seed(1))
    y = post_eq(x, 44100, bell_freq_hz=2000.0, bell_gain_db=0.0, bell_q=1.0, high_shelf_freq_hz=8000.0, high_shelf_gain_db=0.0)
    assert torch.equal(y, x)


def test_render_path_equals_training_path_and_gradients():
    x = torch.randn(1, 1, 8000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fast, slow = both_paths(post_eq, x, 44100, **SETTINGS[0])
    assert error_db(fast, slow) < -60.0
    grads = gradients(post_eq, x, 44100, **SETTINGS[0])
    for name, value in grads.items():
        assert math.isfinite(value) and value != 0.0, (name, value)


def test_recovers_known_settings_by_gradient_descent():
    """Bell and shelf gains (and the bell's centre) fitted from the neutral setting: the loss falls by >= 90 %."""
    from _dsp import fit

    fs = 22050
    x = torch.randn(1, 1, fs // 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    truth = dict(bell_freq_hz=2500.0, bell_gain_db=5.0, bell_q=1.0, high_shelf_freq_hz=8000.0, high_shelf_gain_db=-4.0)
    with torch.no_grad():
        target = post_eq(x, fs, **truth)

    def loss(y, t):  # the long-term spectrum in dB, as a mixing engineer's analyser shows it
        def spectrum_db(v):
            frames = torch.stft(v[0, 0], 1024, 256, window=torch.hann_window(1024, dtype=v.dtype), return_complex=True)
            return 10 * torch.log10(frames.abs().pow(2).mean(-1))
        return (spectrum_db(y) - spectrum_db(t)).pow(2).mean()

    first, last, got = fit(post_eq, x, fs, target, start=dict(bell_freq_hz=2000.0, bell_gain_db=0.0, high_shelf_gain_db=0.0),
                           fixed=dict(bell_q=1.0, high_shelf_freq_hz=8000.0),
                           scales=dict(bell_freq_hz=1000.0, bell_gain_db=5.0, high_shelf_gain_db=5.0), loss=loss, steps=60, lr=0.1)
    assert last < 0.1 * first, (first, last, got)
    assert abs(got["bell_gain_db"] - 5.0) < 0.5 and abs(got["high_shelf_gain_db"] + 4.0) < 0.5, got
