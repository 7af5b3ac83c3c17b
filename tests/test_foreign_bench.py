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


def test_split_band_deesser_turns_down_the_esses_only():
    """On a 400 Hz tone with 7 kHz bursts: the bursts come down by about the range (measured by FFT), the tone not."""
    fs = 44100
    t = np.arange(fs) / fs
    tone = 0.3 * np.sin(2 * math.pi * 400 * t)
    burst = 0.3 * np.sin(2 * math.pi * 7000 * t) * ((t % 0.25) < 0.1)
    y = foreign.split_band_deesser(tone + burst, fs, 7000.0, threshold_db=-40.0, range_db=6.0)[0]

    def band_db(x, lo, hi):
        f = np.fft.rfftfreq(x.size, 1 / fs)
        p = np.abs(np.fft.rfft(x)) ** 2
        return 10 * np.log10(p[(f >= lo) & (f < hi)].sum())

    assert band_db(tone + burst, 6500, 7500) - band_db(y, 6500, 7500) == pytest.approx(6.0, abs=1.0)
    assert abs(band_db(tone + burst, 300, 500) - band_db(y, 300, 500)) < 0.1
    quiet = foreign.split_band_deesser(tone, fs, 7000.0, threshold_db=-40.0, range_db=6.0)[0]
    np.testing.assert_allclose(quiet, tone, atol=1e-9)  # nothing in the sidechain band: the input exactly


def test_space_chain_is_stereo_with_a_tail_and_the_dry_chain_is_unchanged():
    pytest.importorskip("pedalboard")
    fs = 44100
    rng = np.random.default_rng(0)
    t = np.arange(2 * fs) / fs
    x = (np.sin(2 * math.pi * 180 * t) * ((t % 0.5) < 0.3) + 0.05 * rng.standard_normal(t.size)) * 0.2
    dry, s, d = foreign.mix(x[None], fs)
    assert dry.shape == (1, x.size) and not set(foreign.SPACE_KEYS) & set(s)
    wet, s_wet, _ = foreign.mix(x[None], fs, space=True)
    assert set(foreign.SPACE_KEYS) <= set(s_wet)
    assert wet.shape[0] == 2 and x.size + int(0.3 * fs) < wet.shape[-1] <= x.size + int(foreign.TAIL_S * fs)
    side = 0.5 * (wet[0] - wet[1])
    assert 10 * np.log10((side ** 2).sum() / (wet.mean(0) ** 2).sum()) > -30  # the returns are in stereo
    assert (wet[:, x.size:] ** 2).sum() > 1e-4 * (wet ** 2).sum()  # a tail past the raw's end
    assert foreign.lufs(wet, fs) == pytest.approx(s_wet["target_lufs"], abs=0.01)


def test_redrawn_fine_structure_keeps_the_envelope_and_changes_the_waveform():
    """bench/space_swap.py's premise: the redrawn response has the original's energy per channel and its STFT
    magnitudes (per 256-sample frame and bin), but is another noise (nearly uncorrelated with the original)."""
    from scipy import signal

    import space_swap

    fs = 44100
    rng = np.random.default_rng(1)
    t = np.arange(int(1.5 * fs)) / fs
    h = rng.standard_normal((2, t.size)) * np.exp(-3 * math.log(10) * t / 1.0)  # a 1 s RT60 noise response
    y = space_swap.redraw_fine_structure(h, seed=0)
    np.testing.assert_allclose((y**2).sum(-1), (h**2).sum(-1), rtol=1e-9)
    corr = (y * h).sum(-1) / np.sqrt((y**2).sum(-1) * (h**2).sum(-1))
    assert np.all(np.abs(corr) < 0.1)
    # band energies per 23 ms over the first 0.5 s (60 dB of decay is 1 s): within 1.5 dB on average
    _, _, zh = signal.stft(h, nperseg=1024, noverlap=768)
    _, _, zy = signal.stft(y, nperseg=1024, noverlap=768)
    frames = slice(1, int(0.5 * fs / 256))
    band = lambda z: (np.abs(z[:, 5:400, frames]) ** 2).reshape(2, 5, 79, -1).sum(2)  # noqa: E731
    assert np.mean(np.abs(10 * np.log10(band(zy) / band(zh)))) < 1.5


def test_band_rt60_reads_the_decay_of_an_exponential_noise():
    """Schroeder backward integration (space_swap.band_rt60) on noise decaying 60 dB in 0.8 s reads 0.8 s within 10 %
    in every octave band."""
    import space_swap

    fs = 44100
    t = np.arange(3 * fs) / fs
    h = np.random.default_rng(2).standard_normal((2, t.size)) * np.exp(-3 * math.log(10) * t / 0.8)
    np.testing.assert_allclose(space_swap.band_rt60(h, fs), 0.8, rtol=0.1)
