"""Delay send: a feedback delay with filters in the loop and a ping-pong spread, returned in stereo.

The classic tape/digital echo (the ping-pong delay of DiffVox, Chen et al., DAFx 2025,
is the closest published differentiable one): the send's mono sum goes through a
delay line of ``time_ms``; the delayed signal passes a Butterworth low-pass and
high-pass (``low_pass_hz``, ``high_pass_hz``, RBJ cookbook sections) and is both
heard and fed back, ``feedback`` times, to the delay's input.  So echo ``k`` comes
``k x time_ms`` after the dry sound, ``feedback ** (k - 1)`` times as loud as the first,
and filtered ``k`` times.  ``spread`` pans the echoes alternately left and right
(first echo left), from 0 (every echo in the centre: both channels equal) to 1 (full
ping-pong), with a constant-power pan law.  ``send_db`` is the return level; at
:data:`dmst.effects._sends.SEND_OFF_DB` the return is exactly zero.

It is computed as the frequency response of the echoes that fall inside the output
(or above -120 dB), a finite geometric series ``z F sum (r^k)`` with
``r = feedback F z``, ``z = exp(-j w d)``, split into odd and even echoes for the
pan; its impulse response is convolved with the send by FFT.  The delay time is a phase, so the echoes are
band-limited fractional delays and ``time_ms`` has a gradient.  The same arithmetic
runs in training and rendering.
"""
from __future__ import annotations

import math

import torch

from ._path import per_item
from ._sends import convolve_mono, delay_phase, fast_length, send_gain
from .eq import BUTTERWORTH_Q, biquad, max_freq, sos_frequency_response

ECHO_FLOOR = 1e-6  # echoes below -120 dB re the first are left out
TAIL_SECONDS = 0.1  # room past the last echo for the loop filters' responses


def _power(base: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``base ** exponent`` for complex (batch, bins) ``base`` and integer (batch,) exponents >= 0, by squaring (differentiable)."""
    result = torch.ones_like(base)
    for bit in range(int(exponent.max()).bit_length()):
        use = ((exponent >> bit) & 1).bool()[:, None]
        result = torch.where(use, result * base, result)
        if bit + 1 < int(exponent.max()).bit_length():
            base = base * base
    return result


def pan_gains(position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant-power pan, ``position`` -1 (left) .. 1 (right): (left, right) gains, both 1 in the centre."""
    # cos((1 -+ p) pi / 4): the same expression for both sides, so the centre gives two equal gains, bit for bit.
    return math.sqrt(2) * torch.cos((1 + position) * (math.pi / 4)), math.sqrt(2) * torch.cos((1 - position) * (math.pi / 4))


def delay_response(n: int, sample_rate: float, time_ms, feedback, low_pass_hz, high_pass_hz, spread,
                   dtype=torch.float32) -> torch.Tensor:
    """Impulse responses (batch, 2, L) of the echoes that matter within ``n`` output samples (send level excluded).

    ``L`` covers every echo inside ``n`` samples (or above ``ECHO_FLOOR``) and the loop
    filters' tails; all parameters are (batch,) tensors.
    """
    d = time_ms.to(torch.float64) * sample_rate / 1000  # samples, fractional
    with torch.no_grad():  # how many echoes matter: those inside the output, above ECHO_FLOOR
        inside = torch.ceil(n / d.detach())
        audible = torch.ceil(math.log(ECHO_FLOOR) / torch.log(feedback.detach().double().clamp(1e-12, 0.999)))
        echoes = torch.clamp(torch.minimum(inside, audible), min=1).long()
        pairs = (echoes + 1) // 2  # odd echoes 1, 3, ... and even ones 2, 4, ...: this many of each
        span = float((2 * pairs * d.detach()).max()) + TAIL_SECONDS * sample_rate
    n_fft = fast_length(int(math.ceil(span)))
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    fmax = max_freq(sample_rate)
    loop = torch.stack(torch.broadcast_tensors(
        biquad("low_pass", torch.clamp(low_pass_hz.double(), max=fmax), 0.0, BUTTERWORTH_Q, sample_rate),
        biquad("high_pass", torch.clamp(high_pass_hz.double(), max=fmax), 0.0, BUTTERWORTH_Q, sample_rate)), dim=-2)
    first = sos_frequency_response(loop, n_fft).to(cdtype) * delay_phase(d, n_fft, cdtype)  # echo 1: F z
    r = feedback[:, None].to(first.real.dtype) * first
    r2 = r * r
    series = (1 - _power(r2, pairs)) / (1 - r2)  # sum over m < pairs of r^(2m)
    odd = first * series
    even = odd * r
    left_odd, right_odd = pan_gains(-spread)
    left_even, right_even = pan_gains(spread)
    response = torch.stack([left_odd[:, None] * odd + left_even[:, None] * even,
                            right_odd[:, None] * odd + right_even[:, None] * even], dim=1)
    return torch.fft.irfft(response, n=n_fft)


def delay(x: torch.Tensor, sample_rate: float, time_ms, feedback, low_pass_hz, high_pass_hz, spread, send_db) -> torch.Tensor:
    """The delay return for (batch, channels, n) ``x``: (batch, 2, n); parameters floats or (batch,) tensors."""
    batch, _, n = x.shape
    time_ms, feedback, low_pass_hz, high_pass_hz, spread, send_db = (
        per_item(v, batch, x) for v in (time_ms, feedback, low_pass_hz, high_pass_hz, spread, send_db))
    level = send_gain(send_db)
    if not bool((level != 0).any()):
        return x.new_zeros(batch, 2, n)
    h = delay_response(n, sample_rate, time_ms, feedback, low_pass_hz, high_pass_hz, spread, x.dtype)
    return convolve_mono(x, h) * level[:, None, None]
