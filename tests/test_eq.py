"""The console EQ against an independent RBJ-cookbook implementation run by scipy.

The reference coefficients are computed here in numpy straight from the W3C Audio EQ
Cookbook formulas (R. Bristow-Johnson) and applied with ``scipy.signal.sosfilt``
(recursive filtering); dmst applies its cascade by FFT frequency sampling.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal as ss
import torch

from dmst import schema
from dmst.effects import eq_sos, parametric_eq

RATES = (44100, 48000)
EQ_PARAMS = [p for p in schema.SCHEMA if p.group == "eq" and not p.discrete]  # the slope: tests/test_eq_slopes.py
EQ_NAMES = [p.name for p in EQ_PARAMS]
RANGE = {p.name: (p.minimum, p.maximum) for p in EQ_PARAMS}
MIN_ERROR_DB = 60.0  # error energy must be at least this far below the signal energy


# ---------------------------------------------------------------------------
# Independent reference: RBJ cookbook in numpy
# ---------------------------------------------------------------------------

def rbj_biquad(kind: str, f0: float, fs: float, gain_db: float = 0.0, q: float = 1 / math.sqrt(2), shelf_slope: float = 1.0):
    """One cookbook biquad as a normalised SOS row [b0, b1, b2, 1, a1, a2] (numpy float64)."""
    A = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * f0 / fs
    cw, sw = math.cos(w0), math.sin(w0)
    if kind in ("low_shelf", "high_shelf"):
        alpha = sw / 2.0 * math.sqrt((A + 1.0 / A) * (1.0 / shelf_slope - 1.0) + 2.0)
    else:
        alpha = sw / (2.0 * q)
    if kind == "high_pass":
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
        a = [1 + alpha, -2 * cw, 1 - alpha]
    elif kind == "low_pass":
        b = [(1 - cw) / 2, 1 - cw, (1 - cw) / 2]
        a = [1 + alpha, -2 * cw, 1 - alpha]
    elif kind == "peaking":
        b = [1 + alpha * A, -2 * cw, 1 - alpha * A]
        a = [1 + alpha / A, -2 * cw, 1 - alpha / A]
    elif kind == "low_shelf":
        s = 2 * math.sqrt(A) * alpha
        b = [A * ((A + 1) - (A - 1) * cw + s), 2 * A * ((A - 1) - (A + 1) * cw), A * ((A + 1) - (A - 1) * cw - s)]
        a = [(A + 1) + (A - 1) * cw + s, -2 * ((A - 1) + (A + 1) * cw), (A + 1) + (A - 1) * cw - s]
    elif kind == "high_shelf":
        s = 2 * math.sqrt(A) * alpha
        b = [A * ((A + 1) + (A - 1) * cw + s), -2 * A * ((A - 1) + (A + 1) * cw), A * ((A + 1) + (A - 1) * cw - s)]
        a = [(A + 1) - (A - 1) * cw + s, 2 * ((A - 1) - (A + 1) * cw), (A + 1) - (A - 1) * cw - s]
    else:
        raise ValueError(kind)
    b, a = np.array(b) / a[0], np.array(a) / a[0]
    return np.concatenate([b, a])


def reference_sos(p: dict, fs: float) -> np.ndarray:
    """The documented chain: HP, low shelf, 3 bells, high shelf, LP; corners capped at 0.45 fs."""
    f = lambda v: min(v, 0.45 * fs)  # noqa: E731  (documented: corners above 0.45 fs are lowered to it)
    bw = 1 / math.sqrt(2)
    return np.stack([
        rbj_biquad("high_pass", f(p["high_pass_freq_hz"]), fs, q=bw),
        rbj_biquad("low_shelf", f(p["low_shelf_freq_hz"]), fs, p["low_shelf_gain_db"]),
        rbj_biquad("peaking", f(p["low_mid_freq_hz"]), fs, p["low_mid_gain_db"], p["low_mid_q"]),
        rbj_biquad("peaking", f(p["mid_freq_hz"]), fs, p["mid_gain_db"], p["mid_q"]),
        rbj_biquad("peaking", f(p["presence_freq_hz"]), fs, p["presence_gain_db"], p["presence_q"]),
        rbj_biquad("high_shelf", f(p["high_shelf_freq_hz"]), fs, p["high_shelf_gain_db"]),
        rbj_biquad("low_pass", f(p["low_pass_freq_hz"]), fs, q=bw),
    ])


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

NEUTRAL = {
    "high_pass_freq_hz": 16.0, "low_shelf_freq_hz": 150.0, "low_shelf_gain_db": 0.0,
    "low_mid_freq_hz": 300.0, "low_mid_gain_db": 0.0, "low_mid_q": 1.0,
    "mid_freq_hz": 1200.0, "mid_gain_db": 0.0, "mid_q": 1.0,
    "presence_freq_hz": 4500.0, "presence_gain_db": 0.0, "presence_q": 1.0,
    "high_shelf_freq_hz": 8000.0, "high_shelf_gain_db": 0.0, "low_pass_freq_hz": 20000.0,
}

TYPICAL_VOCAL = {
    "high_pass_freq_hz": 90.0, "low_shelf_freq_hz": 180.0, "low_shelf_gain_db": -2.5,
    "low_mid_freq_hz": 350.0, "low_mid_gain_db": -3.0, "low_mid_q": 1.4,
    "mid_freq_hz": 1800.0, "mid_gain_db": 1.5, "mid_q": 0.9,
    "presence_freq_hz": 5000.0, "presence_gain_db": 3.0, "presence_q": 1.2,
    "high_shelf_freq_hz": 10000.0, "high_shelf_gain_db": 2.5, "low_pass_freq_hz": 18000.0,
}


def _extreme_settings() -> dict[str, dict]:
    """All minima, all maxima, and each band's frequency at both ends with max gain and max Q."""
    out = {
        "all_min": {n: lo for n, (lo, hi) in RANGE.items()},
        "all_max": {n: hi for n, (lo, hi) in RANGE.items()},
    }
    bands = {
        "high_pass": ("high_pass_freq_hz", None, None),
        "low_shelf": ("low_shelf_freq_hz", "low_shelf_gain_db", None),
        "low_mid": ("low_mid_freq_hz", "low_mid_gain_db", "low_mid_q"),
        "mid": ("mid_freq_hz", "mid_gain_db", "mid_q"),
        "presence": ("presence_freq_hz", "presence_gain_db", "presence_q"),
        "high_shelf": ("high_shelf_freq_hz", "high_shelf_gain_db", None),
        "low_pass": ("low_pass_freq_hz", None, None),
    }
    for band, (fk, gk, qk) in bands.items():
        for end, idx in (("lo", 0), ("hi", 1)):
            for sign in (+1, -1) if gk else (+1,):
                p = dict(NEUTRAL)
                p[fk] = RANGE[fk][idx]
                if gk:
                    p[gk] = RANGE[gk][1] if sign > 0 else RANGE[gk][0]
                if qk:
                    p[qk] = RANGE[qk][1]
                out[f"{band}_{end}" + ("" if not gk else ("_boost" if sign > 0 else "_cut"))] = p
    return out


