"""The compiled kernels on two threads, as `dmst render` runs them (tests/conftest.py pins one thread elsewhere).

The thread pool (``_llvm.run_jobs``) and the work splits (biquad lane groups, FIR
pieces) must give the same result as one thread, bit for bit, and match the
independent references (scipy's sosfilt, numpy's correlation).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal as ss
import torch

from dmst.effects import _biquads, _fir
from dmst.effects.eq import biquad


@pytest.fixture()
def two_threads():
    from dmst.effects import _llvm

    before, kernels = torch.get_num_threads(), _llvm._kernel_threads
    _llvm._kernel_threads = None  # follow torch's count (an in-process dmst render may have set it)
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
    _llvm._kernel_threads = kernels


def test_two_threads_really_split_the_work(two_threads):
    # Preconditions of the tests below: with these sizes the kernels are called with several jobs.
    from dmst.effects._llvm import kernel_threads

    assert torch.get_num_threads() == 2 and kernel_threads() == 2
    assert _biquads._plan(600_000, 2000)[0] == 2
    assert max(1, min(torch.get_num_threads(), _fir.writable_length(300_000) // _fir.STEP // 64)) == 2


def test_biquads_on_two_threads_equal_one_thread_and_scipy(two_threads):
    fs, n = 44100, 600_000
    sos = torch.cat([biquad("high_pass", 40.0, 0.0, 0.7071, fs), biquad("peaking", 3000.0, 6.0, 2.0, fs)]).reshape(1, 2, 6)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 2, n)))
    for dtype in (torch.float64, torch.float32):
        two = _biquads.sosfilt(x.to(dtype), sos)
        torch.set_num_threads(1)
        one = _biquads.sosfilt(x.to(dtype), sos)
        torch.set_num_threads(2)
        assert torch.equal(two, one)
        want = ss.sosfilt(sos[0].numpy(), x.to(dtype).double().numpy(), axis=-1)
        err = np.abs(two.double().numpy() - want).max() / np.abs(want).max()
        assert err < (1e-12 if dtype == torch.float64 else 1e-6), err
    back = _biquads.sosfiltfilt(x, sos, 22050)
    torch.set_num_threads(1)
    assert torch.equal(back, _biquads.sosfiltfilt(x, sos, 22050))


def test_fir_on_two_threads_equals_one_thread_and_numpy(two_threads):
    rng = np.random.default_rng(1)
    n, taps = 300_000, 24
    x = rng.standard_normal((2, n + taps - 1)).astype(np.float32)
    h = rng.standard_normal((2, taps)).astype(np.float32)
    two = _fir.fir_sum(torch.from_numpy(x), torch.from_numpy(h))
    torch.set_num_threads(1)
    one = _fir.fir_sum(torch.from_numpy(x), torch.from_numpy(h))
    assert torch.equal(two, one)
    want = sum(np.correlate(x[i].astype(np.float64), h[i].astype(np.float64), mode="valid") for i in range(2))
    np.testing.assert_allclose(two.numpy(), want, rtol=0, atol=2e-5 * np.sqrt(2 * taps))


def test_partitioned_convolution_on_two_threads_equals_one_thread_and_scipy(two_threads):
    """The sends' block convolution split into two runs (their seam added after) is the linear convolution."""
    from dmst.effects import _sends

    n, length = 2**20 + 777, 50_000
    g = np.random.default_rng(3)
    x = torch.from_numpy(g.standard_normal((1, 1, n)).astype(np.float32))
    h = torch.from_numpy((g.standard_normal((1, 2, length)) * np.exp(-np.arange(length) / 8000.0)).astype(np.float32))
    blocks = -(-n // max(_sends.MIN_BLOCK, 1 << (-(-length // _sends.PARTS) - 1).bit_length()))
    assert blocks >= 8 * _sends.PARTS  # enough blocks for two runs
    with torch.no_grad():
        two = _sends.convolve_mono(x, h)
        torch.set_num_threads(1)
        one = _sends.convolve_mono(x, h)
    want = np.stack([ss.fftconvolve(x[0, 0].double().numpy(), h[0, c].double().numpy())[:n] for c in range(2)])
    for y in (two, one):
        assert np.linalg.norm(y[0].double().numpy() - want) / np.linalg.norm(want) < 1e-5
    assert torch.allclose(two, one, atol=1e-6)


def test_true_peak_kernel_on_two_threads_equals_one_thread_and_torchaudio(two_threads):
    """The limiter's fused true-peak loop (the 4x phases' largest magnitude, never stored) on two threads is the
    same as on one, and equals torchaudio's 4x resampling of each channel, its magnitude's max over channels and phases."""
    import torchaudio.functional as AF

    from dmst.effects.resample import TRUE_PEAK_RESAMPLE, upsampled_peaks

    rng = np.random.default_rng(4)
    n = 300_001
    x = torch.from_numpy((rng.standard_normal((2, n)) * np.array([[1.0], [0.5]])).astype(np.float32))
    assert max(1, min(2, _fir.writable_length(n) // _fir.STEP // 64)) == 2  # two pieces
    two = upsampled_peaks(x, 4, **TRUE_PEAK_RESAMPLE)
    torch.set_num_threads(1)
    one = upsampled_peaks(x, 4, **TRUE_PEAK_RESAMPLE)
    assert torch.equal(two, one)
    up = AF.resample(x.double(), 1, 4, **TRUE_PEAK_RESAMPLE)  # (2, 4 n), float64
    want = up.reshape(2, n, 4).abs().amax(dim=(0, 2))
    np.testing.assert_allclose(two.double().numpy(), want.numpy(), rtol=0, atol=1e-5)


def test_compressor_blend_on_two_threads_equals_one_thread_and_the_blend_of_its_topologies(two_threads):
    """A compressor with feedback and feed-forward on: its two recursions run side by side on two threads; the
    gain is the same as on one thread, and is (1 - f) feed-forward + f feedback (each topology rendered alone)."""
    from dmst.effects.compressor import compressor

    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 2, 50_000)).astype(np.float32) * 0.3)
    kw = dict(threshold_db=-24.0, ratio=4.0, knee_db=6.0, attack_ms=5.0, release_ms=80.0, makeup_gain_db=3.0,
              detector_rms=0.3, rms_window_ms=10.0, linear_envelope=0.4)
    f = torch.tensor([0.3, 0.6])
    with torch.no_grad():
        y_two, g_two = compressor(x, 44100, feedback=f, return_gain=True, **kw)
        torch.set_num_threads(1)
        y_one, g_one = compressor(x, 44100, feedback=f, return_gain=True, **kw)
        _, g_ff = compressor(x, 44100, feedback=0.0, return_gain=True, **kw)
        _, g_fb = compressor(x, 44100, feedback=1.0, return_gain=True, **kw)
    assert torch.equal(g_two, g_one) and torch.equal(y_two, y_one)
    want = (1 - f[:, None]) * g_ff + f[:, None] * g_fb
    assert float(g_two.min()) < -3.0  # it compresses
    torch.testing.assert_close(g_two, want, rtol=0, atol=1e-5)


