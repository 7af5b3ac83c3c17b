"""Pieces shared by the send effects (delay, reverb): the send level, FFT sizes, fractional delays.

Both sends are linear, time-invariant systems for given settings, so each is applied
as one frequency response (its impulse response's FFT) by FFT convolution: the same
arithmetic in training and rendering, differentiable in every parameter (a delay
time becomes a phase, ``exp(-j w d)``: a band-limited fractional delay).
"""
from __future__ import annotations

import math

import torch

from ._llvm import kernel_threads, map_threads
from ._path import render_path

PARTITIONED_MIN_LENGTH = 2**19  # signals at least this long (and 4x the response) use partitioned convolution
MIN_BLOCK, MAX_BLOCK = 2**13, 2**18
PARTS = 2  # the response is cut into about this many partitions (fewer: longer FFTs; more: more sums)
SEND_OFF_DB = -60.0  # the bottom of send_db's range: the send is off, its return exactly zero
# ... and so within this much above it: where an encoder's clamped sigmoid (u = 1e-3, 0.06 dB
# up) or a fit started from the defaults lands, a send is off too, not a stereo mix at -60 dB.
OFF_ZONE_DB = 0.1


def send_gain(send_db: torch.Tensor) -> torch.Tensor:
    """Linear gain of a send level in dB; exactly 0 at or below :data:`SEND_OFF_DB` + :data:`OFF_ZONE_DB`."""
    return torch.where(send_db <= SEND_OFF_DB + OFF_ZONE_DB, torch.zeros_like(send_db), 10 ** (send_db / 20))


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


def convolve_mono(x: torch.Tensor, h: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """The mono sum (channel mean) of (batch, channels, n) ``x`` convolved with (batch, outputs, L) ``h``:
    (batch, outputs, length), the first ``length`` (default ``n``) samples of the linear convolution.

    A signal much longer than the response (a whole song) is convolved block by block
    with the response cut into partitions (uniformly partitioned overlap-add, e.g.
    Wefers, "Partitioned convolution algorithms for real-time auralization", 2015): the
    FFTs stay a few hundred kilobytes, which runs 3-5x faster than one FFT of the whole
    file, and on the render path the output blocks run as one run per kernel thread.
    Otherwise one FFT of the whole length.  Both are the same linear convolution.
    """
    render = render_path(x, h)
    # One channel, or channels that are one in memory (a mono take centred on two): no averaging pass.
    same = x.shape[1] == 1 or x.stride(1) == 0
    mono = x[:, 0] if same and render else x.mean(dim=1)
    n = x.shape[-1] if length is None else length
    if n != mono.shape[-1]:  # zeros after the signal: the convolution's tail
        mono = torch.nn.functional.pad(mono, (0, n - mono.shape[-1])) if n > mono.shape[-1] else mono[..., :n]
    length = h.shape[-1]
    if n < PARTITIONED_MIN_LENGTH or n < 4 * length:
        n_fft = fast_length(n + length)
        return torch.fft.irfft(torch.fft.rfft(mono, n=n_fft)[:, None] * torch.fft.rfft(h, n=n_fft), n=n_fft)[..., :n]
    block = min(MAX_BLOCK, max(MIN_BLOCK, 1 << (-(-length // PARTS) - 1).bit_length()))
    parts, blocks = -(-length // block), -(-n // block)
    batch, outputs = h.shape[0], h.shape[1]
    partitions = torch.fft.rfft(torch.nn.functional.pad(h, (0, parts * block - length)).reshape(batch, outputs, parts, block),
                                n=2 * block)  # (batch, outputs, parts, bins)
    inputs = torch.nn.functional.pad(mono, (0, blocks * block - n)).reshape(batch, blocks, block)
    if not render:
        spectra = torch.fft.rfft(inputs, n=2 * block)
        terms = [torch.nn.functional.pad(torch.view_as_real(spectra[:, None, : blocks - p] * partitions[:, :, p, None]),
                                         (0, 0, 0, 0, p, 0)) for p in range(min(parts, blocks))]
        y = torch.fft.irfft(torch.view_as_complex(torch.stack(terms).sum(0).contiguous()), n=2 * block)
        # Overlap-add: each block's second half lands on the next block.
        head, tail = y[..., :block].reshape(batch, outputs, -1), y[..., block:].reshape(batch, outputs, -1)
        return (head + torch.nn.functional.pad(tail[..., :-block], (block, 0)))[..., :n]
    # Render: the output blocks in one run per thread (FFTs and in-place sums release the GIL), each run
    # summing into one accumulator and overlap-adding into the output in place.  A run transforms the
    # parts - 1 input blocks before its own again (it needs them); the seams between runs are added after.
    threads = min(kernel_threads(), max(1, blocks // (4 * parts)))
    cuts = [blocks * t // threads for t in range(threads + 1)]
    spans = list(zip(cuts, cuts[1:]))
    out = torch.empty(batch, outputs, blocks, block, dtype=h.dtype)

    def run(span):
        lo, hi = span
        first = max(0, lo - parts + 1)
        spectra = torch.fft.rfft(inputs[:, first:hi], n=2 * block)  # (batch, hi - first, bins)
        acc = torch.zeros(batch, outputs, hi - lo, block + 1, dtype=spectra.dtype)
        for p in range(min(parts, hi)):
            start = max(lo, p)  # output block j takes input block j - p
            acc[:, :, start - lo:].addcmul_(spectra[:, None, start - p - first: hi - p - first], partitions[:, :, p, None])
        y = torch.fft.irfft(acc, n=2 * block)  # (batch, outputs, hi - lo, 2 block)
        own = out[:, :, lo:hi]
        own.copy_(y[..., :block])
        own[:, :, 1:] += y[:, :, :-1, block:]
        return y[:, :, -1, block:].clone()  # the run's last tail, for the next run's first block

    tails = map_threads(run, spans, threads)
    for (lo, _), tail in zip(spans[1:], tails):
        out[:, :, lo] += tail
    return out.reshape(batch, outputs, -1)[..., :n]
