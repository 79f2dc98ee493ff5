"""Operational routes: /health (liveness), /ready (default engine loaded), /metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from stts.api.common import get_manager
from stts.metrics import CONTENT_TYPE
from stts.service import EngineManager

router = APIRouter(tags=["operations"])


@router.head("/health", include_in_schema=False)
@router.get("/health", summary="Liveness")
def health() -> dict[str, str]:
    """Always cheap: the process is up and serving HTTP."""
    return {"status": "ok"}


@router.head("/ready", include_in_schema=False, response_model=None)
@router.get("/ready", summary="Readiness", response_model=None)
def ready(
    request: Request, manager: Annotated[EngineManager, Depends(get_manager)]
) -> JSONResponse:
    """200 once the default engine is loaded; 503 while loading, failed or draining."""
    key = manager.resolve(None)
    draining = manager.closed or request.app.state.stop.draining
    slot = manager.slot(key) if not draining else None
    state = slot.state if slot is not None else "shutting_down"
    body: dict[str, Any] = {"status": "ready" if state == "loaded" else state, "engine": key[0]}
    if slot is not None and slot.error is not None:
        body["error"] = slot.error.message
    return JSONResponse(body, status_code=200 if state == "loaded" else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Requests, audio seconds, real-time factor, queues, rejections, load times, RSS."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
