"""The console: the fixed vocal chain that every dmst prediction drives.

    input gain staging -> EQ -> compressor -> saturation -> output loudness

Both level stages are *measured*.  Input gain staging brings each raw vocal to
``REFERENCE_LUFS`` (ITU-R BS.1770 integrated loudness) before the effects, so a
predicted compressor threshold means the same thing for a quiet and a loud
recording.  The output stage measures the render and sets it on the predicted
``output.loudness_lufs``, as an engineer delivers to a loudness target: however much
the EQ, make-up gain or saturation moved the level, the vocal lands where the style
puts it.  (So the compressor's make-up gain sets how hard the saturation is driven,
not the final level.)  Everything between is set by the parameters of :mod:`dmst.schema`.
"""
from __future__ import annotations

from typing import Mapping

import torch

from . import schema
from .effects import compressor, gain, loudness_normalize, parametric_eq, saturation, staging_gain_db
from .effects.gain import REFERENCE_LUFS


class AudioError(ValueError):
    """Audio the console cannot process (empty, NaN/Inf, wrong shape)."""


def check_audio(x: torch.Tensor) -> None:
    """Raise :class:`AudioError` for audio the console must not render."""
    if x.dim() != 3:
        raise AudioError(f"audio must be (batch, channels, samples), got shape {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise AudioError("audio has no samples")
    if not torch.isfinite(x).all():
        raise AudioError("audio contains NaN or infinite samples; repair or re-export the file")


def group(params: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The ``name`` group of a flat params dict, keyed by bare parameter name."""
    prefix = name + "."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def render(
    x: torch.Tensor,
    sample_rate: int,
    params: Mapping[str, torch.Tensor],
    staging_db: torch.Tensor | None = None,
    excerpt_offset_lu: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run (batch, channels, samples) audio through the chain with per-item ``params``.

    ``params`` is a flat dict of (batch,) physical-unit tensors keyed like
    ``"compressor.attack_ms"`` (see :func:`dmst.schema.denormalize`).
    ``staging_db`` is the input gain per item; measured from ``x`` when omitted (pass
    the gain measured on a whole file when rendering a crop of it).
    ``excerpt_offset_lu``: when ``x`` is an excerpt of a longer song, how much louder
    than the whole song the excerpt should come out (per item, LU; training takes it
    from the engineer's mix): the song lands on ``output.loudness_lufs``, not each excerpt.
    """
    check_audio(x)
    if staging_db is None:
        staging_db = staging_gain_db(x, sample_rate)
    y = gain(x, staging_db)
    y = parametric_eq(y, sample_rate, **group(params, "eq"))
    y = compressor(y, sample_rate, **group(params, "compressor"))
    y = saturation(y, sample_rate, **group(params, "saturation"))
    return loudness_normalize(y, sample_rate, params["output.loudness_lufs"], excerpt_offset_lu)


class Console(torch.nn.Module):
    """Module form of :func:`render` for a fixed sample rate."""

    def __init__(self, sample_rate: int):
        super().__init__()
        self.sample_rate = sample_rate

    def forward(self, x, params, staging_db=None, excerpt_offset_lu=None):
        return render(x, self.sample_rate, params, staging_db, excerpt_offset_lu)


__all__ = ["AudioError", "Console", "REFERENCE_LUFS", "check_audio", "render", "schema"]
