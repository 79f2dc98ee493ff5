"""Operational routes: /health (liveness), /ready (default engine loaded), /metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from stts.api.common import get_manager
from stts.metrics import CONTENT_TYPE
from stts.service import EngineManager
from stts.slots import EngineSlot

router = APIRouter(tags=["operations"])


@router.head("/health", include_in_schema=False)
@router.get("/health", summary="Liveness")
def health() -> dict[str, str]:
    """Always cheap: the process is up and serving HTTP."""
    return {"status": "ok"}


def _reloadable(slot: EngineSlot) -> bool:
    """Freed for being idle (or being loaded again after that): the model loaded once, so
    the next request loads it again. Not "not ready": a balancer that took the instance
    out of rotation for it would never send the request that loads the model back."""
    return slot.unloads > 0 and slot.state in ("unloaded", "loading")


@router.head("/ready", include_in_schema=False, response_model=None)
@router.get("/ready", summary="Readiness", response_model=None)
def ready(
    request: Request, manager: Annotated[EngineManager, Depends(get_manager)]
) -> JSONResponse:
    """200 once the default engine is loaded, and after an idle unload (the model is
    loaded again on the next request); 503 while first loading, failed or draining."""
    key = manager.resolve(None)
    draining = manager.closed or request.app.state.stop.draining
    slot = manager.slot(key) if not draining else None
    state = slot.state if slot is not None else "shutting_down"
    ok = slot is not None and (state == "loaded" or _reloadable(slot))
    body: dict[str, Any] = {"status": "ready" if ok else state, "engine": key[0]}
    if ok:
        body["model"] = state  # "loaded", or "unloaded"/"loading" after an idle unload
    if slot is not None and slot.error is not None:
        body["error"] = slot.error.message
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Requests, audio seconds, real-time factor, queues, rejections, load times, RSS."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
