"""Limits and safe file handling: request size and time, API key, uploads, zip archives.

No name a client sends ever becomes a path: uploads are stored under random server-side
names, zip members are unpacked under numbered names after their paths and sizes are
checked, and models are chosen by a name from a fixed list.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ApiError

CHUNK = 1 << 20


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body is read; an HTTPException so FastAPI's form parser passes it through unchanged."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the {limit / 2**20:g} MB limit; send a smaller file "
                              "(or ask the operator to raise --max-upload-mb)")


class BodyTimeout(StarletteHTTPException):
    def __init__(self, seconds: float):
        super().__init__(408, f"the request body took longer than {seconds:g} s to arrive; retry on a faster link")


def key_matches(expected: str | None, headers) -> bool:
    """True without a configured key; else when X-API-Key or 'Authorization: Bearer' carries it."""
    if not expected:
        return True
    given = headers.get("x-api-key")
    if not given:
        auth = headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else None
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def _error_body(status: int, error: str, message: str) -> bytes:
    return json.dumps({"error": error, "message": message, "field": None}).encode()


class GuardMiddleware:
    """Pure ASGI, in front of everything: refuse a missing API key and an oversized body *before* reading it,
    count the bytes of a body without a Content-Length, and bound the time a body may take to arrive."""

    def __init__(self, app, settings):
        self.app, self.settings = app, settings

    async def _reply(self, send, status: int, error: str, message: str, extra=()):
        body = _error_body(status, error, message)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.settings.max_upload_bytes
        if scope["path"].startswith("/v1/") and not key_matches(self.settings.api_key, headers):
            return await self._reply(send, 401, "unauthorized", "missing or wrong API key; send it in the X-API-Key "
                                     "header (or Authorization: Bearer KEY)", [(b"www-authenticate", b"Bearer")])
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._reply(send, 413, "payload_too_large", BodyTooLarge(limit).detail)

        received, done = 0, False
        deadline = time.monotonic() + self.settings.upload_timeout_s

        async def guarded_receive():
            nonlocal received, done
            if done:  # after the body: only disconnect notices, no deadline
                return await receive()
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                raise BodyTimeout(self.settings.upload_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                done = not message.get("more_body", False)
            return message

        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except (BodyTooLarge, BodyTimeout) as e:
            if started:
                raise
            await self._reply(send, e.status_code, "payload_too_large" if e.status_code == 413 else "request_timeout",
                              e.detail)


# ---------------------------------------------------------------------------
# uploads
# ---------------------------------------------------------------------------

def safe_label(filename: str | None, default: str = "upload") -> str:
    """A client's file name reduced to a harmless label for metadata (never used as a path)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = re.sub(r"[^A-Za-z0-9 _.()+-]", "_", name)[:100].strip(" .")
    return name or default


async def save_upload(upload, folder: Path, suffix: str = "") -> Path:
    """Copy an UploadFile to ``folder`` under a random name; an empty upload is refused (nothing is kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}{suffix}"
    size = 0
    try:
        with open(path, "xb") as out:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(422, "invalid_audio", "the uploaded file is empty (0 bytes); send the recording itself", "audio")
    return path


def check_audio_upload(path: Path, settings, max_duration_s: float, field: str = "audio"):
    """Header checks of a stored upload: readable audio, an accepted container, not too long."""
    from ..audio_io import AudioFileError, check_input
    from .errors import from_library

    try:
        info = check_input(path)
    except AudioFileError as e:
        text = str(e).replace(str(path), "the uploaded file")
        raise from_library(AudioFileError(text), field) from None
    if info.format.upper() not in settings.accepted_formats:
        raise ApiError(415, "unsupported_media_type", f"audio format {info.format} is not accepted here; send one of "
                       f"{', '.join(settings.accepted_formats)}", field)
    # Decoded size is duration x rate x channels: each is bounded, so a tiny compressed file cannot fill memory.
    if info.channels > settings.max_channels:
        raise ApiError(422, "invalid_audio", f"the audio has {info.channels} channels; this server takes at most "
                       f"{settings.max_channels}; send a mono or stereo vocal", field)
    if not 8000 <= info.sample_rate <= settings.max_sample_rate:
        raise ApiError(422, "invalid_audio", f"the audio's sample rate is {info.sample_rate} Hz; this server takes "
                       f"8000 to {settings.max_sample_rate} Hz", field)
    if info.duration > max_duration_s:
        hint = "; send it to POST /v1/jobs (kind=mix)" if max_duration_s < settings.max_duration_s else ""
        raise ApiError(413, "too_long", f"the audio is {info.duration:.1f} s long; the limit here is "
                       f"{max_duration_s:g} s{hint}", field)
    return info


def library_error_without_path(e: Exception, path: Path) -> Exception:
    """The same error with the server-side path replaced, so a client never sees the file system."""
    text = str(e).replace(str(path), "the uploaded file")
    return type(e)(text)


# ---------------------------------------------------------------------------
# zip archives (fine-tune data)
# ---------------------------------------------------------------------------

AUDIO_EXT = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3", ".w64", ".rf64", ".caf")


def _member_parts(name: str) -> list[str]:
    """The path components of a zip member, refusing anything that could leave the archive's folder."""
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        raise ApiError(422, "invalid_zip", f"zip member {name!r} has an absolute or Windows path; zip the raw/ and "
                       "mixed/ folders with relative paths", "data")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ApiError(422, "invalid_zip", f"zip member {name!r} points outside the archive ('..'); zip the raw/ and "
                       "mixed/ folders with plain relative paths", "data")
    return parts


