"""Does dmst learn the style of an engineer who is not dmst?  The foreign-style benchmark.

    python bench/quality.py [--stage all|mix|train|global|search|eval|diagnose|report] [--minutes 9]
                            [--n-train 50] [--n-test 16] [--fit-steps 80] [--work DIR]

1. Held-out real voices (the `fillets-ng-data-cs` recordings, never used for the
   bundled model; plus a few sung takes in the test set) are mixed by a foreign
   engineer (bench/foreign.py): pedalboard's filters and JUCE compressor, an arctan
   saturation and a numpy BS.1770 loudness target, in its own order, adapted to each
   take by its own rules.  Nothing of dmst's DSP makes the targets.
2. The default model is fine-tuned on the training pairs within a CPU time budget
   (train.py --init default), and a single global setting is fitted (train.py --global).
3. On the test songs, full length: raw input, the bundled default, --global, the
   fine-tuned model, the per-song ceiling (dmst fit's optimiser, fit_params) and the
   foreign chain's own best single setting (one fixed pedalboard setting, found by a
   coordinate search over its parameters on --n-search training songs with dmst's training loss).
4. --stage diagnose: per-song fits of mixes made with pedalboard's compressor and with a
   classic RMS feedback / opto-release compressor (bench/foreign.py), with the compressor's
   v2 detector (new parameters frozen at their defaults) and with the v3 detector family
   free; and the swap analysis: the foreign chain with one piece at a time replaced by
   dmst's at identical nominal settings.
Metrics: MR-STFT, loudness error (LU, numpy BS.1770), third-octave spectral balance (dB),
crest factor (dB), micro-dynamics (MLDR-style, dB).  Writes bench/results/quality.json.
Single-threaded (torch and numba): on a shared 2-core machine numba's thread pool spins.
"""
from __future__ import annotations

import argparse
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
CEILING_MID = "per-song ceiling, blends started mid-range"
FAMILY = ("compressor.detector_rms", "compressor.rms_window_ms", "compressor.linear_envelope")


def _threads():
    import numba

    torch.set_num_threads(1)
    numba.set_num_threads(1)


def pick_files(voices: Path, n_train: int, n_test: int, n_sung: int, seed: int = 0):
    files = [f for f in sorted((voices / "speech").glob(f"{PACKAGE}__*.flac")) if sf.info(f).duration >= 1.5]
    random.Random(seed).shuffle(files)
    sung = [f for f in sorted((voices / "singing").glob("scratch__*.flac"))
            if sf.info(f).duration >= 1.5 and "BeatBox" not in f.name][:n_sung]
    return files[:n_train], files[n_train:n_train + n_test] + sung


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


