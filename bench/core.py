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
import time

from common import RESULTS, corpus, embedded_base, machine, markdown_table, peak_rss_mb, raw_whisper

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))  # corpus passes per side; the fastest counts


def run_stts(queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from stts.audio import decode_audio
    from stts.config import Settings
    from stts.engines.base import TranscribeOptions
    from stts.evaluation import word_error_rate
    from stts.service import EngineManager

    manager = EngineManager(Settings())
    t0 = time.perf_counter()
    manager.preload()
    load = time.perf_counter() - t0
    options = TranscribeOptions(language="en")
    items = corpus()
    jfk = next(i for i in items if i.path.name == "openai-whisper__jfk.flac")
    t0 = time.perf_counter()
    manager.transcribe(decode_audio(jfk.path), options=options)
    jfk_s = time.perf_counter() - t0
    walls = []
    for _ in range(REPEATS):
        refs, hyps, audio_s = [], [], 0.0
        t0 = time.perf_counter()
        for item in items:
            audio = decode_audio(item.path)  # decoding is part of the measured work
            audio_s += audio.duration
            hyps.append(manager.transcribe(audio, options=options).text)
            refs.append(item.reference)
        walls.append(time.perf_counter() - t0)
    total = min(walls)
    manager.close()
    queue.put(
        {
            "name": "stts (library)",
            "load_s": load,
            "jfk_rtf": jfk_s / 11.0,
            "corpus_rtf": total / audio_s,
            "audio_s": audio_s,
            "wall_s": total,
            "wer": word_error_rate(refs, hyps),
            "peak_rss_mb": peak_rss_mb(),
        }
    )


def run_raw(queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from stts.evaluation import word_error_rate

    path = embedded_base()  # assembled before the clock starts: the timed part is the load
    t0 = time.perf_counter()
    model = raw_whisper(path)
    load = time.perf_counter() - t0

    def transcribe(p: str) -> tuple[str, float]:
        segments, info = model.transcribe(p, language="en", beam_size=5)
        return " ".join(s.text.strip() for s in segments), info.duration

    items = corpus()
    t0 = time.perf_counter()
    transcribe(str(next(i for i in items if i.path.name == "openai-whisper__jfk.flac").path))
    jfk_s = time.perf_counter() - t0
    walls = []
    for _ in range(REPEATS):
        refs, hyps, audio_s = [], [], 0.0
        t0 = time.perf_counter()
        for item in items:
            text, duration = transcribe(str(item.path))
            audio_s += duration
            hyps.append(text)
            refs.append(item.reference)
        walls.append(time.perf_counter() - t0)
    total = min(walls)
    queue.put(
        {
            "name": "raw faster-whisper (baseline)",
            "load_s": load,
            "jfk_rtf": jfk_s / 11.0,
            "corpus_rtf": total / audio_s,
            "audio_s": audio_s,
            "wall_s": total,
            "wer": word_error_rate(refs, hyps),
            "peak_rss_mb": peak_rss_mb(),
        }
    )


def main() -> None:
    ctx = mp.get_context("spawn")
    results = []
    for target in (run_raw, run_stts):
        queue = ctx.Queue()
        proc = ctx.Process(target=target, args=(queue,))
        proc.start()
        results.append(queue.get())
        proc.join()
    raw, stts = results
    rows = [
        [
            r["name"],
            r["load_s"],
            r["jfk_rtf"],
            r["corpus_rtf"],
            r["wall_s"],
            r["wer"],
            r["peak_rss_mb"],
        ]
        for r in results
    ]
    table = markdown_table(
        ["run", "load s", "RTF jfk.flac", "RTF corpus", "corpus wall s", "WER", "peak RSS MB"], rows
    )
    ratio = stts["wall_s"] / raw["wall_s"]
    text = (
        f"Whisper base int8, beam 5, language en, {len(corpus())} files / {raw['audio_s']:.1f} s "
        f"of audio (goforward.raw skipped: faster-whisper cannot read headerless PCM); {machine()}. "
        f"Corpus wall time: fastest of {REPEATS} passes per side, each side in its own process.\n\n"
        f"{table}\n\nstts / raw wall time over the corpus: {ratio:.3f}\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "core.md").write_text(text)
    (RESULTS / "core.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
