"""README renderers for memory over time: soak runs and idle unloading."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from . import columns
from .markdown import markdown_table, verdict
from .source import Source, with_intro


def _fit(d: dict[str, Any], key: str) -> str:
    return f"{d[key]:+.0f}"


def _blocks(d: dict[str, Any]) -> tuple[dict[int, float], dict[int, float], list[int]]:
    """A soak run's peak and median RSS per block of 100 requests, and the blocks' starts."""
    peaks = {int(k): v for k, v in d["peak_per_100_requests_mib"].items()}
    medians = {int(k): v for k, v in d["median_per_100_requests_mib"].items()}
    return peaks, medians, sorted(peaks)


def _answers(d: dict[str, Any]) -> str:
    """A soak run's outcomes in words, each count before its kind."""
    return ", ".join(f"{v} × {k.split(':', 1)[1]}" for k, v in d["outcomes"].items())


def render_soak_blocks(sources: list[Source]) -> str:
    """bench/soak.py: one run's RSS per block of requests, and its fitted slopes."""
    src = sources[0]
    d = src.data
    peaks, medians, starts = _blocks(d)
    unit = "utterances" if d.get("protocol") == "wyoming" else "requests"
    shown = [s for s in starts if s % 500 == 0]
    if starts[-1] not in shown:
        shown.append(starts[-1])
    body = markdown_table(
        [unit, *(f"{s}-{s + 100}" for s in shown)],
        [
            ["peak RSS MiB", *(f"{peaks[s]:.1f}" for s in shown)],
            ["median RSS MiB", *(f"{medians[s]:.1f}" for s in shown)],
        ],
    )
    steps = [abs(peaks[b] - peaks[a]) for a, b in zip(starts, starts[1:], strict=False)]
    summary = (
        f"{d['requests']} {unit} at concurrency {d['concurrency']}, {d['wall_s'] / 60:.0f} "
        f"minutes; answers: {_answers(d)}. Straight-line fit over the second half of the per-block values: "
        f"**{_fit(d, 'peak_envelope_slope_kib_per_1000_requests')} KiB per 1000 {unit} for "
        f"the peak, {_fit(d, 'median_slope_kib_per_1000_requests')} KiB per 1000 for the "
        f"median** (goal: < 1 MiB per 1000: "
        f"{verdict(abs(d['peak_envelope_slope_kib_per_1000_requests']) < 1024)}). "
        f"Median per block {medians[starts[0]]:.1f} MiB in the first block, "
        f"{medians[starts[-1]]:.1f} in the last; the largest step between two consecutive "
        f"blocks' peaks: {max(steps):.1f} MiB."
    )
    return with_intro(src, summary, body)


def render_soak_runs(sources: list[Source]) -> str:
    """bench/soak.py: several runs side by side, one row each."""
    rows = []
    for src in sources:
        d = src.data
        peaks, medians, starts = _blocks(d)
        half = [s for s in starts if s >= d["requests"] / 2]
        first = [s for s in starts if s < d["requests"] / 2]
        slope = d["peak_envelope_slope_kib_per_1000_requests"]
        rows.append(
            [
                f"`{Path(src.name).stem}`",
                "Wyoming" if d.get("protocol") == "wyoming" else "HTTP",
                d["requests"],
                d["concurrency"],
                d.get("batch_size", 1),
                f"{d['wall_s'] / 60:.0f}",
                _answers(d),
                f"{peaks[starts[0]]:.1f} → {peaks[starts[-1]]:.1f}",
                f"{min(peaks.values()):.1f}-{max(peaks.values()):.1f}",
                f"{slope:+.0f} ({verdict(abs(slope) < 1024)})",
                f"{statistics.median(medians[s] for s in first):.1f} / "
                f"{statistics.median(medians[s] for s in half):.1f}",
                f"{min(medians.values()):.1f}-{max(medians.values()):.1f}",
                _fit(d, "median_slope_kib_per_1000_requests"),
            ]
        )
    return markdown_table(
        [
            "run (`bench/results/`)",
            "face",
            "requests",
            "concurrency",
            "batch size",
            "minutes",
            "answers",
            "peak per 100, first → last block MiB",
            "peak per 100, band MiB",
            "peak fit, 2nd half, KiB per 1000 (goal < 1024)",
            "median of block medians, 1st / 2nd half MiB",
            "median per 100, band MiB",
            "median fit, 2nd half, KiB per 1000",
        ],
        rows,
    )


def render_unload(sources: list[Source]) -> str:
    """bench/unload.py: what idle unloading gives back, over load/unload cycles."""
    src = sources[0]
    rows = [columns.unload_row(r) for r in src.data]
    cycles = len(src.data[0]["freed_mib"])
    body = markdown_table(columns.unload_columns(cycles), rows)
    kept = [f"{r['engine']} {r['freed_mib'][0] - r['baseline_mib']:.1f} MiB" for r in src.data]
    stays_line = (
        "What stays after the first unload, above the RSS taken before the first load: "
        + ", ".join(kept)
        + "."
    )
    return with_intro(src, body, stays_line)
