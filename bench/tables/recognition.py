"""README renderers for what the recogniser gets right and when: streaming, short
context, robustness (non-speech and long-form recordings)."""

from __future__ import annotations

from typing import Any

from .markdown import markdown_table, pct, verdict
from .source import Source, with_intro


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


def render_streaming(sources: list[Source]) -> str:
    """bench/streaming.py: latency, WER and capacity per engine, against issue 12's goals."""
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
    goal_table = markdown_table(["goal (issue 12)", *(r["engine"] for r in results)], goal_rows)
    note = f"Recorded with the run: {src.data['note']}." if src.data.get("note") else ""
    return with_intro(src, markdown_table(headers, rows), note, "Against the goals:", goal_table)


def render_short_context(sources: list[Source]) -> str:
    """bench/short_context.py: whole files, short context vs 30 s windows."""
    src = sources[0]
    body = markdown_table(
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


def _silence_line(src: Source) -> str:
    s = src.data["silence_10min_s"]
    return f"10 minutes of digital silence through `stts`: {s:.2f} s (goal: under 1 s: {verdict(s < 1.0)})."


def render_nonspeech(sources: list[Source]) -> str:
    """bench/robustness.py: words emitted on non-speech clips, per set-up."""
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
    named = [f"{s:g} s" for s in lengths]
    said = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
    heading = f"Non-speech, {said} clips ({signals} signals each), words emitted:"
    body = markdown_table(
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


def _digits(share: float, goal: float) -> int:
    """Decimals for a share shown beside its goal: one where whole percent would round a
    miss up to the goal (94.6 % is not 95 %)."""
    return 1 if (round(share * 100) >= goal * 100) != (share >= goal) else 0


def render_longform(sources: list[Source]) -> str:
    """bench/robustness.py: long recordings with pauses against the same files one by one."""
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
                f"{pct(r['onsets_within_0_5'], _digits(r['onsets_within_0_5'], 0.95))} "
                f"({verdict(r['onsets_within_0_5'] >= 0.95)})",
                "not recorded"
                if heard is None
                else f"{pct(r['heard_onsets_within_0_5'], 0)} of {pct(heard, 0)}",
                r["rtf"],
            ]
            + ([f"{r['cpu_s']:.0f}" if "cpu_s" in r else "not recorded"] if cpu else [])
            + ([r.get("words_in_music", "")] if music else [])
            + ["not recorded" if r.get("load") is None else f"{r['load']:.1f}"]
        )
    body = markdown_table(
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
