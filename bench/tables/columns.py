"""Tables that a bench script writes to its .md and the README renders from its .json.

One definition each (headers, and the row where both compute it the same way), so the
bench's own output and the README block cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from .markdown import pct

# bench/core.py: raw faster-whisper and stts, one row each
CORE = ["run", "load s", "RTF jfk.flac", "RTF corpus", "corpus wall s", "WER", "peak RSS MB"]


def core_row(r: dict[str, Any]) -> list[object]:
    """One side of bench/core.py (a record of core.json) under :data:`CORE`."""
    return [
        r["name"],
        r["load_s"],
        r["jfk_rtf"],
        r["corpus_rtf"],
        r["wall_s"],
        r["wer"],
        r["peak_rss_mb"],
    ]


# bench/server.py: its rows are written as they are, one list per row
SERVER = [
    "run",
    "concurrency",
    "wall s",
    "requests/s",
    "audio s per s",
    "wall / raw (per corpus pass)",
]
SERVER_BREAKDOWN = ["stage (fastest HTTP pass, summed over its requests)", "s", "vs raw pass"]

# bench/load.py: its rows are written as they are, one list per row
LOAD = [
    "run",
    "concurrency",
    "requests/s",
    "audio s per s",
    "median s",
    "max s",
    "req/s vs raw",
]

# bench/engines.py: one row per engine
ENGINES = ["engine", "model", "WER", "real-time factor", "load s", "peak RSS MB", "note"]


def engines_row(r: dict[str, Any]) -> list[object]:
    """One engine of bench/engines.py (a record of engines.json) under :data:`ENGINES`."""
    return [
        r["engine"],
        r["model"],
        "(n/a)" if r["note"] else pct(r["wer"]),
        r["rtf"],
        r["load_s"],
        r["peak_rss_mb"],
        r["note"],
    ]


def unload_columns(cycles: int) -> list[str]:
    """bench/unload.py's headers for a run of ``cycles`` load/unload cycles."""
    return [
        "engine",
        "RSS before load MiB",
        "loaded, after a request MiB",
        "after unload MiB",
        "of the model's RSS given back",
        f"after unload, cycle {cycles} MiB",
        "drift over the cycles MiB",
        "request with reload s",
    ]


def unload_row(r: dict[str, Any]) -> list[object]:
    """One engine of bench/unload.py (a record of unload.json) under :func:`unload_columns`."""
    held = r["loaded_mib"][0] - r["baseline_mib"]
    kept = r["freed_mib"][0] - r["baseline_mib"]
    reloads = r["first_request_s"][1:]
    return [
        r["engine"],
        r["baseline_mib"],
        r["loaded_mib"][0],
        r["freed_mib"][0],
        f"{(held - kept) / held * 100:.0f} %" if held > 0 else "n/a",
        r["freed_mib"][-1],
        r["freed_mib"][-1] - r["freed_mib"][0],
        sum(reloads) / max(1, len(reloads)),
    ]
