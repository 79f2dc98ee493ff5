"""Runs queued jobs on the EngineManager's pools, step by step, below interactive work.

One asyncio task (the dispatcher) claims queued jobs up to ``jobs.workers``, sends due
webhooks and deletes expired jobs. Each job is decoded from its stored file at run
time, cut into steps (:mod:`stts.jobs.steps`), and each step is one engine call whose
transcript is checkpointed before the next begins.

Fairness: a step is submitted only when no interactive request (HTTP, stream) is
admitted on that engine and fewer job steps than the engine has workers are under
way, so a request arriving meanwhile waits behind at most one step per worker. Jobs
on the same engine take turns step by step: steps wait in one line per engine, and a
job whose step just ended queues its next one behind the others (round-robin), so a
short job submitted behind a long one is not held up for all of it.

Stopping: a cancelled job (DELETE) stops at its engine's next segment; on a graceful
stop, running jobs are interrupted the same way and go back to the queue, their
attempt not counted; a job whose step will not stop is requeued in the store anyway
and resumed from its last checkpoint by the next start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from stts.audio import SAMPLE_RATE, AudioLimits, RawFormat, decode_audio, is_silent
from stts.config import Settings
from stts.engines.base import CancelToken, TranscribeOptions
from stts.errors import AudioError, Cancelled, ShuttingDown, SttsError
from stts.jobs.steps import Step, join_steps, plan_steps
from stts.jobs.store import Job, JobStore
from stts.jobs.webhooks import Delivery, WebhookPolicy
from stts.logs import request_id_var
from stts.service import EngineManager, SlotKey
from stts.transcript import Transcript

logger = logging.getLogger(__name__)

_TICK_S = 0.5
_GATE_POLL_S = 0.02
_SWEEP_EVERY_S = 60.0
_WEBHOOK_BACKOFF_CAP_S = 3600.0


class _Interrupted(Exception):
    """The server is stopping: the job goes back to the queue."""


@dataclass
class _Running:
    job: Job
    token: CancelToken = field(default_factory=CancelToken)
    task: asyncio.Task[None] | None = None
    interrupted: bool = False


def options_from_json(text: str) -> TranscribeOptions:
    """The stored options of a job."""
    data: dict[str, Any] = json.loads(text)
    return TranscribeOptions(**data)


class JobRunner:
    """The dispatcher and the jobs it runs (lives on the server's event loop)."""

    def __init__(
        self,
        store: JobStore,
        manager: EngineManager,
        settings: Settings,
        webhooks: WebhookPolicy,
        stopping: Callable[[], bool],
        on_audio: Callable[[str, float], None] | None = None,
    ) -> None:
        self.store = store
        self.manager = manager
        self.conf = settings.jobs
        self.webhooks = webhooks
        self._stopping = stopping
        self._on_audio = on_audio
        self._running: dict[str, _Running] = {}
        self._steps: defaultdict[SlotKey, int] = defaultdict(int)
        self._turns: defaultdict[SlotKey, deque[object]] = defaultdict(deque)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._sending: set[str] = set()
        self._webhook_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="stts-webhook"
        )

    # -- control ------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatcher on the running loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._dispatch())

    def wake(self) -> None:
        """Something changed (a job was submitted): look at the queue now."""
        if self._wake is not None:
            self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop a running job at its next segment (its record is already cancelled)."""
        running = self._running.get(job_id)
        if running is not None:
            running.token.cancel()

    @property
    def running(self) -> int:
        """Jobs under way now."""
        return len(self._running)

    def _interrupt_all(self) -> None:
        for running in self._running.values():
            running.interrupted = True
            running.token.cancel()

    async def stop(self, timeout: float) -> None:
        """Interrupt running jobs, wait up to ``timeout`` for them to reach their next
        segment, and leave every one of them queued for the next start."""
        self._closed = True
        self._interrupt_all()
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.01, timeout))
        for running in list(self._running.values()):
            if running.task is not None and not running.task.done():
                running.task.cancel()
            self.store.requeue(running.job.id)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._webhook_pool.shutdown(wait=False, cancel_futures=True)

    # -- the dispatcher ---------------------------------------------------------------

    async def _dispatch(self) -> None:
        assert self._wake is not None
        next_sweep = 0.0
        while not self._closed:
            try:
                if self._stopping():
                    self._interrupt_all()
                else:
                    self._fill()
                self._send_due_webhooks()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + min(_SWEEP_EVERY_S, self.conf.retention_s / 4)
                    expired = self.store.expire(time.time() - self.conf.retention_s)
                    if expired:
                        logger.info("deleted %d finished jobs past jobs.retention_s", expired)
            except Exception:
                logger.exception("jobs dispatcher failed; trying again")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _TICK_S)
            self._wake.clear()

    def _fill(self) -> None:
        while len(self._running) < self.conf.workers:
            job = self.store.claim(self.conf.max_attempts)
            if job is None:
                return
            running = _Running(job)
            self._running[job.id] = running
            running.task = asyncio.ensure_future(self._run(running))

    # -- one job ------------------------------------------------------------------------

    async def _run(self, running: _Running) -> None:
        job = running.job
        token = request_id_var.set(job.id)  # every log line of this job carries its id
        try:
            await self._attempt(running)
        except _Interrupted:
            self.store.requeue(job.id)
            logger.info("job %s interrupted by the stop; queued again", job.id)
        except Cancelled:
            if running.interrupted:
                self.store.requeue(job.id)
                logger.info("job %s interrupted by the stop; queued again", job.id)
            else:
                logger.info("job %s cancelled", job.id)
        except ShuttingDown:
            self.store.requeue(job.id)
        except AudioError as exc:  # the file itself: another attempt gives the same answer
            self.store.fail(job.id, exc.code, exc.message, final=True)
            logger.info("job %s failed: %s", job.id, exc.message)
        except SttsError as exc:
            final = job.attempts >= self.conf.max_attempts
            self.store.fail(job.id, exc.code, exc.message, final=final)
            logger.warning("job %s attempt %d failed: %s", job.id, job.attempts, exc.message)
        except Exception:
            logger.exception("job %s failed", job.id)
            final = job.attempts >= self.conf.max_attempts
            self.store.fail(job.id, "internal_error", "the job failed on the server", final=final)
        finally:
            request_id_var.reset(token)
            self._running.pop(job.id, None)
            self.wake()

    async def _attempt(self, running: _Running) -> None:
        job, token = running.job, running.token
        if job.audio_path is None:
            raise Cancelled("the job has no audio")
        raw = RawFormat(**json.loads(job.raw_format)) if job.raw_format else None
        limits = AudioLimits(self.conf.max_bytes, self.conf.max_duration_s)
        audio = await asyncio.to_thread(
            decode_audio,
            self.store.audio_dir / job.audio_path,
            raw=raw,
            limits=limits,
            cancel=lambda: token.cancelled,
        )
        samples = audio.samples
        duration = len(samples) / SAMPLE_RATE
        self.store.set_duration(job.id, duration)
        options = options_from_json(job.options)
        key: SlotKey = (job.engine, job.model)
        steps = plan_steps(samples, self.conf.step_s)
        done = {
            index: part
            for index, (start_s, end_s, part) in self.store.checkpoints(job.id).items()
            if index < len(steps)
            and abs(start_s - steps[index].start_s) < 1e-6
            and abs(end_s - steps[index].end_s) < 1e-6
        }
        first_missing = next((s.index for s in steps if s.index not in done), len(steps))
        if first_missing > 0:
            self.store.note_resume(job.id, steps[first_missing - 1].end_s)
            logger.info(
                "job %s resumes at %.1f s from its checkpoints",
                job.id,
                steps[first_missing - 1].end_s,
            )
        parts: list[tuple[Step, Transcript]] = []
        for step in steps:
            kept = done.get(step.index)
            if kept is not None:
                parts.append((step, kept))
                continue
            if token.cancelled:
                raise Cancelled("the job was stopped")
            chunk = samples[step.start : step.end]
            part = await self._transcribe_step(key, chunk, options, token)
            if not self.store.checkpoint(job.id, step.index, step.start_s, step.end_s, part):
                raise Cancelled("the job was cancelled")
            if self._on_audio is not None:
                self._on_audio(key[0], step.end_s - step.start_s)
            parts.append((step, part))
        result = join_steps(parts, duration, options.language, options.task)
        result = replace(result, engine=key[0], model=key[1], attempts=(key[0],))
        if self.store.succeed(job.id, result) is not None:
            logger.info("job %s succeeded: %.1f s of audio", job.id, duration)

    async def _transcribe_step(
        self, key: SlotKey, chunk: Any, options: TranscribeOptions, token: CancelToken
    ) -> Transcript:
        if is_silent(chunk):  # no model time for silence, as for a synchronous request
            return Transcript(
                text="",
                segments=(),
                duration=round(len(chunk) / SAMPLE_RATE, 3),
                language=options.language,
                engine=key[0],
                model=key[1],
                task=options.task,
            )
        slot = self.manager.slot(key)
        # Below interactive work: wait until nothing else is admitted on this engine and
        # fewer job steps than workers are under way; among jobs, in turn (first in line).
        turns, turn = self._turns[key], object()
        turns.append(turn)
        try:
            while True:
                if token.cancelled:
                    raise Cancelled("the job was stopped")
                mine = self._steps[key]
                if turns[0] is turn and slot.in_flight - mine <= 0 and mine < slot.workers:
                    break
                await asyncio.sleep(_GATE_POLL_S)
        finally:
            turns.remove(turn)
        reservation = self.manager.reserve(key)
        self._steps[key] += 1
        try:
            # The engine's speech gate as for a synchronous request; no fallback engine.
            future = self.manager.submit_attempt(
                key, chunk, options, on_segment=None, cancel=token, reservation=reservation
            )
            result = await self.manager.await_job(
                future, token, self.manager.deadline(len(chunk) / SAMPLE_RATE)
            )
        finally:
            self._steps[key] -= 1
            reservation.release()
        return replace(result, engine=key[0], model=key[1])

    # -- webhooks -------------------------------------------------------------------------

    def _send_due_webhooks(self) -> None:
        if not self.webhooks.enabled:
            return
        for job in self.store.due_webhooks(time.time()):
            if job.id in self._sending or job.callback_url is None:
                continue
            self._sending.add(job.id)
            event = {
                "type": f"job.{job.status}",
                "created_at": round(time.time(), 3),
                "job": job.public(),
            }
            future = asyncio.get_running_loop().run_in_executor(
                self._webhook_pool, self.webhooks.deliver, job.callback_url, event
            )
            future.add_done_callback(functools.partial(self._delivered, job))

    def _delivered(self, job: Job, future: asyncio.Future[Delivery]) -> None:
        self._sending.discard(job.id)
        if future.cancelled():
            return
        try:
            outcome = future.result()
        except Exception:
            logger.exception("webhook of job %s failed", job.id)
            return
        attempts = job.webhook_attempts + 1
        retry_at = None
        if not outcome.ok and outcome.retry and attempts < self.conf.webhook_max_attempts:
            delay = min(_WEBHOOK_BACKOFF_CAP_S, self.conf.webhook_backoff_s * 2 ** (attempts - 1))
            retry_at = time.time() + delay
        self.store.webhook_result(
            job.id, delivered=outcome.ok, error=outcome.error, retry_at=retry_at
        )
        if outcome.ok:
            logger.info("webhook of job %s delivered", job.id, extra={"job_id": job.id})
        else:
            logger.warning(
                "webhook of job %s, attempt %d: %s%s",
                job.id,
                attempts,
                outcome.error,
                "" if retry_at else "; given up",
            )
