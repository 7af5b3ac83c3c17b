"""Benchmark: dmst serve, in process and under load.

    python3 bench/bench_serve.py                  # both parts (about 3 minutes)
    python3 bench/bench_serve.py --part latency   # (a) only
    python3 bench/bench_serve.py --part load      # (b) only

(a) In-process latency.  ``create_app`` runs under uvicorn on a thread of this process
    (127.0.0.1, a free port); an httpx client POSTs a 3-minute mono 44.1 kHz vocal (24-bit
    WAV, built by tiling the voices of ``examples/`` as bench_console.py does) to /v1/mix,
    one request at a time: p50/p95 over ``--requests``.  Two settings sources: the
    bench_console "typical" chain sent as ``params`` (the same chain pedalboard renders),
    and the model's prediction plus a preset.  Throughput: renders per minute with as many
    concurrent clients as render threads.  Next to it, in the same process, pedalboard's
    render of the same chain (bench_console's), timed the same way (render only: no
    upload, decoding or file writing, which the HTTP numbers include).
(b) Load.  ``dmst serve`` in a child process; 20 client threads send 30-second vocals
    (each client its own excerpt and length, each request its own amount and file name)
    for ``--seconds`` (at least 500 requests).  Checks: no 5xx, every response is the mix of
    its own request (the settings header names its file and amount, the frame count is the
    request's), and the server's RSS across the run.  Reports p50/p95.

Results: printed as markdown and written to ``bench/results/serve.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
RESULTS = ROOT / "bench" / "results" / "serve.json"

from bench_console import TYPICAL, _pedalboard_renderer, build_material  # noqa: E402


def wav_bytes(audio: np.ndarray, sr: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio.T, sr, format="WAV", subtype="PCM_24")
    return buf.getvalue()


def percentile(xs, q):
    return float(np.percentile(np.asarray(xs), q))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vocal(seconds: float, sr: int = 44100) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        build_material(seconds, 1, sr, path)
        return np.load(path)


# ---------------------------------------------------------------------------
# (a) in process
# ---------------------------------------------------------------------------

def latency(requests: int, data_dir: Path) -> dict:
    import httpx
    import uvicorn

    from dmst import schema
    from dmst.serve.app import create_app
    from dmst.serve.settings import ServeSettings

    sr = 44100
    x = vocal(180.0, sr)
    body = wav_bytes(x, sr)
    settings = ServeSettings(data_dir=data_dir, port=free_port())
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    while not server.started:
        time.sleep(0.05)
    typical = json.dumps(schema.nest(TYPICAL))
    out = {"input": "3 min mono 44.1 kHz, 24-bit WAV", "upload_mib": len(body) / 2**20,
           "render_threads": settings.render_threads}
    with httpx.Client(base_url=url, timeout=120) as c:
        def post(data):
            t = time.perf_counter()
            r = c.post("/v1/mix", files={"audio": ("vocal.wav", body, "audio/wav")}, data=data)
            assert r.status_code == 200, r.text
            return time.perf_counter() - t

        post({"params": typical})  # warm-up: first request, caches
        for name, data in (("params (typical chain)", {"params": typical}),
                           ("prediction (default model)", {}),
                           ("prediction + preset smooth (adds a reverb send)", {"preset": "smooth"})):
            times = [post(data) for _ in range(requests)]
            out[name] = {"p50_s": percentile(times, 50), "p95_s": percentile(times, 95), "n": len(times)}

        # throughput: as many clients as render threads, for a fixed number of renders
        n = max(8, requests)
        done = []

        def client_loop(k):
            with httpx.Client(base_url=url, timeout=120) as cc:
                while len(done) < n:
                    r = cc.post("/v1/mix", files={"audio": ("vocal.wav", body, "audio/wav")}, data={"params": typical})
                    assert r.status_code == 200
                    done.append(1)

        t = time.perf_counter()
        workers = [threading.Thread(target=client_loop, args=(k,)) for k in range(settings.render_threads)]
        [w.start() for w in workers]
        [w.join() for w in workers]
        elapsed = time.perf_counter() - t
        out["throughput_renders_per_min"] = len(done) / elapsed * 60
    server.should_exit = True
    thread.join(10)

    # pedalboard, same chain, same process
    render = _pedalboard_renderer(sr)
    render(np.ascontiguousarray(x[:, :sr]))
    times = []
    for _ in range(requests):
        t = time.perf_counter()
        render(x)
        times.append(time.perf_counter() - t)
    out["pedalboard render (same chain, no I/O)"] = {"p50_s": percentile(times, 50), "p95_s": percentile(times, 95),
                                                     "n": len(times),
                                                     "renders_per_min_1_thread": 60 / statistics.median(times)}
    return out


# ---------------------------------------------------------------------------
# (b) load
# ---------------------------------------------------------------------------

def rss_mib(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return (proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))) / 2**20


def load(clients: int, seconds: float, min_requests: int, data_dir: Path) -> dict:
    import httpx
    import soundfile as sf

    sr = 44100
    material = vocal(30.0 + clients * 2.0, sr)
    bodies = []
    for k in range(clients):  # each client: its own excerpt, its own length (30 s + k x 10 ms)
        start = k * sr
        frames = 30 * sr + k * 441
        bodies.append((frames, wav_bytes(material[:, start:start + frames], sr)))

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(data_dir.parent / "load-server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "dmst", "serve", "--port", str(port), "--data-dir", str(data_dir),
                             "--log-level", "warning", "--max-pending", str(2 * clients), "--torch-threads", "1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)

    amounts = [round(a, 2) for a in np.linspace(0.05, 2.0, 40)]
    lock = threading.Lock()
    latencies, statuses, mismatches, rss = [], {}, [], []
    count = [0]
    stop_at = time.monotonic() + seconds

    def client(k: int):
        frames, body = bodies[k]
        i = 0
        with httpx.Client(base_url=url, timeout=300) as c:
            while time.monotonic() < stop_at or count[0] < min_requests:
                name = f"client{k:02d}_req{i:04d}.wav"
                amount = amounts[(k * 7 + i) % len(amounts)]
                t = time.perf_counter()
                r = c.post("/v1/mix", files={"audio": (name, body, "audio/wav")},
                           data={"preset": "warm", "amount": str(amount), "bit_depth": "16"})
                dt = time.perf_counter() - t
                ok = r.status_code == 200
                if ok:
                    meta = json.loads(r.headers["x-dmst-settings"])["meta"]
                    got_frames = sf.info(io.BytesIO(r.content)).frames
                    if meta["source"] != name or meta["amount"] != amount or got_frames != frames:
                        with lock:
                            mismatches.append((name, meta, got_frames))
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    latencies.append(dt)
                    count[0] += 1
                i += 1

    def monitor():
        while proc.poll() is None and (time.monotonic() < stop_at or count[0] < min_requests):
            rss.append((count[0], rss_mib(proc.pid)))
            time.sleep(1.0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    mon = threading.Thread(target=monitor)
    mon.start()
    [t.start() for t in threads]
    [t.join() for t in threads]
    elapsed = time.perf_counter() - t0
    mon.join()
    rss.append((count[0], rss_mib(proc.pid)))
    proc.terminate()
    proc.wait(30)
    log.close()

    # memory: after the first 100 requests (warm caches), against the end of the run
    warm = [m for n, m in rss if n >= 100] or [m for _, m in rss]
    return {
        "clients": clients, "requests": count[0], "seconds": elapsed, "statuses": statuses,
        "server_errors": sum(v for s, v in statuses.items() if s >= 500), "mismatched_responses": len(mismatches),
        "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
        "renders_per_min": count[0] / elapsed * 60,
        "rss_mib_after_100_requests": warm[0], "rss_mib_end": warm[-1], "rss_mib_max": max(warm),
        "rss_samples": rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("latency", "load", "both"), default="both")
    ap.add_argument("--requests", type=int, default=20, help="(a) requests per setting")
    ap.add_argument("--clients", type=int, default=20, help="(b) concurrent clients")
    ap.add_argument("--seconds", type=float, default=60.0, help="(b) at least this long")
    ap.add_argument("--min-requests", type=int, default=500, help="(b) and at least this many requests")
    args = ap.parse_args()
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("latency", "both"):
            result["latency"] = latency(args.requests, Path(tmp) / "a")
            a = result["latency"]
            print("| /v1/mix, 3 min mono vocal | p50 s | p95 s |\n|---|---|---|")
            for k, v in a.items():
                if isinstance(v, dict) and "p50_s" in v:
                    print(f"| {k} | {v['p50_s']:.3f} | {v['p95_s']:.3f} |")
            print(f"\nthroughput: {a['throughput_renders_per_min']:.0f} renders/min over HTTP "
                  f"({a['render_threads']} clients); pedalboard "
                  f"{a['pedalboard render (same chain, no I/O)']['renders_per_min_1_thread']:.0f} renders/min (1 thread)\n")
        if args.part in ("load", "both"):
            result["load"] = load(args.clients, args.seconds, args.min_requests, Path(tmp) / "b")
            b = result["load"]
            print(f"load: {b['clients']} clients, {b['requests']} requests in {b['seconds']:.0f} s "
                  f"({b['renders_per_min']:.0f}/min); statuses {b['statuses']}; mismatched {b['mismatched_responses']}; "
                  f"p50 {b['p50_s']:.2f} s, p95 {b['p95_s']:.2f} s; server RSS {b['rss_mib_after_100_requests']:.0f} MiB "
                  f"after 100 requests, {b['rss_mib_end']:.0f} MiB at the end (max {b['rss_mib_max']:.0f})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
