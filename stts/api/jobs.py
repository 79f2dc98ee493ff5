"""Jobs for long recordings: /api/v1/jobs (submit, status, result, cancel, list).

The upload streams to ``jobs.dir`` (:mod:`stts.api.jobs_upload`) under ``jobs.max_bytes``
(not the synchronous limit); fields are those of ``/v1/audio/transcriptions`` plus
``task`` and ``callback_url``. Everything is checked before the job is queued: the
model, the language, the callback host (400 when not allowed), and the file's header
(415 when not audio, 413 when it says it is longer than ``jobs.max_duration_s``). With
API keys on, a key sees only its own jobs: another key's job is 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from stts.api.common import get_manager, raw_format_from_content_type
from stts.api.jobs_upload import Upload, receive_upload
from stts.catalogue import resolve_model
from stts.engines.base import TranscribeOptions
from stts.errors import InvalidRequest
from stts.formats import MEDIA_TYPES, ResponseFormat, render, to_json, to_verbose_json
from stts.jobs import STATUSES, Job, JobService, NewJob
from stts.jobs.probe import declared_seconds
from stts.jobs.store import new_job_id
from stts.service import EngineManager

router = APIRouter(prefix="/api/v1/jobs", tags=["Jobs"])

_MAX_SEQ = 2**63  # SQLite's INTEGER is a signed 64-bit number

_FORM_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string", "default": "whisper-1"},
                        "language": {"type": "string", "maxLength": 32},
                        "prompt": {"type": "string", "maxLength": 4000},
                        "task": {"type": "string", "enum": ["transcribe", "translate"]},
                        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                        "timestamp_granularities[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": ["word", "segment"]},
                        },
                        "callback_url": {
                            "type": "string",
                            "description": "POSTed a signed event when the job ends; its "
                            "host must be in jobs.webhook_hosts",
                        },
                    },
                }
            }
        },
    }
}


async def get_jobs(request: Request) -> JobService:
    """The app's JobService (a FastAPI dependency)."""
    service: JobService = request.app.state.jobs
    return service


def owner_of(request: Request) -> str:
    """Whose jobs: the API key's name when keys are on, else everyone's (``""``)."""
    state = request.scope.get("state") or {}
    return str(state.get("api_key_name") or "")


def _location(job: Job) -> dict[str, str]:
    return {"Location": f"/api/v1/jobs/{job.id}"}


def _options(manager: EngineManager, upload: Upload) -> tuple[tuple[str, str], TranscribeOptions]:
    key = resolve_model(manager, upload.one("model") or "whisper-1")
    task = upload.one("task") or "transcribe"
    if task not in ("transcribe", "translate"):
        raise InvalidRequest("task must be 'transcribe' or 'translate'", param="task")
    caps = manager.capabilities(key)
    if task == "translate" and not caps.translation:
        raise InvalidRequest(f"engine {key[0]!r} cannot translate", param="task")
    granularities = {
        g.strip() for g in upload.many("timestamp_granularities[]", "timestamp_granularities")
    }
    granularities.discard("")
    if granularities - {"word", "segment"}:
        raise InvalidRequest(
            "timestamp_granularities must be among ['segment', 'word']",
            param="timestamp_granularities",
        )
    temperature_text = upload.one("temperature")
    temperature: float | None = None
    if temperature_text:
        try:
            temperature = float(temperature_text)
        except ValueError:
            temperature = -1.0
        if not 0.0 <= temperature <= 1.0:
            raise InvalidRequest("temperature must be between 0 and 1", param="temperature")
        temperature = temperature or None  # 0: the engine's own fallback schedule
    language = (upload.one("language") or "").strip() or None
    prompt = upload.one("prompt") or None
    if language is not None and len(language) > 32:
        raise InvalidRequest("language is too long", param="language")
    if prompt is not None and len(prompt) > 4000:
        raise InvalidRequest("prompt is longer than 4000 characters", param="prompt")
    options = TranscribeOptions(
        language=language,
        task=task,  # type: ignore[arg-type]
        temperature=temperature,
        initial_prompt=prompt,
        word_timestamps="word" in granularities,
    )
    return key, manager.check_options(key, options)


