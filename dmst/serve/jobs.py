"""Running jobs: long mixes and fine-tunes, claimed from the store, with a heartbeat.

Each worker process runs ``job_threads`` runner threads.  A runner claims a queued job,
reports progress every couple of seconds (the heartbeat that tells other workers it is
alive) and records the result or the error.  A fine-tune runs ``dmst train`` in a child
process, so it can be stopped, and a resumed attempt continues from its ``last.pt``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from .store import JobStore

ROOT = Path(__file__).resolve().parents[2]  # the folder holding dmst/ and train.py


def job_dir(data_dir: Path, job_id: str) -> Path:
    return Path(data_dir) / "jobs" / job_id


def remove_job_files(data_dir: Path, job_id: str) -> None:
    shutil.rmtree(job_dir(data_dir, job_id), ignore_errors=True)


class Stopped(Exception):
    """The job was cancelled (DELETE) or taken over; stop without recording anything."""


def _die_with_parent():  # Linux: a fine-tune never outlives the worker that started it
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class JobRunner:
    def __init__(self, settings, store: JobStore, models, presets):
        self.settings, self.store, self.models, self.presets = settings, store, models, presets
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.beat_s = max(0.2, min(2.0, settings.job_lease_s / 5))

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.settings.job_threads):
            t = threading.Thread(target=self._loop, name=f"dmst-job-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self._housekeeping, name="dmst-jobs-housekeeping", daemon=True)
        t.start()
        self.threads.append(t)

    def shutdown(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)

    def _housekeeping(self) -> None:
        """Recover interrupted jobs and remove expired files, whether or not this worker runs jobs."""
        last_cleanup = 0.0
        while not self.stop.is_set():
            try:
                self.store.recover(self.settings.job_lease_s, self.settings.job_max_attempts)
                if time.monotonic() - last_cleanup > self.settings.cleanup_interval_s:
                    last_cleanup = time.monotonic()
                    cleanup(self.settings, self.store)
            except Exception as e:  # a locked or briefly unavailable store: try again next round
                print(f"dmst serve: housekeeping: {e}", file=sys.stderr)
            self.stop.wait(self.beat_s)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:  # one owner per claim: a job taken over after a lapse can never be finished twice
                job = self.store.claim(f"{self.owner}-{uuid.uuid4().hex[:6]}")
            except Exception as e:
                print(f"dmst serve: cannot claim a job: {e}", file=sys.stderr)
                job = None
            if job is None:
                self.stop.wait(0.2)
                continue
            self._run(job)

    # -- one job -------------------------------------------------------------------
    def _run(self, job) -> None:
        state = {"progress": job.progress, "alive": True}
        beat_stop = threading.Event()

        def beat():
            while not beat_stop.wait(self.beat_s):
                try:
                    if not self.store.heartbeat(job.id, job.owner, state["progress"]):
                        state["alive"] = False
                        return
                except Exception:
                    pass

        beater = threading.Thread(target=beat, daemon=True)
        beater.start()

        def progress(value: float) -> None:
            state["progress"] = max(0.0, min(1.0, value))
            if not state["alive"] or self.stop.is_set():
                raise Stopped()

        try:
            if job.kind == "mix":
                result = self._mix(job, progress)
            else:
                result = self._finetune(job, progress, lambda: state["alive"] and not self.stop.is_set())
            beat_stop.set()
            beater.join()
            if not self.store.finish(job.id, job.owner, "succeeded", result=result):
                self._after_stop(job)
        except Stopped:
            beat_stop.set()
            beater.join()
            self._after_stop(job)
        except Exception as e:
            beat_stop.set()
            beater.join()
            from .errors import ApiError

            message = e.message if isinstance(e, ApiError) else " ".join(str(e).split()) or type(e).__name__
            if not isinstance(e, (ApiError, ValueError)):
                import traceback

                traceback.print_exc()
            if not self.store.finish(job.id, job.owner, "failed", error=message):
                self._after_stop(job)

    def _after_stop(self, claimed) -> None:
        job = self.store.get(claimed.id)
        if job is not None and job.cancel:  # DELETE: the job and its files go
            self.store.finish(job.id, claimed.owner, "cancelled")
            remove_job_files(self.settings.data_dir, job.id)
            self.store.delete(job.id)
        # else: this worker was shutting down; the job stays 'running' and is recovered by the lease

    def _mix(self, job, progress) -> dict:
        from ..audio_io import AudioFileError
        from .engine import MEDIA_TYPES, MixRequest, mix_file
        from .limits import library_error_without_path

        folder = job_dir(self.settings.data_dir, job.id)
        req = MixRequest(**job.request["mix"])
        out = folder / f"result.{req.format}"
        out.unlink(missing_ok=True)  # a resumed attempt starts this file again
        progress(0.05)
        try:
            result = mix_file(self.models, folder / "input", out, req, self.presets)
        except (AudioFileError, ValueError) as e:
            raise library_error_without_path(e, folder / "input") from None
        progress(0.95)
        return {"file": out.name, "media_type": MEDIA_TYPES[req.format], "settings": result.settings_json,
                "true_peak_dbtp": result.true_peak_dbtp, "input_lufs": result.input_lufs,
                "duration_s": result.duration_s}

    def _finetune(self, job, progress, alive) -> dict:
        request = job.request["finetune"]
        folder = job_dir(self.settings.data_dir, job.id)
        name = request["name"]
        run = folder / "run" / name
        budget_s = float(request["time_budget_s"])
        command = [sys.executable, "-m", "dmst", "train", "--data", str(folder / "data"), "--out", str(run),
                   "--time-budget", repr(budget_s / 60), "--epochs", str(request["epochs"]), "--quiet",
                   "--seed", str(request.get("seed", 0))]
        for option in ("batch_size", "crop_seconds"):
            if request.get(option) is not None:
                command += [f"--{option.replace('_', '-')}", str(request[option])]
        installed = Path(self.settings.data_dir) / "models" / name / "info.json"
        if installed.exists() and json.loads(installed.read_text()).get("job") == job.id:
            info = json.loads(installed.read_text())  # a crash came after the install, before the result was stored
            return {"model": name, **{k: v for k, v in info.items() if k != "name"}}
        if (run / "last.pt").exists():
            command.append("--resume")  # an interrupted attempt continues where it stopped
        else:
            command += ["--init", str(self.models.path(request["base_model"]))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        log_path = folder / "train.log"
        start = time.monotonic()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            try:
                while proc.poll() is None:
                    if not alive():
                        raise Stopped()
                    epochs_done = 0
                    try:
                        epochs_done = len(json.loads((run / "metrics.json").read_text())["epochs"])
                    except (OSError, ValueError, KeyError):
                        pass
                    by_clock = (time.monotonic() - start) / max(budget_s, 1e-3)
                    progress(min(0.95, max(by_clock, epochs_done / max(1, request["epochs"]))))
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        if proc.returncode != 0:
            lines = [l for l in log_path.read_text(errors="replace").splitlines() if l.strip()]
            errors = [l for l in lines if "error:" in l]
            raise RuntimeError(f"fine-tune failed: {(errors or lines or ['exit status %d' % proc.returncode])[-1].strip()}")
        if not (run / "model.pt").exists():
            raise RuntimeError("fine-tune ended before one epoch finished, so no model was made; give it a larger "
                               "time_budget_s or fewer pairs")
        # Install under its name: a temporary folder, then one rename, so a half-copied model is never served.
        models_dir = Path(self.settings.data_dir) / "models"
        tmp = models_dir / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir(parents=True)
        shutil.copy2(run / "model.pt", tmp / "model.pt")
        metrics = {}
        if (run / "metrics.json").exists():
            metrics = json.loads((run / "metrics.json").read_text())
        info = {"name": name, "base_model": request["base_model"], "job": job.id, "created_at": time.time(),
                "pairs": len(request.get("pairs", {})), "epochs": len(metrics.get("epochs", [])),
                "best_val_loss": min((e["val"]["loss"] for e in metrics.get("epochs", [])), default=None),
                "init_val_loss": metrics.get("baselines", {}).get("init_model", {}).get("loss")}
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        try:
            os.rename(tmp, models_dir / name)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"a model named '{name}' appeared meanwhile; submit the job again with another name")
        shutil.rmtree(folder / "data", ignore_errors=True)  # the pairs are not kept once the model exists
        return {"model": name, **{k: v for k, v in info.items() if k != "name"}}


def cleanup(settings, store: JobStore) -> int:
    """Remove jobs (and their files) finished longer than the retention time ago, and stale uploads."""
    removed = 0
    for job in store.expired(settings.retention_s):
        remove_job_files(settings.data_dir, job.id)
        store.delete(job.id)
        removed += 1
    cutoff = time.time() - settings.retention_s
    for folder in ("uploads", "tmp"):
        for path in (Path(settings.data_dir) / folder).glob("*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                pass
    return removed
