"""Jobs (issue 15): throughput against the synchronous API, the cost of a crash, and the
latency interactive requests see while jobs run. One run, one real ``stts serve``:

1. **Throughput.** The same recordings (built from corpus speech) go through
   ``/v1/audio/transcriptions`` one after another, then are submitted together as jobs
   (``jobs.workers`` = 1) and waited for: audio seconds per second of each, and the ratio.
2. **Crash and resume.** One recording is submitted again; once half of it is
   checkpointed and its next step is about half done, the server is killed with SIGKILL
   and started again on the same ``jobs.dir``. Reported: the audio the engine ran over
   both attempts (checkpointed steps plus the step lost at the kill) against the
   recording's length, and the wall time (attempts + restart) against the same job's
   uninterrupted run in part 1.
3. **Interactive latency.** The restarted server runs with ``jobs.workers`` = N: a short
   corpus file's synchronous latency on the idle server, then with N jobs running
   (medians), against the cost of one job step measured in part 1.

    .venv/bin/python bench/jobs.py [--engine whisper] [--files 2] [--seconds 45]

Writes bench/results/jobs.md and jobs.json. A shared machine's load moves every number;
the ratios are measured within one run, on one server, on the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import RESULTS, corpus, free_port, machine, markdown_table, start_server

from stts.audio import decode_audio
from stts.jobs.steps import plan_steps
from stts.testing import joined_speech_wav

TIMEOUT = httpx.Timeout(1800.0)
POLL_S = 0.1


def recording(seconds: float, offset: int) -> bytes:
    """A 16 kHz mono WAV of ``seconds`` of corpus speech (clips in manifest order from
    ``offset``, 0.4 s apart), so each file is different."""
    clips = [decode_audio(i.path).samples for i in corpus()]
    return joined_speech_wav(clips, seconds, offset)


class Server:
    """A real ``stts serve`` on 127.0.0.1 with its jobs in ``jobs_dir``."""

    def __init__(self, engine: str, jobs_dir: Path, step_s: float) -> None:
        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "STTS_ENGINES": engine,
            "STTS_DEFAULT_ENGINE": engine,
            "STTS_JOBS__DIR": str(jobs_dir),
            "STTS_JOBS__STEP_S": str(step_s),
        }
        self.proc: Any = None
        self.http = httpx.Client(timeout=TIMEOUT)

    def start(self, workers: int) -> float:
        """Start it; seconds until it answered /ready."""
        t0 = time.perf_counter()
        self.proc = start_server(self.port, {**self.env, "STTS_JOBS__WORKERS": str(workers)})
        return time.perf_counter() - t0

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)
        self.http.close()

    def sync(self, name: str, data: bytes) -> float:
        """Client wall seconds of one synchronous transcription."""
        t0 = time.perf_counter()
        response = self.http.post(
            f"{self.url}/v1/audio/transcriptions",
            files={"file": (name, data, "audio/wav")},
            data={"model": self.engine, "language": "en"},
        )
        response.raise_for_status()
        return time.perf_counter() - t0

    def submit(self, name: str, data: bytes) -> str:
        response = self.http.post(
            f"{self.url}/api/v1/jobs",
            files={"file": (name, data, "audio/wav")},
            data={"model": self.engine, "language": "en"},
        )
        response.raise_for_status()
        job_id: str = response.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/api/v1/jobs/{job_id}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """Poll until every job has finished; they must have succeeded."""
        done: dict[str, dict[str, Any]] = {}
        while len(done) < len(job_ids):
            for job_id in job_ids:
                if job_id not in done:
                    job = self.job(job_id)
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        assert job["status"] == "succeeded", job
                        done[job_id] = job
            time.sleep(POLL_S)
        return [done[j] for j in job_ids]

    def cancel(self, job_id: str) -> None:
        self.http.delete(f"{self.url}/api/v1/jobs/{job_id}").raise_for_status()


def throughput(server: Server, files: list[bytes]) -> dict[str, Any]:
    """Part 1: the files through the synchronous API, then as jobs."""
    audio_s = sum((len(f) - 44) / 32_000 for f in files)
    t0 = time.perf_counter()
    sync_latencies = [server.sync(f"rec{i}.wav", f) for i, f in enumerate(files)]
    sync_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = [server.submit(f"rec{i}.wav", f) for i, f in enumerate(files)]
    jobs = server.wait(ids)
    jobs_wall = time.perf_counter() - t0
    return {
        "audio_s": round(audio_s, 1),
        "sync_wall_s": round(sync_wall, 1),
        "jobs_wall_s": round(jobs_wall, 1),
        "sync_audio_s_per_s": round(audio_s / sync_wall, 3),
        "jobs_audio_s_per_s": round(audio_s / jobs_wall, 3),
        "jobs_vs_sync": round(sync_wall / jobs_wall, 3),
        "sync_latencies_s": [round(s, 2) for s in sync_latencies],
        "job_running_s": [j["timings"]["running_s"] for j in jobs],
        "job_queued_s": [j["timings"]["queued_s"] for j in jobs],
    }


def steps_of(data: bytes, step_s: float) -> list[tuple[float, float]]:
    """The job steps of a recording, as the server cuts them (start, end in seconds)."""
    return [(s.start_s, s.end_s) for s in plan_steps(decode_audio(data).samples, step_s)]


def crash(
    server: Server, data: bytes, uninterrupted_s: float, workers: int, step_s: float
) -> dict[str, Any]:
    """Part 2: SIGKILL in the middle of a step past half the recording, then a restart."""
    length = (len(data) - 44) / 32_000
    job_id = server.submit("crash.wav", data)
    started = time.perf_counter()
    steps = steps_of(data, step_s)
    last_done, last_change = 0.0, time.perf_counter()
    while True:
        job = server.job(job_id)
        assert job["status"] in ("queued", "running"), job
        done = job["progress"]["done_s"]
        if done > last_done:
            last_done, last_change = done, time.perf_counter()
            if done >= length / 2:
                break
        time.sleep(POLL_S)
    # About half-way through the next step, at the pace of the steps so far.
    pace = (last_change - started) / last_done
    (lost,) = [end - start for start, end in steps if abs(start - last_done) < 0.01]
    time.sleep(pace * lost / 2)
    lost_wall = time.perf_counter() - last_change
    first_attempt = time.perf_counter() - started
    assert server.job(job_id)["status"] == "running", "the job ended before the kill"
    server.kill()
    restart = server.start(workers)
    t0 = time.perf_counter()
    (final,) = server.wait([job_id])
    second_attempt = time.perf_counter() - t0
    assert final["resumed_from_s"] is not None, final
    return {
        "audio_s": round(length, 1),
        "killed_after_checkpoint_s": round(last_done, 2),
        "resumed_from_s": final["resumed_from_s"],
        "attempts": final["attempts"],
        "engine_audio_checkpointed_s": final["decoded_s"],
        "lost_step_wall_s": round(lost_wall, 1),
        "lost_step_audio_s": round(lost, 2),
        "first_attempt_wall_s": round(first_attempt, 1),
        "restart_to_ready_s": round(restart, 1),
        "second_attempt_wall_s": round(second_attempt, 1),
        "crash_total_wall_s": round(first_attempt + restart + second_attempt, 1),
        "uninterrupted_wall_s": round(uninterrupted_s, 1),
    }


def latency(server: Server, busy_jobs: int, repeats: int, seconds: float) -> dict[str, Any]:
    """Part 3: a short file's synchronous latency, idle and with ``busy_jobs`` running."""
    probe = next(i for i in corpus() if i.path.name == "openai-whisper__jfk.flac").path
    data = probe.read_bytes()
    server.sync(probe.name, data)  # warm
    idle = [server.sync(probe.name, data) for _ in range(repeats)]
    ids = [server.submit(f"busy{i}.wav", recording(seconds, 7 * i)) for i in range(busy_jobs)]
    while not all(server.job(j)["status"] == "running" for j in ids):
        time.sleep(POLL_S)
    busy = []
    for _ in range(repeats):
        busy.append(server.sync(probe.name, data))
    progress = [server.job(j)["progress"]["done_s"] for j in ids]
    for job_id in ids:
        server.cancel(job_id)
    return {
        "probe": probe.name,
        "idle_s": [round(x, 2) for x in idle],
        "busy_s": [round(x, 2) for x in busy],
        "idle_median_s": round(statistics.median(idle), 2),
        "busy_median_s": round(statistics.median(busy), 2),
        "busy_max_s": round(max(busy), 2),
        "jobs_progress_s": progress,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="whisper")
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=45.0, help="length of each recording")
    parser.add_argument("--step-s", type=float, default=30.0, help="jobs.step_s")
    parser.add_argument("--busy-jobs", type=int, default=3, help="jobs running in part 3")
    parser.add_argument("--repeats", type=int, default=3, help="probe requests, idle and busy")
    parser.add_argument(
        "--tables-only", action="store_true", help="rewrite jobs.md from jobs.json, run nothing"
    )
    args = parser.parse_args()
    if args.tables_only:
        saved = json.loads((RESULTS / "jobs.json").read_text())
        args = argparse.Namespace(**saved["args"])
        report(args, saved["throughput"], saved["crash"], saved["latency"], *saved["load"])
        return

    files = [recording(args.seconds, 5 * i) for i in range(args.files)]
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stts-bench-jobs-") as tmp:
        server = Server(args.engine, Path(tmp) / "jobs", args.step_s)
        try:
            server.start(workers=1)
            server.sync("warm.wav", recording(5, 3))  # the model loaded and warm
            part1 = throughput(server, files)
            # Engine wall of a full step, at the pace the jobs ran alone (jobs.workers 1).
            pace = statistics.median(part1["job_running_s"]) / args.seconds
            part1["job_step_wall_s"] = round(pace * args.step_s, 1)
            print(json.dumps(part1), flush=True)
            part2 = crash(server, files[0], part1["job_running_s"][0], args.busy_jobs, args.step_s)
            print(json.dumps(part2), flush=True)
            part3 = latency(server, args.busy_jobs, args.repeats, args.seconds)
            print(json.dumps(part3), flush=True)
        finally:
            server.stop()
    load_at_end = os.getloadavg()[0]
    report(args, part1, part2, part3, load_at_start, load_at_end)


