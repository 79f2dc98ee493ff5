"""Routes kept for existing users: /api/v1/stt, /api/v2/stt/{engine}, /api/v1/engines.

``POST /api/v1/stt`` takes the audio as the multipart field ``speech`` (or as the raw
request body with an audio content type); the engine comes from ``?engine=``, else the
``X-STT-Engine`` header, else the default. The answer says which engine answered and
whether it was a fallback: ``{"text", "time", "engine", "fallback", ...}``.
``POST /api/v1/detect-language`` takes the audio the same way and answers which
language is spoken.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from stts.api.common import (
    Admitted,
    get_manager,
    raw_format_from_content_type,
    read_bounded,
    read_upload,
    warning_headers,
)
from stts.engines.base import TranscribeOptions
from stts.engines.registry import engine_names
from stts.errors import EmptyAudio, InvalidRequest, UnknownEngine, shorten
from stts.service import EngineManager, engine_report

router = APIRouter(prefix="/api", tags=["legacy"])


async def _body_audio(request: Request, speech: UploadFile | None, max_bytes: int) -> bytes:
    if speech is not None:
        return await read_upload(speech, max_bytes)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        # The form was parsed already: the audio must be in its 'speech' field.
        raise InvalidRequest("no audio: the multipart field 'speech' is missing")
    data = await read_bounded(request.stream(), max_bytes)
    if not data:
        raise EmptyAudio("no audio: send it as the multipart field 'speech' or as the body")
    return data


async def _stt(
    request: Request,
    manager: EngineManager,
    engine: str | None,
    speech: UploadFile | None,
    language: str | None,
    word_timestamps: bool,
) -> JSONResponse:
    key = manager.resolve(engine or None)
    # A language the engine doesn't know is a 400 before a byte of audio is read.
    options = manager.check_options(
        key, TranscribeOptions(language=language or None, word_timestamps=word_timestamps)
    )
    content_type = (
        speech.content_type if speech is not None else request.headers.get("content-type")
    )
    async with Admitted(request, manager, key) as work:
        data = await _body_audio(request, speech, manager.settings.audio.max_bytes)
        audio = await work.decode(data, raw_format_from_content_type(content_type))
        del data
        timed = await work.run(audio, options)
    t = timed.transcript
    body: dict[str, Any] = {
        "text": t.text,
        "time": round(timed.seconds, 3),
        "engine": t.engine,
        "model": t.model,
        "fallback": t.fallback,
        "language": t.language,
        "duration": round(audio.duration, 3),
        "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in t.segments],
    }
    if word_timestamps:
        body["words"] = [
            {"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
            for w in t.words
        ]
    headers = {
        "X-STT-Engine": t.engine,
        "X-STT-Model": t.model,
        "X-STT-Fallback": "true" if t.fallback else "false",
        **warning_headers(audio),
    }
    return JSONResponse(body, headers=headers)


@router.post("/v1/stt", summary="Transcribe (legacy v1)")
async def stt_v1(
    request: Request,
    manager: Annotated[EngineManager, Depends(get_manager)],
    speech: Annotated[UploadFile | None, File(description="the audio")] = None,
    engine: Annotated[str | None, Query(description="engine name")] = None,
    x_stt_engine: Annotated[str | None, Header(description="engine name")] = None,
    language: Annotated[str | None, Query(max_length=32)] = None,
    word_timestamps: Annotated[bool, Query()] = False,
) -> JSONResponse:
    """Transcribe with the engine from ?engine=, X-STT-Engine or the default."""
    return await _stt(request, manager, engine or x_stt_engine, speech, language, word_timestamps)


@router.post("/v2/stt/{engine}", summary="Transcribe with a named engine (legacy v2)")
async def stt_v2(
    request: Request,
    engine: str,
    manager: Annotated[EngineManager, Depends(get_manager)],
    speech: Annotated[UploadFile | None, File(description="the audio")] = None,
    language: Annotated[str | None, Query(max_length=32)] = None,
    word_timestamps: Annotated[bool, Query()] = False,
) -> JSONResponse:
    """Transcribe with the engine named in the path."""
    return await _stt(request, manager, engine, speech, language, word_timestamps)


@router.post("/v1/detect-language", summary="Identify the spoken language")
async def detect_language(
    request: Request,
    manager: Annotated[EngineManager, Depends(get_manager)],
    speech: Annotated[UploadFile | None, File(description="the audio")] = None,
    engine: Annotated[str | None, Query(description="engine name")] = None,
    x_stt_engine: Annotated[str | None, Header(description="engine name")] = None,
    top: Annotated[int, Query(ge=1, le=100, description="how many languages to list")] = 5,
) -> JSONResponse:
    """The language of the speech (from its first 30 s), with the most likely alternatives.

    The engine is the one named (``?engine=``, ``X-STT-Engine``), else the default engine
    if it can identify languages, else the first enabled engine that can (Whisper with a
    multilingual model); one that can't answers 400.
    """
    name = engine or x_stt_engine or manager.language_detector()
    key = manager.resolve(name)
    content_type = (
        speech.content_type if speech is not None else request.headers.get("content-type")
    )
    async with Admitted(request, manager, key) as work:
        data = await _body_audio(request, speech, manager.settings.audio.max_bytes)
        audio = await work.decode(data, raw_format_from_content_type(content_type))
        del data
        guess = await work.detect_language(audio, top)
    return JSONResponse(
        {**guess.as_dict(), "duration": round(audio.duration, 3)},
        headers={"X-STT-Engine": guess.engine, "X-STT-Model": guess.model},
    )


@router.get("/v1/engines", summary="List engines")
def list_engines(manager: Annotated[EngineManager, Depends(get_manager)]) -> dict[str, Any]:
    """Every engine with availability and capabilities; never loads a model."""
    details = {name: engine_report(manager, name) for name in engine_names()}
    return {
        "default": manager.default_engine,
        "available": [n for n, d in details.items() if d["enabled"] and d["available"]],
        "all": list(details),
        "details": details,
    }


@router.get("/v1/engines/{name}", summary="Describe one engine")
def get_engine(
    name: str, manager: Annotated[EngineManager, Depends(get_manager)]
) -> dict[str, Any]:
    """One engine's availability and capabilities; 404 if unknown."""
    if name not in engine_names():
        raise UnknownEngine(f"unknown engine {shorten(name)}")
    return engine_report(manager, name)
