"""The one exception hierarchy of stts.

Every error stts raises on purpose is an :class:`SttsError`. Each class carries
the HTTP status it maps to and a stable ``error_type``/``code`` pair, so the API
maps errors to responses in one place (``stts.api.app``) and core code never
knows about HTTP::

    SttsError                         500 internal_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── InvalidLanguage           400 invalid_language     (param: language)
    │   ├── UnknownEngine             404 engine_not_found
    │   ├── UnknownModel              404 model_not_found
    │   ├── JobNotFound               404 job_not_found        (or another key's job)
    │   ├── JobNotFinished            409 job_not_finished     (its result is not there yet)
    │   ├── CallbackNotAllowed        400 callback_not_allowed (param: callback_url)
    │   └── RequestTooLarge           413 request_too_large    (a body that is not audio)
    ├── AudioError                    400 invalid_audio
    │   ├── EmptyAudio                400 empty_audio
    │   ├── CorruptAudio              400 corrupt_audio        (truncated, bad frames)
    │   ├── UnsupportedAudio          415 unsupported_media    (not an audio format we read)
    │   ├── AudioTooLarge             413 audio_too_large      (bytes)
    │   └── AudioTooLong              413 audio_too_long       (seconds)
    ├── EngineError                   500 engine_error
    │   ├── EngineUnavailable         503 engine_unavailable   (extra or model missing, load failed)
    │   └── TranscriptionFailed       500 transcription_failed
    ├── Overloaded                    503 overloaded           (queue full; has retry_after)
    ├── InsufficientStorage           507 insufficient_storage (jobs.max_disk_bytes is full)
    ├── JobsUnavailable               503 jobs_unavailable     (jobs.dir unusable or taken)
    ├── TranscriptionTimeout          504 timeout
    ├── RateLimited                   429 rate_limited         (has retry_after)
    ├── Unauthorized                  401 invalid_api_key
    ├── RequestTimeout                408 request_timeout      (the body stalled)
    ├── ShuttingDown                  503 shutting_down        (has retry_after)
    ├── Cancelled                     499 cancelled            (the caller went away)
    └── ConfigError                   500 config_error         (start-up: a setting is unusable)

Messages are written for the caller: they never contain stack traces or
server-side file paths, and what they quote of the request is cut short
(:func:`shorten`); a message is never longer than :data:`MAX_MESSAGE_CHARS`.
``param`` names the request field at fault, as in OpenAI's error body.
"""

from __future__ import annotations

MAX_MESSAGE_CHARS = 1024
"""Longest message an error carries: a client's oversized value never comes back whole."""
_ECHO_CHARS = 64


def shorten(value: object, limit: int = _ECHO_CHARS) -> str:
    """A request value fit to quote in a message: its repr, cut to ``limit`` chars + "…"."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return repr(text[:limit]) + "…"
    return repr(text)


class SttsError(Exception):
    """Base of every error stts raises on purpose."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"
    param: str | None = None
    """The request field at fault (``language``, ``model``...), or None."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, param: str | None = None
    ) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        if param is not None:
            self.param = param

    def to_dict(self) -> dict[str, object]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(SttsError):
    """A request parameter is wrong (not the audio itself)."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidLanguage(InvalidRequest):
    """The requested language is not one the chosen engine (and model) recognises."""

    code = "invalid_language"
    param = "language"


class UnknownEngine(InvalidRequest):
    """No engine is registered under this name."""

    status_code = 404
    code = "engine_not_found"


class UnknownModel(InvalidRequest):
    """No model is configured under this name."""

    status_code = 404
    code = "model_not_found"
    param = "model"


class JobNotFound(InvalidRequest):
    """No job with this id, or one that belongs to another API key."""

    status_code = 404
    code = "job_not_found"


class JobNotFinished(InvalidRequest):
    """The job's result is asked for before the job has succeeded."""

    status_code = 409
    code = "job_not_finished"


class CallbackNotAllowed(InvalidRequest):
    """A job's callback_url names a host the operator has not allowed (jobs.webhook_hosts)."""

    code = "callback_not_allowed"
    param = "callback_url"


class RequestTooLarge(InvalidRequest):
    """A request body that is not audio (a transcript to render) is over its byte limit."""

    status_code = 413
    code = "request_too_large"


class AudioError(SttsError):
    """The audio cannot be used: never retried on another engine."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_audio"


class EmptyAudio(AudioError):
    """No bytes, or no samples after decoding."""

    code = "empty_audio"


class CorruptAudio(AudioError):
    """A known format whose content is damaged (truncated, bad frames)."""

    code = "corrupt_audio"


class UnsupportedAudio(AudioError):
    """Not a container/codec stts can decode (or not audio at all)."""

    status_code = 415
    code = "unsupported_media"


class AudioTooLarge(AudioError):
    """More bytes than the configured limit."""

    status_code = 413
    code = "audio_too_large"


class AudioTooLong(AudioError):
    """Longer than the configured duration limit (declared or decoded)."""

    status_code = 413
    code = "audio_too_long"


class EngineError(SttsError):
    """An engine failed on audio that decoded fine: eligible for fallback."""

    status_code = 500
    error_type = "server_error"
    code = "engine_error"


class EngineUnavailable(EngineError):
    """The engine's extra or model is missing, or its model failed to load."""

    status_code = 503
    code = "engine_unavailable"


class TranscriptionFailed(EngineError):
    """The engine raised while transcribing."""

    code = "transcription_failed"


class Overloaded(SttsError):
    """The engine's queue is full; try again after ``retry_after`` seconds."""

    status_code = 503
    error_type = "server_error"
    code = "overloaded"


class InsufficientStorage(SttsError):
    """Storing this job would pass the jobs disk quota (``jobs.max_disk_bytes``)."""

    status_code = 507
    error_type = "server_error"
    code = "insufficient_storage"


class JobsUnavailable(SttsError):
    """Jobs can't be taken: the jobs directory is unusable or another server holds it."""

    status_code = 503
    error_type = "server_error"
    code = "jobs_unavailable"


class TranscriptionTimeout(SttsError):
    """The transcription took longer than its duration-scaled deadline."""

    status_code = 504
    error_type = "server_error"
    code = "timeout"


class RateLimited(SttsError):
    """The caller's token bucket is empty; try again after ``retry_after`` seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limited"


class Unauthorized(SttsError):
    """Missing or wrong API key."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class ShuttingDown(SttsError):
    """The server is draining and takes no new work."""

    status_code = 503
    error_type = "server_error"
    code = "shutting_down"


class RequestTimeout(SttsError):
    """The request body stopped arriving (no bytes for ``body_timeout_s``)."""

    status_code = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class Cancelled(SttsError):
    """The caller went away (or the deadline passed) and the work was stopped."""

    status_code = 499
    error_type = "server_error"
    code = "cancelled"


class ConfigError(SttsError):
    """A setting can't be used as given (checked at start-up, never per request)."""

    status_code = 500
    error_type = "server_error"
    code = "config_error"