def report(
    args: argparse.Namespace,
    part1: dict[str, Any],
    part2: dict[str, Any],
    part3: dict[str, Any],
    load_at_start: float,
    load_at_end: float,
) -> None:
    head = (
        f"{args.files} recordings of {args.seconds:.0f} s built from corpus speech, engine "
        f"{args.engine} (language en), jobs.step_s {args.step_s:.0f}; {machine()}; one "
        f"`stts serve` on 127.0.0.1. Load average of the (shared) machine: {load_at_start:.1f} "
        f"at the start, {load_at_end:.1f} at the end.\n\n"
    )
    t1 = markdown_table(
        ["path", "audio s", "wall s", "audio s per s", "vs synchronous"],
        [
            [
                "synchronous, one request at a time",
                part1["audio_s"],
                part1["sync_wall_s"],
                part1["sync_audio_s_per_s"],
                "1.00",
            ],
            [
                "jobs, all submitted at once (jobs.workers 1)",
                part1["audio_s"],
                part1["jobs_wall_s"],
                part1["jobs_audio_s_per_s"],
                f"{part1['jobs_vs_sync']:.2f}",
            ],
        ],
    )
    extra = part2["crash_total_wall_s"] - part2["uninterrupted_wall_s"]
    lost = part2["lost_step_audio_s"] or 0.0
    t2 = markdown_table(
        ["crash and resume", "value"],
        [
            ["recording", f"{part2['audio_s']} s"],
            [
                "killed (SIGKILL)",
                f"{part2['lost_step_wall_s']} s after the checkpoint at "
                f"{part2['killed_after_checkpoint_s']} s",
            ],
            ["resumed from", f"{part2['resumed_from_s']} s (attempt {part2['attempts']})"],
            [
                "engine audio kept in checkpoints (decoded_s)",
                f"{part2['engine_audio_checkpointed_s']} s",
            ],
            [
                "engine audio lost (the step running at the kill)",
                f"{lost} s, killed {part2['lost_step_wall_s']} s into it",
            ],
            [
                "audio given to the engine, both attempts",
                f"{part2['engine_audio_checkpointed_s'] + lost:.1f} s for {part2['audio_s']} s of audio (restarting from zero: {part2['killed_after_checkpoint_s'] + lost + part2['audio_s']:.1f} s)",
            ],
            ["restart to ready", f"{part2['restart_to_ready_s']} s"],
            [
                "wall: first attempt + restart + second attempt",
                f"{part2['first_attempt_wall_s']} + {part2['restart_to_ready_s']} + {part2['second_attempt_wall_s']} = {part2['crash_total_wall_s']} s",
            ],
            [
                "wall: the same job uninterrupted (part 1)",
                f"{part2['uninterrupted_wall_s']} s (crash cost +{extra:.1f} s)",
            ],
        ],
    )
    added = part3["busy_median_s"] - part3["idle_median_s"]
    step = part1["job_step_wall_s"]
    t3 = markdown_table(
        ["interactive request", "seconds"],
        [
            [f"{part3['probe']}, idle server (median of {args.repeats})", part3["idle_median_s"]],
            [
                f"the same with {args.busy_jobs} jobs running (median; max {part3['busy_max_s']})",
                part3["busy_median_s"],
            ],
            ["added latency", round(added, 2)],
            [f"one job step ({args.step_s:.0f} s of audio) costs the engine (part 1)", step],
            ["added latency in job steps", round(added / step, 2) if step else "-"],
        ],
    )
    text = f"{head}{t1}\n\n{t2}\n\n{t3}\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "jobs.md").write_text(text)
    (RESULTS / "jobs.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "machine": machine(),
                "load": [load_at_start, load_at_end],
                "throughput": part1,
                "crash": part2,
                "latency": part3,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
