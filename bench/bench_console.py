"""Benchmark: the dmst console on long vocal files, against the same chain in pedalboard.

    python3 bench/bench_console.py            # both cases, prints a markdown table
    python3 bench/bench_console.py --quick    # 20 s / 40 s files, for a smoke test

Cases: a 3-minute mono 44.1 kHz vocal and a 10-minute stereo 48 kHz vocal, built by
tiling the voice recordings in ``examples/`` (and ``../shared/data/voices`` when it is
there).  Each (case, implementation) runs in its own child process, so its peak
memory (``VmHWM``, the peak resident set size, input audio and libraries included)
is its own.  Inside a child:

* one render of a 1 s clip (first call: includes compiling the render loops
  and building the resampling kernels), then a second render of the same clip;
  their difference is reported as the first-call cost;
* the timed render of the whole file under ``torch.no_grad()`` (best of
  ``--repeats`` for the short case), giving wall time and real-time factor;
* for dmst, afterwards, one more pass timed stage by stage (staging, EQ,
  compressor, saturation, output loudness).

"dmst, every stage on" (3-minute case; ``--all-stages-only`` runs just it) renders the
setting of ``tests/test_console_v3.py`` with the limiter at -1 dBTP as ``dmst render``
does: stereo out with the sends' tail, torch on one thread and the compiled loops and the
sends' FFT blocks on the cores (``dmst.effects._llvm.use_cores_for_kernels``), freed memory
kept for reuse (``dmst.threads.reuse_freed_memory``).  Target:
at least 200x real time.

dmst runs twice per case: with the libraries' default thread pools (torch intra-op
threads = cores) and pinned to one thread.  On a
small shared machine the single-threaded run is often faster and always steadier:
OpenMP pools spin against other processes.

pedalboard (GPL, an optional bench-only dependency) runs HighpassFilter,
LowShelfFilter, 3 x PeakFilter, HighShelfFilter, LowpassFilter, Compressor,
Distortion and Gain with the same settings as far as its plugins allow (its high-
and low-pass are first order, its compressor has no knee or make-up, its distortion
no asymmetry, mix or oversampling; it has no loudness staging at either end).

Results: a markdown table on stdout and ``bench/results/console.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "console.json"

# A typical vocal setting, physical units (see dmst.schema).
TYPICAL = {
    "eq.high_pass_freq_hz": 90.0, "eq.low_shelf_freq_hz": 180.0, "eq.low_shelf_gain_db": -2.5,
    "eq.low_mid_freq_hz": 350.0, "eq.low_mid_gain_db": -3.0, "eq.low_mid_q": 1.4,
    "eq.mid_freq_hz": 1800.0, "eq.mid_gain_db": 1.5, "eq.mid_q": 0.9,
    "eq.presence_freq_hz": 5000.0, "eq.presence_gain_db": 3.0, "eq.presence_q": 1.2,
    "eq.high_shelf_freq_hz": 10000.0, "eq.high_shelf_gain_db": 2.5, "eq.low_pass_freq_hz": 18000.0,
    "compressor.threshold_db": -20.0, "compressor.ratio": 3.0, "compressor.knee_db": 6.0,
    "compressor.attack_ms": 5.0, "compressor.release_ms": 120.0, "compressor.makeup_gain_db": 3.0,
    "saturation.drive_db": 6.0, "saturation.asymmetry": 0.2, "saturation.mix": 0.5,
    "output.loudness_lufs": -16.0,
}


def _migrated(flat_v2: dict) -> dict:
    """The v2 chain above with the v3 stages as a migrated v2 file has them (neutral, the limiter
    off), so the comparison with pedalboard's chain of the same effects stays like for like."""
    from dmst import schema

    nested: dict = {}
    for key, value in flat_v2.items():
        group, name = key.split(".", 1)
        nested.setdefault(group, {})[name] = value
    return schema.flatten(schema.migrate(nested, 2))


TYPICAL = _migrated(TYPICAL)

CASES = {
    "3 min mono 44.1 kHz": dict(seconds=180.0, channels=1, sample_rate=44100),
    "10 min stereo 48 kHz": dict(seconds=600.0, channels=2, sample_rate=48000),
}


# ---------------------------------------------------------------------------
# test material
# ---------------------------------------------------------------------------

def _voice_files() -> list[Path]:
    files = sorted((ROOT / "examples").glob("*.wav"))
    shared = ROOT.parent / "shared" / "data" / "voices"
    if shared.is_dir():
        files += sorted(shared.rglob("*.flac"))
    return files


