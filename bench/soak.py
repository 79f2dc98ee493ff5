"""Memory soak: does the server's RSS stay flat over thousands of requests?

Starts a real `stts serve` (default engine, Whisper base), sends N requests from a mix
of corpus files (8 kHz, 16 kHz, 22.05 kHz, 44.1 kHz stereo, mp3, opus, flac: most need
resampling), bad files (random bytes, truncated flac, empty) and clients that hang up
early; samples the server's RSS every second. Writes a CSV and a PNG of RSS over
requests and prints RSS after warm-up, at the end, and the slope (KiB per 1000
requests) of a linear fit over the second half.

    .venv/bin/python bench/soak.py --requests 5000 --concurrency 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import itertools
import json
import os
import threading
import time

import httpx
import numpy as np
import psutil
from common import CORPUS, RESULTS, machine
from server import free_port, start_server

GOOD = [
    "deepspeech__LDC93S1_pcms16le_1_8000.wav",  # 8 kHz
    "deepspeech__LDC93S1_pcms16le_2_44100.wav",  # 44.1 kHz stereo
    "uberi-speechrecognition__english.wav",  # 44.1 kHz mono
    "coqui-tts__LJ001-0002.mp3",  # 22.05 kHz mp3
    "coqui-stt__LDC93S1.opus",  # 48 kHz opus
    "pocketsphinx__001.wav",  # 16 kHz
    "openai-whisper__jfk.flac",  # 44.1 kHz stereo flac
    "speechbrain__spk1_snt1.wav",
]


def payloads() -> list[tuple[str, bytes, str]]:
    """(name, bytes, kind) where kind is ok | bad | hangup."""
    items = [(n, (CORPUS / n).read_bytes(), "ok") for n in GOOD]
    jfk = (CORPUS / "openai-whisper__jfk.flac").read_bytes()
    items += [
        ("random.wav", os.urandom(20_000), "bad"),
        ("truncated.flac", jfk[: len(jfk) // 3], "bad"),
        ("empty.wav", b"", "bad"),
        ("hangup.wav", (CORPUS / "vosk-api__test.wav").read_bytes(), "hangup"),
    ]
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--tag", default="soak")
    args = parser.parse_args()

    port = free_port()
    server = start_server(port, {"STTS_WHISPER__QUEUE_SIZE": "16"})
    proc = psutil.Process(server.pid)
    url = f"http://127.0.0.1:{port}/v1/audio/transcriptions"
    samples: list[tuple[float, int, int]] = []
    done = 0
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def sampler() -> None:
        start = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - start, done, proc.memory_info().rss))
            stop.wait(1.0)

    def send(item: tuple[str, bytes, str]) -> None:
        nonlocal done
        name, data, kind = item
        timeout = httpx.Timeout(120, read=0.05) if kind == "hangup" else httpx.Timeout(300)
        try:
            r = client.post(
                url,
                files={"file": (name, data)},
                data={"model": "whisper-1", "language": "en"},
                timeout=timeout,
            )
            key = f"{kind}:{r.status_code}"
        except httpx.ReadTimeout:
            key = f"{kind}:hung-up"
        with lock:
            done += 1
            outcomes[key] = outcomes.get(key, 0) + 1

    threading.Thread(target=sampler, daemon=True).start()
    work = list(itertools.islice(itertools.cycle(payloads()), args.requests))
    t0 = time.monotonic()
    try:
        with (
            httpx.Client(limits=httpx.Limits(max_connections=args.concurrency * 2)) as client,
            concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool,
        ):
            list(pool.map(send, work))
        time.sleep(2)
    finally:
        stop.set()
        server.terminate()
        server.wait(60)
    wall = time.monotonic() - t0

    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path = RESULTS / f"{args.tag}.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seconds", "requests_done", "rss_bytes"])
        writer.writerows(samples)

    reqs = np.array([s[1] for s in samples], dtype=float)
    rss = np.array([s[2] for s in samples], dtype=float) / 1024  # KiB
    warm = reqs >= max(50, args.requests * 0.1)
    half = reqs >= args.requests / 2
    slope = (
        float(np.polyfit(reqs[half], rss[half], 1)[0] * 1000) if half.sum() > 2 else float("nan")
    )
    # RSS swings by ~90 MiB inside each request (CTranslate2 buffers taken and given back),
    # so a trend shows best in the envelope: the maximum per block of 100 requests.
    blocks = {}
    for r, v in zip(reqs, rss, strict=True):
        blocks[int(r // 100)] = max(blocks.get(int(r // 100), 0.0), float(v))
    late = sorted(b for b in blocks if b * 100 >= args.requests / 2 and (b + 1) * 100 <= args.requests)
    envelope_slope = (
        float(np.polyfit([b * 100 for b in late], [blocks[b] for b in late], 1)[0] * 1000)
        if len(late) > 2 else float("nan")
    )
    summary = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "wall_s": wall,
        "outcomes": outcomes,
        "rss_after_warmup_mib": float(rss[warm][0] / 1024) if warm.any() else None,
        "rss_end_mib": float(rss[-1] / 1024),
        "rss_peak_mib": float(rss.max() / 1024),
        "slope_kib_per_1000_requests": slope,
        "peak_envelope_slope_kib_per_1000_requests": envelope_slope,
        "peak_per_100_requests_mib": {b * 100: round(v / 1024, 1) for b, v in sorted(blocks.items())},
        "machine": machine(),
    }
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(reqs, rss / 1024, lw=1)
    ax.set_xlabel("requests completed")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title(
        f"stts soak: {args.requests} requests, slope {slope:+.1f} KiB / 1000 requests (2nd half)"
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.tag}.png", dpi=110)


if __name__ == "__main__":
    main()
