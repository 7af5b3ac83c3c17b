"""Both sends in one convolution: the delay and reverb returns of the same send signal, summed.

The sends are linear and time-invariant for given settings and both take the mono sum
of the same signal, so their sum is one convolution with the sum of their impulse
responses, ``g_d h_delay + g_r h_reverb``: one pass of FFTs over the whole file instead
of two (the expensive part of either send on a long file).  Equal to
``delay(x, ...) + reverb(x, ...)`` up to float rounding (``tests/test_sends.py``).

:func:`tail_samples` is how far the returns run past the end of the send's signal: a
render that keeps the tail (``dmst render``) is that much longer than its input.
"""
from __future__ import annotations

from typing import Mapping

import torch

import math

from ._path import per_item
from ._sends import convolve_mono, send_gain
from .delay import TAIL_SECONDS, delay_response
from .reverb import TAIL_DB, band_decays, reverb_response

DELAY_KEYS = ("time_ms", "feedback", "low_pass_hz", "high_pass_hz", "spread")
REVERB_KEYS = ("decay_s", "damping_hz", "width", "pre_delay_ms")
MAX_TAIL_S = 10.0  # the longest tail a render keeps (a 1 s delay at feedback 0.9 takes 88 s to fall 80 dB)


def tail_samples(sample_rate: int, delay: Mapping, reverb: Mapping) -> int:
    """Samples past the input's end until every return that is on has fallen ``TAIL_DB`` (80 dB) below its start
    (at most :data:`MAX_TAIL_S`); 0 when both sends are off.  The largest over the batch.

    Delay: the echoes down to -80 dB re the first (``feedback ** (k - 1)``), plus ``TAIL_SECONDS`` for the loop
    filters.  Reverb: the pre-delay plus where the slowest band's envelope has fallen 80 dB (its RT60 x 80 / 60).
    Set by the parameters, not the audio, so a setting's output length is known before rendering.
    """
    seconds = 0.0
    d = {k: torch.as_tensor(v, dtype=torch.float64).reshape(-1) for k, v in delay.items()}
    r = {k: torch.as_tensor(v, dtype=torch.float64).reshape(-1) for k, v in reverb.items()}
    d_on, r_on = send_gain(d["send_db"]) != 0, send_gain(r["send_db"]) != 0
    if bool(d_on.any()):
        feedback = d["feedback"].expand(d_on.shape).clamp(0.0, 0.999)
        falls = math.log(10 ** (-TAIL_DB / 20))
        echoes = 1 + torch.where(feedback > 0, torch.ceil(falls / torch.log(feedback.clamp_min(1e-12))), torch.zeros_like(feedback))
        span = echoes * d["time_ms"].expand(d_on.shape) / 1000 + TAIL_SECONDS
        seconds = max(seconds, float(span[d_on].max()))
    if bool(r_on.any()):
        shape = r_on.shape
        slowest = band_decays(r["decay_s"].expand(shape), r["damping_hz"].expand(shape)).amax(dim=1)
        span = r["pre_delay_ms"].expand(shape) / 1000 + slowest * TAIL_DB / 60
        seconds = max(seconds, float(span[r_on].max()))
    return int(math.ceil(min(seconds, MAX_TAIL_S) * sample_rate))


def sends(x: torch.Tensor, sample_rate: int, delay: Mapping, reverb: Mapping, length: int | None = None) -> torch.Tensor:
    """The delay return plus the reverb return of (batch, channels, n) ``x``: (batch, 2, length), ``length``
    ``n`` by default (more: the returns' tail past the end of ``x``, e.g. ``n + tail_samples(...)``).

    ``delay`` and ``reverb`` hold the keyword parameters of :func:`dmst.effects.delay.delay`
    and :func:`dmst.effects.reverb.reverb` (``send_db`` included), floats or (batch,) tensors.
    """
    batch = x.shape[0]
    n = x.shape[-1] if length is None else length
    d = {k: per_item(v, batch, x) for k, v in delay.items()}
    r = {k: per_item(v, batch, x) for k, v in reverb.items()}
    levels = send_gain(d["send_db"]), send_gain(r["send_db"])
    responses = []
    if bool((levels[0] != 0).any()):
        h = delay_response(n, sample_rate, *(d[k] for k in DELAY_KEYS), dtype=x.dtype)
        responses.append(h * levels[0][:, None, None])
    if bool((levels[1] != 0).any()):
        h = reverb_response(n, sample_rate, r["decay_s"], r["damping_hz"], r["width"], r["pre_delay_ms"], x.dtype)
        responses.append(h * levels[1][:, None, None])
    if not responses:
        return x.new_zeros(batch, 2, n)
    length = max(h.shape[-1] for h in responses)
    total = sum(torch.nn.functional.pad(h, (0, length - h.shape[-1])) for h in responses)
    return convolve_mono(x, total, n)
