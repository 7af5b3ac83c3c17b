"""dmst serve against a real server on 127.0.0.1 (a child process at a free port), with httpx.

Covers every route; /v1/mix gives the bytes of `dmst render`; /v1/params gives the JSON of
`dmst params` and round-trips through /v1/mix; jobs survive a kill and a restart; a fine-tune
job makes a model /v1/mix then uses by name; every bad request gets a 4xx JSON error and
leaves nothing behind; the render pool answers 503 with Retry-After instead of queueing.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from _serve_server import ENV, ROOT, Server  # noqa: E402
from dmst import schema  # noqa: E402

EXAMPLE = ROOT / "examples" / "and_its_all.wav"
KEY = "test-key-0123456789"


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The main test server: small upload limit (5 MB) and zip limits so the limit tests stay fast."""
    s = Server(tmp_path_factory.mktemp("serve") / "data", "--max-upload-mb", "5", "--job-lease-s", "3",
               "--torch-threads", "1")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def vocal_bytes():
    return EXAMPLE.read_bytes()


def wav_bytes(audio: np.ndarray, sr: int = 44100, subtype: str = "PCM_24") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmst", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          check=True)


def files_under(folder: Path) -> set[str]:
    """Every file in the data folder, the SQLite files aside (their pages change on reads)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "jobs.sqlite3" not in p.name}


def job_count(server) -> int:
    from dmst.serve.store import JobStore

    return len(JobStore(server.data_dir / "jobs.sqlite3").all())


def wait_for_job(client, job_id: str, states=("succeeded", "failed"), timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = client.get(f"/v1/jobs/{job_id}").json()
        if info["state"] in states:
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.2)


# ---------------------------------------------------------------------------
# the routes
# ---------------------------------------------------------------------------

def test_health_names_model_schema_and_versions(client):
    from dmst import schema

    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "default" and h["schema_version"] == schema.SCHEMA_VERSION
    assert {"dmst", "torch", "torchaudio", "numpy", "fastapi"} <= set(h["versions"])


def test_presets_and_models_list(client):
    from dmst.presets import load_presets

    presets = client.get("/v1/presets").json()
    assert [p["name"] for p in presets] == list(load_presets())
    smooth = next(p for p in presets if p["name"] == "smooth")
    assert "compressor.ratio x0.75" in smooth["changes"]
    assert client.get("/v1/models").json()[0]["name"] == "default"


def test_schema_route_is_the_parameter_table(client):
    from dmst import schema

    doc = client.get("/v1/schema").json()
    assert [p["key"] for p in doc["params"]] == list(schema.KEYS)
    assert doc["params"][0]["minimum"] == schema.SCHEMA[0].minimum


def test_page_docs_and_openapi_are_served(client):
    assert "<html" in client.get("/").text.lower()
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower()  # works offline: Swagger UI comes from the server itself
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in docs.text and client.get(asset).status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/health", "/v1/presets", "/v1/models", "/v1/params", "/v1/mix", "/v1/jobs", "/v1/jobs/{job_id}",
                 "/v1/jobs/{job_id}/result", "/v1/curves"):
        assert path in spec["paths"], path
    assert "delete" in spec["paths"]["/v1/jobs/{job_id}"]
    ids = [op["operationId"] for methods in spec["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids)) and {"mix", "params", "create_job", "job_status", "job_result"} <= set(ids)


def test_params_is_the_json_of_dmst_params(client, vocal_bytes):
    r = client.post("/v1/params", files={"audio": (EXAMPLE.name, vocal_bytes, "audio/wav")},
                    data={"preset": ["warm", "bright"], "amount": "0.5"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    expected = cli("params", EXAMPLE, "--preset", "warm", "--preset", "bright", "--amount", "0.5").stdout.decode()
    assert r.text == expected


@pytest.mark.parametrize("fmt, bit_depth", [("wav", "24"), ("flac", "16")])
def test_mix_returns_the_bytes_of_dmst_render(client, vocal_bytes, tmp_path, fmt, bit_depth):
    r = client.post("/v1/mix", files={"audio": (EXAMPLE.name, vocal_bytes, "audio/wav")},
                    data={"preset": "smooth", "amount": "0.7", "format": fmt, "bit_depth": bit_depth})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == f"audio/{fmt}"
    out = tmp_path / f"cli.{fmt}"
    saved = tmp_path / "saved.json"
    cli("render", EXAMPLE, "--preset", "smooth", "--amount", "0.7", "--format", fmt, "--bit-depth", bit_depth,
        "-o", out, "--save-params", saved)
    assert r.content == out.read_bytes()
    header = json.loads(r.headers["x-dmst-settings"])
    assert {k: v for k, v in header.items() if k != "meta"} == \
        {k: v for k, v in json.loads(saved.read_text()).items() if k != "meta"}
    assert header["meta"]["presets"] == ["smooth"] and header["meta"]["amount"] == 0.7


def test_settings_round_trip_params_edit_mix(client, vocal_bytes, tmp_path):
    """/v1/params, change one value, /v1/mix with those params: rendered exactly as `dmst render --params`."""
    doc = client.post("/v1/params", files={"audio": (EXAMPLE.name, vocal_bytes)}, data={"preset": "punchy"}).json()
    doc["compressor"]["attack_ms"] = 25.0
    doc["eq"]["presence_gain_db"] = -3.5
    r = client.post("/v1/mix", files={"audio": (EXAMPLE.name, vocal_bytes)}, data={"params": json.dumps(doc)})
    assert r.status_code == 200, r.text
    used = json.loads(r.headers["x-dmst-settings"])
    assert used["compressor"]["attack_ms"] == 25.0 and used["eq"]["presence_gain_db"] == -3.5
    assert {g: used[g] for g in ("eq", "compressor", "saturation", "output")} == \
        {g: doc[g] for g in ("eq", "compressor", "saturation", "output")}
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    out = tmp_path / "cli.wav"
    cli("render", EXAMPLE, "--params", edited, "-o", out)
    assert r.content == out.read_bytes()


def _rbj_peaking(f0: float, gain_db: float, q: float, fs: float) -> np.ndarray:
    """The peaking EQ of R. Bristow-Johnson's Audio EQ Cookbook (W3C), as one normalised SOS row (numpy)."""
    A, w0 = 10 ** (gain_db / 40), 2 * np.pi * f0 / fs
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * A, -2 * np.cos(w0), 1 - alpha * A])
    a = np.array([1 + alpha / A, -2 * np.cos(w0), 1 - alpha / A])
    return np.concatenate([b / a[0], a / a[0]])


