"""Operational routes: /health (liveness), /ready (default engine loaded)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from stts.api.common import get_manager
from stts.service import EngineManager

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness")
def health() -> dict[str, str]:
    """Always cheap: the process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/ready", summary="Readiness", response_model=None)
def ready(manager: Annotated[EngineManager, Depends(get_manager)]) -> JSONResponse:
    """200 once the default engine is loaded; 503 while loading, failed or draining."""
    key = manager.resolve(None)
    slot = manager.slot(key) if not manager.closed else None
    state = slot.state if slot is not None else "shutting_down"
    body: dict[str, Any] = {"status": "ready" if state == "loaded" else state, "engine": key[0]}
    if slot is not None and slot.error is not None:
        body["error"] = slot.error.message
    return JSONResponse(body, status_code=200 if state == "loaded" else 503)
