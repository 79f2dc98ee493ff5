"""Word times out of non-speech (issue 14, stts/engines/whisper_timing.py).

Real Silero VAD (faster-whisper's) on a recording built from corpus files; the words are
faster-whisper's own ``Word``/``Segment`` types placed where the bench found Whisper puts
a first word: in the pause before its speech, or carried across a VAD chunk join into
the tail of the previous utterance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from faster_whisper.vad import VadOptions, get_speech_timestamps

from stts import synthetic
from stts.audio import decode_audio
from stts.config import Settings
from stts.engines.base import TranscribeOptions
from stts.engines.whisper import WhisperEngine
from stts.engines.whisper_timing import SAMPLE_RATE, SpeechMap, WordTimer
from stts.evaluation import normalize_text
from tests.conftest import (
    CORPUS_ITEMS,
    corpus_file,
    corpus_long_form,
    requires_corpus,
    whisper_segment,
)

pytestmark = requires_corpus

FILES = [
    "openai-whisper__jfk.flac",
    "coqui-tts__LJ001-0001.wav",
    "ort-extensions__1272-141231-0002.mp3",
]


@pytest.fixture(scope="module")
def recording() -> synthetic.LongForm:
    return corpus_long_form(FILES, 60.0, noise_dbfs=-45.0, seed=14)


@pytest.fixture(scope="module")
def speech(recording: synthetic.LongForm) -> SpeechMap:
    return SpeechMap(recording.samples, 0.5)


@pytest.mark.parametrize(("silence_ms", "pad_ms"), [(2000, 400), (300, 200)])
def test_the_speech_map_cuts_the_chunks_faster_whisper_cuts(
    recording: synthetic.LongForm, speech: SpeechMap, silence_ms: int, pad_ms: int
) -> None:
    """One Silero run serves the chunks and the word times: the chunks must be exactly
    faster-whisper's own."""
    options = VadOptions(threshold=0.5, min_silence_duration_ms=silence_ms, speech_pad_ms=pad_ms)
    theirs = get_speech_timestamps(recording.samples, options)
    assert len(theirs) > 2
    assert speech.chunks(silence_ms, pad_ms) == theirs


def test_a_word_started_in_the_pause_moves_to_its_speech(
    recording: synthetic.LongForm, speech: SpeechMap
) -> None:
    timer = WordTimer(speech, speech.chunks(2000, 400))
    placement = recording.placements[1]
    onset = speech.speech_from(placement.start, placement.start + placement.duration)
    # Silero's onset and the clip's energy onset (a breath counts) agree within 0.5 s.
    assert onset is not None and abs(onset - placement.speech_start) < 0.5
    early = onset - 0.8  # in the pause before the utterance
    segment = whisper_segment([(early, onset + 0.3, " And"), (onset + 0.4, onset + 0.7, " so")])
    settled = timer.settle(segment)
    first = settled.words[0]
    assert first.start == onset, first
    assert first.end == segment.words[0].end
    assert settled.start == first.start
    # The words themselves never change, nor a word that starts in speech.
    assert [w.word for w in settled.words] == [" And", " so"]
    assert settled.words[1] == segment.words[1]
    assert timer.moved == 1


def _join_before_an_utterance(
    recording: synthetic.LongForm, speech: SpeechMap
) -> tuple[list[dict[str, int]], synthetic.Placement, float, float]:
    """VAD chunks, and a join of two chunks with an utterance starting right after it:
    that utterance's placement, where the previous utterance's speech stops, and the
    onset Silero hears after the join."""
    chunks = speech.chunks(2000, 400)
    spans = [(c["start"] / 16_000, c["end"] / 16_000) for c in chunks]
    k, after = next(
        (k, p)
        for k in range(len(spans) - 1)
        for p in recording.placements
        if spans[k + 1][0] <= p.speech_start < spans[k + 1][0] + 1.0
    )
    tail = spans[k][1] - 0.4  # where the previous utterance's speech stops (0.4 s pad)
    onset = speech.speech_from(*spans[k + 1])
    assert onset is not None and abs(onset - after.speech_start) < 0.5
    return chunks, after, tail, onset


