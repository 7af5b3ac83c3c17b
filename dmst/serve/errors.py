"""One JSON error shape for every 4xx/5xx answer: ``{"error": code, "message": text, "field": name|null}``.

``message`` follows the CLI's rule: what is wrong; what to do.  Library errors (a bad
audio file, an unknown preset, an out-of-range setting) map to 4xx here, so a user's
mistake never becomes a 500.
"""
from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorBody(BaseModel):
    error: str
    message: str
    field: str | None = None


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.field = status, error, " ".join(message.split()), field
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = ErrorBody(error=self.error, message=self.message, field=self.field)
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


def bad_value(message: str, field: str | None = None) -> ApiError:
    return ApiError(422, "invalid_value", message, field)


def from_library(e: Exception, field: str | None = None) -> ApiError:
    """A dmst library error (one line) as the matching HTTP error."""
    from ..audio_io import AudioFileError
    from ..console import AudioError
    from ..encoder import ModelError
    from ..presets import PresetError
    from ..schema import ParamError

    text = " ".join(str(e).split())
    if isinstance(e, AudioFileError) and "not an audio file dmst can read" in text:
        return ApiError(415, "unsupported_media_type", text, field or "audio")
    if isinstance(e, (AudioFileError, AudioError)):
        return ApiError(422, "invalid_audio", text, field or "audio")
    if isinstance(e, PresetError):
        return ApiError(422, "invalid_preset", text, field)
    if isinstance(e, ParamError):
        return ApiError(422, "invalid_params", text, field or "params")
    if isinstance(e, ModelError):
        return ApiError(422, "invalid_model", text, field or "model")
    raise e


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 408: "request_timeout", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "invalid_value", 429: "too_many_requests", 503: "unavailable"}


def install(app) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path", "form", "header")]
        field = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        if first.get("type") == "missing":
            message = f"missing {field or 'field'}; send it as a form field (multipart/form-data)" if field != "audio" \
                else "no audio file; send the vocal as the multipart field 'audio'"
        else:
            message = f"{field}: {msg}" if field else msg
        return ApiError(422, "invalid_request", message, field).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        message = e.detail if isinstance(e.detail, str) else str(e.detail)
        return ApiError(e.status_code, _CODES.get(e.status_code, "error"), message, headers=getattr(e, "headers", None)).response()
