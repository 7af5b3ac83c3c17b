"""Does dmst learn the style of an engineer who is not dmst?  The foreign-style benchmark.

    python bench/quality.py [--space] [--stage all|mix|train|global|search|ceiling|eval|diagnose|report] [--minutes 9]
                            [--epochs N] [--high-pass-slope auto] [--n-train 50] [--n-test 12] [--n-sung 4]
                            [--fit-steps 120] [--work DIR]

Without --space, issue 11's engineer (runs/foreign); with it, issue 12's (runs/foreign_space): the
same chain and rules plus a split-band de-esser and a stereo delay and reverb on sends, mixes in
stereo with tails past the raw's end.

1. Held-out real voices (the `fillets-ng-data-cs` recordings, never used for the
   bundled model; plus a few sung takes in the test set) are mixed by a foreign
   engineer (bench/foreign.py): pedalboard's filters and JUCE compressor, an arctan
   saturation and a numpy BS.1770 loudness target, in its own order, adapted to each
   take by its own rules.  Nothing of dmst's DSP makes the targets.
2. The default model is fine-tuned on the training pairs within a time budget (train.py --init
   default; --epochs caps it, so the result need not depend on the machine's load), and a single
   global setting is fitted (train.py --global).  Both choose the EQ's high-pass slope with
   train.py --high-pass-slope auto (the benchmark is not told the foreign chain's 6 dB/oct).
3. On the test songs, full length: raw input, the bundled default, --global, the
   fine-tuned model, the per-song ceiling (dmst fit's optimiser, fit_params; the slope chosen per
   song by a short fit at each, --stage ceiling runs these fits on their own) and the
   foreign chain's own best single setting (one fixed pedalboard setting, found by a
   coordinate search over its parameters on --n-search training songs with dmst's training loss).
4. --stage diagnose: per-song fits of mixes made with pedalboard's compressor and with a
   classic RMS feedback / opto-release compressor (bench/foreign.py), with the compressor's
   v2 detector (new parameters frozen at their defaults) and with the v3 detector family
   free; and the swap analysis: the foreign chain with one piece at a time replaced by
   dmst's at identical nominal settings.
Metrics: MR-STFT, loudness error (LU, numpy BS.1770), third-octave spectral balance (dB),
crest factor (dB), micro-dynamics (MLDR-style, dB); and dmst.metrics.space_metrics: mid and side
MR-STFT, sibilance, tail (space) energy and stereo-width errors (dB).  Renders are compared as
delivered: a mono render against a stereo mix as dual mono, a render without a tail silent after
its end.  Writes bench/results/quality.json (quality_space.json with --space).
Rows of earlier runs are reported when their folders are there (finetuned_limiter_m1, global_limiter_m1:
before train.py started the limiter at the mixes' peaks; finetuned_crest: with the loss's crest term;
finetuned_hp6: told the 6 dB/oct slope, a diagnosis).
Single-threaded (torch and numba): on a shared 2-core machine numba's thread pool spins.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import foreign  # noqa: E402

PACKAGE = "fillets-ng-data-cs"
EDGE = "fine-tuned, detector blends started at 0"
LIMITER_M1 = "fine-tuned, limiter started at -1 dBTP"
PREMERGE = "fine-tuned, before training ended with the switch-off step"
CEILING_MID = "per-song ceiling, blends started mid-range"
CEILING_START = "per-song ceiling, started at TRAINING_START"
ENVELOPE = "fine-tuned, band-envelope term"
REDRAWN = "foreign chain, best single setting, its reverb's fine structure redrawn"
FAMILY = ("compressor.detector_rms", "compressor.rms_window_ms", "compressor.linear_envelope")


def _threads():
    import numba

    torch.set_num_threads(1)
    numba.set_num_threads(1)


def _speech_files(voices: Path, seed: int) -> list[Path]:
    """The held-out speech voices of at least 1.5 s, in the benchmark's seeded order."""
    files = [f for f in sorted((voices / "speech").glob(f"{PACKAGE}__*.flac")) if sf.info(f).duration >= 1.5]
    random.Random(seed).shuffle(files)
    return files


def pick_files(voices: Path, n_train: int, n_test: int, n_sung: int, seed: int = 0):
    files = _speech_files(voices, seed)
    sung = [f for f in sorted((voices / "singing").glob("scratch__*.flac"))
            if sf.info(f).duration >= 1.5 and "BeatBox" not in f.name][:n_sung]
    return files[:n_train], files[n_train:n_train + n_test] + sung


def more_files(voices: Path, n_train: int, n_test: int, n_more: int, seed: int = 0):
    """``n_more`` further training voices, drawn after pick_files' test songs: the test set stays the same."""
    return _speech_files(voices, seed)[n_train + n_test: n_train + n_test + n_more]


def more_sung_files(voices: Path, n_sung: int):
    """The sung takes of at least 1.5 s that pick_files' test set does not use (those after its first ``n_sung``)."""
    return [f for f in sorted((voices / "singing").glob("scratch__*.flac"))
            if sf.info(f).duration >= 1.5 and "BeatBox" not in f.name][n_sung:]


def write_pairs(files, folder: Path, compressor="juce", space=False) -> dict[str, dict]:
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    (folder / "mixed").mkdir(parents=True, exist_ok=True)
    truth = {}
    for f in tqdm(files, desc=f"mixing {folder.name}", file=sys.stderr):
        x, sr = sf.read(f, dtype="float64", always_2d=True)
        y, s, d = foreign.mix(x.T, sr, compressor=compressor, space=space)
        sf.write(folder / "raw" / f"{f.stem}.flac", x, sr, subtype="PCM_24")
        sf.write(folder / "mixed" / f"{f.stem}.wav", y.T.astype(np.float32), sr, subtype="FLOAT")
        truth[f.stem] = {"settings": s, "analysis": d, "sung": "singing" in str(f.parent)}
    return truth


def load(folder: Path, name: str):
    raw, sr = sf.read(folder / "raw" / f"{name}.flac", dtype="float32", always_2d=True)
    mixed, _ = sf.read(folder / "mixed" / f"{name}.wav", dtype="float32", always_2d=True)
    return torch.from_numpy(raw.T.copy()), torch.from_numpy(mixed.T.copy()), sr


