"""``dmst fit``: the console settings that best reproduce one mix from its raw vocal.

No network: the 25 console parameters are optimised directly (Adam on the sigmoid
logits of their normalised values, starting from the schema defaults) against the
training loss.  It answers "what did I do on that song?", and it is the per-song
ceiling a trained model is measured against.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import schema
from .console import render
from .data import Pair, check_pairs, excerpt_loudness_offset_lu, to_mono
from .effects.gain import integrated_loudness, staging_gain_db
from .losses import MixLoss

SEGMENT_SECONDS = 5.0
MAX_SEGMENTS = 4


def excerpt_segments(raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int):
    """Aligned mono (segments, 1, n) excerpts: the whole pair when short, else evenly spaced 5 s segments."""
    seg = int(SEGMENT_SECONDS * sample_rate)
    n = raw.shape[-1]
    if n <= seg * MAX_SEGMENTS:
        return raw[None], mixed[None]
    starts = torch.linspace(0, n - seg, MAX_SEGMENTS).long().tolist()
    return (torch.stack([raw[:, s:s + seg] for s in starts]), torch.stack([mixed[:, s:s + seg] for s in starts]))


def fit_params(raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int, steps: int = 300, lr: float = 0.05,
               progress: bool = False, init: dict | None = None, staging_db: float | None = None) -> tuple[dict, float]:
    """Optimise one setting so that console(raw) matches ``mixed``; both (channels, n), aligned.

    ``staging_db``: the console's input gain if already measured on the whole raw file.
    Returns (nested params, final loss).  Deterministic for a given input.
    """
    raw, mixed = to_mono(raw), to_mono(mixed)
    staging = staging_gain_db(raw[None], sample_rate) if staging_db is None else torch.tensor([float(staging_db)])
    raw_x, mix_x = excerpt_segments(raw, mixed, sample_rate)
    staging = staging.expand(raw_x.shape[0])
    whole_lufs = integrated_loudness(mixed[None], sample_rate)
    offset = excerpt_loudness_offset_lu(mix_x, whole_lufs, sample_rate) if raw_x.shape[-1] < raw.shape[-1] else None
    start = schema.normalize(schema.stack([init])) if init else schema.default_normalized()[None]
    start = start.clamp(1e-3, 1 - 1e-3)
    logits = torch.nn.Parameter(torch.log(start) - torch.log1p(-start))
    opt = torch.optim.Adam([logits], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = MixLoss(sample_rate)
    best = (float("inf"), logits.detach().clone())
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="fitting", file=sys.stderr)
    for _ in it:
        params = schema.denormalize(torch.sigmoid(logits).expand(raw_x.shape[0], -1))
        loss = loss_fn(render(raw_x, sample_rate, params, staging_db=staging, excerpt_offset_lu=offset), mix_x)
        before = logits.detach().clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
        if value < best[0]:  # the loss was measured before this step's update: keep the logits it was measured at
            best = (value, before)
        if progress:
            it.set_postfix(loss=f"{value:.4f}")
    return schema.unstack(schema.denormalize(torch.sigmoid(best[1]).double()))[0], best[0]


def main(argv=None) -> int:
    from .audio_io import AudioFileError, read_audio, write_bytes

    p = argparse.ArgumentParser(prog="dmst fit", description="Find the console settings that reproduce MIXED from RAW (no network).")
    p.add_argument("raw")
    p.add_argument("mixed")
    p.add_argument("-o", "--output", help="write the settings JSON here (default: print to stdout)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    args = p.parse_args(argv)
    try:
        sample_rate = read_audio(args.raw)[1]
        read_audio(args.mixed)  # one-line errors for a missing, empty or broken file
        # The same checks training applies: silence, length, resampling, alignment, polarity, a different song.
        report = check_pairs([Pair(Path(args.raw).stem, Path(args.raw), Path(args.mixed))], sample_rate=sample_rate, progress=False)
        if not report.usable:
            raise AudioFileError(f"cannot fit {args.mixed} to {args.raw}: {report.skipped[0].reason}")
        for warning in report.warnings:
            print(f"dmst fit: warning: {warning}", file=sys.stderr)
        pair = report.usable[0]
        offset_ms = pair.offset_ms
        params, loss = fit_params(pair.raw, pair.mixed, sample_rate, steps=args.steps, progress=True, staging_db=pair.staging_db)
        text = schema.to_json(params, source=str(args.raw), fitted_to=str(args.mixed), loss=round(loss, 5), offset_ms=round(offset_ms, 2))
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
