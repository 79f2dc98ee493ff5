"""EngineManager with FAULT-INJECTION engines (tests/fault_engines.py): fallback, admission,
timeouts, cancellation, remembered load failures. Real engines where the behaviour needs one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stts.config import Settings
from stts.engines.base import CancelToken, TranscribeOptions
from stts.engines.registry import register_engine, unregister_engine
from stts.errors import (
    Cancelled,
    EngineUnavailable,
    Overloaded,
    TranscriptionFailed,
    TranscriptionTimeout,
    UnknownEngine,
    UnknownModel,
)
from stts.metrics import Metrics
from stts.service import EngineManager
from tests.fault_engines import (
    TONE_SECOND,
    AlwaysFailsEngine,
    LoadFailsEngine,
    SlowEngine,
    SlowLoadEngine,
)

ONE_SECOND = TONE_SECOND


@pytest.fixture(autouse=True)
def fault_engines() -> Iterator[None]:
    for cls in (AlwaysFailsEngine, LoadFailsEngine, SlowEngine, SlowLoadEngine):
        register_engine(cls.name, cls)
    SlowEngine.delay, SlowEngine.active, SlowEngine.peak = 1.0, 0, 0
    SlowEngine.finished = SlowEngine.cancelled = 0
    yield
    for cls in (AlwaysFailsEngine, LoadFailsEngine, SlowEngine, SlowLoadEngine):
        unregister_engine(cls.name)


def _manager(tmp_path, **kw) -> EngineManager:  # type: ignore[no-untyped-def]
    base = {
        "cache_dir": tmp_path,
        "engines": ["fault-slow", "fault-fails", "fault-load-fails"],
        "default_engine": "fault-slow",
    }
    base.update(kw)
    settings = Settings(**base)
    return EngineManager(settings)


def test_unknown_engine_and_model_are_refused_without_loading(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mgr = _manager(tmp_path)
    with pytest.raises(UnknownEngine):
        mgr.resolve("no-such-engine")
    with pytest.raises(UnknownEngine, match="not enabled"):
        mgr.resolve("whisper")
    with pytest.raises(UnknownModel):
        mgr.resolve("fault-slow", "/etc/passwd")
    assert mgr.loaded_slots() == []


def test_accepted_choices_skip_model_discovery_rejected_ones_do_not(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """resolve() runs on every request; model discovery (package lookups) runs once per
    accepted choice, while a refused choice is checked (and refused) every time."""
    mgr = _manager(tmp_path)
    calls = []
    real = SlowEngine.known_models.__func__  # type: ignore[attr-defined]

    def counting(cls, settings):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(cls, settings)

    monkeypatch.setattr(SlowEngine, "known_models", classmethod(counting))
    keys = {mgr.resolve(None) for _ in range(50)} | {mgr.resolve("fault-slow") for _ in range(50)}
    assert keys == {("fault-slow", SlowEngine.default_model(mgr.settings))}
    assert len(calls) == 2  # once for "no engine named", once for "fault-slow"
    for _ in range(3):
        with pytest.raises(UnknownModel):
            mgr.resolve("fault-slow", "/etc/passwd")
    assert len(calls) == 5


def test_fallback_answers_and_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    SlowEngine.delay = 0.0
    mgr = _manager(tmp_path, fallback=["fault-slow"])
    result = mgr.transcribe(ONE_SECOND, engine="fault-fails")
    assert result.text == "slow result"
    assert result.engine == "fault-slow" and result.fallback
    assert result.attempts == ("fault-fails", "fault-slow")
    mgr.close()


def test_without_fallback_the_engine_error_is_raised(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mgr = _manager(tmp_path)
    with pytest.raises(TranscriptionFailed, match="fault-fails"):
        mgr.transcribe(ONE_SECOND, engine="fault-fails")
    mgr.close()


def test_failed_load_is_remembered_not_retried(tmp_path) -> None:  # type: ignore[no-untyped-def]
    LoadFailsEngine.loads = 0
    mgr = _manager(tmp_path)
    for _ in range(3):
        with pytest.raises(EngineUnavailable):
            mgr.transcribe(ONE_SECOND, engine="fault-load-fails")
    assert LoadFailsEngine.loads == 1
    assert mgr.slot(("fault-load-fails", "fake")).state == "failed"
    mgr.close()


def test_load_failure_falls_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    SlowEngine.delay = 0.0
    mgr = _manager(tmp_path, fallback=["fault-slow"])
    result = mgr.transcribe(ONE_SECOND, engine="fault-load-fails")
    assert result.engine == "fault-slow" and result.fallback
    mgr.close()


def test_queue_full_is_refused_at_once_and_nothing_is_lost(tmp_path) -> None:  # type: ignore[no-untyped-def]
    SlowEngine.delay = 2.0
    # workers=2 + queue=2 -> capacity 4
    mgr = _manager(tmp_path, plugins={"fault-slow": {"workers": 2, "queue_size": 2}})
    slot = mgr.slot(("fault-slow", "fake"))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        admitted = [pool.submit(mgr.transcribe, ONE_SECOND) for _ in range(4)]
        deadline = time.monotonic() + 30
        while slot.in_flight < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slot.in_flight == 4
        for _ in range(6):
            with pytest.raises(Overloaded) as refused:
                mgr.transcribe(ONE_SECOND)
            assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        # Refused without waiting for a place: none of the admitted ones has finished.
        assert SlowEngine.finished == 0
        assert [f.result(30).text for f in admitted] == ["slow result"] * 4
    assert SlowEngine.peak == 2
    assert slot.in_flight == 0 and slot.rejected == 6
    mgr.close()


def test_timeout_returns_504_and_the_worker_is_accounted_for(tmp_path) -> None:  # type: ignore[no-untyped-def]
    SlowEngine.delay = 5.0
    mgr = _manager(
        tmp_path,
        timeout_base_s=0.2,
        timeout_per_audio_s=0.0,
        plugins={"fault-slow": {"workers": 1, "queue_size": 0}},
    )
    with pytest.raises(TranscriptionTimeout):
        mgr.transcribe(ONE_SECOND)
    slot = mgr.slot(("fault-slow", "fake"))
    # The engine was told to stop; its capacity comes back once the thread really ends.
    deadline = time.monotonic() + 2
    while slot.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slot.in_flight == 0
    assert SlowEngine.cancelled == 1 and SlowEngine.finished == 0
    mgr.close()


def test_the_deadline_counts_the_engines_work_not_the_model_load_or_the_queue(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A 1 s budget: a first request that waits 2 s for the model to load, and requests
    queued behind others for 2-3 s, all finish, because each one's own work is short
    (issue 17: a short request behind a lazy load or a queue used to get a 504)."""
    SlowEngine.delay, SlowLoadEngine.load_delay = 0.5, 2.0
    mgr = _manager(
        tmp_path,
        engines=["fault-slow-load"],
        default_engine="fault-slow-load",
        preload=False,
        timeout_base_s=1.0,
        timeout_per_audio_s=0.0,
        plugins={"fault-slow-load": {"workers": 1, "queue_size": 8}},
    )

    async def five_at_once() -> list[str]:
        jobs = [mgr.transcribe_async(ONE_SECOND) for _ in range(5)]
        return [t.text for t in await asyncio.gather(*jobs)]

    assert asyncio.run(five_at_once()) == ["slow result"] * 5
    assert mgr.transcribe(ONE_SECOND).text == "slow result"  # the blocking path too
    mgr.close()


