"""``dmst fit`` at song length: wall time of the whole command for a 4-minute stereo song.

    python bench/bench_fit.py [--seconds 240] [--steps N]

The raw is a 4-minute mono take from shared/data/voices (bench/_takes.py), the mix a
stereo version of it with a 2 s echo tail; ``dmst fit RAW MIX -o P.json`` runs as a
new process (``dmst fit`` runs its optimisation on one thread, see ``dmst/fit.py``).
Reports the wall time and the CPU time of that process (on a shared machine the CPU
time is the steadier number: wall time grows with the other jobs), the load average
before and after, the fitted loss, and how close a whole-song render with the fitted
settings is to the mix (MR-STFT, loudness error as delivered), so a faster fit that fits
worse shows.  Target: at most 60 s wall on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _takes import SR, mix_of, take  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = take(args.seconds, seed=11)
        mixed = mix_of(raw, 2.0, seed=11)
        sf.write(tmp / "raw.wav", raw, SR, subtype="PCM_24")
        sf.write(tmp / "mix.wav", mixed, SR, subtype="PCM_24")
        command = [sys.executable, "-m", "dmst", "fit", str(tmp / "raw.wav"), str(tmp / "mix.wav"), "-o", str(tmp / "p.json")]
        if args.steps:
            command += ["--steps", str(args.steps)]
        load_before = os.getloadavg()[0]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        load_after = os.getloadavg()[0]
        subprocess.run([sys.executable, "-m", "dmst", "render", str(tmp / "raw.wav"), "--params", str(tmp / "p.json"),
                        "-o", str(tmp / "out.wav"), "--bit-depth", "32f"], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
        from dmst.effects.gain import integrated_loudness
        from dmst.metrics import mrstft_distance

        out, _ = sf.read(tmp / "out.wav", dtype="float32", always_2d=True)
        t_out = torch.from_numpy(np.ascontiguousarray(out.T))[None]
        n = min(out.shape[0], mixed.shape[0], raw.shape[-1])  # the render may carry a tail past both
        t_mix = torch.from_numpy(np.ascontiguousarray(mixed.T))[None]
        pad = torch.nn.functional.pad(t_out, (0, max(0, t_mix.shape[-1] - t_out.shape[-1])))
        doc = json.loads((tmp / "p.json").read_text())
        result = {"seconds": args.seconds, "steps": args.steps or "default", "wall_s": round(wall, 1),
                  "cpu_s": round(cpu, 1), "load_average_before_after": [round(load_before, 1), round(load_after, 1)],
                  "loss": doc["meta"]["loss"],
                  "output_channels": doc["meta"].get("output_channels"), "render_channels": int(out.shape[1]),
                  "mrstft_whole_song": round(mrstft_distance(pad[..., :t_mix.shape[-1]], t_mix), 3),
                  "mrstft_raw_vs_mix": round(mrstft_distance(torch.from_numpy(np.tile(raw, (2, 1)))[None][..., :n],
                                                             t_mix[..., :n]), 3),
                  "loudness_error_lu": round(abs(float(integrated_loudness(t_out, SR)[0])
                                                 - float(integrated_loudness(t_mix, SR)[0])), 3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
