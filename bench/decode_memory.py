"""Peak memory and time of ``decode_audio``: this tree against a baseline commit.

Inputs are built in memory with PyAV: one hour of silent Opus (1.4 MB, the upload of
issue 11), ten minutes of silent ADTS AAC (no exact length in any header, so the buffer
grows) and jfk.flac from the corpus (11 s, an ordinary file). Each (decoder, input) is
measured in a fresh process: peak RSS over the decode (VmHWM, reset first), the Python
heap's peak under tracemalloc (numpy reports its arrays to it) and the wall time in a
second process without tracemalloc. The baseline decoder is ``stts/audio.py`` as of
BASELINE, read with ``git show``. Writes bench/results/decode_memory.md and .json.

    .venv/bin/python bench/decode_memory.py [--baseline b90172f]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import multiprocessing as mp
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from common import CORPUS, RESULTS, ROOT, machine, markdown_table

LIMIT_S = 4000.0  # an hour of Opus declares 3600.007 s: over the default limit of 3600 s


def _encode_silence(seconds: int, fmt: str, codec: str, rate: int, bit_rate: int) -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        block = np.zeros((1, rate * 10), np.float32)
        for i in range(seconds // 10):
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * block.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _load_decoder(baseline: str | None) -> Any:
    if baseline is None:
        from stts import audio

        return audio
    source = subprocess.run(
        ["git", "show", f"{baseline}:stts/audio.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("stts_audio_baseline", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    exec(compile(source, f"{baseline}:stts/audio.py", "exec"), module.__dict__)
    return module


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def _measure(baseline: str | None, data: bytes, traced: bool, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    import gc

    decoder = _load_decoder(baseline)
    limits = decoder.AudioLimits(max_duration_s=LIMIT_S)
    decoder.decode_audio(CORPUS / "pocketsphinx__001.wav")  # warm up imports and codecs
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    rss_before = _status_kib("VmRSS")
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    audio = decoder.decode_audio(data, limits=limits)
    elapsed = time.perf_counter() - started
    heap_peak = tracemalloc.get_traced_memory()[1] if traced else 0
    tracemalloc.stop()
    queue.put(
        {
            "seconds": elapsed,
            "rss_peak_mib": (_status_kib("VmHWM") - rss_before) / 1024,
            "heap_peak_mib": heap_peak / 2**20,
            "array_mib": audio.samples.nbytes / 2**20,
            "duration_s": audio.duration,
        }
    )


def _run(baseline: str | None, data: bytes, traced: bool) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(baseline, data, traced, queue))
    proc.start()
    result: dict[str, float] = queue.get(timeout=600)
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b90172f", help="commit of the baseline decoder")
    args = parser.parse_args()
    print("building inputs (an hour of Opus takes ~30 s to encode) ...", flush=True)
    inputs = {
        "opus, 1 h of silence": _encode_silence(3600, "ogg", "libopus", 48000, 6000),
        "adts aac, 10 min of silence": _encode_silence(600, "adts", "aac", 16000, 16000),
        "jfk.flac, 11 s": (CORPUS / "openai-whisper__jfk.flac").read_bytes(),
    }
    rows: list[list[object]] = []
    results: list[dict[str, Any]] = []
    for name, data in inputs.items():
        for label, commit in ((f"baseline {args.baseline}", args.baseline), ("this tree", None)):
            memory = _run(commit, data, traced=True)
            timing = _run(commit, data, traced=False)
            row = {
                "input": name,
                "input_mib": len(data) / 2**20,
                "decoder": label,
                **memory,
                "seconds": timing["seconds"],
            }
            results.append(row)
            rows.append(
                [
                    name,
                    label,
                    row["array_mib"],
                    row["heap_peak_mib"],
                    row["heap_peak_mib"] / max(row["array_mib"], 1e-9),
                    row["rss_peak_mib"],
                    row["seconds"],
                ]
            )
            print(rows[-1], flush=True)
    table = markdown_table(
        [
            "input",
            "decoder",
            "result MiB",
            "heap peak MiB",
            "peak / result",
            "RSS peak MiB",
            "decode s",
        ],
        rows,
    )
    text = f"# decode_audio peak memory\n\n{machine()}\n\n{table}\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "decode_memory.md").write_text(text)
    (RESULTS / "decode_memory.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
