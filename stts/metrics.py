"""Prometheus metrics for one app (its own registry, so several apps can share a process).

Counters and histograms are updated as requests are served; engine state (queue depth,
in-flight, rejections, load time) is read from the EngineManager at scrape time, so it
is never stale and costs nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stts.service import EngineManager
from stts.transcript import Transcript

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _EngineCollector(Collector):
    def __init__(self, manager: EngineManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "stts_engine_queue_depth", "Requests waiting for a worker", labels=["engine", "model"]
        )
        in_flight = GaugeMetricFamily(
            "stts_engine_in_flight",
            "Requests admitted (running or queued)",
            labels=["engine", "model"],
        )
        capacity = GaugeMetricFamily(
            "stts_engine_capacity", "Workers plus queue slots", labels=["engine", "model"]
        )
        rejected = CounterMetricFamily(
            "stts_engine_rejections",
            "Requests refused with 503 (queue full)",
            labels=["engine", "model"],
        )
        loaded = GaugeMetricFamily(
            "stts_engine_loaded", "1 when the model is loaded", labels=["engine", "model"]
        )
        load_time = GaugeMetricFamily(
            "stts_model_load_seconds", "Time the model took to load", labels=["engine", "model"]
        )
        unloads = CounterMetricFamily(
            "stts_engine_idle_unloads",
            "Times the model was freed for being idle (idle_unload_s)",
            labels=["engine", "model"],
        )
        streams = GaugeMetricFamily(
            "stts_engine_open_streams",
            "Live streams open (realtime WebSocket items, Wyoming streams)",
            labels=["engine", "model"],
        )
        for slot in self.manager.loaded_slots():
            stats = slot.stats()
            labels = [stats.engine, stats.model]
            depth.add_metric(labels, max(0, stats.in_flight - stats.workers))
            in_flight.add_metric(labels, stats.in_flight)
            capacity.add_metric(labels, stats.workers + stats.queue_size)
            rejected.add_metric(labels, stats.rejected)
            loaded.add_metric(labels, 1 if stats.state == "loaded" else 0)
            if stats.load_time_s is not None:
                load_time.add_metric(labels, stats.load_time_s)
            unloads.add_metric(labels, stats.unloads)
            streams.add_metric(labels, slot.open_streams)
        yield from (depth, in_flight, capacity, rejected, loaded, load_time, unloads, streams)


class Metrics:
    """The metrics of one app."""

    def __init__(self, manager: EngineManager) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends
        self.registry.register(_EngineCollector(manager))
        self.requests = Counter(
            "stts_http_requests",
            "HTTP requests by route template, status and engine",
            ["route", "method", "status", "engine"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stts_http_request_seconds",
            "HTTP request duration",
            ["route"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            "stts_audio_seconds", "Seconds of audio transcribed", ["engine"], registry=self.registry
        )
        self.transcriptions = Counter(
            "stts_transcriptions",
            "Transcriptions by engine and fallback",
            ["engine", "fallback"],
            registry=self.registry,
        )
        self.rtf = Histogram(
            "stts_real_time_factor",
            "Processing time divided by audio duration",
            ["engine"],
            buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5),
            registry=self.registry,
        )
        self.wyoming = Counter(
            "stts_wyoming_requests",
            "Wyoming utterances answered, by result (ok or the error code)",
            ["result"],
            registry=self.registry,
        )
        self.realtime_sessions = Gauge(
            "stts_realtime_sessions_open",
            "Realtime WebSocket sessions open",
            registry=self.registry,
        )
        self.realtime_closed = Counter(
            "stts_realtime_sessions",
            "Realtime WebSocket sessions ended, by result (ok, client_gone or the error code)",
            ["result"],
            registry=self.registry,
        )
        self.stream_audio_seconds = Counter(
            "stts_stream_audio_seconds",
            "Seconds of audio taken by live streams",
            ["engine"],
            registry=self.registry,
        )
        latency_buckets = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
        self.stream_partial_latency = Histogram(
            "stts_stream_partial_latency_seconds",
            "From speech start (or the first audio) to the first text shown (delta or tentative)",
            ["engine"],
            buckets=latency_buckets,
            registry=self.registry,
        )
        self.stream_final_latency = Histogram(
            "stts_stream_final_latency_seconds",
            "From speech stop (or the commit) to the completed transcript",
            ["engine"],
            buckets=latency_buckets,
            registry=self.registry,
        )
        manager.add_observer(self.observe_transcript)

    def observe_wyoming(self, result: str) -> None:
        """Called by the Wyoming face once per answered utterance (or broken connection)."""
        self.wyoming.labels(result).inc()

    def observe_transcript(self, transcript: Transcript, elapsed_s: float) -> None:
        """Called by the EngineManager after each successful transcription."""
        self.audio_seconds.labels(transcript.engine).inc(transcript.duration)
        self.transcriptions.labels(transcript.engine, str(transcript.fallback).lower()).inc()
        if transcript.duration > 0:
            self.rtf.labels(transcript.engine).observe(elapsed_s / transcript.duration)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
