"""Job records in SQLite (standard library, WAL): the one durable truth about every job.

One database file, ``jobs.sqlite3``, in ``jobs.dir``, with the uploads beside it in
``audio/``. Every change of state is one transaction, so a process killed at any
instant leaves each job in a state it really was in: ``queued``, ``running`` (requeued
by :meth:`JobStore.recover` on the next start), or finished. Completed steps are kept
in ``checkpoints`` as they come; a job resumed after a crash starts after the last one.

The directory is held with an exclusive ``flock`` while the store is open, so two
servers never run the same jobs; the kernel drops the lock when a process dies, even
under SIGKILL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stts.errors import JobsUnavailable
from stts.jobs.codec import transcript_from_dict, transcript_to_dict
from stts.jobs.records import FINISHED, STATUSES, Job, NewJob, new_job_id
from stts.transcript import Transcript

logger = logging.getLogger(__name__)

# What a job is lives in stts.jobs.records; importable from here as before.
__all__ = ["FINISHED", "STATUSES", "Job", "JobStore", "NewJob", "new_job_id"]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    filename TEXT,
    audio_path TEXT,
    audio_bytes INTEGER NOT NULL DEFAULT 0,
    raw_format TEXT,
    engine TEXT NOT NULL,
    model TEXT NOT NULL,
    options TEXT NOT NULL,
    granularities TEXT NOT NULL DEFAULT '',
    callback_url TEXT,
    duration_s REAL,
    done_s REAL NOT NULL DEFAULT 0,
    decoded_s REAL NOT NULL DEFAULT 0,
    resumed_from_s REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    result TEXT,
    result_bytes INTEGER NOT NULL DEFAULT 0,
    answered_engine TEXT,
    answered_model TEXT,
    webhook_state TEXT,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_next_at REAL,
    webhook_error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    transcript TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
);
"""


