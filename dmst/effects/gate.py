"""Downward expander / gate, for room noise and breaths between phrases.

A feed-forward downward expander in the structure of Giannoulis, Massberg and Reiss
("Digital Dynamic Range Compressor Design - A Tutorial and Analysis", JAES 60(6),
2012), the compressor's mirror image:

1. Level detector: the linked (loudest-channel) peak level in dBFS, held over the
   last ``HOLD_MS`` (a gate's hold; it also keeps the level steady through the zero
   crossings of any tone above 50 Hz).
2. Gain computer (static curve): below ``threshold_db`` the output level falls
   ``ratio`` dB per input dB, so the gain is ``(ratio - 1) * (level - threshold)``
   dB, never lower than ``-range_db``; at or above the threshold, 0 dB.  A large
   ratio is a gate; ``range_db`` is how far it closes.  Range 0 is an exact bypass.
3. Ballistics in the dB domain (the compressor's two passes, mirrored): the gate
   opens with ``attack_ms`` (63 % of a level step's change in gain) and closes with
   ``release_ms`` (after the hold).
"""
from __future__ import annotations

import math

import torch

from ._ballistics import detector_gain
from ._dynamics import db_to_gain, peak_db, sliding_max, smooth_gain_db, soft_knee, time_constant_coefficient
from ._path import per_item, render_path

HOLD_MS = 20.0


def gate_curve(level_db: torch.Tensor, threshold_db, ratio, range_db) -> torch.Tensor:
    """Static curve: gain in dB (<= 0) for a detected level in dB; parameters broadcast against ``level_db``."""
    # The shared static curve mirrored: "over" is how far the level is *under* the threshold, and the
    # gain falls (ratio - 1) dB per dB of it (hard knee), no lower than -range_db.
    return torch.maximum(soft_knee(threshold_db - level_db, 1.0 - ratio, 0.0), -range_db)


def gate(x: torch.Tensor, sample_rate: float, threshold_db, ratio, range_db, attack_ms, release_ms,
         return_gain: bool = False):
    """Expand ``x`` (batch, channels, samples) downward; parameters floats or (batch,) tensors.

    With ``return_gain=True`` also returns the applied gain in dB, (batch, samples).
    """
    batch = x.shape[0]
    threshold_db, ratio, range_db, attack_ms, release_ms = (
        per_item(v, batch, x) for v in (threshold_db, ratio, range_db, attack_ms, release_ms))
    render = render_path(x, threshold_db, ratio, range_db, attack_ms, release_ms)
    if render and bool((range_db == 0).all()):  # off: exactly the input, and no work
        return (x.clone(), torch.zeros(batch, x.shape[-1], dtype=x.dtype)) if return_gain else x.clone()
    hold = max(1, round(HOLD_MS * sample_rate / 1000))
    if render:  # detector, hold, curve and ballistics in one compiled pass (the same steps, float64 state)
        gain_db = detector_gain(x, hold, threshold_db, -1.0, 1.0 - ratio, range_db,
                                time_constant_coefficient(attack_ms, sample_rate),
                                time_constant_coefficient(release_ms, sample_rate))
        y = x * gain_db.mul(math.log(10) / 20).exp_().to(x.dtype).unsqueeze(1)
        return (y, gain_db.to(x.dtype)) if return_gain else y
    level_db = peak_db(sliding_max(x.abs().amax(dim=1, keepdim=True), hold))
    target = gate_curve(level_db, threshold_db[:, None], ratio[:, None], range_db[:, None])
    # Mirrored ballistics: on the negated gain, "attack" (gain reduction growing) is the gate opening.
    gain_db = -smooth_gain_db(-target, attack_ms, release_ms, sample_rate, render)
    y = x * db_to_gain(gain_db).unsqueeze(1)
    return (y, gain_db) if return_gain else y
