"""README renderers for work off the request path: jobs and batch runs."""

from __future__ import annotations

from typing import Any

from .markdown import markdown_table, signed_pct, verdict
from .source import Source, with_intro


def render_jobs(sources: list[Source]) -> str:
    """bench/jobs.py: jobs against synchronous requests, a crash and resume, added latency."""
    src = sources[0]
    t, c, lat = src.data["throughput"], src.data["crash"], src.data["latency"]
    throughput = markdown_table(
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
    crash = markdown_table(
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
    latency = markdown_table(
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
        markdown_table(
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


def render_batch(sources: list[Source]) -> str:
    """bench/batch.py: stts batch locally and on Ray, with Ray's fixed cost in CPU seconds."""
    src = sources[0]
    body, notes = _batch_rows(src.data["rows"])
    return with_intro(src, body, "\n".join(f"- {n}." for n in notes))
