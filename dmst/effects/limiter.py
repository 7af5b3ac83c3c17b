"""True-peak limiter with lookahead, the last stage of the console (after the output loudness).

A look-ahead peak limiter in the usual offline form (e.g. the gain path of
Giannoulis, Massberg and Reiss, JAES 2012, with the lookahead of a brickwall limiter):

1. The true peak of each sample interval is measured 4x oversampled with the meter's
   own interpolator (ITU-R BS.1770-4 annex 2; :data:`dmst.effects.resample.TRUE_PEAK_RESAMPLE`),
   linked across channels.
2. The gain each sample needs, ``min(0, ceiling_dbtp - peak)`` dB (a sample's peak is the
   larger of the intervals on either side of it).
3. A minimum over the next ``LOOKAHEAD_MS`` (so the gain is down before a peak
   arrives), a recovery with ``release_ms`` (63 % time constant, instant attack),
   then a moving average over ``LOOKAHEAD_MS``.  The average of gains that are each at
   most what a peak needs is at most that, so the ceiling holds at every sample, and
   the gain ramps over the lookahead instead of jumping.

The render is offline, so the lookahead costs no latency: the gain is computed from
the whole file and the output is aligned with the input.  Below the ceiling the
gain is exactly 0 dB: the limiter is then an exact bypass.  At ``OFF_DBTP`` (0 dBTP,
the top of ``limiter.ceiling_dbtp``'s range) the limiter is off: an exact bypass
whatever the peaks (what a migrated v2 settings file gets: v2 had no limiter).
"""
from __future__ import annotations

import math

import torch

from ._ballistics import lookahead_gain
from ._dynamics import db_to_gain, hold_db, moving_average, sliding_max, time_constant_coefficient
from ._path import per_item, render_path
from .resample import TRUE_PEAK_RESAMPLE, upsample, upsampled_peaks

OVERSAMPLE = 4
LOOKAHEAD_MS = 1.5
FLOOR = 1e-9  # -180 dBFS: peaks of silence
OFF_DBTP = 0.0  # a ceiling at or above this is no limiter (dmst.schema.LIMITER_OFF_DBTP)


def interval_peaks(x: torch.Tensor, render: bool) -> torch.Tensor:
    """(batch, channels, n) -> (batch, n): the largest magnitude of the 4x oversampled signal over [t, t + 1)."""
    batch, channels, n = x.shape
    if render:  # the compiled loop: the same sums, their largest magnitude over phases and channels only
        return torch.stack([upsampled_peaks(item, OVERSAMPLE, **TRUE_PEAK_RESAMPLE) for item in x]).to(x.dtype)
    else:
        peaks = upsample(x, OVERSAMPLE, **TRUE_PEAK_RESAMPLE).reshape(batch, channels, n, OVERSAMPLE).abs().amax(-1)
    return peaks.amax(dim=1)


def limiter(x: torch.Tensor, sample_rate: float, ceiling_dbtp=-1.0, release_ms=100.0, return_gain: bool = False):
    """Limit (batch, channels, samples) ``x`` to a true peak of ``ceiling_dbtp``; parameters floats or (batch,) tensors.

    With ``return_gain=True`` also returns the applied gain in dB, (batch, samples).
    """
    batch, _, n = x.shape
    ceiling_dbtp, release_ms = per_item(ceiling_dbtp, batch, x), per_item(release_ms, batch, x)
    render = render_path(x, ceiling_dbtp, release_ms)
    off = ceiling_dbtp >= OFF_DBTP
    if bool(off.all()):  # no limiter: exactly the input, and no work
        return (x.clone(), x.new_zeros(batch, n)) if return_gain else x.clone()
    window = max(1, round(LOOKAHEAD_MS * sample_rate / 1000))
    peaks = interval_peaks(x, render)
    if render:
        if bool((peaks.amax(dim=-1) <= 10 ** (ceiling_dbtp / 20)).all()):  # nothing over: exactly the input
            return (x.clone(), torch.zeros(batch, n, dtype=x.dtype)) if return_gain else x.clone()
        # Steps 2-3 in one compiled pass (the same arithmetic, float64 state), no full-length temporaries.
        release = time_constant_coefficient(release_ms.double(), sample_rate)
        gain_db = lookahead_gain(peaks, ceiling_dbtp.double(), release, window).to(x.dtype)
        gain_db[off] = 0.0
        y = x * gain_db.mul(math.log(10) / 20).exp_().unsqueeze(1)
        return (y, gain_db) if return_gain else y
    peaks = torch.maximum(peaks, torch.nn.functional.pad(peaks[:, :-1], (1, 0)))  # both intervals around sample t
    need_db = torch.clamp(ceiling_dbtp[:, None] - 20 * torch.log10(peaks.clamp_min(FLOOR)), max=0.0)
    # Before the start the gain is 0 dB; padding there keeps the average's bound for the first samples.
    need_db = torch.nn.functional.pad(need_db, (window - 1, 0))
    ahead = -sliding_max(-need_db, window, lookahead=True)
    held = hold_db(ahead, release_ms, sample_rate, render)
    gain_db = moving_average(held, window)[:, window - 1:]
    gain_db = torch.where(off[:, None], torch.zeros_like(gain_db), gain_db)
    y = x * db_to_gain(gain_db).unsqueeze(1)
    return (y, gain_db) if return_gain else y

