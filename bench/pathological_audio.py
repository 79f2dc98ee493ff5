"""Whisper's time on 1 s float WAVs above full scale and on digital silence (issue 11, item 7).

Each input is a float32 WAV built here, decoded by the baseline decoder (``stts/audio.py``
at BASELINE, via ``git show``) and by this tree, then transcribed by the embedded Whisper
engine directly (no service, so no silence short-cut), language given and detected. A 1 s
clip of ordinary speech at a normal level is the baseline for "what any 1 s clip costs".
Also prints what ``is_silent`` says about each and its time on an hour of zeros.
Writes bench/results/pathological_audio.md.

    .venv/bin/python bench/pathological_audio.py [--baseline b90172f]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import CORPUS, RESULTS, machine, markdown_table
from decode_memory import _load_decoder

from stts.synthetic import float_wav


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b90172f")
    args = parser.parse_args()

    from stts import audio
    from stts.config import Settings
    from stts.engines.base import TranscribeOptions
    from stts.engines.whisper import WhisperEngine

    baseline = _load_decoder(args.baseline)
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    speech = audio.decode_audio(CORPUS / "pocketsphinx__001.wav").samples[:16000]
    inputs = {
        "speech, normal level": float_wav(speech, 16000),
        "speech x1000": float_wav(speech * 1000, 16000),
        "white noise x1000": float_wav(1000 * rng.standard_normal(16000), 16000),
        "sine 440 Hz x1000": float_wav(1000 * np.sin(2 * np.pi * 440 * t), 16000),
        "constant 1000 (clips to DC)": float_wav(np.full(16000, 1000.0), 16000),
        "digital zeros": float_wav(np.zeros(16000), 16000),
    }
    with tempfile.TemporaryDirectory() as cache:
        engine = WhisperEngine(Settings(cache_dir=Path(cache), engines=["whisper"]))
        engine.load()
        rows: list[list[object]] = []
        for name, data in inputs.items():
            for label, decoder in ((f"baseline {args.baseline}", baseline), ("this tree", audio)):
                samples = decoder.decode_audio(data).samples
                times = []
                for language in ("en", None):
                    started = time.perf_counter()
                    result = engine.transcribe(samples, TranscribeOptions(language=language))
                    times.append(time.perf_counter() - started)
                silent = audio.is_silent(samples)
                row = [name, label, silent, times[0], times[1], repr(result.text[:40])]
                rows.append(row)
                print(row, flush=True)
        engine.close()
    hour = np.zeros(3600 * 16000, np.float32)
    started = time.perf_counter()
    audio.is_silent(hour)
    silent_s = time.perf_counter() - started
    table = markdown_table(
        ["1 s float WAV", "decoder", "is_silent", "Whisper s (en)", "Whisper s (detect)", "text"],
        rows,
    )
    text = (
        f"# Whisper on pathological 1 s inputs\n\n{machine()}\n\n{table}\n\n"
        f"is_silent on an hour of zeros: {silent_s:.3f} s\n"
    )
    print(text)
    (RESULTS / "pathological_audio.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
