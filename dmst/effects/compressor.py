"""Soft-knee compressor with real attack and release, and a choice of detector and topology.

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
3. Topology, blended in dB by ``feedback``: 0 feed-forward (all of the above: the
   detector reads the input), 1 feedback (Giannoulis et al., fig. 1b; 1176- and
   LA-2A-style): the detector (the same peak/RMS blend) reads the compressor's own
   output, and the gain follows its target with one branching smoother in dB
   (:mod:`._feedback`).  The feedback loop is scaled so that ``ratio`` is still the
   steady-state ratio and ``attack_ms`` / ``release_ms`` still the 63 % times of a level
   step's gain change (a plain loop would settle at ``2 - 1/ratio`` and run ``ratio``
   times faster).  The knee is on the detected (output) level, as in analogue feedback
   designs: in input level it spans ``threshold - knee/2`` to ``threshold + ratio *
   knee/2``, a softer onset.  With the peak detector the two topologies agree above
   the knee (the loop solves the same equation one sample late); they part where the
   detector averages the output (RMS), in the knee, and in how attack and release
   alternate (one branching smoother instead of a hold and a smoother).
4. Make-up gain.

For training, every feed-forward recursion runs on torchcomp's ``compressor_core`` (a
branching one-pole recursion with exact gradients, Yu et al., "Differentiable All-pole
Filters for Time-varying Audio Systems", DAFx 2024), and the feedback loop on its own
adjoint (:class:`._feedback.FeedbackGain`).  For rendering without gradients, the same
recursions run as compiled loops (:mod:`._ballistics`, :mod:`._feedback`).  The choice
is :func:`._path.render_path`'s.
"""
from __future__ import annotations

import math

import torch

from . import _feedback
from ._ballistics import ballistics, family, one_pole
from ._llvm import kernel_threads, map_threads
from ._dynamics import KNEE_FLOOR_DB, _compressor_core, soft_knee, time_constant_coefficient
from ._path import per_item, render_path

LEVEL_FLOOR_DB = -120.0
FLOOR = 10 ** (LEVEL_FLOOR_DB / 20)

__all__ = ["compressor", "gain_computer", "detector_level_db", "detector_family_gain_db", "feedback_gain_db", "time_constant_coefficient",
           "LEVEL_FLOOR_DB"]


def gain_computer(level_db: torch.Tensor, threshold_db, ratio, knee_db) -> torch.Tensor:
    """Static soft-knee curve: gain change in dB (<= 0) for an input level in dB.

    Below ``threshold - knee/2``: 0 dB.  Above ``threshold + knee/2``: the output
    rises 1/ratio dB per input dB.  In between, the quadratic interpolation of
    Giannoulis et al. (eq. 4), :func:`._dynamics.soft_knee`.  Parameters broadcast against ``level_db``.
    """
    knee = torch.clamp(torch.as_tensor(knee_db, dtype=level_db.dtype, device=level_db.device), min=KNEE_FLOOR_DB)
    return soft_knee(level_db - threshold_db, 1.0 / ratio - 1.0, knee)