@pytest.mark.parametrize("sr", [44100, 48000])
def test_curves_come_from_the_settings(client, sr):
    """The EQ curves are the filters that render: against scipy's sosfreqz of the same biquads (scipy's Butterworth
    high- and low-pass, the cookbook's bell; the shelves at 0 dB are flat) within 0.01 dB over 20 Hz-20 kHz, and
    the compressor's static curve 4:1 above a hard knee."""
    import scipy.signal as ss

    from dmst import schema

    settings = schema.default_dict()
    settings["eq"].update(presence_freq_hz=4000.0, presence_gain_db=6.0, presence_q=1.0, high_pass_slope_db=24.0)
    settings["post_eq"].update(bell_freq_hz=800.0, bell_gain_db=-4.0, bell_q=2.0)
    settings["compressor"].update(threshold_db=-20.0, ratio=4.0, knee_db=0.0, makeup_gain_db=0.0)
    c = client.post("/v1/curves", json={"settings": settings, "points": 512, "sample_rate": sr}).json()
    e = settings["eq"]
    eq_ref = np.concatenate([ss.butter(4, e["high_pass_freq_hz"], "highpass", fs=sr, output="sos"),
                             _rbj_peaking(4000.0, 6.0, 1.0, sr)[None],
                             ss.butter(2, e["low_pass_freq_hz"], "lowpass", fs=sr, output="sos")])
    for name, ref in (("eq", eq_ref), ("post_eq", _rbj_peaking(800.0, -4.0, 2.0, sr)[None])):
        f, g = np.array(c[name]["freq_hz"]), np.array(c[name]["gain_db"])
        assert f[0] == pytest.approx(20.0, abs=1.0) and f[-1] == pytest.approx(20000.0, abs=1.0) and len(f) == 512
        want = 20 * np.log10(np.abs(ss.sosfreqz(ref, worN=f, fs=sr)[1]))
        assert np.abs(g - want).max() < 0.01, (name, np.abs(g - want).max())
    x, y = np.array(c["compressor"]["input_db"]), np.array(c["compressor"]["output_db"])
    above = x > -10
    assert np.allclose(y[above], -20 + (x[above] + 20) / 4, atol=1e-9)  # 4:1 above a hard knee
    bad = client.post("/v1/curves", json={"settings": {"eq": {"nonsense": 1.0}}})
    assert bad.status_code == 422 and "nonsense" in bad.json()["message"]


