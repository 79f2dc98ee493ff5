"""PocketSphinx: a small, fast, English-only engine whose model ships inside its wheel.

The decoder is stateful (one utterance at a time), so it is not thread-safe: the
service gives every worker its own instance.

Its ``process_raw`` holds the GIL for the whole call (seconds for 30 s of audio), which
in the server's process stops everything else meanwhile. So with ``pocketsphinx.isolate``
(the default in a server) each instance decodes in child processes
(:mod:`stts.engines.isolated`): whole recordings in one, live streams in another. The
decoders live there, and a cancel or a crash costs that child, not the server: the
native decoder has crashed the test process (SIGSEGV inside ``process_raw`` of a live
stream's step, twice in test_wyoming, never reproduced alone), and a server must survive
that.

It also streams natively (:class:`PocketSphinxStream`): each live stream has a decoder of
its own for its whole life, fed with ``process_raw`` as audio arrives. Live decoding
normalises cepstra with a running mean that starts from the model's ``cmninit``, which
costs a lot of accuracy on the first utterance (58 % WER against 39 % whole on the
corpus); so a stream waits for its first ``PRIME_S`` of audio, takes the cepstral mean of
that (a feature pass ended on a one-word keyphrase search, not the language model), and
only then starts decoding (42 %). A stream's decoder searches lighter than a whole
recording's (``stream_fwdflat``, ``stream_max_hmm_per_frame``) to keep pace. Partial
hypotheses may still change, so words are committed by LocalAgreement-2 over
consecutive partials, and only once the decoder has gone ``SETTLE_S`` past them.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stts.engines.base import (
    Availability,
    Cancelled,
    CancelToken,
    Capabilities,
    Engine,
    SegmentCallback,
    TranscribeOptions,
)
from stts.engines.isolated import EngineProcess
from stts.engines.streaming import (
    EngineStream,
    LocalAgreement,
    RepetitionGuard,
    StreamUpdate,
    normalise,
)
from stts.errors import EngineUnavailable
from stts.install import install_hint
from stts.transcript import Transcript, Word, segments_from_words

if TYPE_CHECKING:
    from stts.audio import AudioArray
    from stts.config import Settings

_FILLER = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")
_ALTERNATE = re.compile(r"\(\d+\)$")
_PAUSE_S = 0.6  # a silence this long starts a new segment
_WINDOW_SAMPLES = 16_000 * 30

PRIME_S = 1.5
"""Audio a stream gathers before it starts decoding, for its cepstral mean (see above)."""
_PRIME_SEARCH = "_stts_prime"
_PRIME_WORDS = ("oh", "a", "the")
"""The priming pass's search: a keyphrase of one of these words (the first the
dictionary has); a dictionary with none of them primes on the language model."""
SETTLE_S = 0.3
"""A word is committed only once the decoder has heard this much audio after its end:
the last word of a partial hypothesis is often a prefix of the word being spoken."""
AGREE_S = 0.3
"""Hypotheses compared for agreement are this much audio apart: two partials 100 ms
apart often agree on a word still being misheard."""
ENDPOINT_S = 1.0
"""A pause this long after the last word ends the decoder's utterance: its words are
final, and the hypothesis (searched again on every step) never grows without bound."""
MAX_UTTERANCE_S = 30.0
"""Past this, a decoder utterance ends at any pause of ``SETTLE_S`` or more."""
FEED_SAMPLES = 16_000
"""Most audio one live ``process_raw`` call gets (1 s, 100 frames). PocketSphinx's live
feature pass takes at most 256 cepstra per call; when the ring of cepstra waiting for it
holds more (after the priming's whole-utterance pass it is sized to the priming audio)
and wraps, ``acmod_process_mfcbuf`` reads the second part from rows past the end of the
ring: SIGSEGV in ``cmn_live`` (or heap corruption when the garbage is mapped). A loaded
server gave a stream's first step 5 s of backlog, then 2.5 s; that crashed test_wyoming."""


class PocketSphinxEngine(Engine):
    """CMU PocketSphinx 5 with its bundled US-English acoustic and language models."""

    name = "pocketsphinx"
    extra = "pocketsphinx"

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        super().__init__(settings, model)
        self._decoder: Any = None  # in-process decoder (isolate off, and in the child)
        self._process: EngineProcess | None = None  # the child that decodes (isolate on)
        self._stream_process: EngineProcess | None = None  # the child of its live streams
        self._frame_rate = 100
        self._decoder_cls: Any = None
        self._decoder_kwargs: dict[str, Any] = {}
        self._spare_decoders: list[Any] = []  # of closed streams, reset, for the next one
        self._spare_lock = threading.Lock()  # streams close on the event loop's thread

    @classmethod
    def default_model(cls, settings: Settings) -> str:
        """``en-us`` (bundled) or the name of the configured model directory."""
        model_dir = settings.pocketsphinx.model_dir
        return model_dir.name if model_dir is not None else "en-us"

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        """Installed? (the bundled model comes with the package)."""
        model = cls.default_model(settings)
        if importlib.util.find_spec("pocketsphinx") is None:
            return Availability(False, False, install_hint("pocketsphinx"), model, (model,))
        model_dir = settings.pocketsphinx.model_dir
        if model_dir is not None and not (model_dir / "mdef").is_file():
            return Availability(
                True, False, "pocketsphinx.model_dir has no acoustic model (mdef)", model, (model,)
            )
        return Availability(True, True, "", model, (model,))

    @property
    def capabilities(self) -> Capabilities:
        """English only, word timings, native streaming, no translation, not thread-safe."""
        return Capabilities(
            languages=frozenset({"en"}),
            word_timestamps=True,
            translation=False,
            language_detection=False,
            streaming=True,
            thread_safe=False,
        )

    def load(self) -> None:
        """Create this instance's decoder (about 0.3 s), in a child process of its own
        when ``pocketsphinx.isolate`` is on."""
        if importlib.util.find_spec("pocketsphinx") is None:
            raise EngineUnavailable(
                "the pocketsphinx engine is not installed: " + install_hint("pocketsphinx")
            )
        from pocketsphinx import Decoder  # heavy: imported once, at load

        kwargs: dict[str, Any] = {"samprate": 16000, "loglevel": "FATAL"}
        model_dir: Path | None = self.settings.pocketsphinx.model_dir
        if model_dir is not None:
            kwargs["hmm"] = str(model_dir)
        if self.settings.pocketsphinx.isolate:
            process = EngineProcess(_in_process_engine, self.settings, self.model, name=self.name)
            process.start()
            self._process = process
            # Started by the first stream: a server that never streams pays nothing.
            self._stream_process = EngineProcess(
                _in_process_engine, self.settings, self.model, name=self.name
            )
        else:
            try:
                self._decoder = Decoder(**kwargs)
            except (RuntimeError, ValueError, OSError) as exc:
                raise EngineUnavailable("the PocketSphinx model failed to load") from exc
            self._frame_rate = int(self._decoder.config["frate"])
        self._decoder_cls = Decoder
        self._decoder_kwargs = kwargs

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        """A live utterance on a decoder of its own (a spare one, reset, or a new one).

        With ``isolate`` on, in this instance's stream child (one for all its streams,
        started by the first): a native crash there fails the streams it held, not the
        server."""
        if self._stream_process is not None:
            return self._stream_process.open_stream(options)
        if self._decoder_cls is None:
            raise EngineUnavailable("the PocketSphinx model is not loaded")
        with self._spare_lock:
            decoder = self._spare_decoders.pop() if self._spare_decoders else None
        if decoder is None:
            # About a second and 90 MB: a closed stream's decoder is kept for the next.
            decoder = self._new_stream_decoder()
        frame_rate = int(decoder.config["frate"])
        return PocketSphinxStream(decoder, frame_rate, self.model, self._return_decoder)

    def _new_stream_decoder(self) -> Any:
        """A decoder for live streams, whose search must keep pace with the audio: the
        second (flat-lexicon) pass off unless ``pocketsphinx.stream_fwdflat``, a narrower
        first pass (``stream_max_hmm_per_frame``), a keyphrase search for the priming."""
        section = self.settings.pocketsphinx
        kwargs = dict(self._decoder_kwargs)
        kwargs["fwdflat"] = section.stream_fwdflat
        kwargs["maxhmmpf"] = section.stream_max_hmm_per_frame
        decoder = self._decoder_cls(**kwargs)
        for word in _PRIME_WORDS:  # any word of the dictionary will do
            if decoder.lookup_word(word) is not None:
                decoder.add_keyphrase(_PRIME_SEARCH, word)
                break
        return decoder

    def _return_decoder(self, decoder: Any) -> None:
        # Reset now, so nothing one stream heard reaches the next (front end, cepstral
        # mean); kept only up to max_streams, the most that can be open at once.
        if decoder.current_search() != "_default":  # left on another search: not reused
            return
        decoder.reinit_feat()
        with self._spare_lock:
            if self._decoder_cls is not None and (
                len(self._spare_decoders) < self.settings.pocketsphinx.max_streams
            ):
                self._spare_decoders.append(decoder)

    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Decode the audio as one utterance, then split it at pauses into segments."""
        if self._process is not None:
            return self._process.transcribe(audio, options, on_segment=on_segment, cancel=cancel)
        if self._decoder is None:
            raise EngineUnavailable("the PocketSphinx model is not loaded")
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        words: list[Word] = []
        # Whole-utterance decoding (full_utt) normalises cepstra over the utterance, which is
        # much more accurate than live mode; long audio is cut into windows so cancel works.
        for start in range(0, max(len(pcm), 1), _WINDOW_SAMPLES):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("the request was cancelled")
            words += self._decode_window(pcm[start : start + _WINDOW_SAMPLES], start / 16_000)
        segments = segments_from_words(words, _PAUSE_S)
        if on_segment is not None:
            for seg in segments:
                on_segment(seg)
        return Transcript(
            text=" ".join(s.text for s in segments),
            segments=tuple(segments),
            duration=round(len(audio) / 16_000, 3),
            language="en",
            model=self.model,
            task="transcribe",
        )

    def _decode_window(self, pcm: np.ndarray[Any, Any], offset: float) -> list[Word]:
        decoder = self._decoder
        # The feature front end keeps state from the previous utterance (found by the
        # Wyoming test: the same audio twice on one decoder gave two transcripts). Reset it,
        # so an answer never depends on what this worker heard before (0.1 ms).
        decoder.reinit_feat()
        decoder.start_utt()
        try:
            decoder.process_raw(pcm.tobytes(), False, True)
        finally:
            decoder.end_utt()
        if decoder.hyp() is None:
            return []
        words = []
        for seg in decoder.seg():
            if _FILLER.match(seg.word):
                continue
            words.append(
                Word(
                    start=round(offset + seg.start_frame / self._frame_rate, 3),
                    end=round(offset + (seg.end_frame + 1) / self._frame_rate, 3),
                    word=_ALTERNATE.sub("", seg.word),
                    probability=round(float(seg.prob), 4),
                )
            )
        return words

    def close(self) -> None:
        """Drop the decoders and stop the child processes."""
        self._decoder = self._decoder_cls = None
        for process in (self._process, self._stream_process):
            if process is not None:
                process.close()
        self._process = self._stream_process = None
        with self._spare_lock:
            self._spare_decoders.clear()


def _in_process_engine(settings: Settings, model: str) -> Engine:
    """The engine as an isolating instance's child process runs it: in-process."""
    section = settings.pocketsphinx.model_copy(update={"isolate": False})
    return PocketSphinxEngine(settings.model_copy(update={"pocketsphinx": section}), model)


def _words(decoder: Any, frame_rate: int, offset: float) -> list[Word]:
    """The decoder's current hypothesis as timed words (leading space, as streams join
    them), fillers dropped."""
    segments = decoder.seg() if decoder.hyp() is not None else None
    return [
        Word(
            start=round(offset + seg.start_frame / frame_rate, 3),
            end=round(offset + (seg.end_frame + 1) / frame_rate, 3),
            word=" " + _ALTERNATE.sub("", seg.word),
            probability=round(float(seg.prob), 4),
        )
        for seg in segments or ()
        if not _FILLER.match(seg.word)
    ]


class _UtteranceAgreement(LocalAgreement):
    """LocalAgreement-2 over hypotheses that each cover the decoder's whole utterance.

    The words not yet committed are the hypothesis after the committed ones: found by
    position while the hypothesis still starts with them, by exact frame times when it
    revised them. (Whisper's overlap matching by words would drop a real repeat, "zero
    zero zero"; an HMM decoder does not loop, so the repetition guard is off too.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.guard = RepetitionGuard(max_n=1, max_repeats=1_000_000)
        self.utterance_start = 0  # index of the current decoder utterance's first committed word

    def uncommitted(self, hypothesis: list[Word]) -> list[Word]:
        """The words of a hypothesis after those already committed."""
        return self._fresh(hypothesis)

    def _fresh(self, hypothesis: list[Word]) -> list[Word]:
        mine = self.committed[self.utterance_start :]
        if len(mine) <= len(hypothesis) and all(
            normalise(a.word) == normalise(b.word) for a, b in zip(mine, hypothesis, strict=False)
        ):
            return hypothesis[len(mine) :]
        end = self.committed_end
        return [w for w in hypothesis if w.start >= end - 0.02]


class PocketSphinxStream(EngineStream):
    """One live utterance on a PocketSphinx decoder that belongs to this stream alone."""

    def __init__(
        self,
        decoder: Any,
        frame_rate: int,
        model_name: str,
        release: Callable[[Any], None],
        *,
        prime_s: float = PRIME_S,
    ) -> None:
        self._decoder = decoder
        self._release = release
        self.frame_rate = frame_rate
        self.model_name = model_name
        self.agreement = _UtteranceAgreement()
        self.prime_samples = int(prime_s * 16_000)
        self._prime: list[np.ndarray[Any, Any]] = []
        self.primed = False
        self.broken = False  # a call failed: the decoder's state is unknown, never reused
        self.cmn = ""
        self.in_utterance = False
        self.utterance_offset = 0.0  # stream time (s) where the decoder's utterance began
        self.total = 0  # samples accepted
        self.fed = 0  # samples given to the decoder in this utterance
        self.agreed_at = 0  # stream sample of the last hypothesis compared
        # The decoder is native code that frees and rewrites its own buffers: two threads
        # in it at once corrupt memory (a segfault, not an exception). LiveStream runs one
        # step at a time, and the lock makes that a property of the stream itself.
        self._lock = threading.Lock()
        decoder.reinit_feat()

    def _feed(self, pcm: np.ndarray[Any, Any]) -> None:
        if not len(pcm):  # process_raw raises on an empty buffer
            return
        if not self.in_utterance:
            self._decoder.start_utt()
            self.in_utterance = True
        for start in range(0, len(pcm), FEED_SAMPLES):  # see FEED_SAMPLES: never more
            self._decoder.process_raw(pcm[start : start + FEED_SAMPLES].tobytes(), False, False)
        self.fed += len(pcm)

    def _start(self) -> None:
        """Take the cepstral mean of the gathered audio (features only), then decode it."""
        pcm = np.concatenate(self._prime)
        self._prime = []
        decoder = self._decoder
        # The utterance's end searches the frames that the feature pass left: on the
        # language model that is a whole search of the priming audio (0.9 s of CPU for
        # 1.5 s), on a one-word keyphrase next to nothing (0.06 s). Same features, same mean.
        keyphrase = decoder.get_kws(_PRIME_SEARCH) is not None
        if keyphrase:
            decoder.activate_search(_PRIME_SEARCH)
        try:
            decoder.start_utt()
            try:
                decoder.process_raw(pcm.tobytes(), True, True)  # no search, whole: batch CMN
            finally:
                decoder.end_utt()  # (a search can only be switched between utterances)
        finally:
            if keyphrase:
                decoder.activate_search()  # back to the language model
        cmn = decoder.get_cmn(False)
        if "nan" in cmn:
            # Batch CMN skips frames of no energy: over digital silence it divides by
            # zero, and set_cmn reads "nan" as 0 (a stream that began with 2 s of zeros
            # heard "go forward ten meters" as "roared years see"). The model's is better.
            cmn = decoder.config["cmninit"]
        decoder.set_cmn(cmn)
        self.cmn = cmn  # the cepstral mean the stream decodes with
        self.primed = True
        self._feed(pcm)

    def _end_utterance(self) -> StreamUpdate:
        """End the decoder's utterance: its final hypothesis is committed whole."""
        self._decoder.end_utt()
        self.in_utterance = False
        update = self.agreement.flush(_words(self._decoder, self.frame_rate, self.utterance_offset))
        self.utterance_offset += self.fed / 16_000
        self.fed = 0
        self.agreement.utterance_start = len(self.agreement.committed)
        return update

    def accept(self, samples: AudioArray) -> StreamUpdate:
        """Decode the new audio; commit the words two consecutive partials agree on."""
        with self._lock:
            if self._decoder is None:
                raise Cancelled("the stream is closed")
            try:
                return self._accept(samples)
            except BaseException:
                self.broken = True
                raise

    def _accept(self, samples: AudioArray) -> StreamUpdate:
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
        self.total += len(pcm)
        if not self.primed:
            self._prime.append(pcm)
            if self.total < self.prime_samples:
                return StreamUpdate()
            self._start()
        else:
            self._feed(pcm)
        heard = self.utterance_offset + self.fed / 16_000
        words = _words(self._decoder, self.frame_rate, self.utterance_offset)
        pause = heard - (words[-1].end if words else self.utterance_offset)
        if (words and pause >= ENDPOINT_S) or (
            heard - self.utterance_offset > MAX_UTTERANCE_S and pause >= SETTLE_S
        ):
            return self._end_utterance()
        committed: tuple[Word, ...] = ()
        if self.total - self.agreed_at >= AGREE_S * 16_000:
            self.agreed_at = self.total
            settled = [w for w in words if w.end <= heard - SETTLE_S]
            committed = self.agreement.insert(settled).committed
        tentative = "".join(w.word for w in self.agreement.uncommitted(words)).strip()
        return StreamUpdate(committed, tentative)

    def finish(self) -> StreamUpdate:
        """No more audio: end the utterance and commit the rest of its final hypothesis."""
        with self._lock:
            if self._decoder is None:
                raise Cancelled("the stream is closed")
            try:
                return self._finish()
            except BaseException:
                self.broken = True
                raise

    def _finish(self) -> StreamUpdate:
        if not self.primed:
            if not self._prime:
                return StreamUpdate()
            # Shorter than the priming span: decoded whole (with the stream's search).
            pcm = np.concatenate(self._prime)
            self._prime = []
            self.primed = True
            decoder = self._decoder
            decoder.start_utt()
            decoder.process_raw(pcm.tobytes(), False, True)
            self.in_utterance = True
            self.fed = len(pcm)
        if not self.in_utterance:
            return StreamUpdate()
        return self._end_utterance()

    def transcript(self) -> Transcript:
        """Everything committed so far."""
        return self.agreement.transcript(self.total / 16_000, "en", self.model_name)

    def close(self) -> None:
        """Give the decoder back to the engine, reset (waits for a step under way); one
        whose call failed is dropped instead (it may be mid-utterance or on another
        search, and would fail every stream that got it next)."""
        with self._lock:
            decoder, self._decoder = self._decoder, None
            if decoder is None or self.broken:
                return
            if self.in_utterance:
                decoder.end_utt()
                self.in_utterance = False
            self._release(decoder)
