"""Logs: one JSON object per line (with the request id of the current request) for log
collectors, plain lines for a person at a terminal.

Logs never contain audio, transcripts or secrets: only ids, sizes, timings and names.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
timings_var: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "stts_timings", default=None
)
"""Milliseconds spent per stage of the current request, sent back as ``Server-Timing``."""


def record_timing(stage: str, seconds: float) -> None:
    """Add a stage's duration to the current request's Server-Timing (no-op outside one)."""
    timings = timings_var.get()
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + seconds * 1000.0


# color_message: uvicorn's copy of the message with ANSI colours, for its own formatter.
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", ...extra}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str = "info", json_logs: bool | None = None) -> dict[str, Any]:
    """A dictConfig for stts and uvicorn (uvicorn's access log is replaced by stts.access);
    ``json_logs`` None: plain lines when stderr is a terminal, JSON lines otherwise."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    formatter = (
        {"()": JsonFormatter}
        if json_logs
        else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            "stts": {"handlers": ["default"], "level": lvl, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": lvl, "propagate": False},
            "uvicorn.error": {"handlers": ["default"], "level": lvl, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
