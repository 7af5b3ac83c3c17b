"""Training data at catalogue size: peak memory of ``dmst train`` and pair-checking time.

    python bench/bench_data.py [--pairs 20 200] [--seconds 210] [--workdir DIR] [--keep] [--check-only]

Writes a catalogue of 3.5-minute takes (bench/_takes.py: raw mono 44.1 kHz, mix stereo
with a 2 s echo tail, both 16-bit WAV, from shared/data/voices), then for each size runs
``train.py --data D --out RUN --epochs 1 --quiet`` as a new process (its defaults: two
checking workers, torch's own thread count for training) and samples, every 0.1 s, the
resident memory (VmRSS in /proc) of the training process and of its checking workers.
A second run on the same data with ``--cache-dir`` of the first shows what the cache
saves.  ``--check-only`` ends each run once its pairs are checked: the checking phase alone,
where the whole tree peaks (the training process and its two workers), in a few minutes.  Reports peak RSS of the training process, of the largest worker, of the whole
process tree, the checking time train.py prints, and the wall time.  The catalogue
(about 57 MB a pair) and the cache (about 85 MB a pair) are deleted at the end unless
``--keep``.  Writes bench/results/data.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _takes import write_catalogue  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def run_measured(command: list[str], check_only: bool = False) -> dict:
    """Run ``command``; sample the RSS of it and its descendants every 0.1 s.  ``check_only``: end it
    (SIGTERM) once it prints that its pairs are checked, before training."""
    t = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"main": 0.0, "worker": 0.0, "tree": 0.0, "main_while_checking": 0.0}
    output = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    cpu = 0.0
    while proc.poll() is None:
        main = rss_mb(proc.pid)
        stack, workers = children(proc.pid), []
        while stack:
            c = stack.pop()
            workers.append(rss_mb(c))
            stack += children(c)
        cpu = max(cpu, cpu_s(proc.pid))
        peak["main"] = max(peak["main"], main)
        peak["worker"] = max([peak["worker"], *workers])
        peak["tree"] = max(peak["tree"], main + sum(workers))
        if workers:
            peak["main_while_checking"] = max(peak["main_while_checking"], main)
        checked = any("pairs checked in" in line for line in output[-20:])
        if check_only and checked:
            proc.terminate()
            proc.wait()
            break
        time.sleep(0.1)
    reader.join()
    text = "".join(output)
    if proc.returncode != 0 and not check_only:
        raise SystemExit(f"{' '.join(command)} failed:\n{text[-3000:]}")
    checked = re.search(r"pairs checked in ([\d.]+) s", text)
    return {"peak_rss_train_mb": round(peak["main"]), "peak_rss_worker_mb": round(peak["worker"]),
            "peak_rss_tree_mb": round(peak["tree"]), "peak_rss_train_while_checking_mb": round(peak["main_while_checking"]),
            "check_s": float(checked.group(1)) if checked else None, "cpu_s_children": round(cpu, 1),
            "wall_s": round(time.perf_counter() - t, 1), "load_average": round(os.getloadavg()[0], 1),
            "report_tail": text.strip().splitlines()[-4:]}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid``'s finished children (its checking workers, once they end) and itself."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(v) for v in f[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, nargs="+", default=[20, 200])
    p.add_argument("--seconds", type=float, default=210.0)
    p.add_argument("--workdir", default="/tmp/dmst_bench_data")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--cached-run-max", type=int, default=20, help="repeat the run on the filled cache for sizes up to this")
    p.add_argument("--check-only", action="store_true", help="measure the checking phase only: end each run once "
                   "its pairs are checked (the whole tree peaks there; the training step's peak is not measured)")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    full = work / "all"
    results = []
    try:
        have = len(list((full / "raw").glob("*.wav"))) if full.exists() else 0
        if have < max(args.pairs):
            t = time.perf_counter()
            write_catalogue(full, max(args.pairs) - have, args.seconds, start_seed=have)
            print(f"wrote {max(args.pairs) - have} pairs in {time.perf_counter() - t:.0f} s", flush=True)
        for n in sorted(args.pairs):
            data = work / f"data{n}"
            shutil.rmtree(data, ignore_errors=True)
            for sub in ("raw", "mixed"):
                (data / sub).mkdir(parents=True)
                for f in sorted((full / sub).glob("*.wav"))[:n]:
                    (data / sub / f.name).symlink_to(f)
            run = work / f"run{n}"
            shutil.rmtree(run, ignore_errors=True)
            command = [sys.executable, "train.py", "--data", str(data), "--out", str(run), "--epochs", "1", "--quiet"]
            first = run_measured(command, args.check_only)
            row = {"pairs": n, "seconds_per_take": args.seconds, "first_run": first}
            if n <= args.cached_run_max and not args.check_only:
                row["cached_run"] = run_measured(command[:-3] + ["--out", str(work / f"again{n}"), "--cache-dir",
                                                                 str(run / "cache"), "--epochs", "1", "--quiet"])
            print(json.dumps(row, indent=2), flush=True)
            results.append(row)
            shutil.rmtree(run / "cache", ignore_errors=True)  # the cache is large; keep the disk free for the next size
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        slope = (b["first_run"]["peak_rss_train_mb"] - a["first_run"]["peak_rss_train_mb"]) / (b["pairs"] - a["pairs"])
        print(f"training process: {slope:+.2f} MB per extra pair")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
