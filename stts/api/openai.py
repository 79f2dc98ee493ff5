"""The OpenAI audio API: /v1/audio/transcriptions, /v1/audio/translations, /v1/models.

``model`` picks the engine (:mod:`stts.catalogue`): an alias such as ``whisper-1`` or
``gpt-4o-transcribe`` (the default Whisper model), an engine name (``pocketsphinx``) or
``engine:model`` (``whisper:base``). The engine that answered is reported in the
``X-STT-Engine`` / ``X-STT-Model`` / ``X-STT-Fallback`` headers, so the response bodies
keep OpenAI's exact shape. Every parameter is checked, against the chosen engine's
capabilities too, before the upload is read: a value that can't be honoured is a 400
naming the ``param``, never silently ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from stts.api.common import (
    Admitted,
    Verbose,
    get_manager,
    raw_format_from_content_type,
    read_upload,
    warning_headers,
)
from stts.catalogue import model_ids, resolve_model
from stts.engines.base import Capabilities, TranscribeOptions, VadParameters
from stts.engines.registry import get_engine_class
from stts.errors import InvalidRequest, UnknownModel, shorten
from stts.formats import MEDIA_TYPES, ResponseFormat, render, to_json, to_verbose_json
from stts.service import EngineManager, SlotKey
from stts.transcript import Transcript

__all__ = ["model_ids", "resolve_model", "router"]

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


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
        raise UnknownModel(f"The model {shorten(model_id)} does not exist or is not served here")
    return _model_object(model_id)


def _granularities(values: list[str]) -> set[str]:
    allowed = {"word", "segment"}
    chosen = {v.strip() for v in values if v.strip()}
    if chosen - allowed:
        raise InvalidRequest(
            f"timestamp_granularities must be among {sorted(allowed)}",
            param="timestamp_granularities",
        )
    return chosen


def _temperature(value: float | None) -> float | None:
    if value is None:
        return None
    if not 0.0 <= value <= 1.0:
        raise InvalidRequest("temperature must be between 0 and 1", param="temperature")
    # OpenAI: 0 means "start at 0 and raise it on failure", which is the engine's default.
    return value if value > 0 else None


def _include(values: list[str]) -> set[str]:
    chosen = {v.strip() for v in values if v.strip()}
    if chosen - {"logprobs"}:
        raise InvalidRequest("include may only contain 'logprobs'", param="include")
    return chosen


_VAD_FIELDS = {"type", "threshold", "silence_duration_ms", "prefix_padding_ms"}


def _chunking(value: str | None, fields: dict[str, str]) -> VadParameters | None:
    """``auto`` -> the engine's own VAD, defaults; ``server_vad`` (an object, sent as JSON
    or as ``chunking_strategy[...]`` form fields) -> VAD with its numbers; None if unset."""
    if value is not None and value.strip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise InvalidRequest(
                "chunking_strategy is not a JSON object", param="chunking_strategy"
            )
        fields = {str(k): str(v) for k, v in parsed.items()}
        value = None
    if value is not None:
        if value.strip() != "auto" or fields:
            raise InvalidRequest(
                'chunking_strategy must be \'auto\' or {"type": "server_vad", ...}',
                param="chunking_strategy",
            )
        return VadParameters()
    if not fields:
        return None
    if fields.get("type") != "server_vad" or set(fields) - _VAD_FIELDS:
        raise InvalidRequest(
            "chunking_strategy object must have type 'server_vad' and only threshold, "
            "silence_duration_ms, prefix_padding_ms",
            param="chunking_strategy",
        )
    try:
        threshold = float(fields["threshold"]) if "threshold" in fields else None
        silence = int(fields["silence_duration_ms"]) if "silence_duration_ms" in fields else None
        padding = int(fields["prefix_padding_ms"]) if "prefix_padding_ms" in fields else None
    except ValueError as exc:
        raise InvalidRequest(
            "chunking_strategy numbers are malformed", param="chunking_strategy"
        ) from exc
    if (
        (threshold is not None and not 0.0 <= threshold <= 1.0)
        or (silence is not None and not 0 <= silence <= 60_000)
        or (padding is not None and not 0 <= padding <= 60_000)
    ):
        raise InvalidRequest(
            "chunking_strategy: threshold must be within 0..1 and the durations within 0..60000 ms",
            param="chunking_strategy",
        )
    return VadParameters(threshold, silence, padding)


async def _bracket_fields(request: Request, name: str) -> dict[str, str]:
    """Form fields ``name[key]=value`` (how OpenAI's clients send an object) as a dict."""
    form = await request.form()  # already parsed for the declared fields: no second read
    prefix = name + "["
    return {
        key[len(prefix) : -1]: str(value)
        for key, value in form.multi_items()
        if key.startswith(prefix) and key.endswith("]") and isinstance(value, str)
    }


def _capabilities(manager: EngineManager, key: SlotKey) -> Capabilities:
    slot = manager.slot(key)
    if slot.capabilities is not None:
        return slot.capabilities
    return get_engine_class(key[0])(manager.settings, key[1]).capabilities


def _respond(
    transcript: Transcript, fmt: ResponseFormat, granularities: set[str], logprobs: bool
) -> Response:
    headers = {
        "X-STT-Engine": transcript.engine,
        "X-STT-Model": transcript.model,
        "X-STT-Fallback": "true" if transcript.fallback else "false",
    }
    if fmt is ResponseFormat.json:
        return JSONResponse(to_json(transcript, with_logprobs=logprobs), headers=headers)
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
    key: SlotKey,
    options: TranscribeOptions,
    fmt: ResponseFormat,
    granularities: set[str],
    stream: bool,
    logprobs: bool = False,
) -> Response:
    # The place on the engine is held before the upload is read or decoded: a request
    # that does not fit costs nothing. (Lead's code: admission, streaming headers.)
    async with Admitted(request, manager, key) as work:
        data = await read_upload(file, manager.settings.audio.max_bytes)
        # Headerless PCM is read when the file part says so: audio/L16; rate=...; channels=...
        audio = await work.decode(data, raw_format_from_content_type(file.content_type))
        del data
        if stream:
            # The first event is decoded before the headers go out, so they name the
            # engine that answered and an early error keeps its own status.
            verbose = (
                Verbose(words="word" in granularities)
                if fmt is ResponseFormat.verbose_json
                else None
            )
            events = await work.stream(audio, options, verbose)
            return StreamingResponse(
                events,
                media_type="text/event-stream",
                headers={
                    "Cache-Control": "no-cache",
                    "X-STT-Engine": work.engine[0],
                    "X-STT-Model": work.engine[1],
                    "X-STT-Fallback": "true" if work.engine != key else "false",
                    **warning_headers(audio),
                },
            )
        timed = await work.run(audio, options)
    response = _respond(timed.transcript, fmt, granularities, logprobs)
    response.headers.update(warning_headers(audio))
    return response


