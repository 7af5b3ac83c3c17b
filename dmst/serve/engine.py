"""What the routes call: the models (each loaded once per worker), the bounded render pool,
and the mix itself, on exactly the code path of ``dmst render``.

The mix reuses the CLI's own steps (``dmst.cli._staging_db``, ``_settings``, ``_render``)
and ``dmst.audio_io.write_audio``, so ``POST /v1/mix`` returns the same bytes as
``dmst render`` for the same file and settings.
"""
from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from .errors import ApiError

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac"}
_WRITER = ThreadPoolExecutor(4, thread_name_prefix="dmst-write")  # file writes beside the true-peak meter


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------

class Models:
    """Model names -> files, each loaded on first use and kept: once per worker process.

    ``default`` is the model the server was started with; fine-tune jobs add
    ``DATA_DIR/models/NAME/model.pt``.  Clients only ever pass a name from this list,
    never a path.
    """

    def __init__(self, default: str, models_dir: Path):
        self.default = default
        self.dir = Path(models_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._loaded: dict[str, object] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path | str:
        if name == "default":
            return self.default
        if not MODEL_NAME.match(name or "") or name.startswith("."):
            raise ApiError(422, "invalid_model", f"model name {name!r} is not valid; use one of GET /v1/models", "model")
        path = self.dir / name / "model.pt"
        if not path.is_file():
            names = ", ".join(self.names())
            raise ApiError(422, "invalid_model", f"unknown model '{name}'; valid models: {names}", "model")
        return path

    def names(self) -> list[str]:
        found = sorted(p.parent.name for p in self.dir.glob("*/model.pt") if MODEL_NAME.match(p.parent.name))
        return ["default"] + [n for n in found if n != "default"]

    def exists(self, name: str) -> bool:
        return name == "default" or (self.dir / name / "model.pt").is_file()

    def get(self, name: str):
        path = self.path(name)
        with self._lock:  # two first requests at once load it once
            model = self._loaded.get(name)
            if model is None:
                from ..encoder import load_model, model_from_checkpoint, read_checkpoint
                from .errors import from_library
                from ..encoder import ModelError

                try:
                    if name == "default":
                        model = load_model(path)
                        if str(path) != "default":
                            model.name = "default"
                    else:
                        model = model_from_checkpoint(read_checkpoint(path), name)
                except ModelError as e:
                    raise from_library(e, "model") from None
                self._loaded[name] = model
            return model


# ---------------------------------------------------------------------------
# the render pool
# ---------------------------------------------------------------------------

class RenderPool:
    """``threads`` renders at once, at most ``max_pending`` waiting; beyond that, 503 with Retry-After.

    Never an unbounded queue: a request that finds no slot is answered at once.  A
    request that waits past ``timeout_s`` is answered 503 too; its render, if already
    running, finishes and frees its slot (a thread cannot be killed safely).
    """

    def __init__(self, threads: int, max_pending: int):
        self.threads = threads
        self.capacity = threads + max_pending
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="dmst-render")
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._in_flight = 0
        self._lock = threading.Lock()
        self._mean_s = 1.0  # running mean of a render's time, for Retry-After

    def _retry_after(self) -> str:
        return str(max(1, math.ceil(self._mean_s * max(1, self._in_flight) / self.threads)))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def run(self, fn, *args, timeout_s: float, cleanup=None):
        """``fn(*args)`` on a pool thread.  ``cleanup`` runs once the render ends if the caller stopped
        waiting for it (timeout, client gone), so an abandoned render leaves no file behind."""
        if not self._slots.acquire(blocking=False):
            raise ApiError(503, "busy", f"all {self.capacity} render slots are taken; retry after the time in "
                           "Retry-After", headers={"Retry-After": self._retry_after()})
        with self._lock:
            self._in_flight += 1

        def timed():
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - start)

        def release(_):
            with self._lock:
                self._in_flight -= 1
            self._slots.release()

        try:
            future = self.executor.submit(timed)
        except BaseException:
            release(None)
            raise
        future.add_done_callback(release)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout_s)
        except BaseException as e:
            future.cancel()  # only succeeds while it still waits for a thread
            if cleanup is not None:  # runs at once if it is already done
                future.add_done_callback(lambda _: cleanup())
            if not isinstance(e, asyncio.TimeoutError):
                raise
            raise ApiError(503, "timeout", f"the render did not finish within {timeout_s:g} s; retry later, or send a "
                           "long file to POST /v1/jobs", headers={"Retry-After": self._retry_after()}) from None

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------
# the work itself (runs on a pool thread)
# ---------------------------------------------------------------------------