def build_material(seconds: float, channels: int, sample_rate: int, path: Path) -> None:
    """Concatenate the voice files (resampled to ``sample_rate``) and tile them to ``seconds``; save as .npy."""
    import soundfile as sf
    from scipy.signal import resample_poly

    n = int(round(seconds * sample_rate))
    pieces, total = [], 0
    for f in _voice_files():
        x, sr = sf.read(f, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if sr != sample_rate:
            g = np.gcd(sr, sample_rate)
            x = resample_poly(x, sample_rate // g, sr // g).astype(np.float32)
        pieces.append(x)
        total += x.size
        if total >= n + 10 * sample_rate:
            break
    mono = np.concatenate(pieces)
    mono = np.tile(mono, int(np.ceil(n / mono.size)) + 1)
    if channels == 1:
        audio = mono[None, :n]
    else:  # a second, different take on the right: the same material shifted by 7.3 s, 3 dB down
        shift = int(7.3 * sample_rate)
        audio = np.stack([mono[:n], 0.7 * mono[shift: shift + n]])
    np.save(path, np.ascontiguousarray(audio, dtype=np.float32))


# ---------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------

def _vm(field: str) -> float:
    """A /proc/self/status memory field (VmHWM, VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _dmst_renderer(sample_rate: int):
    import torch

    from dmst.console import render

    params = {k: torch.tensor([v]) for k, v in TYPICAL.items()}

    def run(x: np.ndarray):
        with torch.no_grad():
            return render(torch.from_numpy(x)[None], sample_rate, params)[0]

    return run


def _dmst_stages(x: np.ndarray, sample_rate: int) -> dict[str, float]:
    import torch

    from dmst.console import group
    from dmst.effects import compressor, gain, loudness_normalize, parametric_eq, saturation, staging_gain_db

    params = {k: torch.tensor([v]) for k, v in TYPICAL.items()}
    times = {}
    with torch.no_grad():
        t = time.perf_counter()
        y = torch.from_numpy(x)[None]
        staging = staging_gain_db(y, sample_rate)
        y = gain(y, staging)
        times["staging (BS.1770)"] = time.perf_counter() - t
        for name, fn in (
            ("eq", lambda v: parametric_eq(v, sample_rate, **group(params, "eq"))),
            ("compressor", lambda v: compressor(v, sample_rate, **group(params, "compressor"))),
            ("saturation", lambda v: saturation(v, sample_rate, **group(params, "saturation"))),
            ("output loudness (BS.1770)", lambda v: loudness_normalize(v, sample_rate, params["output.loudness_lufs"])),
        ):
            t = time.perf_counter()
            y = fn(y)
            times[name] = time.perf_counter() - t
    return times


def _all_stages() -> dict:
    """Every v3 stage active (the setting of tests/test_console_v3.py), the limiter at -1 dBTP."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_console_v3 import SETTING

    return dict(SETTING, **{"limiter.ceiling_dbtp": -1.0})


def _dmst_all_renderer(sample_rate: int):
    """The console as ``dmst render`` runs it with every stage on: stereo out, with the sends' tail."""
    import torch

    from dmst.console import render

    params = {k: torch.tensor([v]) for k, v in _all_stages().items()}

    def run(x: np.ndarray):
        with torch.no_grad():
            return render(torch.from_numpy(x)[None], sample_rate, params, output_channels=2, tail=True)[0]

    return run


def _dmst_all_stages(x: np.ndarray, sample_rate: int) -> dict[str, float]:
    import torch

    from dmst.console import _with_sends, group
    from dmst.effects import compressor, gain, loudness_normalize, parametric_eq, saturation, staging_gain_db
    from dmst.effects.deesser import deesser
    from dmst.effects.gate import gate
    from dmst.effects.limiter import limiter
    from dmst.effects.post_eq import post_eq

    params = {k: torch.tensor([v]) for k, v in _all_stages().items()}
    stages = (
        ("gate", lambda v: gate(v, sample_rate, **group(params, "gate"))),
        ("eq", lambda v: parametric_eq(v, sample_rate, **group(params, "eq"))),
        ("compressor", lambda v: compressor(v, sample_rate, **group(params, "compressor"))),
        ("de-esser", lambda v: deesser(v, sample_rate, **group(params, "deesser"))),
        ("post EQ", lambda v: post_eq(v, sample_rate, **group(params, "post_eq"))),
        ("saturation", lambda v: saturation(v, sample_rate, **group(params, "saturation"))),
        ("sends (with tail)", lambda v: _with_sends(v, sample_rate, group(params, "delay"), group(params, "reverb"), 2, True)),
        ("output loudness (BS.1770)", lambda v: loudness_normalize(v, sample_rate, params["output.loudness_lufs"])),
        ("limiter", lambda v: limiter(v, sample_rate, **group(params, "limiter"))),
    )
    times = {}
    with torch.no_grad():
        t = time.perf_counter()
        y = torch.from_numpy(x)[None]
        y = gain(y, staging_gain_db(y, sample_rate))
        times["staging (BS.1770)"] = time.perf_counter() - t
        for name, fn in stages:
            t = time.perf_counter()
            y = fn(y)
            times[name] = time.perf_counter() - t
    return times


def _pedalboard_renderer(sample_rate: int):
    import pedalboard as pb

    p = TYPICAL
    board = pb.Pedalboard([
        pb.HighpassFilter(cutoff_frequency_hz=p["eq.high_pass_freq_hz"]),
        pb.LowShelfFilter(cutoff_frequency_hz=p["eq.low_shelf_freq_hz"], gain_db=p["eq.low_shelf_gain_db"]),
        pb.PeakFilter(cutoff_frequency_hz=p["eq.low_mid_freq_hz"], gain_db=p["eq.low_mid_gain_db"], q=p["eq.low_mid_q"]),
        pb.PeakFilter(cutoff_frequency_hz=p["eq.mid_freq_hz"], gain_db=p["eq.mid_gain_db"], q=p["eq.mid_q"]),
        pb.PeakFilter(cutoff_frequency_hz=p["eq.presence_freq_hz"], gain_db=p["eq.presence_gain_db"], q=p["eq.presence_q"]),
        pb.HighShelfFilter(cutoff_frequency_hz=p["eq.high_shelf_freq_hz"], gain_db=p["eq.high_shelf_gain_db"]),
        pb.LowpassFilter(cutoff_frequency_hz=p["eq.low_pass_freq_hz"]),
        pb.Compressor(threshold_db=p["compressor.threshold_db"], ratio=p["compressor.ratio"],
                      attack_ms=p["compressor.attack_ms"], release_ms=p["compressor.release_ms"]),
        pb.Gain(gain_db=p["compressor.makeup_gain_db"]),
        pb.Distortion(drive_db=p["saturation.drive_db"]),
        # no loudness stage: pedalboard has no meter, so its chain ends with the saturation
    ])

    def run(x: np.ndarray):
        return board(x, sample_rate, reset=True)

    return run


def child(impl: str, path: str, sample_rate: int, repeats: int, threads: int) -> dict:
    if impl == "dmst-all":  # threads and memory as dmst render sets them: torch on one, the compiled loops on the cores
        from dmst.threads import reuse_freed_memory
        from dmst.effects._llvm import use_cores_for_kernels

        use_cores_for_kernels(threads if threads > 0 else None)
        reuse_freed_memory()
    elif threads > 0:
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    run = {"dmst": _dmst_renderer, "dmst-all": _dmst_all_renderer}.get(impl, _pedalboard_renderer)(sample_rate)
    import_s = time.perf_counter() - t0
    x = np.load(path)
    clip = np.ascontiguousarray(x[:, :sample_rate])
    t = time.perf_counter()
    run(clip)
    first_call_s = time.perf_counter() - t
    t = time.perf_counter()
    run(clip)
    second_call_s = time.perf_counter() - t
    rss_before_mib = _vm("VmRSS")
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        y = run(x)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)  # all of the process's threads: steadier than wall time on a busy machine
        assert (y.shape[-1] > x.shape[-1] if impl == "dmst-all" else y.shape == x.shape) and np.isfinite(np.asarray(y)).all()
        del y
    out = {
        "impl": impl, "threads": threads if threads > 0 else "default",
        "samples": x.shape[-1], "channels": x.shape[0], "sample_rate": sample_rate,
        "duration_s": x.shape[-1] / sample_rate,
        "import_s": import_s,
        "first_call_1s_clip_s": first_call_s, "second_call_1s_clip_s": second_call_s,
        "first_call_cost_s": first_call_s - second_call_s,
        "render_times_s": times, "wall_s": min(times), "render_cpu_s": cpu,
        "rss_before_render_mib": rss_before_mib,
        "peak_rss_mib": _vm("VmHWM"),
        "input_mib": x.nbytes / 2**20,
    }
    out["realtime_factor"] = out["duration_s"] / out["wall_s"]
    if impl == "dmst":
        out["stages_s"] = _dmst_stages(x, sample_rate)
    elif impl == "dmst-all":
        out["all_stages_s"] = _dmst_all_stages(x, sample_rate)
    return out


# ---------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------

def run_child(impl: str, path: Path, sample_rate: int, repeats: int, threads: int = 0) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, str(path), str(sample_rate), str(repeats),
           str(threads)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 s and 40 s files instead of 3 and 10 minutes")
    ap.add_argument("--repeats", type=int, default=3, help="timed renders per case (best is reported; 2 for the long case)")
    ap.add_argument("--no-pedalboard", action="store_true")
    ap.add_argument("--all-stages-only", action="store_true",
                    help="only the 3-minute file with every stage on, threads as dmst render sets them (target >= 200x)")
    ap.add_argument("--child", nargs=5, metavar=("IMPL", "PATH", "SR", "REPEATS", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, path, sr, repeats, threads = args.child
        print(json.dumps(child(impl, path, int(sr), int(repeats), int(threads))))
        return

    # (label, implementation, threads: 0 = library default)
    runs = [("dmst", "dmst", 0), ("dmst 1 thread", "dmst", 1)] + ([] if args.no_pedalboard else [("pedalboard", "pedalboard", 0)])
    all_stages = ("dmst, every stage on", "dmst-all", 0)  # the 3-minute case only
    cases = dict(CASES)
    if args.all_stages_only:
        runs, cases = [], {k: v for k, v in CASES.items() if v["seconds"] < 300}
    results = {"cases": {}, "settings": TYPICAL, "machine": {
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }}
    import torch

    results["machine"]["torch"] = torch.__version__
    results["machine"]["torch_threads"] = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="dmst_bench_") as tmp:
        for name, case in cases.items():
            seconds = case["seconds"] / (9 if args.quick else 1)
            path = Path(tmp) / "audio.npy"
            t = time.perf_counter()
            build_material(seconds, case["channels"], case["sample_rate"], path)
            print(f"[{name}] material built in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            repeats = args.repeats if case["seconds"] < 300 else min(args.repeats, 2)
            results["cases"][name] = {}
            for label, impl, threads in runs + ([all_stages] if case["seconds"] < 300 else []):
                r = run_child(impl, path, case["sample_rate"], repeats, threads)
                results["cases"][name][label] = r
                print(f"[{name}] {label}: {r['wall_s']:.2f} s, {r['realtime_factor']:.0f}x real time, "
                      f"peak {r['peak_rss_mib']:.0f} MiB", file=sys.stderr)
            path.unlink()
    results["machine"]["load_average_at_end"] = os.getloadavg()

    lines = [
        "| case | implementation | render wall s (best) | all runs s | CPU s per run | x real time | first-call (JIT) cost s "
        "| peak RSS MiB | RSS before render MiB | time / pedalboard time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per in results["cases"].items():
        for label, r in per.items():
            ratio = ""
            if r["impl"] == "dmst" and "pedalboard" in per:
                ratio = f"{r['wall_s'] / per['pedalboard']['wall_s']:.1f}x"
            runs_s = ", ".join(f"{t:.2f}" for t in r["render_times_s"])
            cpu_s = ", ".join(f"{t:.2f}" for t in r.get("render_cpu_s", []))
            lines.append(f"| {name} | {label} | {r['wall_s']:.2f} | {runs_s} | {cpu_s} | {r['realtime_factor']:.0f} | "
                         f"{r['first_call_cost_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['rss_before_render_mib']:.0f} | {ratio} |")
    for key, title in (("stages_s", "dmst stage by stage (one pass):"), ("all_stages_s", "every stage on, stage by stage (one pass):")):
        timed = [(name, label, r[key]) for name, per in results["cases"].items() for label, r in per.items() if key in r]
        if not timed:
            continue
        stage_names = list(timed[0][2])
        lines += ["", title, "", "| case | implementation | " + " | ".join(stage_names) + " |",
                  "|---|---|" + "---|" * len(stage_names)]
        for name, label, stages in timed:
            lines.append(f"| {name} | {label} | " + " | ".join(f"{v:.2f} s" for v in stages.values()) + " |")
    table = "\n".join(lines)
    results["table_markdown"] = table
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    print(f"\nwritten: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
