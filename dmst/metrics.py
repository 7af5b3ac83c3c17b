"""Evaluation metrics for a rendered vocal against the engineer's mix.

The field's usual set (Steinmetz et al., DeepAFx-ST, JAES 2022; Vanka et al.,
Diff-MST, ISMIR 2024): multi-resolution STFT distance, integrated loudness error
(LU, ITU-R BS.1770), spectral-balance error in third-octave bands (dB, IEC 61260
centre frequencies, after matching overall level so it measures tone, not loudness),
crest-factor error (dB), and, where true settings are known, per-parameter error in
normalised units (parameter error alone misleads: Peladeau and Peeters, ICASSP 2024).

For the console v3 stages (de-esser, delay and reverb sends, stereo returns) there are
also :func:`space_metrics`: MR-STFT of the mid and of the side signal (the sum and
difference idea of Steinmetz et al., 2020), a sibilance error, a tail (space) energy
error and a stereo-width error, each in dB.  All take (batch, channels, samples)
tensors of equal length; a mono tensor has no side.
"""
from __future__ import annotations

import math

import torch

from . import schema
from .effects.gain import integrated_loudness
from .losses import MultiResolutionSTFT, sibilance_loss

_STFT = None


def mrstft_distance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """auraloss's multi-resolution STFT distance (spectral convergence + log magnitude) at the training loss's
    resolutions (FFT 256/1024/4096), each channel on its own."""
    global _STFT
    if _STFT is None:
        _STFT = MultiResolutionSTFT()
    with torch.no_grad():
        return float(_STFT(pred, target))


def loudness_error_lu(pred, target, sample_rate) -> float:
    """|integrated loudness of pred - of target| (LU, BS.1770: the channel powers summed, as delivered)."""
    a, b = integrated_loudness(pred, sample_rate), integrated_loudness(target, sample_rate)
    return float((a - b).abs().mean())


