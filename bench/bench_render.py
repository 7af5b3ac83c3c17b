"""How long ``dmst render`` takes for a 3-minute vocal, as a user runs it.

    python bench/bench_render.py [--case both|model|all-stages] [--model default] [--runs 3] [--seconds 180]

Each run is a whole new process (``python -m dmst.cli render IN -o OUT --force``):
Python start-up, imports, model load, prediction, rendering, the true-peak check and
writing a 24-bit WAV.  The vocal is the examples/*.wav files tiled to length (mono,
44.1 kHz, 24-bit).  Two cases:

* ``model``: the model's own mix (the bundled v3 model: stereo out, its reverb and de-esser on);
* ``all-stages``: ``--params`` with every stage active (the setting of
  ``tests/test_console_v3.py``: gate, de-esser, post-EQ, a delay and a reverb on sends,
  stereo out with the sends' tail, saturation; the limiter at -1 dBTP).

Reports the median of ``--runs`` per case, plus one in-process breakdown of where the
time goes.  Target: under 3 s.  Prints a markdown row per case and writes
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


def all_stages_settings(path: Path) -> None:
    """The settings file of the ``all-stages`` case: every v3 stage active, the limiter at -1 dBTP."""
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from test_console_v3 import SETTING

    from dmst import schema

    setting = dict(SETTING, **{"limiter.ceiling_dbtp": -1.0})
    path.write_text(schema.to_json(schema.nest(setting)) + "\n")


def breakdown(source: Path, output: Path, model_name: str, params: Path | None = None) -> dict[str, float]:
    """One fresh process doing what ``dmst render`` does, timed step by step, for locating the cost.

    "start-up" is Python plus every import; "exit" is the process's end after the
    file is written (``dmst`` leaves with ``os._exit``, skipping the module teardown).
    """
    code = f"""
import json, os, sys, time
t = {{}}; t0 = time.perf_counter()
import torch, dmst.cli as cli, dmst.encoder, dmst.audio_io as io, dmst.threads as threads
from dmst.effects._llvm import compile_render_kernels, use_cores_for_kernels
use_cores_for_kernels(); threads.reuse_freed_memory()  # as dmst render
compile_render_kernels()
t["imports"] = time.perf_counter() - t0; t0 = time.perf_counter()
params_file = {str(params) if params else None!r}
model = dmst.encoder.load_model({model_name!r}) if params_file is None else None
t["model load"] = time.perf_counter() - t0; t0 = time.perf_counter()
audio, sr, _ = io.read_audio({str(source)!r})
t["read"] = time.perf_counter() - t0; t0 = time.perf_counter()
staging_db = cli._staging_db(audio, sr)
t["loudness (staging)"] = time.perf_counter() - t0; t0 = time.perf_counter()
if params_file is None:
    params = model.predict(torch.from_numpy(audio), sr, staging_db=staging_db[0])
else:
    params = cli._read_params_file(params_file)
t["predict"] = time.perf_counter() - t0; t0 = time.perf_counter()
y = cli._render(audio, sr, params, staging_db)
t["render"] = time.perf_counter() - t0; t0 = time.perf_counter()
if params["limiter"]["ceiling_dbtp"] >= 0:  # with the limiter on (the model's or the file's), dmst render skips the check
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
    p.add_argument("--case", choices=("both", "model", "all-stages"), default="both")
    p.add_argument("--model", default="default", help="model passed to dmst render --model [default]")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=180.0, help="length of the test vocal [180]")
    args = p.parse_args(argv)

    cases = ("model", "all-stages") if args.case == "both" else (args.case,)
    load_before = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        source, output, settings = Path(tmp) / "vocal_3min.wav", Path(tmp) / "mixed.wav", Path(tmp) / "all_stages.json"
        make_vocal(source, args.seconds)
        all_stages_settings(settings)
        for case in cases:
            command = [sys.executable, "-m", "dmst.cli", "render", str(source), "-o", str(output), "--force"]
            command += ["--model", args.model] if case == "model" else ["--params", str(settings)]
            times, cpu = [], []
            for _ in range(args.runs):
                before = os.times()
                start = time.perf_counter()
                proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
                times.append(time.perf_counter() - start)
                after = os.times()
                cpu.append(after.children_user + after.children_system - before.children_user - before.children_system)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    return proc.returncode
            frames, channels = sf.info(output).frames, sf.info(output).channels
            assert frames >= int(args.seconds * SR)  # the sends' tail, when one is on
            steps = breakdown(source, output, args.model, settings if case == "all-stages" else None)
            results[case] = {"runs_s": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
                             "cpu_s": [round(c, 3) for c in cpu], "output_frames": frames, "output_channels": channels,
                             "meets_target": statistics.median(times) < TARGET_S, "in_process_breakdown_s": steps}

    result = {
        "benchmark": "dmst render, whole process",
        "audio": f"{args.seconds:g} s mono 44.1 kHz 24-bit WAV (examples/*.wav tiled)",
        "target_s": TARGET_S,
        "cases": results,
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
    except ImportError:
        pass
    out = ROOT / "bench" / "results" / "render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print("| case | audio | runs (s) | median (s) | CPU per run (s) | target |")
    print("|---|---|---|---|---|---|")
    for case, r in results.items():
        print(f"| {case} | {args.seconds:g} s mono 44.1 kHz -> {r['output_channels']} ch, {r['output_frames'] / SR:.1f} s | "
              f"{', '.join(f'{t:.2f}' for t in r['runs_s'])} | **{r['median_s']:.2f}** | "
              f"{', '.join(f'{c:.2f}' for c in r['cpu_s'])} | < {TARGET_S:g} s {'(met)' if r['meets_target'] else '(missed)'} |")
    for case, r in results.items():
        print(f"\n{case}, in-process breakdown (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["in_process_breakdown_s"].items()))
    print(f"load average before/after: {result['machine']['load_average_before']} / "
          f"{result['machine']['load_average_after']} on {os.cpu_count()} cores")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
