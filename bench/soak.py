"""Memory soak: does the server's RSS stay flat over thousands of requests?

Starts a real `stts serve` (default engine, Whisper base), sends N requests from a mix
of corpus files (8 kHz, 16 kHz, 22.05 kHz, 44.1 kHz stereo, mp3, opus, flac: most need
resampling), bad files (random bytes, truncated flac, empty) and clients that hang up
early; samples the server's RSS every second. Writes a CSV and a PNG of RSS over
requests and prints RSS after warm-up, at the end, and the slope (KiB per 1000
requests) of a linear fit over the second half.

    .venv/bin/python bench/soak.py --requests 5000 --concurrency 2

``--wyoming`` soaks the Wyoming face instead: the same server with ``--wyoming`` on
loopback, utterances sent as PCM chunks with the wyoming package's client (8 kHz,
16 kHz, 44.1 kHz mono and stereo PCM), bad utterances (8-bit PCM, no audio, half a
stereo frame) and clients that hang up mid-utterance.
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
from typing import Any

import httpx
import numpy as np
import psutil
from common import CORPUS, RESULTS, corpus, free_port, machine, start_server

from stts.evaluation import word_error_rate

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


WyomingItem = tuple[str, bytes, int, int, int, str]  # name, pcm, rate, width, channels, kind


def wyoming_payloads() -> list[WyomingItem]:
    """Utterances as PCM: wav files at their own rate and channels, the rest decoded here
    to 16 kHz mono (a satellite's format), plus bad ones and hang-ups."""
    import wave

    from stts.audio import decode_audio

    items: list[WyomingItem] = []
    for name in GOOD:
        if name.endswith(".wav"):
            with wave.open(str(CORPUS / name)) as w:
                pcm = w.readframes(w.getnframes())
                items.append(
                    (name, pcm, w.getframerate(), w.getsampwidth(), w.getnchannels(), "ok")
                )
        else:
            samples = decode_audio(CORPUS / name).samples
            pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
            items.append((name, pcm, 16_000, 2, 1, "ok"))
    jfk = next(i for i in items if i[0] == "openai-whisper__jfk.flac")
    items += [
        ("8-bit", jfk[1][:32_000], 16_000, 1, 1, "bad"),
        ("no-audio", b"", 16_000, 2, 1, "bad"),
        ("half-frame", b"\x00" * 6, 16_000, 2, 2, "bad"),
        ("hangup", jfk[1], 16_000, 2, 1, "hangup"),
    ]
    return items


def send_wyoming(port: int, item: WyomingItem) -> str:
    """One utterance on a fresh connection; the outcome as kind:answer."""
    import asyncio

    from wyoming.asr import Transcribe
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    _name, pcm, rate, width, channels, kind = item
    step = 1024 * width * channels

    async def run() -> str:
        client = AsyncTcpClient("127.0.0.1", port)
        await client.connect()
        try:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
            chunks = range(0, len(pcm), step)
            if kind == "hangup":
                chunks = range(0, len(pcm) // 2, step)
            for i in chunks:
                chunk = AudioChunk(
                    rate=rate, width=width, channels=channels, audio=pcm[i : i + step]
                )
                await client.write_event(chunk.event())
            if kind == "hangup":
                return f"{kind}:closed"
            await client.write_event(AudioStop().event())
            event = await asyncio.wait_for(client.read_event(), 300)
            if event is None:
                return f"{kind}:closed-by-server"
            code = event.data.get("code")
            if (
                kind == "ok"
                and event.type == "transcript"
                and not _right(_name, event.data["text"])
            ):
                return f"{kind}:transcript:wrong-text"
            return f"{kind}:{event.type}" + (f":{code}" if code else "")
        finally:
            await client.disconnect()

    return asyncio.run(run())


# A good answer is judged by its text, not only its status: over this WER against the
# file's reference it counts as "wrong-text" (the worst of GOOD with Whisper base, the
# 8 kHz LDC93S1, is at 36 %; a wrong or empty answer is near 100 %).
WER_CEILING = 0.6
REFERENCES = {i.path.name: i.reference for i in corpus(include_raw=True)}


def _right(name: str, text: str) -> bool:
    return word_error_rate([REFERENCES[name]], [text]) <= WER_CEILING


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
    parser.add_argument(
        "--batch-size", type=int, default=1, help="Whisper cross-request batch size (1 = off)"
    )
    parser.add_argument(
        "--reanalyse",
        action="store_true",
        help="no new run: recompute the summary and plot from bench/results/TAG.csv",
    )
    parser.add_argument("--wyoming", action="store_true", help="soak the Wyoming face")
    args = parser.parse_args()
    if args.reanalyse:
        previous = json.loads((RESULTS / f"{args.tag}.json").read_text())
        with (RESULTS / f"{args.tag}.csv").open(newline="") as fh:
            rows = [(float(a), int(b), int(c)) for a, b, c in list(csv.reader(fh))[1:]]
        args.requests, args.concurrency = previous["requests"], previous["concurrency"]
        args.batch_size = previous.get("batch_size", 1)
        args.wyoming = previous.get("protocol") == "wyoming"
        analyse(rows, args, previous["wall_s"], previous["outcomes"])
        return

    port = free_port()
    env = {"STTS_WHISPER__QUEUE_SIZE": "16"}
    wyoming_port = free_port()
    if args.wyoming:
        env["STTS_WYOMING_URI"] = f"tcp://127.0.0.1:{wyoming_port}"
    if args.batch_size > 1:
        env |= {
            "STTS_WHISPER__BATCH_SIZE": str(args.batch_size),
            "STTS_WHISPER__WORKERS": str(args.batch_size),
        }
    server = start_server(port, env)
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

    def send(item: Any) -> None:
        nonlocal done
        if args.wyoming:
            key = send_wyoming(wyoming_port, item)
            with lock:
                done += 1
                outcomes[key] = outcomes.get(key, 0) + 1
            return
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
            if kind == "ok" and r.status_code == 200 and not _right(name, r.json()["text"]):
                key += ":wrong-text"
        except httpx.ReadTimeout:
            key = f"{kind}:hung-up"
        with lock:
            done += 1
            outcomes[key] = outcomes.get(key, 0) + 1

    threading.Thread(target=sampler, daemon=True).start()
    items: list[Any] = wyoming_payloads() if args.wyoming else payloads()
    work = list(itertools.islice(itertools.cycle(items), args.requests))
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

    analyse(samples, args, wall, outcomes)


def analyse(
    samples: list[tuple[float, int, int]],
    args: argparse.Namespace,
    wall: float,
    outcomes: dict[str, int],
) -> None:
    """Per-block peaks and medians, slopes, the JSON summary and the plot."""
    # Samples taken after the last answer (the idle tail) belong to no block of requests.
    samples = [s for s in samples if s[1] < args.requests]
    reqs = np.array([s[1] for s in samples], dtype=float)
    rss = np.array([s[2] for s in samples], dtype=float) / 1024  # KiB
    warm = reqs >= max(50, args.requests * 0.1)
    half = reqs >= args.requests / 2
    slope = (
        float(np.polyfit(reqs[half], rss[half], 1)[0] * 1000) if half.sum() > 2 else float("nan")
    )
    # RSS swings by ~90 MiB inside each request (CTranslate2 buffers taken and given back),
    # so a trend shows best in the envelope: the maximum per block of 100 requests.
    # The median per block is the resting level between requests.
    per_block: dict[int, list[float]] = {}
    for r, v in zip(reqs, rss, strict=True):
        per_block.setdefault(int(r // 100), []).append(float(v))
    blocks = {b: max(vs) for b, vs in per_block.items()}
    medians = {b: float(np.median(vs)) for b, vs in per_block.items()}
    late = sorted(
        b for b in blocks if b * 100 >= args.requests / 2 and (b + 1) * 100 <= args.requests
    )

    def block_slope(values: dict[int, float]) -> float:
        if len(late) <= 2:
            return float("nan")
        fit = np.polyfit([b * 100 for b in late], [values[b] for b in late], 1)
        return float(fit[0] * 1000)

    envelope_slope = block_slope(blocks)
    median_slope = block_slope(medians)
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
        "median_slope_kib_per_1000_requests": median_slope,
        "batch_size": args.batch_size,
        "protocol": "wyoming" if args.wyoming else "http",
        "peak_per_100_requests_mib": {
            b * 100: round(v / 1024, 1) for b, v in sorted(blocks.items())
        },
        "median_per_100_requests_mib": {
            b * 100: round(v / 1024, 1) for b, v in sorted(medians.items())
        },
        "machine": machine(),
    }
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(reqs, rss / 1024, lw=0.5, alpha=0.4, label="RSS (1 s samples)")
    xs = [b * 100 + 50 for b in sorted(blocks)]
    ax.plot(xs, [blocks[b] / 1024 for b in sorted(blocks)], lw=1.5, label="peak per 100 requests")
    ax.plot(
        xs, [medians[b] / 1024 for b in sorted(medians)], lw=1.5, label="median per 100 requests"
    )
    ax.set_xlabel("requests completed")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title(
        f"stts soak ({'Wyoming' if args.wyoming else 'HTTP'}): {args.requests} requests "
        f"(batch {args.batch_size}), 2nd half: "
        f"peak {envelope_slope:+.0f}, median {median_slope:+.0f} KiB / 1000 req",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.tag}.png", dpi=110)


if __name__ == "__main__":
    main()
