"""The web page in a real browser: Debian's Chromium, driven by Playwright, against a real
server on 127.0.0.1 with API keys on (so every test also goes through the key prompt);
and its routes over plain HTTP (these run without a browser too).

One server and one browser for the module. The microphone is Chromium's fake capture
device playing a corpus file (``--use-file-for-fake-audio-capture``). Screenshots of each
state go to ``$STTS_WEB_SCREENSHOTS`` when it is set (the README's are in docs/web/),
otherwise to pytest's temporary folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from stts.audio import RawFormat, decode_audio
from stts.config import Settings
from stts.service import EngineManager
from tests.conftest import LiveServer, corpus_file

CHROMIUM = Path(os.environ.get("STTS_CHROMIUM", "/usr/bin/chromium"))
pytestmark = pytest.mark.slow

JFK = "openai-whisper__jfk.flac"
GO_FORWARD = "pocketsphinx__goforward.raw"  # "go forward ten meters"
KEY = "web-page-test-key"
TENTATIVE = "stts.input_audio_transcription.tentative"
COMPLETED = "conversation.item.input_audio_transcription.completed"
WAIT_MS = 240_000  # a loaded 2-core machine: generous, never a speed claim


# Every change of the live transcript is looked at, so a tentative text shown only for a
# moment between two server events is still seen.
SEEN_TENTATIVE = """
new MutationObserver(() => {
  const live = document.getElementById("live");
  if (live && [...live.querySelectorAll(".tentative")].some((s) => s.textContent.trim())) {
    window.sawTentative = true;
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def words(text: str) -> str:
    """Lower case, letters and single spaces only."""
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower()).split())


@pytest.fixture(scope="module")
def live(settings: Settings, manager: EngineManager) -> Iterator[LiveServer]:
    conf = Settings(
        cache_dir=settings.cache_dir, engines=["whisper", "pocketsphinx"], api_keys=[KEY]
    )
    with LiveServer(conf, manager) as server:
        yield server


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("STTS_WEB_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("web-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PocketSphinx's own test sentence as the 16-bit WAV Chromium's fake microphone plays,
    with silence around it so the server's VAD ends the utterance on its own."""
    speech = decode_audio(corpus_file(GO_FORWARD).read_bytes(), raw=RawFormat()).samples
    silence = np.zeros(16000, dtype=speech.dtype)
    pcm = np.concatenate([silence[:8000], speech, silence, silence])
    path = tmp_path_factory.mktemp("mic") / "go-forward.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def browser(mic_wav: Path) -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: run tools/install-browser.sh")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                # %noloop: played once, then silence
                f"--use-file-for-fake-audio-capture={mic_wav}%noloop",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, live: LiveServer) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) that fails the test on any script error."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 900, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.add_init_script(SEEN_TENTATIVE)
    tab.goto(live.url + "/")
    yield tab
    context.close()
    assert not errors, errors


def enter_key(page: Any, key: str = KEY) -> None:
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")


def signed_in(page: Any) -> None:
    enter_key(page)
    page.wait_for_selector("#key-form[hidden]", state="attached")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")


def transcribe(page: Any, model: str) -> None:
    page.select_option("#model", model)
    page.click("#start")
    page.wait_for_function(
        "() => ['Done.', 'Cancelled.', '']"
        ".includes(document.getElementById('status').textContent)"
        " && !document.getElementById('progress').checkVisibility()"
    )


def srt_cues(text: str) -> list[tuple[float, float, str]]:
    """Parse SRT strictly: numbered from 1, well-formed times, start < end, in order."""
    stamp = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
    cue = re.compile(rf"^(\d+)\n{stamp} --> {stamp}\n(.+)$", re.S)
    cues = []
    for number, block in enumerate(text.strip("\n").split("\n\n"), start=1):
        match = cue.match(block)
        assert match, f"malformed SRT block {block!r}"
        g = match.groups()
        assert int(g[0]) == number
        start = int(g[1]) * 3600 + int(g[2]) * 60 + int(g[3]) + int(g[4]) / 1000
        end = int(g[5]) * 3600 + int(g[6]) * 60 + int(g[7]) + int(g[8]) / 1000
        assert start < end and (not cues or start >= cues[-1][1])
        cues.append((start, end, g[9].strip()))
    return cues


