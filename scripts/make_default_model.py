"""Re-create the bundled default model, dmst/models/default.pt.

    python scripts/make_default_model.py [--voices ../shared/data/voices] [--minutes 12]

1. Takes the real voice recordings in ``--voices`` (see its README and manifest for
   their licences), except the `fillets-ng-data-cs` package, which is held out for the
   style benchmark (bench/quality.py).
2. Mixes each one with the knowledge-engineered house style (dmst/house_style.py),
   which adapts its settings to each recording (de-essing sibilant takes, a modest room on
   the reverb send), delivered as an engineer bounces it: stereo (the dry voice centred, the
   returns in stereo) with ``TAIL_S`` of the room's tail after the take.
3. Trains the encoder from scratch on those (raw, house mix) pairs with train.py, within a
   CPU time budget (it starts the sends and the de-esser a little on, so it learns them, and
   switches off at the end what the mixes do not need), and installs the best model as the
   bundled default (a stereo model: it renders a mono take as a centred stereo mix).

Only the model weights are committed, not the recordings.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from dmst.encoder import load_model  # noqa: E402
from dmst.house_style import house_style, mix  # noqa: E402

HELD_OUT_PACKAGES = ("fillets-ng-data-cs",)
MIN_SECONDS = 0.6
# How the house mixes are delivered: stereo, with the room's tail (RT60 0.9 s: 1.5 s is where it has fallen
# about 100 dB) after the take.  Recorded in WORK/recipe.json: other pairs in WORK/data are made again.
RECIPE = {"output_channels": 2, "tail_s": 1.5}


def voice_files(voices: Path, limit: int) -> list[Path]:
    """Every usable recording but the held-out package; at most ``limit``, evenly spread over the sorted list."""
    files = sorted((voices / "speech").glob("*.flac")) + sorted((voices / "singing").glob("*.flac"))
    files = [f for f in files if not f.name.startswith(HELD_OUT_PACKAGES)]
    if len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def make_pairs(files, data: Path, style=house_style) -> int:
    (data / "raw").mkdir(parents=True, exist_ok=True)
    (data / "mixed").mkdir(parents=True, exist_ok=True)
    n = 0
    for f in tqdm(files, desc="mixing", file=sys.stderr):
        x, sr = sf.read(f, dtype="float32", always_2d=True)
        if x.shape[0] < MIN_SECONDS * sr:
            continue
        mixed, _ = mix(torch.from_numpy(x.T.copy()), sr, style=style, **RECIPE)
        sf.write(data / "raw" / f"{f.stem}.flac", x, sr, subtype="PCM_24")
        sf.write(data / "mixed" / f"{f.stem}.wav", mixed.T.numpy(), sr, subtype="FLOAT")
        n += 1
    return n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voices", default=str(ROOT.parent / "shared" / "data" / "voices"))
    p.add_argument("--work", default=str(ROOT / "runs" / "default_model"))
    p.add_argument("--minutes", type=float, default=12.0, help="training time budget")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--max-files", type=int, default=200, help="recordings to mix (evenly spread)")
    p.add_argument("--install", action="store_true", help="copy the result to dmst/models/default.pt")
    args = p.parse_args(argv)
    work = Path(args.work)
    data, recipe = work / "data", work / "recipe.json"
    wanted = {**RECIPE, "voices": str(Path(args.voices).resolve()), "max_files": args.max_files}
    if not (data / "raw").exists() or not recipe.exists() or json.loads(recipe.read_text()) != wanted:
        shutil.rmtree(data, ignore_errors=True)  # pairs of another recipe (e.g. the mono mixes without tails)
        n = make_pairs(voice_files(Path(args.voices), args.max_files), data)
        recipe.write_text(json.dumps(wanted, indent=2))
        print(f"made {n} house-style pairs in {data}")
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)  # a fresh run each time: nothing of an earlier one in its files
    status = train.main(["--data", str(data), "--out", str(run), "--epochs", str(args.epochs), "--time-budget",
                         str(args.minutes), "--crop-seconds", "2.0", "--batch-size", "16", "--lr", "1e-3", "--seed", "0",
                         "--val-fraction", "0.1", "--cache-dir", str(work / "cache"),
                         # each recording its own song: by the names' package prefix ("pkg__file") the 175
                         # recordings were 9 "songs", and a 10 % split held out one of them, a single pair
                         "--song-separator", ""])
    if status != 0 or not (run / "model.pt").exists():
        print("make_default_model: error: training did not produce a model; see its output above", file=sys.stderr)
        return 2
    model = load_model(run / "model.pt")
    model.name = "default"
    model.meta["style"] = ("house style (dmst/house_style.py), stereo mixes with 1.5 s tails, real voices from "
                           "shared/data/voices except fillets-ng-data-cs")
    model.meta["recipe"] = dict(RECIPE)
    if args.install:
        target = ROOT / "dmst" / "models" / "default.pt"
        model.save(target)
        print(f"installed {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
