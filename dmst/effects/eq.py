"""Parametric EQ: RBJ-cookbook biquads, applied by frequency sampling for training.

Coefficients follow R. Bristow-Johnson, "Cookbook formulae for audio EQ biquad
filter coefficients" (W3C Audio EQ Cookbook).  Rendering without gradients on a CPU
runs the cascade as the exact recursion (:mod:`._biquads`).  With gradients (or on a
GPU) the cascade's frequency response is
sampled on an FFT grid and applied by FFT convolution, as dasp-pytorch does; this
equals recursive filtering (``scipy.signal.sosfilt``) up to float precision once the
impulse response has decayed, which for the schema's ranges takes well under
``IR_LENGTH`` samples.  Long signals are processed by overlap-add in blocks so that
memory stays proportional to the block, not the file.
"""
from __future__ import annotations

import math

import torch

from ._biquads import sosfilt
from ._path import render_path

# Impulse-response length used for long signals: 2**16 samples is 1.4 s at 44.1 kHz,
# long enough for a 16 Hz high-pass or a Q 8 bell at 100 Hz to decay below -140 dB.
IR_LENGTH = 2**16
BLOCK_LENGTH = 2**18

BUTTERWORTH_Q = 1.0 / math.sqrt(2.0)


def _as_batch(v, batch: int, like: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float64, device=like.device)
    return v.reshape(-1).expand(batch) if v.numel() == 1 else v.reshape(batch).to(torch.float64)


