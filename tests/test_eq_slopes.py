"""The high-pass's selectable slope (6, 12, 18, 24 dB/octave) against the analytic Butterworth magnitude.

A digital Butterworth made by the bilinear transform with the corner pre-warped has
exactly |H|^2 = 1 / (1 + (tan(w0 / 2) / tan(w / 2))^(2N)) for a high-pass of order N:
that formula (not the coefficients) is the reference.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmst import schema
from dmst.effects.eq import HIGH_PASS_SLOPES_DB, eq_sos, parametric_eq

FS = 48000
NEUTRAL = {p.name: p.default for p in schema.SCHEMA if p.group == "eq" and not p.discrete}  # the slope: each test sets it


def _params(**over):
    return {k: torch.tensor([v], dtype=torch.float64) for k, v in {**NEUTRAL, **over}.items()}


def butterworth_high_pass_db(f, fc, order, fs=FS):
    ratio = math.tan(math.pi * fc / fs) / np.tan(np.pi * np.asarray(f) / fs)
    return -10 * np.log10(1 + ratio ** (2 * order))


@pytest.mark.parametrize("slope", HIGH_PASS_SLOPES_DB)
@pytest.mark.parametrize("grad", [False, True])
def test_magnitude_is_butterworth_of_order_slope_over_6(slope, grad):
    n = 2**16
    x = torch.zeros(1, 1, n, dtype=torch.float64)
    x[0, 0, 0] = 1.0
    fc = 200.0
    with torch.set_grad_enabled(grad):
        h = parametric_eq(x.clone().requires_grad_(grad), FS, high_pass_slope_db=slope, **_params(high_pass_freq_hz=fc))
    f = np.fft.rfftfreq(n, 1 / FS)
    pick = (f > 15) & (f < 2000)  # below the 18 kHz low-pass's reach; the other bands are at 0 dB
    measured = 20 * np.log10(np.abs(np.fft.rfft(h.detach()[0, 0].numpy()))[pick])
    assert np.abs(measured - butterworth_high_pass_db(f[pick], fc, slope // 6)).max() < 0.01
    # The slope in the stop band: 6 x order dB per octave (between fc/16 and fc/8).
    at = [int(round(fc / k * n / FS)) for k in (16, 8)]
    spectrum = np.abs(np.fft.rfft(h.detach()[0, 0].numpy()))
    assert 20 * np.log10(spectrum[at[1]] / spectrum[at[0]]) == pytest.approx(slope, abs=0.3)


def test_12_db_per_octave_is_the_unchanged_default_path():
    x = torch.randn(2, 1, 5000, generator=torch.Generator().manual_seed(0))
    p = _params(high_pass_freq_hz=90.0, presence_gain_db=3.0)
    assert torch.equal(eq_sos(FS, **p), eq_sos(FS, high_pass_slope_db=12, **p))
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            a = parametric_eq(x.clone().requires_grad_(grad), FS, **p)
            b = parametric_eq(x.clone().requires_grad_(grad), FS, high_pass_slope_db=torch.tensor([12.0, 12.0]), **p)
        assert torch.equal(a, b)


def test_items_with_different_slopes_batch_together():
    x = torch.randn(1, 1, 5000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    slopes = torch.tensor([6.0, 24.0, 12.0, 18.0])
    batch = parametric_eq(x.expand(4, 1, -1).contiguous(), FS, high_pass_slope_db=slopes, **_params(high_pass_freq_hz=120.0))
    for i, s in enumerate(slopes.tolist()):
        alone = parametric_eq(x, FS, high_pass_slope_db=s, **_params(high_pass_freq_hz=120.0))
        assert torch.allclose(batch[i], alone[0], atol=1e-12)


def test_unknown_slope_is_refused():
    with pytest.raises(ValueError, match="6, 12, 18, 24"):
        eq_sos(FS, high_pass_slope_db=9, **_params())


@pytest.mark.parametrize("fs", [44100, 48000])
@pytest.mark.parametrize("slope", HIGH_PASS_SLOPES_DB)
@pytest.mark.parametrize("path", ["render", "train"])
def test_the_eq_at_each_slope_is_scipys_butterworth_of_order_slope_over_6(fs, slope, path):
    """Noise through the whole EQ (neutral bands, high-pass at 150 Hz, low-pass at 18 kHz) equals scipy.signal.sosfilt
    through scipy's own Butterworth designs: a high-pass of order slope / 6 and the 2nd-order low-pass (the cookbook's
    Q 0.707 low-pass is that filter), to -120 dB re the signal, on the render path (float32, as `dmst render`) and
    the training path (float64 with a gradient)."""
    import scipy.signal as ss

    n = fs // 2
    x = np.random.default_rng(slope).standard_normal(n)
    reference = ss.sosfilt(np.vstack([ss.butter(slope // 6, 150.0, "highpass", fs=fs, output="sos"),
                                      ss.butter(2, 18000.0, "lowpass", fs=fs, output="sos")]), x)
    params = dict(_params(high_pass_freq_hz=150.0), high_pass_slope_db=torch.tensor([float(slope)]))
    if path == "render":
        with torch.no_grad():  # float32 audio (its own rounding is about -140 dB re the signal)
            y = parametric_eq(torch.tensor(x, dtype=torch.float32)[None, None], fs, **params)
    else:
        y = parametric_eq(torch.tensor(x)[None, None].requires_grad_(True), fs, **params)
    error = y.detach().double()[0, 0].numpy() - reference
    error_db = 10 * np.log10(np.mean(error**2) / np.mean(reference**2))
    assert error_db < -120.0, f"{error_db:.1f} dB"


def test_a_v2_settings_file_renders_bit_identically_through_the_v2_eq():
    """A v2 file migrates with the slope at 12, and the whole console then renders exactly (torch.equal) what it
    renders with no slope at all, which is the v2 EQ's code path (one Q 0.707 section, eq_sos's seven rows)."""
    from pathlib import Path

    import soundfile as sf

    from dmst.console import render

    root = Path(__file__).resolve().parents[1]
    settings = schema.from_json((root / "tests" / "data" / "v2_settings.json").read_text())
    assert settings["eq"]["high_pass_slope_db"] == 12.0
    x, sr = sf.read(root / "examples" / "sing_me_a_song.wav", dtype="float32", always_2d=True)
    x = torch.from_numpy(x[:sr].T.copy())[None]
    params = schema.stack([settings])
    without = {k: v for k, v in params.items() if k != "eq.high_pass_slope_db"}
    with torch.no_grad():
        assert torch.equal(render(x, sr, params), render(x, sr, without))


def test_dmst_fit_holds_the_slope_it_starts_from():
    """dmst fit --high-pass-slope N starts from the defaults with the slope at N; a choice has no gradient, so the
    fitted settings keep N exactly."""
    from dmst.fit import fit_params

    g = torch.Generator().manual_seed(0)
    raw = 0.1 * torch.randn(1, 32000, generator=g)
    mixed = 0.1 * torch.randn(1, 32000, generator=g)
    init = schema.default_dict()
    init["eq"]["high_pass_slope_db"] = 24.0
    params, _ = fit_params(raw, mixed, 16000, steps=2, init=init)
    assert params["eq"]["high_pass_slope_db"] == 24.0
