"""Gain and loudness: output gain and the console's measured input gain staging.

Loudness is ITU-R BS.1770-4 integrated loudness (K-weighting, 400 ms blocks, absolute
gate at -70 LUFS and relative gate at -10 LU), as implemented by
``torchaudio.functional.loudness``.
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF

REFERENCE_LUFS = -18.0  # the level every raw vocal is staged to before the effects
MIN_LOUDNESS_LUFS = -70.0  # BS.1770 absolute gate: quieter than this counts as silence
BLOCK_SECONDS = 0.4


def gain(x: torch.Tensor, gain_db) -> torch.Tensor:
    """Multiply (batch, channels, samples) ``x`` by ``gain_db`` (float or (batch,) tensor)."""
    g = torch.as_tensor(gain_db, dtype=x.dtype, device=x.device).reshape(-1)
    return x * (10 ** (g / 20)).reshape(-1, 1, 1)


def integrated_loudness(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """BS.1770 integrated loudness of each item of (batch, channels, samples), in LUFS.

    Clips shorter than one 400 ms block are zero-padded to one block (the ungated
    K-weighted power of what is there).  Silence gives -inf.
    """
    x = x.detach().to(torch.float32)
    block = int(round(BLOCK_SECONDS * sample_rate))
    if x.shape[-1] < block:
        x = torch.nn.functional.pad(x, (0, block - x.shape[-1]))
    out = []
    for item in x:  # torchaudio's gating works per signal
        value = AF.loudness(item, sample_rate)
        out.append(value if torch.isfinite(value) else torch.tensor(float("-inf")))
    return torch.stack(out).to(torch.float32)


def staging_gain_db(x: torch.Tensor, sample_rate: int, reference_lufs: float = REFERENCE_LUFS) -> torch.Tensor:
    """The gain (dB, per item) that brings each item's integrated loudness to ``reference_lufs``.

    Silent or near-silent items (below -70 LUFS) get 0 dB: there is nothing to stage.
    """
    lufs = integrated_loudness(x, sample_rate)
    g = reference_lufs - lufs
    return torch.where(lufs > MIN_LOUDNESS_LUFS, g, torch.zeros_like(g))
