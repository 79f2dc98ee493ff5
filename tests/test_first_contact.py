"""What a newcomer meets in the first ten minutes (issue 18).

The README's main command on a checkout with no ``../shared`` beside it, the package as
published (name, bundled sample), the CLI's answers and exit codes, NumPy arrays in the
library, start-up logs, and the HTTP details a first curl shows. Real parts throughout:
the console script as a subprocess, real models, a real server on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from stts import transcribe
from stts.audio import decode_audio
from stts.config import Settings
from stts.errors import UnsupportedAudio
from stts.evaluation import normalize_text
from stts.formats import render
from stts.install import DISTRIBUTION, install_hint
from stts.logs import JsonFormatter, logging_config
from stts.samples import JFK_TEXT, sample_path
from stts.service import EngineManager
from stts.transcript import Segment, Transcript, Word, fit_times
from tests.cli_support import run_stts as run_cli
from tests.conftest import LiveServer, corpus_file, requires_corpus

ROOT = Path(__file__).resolve().parent.parent
JFK_WORDS = "ask not what your country can do for you"
# A loaded CI machine is slow, not broken; a newcomer has no Vosk model configured.
NEWCOMER_ENV = {"STTS_TIMEOUT_BASE_S": "900", "STTS_VOSK__MODEL_PATH": None}


def run_stts(*args: str, cache_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script as a newcomer runs it, from ``cwd``."""
    return run_cli(*args, cache_dir=cache_dir, cwd=cwd, env=NEWCOMER_ENV)


def _readme_block(after: str) -> str:
    """The first ```sh block after the line containing ``after``."""
    text = (ROOT / "README.md").read_text()
    rest = text[text.index(after) :]
    match = re.search(r"```sh\n(.*?)```", rest, re.S)
    assert match, f"no sh block after {after!r}"
    return match.group(1).strip()


# -- install and first run ----------------------------------------------------------


