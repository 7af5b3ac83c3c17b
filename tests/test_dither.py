"""16-bit output is TPDF-dithered (+-1 LSB triangular), seeded; 24-bit and float output are untouched.

What TPDF dither guarantees (Lipshitz, Wannamaker and Vanderkooy, JAES 1992): the total
error's mean is 0 and its variance 1/4 LSB^2 whatever the signal; plain rounding (no
dither) gives an error that depends on the signal, rectangular dither a variance
that does.  At an input exactly on an LSB the dither alone decides: one LSB down or
up with probability 1/8 each (the triangle's tails beyond +-1/2), else unchanged.
"""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from dmst.audio_io import write_audio

N = 200_000
LSB = 1 / 32768


def written_16(tmp_path, audio, name="x.wav", fmt="wav"):
    path = tmp_path / f"{name}"
    write_audio(path, audio, 44100, format=fmt, bit_depth="16")
    return sf.read(path, dtype="int16", always_2d=True)[0].T.astype(np.float64)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_on_an_lsb_the_dither_is_triangular_of_one_lsb(tmp_path, fmt):
    k = np.arange(N) % 2000 - 1000  # a ramp of whole LSB values
    q = written_16(tmp_path, (k * LSB)[None].astype(np.float32), f"x.{fmt}", fmt)[0]
    step = q - k
    assert set(np.unique(step)) <= {-1.0, 0.0, 1.0}
    for value, p in ((-1.0, 1 / 8), (0.0, 3 / 4), (1.0, 1 / 8)):
        share = np.mean(step == value)
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / N), (value, share)  # within 4 standard errors


@pytest.mark.parametrize("offset", [0.0, 0.25, 0.5, 0.8])
def test_error_mean_and_variance_do_not_depend_on_the_signal(tmp_path, offset):
    k = np.arange(N) % 4000 - 2000
    x = ((k + offset) * LSB)[None]
    q = written_16(tmp_path, x)[0]
    error = q - x[0] / LSB  # in LSB, against the float64 input
    assert abs(error.mean()) < 0.01
    assert abs(error.var() - 0.25) < 0.01, error.var()


def test_dither_is_seeded_and_full_scale_does_not_wrap(tmp_path):
    x = np.sin(np.linspace(0, 300, N))[None].astype(np.float32)
    a, b = written_16(tmp_path, x, "a.wav"), written_16(tmp_path, x, "b.wav")
    assert np.array_equal(a, b)
    assert a.max() <= 32767 and a.min() >= -32768 and np.abs(a - x * 32768).max() <= 2.0


@pytest.mark.parametrize("bit_depth,subtype", [("24", "PCM_24"), ("32f", "FLOAT")])
def test_24_bit_and_float_are_written_as_given(tmp_path, bit_depth, subtype):
    x = (np.random.default_rng(0).standard_normal((2, 5000)) * 0.1).astype(np.float32)
    write_audio(tmp_path / "dmst.wav", x, 48000, bit_depth=bit_depth)
    sf.write(tmp_path / "plain.wav", x.T, 48000, subtype=subtype)
    ours, _ = sf.read(tmp_path / "dmst.wav", dtype="float64")
    plain, _ = sf.read(tmp_path / "plain.wav", dtype="float64")
    assert np.array_equal(ours, plain)
