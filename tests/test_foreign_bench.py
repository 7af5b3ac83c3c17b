"""The foreign benchmark's own meters (bench/foreign.py) against the numbers ITU-R BS.1770-4 publishes."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import foreign  # noqa: E402


def test_k_weighting_at_48k_equals_the_published_coefficients():
    """BS.1770-4 Tables 1 and 2 (48 kHz), to 1e-8."""
    (b1, a1), (b2, a2) = foreign.k_weighting(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize("fs", [44100, 48000])
def test_full_scale_997hz_sine_reads_minus_3_01_lufs(fs):
    """EBU Tech 3341's reference: a 0 dBFS 997 Hz sine on one channel is -3.01 LUFS (0.05 LU); -20 dB reads -23.01."""
    t = np.arange(5 * fs) / fs
    x = np.sin(2 * math.pi * 997 * t)
    assert foreign.lufs(x, fs) == pytest.approx(-3.01, abs=0.05)
    assert foreign.lufs(0.1 * x, fs) == pytest.approx(-23.01, abs=0.05)


def test_micro_dynamics_error_ignores_gain_and_sees_compression():
    rng = np.random.default_rng(0)
    fs = 44100
    env = np.repeat(rng.uniform(0.05, 1.0, 40), fs // 10)
    x = rng.standard_normal(env.size) * env
    assert foreign.micro_dynamics_error_db(0.3 * x, x, fs) < 1e-6  # (the meter's 1e-10 power floor)
    squashed = x / np.sqrt(env)  # half the level changes in dB
    assert foreign.micro_dynamics_error_db(squashed, x, fs) > 1.0
