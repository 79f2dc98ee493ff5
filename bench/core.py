"""Issue 2 numbers: load time, real-time factor, peak RSS and WER of the default engine.

Runs stts (library path: decode once with stts.audio, Whisper through the EngineManager)
and, as the baseline in the same run, raw faster-whisper in-process on the same model
directory with the same settings (int8, beam 5, language en). Each side runs in its own
fresh process so peak RSS is its own.

    .venv/bin/python bench/core.py            # writes bench/results/core.md
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable

from common import (
    RESULTS,
    Item,
    corpus,
    embedded_base,
    machine,
    markdown_table,
    peak_rss_mb,
    raw_transcribe,
    raw_whisper,
)
from tables import columns

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))  # corpus passes per side; the fastest counts


def _measure(name: str, load_s: float, transcribe: Callable[[Item], tuple[str, float]]) -> dict:  # type: ignore[type-arg]
    """jfk.flac once (warm-up, its real-time factor), then one timed pass over the corpus."""
    from stts.evaluation import word_error_rate

    items = corpus()
    t0 = time.perf_counter()
    transcribe(next(i for i in items if i.path.name == "openai-whisper__jfk.flac"))
    jfk_s = time.perf_counter() - t0
    refs, hyps, audio_s = [], [], 0.0
    t0 = time.perf_counter()
    for item in items:
        text, duration = transcribe(item)
        audio_s += duration
        hyps.append(text)
        refs.append(item.reference)
    wall = time.perf_counter() - t0
    return {
        "name": name,
        "load_s": load_s,
        "jfk_rtf": jfk_s / 11.0,
        "audio_s": audio_s,
        "wall_s": wall,
        "wer": word_error_rate(refs, hyps),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_stts(queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from stts.audio import decode_audio
    from stts.config import Settings
    from stts.engines.base import TranscribeOptions
    from stts.service import EngineManager

    manager = EngineManager(Settings())
    t0 = time.perf_counter()
    manager.preload()
    load = time.perf_counter() - t0
    options = TranscribeOptions(language="en")

    def transcribe(item: Item) -> tuple[str, float]:
        audio = decode_audio(item.path)  # decoding is part of the measured work
        return manager.transcribe(audio, options=options).text, audio.duration

    queue.put(_measure("stts (library)", load, transcribe))
    manager.close()


def run_raw(queue: mp.Queue) -> None:  # type: ignore[type-arg]
    path = embedded_base()  # assembled before the clock starts: the timed part is the load
    t0 = time.perf_counter()
    model = raw_whisper(path)
    load = time.perf_counter() - t0
    queue.put(
        _measure("raw faster-whisper (baseline)", load, lambda i: raw_transcribe(model, i.path))
    )


def _combine(passes: list[dict]) -> dict:  # type: ignore[type-arg]
    """One side's passes: the fastest corpus pass, the median load, the highest peak RSS."""
    best = min(passes, key=lambda p: p["wall_s"])
    return {
        **best,
        "load_s": statistics.median(p["load_s"] for p in passes),
        "jfk_rtf": min(p["jfk_rtf"] for p in passes),
        "corpus_rtf": best["wall_s"] / best["audio_s"],
        "peak_rss_mb": max(p["peak_rss_mb"] for p in passes),
        "walls_s": [p["wall_s"] for p in passes],
    }


def main() -> None:
    ctx = mp.get_context("spawn")
    passes: dict[str, list[dict]] = {"raw": [], "stts": []}  # type: ignore[type-arg]
    # Passes alternate (raw, stts, stts, raw, ...) so that drift in machine load hits both
    # sides; each pass is a fresh process, so its load time and peak RSS are its own.
    for r in range(REPEATS):
        order = [("raw", run_raw), ("stts", run_stts)]
        for side, target in order if r % 2 == 0 else order[::-1]:
            queue = ctx.Queue()
            proc = ctx.Process(target=target, args=(queue,))
            proc.start()
            passes[side].append(queue.get())
            proc.join()
    raw, stts = _combine(passes["raw"]), _combine(passes["stts"])
    results = [raw, stts]
    table = markdown_table(columns.CORE, [columns.core_row(r) for r in results])
    ratio = stts["wall_s"] / raw["wall_s"]
    text = (
        f"Whisper base int8, beam 5, language en, {len(corpus())} files / {raw['audio_s']:.1f} s "
        f"of audio (goforward.raw skipped: faster-whisper cannot read headerless PCM); {machine()}. "
        f"Corpus wall time: fastest of {REPEATS} alternating passes per side (raw "
        f"{', '.join(f'{w:.1f}' for w in raw['walls_s'])} s; stts "
        f"{', '.join(f'{w:.1f}' for w in stts['walls_s'])} s), each pass in a fresh process; "
        f"load time: median of the passes.\n\n"
        f"{table}\n\nstts / raw wall time over the corpus: {ratio:.3f}\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "core.md").write_text(text)
    (RESULTS / "core.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