def test_a_request_that_waits_too_long_for_a_worker_is_refused_and_never_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    SlowEngine.delay = 3.0
    mgr = _manager(
        tmp_path,
        queue_timeout_s=0.5,
        plugins={"fault-slow": {"workers": 1, "queue_size": 4}},
    )

    async def two() -> list[Any]:
        first = asyncio.ensure_future(mgr.transcribe_async(ONE_SECOND))
        slot = mgr.slot(("fault-slow", "fake"))
        while SlowEngine.active < 1:  # the first one holds the only worker
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(mgr.transcribe_async(ONE_SECOND))
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert slot.in_flight == 0
        return results

    first, second = asyncio.run(two())
    assert first.text == "slow result"
    assert isinstance(second, Overloaded) and "queue_timeout_s" in second.message
    assert SlowEngine.finished == 1  # the refused one never ran
    mgr.close()


def test_cancelled_async_request_stops_the_engine_and_frees_queued_jobs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    SlowEngine.delay = 5.0
    mgr = _manager(tmp_path, plugins={"fault-slow": {"workers": 1, "queue_size": 4}})

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(mgr.transcribe_async(ONE_SECOND)) for _ in range(3)]
        slot = mgr.slot(("fault-slow", "fake"))
        limit = time.monotonic() + 30
        while slot.in_flight < 3 or SlowEngine.active < 1:  # one running, two queued
            assert time.monotonic() < limit, "the requests were never admitted"
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    started = time.monotonic()
    asyncio.run(scenario())
    slot = mgr.slot(("fault-slow", "fake"))
    deadline = time.monotonic() + 2
    while slot.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slot.in_flight == 0
    # Three jobs of 5 s each on one worker would take 15 s; cancelled, none runs out.
    assert time.monotonic() - started < SlowEngine.delay, "cancelled work must not run on"
    assert SlowEngine.finished == 0
    mgr.close()


