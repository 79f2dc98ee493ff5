"""JobService: what faces use to submit, read and cancel jobs, and its lifecycle.

The store is opened at start-up when ``jobs.dir`` already holds a database (so jobs a
crash left behind resume), else at the first job request: a server nobody sends jobs
to creates nothing on disk. Quota (``jobs.max_disk_bytes``) counts stored uploads and
results plus the uploads still arriving.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stts.config import Settings
from stts.errors import InsufficientStorage, JobNotFinished, JobNotFound, JobsUnavailable
from stts.jobs.runner import JobRunner
from stts.jobs.store import STATUSES, Job, JobStore, NewJob
from stts.jobs.webhooks import WebhookPolicy
from stts.service import EngineManager
from stts.transcript import Transcript

logger = logging.getLogger(__name__)

DB_NAME = "jobs.sqlite3"


class JobService:
    """The jobs of one server: store, runner, webhook policy, quota."""

    def __init__(
        self, settings: Settings, manager: EngineManager, stopping: Callable[[], bool]
    ) -> None:
        self.settings = settings
        self.conf = settings.jobs
        self.manager = manager
        self.directory = self.conf.directory(settings.cache_dir)
        self.webhooks = WebhookPolicy(self.conf)  # a bad jobs.webhook_hosts fails create_app
        self._stopping = stopping
        self._store: JobStore | None = None
        self._runner: JobRunner | None = None
        self._open_lock = threading.Lock()
        self._uploading = 0  # bytes of uploads still arriving
        self._upload_lock = threading.Lock()
        self.audio_seconds: dict[str, float] = {}

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """At server start: resume jobs if the directory holds any."""
        if (self.directory / DB_NAME).is_file():
            try:
                self.open()
            except JobsUnavailable as exc:  # the other faces still serve; job routes say why
                logger.warning("jobs are unavailable: %s", exc.message)

    def open(self) -> JobStore:
        """The store, opened (and the runner started) on first use; on the event loop."""
        if self._store is not None:
            return self._store
        with self._open_lock:
            if self._store is None:
                store = JobStore(self.directory)
                requeued = store.recover()
                orphans = store.remove_orphans()
                if requeued or orphans:
                    logger.info(
                        "jobs: %d interrupted job(s) queued again, %d stray file(s) removed",
                        requeued,
                        orphans,
                    )
                runner = JobRunner(
                    store, self.manager, self.settings, self.webhooks, self._stopping, self._count
                )
                runner.start()
                self._runner = runner
                self._store = store
        return self._store

    async def stop(self, timeout: float) -> None:
        """Interrupt running jobs (they stay queued, resumed by the next start)."""
        if self._runner is not None:
            await self._runner.stop(timeout)
        if self._store is not None:
            self._store.close()
            self._store = None

    def _count(self, engine: str, seconds: float) -> None:
        self.audio_seconds[engine] = self.audio_seconds.get(engine, 0.0) + seconds

    # -- quota ----------------------------------------------------------------------------

    def check_room(self, incoming: int) -> None:
        """InsufficientStorage (507) if ``incoming`` more bytes would pass the quota."""
        store = self.open()
        used = store.disk_bytes() + self._uploading
        if used + incoming > self.conf.max_disk_bytes:
            raise InsufficientStorage(
                f"the jobs storage is full ({used} of {self.conf.max_disk_bytes} bytes used); "
                "delete finished jobs or retry later"
            )

    @contextlib.contextmanager
    def uploading(self) -> Iterator[Callable[[int], None]]:
        """Count an upload's bytes against the quota while it arrives: ``add(n)`` per chunk
        raises InsufficientStorage when full; the count is dropped on exit."""
        mine = 0

        def add(size: int) -> None:
            nonlocal mine
            self.check_room(size)
            with self._upload_lock:
                self._uploading += size
                mine += size

        try:
            yield add
        finally:
            with self._upload_lock:
                self._uploading -= mine

    # -- jobs -----------------------------------------------------------------------------

    def upload_path(self, job_id: str) -> Path:
        """Where a new job's upload streams to."""
        return self.open().upload_path(job_id)

    def submit(self, job_id: str, new: NewJob, upload: Path) -> Job:
        """Store a job whose upload is complete and checked; it runs when its turn comes."""
        job = self.open().add(job_id, new, upload)
        if self._runner is not None:
            self._runner.wake()
        logger.info("job %s queued (%d bytes)", job_id, new.audio_bytes)
        return job

    def get(self, job_id: str, owner: str) -> Job:
        """One of this owner's jobs, else JobNotFound (another owner's job too)."""
        job = self.open().get(job_id, owner)
        if job is None:
            raise JobNotFound(f"no job {job_id[:64]!r}")
        return job

    def result(self, job_id: str, owner: str) -> tuple[Job, Transcript]:
        """A succeeded job's transcript; JobNotFinished (409) before."""
        job = self.get(job_id, owner)
        transcript = job.transcript()
        if job.status != "succeeded" or transcript is None:
            raise JobNotFinished(f"job {job_id} is {job.status}; it has no result")
        return job, transcript

    def page(self, owner: str, status: str | None, limit: int, before_seq: int | None) -> list[Job]:
        """An owner's jobs, newest first."""
        return self.open().page(owner, status, limit, before_seq)

    def cancel(self, job_id: str, owner: str) -> tuple[Job, bool]:
        """Cancel (queued, running) or delete (finished) a job with its files."""
        found = self.open().cancel(job_id, owner)
        if found is None:
            raise JobNotFound(f"no job {job_id[:64]!r}")
        if self._runner is not None:
            self._runner.cancel(job_id)
        logger.info("job %s %s", job_id, "deleted" if found[1] else "cancelled")
        return found


class JobsCollector(Collector):
    """Prometheus: jobs by status, queue length, audio seconds run through job steps."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        """Read at scrape time."""
        store = self.service._store
        counts = store.counts() if store is not None else dict.fromkeys(STATUSES, 0)
        by_status = GaugeMetricFamily("stts_jobs", "Jobs stored, by status", labels=["status"])
        for status, count in counts.items():
            by_status.add_metric([status], count)
        queued = GaugeMetricFamily("stts_jobs_queue_length", "Jobs waiting to run")
        queued.add_metric([], counts["queued"])
        audio = CounterMetricFamily(
            "stts_job_audio_seconds", "Seconds of audio transcribed by job steps", labels=["engine"]
        )
        for engine, seconds in self.service.audio_seconds.items():
            audio.add_metric([engine], seconds)
        yield from (by_status, queued, audio)
