"""Routes of the web page: ``/`` (the page), ``/web/assets/*`` (its files) and
``POST /web/render`` (the server's own SRT/VTT/text rendering of a transcript the page
already has, so a download never transcribes the audio a second time).

The page and its files need no API key (they hold no secret); ``/web/render``, like
every call the page makes, does when keys are set.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from stts.formats import MEDIA_TYPES, ResponseFormat, render
from stts.transcript import Segment, Transcript

router = APIRouter(include_in_schema=False)

RENDER_PATH = "/web/render"
RENDER_MAX_BYTES = 8 * 1024 * 1024
"""Largest body ``POST /web/render`` reads (stts.api.app's BodySizeLimit refuses more with
413). The page sends the verbose_json it got, words and tokens included: about 1 MB per
hour of speech, so this is several hours; the audio limit (100 MiB) would let one request
hold hundreds of MB of parsed JSON."""
RENDER_MAX_SEGMENTS = 50_000
"""Most segments a transcript to render may have: a 4-hour job cut every 0.3 s."""
RENDER_MAX_SEGMENT_CHARS = 20_000
"""Longest text of one segment: an engine's segments are seconds long, a few hundred
characters."""

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
# Only what the page needs, from its own origin; audio plays from blob: object URLs.
_CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _load_assets() -> dict[str, bytes]:
    """Every file of ``assets/``, read once: the set of names is fixed at start-up."""
    folder = resources.files("stts.web") / "assets"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and "." + entry.name.rsplit(".", 1)[-1] in _MEDIA_TYPES
    }


_ASSETS = _load_assets()


def _asset(name: str) -> Response:
    body = _ASSETS.get(name)
    if body is None:
        raise HTTPException(404, "Not Found")
    media_type = _MEDIA_TYPES["." + name.rsplit(".", 1)[-1]]
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/")
def page() -> Response:
    """The web page."""
    return _asset("index.html")


@router.get("/web/assets/{name}")
def asset(name: str) -> Response:
    """One of the page's files (scripts, styles, the microphone worklet)."""
    return _asset(name)


class _SegmentIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int = 0
    start: float = Field(ge=0, le=1e7)
    end: float = Field(ge=0, le=1e7)
    text: str = Field(max_length=RENDER_MAX_SEGMENT_CHARS)


class _TranscriptIn(BaseModel):
    """The part of a ``verbose_json`` body that the text formats are made from."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(max_length=RENDER_MAX_BYTES)
    duration: float = Field(0.0, ge=0, le=1e7)
    language: str | None = Field(None, max_length=64)
    segments: list[_SegmentIn] = Field(default_factory=list, max_length=RENDER_MAX_SEGMENTS)


class RenderRequest(BaseModel):
    """``POST /web/render``: a verbose_json transcript and the format wanted."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["text", "srt", "vtt"]
    transcript: _TranscriptIn


def _is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON (or is absent), as FastAPI decides for its bodies."""
    if not content_type:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _render(body: bytes) -> tuple[str, str]:
    """Parse, check and render one request body: ``(rendered text, media type)``.

    Run in a worker thread: a large transcript takes a while to parse and render, and the
    event loop keeps serving other requests meanwhile.
    """
    try:
        request = RenderRequest.model_validate_json(body)
    except ValidationError as exc:
        # The app's one handler turns it into the usual 400 (fields and reasons, no input).
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
    transcript = Transcript(
        text=request.transcript.text,
        segments=tuple(
            Segment(id=s.id, start=s.start, end=s.end, text=s.text)
            for s in request.transcript.segments
        ),
        duration=request.transcript.duration,
        language=request.transcript.language,
    )
    fmt = ResponseFormat(request.format)
    return render(transcript, fmt), MEDIA_TYPES[fmt]


@router.post(RENDER_PATH)
async def render_transcript(request: Request) -> PlainTextResponse:
    """The transcript in ``format``, rendered by :mod:`stts.formats` as the API renders it.

    The body is a :class:`RenderRequest` of at most :data:`RENDER_MAX_BYTES`.
    """
    if not _is_json(request.headers.get("content-type")):
        raise RequestValidationError(
            [{"loc": ("body",), "msg": "must be JSON (Content-Type: application/json)"}]
        )
    body = await request.body()
    text, media_type = await run_in_threadpool(_render, body)
    return PlainTextResponse(text, media_type=media_type)
