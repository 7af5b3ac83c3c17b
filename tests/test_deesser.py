"""The split-band de-esser against its static curve, its band split and measured time constants.

Static curve (numpy, here): the sidechain band's peak level L (dBFS) is pulled down to
the threshold T, by at most the range: gain = max(-range, min(0, T - L)) dB.  The
sidechain is a band-pass with 0 dB gain at ``frequency_hz``, so a tone there is
detected at its own peak level.  Independent references: the tone levels are measured
by FFT on the output; time constants as 63.2 % crossings of the applied gain.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _dsp import both_paths, crossing_time, error_db, fit, gradients
from dmst.effects.deesser import deesser

FS = 44100


def analytic_gain_db(level_db, threshold_db, range_db):
    return max(-range_db, min(0.0, threshold_db - level_db))


def tone(f, level_db, n, fs=FS):
    return 10 ** (level_db / 20) * np.sin(2 * np.pi * f * np.arange(n) / fs)


def level_at(y, f, fs=FS):
    """Amplitude (dB) of the component at ``f`` (a whole number of periods in ``y``: one FFT bin, Hann-free)."""
    spectrum = np.abs(np.fft.rfft(y)) * 2 / len(y)
    return 20 * np.log10(spectrum[int(round(f * len(y) / fs))])


CASES = [(-30.0, 6.0, -20.0), (-30.0, 12.0, -20.0), (-24.0, 20.0, -6.0), (-40.0, 10.0, -35.0), (-20.0, 15.0, -3.0)]


def test_gain_reduction_on_a_7khz_burst_follows_the_static_curve():
    """7 kHz tone bursts above the threshold: the high band's gain (applied, and measured on the output's 7 kHz) within 0.5 dB."""
    n = FS // 2
    burst = n // 2
    rows = [(t, r, lev) for t, r, lev in CASES]
    x = []
    for _, _, lev in rows:
        sig = np.zeros(n)
        sig[burst - FS // 10: burst + FS // 5] = tone(7000.0, lev, FS // 10 + FS // 5)
        x.append(sig)
    xt = torch.tensor(np.stack(x)[:, None])
    thr, rng, _ = (torch.tensor(c, dtype=torch.float64) for c in zip(*rows))
    y, g = deesser(xt, FS, frequency_hz=7000.0, threshold_db=thr, range_db=rng, attack_ms=1.0, release_ms=60.0,
                   return_gain=True)
    settled = slice(burst, burst + FS // 10)  # 100 ms, from 100 ms into the burst: 100 attack constants
    for i, (threshold, range_db, level) in enumerate(rows):
        expected = analytic_gain_db(level, threshold, range_db)
        applied = g[i, settled].numpy()
        assert np.abs(applied - expected).max() < 0.5, (threshold, range_db, level, applied.min(), applied.max())
        measured = level_at(y[i, 0, settled].numpy(), 7000.0) - level_at(x[i][settled], 7000.0)
        assert abs(measured - expected) < 0.5, (threshold, range_db, level, measured, expected)


def test_content_below_the_band_is_untouched():
    """250 Hz-2 kHz tones under a 7 kHz burst cut by 12 dB: each within 0.1 dB of its level without the de-esser."""
    n = FS // 2  # 0.5 s: whole periods of every tone (frequencies on multiples of 2 Hz)
    lows = (250.0, 700.0, 1500.0, 2000.0)
    x = sum(tone(f, -20.0, n) for f in lows) + tone(7000.0, -6.0, n)
    y, g = deesser(torch.tensor(x)[None, None], FS, frequency_hz=7000.0, threshold_db=-30.0, range_db=12.0,
                   attack_ms=1.0, release_ms=60.0, return_gain=True)
    assert float(g[0, FS // 10:].max()) < -11.9  # the band is being cut while we look
    for f in lows:
        change = level_at(y[0, 0].numpy(), f) - level_at(x, f)
        assert abs(change) < 0.1, (f, change)
    # Alone, loud low content (each tone at -10 dBFS) does not trigger the sidechain.
    fade = np.minimum(1.0, np.arange(n) / (0.02 * FS))  # a 20 ms fade-in: no switch-on click in the band
    low = fade * sum(tone(f, -10.0, n) for f in lows)
    _, g = deesser(torch.tensor(low)[None, None], FS, frequency_hz=7000.0, threshold_db=-30.0, range_db=12.0,
                   attack_ms=1.0, release_ms=60.0, return_gain=True)
    assert float(g.min()) > -0.05


@pytest.mark.parametrize("attack_ms,release_ms", [(0.5, 20.0), (2.0, 60.0), (5.0, 150.0)])
def test_attack_and_release_within_15_percent(attack_ms, release_ms):
    """7 kHz tone stepping -50 -> -10 -> -50 dBFS through a -30 dBFS threshold: 63 % of the gain change in attack_ms / release_ms."""
    n_pre, n_loud, n_post = FS // 5, FS // 2, FS
    x = np.concatenate([tone(7000.0, -50.0, n_pre), tone(7000.0, -10.0, n_loud), tone(7000.0, -50.0, n_post)])
    _, g = deesser(torch.tensor(x)[None, None], FS, frequency_hz=7000.0, threshold_db=-30.0, range_db=12.0,
                   attack_ms=attack_ms, release_ms=release_ms, return_gain=True)
    g = g[0].numpy()
    up, down = n_pre, n_pre + n_loud
    before, settled, final = g[up - 100:up].mean(), g[down - 500:down].mean(), g[-500:].mean()
    assert before == pytest.approx(0.0, abs=0.01) and settled == pytest.approx(-12.0, abs=0.1)
    assert final == pytest.approx(0.0, abs=0.1)
    attack = crossing_time(g, up, before + 0.632 * (settled - before), rising=False, fs=FS)
    release = crossing_time(g, down, settled + 0.632 * (final - settled), rising=True, fs=FS)
    assert abs(attack * 1000 - attack_ms) < 0.15 * attack_ms, attack * 1000
    assert abs(release * 1000 - release_ms) < 0.15 * release_ms, release * 1000


def test_range_zero_is_an_exact_bypass():
    x = torch.randn(2, 2, 5000, generator=torch.Generator().manual_seed(1)) * 0.5
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            y = deesser(x, FS, frequency_hz=6000.0, threshold_db=-40.0, range_db=0.0, attack_ms=1.0, release_ms=50.0)
        assert torch.equal(y.detach(), x)


def _sibilant(fs=FS, n=None):
    """Voice-like 200 Hz harmonics with two hissy bursts (noise band-limited around 6-8 kHz)."""
    n = n or fs // 2
    g = torch.Generator().manual_seed(3)
    t = torch.arange(n, dtype=torch.float64) / fs
    voice = sum(0.2 / k * torch.sin(2 * math.pi * 200 * k * t) for k in range(1, 8))
    hiss = torch.randn(n, generator=g, dtype=torch.float64)
    hiss = torch.fft.irfft(torch.fft.rfft(hiss) * ((torch.fft.rfftfreq(n, 1 / fs) - 7000).abs() < 1500), n=n)
    gate = ((t > 0.1) & (t < 0.2)) | ((t > 0.3) & (t < 0.36))
    return (voice + 0.3 * hiss / hiss.abs().max() * gate).reshape(1, 1, -1)


def test_render_path_equals_training_path():
    """Compiled recursions (band-pass, zero-phase split, ballistics) vs the FFT/torchcomp path: under -90 dB re the output."""
    for dtype in (torch.float32, torch.float64):
        x = _sibilant().to(dtype)
        fast, slow = both_paths(deesser, x, FS, frequency_hz=6500.0, threshold_db=-30.0, range_db=10.0, attack_ms=1.0,
                                release_ms=60.0)
        assert error_db(fast, slow) < (-90.0 if dtype == torch.float64 else -80.0), error_db(fast, slow)


def test_gradients_reach_every_parameter():
    grads = gradients(deesser, _sibilant(), FS, frequency_hz=6500.0, threshold_db=-30.0, range_db=10.0, attack_ms=1.0,
                      release_ms=60.0)
    for name, value in grads.items():
        assert math.isfinite(value) and value != 0.0, (name, value)


def test_recovers_known_settings_by_gradient_descent():
    """Threshold and range fitted from other starts (frequency, times fixed): the spectral loss falls by >= 90 %."""
    fs = 22050
    x = _sibilant(fs, int(0.4 * fs))
    fixed = dict(frequency_hz=6000.0, attack_ms=1.0, release_ms=60.0)
    with torch.no_grad():
        target = deesser(x, fs, threshold_db=-32.0, range_db=9.0, **fixed)

    def loss(y, t):
        def spec(v):
            return torch.stft(v[0, 0], 512, 128, window=torch.hann_window(512, dtype=v.dtype), return_complex=True).abs()
        return (spec(y) - spec(t)).pow(2).mean()

    first, last, got = fit(deesser, x, fs, target, start=dict(threshold_db=-20.0, range_db=3.0), fixed=fixed,
                           scales=dict(threshold_db=10.0, range_db=10.0), loss=loss, steps=40, lr=0.1)
    assert last < 0.1 * first, (first, last, got)
