"""``dmst fit``: the console settings that best reproduce one mix from its raw vocal.

No network: the 25 console parameters are optimised directly (Adam on the sigmoid
logits of their normalised values, starting from the schema defaults) against the
training loss, in the mix's channel layout (recorded as ``meta.output_channels``, so
``dmst render --params`` renders in it too).  A song is fitted on short excerpts, a
few per step, and its output loudness is then solved on the whole song.  It answers "what did I do on that song?", and it is the per-song
ceiling a trained model is measured against.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from . import schema
from .console import render
from .data import Pair, check_pairs, excerpt_loudness_offset_lu, to_layout
from .effects.gain import integrated_loudness, staging_gain_db
from .losses import MixLoss

WHOLE_SECONDS = 20.0  # a pair up to this long is fitted whole, every step
# A longer song is fitted on short excerpts, a few per step (minibatches).
EXCERPT_SECONDS = 1.5
EXCERPTS_PER_STEP = 2
EXCERPT_POOL = 24  # evenly spaced over the song's active part
DEFAULT_STEPS = 300


def excerpt_pool(raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int, seconds: float = EXCERPT_SECONDS,
                 count: int = EXCERPT_POOL) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` aligned (count, channels, n) excerpts of ``seconds``, evenly spaced over the song, where
    both the raw and the mix are within 30 dB of their loudest excerpt (pauses and tails teach nothing here)."""
    seg = int(seconds * sample_rate)
    n = raw.shape[-1]
    grid = torch.arange(0, n - seg + 1, seg // 2)
    keep = torch.ones(len(grid), dtype=torch.bool)
    for x in (raw, mixed):
        level = 10 * torch.log10(torch.stack([x[:, s:s + seg].pow(2).mean() for s in grid.tolist()]) + 1e-20)
        keep &= level > level.max() - 30
    active = grid[keep]
    starts = active[torch.linspace(0, len(active) - 1, min(count, len(active))).round().long()].tolist()
    return torch.stack([raw[:, s:s + seg] for s in starts]), torch.stack([mixed[:, s:s + seg] for s in starts])


def fit_params(raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int, steps: int = DEFAULT_STEPS, lr: float = 0.05,
               progress: bool = False, init: dict | None = None, staging_db: float | None = None) -> tuple[dict, float]:
    """Optimise one setting so that console(raw) matches ``mixed``; both (channels, n), aligned.

    The render is in the mix's layout (a mono raw against a stereo mix is rendered as
    centred stereo), and loudness is that of the delivered file (BS.1770 sums the
    channels).  A pair up to ``WHOLE_SECONDS`` long is fitted whole; a longer song on ``EXCERPTS_PER_STEP`` short excerpts per step, drawn in turn from a
    pool spread over the song, so a step costs the same for any song length.  The
    output loudness is then solved on the whole song: the output stage lands a render
    exactly on ``loudness_lufs``, so the best value is the mix's own loudness.

    ``staging_db``: the console's input gain if already measured on the whole raw file.
    Returns (nested params, final loss on the excerpts).  Deterministic for a given input.
    """
    raw = torch.as_tensor(raw, dtype=torch.float32)
    mixed = torch.as_tensor(mixed, dtype=torch.float32)
    channels = mixed.shape[0]
    if staging_db is None:
        staging_db = float(staging_gain_db(raw[None], sample_rate)[0])  # on the raw as delivered, as training does
    # A mono raw is rendered once and copied (the console treats channels alike, so the copies are identical).
    raw = raw if raw.shape[0] == 1 else to_layout(raw, channels)
    whole_lufs = float(integrated_loudness(mixed[None], sample_rate)[0])
    n = raw.shape[-1]
    if n <= WHOLE_SECONDS * sample_rate:
        raw_x, mix_x = raw[None], mixed[None]
        per_step = raw_x.shape[0]
    else:
        raw_x, mix_x = excerpt_pool(raw, mixed, sample_rate)
        per_step = min(EXCERPTS_PER_STEP, raw_x.shape[0])
    offset = excerpt_loudness_offset_lu(mix_x, whole_lufs, sample_rate) if raw_x.shape[-1] < n else torch.zeros(raw_x.shape[0])
    staging = torch.full((raw_x.shape[0],), float(staging_db))

    start = schema.normalize(schema.stack([init])) if init else schema.default_normalized()[None]
    start = start.clamp(1e-3, 1 - 1e-3)
    logits = torch.nn.Parameter(torch.log(start) - torch.log1p(-start))
    opt = torch.optim.Adam([logits], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = MixLoss(sample_rate)

    # A mono raw for a stereo mix: the dry chain runs once, the console returns stereo (centred dry, stereo sends).
    layout = 2 if raw.shape[0] == 1 and channels == 2 else None

    def loss_of(u_logits, idx):
        params = schema.denormalize(torch.sigmoid(u_logits).expand(len(idx), -1))
        y = render(raw_x[idx], sample_rate, params, staging_db=staging[idx], excerpt_offset_lu=offset[idx],
                   output_channels=layout)
        return loss_fn(to_layout(y, channels), mix_x[idx])

    whole_batch = per_step == raw_x.shape[0]
    order = torch.randperm(raw_x.shape[0], generator=torch.Generator().manual_seed(0))
    best = (float("inf"), logits.detach().clone())
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="fitting", unit="step", file=sys.stderr)
    for step in it:
        if whole_batch:
            idx = torch.arange(raw_x.shape[0])
        else:  # the pool in a fixed shuffled order, per_step excerpts at a time
            k = step * per_step
            idx = order[torch.arange(k, k + per_step) % raw_x.shape[0]]
        loss = loss_of(logits, idx)
        before = logits.detach().clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
        if whole_batch and value < best[0]:  # measured before this step's update: keep the logits it was measured at
            best = (value, before)
        if progress:
            it.set_postfix(loss=f"{value:.4f}")
    if not whole_batch:  # minibatch losses are not comparable: the final (annealed) setting, scored on the pool
        with torch.no_grad():
            best = (float(loss_of(logits.detach(), torch.arange(raw_x.shape[0]))), logits.detach().clone())
    params = schema.unstack(schema.denormalize(torch.sigmoid(best[1]).double()))[0]
    if math.isfinite(whole_lufs):  # the whole-song loudness solve
        out = schema.BY_KEY["output.loudness_lufs"]
        params["output"]["loudness_lufs"] = min(max(whole_lufs, out.minimum), out.maximum)
    return params, best[0]


def main(argv=None) -> int:
    from .audio_io import AudioFileError, check_input, write_bytes

    p = argparse.ArgumentParser(prog="dmst fit", description="Find the console settings that reproduce MIXED from RAW (no network).")
    p.add_argument("raw")
    p.add_argument("mixed")
    p.add_argument("-o", "--output", help="write the settings JSON here (default: print to stdout)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimiser steps [{DEFAULT_STEPS}]")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--high-pass-slope", type=float, choices=schema.BY_KEY["eq.high_pass_slope_db"].choices, default=12.0,
                   metavar="{6,12,18,24}", help="the EQ's high-pass slope in dB/octave, held (a choice, not fitted) [12]")
    args = p.parse_args(argv)
    init = None  # the schema defaults; another slope starts (and stays) there
    if args.high_pass_slope != 12.0:
        init = schema.default_dict()
        init["eq"]["high_pass_slope_db"] = args.high_pass_slope
    try:
        sample_rate = check_input(args.raw).sample_rate  # one-line errors for a missing, empty or broken file
        check_input(args.mixed)  # (headers only: each file is decoded once, by check_pairs)
        # The same checks training applies: silence, length, resampling, alignment, polarity, a different song.
        report = check_pairs([Pair(Path(args.raw).stem, Path(args.raw), Path(args.mixed))], sample_rate=sample_rate, progress=False)
        if not report.usable:
            raise AudioFileError(f"cannot fit {args.mixed} to {args.raw}: {report.skipped[0].reason}")
        for warning in report.warnings:
            print(f"dmst fit: warning: {warning}", file=sys.stderr)
        pair = report.usable[0]
        offset_ms = pair.offset_ms
        params, loss = fit_params(pair.raw, pair.mixed, sample_rate, steps=args.steps, progress=True, staging_db=pair.staging_db,
                                  init=init)
        text = schema.to_json(params, source=str(args.raw), fitted_to=str(args.mixed), loss=round(loss, 5),
                              offset_ms=round(offset_ms, 2), output_channels=pair.mixed_channels)
        if args.output:
            write_bytes(args.output, (text + "\n").encode(), inputs=[args.raw, args.mixed], force=args.force)
            print(f"wrote {args.output} (loss {loss:.4f}, mix offset {offset_ms:.1f} ms)", file=sys.stderr)
        else:
            print(text)
    except (AudioFileError, schema.ParamError, OSError) as e:
        print(f"dmst fit: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