def as_delivered(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``pred`` in the target's layout and length: a mono render against a stereo mix is played as dual mono, and a
    render shorter than the mix (it has no tail) is silent after its end."""
    p = pred.reshape(-1, pred.shape[-1])
    if p.shape[0] == 1 and target.shape[0] == 2:
        p = p.expand(2, -1)
    n = target.shape[-1]
    return torch.nn.functional.pad(p, (0, max(0, n - p.shape[-1])))[:, :n]


def metrics(pred: torch.Tensor, target: torch.Tensor, sr: int, raw: torch.Tensor | None = None) -> dict[str, float]:
    """Issue 11's five metrics and issue 12's space metrics (dmst.metrics.space_metrics; the tail error needs the
    raw take, which finds the gaps), for one render against its mix."""
    from dmst.metrics import crest_factor_error_db, mrstft_distance, space_metrics, spectral_balance_error_db

    target = target.reshape(-1, target.shape[-1]).float()
    p, t = as_delivered(pred, target)[None].float(), target[None]
    space = space_metrics(p, t, sr, None if raw is None else raw.reshape(1, -1, raw.shape[-1]).float())
    return {**space, 
        "mrstft": mrstft_distance(p, t),
        "loudness_error_lu": abs(foreign.lufs(p[0].double().numpy(), sr) - foreign.lufs(t[0].double().numpy(), sr)),
        "spectral_balance_error_db": spectral_balance_error_db(p, t, sr),
        "crest_factor_error_db": crest_factor_error_db(p, t),
        "micro_dynamics_error_db": foreign.micro_dynamics_error_db(p[0].double().numpy(), t[0].double().numpy(), sr),
    }


def mean_rows(rows):
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


# ---------------------------------------------------------------------------
# per-song fitting with parts of the schema frozen (dmst.fit.fit_params has no such option)
# ---------------------------------------------------------------------------

def fit_console(raw, mixed, sr, steps, frozen=(), start=None, lr=0.05):
    """fit_params' optimisation (Adam on sigmoid logits, MixLoss, up to 4 five-second excerpts), with the
    ``frozen`` keys held at exactly their defaults and a starting setting ``start`` (nested, partial ok)."""
    from dmst import schema
    from dmst.console import render
    from dmst.data import excerpt_loudness_offset_lu, to_mono
    from dmst.effects.gain import integrated_loudness, staging_gain_db
    from dmst.fit import WHOLE_SECONDS, excerpt_pool
    from dmst.losses import MixLoss

    raw, mixed = to_mono(raw), to_mono(mixed)
    staging = staging_gain_db(raw[None], sr)
    raw_x, mix_x = (raw[None], mixed[None]) if raw.shape[-1] <= WHOLE_SECONDS * sr else excerpt_pool(raw, mixed, sr)
    staging = staging.expand(raw_x.shape[0])
    offset = (excerpt_loudness_offset_lu(mix_x, integrated_loudness(mixed[None], sr), sr)
              if raw_x.shape[-1] < raw.shape[-1] else None)
    init = schema.default_dict()
    for g, vals in (start or {}).items():
        init[g].update(vals)
    u0 = schema.normalize(schema.stack([init])).clamp(1e-3, 1 - 1e-3)
    exact = schema.default_normalized()[None]
    mask = torch.tensor([[k in frozen for k in schema.KEYS]])
    logits = torch.nn.Parameter(torch.log(u0) - torch.log1p(-u0))
    opt = torch.optim.Adam([logits], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = MixLoss(sr)
    best = (float("inf"), logits.detach().clone())
    for _ in range(steps):
        u = torch.where(mask, exact, torch.sigmoid(logits))
        loss = loss_fn(render(raw_x, sr, schema.denormalize(u.expand(raw_x.shape[0], -1)), staging_db=staging,
                              excerpt_offset_lu=offset), mix_x)
        before = logits.detach().clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if loss.item() < best[0]:
            best = (loss.item(), before)
    u = torch.where(mask, exact, torch.sigmoid(best[1]))
    params = schema.unstack(schema.denormalize(u.double()))[0]
    for key in frozen:
        g, n = key.split(".")
        params[g][n] = schema.BY_KEY[key].default
    return params, best[0]


def fit_ceiling(raw, mixed, sr, steps, slope="auto"):
    """The per-song ceiling: ``dmst fit``'s optimiser (fit_params) at a high-pass slope.  ``slope`` "auto", as
    train.py's: a short fit (a quarter of the steps) at each slope, then the whole fit at the one with the lowest
    loss.  Returns (nested params, {slope: short-fit loss} or None)."""
    from dmst import schema
    from dmst.fit import fit_params

    if slope != "auto":
        return fit_params(raw, mixed, sr, steps=steps, high_pass_slope_db=None if slope is None else float(slope))[0], None
    losses = {c: fit_params(raw, mixed, sr, steps=max(10, steps // 4), high_pass_slope_db=c)[1]
              for c in schema.BY_KEY["eq.high_pass_slope_db"].choices}
    chosen = min(losses, key=losses.get)
    return fit_params(raw, mixed, sr, steps=steps, high_pass_slope_db=chosen)[0], {f"{k:g}": v for k, v in losses.items()}


# 2: dmst fit holds the limiter exactly off for a mix over 0 dBTP (before, it fitted it, and it stayed on a hair
# under 0 dBTP).  Only those songs' fits changed: an older fit of any other song is still current.
CEILING_FIT_VERSION = 2


def read_ceilings(work: Path, test=()) -> dict:
    """The ceiling's cached fits, from every ``--stage ceiling`` process's file; with the ``test`` songs, less the
    fits made before :data:`CEILING_FIT_VERSION` that it changed (a mix over 0 dBTP)."""
    from dmst.audio_io import true_peak_dbfs

    out = {}
    for f in sorted(work.glob("ceiling_settings*.json")):
        out.update(json.loads(f.read_text()))
    for name, _, mixed, sr in test:
        if name in out and out[name].get("fit_version", 1) < 2 and true_peak_dbfs(mixed, sr) >= 0.0:
            del out[name]
    return out


def store_ceiling(work: Path, name: str, entry: dict, file_name: str = "ceiling_settings.json") -> None:
    """Cache one song's ceiling fit in ``file_name`` (atomically), and drop any older fit of it from the other files."""
    for f in sorted(work.glob("ceiling_settings*.json")):
        fits = json.loads(f.read_text())
        if f.name == file_name or name in fits:
            fits.pop(name, None)
            if f.name == file_name:
                fits[name] = entry
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps(fits, indent=1))
            tmp.replace(f)
    if not (work / file_name).exists():
        (work / file_name).write_text(json.dumps({name: entry}, indent=1))