def test_upload_shows_the_transcript_downloads_srt_and_seeks(
    page: Any, live: LiveServer, shots: Path
) -> None:
    signed_in(page)
    page.set_input_files("#file", str(corpus_file(JFK)))
    transcribe(page, "whisper-1")
    assert page.text_content("#status") == "Done."
    shown = words(page.inner_text("#segments"))
    assert "ask not what your country can do for you" in shown
    page.screenshot(path=str(shots / "web-file.png"), full_page=True)

    with page.expect_download() as info:
        page.click("#downloads button[data-format=srt]")
    download = info.value
    assert download.suggested_filename == "openai-whisper__jfk.srt"
    srt = Path(download.path()).read_text(encoding="utf-8")
    cues = srt_cues(srt)
    assert "ask not what your country can do for you" in words(" ".join(c[2] for c in cues))
    # The server's own rendering: what the API answers for response_format=srt.
    direct = httpx.post(
        f"{live.url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {KEY}"},
        data={"model": "whisper-1", "response_format": "srt"},
        files={"file": ("jfk.flac", corpus_file(JFK).read_bytes())},
        timeout=WAIT_MS / 1000,
    )
    assert direct.status_code == 200 and srt == direct.text

    with page.expect_download() as info:
        page.click("#downloads button[data-format=json]")
    body = Path(info.value.path()).read_text(encoding="utf-8")
    assert '"segments"' in body and '"duration"' in body

    # Whisper base hears JFK as one segment; PocketSphinx cuts it at the pauses. The same
    # file again (the audio element keeps its object URL): click the second segment.
    transcribe(page, "pocketsphinx")
    assert page.text_content("#status") == "Done."
    buttons = page.locator("#segments button")
    assert buttons.count() >= 2
    second = float(buttons.nth(1).get_attribute("data-start"))
    assert second > 0
    buttons.nth(1).click()
    position = page.evaluate("document.getElementById('player').currentTime")
    assert position == pytest.approx(second, abs=0.05)
    assert page.evaluate("document.getElementById('player').src").startswith("blob:")

    # At phone width everything fits: nothing scrolls sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(shots / "web-phone.png"), full_page=True)


def test_a_text_file_shows_the_415_message(page: Any, tmp_path: Path, shots: Path) -> None:
    signed_in(page)
    notes = tmp_path / "notes.txt"
    notes.write_text("these are not the sounds you are looking for\n" * 20)
    page.set_input_files("#file", str(notes))
    transcribe(page, "whisper-1")
    message = page.inner_text("#error")
    assert page.is_visible("#error") and message.startswith("Error 415: ")
    page.screenshot(path=str(shots / "web-error-415.png"), full_page=True)


def test_key_prompt_then_a_wrong_key_shows_the_401_message(page: Any, shots: Path) -> None:
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.is_hidden("#error")  # no key yet: the prompt, not an error
    assert page.evaluate("document.activeElement.id") == "key-input"
    page.screenshot(path=str(shots / "web-key-prompt.png"), full_page=True)
    enter_key(page, "not-the-key")
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    assert message.startswith("Error 401: missing or invalid API key"), message
    assert page.is_visible("#key-form")
    page.screenshot(path=str(shots / "web-key-wrong.png"), full_page=True)