def test_a_first_word_carried_into_the_previous_chunk_goes_back(
    recording: synthetic.LongForm, speech: SpeechMap
) -> None:
    """faster-whisper maps a word by the chunk its middle falls in: a first word aligned
    early across the join lands in the previous utterance's tail, seconds early."""
    chunks, after, tail, onset = _join_before_an_utterance(recording, speech)
    timer = WordTimer(speech, chunks)
    timer.settle(whisper_segment([(tail - 0.9, tail - 0.3, " before")]))
    carried = whisper_segment(
        [(tail - 0.3, tail + 0.3, " The"), (onset + 0.35, onset + 0.6, " birch")]
    )
    settled = timer.settle(carried)
    assert after.speech_start - carried.words[0].start > 2.0  # seconds early as decoded
    assert settled.words[0].start == onset, settled.words[0]
    assert settled.words[0].end <= settled.words[1].start
    assert [w.word for w in settled.words] == [" The", " birch"]


def test_a_segment_with_speech_of_its_own_before_the_join_stays(
    recording: synthetic.LongForm, speech: SpeechMap
) -> None:
    """A short utterance at the end of a chunk is not carried: it has its own onset."""
    chunks = speech.chunks(2000, 400)
    timer = WordTimer(speech, chunks)
    spans = [(c["start"] / 16_000, c["end"] / 16_000) for c in chunks]
    placement = next(p for p in recording.placements if p.speech_start < spans[0][1])
    timer.settle(whisper_segment([(placement.start - 2.0, placement.start - 1.8, " earlier")]))
    onset = speech.speech_from(placement.start, spans[0][1])
    assert onset is not None
    own = whisper_segment(
        [(onset, onset + 0.3, " Five"), (spans[1][0] + 0.5, spans[1][0] + 0.8, " and")]
    )
    assert timer.settle(own).words[0] == own.words[0]


@pytest.mark.slow
def test_first_words_after_a_pause_start_with_their_speech(cache_dir: Path) -> None:
    """Three utterances as the 10-minute bench recording had them (JFK, a 2.8 s pause,
    "four queen of clubs", 1.3 s, "the child almost hurt the small dog"): Whisper
    aligned "The" 0.73 s and "And" 0.39 s early there (in the pause); whole engine, its
    defaults."""
    references = {item.path.name: item.reference for item in CORPUS_ITEMS}
    layout = [
        (0.5, "openai-whisper__jfk.flac"),
        (2.81, "pocketsphinx__002.wav"),
        (1.32, "speechbrain__spk1_snt1.wav"),
    ]
    pieces, placements, cursor = [], [], 0
    for k, (pause, name) in enumerate(layout):
        clip = decode_audio(corpus_file(name)).samples
        cursor += int(pause * SAMPLE_RATE)
        start = cursor / SAMPLE_RATE
        onset = start + synthetic.onset(clip)
        placements.append(
            synthetic.Placement(k, k, start, onset, len(clip) / SAMPLE_RATE, references[name])
        )
        pieces += [np.zeros(int(pause * SAMPLE_RATE), np.float32), clip]
        cursor += len(clip)
    pieces.append(np.zeros(SAMPLE_RATE, np.float32))
    recording = synthetic.LongForm(np.concatenate(pieces), tuple(placements), None)
    engine = WhisperEngine(Settings(cache_dir=cache_dir))
    engine.load()
    try:
        result = engine.transcribe(
            recording.samples, TranscribeOptions(language="en", word_timestamps=True)
        )
    finally:
        engine.close()
    words = [(w.start, w.word) for w in result.words]
    score = synthetic.score_long_form(recording, words, normalize_text)
    assert score.lost_runs == () and score.inserted_runs == (), result.text
    assert max(score.onset_errors) <= 0.5, (score.onset_errors, result.words)


