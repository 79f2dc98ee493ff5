"""Batch throughput: raw faster-whisper in a loop, `stts batch` here, `stts batch --ray`.

Same files, same model (Whisper base, int8, language en), one run. Each configuration
runs in a fresh process, so its driver peak RSS is its own; the Ray actors' peak RSS is
read from /proc while they run. Ray runs on a local cluster (``ray start --head``, 2
CPUs) that only lives inside a private network and PID namespace (``unshare``; Ray
binds the machine's non-loopback address otherwise): the script re-executes itself in
one. Each engine thread is one core: "1 CPU" below means ``whisper.cpu_threads=1``.
Ray actors reserve half a logical CPU each, so that two of them leave room for Ray
Data's read tasks on a 2-CPU cluster; the cores they use are their engine threads.

    .venv/bin/python bench/batch.py [--files 6] [--only local1,ray1]
    .venv/bin/python bench/batch.py --long-minutes 5 --only local1,ray1

Writes bench/results/batch.md and batch.json (batch-long.* with --long-minutes: Ray's
fixed cost, some 16 CPU s per run, against minutes of audio instead of 32 s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, corpus, embedded_base, free_port, machine, markdown_table, peak_rss_mb


def _spoken() -> list[Path]:
    # Spoken English in manifest order (3 to 11 s each); the cards clips are a few words.
    return [i.path for i in corpus() if not i.path.name.startswith("pocketsphinx__00")]


def _files(count: int) -> list[Path]:
    return _spoken()[:count]


def _long_files(minutes: float, folder: Path, per_file_s: float = 60.0) -> list[Path]:
    """Recordings of about ``per_file_s`` each, ``minutes`` in all, joined from the corpus
    utterances with 1 s pauses; each file starts at another utterance, so no two have the
    same content (``stts batch`` skips an input whose content it has done)."""
    from stts.audio import decode_audio
    from stts.synthetic import float_wav

    clips = [decode_audio(p).samples for p in _spoken()]
    pause = np.zeros(16_000, dtype=np.float32)
    files: list[Path] = []
    total, start = 0.0, 0
    while total < minutes * 60:
        parts: list[np.ndarray] = []
        length, i = 0, start
        while length < per_file_s * 16_000:
            clip = clips[i % len(clips)]
            parts += [clip, pause]
            length += len(clip) + len(pause)
            i += 1
        path = folder / f"long-{len(files):03d}.wav"
        path.write_bytes(float_wav(np.concatenate(parts), 16_000))
        files.append(path)
        total += length / 16_000
        start += 1
    return files


def raw_loop(files: list[str], threads: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from faster_whisper import WhisperModel

    from stts.audio import decode_audio

    model_dir = str(embedded_base())
    t0 = time.perf_counter()  # the model load counts, as it does for stts batch
    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
    audio = 0.0
    for path in files:
        samples = decode_audio(Path(path)).samples
        audio += len(samples) / 16000
        segments, _ = model.transcribe(samples, language="en", beam_size=5)
        "".join(s.text for s in segments)
    queue.put({"wall": time.perf_counter() - t0, "audio": audio, "driver_rss": peak_rss_mb()})


def stts_batch(
    files: list[str], threads: int, workers: int, ray: str | None, actors: int, queue: mp.Queue
) -> None:  # type: ignore[type-arg]
    from stts.batch import Batch, BatchRequest, collect_inputs, run_local
    from stts.config import Settings
    from stts.service import EngineManager

    settings = Settings(engines=["whisper"], whisper={"cpu_threads": threads, "workers": workers})
    request = BatchRequest(engine="whisper", language="en")
    out = Path(tempfile.mkdtemp(prefix="stts-bench-batch-"))
    try:
        manager = EngineManager(settings)
        key = manager.resolve("whisper")
        first: list[float] = []
        with Batch(out, request, request.key(*key)) as batch:
            items = batch.plan(collect_inputs(files))
            t0 = time.perf_counter()

            def seen(record: dict[str, Any]) -> None:
                assert not record["error"], record
                if not first:
                    first.append(time.perf_counter() - t0)

            if ray is None:
                run_local(batch, items, manager, settings, on_record=seen)
            else:
                from stts.raycluster.batch import run_on_ray

                manager.close()
                run_on_ray(ray, batch, items, settings, actors, 0.5, on_record=seen)
            wall = time.perf_counter() - t0
        manager.close()
        queue.put(
            {
                "wall": wall,
                "audio": batch.summary.audio_seconds,
                "first_result": first[0],
                "driver_rss": peak_rss_mb(),
            }
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


class Processes:
    """CPU time of every process in this PID namespace (the bench's own, Ray's daemons,
    its actors) while one configuration runs, and the peak RSS (VmHWM) of the Ray Data
    actors it started; sampled every 0.3 s (a process that exits between two samples
    loses its last 0.3 s of CPU at most)."""

    _TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self) -> None:
        self.before = self._cpu_all()
        self.cpu: dict[int, float] = {}
        self.actor_peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def _cpu(cls, pid: str) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / cls._TICK  # utime + stime

    @classmethod
    def _cpu_all(cls) -> dict[int, float]:
        seen = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                seen[int(pid)] = cls._cpu(pid)
            except (OSError, IndexError):
                continue
        return seen

    def _sample(self) -> None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                self.cpu[int(pid)] = self._cpu(pid)
                if int(pid) in self.before:
                    continue
                if b"MapWorker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        mb = int(line.split()[1]) / 1024
                        self.actor_peaks[int(pid)] = max(self.actor_peaks.get(int(pid), 0.0), mb)
            except (OSError, IndexError):
                continue

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self._sample()

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds all processes spent since the start."""
        return sum(cpu - self.before.get(pid, 0.0) for pid, cpu in self.cpu.items())

    def __enter__(self) -> Processes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def measure(target: Any, *args: Any) -> dict[str, Any]:
    context = mp.get_context("spawn")  # a fresh interpreter: its peak RSS is its own
    queue = context.Queue()
    proc = context.Process(target=target, args=(*args, queue))
    proc.start()
    result: dict[str, Any] = queue.get(timeout=3600)
    proc.join()
    return result


