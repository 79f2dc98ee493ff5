"""Issue 3 numbers: what the HTTP server adds over raw faster-whisper, and requests/s.

In one run: (1) raw faster-whisper in this process transcribes the corpus (baseline);
(2) a real `stts serve` process on 127.0.0.1 transcribes the same files sent one at a
time over HTTP (/v1/audio/transcriptions, language en); (3) the server at concurrency
1, 2 and 4. Same model (Whisper base int8), beam 5, same thread count.

    .venv/bin/python bench/server.py          # writes bench/results/server.md
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import time

import httpx
from common import (
    RESULTS,
    corpus,
    free_port,
    machine,
    markdown_table,
    post,
    post_timed,
    rates,
    raw_pass,
    raw_transcribe,
    raw_whisper,
    start_server,
)
from tables import columns

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def main() -> None:
    items = corpus()
    audio_s = sum(i.duration for i in items)
    model = raw_whisper()
    raw_transcribe(model, items[0].path)  # warm-up

    port = free_port()
    # The model stays loaded here while the server runs: both sides alternate passes,
    # so drift in machine load hits both; the fastest pass of each side counts.
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/v1/audio/transcriptions"
    rows = []
    raw_walls, http_walls = [], []
    latencies: list[float] = []
    breakdowns: list[dict[str, float]] = []  # per HTTP pass: seconds per stage, summed
    try:
        with httpx.Client() as client:
            post(client, url, items[0].path)  # warm-up
            for _ in range(REPEATS):
                raw_walls.append(raw_pass(model, items)[0])
                t0 = time.perf_counter()
                timed = [post_timed(client, url, i.path) for i in items]
                http_walls.append(time.perf_counter() - t0)
                latencies = [w for w, _ in timed]
                stages = {
                    k: sum(t.get(k, 0.0) for _, t in timed) / 1000
                    for k in ("decode", "queue", "engine", "total")
                }
                stages["client"] = sum(latencies)
                breakdowns.append(stages)
        raw_wall, http_wall = min(raw_walls), min(http_walls)
        rows.append(
            ["raw faster-whisper, in-process, sequential", 1, raw_wall]
            + rates(len(items), audio_s, raw_wall)
            + [1.0]
        )
        rows.append(
            ["stts server over HTTP, sequential", 1, http_wall]
            + rates(len(items), audio_s, http_wall)
            + [http_wall / raw_wall]
        )
        for concurrency in (2, 4):
            work = [i.path for i in items] * concurrency
            with (
                httpx.Client(limits=httpx.Limits(max_connections=concurrency)) as client,
                concurrent.futures.ThreadPoolExecutor(concurrency) as pool,
            ):
                t0 = time.perf_counter()
                list(pool.map(lambda p: post(client, url, p), work))
                wall = time.perf_counter() - t0
            rows.append(
                [f"stts server over HTTP, concurrency {concurrency}", concurrency, wall]
                + rates(len(work), audio_s * concurrency, wall)
                + [(wall / concurrency) / raw_wall]
            )
    finally:
        server.terminate()
        server.wait(30)
    table = markdown_table(columns.SERVER, rows)
    overhead = (http_wall / raw_wall - 1) * 100
    median_overhead = (statistics.median(http_walls) / statistics.median(raw_walls) - 1) * 100
    best = breakdowns[http_walls.index(http_wall)]
    parts = {
        "decode (PyAV + soxr)": best["decode"],
        "waiting for the worker": best["queue"],
        "engine (faster-whisper)": best["engine"],
        "rest of the server (body, multipart, routing, JSON)": best["total"]
        - best["decode"]
        - best["queue"]
        - best["engine"],
        "client and loopback": best["client"] - best["total"],
    }
    breakdown = markdown_table(
        columns.SERVER_BREAKDOWN,
        [[k, v, f"{v / raw_wall * 100:+.1f} %"] for k, v in parts.items()],
    )
    text = (
        f"Whisper base int8, beam 5, language en, {len(items)} files / {audio_s:.1f} s of audio per pass; "
        f"1 engine worker, all cores to CTranslate2; {machine()}. Sequential rows: fastest of "
        f"{REPEATS} alternating passes per side (raw {', '.join(f'{w:.1f}' for w in raw_walls)} s; "
        f"HTTP {', '.join(f'{w:.1f}' for w in http_walls)} s).\n\n{table}\n\n"
        f"Server overhead over raw faster-whisper (sequential): {overhead:+.1f} % fastest vs "
        f"fastest pass, {median_overhead:+.1f} % median vs median pass "
        f"(median request latency {sorted(latencies)[len(latencies) // 2]:.2f} s).\n\n"
        f"Where the HTTP pass's time went (from the server's Server-Timing header):\n\n"
        f"{breakdown}\n\neverything outside the engine: "
        f"{(best['total'] - best['engine'] + best['client'] - best['total']) / raw_wall * 100:+.1f} % "
        f"of the raw pass; engine time in the server vs the raw pass: "
        f"{(best['engine'] / raw_wall - 1) * 100:+.1f} % (the raw pass includes its own decoding).\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "server.md").write_text(text)
    (RESULTS / "server.json").write_text(
        json.dumps(
            {
                "raw_wall_s": raw_wall,
                "http_wall_s": http_wall,
                "rows": rows,
                "breakdown_s": parts,
                "median_overhead_pct": median_overhead,
                "raw_walls": raw_walls,
                "http_walls": http_walls,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
