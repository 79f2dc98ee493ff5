"""Settings precedence: overrides > environment > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from stts.config import Settings
from stts.errors import InvalidRequest


def test_defaults() -> None:
    s = Settings()
    assert s.default_engine == "whisper" and s.whisper.model == "base"
    assert s.engine_settings("whisper").workers == 1
    assert s.engine_settings("some-plugin").queue_size == 8


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "stts.toml"
    toml.write_text(
        'default_engine = "pocketsphinx"\nport = 9000\nfallback = ["pocketsphinx"]\n'
        '[whisper]\nbeam_size = 2\nqueue_size = 3\n[plugins.my-engine]\nworkers = 4\ncolour = "blue"\n'
    )
    s = Settings.load(toml)
    assert s.default_engine == "pocketsphinx" and s.port == 9000 and s.whisper.beam_size == 2
    assert s.engine_settings("my-engine").workers == 4
    monkeypatch.setenv("STTS_PORT", "9100")
    monkeypatch.setenv("STTS_WHISPER__BEAM_SIZE", "3")
    monkeypatch.setenv("STTS_ENGINES", "whisper, pocketsphinx")
    s = Settings.load(toml)
    assert s.port == 9100 and s.whisper.beam_size == 3 and s.whisper.queue_size == 3
    assert s.engines == ["whisper", "pocketsphinx"]
    s = Settings.load(toml, port=9200, host=None)
    assert s.port == 9200 and s.host == "127.0.0.1"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="config file not found"):
        Settings.load(tmp_path / "nope.toml")