def _running(db: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
    """The job's ``(status, audio_path)`` while it is running; None once it is not."""
    row: sqlite3.Row | None = db.execute(
        "SELECT status, audio_path FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    return row if row is not None and row[0] == "running" else None


class JobStore:
    """The jobs database of one ``jobs.dir``; thread-safe (one connection, one lock)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.audio_dir = directory / "audio"
        try:
            self.audio_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(directory / "lock", "a+b")  # noqa: SIM115 - held while open
        except OSError as exc:
            raise JobsUnavailable(f"the jobs directory can't be used: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            raise JobsUnavailable(
                "the jobs directory is in use by another stts server; "
                "give each server its own jobs.dir"
            ) from exc
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            directory / "jobs.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives the process being killed (not a power cut).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database and let go of the directory."""
        with self._lock:
            self._db.close()
        self._lock_file.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...]) -> Job | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return Job.from_row(row) if row is not None else None

    # -- files ------------------------------------------------------------------

    def upload_path(self, job_id: str) -> Path:
        """Where an upload streams to before its job is stored."""
        return self.audio_dir / f"{job_id}.upload"

    def audio_path(self, job_id: str) -> Path:
        """Where a stored job's audio lives."""
        return self.audio_dir / f"{job_id}.audio"

    def remove_orphans(self) -> int:
        """Delete files no job owns (an upload cut by a crash, say); the number removed."""
        with self._lock:
            owned = {
                row[0]
                for row in self._db.execute(
                    "SELECT audio_path FROM jobs WHERE audio_path IS NOT NULL"
                )
            }
        removed = 0
        for path in self.audio_dir.iterdir():
            if path.name not in owned:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    def _unlink_audio(self, name: str | None) -> None:
        if name:
            with contextlib.suppress(FileNotFoundError):
                (self.audio_dir / name).unlink()

    # -- submission and reading ---------------------------------------------------

    def add(self, job_id: str, new: NewJob, upload: Path) -> Job:
        """Store a job whose upload is complete: the upload becomes the job's audio."""
        final = self.audio_path(job_id)
        os.replace(upload, final)
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, owner, status, created_at, filename, audio_path, "
                "audio_bytes, raw_format, engine, model, options, granularities, callback_url, "
                "duration_s) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    new.owner,
                    time.time(),
                    new.filename,
                    final.name,
                    new.audio_bytes,
                    new.raw_format,
                    new.engine,
                    new.model,
                    new.options,
                    new.granularities,
                    new.callback_url,
                    new.duration_s,
                ),
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """One job; with ``owner``, only if it is that owner's."""
        if owner is None:
            return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._one("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner))

    def page(self, owner: str, status: str | None, limit: int, before_seq: int | None) -> list[Job]:
        """An owner's jobs, newest first, older than the cursor ``before_seq``."""
        sql = "SELECT * FROM jobs WHERE owner = ?"
        args: list[Any] = [owner]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [Job.from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Jobs by status."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        found = {row[0]: int(row[1]) for row in rows}
        return {status: found.get(status, 0) for status in STATUSES}

    def disk_bytes(self) -> int:
        """Bytes the stored uploads and results take: an upload counts only while its
        file is kept (a finished job's audio is deleted, its result stays)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(CASE WHEN audio_path IS NOT NULL THEN audio_bytes END), 0)"
                " + COALESCE(SUM(CASE WHEN result IS NOT NULL THEN result_bytes END), 0)"
                " FROM jobs"
            ).fetchone()
        return int(row[0])

    # -- running ----------------------------------------------------------------------

    def recover(self) -> int:
        """After a crash: jobs left ``running`` are queued again; the number requeued."""
        with self._tx() as db:
            cursor = db.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'")
        return cursor.rowcount

    def claim(self, max_attempts: int) -> Job | None:
        """The oldest queued job, now ``running`` (its attempt counted); a job that has
        used all its attempts is failed here instead."""
        while True:
            with self._tx() as db:
                row = db.execute(
                    "SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
                ).fetchone()
                if row is None:
                    return None
                job = Job.from_row(row)
                if job.attempts >= max_attempts:
                    reason = job.error_message or "the server stopped while the job ran"
                    db.execute(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, audio_path = NULL, "
                        "error_code = COALESCE(error_code, 'interrupted'), error_message = ?, "
                        "webhook_state = CASE WHEN callback_url IS NULL THEN NULL "
                        "ELSE 'pending' END, webhook_next_at = ? WHERE id = ?",
                        (
                            time.time(),
                            f"gave up after {job.attempts} attempts: {reason}",
                            time.time(),
                            job.id,
                        ),
                    )
                    db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job.id,))
                else:
                    now = time.time()
                    db.execute(
                        "UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                        "started_at = COALESCE(started_at, ?) WHERE id = ?",
                        (now, job.id),
                    )
            if job.attempts >= max_attempts:
                self._unlink_audio(job.audio_path)
                continue
            claimed = self.get(job.id)
            assert claimed is not None
            return claimed

    def set_duration(self, job_id: str, seconds: float) -> None:
        """The decoded length (a header may not have said it, or said it wrong)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET duration_s = ? WHERE id = ?", (seconds, job_id))

    def checkpoints(self, job_id: str) -> dict[int, tuple[float, float, Transcript]]:
        """Steps already done: step -> (start_s, end_s, transcript)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT step, start_s, end_s, transcript FROM checkpoints WHERE job_id = ?",
                (job_id,),
            ).fetchall()
        return {
            int(r[0]): (float(r[1]), float(r[2]), transcript_from_dict(json.loads(r[3])))
            for r in rows
        }

    def note_resume(self, job_id: str, from_s: float) -> None:
        """Record that this attempt starts after earlier checkpoints."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET resumed_from_s = ? WHERE id = ?", (from_s, job_id))

    def checkpoint(
        self, job_id: str, step: int, start_s: float, end_s: float, transcript: Transcript
    ) -> bool:
        """Keep one finished step and count its audio; False if the job stopped running
        meanwhile (cancelled), in which case nothing is kept."""
        body = json.dumps(transcript_to_dict(transcript), ensure_ascii=False)
        with self._tx() as db:
            status = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if status is None or status[0] != "running":
                return False
            db.execute(
                "INSERT OR REPLACE INTO checkpoints (job_id, step, start_s, end_s, transcript) "
                "VALUES (?, ?, ?, ?, ?)",
                (job_id, step, start_s, end_s, body),
            )
            db.execute(
                "UPDATE jobs SET done_s = (SELECT COALESCE(SUM(end_s - start_s), 0) "
                "FROM checkpoints WHERE job_id = ?), decoded_s = decoded_s + ? WHERE id = ?",
                (job_id, end_s - start_s, job_id),
            )
        return True

    def succeed(self, job_id: str, transcript: Transcript) -> Job | None:
        """Store the result; the audio and checkpoints go. None if no longer running."""
        body = json.dumps(transcript_to_dict(transcript), ensure_ascii=False)
        with self._tx() as db:
            row = _running(db, job_id)
            if row is None:
                return None
            now = time.time()
            db.execute(
                "UPDATE jobs SET status = 'succeeded', finished_at = ?, result = ?, "
                "result_bytes = ?, answered_engine = ?, answered_model = ?, audio_path = NULL, "
                "done_s = COALESCE(duration_s, done_s), error_code = NULL, error_message = NULL, "
                "webhook_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, "
                "webhook_next_at = ? WHERE id = ?",
                (
                    now,
                    body,
                    len(body.encode()),
                    transcript.engine,
                    transcript.model,
                    now,
                    job_id,
                ),
            )
            db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))
        self._unlink_audio(row[1])
        return self.get(job_id)

    def fail(self, job_id: str, code: str, message: str, *, final: bool) -> Job | None:
        """An attempt failed: ``final`` -> ``failed`` (audio deleted); else queued again."""
        with self._tx() as db:
            row = _running(db, job_id)
            if row is None:
                return None
            if final:
                now = time.time()
                db.execute(
                    "UPDATE jobs SET status = 'failed', finished_at = ?, error_code = ?, "
                    "error_message = ?, audio_path = NULL, "
                    "webhook_state = CASE WHEN callback_url IS NULL THEN NULL "
                    "ELSE 'pending' END, webhook_next_at = ? WHERE id = ?",
                    (now, code, message, now, job_id),
                )
                db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))
            else:
                db.execute(
                    "UPDATE jobs SET status = 'queued', error_code = ?, error_message = ? "
                    "WHERE id = ?",
                    (code, message, job_id),
                )
        if final:
            self._unlink_audio(row[1])
        return self.get(job_id)

    def requeue(self, job_id: str) -> None:
        """The server is stopping: the job goes back to the queue, the attempt not counted."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status = 'queued', attempts = MAX(0, attempts - 1) "
                "WHERE id = ? AND status = 'running'",
                (job_id,),
            )

    def cancel(self, job_id: str, owner: str | None) -> tuple[Job, bool] | None:
        """Cancel a queued or running job, or delete a finished one; its audio, checkpoints
        and result go. Returns (the job before, whether its record was deleted)."""
        job = self.get(job_id, owner)
        if job is None:
            return None
        with self._tx() as db:
            if job.finished:
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                deleted = True
            else:
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?, audio_path = NULL, "
                    "result = NULL, result_bytes = 0 WHERE id = ?",
                    (time.time(), job_id),
                )
                deleted = False
            db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))
        self._unlink_audio(job.audio_path)
        return job, deleted

    def expire(self, finished_before: float) -> int:
        """Delete finished jobs (and their files) older than the cut; the number deleted."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, audio_path FROM jobs WHERE status IN ('succeeded', 'failed', "
                "'cancelled') AND finished_at < ? AND (webhook_state IS NULL OR "
                "webhook_state != 'pending')",
                (finished_before,),
            ).fetchall()
            for row in rows:
                db.execute("DELETE FROM jobs WHERE id = ?", (row[0],))
                db.execute("DELETE FROM checkpoints WHERE job_id = ?", (row[0],))
        for row in rows:
            self._unlink_audio(row[1])
        return len(rows)

    # -- webhooks -----------------------------------------------------------------

    def due_webhooks(self, now: float) -> list[Job]:
        """Finished jobs whose webhook is due."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE webhook_state = 'pending' AND webhook_next_at <= ? "
                "ORDER BY webhook_next_at LIMIT 32",
                (now,),
            ).fetchall()
        return [Job.from_row(row) for row in rows]

    def webhook_result(
        self, job_id: str, *, delivered: bool, error: str | None, retry_at: float | None
    ) -> None:
        """After one delivery attempt: delivered, retried at ``retry_at``, or given up."""
        state = "delivered" if delivered else ("pending" if retry_at is not None else "failed")
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET webhook_state = ?, webhook_attempts = webhook_attempts + 1, "
                "webhook_next_at = ?, webhook_error = ? WHERE id = ?",
                (state, retry_at, error, job_id),
            )
