"""Live streaming: latency, streamed WER against offline WER, CPU, sustained streams.

Every corpus file (English speech with references) is fed to a live stream at real-time
pace in 100 ms pieces, through the service layer the realtime and Wyoming faces use
(``stts.streams.LiveStream``: admission, steps on the engine's workers, backlog), on the
same engine that also transcribes each file offline in the same run (the baseline).

Measured per engine:
- first tentative / first committed text, from speech onset (Silero VAD on the file);
- final latency: from the end of the audio (the client's commit) to the final transcript;
- per-word lag: when a committed word was handed out minus when it ended in the audio;
- streamed WER vs the same engine's offline WER on the same files;
- CPU seconds (this process, all threads) per second of audio streamed;
- the most concurrent real-time streams sustained (every stream's backlog under 1 s);
  PocketSphinx's as a server runs them, in a child process per worker (``isolate``).

    .venv/bin/python bench/streaming.py [--engines whisper,pocketsphinx] [--quick]
        [--whisper-context window,short] [--out streaming] [--render-only]

Whisper runs once per ``--whisper-context``: ``window`` re-decodes through
faster-whisper's transcribe (every pass padded to a 30 s window), ``short`` through
the short-context decoder (``whisper.stream_short_context``, encoder sized to the
buffer); both against the same offline baseline, in the same run. The load average is
recorded beside the figures: on a shared machine CPU seconds per audio second are the
trustworthy figure, wall latencies are not.

The .md beside the .json holds the README's tables (``bench/tables/recognition.py``,
one definition of the columns); ``--render-only`` rewrites it from the .json alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from common import RESULTS, corpus, machine
from tables.recognition import render_streaming
from tables.source import Source

from stts.audio import SAMPLE_RATE, decode_audio
from stts.config import Settings
from stts.engines.base import TranscribeOptions
from stts.evaluation import word_error_rate
from stts.service import EngineManager
from stts.streams import LiveStream
from stts.vad import SileroVad, VadStream

PIECE = SAMPLE_RATE // 10  # 100 ms


@dataclass
class FileRun:
    """One file streamed at real-time pace."""

    text: str = ""
    first_tentative: float | None = None
    first_commit: float | None = None
    final: float = 0.0
    word_lags: list[float] = field(default_factory=list)
    max_backlog: float = 0.0


def speech_span(samples: np.ndarray) -> tuple[float, float]:
    """Where speech starts and ends in a file (seconds), by Silero VAD."""
    vad = VadStream(SileroVad.shared(), silence_duration_ms=300)
    events = vad.accept(samples) + vad.accept(np.zeros(SAMPLE_RATE, np.float32))
    starts = [e.sample for e in events if e.kind == "start"]
    stops = [e.sample for e in events if e.kind == "stop"]
    if not starts:
        return 0.0, len(samples) / SAMPLE_RATE
    end = min(stops[-1] if stops else len(samples), len(samples))
    return starts[0] / SAMPLE_RATE, end / SAMPLE_RATE


async def stream_file(
    manager: EngineManager, engine: str, samples: np.ndarray, onset: float
) -> FileRun:
    """Feed a file at real-time pace; time what comes back."""
    run = FileRun()
    key = manager.resolve(engine)
    loop = asyncio.get_running_loop()
    async with await LiveStream.open(manager, key, TranscribeOptions(language="en")) as stream:
        t0 = loop.time()
        texts: list[str] = []

        def take(now: float) -> None:
            for update in stream.drain_updates():
                if update.tentative and run.first_tentative is None:
                    run.first_tentative = now - t0 - onset
                if update.committed:
                    if run.first_commit is None:
                        run.first_commit = now - t0 - onset
                    run.word_lags += [now - t0 - w.end for w in update.committed]
                    texts.append(update.text)

        for i, start in enumerate(range(0, len(samples), PIECE)):
            await asyncio.sleep(max(0.0, t0 + i * PIECE / SAMPLE_RATE - loop.time()))
            stream.push(samples[start : start + PIECE])
            run.max_backlog = max(run.max_backlog, stream.backlog_s)
            take(loop.time())
        audio_end = loop.time()
        last, transcript = await stream.finish()
        done = loop.time()
        take(done)
        run.word_lags += [done - t0 - w.end for w in last.committed]
        texts.append(last.text)
        run.final = done - audio_end
        run.text = transcript.text
        assert "".join(texts).strip() == transcript.text, "deltas differ from the transcript"
    return run


async def sustained(manager: EngineManager, engine: str, samples: np.ndarray, n: int) -> float:
    """Run ``n`` real-time streams of one file at once; the worst backlog seen (s).

    ``n`` streams are opened and closed first, as a server that has streamed before has
    them: what the first streams start (PocketSphinx's stream children, its decoders of
    about a second each) is a cost once per server, not of sustaining ``n`` streams.
    """
    worst = 0.0
    key = manager.resolve(engine)
    loop = asyncio.get_running_loop()
    options = TranscribeOptions(language="en")
    warm = [await LiveStream.open(manager, key, options) for _ in range(n)]
    for stream in warm:
        await stream.close()

    async def one(offset: float) -> None:
        nonlocal worst
        await asyncio.sleep(offset)
        async with await LiveStream.open(manager, key, TranscribeOptions(language="en")) as s:
            t0 = loop.time()
            for i, start in enumerate(range(0, len(samples), PIECE)):
                await asyncio.sleep(max(0.0, t0 + i * PIECE / SAMPLE_RATE - loop.time()))
                s.push(samples[start : start + PIECE])
                worst = max(worst, s.backlog_s)
            await s.finish()

    await asyncio.gather(*(one(i * 0.137) for i in range(n)))
    return worst


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


_OFFLINE: dict[tuple[str, int], list[str]] = {}
"""Offline texts per (engine, files): one baseline for every streamed variant of a run."""


def measure_engine(
    engine: str,
    quick: bool,
    max_n: int,
    short_context: bool | None = None,
    early_passes: bool | None = None,
) -> dict[str, Any]:
    settings = Settings(engines=[engine], default_engine=engine)
    if short_context is not None:
        settings.whisper.stream_short_context = short_context
    if early_passes is not None:
        settings.whisper.stream_early_passes = early_passes
    # A path that falls behind is measured, not stopped: its backlog is in max_backlog_s.
    settings.streaming.max_backlog_s = 600.0
    conf = settings.engine_settings(engine)
    conf.max_streams = 64
    conf.queue_size = 64
    if engine == "pocketsphinx":
        conf.workers = 2
    manager = EngineManager(settings)
    items = [i for i in corpus() if i.reference][: 6 if quick else None]
    audios = [decode_audio(i.path).samples for i in items]
    manager.slot(manager.resolve(engine)).ensure_loaded()
    options = TranscribeOptions(language="en")
    if (engine, len(items)) not in _OFFLINE:
        _OFFLINE[engine, len(items)] = [manager.transcribe(a, options=options).text for a in audios]
    offline = _OFFLINE[engine, len(items)]
    load0 = os.getloadavg()[0]

    runs: list[FileRun] = []
    cpu0 = time.process_time()
    for samples in audios:
        onset, _end = speech_span(samples)
        runs.append(asyncio.run(stream_file(manager, engine, samples, onset)))
    cpu = time.process_time() - cpu0
    seconds = sum(len(a) for a in audios) / SAMPLE_RATE
    refs = [i.reference for i in items]
    longest = max(audios, key=len)
    sustain: dict[int, float] = {}
    if engine == "pocketsphinx":
        # Concurrent streams as a server runs them: in child processes (isolate, one per
        # worker), since in-process PocketSphinx holds the GIL and gets one core at most.
        manager.close()
        settings.pocketsphinx.isolate = True
        manager = EngineManager(settings)
        manager.slot(manager.resolve(engine)).ensure_loaded()
    n = 1
    while n <= max_n:
        worst = asyncio.run(sustained(manager, engine, longest, n))
        sustain[n] = round(worst, 3)
        print(f"  {engine}: {n} concurrent streams, worst backlog {worst:.2f} s", flush=True)
        if worst >= 1.0:
            break
        n = n + 1 if n < 4 else n * 2
    manager.close()
    ok = [k for k, v in sustain.items() if v < 1.0]
    finals = [r.final for r in runs]
    label = engine
    if short_context is not None:
        label += " (short context)" if short_context else " (30 s window)"
    return {
        "engine": label,
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "files": len(items),
        "audio_s": round(seconds, 1),
        "wer_streamed": round(word_error_rate(refs, [r.text for r in runs]), 4),
        "wer_offline": round(word_error_rate(refs, offline), 4),
        "first_tentative_p50": round(
            statistics.median([r.first_tentative for r in runs if r.first_tentative is not None]),
            3,
        )
        if any(r.first_tentative is not None for r in runs)
        else None,
        "first_commit_p50": round(
            statistics.median([r.first_commit for r in runs if r.first_commit is not None]), 3
        ),
        "final_p50": round(pct(finals, 0.5), 3),
        "final_p95": round(pct(finals, 0.95), 3),
        "word_lag_p50": round(pct([x for r in runs for x in r.word_lags], 0.5), 3),
        "word_lag_p95": round(pct([x for r in runs for x in r.word_lags], 0.95), 3),
        "cpu_per_audio_s": round(cpu / seconds, 3),
        "max_backlog_s": round(max(r.max_backlog for r in runs), 3),
        "finals_s": [round(f, 3) for f in finals],
        "sustained_streams": (max(ok) if ok else 0) if sustain else None,
        "sustain_backlogs": sustain,
    }


def report(data: dict[str, Any], name: str = "streaming.json") -> str:
    """A run's .md: what was measured, then the README's tables of it (the same renderer)."""
    first = data["results"][0]
    note = (
        f"{first['files']} files, {first['audio_s']} s of audio, 100 ms pieces at "
        f"real-time pace, language en; {data['machine']}. Offline WER: the same engine on the "
        "same files in the same run. The machine is shared (load average in the last "
        "column): CPU seconds per audio second hold under load, wall latencies do not."
    )
    return note + "\n\n" + render_streaming([Source(name, data)])


def plot(results: list[dict[str, Any]], out: str) -> None:
    """Median latencies and WER per engine, beside the tables."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["engine"] for r in results]
    x = np.arange(len(names))
    names = [n.replace(" (", "\n(") for n in names]
    axes[0].bar(x - 0.2, [r["first_commit_p50"] for r in results], 0.4, label="first commit")
    axes[0].bar(x + 0.2, [r["final_p50"] for r in results], 0.4, label="final")
    axes[0].set_xticks(x, names)
    axes[0].set_ylabel("seconds (median)")
    axes[0].legend()
    axes[1].bar(x - 0.2, [r["wer_offline"] * 100 for r in results], 0.4, label="offline")
    axes[1].bar(x + 0.2, [r["wer_streamed"] * 100 for r in results], 0.4, label="streamed")
    axes[1].set_xticks(x, names)
    axes[1].set_ylabel("WER %")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{out}.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="whisper,pocketsphinx")
    parser.add_argument("--quick", action="store_true", help="6 files only")
    parser.add_argument(
        "--max-streams", type=int, default=16, help="0: skip the sustained-streams test"
    )
    parser.add_argument(
        "--whisper-context",
        default="window,short",
        help="Whisper decode paths to compare: window (30 s), short (sized to the buffer)",
    )
    parser.add_argument("--out", default="streaming", help="results file stem")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite <out>.md from <out>.json",
    )
    args = parser.parse_args()
    json_path = RESULTS / f"{args.out}.json"
    if args.render_only:
        data = json.loads(json_path.read_text())
    else:
        results = []
        for engine in args.engines.split(","):
            variants: list[bool | None] = [None]
            if engine == "whisper":
                variants = [c == "short" for c in args.whisper_context.split(",")]
            for short in variants:
                print(f"streaming {engine} (short context: {short}) …", flush=True)
                results.append(measure_engine(engine, args.quick, args.max_streams, short))
                print(json.dumps(results[-1]), flush=True)
        data = {"machine": machine(), "results": results}
        RESULTS.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(data))
    text = report(data, json_path.name)
    print(text)
    (RESULTS / f"{args.out}.md").write_text(text + "\n")
    if not args.render_only:
        plot(data["results"], args.out)


if __name__ == "__main__":
    main()
