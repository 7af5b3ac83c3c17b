"""How long ``dmst render`` takes for a 3-minute vocal, as a user runs it.

    python bench/bench_render.py [--model default] [--runs 3] [--seconds 180]

Each run is a whole new process (``python -m dmst.cli render IN -o OUT --force``):
Python start-up, imports, model load, prediction, rendering, the true-peak check and
writing a 24-bit WAV.  The vocal is the examples/*.wav files tiled to length (mono,
44.1 kHz, 24-bit).  Reports the median of ``--runs``, plus one in-process breakdown of
where the time goes.  Target: under 3 s.  Prints a markdown row and writes
bench/results/render.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 3.0
SR = 44100


def make_vocal(path: Path, seconds: float) -> None:
    """The example vocals end to end, repeated until ``seconds`` long."""
    clips = [sf.read(f, dtype="float32", always_2d=True)[0].mean(axis=1) for f in sorted((ROOT / "examples").glob("*.wav"))]
    one_pass = np.concatenate(clips)
    n = int(seconds * SR)
    sf.write(path, np.tile(one_pass, n // one_pass.size + 1)[:n], SR, subtype="PCM_24")


def breakdown(source: Path, output: Path, model_name: str) -> dict[str, float]:
    """One fresh process doing what ``dmst render`` does, timed step by step, for locating the cost.

    "start-up" is Python plus every import; "exit" is the process's end after the
    file is written (``dmst`` leaves with ``os._exit``, skipping the module teardown).
    """
    code = f"""
import json, os, sys, time
t = {{}}; t0 = time.perf_counter()
import torch, dmst.cli as cli, dmst.encoder, dmst.audio_io as io
t["imports"] = time.perf_counter() - t0; t0 = time.perf_counter()
model = dmst.encoder.load_model({model_name!r})
t["model load"] = time.perf_counter() - t0; t0 = time.perf_counter()
audio, sr, _ = io.read_audio({str(source)!r})
t["read"] = time.perf_counter() - t0; t0 = time.perf_counter()
staging_db = cli._staging_db(audio, sr)
t["loudness (staging)"] = time.perf_counter() - t0; t0 = time.perf_counter()
params = model.predict(torch.from_numpy(audio), sr, staging_db=staging_db[0])
t["predict"] = time.perf_counter() - t0; t0 = time.perf_counter()
y = cli._render(audio, sr, params, staging_db)
t["render"] = time.perf_counter() - t0; t0 = time.perf_counter()
io.true_peak_dbfs(y, sr)
t["true peak"] = time.perf_counter() - t0; t0 = time.perf_counter()
io.write_audio({str(output)!r}, y, sr, bit_depth="24", force=True)
t["write"] = time.perf_counter() - t0
print(json.dumps(t)); sys.stdout.flush(); os._exit(0)
"""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    total = time.perf_counter() - start
    steps = json.loads(proc.stdout.strip().splitlines()[-1])
    steps["interpreter start + exit"] = total - sum(steps.values())
    return {k: round(v, 3) for k, v in steps.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="model passed to dmst render --model [default]")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=180.0, help="length of the test vocal [180]")
    args = p.parse_args(argv)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        source, output = Path(tmp) / "vocal_3min.wav", Path(tmp) / "mixed.wav"
        make_vocal(source, args.seconds)
        command = [sys.executable, "-m", "dmst.cli", "render", str(source), "-o", str(output), "--force",
                   "--model", args.model]
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                return proc.returncode
        assert sf.info(output).frames == int(args.seconds * SR)
        steps = breakdown(source, output, args.model)

    median = statistics.median(times)
    result = {
        "benchmark": "dmst render, whole process",
        "audio": f"{args.seconds:g} s mono 44.1 kHz 24-bit WAV (examples/*.wav tiled)",
        "runs_s": [round(t, 3) for t in times],
        "median_s": round(median, 3),
        "target_s": TARGET_S,
        "meets_target": median < TARGET_S,
        "in_process_breakdown_s": steps,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "model": args.model,
    }
    try:
        import torch

        result["machine"]["torch"] = torch.__version__.split("+")[0]
        result["machine"]["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    out = ROOT / "bench" / "results" / "render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print("| benchmark | audio | runs (s) | median (s) | target |")
    print("|---|---|---|---|---|")
    print(f"| `dmst render`, whole process | {args.seconds:g} s mono 44.1 kHz | "
          f"{', '.join(f'{t:.2f}' for t in times)} | **{median:.2f}** | < {TARGET_S:g} s "
          f"{'(met)' if median < TARGET_S else '(missed)'} |")
    print("\nin-process breakdown (s): " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    print(f"load average before/after: {result['machine']['load_average_before']} / "
          f"{result['machine']['load_average_after']} on {os.cpu_count()} cores")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