def test_a_first_word_in_the_previous_speech_tail_moves_to_its_own(
    recording: synthetic.LongForm, speech: SpeechMap
) -> None:
    """Within one chunk (a pause under 2 s): "At" aligned over the end of the previous
    utterance and the pause, "that" over the rest of the pause; their speech begins
    after both starts."""
    chunks = speech.chunks(4000, 400)  # this recording's pauses, all inside chunks
    spans = [(c["start"] / 16_000, c["end"] / 16_000) for c in chunks]
    pairs = [
        (p, q)
        for p, q in zip(recording.placements, recording.placements[1:], strict=False)
        if any(lo <= p.speech_start and q.speech_start + 0.5 <= hi for lo, hi in spans)
    ]
    assert pairs, "no two utterances share a chunk"
    p, q = pairs[0]
    onset = speech.speech_from(q.start, q.start + q.duration)
    tail = speech.speech_from(p.start, p.start + p.duration)
    assert onset is not None and tail is not None
    # Where p's speech ends: the last speech frame before q's onset.
    last = max(
        t / 100 for t in range(int(tail * 100), int(onset * 100)) if speech.is_speech(t / 100)
    )
    timer = WordTimer(speech, chunks)
    timer.settle(whisper_segment([(last - 0.5, last - 0.1, " modern.")]))
    early = whisper_segment([(last - 0.1, last + 0.3, " At"), (last + 0.3, onset + 0.4, " that")])
    settled = timer.settle(early)
    assert settled.words[0].start == speech.next_onset(last + 0.3, onset + 0.4)
    assert abs(settled.words[0].start - onset) < 0.1
    assert settled.words[0].end <= settled.words[1].start < settled.words[1].end
    assert settled.words[1].end == early.words[1].end
    assert [w.word for w in settled.words] == [" At", " that"]


def _pair_with_a_pause(recording: synthetic.LongForm, speech: SpeechMap) -> tuple[float, float]:
    """Where one utterance's speech ends and the next one's begins (Silero's frames),
    for two consecutive utterances with at least 0.6 s of non-speech between them."""
    for p, q in zip(recording.placements, recording.placements[1:], strict=False):
        onset = speech.speech_from(q.start, q.start + q.duration)
        tail = speech.speech_from(p.start, p.start + p.duration)
        if onset is None or tail is None:
            continue
        last = max(
            t / 100 for t in range(int(tail * 100), int(onset * 100)) if speech.is_speech(t / 100)
        )
        if onset - last >= 0.6:
            return last, onset
    raise AssertionError("no two utterances with a pause between them")


@pytest.mark.parametrize("late_onsets", [True, False])
def test_a_word_stretched_back_over_a_pause_starts_at_its_onset(
    recording: synthetic.LongForm, speech: SpeechMap, late_onsets: bool
) -> None:
    """Seen under noise (three utterances of the 10-minute recording): a first word that
    does not open a segment ("exhibition for Queen of Cloves") starts in the previous
    word's speech and stretches over the whole pause to just past its own onset. It
    starts at that onset; with ``late_onsets`` off it stays."""
    last, onset = _pair_with_a_pause(recording, speech)
    timer = WordTimer(speech, speech.chunks(2000, 400), late_onsets=late_onsets)
    segment = whisper_segment(
        [
            (last - 0.6, last - 0.25, " exhibition"),
            (last - 0.25, onset + 0.3, " for"),  # starts in the previous word's speech
            (onset + 0.3, onset + 0.6, " Queen"),
        ]
    )
    settled = timer.settle(segment)
    assert [w.word for w in settled.words] == [" exhibition", " for", " Queen"]
    assert settled.words[0] == segment.words[0] and settled.words[2] == segment.words[2]
    moved = settled.words[1]
    assert moved.end == segment.words[1].end
    if not late_onsets:
        assert moved == segment.words[1]
        return
    assert abs(moved.start - onset) < 0.1, (moved, onset)
    assert moved.start <= moved.end - 0.1
    assert timer.moved == 1


def test_a_sentence_end_stretched_over_a_pause_keeps_its_start(
    recording: synthetic.LongForm, speech: SpeechMap
) -> None:
    """A word that ends a sentence and runs on over the pause is the previous
    utterance's last word (its end ran on, not its start back): it stays."""
    last, onset = _pair_with_a_pause(recording, speech)
    timer = WordTimer(speech, speech.chunks(2000, 400))
    segment = whisper_segment(
        [(last - 0.6, last - 0.25, " in"), (last - 0.25, onset + 0.3, " exhibition.")]
    )
    assert timer.settle(segment).words == segment.words