def third_octave_levels_db(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(batch, channels, samples) -> (batch, bands) energy per third-octave band, 50 Hz-16 kHz, dB re total."""
    spec = torch.fft.rfft(x.mean(dim=1), dim=-1).abs().pow(2)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / sample_rate)
    centres = [1000 * 2 ** (k / 3) for k in range(-13, 13) if 50 <= 1000 * 2 ** (k / 3) <= min(16000, 0.45 * sample_rate)]
    bands = []
    for fc in centres:
        m = (freqs >= fc * 2 ** (-1 / 6)) & (freqs < fc * 2 ** (1 / 6))
        bands.append(spec[:, m].sum(-1))
    e = torch.stack(bands, dim=-1) + 1e-12
    return 10 * torch.log10(e / e.sum(-1, keepdim=True))


def spectral_balance_error_db(pred, target, sample_rate) -> float:
    """Mean |difference| of the third-octave band shares (dB, :func:`third_octave_levels_db`): tone, not level."""
    return float((third_octave_levels_db(pred, sample_rate) - third_octave_levels_db(target, sample_rate)).abs().mean())


def crest_factor_db(x: torch.Tensor) -> torch.Tensor:
    """(batch,) peak over RMS of all channels (dB)."""
    peak = x.abs().amax(dim=(1, 2))
    rms = x.pow(2).mean(dim=(1, 2)).sqrt()
    return 20 * torch.log10(peak.clamp_min(1e-9) / rms.clamp_min(1e-9))


def crest_factor_error_db(pred, target) -> float:
    """|crest factor of pred - of target| (dB): how much more or less the peaks stand out (what compression and
    limiting change)."""
    return float((crest_factor_db(pred) - crest_factor_db(target)).abs().mean())


def mid_side(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 1, n) mid (L + R) / 2 and side (L - R) / 2 of a (batch, channels, n) tensor; a mono tensor's side is 0."""
    if x.shape[1] == 2:
        return 0.5 * (x[:, :1] + x[:, 1:]), 0.5 * (x[:, :1] - x[:, 1:])
    mid = x.mean(dim=1, keepdim=True)
    return mid, torch.zeros_like(mid)


def mid_mrstft_distance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """MR-STFT distance (the training loss's resolutions) between the mid signals: the tone and dynamics of the
    centre, what a listener hears in mono."""
    return mrstft_distance(mid_side(pred)[0], mid_side(target)[0])


def side_mrstft_distance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """MR-STFT distance between the side signals: the spectrum and time course of what is not in the centre (the
    stereo returns of a delay or reverb).  A mono prediction against a wide target is far (its side is silent); NaN
    when the target itself has no side (side energy under -60 dB re its mid: a mono mix has no image to compare)."""
    mid_t, side_t = mid_side(target)
    if float(side_t.pow(2).sum()) <= 1e-6 * float(mid_t.pow(2).sum()):
        return float("nan")
    return mrstft_distance(mid_side(pred)[1], side_t)


def _frame_power(x: torch.Tensor, win: int) -> torch.Tensor:
    """(batch, frames) power of consecutive ``win``-sample frames, channels summed (as BS.1770 sums them)."""
    n = x.shape[-1] // win * win
    return x[..., :n].double().pow(2).sum(dim=1).reshape(x.shape[0], -1, win).mean(dim=-1)


def sibilance_error_db(pred: torch.Tensor, target: torch.Tensor, sample_rate: int, band=(5000.0, 10000.0),
                       frame_s: float = 0.02, share: float = 0.1) -> float:
    """Sibilance error (dB): how much stronger or weaker the esses are in ``pred`` than in ``target``, in the
    target's loud sibilant 20 ms frames (:func:`dmst.losses.sibilance_loss`, whose docstring says how), averaged
    over the batch."""
    with torch.no_grad():
        return float(sibilance_loss(pred.double(), target.double(), sample_rate, band, frame_s, share)) * 10.0


def tail_ratio_db(x: torch.Tensor, dry: torch.Tensor, sample_rate: int, frame_s: float = 0.05,
                  gap_db: float = 40.0, phrase_db: float = 20.0) -> torch.Tensor:
    """(batch,) energy of ``x`` in the dry signal's gaps relative to its energy in the phrases (dB, floored at -100).

    ``dry`` is the unprocessed take (batch, channels, m <= n), silent after its end.  In 50 ms frames of the dry
    signal: phrases are within ``phrase_db`` (20 dB) of its 95th-percentile frame, gaps more than ``gap_db`` (40 dB)
    under it, and every frame after the dry signal's end.  What a mix puts in the gaps is its space: reverb and
    delay tails, and the noise the gate left.  NaN where the dry signal has no gap.
    """
    win = max(1, int(frame_s * sample_rate))
    dry = torch.nn.functional.pad(dry, (0, x.shape[-1] - dry.shape[-1]))
    pd, px = _frame_power(dry, win), _frame_power(x, win)
    ref = torch.quantile(pd, 0.95, dim=-1, keepdim=True)
    phrase, gap = pd > ref * 10 ** (-phrase_db / 10), pd < ref * 10 ** (-gap_db / 10)
    num = (px * gap).sum(-1) / gap.sum(-1).clamp_min(1)
    den = (px * phrase).sum(-1) / phrase.sum(-1).clamp_min(1)
    ratio = 10 * torch.log10((num / den.clamp_min(1e-30)).clamp_min(1e-10))
    return torch.where(gap.any(-1), ratio, torch.full_like(ratio, float("nan")))


def tail_energy_error_db(pred: torch.Tensor, target: torch.Tensor, sample_rate: int, dry: torch.Tensor) -> float:
    """Tail (space) error (dB): |:func:`tail_ratio_db` of pred - of target|, the gaps and phrases found on ``dry``
    (the raw take): whether the render fills the pauses and the end with as much space as the mix does."""
    return float((tail_ratio_db(pred, dry, sample_rate) - tail_ratio_db(target, dry, sample_rate)).abs().mean())


def stereo_width_db(x: torch.Tensor) -> torch.Tensor:
    """(batch,) side-to-mid energy ratio (dB) over the whole signal, floored at -60 dB (a mono signal reads -60)."""
    mid, side = mid_side(x)
    ratio = side.double().pow(2).sum(dim=(1, 2)) / mid.double().pow(2).sum(dim=(1, 2)).clamp_min(1e-30)
    return 10 * torch.log10(ratio.clamp_min(1e-6))


def stereo_width_error_db(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Stereo-width error (dB): |side/mid energy ratio of pred - of target| (:func:`stereo_width_db`)."""
    return float((stereo_width_db(pred) - stereo_width_db(target)).abs().mean())


def space_metrics(pred: torch.Tensor, target: torch.Tensor, sample_rate: int, dry: torch.Tensor | None = None) -> dict[str, float]:
    """The console-v3 metrics of one (batch, channels, n) pair: mid and side MR-STFT, sibilance, width, and the tail
    error when the dry take is given."""
    out = {"mrstft_mid": mid_mrstft_distance(pred, target), "mrstft_side": side_mrstft_distance(pred, target),
           "sibilance_error_db": sibilance_error_db(pred, target, sample_rate),
           "stereo_width_error_db": stereo_width_error_db(pred, target)}
    if dry is not None:
        out["tail_energy_error_db"] = tail_energy_error_db(pred, target, sample_rate, dry)
    return out


def parameter_error(pred_params, true_params) -> dict[str, float]:
    """Mean absolute error per parameter in normalised [0, 1] units (flat dicts of tensors)."""
    a, b = schema.normalize(pred_params), schema.normalize(true_params)
    err = (a - b).abs().mean(dim=0)
    return {k: float(err[i]) for i, k in enumerate(schema.KEYS)}


def audio_metrics(pred: torch.Tensor, target: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """All audio metrics for one (batch, channels, samples) pair of tensors."""
    return {
        "mrstft": mrstft_distance(pred, target),
        "loudness_error_lu": loudness_error_lu(pred, target, sample_rate),
        "spectral_balance_error_db": spectral_balance_error_db(pred, target, sample_rate),
        "crest_factor_error_db": crest_factor_error_db(pred, target),
    }


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {k: float(sum(r[k] for r in rows) / len(rows)) for k in keys if all(math.isfinite(r[k]) for r in rows)}
