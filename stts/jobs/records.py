"""What a job is: the submission (:class:`NewJob`), the stored record (:class:`Job`) and
its public view, the statuses, and new job ids. Stored by :mod:`stts.jobs.store`."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

from stts.jobs.codec import transcript_from_dict
from stts.transcript import Transcript

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a submission stores."""

    owner: str
    filename: str | None
    audio_bytes: int
    raw_format: str | None
    engine: str
    model: str
    options: str
    granularities: str
    callback_url: str | None
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class Job(NewJob):
    """One job as stored: what its submission stored, and how far it got."""

    seq: int
    id: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    audio_path: str | None
    done_s: float
    decoded_s: float
    resumed_from_s: float | None
    attempts: int
    error_code: str | None
    error_message: str | None
    result: str | None
    result_bytes: int
    answered_engine: str | None
    answered_model: str | None
    webhook_state: str | None
    webhook_attempts: int
    webhook_next_at: float | None
    webhook_error: str | None

    @property
    def finished(self) -> bool:
        """Succeeded, failed or cancelled."""
        return self.status in FINISHED

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        """The job a ``SELECT * FROM jobs`` row holds."""
        return cls(**dict(row))

    def transcript(self) -> Transcript | None:
        """The stored result, once succeeded."""
        return transcript_from_dict(json.loads(self.result)) if self.result else None

    def public(self) -> dict[str, Any]:
        """What ``GET /api/v1/jobs/{id}`` answers (no server paths, no owner)."""
        total = self.duration_s
        progress = min(1.0, self.done_s / total) if total else (1.0 if self.finished else 0.0)
        if self.status == "succeeded":
            progress = 1.0
        ended = self.finished_at or time.time()
        return {
            "id": self.id,
            "object": "transcription.job",
            "status": self.status,
            "created_at": round(self.created_at, 3),
            "started_at": round(self.started_at, 3) if self.started_at else None,
            "finished_at": round(self.finished_at, 3) if self.finished_at else None,
            "progress": {
                "done_s": round(self.done_s, 3),
                "total_s": round(total, 3) if total is not None else None,
                "fraction": round(progress, 4),
            },
            "timings": {
                "queued_s": round((self.started_at or ended) - self.created_at, 3),
                "running_s": round(ended - self.started_at, 3) if self.started_at else None,
            },
            "engine": self.answered_engine or self.engine,
            "model": self.answered_model or self.model,
            "attempts": self.attempts,
            "decoded_s": round(self.decoded_s, 3),
            "resumed_from_s": (
                round(self.resumed_from_s, 3) if self.resumed_from_s is not None else None
            ),
            "filename": self.filename,
            "bytes": self.audio_bytes,
            "callback_url": self.callback_url,
            "webhook": (
                {
                    "state": self.webhook_state,
                    "attempts": self.webhook_attempts,
                    "error": self.webhook_error,
                }
                if self.webhook_state
                else None
            ),
            "error": (
                {"code": self.error_code, "message": self.error_message}
                if self.error_code
                else None
            ),
        }


def new_job_id() -> str:
    """An unguessable id (128 random bits)."""
    return "job_" + uuid.uuid4().hex
