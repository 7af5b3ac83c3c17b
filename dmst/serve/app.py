"""The FastAPI application: ``create_app(settings)``.

Routes (OpenAPI at /docs and /openapi.json):

    GET  /health                 model, schema version, library versions
    GET  /v1/presets             the presets and what they change
    GET  /v1/models              models served here (the server's, and fine-tuned ones)
    GET  /v1/schema              the parameter table (the web page builds its settings table from it)
    POST /v1/params              settings for a vocal: the same JSON as `dmst params`
    POST /v1/mix                 the mixed file; the settings used in the X-Dmst-Settings header
    POST /v1/curves              EQ and compressor curves for settings, from dmst's own effect functions
    POST /v1/jobs                a long mix, or a fine-tune from a zip of raw/ and mixed/
    GET  /v1/jobs/{id}           state, progress (0-1), error
    GET  /v1/jobs/{id}/result    the mixed file, or the new model's name
    DELETE /v1/jobs/{id}         cancel and remove
    GET  /                       the web page
"""
from __future__ import annotations

import json
import sys
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask

from .. import __version__
from . import errors
from .engine import MEDIA_TYPES, MixRequest, Models, RenderPool, mix_file, predict_settings
from .errors import ApiError, ErrorBody
from .limits import GuardMiddleware, check_audio_upload, key_matches, library_error_without_path, safe_label, save_upload
from .models import CurvesRequest, Curves, Health, ModelInfo, PresetInfo, SchemaInfo, settings_model
from .settings import ServeSettings
from .store import JobStore

STATIC = Path(__file__).resolve().parent / "static"

SETTINGS_HEADER = "X-Dmst-Settings"
RESULT_HEADERS = {
    SETTINGS_HEADER: "the settings used, as compact JSON (the same document as `dmst render --save-params`; "
                     "ASCII only: non-ASCII characters are \\u-escaped)",
    "X-Dmst-True-Peak-Dbtp": "true peak of the mix (ITU-R BS.1770-4, 4x oversampled), dBTP",
    "X-Dmst-Input-Lufs": "integrated loudness of the upload (BS.1770-4), LUFS; the page uses it to match the raw "
                         "vocal's level to the mix's for A/B",
}

_ERRORS = {code: {"model": ErrorBody} for code in (401, 408, 413, 415, 422, 503)}


def _versions() -> dict:
    import importlib.metadata

    import fastapi
    import numpy
    import pydantic
    import torch

    try:  # read from the installed metadata: dmst imports torchaudio only through its adapter
        torchaudio = importlib.metadata.version("torchaudio")
    except importlib.metadata.PackageNotFoundError:
        torchaudio = "unknown"
    return {"dmst": __version__, "python": sys.version.split()[0], "torch": str(torch.__version__),
            "torchaudio": torchaudio, "numpy": numpy.__version__, "fastapi": fastapi.__version__,
            "pydantic": pydantic.VERSION}


# ---------------------------------------------------------------------------
# dependencies
# ---------------------------------------------------------------------------

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's --api-key")
_bearer = HTTPBearer(auto_error=False, description="the server's --api-key as a bearer token")


def require_key(request: Request, _k: str | None = Security(_key_header), _b=Security(_bearer)) -> None:
    """Every /v1 route needs the key when the server has one (the middleware already refused before the body)."""
    if not key_matches(request.app.state.settings.api_key, request.headers):
        raise ApiError(401, "unauthorized", "missing or wrong API key; send it in the X-API-Key header",
                       headers={"WWW-Authenticate": "Bearer"})


def multipart_only(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type", f"this route takes multipart/form-data (a file upload), got "
                       f"{ctype.split(';')[0] or 'no content type'}; send the audio as the form field 'audio'")


def state(request: Request):
    return request.app.state


# ---------------------------------------------------------------------------
# shared request steps
# ---------------------------------------------------------------------------

def _preset_names(preset: list[str]) -> list[str]:
    return [n.strip() for item in preset for n in item.split(",") if n.strip()]


