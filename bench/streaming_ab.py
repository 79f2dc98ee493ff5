"""Whisper live streams before and after one change, in one run (``bench/streaming.py``'s
measurement, same files, same offline baseline, alternating so load drifts hit both).

``before`` is the previous default of session 8's two changes, restored in this process
only: a failed last pass decoded again on the 30 s window at once (no 8 s try), passes
every ``min_chunk`` from the start (not every half of it until the first commit), and a
pass that heard nothing keeping the whole buffer.

    .venv/bin/python bench/streaming_ab.py [--rounds 1] [--variants before,after]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import streaming
from common import RESULTS, machine

from stts.engines import whisper_short, whisper_stream


def _old_accept(self: Any, samples: Any) -> Any:
    """WhisperStream.accept before: no quicker pass after an empty one, no cut."""
    import numpy as np

    self.buffer = np.concatenate([self.buffer, samples.astype(np.float32, copy=False)])
    self.total += len(samples)
    self.unseen += len(samples)
    if self.unseen < self.min_chunk:
        return whisper_stream.StreamUpdate(
            (), " ".join(w.word.strip() for w in self.agreement.previous)
        )
    self.unseen = 0
    update = self.agreement.insert(self._decode(final=False))
    self._trim()
    return update


def run(variant: str, label: str = "") -> dict[str, Any]:
    new_accept = whisper_stream.WhisperStream.accept
    new_init = whisper_short.ShortContextDecoder.__init__
    stream_init = whisper_stream.WhisperStream.__init__
    if variant == "early passes":

        def early_init(self: Any, *args: Any, **kw: Any) -> None:
            stream_init(self, *args, **{**kw, "early_passes": True})

        whisper_stream.WhisperStream.__init__ = early_init  # type: ignore[method-assign]
    if variant == "before":

        def old_init(self: Any, model: Any, **kw: Any) -> None:
            new_init(self, model, **{**kw, "retry_s": None})

        whisper_stream.WhisperStream.accept = _old_accept  # type: ignore[method-assign]
        whisper_short.ShortContextDecoder.__init__ = old_init  # type: ignore[method-assign]
    try:
        result = streaming.measure_engine("whisper", False, 0, True)
    finally:
        whisper_stream.WhisperStream.accept = new_accept  # type: ignore[method-assign]
        whisper_short.ShortContextDecoder.__init__ = new_init  # type: ignore[method-assign]
        whisper_stream.WhisperStream.__init__ = stream_init  # type: ignore[method-assign]
    result["engine"] = f"whisper (short context), {variant}{label}"
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--variants",
        default="before,after",
        help="before, after (the default now), early passes (whisper.stream_early_passes)",
    )
    args = parser.parse_args()
    results = []
    for k in range(args.rounds):
        for variant in args.variants.split(","):
            results.append(run(variant, f" (round {k + 1})" if args.rounds > 1 else ""))
    (RESULTS / "streaming-ab.json").write_text(
        json.dumps({"machine": machine(), "load_end": os.getloadavg()[0], "results": results})
    )


if __name__ == "__main__":
    main()
