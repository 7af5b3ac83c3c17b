"""Integer-factor band-limited up- and down-sampling with torchaudio's sinc kernels, fast on long signals.

torchaudio runs a resampling kernel as one strided convolution over the whole signal.
Here the same taps run on many short pieces of the signal at once (each piece with the
filter's context), and down-sampling runs as a polyphase filter bank: the same sums in
another order, equal to float rounding, about 1.5-2x faster on a CPU.  Kernels come
from :class:`torchaudio.transforms.Resample`, so the filters are torchaudio's own.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .._torchaudio import resampler

# The true-peak interpolator (ITU-R BS.1770-4 annex 2 style): a Kaiser-windowed sinc, within 0.01 dB on sines up
# to 0.35 x the sample rate (BS.1770's own 48-tap filter is within about 0.1 dB there).  The meter
# (dmst.audio_io.true_peak_dbfs) and the limiter (dmst.effects.limiter) both use it.
TRUE_PEAK_RESAMPLE = dict(lowpass_filter_width=12, rolloff=0.99, resampling_method="sinc_interp_kaiser")

PIECE_LENGTH = 2**15  # output samples per piece; pieces run as one batched convolution


def _windows(padded: torch.Tensor, count: int, length: int, step: int) -> torch.Tensor:
    """(rows, N) -> (rows * count, length): ``count`` overlapping windows starting every ``step`` samples."""
    rows = padded.shape[0]
    return padded.as_strided((rows, count, length), (padded.stride(0), step, 1)).reshape(rows * count, length)


@functools.lru_cache(maxsize=16)
def up_kernel(factor: int, dtype: torch.dtype, device: torch.device, **resample_kwargs):
    """(kernel (factor, 1, taps), width): exactly what ``torchaudio.functional.resample(x, 1, factor, **kw)`` builds."""
    up = resampler(1, factor, dtype=dtype, **resample_kwargs).to(device)
    return up.kernel, up.width


@functools.lru_cache(maxsize=16)
def down_kernel(factor: int, dtype: torch.dtype, device: torch.device, **resample_kwargs):
    """(polyphase kernel (factor, 1, taps / factor), width) of ``torchaudio.functional.resample(x, factor, 1, **kw)``."""
    down = resampler(factor, 1, dtype=dtype, **resample_kwargs).to(device)
    taps = down.kernel.shape[-1]
    if taps % factor:  # trailing zero taps change nothing and make the phases equal in length
        kernel = F.pad(down.kernel, (0, factor - taps % factor))
        taps = kernel.shape[-1]
    else:
        kernel = down.kernel
    # Polyphase form of the strided kernel: taps k[factor * q + r] -> [r, 0, q].
    return kernel.reshape(taps // factor, factor).t().reshape(factor, 1, -1).contiguous(), down.width


def upsample(x: torch.Tensor, factor: int, **resample_kwargs) -> torch.Tensor:
    """``torchaudio.functional.resample(x, 1, factor, **resample_kwargs)`` (..., n) -> (..., factor * n)."""
    kernel, width = up_kernel(factor, x.dtype, x.device, **resample_kwargs)
    taps = kernel.shape[-1]
    shape, n = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, n)
    count = -(-n // PIECE_LENGTH)
    length = -(-n // count)
    padded = F.pad(rows, (width, width + 1 + count * length - n)).contiguous()  # torchaudio's padding, and more
    y = F.conv1d(_windows(padded, count, length + taps - 1, length)[:, None], kernel)  # (pieces, factor, length)
    y = y.reshape(rows.shape[0], count, factor, length).transpose(2, 3).reshape(rows.shape[0], -1)
    return y[:, : factor * n].reshape(shape + (factor * n,))


def downsample(x: torch.Tensor, factor: int, **resample_kwargs) -> torch.Tensor:
    """``torchaudio.functional.resample(x, factor, 1, **resample_kwargs)`` for a length divisible by ``factor``."""
    kernel, width = down_kernel(factor, x.dtype, x.device, **resample_kwargs)
    shape, n = x.shape[:-1], x.shape[-1]
    if n % factor:
        raise ValueError(f"downsample needs a length divisible by {factor}, got {n}")
    m, taps = n // factor, kernel.shape[-1]
    count = -(-m // PIECE_LENGTH)
    length = -(-m // count)
    rows = x.reshape(-1, n)
    padded = F.pad(rows, (width, max(width + factor, factor * (count * length + taps - 1) - n - width))).contiguous()
    windows = _windows(padded, count, factor * (length + taps - 1), factor * length)
    phases = windows.reshape(windows.shape[0], length + taps - 1, factor).transpose(1, 2)  # (pieces, factor, .)
    y = F.conv1d(phases, kernel, groups=factor).sum(dim=1)  # (pieces, length)
    return y.reshape(rows.shape[0], -1)[:, :m].reshape(shape + (m,))


# ---------------------------------------------------------------------------
# The same kernels as compiled FIR loops (:mod:`._fir`), for rendering without gradients.
# The up-sampled signal stays split into its phases, (rows, factor, samples), which is what
# the down-sampler's polyphase filter reads, so it is never interleaved.
# ---------------------------------------------------------------------------

def phase_margins(factor: int, n: int, **resample_kwargs) -> tuple[int, int]:
    """(front, back) zero margins around ``n`` samples per phase that :func:`downsample_phases` needs."""
    from ._fir import readable_length

    kernel, width = down_kernel(factor, torch.float32, torch.device("cpu"), **resample_kwargs)
    front = width // factor
    return front, max(0, readable_length(n, kernel.shape[-1]) - front - n)


def upsample_phases(x: torch.Tensor, factor: int, front: int = 0, back: int = 0, **resample_kwargs) -> torch.Tensor:
    """``torchaudio.functional.resample(x, 1, factor)`` of float32 CPU (rows, n) ``x``, split into its phases.

    Returns (rows, factor, front + n + back): ``[r, p, front + t]`` is output sample
    ``factor * t + p`` of row ``r``; the margins are zero.
    """
    from ._fir import fir_into, readable_length, writable_length

    kernel, width = up_kernel(factor, torch.float32, torch.device("cpu"), **resample_kwargs)
    rows, n = x.shape
    taps = kernel.shape[-1]
    padded = F.pad(x.to(torch.float32), (width, readable_length(n, taps) - n - width)).contiguous()
    out = torch.zeros(rows, factor, front + max(writable_length(n), n + back))
    for r in range(rows):
        for p in range(factor):
            fir_into(padded[r: r + 1], kernel[p], out[r, p, front:], n)
    out[..., front + n:] = 0.0  # the whole-step overrun: torchaudio's output ends at factor * n
    return out[..., : front + n + back]


def upsampled_peaks(x: torch.Tensor, factor: int, **resample_kwargs) -> torch.Tensor:
    """(rows, n) float32 CPU ``x`` -> (n,): the largest magnitude over the rows of ``upsample_phases(x, factor)``
    at each input sample, i.e. of the up-sampled signal over [t, t + 1), without storing it (:func:`._fir.fir_peak`)."""
    from ._fir import fir_peak, readable_length

    kernel, width = up_kernel(factor, torch.float32, torch.device("cpu"), **resample_kwargs)
    n, taps = x.shape[-1], kernel.shape[-1]
    padded = F.pad(x.to(torch.float32), (width, readable_length(n, taps) - n - width)).contiguous()
    return fir_peak(padded, kernel[:, 0, :], n)


def downsample_phases(phases: torch.Tensor, n: int, factor: int, **resample_kwargs) -> torch.Tensor:
    """``torchaudio.functional.resample(u, factor, 1)`` (rows, n) from ``u``'s phases laid out as
    :func:`upsample_phases` returns them, with the margins of :func:`phase_margins`."""
    from ._fir import fir_into, writable_length

    kernel, width = down_kernel(factor, torch.float32, torch.device("cpu"), **resample_kwargs)
    if width % factor:
        raise ValueError(f"downsample_phases needs a kernel half-width divisible by {factor}, got {width}")
    rows = phases.shape[0]
    out = torch.empty(rows, writable_length(n))
    for r in range(rows):
        fir_into(phases[r], kernel[:, 0, :].contiguous(), out[r], n)
    return out[:, :n]