@dataclass
class MixRequest:
    names: list[str]
    amount: float
    params: dict | None  # replaces the prediction, like `dmst render --params`
    model: str
    layout: int | None = None  # with params: the output layout their meta records, as `dmst render --params`
    format: str = "wav"
    bit_depth: str = "24"
    source: str = "upload"


@dataclass
class MixResult:
    settings_json: str  # what `dmst render --save-params` writes, compact
    true_peak_dbtp: float
    input_lufs: float
    duration_s: float
    sample_rate: int
    channels: int


def meta(model, names: list[str], amount: float, source: str, params_given: bool = False,
         layout: int | None = None) -> dict:
    """The "meta" block of the settings JSON, as ``dmst params`` / ``--save-params`` write it (``layout``: the
    output layout it records, a stereo model's 2)."""
    from ..cli import _meta

    m = _meta(SimpleNamespace(params=None, amount=amount), model, names, source, layout)
    if params_given:
        m = {"model": None, "params_file": "request", **{k: v for k, v in m.items() if k != "model"}}
    return m


def predict_settings(models: Models, audio_path: Path, req: MixRequest, presets) -> str:
    """The JSON text `dmst params` prints for this file and request."""
    from .. import schema
    from ..audio_io import read_audio
    from ..cli import _settings

    audio, sample_rate, _ = read_audio(audio_path)
    model = models.get(req.model)
    nested = _settings(model, None, audio, sample_rate, req.names, req.amount, presets)
    return schema.to_json(nested, **meta(model, req.names, req.amount, req.source, layout=model.output_channels)) + "\n"


def mix_file(models: Models, audio_path: Path, out_path: Path, req: MixRequest, presets) -> MixResult:
    """Render one uploaded file to ``out_path``: the steps of ``dmst render`` (no --limit, no resampling)."""
    import json

    from .. import schema
    from ..audio_io import read_audio, true_peak_dbfs, write_audio
    from ..cli import _in_layout, _render, _settings, _staging_db
    from ..effects.gain import REFERENCE_LUFS

    audio, sample_rate, _ = read_audio(audio_path)
    model = models.get(req.model) if req.params is None else None
    staging_db = _staging_db(audio, sample_rate)
    nested = _settings(model, req.params, audio, sample_rate, req.names, req.amount, presets, staging_db)
    layout = model.output_channels if model is not None else req.layout  # as `dmst render`: the model's mixes'
    # layout, or the one the settings record
    y = _render(_in_layout(audio, layout), sample_rate, nested, staging_db)
    # As `dmst render` does: the true-peak check runs while the file is written (both release the GIL).
    writing = _WRITER.submit(write_audio, out_path, y, sample_rate, format=req.format, bit_depth=req.bit_depth,
                             inputs=[audio_path])
    peak = true_peak_dbfs(y, sample_rate)
    writing.result()
    doc = json.loads(schema.to_json(nested, **meta(model, req.names, req.amount, req.source, req.params is not None,
                                                   layout)))
    return MixResult(
        settings_json=json.dumps(doc, separators=(",", ":"), ensure_ascii=True),
        true_peak_dbtp=peak,
        input_lufs=REFERENCE_LUFS - float(staging_db[0]),
        duration_s=audio.shape[-1] / sample_rate,
        sample_rate=sample_rate,
        channels=audio.shape[0],
    )
