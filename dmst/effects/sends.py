"""Both sends in one convolution: the delay and reverb returns of the same send signal, summed.

The sends are linear and time-invariant for given settings and both take the mono sum
of the same signal, so their sum is one convolution with the sum of their impulse
responses, ``g_d h_delay + g_r h_reverb``: one pass of FFTs over the whole file instead
of two (the expensive part of either send on a long file).  Equal to
``delay(x, ...) + reverb(x, ...)`` up to float rounding (``tests/test_sends.py``).
"""
from __future__ import annotations

from typing import Mapping

import torch

from ._path import per_item
from ._sends import convolve_mono, send_gain
from .delay import delay_response
from .reverb import reverb_response

DELAY_KEYS = ("time_ms", "feedback", "low_pass_hz", "high_pass_hz", "spread")
REVERB_KEYS = ("decay_s", "damping_hz", "width", "pre_delay_ms")


def sends(x: torch.Tensor, sample_rate: int, delay: Mapping, reverb: Mapping) -> torch.Tensor:
    """The delay return plus the reverb return of (batch, channels, n) ``x``: (batch, 2, n).

    ``delay`` and ``reverb`` hold the keyword parameters of :func:`dmst.effects.delay.delay`
    and :func:`dmst.effects.reverb.reverb` (``send_db`` included), floats or (batch,) tensors.
    """
    batch, _, n = x.shape
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
    return convolve_mono(x, total)
