"""Train, or fine-tune, a dmst model on (raw vocal, finished mix) pairs.

    python train.py --data DATA --out runs/mine                  # from scratch
    python train.py --data DATA --out runs/mine --init default   # fine-tune the bundled model
    python train.py --data DATA --out runs/mine --resume         # continue after a kill
    python train.py --data DATA --out runs/mine --global         # one setting for all songs
    python train.py --data DATA --out runs/mine --high-pass-slope auto   # try each high-pass slope first

DATA holds raw/NAME.wav and mixed/NAME.wav (any soundfile format, rate, channels).
The encoder predicts console settings for each raw crop; the console renders them;
the loss compares the render with the engineer's mix; gradients flow back through the
effects into the encoder.  Training stops when the validation loss has not improved
by --min-delta for --patience epochs, at --time-budget, or at --epochs, whichever
comes first.  Writes RUN_DIR/model.pt (best on validation), last.pt (resumable),
metrics.json and cache/ (the checked pairs; see --cache-dir).  A fresh model starts at the
training start (the sends, the de-esser and the gate a little on, where they have a gradient:
:data:`dmst.schema.TRAINING_START`); at the end, each of them that the best model buys less than
0.5 % of the validation loss with is switched off in model.pt (:mod:`dmst.switches`, as ``dmst fit``
does), so a model of dry mixes renders dry.  The limiter's ceiling is not learned: it is held at the mixes'
loudest true peaks (off when they go over 0 dBTP).  Read top to bottom: setup, data, model, loop, end.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from dmst import schema
from dmst.console import activation_bytes, recompute_plan, render
from dmst.data import (DataError, check_dir, crop_start, excerpt_loudness_offset_lu, random_crop, resample, song_of,
                       split_by_song, to_layout)
from dmst.encoder import DmstModel, Encoder, ModelError, model_from_checkpoint, read_checkpoint
from dmst.encoder.features import SAMPLE_RATE
from dmst.encoder.model import atomic_save, hears_band_shares, resolve_model_path
from dmst.encoder.network import LIMITER_CEILING
from dmst.encoder.optim import UnitSpaceAdamW, WeightAverage
from dmst.fit import ECHO_SEARCH_SECONDS, echo_time_ms
from dmst.losses import MixLoss
from dmst.metrics import audio_metrics, mean_metrics
from dmst.switches import SWITCHES, TOLERANCE, pin_defaults, switch_off
from dmst.threads import reuse_freed_memory

FEW_PAIRS = 10  # below this, one global setting often beats a network
DEFAULTS = {"init": None, "global_only": False, "cache_dir": None, "workers": min(2, os.cpu_count() or 1),
            "epochs": None, "time_budget": None, "patience": 16, "min_delta": 1e-3, "song_separator": "__",
            "batch_size": 8, "crop_seconds": 5.0, "lr": 1e-3, "val_fraction": 0.15, "seed": 0, "device": "cpu",
            "keep_activations": False, "activation_budget": 1700.0, "quiet": False, "high_pass_slope": None}
# What shapes the training itself: --resume refuses a value that differs from the run's.
RUN_ARGS = ("data", "init", "global_only", "epochs", "time_budget", "patience", "min_delta", "song_separator",
            "batch_size", "crop_seconds", "lr", "val_fraction", "seed", "high_pass_slope")
SLOPE = "eq.high_pass_slope_db"  # a discrete row: the model holds it fixed, training does not learn it
CREST_WEIGHT = 0.0  # the loss's local-crest-factor term (dmst.losses.crest_loss): off until it is shown to help
MICRO_WEIGHT = 0.0  # the multi-resolution micro-dynamics term (dmst.losses.micro_dynamics_loss): tried at 1, not better
SIBILANCE_WEIGHT = 0.0  # the esses' level term (dmst.losses.sibilance_loss): tried at 1, not better
ENVELOPE_WEIGHT = 0.0  # the band-envelope term (dmst.losses.BandEnvelopeLoss, dmst fit's): tried at 1, it did not help
LIMITER = LIMITER_CEILING  # held by the encoder (hold_limiter), not learned
# The delay's time is not learned from the audio: its gradient is large and points anywhere (every time between two
# echoes is another comb), and it took the space benchmark's fine-tunes to a 70-250 ms slapback whatever the mixes'
# echo times (180-480 ms), also with a pull to the echoes added to it (weight 1; 10 in a test).  Where the training
# mixes have an echo (dmst.fit.echo_time_ms), the time is learned from it alone: this weight x its squared [0, 1]
# distance, the render's gradient on it cut (as dmst fit holds it).
ECHO_WEIGHT = 1.0
ECHO = "delay.time_ms"
# In the memory plan (every console stage recomputed), the console and the loss's spectra take a step's batch this
# many items at a time: the same loss and gradients, a lower peak (20 stereo 3.5-minute pairs, 16 steps of 8 x 5 s:
# 3277 MB whole batch, 2499 MB in twos, in 145 against 147 s; one at a time 2287 MB but 186 s; README).
RECOMPUTE_CHUNK = 2
DEFAULT_LR_FACTOR = 3.0  # the learned default's learning rate, in [0, 1] units a step, over the network's
PEAK_PAIRS, PEAK_QUANTILE = 64, 0.95  # the limiter's start: this quantile of the true peaks of up to this many mixes
# The weights validated and saved are an average of the recent steps' (dmst.encoder.optim.WeightAverage): an
# iterate weighs half after this many epochs.  The last weights alone swing the validation loss by 0.1-0.2 an epoch.
AVERAGE_HALF_LIFE_EPOCHS = 2.0
# Validation: this many crops a pair, fewer where that makes more than VAL_CROPS in all (one 5 s crop of each of
# 8 validation songs picked the epochs by noise); each pair's crops are one batch.
VAL_CROPS, VAL_CROPS_PER_PAIR = 32, 4
# The plateau's patience counts only from this far through the learning-rate schedule (when there is one: --epochs
# or --time-budget).  Before that the rate is high and the validation loss can sit flat for 16 epochs and then fall:
# on the foreign benchmark a 70-epoch run (seed 1) stopped at epoch 28 with its epoch-14 model (0.369 MR-STFT,
# where its 41-epoch run read 0.314).
PLATEAU_FROM_PROGRESS = 0.5
AUTO_CROPS, AUTO_STEPS = 4, 6  # --high-pass-slope auto: a global fit of this many steps on this many crops, per slope


def parse_args(argv=None):
    """The arguments, with ``given``: the names set on the command line (the rest take DEFAULTS, or the run's on --resume)."""
    d = DEFAULTS
    p = argparse.ArgumentParser(prog="dmst train", description=__doc__.split("\n\n")[0], argument_default=None)
    p.add_argument("--data", required=True, help="folder with raw/ and mixed/ subfolders")
    p.add_argument("--out", required=True, help="run folder for model.pt, last.pt, metrics.json")
    p.add_argument("--init", help="model to fine-tune from: 'default' (bundled) or a model.pt path")
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out from its last.pt (with the run's arguments)")
    p.add_argument("--global", dest="global_only", action="store_true", default=None, help="fit one setting for all songs (for very few pairs)")
    p.add_argument("--cache-dir", metavar="DIR", help="where the checked, aligned pairs are kept (24-bit .npy + .json "
                   "per pair, keyed by file content and settings); share one between runs to check each pair once "
                   "[RUN/cache]")
    p.add_argument("--workers", type=int, help=f"processes checking pairs side by side [{d['workers']}]")
    p.add_argument("--epochs", type=int, help="stop after this many epochs at most [no limit: until the plateau or the budget]")
    p.add_argument("--time-budget", type=float, metavar="MINUTES", help="stop cleanly after this many minutes [no limit]")
    p.add_argument("--patience", type=int, help="stop when the validation loss has not improved by --min-delta "
                   f"for this many epochs [{d['patience']}]")
    p.add_argument("--min-delta", type=float, help=f"smallest validation loss decrease that counts as progress [{d['min_delta']:g}]")
    p.add_argument("--song-separator", metavar="SEP", help="a pair's song is its name up to SEP (SONG__TAKE2.wav: SONG); "
                   "takes of one song stay on one side of the validation split; '' for one song per file "
                   f"['{d['song_separator']}']")
    p.add_argument("--batch-size", type=int, help=f"[{d['batch_size']}]")
    p.add_argument("--crop-seconds", type=float, help=f"length of each training crop [{d['crop_seconds']:g}]")
    p.add_argument("--lr", type=float, help=f"learning rate of the network (its learned default setting: {DEFAULT_LR_FACTOR:g}x, in the settings' [0, 1] units a step) [{d['lr']:g}]")
    p.add_argument("--val-fraction", type=float, help=f"share of songs held out for validation [{d['val_fraction']:g}]")
    p.add_argument("--seed", type=int, help=f"[{d['seed']}]")
    p.add_argument("--high-pass-slope", choices=["6", "12", "18", "24", "auto"],
                   help="the EQ's high-pass slope in dB/octave, held fixed in the model (not learned); auto: a short "
                   f"global fit at each slope ({AUTO_STEPS} steps on {AUTO_CROPS} training crops), the lowest loss wins "
                   "[the --init model's, else 12]")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--activation-budget", type=float, metavar="MB",
                   help="memory a training step may keep for the console's backward pass (estimated from the batch's "
                        "shape): within it every stage keeps its intermediates, beyond it every stage recomputes them "
                        "in the backward pass (slower steps, about 1 GB less; the same results); 0 always recomputes "
                        f"[{d['activation_budget']:g}: a mono step of 8 x 5 s fits, a stereo one does not]")
    p.add_argument("--keep-activations", action="store_true", default=None,
                   help="keep every console stage's intermediates for the backward pass (no budget): the fastest "
                        "steps, about 1 GB more memory than recomputing them all (8 stereo 5 s crops); the same results")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars")
    args = p.parse_args(argv)
    args.given = {k for k, v in vars(args).items() if v is not None}
    args.resume = bool(args.resume)
    args.data = str(Path(args.data).resolve())
    for k, v in DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def lr_factor(progress: float) -> float:
    """Cosine decay from 1 to 0.1 over the run (Loshchilov & Hutter, "SGDR", ICLR 2017): late steps refine, not jump."""
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def fail(message: str) -> None:
    print(f"dmst train: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def batch_of_crops(pairs, length, generator, device, channels, sample_rate):
    """Aligned crops (batch, channels, length) of raw and mix in the output layout, and per crop the level stages' context.

    A mono raw is copied to both channels of a stereo layout (a centred vocal); a mix
    brought to another layout keeps its delivered loudness.  ``staging``: the console's
    input gain, measured on the whole raw file.  ``offset``: how much louder the mix's
    crop is than the whole mix, so the rendered crop is compared with the mix's crop at
    the same place relative to the loudness target.
    """
    crops = [random_crop(p, length, generator) for p in pairs]
    raw_layout = 1 if all(p.raw_channels == 1 for p in pairs) else channels  # mono raws: rendered once, see below
    raw = torch.stack([to_layout(r, raw_layout) for r, _ in crops])
    mix = torch.stack([to_layout(m, channels) * 10 ** (p.mix_layout_gain_db(channels) / 20) for p, (_, m) in zip(pairs, crops)])
    offset = excerpt_loudness_offset_lu(mix, [p.mixed_lufs for p in pairs], sample_rate)
    staging = torch.tensor([p.staging_db for p in pairs], dtype=torch.float32)
    return raw.to(device), mix.to(device), (staging.to(device), offset.to(device))


class ValidationCrops:
    """The fixed validation crops, one batch of ``per_pair`` crops per validation pair, read from the cache each time
    they are iterated: what is kept is each batch's generator state (5 kB), not its audio, so memory does not grow
    with the catalogue.  The crops are those ``batch_of_crops`` draws from ``generator`` pair after pair."""

    def __init__(self, pairs, length, generator, device, channels, sample_rate, per_pair=1):
        self.pairs, self.args, self.per_pair = list(pairs), (length, device, channels, sample_rate), per_pair
        self.states = []
        for p in self.pairs:
            self.states.append(generator.get_state())
            for _ in range(per_pair):
                crop_start(p, length, generator)  # advances the generator as drawing a crop does, reading nothing

    def __len__(self):
        return len(self.pairs)

    def __iter__(self):
        length, device, channels, sample_rate = self.args
        for p, state in zip(self.pairs, self.states):
            yield batch_of_crops([p] * self.per_pair, length, torch.Generator().set_state(state), device, channels, sample_rate)


def predict_and_render(encoder, raw, context, sample_rate=SAMPLE_RATE, channels=None, checkpoint=True, off=(),
                       chunk=None, with_settings=False, detached=()):
    """The whole differentiable path: staged raw -> encoder -> settings -> console -> mix (in ``channels``).

    The encoder hears the mean of the channels at 44.1 kHz, as ``DmstModel.predict`` does.
    A mono batch for a stereo layout runs the console's dry chain once, on the mono take, and
    asks the console for a stereo output: the dry voice centred, the delay and reverb returns
    in stereo, the loudness measured on both channels (BS.1770 sums them).
    ``checkpoint``: the console stages recomputed in the backward pass instead of kept (True:
    every stage; see :func:`dmst.console.render` and :func:`recompute_stages`), ``chunk`` items at a time.
    ``off``: keys predicted as exactly their defaults (what a :class:`DmstModel` pins: untrained rows,
    switched-off effects).  ``with_settings``: also return the (batch, P) normalised settings predicted.
    ``detached``: keys the render's gradient does not reach (what is learned from another term).
    """
    staging, offset = context
    heard = resample(raw.mean(1), sample_rate, SAMPLE_RATE)
    u = pin_defaults(encoder(heard * 10 ** (staging[:, None] / 20)), off)
    layout = 2 if channels == 2 and raw.shape[1] == 1 else None
    rendered_u = u
    if detached:
        mask = torch.tensor([k in detached for k in schema.KEYS], device=u.device)
        rendered_u = torch.where(mask, u.detach(), u)
    out = render(raw, sample_rate, schema.denormalize(rendered_u), staging_db=staging, excerpt_offset_lu=offset,
                 output_channels=layout, checkpoint=checkpoint, chunk=chunk)
    return (out, u) if with_settings else out


def echo_times(pairs, sample_rate) -> dict[str, float]:
    """{pair name: the time of its mix's strongest echo of its raw, ms} for the pairs whose mix has one
    (:func:`dmst.fit.echo_time_ms`, on the first minute of the aligned pair, read from the cache)."""
    found = {}
    for p in pairs:
        raw, mixed = p.window(0, min(p.num_samples, int(ECHO_SEARCH_SECONDS * sample_rate)))
        t = echo_time_ms(raw, mixed, sample_rate)
        if t is not None:
            found[p.name] = round(t, 2)
    return found


def echo_time_loss(u: torch.Tensor, batch, echoes: dict[str, float]) -> torch.Tensor:
    """Mean squared distance, in the setting's [0, 1] units (log-scaled ms), of the predicted delay time from the
    mixes' echo times, over the batch items whose mix has one (0 when none has)."""
    i = schema.KEYS.index(ECHO)
    has = [k for k, p in enumerate(batch) if p.name in echoes]
    if not has:
        return u.new_zeros(())
    target = schema.BY_KEY[ECHO].normalize(torch.tensor([echoes[batch[k].name] for k in has], dtype=torch.float64))
    return (u[has, i] - target.to(u)).pow(2).mean()


def recompute_stages(args, batch_channels: int, channels: int, crop: int) -> dict:
    """Which console stages a training step recomputes in its backward pass, and why (recorded in the run).

    From the step's shape alone (batch x channels x crop samples: deterministic): when the console's saved
    activations (:func:`dmst.console.activation_bytes`) fit ``--activation-budget``, every stage keeps them
    (the fast step); otherwise every stage is recomputed (:func:`dmst.console.recompute_plan`).  At the
    defaults a mono step of 8 five-second crops fits and a stereo one does not.  ``--keep-activations``
    keeps them whatever their size.
    """
    sizes = activation_bytes(args.batch_size, crop, batch_channels, channels)
    budget = math.inf if args.keep_activations else args.activation_budget * 1e6
    stages = recompute_plan(args.batch_size, crop, batch_channels, channels, budget)
    return {"stages": list(stages), "activation_budget_mb": None if args.keep_activations else args.activation_budget,
            "estimated_mb": round(sum(sizes.values()) / 1e6), "chunk_items": RECOMPUTE_CHUNK if stages else None}


def choose_high_pass_slope(encoder, pairs, crop, device, channels, rate, loss_fn, seed):
    """--high-pass-slope auto: from the start model's default setting, a short global fit at each slope on the same
    few training crops; the slope with the lowest loss after it wins.  Returns (slope, {slope: loss})."""
    gen = torch.Generator().manual_seed(seed)
    chosen = [pairs[i] for i in torch.randperm(len(pairs), generator=gen)[:AUTO_CROPS].tolist()]
    raw, mix, context = batch_of_crops(chosen, crop, gen, device, channels, rate)
    losses = {}
    for slope in schema.BY_KEY[SLOPE].choices:
        trial = Encoder(global_only=True, fixed={SLOPE: slope}).to(device)
        trial.default_logits.data.copy_(encoder.default_logits.detach())
        optimizer = torch.optim.Adam([trial.default_logits], lr=0.05)
        for _ in range(AUTO_STEPS):
            loss = loss_fn(predict_and_render(trial, raw, context, rate, channels), mix)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            losses[slope] = float(loss_fn(predict_and_render(trial, raw, context, rate, channels), mix))
    return min(losses, key=losses.get), losses


def mixes_true_peak_dbtp(pairs, channels) -> float:
    """The engineer's loudest peaks: the ``PEAK_QUANTILE`` quantile of the true peaks (BS.1770-4) of up to
    ``PEAK_PAIRS`` mixes, spread over the sorted names, in the output layout.  A limiter's ceiling is where no peak
    the engineer delivered goes over, so a run holds its limiter there (:func:`hold_limiter`); ``dmst fit`` starts at its
    mix's peak.
    (Started at -1 dBTP, a fine-tune on mixes peaking up to +3 dBFS learned -1.8 dBTP from 3 s crops and
    shaved the peaks of whole songs: crest-factor error 1.2 dB, 0.6 dB with the limiter off.)"""
    from dmst.audio_io import true_peak_dbfs

    chosen = sorted(pairs, key=lambda p: p.name)[:: max(1, math.ceil(len(pairs) / PEAK_PAIRS))]
    peaks = [true_peak_dbfs(p.mixed, p.sample_rate) + p.mix_layout_gain_db(channels) for p in chosen]
    peaks = torch.tensor([v for v in peaks if math.isfinite(v)], dtype=torch.float64)
    return float(torch.quantile(peaks, PEAK_QUANTILE)) if len(peaks) else math.nan


def hold_limiter(encoder, ceiling_dbtp: float) -> float:
    """Hold the limiter's ceiling at ``ceiling_dbtp`` (within its range; at 0 dBTP, its top, exactly off) for every
    song: a held row of the encoder (:meth:`Encoder.fix`), so no gradient and no sigmoid's near-miss.  Returns the
    value held.

    A ceiling is a delivery spec, measured on the engineer's mixes, not a style to learn from crops: learned, a
    fine-tune on mixes that peak at +1 dBTP (no limiter) lowered it to -1.8 dBTP, where it bought 0.1 % of the
    loss and shaved the peaks of whole songs (crest-factor error 1.17 dB, 0.61 dB with the limiter off;
    ``bench/quality.py``).  Held as a learned default's logit (before), "off" was -0.012 dBTP: on, shaving the
    peaks of every song that went over 0 dBTP."""
    p = schema.BY_KEY[LIMITER]
    value = min(max(ceiling_dbtp, p.minimum), p.maximum)
    encoder.fix(LIMITER, value)
    return value


@torch.no_grad()
def evaluate(encoder, val_batches, loss_fn, sample_rate, channels, off=()):
    """Mean loss (and its terms) and audio metrics of the encoder on fixed validation crops (``off``: keys held at
    their defaults, see :func:`predict_and_render`)."""
    encoder.eval()
    losses, rows = [], []
    for raw, mix, context in val_batches:
        pred = predict_and_render(encoder, raw, context, sample_rate, channels, off=off)
        terms = {k: float(v) for k, v in loss_fn.terms(pred, mix).items()}
        losses.append(sum(loss_fn.weights[k] * v for k, v in terms.items()))
        rows.append({**audio_metrics(pred.cpu(), mix.cpu(), sample_rate), **{f"loss_{k}": v for k, v in terms.items()}})
    encoder.train()
    return {"loss": sum(losses) / len(losses), **mean_metrics(rows)}


def switch_off_what_the_mixes_do_not_need(path, val_batches, loss_fn, sample_rate, channels, device) -> dict:
    """The end of training: in the model file ``path`` (the best on validation), switch off each send, the
    de-esser and the gate where the validation loss is less than :data:`dmst.switches.TOLERANCE` higher
    without it (:func:`dmst.switches.switch_off`, the step ``dmst fit`` ends with).

    A fresh model starts them a little on so that they have a gradient; on mixes without a space (or without
    esses to tame, or noise to gate), training turns them down but not all the way to off, and a reverb left
    at -40 dB makes a dry vocal stereo with a tail.  A switched-off effect is recorded in the model
    (``switched_off``), which then predicts it exactly off; its network is kept as it is, so fine-tuning the
    model on mixes that have the effect starts from where training left it and can turn it back on.
    Returns the record kept in the model's meta and metrics.json (``switch_off``).
    """
    model = model_from_checkpoint(read_checkpoint(path))
    if "switch_off" in model.meta:  # done already (a resumed run that had finished)
        return model.meta["switch_off"]
    encoder, pinned = model.encoder.to(device), model.pinned
    seen = {}

    def loss_with_off(keys):
        seen[keys] = evaluate(encoder, val_batches, loss_fn, sample_rate, channels, off=pinned + keys)
        return seen[keys]["loss"]

    off, changes = switch_off(loss_with_off, [k for k in SWITCHES if k not in pinned])
    record = {"switched_off": list(off), "tolerance": TOLERANCE, "loss_change": {k: round(v, 6) for k, v in changes.items()},
              "val_loss_before": seen[()]["loss"], "val_loss_after": seen[off]["loss"] if off else seen[()]["loss"]}
    model.switched_off = tuple(dict.fromkeys(model.switched_off + off))
    model.meta = {**model.meta, "switch_off": record}
    model.save(path)
    return record


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    started = time.monotonic()

    # ---- setup: a resumed run takes its recorded arguments, and refuses different ones ----
    resume = None
    if args.resume:
        if not (out / "last.pt").exists():
            fail(f"nothing to resume: {out / 'last.pt'} does not exist; start the run without --resume")
        resume = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        recorded = {**DEFAULTS, **resume.get("args", {})}
        for k in RUN_ARGS:
            if k in args.given and k in resume.get("args", {}) and getattr(args, k) != recorded[k]:
                flag = "--global" if k == "global_only" else "--" + k.replace("_", "-")
                fail(f"--resume: {flag} {getattr(args, k)} differs from the run's {recorded[k]}; leave it out to "
                     f"continue the run, or start a new run in another --out (--init {out / 'model.pt'} to build on it)")
            if k not in args.given:
                setattr(args, k, recorded[k])
        if resume.get("finished") and (not (out / "model.pt").exists()
                                       or "switch_off" in read_checkpoint(out / "model.pt").get("meta", {})):
            print(f"run in {out} already finished after epoch {resume['epoch']} ({resume.get('stop_reason', 'done')}); "
                  f"to train more, start a new run with --init {out / 'model.pt'}")
            return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    # ---- data: check every pair once (cached), report, split by song ----------------
    cache_dir = Path(args.cache_dir) if args.cache_dir else out / "cache"
    checking = time.monotonic()
    try:
        report = check_dir(args.data, sample_rate=None, progress=not args.quiet, cache_dir=cache_dir, workers=args.workers)
    except DataError as e:
        fail(str(e))
    print(f"{report.format()}\npairs checked in {time.monotonic() - checking:.1f} s at {report.sample_rate} Hz; cache: {cache_dir}")
    usable, rate = report.usable, report.sample_rate
    if not usable:
        fail("no usable pairs after checking; fix the problems listed above")
    if len(usable) < FEW_PAIRS and not args.global_only:
        print(f"note: only {len(usable)} usable pairs; with under {FEW_PAIRS}, one global setting (--global) is often better than a network")
    fingerprint = hashlib.blake2b(json.dumps(sorted((p.name, p.key) for p in usable)).encode(), digest_size=8).hexdigest()
    if resume is not None and resume.get("data_fingerprint", fingerprint) != fingerprint:
        fail(f"--resume: the usable pairs in {args.data} changed since the run started; start a new run in another "
             f"--out (--init {out / 'model.pt'} to build on it)")
    # The layout of the engineer's mixes: what the model renders.
    channels = 2 if 2 * sum(p.mixed_channels >= 2 for p in usable) >= len(usable) else 1
    song = lambda name: song_of(name, args.song_separator)  # noqa: E731
    train_names, val_names = split_by_song([p.name for p in usable], args.val_fraction, args.seed, song=song)
    train_pairs = [p for p in usable if p.name in train_names]
    val_pairs = [p for p in usable if p.name in val_names] or train_pairs  # a single song validates on itself
    crop = int(args.crop_seconds * rate)
    val_gen = torch.Generator().manual_seed(12345)
    val_per_pair = min(VAL_CROPS_PER_PAIR, max(1, VAL_CROPS // len(val_pairs)))
    val_batches = ValidationCrops(val_pairs, crop, val_gen, device, channels, rate, per_pair=val_per_pair)

    # ---- model: fresh, fine-tuned from --init, or resumed ------------------------
    start_pinned = ()  # what the start model predicts as exactly its defaults: its baseline is rendered so
    if resume is not None:
        encoder = model_from_checkpoint(resume["model"]).encoder
        if not hears_band_shares(resume["model"]["state_dict"]):
            # A run started before the encoder heard the band shares resumes as it started: their map stays at
            # zero (out of the optimiser and the average, whose saved states do not know it).
            encoder.spectrum.requires_grad_(False)
    elif args.init is not None:
        try:
            init_model = model_from_checkpoint(read_checkpoint(resolve_model_path(args.init)))
        except ModelError as e:
            fail(str(e))
        # Its network trains whole: rows a migration added start at the training start, switched-off effects
        # where the model's training left them; the end step decides again what is off.
        encoder, start_pinned = init_model.encoder, init_model.pinned
        if args.global_only:  # keep the init model's learned default (and fixed slope) as the starting global setting
            logits = encoder.default_logits.detach().clone()
            encoder = Encoder(global_only=True, fixed=encoder.fixed)
            encoder.default_logits.data.copy_(logits)
    else:  # at the training start: every effect where it has a gradient (the end step switches off the unused)
        encoder = Encoder(global_only=args.global_only, training_start=True)
        start_pinned = DmstModel(encoder).pinned  # an untrained model predicts the defaults
    encoder.to(device).train()
    # The learned default moves faster than the network: it carries the style's average.  DEFAULT_LR_FACTOR x lr
    # in [0, 1] units a step is about the old 10 x lr in logits at mid-range (a logit step d is d / 4 in u there).
    base_lrs = [args.lr * DEFAULT_LR_FACTOR, args.lr]
    # It is stepped in the normalised [0, 1] space: a setting the start model holds at the edge of its range
    # moves as fast as one in the middle (dmst.encoder.optim).
    optimizer = UnitSpaceAdamW(
        [{"params": [encoder.default_logits], "lr": base_lrs[0], "weight_decay": 0.0, "unit_space": True},
         {"params": [p for n, p in encoder.named_parameters() if n != "default_logits" and p.requires_grad],
          "lr": base_lrs[1]}],
        weight_decay=1e-4,
    )
    # The console stages a step recomputes: from the largest batch's shape (stereo raws in any pair: the worst case).
    # When they are, the console and the loss's spectra take the batch RECOMPUTE_CHUNK items at a time.
    recompute = recompute_stages(args, 1 if all(p.raw_channels == 1 for p in train_pairs) else channels, channels, crop)
    loss_fn = MixLoss(rate, crest_weight=CREST_WEIGHT, envelope_weight=ENVELOPE_WEIGHT, micro_weight=MICRO_WEIGHT,
                      sibilance_weight=SIBILANCE_WEIGHT, chunk=recompute["chunk_items"]).to(device)

    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        history, best_val, first_epoch = resume["history"], resume["best_val"], resume["epoch"] + 1
        baselines, elapsed_before = resume["baselines"], resume["elapsed_s"]
        plateau_best, waited = resume.get("plateau_best", best_val), resume.get("waited", 0)
        print(f"resuming {out} after epoch {resume['epoch']}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        history, best_val, first_epoch, elapsed_before = [], math.inf, 1, 0.0
        plateau_best, waited = math.inf, 0
        # Baselines on the same validation crops: the raw input itself, and the model we start from.
        raw_rows = [audio_metrics(to_layout(raw, channels).cpu(), mix.cpu(), rate) for raw, mix, _ in val_batches]
        baselines = {"raw_input": mean_metrics(raw_rows),
                     "init_model": evaluate(encoder, val_batches, loss_fn, rate, channels, off=start_pinned)}

    # ---- the high-pass slope: not learned (a choice of four has no gradient), held fixed in the model ----
    slope_choice = resume.get("high_pass_slope") if resume is not None else None
    if resume is None and args.high_pass_slope == "auto":
        slope, losses = choose_high_pass_slope(encoder, train_pairs, crop, device, channels, rate, loss_fn, args.seed)
        encoder.fix(SLOPE, slope)
        slope_choice = {"chosen": slope, "losses": {f"{k:g}": round(v, 5) for k, v in losses.items()}}
        print(f"high-pass slope: {slope:g} dB/octave (loss after a {AUTO_STEPS}-step global fit on {AUTO_CROPS} crops: "
              + ", ".join(f"{k:g} dB {v:.4f}" for k, v in losses.items()) + ")")
    elif resume is None and args.high_pass_slope is not None:
        encoder.fix(SLOPE, float(args.high_pass_slope))
    # Held for every song: where the mixes peak (a resumed run: where it was measured, held exactly even if the run
    # began before the ceiling was a held row), or with silent mixes where the start model has it.
    limiter_start = resume.get("limiter_start_dbtp") if resume is not None else None
    peak = mixes_true_peak_dbtp(train_pairs, channels) if resume is None else math.nan
    if math.isfinite(peak):
        limiter_start = hold_limiter(encoder, peak)
        print(f"limiter: held at {limiter_start:g} dBTP (the mixes' loudest true peaks, {PEAK_QUANTILE:.0%} "
              f"quantile: {peak:.2f} dBTP{'; 0 is off' if limiter_start == 0 else ''})")
    elif limiter_start is not None:
        hold_limiter(encoder, limiter_start)
    else:
        u = torch.sigmoid(encoder.default_logits[schema.KEYS.index(LIMITER)].detach().double().cpu())
        hold_limiter(encoder, encoder.fixed.get(LIMITER, float(schema.BY_KEY[LIMITER].denormalize(u))))
    slope_meta = {"limiter_start_dbtp": limiter_start, "high_pass_slope_db": encoder.fixed[SLOPE], **({"high_pass_slope_auto": slope_choice} if slope_choice else {})}
    tails = [p.tail_s for p in usable]
    # measured once (0.15 s a pair, on the first minute): a resumed run takes the run's own
    echoes = resume.get("echo_times_ms") if resume is not None else None
    if echoes is None:
        echoes = echo_times(train_pairs, rate) if ECHO_WEIGHT else {}
    if ECHO_WEIGHT:
        print(f"delay: an echo in {len(echoes)} of {len(train_pairs)} training mixes"
              + (f" ({min(echoes.values()):.0f}-{max(echoes.values()):.0f} ms): the delay time is learned from them"
                 if echoes else "; the delay time is learned from the audio"))
    if not recompute["stages"]:
        # The speed plan (the step fits the budget): a step's full-length tensors are reused instead of faulted
        # in fresh each step (200 mono 5 s crops: 65 -> 55 s an epoch, idle).  Not in the memory plan: kept
        # freed blocks add to its peak (+155 MB for a stereo step), which is what that plan is there to bound.
        reuse_freed_memory()
    recompute["reuse_freed_memory"] = not recompute["stages"]
    print(f"console stages recomputed in the backward pass: {'all' if recompute['stages'] else 'none'} (their saved "
          f"activations estimated at {recompute['estimated_mb']} MB a step; "
          + ("--keep-activations)" if args.keep_activations else f"--activation-budget {args.activation_budget:g} MB)")
          + (f", {recompute['chunk_items']} items at a time" if recompute["chunk_items"] else ""))
    data_summary = {"pairs_usable": len(usable), "pairs_skipped": len(report.skipped), "train_pairs": len(train_pairs),
                    "val_pairs": len(val_names), "val_crops_per_pair": val_per_pair, "songs": len({song(p.name) for p in usable}), "sample_rate": rate,
                    "output_channels": channels, "longest_tail_s": round(max(tails), 2), "crop_seconds": args.crop_seconds,
                    "train_names": train_names, "val_names": val_names, "console_recompute": recompute,
                    "echo_times_ms": echoes}

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - started

    def budget_left() -> bool:
        return args.time_budget is None or elapsed() < args.time_budget * 60

    def progress(epoch: int, step: int) -> float:
        """How far through the run we are, for the learning-rate schedule: by epochs (--epochs), by the clock
        (--time-budget), whichever is further; with neither, the rate stays put until the plateau stops the run."""
        by_steps = (epoch - 1 + step / steps_per_epoch) / args.epochs if args.epochs else 0.0
        if args.time_budget is None:
            return by_steps  # deterministic: a resumed run follows the same schedule
        return max(by_steps, elapsed() / (args.time_budget * 60))

    # ---- training loop: until the plateau, the budget or --epochs -------------------
    steps_per_epoch = math.ceil(len(train_pairs) / args.batch_size)
    average = WeightAverage(encoder, AVERAGE_HALF_LIFE_EPOCHS * steps_per_epoch)
    if resume is not None and "average" in resume:  # a run from before the average starts it where it resumes
        average.load_state_dict(resume["average"])
    data_summary["weight_average_half_life_steps"] = AVERAGE_HALF_LIFE_EPOCHS * steps_per_epoch
    stop_reason = (resume.get("stop_reason") or "done") if resume is not None and resume.get("finished") else None
    epoch = first_epoch
    while stop_reason is None:
        # Each epoch's shuffling and crops come from (seed, epoch) alone, so a resumed run repeats them exactly.
        gen = torch.Generator().manual_seed(args.seed * 100003 + epoch)
        order = torch.randperm(len(train_pairs), generator=gen).tolist()
        of = f"/{args.epochs}" if args.epochs else ""
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}{of}", disable=args.quiet, file=sys.stderr, leave=False)
        train_losses = []
        for step in bar:
            if not budget_left():
                stop_reason = f"time budget of {args.time_budget:g} min reached"
                break
            batch = [train_pairs[i] for i in order[step * args.batch_size:(step + 1) * args.batch_size]]
            raw, mix, context = batch_of_crops(batch, crop, gen, device, channels, rate)
            for group, base_lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base_lr * lr_factor(progress(epoch, step))
            rendered, u = predict_and_render(encoder, raw, context, rate, channels, recompute["stages"],
                                             chunk=recompute["chunk_items"], with_settings=True,
                                             detached=(ECHO,) if echoes else ())
            loss = loss_fn(rendered, mix) + ECHO_WEIGHT * echo_time_loss(u, batch, echoes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            optimizer.step()
            average.update(encoder)
            train_losses.append(loss.item())
            bar.set_postfix(loss=f"{train_losses[-1]:.4f}")
        bar.close()
        if not train_losses:
            break

        with average.applied(encoder):  # what is validated and kept: the averaged weights
            val = evaluate(encoder, val_batches, loss_fn, rate, channels)
            improved = val["loss"] < best_val
            if improved:
                best_val = val["loss"]
                model = DmstModel(encoder, name=out.name, output_channels=channels,
                                  meta={"training": data_summary, "epoch": epoch, "val": val, "init": args.init, **slope_meta})
                model.save(out / "model.pt")
        history.append({"epoch": epoch, "train_loss": sum(train_losses) / len(train_losses), "val": val,
                        "elapsed_s": round(elapsed(), 1), "partial_epoch": stop_reason is not None})
        # Plateau (early stopping with patience): progress is a decrease of at least min_delta.  The patience counts
        # once the schedule is PLATEAU_FROM_PROGRESS through; with no schedule the rate never falls, so from the start.
        scheduled = bool(args.epochs or args.time_budget)
        if val["loss"] < plateau_best - args.min_delta:
            plateau_best, waited = val["loss"], 0
        elif not scheduled or progress(epoch + 1, 0) >= PLATEAU_FROM_PROGRESS:
            waited += 1
        if stop_reason is None and waited >= args.patience:
            stop_reason = f"validation loss plateaued (no decrease of {args.min_delta:g} in {args.patience} epochs)"
        if stop_reason is None and args.epochs and epoch >= args.epochs:
            stop_reason = f"--epochs {args.epochs} reached"
        atomic_save({"model": DmstModel(encoder, name=out.name, output_channels=channels).checkpoint(),
                     "optimizer": optimizer.state_dict(), "average": average.state_dict(), "epoch": epoch, "history": history, "best_val": best_val,
                     "plateau_best": plateau_best, "waited": waited, "baselines": baselines, "elapsed_s": elapsed(),
                     "args": {k: getattr(args, k) for k in RUN_ARGS}, "data_fingerprint": fingerprint,
                     "finished": stop_reason is not None, "stop_reason": stop_reason or "", "high_pass_slope": slope_choice,
                     "limiter_start_dbtp": limiter_start, "echo_times_ms": echoes},
                    out / "last.pt")
        write_metrics(out, history, baselines, data_summary)
        print(f"epoch {epoch}: train {history[-1]['train_loss']:.4f}  val {val['loss']:.4f}  "
              f"mrstft {val['mrstft']:.3f}  loudness {val['loudness_error_lu']:.2f} LU{'  *best' if improved else ''}")
        epoch += 1

    print(f"stopped: {stop_reason or 'done'}")

    # ---- end: switch off the effects the best model has no use for ------------------------
    if (out / "model.pt").exists():
        record = switch_off_what_the_mixes_do_not_need(out / "model.pt", val_batches, loss_fn, rate, channels, device)
        write_metrics(out, history, baselines, data_summary, switch_off=record)
        kept = [k for k in record["loss_change"] if k not in record["switched_off"]]
        print(f"switched off (less than {100 * TOLERANCE:g} % of the validation loss each): "
              f"{', '.join(record['switched_off']) or 'nothing'}; kept on: {', '.join(kept) or 'nothing'} "
              f"(validation loss {record['val_loss_before']:.4f} -> {record['val_loss_after']:.4f})")
    print(f"best validation loss {best_val:.4f} (init model {baselines['init_model']['loss']:.4f}); model: {out / 'model.pt'}")
    return 0


def write_metrics(out: Path, history, baselines, data_summary, switch_off=None) -> None:
    tmp = out / ".metrics.json.tmp"
    end = {} if switch_off is None else {"switch_off": switch_off}
    tmp.write_text(json.dumps({"baselines": baselines, "epochs": history, "data": data_summary, **end}, indent=2))
    tmp.replace(out / "metrics.json")


if __name__ == "__main__":
    sys.exit(main())