def _check_choice(app_state, preset: list[str], amount: float, model: str | None, params: str | None,
                  fmt: str = "wav", bit_depth: str = "24"):
    """Check every form field before any audio work; returns (names, params dict or None, the output layout
    the params' meta records or None), as `dmst render --params` reads them."""
    from .. import schema
    from ..presets import PresetError, check_amount, get_presets

    names = _preset_names(preset)
    try:
        check_amount(amount)
    except PresetError as e:
        raise ApiError(422, "invalid_value", str(e), "amount") from None
    try:
        get_presets(names, app_state.presets)
    except PresetError as e:
        raise ApiError(422, "invalid_preset", str(e), "preset") from None
    if fmt == "flac" and bit_depth == "32f":
        raise ApiError(422, "invalid_value", "FLAC stores integer samples only; use bit_depth 16 or 24, or format "
                       "wav for 32-bit float", "bit_depth")
    nested, layout = None, None
    if params is not None and params.strip():
        from ..cli import settings_layout

        try:
            nested, layout = schema.from_json(params), settings_layout(params)
        except (schema.ParamError, ValueError) as e:
            raise ApiError(422, "invalid_params", f"params: {e}", "params") from None
    elif model is not None:
        app_state.models.path(model)  # unknown name: 422 now, not after the upload is decoded
    return names, nested, layout


def _result_headers(settings_json: str, true_peak: float, input_lufs: float, filename: str) -> dict:
    return {SETTINGS_HEADER: settings_json, "X-Dmst-True-Peak-Dbtp": f"{true_peak:.3f}",
            "X-Dmst-Input-Lufs": f"{input_lufs:.3f}",
            "Content-Disposition": f'attachment; filename="{filename}"'}


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------