def test_saturation_blocks_on_two_threads_equal_one_thread_and_the_training_path(two_threads):
    """The saturation's oversampled blocks run side by side on the pool (their FIR loops then run inline in each
    worker): the same as one thread bit for bit, and the differentiable path's curve (torchaudio's resampling and
    torch's tanh in float64) to float32 rounding."""
    import importlib

    sat = importlib.import_module("dmst.effects.saturation")
    n = sat.COMPILED_BLOCK_LENGTH + 200_000  # two blocks
    x = torch.from_numpy(np.random.default_rng(6).standard_normal((1, 1, n)).astype(np.float32) * 0.3)
    gain, bias = torch.full((1, 1, 1), 3.0), torch.full((1, 1, 1), 0.2)
    with torch.no_grad():
        two = sat.waveshape(x, gain, bias, render=True)
        torch.set_num_threads(1)
        one = sat.waveshape(x, gain, bias, render=True)
        slow = sat.waveshape(x.double(), gain.double(), bias.double(), render=False)
    assert torch.equal(two, one)
    assert float((two.double() - slow).abs().max()) < 1e-5


def test_deesser_and_gate_on_two_threads_equal_one_thread(two_threads):
    """The de-esser's sidechain and band split run side by side on the pool; the gate's detector on its own:
    the same output as on one thread, bit for bit, and both act on this signal."""
    from dmst.effects.deesser import deesser
    from dmst.effects.gate import gate

    rng = np.random.default_rng(7)
    n = 300_000
    env = np.repeat(10 ** (rng.uniform(-60, -10, 30) / 20), -(-n // 30))[:n]
    x = torch.from_numpy((rng.standard_normal((1, 2, n)) * env).astype(np.float32))
    kw = dict(frequency_hz=6000.0, threshold_db=-40.0, range_db=8.0, attack_ms=1.0, release_ms=50.0)
    gw = dict(threshold_db=-35.0, ratio=4.0, range_db=20.0, attack_ms=2.0, release_ms=80.0)
    with torch.no_grad():
        (d_two, dg_two), (g_two, gg_two) = deesser(x, 44100, return_gain=True, **kw), gate(x, 44100, return_gain=True, **gw)
        torch.set_num_threads(1)
        (d_one, dg_one), (g_one, gg_one) = deesser(x, 44100, return_gain=True, **kw), gate(x, 44100, return_gain=True, **gw)
    assert torch.equal(d_two, d_one) and torch.equal(g_two, g_one)
    assert float(dg_two.min()) < -4.0 and float(gg_two.min()) < -10.0