def test_cancel_token_before_start_skips_the_job(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mgr = _manager(tmp_path)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        mgr.transcribe(ONE_SECOND, cancel=token)
    assert SlowEngine.finished == 0
    mgr.close()


def test_translate_fallback_skips_engines_that_cannot_translate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mgr = _manager(tmp_path, fallback=["fault-slow"])
    mgr.slot(("fault-slow", "fake")).ensure_loaded()
    keys = mgr.chain(("fault-fails", "fake"), TranscribeOptions(task="translate"))
    assert keys == [("fault-fails", "fake")]
    mgr.close()


def test_idle_model_is_freed_never_while_busy_and_reloads_on_demand(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """idle_unload_s frees a model nobody used for that long; a running or queued request
    keeps it; the next request loads it again; readiness holds throughout."""
    SlowEngine.delay = 1.0
    mgr = _manager(
        tmp_path, plugins={"fault-slow": {"idle_unload_s": 0.3, "workers": 1, "queue_size": 1}}
    )
    try:
        key = mgr.resolve(None)
        slot = mgr.slot(key)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(mgr.transcribe, ONE_SECOND)
            queued = pool.submit(mgr.transcribe, ONE_SECOND)
            deadline = time.monotonic() + 10
            while (slot.state != "loaded" or slot.in_flight < 2) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert slot.state == "loaded" and slot.in_flight == 2
            # Long past idle_unload_s, but one request runs and one waits: kept.
            assert slot.unload_if_idle(time.monotonic() + 60) is False
            assert slot.state == "loaded" and slot.unloads == 0
            assert running.result(10).text == "slow result"
            assert slot.unload_if_idle(time.monotonic() + 60) is False  # one still queued
            assert queued.result(10).text == "slow result"
        deadline = time.monotonic() + 5
        while slot.state != "unloaded" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert slot.state == "unloaded" and slot.unloads == 1
        assert mgr.ready  # freed for being idle is not "not ready"
        exposition = Metrics(mgr).render().decode()
        assert 'stts_engine_idle_unloads_total{engine="fault-slow",model="fake"} 1.0' in exposition
        assert 'stts_engine_loaded{engine="fault-slow",model="fake"} 0.0' in exposition
        SlowEngine.delay = 0.0
        assert mgr.transcribe(ONE_SECOND).text == "slow result"
        # It was loaded again: only a loaded model can be unloaded a second time (by the
        # reaper already, or now).
        slot.unload_if_idle(time.monotonic() + 60)
        assert slot.state == "unloaded" and slot.unloads == 2
    finally:
        mgr.close()


def test_idle_unload_is_off_by_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    SlowEngine.delay = 0.0
    mgr = _manager(tmp_path)
    try:
        mgr.transcribe(ONE_SECOND)
        slot = mgr.slot(mgr.resolve(None))
        assert not slot.unload_if_idle(time.monotonic() + 1e6)
        assert slot.state == "loaded"
    finally:
        mgr.close()


def test_fallback_chain_skips_engines_without_the_requested_language(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """German speech that Whisper fails on is not 'answered' by English-only PocketSphinx."""
    mgr = EngineManager(
        Settings(cache_dir=tmp_path, engines=["whisper", "pocketsphinx"], fallback=["pocketsphinx"])
    )
    key = mgr.resolve("whisper")
    assert mgr.chain(key, TranscribeOptions(language="de")) == [key]
    assert [k[0] for k in mgr.chain(key, TranscribeOptions(language="en"))] == [
        "whisper",
        "pocketsphinx",
    ]
    assert [k[0] for k in mgr.chain(key, TranscribeOptions())] == ["whisper", "pocketsphinx"]
    assert not mgr.loaded_slots() or all(s.state != "loaded" for s in mgr.loaded_slots())
    mgr.close()
