"""Whisper's short-context decoder against faster-whisper's 30 s windows, whole files.

Each corpus file of at most 30 s is decoded once, greedy with word timestamps, language
en, by each path on the same loaded model in the same process:

- ``window``: faster-whisper's ``transcribe`` (every pass padded to 30 s of encoder);
- ``short, no fallback``: :class:`stts.engines.whisper_short.ShortContextDecoder`, the
  encoder sized to the audio plus 1 s;
- ``short + fallback``: the same, a pass that loops or stops before the audio does
  decoded again on the 30 s window; ``+ 8 s, then window``: decoded again on 8 s first,
  the window only if that fails as well (what live streams use by default);
- the same with beam 5 or greedy, each with temperature fallback: what an utterance's
  last pass in a live stream could use (``whisper.stream_beam_size``).

CPU time is this process's (all threads), so it holds on a shared machine; WER is the
tests' normaliser (``stts.evaluation.word_error_rate``).

    .venv/bin/python bench/short_context.py [--render-only]

The .md beside the .json holds the README's table (``bench/tables/recognition.py``, one
definition of the columns); ``--render-only`` rewrites it from the .json alone.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from common import RESULTS, corpus, machine
from tables.recognition import render_short_context
from tables.source import Source

from stts.audio import SAMPLE_RATE, decode_audio
from stts.config import Settings
from stts.engines.whisper import WhisperEngine
from stts.engines.whisper_short import ShortContextDecoder
from stts.evaluation import word_error_rate

FINAL = (0.0, 0.2, 0.4)
"""A live stream's last pass may retry hotter, as faster-whisper does."""


def report(data: dict[str, Any]) -> str:
    """A run's .md: what was measured, then the README's table of it (the same renderer)."""
    note = (
        f"{data['files']} corpus files of at most 30 s, {data['audio_s']:.1f} s of audio, each "
        f"decoded once per path (greedy unless the path says, word timestamps, language en), "
        "Whisper base int8; "
        f"{data['machine']}. CPU: process time."
    )
    return note + "\n\n" + render_short_context([Source("short_context.json", data)])


def measure() -> dict[str, Any]:
    """Every path on every file; the run's record as short_context.json holds it."""
    engine = WhisperEngine(Settings(engines=["whisper"], default_engine="whisper"))
    engine.load()
    model = engine._model
    items = [i for i in corpus() if i.reference and i.duration <= 30]
    audios = [decode_audio(i.path).samples for i in items]
    refs = [i.reference for i in items]
    seconds = sum(len(a) for a in audios) / SAMPLE_RATE
    rows: list[dict[str, Any]] = []

    def record(path: str, hyps: list[str], cpu: float, again: int | None) -> None:
        rows.append(
            {
                "path": path,
                "wer": round(word_error_rate(refs, hyps), 4),
                "cpu_s": round(cpu, 1),
                "cpu_per_audio_s": round(cpu / seconds, 3),
                "decoded_again": again,
                "load_avg": round(os.getloadavg()[0], 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    cpu0 = time.process_time()
    hyps = []
    for audio in audios:
        segments, _info = model.transcribe(
            audio,
            language="en",
            beam_size=1,
            temperature=0.0,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        hyps.append(" ".join(s.text for s in segments))
    record("30 s window (faster-whisper)", hyps, time.process_time() - cpu0, None)

    # (fallback, beam, temperatures): the last two are a live stream's last pass.
    # retry: a failed pass tried again on 8 s first (the default), or on the window at once.
    paths = [
        (False, 1, (0.0,), True),
        (True, 1, (0.0,), False),
        (True, 1, (0.0,), True),
        (True, 5, FINAL, True),
        (True, 1, FINAL, False),
        (True, 1, FINAL, True),
    ]
    for fallback, beam, temperatures, retry in paths:
        decoder = ShortContextDecoder(model, fallback=fallback, retry_s=8.0 if retry else None)
        cpu0 = time.process_time()
        hyps, again = [], 0
        for audio in audios:
            budget = min(440, 20 + int(8 * len(audio) / SAMPLE_RATE))  # as live streams
            result = decoder.decode(
                audio,
                language="en",
                max_new_tokens=budget,
                beam_size=beam,
                temperatures=temperatures,
            )
            again += result.fell_back is not None
            hyps.append("".join(w.word for w in result.words))
        name = "short context, no fallback"
        if fallback:
            name = (
                "short context + 8 s, then window fallback"
                if retry
                else ("short context + window fallback")
            )
        if temperatures == FINAL:
            name += f", beam {beam}, temperatures 0/0.2/0.4"
        record(name, hyps, time.process_time() - cpu0, again)

    return {
        "machine": machine(),
        "files": len(items),
        "audio_s": round(seconds, 1),
        "results": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite short_context.md from short_context.json",
    )
    args = parser.parse_args()
    json_path = RESULTS / "short_context.json"
    if args.render_only:
        data = json.loads(json_path.read_text())
    else:
        data = measure()
        RESULTS.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(data))
    text = report(data)
    print(text)
    (RESULTS / "short_context.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
