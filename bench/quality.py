"""Does dmst learn a style it was never shown?  The style-transfer quality benchmark.

    python bench/quality.py [--voices ../shared/data/voices] [--minutes 20] [--seed 0] [--work DIR] [--reuse-fixed]

1. Held-out real voices (the `fillets-ng-data-cs` recordings, never used for the
   bundled model) are mixed with `other_style` (dmst/house_style.py), an adaptive
   "dark, dense broadcast" style unlike the house style the default model learned
   (it even delivers at a loudness that follows the voice's effort, -16..-12 LUFS,
   where the house style always delivers at -16).
2. The default model is fine-tuned on 100 of those pairs within a CPU time budget
   (train.py --init default --time-budget MINUTES).
3. On 30 other held-out songs, full length, it is compared with three baselines:
   the raw input, the default model before fine-tuning, and the best single global
   setting fitted to the same 100 pairs (train.py --global); and with the per-song
   ceiling (dmst fit on each test pair).
Metrics: MR-STFT distance, loudness error (LU), third-octave spectral-balance
error (dB), crest-factor error (dB), per-parameter error (normalised units).
Writes bench/results/quality.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from dmst import schema  # noqa: E402
from dmst.console import render  # noqa: E402
from dmst.encoder import load_model  # noqa: E402
from dmst.fit import fit_params  # noqa: E402
from dmst.house_style import mix, other_style  # noqa: E402
from dmst.metrics import audio_metrics, mean_metrics, parameter_error  # noqa: E402

PACKAGE = "fillets-ng-data-cs"
N_TRAIN, N_TEST = 100, 30


def pick_files(voices: Path, seed: int = 0) -> tuple[list[Path], list[Path]]:
    files = [f for f in sorted((voices / "speech").glob(f"{PACKAGE}__*.flac")) if sf.info(f).duration >= 1.5]
    random.Random(seed).shuffle(files)
    return files[:N_TRAIN], files[N_TRAIN:N_TRAIN + N_TEST]


def write_pairs(files, folder: Path) -> dict[str, dict]:
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    (folder / "mixed").mkdir(parents=True, exist_ok=True)
    truth = {}
    for f in tqdm(files, desc=f"mixing {folder.name}", file=sys.stderr):
        x, sr = sf.read(f, dtype="float32", always_2d=True)
        mixed, params = mix(torch.from_numpy(x.T.copy()), sr, style=other_style)
        sf.write(folder / "raw" / f"{f.stem}.flac", x, sr, subtype="PCM_24")
        sf.write(folder / "mixed" / f"{f.stem}.wav", mixed.T.numpy(), sr, subtype="FLOAT")
        truth[f.stem] = params
    return truth


def load(folder: Path, name: str):
    raw, sr = sf.read(folder / "raw" / f"{name}.flac", dtype="float32", always_2d=True)
    mixed, _ = sf.read(folder / "mixed" / f"{name}.wav", dtype="float32", always_2d=True)
    return torch.from_numpy(raw.T.copy()), torch.from_numpy(mixed.T.copy()), sr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voices", default=str(ROOT.parent / "shared" / "data" / "voices"))
    p.add_argument("--work", default=str(ROOT / "runs" / "quality"))
    p.add_argument("--minutes", type=float, default=20.0, help="fine-tuning CPU budget")
    p.add_argument("--fit-steps", type=int, default=150, help="optimiser steps per song for the ceiling")
    p.add_argument("--seed", type=int, default=0, help="training seed of the fine-tuned and global models (the songs stay the same)")
    p.add_argument("--reuse-fixed", action="store_true",
                   help="reuse the raw-input, default-model and ceiling results saved by an earlier run in --work "
                        "(valid only while the console DSP and the default model are unchanged)")
    args = p.parse_args(argv)
    work = Path(args.work)
    train_files, test_files = pick_files(Path(args.voices))
    if not (work / "truth.json").exists():
        truth = {**write_pairs(train_files, work / "train"), **write_pairs(test_files, work / "test")}
        (work / "truth.json").write_text(json.dumps(truth))
    truth = json.loads((work / "truth.json").read_text())

    common = ["--data", str(work / "train"), "--init", "default", "--crop-seconds", "3.0", "--batch-size", "8", "--seed", str(args.seed), "--quiet"]
    timings = {}
    if not (work / "finetuned" / "model.pt").exists():
        t = time.monotonic()
        train.main(common + ["--out", str(work / "finetuned"), "--epochs", "200", "--time-budget", str(args.minutes), "--lr", "1e-3"])
        timings["finetune_s"] = time.monotonic() - t
    if not (work / "global" / "model.pt").exists():
        t = time.monotonic()
        train.main(common + ["--out", str(work / "global"), "--global", "--epochs", "40", "--time-budget", "4", "--lr", "3e-3"])
        timings["global_s"] = time.monotonic() - t

    # Rows that do not depend on the fine-tuning: the raw input, the default model and the ceiling.
    fixed_file = work / "fixed_rows.json"
    fixed = json.loads(fixed_file.read_text()) if args.reuse_fixed and fixed_file.exists() else None
    models = {"default model": load_model("default"), "global setting": load_model(work / "global" / "model.pt"),
              "fine-tuned": load_model(work / "finetuned" / "model.pt")}
    if fixed is not None:
        del models["default model"]
    rows = {name: [] for name in ["raw input", "default model", "global setting", "fine-tuned", "per-song ceiling"]}
    perr = {name: [] for name in ["default model", "global setting", "fine-tuned", "per-song ceiling"]}
    for f in tqdm(test_files, desc="evaluating", file=sys.stderr):
        raw, mixed, sr = load(work / "test", f.stem)
        true = schema.stack([truth[f.stem]])
        for name, model in models.items():
            params = model.predict(raw, sr)
            flat = schema.stack([params])
            with torch.no_grad():
                rows[name].append(audio_metrics(render(raw[None], sr, flat), mixed[None], sr))
            perr[name].append(parameter_error(flat, true))
        if fixed is not None:
            continue
        rows["raw input"].append(audio_metrics(raw[None], mixed[None], sr))
        fitted, _ = fit_params(raw, mixed, sr, steps=args.fit_steps)
        flat = schema.stack([fitted])
        with torch.no_grad():
            rows["per-song ceiling"].append(audio_metrics(render(raw[None], sr, flat), mixed[None], sr))
        perr["per-song ceiling"].append(parameter_error(flat, true))
    fixed_names = ["raw input", "default model", "per-song ceiling"]
    if fixed is None:
        fixed_file.write_text(json.dumps({"rows": {k: rows[k] for k in fixed_names},
                                          "perr": {k: perr[k] for k in fixed_names if k in perr}}))
    else:
        rows.update(fixed["rows"])
        perr.update(fixed["perr"])

    summary = {name: mean_metrics(r) for name, r in rows.items()}
    for name, errs in perr.items():
        summary[name]["parameter_error"] = sum(sum(e.values()) / len(e) for e in errs) / len(errs)
        summary[name]["parameter_error_by_name"] = {k: sum(e[k] for e in errs) / len(errs) for k in schema.KEYS}
    g, ft, c = (summary[k]["mrstft"] for k in ("global setting", "fine-tuned", "per-song ceiling"))
    gap_closed = (g - ft) / (g - c) if g > c else float("nan")
    metrics = ["mrstft", "loudness_error_lu", "spectral_balance_error_db", "crest_factor_error_db", "parameter_error"]
    beats = {m: all(summary["fine-tuned"][m] < summary[b][m] for b in ("raw input", "default model", "global setting"))
             for m in metrics[:4]}
    result = {"summary": summary, "gap_closed_mrstft": gap_closed, "fine_tuned_beats_all_baselines": beats,
              "train_songs": len(train_files), "test_songs": len(test_files), "fine_tune_minutes": args.minutes,
              "seed": args.seed, "timings": timings,
              "finetune_history": json.loads((work / "finetuned" / "metrics.json").read_text())["epochs"][-1]}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=2))
    print("| system | MR-STFT | loudness err (LU) | spectral balance err (dB) | crest err (dB) | param err |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        pe = f"{s['parameter_error']:.3f}" if "parameter_error" in s else "-"
        print(f"| {name} | {s['mrstft']:.3f} | {s['loudness_error_lu']:.2f} | {s['spectral_balance_error_db']:.2f} | {s['crest_factor_error_db']:.2f} | {pe} |")
    print(f"\nfine-tuned closes {gap_closed:.0%} of the MR-STFT gap between the global setting and the per-song ceiling")
    print(f"fine-tuned beats every baseline on: {beats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
