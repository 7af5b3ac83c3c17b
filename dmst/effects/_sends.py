"""Pieces shared by the send effects (delay, reverb): the send level, FFT sizes, fractional delays.

Both sends are linear, time-invariant systems for given settings, so each is applied
as one frequency response (its impulse response's FFT) by FFT convolution: the same
arithmetic in training and rendering, differentiable in every parameter (a delay
time becomes a phase, ``exp(-j w d)``: a band-limited fractional delay).
"""
from __future__ import annotations

import math

import torch

SEND_OFF_DB = -60.0  # a send at or below this is off: its return is exactly zero


def send_gain(send_db: torch.Tensor) -> torch.Tensor:
    """Linear gain of a send level in dB; exactly 0 at or below :data:`SEND_OFF_DB`."""
    return torch.where(send_db <= SEND_OFF_DB, torch.zeros_like(send_db), 10 ** (send_db / 20))


def fast_length(n: int) -> int:
    """The smallest 5-smooth number (2^a 3^b 5^c) >= ``n``: FFT lengths that pocketfft and MKL do fast."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def delay_phase(delay_samples: torch.Tensor, n_fft: int, complex_dtype) -> torch.Tensor:
    """``exp(-j w d)`` at the rfft bins of ``n_fft`` for per-item delays ``d`` (batch,) in samples: (batch, bins).

    The phase is formed in float64 (w d reaches 1e5 rad), reduced modulo 2 pi, then cast.
    """
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64, device=delay_samples.device)
    phase = torch.remainder(-2 * math.pi * k * delay_samples.to(torch.float64)[:, None] / n_fft, 2 * math.pi)
    return torch.polar(torch.ones_like(phase), phase).to(complex_dtype)


def convolve_mono(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The mono sum (channel mean) of (batch, channels, n) ``x`` convolved with (batch, outputs, L) ``h``:
    (batch, outputs, n), the first ``n`` samples of the linear convolution, by one FFT."""
    n = x.shape[-1]
    n_fft = fast_length(n + h.shape[-1])
    spectrum = torch.fft.rfft(x.mean(dim=1), n=n_fft)
    return torch.fft.irfft(spectrum[:, None] * torch.fft.rfft(h, n=n_fft), n=n_fft)[..., :n]


def complex_dtype_for(x: torch.Tensor):
    return torch.complex128 if x.dtype == torch.float64 else torch.complex64
