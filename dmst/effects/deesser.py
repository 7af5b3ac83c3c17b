"""Split-band de-esser: a sidechain band around ``frequency_hz`` turns down the high band only.

The classic split-band design (as in FabFilter Pro-DS's split-band mode or a console
de-esser):

1. Sidechain: two RBJ Audio-EQ-Cookbook band-pass sections (constant 0 dB peak gain,
   ``SIDECHAIN_Q``) at ``frequency_hz``: 0 dB there, about 2/3 octave wide, skirts of
   24 dB/octave so that loud low content does not trigger it.  Its linked
   instantaneous peak level in dBFS is the detector.
2. Static curve: the band is pulled down to ``threshold_db`` (an infinite ratio),
   by at most ``range_db``: gain = max(-range, min(0, threshold - level)) dB.
3. Ballistics: the compressor's (Giannoulis, Massberg and Reiss, JAES 2012; see
   :mod:`dmst.effects.compressor`): 63 % of a step's gain reduction after
   ``attack_ms``, 63 % of the recovery after ``release_ms``.
4. The gain is applied to the high band alone.  The band split is complementary:
   ``low`` is a 4th-order Butterworth low-pass at ``SPLIT_RATIO x frequency_hz``
   applied forward and backward (zero phase, magnitude ``1 / (1 + (f / fc)^8)``), and
   ``high = x - low``; the output is ``x + (g - 1) * high``, so with no reduction it
   is exactly the input, and content an octave or more below the split is left as it
   was (within 0.03 dB at 20 dB of reduction).  Range 0 is an exact bypass.
"""
from __future__ import annotations

import torch

from ._biquads import sosfiltfilt
from ._ballistics import detector_gain
from ._llvm import map_threads
from ._dynamics import db_to_gain, peak_db, smooth_gain_db, soft_knee, time_constant_coefficient
from ._path import per_item, render_path
from .eq import apply_sos, biquad, butterworth_sos, max_freq, sosfilt_fft

SIDECHAIN_Q = 1.41  # each section one octave between its -3 dB points; the pair about 0.64 octave
SPLIT_RATIO = 0.5  # the high band starts an octave below frequency_hz: the whole sidechain band is in it
SPLIT_ORDER = 4
SPLIT_TAIL_SECONDS = 0.05  # the split filter's response (>= 1.5 kHz corner) is below 1e-12 by then


def deesser_curve(level_db: torch.Tensor, threshold_db, range_db) -> torch.Tensor:
    """Static curve: gain in dB (<= 0) for the sidechain band's level in dB.

    The shared static curve (:func:`._dynamics.soft_knee`) at an infinite ratio (slope -1)
    and a hard knee, ``min(0, threshold - level)``, no lower than ``-range_db``.
    """
    return torch.maximum(soft_knee(level_db - threshold_db, -1.0, 0.0), -range_db)


def sidechain_band(x: torch.Tensor, sample_rate: float, frequency_hz: torch.Tensor) -> torch.Tensor:
    """(batch, channels, n): ``x`` through the sidechain's band-pass pair at ``frequency_hz``."""
    section = biquad("band_pass", torch.clamp(frequency_hz.double(), max=max_freq(sample_rate)), 0.0, SIDECHAIN_Q,
                     sample_rate)
    return apply_sos(x, torch.stack([section, section], dim=-2).reshape(x.shape[0], 2, 6))


def sidechain_level_db(x: torch.Tensor, sample_rate: float, frequency_hz: torch.Tensor) -> torch.Tensor:
    """(batch, channels, n) -> (batch, n): the linked peak level in dBFS of the sidechain band at ``frequency_hz``."""
    return peak_db(sidechain_band(x, sample_rate, frequency_hz))


def split_sos(sample_rate: float, frequency_hz: torch.Tensor) -> torch.Tensor:
    """The low band's filter (before it is applied zero-phase): (batch, 2, 6)."""
    return butterworth_sos("low_pass", SPLIT_ORDER, torch.clamp(SPLIT_RATIO * frequency_hz.double(), max=max_freq(sample_rate)),
                           sample_rate)


def high_band(x: torch.Tensor, sample_rate: float, frequency_hz: torch.Tensor, render: bool) -> torch.Tensor:
    """``x`` minus its zero-phase low band: the part of ``x`` the de-esser turns down."""
    sos = split_sos(sample_rate, frequency_hz).expand(x.shape[0], -1, -1)
    if render:
        low = sosfiltfilt(x, sos, int(SPLIT_TAIL_SECONDS * sample_rate))
    else:
        low = sosfilt_fft(x, sos, zero_phase=True)
    return x - low


def deesser(x: torch.Tensor, sample_rate: float, frequency_hz, threshold_db, range_db, attack_ms, release_ms,
            return_gain: bool = False):
    """De-ess ``x`` (batch, channels, samples); parameters floats or (batch,) tensors.

    With ``return_gain=True`` also returns the gain applied to the high band in dB, (batch, samples).
    """
    batch = x.shape[0]
    frequency_hz, threshold_db, range_db, attack_ms, release_ms = (
        per_item(v, batch, x) for v in (frequency_hz, threshold_db, range_db, attack_ms, release_ms))
    render = render_path(x, frequency_hz, threshold_db, range_db, attack_ms, release_ms)
    if render and bool((range_db == 0).all()):  # off: exactly the input, and no work
        return (x.clone(), torch.zeros(batch, x.shape[-1], dtype=x.dtype)) if return_gain else x.clone()
    if render:
        def detect():  # the band's linked peak, the curve and the ballistics in one compiled pass (float64 state)
            return detector_gain(sidechain_band(x, sample_rate, frequency_hz), 1, threshold_db, 1.0, -1.0, range_db,
                                 time_constant_coefficient(attack_ms, sample_rate),
                                 time_constant_coefficient(release_ms, sample_rate)).to(x.dtype)

        # The sidechain and the band split are independent: side by side on the kernels' pool.
        gain_db, high = map_threads(lambda run: run(), [detect, lambda: high_band(x, sample_rate, frequency_hz, render)])
    else:
        target = deesser_curve(sidechain_level_db(x, sample_rate, frequency_hz), threshold_db[:, None], range_db[:, None])
        gain_db = smooth_gain_db(target, attack_ms, release_ms, sample_rate, render)
        high = high_band(x, sample_rate, frequency_hz, render)
    y = x + (db_to_gain(gain_db) - 1.0).unsqueeze(1) * high
    return (y, gain_db) if return_gain else y