def render_params(raw, sr, params, length=None, channels=None):
    """The console's render of ``raw`` padded with silence to ``length`` (room for its tail), in ``channels``
    (2: a mono take becomes centred stereo with stereo returns, as a model trained on stereo mixes renders)."""
    from dmst import schema
    from dmst.console import render

    if length is not None and length > raw.shape[-1]:
        raw = torch.nn.functional.pad(raw, (0, length - raw.shape[-1]))
    with torch.no_grad():
        return render(raw[None], sr, schema.stack([params]), output_channels=2 if channels == 2 else None)[0]


def training_start():
    """The nested setting training starts from (schema.TRAINING_START over the defaults): the detector blends
    mid-range, the gate, de-esser and both sends a little on, where they have a gradient."""
    from dmst import schema

    u = schema.default_normalized().clone()
    for key, value in schema.TRAINING_START.items():
        u[schema.KEYS.index(key)] = value
    return schema.unstack(schema.denormalize(u[None].double()))[0]


# ---------------------------------------------------------------------------
# the foreign chain's own best single setting
# ---------------------------------------------------------------------------

SPACE_SEARCH = [("deess_range_db", "add", 2.0), ("deess_threshold_db", "add", 3.0), ("delay_send_db", "add", 3.0),
                ("delay_feedback", "add", 0.1), ("delay_ms", "mul", 1.3), ("reverb_send_db", "add", 3.0),
                ("reverb_room", "add", 0.1)]
LIMITS = {"deess_range_db": (0.0, 12.0), "delay_feedback": (0.0, 0.9), "delay_ms": (20.0, 1000.0), "reverb_room": (0.0, 1.0)}
SEARCH = [("threshold_db", "add", 3.0), ("ratio", "mul", 1.3), ("attack_ms", "mul", 1.8), ("release_ms", "mul", 1.5),
          ("hp_hz", "mul", 1.4), ("low_mid_db", "add", 1.5), ("presence_db", "add", 1.5), ("air_db", "add", 1.5),
          ("drive_db", "add", 1.5), ("target_lufs", "add", 0.75)]


def search_single_setting(songs, truth, passes=2):
    """Coordinate search from the median setting: one fixed foreign setting for every song, minimising dmst's training loss."""
    from dmst.losses import MixLoss

    keys = list(truth[songs[0][0]]["settings"])  # issue 11's keys, and the space's where the mixes have one
    search = SEARCH + (SPACE_SEARCH if "reverb_send_db" in keys else [])
    start = {k: float(np.median([truth[n]["settings"][k] for n, _, _, _ in songs])) for k in keys}
    cache = {}

    def cost(s):
        key = tuple(round(s[k], 6) for k in keys)
        if key not in cache:
            total = 0.0
            for name, raw, mixed, sr in songs:
                y = foreign.render(raw.double().numpy(), sr, s, truth[name]["analysis"]["stage_db"])
                y = as_delivered(torch.from_numpy(y).float(), mixed)  # a tail of another length: the mix's
                with torch.no_grad():
                    total += float(MixLoss(sr)(y[None], mixed[None]))
            cache[key] = total / len(songs)
        return cache[key]

    best, best_cost = dict(start), cost(start)
    for p in range(passes):
        for key, op, step in search:
            step = step if p == 0 else (step / 2 if op == "add" else math.sqrt(step))
            for direction in (1, -1):
                while True:
                    trial = dict(best)
                    trial[key] = best[key] + direction * step if op == "add" else best[key] * step ** direction
                    lo, hi = LIMITS.get(key, (-math.inf, math.inf))
                    trial[key] = min(max(trial[key], lo), hi)
                    if trial[key] == best[key]:
                        break
                    c = cost(trial)
                    if c >= best_cost:
                        break
                    best, best_cost = trial, c
    return best, best_cost, start, len(cache)


# ---------------------------------------------------------------------------
# swap analysis
# ---------------------------------------------------------------------------

def dmst_compressor(linear: bool, per_two_pi: bool, sr):
    from dmst.effects import compressor

    def compress(v, s):
        scale = 1 / (2 * math.pi) if per_two_pi else 1.0
        with torch.no_grad():
            y = compressor(torch.from_numpy(v)[None], sr, s["threshold_db"], s["ratio"], 0.0, s["attack_ms"] * scale,
                           s["release_ms"] * scale, 0.0, linear_envelope=1.0 if linear else 0.0)
        return y[0].numpy()
    return compress


def dmst_saturation(sr):
    from dmst.effects import saturation
    from dmst.effects.saturation import MAX_BIAS

    def saturate(v, s):
        with torch.no_grad():
            return saturation(torch.from_numpy(v)[None], sr, s["drive_db"], min(1.0, s["bias"] / MAX_BIAS), s["mix"])[0].numpy()
    return saturate


def swap_analysis(songs, truth):
    out = {}
    for name, raw, mixed, sr in tqdm(songs, desc="swaps", file=sys.stderr):
        s, stage = truth[name]["settings"], truth[name]["analysis"]["stage_db"]
        x = raw.double().numpy()
        variants = {
            "compressor -> dmst v2 detector (peak, dB ballistics), same nominal ms": dict(compress=dmst_compressor(False, False, sr)),
            "compressor -> dmst v2 detector, ms / 2 pi": dict(compress=dmst_compressor(False, True, sr)),
            "compressor -> dmst linear_envelope 1, same nominal ms": dict(compress=dmst_compressor(True, False, sr)),
            "compressor -> dmst linear_envelope 1, ms / 2 pi (JUCE's time constants)": dict(compress=dmst_compressor(True, True, sr)),
            "saturation -> dmst tanh (same drive, bias, mix)": dict(saturate=dmst_saturation(sr)),
            "EQ before the compressor instead of after": dict(eq_first=True),
            "high-pass 12 dB/oct instead of 6": dict(hp_order=2),
        }
        ref = torch.from_numpy(foreign.render(x, sr, s, stage))[None].float()
        for label, kw in variants.items():
            y = torch.from_numpy(foreign.render(x, sr, s, stage, **kw))[None].float()
            m = metrics(y, ref, sr)
            for k, v in m.items():
                out.setdefault(label, {}).setdefault(k, []).append(v)
    return {label: {k: {"mean": float(np.mean(v)), "max": float(np.max(v))} for k, v in ms.items()} for label, ms in out.items()}


