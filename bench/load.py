"""Throughput and latency at concurrency 1, 2, 4, 8: server (batching off and on) vs raw.

Baseline in the same run: raw faster-whisper in this process, the same files one after
another. Writes bench/results/load.md and load.png.

    .venv/bin/python bench/load.py [--requests 24]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time

import httpx
import numpy as np
from common import (
    RESULTS,
    corpus,
    free_port,
    machine,
    markdown_table,
    post,
    rates,
    raw_pass,
    raw_transcribe,
    raw_whisper,
    start_server,
)
from tables import columns


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=24)
    args = parser.parse_args()
    items = corpus()
    work = [items[i % len(items)] for i in range(args.requests)]
    audio_s = sum(i.duration for i in work)

    model = raw_whisper()
    raw_transcribe(model, items[0].path)  # warm-up, as the server gets one below
    wall, lat = raw_pass(model, work)
    del model
    base_rps = len(work) / wall
    rows = [
        ["raw faster-whisper (baseline)", 1]
        + rates(len(work), audio_s, wall)
        + [float(np.median(lat)), max(lat), 1.0]
    ]
    plot: dict[str, list[tuple[int, float]]] = {}
    for label, env in (
        ("server, batching off", {}),
        ("server, batch_size 4", {"STTS_WHISPER__BATCH_SIZE": "4"}),
    ):
        port = free_port()
        server = start_server(port, {"STTS_WHISPER__QUEUE_SIZE": "32", **env})
        url = f"http://127.0.0.1:{port}/v1/audio/transcriptions"
        try:
            with httpx.Client(limits=httpx.Limits(max_connections=16)) as client:
                post(client, url, items[0].path)
                for c in (1, 2, 4, 8):
                    with concurrent.futures.ThreadPoolExecutor(c) as pool:
                        t0 = time.perf_counter()
                        lat = list(pool.map(lambda i, u=url: post(client, u, i.path), work))
                        wall = time.perf_counter() - t0
                    rps = len(work) / wall
                    rows.append(
                        [label, c]
                        + rates(len(work), audio_s, wall)
                        + [float(np.median(lat)), max(lat), rps / base_rps]
                    )
                    plot.setdefault(label, []).append((c, rps))
        finally:
            server.terminate()
            server.wait(30)
    table = markdown_table(columns.LOAD, rows)
    text = (
        f"{len(work)} requests per row ({audio_s:.1f} s of audio), Whisper base int8, beam 5, "
        f"language en; both sides warmed with one request; latency as median and maximum "
        f"(too few requests per row for a p95 or p99 to mean anything); {machine()}.\n\n{table}\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.md").write_text(text)
    (RESULTS / "load.json").write_text(json.dumps(rows, indent=2, default=float))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, points in plot.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.axhline(base_rps, ls="--", color="gray", label="raw faster-whisper, sequential")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests/s")
    ax.set_xscale("log", base=2)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "load.png", dpi=110)


if __name__ == "__main__":
    main()
