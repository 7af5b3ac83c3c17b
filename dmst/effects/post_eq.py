"""The post-compressor EQ: one bell and a high shelf, after the compressor, as engineers boost after compressing.

The same RBJ Audio-EQ-Cookbook sections as the console EQ (:func:`dmst.effects.eq.biquad`),
applied the same way (:func:`dmst.effects.eq.apply_sos`: the exact recursion when
rendering, the FFT form when training).  Nectar's vocal chain has a second EQ here;
with both gains at 0 dB it is an exact bypass.
"""
from __future__ import annotations

import torch

from .eq import BUTTERWORTH_Q, apply_sos, biquad, max_freq


def post_eq_sos(sample_rate: float, bell_freq_hz, bell_gain_db, bell_q, high_shelf_freq_hz, high_shelf_gain_db) -> torch.Tensor:
    """The post-compressor EQ as a (batch, 2, 6) cascade: bell, then high shelf (slope S = 1)."""
    fmax = max_freq(sample_rate)

    def f(v):
        return torch.clamp(torch.as_tensor(v, dtype=torch.float64), max=fmax)

    sections = torch.broadcast_tensors(
        biquad("peaking", f(bell_freq_hz), bell_gain_db, bell_q, sample_rate),
        biquad("high_shelf", f(high_shelf_freq_hz), high_shelf_gain_db, BUTTERWORTH_Q, sample_rate),
    )
    sos = torch.stack(sections, dim=-2)
    return sos if sos.dim() == 3 else sos.unsqueeze(0)


def post_eq(x: torch.Tensor, sample_rate: float, bell_freq_hz, bell_gain_db, bell_q, high_shelf_freq_hz,
            high_shelf_gain_db) -> torch.Tensor:
    """Apply the bell and the high shelf to (batch, channels, samples) ``x``; parameters floats or (batch,) tensors."""
    return apply_sos(x, post_eq_sos(sample_rate, bell_freq_hz, bell_gain_db, bell_q, high_shelf_freq_hz,
                                    high_shelf_gain_db))