@router.post("/audio/transcriptions", summary="Create transcription")
async def create_transcription(
    request: Request,
    manager: Annotated[EngineManager, Depends(get_manager)],
    file: Annotated[UploadFile, File(description="audio file (any common format)")],
    model: Annotated[str, Form()] = "whisper-1",
    language: Annotated[
        str | None, Form(max_length=32, description="ISO-639-1 code, locale or English name")
    ] = None,
    prompt: Annotated[str | None, Form(max_length=4000)] = None,
    response_format: Annotated[ResponseFormat, Form()] = ResponseFormat.json,
    temperature: Annotated[float | None, Form()] = None,
    timestamp_granularities: Annotated[list[str], Form(alias="timestamp_granularities[]")] = [],  # noqa: B006 - FastAPI copies defaults per request
    timestamp_granularities_plain: Annotated[list[str], Form(alias="timestamp_granularities")] = [],  # noqa: B006
    include: Annotated[list[str], Form(alias="include[]")] = [],  # noqa: B006
    include_plain: Annotated[list[str], Form(alias="include")] = [],  # noqa: B006
    chunking_strategy: Annotated[str | None, Form(max_length=1000)] = None,
    stream: Annotated[bool, Form()] = False,
) -> Response:
    """Transcribe audio into the input language (OpenAI-compatible)."""
    granularities = _granularities(timestamp_granularities + timestamp_granularities_plain)
    if granularities and response_format is not ResponseFormat.verbose_json:
        raise InvalidRequest(
            "timestamp_granularities requires response_format=verbose_json",
            param="timestamp_granularities",
        )
    # stts's extension: a verbose_json stream adds transcript.text.segment events.
    if stream and response_format not in (
        ResponseFormat.json,
        ResponseFormat.text,
        ResponseFormat.verbose_json,
    ):
        raise InvalidRequest(
            "stream=true answers with text events: response_format must be json, text "
            "or verbose_json",
            param="stream",
        )
    logprobs = "logprobs" in _include(include + include_plain)
    if logprobs and (stream or response_format is not ResponseFormat.json):
        raise InvalidRequest(
            "include[]=logprobs needs response_format=json and no stream", param="include"
        )
    vad = _chunking(chunking_strategy, await _bracket_fields(request, "chunking_strategy"))
    key = resolve_model(manager, model)
    caps = _capabilities(manager, key)
    if logprobs and not caps.word_probabilities:
        raise InvalidRequest(
            f"engine {key[0]!r} has no word probabilities, so no logprobs", param="include"
        )
    if vad is not None and vad != VadParameters() and not caps.vad:
        raise InvalidRequest(
            f"engine {key[0]!r} cannot cut audio with server_vad settings; "
            "use chunking_strategy=auto",
            param="chunking_strategy",
        )
    options = TranscribeOptions(
        language=language or None,
        task="transcribe",
        temperature=_temperature(temperature),
        initial_prompt=prompt or None,
        # Whisper's word probabilities come from its word alignment.
        word_timestamps="word" in granularities or logprobs,
        vad_filter=True if vad is not None and caps.vad else None,
        vad=vad if vad is not None and caps.vad else None,
    )
    options = manager.check_options(key, options)  # 400 for a language it doesn't know
    return await _handle(
        request, manager, file, key, options, response_format, granularities, stream, logprobs
    )


@router.post("/audio/translations", summary="Create translation")
async def create_translation(
    request: Request,
    manager: Annotated[EngineManager, Depends(get_manager)],
    file: Annotated[UploadFile, File(description="audio file (any common format)")],
    model: Annotated[str, Form()] = "whisper-1",
    prompt: Annotated[str | None, Form(max_length=4000)] = None,
    response_format: Annotated[ResponseFormat, Form()] = ResponseFormat.json,
    temperature: Annotated[float | None, Form()] = None,
) -> Response:
    """Translate audio into English text (OpenAI-compatible)."""
    key = resolve_model(manager, model)
    if not _capabilities(manager, key).translation:
        raise InvalidRequest(
            f"engine {key[0]!r} cannot translate; use a multilingual Whisper model",
            param="model",
        )
    options = TranscribeOptions(
        task="translate", temperature=_temperature(temperature), initial_prompt=prompt or None
    )
    return await _handle(request, manager, file, key, options, response_format, set(), stream=False)