def test_the_readme_main_command_uses_the_bundled_sample() -> None:
    command = _readme_block("Run the main job")
    assert "../shared" not in command
    assert command.endswith("stts transcribe --sample")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = _readme_block("Run the whole test suite")
    assert command in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_main_command_on_a_checkout_with_nothing_beside_it(cache_dir: Path, tmp_path: Path) -> None:
    proc = run_stts("transcribe", "--sample", cache_dir=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert normalize_text(proc.stdout) == normalize_text(JFK_TEXT)


def test_the_sample_is_small_public_domain_package_data(tmp_path: Path) -> None:
    path = sample_path()
    assert path.is_file() and path.stat().st_size < 300_000
    assert decode_audio(path).duration == pytest.approx(11.0, abs=0.01)
    # What a published install gets: build the wheel as PyPI would receive it.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("stts_server-")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"stts/samples/jfk.flac", "stts/samples/README.md"} <= names
        assert "public domain" in zf.read("stts/samples/README.md").decode().lower()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        assert f"Name: {DISTRIBUTION}" in zf.read(metadata).decode()


def test_install_hints_name_the_published_package_and_the_checkout() -> None:
    hint = install_hint("vosk")
    assert "pip install 'stts-server[vosk]'" in hint and "pip install -e '.[vosk]'" in hint
    # no message anywhere in the package points at PyPI's unrelated "stts"
    for path in (ROOT / "stts").rglob("*.py"):
        assert "'stts[" not in path.read_text(), path


# -- CLI ------------------------------------------------------------------------------


def test_version(cache_dir: Path, tmp_path: Path) -> None:
    proc = run_stts("--version", cache_dir=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "stts 0.1.0"


def test_an_engine_that_cannot_run_is_one_line_and_exit_2(cache_dir: Path, tmp_path: Path) -> None:
    proc = run_stts("transcribe", "--sample", "--engine", "vosk", cache_dir=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: engine 'vosk' cannot run here: set STTS_VOSK__MODEL_PATH to a Vosk model directory"
    ]


def test_translation_by_an_engine_that_cannot_translate_is_refused(
    cache_dir: Path, tmp_path: Path
) -> None:
    proc = run_stts(
        "transcribe",
        "--sample",
        "--engine",
        "pocketsphinx",
        "--task",
        "translate",
        cache_dir=cache_dir,
        cwd=tmp_path,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.splitlines() == [
        "error: engine 'pocketsphinx' cannot translate; use a multilingual Whisper model"
    ]


def test_help_and_usage_errors_read_plainly(cache_dir: Path, tmp_path: Path) -> None:
    help_text = run_stts("transcribe", "--help", cache_dir=cache_dir, cwd=tmp_path).stdout
    assert "<bool>" not in help_text and "[FILE]..." in help_text and "{" not in help_text
    assert "<bool>" not in run_stts("--help", cache_dir=cache_dir, cwd=tmp_path).stdout
    bad = run_stts("transcribe", "--sample", "--format", "xml", cache_dir=cache_dir, cwd=tmp_path)
    assert bad.returncode == 2
    said = " ".join(re.sub("[│╭╮╰╯─]", " ", bad.stderr).split())  # typer's box, unwrapped
    assert "Value error" not in said
    assert "'xml' is not one of: json, text, srt, verbose_json, vtt" in said
    nothing = run_stts("transcribe", cache_dir=cache_dir, cwd=tmp_path)
    assert nothing.returncode == 2 and "--sample" in nothing.stderr


def test_a_missing_file_is_named_once(cache_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    proc = run_stts(
        "transcribe", str(missing), "--engine", "pocketsphinx", cache_dir=cache_dir, cwd=tmp_path
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"error: {missing}: no such file"]


@pytest.mark.slow
def test_detect_language_json_is_json_lines(cache_dir: Path, tmp_path: Path) -> None:
    sample = str(sample_path())
    proc = run_stts("detect-language", "--json", sample, sample, cache_dir=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        entry = json.loads(line)
        assert entry["file"] == sample and entry["language"] == "en"


# -- library ------------------------------------------------------------------------


@pytest.mark.slow
@requires_corpus
def test_the_library_takes_numpy_arrays(manager: EngineManager) -> None:
    samples = decode_audio(corpus_file("openai-whisper__jfk.flac")).samples
    assert JFK_WORDS in normalize_text(transcribe(samples, manager=manager).text)
    # int16 at 8 kHz, stereo (frames, channels): resampled and mixed at the edge
    pcm8k = (decode_audio(sample_path()).samples[::2] * 32767).astype(np.int16)
    stereo = np.stack([pcm8k, pcm8k], axis=1)
    result = transcribe(stereo, sample_rate=8000, language="en", manager=manager)
    assert JFK_WORDS in normalize_text(result.text)
    assert result.duration == pytest.approx(11.0, abs=0.01)


def test_arrays_of_the_wrong_shape_or_type_are_refused_clearly() -> None:
    with pytest.raises(UnsupportedAudio, match=r"\(frames, channels\)"):
        decode_audio(np.zeros((2, 16_000), np.float32))  # librosa's (channels, frames)
    with pytest.raises(UnsupportedAudio, match="complex64"):
        decode_audio(np.zeros(16_000, np.complex64))


# -- output details -------------------------------------------------------------------


def test_times_are_fitted_to_the_audio() -> None:
    words = (Word(0.5, 0.9, " ask"), Word(1.0, 1.95, " not"))
    seg = Segment(id=0, start=0.0, end=2.0, text="ask not", words=words)
    late = Segment(id=1, start=1.9, end=2.5, text="x")
    fitted = fit_times(Transcript(text="", segments=(seg, late), duration=1.959))
    assert [(s.start, s.end) for s in fitted.segments] == [(0.0, 1.95), (1.9, 1.959)]
    srt = render(fitted, "srt")
    assert "00:00:02,000" not in srt and "00:00:01,959" in srt
    untouched = Transcript(text="", segments=(replace_end(seg, 1.95),), duration=2.0)
    assert fit_times(untouched) is untouched


def replace_end(seg: Segment, end: float) -> Segment:
    from dataclasses import replace

    return replace(seg, end=end)


@pytest.mark.slow
@requires_corpus
def test_segment_ends_come_from_word_times(manager: EngineManager) -> None:
    result = transcribe(
        corpus_file("openai-whisper__jfk.flac"), word_timestamps=True, manager=manager
    )
    last = result.segments[-1]
    assert last.end == last.words[-1].end < result.duration  # 10.36 s, not 11.0
    for seg in result.segments:
        assert 0.0 <= seg.start <= seg.end <= result.duration


# -- logs -------------------------------------------------------------------------------


def test_logs_are_plain_on_a_terminal_and_json_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert "()" not in logging_config("info")["formatters"]["default"]
    assert logging_config("info", json_logs=True)["formatters"]["default"]["()"] is JsonFormatter
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert logging_config("info")["formatters"]["default"]["()"] is JsonFormatter
    assert "()" not in logging_config("info", json_logs=False)["formatters"]["default"]
    # uvicorn's records carry an ANSI-coloured copy of the message: never in JSON
    record = logging.makeLogRecord(
        {"msg": "Started server process [%d]", "args": (7,), "levelno": 20, "levelname": "INFO"}
    )
    record.color_message = "Started server process [\x1b[36m%d\x1b[0m]"
    line = JsonFormatter().format(record)
    assert "\\u001b" not in line and json.loads(line)["msg"] == "Started server process [7]"


# -- the server as a first curl sees it -------------------------------------------------


@pytest.fixture(scope="module")
def plain_server(cache_dir: Path) -> Iterator[LiveServer]:
    """pocketsphinx answering, vosk enabled with no model (as after a `.[whisper]` install
    an engine is enabled that can't run)."""
    settings = Settings(
        cache_dir=cache_dir,
        engines=["pocketsphinx", "vosk"],
        default_engine="pocketsphinx",
        timeout_base_s=900,  # a loaded CI machine is slow, not broken
    )
    with LiveServer(settings) as live:
        yield live


def test_start_up_names_each_engine_that_cannot_run(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        cache_dir=cache_dir, engines=["pocketsphinx", "vosk"], default_engine="pocketsphinx"
    )
    with caplog.at_level(logging.WARNING, logger="stts"), LiveServer(settings):
        pass
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("stts")]
    assert [line for line in lines if "cannot run" in line] == [
        "engine vosk is enabled but cannot run: set STTS_VOSK__MODEL_PATH to a Vosk model "
        "directory (requests for it get 503)"
    ]


def test_an_engine_on_by_default_but_not_installed_is_not_a_warning(
    cache_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base install has Whisper only; PocketSphinx, on in the default engine list, is
    said at info level. Asked for by name (or as the default engine), it is a warning.
    FAULT INJECTION: the probe reports PocketSphinx's extra as missing."""
    from stts.engines.base import Availability
    from stts.service import EngineManager

    real = EngineManager.probe

    def probe(self: EngineManager, name: str) -> Availability:
        if name == "pocketsphinx":
            return Availability(False, False, "pip install 'stts-server[pocketsphinx]'", "", ())
        return real(self, name)

    monkeypatch.setattr(EngineManager, "probe", probe)
    for settings, level in (
        (Settings(cache_dir=cache_dir), logging.INFO),
        (Settings(cache_dir=cache_dir, engines=["whisper", "pocketsphinx"]), logging.WARNING),
    ):
        caplog.clear()
        manager = EngineManager(settings)
        try:
            with caplog.at_level(logging.INFO, logger="stts"):
                assert manager.warn_unavailable() == ["pocketsphinx"]
        finally:
            manager.close()
        [record] = [r for r in caplog.records if "cannot run" in r.getMessage()]
        assert record.levelno == level, record.getMessage()


@requires_corpus
def test_enabled_but_unusable_is_503_unknown_is_404(plain_server: LiveServer) -> None:
    audio = sample_path().read_bytes()
    with httpx.Client(base_url=plain_server.url, timeout=120) as client:
        unusable = client.post("/api/v1/stt?engine=vosk", files={"speech": ("a.flac", audio)})
        unknown = client.post("/api/v1/stt?engine=nope", files={"speech": ("a.flac", audio)})
    assert unusable.status_code == 503
    assert unusable.json()["error"]["code"] == "engine_unavailable"
    assert unknown.status_code == 404


def test_legacy_answers_name_the_model(plain_server: LiveServer) -> None:
    audio = sample_path().read_bytes()
    with httpx.Client(base_url=plain_server.url, timeout=120) as client:
        response = client.post("/api/v1/stt", files={"speech": ("jfk.flac", audio)})
    assert response.status_code == 200, response.text
    assert response.headers["X-STT-Engine"] == "pocketsphinx"
    assert response.headers["X-STT-Model"] == response.json()["model"] != ""


def test_metrics_name_the_docs_routes(plain_server: LiveServer) -> None:
    with httpx.Client(base_url=plain_server.url, timeout=60) as client:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert client.get(path).status_code == 200
        assert client.get("/no-such-page").status_code == 404
        metrics = client.get("/metrics").text
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert f'method="GET",route="{path}",status="200"' in metrics
    assert 'route="unmatched",status="404"' in metrics  # a real 404 still is
    assert 'route="unmatched",status="200"' not in metrics
