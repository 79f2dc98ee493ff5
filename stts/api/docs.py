"""``/docs`` (Swagger UI) and ``/redoc`` with their assets served by stts itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on an air-gapped host they
stay blank. Here the pages point at ``/docs/assets/...``, files shipped in the
``fastapi-offline`` package (Swagger UI 5 and ReDoc 2 dist builds), and no page names
another host: Swagger UI's online validator badge is off and ReDoc loads no web fonts.
The pages and their assets sit behind the API-key guard like every path but /health
and /ready.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

router = APIRouter(include_in_schema=False)

_ASSET_ROOT = files("fastapi_offline") / "static"
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
"""Every file the pages load: name under /docs/assets/ -> content type."""

_ASSETS_PATH = "/docs/assets"


def _root(request: Request) -> str:
    # Behind a proxy that mounts stts under a prefix, links must carry that prefix.
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json, every asset from this server."""
    root, app = _root(request), request.app
    parameters: dict[str, Any] = {**(app.swagger_ui_parameters or {}), "validatorUrl": None}
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}{_ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{_ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{_ASSETS_PATH}/favicon.png",
        swagger_ui_parameters=parameters,
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over /openapi.json, without web fonts."""
    root, app = _root(request), request.app
    return get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{_ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{_ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )


@router.get(_ASSETS_PATH + "/{name}")
async def asset(name: str) -> FileResponse:
    """One of :data:`ASSETS`; any other name is a 404 (no path is ever built from input)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail="no such documentation asset")
    return FileResponse(
        str(_ASSET_ROOT / name),
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )
