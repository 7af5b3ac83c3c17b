"""Feed-forward soft-knee compressor with real attack and release, and a choice of detector.

Design after D. Giannoulis, M. Massberg and J. D. Reiss, "Digital Dynamic Range
Compressor Design - A Tutorial and Analysis", JAES 60(6), 2012:

1. Level detector, linked across channels (the loudest channel drives one gain for
   all, so the stereo image holds).  ``detector_rms`` blends, in dB, the instantaneous
   peak level (0) with the RMS level (1): the square root of a one-pole average of the
   squared linked peak, whose mean square covers 63 % of a step in ``rms_window_ms``
   (Giannoulis et al., section "RMS detection"; the dbx-style classic detector).
2. Ballistics, in one of two domains, blended in dB by ``linear_envelope``:

   * 0, smoothing of the gain in dB (Giannoulis et al.'s "smooth decoupled peak
     detector" placed after the gain computer): the soft-knee static curve (their eq. 4)
     gives the target gain reduction, then a peak hold with exponential release
     (instant attack) and an attack-only smoother.  A level step up reaches 63 % of
     its final gain reduction (in dB) after ``attack_ms``; a step down recovers 63 %
     after ``release_ms``.
   * 1, branching ballistics on the linear detector envelope, then the static curve
     (JUCE's ``dsp::BallisticsFilter`` + ``dsp::Compressor``, used by pedalboard, and
     most analogue-modelled designs): ``env += c (level - env)`` with ``c`` the attack
     coefficient while the level is above the envelope and the release one below.
     The *envelope* covers 63 % of a level step in ``attack_ms`` (up) and in
     ``release_ms`` (down).  JUCE derives its coefficient as ``exp(-2 pi 1000 / (ms fs))``,
     so a JUCE (pedalboard) attack of A ms is a time constant of A / (2 pi) ms here.

   The defaults (peak detector, dB domain) are the compressor of schema version 2,
   sample for sample.
3. Make-up gain.

For training, every recursion runs on torchcomp's ``compressor_core`` (a branching
one-pole recursion with exact gradients, Yu et al., "Differentiable All-pole Filters
for Time-varying Audio Systems", DAFx 2024).  For rendering without gradients, the same
recursions run as compiled loops (:mod:`._ballistics`).
"""
from __future__ import annotations

import math
import warnings

import torch

from ._ballistics import ballistics, family, one_pole

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
    detector_rms=0.0,
    rms_window_ms=20.0,
    linear_envelope=0.0,
    return_gain: bool = False,
):
    """Compress ``x`` of shape (batch, channels, samples); parameters are (batch,) tensors or floats.

    Returns the compressed signal, and with ``return_gain=True`` also the applied
    gain in dB (batch, samples), make-up excluded.  ``detector_rms``,
    ``rms_window_ms`` and ``linear_envelope`` choose the detector family (module
    docstring); at 0 (their defaults) the compressor is the peak, dB-domain design.
    """
    batch = x.shape[0]

    def col(v):
        v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
        return v.reshape(-1).expand(batch) if v.numel() == 1 else v.reshape(batch)

    threshold_db, ratio, knee_db = col(threshold_db), col(ratio), col(knee_db)
    attack_ms, release_ms, makeup_gain_db = col(attack_ms), col(release_ms), col(makeup_gain_db)
    detector_rms, rms_window_ms, linear_envelope = col(detector_rms), col(rms_window_ms), col(linear_envelope)
    family = (detector_rms, rms_window_ms, linear_envelope)
    if (torch.is_grad_enabled() and (x.requires_grad or any(v.requires_grad for v in family))) \
            or bool((detector_rms != 0).any()) or bool((linear_envelope != 0).any()):
        gain_db = detector_family_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms, release_ms,
                                          detector_rms, rms_window_ms, linear_envelope)
        return _apply_gain(x, gain_db, makeup_gain_db, return_gain)

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

    return _apply_gain(x, gain_db, makeup_gain_db, return_gain)


def _apply_gain(x, gain_db, makeup_gain_db, return_gain):
    if torch.is_grad_enabled() and (gain_db.requires_grad or makeup_gain_db.requires_grad):
        y = x * 10 ** ((gain_db + makeup_gain_db[:, None]) / 20).unsqueeze(1)
    else:  # the same arithmetic, one temporary: 10 ** (dB / 20) as exp(dB * ln(10) / 20)
        y = x * (gain_db + makeup_gain_db[:, None]).mul_(math.log(10) / 20).exp_().unsqueeze(1)
    return (y, gain_db) if return_gain else y


