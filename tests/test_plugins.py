"""Third-party engines through the ``stts.engines`` entry point group, with a real plug-in:
a tiny distribution built and installed by pip (from a local path, no network) into a
folder that only the ``stts`` processes started here have on their path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stts.audio import decode_audio
from tests.conftest import corpus_file, requires_corpus

pytestmark = requires_corpus

PLUGIN_MODULE = '''
"""A toy stts engine: says how many 16 kHz samples it was given, and the word its
plugins.toy section in the configuration asks for."""

from stts.engines.base import Availability, Capabilities, Engine
from stts.transcript import Segment, Transcript


class ToyEngine(Engine):
    name = "toy"

    @classmethod
    def probe(cls, settings):
        return Availability(True, True, "", "toy-model", ("toy-model",))

    @classmethod
    def default_model(cls, settings):
        return "toy-model"

    @property
    def capabilities(self):
        return Capabilities(languages=frozenset({"en"}), thread_safe=True)

    def load(self):
        pass

    def transcribe(self, audio, options, *, on_segment=None, cancel=None):
        word = getattr(self.settings.engine_settings(self.name), "word", "none")
        text = f"{word} {len(audio)} samples"
        duration = len(audio) / 16000
        segment = Segment(id=0, start=0.0, end=duration, text=text)
        return Transcript(text=text, segments=(segment,), duration=duration, language="en")
'''

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "stts-toy-plugin"
version = "0.1"

[project.entry-points."stts.engines"]
toy = "stts_toy_plugin:ToyEngine"

[tool.setuptools]
py-modules = ["stts_toy_plugin"]
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy plug-in, built from source and installed with pip into its own folder."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"
    source.mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "stts_toy_plugin.py").write_text(PLUGIN_MODULE)
    site = root / "site"
    env = {**os.environ, "TMPDIR": str(root), "PIP_NO_INPUT": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--disable-pip-version-check", "--target", str(site), str(source)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert (site / "stts_toy_plugin-0.1.dist-info" / "entry_points.txt").is_file()
    return site


def _stts(
    args: list[str], cache: Path, site: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STTS_")}
    environ.pop("PYTHONPATH", None)
    environ.update({"STTS_CACHE_DIR": str(cache), **env})
    if site is not None:
        environ["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-m", "stts.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_installed_plugin_is_listed_and_transcribes(plugin_site: Path, tmp_path: Path) -> None:
    enabled = {"STTS_ENGINES": "toy,pocketsphinx", "STTS_DEFAULT_ENGINE": "toy"}
    listed = _stts(["engines", "--json"], tmp_path, plugin_site, **enabled)
    assert listed.returncode == 0, listed.stderr
    reports = {r["name"]: r for r in json.loads(listed.stdout)}
    toy = reports["toy"]
    assert toy["installed"] and toy["enabled"] and toy["default"] and toy["model"] == "toy-model"
    assert toy["capabilities"]["languages"] == ["en"]

    # The plug-in gets the edge's 16 kHz mono audio (44.1 kHz stereo in) and its
    # plugins.<name> section from a TOML config.
    path = corpus_file("deepspeech__LDC93S1_pcms16le_2_44100.wav")
    config = tmp_path / "stts.toml"
    config.write_text('[plugins.toy]\nword = "heard"\n')
    run = _stts(
        ["transcribe", "--engine", "toy", "-f", "json", "--config", str(config), str(path)],
        tmp_path,
        plugin_site,
        **enabled,
    )
    assert run.returncode == 0, run.stderr
    samples = len(decode_audio(path).samples)
    assert abs(samples - 16000 * 2.925) < 16  # 16 kHz, not 44.1 kHz or two channels
    assert json.loads(run.stdout)["text"] == f"heard {samples} samples"


def test_without_the_plugin_on_the_path_there_is_no_such_engine(tmp_path: Path) -> None:
    listed = _stts(["engines", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "toy" not in {r["name"] for r in json.loads(listed.stdout)}
    run = _stts(["transcribe", "--engine", "toy", "--sample"], tmp_path)
    assert run.returncode == 2
    assert "unknown engine 'toy'" in run.stderr and "Traceback" not in run.stderr
