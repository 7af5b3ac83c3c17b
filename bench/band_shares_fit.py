"""How much of the foreign engineer's per-take settings the band shares alone explain (a check before training).

    python bench/band_shares_fit.py [--work runs/foreign] [--ridge 1e-3]

A ridge regression from the 16 band shares (dmst.encoder.features.band_shares) of each training raw to the
settings bench/foreign.py chose for it, scored on the test raws as R^2 (the share of the settings' spread
that the prediction explains).  Needs bench/quality.py --stage mix first.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dmst.encoder.features import LogMel, band_shares  # noqa: E402
from dmst.encoder.model import to_mono_44k  # noqa: E402

SETTINGS = ("low_mid_db", "presence_db", "air_db", "target_lufs", "hp_hz")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(ROOT / "runs" / "foreign"))
    p.add_argument("--ridge", type=float, default=1e-3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work)
    truth = json.loads((work / "truth.json").read_text())
    mel = LogMel()
    data = {}
    for split in ("train", "test"):
        rows = []
        for f in sorted((work / split / "raw").iterdir()):
            audio, sr = sf.read(f, dtype="float32", always_2d=True)
            staged, _ = to_mono_44k(torch.from_numpy(audio.T), sr)
            with torch.no_grad():
                x = band_shares(mel(staged[None]))[0].numpy()
            s = truth[f.stem]["settings"]
            rows.append((x, [float(np.log(s[k])) if k == "hp_hz" else s[k] for k in SETTINGS]))  # hp: in octaves
        data[split] = (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    a = np.c_[xtr, np.ones(len(xtr))]
    w = np.linalg.solve(a.T @ a + args.ridge * np.eye(a.shape[1]), a.T @ ytr)
    pred = np.c_[xte, np.ones(len(xte))] @ w
    r2 = 1 - ((pred - yte) ** 2).sum(0) / ((yte - yte.mean(0)) ** 2).sum(0)
    result = {k if k != "hp_hz" else "log hp_hz": round(float(v), 3) for k, v in zip(SETTINGS, r2)}
    print(f"test R^2 ({len(xtr)} training raws, {len(xte)} test raws, ridge {args.ridge:g}): {json.dumps(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
