"""The OpenAI audio API: /v1/audio/transcriptions, /v1/audio/translations, /v1/models.

``model`` picks the engine: ``whisper-1`` is the default Whisper model; an engine name
(``pocketsphinx``) or ``engine:model`` (``whisper:base``) is accepted too. The engine
that answered is reported in the ``X-STT-Engine`` / ``X-STT-Model`` / ``X-STT-Fallback``
headers, so the response bodies keep OpenAI's exact shape.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from stts.api.common import (
    decode_upload,
    get_manager,
    raw_format_from_content_type,
    read_upload,
    run_transcription,
    stream_transcription,
)
from stts.engines.base import TranscribeOptions
from stts.engines.registry import get_engine_class
from stts.errors import InvalidRequest, UnknownEngine, UnknownModel
from stts.formats import MEDIA_TYPES, ResponseFormat, render, to_json, to_verbose_json
from stts.service import EngineManager, SlotKey
from stts.transcript import Transcript

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

OPENAI_WHISPER_ID = "whisper-1"


def resolve_model(manager: EngineManager, model_id: str) -> SlotKey:
    """Map an OpenAI ``model`` value to an (engine, model) pair; 404 if unknown."""
    model_id = model_id.strip()
    try:
        if model_id == OPENAI_WHISPER_ID:
            engine = "whisper" if "whisper" in manager.enabled else manager.default_engine
            return manager.resolve(engine)
        engine, _, model = model_id.partition(":")
        return manager.resolve(engine, model or None)
    except (UnknownEngine, UnknownModel) as exc:
        raise UnknownModel(f"The model '{model_id}' does not exist or is not served here") from exc


def model_ids(manager: EngineManager) -> list[str]:
    """Every id /v1/models lists: whisper-1, engine names and engine:model pairs."""
    ids: list[str] = []
    for name in manager.enabled:
        engine_cls = get_engine_class(name)
        if not engine_cls.probe(manager.settings).available:
            continue
        if name == "whisper":
            ids.append(OPENAI_WHISPER_ID)
        ids.append(name)
        ids += [f"{name}:{m}" for m in engine_cls.known_models(manager.settings)]
    return list(dict.fromkeys(ids))


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "stts"}


@router.get("/models", summary="List models")
def list_models(manager: Annotated[EngineManager, Depends(get_manager)]) -> dict[str, Any]:
    """Models (engines and their models) this server can transcribe with."""
    return {"object": "list", "data": [_model_object(m) for m in model_ids(manager)]}


@router.get("/models/{model_id:path}", summary="Retrieve a model")
def get_model(
    model_id: str, manager: Annotated[EngineManager, Depends(get_manager)]
) -> dict[str, Any]:
    """One model by id; 404 if it is not served here."""
    if model_id not in model_ids(manager):
        raise UnknownModel(f"The model '{model_id}' does not exist or is not served here")
    return _model_object(model_id)


def _granularities(values: list[str]) -> set[str]:
    allowed = {"word", "segment"}
    chosen = {v.strip() for v in values if v.strip()}
    if chosen - allowed:
        raise InvalidRequest(f"timestamp_granularities must be among {sorted(allowed)}")
    return chosen


def _temperature(value: float | None) -> float | None:
    if value is None:
        return None
    if not 0.0 <= value <= 1.0:
        raise InvalidRequest("temperature must be between 0 and 1")
    # OpenAI: 0 means "start at 0 and raise it on failure", which is the engine's default.
    return value if value > 0 else None


def _respond(transcript: Transcript, fmt: ResponseFormat, granularities: set[str]) -> Response:
    headers = {
        "X-STT-Engine": transcript.engine,
        "X-STT-Model": transcript.model,
        "X-STT-Fallback": "true" if transcript.fallback else "false",
    }
    if fmt is ResponseFormat.json:
        return JSONResponse(to_json(transcript), headers=headers)
    if fmt is ResponseFormat.verbose_json:
        body = to_verbose_json(
            transcript,
            words="word" in granularities,
            segments="segment" in granularities or not granularities,
        )
        return JSONResponse(body, headers=headers)
    return PlainTextResponse(render(transcript, fmt), media_type=MEDIA_TYPES[fmt], headers=headers)


async def _handle(
    request: Request,
    manager: EngineManager,
    file: UploadFile,
    model: str,
    options: TranscribeOptions,
    fmt: ResponseFormat,
    granularities: set[str],
    stream: bool,
) -> Response:
    key = resolve_model(manager, model)
    data = await read_upload(file, manager.settings.audio.max_bytes)
    # Headerless PCM is read when the file part says so: audio/L16; rate=...; channels=...
    audio = await decode_upload(manager, key, data, raw_format_from_content_type(file.content_type))
    if stream:
        return StreamingResponse(
            stream_transcription(manager, audio, key, options),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-STT-Engine": key[0]},
        )
    timed = await run_transcription(request, manager, audio, key, options)
    return _respond(timed.transcript, fmt, granularities)


@router.post("/audio/transcriptions", summary="Create transcription")
async def create_transcription(
    request: Request,
    manager: Annotated[EngineManager, Depends(get_manager)],
    file: Annotated[UploadFile, File(description="audio file (any common format)")],
    model: Annotated[str, Form()] = OPENAI_WHISPER_ID,
    language: Annotated[str | None, Form(max_length=16)] = None,
    prompt: Annotated[str | None, Form(max_length=4000)] = None,
    response_format: Annotated[ResponseFormat, Form()] = ResponseFormat.json,
    temperature: Annotated[float | None, Form()] = None,
    timestamp_granularities: Annotated[list[str], Form(alias="timestamp_granularities[]")] = [],  # noqa: B006 - FastAPI copies defaults per request
    stream: Annotated[bool, Form()] = False,
) -> Response:
    """Transcribe audio into the input language (OpenAI-compatible)."""
    granularities = _granularities(timestamp_granularities)
    if granularities and response_format is not ResponseFormat.verbose_json:
        raise InvalidRequest("timestamp_granularities requires response_format=verbose_json")
    options = TranscribeOptions(
        language=language or None,
        task="transcribe",
        temperature=_temperature(temperature),
        initial_prompt=prompt or None,
        word_timestamps="word" in granularities,
    )
    return await _handle(
        request, manager, file, model, options, response_format, granularities, stream
    )


@router.post("/audio/translations", summary="Create translation")
async def create_translation(
    request: Request,
    manager: Annotated[EngineManager, Depends(get_manager)],
    file: Annotated[UploadFile, File(description="audio file (any common format)")],
    model: Annotated[str, Form()] = OPENAI_WHISPER_ID,
    prompt: Annotated[str | None, Form(max_length=4000)] = None,
    response_format: Annotated[ResponseFormat, Form()] = ResponseFormat.json,
    temperature: Annotated[float | None, Form()] = None,
) -> Response:
    """Translate audio into English text (OpenAI-compatible)."""
    key = resolve_model(manager, model)
    caps = get_engine_class(key[0])(manager.settings, key[1]).capabilities
    if not caps.translation:
        raise InvalidRequest(
            f"engine {key[0]!r} cannot translate; use a multilingual Whisper model"
        )
    options = TranscribeOptions(
        task="translate", temperature=_temperature(temperature), initial_prompt=prompt or None
    )
    return await _handle(
        request, manager, file, model, options, response_format, set(), stream=False
    )