def start_cluster() -> tuple[str, str]:
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="stts-ray-")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    os.environ.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
    subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            "--num-cpus=2",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
        ]
        + ["--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        check=True,
        capture_output=True,
    )
    return f"127.0.0.1:{port}", temp_dir


CONFIGS = ("raw2", "raw1", "local1", "ray1", "local2", "ray2")


def run(count: int, long_minutes: float, only: tuple[str, ...]) -> None:
    long_dir = Path(tempfile.mkdtemp(prefix="stts-bench-long-")) if long_minutes else None
    if long_dir is not None:
        files = [str(p) for p in _long_files(long_minutes, long_dir)]
    else:
        files = [str(p) for p in _files(count)]
    load_at_start = os.getloadavg()[0]
    address, temp_dir = start_cluster()
    rows: list[dict[str, Any]] = []
    try:
        configs: list[tuple[str, str, int, Any, tuple[Any, ...]]] = [
            ("raw2", "raw faster-whisper loop", 2, raw_loop, (files, 2)),
            ("raw1", "raw faster-whisper loop", 1, raw_loop, (files, 1)),
            ("local1", "stts batch (local, 1 worker)", 1, stts_batch, (files, 1, 1, None, 1)),
            ("ray1", "stts batch --ray, 1 actor", 1, stts_batch, (files, 1, 1, address, 1)),
            ("local2", "stts batch (local, 2 workers)", 2, stts_batch, (files, 1, 2, None, 1)),
            ("ray2", "stts batch --ray, 2 actors", 2, stts_batch, (files, 1, 1, address, 2)),
        ]
        for key, name, cores, target, args in configs:
            if key not in only:
                continue
            print(f"running: {name} ({cores} cores)", flush=True)
            with Processes() as processes:
                result = measure(target, *args)
            result |= {"name": name, "cores": cores, "cpu_s": processes.cpu_seconds}
            result["actor_rss"] = max(processes.actor_peaks.values(), default=None)
            result["rate"] = result["audio"] / result["wall"]
            result["cpu_per_audio_s"] = result["cpu_s"] / result["audio"]
            rows.append(result)
            print(json.dumps(result), flush=True)
    finally:
        subprocess.run(
            [str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True
        )
        shutil.rmtree(temp_dir, ignore_errors=True)
        if long_dir is not None:
            shutil.rmtree(long_dir, ignore_errors=True)

    def baseline(row: dict[str, Any]) -> dict[str, Any] | None:
        local = {1: "stts batch (local, 1 worker)", 2: "stts batch (local, 2 workers)"}
        if "--ray" not in row["name"]:
            return None
        return next((r for r in rows if r["name"] == local[row["cores"]]), None)

    table = []
    for row in rows:
        base = baseline(row)
        wall_overhead = f"{(base['rate'] / row['rate'] - 1) * 100:+.1f} %" if base else ""
        cpu_overhead = (
            f"{(row['cpu_per_audio_s'] / base['cpu_per_audio_s'] - 1) * 100:+.1f} %" if base else ""
        )
        table.append(
            [
                row["name"],
                row["cores"],
                round(row["wall"], 1),
                round(row["rate"], 2),
                round(row["first_result"], 1) if "first_result" in row else "",
                round(row["cpu_per_audio_s"], 2),
                wall_overhead,
                cpu_overhead,
                round(row["driver_rss"]),
                round(row["actor_rss"]) if row["actor_rss"] else "",
            ]
        )
    headers = ["configuration", "cores", "wall s", "audio s/s", "first result s"]
    headers += ["CPU s per audio s (all processes)", "Ray vs local: wall", "Ray vs local: CPU"]
    headers += ["driver peak RSS MB", "actor peak RSS MB"]
    what = "recordings of ~60 s joined from the corpus utterances" if long_dir else "files"
    text = (
        f"{len(files)} {what}, {rows[0]['audio']:.1f} s of English audio, Whisper base int8, "
        f"beam 5, language en; {machine()}. Wall time from start to the last result, the "
        "model load (and for Ray the actors' start) included. CPU: user + system time of "
        "every process of the run's PID namespace (the bench, Ray's daemons, the actors). "
        "Ray vs local: the slowdown (wall) and the extra CPU against stts batch local at the "
        f"same cores. Load average of the (shared) machine: {load_at_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.\n\n"
    )
    text += markdown_table(headers, table) + "\n"
    RESULTS.mkdir(exist_ok=True)
    stem = "batch-long" if long_dir else "batch"
    names = [Path(f).name for f in files]
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"files": names, "rows": rows}, indent=2))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument(
        "--long-minutes",
        type=float,
        default=0.0,
        help="instead of corpus files: recordings of ~60 s joined from them, this many "
        "minutes in all (writes batch-long.md), to see Ray's fixed cost amortised",
    )
    parser.add_argument(
        "--only", default=",".join(CONFIGS), help=f"configurations, of {','.join(CONFIGS)}"
    )
    args = parser.parse_args()
    only = tuple(c for c in args.only.split(",") if c)
    if unknown := set(only) - set(CONFIGS):
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    if os.environ.get("STTS_RAY_NETNS") != "1":
        # Fixed arguments only: this interpreter, this script, two numbers and checked names.
        script = 'ip link set lo up && exec "$0" "$1" --files "$2" --long-minutes "$3" --only "$4"'
        command = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", script]
        env = {**os.environ, "STTS_RAY_NETNS": "1"}
        argv = [sys.executable, __file__, str(args.files), str(args.long_minutes), ",".join(only)]
        sys.exit(subprocess.call([*command, *argv], env=env))
    run(args.files, args.long_minutes, only)


if __name__ == "__main__":
    main()
