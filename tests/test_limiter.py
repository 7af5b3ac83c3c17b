"""The true-peak limiter on worst-case material, measured by two true-peak meters.

Worst cases: full-scale square waves (their band-limited reconstruction overshoots
the samples, Gibbs), and the classic inter-sample-peak signal, a sine at fs/4 with 45
degree phase, scaled so its samples peak at 0 dBFS: its true peak is +3.01 dBTP.
Meters: dmst's own (ITU-R BS.1770-4 annex 2 style, 4x), the one the ceiling is defined
by; and, on band-limited worst cases (every component under 0.45 fs), an independent
ideal one: band-limited (FFT) interpolation at 8x of the periodic signal.  On material
with energy right up to Nyquist (naive square waves, clipped noise) interpolators
disagree by design (an ideal one reads up to +1 dB over a 4x meter's filter, whose
pass band ends below Nyquist), so there only the defining meter is asked.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _dsp import both_paths, error_db, gradients
from dmst.audio_io import true_peak_dbfs
from dmst.effects.limiter import limiter


def ideal_true_peak_db(y, factor: int = 8) -> float:
    """Peak of the band-limited (periodic, FFT zero-padding) interpolation of ``y`` at ``factor`` x."""
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[-1]
    spectrum = np.fft.rfft(y, axis=-1)
    padded = np.zeros(y.shape[:-1] + (factor * n // 2 + 1,), complex)
    padded[..., : spectrum.shape[-1]] = spectrum
    if n % 2 == 0:
        padded[..., n // 2] *= 0.5  # the Nyquist bin is shared by the positive and negative frequencies
    return 20 * math.log10(np.abs(np.fft.irfft(padded, n=factor * n, axis=-1) * factor).max())


def band_limited_cases(fs):
    """Periodic in a whole number of periods (so the FFT interpolation is exact): a band-limited square (odd
    harmonics under 0.45 fs, Gibbs overshoot) and the fs/4 sine at 45 degrees."""
    n = fs // 2 - (fs // 2) % 40
    t = np.arange(n)
    f0 = fs / 40  # 40 samples a period
    square = sum(np.sin(2 * np.pi * k * f0 * t / fs) / k for k in range(1, 40, 2) if k * f0 < 0.45 * fs)
    isp = np.sin(2 * np.pi * t / 4 + np.pi / 4)
    return {"band-limited square": square / np.abs(square).max(), "fs/4 sine at 45 degrees": isp / np.abs(isp).max()}


def worst_cases(fs):
    n = fs // 2
    t = np.arange(n) / fs
    isp = np.sin(2 * np.pi * fs / 4 * t + np.pi / 4)
    cases = {
        "square 997 Hz": np.sign(np.sin(2 * np.pi * 997 * t + 0.1)),
        "square 4.1 kHz": np.sign(np.sin(2 * np.pi * 4100 * t + 0.1)),
        "fs/4 sine at 45 degrees": isp / np.abs(isp).max(),
        "stereo: square left, inter-sample peaks right": None,
    }
    cases["stereo: square left, inter-sample peaks right"] = np.stack([cases["square 997 Hz"], cases["fs/4 sine at 45 degrees"]])
    g = np.random.default_rng(0)
    burst = np.clip(g.standard_normal(n) * 0.5, -1, 1) * (np.arange(n) % (fs // 10) < fs // 50)
    cases["clipped noise bursts"] = burst
    return {k: np.atleast_2d(v) for k, v in cases.items()}


@pytest.mark.parametrize("fs", [44100, 48000])
@pytest.mark.parametrize("ceiling", [-1.0, -0.1, -6.0])
def test_true_peak_stays_under_the_ceiling_on_worst_case_material(fs, ceiling):
    for name, x in worst_cases(fs).items():
        assert true_peak_dbfs(x, fs) > ceiling + 0.9, name  # each case is over the ceiling to start with
        y = limiter(torch.tensor(x, dtype=torch.float32)[None], fs, ceiling_dbtp=ceiling, release_ms=50.0)[0].numpy()
        assert true_peak_dbfs(y, fs) <= ceiling + 0.1, (name, true_peak_dbfs(y, fs))
    for name, x in band_limited_cases(fs).items():
        x = x * 10 ** ((3.0 - ideal_true_peak_db(x)) / 20)  # +3 dBTP (float samples may exceed 1)
        y = limiter(torch.tensor(x, dtype=torch.float32)[None, None], fs, ceiling_dbtp=ceiling, release_ms=50.0)[0].numpy()
        assert true_peak_dbfs(y, fs) <= ceiling + 0.1, (name, true_peak_dbfs(y, fs))
        assert ideal_true_peak_db(y[..., 4000:-4000]) <= ceiling + 0.1, (name, ideal_true_peak_db(y))


@pytest.mark.parametrize("fs", [44100, 48000])
def test_transparent_3_db_under_the_ceiling(fs):
    """Worst-case material scaled to a true peak 3 dB under the ceiling comes out unchanged (within 0.1 dB: here exactly)."""
    for name, x in worst_cases(fs).items():
        x = x * 10 ** ((-1.0 - 3.0 - true_peak_dbfs(x, fs)) / 20)
        xt = torch.tensor(x, dtype=torch.float32)[None]
        y = limiter(xt, fs, ceiling_dbtp=-1.0, release_ms=100.0)
        assert torch.equal(y, xt), name


def test_output_is_aligned_with_the_input():
    """Lookahead without latency: a tone under the ceiling with one loud click keeps every sample away from the click."""
    fs = 44100
    t = np.arange(fs) / fs
    x = 0.25 * np.sin(2 * np.pi * 440 * t)
    x[fs // 2] = 1.0
    y = limiter(torch.tensor(x)[None, None], fs, ceiling_dbtp=-1.0, release_ms=20.0)[0, 0].numpy()
    far = np.abs(np.arange(fs) - fs // 2) > fs // 5  # 200 ms away: 10 release constants
    assert np.abs(y[far] - x[far]).max() < 1e-4 * 0.25
    assert np.argmax(np.abs(y - x)) in range(fs // 2 - 2, fs // 2 + 3)  # the change is where the click is


def test_release_time_constant():
    """After a single over, the gain recovers 63 % of the way in release_ms (after the lookahead), within 15 %."""
    fs = 48000
    x = np.full(fs, 0.1)
    x[1000:1100] = 1.0  # 20 dB over a -21 dB ceiling... the step is +20 dB for 100 samples
    for release_ms in (20.0, 100.0, 300.0):
        _, g = limiter(torch.tensor(x)[None, None], fs, ceiling_dbtp=-6.0, release_ms=release_ms, return_gain=True)
        g = g[0].numpy()
        deepest = int(np.argmin(g))
        floor = g[deepest]
        end = deepest + int(np.argmax(g[deepest:] > floor + 1e-9))  # recovery starts after the hold of the lookahead
        hit = end + int(np.argmax(g[end:] >= floor * (1 - 0.632)))
        measured = (hit - end) / fs * 1000
        assert abs(measured - release_ms) < 0.15 * release_ms, (release_ms, measured)


def test_render_path_equals_training_path():
    fs = 44100
    x = torch.tensor(worst_cases(fs)["stereo: square left, inter-sample peaks right"], dtype=torch.float32)[None]
    fast, slow = both_paths(limiter, x, fs, ceiling_dbtp=-1.0, release_ms=60.0)
    assert error_db(fast, slow) < -100.0, error_db(fast, slow)


def test_gradients_reach_every_parameter():
    fs = 44100
    x = torch.tensor(worst_cases(fs)["clipped noise bursts"], dtype=torch.float64)[None]
    grads = gradients(limiter, x, fs, ceiling_dbtp=-3.0, release_ms=60.0)
    for name, value in grads.items():
        assert math.isfinite(value) and value != 0.0, (name, value)


def test_recovers_known_settings_by_gradient_descent():
    """The ceiling fitted from the default (-1 dBTP) to a render limited at -4 dBTP: the loss falls by >= 90 %."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _dsp import fit

    fs = 16000
    x = torch.tensor(worst_cases(fs)["clipped noise bursts"][..., : fs // 4], dtype=torch.float64)[None]
    with torch.no_grad():
        target = limiter(x, fs, ceiling_dbtp=-4.0, release_ms=40.0)
    first, last, got = fit(limiter, x, fs, target, start=dict(ceiling_dbtp=-1.0), fixed=dict(release_ms=40.0),
                           scales=dict(ceiling_dbtp=1.0), loss=lambda y, t: (y - t).pow(2).mean(), steps=40, lr=0.2)
    assert last < 0.1 * first, (first, last, got)


def _gain_path_reference(peaks, ceiling_db, release, window):
    """The limiter's gain path (module docstring, steps 2-3) as plain numpy loops in float64: both intervals
    around each sample, the gain each needs, the minimum over the lookahead, the hold, the moving average."""
    n = peaks.size
    p = np.maximum(peaks, np.concatenate([[0.0], peaks[:-1]]))
    need = np.minimum(0.0, ceiling_db - 20 * np.log10(np.maximum(p, 1e-9)))
    padded = np.concatenate([np.zeros(window - 1), need])
    ahead = np.array([padded[i: i + window].min() for i in range(padded.size)])
    held, h = np.empty_like(ahead), 0.0
    for i, f in enumerate(ahead):
        h = f if f < h else h * (1 - release) + release * f
        held[i] = h
    return np.array([held[t: t + window].mean() for t in range(n)])


@pytest.mark.parametrize("n, window", [(5000, 66), (5003, 7), (40, 66), (3000, 1), (1000, 2)])
def test_compiled_gain_path_equals_a_plain_loop(n, window):
    """The render path's one-pass gain (lookahead minimum by blocks, hold, running mean) against plain numpy loops,
    with lengths that are not whole blocks and a lookahead longer than the signal."""
    from dmst.effects._ballistics import lookahead_gain

    rng = np.random.default_rng(n + window)
    peaks = np.abs(rng.standard_normal(n)) * 0.5
    peaks[rng.random(n) < 0.02] *= 6.0  # sparse overs
    got = lookahead_gain(torch.tensor(peaks[None], dtype=torch.float32), torch.tensor([-3.0], dtype=torch.float64),
                         torch.tensor([0.01], dtype=torch.float64), window)[0].double().numpy()
    want = _gain_path_reference(peaks.astype(np.float32).astype(np.float64), -3.0, 0.01, window)
    assert want.min() < -6.0  # it limits
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
