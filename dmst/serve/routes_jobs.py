"""The /v1/jobs routes: long mixes and fine-tunes, kept in the job store."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from .engine import MODEL_NAME, MixRequest
from .errors import ApiError, ErrorBody
from .jobs import job_dir, remove_job_files
from .limits import check_audio_upload, safe_label, save_upload, unpack_pairs
from .models import JobDeleted, JobInfo

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_ERRORS = {code: {"model": ErrorBody} for code in (404, 409, 413, 415, 422)}


def _info(job) -> JobInfo:
    result = None
    if job.result is not None:
        result = dict(job.result)
        if "settings" in result:
            result["settings"] = json.loads(result["settings"])
        result.pop("file", None)
    return JobInfo(id=job.id, kind=job.kind, state=job.state, progress=job.progress, error=job.error,
                   attempts=job.attempts, created_at=job.created_at, updated_at=job.updated_at,
                   finished_at=job.finished_at, result=result,
                   result_url=f"/v1/jobs/{job.id}/result" if job.state == "succeeded" else None)


def add_job_routes(router, settings, data_dir: Path, check_choice, result_headers) -> None:
    from .app import multipart_only

    def get_job(request: Request, job_id: str):
        job = request.app.state.store.get(job_id) if JOB_ID.match(job_id) else None
        if job is None or (job.cancel and job.state != "running"):
            raise ApiError(404, "not_found", f"no job {job_id[:40]!r}; job ids come from POST /v1/jobs (finished "
                           f"jobs are removed after {settings.retention_s:g} s)", "job_id")
        return job

    @router.post("/jobs", status_code=202, response_model=JobInfo, tags=["jobs"], responses=_ERRORS,
                 dependencies=[Depends(multipart_only)])
    async def create_job(
        request: Request,
        kind: Annotated[Literal["mix", "finetune"], Form(description="mix: one long file; finetune: a zip of pairs")],
        audio: Annotated[UploadFile | None, File(description="mix: the raw vocal")] = None,
        data: Annotated[UploadFile | None, File(description="finetune: a zip of raw/NAME.wav and mixed/NAME.wav")] = None,
        preset: Annotated[list[str], Form(description="mix: presets in order")] = [],
        amount: Annotated[float, Form(description="mix: 0..2")] = 1.0,
        format: Annotated[Literal["wav", "flac"], Form()] = "wav",
        bit_depth: Annotated[Literal["16", "24", "32f"], Form()] = "24",
        params: Annotated[str | None, Form(description="mix: settings JSON instead of the prediction")] = None,
        model: Annotated[str, Form(description="mix: a name from GET /v1/models")] = "default",
        base_model: Annotated[str, Form(description="finetune: the model to start from")] = "default",
        name: Annotated[str | None, Form(description="finetune: the new model's name (letters, digits, . _ -); "
                                                     "names are never reused, so each fine-tune is a new version")] = None,
        time_budget_s: Annotated[float, Form(gt=0, description="finetune: training time, seconds")] = 300.0,
        epochs: Annotated[int, Form(ge=1, le=1000)] = 30,
        batch_size: Annotated[int | None, Form(ge=1, le=64)] = None,
        crop_seconds: Annotated[float | None, Form(ge=0.5, le=30)] = None,
    ):
        st = request.app.state
        store = st.store
        job_id = store.new_id()
        folder = job_dir(data_dir, job_id)
        try:
            if kind == "mix":
                if audio is None:
                    raise ApiError(422, "invalid_request", "no audio file; send the vocal as the multipart field "
                                   "'audio'", "audio")
                names, nested, layout = check_choice(st, preset, amount, model, params, format, bit_depth)
                folder.mkdir(parents=True)
                upload = await save_upload(audio, folder)
                upload.rename(folder / "input")
                await run_in_threadpool(check_audio_upload, folder / "input", settings, settings.max_duration_s)
                req = MixRequest(names=names, amount=amount, params=nested, model=model, format=format,
                                 bit_depth=bit_depth, source=safe_label(audio.filename), layout=layout)
                request_doc = {"mix": req.__dict__}
            else:
                if data is None:
                    raise ApiError(422, "invalid_request", "no data file; send a zip of raw/ and mixed/ as the "
                                   "multipart field 'data'", "data")
                if time_budget_s > settings.max_finetune_s:
                    raise ApiError(422, "invalid_value", f"time_budget_s {time_budget_s:g} is over this server's "
                                   f"limit of {settings.max_finetune_s:g} s", "time_budget_s")
                st.models.path(base_model)
                name = name or f"{base_model}-ft-{job_id[:8]}"
                if not MODEL_NAME.match(name) or name == "default":
                    raise ApiError(422, "invalid_value", f"model name {name[:80]!r} is not valid; use 1-64 letters, "
                                   "digits, '.', '_' or '-', starting with a letter or digit (not 'default')", "name")
                taken = st.models.exists(name) or any(
                    j.kind == "finetune" and j.state in ("queued", "running") and
                    j.request["finetune"]["name"] == name for j in store.all())
                if taken:
                    raise ApiError(409, "conflict", f"a model named '{name}' exists or is being trained; choose "
                                   "another name (each fine-tune is a new version)", "name")
                folder.mkdir(parents=True)
                archive = await save_upload(data, folder, ".zip")
                pairs = await run_in_threadpool(unpack_pairs, archive, folder / "data", settings)
                archive.unlink()
                request_doc = {"finetune": {"name": name, "base_model": base_model, "time_budget_s": time_budget_s,
                                            "epochs": epochs, "batch_size": batch_size, "crop_seconds": crop_seconds,
                                            "pairs": pairs}}
            job = store.create(job_id, kind, request_doc)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return JSONResponse(_info(job).model_dump(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @router.get("/jobs/{job_id}", response_model=JobInfo, tags=["jobs"], responses={404: {"model": ErrorBody}})
    async def job_status(job=Depends(get_job)):
        return _info(job)

    @router.get("/jobs/{job_id}/result", tags=["jobs"],
                responses={200: {"content": {"audio/wav": {}, "audio/flac": {}, "application/json": {}},
                                 "description": "mix: the file, with the settings in X-Dmst-Settings; finetune: "
                                                "JSON naming the new model"},
                           404: {"model": ErrorBody}, 409: {"model": ErrorBody}})
    async def job_result(job=Depends(get_job)):
        if job.state != "succeeded":
            why = f": {job.error}" if job.error and job.state == "failed" else ""
            raise ApiError(409, "conflict", f"job {job.id} is {job.state}{why}; poll GET /v1/jobs/{job.id} until "
                           "its state is succeeded", "job_id")
        if job.kind == "finetune":
            return JSONResponse(job.result)
        path = job_dir(data_dir, job.id) / job.result["file"]
        if not path.is_file():
            raise ApiError(404, "not_found", f"the result of job {job.id} has been removed; run the job again",
                           "job_id")
        stem = Path(job.request["mix"]["source"]).stem or "vocal"
        fmt = job.request["mix"]["format"]
        return FileResponse(path, media_type=job.result["media_type"],
                            headers=result_headers(job.result["settings"], job.result["true_peak_dbtp"],
                                                   job.result["input_lufs"], f"{stem}_mix.{fmt}"))

    @router.delete("/jobs/{job_id}", response_model=JobDeleted, tags=["jobs"], responses={404: {"model": ErrorBody}})
    async def job_delete(request: Request, job=Depends(get_job)):
        store = request.app.state.store
        job = store.cancel(job.id)
        if job is not None and job.state == "running":
            return JSONResponse({"id": job.id, "state": "cancelling"}, status_code=202)  # its worker stops it
        remove_job_files(data_dir, job.id)
        store.delete(job.id)
        return JobDeleted(id=job.id, state="deleted")