def _live(weight: torch.Tensor, render: bool) -> bool:
    """Whether a blend's branch must run: its weight is not 0 everywhere, or it is learned (training path)."""
    return bool((weight != 0).any()) or (not render and weight.requires_grad)


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
    feedback=0.0,
    return_gain: bool = False,
):
    """Compress ``x`` of shape (batch, channels, samples); parameters are (batch,) tensors or floats.

    Returns the compressed signal, and with ``return_gain=True`` also the applied
    gain in dB (batch, samples), make-up excluded.  ``detector_rms``,
    ``rms_window_ms``, ``linear_envelope`` and ``feedback`` choose the detector family
    and the topology (module docstring); at their defaults the compressor is the peak,
    dB-domain, feed-forward design of schema version 2.
    """
    batch = x.shape[0]
    threshold_db, ratio, knee_db, attack_ms, release_ms, makeup_gain_db, detector_rms, rms_window_ms, linear_envelope, \
        feedback = (per_item(v, batch, x) for v in (threshold_db, ratio, knee_db, attack_ms, release_ms, makeup_gain_db,
                                                     detector_rms, rms_window_ms, linear_envelope, feedback))
    render = render_path(x, threshold_db, ratio, knee_db, attack_ms, release_ms, makeup_gain_db, detector_rms,
                         rms_window_ms, linear_envelope, feedback)
    curve = (threshold_db, ratio, knee_db)
    if render and _live(1 - feedback, render) and _live(feedback, render) and kernel_threads() > 1:
        # Both topologies read the same input and are independent recursions, each latency-bound on
        # one core: run them side by side (ctypes releases the GIL), then blend as below.
        ff, fb = map_threads(lambda run: run(), [
            lambda: _feed_forward_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms, release_ms,
                                          detector_rms, rms_window_ms, linear_envelope, render),
            lambda: feedback_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms, release_ms, detector_rms,
                                     rms_window_ms, render=render)], 2)
        gain_db = ff.mul_(1 - feedback[:, None]).add_(fb.mul_(feedback[:, None]))
        return _apply_gain(x, gain_db, makeup_gain_db, render, return_gain)
    gain_db = 0.0
    if _live(1 - feedback, render):
        ff = _feed_forward_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms, release_ms, detector_rms,
                                   rms_window_ms, linear_envelope, render)
        gain_db = ff if not _live(feedback, render) else (1 - feedback[:, None]) * ff
    if _live(feedback, render):
        gain_db = gain_db + feedback[:, None] * feedback_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms,
                                                                 release_ms, detector_rms, rms_window_ms, render=render)
    return _apply_gain(x, gain_db, makeup_gain_db, render, return_gain)


def _feed_forward_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms, release_ms, detector_rms,
                          rms_window_ms, linear_envelope, render):
    if render and not _live(detector_rms, render) and not _live(linear_envelope, render):
        # The v2 compressor: static curve and both smoothing passes in one compiled loop, on the
        # linked peak in dB computed in place (no (batch, channels, samples) temporary).
        level_db = _linked_peak(x, render)
        level_db.clamp_min_(FLOOR).log10_().mul_(20)
        return ballistics(level_db, time_constant_coefficient(attack_ms, sample_rate),
                          time_constant_coefficient(release_ms, sample_rate), curve=(threshold_db, ratio, knee_db))
    return detector_family_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms, release_ms,
                                   detector_rms, rms_window_ms, linear_envelope, render=render)


def _apply_gain(x, gain_db, makeup_gain_db, render, return_gain):
    if not render:
        y = x * 10 ** ((gain_db + makeup_gain_db[:, None]) / 20).unsqueeze(1)
    else:  # the same arithmetic, one temporary: 10 ** (dB / 20) as exp(dB * ln(10) / 20)
        y = x * (gain_db + makeup_gain_db[:, None]).mul_(math.log(10) / 20).exp_().unsqueeze(1)
    return (y, gain_db) if return_gain else y


def _linked_peak(x: torch.Tensor, render: bool) -> torch.Tensor:
    """max over channels of |x|: (batch, samples); in place of one channel's copy when rendering."""
    if not render:
        return x.abs().amax(dim=1)
    peak = x[:, 0].abs()
    for channel in range(1, x.shape[1]):
        torch.maximum(peak, x[:, channel].abs(), out=peak)
    return peak


def _one_pole(x: torch.Tensor, falling: torch.Tensor, rising: torch.Tensor, render: bool) -> torch.Tensor:
    """Branching one-pole from a zero state: the compiled loop when rendering, else torchcomp (exact gradients)."""
    if render:
        return one_pole(x, falling, rising)
    return _compressor_core()(x, torch.zeros_like(falling), falling, rising)