# ---------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", default="all", choices=["all", "mix", "train", "train_more", "train_sung", "global", "global_sung", "global_hi", "search", "ceiling", "eval", "diagnose",
                                                  "report"])
    p.add_argument("--voices", default=str(ROOT.parent / "shared" / "data" / "voices"))
    p.add_argument("--space", action="store_true", help="issue 12's engineer: the chain also de-esses and adds a "
                   "stereo delay and reverb (mixes stereo, with tails); without it issue 11's chain [runs/foreign_space]")
    p.add_argument("--work", help="stage cache [runs/foreign, or runs/foreign_space with --space]")
    p.add_argument("--minutes", type=float, default=9.0, help="fine-tuning CPU budget")
    p.add_argument("--global-minutes", type=float, default=7.0, help="budget of --global at lr 3e-3")
    p.add_argument("--global-hi-minutes", type=float, default=6.0, help="budget of --global at lr 1e-2 (--stage global_hi)")
    p.add_argument("--epochs", type=int, help="cap on the fine-tune's epochs (train.py --epochs; the learning rate then "
                   "decays over them): a result that does not depend on the machine's load [none: the budget or the plateau]")
    p.add_argument("--global-epochs", type=int, help="cap on each --global run's epochs [none]")
    p.add_argument("--high-pass-slope", default="auto", choices=["6", "12", "18", "24", "auto"],
                   help="train.py --high-pass-slope for the fine-tune and --global, and the ceiling's slope (auto: per "
                   "song, a short fit at each) [auto]")
    p.add_argument("--n-train", type=int, default=50)
    p.add_argument("--more-train", type=int, default=0, help="--stage train_more: the fine-tune again on the --n-train "
                   "pairs plus this many more (voices after the test songs, so the test set is the same) [0]")
    p.add_argument("--n-test", type=int, default=12, help="held-out speech test songs (plus --n-sung sung takes)")
    p.add_argument("--n-sung", type=int, default=4)
    p.add_argument("--fit-steps", type=int, default=120, help="optimiser steps per song for the ceiling (dmst fit's "
                   "default) and the diagnosis")
    p.add_argument("--ceiling-order", default="forward", choices=["forward", "reverse"],
                   help="--stage ceiling: the order of the test songs (a second process, reverse, shares the work)")
    p.add_argument("--n-diagnose", type=int, default=6, help="test songs for the per-song compressor fits")
    p.add_argument("--n-search", type=int, default=25, help="training songs the single-setting search scores")
    p.add_argument("--no-ceiling", action="store_true", help="--stage eval without the per-song ceiling's fits "
                   "(about 3 min a song) where none are cached: its row and the gap closed are left out")
    p.add_argument("--all-ceilings", action="store_true", help="with --space, also the ceiling from dmst fit's own "
                   "start (the sends off there, without a gradient): one more fit per song")
    p.add_argument("--mid-ceiling", action="store_true", help="issue 11's second ceiling (the detector blends "
                   "started mid-range; without --space): one more fit per song")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _threads()
    work = Path(args.work or ROOT / "runs" / ("foreign_space" if args.space else "foreign"))
    train_files, test_files = pick_files(Path(args.voices), args.n_train, args.n_test, args.n_sung)
    stages = ({args.stage} if args.stage != "all" else
              # the space variant: issue 12's systems; issue 11's diagnosis (swaps, compressor fits) is of the dry chain
              {"mix", "train", "global", "search", "eval", "report"} if args.space else
              {"mix", "train", "global", "global_hi", "search", "ceiling", "eval", "diagnose", "report"})

    if "mix" in stages and not (work / "truth.json").exists():
        truth = {**write_pairs(train_files, work / "train", space=args.space),
                 **write_pairs(test_files, work / "test", space=args.space)}
        (work / "truth.json").write_text(json.dumps(truth, indent=1))
    truth = json.loads((work / "truth.json").read_text())

    common = ["--data", str(work / "train"), "--init", "default", "--crop-seconds", "3.0", "--batch-size", "8",
              "--seed", str(args.seed), "--quiet", "--high-pass-slope", args.high_pass_slope,
              # every file is its own utterance: the names' "fillets-ng-data-cs__" prefix is the package, not a song
              # (with the default separator all 50 pairs were one song, and validation fell back to the training pairs)
              "--song-separator", ""]
    cap = lambda n: ["--epochs", str(n)] if n else []  # noqa: E731
    if "train" in stages and not (work / "finetuned" / "model.pt").exists():
        import train

        t = time.monotonic()
        train.main(common + ["--out", str(work / "finetuned"), *cap(args.epochs), "--time-budget", str(args.minutes), "--lr", "1e-3"])
        (work / "finetuned" / "wall_s.txt").write_text(f"{time.monotonic() - t:.0f}\n")
    def train_with_extra(extra, tag, global_only=False):
        """The fine-tune (or ``global_only``: --global) on the training pairs plus ``extra`` voices mixed by the same
        engineer: the first ones linked, the new ones mixed into their own folder (train_extra / train_more for
        "more", ..._sung for "sung")."""
        import train

        suffix = "" if tag == "more" else f"_{tag}"
        mixed_dir, data_dir = work / f"train_extra{suffix}", work / f"train_{tag}"
        out = work / (f"global_{tag}" if global_only else f"finetuned_{tag}")
        if not (mixed_dir / "truth.json").exists():
            mixed_dir.mkdir(parents=True, exist_ok=True)
            (mixed_dir / "truth.json").write_text(json.dumps(write_pairs(extra, mixed_dir, space=args.space), indent=1))
        for sub in ("raw", "mixed"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
            for folder in (work / "train", mixed_dir):
                for f in sorted((folder / sub).iterdir()):
                    link = data_dir / sub / f.name
                    if not link.exists():
                        link.symlink_to(f.resolve())
        t = time.monotonic()
        run = (["--global", *cap(args.global_epochs), "--time-budget", str(args.global_minutes), "--lr", "3e-3"]
               if global_only else [*cap(args.epochs), "--time-budget", str(args.minutes), "--lr", "1e-3"])
        train.main([c if c != str(work / "train") else str(data_dir) for c in common] + ["--out", str(out), *run])
        (out / "wall_s.txt").write_text(f"{time.monotonic() - t:.0f}\n")

    if "train_more" in stages and args.more_train and not (work / "finetuned_more" / "model.pt").exists():
        train_with_extra(more_files(Path(args.voices), args.n_train, args.n_test, args.more_train), "more")
    if "train_sung" in stages and not (work / "finetuned_sung" / "model.pt").exists():
        # the training set is speech; the test set has sung takes: the sung takes the test does not use, added
        train_with_extra(more_sung_files(Path(args.voices), args.n_sung), "sung")
    if "global_sung" in stages and not (work / "global_sung" / "model.pt").exists():  # --global on the same pairs
        train_with_extra(more_sung_files(Path(args.voices), args.n_sung), "sung", global_only=True)
    if "global" in stages and not (work / "global" / "model.pt").exists():
        import train

        t = time.monotonic()
        train.main(common + ["--out", str(work / "global"), "--global", *cap(args.global_epochs), "--time-budget",
                             str(args.global_minutes), "--lr", "3e-3"])
        (work / "global" / "wall_s.txt").write_text(f"{time.monotonic() - t:.0f}\n")
    if "global_hi" in stages and not (work / "global_hi" / "model.pt").exists():
        import train

        train.main(common + ["--out", str(work / "global_hi"), "--global", *cap(args.global_epochs), "--time-budget",
                             str(args.global_hi_minutes), "--lr", "1e-2"])
    if "search" in stages and not (work / "single_setting.json").exists():
        songs = [(f.stem, *load(work / "train", f.stem)) for f in train_files[: args.n_search]]
        t = time.monotonic()
        best, cost, start, evals = search_single_setting(songs, truth)
        (work / "single_setting.json").write_text(json.dumps(
            {"best": best, "train_loss": cost, "start_median": start, "evaluations": evals, "wall_s": time.monotonic() - t}, indent=1))

    test = [(f.stem, *load(work / "test", f.stem)) for f in test_files]
    # The ceiling's fits, apart: --stage ceiling can run beside training, and a second one with --ceiling-order
    # reverse beside the first (each song is claimed by one, and each writes its own file; eval reads them all).
    ceiling_file = work / ("ceiling_settings_reverse.json" if args.ceiling_order == "reverse" else "ceiling_settings.json")
    if "ceiling" in stages and not args.space:
        claims = work / "ceiling_claims"
        claims.mkdir(exist_ok=True)
        current = read_ceilings(work, test)
        for name in set(read_ceilings(work)) - set(current):  # superseded fits: claimed again
            (claims / name).unlink(missing_ok=True)
        for name, raw, mixed, sr in tqdm(test[::-1] if args.ceiling_order == "reverse" else test, desc="ceiling fits",
                                         file=sys.stderr):
            if name not in read_ceilings(work, [t for t in test if t[0] == name]):
                try:
                    (claims / name).open("x").close()
                except FileExistsError:
                    if args.ceiling_order == "reverse":
                        continue  # the other process has it
                t = time.monotonic()
                raw_n = torch.nn.functional.pad(raw, (0, mixed.shape[-1] - raw.shape[-1]))
                params, losses = fit_ceiling(raw_n, mixed, sr, args.fit_steps, args.high_pass_slope)
                store_ceiling(work, name, {"params": params, "slope_losses": losses, "fit_s": time.monotonic() - t,
                                           "steps": args.fit_steps, "fit_version": CEILING_FIT_VERSION}, ceiling_file.name)
    if "eval" in stages:
        from dmst.encoder import load_model
        from dmst.encoder.model import BUNDLED_DIR
        from dmst.fit import fit_params

        # The settings of every system are cached per song (the fits are the slow part); the metrics are
        # computed again from them on every eval, so a new metric needs no new fits.
        settings_file = work / "eval_settings.json"
        cached = json.loads(settings_file.read_text()) if settings_file.exists() else {}
        per_song = {}
        single = json.loads((work / "single_setting.json").read_text())["best"]
        models = {"default model": "default", "global setting": work / "global" / "model.pt",
                  "global setting, lr 1e-2": work / "global_hi" / "model.pt",
                  "fine-tuned": work / "finetuned" / "model.pt",
                  # an earlier run, kept if present: fine-tuned with the blends' rows started at 0, before
                  # schema.TRAINING_START (the same command and budget otherwise)
                  EDGE: work / "finetuned_edge" / "model.pt",
                  # kept if present: runs made before train.py started the limiter at the mixes' loudest peaks
                  # (started at -1 dBTP), and one with the loss's crest term (train.CREST_WEIGHT 1)
                  LIMITER_M1: work / "finetuned_limiter_m1" / "model.pt",
                  "global setting, limiter started at -1 dBTP": work / "global_limiter_m1" / "model.pt",
                  "fine-tuned, limiter at -1 dBTP, crest term": work / "finetuned_crest" / "model.pt",
                  # a diagnosis, not the benchmark's system: the fine-tune told the foreign chain's slope (6 dB/oct)
                  "fine-tuned, told the 6 dB/oct slope": work / "finetuned_hp6" / "model.pt",
                  # kept if present: the same fine-tune made before training ended with the switch-off step
                  PREMERGE: work / "finetuned_premerge" / "model.pt",
                  # kept if present: the same command with a 12-minute budget and no epoch cap (plateau stopping on)
                  "fine-tuned, 12-minute budget": work / "finetuned_long" / "model.pt",
                  # kept if present: the fine-tune with the band-envelope term in its loss (train.ENVELOPE_WEIGHT 1)
                  ENVELOPE: work / "finetuned_envelope" / "model.pt",
                  # kept if present: the same fine-tune at the learning rate of --global (3e-3)
                  "fine-tuned, lr 3e-3": work / "finetuned_lr3" / "model.pt",
                  # kept if present: the fine-tune with the multi-resolution micro-dynamics term (train.MICRO_WEIGHT 1)
                  "fine-tuned, micro-dynamics term": work / "finetuned_micro" / "model.pt",
                  # kept if present: the fine-tune with the sibilance term (train.SIBILANCE_WEIGHT 1)
                  "fine-tuned, sibilance term": work / "finetuned_sibilance" / "model.pt",
                  # kept if present: the fine-tune with the crest term (train.CREST_WEIGHT 1), the limiter held as now
                  "fine-tuned, crest term": work / "finetuned_crest_held" / "model.pt",
                  # kept if present: the fine-tune trained before the limiter's ceiling was a held row ("off" was
                  # -0.012 dBTP in training); evaluated as this dmst loads it (held at its recorded ceiling, exactly)
                  "fine-tuned, trained with the near-miss limiter": work / "finetuned_nearmiss" / "model.pt",
                  # kept if present: the space fine-tune given 60 epochs instead of 30 (--work elsewhere, copied here)
                  "fine-tuned, 60 epochs": work / "finetuned_60" / "model.pt",
                  # kept if present: the same fine-tune with --seed 1 (its own crops and validation split), for the run noise
                  "fine-tuned, seed 1": work / "finetuned_seed1" / "model.pt",
                  "fine-tuned, seed 2": work / "finetuned_seed2" / "model.pt",
                  # kept if present: the same three runs made before train.py kept an average of the weights and
                  # validated on 4 crops a pair (it kept the last weights, one crop a pair)
                  "fine-tuned, last weights": work / "finetuned_lastw" / "model.pt",
                  "fine-tuned, last weights, seed 1": work / "finetuned_lastw_seed1" / "model.pt",
                  "fine-tuned, last weights, seed 2": work / "finetuned_lastw_seed2" / "model.pt",
                  # kept if present: issue 11's fine-tune with the weights averaged, capped at 70 epochs instead of 41
                  "fine-tuned, 70 epochs": work / "finetuned_70" / "model.pt",
                  "fine-tuned, 70 epochs, seed 1": work / "finetuned_70_seed1" / "model.pt",
                  # kept if present: the same 70 epochs with the plateau's patience counted from halfway through the
                  # schedule (train.PLATEAU_FROM_PROGRESS), three seeds
                  P70: work / "finetuned_p70" / "model.pt",
                  f"{P70}, seed 1": work / "finetuned_p70_seed1" / "model.pt",
                  f"{P70}, seed 2": work / "finetuned_p70_seed2" / "model.pt",
                  # kept if present: the same 70 epochs once the encoder heard the take's band shares
                  # (dmst.encoder.features.band_shares), three seeds
                  BANDS: work / "finetuned_bands" / "model.pt",
                  f"{BANDS}, seed 1": work / "finetuned_bands_seed1" / "model.pt",
                  f"{BANDS}, seed 2": work / "finetuned_bands_seed2" / "model.pt",
                  # kept if present: the unused sung takes added to the training pairs, for --global (--stage
                  # global_sung) and for the fine-tune with 70 epochs (--stage train_sung --epochs 70 in another
                  # --work, its finetuned_sung/ copied here as finetuned_sung70: finetuned_sung is the 41-epoch run)
                  "global setting with sung takes added": work / "global_sung" / "model.pt",
                  "fine-tuned with sung takes added, 70 epochs": work / "finetuned_sung70" / "model.pt",
                  # kept if present: the space fine-tune with the sibilance term (train.SIBILANCE_WEIGHT 1), the weights
                  # averaged and the delay time from the echoes (the earlier sibilance-term row kept the last weights)
                  "fine-tuned, sibilance term, weights averaged": work / "finetuned_sibavg" / "model.pt",
                  # kept if present: the fine-tune with the delay time learned from the mixes' echoes alone
                  # (train.ECHO_WEIGHT 1, the render's gradient on it cut; before, it was learned from the audio)
                  "fine-tuned, delay time from the echoes": work / "finetuned_echo" / "model.pt",
                  # kept if present: the ablation, train.py as now but keeping the last weights (4 crops a pair), seed 1
                  "fine-tuned, last weights, 4 validation crops a pair, seed 1": work / "finetuned_valcrops_seed1" / "model.pt",
                  # kept if present: the fine-tune with the unused sung takes added to the training pairs (--stage train_sung)
                  "fine-tuned with sung takes added": work / "finetuned_sung" / "model.pt",
                  # kept if present: the fine-tune on more training pairs (--stage train_more --more-train N)
                  "fine-tuned on more pairs": work / "finetuned_more" / "model.pt"}
        # kept if present: the runs made before train.py stepped the learned default in [0, 1] and held the
        # limiter (the same commands; the learned default stepped as logits, the limiter's ceiling learned)
        models.update({f"{label} (before: logit steps, limiter learned)": work / f"{run}_logit" / "model.pt"
                       for label, run in (("fine-tuned", "finetuned"), ("global setting", "global"),
                                          ("global setting, lr 1e-2", "global_hi"),
                                          ("fine-tuned, 12-minute budget", "finetuned_long"))})
        gone = {k for k, v in models.items() if v != "default" and not v.exists()}  # a run removed: its row goes
        models = {k: v for k, v in models.items() if k not in gone}
        # a cached prediction is used only for the same model file, as this dmst loads it (the rows it holds and
        # pins: a loader's migration changes predictions of the same file); the bundled default too, as its
        # predictions cached under a retrained default would be another model's
        loaded = {k: load_model(v) for k, v in models.items()}
        digests = {k: hashlib.sha256(Path(BUNDLED_DIR / "default.pt" if v == "default" else v).read_bytes()
                                     + json.dumps([loaded[k].encoder.fixed, loaded[k].pinned]).encode()).hexdigest()[:16]
                   for k, v in models.items()}
        stale = gone | {k for k, d in digests.items() if cached.get("_models", {}).get(k) != d}
        for name, song in cached.items():
            if name != "_models":
                for k in stale:
                    song.pop(k, None)
        cached["_models"] = {**cached.get("_models", {}), **digests}
        models = loaded
        t_eval = time.monotonic()
        swap_seed = {n: i for i, n in enumerate(sorted(t[0] for t in test))}  # bench/space_swap.py's seeds
        for name, raw, mixed, sr in tqdm(test, desc="evaluating", file=sys.stderr):
            rows, params = per_song.setdefault(name, {}), cached.setdefault(name, {})
            n, channels = mixed.shape[-1], mixed.shape[0]
            rows["raw input"] = metrics(raw, mixed, sr, raw)
            for label, model in models.items():
                params.setdefault(label, model.predict(raw, sr))
            y = foreign.render(raw.double().numpy(), sr, single, truth[name]["analysis"]["stage_db"])
            rows["foreign chain, best single setting"] = metrics(torch.from_numpy(y).float(), mixed, sr, raw)
            if args.space:  # the same setting on the footing of every other reverb (bench/space_swap.py)
                import space_swap

                h = space_swap.redraw_fine_structure(space_swap.freeverb_ir(sr, single["reverb_room"], single["reverb_damping"]),
                                                     seed=swap_seed[name])
                y = space_swap.render_with_ir(raw.double().numpy(), sr, single, truth[name]["analysis"]["stage_db"], h)
                rows[REDRAWN] = metrics(torch.from_numpy(y).float(), mixed, sr, raw)
            ceilings = read_ceilings(work, [(name, raw, mixed, sr)]) if not args.space else {}
            if name in ceilings:
                params["per-song ceiling (dmst fit)"] = ceilings[name]["params"]
            elif not args.space and name in read_ceilings(work):  # superseded (CEILING_FIT_VERSION): fitted again
                params.pop("per-song ceiling (dmst fit)", None)
            if (not args.space or args.all_ceilings) and not args.no_ceiling and "per-song ceiling (dmst fit)" not in params:
                t = time.monotonic()
                raw_n = torch.nn.functional.pad(raw, (0, n - raw.shape[-1]))
                if args.space:
                    params["per-song ceiling (dmst fit)"] = fit_params(raw_n, mixed, sr, steps=args.fit_steps)[0]
                else:  # cached with the ceiling stage's fits, so the next eval reads it
                    fitted, losses = fit_ceiling(raw_n, mixed, sr, args.fit_steps, args.high_pass_slope)
                    params["per-song ceiling (dmst fit)"] = fitted
                    store_ceiling(work, name, {"params": fitted, "slope_losses": losses, "fit_s": time.monotonic() - t,
                                               "steps": args.fit_steps, "fit_version": CEILING_FIT_VERSION})
                params.setdefault("_fit_s", []).append(time.monotonic() - t)
            if args.space and CEILING_START not in params:  # the sends start on, where they have a gradient
                raw_n = torch.nn.functional.pad(raw, (0, n - raw.shape[-1]))
                params[CEILING_START] = fit_params(raw_n, mixed, sr, steps=args.fit_steps, init=training_start())[0]
            if not args.space and args.mid_ceiling and CEILING_MID not in params:  # dmst fit's optimiser with the detector blends mid-range
                from dmst import schema

                mid = schema.default_dict()
                mid["compressor"].update(detector_rms=0.5, linear_envelope=0.5)
                params[CEILING_MID] = fit_params(raw, mixed, sr, steps=args.fit_steps, init=mid)[0]
            for label, p in params.items():
                if not label.startswith("_"):
                    rows[label] = metrics(render_params(raw, sr, p, n, channels), mixed, sr, raw)
                    rows[label]["fitted_family"] = [p["compressor"][k.split(".")[1]] for k in FAMILY]
            settings_file.write_text(json.dumps(cached, indent=1))
        (work / "eval.json").write_text(json.dumps(per_song, indent=1))
        print(f"eval: {time.monotonic() - t_eval:.0f} s", file=sys.stderr)

    if "diagnose" in stages and not (work / "diagnose.json").exists():
        t = time.monotonic()
        swaps = swap_analysis(test, truth)
        speech = [s for s in test if not truth[s[0]]["sung"]]
        sung = [s for s in test if truth[s[0]]["sung"]]
        chosen = speech[: max(0, args.n_diagnose - min(2, len(sung)))] + sung[: min(2, len(sung))]
        fits = {}
        start_new = {"compressor": {"detector_rms": 0.5, "linear_envelope": 0.5}}
        for name, raw, _, sr in tqdm(chosen, desc="per-song compressor fits", file=sys.stderr):
            s, stage = truth[name]["settings"], truth[name]["analysis"]["stage_db"]
            for comp in ("juce", "classic"):
                target = torch.from_numpy(foreign.render(raw.double().numpy(), sr, s, stage, compressor=comp)).float()
                for label, kw in (("v2 detector (frozen)", dict(frozen=FAMILY)), ("v3 detector family", dict(start=start_new))):
                    fitted, loss = fit_console(raw, target, sr, args.fit_steps, **kw)
                    m = metrics(render_params(raw, sr, fitted), target, sr)
                    m["loss"] = loss
                    m["family"] = [fitted["compressor"][k.split(".")[1]] for k in FAMILY]
                    fits.setdefault(comp, {}).setdefault(label, {})[name] = m
        (work / "diagnose.json").write_text(json.dumps({"swaps": swaps, "fits": fits, "wall_s": time.monotonic() - t}, indent=1))

    if "report" in stages:
        report(work, truth, test, args)
    return 0


SEEDS_MEAN = "fine-tuned, mean of seeds 0-2"
P70 = "fine-tuned, 70 epochs, patience from halfway"
BANDS = "fine-tuned, 70 epochs, band shares heard"
SEED_MEANS = {SEEDS_MEAN: ("fine-tuned", "fine-tuned, seed 1", "fine-tuned, seed 2"),
              f"{P70}, mean of seeds 0-2": (P70, f"{P70}, seed 1", f"{P70}, seed 2"),
              f"{BANDS}, mean of seeds 0-2": (BANDS, f"{BANDS}, seed 1", f"{BANDS}, seed 2"),
              "fine-tuned, last weights, mean of seeds 0-2": ("fine-tuned, last weights", "fine-tuned, last weights, seed 1",
                                                              "fine-tuned, last weights, seed 2")}


def report(work: Path, truth, test, args):
    result = {"train_songs": args.n_train, "test_songs": len(test), "fine_tune_minutes": args.minutes}
    keys = ["mrstft", "loudness_error_lu", "spectral_balance_error_db", "crest_factor_error_db", "micro_dynamics_error_db"]
    space_keys = ["mrstft_mid", "mrstft_side", "sibilance_error_db", "tail_energy_error_db", "stereo_width_error_db"]
    heads = {"mrstft": "MR-STFT", "loudness_error_lu": "loudness err (LU)", "spectral_balance_error_db": "balance err (dB)",
             "crest_factor_error_db": "crest err (dB)", "micro_dynamics_error_db": "micro-dyn err (dB)",
             "mrstft_mid": "mid MR-STFT", "mrstft_side": "side MR-STFT", "sibilance_error_db": "sibilance err (dB)",
             "tail_energy_error_db": "tail err (dB)", "stereo_width_error_db": "width err (dB)"}
    if (work / "eval.json").exists():
        per_song = json.loads((work / "eval.json").read_text())
        systems = [k for k in next(iter(per_song.values())) if all(k in r for r in per_song.values())]
        all_keys = keys + [k for k in space_keys if all(k in per_song[n][s] for n in per_song for s in systems)]
        summary = {}
        for subset, names in (("all", list(per_song)), ("speech", [n for n in per_song if not truth[n]["sung"]]),
                              ("sung", [n for n in per_song if truth[n]["sung"]])):
            if names:  # NaN (a side metric of a mono mix, a tail without gaps) is left out of a mean
                summary[subset] = {s: {k: float(np.nanmean([per_song[n][s][k] for n in names])) if any(
                    np.isfinite(per_song[n][s][k]) for n in names) else float("nan") for k in all_keys} for s in systems}
        # one run's win can be its seed's (issue 11's three seeds read 0.309 / 0.410 / 0.350 before the weights
        # were averaged): where all three seeds' runs are there, their mean is a row of its own
        for label, runs in SEED_MEANS.items():
            for rows in summary.values():
                if all(r in rows for r in runs):
                    rows[label] = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                                   for k in all_keys for v in [np.array([rows[r][k] for r in runs])]}
        all_ = summary["all"]
        ceilings = [c for c in ("per-song ceiling (dmst fit)", CEILING_MID, CEILING_START) if c in all_]
        gaps = {}
        means = [m for m in SEED_MEANS if m in all_]
        for who in [w for w in ("fine-tuned", *means) if w in all_]:
            for metric in ("mrstft", "mrstft_mid"):
                for gl in ("global setting", "global setting, lr 1e-2"):
                    for ce in ceilings:
                        if gl in all_ and metric in all_[gl]:
                            gaps[f"{'' if who == 'fine-tuned' else who + ', '}{metric}: {gl} -> {ce}"] = (
                                all_[gl][metric] - all_[who][metric]) / (all_[gl][metric] - all_[ce][metric])
        result["gap_closed"] = gaps
        for k, v in gaps.items():
            print(f"gap closed {k}: {v:.0%}")
        rivals = [b for b in ("default model", "global setting", "global setting, lr 1e-2", "foreign chain, best single setting", REDRAWN)
                  if b in all_]
        beats = lambda who: {m: {b: "tie" if abs(all_[who][m] - all_[b][m]) < 1e-9 else bool(all_[who][m] < all_[b][m])  # noqa: E731
                                 for b in rivals} for m in all_keys if np.isfinite(all_[who][m])}
        result.update(summary=summary, fine_tuned_beats=beats("fine-tuned") if "fine-tuned" in all_ else {}, seed_means_beat={m: beats(m) for m in means})
        for cols in (keys, [k for k in all_keys if k not in keys]):
            if not cols:
                continue
            print("\n| system | " + " | ".join(heads[k] for k in cols) + " |")
            print("|---" * (len(cols) + 1) + "|")
            for name, s in all_.items():
                print(f"| {name} | " + " | ".join("-" if not np.isfinite(s[k]) else f"{s[k]:.3f}" if "mrstft" in k
                                                 else f"{s[k]:.2f}" for k in cols) + " |")
        for subset in ("speech", "sung"):
            if subset in summary:
                print(f"\n{subset}: " + ", ".join(f"{n} {s['mrstft']:.3f}" for n, s in summary[subset].items()))
        print(f"\nfine-tuned beats: {json.dumps(result['fine_tuned_beats'])}")
        for m, b in result["seed_means_beat"].items():
            print(f"\n{m} beats: {json.dumps(b)}")
    if (work / "single_setting.json").exists():
        result["single_setting"] = json.loads((work / "single_setting.json").read_text())
    if (work / "diagnose.json").exists():
        diag = json.loads((work / "diagnose.json").read_text())
        result["swaps"] = diag["swaps"]
        print("\n| piece swapped for dmst's (identical nominal settings) | MR-STFT change: mean | max | micro-dynamics (dB) |")
        print("|---|---|---|---|")
        for label, m in diag["swaps"].items():
            print(f"| {label} | {m['mrstft']['mean']:.3f} | {m['mrstft']['max']:.3f} | {m['micro_dynamics_error_db']['mean']:.2f} |")
        fits = {}
        print("\n| mixes made with | dmst fit with | MR-STFT | micro-dynamics err (dB) | crest err (dB) | fitted (detector_rms, rms_window_ms, linear_envelope), mean |")
        print("|---|---|---|---|---|---|")
        for comp, by in diag["fits"].items():
            for label, songs in by.items():
                rows = list(songs.values())
                m = mean_rows([{k: r[k] for k in keys} for r in rows])
                fam = np.mean([r["family"] for r in rows], axis=0)
                fits.setdefault(comp, {})[label] = {**m, "family_mean": fam.tolist(), "songs": len(rows)}
                print(f"| {comp} | {label} | {m['mrstft']:.3f} | {m['micro_dynamics_error_db']:.2f} | {m['crest_factor_error_db']:.2f} | "
                      f"{fam[0]:.2f}, {fam[1]:.1f} ms, {fam[2]:.2f} |")
        result["fits"] = fits
    for run in ("finetuned", "global", "global_hi"):
        f = work / run / "metrics.json"
        if f.exists():
            epochs = json.loads(f.read_text())["epochs"]
            result[f"{run}_epochs"] = len(epochs)
            result[f"{run}_last_epoch"] = epochs[-1]
            last = torch.load(work / run / "last.pt", map_location="cpu", weights_only=True)
            result[f"{run}_high_pass_slope"] = last.get("high_pass_slope")
            result[f"{run}_stop_reason"] = last.get("stop_reason")
            print(f"{run}: {len(epochs)} epochs, {epochs[-1]['elapsed_s']:.0f} s, stopped: {last.get('stop_reason')}, "
                  f"high-pass slope {last.get('high_pass_slope')}")
    ceilings = read_ceilings(work, test)
    if ceilings:
        slopes = [c["params"]["eq"]["high_pass_slope_db"] for c in ceilings.values()]
        result["ceiling_slopes"] = {f"{k:g}": slopes.count(k) for k in sorted(set(slopes))}
        result["ceiling_fit_s"] = float(np.mean([c["fit_s"] for c in ceilings.values()]))
        print(f"ceiling slopes (dB/oct: songs): {result['ceiling_slopes']}; {result['ceiling_fit_s']:.0f} s a song")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / ("quality_space.json" if args.space else "quality.json")).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