def test_microphone_shows_tentative_then_committed_words(page: Any, shots: Path) -> None:
    # PocketSphinx: it streams partial results every 0.3 s and knows this sentence well
    # (Whisper streams too, but decodes every 2 s: minutes on a loaded 2-core machine).
    events: list[dict[str, Any]] = []

    def watch(ws: Any) -> None:
        ws.on("framereceived", lambda frame: events.append(json.loads(frame)))

    page.on("websocket", watch)
    signed_in(page)
    page.wait_for_selector("#mic-section:not([hidden])")
    page.select_option("#model", "pocketsphinx")
    page.click("#record")
    # Grey (tentative) text first, seen at each change of the page...
    try:
        page.wait_for_function("() => window.sawTentative === true")
    except Exception:
        pytest.fail(
            f"no tentative text shown; events {[e['type'] for e in events]}, "
            f"status {page.inner_text('#mic-status')!r}, error {page.inner_text('#error')!r}"
        )
    page.screenshot(path=str(shots / "web-mic-live.png"), full_page=True)
    # ...then the utterance committed: the VAD ends it in the silence after the sentence.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#live .final')].some(s => s.textContent.trim())"
        " && [...document.querySelectorAll('#live .tentative')].every(s => !s.textContent)"
    )
    page.click("#stop")
    page.wait_for_function("() => document.getElementById('mic-status').textContent === 'Stopped.'")
    final = words(page.inner_text("#live"))
    assert "go forward ten meters" in final, final
    assert page.is_hidden("#error")
    page.screenshot(path=str(shots / "web-mic-final.png"), full_page=True)
    kinds = [e["type"] for e in events]
    first_tentative = next(
        i for i, e in enumerate(events) if e["type"] == TENTATIVE and e["text"].strip()
    )
    assert first_tentative < kinds.index(COMPLETED)
    session = next(e for e in events if e["type"] == "session.updated")["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def finished_transcriptions(live: LiveServer) -> float:
    """Transcriptions that ran to the end, on any engine (from /metrics)."""
    text = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("stts_transcriptions_total{")
    )


def whisper_in_flight(live: LiveServer) -> int:
    report = httpx.get(
        f"{live.url}/api/v1/engines", headers={"Authorization": f"Bearer {KEY}"}
    ).json()
    return int(report["details"]["whisper"]["in_flight"])


def test_cancel_closes_the_request_and_the_engine_stops(
    page: Any, live: LiveServer, tmp_path: Path
) -> None:
    # About 70 s of speech: Whisper is still at work when the first segment shows.
    audio = decode_audio(corpus_file(JFK).read_bytes()).samples
    once = np.concatenate([audio, np.zeros(16000, dtype=audio.dtype)])
    path = tmp_path / "jfk-six-times.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.clip(np.tile(once, 6), -1, 1) * 32767).astype("<i2").tobytes())
    signed_in(page)
    before = finished_transcriptions(live)
    page.set_input_files("#file", str(path))
    page.select_option("#model", "whisper-1")
    page.click("#start")
    page.wait_for_selector("#segments li")  # the stream has begun
    page.click("#cancel")
    page.wait_for_function("() => document.getElementById('status').textContent === 'Cancelled.'")
    assert page.is_hidden("#error")
    # The engine's place comes back when its job ends, and it ended without a transcript:
    # stopped because the request closed, not run to the end of the file.
    deadline = WAIT_MS / 1000
    waited = 0.0
    while whisper_in_flight(live) and waited < deadline:
        page.wait_for_timeout(250)
        waited += 0.25
    assert whisper_in_flight(live) == 0
    assert finished_transcriptions(live) == before


# -- the routes, without a browser --------------------------------------------------------