# ---------------------------------------------------------------------------
# bad requests: 4xx JSON, nothing left behind
# ---------------------------------------------------------------------------

def _truncated_wav() -> bytes:
    return wav_bytes(np.zeros(44100, dtype=np.float32))[:44 + 300]


def _nan_wav() -> bytes:
    x = np.random.default_rng(0).standard_normal(44100).astype(np.float32) * 0.1
    x[1000] = np.nan
    return wav_bytes(x, subtype="FLOAT")


def _silent_flac(seconds: float) -> bytes:
    """A long file that is tiny on the wire: only its header tells how long it is."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * 8000), np.int16), 8000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


BAD = {
    "no file": (422, "/v1/mix", dict(data={"preset": "smooth"}, files={"other": ("x.txt", b"hello")}), "no audio file"),
    "empty file": (422, "/v1/mix", dict(files={"audio": ("v.wav", b"")}), "empty"),
    "text named .wav": (415, "/v1/mix", dict(files={"audio": ("v.wav", b"this is not audio\n" * 50)}), "not an audio"),
    "truncated wav": (422, "/v1/mix", dict(files={"audio": ("v.wav", _truncated_wav())}), "too short"),
    "NaN samples": (422, "/v1/mix", dict(files={"audio": ("v.wav", _nan_wav())}), "NaN"),
    "oversized upload": (413, "/v1/mix", dict(files={"audio": ("v.wav", b"\0" * (6 << 20))}), "limit"),
    "wrong content type": (415, "/v1/mix", dict(json={"audio": "x"}), "multipart/form-data"),
    "too many channels": (422, "/v1/mix", dict(files={"audio": ("v.wav", wav_bytes(np.zeros((2048, 12), np.float32)))}),
                          "12 channels"),
    "too long for a sync mix": (413, "/v1/params", dict(files={"audio": ("v.flac", _silent_flac(601))}), "/v1/jobs"),
    "unknown preset": (422, "/v1/mix", dict(files={"audio": ("v.wav", EXAMPLE.read_bytes())},
                                            data={"preset": "loud"}), "unknown preset 'loud'"),
    "amount out of range": (422, "/v1/mix", dict(files={"audio": ("v.wav", EXAMPLE.read_bytes())},
                                                 data={"preset": "warm", "amount": "3"}), "between 0 and 2"),
    "malformed params": (422, "/v1/mix", dict(files={"audio": ("v.wav", EXAMPLE.read_bytes())},
                                              data={"params": '{"eq": {'}), "not valid JSON"),
    "params out of range": (422, "/v1/mix", dict(files={"audio": ("v.wav", EXAMPLE.read_bytes())},
                                                 data={"params": '{"compressor": {"ratio": 100}}'}), "ratio"),
    "params with a bad layout": (422, "/v1/mix", dict(files={"audio": ("v.wav", EXAMPLE.read_bytes())},
                                                      data={"params": json.dumps({**json.loads(schema.to_json(
                                                          schema.default_dict())), "meta": {"output_channels": 3}})}),
                                 "output_channels must be 1 or 2"),
    "unknown model": (422, "/v1/params", dict(files={"audio": ("v.wav", EXAMPLE.read_bytes())},
                                              data={"model": "../../etc/passwd"}), "model"),
    "zip with ../": (422, "/v1/jobs", dict(data={"kind": "finetune"}, files={"data": ("d.zip", _zip(
        {"raw/a.wav": EXAMPLE.read_bytes(), "../mixed/a.wav": EXAMPLE.read_bytes()}))}), "outside"),
    "zip bomb": (413, "/v1/jobs", dict(data={"kind": "finetune"}, files={"data": ("d.zip", _zip(
        {"raw/a.wav": b"\0" * (64 << 20), "mixed/a.wav": b"\0" * 10}))}), "unpacks"),
    "not a zip": (422, "/v1/jobs", dict(data={"kind": "finetune"}, files={"data": ("d.zip", b"PK nothing")}), "zip"),
    "mix job without audio": (422, "/v1/jobs", dict(data={"kind": "mix"}, files={"x": ("a", b"1")}), "audio"),
    "unknown job": (404, "/v1/jobs/0123456789abcdef0123456789abcdef", None, "no job"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_4xx_json_and_leaves_nothing(client, server, case):
    status, path, kwargs, words = BAD[case]
    before, jobs_before = files_under(server.data_dir), job_count(server)
    r = client.get(path) if kwargs is None else client.post(path, **kwargs)
    body = r.json()
    assert r.status_code == status, (r.status_code, body)
    assert set(body) == {"error", "message", "field"} and words.lower() in body["message"].lower(), body
    assert "\n" not in body["message"] and str(server.data_dir) not in body["message"]
    assert files_under(server.data_dir) == before and job_count(server) == jobs_before


def test_oversized_chunked_upload_without_length_is_413(client, server):
    before = files_under(server.data_dir)

    def body():  # a well-formed multipart upload, sent in chunks with no Content-Length
        yield (b'--x\r\nContent-Disposition: form-data; name="audio"; filename="v.wav"\r\n'
               b"Content-Type: audio/wav\r\n\r\n")
        for _ in range(12):
            yield b"\1" * (1 << 19)
        yield b"\r\n--x--\r\n"

    r = client.post("/v1/mix", content=body(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert files_under(server.data_dir) == before


# ---------------------------------------------------------------------------
# jobs
# ---------------------------------------------------------------------------

def test_mix_job_result_equals_sync_mix_and_delete_removes_it(client, server, vocal_bytes):
    r = client.post("/v1/jobs", files={"audio": (EXAMPLE.name, vocal_bytes)},
                    data={"kind": "mix", "preset": "bright", "format": "flac", "bit_depth": "24"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" and job["state"] in ("queued", "running")
    info = wait_for_job(client, job["id"])
    assert info["state"] == "succeeded" and info["progress"] == 1.0 and info["result_url"]
    result = client.get(info["result_url"])
    sync = client.post("/v1/mix", files={"audio": (EXAMPLE.name, vocal_bytes)},
                       data={"preset": "bright", "format": "flac", "bit_depth": "24"})
    assert result.content == sync.content and result.headers["content-type"] == "audio/flac"
    assert json.loads(result.headers["x-dmst-settings"]) == json.loads(sync.headers["x-dmst-settings"])
    assert client.delete(f"/v1/jobs/{job['id']}").json() == {"id": job["id"], "state": "deleted"}
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert not (server.data_dir / "jobs" / job["id"]).exists()


def test_job_store_recovers_interrupted_jobs_or_fails_them_with_a_reason(tmp_path):
    from dmst.serve.store import JobStore

    store = JobStore(tmp_path / "jobs.sqlite3")
    for job_id in ("a" * 32, "b" * 32):
        store.create(job_id, "mix", {"mix": {}})
    assert store.claim("worker-1").id == "a" * 32
    assert store.claim("worker-2").id == "b" * 32
    assert store.claim("worker-3") is None  # a job is never handed out twice
    assert store.recover(lease_s=60, max_attempts=2) == []  # heartbeats are fresh
    time.sleep(0.05)
    assert sorted(store.recover(lease_s=0.01, max_attempts=2)) == [("a" * 32, "queued"), ("b" * 32, "queued")]
    assert store.get("a" * 32).error.startswith("interrupted")
    assert not store.heartbeat("a" * 32, "worker-1")  # the old owner must stop
    store.claim("worker-4"), store.claim("worker-5")
    time.sleep(0.05)
    assert sorted(s for _, s in store.recover(lease_s=0.01, max_attempts=2)) == ["failed", "failed"]
    failed = store.get("a" * 32)
    assert failed.state == "failed" and "interrupted 2 times" in failed.error


def test_retention_removes_finished_jobs_and_stale_uploads(tmp_path):
    import os as _os

    from dmst.serve.jobs import cleanup, job_dir
    from dmst.serve.settings import ServeSettings
    from dmst.serve.store import JobStore

    settings = ServeSettings(data_dir=tmp_path, retention_s=60)
    store = JobStore(tmp_path / "jobs.sqlite3")
    old, new, running = "a" * 32, "b" * 32, "c" * 32
    for job_id in (old, new, running):
        store.create(job_id, "mix", {"mix": {}})
        store.claim(f"w-{job_id}")
        job_dir(tmp_path, job_id).mkdir(parents=True)
        (job_dir(tmp_path, job_id) / "result.wav").write_bytes(b"x")
    store.finish(old, f"w-{old}", "succeeded", result={})
    store.finish(new, f"w-{new}", "succeeded", result={})
    with store._tx() as db:  # finished two minutes ago
        db.execute("UPDATE jobs SET finished_at = finished_at - 120 WHERE id = ?", (old,))
    (tmp_path / "uploads").mkdir()
    stale, fresh = tmp_path / "uploads" / "stale", tmp_path / "uploads" / "fresh"
    stale.write_bytes(b"x"), fresh.write_bytes(b"x")
    _os.utime(stale, (time.time() - 120, time.time() - 120))
    assert cleanup(settings, store) == 2
    assert store.get(old) is None and not job_dir(tmp_path, old).exists() and not stale.exists()
    assert store.get(new) and store.get(running) and fresh.exists() and job_dir(tmp_path, running).exists()


def test_deleting_a_running_fine_tune_stops_it_and_removes_it(client, server):
    r = client.post("/v1/jobs", files={"data": ("pairs.zip", _pairs_zip())},
                    data={"kind": "finetune", "name": "to-cancel", "time_budget_s": "120"})
    job_id = r.json()["id"]
    wait_for_job(client, job_id, states=("running",))
    assert client.delete(f"/v1/jobs/{job_id}").json() == {"id": job_id, "state": "cancelling"}
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job_id}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    wait_until = time.monotonic() + 10
    while (server.data_dir / "jobs" / job_id).exists() and time.monotonic() < wait_until:
        time.sleep(0.1)
    assert not (server.data_dir / "jobs" / job_id).exists()
    assert "to-cancel" not in [m["name"] for m in client.get("/v1/models").json()]


def _pairs_zip() -> bytes:
    """Two tiny real-voice pairs whose 'mix' is a known console setting (brighter, compressed)."""
    import torch

    from dmst import schema
    from dmst.console import render

    target = schema.default_dict()
    target["eq"]["presence_gain_db"] = 6.0
    target["compressor"].update(threshold_db=-30.0, ratio=4.0)
    x, sr = sf.read(EXAMPLE, dtype="float32", always_2d=True)
    members = {}
    for i, part in enumerate((x[: 2 * sr], x[2 * sr: 4 * sr])):
        raw = torch.from_numpy(np.ascontiguousarray(part.T))
        mixed = render(raw[None], sr, schema.stack([target]))[0].numpy()
        members[f"my data/raw/take {i}.wav"] = wav_bytes(part, sr, "FLOAT")
        members[f"my data/mixed/take {i}.wav"] = wav_bytes(mixed.T, sr, "FLOAT")
    return _zip(members)


def test_jobs_survive_a_crash_and_a_fine_tune_makes_a_model_mix_uses(tmp_path, vocal_bytes):
    """Queued and running jobs survive SIGKILL of the server: after a restart both finish.

    The fine-tune is killed while it trains (after its first epoch's checkpoint); the restarted
    server resumes it from that checkpoint, installs the model under its name, and /v1/mix
    renders with it.
    """
    data = tmp_path / "data"
    options = ("--job-lease-s", "2", "--torch-threads", "1")
    first = Server(data, *options, "--job-threads", "1")
    try:
        with first.client() as c:
            ft = c.post("/v1/jobs", files={"data": ("pairs.zip", _pairs_zip())},
                        data={"kind": "finetune", "name": "my-style-v1", "time_budget_s": "120", "epochs": "2",
                              "batch_size": "2", "crop_seconds": "1.0"})
            assert ft.status_code == 202, ft.text
            ft_id = ft.json()["id"]
            # queued behind the fine-tune (one job thread), so it is still queued at the crash
            mix = c.post("/v1/jobs", files={"audio": (EXAMPLE.name, vocal_bytes)}, data={"kind": "mix"}).json()
            deadline = time.monotonic() + 120  # kill it mid-run: after epoch 1's checkpoint, before epoch 2 ends
            while not list((data / "jobs" / ft_id).rglob("last.pt")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c.get(f"/v1/jobs/{ft_id}").json()["state"] == "running"
    finally:
        first.kill()

    second = Server(data, *options)
    try:
        with second.client() as c:
            info = wait_for_job(c, ft_id, timeout=240)
            assert info["state"] == "succeeded", info
            assert info["attempts"] == 2 and "resumed" in (info["error"] or "")
            assert "resuming" in (data / "jobs" / ft_id / "train.log").read_text()  # from epoch 1's last.pt
            assert info["result"]["epochs"] == 2
            assert c.get(f"/v1/jobs/{ft_id}/result").json()["model"] == "my-style-v1"
            assert wait_for_job(c, mix["id"])["state"] == "succeeded"
            models = {m["name"]: m for m in c.get("/v1/models").json()}
            assert models["my-style-v1"]["kind"] == "fine-tuned" and models["my-style-v1"]["base_model"] == "default"
            tuned = c.post("/v1/mix", files={"audio": (EXAMPLE.name, vocal_bytes)}, data={"model": "my-style-v1"})
            default = c.post("/v1/mix", files={"audio": (EXAMPLE.name, vocal_bytes)})
            assert tuned.status_code == 200 and json.loads(tuned.headers["x-dmst-settings"])["meta"]["model"] == \
                "my-style-v1"
            assert tuned.content != default.content
            again = c.post("/v1/jobs", files={"data": ("pairs.zip", _pairs_zip())},
                           data={"kind": "finetune", "name": "my-style-v1"})
            assert again.status_code == 409  # a version name is never reused
    finally:
        second.stop()


# ---------------------------------------------------------------------------
# the API key, the bind rule, the render pool
# ---------------------------------------------------------------------------

def test_api_key_is_required_on_every_v1_route_and_slow_bodies_time_out(tmp_path, vocal_bytes):
    s = Server(tmp_path / "data", "--upload-timeout-s", "1", api_key=KEY)
    try:
        with httpx.Client(base_url=s.url, timeout=60) as anonymous:
            assert anonymous.get("/health").status_code == 200
            for method, path in (("GET", "/v1/presets"), ("GET", "/v1/models"), ("GET", "/v1/schema"),
                                 ("POST", "/v1/params"), ("POST", "/v1/mix"), ("POST", "/v1/jobs"),
                                 ("POST", "/v1/curves"), ("GET", "/v1/jobs/" + "0" * 32),
                                 ("DELETE", "/v1/jobs/" + "0" * 32)):
                r = anonymous.request(method, path, headers={"X-API-Key": "wrong"} if "jobs" in path else {})
                assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, path)
            before = files_under(s.data_dir)
            r = anonymous.post("/v1/mix", files={"audio": (EXAMPLE.name, vocal_bytes)})
            assert r.status_code == 401 and files_under(s.data_dir) == before
        with s.client() as c:
            assert c.get("/v1/presets").status_code == 200
            assert c.post("/v1/mix", files={"audio": (EXAMPLE.name, vocal_bytes)}).status_code == 200
        with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {KEY}"}) as bearer:
            assert bearer.get("/v1/models").status_code == 200
        # A body that stops arriving (slowloris): answered 408 once --upload-timeout-s has passed.
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall(f"POST /v1/mix HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: multipart/form-data; "
                         "boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n".encode())
            reply = b""
            while b"}" not in reply and (chunk := sock.recv(4096)):
                reply += chunk
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 408") and "request_timeout" in reply
        assert files_under(s.data_dir) == before
    finally:
        s.stop()


def test_non_loopback_bind_needs_a_key_or_insecure(capsys):
    from dmst.serve import main

    assert main(["--host", "0.0.0.0", "--data-dir", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--api-key" in err and "--insecure" in err


def test_render_pool_is_bounded_and_says_when_to_retry():
    from dmst.serve.engine import RenderPool
    from dmst.serve.errors import ApiError

    async def scenario():
        pool = RenderPool(threads=1, max_pending=1)
        gate = threading.Event()
        first = asyncio.ensure_future(pool.run(gate.wait, timeout_s=30))
        second = asyncio.ensure_future(pool.run(lambda: 2, timeout_s=30))
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as full:
            await pool.run(lambda: 3, timeout_s=30)
        gate.set()
        results = await asyncio.gather(first, second)
        cleaned = threading.Event()
        with pytest.raises(ApiError) as late:
            await pool.run(time.sleep, 0.3, timeout_s=0.05, cleanup=cleaned.set)
        assert cleaned.wait(2)  # the abandoned render's files are removed once it ends
        pool.shutdown()
        return full.value, results, late.value

    full, results, late = asyncio.run(scenario())
    assert full.status == 503 and int(full.headers["Retry-After"]) >= 1
    assert results == [True, 2]
    assert late.status == 503 and late.error == "timeout" and "Retry-After" in late.headers


def test_zip_members_are_unpacked_under_server_names(tmp_path):
    from dmst.serve.limits import unpack_pairs
    from dmst.serve.settings import ServeSettings

    archive = tmp_path / "d.zip"
    archive.write_bytes(_zip({"raw/take one.wav": b"RIFF1", "mixed/take one.wav": b"RIFF2", "raw/solo.wav": b"x",
                              "__MACOSX/._x": b"", "notes.txt": b"hi"}))
    names = unpack_pairs(archive, tmp_path / "out", ServeSettings())
    assert names == {"0001": "take one"}
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.wav")) == \
        ["mixed/0001.wav", "raw/0001.wav"]


# ---------------------------------------------------------------------------
# fuzzing the OpenAPI document
# ---------------------------------------------------------------------------

def test_schemathesis_finds_no_server_errors(server):
    """Every operation of /openapi.json, fed schemathesis' generated requests: never a 5xx, errors always JSON.

    20 examples per operation here (a few seconds); DMST_FUZZ_EXAMPLES=150 ran clean too (1500 requests).
    """
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11  # health, presets, models, schema, params, mix, curves, 4 job routes
    seen = []
    for operation in operations:
        @settings(max_examples=int(os.environ.get("DMST_FUZZ_EXAMPLES", 20)), deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case):
            response = case.call(base_url=server.url, timeout=60)
            seen.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
            if response.status_code >= 400:
                assert {"error", "message"} <= set(response.json()), response.text[:300]

        fuzz()
    assert len(seen) > 50


# ---------------------------------------------------------------------------
# the thread policy, shared with dmst render
# ---------------------------------------------------------------------------

@pytest.fixture()
def two_torch_threads():
    import torch

    from dmst.effects import _llvm

    before, kernels = torch.get_num_threads(), _llvm._kernel_threads
    _llvm._kernel_threads = None  # as in a fresh process: the kernels follow torch's count until told otherwise
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
    _llvm._kernel_threads = kernels


@pytest.mark.parametrize("entry", ["dmst render", "dmst serve"])
def test_render_and_the_service_run_torch_on_one_thread_and_the_kernels_on_the_cores(entry, two_torch_threads, tmp_path):
    """In a process with two torch threads, rendering a file and starting the service both leave torch's own
    operations on one thread and the compiled render loops on two (the service says so in /health).  Checked in
    a new thread, as the service's renders run: with OpenMP, torch's count is per thread, and a thread takes the
    process's setting when it first uses torch."""
    import torch

    from dmst.effects._llvm import kernel_threads

    if entry == "dmst render":
        from dmst.cli import main as dmst_main

        assert dmst_main(["render", str(ROOT / "examples" / "sing_me_a_song.wav"), "-o", str(tmp_path / "out.wav")]) == 0
    else:
        from fastapi.testclient import TestClient

        from dmst.serve.app import create_app
        from dmst.serve.settings import ServeSettings

        with TestClient(create_app(ServeSettings(data_dir=tmp_path / "data"))) as c:
            pool = c.get("/health").json()["render_pool"]
        assert (pool["torch_threads"], pool["kernel_threads"]) == (1, 2)
    seen = []
    worker = threading.Thread(target=lambda: seen.append((torch.get_num_threads(), kernel_threads())))
    worker.start()
    worker.join()
    assert seen == [(1, 2)]
