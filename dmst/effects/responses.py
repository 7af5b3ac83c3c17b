"""Frequency responses of the filter effects, measured through the effects themselves.

An impulse through an effect's function (its render path, float64) and the magnitude of its
spectrum: what ``dmst plot`` and the service's ``/v1/curves`` draw, so a curve is the filter that
renders, not a second copy of its maths.
"""
from __future__ import annotations

import numpy as np
import torch

RESPONSE_FFT = 2**16  # 0.67 Hz bins at 44.1 kHz; every EQ of the schema's ranges has decayed far below 1e-12 by then


def magnitude_response_db(effect, sample_rate: int, settings: dict, n_fft: int = RESPONSE_FFT) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in Hz, gain in dB) at the ``n_fft // 2 + 1`` bins of an ``n_fft``-sample impulse response of
    ``effect(x, sample_rate, **settings)`` (e.g. :func:`dmst.effects.eq.parametric_eq` with a settings group)."""
    impulse = torch.zeros(1, 1, n_fft, dtype=torch.float64)
    impulse[..., 0] = 1.0
    with torch.no_grad():
        h = np.fft.rfft(effect(impulse, sample_rate, **settings)[0, 0].numpy())
    return np.fft.rfftfreq(n_fft, 1 / sample_rate), 20 * np.log10(np.maximum(np.abs(h), 1e-12))
