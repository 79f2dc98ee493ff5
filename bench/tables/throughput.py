"""README renderers for one-shot transcription: engines, core, server, load."""

from __future__ import annotations

from . import columns
from .markdown import markdown_table, signed_pct, verdict
from .source import Source, with_intro


def render_engines(sources: list[Source]) -> str:
    """bench/engines.py: every available engine on the corpus."""
    src = sources[0]
    body = markdown_table(columns.ENGINES, [columns.engines_row(r) for r in src.data])
    return with_intro(src, body)


def render_core(sources: list[Source]) -> str:
    """bench/core.py: the default engine through stts against raw faster-whisper."""
    src = sources[0]
    rows = src.data
    body = markdown_table(columns.CORE, [columns.core_row(r) for r in rows])
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    return with_intro(src, body, f"stts / raw wall time over the corpus: {ratio:.3f}")


def render_server(sources: list[Source]) -> str:
    """bench/server.py: what the HTTP server adds over raw faster-whisper (issue 3)."""
    src = sources[0]
    d = src.data
    raw, http = d["raw_wall_s"], d["http_wall_s"]
    rows = markdown_table(columns.SERVER, d["rows"])
    parts: dict[str, float] = d["breakdown_s"]
    breakdown = markdown_table(
        columns.SERVER_BREAKDOWN, [[k, v, signed_pct(v / raw)] for k, v in parts.items()]
    )
    engine = next(v for k, v in parts.items() if k.startswith("engine"))
    outside = sum(parts.values()) - engine
    sequential = d["rows"][1]  # [label, concurrency, wall, requests/s, ...]
    requests = round(sequential[2] * sequential[3])
    fastest = http / raw - 1
    median = d["median_overhead_pct"] / 100
    goal = 0.05
    headline = markdown_table(
        ["what the server adds (same run)", "measured", "goal (issue 3): <= 5 %"],
        [
            [
                "by the server's own clock: time outside the engine (Server-Timing), "
                "fastest HTTP pass vs fastest raw pass",
                f"**{signed_pct(outside / raw)}**",
                verdict(outside / raw <= goal),
            ],
            [
                "end to end, as a client measures it: median HTTP pass vs median raw pass",
                f"**{signed_pct(median)}**",
                verdict(median <= goal),
            ],
            [
                "end to end: fastest HTTP pass vs fastest raw pass",
                signed_pct(fastest),
                verdict(fastest <= goal),
            ],
        ],
    )
    per_request = {
        k.split(" (")[0]: v / requests * 1000
        for k, v in parts.items()
        if not k.startswith("engine")
    }
    detail = (
        f"Time outside the engine: {outside:.2f} s over {requests} requests, about "
        f"{outside / requests * 1000:.0f} ms per request ("
        + ", ".join(f"{k} {v:.0f} ms" for k, v in per_request.items())
        + f"); engine time in the server vs the raw pass: {signed_pct(engine / raw - 1)} (the raw "
        f"pass includes its own decoding). The raw passes alone ranged "
        f"{min(d['raw_walls']):.1f}-{max(d['raw_walls']):.1f} s, the HTTP passes "
        f"{min(d['http_walls']):.1f}-{max(d['http_walls']):.1f} s."
    )
    return with_intro(
        src,
        rows,
        "Where the fastest HTTP pass's time went (from the server's Server-Timing header):",
        breakdown,
        headline,
        detail,
    )


def render_load(sources: list[Source]) -> str:
    """bench/load.py: requests/s at concurrency 1-8, batching off and on, against raw."""
    src = sources[0]
    rows = src.data
    old = len(rows[0]) == 8  # before bench/load.py printed median and maximum
    # the old format had p50, p95 and p99 where the columns now say median and max
    headers = (
        [*columns.LOAD[:4], "p50 s", "p95 s", "p99 s", columns.LOAD[-1]] if old else columns.LOAD
    )
    body = markdown_table(headers, rows)
    caveat = (
        "This run predates two fixes to `bench/load.py`: its raw baseline was not warmed (the "
        "server was), and p95/p99 of so few samples are the largest values, not percentiles; "
        "the script now warms both sides and prints median and maximum."
        if old
        else ""
    )
    rps = {(r[0], r[1]): r[2] for r in rows}
    off = {c: v for (label, c), v in rps.items() if "batching off" in label}
    on = {c: v for (label, c), v in rps.items() if "batch_size" in label}
    lines = [
        f"concurrency {c} {signed_pct(on[c] / off[c] - 1, 0)} ({on[c]:.2f} vs {off[c]:.2f})"
        for c in sorted(set(on) & set(off))
    ]
    summary = "Requests/s with batching against batching off: " + ", ".join(lines) + "."
    return with_intro(src, caveat, body, summary if lines else "")
