"""Saturation: transparency at rest, harmonic content, aliasing and level compensation.

References are spectral measurements (numpy FFT with a Blackman-Harris window) and
plain signal statistics, not dmst's own functions.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf
import torch

from dmst.effects import saturation

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FS = 44100


# Both paths: "render" is what `dmst render` runs (float32, no gradient: the compiled FIR oversampling,
# the curve in place, the compiled DC blocker); "train" the differentiable torch path (float64 audio
# that requires a gradient: conv1d oversampling, the FFT DC blocker).
PATHS = ["train", "render"]


def _sat(x: np.ndarray, fs=FS, path="train", **p) -> np.ndarray:
    """numpy (channels, n) or (batch, channels, n) -> float64 numpy, through dmst's saturation on ``path``."""
    t = torch.tensor(x, dtype=torch.float32 if path == "render" else torch.float64, requires_grad=path == "train")
    squeeze = t.dim() == 2
    if squeeze:
        t = t[None]
    y = saturation(t, fs, **p).detach().double().numpy()
    return y[0] if squeeze else y


def _rms_db(v) -> float:
    return 10 * math.log10(np.mean(np.square(v)))


def _voice(seconds: float = 3.0) -> np.ndarray:
    x, sr = sf.read(EXAMPLES / "and_its_all.wav", dtype="float64", always_2d=True)
    assert sr == FS
    return x[: int(seconds * sr)].T  # (channels, n)


def _sine(freq, amp, n, fs=FS, phase=0.0) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / fs + phase)


def _spectrum_db(y: np.ndarray, fs=FS):
    """Blackman-Harris windowed magnitude spectrum in dB re its largest bin, and the bin frequencies."""
    w = ss.get_window("blackmanharris", y.size)
    mag = np.abs(np.fft.rfft(y * w))
    return 20 * np.log10(mag / mag.max() + 1e-300), np.fft.rfftfreq(y.size, 1 / fs)


def _harmonic_db(spec_db, freqs, f, width_hz=20.0) -> float:
    """Peak level (dB re the largest bin) within +-width_hz of f."""
    sel = np.abs(freqs - f) <= width_hz
    return float(spec_db[sel].max())


# ---------------------------------------------------------------------------
# transparency
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("signal", ["voice", "sine_-6dBFS"])
@pytest.mark.parametrize("path", PATHS)
def test_rest_setting_is_transparent(signal, path):
    """drive 0 dB, asymmetry 0, mix 1: output RMS within 0.1 dB of input and error >= 30 dB below it."""
    x = _voice() if signal == "voice" else _sine(440.0, 10 ** (-6 / 20), FS)[None]
    y = _sat(x, path=path, drive_db=0.0, asymmetry=0.0, mix=1.0)
    assert y.shape == x.shape
    assert abs(_rms_db(y) - _rms_db(x)) < 0.1
    error_db = _rms_db(y - x) - _rms_db(x)
    assert error_db < -30.0, f"error {error_db:.1f} dB re input"