EXTREMES = _extreme_settings()


def _tensors(p: dict, dtype=torch.float64) -> dict:
    return {k: torch.tensor([v], dtype=dtype) for k, v in p.items()}


def _stack(settings: list[dict]) -> dict:
    return {k: torch.tensor([s[k] for s in settings], dtype=torch.float64) for k in EQ_NAMES}


def _error_db(y: np.ndarray, ref: np.ndarray) -> float:
    return 10 * math.log10(max(np.sum((y - ref) ** 2), 1e-300) / np.sum(ref**2))


def _white(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((channels, n))


# ---------------------------------------------------------------------------
# Coefficients
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("name", ["typical"] + sorted(EXTREMES))
def test_coefficients_match_cookbook(fs, name):
    """dmst's eq_sos equals the numpy cookbook coefficients (1e-9) for typical and extreme settings."""
    p = TYPICAL_VOCAL if name == "typical" else EXTREMES[name]
    got = eq_sos(fs, **_tensors(p))[0].numpy()
    np.testing.assert_allclose(got, reference_sos(p, fs), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------
# Filtering vs scipy.signal.sosfilt, on both paths: "render" (no gradient, CPU: the
# compiled recursion of dmst.effects._biquads) and "train" (gradients: FFT convolution)
# ---------------------------------------------------------------------------

PATHS = ["render", "train"]


def _eq(path: str, x: torch.Tensor, fs: int, **params) -> torch.Tensor:
    """parametric_eq on the given path; "train" asks for gradients, as training does."""
    if path == "train":
        return parametric_eq(x.clone().requires_grad_(), fs, **params).detach()
    return parametric_eq(x, fs, **params)


def _limit_db(path: str, dtype=torch.float64) -> float:
    """How far below the signal the error must be: the recursion is exact up to rounding."""
    if path == "train":
        return MIN_ERROR_DB
    return 150.0 if dtype == torch.float64 else 120.0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fs", RATES)
def test_typical_and_extremes_match_sosfilt(path, fs):
    """White noise (1 s) through every extreme/typical setting: error >= 60 dB below signal vs sosfilt."""
    settings = {"typical": TYPICAL_VOCAL, **EXTREMES}
    names = list(settings)
    n = fs  # one second
    x = _white(n, seed=1)[0]
    y = _eq(path, torch.tensor(x).expand(len(names), 1, n).contiguous(), fs, **_stack([settings[k] for k in names]))
    errors = {}
    for i, k in enumerate(names):
        ref = ss.sosfilt(reference_sos(settings[k], fs), x)
        errors[k] = _error_db(y[i, 0].numpy(), ref)
    worst = max(errors, key=errors.get)
    assert errors[worst] < -_limit_db(path), f"{worst}: error {errors[worst]:.1f} dB re signal"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fs", [16000, 22050, 32000, 88200, 96000])
def test_matches_sosfilt_to_130_db_at_other_rates(path, fs):
    """The README's -130 dB (float64), at the other common rates: every extreme and the typical setting, 0.25 s of noise.

    (At 192 kHz the training path's 2**16-sample impulse response is only 0.34 s and a 16 Hz
    high-pass has not decayed: -86 dB there, as the README says.)
    """
    settings = {"typical": TYPICAL_VOCAL, **EXTREMES}
    names = list(settings)
    n = fs // 4
    x = _white(n, seed=5)[0]
    y = _eq(path, torch.tensor(x).expand(len(names), 1, n).contiguous(), fs, **_stack([settings[k] for k in names]))
    for i, k in enumerate(names):
        err = _error_db(y[i, 0].numpy(), ss.sosfilt(reference_sos(settings[k], fs), x))
        assert err < -130.0, f"{k} at {fs} Hz: {err:.1f} dB"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fs", RATES)
def test_float32_signal_matches_sosfilt(path, fs):
    """The float32 path (the console's dtype) also stays >= 60 dB under the signal at the extremes."""
    x = _white(fs // 2, seed=2)[0]
    for p in (TYPICAL_VOCAL, EXTREMES["all_max"], EXTREMES["low_mid_lo_boost"], EXTREMES["high_pass_lo"]):
        y = _eq(path, torch.tensor(x, dtype=torch.float32)[None, None], fs, **_tensors(p, torch.float32))
        ref = ss.sosfilt(reference_sos(p, fs), x)
        assert _error_db(y[0, 0].double().numpy(), ref) < -_limit_db(path, torch.float32)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fs", RATES)
def test_long_signal_overlap_add_matches_sosfilt(path, fs):
    """A signal longer than 2**16 samples matches sosfilt at the extremes (training: overlap-add over several
    blocks; render: the recursion's lanes, whose chunk seams fall inside it)."""
    n = 2**18 + 2**16 + 777  # crosses a block boundary and ends mid-block
    x = _white(n, seed=3)[0]
    names = ["typical", "all_min", "all_max", "low_mid_lo_boost", "high_pass_lo", "low_pass_lo"]
    settings = [TYPICAL_VOCAL if k == "typical" else EXTREMES[k] for k in names]
    y = _eq(path, torch.tensor(x).expand(len(names), 1, n).contiguous(), fs, **_stack(settings))
    for i, (k, p) in enumerate(zip(names, settings)):
        ref = ss.sosfilt(reference_sos(p, fs), x)
        err = _error_db(y[i, 0].numpy(), ref)
        assert err < -_limit_db(path), f"{k}: {err:.1f} dB"
        # the block seams must not stand out either: check the error around each seam
        for seam in (2**18,):
            sl = slice(seam - 4096, seam + 4096)
            assert _error_db(y[i, 0].numpy()[sl], ref[sl]) < -_limit_db(path), f"{k}: seam at {seam}"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [1, 64, 1000, 4096])
def test_short_signals_match_sosfilt(path, n):
    """Short clips (down to one sample) match sosfilt too, including a Q 8 bell at 100 Hz."""
    fs = 44100
    x = _white(n, seed=4)[0]
    for p in (TYPICAL_VOCAL, EXTREMES["low_mid_lo_boost"], EXTREMES["all_max"]):
        y = _eq(path, torch.tensor(x)[None, None], fs, **_tensors(p))
        ref = ss.sosfilt(reference_sos(p, fs), x)
        assert _error_db(y[0, 0].numpy(), ref) < -_limit_db(path)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fs", RATES)
def test_batch_items_get_their_own_settings_in_stereo(path, fs):
    """Batch of 2 stereo items with different settings: each channel matches sosfilt with its own item's EQ."""
    n = fs
    x = np.stack([_white(n, 2, seed=5), _white(n, 2, seed=6)])  # (2, 2, n)
    settings = [TYPICAL_VOCAL, EXTREMES["all_max"]]
    y = _eq(path, torch.tensor(x), fs, **_stack(settings)).numpy()
    assert y.shape == x.shape
    for b in range(2):
        sos = reference_sos(settings[b], fs)
        for c in range(2):
            assert _error_db(y[b, c], ss.sosfilt(sos, x[b, c])) < -_limit_db(path)


# ---------------------------------------------------------------------------
# Magnitude response vs analytic expectations
# ---------------------------------------------------------------------------

def _measured_response_db(p: dict, fs: int, freqs, n: int = 2**15) -> np.ndarray:
    """Magnitude (dB) of dmst's impulse response evaluated by a direct DTFT at ``freqs``."""
    impulse = torch.zeros(1, 1, n, dtype=torch.float64)
    impulse[..., 0] = 1.0
    h = parametric_eq(impulse, fs, **_tensors(p))[0, 0].numpy()
    k = np.arange(n)
    H = np.array([np.sum(h * np.exp(-2j * np.pi * f / fs * k)) for f in freqs])
    return 20 * np.log10(np.abs(H))


def _others_db(p: dict, fs: int, freqs, skip: int) -> np.ndarray:
    """Response (dB) of every section except ``skip``, from the numpy reference via scipy.sosfreqz."""
    sos = np.delete(reference_sos(p, fs), skip, axis=0)
    _, H = ss.sosfreqz(sos, worN=np.asarray(freqs, dtype=float), fs=fs)
    return 20 * np.log10(np.abs(H))


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize(
    "band,section,freq,gain",
    [
        ("low_mid", 2, 100.0, 12.0), ("low_mid", 2, 300.0, -9.0), ("mid", 3, 1200.0, 6.0),
        ("mid", 3, 4000.0, -12.0), ("presence", 4, 4500.0, 9.0), ("presence", 4, 10000.0, -6.0),
    ],
)
def test_peaking_gain_at_centre(fs, band, section, freq, gain):
    """A bell's gain at its centre frequency equals gain_db within 0.05 dB (other sections accounted for)."""
    p = dict(NEUTRAL, **{f"{band}_freq_hz": freq, f"{band}_gain_db": gain, f"{band}_q": 2.0})
    measured = _measured_response_db(p, fs, [freq])[0]
    assert abs(measured - _others_db(p, fs, [freq], section)[0] - gain) < 0.05


@pytest.mark.parametrize("fs", RATES)
def test_high_pass_is_butterworth(fs):
    """High-pass: -3.01 dB at cutoff, analog-Butterworth level below, ~12 dB/octave two and three octaves down."""
    fc = 400.0
    p = dict(NEUTRAL, high_pass_freq_hz=fc)
    freqs = [fc, fc / 4, fc / 8]
    got = _measured_response_db(p, fs, freqs) - _others_db(p, fs, freqs, 0)
    assert abs(got[0] - (-10 * math.log10(2))) < 0.05
    # analog 2nd-order Butterworth: |H|^2 = r^4 / (1 + r^4), r = f / fc (warping is negligible this low)
    for f, g in zip(freqs[1:], got[1:]):
        r = f / fc
        assert abs(g - 10 * math.log10(r**4 / (1 + r**4))) < 0.1
    slope = got[1] - got[2]
    assert 11.5 < slope < 12.5, f"{slope:.2f} dB/octave"


@pytest.mark.parametrize("fs", RATES)
def test_low_pass_is_minus_3_db_at_cutoff(fs):
    """Low-pass: -3.01 dB at cutoff and steeper than 10 dB/octave above it (bilinear, towards Nyquist)."""
    fc = 4000.0
    p = dict(NEUTRAL, low_pass_freq_hz=fc, presence_freq_hz=1500.0, high_shelf_freq_hz=3000.0)
    freqs = [fc, 2 * fc, 4 * fc]
    got = _measured_response_db(p, fs, freqs) - _others_db(p, fs, freqs, 6)
    assert abs(got[0] - (-10 * math.log10(2))) < 0.05
    assert got[1] - got[2] > 10.0


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("gain", [-12.0, 6.0, 12.0])
def test_shelves_reach_gain_and_half_gain_at_corner(fs, gain):
    """Low shelf: full gain at DC (20 Hz) and half the dB gain at its corner; high shelf: same at Nyquist side."""
    p = dict(NEUTRAL, high_pass_freq_hz=16.0, low_shelf_freq_hz=300.0, low_shelf_gain_db=gain)
    freqs = [300.0, 20.0]
    got = _measured_response_db(p, fs, freqs) - _others_db(p, fs, freqs, 1)
    assert abs(got[0] - gain / 2) < 0.05
    assert abs(got[1] - gain) < 0.2  # 20 Hz is not quite DC: within 0.2 dB of the shelf plateau

    p = dict(NEUTRAL, high_shelf_freq_hz=6000.0, high_shelf_gain_db=gain)
    got = _measured_response_db(p, fs, [6000.0])[0] - _others_db(p, fs, [6000.0], 5)[0]
    assert abs(got - gain / 2) < 0.05


@pytest.mark.parametrize("n", [20000, 200000])
def test_zero_phase_matches_sosfiltfilt(n):
    """sosfilt_fft(zero_phase=True) equals scipy's forward-backward filtering away from the edges (< -60 dB)."""
    from dmst.effects.eq import biquad, sosfilt_fft

    sos = torch.cat([biquad("high_pass", 15.0, 0.0, 0.7071, 44100), biquad("peaking", 300.0, 6.0, 4.0, 44100)]).reshape(1, 2, 6)
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 1, n)))
    y = sosfilt_fft(x, sos, zero_phase=True)[0, 0].numpy()
    ref = ss.sosfiltfilt(sos[0].numpy(), x[0, 0].numpy(), padtype=None)
    mid = slice(n // 4, 3 * n // 4)
    assert 10 * np.log10(np.sum((y[mid] - ref[mid]) ** 2) / np.sum(ref[mid] ** 2)) < -60  # scipy's own edge transients reach in


# ---------------------------------------------------------------------------
# The compiled recursive biquads used without gradients (loudness meter, DC blocker)
# ---------------------------------------------------------------------------

def _random_cascades(batch: int, fs: int = 44100) -> torch.Tensor:
    settings = [dict(schema.default_dict()["eq"]) for _ in range(batch)]
    settings[0].update(high_pass_freq_hz=80.0, mid_gain_db=6.0, mid_q=4.0, high_shelf_gain_db=-5.0)
    settings[-1].update(low_shelf_gain_db=8.0, presence_gain_db=-9.0, low_pass_freq_hz=9000.0)
    return eq_sos(fs, **_stack(settings))


@pytest.mark.parametrize("backward", [False, True])
def test_compiled_sosfilt_equals_scipy(backward):
    from dmst.effects._biquads import sosfilt

    sos = _random_cascades(2)  # a different 7-section cascade per item
    x = torch.from_numpy(_white(30000, channels=2, seed=3)).reshape(1, 2, -1).expand(2, -1, -1).contiguous()
    y = sosfilt(x, sos, backward=backward)
    for b in range(2):
        xb = x[b].numpy()[..., ::-1] if backward else x[b].numpy()
        want = ss.sosfilt(sos[b].numpy(), xb, axis=-1)
        want = want[..., ::-1] if backward else want
        # Lanes that start part-way (see _biquads) round differently from one pass: ~1e-12 here.
        np.testing.assert_allclose(y[b].numpy(), want, rtol=0, atol=1e-10)
    y32 = sosfilt(x.float(), sos, backward=backward)
    assert y32.dtype == torch.float32
    np.testing.assert_allclose(y32.double().numpy(), y.numpy(), rtol=0, atol=2e-6)
    assert not torch.equal(y, x)  # it filtered


@pytest.mark.parametrize("n", [20000, 2_500_000])  # one lane group, and two with warm-ups (a long file)
def test_compiled_sosfiltfilt_is_the_zero_phase_operator(n):
    """Forward then backward with a zero tail: scipy's two passes on the zero-extended signal, and the FFT path."""
    from dmst.effects._biquads import sosfiltfilt
    from dmst.effects.eq import sosfilt_fft

    from dmst.effects.saturation import dc_block_sos

    fs, tail = 44100, 22050
    sos = dc_block_sos(fs, 1)
    x = torch.from_numpy(_white(n, seed=4)).reshape(1, 1, -1) + 0.3  # a DC offset to remove
    y = sosfiltfilt(x, sos, tail)
    padded = np.concatenate([x[0, 0].numpy(), np.zeros(tail)])
    want = ss.sosfilt(sos[0].numpy(), ss.sosfilt(sos[0].numpy(), padded)[::-1])[::-1][:n]
    np.testing.assert_allclose(y[0, 0].numpy(), want, rtol=0, atol=1e-10)
    if n <= 20000:  # the FFT path's single-block case
        np.testing.assert_allclose(y.numpy(), sosfilt_fft(x, sos, zero_phase=True).numpy(), rtol=0, atol=1e-9)
    assert abs(float(y[..., n // 4: 3 * n // 4].mean())) < 0.01  # the offset is gone in the middle


@pytest.mark.parametrize("backward", [False, True])
def test_compiled_sosfilt_long_signal_split_into_lanes_and_threads(backward):
    """A 3 M-sample row is cut into 2 x LANES chunks (two kernel calls) that each start with a warm-up:
    the seams must not show against one scipy pass, for the slowest settings of the EQ's range."""
    from dmst.effects._biquads import LANES, _plan, sosfilt, warmup_length

    fs, n = 44100, 3_000_000
    sos = eq_sos(fs, **_tensors(EXTREMES["high_pass_lo"]))
    groups, chunk, warmup = _plan(n, warmup_length(sos))
    assert groups == 2 and 0 < warmup < chunk  # the split path, not the exact fallback
    x = torch.from_numpy(_white(n, seed=7)).reshape(1, 1, n)
    y = sosfilt(x, sos, backward=backward)[0, 0].numpy()
    xs = x[0, 0].numpy()[::-1] if backward else x[0, 0].numpy()
    want = ss.sosfilt(sos[0].numpy(), xs)
    want = want[::-1] if backward else want
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-10)
    seams = [c * chunk for c in range(1, 2 * LANES)]
    assert max(np.abs(y[s - 4: s + 4] - want[s - 4: s + 4]).max() for s in seams) < 1e-10


def test_compiled_sosfilt_slow_filter_runs_exactly():
    """A pole so close to the unit circle that it does not forget within a chunk: every lane then warms
    up from the signal's start, which is one sequential pass (and a non-decaying filter still runs)."""
    from dmst.effects._biquads import _plan, sosfilt, warmup_length

    n = 100_000
    slow = torch.tensor([[[1.0, 0.0, 0.0, 1.0, -0.99999, 0.0]]], dtype=torch.float64)  # one-pole leaky integrator
    integrator = torch.tensor([[[1.0, 0.0, 0.0, 1.0, -1.0, 0.0]]], dtype=torch.float64)
    assert warmup_length(integrator) is None
    x = torch.from_numpy(_white(n, seed=8)).reshape(1, 1, n)
    for sos in (slow, integrator):
        _, chunk, warmup = _plan(n, warmup_length(sos))
        assert warmup >= n - chunk  # the exact fallback
        want = ss.sosfilt(sos[0].numpy(), x[0, 0].numpy())
        np.testing.assert_allclose(sosfilt(x, sos)[0, 0].numpy(), want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_compiled_sosfilt_rejects_integer_audio():
    from dmst.effects._biquads import sosfilt

    with pytest.raises(TypeError, match="float32 or float64"):
        sosfilt(torch.zeros(1, 1, 10, dtype=torch.int32), _random_cascades(1))
