"""The `stts` console script, run as a real subprocess."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stts.evaluation import normalize_text
from tests.cli_support import run_stts
from tests.conftest import corpus_file, requires_corpus

pytestmark = [pytest.mark.slow, requires_corpus]


def test_transcribe_prints_the_text(cache_dir: Path) -> None:
    proc = run_stts("transcribe", str(corpus_file("openai-whisper__jfk.flac")), cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "ask not what your country can do for you" in normalize_text(proc.stdout)


def test_transcribe_many_files_to_srt_files(cache_dir: Path, tmp_path: Path) -> None:
    inputs = [
        corpus_file("coqui-tts__LJ001-0002.mp3"),
        corpus_file("coqui-tts__LJ001-0003.flac"),
        corpus_file("coqui-stt__LDC93S1.opus"),
    ]
    out = tmp_path / "out"
    proc = run_stts(
        "transcribe",
        *map(str, inputs),
        "--format",
        "srt",
        "-o",
        str(out),
        "--language",
        "en",
        cache_dir=cache_dir,
    )
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(p.stem + ".srt" for p in inputs)
    srt = (out / "coqui-stt__LDC93S1.srt").read_text()
    assert re.match(r"1\n\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}\n", srt)
    assert "dark suit" in normalize_text(srt)


def test_bad_files_get_one_line_errors_and_the_rest_is_processed(
    cache_dir: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 10)
    good = corpus_file("pocketsphinx__001.wav")
    proc = run_stts(
        "transcribe",
        str(empty),
        str(good),
        str(text),
        str(tmp_path / "missing.flac"),
        "--engine",
        "pocketsphinx",
        cache_dir=cache_dir,
    )
    assert proc.returncode == 1
    assert normalize_text(proc.stdout) == "ten of clubs"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert any("empty" in e for e in errors) and any("no such file" in e for e in errors)


def test_unknown_engine_is_a_clean_usage_error(cache_dir: Path) -> None:
    proc = run_stts(
        "transcribe",
        "--engine",
        "nope",
        str(corpus_file("pocketsphinx__001.wav")),
        cache_dir=cache_dir,
    )
    assert proc.returncode == 2
    assert "unknown engine 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_verbose_json_with_words(cache_dir: Path) -> None:
    proc = run_stts(
        "transcribe",
        str(corpus_file("pocketsphinx__goforward.raw")),
        "--engine",
        "pocketsphinx",
        "--format",
        "verbose_json",
        "--word-timestamps",
        cache_dir=cache_dir,
    )
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert [w["word"] for w in body["words"]] == ["go", "forward", "ten", "meters"]
    assert body["duration"] == pytest.approx(2.786, abs=0.01)


def test_engines_table_and_json(cache_dir: Path) -> None:
    proc = run_stts("engines", cache_dir=cache_dir)
    assert proc.returncode == 0, proc.stderr
    for name in ("whisper", "pocketsphinx", "vosk", "wav2vec2"):
        assert name in proc.stdout
    proc = run_stts("engines", "--json", cache_dir=cache_dir)
    reports = {r["name"]: r for r in json.loads(proc.stdout)}
    assert reports["whisper"]["available"] and not reports["whisper"]["loaded"]
    # no model directory configured: each says what is missing, and how to fix it
    for name in ("vosk", "wav2vec2"):
        assert not reports[name]["available"]
        assert reports[name]["reason"] in (
            f"pip install 'stts-server[{name}]' (source checkout: pip install -e '.[{name}]')",
            f"set STTS_{name.upper()}__MODEL_PATH to a "
            + ("Vosk model directory" if name == "vosk" else "CTC model directory"),
        )


def test_library_one_liner(manager) -> None:  # type: ignore[no-untyped-def]
    from stts import transcribe

    result = transcribe(corpus_file("openai-whisper__jfk.flac"), manager=manager)
    assert "ask not what your country can do for you" in normalize_text(result.text)
    assert result.engine == "whisper"
