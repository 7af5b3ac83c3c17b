"""Per-song fits of mixes made with foreign compressors: what the compressor's feedback topology buys.

For each of a few benchmark songs (speech and sung takes from ``../shared/data/voices``,
picked as ``bench/quality.py`` picks its test songs), the foreign chain of
``bench/foreign.py`` mixes the raw take with its classic RMS feedback / opto-release
compressor (and, with ``--compressors classic juce``, with pedalboard's JUCE
compressor).  dmst's console is then fitted to each mix, per song, with
``dmst fit``'s optimiser (Adam on the sigmoid logits, the training loss, the whole take),
holding some compressor controls frozen at exactly their defaults:

* ``v2 detector``: detector_rms, rms_window_ms, linear_envelope and feedback frozen;
* ``v3 family, feed-forward``: the family free (blends started mid-range), feedback frozen at 0;
* ``v3 family + feedback``: everything free, feedback started at 0.5 too (and, in
  ``v3 family + feedback from 0.9``, at 0.9).

It prints MR-STFT, micro-dynamics and crest-factor errors of the fitted renders (lower is
better) and the mean fitted controls, and writes them to ``--out`` (JSON; songs already
there are not fitted again).  ``python bench/bench_compressor_families.py`` (about 20
minutes on 2 cores for 6 songs and the classic compressor).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import foreign  # noqa: E402

PACKAGE = "fillets-ng-data-cs"
FAMILY = ("compressor.detector_rms", "compressor.rms_window_ms", "compressor.linear_envelope")
FEEDBACK = ("compressor.feedback",)
CONFIGS = {
    "v2 detector": dict(frozen=FAMILY + FEEDBACK, start={}),
    "v3 family, feed-forward": dict(frozen=FEEDBACK, start={"detector_rms": 0.5, "linear_envelope": 0.5}),
    "v3 family + feedback": dict(frozen=(), start={"detector_rms": 0.5, "linear_envelope": 0.5, "feedback": 0.5}),
    # the same, with the loop started nearly closed: does the start decide where the fit ends?
    "v3 family + feedback from 0.9": dict(frozen=(), start={"detector_rms": 0.5, "linear_envelope": 0.5, "feedback": 0.9}),
}
SHOWN = FAMILY + FEEDBACK + ("compressor.ratio", "compressor.attack_ms", "compressor.release_ms")


def pick_songs(voices: Path, n_speech: int, n_sung: int, skip: int = 50, seed: int = 0) -> list[Path]:
    """quality.py's test songs: speech after its ``skip`` training files (seeded shuffle), then sung takes."""
    files = [f for f in sorted((voices / "speech").glob(f"{PACKAGE}__*.flac")) if sf.info(f).duration >= 1.5]
    random.Random(seed).shuffle(files)
    sung = [f for f in sorted((voices / "singing").glob("scratch__*.flac"))
            if sf.info(f).duration >= 1.5 and "BeatBox" not in f.name]
    return files[skip:skip + n_speech] + sung[:n_sung]


def fit(raw: torch.Tensor, mixed: torch.Tensor, sr: int, steps: int, frozen, start, lr: float = 0.05):
    """dmst fit's optimisation (``quality.fit_console``: whole take for these short songs, mono), with ``frozen``
    keys held at exactly their defaults and the compressor started at ``start``."""
    from quality import fit_console

    return fit_console(raw, mixed, sr, steps, frozen=frozen, start={"compressor": start}, lr=lr)


def metrics(pred: torch.Tensor, target: torch.Tensor, sr: int) -> dict[str, float]:
    from dmst.metrics import crest_factor_error_db, mrstft_distance

    p, t = pred.reshape(1, 1, -1).float(), target.reshape(1, 1, -1).float()
    return {"mrstft": mrstft_distance(p, t), "crest_factor_error_db": crest_factor_error_db(p, t),
            "micro_dynamics_error_db": foreign.micro_dynamics_error_db(p[0].double().numpy(), t[0].double().numpy(), sr)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voices", default=str(ROOT.parent / "shared" / "data" / "voices"))
    p.add_argument("--out", default=str(ROOT / "runs" / "compressor_families.json"))
    p.add_argument("--n-speech", type=int, default=4)
    p.add_argument("--n-sung", type=int, default=2)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--compressors", nargs="+", default=["classic"], choices=["classic", "juce"])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS)[:3], choices=list(CONFIGS))
    args = p.parse_args(argv)
    import numba

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    from dmst import schema
    from dmst.console import render

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    for f in pick_songs(Path(args.voices), args.n_speech, args.n_sung):
        x, sr = sf.read(f, dtype="float64", always_2d=True)
        raw = torch.from_numpy(x.T.mean(axis=0, keepdims=True).copy()).float()
        for comp in args.compressors:
            target = None
            for label in args.configs:
                rows = results.setdefault(comp, {}).setdefault(label, {})
                if f.stem in rows:
                    continue
                if target is None:
                    y, _, _ = foreign.mix(raw.double().numpy(), sr, compressor=comp)
                    target = torch.from_numpy(y).float()
                t = time.monotonic()
                fitted, loss = fit(raw, target, sr, args.steps, **CONFIGS[label])
                with torch.no_grad():
                    pred = render(raw[None], sr, schema.stack([fitted]))[0]
                m = metrics(pred, target, sr)
                m.update(loss=loss, wall_s=time.monotonic() - t, seconds=raw.shape[-1] / sr,
                         fitted={k: fitted[k.split(".")[0]][k.split(".")[1]] for k in SHOWN})
                rows[f.stem] = m
                out.write_text(json.dumps(results, indent=1))
                print(f"{comp:8s} {label:26s} {f.stem[:40]:40s} mrstft {m['mrstft']:.3f} ({m['wall_s']:.0f} s)", file=sys.stderr)

    print("\n| mixes made with | fitted with | songs | MR-STFT | micro-dynamics err (dB) | crest err (dB) | "
          "fitted detector_rms, rms_window_ms, linear_envelope, feedback (mean) |")
    print("|---|---|---|---|---|---|---|")
    for comp in args.compressors:
        for label in CONFIGS:
            rows = list(results.get(comp, {}).get(label, {}).values())
            if not rows:
                continue
            mean = {k: float(np.mean([r[k] for r in rows])) for k in ("mrstft", "micro_dynamics_error_db", "crest_factor_error_db")}
            fam = [float(np.mean([r["fitted"][k] for r in rows])) for k in FAMILY + FEEDBACK]
            fam_text = "-" if label == "v2 detector" else f"{fam[0]:.2f}, {fam[1]:.1f} ms, {fam[2]:.2f}, {fam[3]:.2f}"
            print(f"| {comp} | {label} | {len(rows)} | {mean['mrstft']:.3f} | {mean['micro_dynamics_error_db']:.2f} | "
                  f"{mean['crest_factor_error_db']:.2f} | {fam_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