def metrics(pred: torch.Tensor, target: torch.Tensor, sr: int) -> dict[str, float]:
    from dmst.metrics import crest_factor_error_db, mrstft_distance, spectral_balance_error_db

    p, t = pred.reshape(1, -1, pred.shape[-1]).float(), target.reshape(1, -1, target.shape[-1]).float()
    return {
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
    from dmst.fit import excerpt_segments
    from dmst.losses import MixLoss

    raw, mixed = to_mono(raw), to_mono(mixed)
    staging = staging_gain_db(raw[None], sr)
    raw_x, mix_x = excerpt_segments(raw, mixed, sr)
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


def render_params(raw, sr, params):
    from dmst import schema
    from dmst.console import render

    with torch.no_grad():
        return render(raw[None], sr, schema.stack([params]))[0]


# ---------------------------------------------------------------------------
# the foreign chain's own best single setting
# ---------------------------------------------------------------------------

SEARCH = [("threshold_db", "add", 3.0), ("ratio", "mul", 1.3), ("attack_ms", "mul", 1.8), ("release_ms", "mul", 1.5),
          ("hp_hz", "mul", 1.4), ("low_mid_db", "add", 1.5), ("presence_db", "add", 1.5), ("air_db", "add", 1.5),
          ("drive_db", "add", 1.5), ("target_lufs", "add", 0.75)]


def search_single_setting(songs, truth, passes=2):
    """Coordinate search from the median setting: one fixed foreign setting for every song, minimising dmst's training loss."""
    from dmst.losses import MixLoss

    start = {k: float(np.median([truth[n]["settings"][k] for n, _, _, _ in songs])) for k in foreign.SETTING_KEYS}
    cache = {}

    def cost(s):
        key = tuple(round(s[k], 6) for k in foreign.SETTING_KEYS)
        if key not in cache:
            total = 0.0
            for name, raw, mixed, sr in songs:
                y = foreign.render(raw.double().numpy(), sr, s, truth[name]["analysis"]["stage_db"])
                with torch.no_grad():
                    total += float(MixLoss(sr)(torch.from_numpy(y)[None].float(), mixed[None]))
            cache[key] = total / len(songs)
        return cache[key]

    best, best_cost = dict(start), cost(start)
    for p in range(passes):
        for key, op, step in SEARCH:
            step = step if p == 0 else (step / 2 if op == "add" else math.sqrt(step))
            for direction in (1, -1):
                while True:
                    trial = dict(best)
                    trial[key] = best[key] + direction * step if op == "add" else best[key] * step ** direction
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
    p.add_argument("--stage", default="all", choices=["all", "mix", "train", "global", "global_hi", "search", "eval", "diagnose", "report"])
    p.add_argument("--voices", default=str(ROOT.parent / "shared" / "data" / "voices"))
    p.add_argument("--space", action="store_true", help="issue 12's engineer: the chain also de-esses and adds a "
                   "stereo delay and reverb (mixes stereo, with tails); without it issue 11's chain [runs/foreign_space]")
    p.add_argument("--work", help="stage cache [runs/foreign, or runs/foreign_space with --space]")
    p.add_argument("--minutes", type=float, default=9.0, help="fine-tuning CPU budget")
    p.add_argument("--global-minutes", type=float, default=7.0, help="budget of --global at lr 3e-3")
    p.add_argument("--global-hi-minutes", type=float, default=6.0, help="budget of --global at lr 1e-2 (--stage global_hi)")
    p.add_argument("--n-train", type=int, default=50)
    p.add_argument("--n-test", type=int, default=12, help="held-out speech test songs (plus --n-sung sung takes)")
    p.add_argument("--n-sung", type=int, default=4)
    p.add_argument("--fit-steps", type=int, default=80, help="optimiser steps per song for the ceiling and the diagnosis")
    p.add_argument("--n-diagnose", type=int, default=6, help="test songs for the per-song compressor fits")
    p.add_argument("--n-search", type=int, default=25, help="training songs the single-setting search scores")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _threads()
    work = Path(args.work or ROOT / "runs" / ("foreign_space" if args.space else "foreign"))
    train_files, test_files = pick_files(Path(args.voices), args.n_train, args.n_test, args.n_sung)
    stages = {args.stage} if args.stage != "all" else {"mix", "train", "global", "global_hi", "search", "eval", "diagnose", "report"}

    if "mix" in stages and not (work / "truth.json").exists():
        truth = {**write_pairs(train_files, work / "train", space=args.space),
                 **write_pairs(test_files, work / "test", space=args.space)}
        (work / "truth.json").write_text(json.dumps(truth, indent=1))
    truth = json.loads((work / "truth.json").read_text())

    common = ["--data", str(work / "train"), "--init", "default", "--crop-seconds", "3.0", "--batch-size", "8",
              "--seed", str(args.seed), "--quiet"]
    if "train" in stages and not (work / "finetuned" / "model.pt").exists():
        import train

        t = time.monotonic()
        train.main(common + ["--out", str(work / "finetuned"), "--epochs", "1000", "--time-budget", str(args.minutes), "--lr", "1e-3"])
        (work / "finetuned" / "wall_s.txt").write_text(f"{time.monotonic() - t:.0f}\n")
    if "global" in stages and not (work / "global" / "model.pt").exists():
        import train

        t = time.monotonic()
        train.main(common + ["--out", str(work / "global"), "--global", "--epochs", "1000", "--time-budget",
                             str(args.global_minutes), "--lr", "3e-3"])
        (work / "global" / "wall_s.txt").write_text(f"{time.monotonic() - t:.0f}\n")
    if "global_hi" in stages and not (work / "global_hi" / "model.pt").exists():
        import train

        train.main(common + ["--out", str(work / "global_hi"), "--global", "--epochs", "1000", "--time-budget",
                             str(args.global_hi_minutes), "--lr", "1e-2"])
    if "search" in stages and not (work / "single_setting.json").exists():
        songs = [(f.stem, *load(work / "train", f.stem)) for f in train_files[: args.n_search]]
        t = time.monotonic()
        best, cost, start, evals = search_single_setting(songs, truth)
        (work / "single_setting.json").write_text(json.dumps(
            {"best": best, "train_loss": cost, "start_median": start, "evaluations": evals, "wall_s": time.monotonic() - t}, indent=1))

    test = [(f.stem, *load(work / "test", f.stem)) for f in test_files]
    if "eval" in stages:
        from dmst.encoder import load_model
        from dmst.fit import fit_params

        per_song = json.loads((work / "eval.json").read_text()) if (work / "eval.json").exists() else {}
        single = json.loads((work / "single_setting.json").read_text())["best"]
        models = {"default model": "default", "global setting": work / "global" / "model.pt",
                  "global setting, lr 1e-2": work / "global_hi" / "model.pt",
                  "fine-tuned": work / "finetuned" / "model.pt",
                  # an earlier run, kept if present: fine-tuned with the blends' rows started at 0, before
                  # schema.TRAINING_START (the same command and budget otherwise)
                  EDGE: work / "finetuned_edge" / "model.pt"}
        models = {k: load_model(v) for k, v in models.items() if v == "default" or v.exists()}
        for name, raw, mixed, sr in tqdm(test, desc="evaluating", file=sys.stderr):
            rows = per_song.setdefault(name, {})
            if "raw input" not in rows:
                rows["raw input"] = metrics(raw, mixed, sr)
            for label, model in models.items():
                if label not in rows:
                    rows[label] = metrics(render_params(raw, sr, model.predict(raw, sr)), mixed, sr)
            if "foreign chain, best single setting" not in rows:
                y = foreign.render(raw.double().numpy(), sr, single, truth[name]["analysis"]["stage_db"])
                rows["foreign chain, best single setting"] = metrics(torch.from_numpy(y).float(), mixed, sr)
            if "per-song ceiling (dmst fit)" not in rows:
                fitted, _ = fit_params(raw, mixed, sr, steps=args.fit_steps)
                rows["per-song ceiling (dmst fit)"] = metrics(render_params(raw, sr, fitted), mixed, sr)
                rows["per-song ceiling (dmst fit)"]["fitted_family"] = [fitted["compressor"][k.split(".")[1]] for k in FAMILY]
            if CEILING_MID not in rows:  # dmst fit's optimiser with the detector blends started mid-range
                fitted, _ = fit_console(raw, mixed, sr, args.fit_steps, start={"compressor": {
                    k.split(".")[1]: v for k, v in {"compressor.detector_rms": 0.5, "compressor.linear_envelope": 0.5}.items()}})
                rows[CEILING_MID] = metrics(render_params(raw, sr, fitted), mixed, sr)
                rows[CEILING_MID]["fitted_family"] = [fitted["compressor"][k.split(".")[1]] for k in FAMILY]
            (work / "eval.json").write_text(json.dumps(per_song, indent=1))

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


def report(work: Path, truth, test, args):
    result = {"train_songs": args.n_train, "test_songs": len(test), "fine_tune_minutes": args.minutes}
    keys = ["mrstft", "loudness_error_lu", "spectral_balance_error_db", "crest_factor_error_db", "micro_dynamics_error_db"]
    head = "| system | MR-STFT | loudness err (LU) | spectral balance err (dB) | crest err (dB) | micro-dynamics err (dB) |"
    if (work / "eval.json").exists():
        per_song = json.loads((work / "eval.json").read_text())
        systems = [k for k in next(iter(per_song.values())) if all(k in r for r in per_song.values())]
        summary = {}
        for subset, names in (("all", list(per_song)), ("speech", [n for n in per_song if not truth[n]["sung"]]),
                              ("sung", [n for n in per_song if truth[n]["sung"]])):
            if names:
                summary[subset] = {s: mean_rows([{k: per_song[n][s][k] for k in keys} for n in names]) for s in systems}
        all_ = summary["all"]
        g, ft, c = (all_[k]["mrstft"] for k in ("global setting", "fine-tuned", "per-song ceiling (dmst fit)"))
        gaps = {f"{gl} -> {ce}": (all_[gl]["mrstft"] - ft) / (all_[gl]["mrstft"] - all_[ce]["mrstft"])
                for gl in ("global setting", "global setting, lr 1e-2") for ce in ("per-song ceiling (dmst fit)", CEILING_MID)
                if gl in all_ and ce in all_}
        result["gap_closed_all"] = gaps
        for k, v in gaps.items():
            print(f"gap closed {k}: {v:.0%}")
        result.update(summary=summary, gap_closed_mrstft=(g - ft) / (g - c) if g > c else float("nan"),
                      fine_tuned_beats={m: {b: all_["fine-tuned"][m] < all_[b][m] for b in
                                            ("default model", "global setting", "global setting, lr 1e-2",
                                             "foreign chain, best single setting") if b in all_} for m in keys})
        print(head)
        print("|---|---|---|---|---|---|")
        for name, s in all_.items():
            print(f"| {name} | {s['mrstft']:.3f} | {s['loudness_error_lu']:.2f} | {s['spectral_balance_error_db']:.2f} | "
                  f"{s['crest_factor_error_db']:.2f} | {s['micro_dynamics_error_db']:.2f} |")
        for subset in ("speech", "sung"):
            if subset in summary:
                print(f"\n{subset}: " + ", ".join(f"{n} {s['mrstft']:.3f}" for n, s in summary[subset].items()))
        print(f"\nfine-tuned closes {result['gap_closed_mrstft']:.0%} of the MR-STFT gap between --global and the ceiling")
        print(f"fine-tuned beats: {json.dumps(result['fine_tuned_beats'])}")
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
    for run in ("finetuned", "global"):
        f = work / run / "metrics.json"
        if f.exists():
            epochs = json.loads(f.read_text())["epochs"]
            result[f"{run}_epochs"] = len(epochs)
            result[f"{run}_last_epoch"] = epochs[-1]
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
