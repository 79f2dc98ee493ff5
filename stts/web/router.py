"""Routes of the web page: ``/`` (the page), ``/web/assets/*`` (its files) and
``POST /web/render`` (the server's own SRT/VTT/text rendering of a transcript the page
already has, so a download never transcribes the audio a second time).

The page and its files need no API key (they hold no secret); ``/web/render``, like
every call the page makes, does when keys are set.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from stts.formats import MEDIA_TYPES, ResponseFormat, render
from stts.transcript import Segment, Transcript

router = APIRouter(include_in_schema=False)

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
    text: str = Field(max_length=100_000)


class _TranscriptIn(BaseModel):
    """The part of a ``verbose_json`` body that the text formats are made from."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(max_length=10_000_000)
    duration: float = Field(0.0, ge=0, le=1e7)
    language: str | None = Field(None, max_length=64)
    segments: list[_SegmentIn] = Field(default_factory=list, max_length=200_000)


class RenderRequest(BaseModel):
    """``POST /web/render``: a verbose_json transcript and the format wanted."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["text", "srt", "vtt"]
    transcript: _TranscriptIn


@router.post("/web/render")
def render_transcript(request: RenderRequest) -> PlainTextResponse:
    """The transcript in ``format``, rendered by :mod:`stts.formats` as the API renders it."""
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
    return PlainTextResponse(render(transcript, fmt), media_type=MEDIA_TYPES[fmt])
