"""The downward expander / gate against its analytic static curve and measured time constants.

Static curve (written out here in numpy): below the threshold the output level falls
``ratio`` dB per input dB, so the gain is ``(ratio - 1) (L - T)`` dB, never below
``-range_db``; L is the signal's peak level in dBFS.  Time constants: after a level
step the applied gain in dB covers 63.2 % of its change in ``attack_ms`` (opening)
and, after the 20 ms hold, in ``release_ms`` (closing).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _dsp import both_paths, crossing_time, error_db, fit, gradients, rms_db
from dmst.effects.gate import HOLD_MS, gate

FS = 44100


def analytic_gain_db(level_db, threshold_db, ratio, range_db):
    return max(-range_db, min(0.0, (ratio - 1) * (level_db - threshold_db)))


def tone(level_db, n, f=FS / 50):
    return 10 ** (level_db / 20) * np.cos(2 * np.pi * f * np.arange(n) / FS)


CURVES = [(-40.0, 2.0, 20.0), (-30.0, 4.0, 40.0), (-50.0, 1.5, 10.0), (-20.0, 10.0, 60.0)]
OFFSETS = [-30.0, -12.0, -6.0, -3.0, -1.0, 0.0, 3.0, 10.0]


def test_static_curve_within_half_a_db():
    """Steady tones (882 Hz and 100 Hz) at levels around the threshold: output/input RMS = the curve at the peak level, 0.5 dB."""
    n = FS
    rows, x = [], []
    for f in (FS / 50, 100.0):
        for threshold, ratio, rng in CURVES:
            for off in OFFSETS:
                rows.append((threshold, ratio, rng, threshold + off))
                x.append(tone(threshold + off, n, f))
    xt = torch.tensor(np.stack(x)[:, None, :])
    thr, rat, rng, lev = (torch.tensor(c, dtype=torch.float64) for c in zip(*rows))
    y = gate(xt, FS, threshold_db=thr, ratio=rat, range_db=rng, attack_ms=1.0, release_ms=50.0).numpy()
    settled = slice(n // 2, n)
    partial = 0
    for i, (threshold, ratio, range_db, level) in enumerate(rows):
        measured = rms_db(y[i, 0, settled]) - rms_db(x[i][settled])
        expected = analytic_gain_db(level, threshold, ratio, range_db)
        partial += -range_db < expected < 0
        assert abs(measured - expected) < 0.5, f"T={threshold} R={ratio} range={range_db} L={level}: {measured:.2f} vs {expected:.2f}"
    assert partial >= 12, "the grid must probe the expansion region, not only open and closed"


def test_noise_below_threshold_is_reduced_by_the_range():
    """White noise 30 dB under a -30 dBFS threshold (ratio 20): turned down by exactly range_db, within 0.5 dB."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 1, FS, generator=g, dtype=torch.float64)
    noise = noise / noise.abs().max() * 10 ** (-60 / 20)
    for range_db in (6.0, 20.0, 45.0):
        y = gate(noise, FS, threshold_db=-30.0, ratio=20.0, range_db=range_db, attack_ms=2.0, release_ms=50.0)
        measured = rms_db(y[0, 0, FS // 2:]) - rms_db(noise[0, 0, FS // 2:])
        assert abs(measured + range_db) < 0.5, (range_db, measured)


@pytest.mark.parametrize("attack_ms,release_ms", [(1.0, 50.0), (5.0, 200.0), (20.0, 500.0)])
def test_attack_and_release_time_constants(attack_ms, release_ms):
    """-60 -> -10 -> -60 dBFS steps through a -30 dBFS threshold: opening 63 % in attack_ms, closing in release_ms after the hold, 5 %."""
    n_pre, n_loud, n_post = 25 * 6000, 25 * 1800, 25 * 6000  # 3.4 s: the gate starts open and must close first
    x = np.concatenate([tone(-60.0, n_pre), tone(-10.0, n_loud), tone(-60.0, n_post)])
    _, g = gate(torch.tensor(x)[None, None], FS, threshold_db=-30.0, ratio=4.0, range_db=30.0,
                attack_ms=attack_ms, release_ms=release_ms, return_gain=True)
    g = g[0].numpy()
    up, down = n_pre, n_pre + n_loud
    closed, opened, final = g[up - 200:up].mean(), g[down - 200:down].mean(), g[-200:].mean()
    assert closed == pytest.approx(-30.0, abs=0.05) and opened == pytest.approx(0.0, abs=0.01)
    assert final == pytest.approx(-30.0, abs=0.3)
    attack = crossing_time(g, up, closed + 0.632 * (opened - closed), rising=True, fs=FS)
    hold = round(HOLD_MS * FS / 1000)
    release = crossing_time(g, down + hold - 1, opened + 0.632 * (final - opened), rising=False, fs=FS)
    assert abs(attack * 1000 - attack_ms) < 0.05 * attack_ms, attack * 1000
    assert abs(release * 1000 - release_ms) < 0.05 * release_ms, release * 1000


def test_range_zero_is_an_exact_bypass():
    x = torch.randn(2, 2, 5000, generator=torch.Generator().manual_seed(1)) * 0.01
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            y = gate(x, FS, threshold_db=-20.0, ratio=4.0, range_db=0.0, attack_ms=1.0, release_ms=50.0)
        assert torch.equal(y.detach(), x)


def _phrases(fs=FS):
    """A tone with phrases at -12 dBFS, a -38 dBFS passage and -70 dBFS noise between them."""
    g = torch.Generator().manual_seed(2)
    t = torch.arange(fs) / fs
    env = torch.full((fs,), 10 ** (-70 / 20))
    env[int(0.1 * fs):int(0.35 * fs)] = 10 ** (-12 / 20)
    env[int(0.5 * fs):int(0.7 * fs)] = 10 ** (-38 / 20)
    carrier = torch.where(env > 0.01, torch.sin(2 * math.pi * 300 * t), torch.randn(fs, generator=g).clamp(-1, 1))
    return (env * carrier).double().reshape(1, 1, -1)


def test_render_path_equals_training_path():
    """Compiled ballistics vs torchcomp, float32 and float64: the difference is under -100 dB re the output."""
    for dtype in (torch.float32, torch.float64):
        x = _phrases().to(dtype)
        fast, slow = both_paths(gate, x, FS, threshold_db=-30.0, ratio=3.0, range_db=25.0, attack_ms=2.0, release_ms=80.0)
        assert error_db(fast, slow) < -100.0


def test_gradients_reach_every_parameter():
    grads = gradients(gate, _phrases(), FS, threshold_db=-30.0, ratio=3.0, range_db=25.0, attack_ms=2.0, release_ms=80.0)
    for name, value in grads.items():
        assert math.isfinite(value) and value != 0.0, (name, value)


def test_recovers_known_settings_by_gradient_descent():
    """Threshold, ratio and range fitted from other starts: the loss (level envelope in dB) falls by >= 90 %."""
    fs = 8000  # the gate works at any rate; a low one keeps the 60 steps fast
    x = _phrases(fs)
    settings = dict(threshold_db=-30.0, ratio=4.0, range_db=30.0, attack_ms=2.0, release_ms=80.0)
    with torch.no_grad():
        target = gate(x, fs, **settings)

    def envelope_db(y):
        frames = y[0, 0, : fs // 80 * 80].reshape(-1, 80)
        return 10 * torch.log10(frames.pow(2).mean(-1) + 1e-12)

    def loss(y, t):
        return (envelope_db(y) - envelope_db(t)).pow(2).mean()

    first, last, got = fit(gate, x, fs, target, start=dict(threshold_db=-40.0, ratio=2.0, range_db=10.0),
                           fixed=dict(attack_ms=2.0, release_ms=80.0), scales=dict(threshold_db=10.0, ratio=1.0, range_db=10.0),
                           loss=loss, steps=60, lr=0.1)
    assert last < 0.1 * first, (first, last, got)


def _detector_reference(x, window, threshold_db, sign, slope, range_db, attack, release):
    """The gate's / de-esser's detection as plain numpy loops in float64: linked peak, the hold's maximum over the
    last ``window`` samples, the hard-knee curve on the ``sign`` side of the threshold, the (mirrored) ballistics."""
    a = np.abs(x).max(axis=0)
    s = np.array([a[max(0, t - window + 1): t + 1].max() for t in range(a.size)])
    over = sign * (20 * np.log10(np.maximum(s, 1e-6)) - threshold_db)
    target = np.where(over > 0, np.maximum(slope * over, -range_db), 0.0)
    out, held, gain = np.empty_like(target), 0.0, 0.0
    for t, f in enumerate(sign * target):
        held = f if f < held else held * (1 - release) + release * f
        gain = gain * (1 - attack) + attack * held if held < gain else held
        out[t] = sign * gain
    return out


@pytest.mark.parametrize("window, sign, slope", [(441, -1.0, -3.0), (1, 1.0, -1.0), (7, 1.0, -1.0), (1500, -1.0, -19.0)])
def test_compiled_detector_equals_a_plain_loop(window, sign, slope):
    """The render path's one-pass detector (gate: below the threshold, with a hold; de-esser: above it) against
    plain numpy loops, on two channels of bursts and pauses, with lengths that are not whole hold blocks."""
    from dmst.effects._ballistics import detector_gain

    rng = np.random.default_rng(window)
    n = 12_345
    env = np.repeat(10 ** (rng.uniform(-70, -5, 12) / 20), -(-n // 12))[:n]
    x = (rng.standard_normal((2, n)) * env * np.array([[1.0], [0.3]])).astype(np.float32)
    got = detector_gain(torch.from_numpy(x)[None], window, -35.0, sign, slope, 18.0, 0.05, 0.01)[0].double().numpy()
    want = _detector_reference(x.astype(np.float64), window, -35.0, sign, slope, 18.0, 0.05, 0.01)
    assert want.min() < -10.0  # it acts
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
