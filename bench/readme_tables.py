"""Render the README's benchmark blocks from the result files in bench/results/.

The README holds each generated block between two marker comments (HTML comments do
not render on GitHub):

    <!-- bench:streaming source=streaming.json -->
    ...generated text...
    <!-- /bench:streaming -->

The name after ``bench:`` picks the renderer; ``source=`` names the result file(s) it
reads (comma-separated, relative to bench/results/; each renderer has a default). To
point a block at another run, edit its ``source=`` and run this script.

    python bench/readme_tables.py           # rewrite the blocks in README.md in place
    python bench/readme_tables.py --check   # exit 1 with a diff when README.md is stale

Numbers are read from the ``.json`` a bench wrote; the ``.md`` beside it (the bench's own
output) supplies only the sentence that describes the run (corpus, machine, load).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH.parent / "README.md"

MARKER = re.compile(
    r"<!-- bench:(?P<name>[\w-]+)(?P<params>(?:[ \t]+[\w-]+=[^\s>]+)*)[ \t]*-->\n"
    r"(?P<body>.*?)"
    r"<!-- /bench:(?P=name) -->",
    re.S,
)
OPENING = re.compile(r"<!-- bench:")
MACHINE = re.compile(r"[\w-]+, \d+ cores, Python \d+(?:\.\d+)*")
MD_LOAD = re.compile(
    r"[Ll]oad average(?: of the \(shared\) machine:)? "
    r"(?P<load>[\d.]+ at the start, [\d.]+ at the end|[\d.]+-[\d.]+)"
)


class BlockError(Exception):
    """A marker that names no renderer, a missing result file, an unclosed block."""


@dataclass
class Source:
    """One result file: its JSON and, where the bench wrote one, its Markdown beside it."""

    name: str
    data: Any
    md: str | None = field(default=None, repr=False)

    @classmethod
    def read(cls, name: str, results: Path) -> Source:
        path = results / name
        if not path.is_file():
            raise BlockError(f"no result file {path}")
        md_path = path.with_suffix(".md")
        md = md_path.read_text() if md_path.is_file() else None
        return cls(name, json.loads(path.read_text()), md)

    @property
    def intro(self) -> str | None:
        """The bench's own sentence about the run: the .md's first plain paragraph."""
        if self.md is None:
            return None
        for para in self.md.split("\n\n"):
            para = para.strip()
            if para and not para.startswith(("#", "|")) and not MACHINE.fullmatch(para):
                return para
        return None

    @property
    def machine(self) -> str | None:
        if isinstance(self.data, dict) and isinstance(self.data.get("machine"), str):
            return str(self.data["machine"])
        found = MACHINE.search(self.md or "")
        return found.group(0) if found else None

    @property
    def load(self) -> str:
        """The load average the file records, in words."""
        d = self.data
        if isinstance(d, dict):
            if isinstance(d.get("load"), list) and len(d["load"]) == 2:
                return f"{d['load'][0]:.1f} at the start, {d['load'][1]:.1f} at the end"
            rows = d.get("results") or d.get("long_form") or []
            if any(isinstance(r, dict) and ("load_avg" in r or "load" in r) for r in rows):
                return "per row, in the table"
        found = MD_LOAD.search(self.md or "")
        if found:
            return found.group("load") + f" (from {Path(self.name).with_suffix('.md')})"
        return "not recorded"


Renderer = Callable[[list[Source]], str]
RENDERERS: dict[str, tuple[str, Renderer]] = {}


def renderer(name: str, default_source: str) -> Callable[[Renderer], Renderer]:
    def register(fn: Renderer) -> Renderer:
        RENDERERS[name] = (default_source, fn)
        return fn

    return register


# ---------------------------------------------------------------- formatting helpers


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; floats with 3 decimals, as bench/common.py."""

    def cell(v: object) -> str:
        if v is None:
            return ""
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float, digits: int = 1) -> str:
    return f"{x * 100:.{digits}f} %"


def signed_pct(x: float, digits: int = 1) -> str:
    return f"{x * 100:+.{digits}f} %"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**not met**")


