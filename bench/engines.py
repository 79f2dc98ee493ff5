"""The engine comparison: WER, real-time factor, load time and peak RSS per engine.

Each available engine runs in its own fresh process over the whole corpus (language en,
2 cores here), so load time and peak RSS are its own. Writes a Markdown table and a PNG
bar chart to bench/results/.

    .venv/bin/python bench/engines.py
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import time

from common import RESULTS, corpus, machine, markdown_table

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def measure(engine: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from stts.audio import RawFormat, decode_audio
    from stts.config import Settings
    from stts.engines.base import TranscribeOptions
    from stts.evaluation import word_error_rate
    from stts.service import EngineManager

    manager = EngineManager(Settings(engines=[engine], default_engine=engine))
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
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "files": len(items),
            "audio_s": audio_s,
        }
    )


def main() -> None:
    from stts.config import Settings
    from stts.engines.registry import engine_names, get_engine_class

    settings = Settings()
    ctx = mp.get_context("spawn")
    rows, results, skipped = [], [], []
    for name in engine_names():
        availability = get_engine_class(name).probe(settings)
        if not availability.available:
            skipped.append(f"{name} ({availability.reason})")
            continue
        queue = ctx.Queue()
        proc = ctx.Process(target=measure, args=(name, queue))
        proc.start()
        r = queue.get()
        proc.join()
        results.append(r)
        rows.append(
            [r["engine"], f"{r['wer'] * 100:.1f} %", r["rtf"], r["load_s"], r["peak_rss_mb"]]
        )
    table = markdown_table(["engine", "WER", "real-time factor", "load s", "peak RSS MB"], rows)
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

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    names = [r["engine"] for r in results]
    for ax, key, label in zip(
        axes,
        ("wer", "rtf", "peak_rss_mb"),
        ("WER", "real-time factor", "peak RSS (MB)"),
        strict=True,
    ):
        ax.bar(
            names, [r[key] for r in results], color=["#4c72b0", "#dd8452", "#55a868"][: len(names)]
        )
        ax.set_title(label)
    fig.suptitle("stts engines on the shared corpus (2 cores)")
    fig.tight_layout()
    fig.savefig(RESULTS / "engines.png", dpi=110)


if __name__ == "__main__":
    main()