@pytest.mark.parametrize(
    ("text", "carry_inside", "moves"),
    [(" the", True, True), (" the", False, False), (" country,", True, False)],
)
def test_a_word_inside_a_segment_straddling_a_join_goes_back(
    recording: synthetic.LongForm,
    speech: SpeechMap,
    text: str,
    carry_inside: bool,
    moves: bool,
) -> None:
    """On the music recording Whisper ran utterances into one segment ("one two three
    the birch canoe"): the next utterance's first word, pulled early across a join of two
    chunks, ends past its chunk's end and is mapped by its middle into the previous
    utterance's tail, seconds early. Inside a segment it goes back too; a word that ends
    a clause is the previous utterance's last word, run on, and stays."""
    chunks, after, tail, onset = _join_before_an_utterance(recording, speech)
    timer = WordTimer(speech, chunks, carry_inside=carry_inside)
    segment = whisper_segment(
        [
            (tail - 0.9, tail - 0.1, " three"),
            (tail - 0.1, tail + 0.4 + 0.2, text),  # its end in the cut-out pause (chunk end + 0.2)
            (onset + 0.35, onset + 0.6, " birch"),
        ]
    )
    settled = timer.settle(segment)
    assert [w.word for w in settled.words] == [" three", text, " birch"]
    assert settled.words[0] == segment.words[0]
    assert settled.words[2].end == segment.words[2].end
    if not moves:
        assert settled.words[1:] == segment.words[1:]
        return
    assert after.speech_start - segment.words[1].start > 1.0  # seconds early as decoded
    assert abs(settled.words[1].start - onset) < 0.1, (settled.words[1], onset)
    assert settled.words[1].end <= settled.words[2].start


@pytest.mark.parametrize(
    ("share_reach", "min_lead_s", "lead", "moves"),
    [(3, 0.5, None, True), (1, 0.5, None, False), (3, 0.5, 0.3, False), (3, 0.0, 0.3, True)],
)
def test_a_first_word_without_room_beside_the_next_shares_with_two(
    recording: synthetic.LongForm,
    speech: SpeechMap,
    share_reach: int,
    min_lead_s: float,
    lead: float | None,
    moves: bool,
) -> None:
    """Seen on the music recording ("at that high", "she had jadaksu"): a segment's
    first word aligned over the pause ends just before its speech, and the next word
    holds under 0.2 s of it, too little for the two. It shares that speech with the next
    two words (``share_reach`` 1: the next word only, and it stays). A word that starts
    closer than ``min_lead_s`` to its speech stays (Silero may be late on a soft start)."""
    last, onset = _pair_with_a_pause(recording, speech)
    start = last + 0.05 if lead is None else onset - lead
    assert onset - start >= 0.5 or lead is not None
    timer = WordTimer(
        speech, speech.chunks(2000, 400), share_reach=share_reach, min_lead_s=min_lead_s
    )
    timer.settle(whisper_segment([(last - 0.5, last, " clubs.")]))
    segment = whisper_segment(
        [
            (start, onset - 0.05, " at"),  # wholly in the pause
            (onset - 0.05, onset + 0.05, " that"),  # 0.05 s of speech
            (onset + 0.05, onset + 0.6, " high"),
        ]
    )
    settled = timer.settle(segment)
    assert [w.word for w in settled.words] == [" at", " that", " high"]
    if not moves:
        assert settled.words == segment.words
        return
    assert abs(settled.words[0].start - onset) < 0.1, (settled.words[0], onset)
    assert all(a.end <= b.start for a, b in zip(settled.words, settled.words[1:], strict=False))
    assert all(w.end - w.start >= 0.1 - 1e-9 for w in settled.words)
    assert settled.words[2].end == segment.words[2].end


@pytest.mark.parametrize(
    ("text", "share_unheard", "moves"),
    [(" For", True, True), (" For", False, False), (" clubs,", True, False)],
)
def test_a_word_with_no_speech_in_it_shares_the_next_words_speech(
    recording: synthetic.LongForm,
    speech: SpeechMap,
    text: str,
    share_unheard: bool,
    moves: bool,
) -> None:
    """Seen under noise and music ("For although", "The cut"): a first word that holds
    no speech frame at all, in the pause before its speech, where the borrowed-speech
    rule does not apply (there: an utterance that was not transcribed put an onset
    between it and the last word; here: no word before it). It shares its speech with
    the next word; a word that ends a clause is a last word run on into the pause and
    stays."""
    last, onset = _pair_with_a_pause(recording, speech)
    timer = WordTimer(speech, speech.chunks(2000, 400), share_unheard=share_unheard)
    segment = whisper_segment(
        [(last + 0.05, onset - 0.05, text), (onset - 0.05, onset + 0.5, " also")]
    )
    settled = timer.settle(segment)
    assert [w.word for w in settled.words] == [text, " also"]
    if not moves:
        assert settled.words[0] == segment.words[0]
        return
    assert abs(settled.words[0].start - onset) < 0.1, (settled.words[0], onset)
    assert settled.words[0].end <= settled.words[1].start < settled.words[1].end
    assert settled.words[1].end == segment.words[1].end