def unpack_pairs(zip_path: Path, dest: Path, settings) -> dict:
    """Check a fine-tune zip and unpack its (raw, mixed) pairs as ``dest/raw/NNNN.ext``, ``dest/mixed/NNNN.ext``.

    Members are matched by stem, as ``dmst train`` matches files.  Limits: member count,
    total unpacked size, and compression ratio (declared sizes are also checked while
    unpacking, so a forged header cannot unpack more).  Returns the pair names by number.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ApiError(422, "invalid_zip", f"the data file is not a zip archive ({e}); zip the raw/ and mixed/ folders",
                       "data") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > settings.max_zip_members:
            raise ApiError(413, "zip_too_large", f"the zip has {len(infos)} members; the limit is "
                           f"{settings.max_zip_members}", "data")
        limit = int(settings.max_zip_uncompressed_mb * 2**20)
        files: dict[str, dict[str, zipfile.ZipInfo]] = {"raw": {}, "mixed": {}}
        total = 0
        for info in infos:
            parts = _member_parts(info.filename)
            if info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("."):
                continue
            if info.flag_bits & 0x1:
                raise ApiError(422, "invalid_zip", f"zip member {info.filename!r} is encrypted; send an unencrypted zip",
                               "data")
            total += info.file_size
            ratio = info.file_size / max(info.compress_size, 1)
            if total > limit or (info.file_size > 2**20 and ratio > settings.max_zip_ratio):
                raise ApiError(413, "zip_bomb", f"the zip unpacks to more than allowed (member {info.filename!r}: "
                               f"{info.file_size} bytes, ratio {ratio:.0f}:1; limits {settings.max_zip_uncompressed_mb:g}"
                               f" MB in all, {settings.max_zip_ratio:g}:1); send the audio files zipped as they are",
                               "data")
            if len(parts) >= 2 and parts[-2] in files and len(parts) <= 3:
                ext = os.path.splitext(parts[-1])[1].lower()
                if ext in AUDIO_EXT:
                    files[parts[-2]][os.path.splitext(parts[-1])[0]] = info
        stems = sorted(files["raw"].keys() & files["mixed"].keys())
        if not stems:
            raise ApiError(422, "invalid_zip", "the zip holds no pairs: put each raw vocal in raw/NAME.wav and its mix "
                           "in mixed/NAME.wav (same NAME)", "data")
        written = 0
        names = {}
        try:
            for i, stem in enumerate(stems, 1):
                for kind in ("raw", "mixed"):
                    info = files[kind][stem]
                    target = dest / kind / f"{i:04d}{os.path.splitext(info.filename)[1].lower()}"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    size = 0
                    with archive.open(info) as src, open(target, "xb") as out:
                        while chunk := src.read(CHUNK):
                            size += len(chunk)
                            written += len(chunk)
                            if size > info.file_size or written > limit:
                                raise ApiError(413, "zip_bomb", f"zip member {info.filename!r} unpacks to more than "
                                               "its header says; send an ordinary zip", "data")
                            out.write(chunk)
                names[f"{i:04d}"] = stem[:200]
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError) as e:
            raise ApiError(422, "invalid_zip", f"the zip could not be unpacked ({e}); zip the folders again",
                           "data") from None
    return names
