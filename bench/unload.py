"""What idle unloading gives back, and whether load/unload cycles leak.

In one fresh process per engine: RSS with stts imported and nothing loaded (the
baseline), then CYCLES times: transcribe jfk.flac (the model loads), read RSS, free the
model as ``idle_unload_s`` would (``EngineSlot.unload_if_idle``), read RSS. Writes
bench/results/unload.md and unload.json.

    .venv/bin/python bench/unload.py [--cycles 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import time
from pathlib import Path

from common import CORPUS, RESULTS, machine, markdown_table
from tables import columns


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cycles(engine: str, n: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from stts.audio import decode_audio
    from stts.config import Settings
    from stts.engines.base import TranscribeOptions
    from stts.memory import limit_malloc_arenas
    from stts.service import EngineManager

    limit_malloc_arenas(2)  # as `stts serve` does
    settings = Settings(engines=[engine], default_engine=engine)
    section = settings.engine_settings(engine).model_copy(update={"idle_unload_s": 3600})
    manager = EngineManager(settings.model_copy(update={engine: section}))
    audio = decode_audio(CORPUS / "openai-whisper__jfk.flac")
    options = TranscribeOptions(language="en")
    gc.collect()
    baseline = rss_mib()
    loaded, freed, reload_s = [], [], []
    slot = manager.slot(manager.resolve(engine))
    for _ in range(n):
        t0 = time.perf_counter()
        manager.transcribe(audio, engine=engine, options=options)
        reload_s.append(time.perf_counter() - t0)
        loaded.append(rss_mib())
        assert slot.unload_if_idle(time.monotonic() + 3601)
        gc.collect()
        freed.append(rss_mib())
    manager.close()
    queue.put(
        {
            "engine": engine,
            "baseline_mib": baseline,
            "loaded_mib": loaded,
            "freed_mib": freed,
            "first_request_s": reload_s,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    results = []
    for engine in ("whisper", "pocketsphinx"):
        queue = ctx.Queue()
        proc = ctx.Process(target=cycles, args=(engine, args.cycles, queue))
        proc.start()
        results.append(queue.get(timeout=1800))
        proc.join()
    table = markdown_table(
        columns.unload_columns(args.cycles), [columns.unload_row(r) for r in results]
    )
    text = (
        f"{args.cycles} load/transcribe/unload cycles per engine, jfk.flac (11 s), language en, "
        f"glibc arenas capped at 2 as in `stts serve`; {machine()}.\n\n{table}\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "unload.md").write_text(text)
    (RESULTS / "unload.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