def with_intro(src: Source, *parts: str) -> str:
    return "\n\n".join(p for p in (src.intro, *parts) if p)


# ---------------------------------------------------------------- core, server, load


@renderer("core", "core.json")
def render_core(sources: list[Source]) -> str:
    src = sources[0]
    rows = src.data
    body = table(
        ["run", "load s", "RTF jfk.flac", "RTF corpus", "corpus wall s", "WER", "peak RSS MB"],
        [
            [
                r["name"],
                r["load_s"],
                r["jfk_rtf"],
                r["corpus_rtf"],
                r["wall_s"],
                r["wer"],
                r["peak_rss_mb"],
            ]
            for r in rows
        ],
    )
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    return with_intro(src, body, f"stts / raw wall time over the corpus: {ratio:.3f}")


@renderer("server", "server.json")
def render_server(sources: list[Source]) -> str:
    src = sources[0]
    d = src.data
    raw, http = d["raw_wall_s"], d["http_wall_s"]
    rows = table(
        [
            "run",
            "concurrency",
            "wall s",
            "requests/s",
            "audio s per s",
            "wall / raw (per corpus pass)",
        ],
        d["rows"],
    )
    parts: dict[str, float] = d["breakdown_s"]
    breakdown = table(
        ["stage (fastest HTTP pass, summed over its requests)", "s", "vs raw pass"],
        [[k, v, signed_pct(v / raw)] for k, v in parts.items()],
    )
    engine = next(v for k, v in parts.items() if k.startswith("engine"))
    outside = sum(parts.values()) - engine
    sequential = d["rows"][1]  # [label, concurrency, wall, requests/s, ...]
    requests = round(sequential[2] * sequential[3])
    fastest = http / raw - 1
    median = d["median_overhead_pct"] / 100
    goal = 0.05
    headline = table(
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


@renderer("load", "load.json")
def render_load(sources: list[Source]) -> str:
    src = sources[0]
    rows = src.data
    old = len(rows[0]) == 8  # before bench/load.py printed median and maximum
    latency = ["p50 s", "p95 s", "p99 s"] if old else ["median s", "max s"]
    body = table(
        ["run", "concurrency", "requests/s", "audio s per s", *latency, "req/s vs raw"], rows
    )
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


# ---------------------------------------------------------------- engines, streaming


@renderer("engines", "engines.json")
def render_engines(sources: list[Source]) -> str:
    src = sources[0]
    body = table(
        ["engine", "model", "WER", "real-time factor", "load s", "peak RSS MB", "note"],
        [
            [
                r["engine"],
                r["model"],
                "(n/a)" if r["note"] else pct(r["wer"]),
                r["rtf"],
                r["load_s"],
                r["peak_rss_mb"],
                r["note"],
            ]
            for r in src.data
        ],
    )
    return with_intro(src, body)


def _stream_goals(engine: str) -> list[tuple[str, str, float | None]]:
    """Issue 12's goals: (label, result key, bound); PocketSphinx has its own two."""
    sphinx = engine.startswith("pocketsphinx")
    return [
        ("streamed WER within 2 points of offline", "wer_gap", 0.02),
        ("first tentative text p50 <= 1.0 s", "first_tentative_p50", None if sphinx else 1.0),
        ("first committed text p50 <= 2.0 s", "first_commit_p50", None if sphinx else 2.0),
        ("final latency p50 <= 1.0 s", "final_p50", None if sphinx else 1.0),
        (
            "final latency p95 <= 2.0 s (PocketSphinx: <= 0.5 s)",
            "final_p95",
            0.5 if sphinx else 2.0,
        ),
        (
            "sustained real-time streams >= 1 (PocketSphinx: >= 8)",
            "sustained_streams",
            8 if sphinx else 1,
        ),
    ]


def _goal_cell(r: dict[str, Any], key: str, bound: float | None) -> str:
    if key == "wer_gap":
        gap = r["wer_streamed"] - r["wer_offline"]
        met = gap <= (bound or 0.0) + 1e-9
        return f"{pct(r['wer_streamed'])} vs {pct(r['wer_offline'])}: {verdict(met)}"
    value: Any = r.get(key)
    if key == "sustained_streams":
        if value is None:
            return "not measured"
        worst = r.get("sustain_backlogs", {}).get("1")
        backlog = f", one stream's backlog {worst} s" if worst is not None else ""
        return f"{value}{backlog}: {verdict(value >= (bound or 0))}"
    shown = f"{value:.1f} s"
    if bound is None:
        return f"{shown} (no goal)"
    return f"{shown}: {verdict(value <= bound)}"


@renderer("streaming", "streaming.json")
def render_streaming(sources: list[Source]) -> str:
    src = sources[0]
    results: list[dict[str, Any]] = src.data["results"]
    loads = any("load_avg" in r for r in results)
    headers = [
        "engine",
        "WER streamed",
        "WER offline",
        "first tentative p50 s",
        "first commit p50 s",
        "final p50 s",
        "final p95 s",
        "word lag p50 s",
        "word lag p95 s",
        "CPU s per audio s",
        "worst backlog s",
        "sustained streams",
    ] + (["load avg (start, end)"] if loads else [])
    rows = [
        [
            r["engine"],
            pct(r["wer_streamed"]),
            pct(r["wer_offline"]),
            r["first_tentative_p50"],
            r["first_commit_p50"],
            r["final_p50"],
            r["final_p95"],
            r["word_lag_p50"],
            r["word_lag_p95"],
            r["cpu_per_audio_s"],
            r.get("max_backlog_s"),
            "not measured" if r.get("sustained_streams") is None else r["sustained_streams"],
        ]
        + (["{}, {}".format(*r["load_avg"]) if "load_avg" in r else ""] if loads else [])
        for r in results
    ]
    goals = _stream_goals(results[0]["engine"])
    goal_rows = []
    for i, (label, key, _) in enumerate(goals):
        cells = []
        for r in results:
            _, _, bound = _stream_goals(r["engine"])[i]
            cells.append(_goal_cell(r, key, bound))
        goal_rows.append([label, *cells])
    goal_table = table(["goal (issue 12)", *(r["engine"] for r in results)], goal_rows)
    note = f"Recorded with the run: {src.data['note']}." if src.data.get("note") else ""
    return with_intro(src, table(headers, rows), note, "Against the goals:", goal_table)


@renderer("short-context", "short_context.json")
def render_short_context(sources: list[Source]) -> str:
    """bench/short_context.py: whole files, short context vs 30 s windows."""
    src = sources[0]
    body = table(
        ["path", "WER", "CPU s", "CPU s per audio s", "files decoded again", "load avg"],
        [
            [
                r["path"],
                pct(r["wer"]),
                r["cpu_s"],
                r["cpu_per_audio_s"],
                "-" if r["decoded_again"] is None else r["decoded_again"],
                r["load_avg"],
            ]
            for r in src.data["results"]
        ],
    )
    return with_intro(src, body)


# ---------------------------------------------------------------- robustness


def _silence_line(src: Source) -> str:
    s = src.data["silence_10min_s"]
    return f"10 minutes of digital silence through `stts`: {s:.2f} s (goal: under 1 s: {verdict(s < 1.0)})."


@renderer("robustness-nonspeech", "robustness-s5.json")
def render_nonspeech(sources: list[Source]) -> str:
    src = sources[0]
    clips: list[dict[str, Any]] = src.data.get("non_speech", [])
    if not clips:
        return f"{_silence_line(src)}\n\nNo non-speech rows in `{src.name}`."
    setups = list(dict.fromkeys(c["setup"] for c in clips))
    rows = []
    for setup in setups:
        mine = [c for c in clips if c["setup"] == setup]
        strict = sum(c["words"] for c in mine if c["strict"])
        worst = max((c["per_min"] for c in mine if not c["strict"]), default=0.0)
        rows.append(
            [
                setup,
                len(mine),
                sum(1 for c in mine if c["words"]),
                f"{strict} ({verdict(strict == 0)})",
                f"{worst:g} ({verdict(worst <= 1.0)})",
            ]
        )
    lengths = sorted({c["seconds"] for c in clips})
    signals = len({c["signal"] for c in clips})
    heading = (
        f"Non-speech, {' and '.join(f'{s:g} s' for s in lengths)} clips ({signals} signals "
        f"each), words emitted:"
    )
    body = table(
        [
            "set-up",
            "clips",
            "clips with words",
            "words on silence, hum, tones, noise <= -30 dBFS (goal 0)",
            "worst words/min on the rest (goal <= 1)",
        ],
        rows,
    )
    return with_intro(src, _silence_line(src), heading, body)


@renderer("robustness-longform", "robustness.json")
def render_longform(sources: list[Source]) -> str:
    src = sources[0]
    long_form: list[dict[str, Any]] = src.data.get("long_form", [])
    if not long_form:
        return f"{_silence_line(src)}\n\nNo long-form rows in `{src.name}`."
    music = any("words_in_music" in r for r in long_form)
    cpu = any("cpu_s" in r for r in long_form)
    rows = []
    for r in long_form:
        lost = r["lost_runs"]
        alone = r.get("lost_vs_alone")
        inserted = r["inserted_runs"]
        heard = r.get("first_words_heard")
        diff = (r["wer"] - r["per_file_wer"]) * 100
        rows.append(
            [
                r["variant"],
                r["setup"],
                pct(r["wer"]),
                pct(r["per_file_wer"]),
                f"{diff:+.1f} ({verdict(diff <= 1.0)})",
                f"{len(lost)} ({sum(lost)} words; {verdict(not lost)})",
                "not recorded" if alone is None else f"{len(alone)} ({sum(alone)} words)",
                f"{len(inserted)} ({sum(inserted)} words; {verdict(not inserted)})",
                f"{pct(r['onsets_within_0_5'], 0)} ({verdict(r['onsets_within_0_5'] >= 0.95)})",
                "not recorded"
                if heard is None
                else f"{pct(r['heard_onsets_within_0_5'], 0)} of {pct(heard, 0)}",
                r["rtf"],
            ]
            + ([f"{r['cpu_s']:.0f}" if "cpu_s" in r else "not recorded"] if cpu else [])
            + ([r.get("words_in_music", "")] if music else [])
            + ["not recorded" if r.get("load") is None else f"{r['load']:.1f}"]
        )
    body = table(
        [
            "recording",
            "set-up",
            "WER",
            "per-file WER",
            "diff (goal <= +1)",
            "lost runs >= 5 words (goal 0)",
            "of which heard alone",
            "inserted runs (goal 0)",
            "first words within 0.5 s (goal >= 95 %)",
            "among first words heard",
            "RTF",
            *(["CPU s (process)"] if cpu else []),
            *(["words in music"] if music else []),
            "load avg",
        ],
        rows,
    )
    minutes = src.data.get("minutes")
    utterances = {len(r["onset_errors"]) for r in long_form}
    about = (
        f"Long-form recordings of corpus utterances with pauses, cycled to {minutes:g} minutes "
        f"({', '.join(map(str, sorted(utterances)))} utterances)."
        if minutes
        else ""
    )
    return "\n\n".join(p for p in (_silence_line(src), about, body) if p)


# ---------------------------------------------------------------- memory


def _fit(d: dict[str, Any], key: str) -> str:
    return f"{d[key]:+.0f}"


@renderer("soak-blocks", "soak.json")
def render_soak_blocks(sources: list[Source]) -> str:
    src = sources[0]
    d = src.data
    peaks = {int(k): v for k, v in d["peak_per_100_requests_mib"].items()}
    medians = {int(k): v for k, v in d["median_per_100_requests_mib"].items()}
    unit = "utterances" if d.get("protocol") == "wyoming" else "requests"
    starts = sorted(peaks)
    shown = [s for s in starts if s % 500 == 0]
    if starts[-1] not in shown:
        shown.append(starts[-1])
    body = table(
        [unit, *(f"{s}-{s + 100}" for s in shown)],
        [
            ["peak RSS MiB", *(f"{peaks[s]:.1f}" for s in shown)],
            ["median RSS MiB", *(f"{medians[s]:.1f}" for s in shown)],
        ],
    )
    steps = [abs(peaks[b] - peaks[a]) for a, b in zip(starts, starts[1:], strict=False)]
    summary = (
        f"{d['requests']} {unit} at concurrency {d['concurrency']}, {d['wall_s'] / 60:.0f} "
        f"minutes; answers: "
        + ", ".join(f"{v} × {k.split(':', 1)[1]}" for k, v in d["outcomes"].items())
        + f". Straight-line fit over the second half of the per-block values: "
        f"**{_fit(d, 'peak_envelope_slope_kib_per_1000_requests')} KiB per 1000 {unit} for "
        f"the peak, {_fit(d, 'median_slope_kib_per_1000_requests')} KiB per 1000 for the "
        f"median** (goal: < 1 MiB per 1000: "
        f"{verdict(abs(d['peak_envelope_slope_kib_per_1000_requests']) < 1024)}). "
        f"Median per block {medians[starts[0]]:.1f} MiB in the first block, "
        f"{medians[starts[-1]]:.1f} in the last; the largest step between two consecutive "
        f"blocks' peaks: {max(steps):.1f} MiB."
    )
    return with_intro(src, summary, body)


@renderer(
    "soak-runs",
    "soak.json,soak-wyoming.json,soak-wyoming-2000.json,"
    "soak-batched.json,soak-batched-arena2.json,soak-batched-mallopt.json",
)
def render_soak_runs(sources: list[Source]) -> str:
    rows = []
    for src in sources:
        d = src.data
        peaks = {int(k): v for k, v in d["peak_per_100_requests_mib"].items()}
        medians = {int(k): v for k, v in d["median_per_100_requests_mib"].items()}
        starts = sorted(peaks)
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
                ", ".join(f"{v} × {k.split(':', 1)[1]}" for k, v in d["outcomes"].items()),
                f"{peaks[starts[0]]:.1f} → {peaks[starts[-1]]:.1f}",
                f"{min(peaks.values()):.1f}-{max(peaks.values()):.1f}",
                f"{slope:+.0f} ({verdict(abs(slope) < 1024)})",
                f"{statistics.median(medians[s] for s in first):.1f} / "
                f"{statistics.median(medians[s] for s in half):.1f}",
                f"{min(medians.values()):.1f}-{max(medians.values()):.1f}",
                _fit(d, "median_slope_kib_per_1000_requests"),
            ]
        )
    return table(
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


@renderer("unload", "unload.json")
def render_unload(sources: list[Source]) -> str:
    src = sources[0]
    rows = []
    kept = []
    for r in src.data:
        held = r["loaded_mib"][0] - r["baseline_mib"]
        stays = r["freed_mib"][0] - r["baseline_mib"]
        reloads = r["first_request_s"][1:]
        rows.append(
            [
                r["engine"],
                r["baseline_mib"],
                r["loaded_mib"][0],
                r["freed_mib"][0],
                f"{(held - stays) / held * 100:.0f} %" if held > 0 else "n/a",
                r["freed_mib"][-1],
                r["freed_mib"][-1] - r["freed_mib"][0],
                sum(reloads) / max(1, len(reloads)),
            ]
        )
        kept.append(f"{r['engine']} {stays:.1f} MiB")
    cycles = len(src.data[0]["freed_mib"])
    body = table(
        [
            "engine",
            "RSS before load MiB",
            "loaded, after a request MiB",
            "after unload MiB",
            "of the model's RSS given back",
            f"after unload, cycle {cycles} MiB",
            "drift over the cycles MiB",
            "request with reload s",
        ],
        rows,
    )
    stays_line = (
        "What stays after the first unload, above the RSS taken before the first load: "
        + ", ".join(kept)
        + "."
    )
    return with_intro(src, body, stays_line)


# ---------------------------------------------------------------- jobs, batch


@renderer("jobs", "jobs.json")
def render_jobs(sources: list[Source]) -> str:
    src = sources[0]
    t, c, lat = src.data["throughput"], src.data["crash"], src.data["latency"]
    throughput = table(
        ["measure", "synchronous", "jobs"],
        [
            [
                f"{t['audio_s']:.0f} s of audio, wall",
                f"{t['sync_wall_s']:.1f} s",
                f"{t['jobs_wall_s']:.1f} s",
            ],
            [
                "audio seconds per second",
                f"{t['sync_audio_s_per_s']:.2f}",
                f"{t['jobs_audio_s_per_s']:.2f} ({t['jobs_vs_sync']:.2f}x)",
            ],
        ],
    )
    given = c["engine_audio_checkpointed_s"] + c["lost_step_audio_s"]
    crash = table(
        [f"crash and resume ({c['audio_s']:.0f} s recording)", ""],
        [
            [
                "killed",
                f"{c['lost_step_wall_s']:.1f} s into the step after the checkpoint at "
                f"{c['killed_after_checkpoint_s']:.1f} s; resumed from "
                f"{c['resumed_from_s']:.1f} s (attempt {c['attempts']})",
            ],
            [
                "audio given to the engine",
                f"{given:.1f} s in all ({c['engine_audio_checkpointed_s']:.0f} s kept, the "
                f"{c['lost_step_audio_s']:.1f} s step at the kill lost); from zero: "
                f"{c['audio_s'] * 2:.1f} s",
            ],
            [
                "wall",
                f"{c['first_attempt_wall_s']:.1f} s first attempt + {c['restart_to_ready_s']:.1f} s "
                f"restart + {c['second_attempt_wall_s']:.1f} s second attempt = "
                f"{c['crash_total_wall_s']:.1f} s, against {c['uninterrupted_wall_s']:.1f} s "
                f"uninterrupted",
            ],
        ],
    )
    added = lat["busy_median_s"] - lat["idle_median_s"]
    in_steps = added / t["job_step_wall_s"]
    busy = src.data["args"]["busy_jobs"]
    repeats = src.data["args"]["repeats"]
    latency = table(
        ["interactive request (`" + lat["probe"] + "`)", "seconds"],
        [
            [f"idle server (median of {repeats})", f"{lat['idle_median_s']:.2f}"],
            [f"with {busy} jobs running (median of {repeats})", f"{lat['busy_median_s']:.2f}"],
            [
                "added (goal: within one job step)",
                f"{added:.2f} = {in_steps:.2f} of a job step ({t['job_step_wall_s']:.1f} s of "
                f"engine time): {verdict(in_steps <= 1.0)}",
            ],
        ],
    )
    return with_intro(src, throughput, crash, latency)


def _batch_rows(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    local = {r["cores"]: r for r in rows if "local" in r["name"]}
    out = []
    notes = []
    for r in rows:
        base = local.get(r["cores"]) if "--ray" in r["name"] else None
        wall = signed_pct(r["wall"] / base["wall"] - 1) if base else ""
        cpu = signed_pct(r["cpu_s"] / base["cpu_s"] - 1) if base else ""
        first = r.get("first_result")
        out.append(
            [
                r["name"],
                r["cores"],
                f"{r['wall']:.1f}",
                f"{r['rate']:.2f}",
                "" if first is None else f"{first:.1f}",
                f"{r['cpu_s']:.1f}",
                f"{r['cpu_per_audio_s']:.2f}",
                wall,
                f"**{cpu}**" if cpu else "",
                f"{r['driver_rss']:.0f}",
                "" if r["actor_rss"] is None else f"{r['actor_rss']:.0f}",
            ]
        )
        if base:
            fixed = r["cpu_s"] - base["cpu_s"]
            share = r["cpu_s"] / base["cpu_s"] - 1
            work = fixed / 0.10  # CPU s of work above which the fixed cost is under 10 %
            speech = work / base["cpu_per_audio_s"] / 60
            later = (r.get("first_result") or 0) - (base.get("first_result") or 0)
            notes.append(
                f"{r['name']}: {fixed:+.1f} CPU s against local at {r['cores']} core(s) "
                f"({signed_pct(share)}; goal <= +10 %: {verdict(share <= 0.10)}), first result "
                f"{later:+.1f} s; at this cost the overhead falls under 10 % from about "
                f"{work:.0f} CPU s of work, {speech:.1f} minutes of speech at local's "
                f"{base['cpu_per_audio_s']:.2f} CPU s per audio s"
            )
    return (
        table(
            [
                "configuration",
                "cores",
                "wall s",
                "audio s/s",
                "first result s",
                "CPU s (all processes)",
                "CPU s per audio s",
                "Ray vs local: wall",
                "Ray vs local: CPU",
                "driver peak RSS MB",
                "actor peak RSS MB",
            ],
            out,
        ),
        notes,
    )


@renderer("batch", "batch.json")
def render_batch(sources: list[Source]) -> str:
    src = sources[0]
    body, notes = _batch_rows(src.data["rows"])
    return with_intro(src, body, "\n".join(f"- {n}." for n in notes))


# ---------------------------------------------------------------- the README


def render_block(name: str, params: str, results: Path) -> str:
    if name not in RENDERERS:
        raise BlockError(f"<!-- bench:{name} -->: no such renderer (known: {', '.join(RENDERERS)})")
    default, fn = RENDERERS[name]
    options = dict(p.split("=", 1) for p in params.split())
    unknown = set(options) - {"source"}
    if unknown:
        raise BlockError(
            f"<!-- bench:{name} -->: unknown parameter(s) {', '.join(sorted(unknown))}"
        )
    names = options.get("source", default).split(",")
    sources = [Source.read(n, results) for n in names]
    files = ", ".join(f"`bench/results/{s.name}`" for s in sources)
    machines = sorted({s.machine or "not recorded" for s in sources})
    per_file = [s.load for s in sources]
    if len(set(per_file)) == 1:
        loads = per_file[0] + (" in any of them" if len(sources) > 1 else "")
    else:
        loads = "; ".join(f"{s.name}: {s.load}" for s in sources)
    footer = (
        f"<sub>Generated from {files} by `bench/readme_tables.py`; machine: "
        f"{', '.join(machines)}; load average: {loads}.</sub>"
    )
    return f"{fn(sources).rstrip()}\n\n{footer}\n"


def render_readme(text: str, results: Path = RESULTS) -> str:
    """The README with every block rewritten from the result files."""
    blocks = list(MARKER.finditer(text))
    if len(blocks) != len(OPENING.findall(text)):
        closed = {m.start() for m in blocks}
        for m in OPENING.finditer(text):
            if m.start() not in closed:
                line = text.count("\n", 0, m.start()) + 1
                raise BlockError(f"README line {line}: a bench marker without its closing marker")
    out = []
    pos = 0
    for m in blocks:
        head = text[m.start() : m.start("body")]
        body = render_block(m.group("name"), m.group("params"), results)
        out += [text[pos : m.start()], head, "\n", body, "\n", f"<!-- /bench:{m.group('name')} -->"]
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 with a diff when README is stale"
    )
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    try:
        new = render_readme(text, args.results)
    except BlockError as exc:
        print(f"readme_tables: {exc}", file=sys.stderr)
        return 2
    blocks = len(MARKER.findall(text))
    if args.check:
        if blocks == 0:
            print(
                f"{args.readme}: no <!-- bench:... --> blocks: its figures are typed, not generated"
            )
            return 1
        if new == text:
            print(f"{args.readme}: {blocks} benchmark blocks match bench/results")
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                new.splitlines(keepends=True),
                f"{args.readme} (as committed)",
                f"{args.readme} (from the result files)",
            )
        )
        print(f"\n{args.readme} differs from the result files: run python bench/readme_tables.py")
        return 1
    if blocks == 0:
        print(f"{args.readme}: no <!-- bench:... --> blocks", file=sys.stderr)
    if new != text:
        args.readme.write_text(new)
        print(f"{args.readme}: {blocks} benchmark blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