def biquad(kind: str, freq_hz, gain_db, q, sample_rate: float) -> torch.Tensor:
    """RBJ biquad coefficients as a (batch, 6) SOS row ``[b0, b1, b2, 1, a1, a2]``.

    ``kind`` is one of ``"high_pass"``, ``"low_pass"``, ``"low_shelf"``,
    ``"high_shelf"``, ``"peaking"``, ``"band_pass"`` (the cookbook's constant 0 dB peak
    gain band-pass; ``gain_db`` unused).  Shelves use the cookbook's slope S = 1.
    Computed in float64 so coefficients of low-frequency filters stay exact.
    """
    freq_hz = torch.as_tensor(freq_hz, dtype=torch.float64)
    gain_db = torch.as_tensor(gain_db, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    w0 = 2 * math.pi * freq_hz / sample_rate
    cos_w0, sin_w0 = torch.cos(w0), torch.sin(w0)
    A = 10 ** (gain_db / 40)
    if kind in ("low_shelf", "high_shelf"):
        alpha = sin_w0 / 2 * math.sqrt(2.0)  # S = 1: alpha = sin(w0)/2 * sqrt((A + 1/A)(1/S - 1) + 2)
        two_sqrt_a_alpha = 2 * torch.sqrt(A) * alpha
    else:
        alpha = sin_w0 / (2 * q)
    if kind == "high_pass":
        b = [(1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2]
        a = [1 + alpha, -2 * cos_w0, 1 - alpha]
    elif kind == "low_pass":
        b = [(1 - cos_w0) / 2, 1 - cos_w0, (1 - cos_w0) / 2]
        a = [1 + alpha, -2 * cos_w0, 1 - alpha]
    elif kind == "band_pass":
        b = [alpha, torch.zeros_like(alpha), -alpha]
        a = [1 + alpha, -2 * cos_w0, 1 - alpha]
    elif kind == "peaking":
        b = [1 + alpha * A, -2 * cos_w0, 1 - alpha * A]
        a = [1 + alpha / A, -2 * cos_w0, 1 - alpha / A]
    elif kind == "low_shelf":
        b = [A * ((A + 1) - (A - 1) * cos_w0 + two_sqrt_a_alpha),
             2 * A * ((A - 1) - (A + 1) * cos_w0),
             A * ((A + 1) - (A - 1) * cos_w0 - two_sqrt_a_alpha)]
        a = [(A + 1) + (A - 1) * cos_w0 + two_sqrt_a_alpha,
             -2 * ((A - 1) + (A + 1) * cos_w0),
             (A + 1) + (A - 1) * cos_w0 - two_sqrt_a_alpha]
    elif kind == "high_shelf":
        b = [A * ((A + 1) + (A - 1) * cos_w0 + two_sqrt_a_alpha),
             -2 * A * ((A - 1) + (A + 1) * cos_w0),
             A * ((A + 1) + (A - 1) * cos_w0 - two_sqrt_a_alpha)]
        a = [(A + 1) - (A - 1) * cos_w0 + two_sqrt_a_alpha,
             2 * ((A - 1) - (A + 1) * cos_w0),
             (A + 1) - (A - 1) * cos_w0 - two_sqrt_a_alpha]
    else:
        raise ValueError(f"unknown biquad kind '{kind}'")
    b = torch.broadcast_tensors(*b)
    a = torch.broadcast_tensors(*a)
    a0 = a[0]
    return torch.stack([b[0] / a0, b[1] / a0, b[2] / a0, torch.ones_like(a0), a[1] / a0, a[2] / a0], dim=-1)


def first_order(kind: str, freq_hz, sample_rate: float) -> torch.Tensor:
    """First-order Butterworth ``"high_pass"`` or ``"low_pass"`` as a (batch, 6) SOS row ``[b0, b1, 0, 1, a1, 0]``.

    The bilinear transform of ``s / (s + w)`` (or ``w / (s + w)``) with the corner
    pre-warped (K = tan(w0 / 2)), as the cookbook's second-order sections are derived.
    """
    freq_hz = torch.as_tensor(freq_hz, dtype=torch.float64)
    k = torch.tan(math.pi * freq_hz / sample_rate)
    zero, one = torch.zeros_like(k), torch.ones_like(k)
    a1 = (k - 1) / (k + 1)
    if kind == "high_pass":
        b0 = 1 / (1 + k)
        row = [b0, -b0]
    elif kind == "low_pass":
        b0 = k / (1 + k)
        row = [b0, b0]
    else:
        raise ValueError(f"unknown first-order kind '{kind}'")
    return torch.stack([row[0], row[1], zero, one, a1, zero], dim=-1)


def butterworth_qs(order: int) -> list[float]:
    """Q of each second-order section of an ``order``-th order Butterworth filter (an odd order adds a first-order one).

    The complex pole pairs sit at angles (order - 2k + 1) pi / (2 order) from the negative real
    axis, k = 1 .. order // 2: Q = 1 / (2 cos angle) (0.707 for order 2; 1.0 for 3; 0.541 and 1.307 for 4).
    """
    return [1.0 / (2.0 * math.cos((order - 2 * k + 1) * math.pi / (2 * order))) for k in range(1, order // 2 + 1)]


def butterworth_sos(kind: str, order: int, freq_hz, sample_rate: float) -> torch.Tensor:
    """An ``order``-th order Butterworth ``"high_pass"``/``"low_pass"`` as (batch, ceil(order / 2), 6) cookbook sections."""
    sections = [biquad(kind, freq_hz, 0.0, q, sample_rate) for q in butterworth_qs(order)]
    if order % 2:
        sections.insert(0, first_order(kind, freq_hz, sample_rate))
    sections = torch.broadcast_tensors(*sections)
    sos = torch.stack(sections, dim=-2)
    return sos if sos.dim() == 3 else sos.unsqueeze(0)


HIGH_PASS_SLOPES_DB = (6, 12, 18, 24)  # dB/octave: Butterworth orders 1 to 4
_IDENTITY = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def high_pass_sos(freq_hz, slope_db, sample_rate: float) -> torch.Tensor:
    """The high-pass at ``slope_db`` dB/octave (6, 12, 18 or 24; one value or one per item) as (batch, 2, 6).

    A Butterworth filter of order ``slope_db / 6``, padded with an identity section to
    two sections so that items with different slopes batch together.
    """
    freq_hz = torch.as_tensor(freq_hz, dtype=torch.float64).reshape(-1)
    slope = torch.as_tensor(slope_db, dtype=torch.float64).reshape(-1)
    bad = [v for v in slope.tolist() if v not in HIGH_PASS_SLOPES_DB]
    if bad:
        raise ValueError(f"high-pass slope must be one of {HIGH_PASS_SLOPES_DB} dB/octave, got {bad[0]:g}")
    batch = max(freq_hz.numel(), slope.numel())
    freq_hz, slope = freq_hz.expand(batch), slope.expand(batch)
    identity = torch.tensor(_IDENTITY, dtype=torch.float64).expand(batch, 1, 6)
    by_order = {
        1: torch.cat([butterworth_sos("high_pass", 1, freq_hz, sample_rate), identity], dim=1),
        2: torch.cat([butterworth_sos("high_pass", 2, freq_hz, sample_rate), identity], dim=1),
        3: butterworth_sos("high_pass", 3, freq_hz, sample_rate),
        4: butterworth_sos("high_pass", 4, freq_hz, sample_rate),
    }
    out = by_order[2]
    for order, sos in by_order.items():
        out = torch.where((slope == 6 * order)[:, None, None], sos, out)
    return out


def max_freq(sample_rate: float) -> float:
    """Highest corner frequency used at this rate: files at low rates keep their filters below Nyquist."""
    return 0.45 * sample_rate


def eq_sos(
    sample_rate: float,
    high_pass_freq_hz, low_shelf_freq_hz, low_shelf_gain_db,
    low_mid_freq_hz, low_mid_gain_db, low_mid_q,
    mid_freq_hz, mid_gain_db, mid_q,
    presence_freq_hz, presence_gain_db, presence_q,
    high_shelf_freq_hz, high_shelf_gain_db, low_pass_freq_hz,
    high_pass_slope_db=None,
) -> torch.Tensor:
    """The console EQ as a (batch, 7, 6) cascade of second-order sections, in signal order.

    Corner frequencies above 0.45 x the sample rate are lowered to it (only matters
    for files below 44.1 kHz); the EQ is otherwise exactly what the parameters say.
    ``high_pass_slope_db`` (6, 12, 18 or 24 dB/octave, one value or one per item):
    leave it out, or 12 everywhere, for the 12 dB/octave high-pass of schema v2
    (bit-identical); any other slope gives a (batch, 8, 6) cascade, the high-pass
    being two sections (:func:`high_pass_sos`).
    """
    fmax = max_freq(sample_rate)

    def f(v):
        return torch.clamp(torch.as_tensor(v, dtype=torch.float64), max=fmax)

    sections = [
        biquad("high_pass", f(high_pass_freq_hz), 0.0, BUTTERWORTH_Q, sample_rate),
        biquad("low_shelf", f(low_shelf_freq_hz), low_shelf_gain_db, BUTTERWORTH_Q, sample_rate),
        biquad("peaking", f(low_mid_freq_hz), low_mid_gain_db, low_mid_q, sample_rate),
        biquad("peaking", f(mid_freq_hz), mid_gain_db, mid_q, sample_rate),
        biquad("peaking", f(presence_freq_hz), presence_gain_db, presence_q, sample_rate),
        biquad("high_shelf", f(high_shelf_freq_hz), high_shelf_gain_db, BUTTERWORTH_Q, sample_rate),
        biquad("low_pass", f(low_pass_freq_hz), 0.0, BUTTERWORTH_Q, sample_rate),
    ]
    sections = torch.broadcast_tensors(*sections)
    sos = torch.stack(sections, dim=-2)
    sos = sos if sos.dim() == 3 else sos.unsqueeze(0)
    if high_pass_slope_db is None or bool((torch.as_tensor(high_pass_slope_db) == 12).all()):
        return sos
    high_pass = high_pass_sos(f(high_pass_freq_hz), high_pass_slope_db, sample_rate)
    batch = max(high_pass.shape[0], sos.shape[0])
    return torch.cat([high_pass.expand(batch, -1, -1), sos[:, 1:].expand(batch, -1, -1)], dim=1)


def sos_frequency_response(sos: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Complex response of a (batch, sections, 6) cascade at the n_fft // 2 + 1 rfft bins.

    Evaluated directly as a ratio of polynomials in z^-1, in float64: in float32 the
    response of a 16 Hz high-pass or a narrow 100 Hz bell is only good to about -50 dB
    (dasp-pytorch's ``fft_sosfreqz`` in float32 measured -51 dB against scipy here).
    """
    k = torch.arange(n_fft // 2 + 1, device=sos.device, dtype=torch.float64)
    z1 = torch.polar(torch.ones_like(k), -2 * math.pi * k / n_fft)  # z^-1 on the unit circle
    z2 = z1 * z1
    sos = sos.to(torch.float64)[..., None]
    num = sos[..., 0, :] + sos[..., 1, :] * z1 + sos[..., 2, :] * z2
    den = sos[..., 3, :] + sos[..., 4, :] * z1 + sos[..., 5, :] * z2
    return torch.prod(num / den, dim=-2)


def sosfilt_fft(x: torch.Tensor, sos: torch.Tensor, zero_phase: bool = False) -> torch.Tensor:
    """Filter (batch, channels, samples) ``x`` with per-item cascades ``sos`` (batch, sections, 6).

    ``zero_phase=True`` applies the squared magnitude ``|H|^2`` with no phase shift, as
    forward-backward filtering (``scipy.signal.sosfiltfilt``) does: for an offline
    renderer a filter need not be causal.

    Short signals: one FFT of length >= 2 x max(N, ``IR_LENGTH``) (linear convolution with the
    sampled IIR response; the FFT must also be long enough for the response itself to decay,
    or its tail wraps around: with 2N alone a 1000-sample clip through a Q 8 bell at 100 Hz
    was only 32 dB clean), applied with dasp-pytorch's ``freqdomain_fir``.  Long
    signals: overlap-add of the response truncated at ``IR_LENGTH`` samples, in blocks
    of at most ``BLOCK_LENGTH``, so memory follows the block, not the file.
    """
    batch, channels, n = x.shape
    complex_dtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    if n <= IR_LENGTH:
        n_fft = max(1 << (2 * n - 1).bit_length(), 2 * IR_LENGTH)
        H = sos_frequency_response(sos, n_fft)
        H = (H.abs() ** 2 if zero_phase else H).to(complex_dtype)
        from dasp_pytorch.signal import freqdomain_fir  # imported here: dasp pulls in scipy (~1 s)

        return freqdomain_fir(x, H.unsqueeze(1), n_fft)[..., :n]
    # Impulse response, sampled on a grid twice its kept length so time-aliasing is negligible.
    H = sos_frequency_response(sos, 2 * IR_LENGTH)
    if zero_phase:  # the symmetric response, centred in the kept window; the output is advanced to match
        h = torch.fft.irfft(H.abs() ** 2, n=2 * IR_LENGTH).roll(IR_LENGTH // 2, dims=-1)[..., :IR_LENGTH].to(x.dtype)
    else:
        h = torch.fft.irfft(H, n=2 * IR_LENGTH)[..., :IR_LENGTH].to(x.dtype)
    block_length = min(BLOCK_LENGTH, 1 << (n - 1).bit_length())
    n_fft = 1 << (block_length + IR_LENGTH - 1).bit_length()
    block_length = n_fft - IR_LENGTH
    Hb = torch.fft.rfft(h, n=n_fft).unsqueeze(1)
    y = torch.zeros(batch, channels, n + IR_LENGTH, dtype=x.dtype, device=x.device)
    for start in range(0, n, block_length):
        block = x[..., start:start + block_length]
        out = torch.fft.irfft(torch.fft.rfft(block, n=n_fft) * Hb, n=n_fft)
        length = block.shape[-1] + IR_LENGTH
        y[..., start:start + length] = y[..., start:start + length] + out[..., :length]
    delay = IR_LENGTH // 2 if zero_phase else 0
    return y[..., delay:delay + n]


def parametric_eq(x: torch.Tensor, sample_rate: float, **params) -> torch.Tensor:
    """Apply the console EQ (high-pass, low shelf, three bells, high shelf, low-pass).

    ``x``: (batch, channels, samples); each parameter a float or (batch,) tensor named
    as in the schema's ``eq`` group (``high_pass_freq_hz``, ``presence_gain_db``...).
    """
    sos = eq_sos(sample_rate, **params)
    return apply_sos(x, sos)


def apply_sos(x: torch.Tensor, sos: torch.Tensor) -> torch.Tensor:
    """Filter (batch, channels, samples) ``x`` with (batch or 1, sections, 6) cascades ``sos``.

    Rendering (no gradient, on a CPU): the exact recursion, compiled (several times
    faster than FFT here); otherwise the differentiable FFT form (:func:`sosfilt_fft`).
    """
    if sos.shape[0] == 1 and x.shape[0] > 1:
        sos = sos.expand(x.shape[0], -1, -1)
    if render_path(x, sos):
        return sosfilt(x, sos)
    return sosfilt_fft(x, sos)