@pytest.mark.parametrize("drive_db,asymmetry", [(0.0, 0.0), (18.0, 0.7)])
def test_mix_zero_returns_the_input(drive_db, asymmetry):
    """mix 0 is the dry signal exactly, whatever the drive."""
    x = _voice(1.0)
    y = _sat(x, drive_db=drive_db, asymmetry=asymmetry, mix=0.0)
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("drive_db,asymmetry", [(12.0, 0.0), (24.0, 0.0), (24.0, 1.0)])
@pytest.mark.parametrize("path", PATHS)
def test_level_is_compensated_at_high_drive(drive_db, asymmetry, path):
    """At high drive the output RMS equals the input RMS within 0.5 dB (voice clip and a loud sine)."""
    for x in (_voice(), _sine(220.0, 0.9, FS)[None]):
        x = x - x.mean()  # the recording's own DC offset passes through; the check is on what the bias adds
        y = _sat(x, path=path, drive_db=drive_db, asymmetry=asymmetry, mix=1.0)
        assert abs(_rms_db(y) - _rms_db(x)) < 0.5
        # the DC the bias makes is removed (> 60 dB down) once the DC blocker has settled (the middle half)
        n = y.shape[-1]
        assert abs(np.mean(y[..., n // 4: 3 * n // 4])) < 1e-3 * np.sqrt(np.mean(x**2))


@pytest.mark.parametrize("path", PATHS)
def test_asymmetric_drive_leaves_no_rumble(path):
    """An asymmetric curve's 'DC' follows the envelope; on a tone swelling at 3 Hz the output keeps < -40 dB below 30 Hz."""
    t = np.arange(int(4 * FS)) / FS
    x = (0.5 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)))[None]
    y = _sat(x, path=path, drive_db=12.0, asymmetry=1.0, mix=1.0)[0]
    power = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(y.shape[-1], 1 / FS)
    assert 10 * np.log10(power[freqs < 30].sum() / power.sum()) < -40.0


# ---------------------------------------------------------------------------
# harmonics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_asymmetry_adds_even_harmonics_and_symmetry_does_not(path):
    """12 dB drive on a 1 kHz sine: asymmetry 0.5 gives a 2nd harmonic > -40 dB; asymmetry 0 keeps evens < -80 dB."""
    f0 = 1000.0
    n = 2**16
    x = _sine(f0, 0.5, n)[None]
    evens = [2 * f0, 4 * f0, 6 * f0]
    y_sym = _sat(x, path=path, drive_db=12.0, asymmetry=0.0, mix=1.0)[0]
    y_asym = _sat(x, path=path, drive_db=12.0, asymmetry=0.5, mix=1.0)[0]
    spec_sym, freqs = _spectrum_db(y_sym)
    spec_asym, _ = _spectrum_db(y_asym)
    assert _harmonic_db(spec_sym, freqs, f0) == 0.0  # the fundamental is the largest component
    assert _harmonic_db(spec_asym, freqs, f0) == 0.0
    assert _harmonic_db(spec_asym, freqs, 2 * f0) > -40.0
    assert max(_harmonic_db(spec_sym, freqs, f) for f in evens) < -80.0
    # and the symmetric curve really does distort: odd harmonics are there
    assert _harmonic_db(spec_sym, freqs, 3 * f0) > -60.0


@pytest.mark.parametrize("f0, drive_db, limit_db", [(3000.0, 12.0, -120.0), (5000.0, 12.0, -120.0), (5000.0, 24.0, -50.0)])
@pytest.mark.parametrize("path", PATHS)
def test_aliasing_as_the_readme_states_for_loud_sines(f0, drive_db, limit_db, path):
    """A sine at amplitude 0.99, 44.1 kHz: every non-harmonic component >= 120 dB under the fundamental at 12 dB drive,
    >= 50 dB at full drive (the README's numbers; measured -121 and -53 dB at 5 kHz)."""
    n = 2**16
    x = _sine(f0, 0.99, n)[None]
    y = _sat(x, path=path, drive_db=drive_db, asymmetry=0.0, mix=1.0)[0]
    spec, freqs = _spectrum_db(y)
    assert _harmonic_db(spec, freqs, f0) == 0.0
    near = np.zeros_like(freqs, dtype=bool)
    for k in range(0, int(freqs[-1] // f0) + 1):  # DC and every true harmonic below Nyquist
        near |= np.abs(freqs - k * f0) <= 30.0  # Blackman-Harris main lobe is +-4 bins = +-2.7 Hz; 30 Hz is generous
    # the drive must actually create harmonics, else there is nothing to alias
    assert _harmonic_db(spec, freqs, 3 * f0) > -40.0
    worst = float(spec[~near].max())
    assert worst < limit_db, f"aliased component at {freqs[~near][np.argmax(spec[~near])]:.0f} Hz: {worst:.1f} dB"


@pytest.mark.parametrize("fs", [22050, 48000, 96000])
def test_any_rate_keeps_shape_and_level(fs):
    """Other sample rates (and stereo) keep the shape and, at rest, stay transparent."""
    x = np.stack([_sine(300.0, 0.5, fs, fs), _sine(500.0, 0.25, fs, fs)])
    y = _sat(x, fs=fs, drive_db=0.0, asymmetry=0.0, mix=1.0)
    assert y.shape == x.shape
    assert _rms_db(y - x) - _rms_db(x) < -30.0


@pytest.mark.parametrize("n", [1, 37, 1000, 2**15 + 3, 200_001])
def test_oversampling_equals_torchaudio_resample(n):
    """The cached, piecewise polyphase resamplers give torchaudio's own resampling of the same kernel."""
    import importlib

    import torchaudio.functional as AF

    S = importlib.import_module("dmst.effects.saturation")
    x = torch.from_numpy(np.random.default_rng(n).standard_normal((2, 1, n)).astype(np.float32))
    up = S._upsample(x)
    want_up = AF.resample(x, 1, S.OVERSAMPLE, **S._RESAMPLE)
    assert up.shape == want_up.shape
    torch.testing.assert_close(up, want_up, rtol=0, atol=1e-5)
    down = S._downsample(up)
    want_down = AF.resample(up, S.OVERSAMPLE, 1, **S._RESAMPLE)
    assert down.shape == want_down.shape == x.shape
    torch.testing.assert_close(down, want_down, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000, 20_000])  # within a step, whole steps, and split over threads
def test_compiled_fir_equals_numpy_correlation(n):
    """The compiled FIR loop (renderer's resampling) against numpy: the valid correlation, summed over streams."""
    from dmst.effects._fir import fir_sum

    rng = np.random.default_rng(n)
    for streams, taps in ((1, 1), (1, 37), (2, 37), (4, 5)):
        x = rng.standard_normal((streams, n + taps - 1)).astype(np.float32)
        h = rng.standard_normal((streams, taps)).astype(np.float32)
        want = sum(np.correlate(x[i].astype(np.float64), h[i].astype(np.float64), mode="valid") for i in range(streams))
        got = fir_sum(torch.from_numpy(x), torch.from_numpy(h)).numpy()
        assert got.shape == (n,)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.sqrt(streams * taps))


@pytest.mark.parametrize("n", [1, 37, 1000, 200_001])
def test_phase_split_resampling_equals_torchaudio(n):
    """The renderer's compiled resamplers keep the up-sampled signal as its phases: interleaved,
    they are torchaudio's up-sampling, and down-sampling them is torchaudio's down-sampling."""
    import importlib

    import torchaudio.functional as AF

    from dmst.effects.resample import downsample_phases, phase_margins, upsample_phases

    S = importlib.import_module("dmst.effects.saturation")
    x = torch.from_numpy(np.random.default_rng(n).standard_normal((2, n)).astype(np.float32))
    front, back = phase_margins(S.OVERSAMPLE, n, **S._RESAMPLE)
    phases = upsample_phases(x, S.OVERSAMPLE, front, back, **S._RESAMPLE)
    assert phases.shape == (2, S.OVERSAMPLE, front + n + back)
    assert not phases[..., :front].any() and not phases[..., front + n:].any()  # zero margins
    want_up = AF.resample(x, 1, S.OVERSAMPLE, **S._RESAMPLE)
    torch.testing.assert_close(phases[..., front: front + n].transpose(1, 2).reshape(2, -1), want_up, rtol=0, atol=1e-5)
    down = downsample_phases(phases, n, S.OVERSAMPLE, **S._RESAMPLE)
    torch.testing.assert_close(down, AF.resample(want_up, S.OVERSAMPLE, 1, **S._RESAMPLE), rtol=0, atol=1e-5)


def test_compiled_waveshaper_equals_the_differentiable_one():
    """Rendering (no gradient: compiled, in blocks of 2**20) and training (autograd) shape a long
    stereo batch alike, item by item, with the drive and bias of each item."""
    import importlib

    S = importlib.import_module("dmst.effects.saturation")
    n = S.COMPILED_BLOCK_LENGTH + 5000  # two blocks: the seam is inside
    x = torch.from_numpy(0.5 * np.random.default_rng(3).standard_normal((2, 2, n)).astype(np.float32))
    gain = torch.tensor([4.0, 1.5]).reshape(2, 1, 1)
    bias = torch.tensor([0.3, -0.1]).reshape(2, 1, 1)
    rendered = S.waveshape(x, gain, bias)
    trained = S.waveshape(x, gain.clone().requires_grad_(), bias).detach()
    assert trained.shape == rendered.shape == x.shape
    torch.testing.assert_close(rendered, trained, rtol=0, atol=2e-6)
    assert (rendered - x).abs().max() > 0.1  # it shaped
