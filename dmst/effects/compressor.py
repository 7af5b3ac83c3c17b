"""Feed-forward soft-knee compressor with real attack and release.

Design after D. Giannoulis, M. Massberg and J. D. Reiss, "Digital Dynamic Range
Compressor Design - A Tutorial and Analysis", JAES 60(6), 2012:

1. Level detector: instantaneous peak level in dBFS, linked across channels
   (the loudest channel drives one gain for all, so the stereo image holds).
2. Gain computer: the soft-knee static curve (their eq. 4) gives the target gain
   reduction in dB.
3. Ballistics, in the dB domain: a peak-hold with exponential release (instant
   attack) followed by an attack-only smoother.  A level step up reaches 63 % of
   its final gain reduction after ``attack_ms``; a step down recovers 63 % after
   ``release_ms``: both knobs are exact one-pole time constants.
4. Make-up gain.

For training, the two smoothing passes run on torchcomp's ``compressor_core`` (a
branching one-pole recursion with exact gradients, Yu et al., "Differentiable
All-pole Filters for Time-varying Audio Systems", DAFx 2024).  For rendering without
gradients, the same recursions run as one compiled loop (:mod:`._ballistics`).
"""
from __future__ import annotations

import math
import warnings

import torch

from ._ballistics import ballistics

LEVEL_FLOOR_DB = -120.0


def _compressor_core():
    """torchcomp's differentiable recursion, imported on first use (it loads Numba: ~0.3 s)."""
    with warnings.catch_warnings():
        # torchlpc falls back to its Numba kernels when its C++ extension is absent; that is fine here.
        warnings.simplefilter("ignore")
        from torchcomp import compressor_core
    return compressor_core


def time_constant_coefficient(time_ms: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """One-pole smoothing coefficient for a 63 % (1 - 1/e) time constant of ``time_ms``."""
    return 1.0 - torch.exp(-1000.0 / (time_ms * sample_rate))


def gain_computer(level_db: torch.Tensor, threshold_db, ratio, knee_db) -> torch.Tensor:
    """Static soft-knee curve: gain change in dB (<= 0) for an input level in dB.

    Below ``threshold - knee/2``: 0 dB.  Above ``threshold + knee/2``: the output
    rises 1/ratio dB per input dB.  In between, the quadratic interpolation of
    Giannoulis et al. (eq. 4).  Parameters broadcast against ``level_db``.
    """
    over = level_db - threshold_db
    slope = 1.0 / ratio - 1.0
    knee = torch.clamp(torch.as_tensor(knee_db, dtype=level_db.dtype, device=level_db.device), min=1e-6)
    if not torch.is_grad_enabled() or not any(torch.is_tensor(v) and v.requires_grad for v in (level_db, threshold_db, ratio, knee)):
        # Inference: the same arithmetic with in-place ops (2 * over < -knee <=> over < -knee / 2 exactly).
        below, above_knee = over < -knee / 2, over > knee / 2
        in_knee = (over + knee / 2).pow_(2).mul_(slope).div_(2 * knee)
        gain = torch.where(above_knee, over.mul_(slope), in_knee)
        return gain.masked_fill_(below, 0.0)
    in_knee = slope * (over + knee / 2) ** 2 / (2 * knee)
    above = slope * over
    return torch.where(2 * over < -knee, torch.zeros_like(over), torch.where(2 * over > knee, above, in_knee))


def compressor(
    x: torch.Tensor,
    sample_rate: float,
    threshold_db,
    ratio,
    knee_db,
    attack_ms,
    release_ms,
    makeup_gain_db,
    return_gain: bool = False,
):
    """Compress ``x`` of shape (batch, channels, samples); parameters are (batch,) tensors or floats.

    Returns the compressed signal, and with ``return_gain=True`` also the applied
    gain in dB (batch, samples), make-up excluded.
    """
    batch = x.shape[0]

    def col(v):
        v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
        return v.reshape(-1).expand(batch) if v.numel() == 1 else v.reshape(batch)

    threshold_db, ratio, knee_db = col(threshold_db), col(ratio), col(knee_db)
    attack_ms, release_ms, makeup_gain_db = col(attack_ms), col(release_ms), col(makeup_gain_db)

    if torch.is_grad_enabled() and x.requires_grad:
        peak = x.abs().amax(dim=1)  # linked stereo detector: (batch, samples)
        level_db = 20 * torch.log10(peak.clamp_min(10 ** (LEVEL_FLOOR_DB / 20)))
    else:  # the same values with no (batch, channels, samples) temporary, in place
        level_db = x[:, 0].abs()
        for channel in range(1, x.shape[1]):
            torch.maximum(level_db, x[:, channel].abs(), out=level_db)
        level_db.clamp_min_(10 ** (LEVEL_FLOOR_DB / 20)).log10_().mul_(20)
    attack = time_constant_coefficient(attack_ms, sample_rate)
    release = time_constant_coefficient(release_ms, sample_rate)
    differentiable = torch.is_grad_enabled() and any(
        v.requires_grad for v in (level_db, threshold_db, ratio, knee_db, attack, release))
    if not differentiable:  # static curve and both smoothing passes in one compiled loop (dmst/effects/_ballistics.py)
        gain_db = ballistics(level_db, attack, release, curve=(threshold_db, ratio, knee_db))
        del level_db
    else:
        target_db = gain_computer(level_db, threshold_db[:, None], ratio[:, None], knee_db[:, None])
        del level_db  # intermediates are released as soon as they are used: long files need less memory
        compressor_core = _compressor_core()
        instant = torch.ones_like(attack)
        start = torch.zeros_like(attack)
        # Pass 1: instant attack, exponential release -> peak hold of the gain reduction.
        held_db = compressor_core(target_db, start, instant, release)
        # Pass 2: attack-only smoothing (release coefficient 1 follows recovery as it comes).
        gain_db = compressor_core(held_db, start, attack, instant)
        del held_db, target_db

    if torch.is_grad_enabled() and (gain_db.requires_grad or makeup_gain_db.requires_grad):
        y = x * 10 ** ((gain_db + makeup_gain_db[:, None]) / 20).unsqueeze(1)
    else:  # the same arithmetic, one temporary: 10 ** (dB / 20) as exp(dB * ln(10) / 20)
        y = x * (gain_db + makeup_gain_db[:, None]).mul_(math.log(10) / 20).exp_().unsqueeze(1)
    return (y, gain_db) if return_gain else y
