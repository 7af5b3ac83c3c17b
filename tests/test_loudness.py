"""Loudness: the BS.1770 meter against the standard's own test cases, the console's
loudness-targeted output stage against an independent meter built on scipy.signal, and
the true-peak meter against analytic peaks and scipy's polyphase oversampling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from dmst import schema
from dmst.audio_io import true_peak_dbfs
from dmst.console import render
from dmst.data import AlignedPair
from dmst.effects.gain import (integrated_loudness, integrated_loudness_differentiable, loudness_normalize,
                               staging_gain_db)
from dmst.losses import loudness_loss

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# ITU-R BS.1770-4, Table 1 and Table 2: the K-weighting filters as published for 48 kHz.
K_WEIGHTING_48K = np.array([
    [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
    [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
])


def reference_loudness(x: np.ndarray) -> float:
    """An independent BS.1770-4 meter for (channels, n) audio at 48 kHz: scipy K-weighting, numpy gating."""
    y = scipy.signal.sosfilt(K_WEIGHTING_48K, x.astype(np.float64), axis=-1)
    block, step = 19200, 4800  # 400 ms blocks, 75 % overlap
    starts = range(0, y.shape[-1] - block + 1, step)
    z = np.array([(y[:, s:s + block] ** 2).mean(axis=-1).sum() for s in starts])
    lj = -0.691 + 10 * np.log10(np.maximum(z, 1e-30))
    z1 = z[lj > -70.0]
    relative = -0.691 + 10 * np.log10(z1.mean()) - 10.0
    return float(-0.691 + 10 * np.log10(z[(lj > -70.0) & (lj > relative)].mean()))


def sine(db: float, seconds: float, channels: int = 2, sr: int = 48000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return np.tile(10 ** (db / 20) * np.sin(2 * np.pi * 1000 * t), (channels, 1))


def voice(seconds: float = 4.0, channels: int = 1, sr: int = 48000) -> torch.Tensor:
    """(1, channels, n) real vocal from examples/, resampled to ``sr``; the right channel is a delayed copy."""
    x, fs = sf.read(EXAMPLES / "and_its_all.wav", dtype="float32", always_2d=True)
    x = torch.from_numpy(np.ascontiguousarray(x[: int(seconds * fs), 0]))
    if sr != fs:
        import torchaudio.functional as AF

        x = AF.resample(x, fs, sr)
    if channels == 2:
        x = torch.stack([x, torch.roll(x, 300) * 0.7])
    return x.reshape(1, channels, -1)


# EBU Tech 3341 (2016), minimum requirements test signals 1-4, expected -23.0 LUFS except case 2 (-33.0).
TECH_3341 = {
    "case 1: -23 dBFS sine": ([(-23.0, 20.0)], -23.0),
    "case 2: -33 dBFS sine": ([(-33.0, 20.0)], -33.0),
    "case 3: relative gate": ([(-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0)], -23.0),
    "case 4: both gates": ([(-72.0, 10.0), (-36.0, 10.0), (-23.0, 20.0), (-36.0, 10.0), (-72.0, 10.0)], -23.0),
}


@pytest.mark.parametrize("case", TECH_3341)
def test_meter_passes_ebu_tech_3341_cases(case):
    parts, expected = TECH_3341[case]
    x = np.concatenate([sine(db, s) for db, s in parts], axis=-1)
    measured = float(integrated_loudness(torch.from_numpy(x).float()[None], 48000)[0])
    assert measured == pytest.approx(expected, abs=0.1)  # Tech 3341's tolerance
    assert measured == pytest.approx(reference_loudness(x), abs=0.01)


@pytest.mark.parametrize("channels", [1, 2])
def test_differentiable_meter_equals_the_recursive_one(channels):
    x = voice(channels=channels)
    a = float(integrated_loudness(x, 48000)[0])
    b = float(integrated_loudness_differentiable(x, 48000)[0])
    assert b == pytest.approx(a, abs=0.01)
    assert a == pytest.approx(reference_loudness(x[0].numpy()), abs=0.01)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("target", [-30.0, -14.0, -8.0])
def test_output_stage_lands_on_the_target_by_an_independent_meter(channels, target):
    x = voice(channels=channels) * 0.05  # well below the target: the stage must turn it up
    y = loudness_normalize(x, 48000, target)
    assert reference_loudness(y[0].numpy()) == pytest.approx(target, abs=0.02)
    ratio = (y / x)[x.abs() > 1e-3]
    assert float(ratio.max() - ratio.min()) < 1e-4 * float(ratio.mean())  # one gain, nothing else changed


def test_output_stage_with_gradients_lands_on_the_target_and_ignores_input_level():
    """With gradients on, the gain of the input has no effect on the output, so its gradient is zero."""
    x = voice(seconds=2.0)
    scale = torch.tensor(0.3, requires_grad=True)
    target = torch.tensor([-20.0], requires_grad=True)
    y = loudness_normalize(x * scale, 48000, target)
    assert float(integrated_loudness(y.detach(), 48000)[0]) == pytest.approx(-20.0, abs=0.02)
    y.pow(2).sum().backward()
    energy = float(y.detach().pow(2).sum())
    assert abs(float(scale.grad)) < 1e-4 * energy / 0.3  # d(energy)/d(scale) would be 2 energy / scale without the stage
    # energy ~ 10^(target / 10): d(energy)/d(target) = energy ln(10) / 10
    assert float(target.grad) == pytest.approx(energy * np.log(10) / 10, rel=1e-3)


def test_silence_passes_through_unchanged():
    x = torch.zeros(2, 1, 48000)
    x[1, 0, ::100] = 1e-6  # below the -70 LUFS gate: counts as silence
    assert torch.equal(loudness_normalize(x, 48000, -14.0), x)
    xg = x.clone().requires_grad_(True)
    y = loudness_normalize(xg, 48000, -14.0)
    y.sum().backward()
    assert torch.isfinite(xg.grad).all()


def _setting(**changes) -> dict:
    params = schema.default_dict()
    params["compressor"].update(threshold_db=-30.0, ratio=4.0)
    params["saturation"].update(drive_db=6.0)
    params["output"]["loudness_lufs"] = -15.0
    # The loudness stage alone: the limiter after it takes the peaks of a hot setting down, and with them up
    # to a few hundredths of a LU (tests/test_console_v3.py tests the limiter in the chain).
    params["limiter"]["ceiling_dbtp"] = schema.LIMITER_OFF_DBTP
    for key, value in changes.items():
        group, name = key.split("__")
        params[group][name] = value
    return params


@pytest.mark.parametrize("change", [{}, {"compressor__makeup_gain_db": 9.0}, {"eq__presence_gain_db": 8.0},
                                    {"saturation__drive_db": 18.0}])
def test_console_delivers_at_the_set_loudness_whatever_the_chain_does(change):
    x = voice(channels=2, sr=44100)
    y = render(x, 44100, schema.stack([_setting(**change)]))
    assert float(integrated_loudness(y, 44100)[0]) == pytest.approx(-15.0, abs=0.02)


def test_training_crops_put_the_mixs_own_setting_at_zero_loudness_error():
    """train.py renders crops.  With the mix's crop-vs-song offset, the setting that made the mix has no loudness
    error on any crop; without it, a crop quieter or louder than its song would pull output.loudness_lufs off."""
    import train

    sr = 44100
    raw = voice(seconds=6.0, sr=sr)[0]
    setting = schema.stack([_setting()])
    mixed = render(raw[None], sr, setting)[0]
    pair = AlignedPair.from_audio("song", raw, mixed, sr, staging_db=float(staging_gain_db(raw[None], sr)[0]))
    assert pair.mixed_lufs == pytest.approx(-15.0, abs=0.02)
    gen = torch.Generator().manual_seed(0)
    with_offset, without = [], []
    for _ in range(8):
        raw_crop, mix_crop, (staging, offset) = train.batch_of_crops([pair], int(1.5 * sr), gen, "cpu", 1, sr)
        y = render(raw_crop, sr, setting, staging_db=staging, excerpt_offset_lu=offset)
        with_offset.append(10 * float(loudness_loss(y, mix_crop, sr)))
        y = render(raw_crop, sr, setting, staging_db=staging)
        without.append(10 * float(loudness_loss(y, mix_crop, sr)))
    assert max(with_offset) < 0.02, with_offset
    assert max(without) > 0.2, without


# ---------------------------------------------------------------------------
# True peak (BS.1770-4 annex 2: 4x oversampling below 96 kHz)
# ---------------------------------------------------------------------------

def test_true_peak_finds_the_peak_between_samples():
    """A sine at fs/4 sampled 45 degrees off its crests: samples reach 0.707 A, the waveform A."""
    fs, amplitude = 48000, 0.5
    n = np.arange(fs)
    fade = np.minimum(1.0, np.minimum(n, n[::-1]) / 2000.0) ** 2  # no abrupt start: that would overshoot for real
    x = amplitude * fade * np.sin(2 * np.pi * n / 4 + np.pi / 4)
    assert 20 * np.log10(np.abs(x).max()) == pytest.approx(20 * np.log10(amplitude) - 3.01, abs=0.01)
    assert true_peak_dbfs(x[None], fs) == pytest.approx(20 * np.log10(amplitude), abs=0.05)


def _faded_sine(fs, freq_hz, phase_deg, amplitude, seconds=1.0):
    """A sine with 40 ms raised-cosine fades: no abrupt start or end, whose reconstruction would overshoot."""
    n = np.arange(int(seconds * fs))
    fade = np.clip(np.minimum(n, n[::-1]) / (0.04 * fs), 0, 1)
    return amplitude * (0.5 - 0.5 * np.cos(np.pi * fade)) * np.cos(2 * np.pi * freq_hz * n / fs + np.deg2rad(phase_deg))


@pytest.mark.parametrize("fs", [44100, 48000])
def test_true_peak_of_ebu_tech_3341_style_sines(fs):
    """EBU Tech 3341's true-peak signals are sines at fs/4 at -6 dBFS with their crests 0, 45, 60 and 67.5
    degrees off the samples (true peak -6.0 dBTP; EBU's tolerance +0.2 / -0.4 dB).  A 4x meter's points fall
    every 22.5 degrees of an fs/4 cycle: on them (0, 45, 67.5) it reads the analytic value within 0.05 dB;
    at 60 degrees, 7.5 degrees off its nearest point, it reads cos(7.5 deg) low (-0.075 dB), never high."""
    amplitude_db = -6.0
    for phase, low in ((0.0, 0.05), (45.0, 0.05), (67.5, 0.05), (60.0, 0.1)):
        x = _faded_sine(fs, fs / 4, phase, 10 ** (amplitude_db / 20))
        if phase:  # the samples themselves miss the crest
            assert 20 * np.log10(np.abs(x).max()) < amplitude_db - 0.5
        reading = true_peak_dbfs(x[None], fs)
        assert amplitude_db - low <= reading <= amplitude_db + 0.05, (phase, reading)
    # 997 Hz (EBU's other tone) and a loud 1 kHz at -0.5 dBFS: within 0.05 dB
    for freq, amp_db in ((997.0, -6.0), (1000.0, -0.5)):
        assert true_peak_dbfs(_faded_sine(fs, freq, 30.0, 10 ** (amp_db / 20))[None], fs) == pytest.approx(amp_db, abs=0.05)


def test_true_peak_never_reads_above_the_analytic_peak():
    """Faded sines from 100 Hz to 0.4 fs at phases across a sample: the meter reads at most 0.05 dB over their
    amplitude (a 4x meter may read under it between its points, never over: its filter has no gain there)."""
    fs = 48000
    worst = -np.inf
    for freq in (100.0, 1000.0, 5000.0, 9000.0, 12000.0, 15000.0, 19200.0):
        for phase in np.linspace(0.0, 90.0, 7):
            worst = max(worst, true_peak_dbfs(_faded_sine(fs, freq, phase, 0.5, 0.3)[None], fs) - 20 * np.log10(0.5))
    assert worst <= 0.05, worst


@pytest.mark.parametrize("fs, factor", [(44100, 4), (96000, 2)])
def test_true_peak_equals_scipy_polyphase_oversampling(fs, factor):
    """Band-limited noise across several of the meter's blocks (2**20 samples): the same peak as
    scipy.signal.resample_poly at the annex's factor, within 0.05 dB."""
    rng = np.random.default_rng(11)
    x = scipy.signal.sosfilt(scipy.signal.butter(8, 0.45 * fs, fs=fs, output="sos"), 0.1 * rng.standard_normal((2, 2**21 + 999)))
    t = np.arange(-400, 400)  # a hot band-limited burst across a block seam, in one channel, crests between samples
    x[1, 2**20 + t] += 0.9 * np.hanning(t.size) ** 2 * np.sin(2 * np.pi * t / 4 + np.pi / 4)
    want = 20 * np.log10(np.abs(scipy.signal.resample_poly(x, factor, 1, axis=-1)).max())
    got = true_peak_dbfs(x.astype(np.float32), fs)
    assert got > 20 * np.log10(np.abs(x).max()) + 0.5  # the burst overshoots between samples
    assert got == pytest.approx(want, abs=0.05)