def _dip_before_a_pause(speech: SpeechMap) -> tuple[float, float, float]:
    """A one-frame non-speech dip inside speech that then runs on, with no other onset,
    to a pause of at least 0.6 s: the dip, where that speech ends, the next onset."""
    raw = speech.bridged(0).speech
    step = 512 / 16_000
    for i in range(1, len(raw) - 1):
        if raw[i] or not (raw[i - 1] and raw[i + 1]):
            continue
        j = i + 1
        while j < len(raw) and (raw[j] or (j + 1 < len(raw) and raw[j - 1] and raw[j + 1])):
            j += 1  # to the end of the speech (other one-frame dips bridged)
        k = j
        while k < len(raw) and not raw[k]:
            k += 1
        if k < len(raw) and (k - j) * step >= 0.6 and not np.any(~raw[i + 1 : j]):
            return i * step, j * step, k * step
    raise AssertionError("no one-frame dip before a pause")


@pytest.mark.parametrize("bridge_frames", [1, 0])
def test_a_one_frame_dip_is_no_onset_of_a_first_words_own(
    speech: SpeechMap, bridge_frames: int
) -> None:
    """Seen on the music recording ("the smooth | The child"): "planks" was not
    transcribed and the next utterance's first word was aligned over it and the pause.
    Silero dipped under its threshold for one 32 ms frame inside "planks", which made
    an onset there, so the word seemed to have speech of its own and stayed 2 s early.
    Bridged, the dip is no onset: the word shares its speech with the next word. With
    ``bridge_frames`` 0 it stays."""
    dip, tail, onset = _dip_before_a_pause(speech)
    mapped = speech.bridged(bridge_frames)
    chunks = mapped.chunks(30_000, 400)  # one chunk: the join rules stay out of it
    timer = WordTimer(mapped, chunks)
    timer.settle(whisper_segment([(dip - 0.4, dip - 0.1, " smooth")]))
    segment = whisper_segment(
        [(dip - 0.1, tail + 0.3, " The"), (tail + 0.3, onset + 0.4, " child")]
    )
    settled = timer.settle(segment)
    assert [w.word for w in settled.words] == [" The", " child"]
    if not bridge_frames:
        assert settled.words[0] == segment.words[0]
        return
    assert abs(settled.words[0].start - onset) < 0.1, (settled.words[0], onset)
    assert settled.words[0].end <= settled.words[1].start < settled.words[1].end


def _short_dip(speech: SpeechMap) -> tuple[float, float]:
    """A dip of 2 frames to under 0.3 s inside speech, after at least 0.8 s of speech
    with no onset: where it begins and the onset after it."""
    mask = speech.speech
    step = 512 / 16_000
    run = 0
    for i in range(1, len(mask)):
        if mask[i]:
            run += 1
            continue
        j = i
        while j < len(mask) and not mask[j]:
            j += 1
        if run * step >= 0.8 and j - i >= 2 and (j - i) * step < 0.3 and j < len(mask):
            return i * step, j * step
        run = 0
    raise AssertionError("no short dip inside speech")


@pytest.mark.parametrize(("min_pause_s", "moves"), [(0.3, False), (0.0, True)])
def test_a_first_word_in_its_own_speech_does_not_share_across_a_short_dip(
    speech: SpeechMap, min_pause_s: float, moves: bool
) -> None:
    """Seen under noise ("impressions from wood"): a segment's first word in the middle
    of continuous speech, the next word running just past a dip of 0.1-0.3 s. The onset
    after the dip is no speech of the word's own coming after a pause, so the word does
    not share it with the words after (``min_pause_s`` 0: it would move a second late)."""
    dip, onset = _short_dip(speech)
    timer = WordTimer(speech, speech.chunks(2000, 400), min_pause_s=min_pause_s)
    timer.settle(whisper_segment([(dip - 0.8, dip - 0.6, " took")]))
    segment = whisper_segment(
        [
            (dip - 0.6, dip - 0.1, " impressions"),
            (dip - 0.1, onset + 0.05, " from"),  # 0.05 s past the onset: no room for two
            (onset + 0.05, onset + 0.4, " wood"),
        ]
    )
    settled = timer.settle(segment)
    if not moves:
        assert settled.words[:2] == segment.words[:2]
        return
    assert abs(settled.words[0].start - onset) < 0.1, (settled.words[0], onset)
