"""Start a real ``dmst serve`` process on 127.0.0.1 at a free port, for the service tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# One torch thread in the server and in the CLI runs it is compared with: the same thread
# settings give the same rounding (MKL's FFTs depend on them), as the README notes.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, *options: str, api_key: str | None = None):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.log = self.data_dir.parent / f"server-{self.port}.log"
        command = [sys.executable, "-m", "dmst", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--data-dir", str(self.data_dir), "--log-level", "warning", *options]
        if api_key:
            command += ["--api-key", api_key]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dmst serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"dmst serve did not start:\n{self.log.read_text()}")
            time.sleep(0.2)

    def client(self, **kw) -> httpx.Client:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers, **kw)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the jobs it was running."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
