"""Render time of each console-v3 effect on a 3-minute mono vocal-like signal at 44.1 kHz (no gradients, CPU).

    python bench/bench_effects_v3.py [--seconds 180] [--repeats 3]

Prints the best of ``--repeats`` runs per effect, after one warm-up call (which compiles
the llvmlite loops and builds the reverb's noise bands), and the training-path time of
one batch of 8 five-second crops, forward and backward.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmst.effects.deesser import deesser  # noqa: E402
from dmst.effects.delay import delay  # noqa: E402
from dmst.effects.gate import gate  # noqa: E402
from dmst.effects.limiter import limiter  # noqa: E402
from dmst.effects.post_eq import post_eq  # noqa: E402
from dmst.effects.reverb import reverb  # noqa: E402
from dmst.effects.sends import sends  # noqa: E402

SR = 44100
SETTINGS = {
    "gate": (gate, dict(threshold_db=-50.0, ratio=2.0, range_db=20.0, attack_ms=2.0, release_ms=100.0)),
    "deesser": (deesser, dict(frequency_hz=6500.0, threshold_db=-30.0, range_db=8.0, attack_ms=1.0, release_ms=60.0)),
    "post_eq": (post_eq, dict(bell_freq_hz=3000.0, bell_gain_db=2.0, bell_q=1.0, high_shelf_freq_hz=10000.0,
                              high_shelf_gain_db=2.0)),
    "delay (300 ms, feedback 0.35)": (delay, dict(time_ms=300.0, feedback=0.35, low_pass_hz=6000.0, high_pass_hz=150.0,
                                                    spread=0.6, send_db=-14.0)),
    "delay (1000 ms, feedback 0.9)": (delay, dict(time_ms=1000.0, feedback=0.9, low_pass_hz=6000.0, high_pass_hz=150.0,
                                                    spread=0.6, send_db=-14.0)),
    "reverb (1.8 s)": (reverb, dict(decay_s=1.8, pre_delay_ms=20.0, damping_hz=6000.0, width=1.0, send_db=-16.0)),
    "reverb (6 s)": (reverb, dict(decay_s=6.0, pre_delay_ms=20.0, damping_hz=6000.0, width=1.0, send_db=-16.0)),
    "limiter": (limiter, dict(ceiling_dbtp=-1.0, release_ms=100.0)),
}
# Both sends at once (dmst.effects.sends): the typical delay and the 1.8 s reverb in one convolution.
BOTH = (dict(time_ms=300.0, feedback=0.35, low_pass_hz=6000.0, high_pass_hz=150.0, spread=0.6, send_db=-14.0),
        dict(decay_s=1.8, pre_delay_ms=20.0, damping_hz=6000.0, width=1.0, send_db=-16.0))


def signal(seconds: float, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    n = int(seconds * SR)
    t = torch.arange(n) / SR
    syllables = (0.5 + 0.5 * torch.sin(2 * math.pi * 3.0 * t)).pow(2)
    tone = sum(torch.sin(2 * math.pi * 180 * k * t) / k for k in range(1, 10))
    hiss = 0.05 * torch.randn(n, generator=g)
    return (0.3 * syllables * (tone + hiss)).expand(batch, 1, n).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x = signal(args.seconds)
    print(f"render, {args.seconds:.0f} s mono at {SR} Hz, {torch.get_num_threads()} threads (best of {args.repeats}):")
    with torch.no_grad():
        for name, (effect, params) in SETTINGS.items():
            effect(x[..., : SR], SR, **params)  # warm-up: compile, noise bands
            best = min(_timed(lambda: effect(x, SR, **params)) for _ in range(args.repeats))
            print(f"  {name:32s} {best:6.3f} s  ({args.seconds / best:5.0f}x real time)")
        best = min(_timed(lambda: sends(x, SR, *BOTH)) for _ in range(args.repeats))
        print(f"  {'sends (delay 300 ms + reverb 1.8 s)':32s} {best:6.3f} s  ({args.seconds / best:5.0f}x real time)")
    crops = signal(5.0, batch=8).clone()
    print("training path, 8 crops of 5 s, forward + backward:")
    for name, (effect, params) in SETTINGS.items():
        leaves = {k: torch.full((8,), v, requires_grad=True) for k, v in params.items()}
        effect(crops[..., : SR], SR, **leaves).pow(2).mean().backward()  # warm-up (torchcomp's Numba kernels)
        seconds = _timed(lambda: effect(crops, SR, **leaves).pow(2).mean().backward())
        print(f"  {name:32s} {seconds:6.3f} s")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