def _one_pole(x: torch.Tensor, falling: torch.Tensor, rising: torch.Tensor) -> torch.Tensor:
    """Branching one-pole from a zero state: torchcomp (exact gradients) when needed, else the compiled loop."""
    if torch.is_grad_enabled() and any(v.requires_grad for v in (x, falling, rising)):
        return _compressor_core()(x, torch.zeros_like(falling), falling, rising)
    return one_pole(x, falling, rising)


def detector_level_db(x: torch.Tensor, sample_rate: float, detector_rms, rms_window_ms) -> torch.Tensor:
    """The linked detector level in dB (batch, samples): peak (``detector_rms`` 0) to RMS (1), blended in dB.

    Peak: ``max_channels |x|``.  RMS: the square root of the one-pole average of that
    peak squared, with a 63 % time constant of ``rms_window_ms`` on the mean square.
    Both are floored at -120 dBFS.  ``detector_rms`` and ``rms_window_ms``: (batch,).
    """
    floor = 10 ** (LEVEL_FLOOR_DB / 20)
    peak = x.abs().amax(dim=1)
    peak_db = 20 * torch.log10(peak.clamp_min(floor))
    w = detector_rms.to(peak_db.dtype)[:, None]
    if not (torch.is_grad_enabled() and w.requires_grad) and not bool((w != 0).any()):
        return peak_db
    c = time_constant_coefficient(rms_window_ms.to(peak.dtype), sample_rate)
    mean_square = _one_pole(peak * peak, c, c)
    rms_db = 10 * torch.log10(mean_square.clamp_min(floor * floor))
    return (1 - w) * peak_db + w * rms_db


def detector_family_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms, release_ms,
                            detector_rms, rms_window_ms, linear_envelope) -> torch.Tensor:
    """Applied gain in dB (batch, samples) for any detector family; parameters are (batch,) tensors.

    ``(1 - m) * dB-domain gain + m * linear-envelope gain`` with ``m = linear_envelope``
    (module docstring), both driven by :func:`detector_level_db`.
    """
    grad = torch.is_grad_enabled() and any(
        v.requires_grad for v in (x, threshold_db, ratio, knee_db, attack_ms, release_ms, detector_rms, rms_window_ms, linear_envelope))
    if not grad:  # rendering: everything in one compiled pass over the linked peak
        peak = x[:, 0].abs()
        for channel in range(1, x.shape[1]):
            torch.maximum(peak, x[:, channel].abs(), out=peak)
        coef = [time_constant_coefficient(v.to(x.dtype), sample_rate) for v in (attack_ms, release_ms, rms_window_ms)]
        return family(peak, *coef, detector_rms, linear_envelope, (threshold_db, ratio, knee_db), 10 ** (LEVEL_FLOOR_DB / 20))
    level_db = detector_level_db(x, sample_rate, detector_rms, rms_window_ms)
    attack = time_constant_coefficient(attack_ms, sample_rate).to(level_db.dtype)
    release = time_constant_coefficient(release_ms, sample_rate).to(level_db.dtype)
    m = linear_envelope.to(level_db.dtype)[:, None]
    thr, rat, kn = threshold_db[:, None], ratio[:, None], knee_db[:, None]
    need_db = torch.is_grad_enabled() and m.requires_grad or bool((m != 1).any())
    need_linear = torch.is_grad_enabled() and m.requires_grad or bool((m != 0).any())
    gain_db = 0.0
    if need_db:
        if torch.is_grad_enabled() and any(v.requires_grad for v in (level_db, threshold_db, ratio, knee_db, attack, release)):
            target_db = gain_computer(level_db, thr, rat, kn)
            core = _compressor_core()
            instant, start = torch.ones_like(attack), torch.zeros_like(attack)
            held_db = core(target_db, start, instant, release)  # instant attack, exponential release
            db_gain = core(held_db, start, attack, instant)  # attack-only smoothing
        else:
            db_gain = ballistics(level_db, attack, release, curve=(threshold_db, ratio, knee_db))
        gain_db = (1 - m) * db_gain
    if need_linear:
        # Envelope of the linear level: attack while the level is above it.  Negated, "above" is
        # compressor_core's "below" branch, which takes its first (attack) coefficient.
        level = torch.pow(10.0, level_db / 20)
        envelope = -_one_pole(-level, attack, release)
        floor = 10 ** (LEVEL_FLOOR_DB / 20)
        linear_gain = gain_computer(20 * torch.log10(envelope.clamp_min(floor)), thr, rat, kn)
        gain_db = gain_db + m * linear_gain
    return gain_db