def create_app(settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    data_dir = Path(settings.data_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..effects._llvm import compile_render_kernels
        from ..presets import load_presets
        from ..threads import use_threads_for_rendering
        from .jobs import JobRunner

        # As dmst render: torch on one thread (or --torch-threads), the compiled loops on the cores.
        use_threads_for_rendering(settings.torch_threads)
        for sub in ("uploads", "tmp", "jobs", "models"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
        st = app.state
        st.store = JobStore(data_dir / "jobs.sqlite3")
        st.models = Models(settings.model, data_dir / "models")
        st.presets = load_presets()
        st.pool = RenderPool(settings.render_threads, settings.max_pending)
        compile_render_kernels()
        st.models.get("default")  # once per worker, before the first request
        st.versions = _versions()
        st.runner = JobRunner(settings, st.store, st.models, st.presets)
        st.runner.start()
        try:
            yield
        finally:
            st.runner.shutdown()
            st.pool.shutdown()

    app = FastAPI(title="dmst", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  generate_unique_id_function=lambda route: route.name,  # operationIds a generated client can use
                  description="Vocal mixing as readable settings: upload a raw vocal, get the model's EQ, compressor "
                              "and saturation settings, or the mix. Errors are JSON: "
                              "`{\"error\": code, \"message\": text, \"field\": name}`.")
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(GuardMiddleware, settings=settings)

    @app.get("/health", response_model=Health, tags=["service"])
    async def health(request: Request):
        import torch

        from .. import schema
        from ..effects._llvm import kernel_threads

        st = request.app.state
        return Health(status="ok", model=st.models.get("default").name if settings.model == "default" else
                      Path(settings.model).name, schema_version=schema.SCHEMA_VERSION, versions=st.versions,
                      render_pool={"threads": st.pool.threads, "capacity": st.pool.capacity,
                                   "in_flight": st.pool.in_flight, "torch_threads": torch.get_num_threads(),
                                   "kernel_threads": kernel_threads()})

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # /docs from the swagger-ui-bundle package, not FastAPI's default CDN: the page works offline.
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="dmst API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses={401: {"model": ErrorBody}})

    @v1.get("/presets", response_model=list[PresetInfo], tags=["settings"])
    async def presets(st=Depends(state)):
        return [PresetInfo(name=n, description=p.description, source=p.source,
                           changes=[c.describe() for c in p.changes]) for n, p in st.presets.items()]

    @v1.get("/models", response_model=list[ModelInfo], tags=["settings"])
    async def models(st=Depends(state)):
        out = [ModelInfo(name="default", kind="server")]
        for name in st.models.names()[1:]:
            info = {}
            try:
                info = json.loads((st.models.dir / name / "info.json").read_text())
            except (OSError, ValueError):
                pass
            out.append(ModelInfo(name=name, kind="fine-tuned", **{k: info.get(k) for k in
                                 ("base_model", "created_at", "job", "best_val_loss", "init_val_loss")}))
        return out

    @v1.get("/schema", response_model=SchemaInfo, tags=["settings"], name="schema")
    async def schema_table():
        from dataclasses import asdict

        from .. import schema

        return SchemaInfo(schema_version=schema.SCHEMA_VERSION, groups=list(schema.GROUPS),
                          params=[{"key": p.key, **asdict(p)} for p in schema.SCHEMA])

    Settings = settings_model()

    @v1.post("/params", tags=["mixing"], dependencies=[Depends(multipart_only)],
             responses={200: {"model": Settings, "description": "the same JSON as `dmst params`"}, **_ERRORS})
    async def params(
        request: Request,
        audio: Annotated[UploadFile, File(description="the raw vocal (WAV, FLAC, AIFF, OGG...)")],
        preset: Annotated[list[str], Form(description="presets, applied in order (repeat the field)")] = [],
        amount: Annotated[float, Form(description="how much of the presets, 0..2")] = 1.0,
        model: Annotated[str, Form(description="a name from GET /v1/models")] = "default",
    ):
        st = request.app.state
        names, _, _ = _check_choice(st, preset, amount, model, None)
        upload = await save_upload(audio, data_dir / "uploads")
        try:
            await run_in_threadpool(check_audio_upload, upload, settings, settings.max_sync_duration_s)
            req = MixRequest(names=names, amount=amount, params=None, model=model, source=safe_label(audio.filename))
            text = await st.pool.run(_library(predict_settings, upload), st.models, upload, req, st.presets,
                                     timeout_s=settings.request_timeout_s, cleanup=lambda: _remove(upload))
        finally:
            _remove(upload)
        return Response(text, media_type="application/json")

    @v1.post("/mix", tags=["mixing"], dependencies=[Depends(multipart_only)], response_class=Response,
             responses={200: {"content": {"audio/wav": {}, "audio/flac": {}},
                              "description": "the mix; the settings used are in the X-Dmst-Settings header",
                              "headers": {k: {"description": v, "schema": {"type": "string"}}
                                          for k, v in RESULT_HEADERS.items()}}, **_ERRORS})
    async def mix(
        request: Request,
        audio: Annotated[UploadFile, File(description="the raw vocal")],
        preset: Annotated[list[str], Form(description="presets, applied in order (repeat the field)")] = [],
        amount: Annotated[float, Form(description="how much of the presets, 0..2")] = 1.0,
        format: Annotated[Literal["wav", "flac"], Form()] = "wav",
        bit_depth: Annotated[Literal["16", "24", "32f"], Form()] = "24",
        params: Annotated[str | None, Form(description="settings JSON (from /v1/params, edited) rendered instead of "
                                                      "the model's prediction, exactly like `dmst render --params`; "
                                                      "presets still apply on top")] = None,
        model: Annotated[str, Form(description="a name from GET /v1/models")] = "default",
    ):
        st = request.app.state
        names, nested, layout = _check_choice(st, preset, amount, model, params, format, bit_depth)
        upload = await save_upload(audio, data_dir / "uploads")
        out = data_dir / "tmp" / f"{uuid.uuid4().hex}.{format}"
        handed_over = False
        try:
            await run_in_threadpool(check_audio_upload, upload, settings, settings.max_sync_duration_s)
            label = safe_label(audio.filename)
            req = MixRequest(names=names, amount=amount, params=nested, model=model, format=format,
                             bit_depth=bit_depth, source=label, layout=layout)
            result = await st.pool.run(_library(mix_file, upload), st.models, upload, out, req, st.presets,
                                       timeout_s=settings.request_timeout_s, cleanup=lambda: _remove(upload, out))
            stem = Path(label).stem or "vocal"
            response = FileResponse(out, media_type=MEDIA_TYPES[format],
                                    headers=_result_headers(result.settings_json, result.true_peak_dbtp,
                                                            result.input_lufs, f"{stem}_mix.{format}"),
                                    background=BackgroundTask(_remove, out))
            handed_over = True
            return response
        finally:
            _remove(upload)
            if not handed_over:
                _remove(out)

    @v1.post("/curves", response_model=Curves, tags=["settings"], responses={422: {"model": ErrorBody}})
    async def curves(body: CurvesRequest):
        return await run_in_threadpool(_curves, body)

    from .routes_jobs import add_job_routes

    add_job_routes(v1, settings, data_dir, _check_choice, _result_headers)
    app.include_router(v1)
    return app


def _library(fn, upload: Path):
    """``fn`` with the dmst library's user errors turned into 4xx answers (with no server path in them)."""
    def call(*args):
        from ..audio_io import AudioFileError
        from ..console import AudioError
        from ..encoder import ModelError
        from ..presets import PresetError
        from ..schema import ParamError
        from .errors import from_library

        try:
            return fn(*args)
        except (AudioFileError, AudioError, ModelError, PresetError, ParamError) as e:
            raise from_library(library_error_without_path(e, upload)) from None
    return call


def _curves(body: CurvesRequest) -> Curves:
    import numpy as np
    import torch

    from .. import schema
    from ..effects.compressor import gain_computer
    from ..effects.eq import parametric_eq
    from ..effects.post_eq import post_eq
    from ..effects.responses import RESPONSE_FFT, magnitude_response_db

    try:
        nested = schema.validate({g: v for g, v in body.settings.items() if g in schema.GROUPS}, partial=False)
    except schema.ParamError as e:
        raise ApiError(422, "invalid_params", str(e), "settings") from None
    unknown = [g for g in body.settings if g not in schema.GROUPS]
    if unknown:
        raise ApiError(422, "invalid_params", f"unknown parameter group '{unknown[0]}'; valid groups: "
                       f"{', '.join(schema.GROUPS)}", "settings")
    sr = body.sample_rate
    # As dmst plot draws them: an impulse through the EQs' own functions (the render path), read at
    # ``points`` bins spaced evenly in log frequency over 20 Hz .. 20 kHz (or Nyquist).
    freqs, eq_db = magnitude_response_db(parametric_eq, sr, nested["eq"])
    _, post_db = magnitude_response_db(post_eq, sr, nested["post_eq"])
    top = min(20000.0, sr / 2)
    bins = np.clip(np.rint(np.geomspace(20.0, top, body.points) * RESPONSE_FFT / sr).astype(int), 1, RESPONSE_FFT // 2)
    c = nested["compressor"]
    level = torch.linspace(-80, 6, body.points, dtype=torch.float64)
    out = level + gain_computer(level, c["threshold_db"], c["ratio"], c["knee_db"]) + c["makeup_gain_db"]
    return Curves(eq={"freq_hz": freqs[bins].tolist(), "gain_db": eq_db[bins].tolist()},
                  post_eq={"freq_hz": freqs[bins].tolist(), "gain_db": post_db[bins].tolist()},
                  compressor={"input_db": level.tolist(), "output_db": out.tolist(),
                              "threshold_db": c["threshold_db"], "knee_db": c["knee_db"]})


def app_from_env() -> FastAPI:
    """The factory uvicorn's worker processes call (``--workers N``): settings from DMST_SERVE_SETTINGS."""
    return create_app(ServeSettings.from_env())
