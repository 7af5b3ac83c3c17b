"""The console: the fixed vocal chain that every dmst prediction drives.

    input gain staging -> gate -> EQ -> compressor -> de-esser -> post-compressor EQ
      -> saturation -> dry + delay send + reverb send -> output loudness -> limiter

The gate comes first so that the EQ and the compressor do not lift the noise and
breaths it turns down; the de-esser follows the compressor (which would otherwise
undo part of it) and the post-compressor EQ, as engineers boost after compressing.
The two sends take the saturated signal and return in stereo
(:func:`dmst.effects.sends.sends`: both in one convolution).  The delay does not feed
the reverb (the two returns are parallel): that would need one more convolution of
the two responses.  The dry signal stays as it is, centred: with
``output_channels=2`` a mono take comes out as two equal channels plus the stereo returns
(what ``dmst render`` does when a send is on); by default the output keeps the input's
layout, and a mono output gets the returns' mid.  With ``tail=True`` (``dmst render``,
:func:`dmst.render`, the service) a render whose send is on runs past the input's end by the
sends' tail, until every return that is on has fallen 80 dB below its start (at most
10 s: :func:`dmst.effects.sends.tail_samples`), as a mixing engineer bounces a mix with its
reverb and echo tails; with every send off, and by default (training, whose raws are
padded for the tails of their mixes), the output keeps the input's length exactly.
The true-peak limiter comes after the loudness
stage, so a delivery at any loudness stays under ``limiter.ceiling_dbtp``.  Every new
stage's defaults are a bypass (the limiter's off at 0 dBTP; a migrated v2 settings file
gets it off), so a v2 setting renders as the v2 console did.

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

import functools
from typing import Collection, Mapping

import torch
import torch.utils.checkpoint

from . import schema
from .effects import compressor, gain, loudness_normalize, parametric_eq, saturation, staging_gain_db
from .effects._sends import send_gain
from .effects.deesser import deesser
from .effects.gain import REFERENCE_LUFS
from .effects.gate import gate
from .effects.limiter import limiter
from .effects.post_eq import post_eq
from .effects.sends import sends, tail_samples


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
    output_channels: int | None = None,
    tail: bool = False,
    checkpoint: bool | Collection[str] = False,
    chunk: int | None = None,
) -> torch.Tensor:
    """Run (batch, channels, samples) audio through the chain with per-item ``params``.

    ``params`` is a flat dict of (batch,) physical-unit tensors keyed like
    ``"compressor.attack_ms"`` (see :func:`dmst.schema.denormalize`).
    ``staging_db`` is the input gain per item; measured from ``x`` when omitted (pass
    the gain measured on a whole file when rendering a crop of it).
    ``excerpt_offset_lu``: when ``x`` is an excerpt of a longer song, how much louder
    than the whole song the excerpt should come out (per item, LU; training takes it
    from the engineer's mix): the song lands on ``output.loudness_lufs``, not each excerpt.
    ``output_channels``: the output's layout, by default the input's: a mono take's output
    is mono, with the sends' returns folded to their mid (L + R) / 2 (what the training data
    path pairs today); 2 gives stereo, the dry signal centred on both channels and the
    returns in stereo (``dmst render`` and :func:`dmst.render` ask for it when a send is on:
    :func:`sends_on`).  The layout never depends on the values, so training batches keep
    their shape.
    ``tail``: when a send is on, the output is longer than ``x`` by the sends' tail
    (:func:`dmst.effects.sends.tail_samples`: until the returns have fallen 80 dB, at most 10 s), the dry
    signal silent there; with the sends off, or ``tail=False`` (the default, training), it keeps ``x``'s length.
    ``checkpoint``: under autograd, these stages' intermediates (names of :data:`STAGES`; True:
    every stage) are recomputed in the backward pass instead of kept, so only one recomputed
    stage's are alive at a time: the same values and gradients, for one more forward pass through
    those stages.  Training picks them from the batch's shape and a memory budget
    (:func:`recompute_plan`).
    ``chunk``: the recomputed stages run, and are recomputed, that many batch items at a time (every stage is
    per item: the same render), so the backward pass holds one chunk's intermediates of one stage; not with
    ``tail``, whose length may differ from item to item.
    """
    check_audio(x)
    if output_channels not in (None, 1, 2) or output_channels == 1 and x.shape[1] != 1:
        raise AudioError(f"output_channels must be 1 (mono input only) or 2, got {output_channels}")
    if staging_db is None:
        staging_db = staging_gain_db(x, sample_rate)
    if checkpoint is True or checkpoint is False:
        checkpoint = STAGES if checkpoint else ()
    if set(checkpoint) - set(STAGES):
        raise ValueError(f"unknown console stages {sorted(set(checkpoint) - set(STAGES))}; known: {', '.join(STAGES)}")
    recompute = frozenset(checkpoint) if torch.is_grad_enabled() else frozenset()
    chunk = None if tail else chunk

    def stage(name, fn, *args, **kwargs):
        return _recomputed(fn, *args, chunk=chunk, **kwargs) if name in recompute else fn(*args, **kwargs)

    y = gain(x, staging_db)
    y = stage("gate", gate, y, sample_rate, **group(params, "gate"))
    y = stage("eq", parametric_eq, y, sample_rate, **group(params, "eq"))
    y = stage("compressor", compressor, y, sample_rate, **group(params, "compressor"))
    y = stage("deesser", deesser, y, sample_rate, **group(params, "deesser"))
    y = stage("post_eq", post_eq, y, sample_rate, **group(params, "post_eq"))
    y = stage("saturation", saturation, y, sample_rate, **group(params, "saturation"))
    y = stage("sends", _with_sends, y, sample_rate, group(params, "delay"), group(params, "reverb"), output_channels, tail)
    y = stage("loudness", loudness_normalize, y, sample_rate, params["output.loudness_lufs"], excerpt_offset_lu)
    return stage("limiter", limiter, y, sample_rate, **group(params, "limiter"))


# The console's stages in order, by the names ``render(checkpoint=...)`` and :func:`recompute_plan` use.
STAGES = ("gate", "eq", "compressor", "deesser", "post_eq", "saturation", "sends", "loudness", "limiter")

# What each stage's training path keeps for the backward pass, in copies of its input signal (float32, per
# sample of each channel it processes; the sends and later stages run on the output's channels).  Measured with
# torch.autograd.graph.saved_tensors_hooks on 8 five-second crops (bench/bench_train.py's batch; README
# "Training and inference").  A model of the chain, not a promise to the byte: it sizes a step from its shape.
SAVED_COPIES = {"gate": 23, "eq": 36, "compressor": 42, "deesser": 50, "post_eq": 18, "saturation": 14,
                "sends": 21, "loudness": 5.5, "limiter": 18}


def activation_bytes(batch: int, samples: int, input_channels: int = 1, output_channels: int | None = None) -> dict:
    """Estimated bytes each stage keeps for the backward pass, for a training batch of this shape."""
    out = output_channels or input_channels
    late = ("sends", "loudness", "limiter")
    return {name: SAVED_COPIES[name] * 4 * batch * samples * (out if name in late else input_channels)
            for name in STAGES}


def recompute_plan(batch: int, samples: int, input_channels: int = 1, output_channels: int | None = None,
                   budget_bytes: float = float("inf")) -> tuple[str, ...]:
    """The console stages a training step recomputes in its backward pass: none when every stage's saved
    activations (:func:`activation_bytes`) fit ``budget_bytes``, otherwise every stage.

    Deterministic from the batch's shape.  All or nothing, because what a step holds besides the console
    (the loss's spectra, the encoder) is the same for a mono and a stereo step: a step that does not fit
    keeps its peak where recomputing everything puts it (keeping some stages adds about 0.7 of what they keep
    to the peak; README "Training and inference").
    """
    return () if sum(activation_bytes(batch, samples, input_channels, output_channels).values()) <= budget_bytes \
        else STAGES


def _recomputed(fn, y, *args, chunk: int | None = None, **kwargs):
    """``fn(y, *args, **kwargs)`` with its intermediates recomputed in the backward pass instead of kept
    (``torch.utils.checkpoint``, Chen et al., "Training deep nets with sublinear memory cost", 2016); with
    ``chunk``, ``chunk`` batch items at a time (the items of ``y`` and of every per-item tensor argument)."""
    batch = y.shape[0]
    if not chunk or chunk >= batch:
        return torch.utils.checkpoint.checkpoint(fn, y, *args, use_reentrant=False, **kwargs)
    parts = []
    for i in range(0, batch, chunk):
        items = functools.partial(_items, batch=batch, start=i, stop=i + chunk)
        parts.append(torch.utils.checkpoint.checkpoint(fn, y[i:i + chunk], *map(items, args), use_reentrant=False,
                                                       **{k: items(v) for k, v in kwargs.items()}))
    return torch.cat(parts)


def _items(a, batch: int, start: int, stop: int):
    """Items ``start:stop`` of a per-item argument (a tensor whose first dimension is the batch, or a dict of
    them); any other argument as it is."""
    if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == batch:
        return a[start:stop]
    if isinstance(a, Mapping):
        return {k: _items(v, batch, start, stop) for k, v in a.items()}
    return a


def sends_on(params: Mapping[str, torch.Tensor]) -> bool:
    """Whether the delay or the reverb send of any item is on (its return not exactly zero)."""
    return any(bool((send_gain(torch.as_tensor(params[k])) != 0).any()) for k in ("delay.send_db", "reverb.send_db"))


def _with_sends(y: torch.Tensor, sample_rate: int, delay: dict, reverb: dict, output_channels: int | None,
                tail: bool = False) -> torch.Tensor:
    """The dry signal plus the stereo delay and reverb returns, in ``output_channels`` (default: ``y``'s);
    with ``tail``, followed by the returns' tail when a send is on."""
    channels = output_channels or y.shape[1]
    if channels == 2 and y.shape[1] == 1:
        y = y.expand(-1, 2, -1)  # the dry signal centred
    if not sends_on({"delay.send_db": delay["send_db"], "reverb.send_db": reverb["send_db"]}):
        return y.contiguous()
    length = y.shape[-1] + (tail_samples(sample_rate, delay, reverb) if tail else 0)
    returns = sends(y, sample_rate, delay, reverb, length)  # (batch, 2, length), from the send's mono sum
    if length > y.shape[-1]:
        y = torch.nn.functional.pad(y, (0, length - y.shape[-1]))  # the dry signal ends with the input
    if y.shape[1] == 1:
        return y + returns.mean(dim=1, keepdim=True)  # a mono output: the returns' mid
    if y.shape[1] == 2:
        return y + returns
    return torch.cat([y[:, :2] + returns, y[:, 2:]], dim=1)  # more than two channels: returns on the first two


class Console(torch.nn.Module):
    """Module form of :func:`render` for a fixed sample rate."""

    def __init__(self, sample_rate: int):
        super().__init__()
        self.sample_rate = sample_rate

    def forward(self, x, params, staging_db=None, excerpt_offset_lu=None, output_channels=None, tail=False):
        return render(x, self.sample_rate, params, staging_db, excerpt_offset_lu, output_channels, tail)


__all__ = ["AudioError", "Console", "REFERENCE_LUFS", "STAGES", "activation_bytes", "check_audio", "recompute_plan", "render",
           "schema", "sends_on"]