def test_page_and_assets_load_without_a_key_and_nothing_else_does(live: LiveServer) -> None:
    page = httpx.get(f"{live.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    total = len(page.content)
    for name in re.findall(r'(?:src|href)="/web/assets/([^"]+)"', page.text) + [
        "api.js",
        "mic.js",
        "mic-worklet.js",
    ]:
        asset = httpx.get(f"{live.url}/web/assets/{name}")
        assert asset.status_code == 200, name
        total += len(asset.content)
    assert total < 100_000  # the page and its assets, as the issue asks
    # Only the page's own files are open: not a neighbour, not an API route.
    assert httpx.get(f"{live.url}/web/assets/router.py").status_code == 404
    assert httpx.get(f"{live.url}/web/assets/..%2Frouter.py").status_code == 404
    assert httpx.get(f"{live.url}/v1/models").status_code == 401
    render = httpx.post(f"{live.url}/web/render", json={"format": "srt", "transcript": {}})
    assert render.status_code == 401


def test_render_is_the_apis_own_rendering_and_refuses_bad_input(live: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    audio = corpus_file("atrok-speechtext__export_1.wav").read_bytes()
    verbose = httpx.post(
        f"{live.url}/v1/audio/transcriptions",
        headers=auth,
        data={"model": "pocketsphinx", "response_format": "verbose_json"},
        files={"file": ("a.wav", audio)},
        timeout=WAIT_MS / 1000,
    ).json()
    for fmt in ("text", "srt", "vtt"):
        direct = httpx.post(
            f"{live.url}/v1/audio/transcriptions",
            headers=auth,
            data={"model": "pocketsphinx", "response_format": fmt},
            files={"file": ("a.wav", audio)},
            timeout=WAIT_MS / 1000,
        )
        rendered = httpx.post(
            f"{live.url}/web/render", headers=auth, json={"format": fmt, "transcript": verbose}
        )
        assert rendered.status_code == 200
        assert rendered.text == direct.text
        assert rendered.headers["content-type"] == direct.headers["content-type"]
    for body in (
        {"format": "docx", "transcript": verbose},
        {"format": "srt"},
        {"format": "srt", "transcript": {"text": "x", "segments": [{"start": -1, "end": 1}]}},
        {"format": "srt", "transcript": verbose, "extra": 1},
    ):
        bad = httpx.post(f"{live.url}/web/render", headers=auth, json=body)
        assert bad.status_code == 400, body
        assert bad.json()["error"]["type"] == "invalid_request_error"


def test_render_has_its_own_small_body_limit(live: LiveServer) -> None:
    # A transcript body well under the audio limit (100 MiB) but over /web/render's own
    # (8 MiB): refused from its Content-Length, before a byte of it is read, in words
    # about the transcript.
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(
            b"POST /web/render HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % (9 * 1024 * 1024)
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large"
    assert "transcript" in error["message"] and "audio" not in error["message"]
    # A transcript of several hours' size still renders.
    auth = {"Authorization": f"Bearer {KEY}"}
    long_text = "word " * 1_400_000  # 7 MB
    ok = httpx.post(
        f"{live.url}/web/render",
        headers=auth,
        json={"format": "text", "transcript": {"text": long_text}},
        timeout=120,
    )
    assert ok.status_code == 200, ok.text[:300]
    assert ok.text == long_text + "\n"


def test_render_bounds_segments_and_their_text(live: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}

    def transcript(count: int, chars: int) -> dict[str, Any]:
        segment = {"start": 0, "end": 1, "text": "a" * chars}
        return {"format": "srt", "transcript": {"text": "a", "segments": [segment] * count}}

    for body, field in (
        (transcript(50_001, 1), "transcript.segments"),
        (transcript(1, 20_001), "transcript.segments.0.text"),
    ):
        bad = httpx.post(f"{live.url}/web/render", headers=auth, json=body, timeout=120)
        assert bad.status_code == 400, bad.text[:300]
        assert bad.json()["error"]["message"].startswith(f"invalid request: {field}:")
    # At the bounds, it renders: every segment a cue.
    srt = httpx.post(
        f"{live.url}/web/render", headers=auth, json=transcript(50_000, 1), timeout=120
    )
    assert srt.status_code == 200, srt.text[:300]
    assert srt.text.count(" --> ") == 50_000
    # Text in a segment cannot forge cues of its own (the API's own renderer).
    forged = {"start": 0, "end": 1, "text": "x\n\n00:00:05.000 --> 00:00:06.000\ninjected"}
    vtt = httpx.post(
        f"{live.url}/web/render",
        headers=auth,
        json={"format": "vtt", "transcript": {"text": "x", "segments": [forged]}},
    )
    assert (
        vtt.text
        == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nx\n00:00:05.000 -&gt; 00:00:06.000\ninjected\n"
    )


def test_web_ui_off_serves_no_page(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from stts.server import build_app

    conf = Settings(cache_dir=settings.cache_dir, preload=False, web_ui=False)
    with TestClient(build_app(conf)) as client:
        assert client.get("/").status_code == 404
        assert client.get("/web/assets/app.js").status_code == 404
        assert client.post("/web/render", json={}).status_code == 404
