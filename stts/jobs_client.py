"""A client of a running server's jobs API (``/api/v1/jobs``), for ``stts jobs``.

It talks HTTP only: it never imports the server, the service or an engine, so the
command works against a server on another machine. The upload streams from the file
(httpx reads it in chunks), so a recording of gigabytes is never held in memory.
Every failure is a :class:`JobsClientError` with one readable line: the server's own
error message when it answered, or what went wrong on the way when it did not.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = ("succeeded", "failed", "cancelled")
# Raw PCM has no header: the server reads it as audio/pcm with a rate and channel count.
RAW_SUFFIXES = {".raw", ".pcm"}
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class JobsClientError(Exception):
    """A request that did not succeed: ``status`` is the HTTP status, None when the
    server was not reached; ``code`` is the server's error code when it gave one."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class JobsClient:
    """``/api/v1/jobs`` of one server, with an optional API key."""

    def __init__(
        self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float | None = None
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            self._http = httpx.Client(
                base_url=self.url,
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=10.0) if timeout else _TIMEOUT,
            )
        except (httpx.InvalidURL, ValueError) as exc:  # an unusable URL
            raise JobsClientError(f"bad server URL {self.url!r}: {exc}") from None

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def submit(
        self,
        path: Path,
        *,
        model: str | None = None,
        language: str | None = None,
        task: str | None = None,
        callback_url: str | None = None,
        word_timestamps: bool = False,
        raw_rate: int = 16000,
        raw_channels: int = 1,
    ) -> dict[str, Any]:
        """Upload ``path`` as a new job; the job as the server answered (202)."""
        if path.suffix.lower() in RAW_SUFFIXES:
            content_type = f"audio/pcm; rate={raw_rate}; channels={raw_channels}"
        else:
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        fields = {
            "model": model,
            "language": language,
            "task": task,
            "callback_url": callback_url,
            "timestamp_granularities[]": "word" if word_timestamps else None,
        }
        with path.open("rb") as fh:
            return self._json(
                "POST",
                "/api/v1/jobs",
                files={"file": (path.name, fh, content_type)},
                data={k: v for k, v in fields.items() if v},
            )

    def status(self, job_id: str) -> dict[str, Any]:
        """The job: status, progress, timings, engine, error."""
        return self._json("GET", f"/api/v1/jobs/{_quoted(job_id)}")

    def result(self, job_id: str, fmt: str = "text") -> str:
        """The transcript rendered by the server in ``fmt`` (json, text, srt, vtt,
        verbose_json)."""
        response = self._request(
            "GET", f"/api/v1/jobs/{_quoted(job_id)}/result", params={"format": fmt}
        )
        return response.text

    def list_jobs(
        self, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of jobs, newest first (``data``, ``has_more``, ``next_cursor``)."""
        params: dict[str, str | int] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._json("GET", "/api/v1/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job, or delete a finished one."""
        return self._json("DELETE", f"/api/v1/jobs/{_quoted(job_id)}")

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 1.0,
    ) -> dict[str, Any]:
        """Poll the job until it has finished (succeeded, failed or cancelled)."""
        while True:
            job = self.status(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] in FINISHED:
                return job
            time.sleep(poll_s)

    # -- transport -------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise JobsClientError(
                f"{self.url} answered {method} {path} with something that is not JSON "
                "(is it an stts server?)",
                response.status_code,
            ) from None
        return body

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise JobsClientError(f"{self.url} did not answer in time") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise JobsClientError(f"cannot reach the server at {self.url}: {reason}") from None
        if response.is_success:
            return response
        raise _error_of(response)


def _quoted(job_id: str) -> str:
    """A job id as one path segment (never ``..`` or a second segment)."""
    # "." too: a client would resolve "..", leaving /api/v1/jobs.
    return quote(job_id, safe="").replace(".", "%2E") or "-"


def _error_of(response: httpx.Response) -> JobsClientError:
    """The server's ``{"error": {"message", "code"}}``, or the status line."""
    message, code = "", None
    try:
        error = response.json().get("error") or {}
        message = str(error.get("message") or "")
        code = error.get("code")
    except (ValueError, AttributeError):
        pass
    if not message:
        message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    return JobsClientError(message, response.status_code, code)
