"""Evaluation metrics for a rendered vocal against the engineer's mix.

The field's usual set (Steinmetz et al., DeepAFx-ST, JAES 2022; Vanka et al.,
Diff-MST, ISMIR 2024): multi-resolution STFT distance, integrated loudness error
(LU, ITU-R BS.1770), spectral-balance error in third-octave bands (dB, IEC 61260
centre frequencies, after matching overall level so it measures tone, not loudness),
crest-factor error (dB), and, where true settings are known, per-parameter error in
normalised units (parameter error alone misleads: Peladeau and Peeters, ICASSP 2024).
"""
from __future__ import annotations

import math

import torch

from . import schema
from .effects.gain import integrated_loudness
from .losses import MultiResolutionSTFT

_STFT = None


def mrstft_distance(pred: torch.Tensor, target: torch.Tensor) -> float:
    global _STFT
    if _STFT is None:
        _STFT = MultiResolutionSTFT()
    with torch.no_grad():
        return float(_STFT(pred, target))


def loudness_error_lu(pred, target, sample_rate) -> float:
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
    return float((third_octave_levels_db(pred, sample_rate) - third_octave_levels_db(target, sample_rate)).abs().mean())


def crest_factor_db(x: torch.Tensor) -> torch.Tensor:
    peak = x.abs().amax(dim=(1, 2))
    rms = x.pow(2).mean(dim=(1, 2)).sqrt()
    return 20 * torch.log10(peak.clamp_min(1e-9) / rms.clamp_min(1e-9))


def crest_factor_error_db(pred, target) -> float:
    return float((crest_factor_db(pred) - crest_factor_db(target)).abs().mean())


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