@router.post(
    "",
    status_code=202,
    summary="Submit a transcription job",
    openapi_extra=_FORM_SCHEMA,
    responses={202: {"description": "queued; Location names the job"}},
)
async def submit_job(
    request: Request,
    jobs: Annotated[JobService, Depends(get_jobs)],
    manager: Annotated[EngineManager, Depends(get_manager)],
) -> JSONResponse:
    """Queue a recording for transcription; poll the job, or get a webhook when it ends."""
    owner = owner_of(request)
    conf = jobs.conf
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit():
        jobs.check_room(min(int(declared), conf.max_bytes))  # 507 before reading a byte
    job_id = new_job_id()
    path = jobs.upload_path(job_id)
    try:
        with jobs.uploading() as account:
            upload = await receive_upload(
                request, path, conf.max_bytes, account, conf.upload_timeout_s
            )
            key, options = _options(manager, upload)
            callback = upload.one("callback_url")
            if callback:
                jobs.webhooks.check_url(callback)
            raw = raw_format_from_content_type(upload.content_type)
            seconds = await asyncio.to_thread(declared_seconds, path, raw, conf.max_duration_s)
            granularities = upload.many("timestamp_granularities[]", "timestamp_granularities")
            new = NewJob(
                owner=owner,
                filename=upload.filename,
                audio_bytes=upload.size,
                raw_format=json.dumps(
                    {
                        "sample_rate": raw.sample_rate,
                        "channels": raw.channels,
                        "encoding": raw.encoding,
                    }
                )
                if raw
                else None,
                engine=key[0],
                model=key[1],
                options=json.dumps(
                    {
                        "language": options.language,
                        "task": options.task,
                        "temperature": options.temperature,
                        "initial_prompt": options.initial_prompt,
                        "word_timestamps": options.word_timestamps,
                    }
                ),
                granularities=",".join(sorted({g.strip() for g in granularities if g.strip()})),
                callback_url=callback or None,
                duration_s=seconds,
            )
            job = jobs.submit(job_id, new, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return JSONResponse(job.public(), status_code=202, headers=_location(job))


@router.get("", summary="List jobs")
async def list_jobs(
    request: Request,
    jobs: Annotated[JobService, Depends(get_jobs)],
    status: Annotated[str | None, Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=32, description="next_cursor of a page")] = None,
) -> dict[str, Any]:
    """This key's jobs, newest first, a page at a time."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    before: int | None = None
    if cursor:
        # ASCII digits only (str.isdigit also takes superscripts and other scripts'
        # digits), below SQLite's INTEGER limit: a seq is never larger.
        if not (cursor.isascii() and cursor.isdigit()) or int(cursor) >= _MAX_SEQ:
            raise InvalidRequest("cursor is not one this server gave", param="cursor")
        before = int(cursor)
    found = jobs.page(owner_of(request), status, limit + 1, before)
    more = len(found) > limit
    found = found[:limit]
    return {
        "object": "list",
        "data": [job.public() for job in found],
        "has_more": more,
        "next_cursor": str(found[-1].seq) if more and found else None,
    }


@router.get("/{job_id}", summary="Get a job")
async def get_job(
    request: Request, job_id: str, jobs: Annotated[JobService, Depends(get_jobs)]
) -> dict[str, Any]:
    """Status, progress (audio seconds done of the total), timings, engine, error."""
    return jobs.get(job_id, owner_of(request)).public()


@router.get("/{job_id}/result", summary="Get a job's transcript")
async def get_result(
    request: Request,
    job_id: str,
    jobs: Annotated[JobService, Depends(get_jobs)],
    format: Annotated[ResponseFormat, Query()] = ResponseFormat.json,
) -> Response:
    """The transcript in any format of the synchronous API; 409 until the job succeeded."""
    job, transcript = jobs.result(job_id, owner_of(request))
    headers = {
        "X-STT-Engine": transcript.engine,
        "X-STT-Model": transcript.model,
        "X-STT-Fallback": "false",
    }
    if format is ResponseFormat.json:
        return JSONResponse(to_json(transcript), headers=headers)
    if format is ResponseFormat.verbose_json:
        granularities = set(filter(None, job.granularities.split(",")))
        body = to_verbose_json(
            transcript,
            words="word" in granularities,
            segments="segment" in granularities or not granularities,
        )
        return JSONResponse(body, headers=headers)
    return PlainTextResponse(
        render(transcript, format), media_type=MEDIA_TYPES[format], headers=headers
    )


@router.delete("/{job_id}", summary="Cancel or delete a job")
async def delete_job(
    request: Request, job_id: str, jobs: Annotated[JobService, Depends(get_jobs)]
) -> dict[str, Any]:
    """Cancel a queued or running job (a running one stops at its next segment), or delete
    a finished one; its audio and result are deleted either way."""
    job, deleted = jobs.cancel(job_id, owner_of(request))
    body = job.public()
    if not deleted:
        body["status"] = "cancelled"
    body["deleted"] = deleted
    return body
