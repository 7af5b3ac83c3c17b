"""The service's configuration: one typed, immutable object, every limit in its unit.

``dmst serve`` builds it from the command line; tests and embedders build it directly
(``create_app(ServeSettings(data_dir=...))``).  With ``--workers N`` it travels to the
worker processes as JSON in the environment variable ``DMST_SERVE_SETTINGS``.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

ENV_VAR = "DMST_SERVE_SETTINGS"
MB = 1024 * 1024


class ServeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model: str = Field("default", description="the model served as 'default': 'default' (bundled) or a model file")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    api_key: str | None = Field(None, description="with a key, every /v1 route needs it (X-API-Key or Bearer)")
    insecure: bool = Field(False, description="allow a non-loopback bind without an API key")
    data_dir: Path = Field(Path("dmst-data"), description="job store (SQLite), uploads, results, fine-tuned models")

    # uploads
    max_upload_mb: float = Field(200.0, gt=0, description="largest request body; over it: 413")
    max_duration_s: float = Field(1800.0, gt=0, description="longest audio accepted at all (jobs)")
    max_sync_duration_s: float = Field(600.0, gt=0, description="longest audio /v1/mix and /v1/params take; "
                                       "longer files go through POST /v1/jobs")
    accepted_formats: tuple[str, ...] = Field(("WAV", "FLAC", "AIFF", "OGG", "MP3", "W64", "RF64", "CAF"),
                                              description="libsndfile container names accepted; others: 415")
    max_channels: int = Field(8, ge=1, le=64, description="most channels an upload may have")
    max_sample_rate: int = Field(192000, ge=8000, le=768000, description="highest sample rate accepted (Hz)")
    upload_timeout_s: float = Field(120.0, gt=0, description="time allowed to receive a request body; over it: 408")

    # rendering
    render_threads: int = Field(2, ge=1, le=64, description="renders running at once in one worker")
    max_pending: int = Field(32, ge=0, le=10000, description="renders waiting for a thread; beyond: 503 + Retry-After")
    request_timeout_s: float = Field(60.0, gt=0, description="longest a /v1/mix or /v1/params waits for its render")
    torch_threads: int | None = Field(None, ge=1, le=64, description="torch intra-op threads (None: one, as dmst "
                                      "render; the compiled render loops use the cores)")

    # jobs
    job_threads: int = Field(1, ge=0, le=16, description="jobs one worker runs at once (0: this worker runs none)")
    job_lease_s: float = Field(20.0, gt=0, description="a running job whose worker has not reported for this long "
                               "is taken as interrupted (crash, restart) and resumed")
    job_max_attempts: int = Field(3, ge=1, le=100, description="starts a job gets before it is marked failed")
    max_finetune_s: float = Field(3600.0, gt=0, description="largest time budget of a fine-tune job")
    max_zip_members: int = Field(2000, ge=1)
    max_zip_uncompressed_mb: float = Field(4096.0, gt=0, description="total unpacked size of a fine-tune zip")
    max_zip_ratio: float = Field(200.0, gt=1, description="largest compression ratio of a zip member (zip bombs)")
    retention_s: float = Field(24 * 3600.0, gt=0, description="finished jobs' files are removed after this long")
    cleanup_interval_s: float = Field(300.0, gt=0)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def loopback(self) -> bool:
        if self.host in ("localhost", "ip6-localhost"):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_bind(self) -> None:
        """Refuse to serve beyond this machine without a key, unless asked to explicitly."""
        if not self.loopback and not self.api_key and not self.insecure:
            raise ValueError(f"--host {self.host} makes the service reachable from other machines; give it an "
                             "--api-key KEY (or DMST_API_KEY), or pass --insecure to serve without one")

    def to_env(self) -> dict[str, str]:
        return {ENV_VAR: self.model_dump_json()}

    @classmethod
    def from_env(cls) -> "ServeSettings":
        return cls.model_validate_json(os.environ[ENV_VAR])
