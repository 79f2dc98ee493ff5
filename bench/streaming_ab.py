"""Whisper live streams before and after one change, in one run (``bench/streaming.py``'s
measurement, same files, same offline baseline, alternating so load drifts hit both).

``before`` is session 8's default, restored in this process only: passes every second
from the start (no early passes), an interim pass that stops short of its audio may still
confirm words, the buffer cut at the last committed word's end, no cut of text written
after the audio ends, and the committed end found again only at a pass's start.
``after`` is the default now.

    .venv/bin/python bench/streaming_ab.py [--rounds 1] [--variants before,after] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import streaming
from common import RESULTS, machine

from stts.engines import streaming as engine_streaming
from stts.engines import whisper_short, whisper_stream
from stts.engines.streaming import LocalAgreement, normalise
from stts.transcript import Word


def _old_fresh(self: LocalAgreement, hypothesis: list[Word]) -> list[Word]:
    """LocalAgreement._fresh before: the committed tail matched at the start only."""
    end = self.committed_end
    fresh = [w for w in hypothesis if w.end > end - 0.5]
    tail = [normalise(w.word) for w in self.committed[-5:]]
    for n in range(min(len(tail), len(fresh)), 0, -1):
        if tail[-n:] == [normalise(w.word) for w in fresh[:n]]:
            return fresh[n:]
    return [w for w in fresh if w.start >= end - 0.2]


def run(variant: str, label: str = "") -> dict[str, Any]:
    saved = (
        whisper_stream.WhisperStream._cut_point,
        whisper_stream.STOPPED_SHORT_S,
        whisper_short.squeezed_tail,
        engine_streaming.LocalAgreement._fresh,
    )
    early = variant != "before"
    if variant == "before":
        whisper_stream.WhisperStream._cut_point = (  # type: ignore[method-assign]
            lambda self: self.agreement.committed_end
        )
        whisper_stream.STOPPED_SHORT_S = float("inf")
        whisper_short.squeezed_tail = lambda *args, **kwargs: None
        engine_streaming.LocalAgreement._fresh = _old_fresh  # type: ignore[method-assign]
    try:
        result = streaming.measure_engine("whisper", False, 0, True, early_passes=early)
    finally:
        (
            whisper_stream.WhisperStream._cut_point,  # type: ignore[method-assign]
            whisper_stream.STOPPED_SHORT_S,
            whisper_short.squeezed_tail,
            engine_streaming.LocalAgreement._fresh,  # type: ignore[method-assign]
        ) = saved
    result["engine"] = f"whisper (short context), {variant}{label}"
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variants", default="before,after", help="before, after")
    parser.add_argument("--out", default="streaming-ab", help="results file name")
    parser.add_argument("--note", default="", help="recorded with the run")
    args = parser.parse_args()
    results = []
    for k in range(args.rounds):
        for variant in args.variants.split(","):
            results.append(run(variant, f" (round {k + 1})" if args.rounds > 1 else ""))
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "load_end": os.getloadavg()[0],
                "note": args.note,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
