"""The single mapping from stts errors to HTTP responses."""

from __future__ import annotations

import math

from fastapi.responses import JSONResponse

from stts.errors import MAX_MESSAGE_CHARS, SttsError


def error_response(exc: SttsError) -> JSONResponse:
    """``{"error": {"message", "type", "param", "code"}}`` with the error's status (and
    Retry-After)."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


def plain_error(
    status: int, message: str, error_type: str, code: str, param: str | None = None
) -> JSONResponse:
    """The same body shape for errors raised by the framework (404 route, 405, validation)."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)
