"""The evaluation metrics of dmst.metrics can fail: each tells apart what it is meant to (dry from reverberant,
de-essed from not, mono from wide), and ignores what it is not about (overall gain, the other channel signal).
Test signals are built with numpy/scipy, so what differs between them is known by construction."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal

from dmst import metrics

SR = 44100


def _phrases(seed: int = 0, seconds: float = 4.0):
    """A voice stand-in: 0.4 s phrases of a 180 Hz harmonic tone with 5-10 kHz noise 'esses' at their ends, 0.4 s
    pauses; returns (vowels, esses) as (n,) arrays (the take is their sum)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    gate = ((t % 0.8) < 0.4).astype(float)
    vowels = sum(np.sin(2 * math.pi * 180 * k * t) / k for k in range(1, 20)) * gate * 0.2
    ess_gate = (((t % 0.8) > 0.3) & ((t % 0.8) < 0.4)).astype(float)
    esses = signal.sosfilt(signal.butter(4, [5000, 10000], "bandpass", fs=SR, output="sos"),
                           rng.standard_normal(n)) * ess_gate * 0.3
    return vowels, esses


def _reverb(x: np.ndarray, rt60_s: float = 1.0, level_db: float = -10.0, seed: int = 1) -> np.ndarray:
    """(2, n + tail): x centred plus an exponentially decaying noise reverb, decorrelated left and right."""
    rng = np.random.default_rng(seed)
    m = int(1.5 * rt60_s * SR)
    decay = 10 ** (-3 * np.arange(m) / (rt60_s * SR))  # -60 dB at rt60_s
    wet = [signal.fftconvolve(x, rng.standard_normal(m) * decay) for _ in range(2)]
    wet = np.stack(wet) * (10 ** (level_db / 20) * np.sqrt((x ** 2).sum()) / np.sqrt((wet[0] ** 2).sum()))
    dry = np.pad(np.stack([x, x]), ((0, 0), (0, m - 1)))
    return dry + wet


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.atleast_2d(x)).float()[None]


@pytest.fixture(scope="module")
def take():
    v, e = _phrases()
    return v, e


def test_tail_error_tells_a_dry_render_from_a_reverberant_mix(take):
    x = take[0] + take[1]
    wet = _reverb(x)
    dry = np.pad(np.stack([x, x]), ((0, 0), (0, wet.shape[-1] - x.size)))
    raw = _t(x)
    assert metrics.tail_energy_error_db(_t(wet), _t(wet), SR, raw) == 0.0
    assert metrics.tail_energy_error_db(_t(0.5 * wet), _t(wet), SR, raw) < 0.01  # a ratio: gain does not move it
    err = metrics.tail_energy_error_db(_t(dry), _t(wet), SR, raw)
    assert err > 20.0, err  # the dry render's gaps are silent
    # A shorter reverb is between the two.
    short = _reverb(x, rt60_s=0.3)
    short = np.pad(short, ((0, 0), (0, wet.shape[-1] - short.shape[-1])))
    mid = metrics.tail_energy_error_db(_t(short), _t(wet), SR, raw)
    assert 1.0 < mid < err, mid


def test_tail_ratio_is_nan_without_gaps():
    rng = np.random.default_rng(0)
    x = _t(rng.standard_normal(SR))
    assert math.isnan(float(metrics.tail_ratio_db(x, x, SR)[0]))


def test_sibilance_error_tells_a_de_essed_take_from_one_not(take):
    vowels, esses = take
    plain, de_essed = vowels + esses, vowels + 10 ** (-6 / 20) * esses  # the esses 6 dB down, nothing else
    assert metrics.sibilance_error_db(_t(plain), _t(plain), SR) == 0.0
    assert metrics.sibilance_error_db(_t(0.3 * plain), _t(plain), SR) < 1e-6
    err = metrics.sibilance_error_db(_t(de_essed), _t(plain), SR)
    assert 3.0 < err < 6.5, err
    # A whole-band gain change of the same size is not sibilance.
    assert metrics.sibilance_error_db(_t(10 ** (-6 / 20) * plain), _t(plain), SR) < 1e-6


def test_width_and_side_mrstft_tell_mono_from_wide(take):
    x = take[0] + take[1]
    wide = _reverb(x, level_db=-6.0)
    mono = np.pad(x, (0, wide.shape[-1] - x.size))[None]
    assert metrics.stereo_width_error_db(_t(wide), _t(wide)) == 0.0
    assert metrics.stereo_width_error_db(_t(mono), _t(wide)) > 10.0
    assert abs(float(metrics.stereo_width_db(_t(mono))[0]) - (-60.0)) < 1e-6  # the floor
    narrower = _reverb(x, level_db=-12.0)
    assert 3.0 < metrics.stereo_width_error_db(_t(narrower), _t(wide)) < 9.0  # 6 dB less side energy, about
    side_mono = metrics.side_mrstft_distance(_t(mono), _t(wide))
    side_narrow = metrics.side_mrstft_distance(_t(narrower), _t(wide))
    assert metrics.side_mrstft_distance(_t(wide), _t(wide)) < 1e-6
    assert side_mono > 2 * side_narrow > 0, (side_mono, side_narrow)
    assert math.isnan(metrics.side_mrstft_distance(_t(wide), _t(mono)))  # a mono mix has no side to compare


def test_mid_mrstft_ignores_the_side_and_sees_the_centre(take):
    x = take[0] + take[1]
    wide = _reverb(x)
    s = 0.1 * np.random.default_rng(3).standard_normal(wide.shape[-1])
    side_changed = wide + np.stack([s, -s])  # the mid is untouched
    assert metrics.mid_mrstft_distance(_t(side_changed), _t(wide)) < 1e-3  # (float32 rounding of the sum)
    assert metrics.side_mrstft_distance(_t(side_changed), _t(wide)) > 0.1
    tilted = signal.sosfilt(signal.butter(1, 2000, "lowpass", fs=SR, output="sos"), wide, axis=-1)
    assert metrics.mid_mrstft_distance(_t(tilted), _t(wide)) > 0.1
