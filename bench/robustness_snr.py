"""The long-form recording under noise, scored by each utterance's level against the noise.

``bench/robustness.py`` lays pink noise at a fixed -35 dBFS under corpus clips whose own
levels differ by 30 dB: some of them (four copies of one TIMIT sentence, a digit string)
are quieter than the noise. This splits that row's figures, from a run's recorded words
(``--diagnose``), into utterances whose speech is louder than the noise and those that are
not. It decodes nothing: the words and first-word errors are the run's.

A clip's speech level: the mean power of its 25 ms frames within 30 dB of its loudest
frame (its pauses left out), in dBFS.

    .venv/bin/python bench/robustness_snr.py robustness-s10b     # writes <stem>-snr.{json,md}
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from common import RESULTS, corpus, markdown_table
from robustness import long_form_makers

from stts.audio import decode_audio
from stts.evaluation import normalize_text
from stts.synthetic import score_long_form

NOISE = "noise -35 dBFS"
NOISE_DBFS = -35.0


def speech_level(samples: np.ndarray) -> float:
    """dBFS of the 25 ms frames within 30 dB of the loudest (speech, not its pauses)."""
    frames = samples[: len(samples) // 400 * 400].reshape(-1, 400).astype(np.float64)
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    loud = db[db > db.max() - 30]
    return float(10 * np.log10(np.mean(10 ** (loud / 10))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stem", help="a robustness.py --diagnose run, e.g. robustness-s10b")
    parser.add_argument("--setup", default="stts")
    args = parser.parse_args()
    results = json.loads((RESULTS / f"{args.stem}.json").read_text())
    recorded = json.loads((RESULTS / f"{args.stem}-words.json").read_text())
    row = next(
        r for r in results["long_form"] if r["variant"] == NOISE and r["setup"] == args.setup
    )
    items = [i for i in corpus() if i.duration < 30]
    levels = [speech_level(decode_audio(i.path).samples) for i in items]
    recording = long_form_makers(results["minutes"])[NOISE]()
    words = [(w[0], w[2]) for w in recorded[f"{NOISE} / {args.setup}"]]
    score = score_long_form(recording, words, normalize_text)
    runs = list(zip(score.lost_at, score.lost_runs, strict=True))
    above = {p.index for p in recording.placements if levels[p.clip] > NOISE_DBFS}
    groups: dict[str, Any] = {}
    for name, mine in (
        ("louder than the noise", above),
        ("quieter than the noise", {p.index for p in recording.placements} - above),
    ):
        first = [f for f in row["first_words"] if f["utterance"] in mine]
        within = sum(1 for f in first if f.get("error") is not None and abs(f["error"]) <= 0.5)
        heard = sum(1 for f in first if f.get("error") is not None)
        lost = [size for at, size in runs if at in mine]
        groups[name] = {
            "utterances": len(first),
            "clips": sorted({p.clip for p in recording.placements if p.index in mine}),
            "first_words_within_0_5": within / max(1, len(first)),
            "first_words_heard": heard / max(1, len(first)),
            "lost_runs": lost,
        }
    data = {
        "source": args.stem,
        "setup": args.setup,
        "noise_dbfs": NOISE_DBFS,
        "clip_levels_dbfs": [round(v, 1) for v in levels],
        "groups": groups,
    }
    out = RESULTS / f"{args.stem}-snr"
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    quiet = ", ".join(
        f"{items[c].path.name} {levels[c]:.1f} dBFS"
        for c in groups["quieter than the noise"]["clips"]
    )
    table = markdown_table(
        [
            "utterances",
            "count",
            "first words within 0.5 s (goal >= 95 %)",
            "first words heard",
            "lost runs >= 5 words (goal 0)",
        ],
        [
            [
                name,
                g["utterances"],
                f"{100 * g['first_words_within_0_5']:.1f} %",
                f"{100 * g['first_words_heard']:.1f} %",
                f"{len(g['lost_runs'])} ({sum(g['lost_runs'])} words)",
            ]
            for name, g in groups.items()
        ],
    )
    out.with_suffix(".md").write_text(
        f"# {NOISE}, `{args.setup}`, split by speech level ({args.stem})\n\n"
        f"Speech level of a clip: its 25 ms frames within 30 dB of its loudest, in dBFS; "
        f"the noise is pink at {NOISE_DBFS:g} dBFS. Quieter than the noise: {quiet}.\n\n"
        f"{table}\n"
    )
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