def detector_level_db(x: torch.Tensor, sample_rate: float, detector_rms, rms_window_ms, render: bool | None = None) -> torch.Tensor:
    """The linked detector level in dB (batch, samples): peak (``detector_rms`` 0) to RMS (1), blended in dB.

    Peak: ``max_channels |x|``.  RMS: the square root of the one-pole average of that
    peak squared, with a 63 % time constant of ``rms_window_ms`` on the mean square.
    Both are floored at -120 dBFS.  ``detector_rms`` and ``rms_window_ms``: (batch,).
    """
    if render is None:
        render = render_path(x, detector_rms, rms_window_ms)
    peak = x.abs().amax(dim=1)
    peak_db = 20 * torch.log10(peak.clamp_min(FLOOR))
    w = detector_rms.to(peak_db.dtype)[:, None]
    if not _live(w, render):
        return peak_db
    c = time_constant_coefficient(rms_window_ms.to(peak.dtype), sample_rate)
    mean_square = _one_pole(peak * peak, c, c, render)
    rms_db = 10 * torch.log10(mean_square.clamp_min(FLOOR * FLOOR))
    return (1 - w) * peak_db + w * rms_db


def detector_family_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms, release_ms,
                            detector_rms, rms_window_ms, linear_envelope, render: bool | None = None) -> torch.Tensor:
    """Feed-forward gain in dB (batch, samples) for any detector family; parameters are (batch,) tensors.

    ``(1 - m) * dB-domain gain + m * linear-envelope gain`` with ``m = linear_envelope``
    (module docstring), both driven by :func:`detector_level_db`.
    """
    if render is None:
        render = render_path(x, threshold_db, ratio, knee_db, attack_ms, release_ms, detector_rms, rms_window_ms,
                             linear_envelope)
    if render:  # everything in one compiled pass over the linked peak
        coef = [time_constant_coefficient(v.to(x.dtype), sample_rate) for v in (attack_ms, release_ms, rms_window_ms)]
        return family(_linked_peak(x, render), *coef, detector_rms, linear_envelope, (threshold_db, ratio, knee_db), FLOOR)
    level_db = detector_level_db(x, sample_rate, detector_rms, rms_window_ms, render)
    attack = time_constant_coefficient(attack_ms, sample_rate).to(level_db.dtype)
    release = time_constant_coefficient(release_ms, sample_rate).to(level_db.dtype)
    m = linear_envelope.to(level_db.dtype)[:, None]
    thr, rat, kn = threshold_db[:, None], ratio[:, None], knee_db[:, None]
    gain_db = 0.0
    if _live(1 - m, render):
        target_db = gain_computer(level_db, thr, rat, kn)
        core = _compressor_core()
        instant, start = torch.ones_like(attack), torch.zeros_like(attack)
        held_db = core(target_db, start, instant, release)  # instant attack, exponential release
        gain_db = (1 - m) * core(held_db, start, attack, instant)  # attack-only smoothing
        del held_db, target_db
    if _live(m, render):
        # Envelope of the linear level: attack while the level is above it.  Negated, "above" is
        # compressor_core's "below" branch, which takes its first (attack) coefficient.
        level = torch.pow(10.0, level_db / 20)
        envelope = -_one_pole(-level, attack, release, render)
        linear_gain = gain_computer(20 * torch.log10(envelope.clamp_min(FLOOR)), thr, rat, kn)
        gain_db = gain_db + m * linear_gain
    return gain_db


def feedback_gain_db(x, sample_rate, threshold_db, ratio, knee_db, attack_ms, release_ms, detector_rms, rms_window_ms,
                     render: bool | None = None) -> torch.Tensor:
    """Gain in dB (batch, samples) of the feedback topology (module docstring, :mod:`._feedback`); (batch,) parameters.

    The detector reads the output: the linked peak of the input times the previous
    sample's gain, and the peak/RMS blend of ``detector_rms`` over it.
    """
    if render is None:
        render = render_path(x, threshold_db, ratio, knee_db, attack_ms, release_ms, detector_rms, rms_window_ms)
    coef = [time_constant_coefficient(v, sample_rate) for v in (attack_ms, release_ms, rms_window_ms)]
    knee = torch.clamp(knee_db, min=KNEE_FLOOR_DB)
    peak = _linked_peak(x, render)
    if render:
        return _feedback.forward(peak, *coef, detector_rms, threshold_db, ratio, knee, FLOOR)
    return _feedback.FeedbackGain.apply(peak, *coef, detector_rms, threshold_db, ratio, knee, FLOOR).to(x.dtype)
