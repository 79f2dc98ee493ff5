"""Settings: one pydantic-settings class with a nested model per engine.

Precedence, highest first: explicit overrides (CLI flags, ``Settings(...)`` keyword
arguments) > environment variables (``STTS_*``, nested with ``__``, e.g.
``STTS_WHISPER__MODEL=small``) > the TOML file (``--config`` or ``STTS_CONFIG``) > defaults.
"""

from __future__ import annotations

import ipaddress
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from stts.audio import AudioLimits
from stts.errors import InvalidRequest


def _split_commas(value: Any) -> Any:
    """Let list settings be given as ``a,b,c`` in the environment."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def default_cache_dir() -> Path:
    """Where assembled model files live: ``$XDG_CACHE_HOME/stts`` or ``~/.cache/stts``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stts"


class EngineSettings(BaseModel):
    """What every engine has: its worker pool and the queue in front of it."""

    workers: int = Field(1, ge=1, le=64, description="requests this engine runs at once")
    queue_size: int = Field(8, ge=0, le=10_000, description="requests waiting beyond the workers")
    max_streams: int = Field(
        2,
        ge=0,
        le=1000,
        description="live streams (realtime WebSocket, Wyoming) open at once on this engine",
    )
    idle_unload_s: float = Field(
        0,
        ge=0,
        description="free the model after this many seconds without requests; the next "
        "request loads it again (0: keep it loaded)",
    )
    speech_gate: bool = Field(
        False,
        description="answer a recording in which Silero VAD hears no speech with '' "
        "without running this engine (on for engines that write words on noise or music)",
    )


class PluginSettings(EngineSettings):
    """Settings of a third-party engine: workers, queue, and whatever options it reads."""

    model_config = ConfigDict(extra="allow")


class WhisperSettings(EngineSettings):
    """faster-whisper (CTranslate2)."""

    model: str = Field(
        "base",
        description="default model: an embedded model name (base, small) or a name in model_dirs",
    )
    model_dirs: dict[str, Path] = Field(
        default_factory=dict, description="extra models: name -> local CTranslate2 directory"
    )
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(0, ge=0, description="0 = one per CPU core")
    beam_size: int = Field(5, ge=1, le=20)
    vad_filter: bool = Field(
        True,
        description="decode only what Silero VAD hears as speech (off: Whisper writes "
        "'Thank you.' and loops on music and noise, and spends 1-3 s per second of it)",
    )
    vad_threshold: float = Field(
        0.5, gt=0, lt=1, description="Silero speech probability above which a frame is speech"
    )
    vad_min_silence_ms: int = Field(
        2000, ge=0, description="silence that ends a VAD speech chunk (shorter pauses kept)"
    )
    vad_speech_pad_ms: int = Field(
        400, ge=0, description="audio kept either side of each VAD speech chunk"
    )
    no_speech_threshold: float | None = Field(
        0.6, ge=0, le=1, description="a window is silent above this no-speech probability..."
    )
    log_prob_threshold: float | None = Field(
        -1.0, description="...when its mean token log-probability is also below this"
    )
    compression_ratio_threshold: float | None = Field(
        2.4, gt=0, description="text that compresses better than this is a loop: retried hotter"
    )
    hallucination_silence_threshold: float | None = Field(
        None, gt=0, description="skip silences this long (s) around a suspect segment"
    )
    condition_on_previous_text: bool = Field(
        False,
        description="prompt each 30 s window with the text before it (on: one window's "
        "mistake or loop carries into the next)",
    )
    repair_gaps: bool = Field(
        True,
        description="files with vad_filter: re-decode on its own any stretch of VAD speech "
        "that the first pass left without words (Whisper skips an utterance inside a 30 s "
        "window now and then; see README, Silence, noise and long recordings)",
    )
    repair_min_gap_s: float = Field(
        1.5, gt=0, description="gap repair: uncovered speech at least this long is re-decoded"
    )
    vad_word_times: bool = Field(
        True,
        description="files with vad_filter and repair_gaps: move word starts out of what "
        "Silero VAD calls non-speech, and a first word carried into the previous VAD chunk "
        "back to its own (times only, never the words; see README, Silence, noise and "
        "long recordings)",
    )
    vad_word_times_late_onsets: bool = Field(
        True,
        description="with vad_word_times: a word that starts in the previous word's speech "
        "and stretches over a pause starts at the onset after that pause",
    )
    repair_edge_remnant_s: float | None = Field(
        0.6,
        ge=0,
        description="gap repair: VAD speech up to this long running into a stretch's edge "
        "next to a word is that word's remnant and not re-decoded; longer speech is "
        "re-decoded less its part nearest the word (None: all such speech is left out)",
    )
    repair_stretched_s: float | None = Field(
        1.1,
        gt=0,
        description="gap repair: a segment with a word that holds this much Silero speech "
        "(s) or more is decoded again on its own and replaced when that hears 3+ words "
        "more (the decoder wrote other words over skipped speech; None: off)",
    )
    stream_short_context: bool = Field(
        True,
        description="live streams: run the encoder on the buffered audio only, not on a "
        "30 s window, and decode again on the window only a pass that loops or stops "
        "early (about a third of the CPU; see README, Streaming engines)",
    )
    stream_early_passes: bool = Field(
        True,
        description="live streams: until a stream's first commit, decode every half "
        "second of new audio instead of every second, so the first words show sooner "
        "after speech begins (see README, Streaming engines)",
    )
    stream_beam_size: int = Field(
        1,
        ge=1,
        le=20,
        description="live streams: beam of an utterance's last pass (interim passes are "
        "greedy; a request's beam_size overrides). On short contexts greedy measured as "
        "accurate as beam 5 at less CPU (bench/short_context.py)",
    )
    batch_size: int = Field(
        1, ge=1, le=64, description="windows decoded together across requests; 1 = no batching"
    )
    batch_window_ms: float = Field(
        20.0, ge=0, le=1000, description="how long a batch waits for more requests"
    )

    @model_validator(mode="after")
    def _enough_workers_to_batch(self) -> WhisperSettings:
        # Each waiting request holds a worker thread while its windows are batched.
        if self.batch_size > 1 and self.workers < self.batch_size:
            self.workers = self.batch_size
        return self


class PocketSphinxSettings(EngineSettings):
    """PocketSphinx; the US-English model bundled in the wheel unless model_dir is set."""

    speech_gate: bool = True
    stream_fwdflat: bool = Field(
        False,
        description="live streams run PocketSphinx's second, flat-lexicon pass at the end "
        "of each utterance: on the corpus it cost 0.43 s of CPU per utterance end for 0.35 "
        "WER points (whole recordings always run it)",
    )
    stream_max_hmm_per_frame: int = Field(
        5000,
        ge=100,
        le=1_000_000,
        description="live streams' search keeps at most this many HMMs per 10 ms frame "
        "(PocketSphinx's maxhmmpf; whole recordings keep its 30000): on the corpus 5000 "
        "searched in 0.34 CPU-s per audio second instead of 0.49, at the same WER",
    )

    model_dir: Path | None = None
    isolate: bool | None = Field(
        None,
        description="decode in child processes, one per worker for whole recordings and "
        "one per worker for its live streams: PocketSphinx holds the GIL while it decodes, "
        "which in-process stops the whole server (event loop, /health, other engines) for "
        "each decode, and a native crash there would end the server. Unset: on in a server "
        "(stts serve, Ray Serve replicas), off in the "
        "library and the one-shot commands (stts transcribe, stts batch), where nothing "
        "else waits and a script needs no __main__ guard",
    )


class VoskSettings(EngineSettings):
    """Vosk (Kaldi); needs a model directory."""

    speech_gate: bool = True

    model_path: Path | None = None
    language: str | None = Field(None, description="the model's language, e.g. 'en'")
    dither: bool = Field(
        False, description="Kaldi feature dithering (on: the same audio may give other words)"
    )


class Wav2Vec2Settings(EngineSettings):
    """A CTC model (Wav2Vec2, HuBERT, WavLM) exported to ONNX, in Hugging Face layout."""

    speech_gate: bool = True

    model_path: Path | None = None
    language: str | None = Field(None, description="the model's language, e.g. 'en'")
    threads: int = Field(0, ge=0, description="ONNX Runtime threads; 0 = one per CPU core")
    window_s: float = Field(30.0, ge=5.0, le=120.0, description="longest audio per model call")


class StreamingSettings(BaseModel):
    """Bounds of live streams (realtime WebSocket, Wyoming transcript streaming)."""

    max_duration_s: float = Field(1800.0, gt=0, description="longest stream (one session)")
    idle_timeout_s: float = Field(
        60.0, gt=0, description="a stream that sends nothing for this long is closed"
    )
    max_backlog_s: float = Field(
        10.0,
        gt=0,
        description="audio received and not yet decoded; beyond it the stream gets an error",
    )
    wyoming: bool = Field(
        False,
        description="Wyoming: utterances on engines that stream are transcribed as they "
        "arrive and answered with transcript-start, transcript-chunk..., transcript, "
        "transcript-stop; off: every utterance is answered whole, with one transcript",
    )


class AudioSettings(BaseModel):
    """Per-request bounds on input audio."""

    max_bytes: int = Field(100 * 1024 * 1024, ge=1)
    max_duration_s: float = Field(3600.0, gt=0)

    def limits(self) -> AudioLimits:
        """As the immutable object stts.audio takes."""
        return AudioLimits(max_bytes=self.max_bytes, max_duration_s=self.max_duration_s)


class JobsSettings(BaseModel):
    """Durable jobs for long recordings (``/api/v1/jobs``): storage, limits, webhooks."""

    dir: Path | None = Field(
        None, description="where job records (SQLite) and uploads live; default: cache_dir/jobs"
    )
    max_bytes: int = Field(2 * 1024**3, ge=1, description="largest upload a job takes")
    max_duration_s: float = Field(4 * 3600.0, gt=0, description="longest audio a job takes")
    max_disk_bytes: int = Field(
        20 * 1024**3, ge=1, description="uploads and results kept at once; beyond it: 507"
    )
    retention_s: float = Field(
        7 * 86400.0, gt=0, description="finished jobs (and their files) are deleted after this"
    )
    upload_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="longest one job upload may take in all (408 after it; a body that "
        "stalls is body_timeout_s's): a 2 GiB upload needs about 4.8 Mbit/s",
    )
    workers: int = Field(1, ge=1, le=64, description="jobs run at once")
    max_attempts: int = Field(
        3, ge=1, le=100, description="runs a job gets (engine failures, crashes) before it fails"
    )
    step_s: float = Field(
        30.0,
        ge=5.0,
        le=600.0,
        description="audio per job step: the unit of checkpoints and of the wait an "
        "interactive request may have behind a job",
    )
    webhook_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts a callback_url may name: host names, IP addresses or CIDR ranges "
        "(none: webhooks are off)",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the X-STTS-Signature header of webhooks"
    )
    webhook_max_attempts: int = Field(5, ge=1, le=50)
    webhook_backoff_s: float = Field(
        2.0, gt=0, description="wait before the first webhook retry; doubled after each"
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="one webhook delivery, at most")

    _split = field_validator("webhook_hosts", mode="before")(_split_commas)

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> JobsSettings:
        if self.webhook_hosts and (
            self.webhook_secret is None or not self.webhook_secret.get_secret_value()
        ):
            raise ValueError("jobs.webhook_hosts is set: jobs.webhook_secret must be set too")
        return self

    def directory(self, cache_dir: Path) -> Path:
        """The jobs directory, with its default."""
        return self.dir if self.dir is not None else cache_dir / "jobs"


class RateLimitSettings(BaseModel):
    """Token buckets for POST requests: per API key, or per client IP without keys."""

    requests_per_minute: float = Field(0, ge=0, description="refill rate; 0 turns limiting off")
    burst: int = Field(10, ge=1, description="bucket size: requests allowed at once")
    per_key: dict[str, float] = Field(
        default_factory=dict, description="key name -> requests per minute (overrides the rate)"
    )
    max_clients: int = Field(10_000, ge=1, description="buckets kept (least recently used dropped)")
    auth_failures_burst: int = Field(
        10, ge=1, description="wrong API keys a client address may send before it gets 429"
    )
    auth_failures_per_minute: float = Field(
        6,
        ge=0,
        description="refill of the wrong-key allowance per client address while API keys are "
        "set; 0 turns this limit off",
    )


_TOML_FILE: ContextVar[Path | None] = ContextVar("stts_toml_file", default=None)
"""The TOML file that :meth:`Settings.load` is reading, for the settings sources."""


class Settings(BaseSettings):
    """All configuration of stts."""

    model_config = SettingsConfigDict(
        env_prefix="STTS_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    engines: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["whisper", "pocketsphinx"],
        description="engines this server offers (comma-separated in the environment)",
    )
    default_engine: str = "whisper"
    model_aliases: dict[str, str] = Field(
        default_factory=lambda: {
            "whisper-1": "whisper",
            "gpt-4o-transcribe": "whisper",
            "gpt-4o-mini-transcribe": "whisper",
        },
        description="OpenAI `model` names -> an engine or engine:model; an alias whose engine "
        "is not enabled means the default engine",
    )
    fallback: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="engines tried in order when the chosen one fails on good audio",
    )
    preload: bool = Field(True, description="load the default engine at start-up")
    timeout_base_s: float = Field(
        30.0, gt=0, description="fixed part of the engine's deadline, counted from its start"
    )
    timeout_per_audio_s: float = Field(
        4.0, ge=0, description="engine deadline seconds added per second of audio"
    )
    queue_timeout_s: float = Field(
        300.0, gt=0, description="longest a request waits for a free worker (then 503)"
    )
    shutdown_grace_s: float = Field(30.0, ge=0, description="drain deadline on SIGTERM")
    decode_timeout_s: float = Field(
        120.0,
        gt=0,
        description="longest time decoding one upload may take (an hour of Opus: ~10-30 s)",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a request body that sends nothing for this long is answered 408",
    )
    cache_dir: Path = Field(default_factory=default_cache_dir)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    json_logs: bool | None = Field(
        None,
        description="JSON lines on stderr (true) or plain text (false); unset: plain text "
        "when stderr is a terminal, JSON otherwise",
    )
    malloc_arena_max: int = Field(
        2,
        ge=0,
        le=64,
        description="glibc malloc arenas of `stts serve` (0: glibc's default of 8 per core)",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="accepted API keys, each taken whole (never split), named key1..keyN; "
        "comma-separated in the environment",
    )
    named_api_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="accepted API keys by name (STTS_NAMED_API_KEYS__alice=..., or a TOML "
        "table); names are what rate_limit.per_key refers to",
    )
    api_keys_file: Path | None = Field(
        None, description="file of '[name] <sha256 hex>' lines: hashed keys"
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="addresses/CIDRs whose X-Forwarded-For is believed"
    )
    wyoming_uri: str | None = Field(
        None,
        description="also serve the Wyoming protocol (Home Assistant) on tcp://host:port "
        "or unix:///path; needs the wyoming extra",
    )
    wyoming_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="client addresses/CIDRs the Wyoming TCP listener serves; none: every "
        "client that can reach it (Wyoming has no keys)",
    )
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins allowed to call the API (scheme://host[:port], or '*'); "
        "none: no CORS headers at all",
    )

    web_ui: bool = Field(
        True,
        description="serve the web page at / (transcribe a file or the microphone); its "
        "calls need an API key like any client's when keys are set",
    )

    audio: AudioSettings = Field(default_factory=AudioSettings)
    streaming: StreamingSettings = Field(default_factory=StreamingSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    whisper: WhisperSettings = Field(default_factory=WhisperSettings)
    pocketsphinx: PocketSphinxSettings = Field(default_factory=PocketSphinxSettings)
    vosk: VoskSettings = Field(default_factory=VoskSettings)
    wav2vec2: Wav2Vec2Settings = Field(default_factory=Wav2Vec2Settings)
    plugins: dict[str, PluginSettings] = Field(
        default_factory=dict, description="settings of third-party engines, by engine name"
    )

    _split = field_validator(
        "engines",
        "fallback",
        "api_keys",
        "trusted_proxies",
        "cors_origins",
        "wyoming_allow",
        mode="before",
    )(_split_commas)

    @field_validator("wyoming_allow")
    @classmethod
    def _wyoming_allow(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"wyoming_allow: {entry!r} is not an IP address or CIDR") from None
        return value

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, value: list[str]) -> list[str]:
        # Browsers send Origin as scheme://host[:port]; anything else would never match.
        for origin in value:
            parsed = urlsplit(origin)
            if origin != "*" and (
                parsed.scheme not in ("http", "https")
                or not parsed.netloc
                or origin != f"{parsed.scheme}://{parsed.netloc}"
            ):
                raise ValueError(f"{origin!r} is not an origin: use scheme://host[:port] or '*'")
        return value

    @field_validator("wyoming_uri")
    @classmethod
    def _wyoming_uri(cls, value: str | None) -> str | None:
        if not value:
            return None
        parsed = urlsplit(value)
        if parsed.scheme == "tcp":
            try:
                port = parsed.port
            except ValueError as exc:
                raise ValueError(f"bad port in {value!r}") from exc
            if not parsed.hostname or port is None:
                raise ValueError("tcp:// needs a host and a port, e.g. tcp://0.0.0.0:10300")
        elif parsed.scheme != "unix" or not parsed.path:
            raise ValueError("must be tcp://host:port or unix:///path/to/socket")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides > environment > TOML file > defaults."""
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_TOML_FILE.get())
        return (init_settings, env_settings, toml)

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
        """Settings from an optional TOML file (or ``STTS_CONFIG``), env and overrides."""
        path = config_file or os.environ.get("STTS_CONFIG")
        clean = {k: v for k, v in overrides.items() if v is not None}
        if not path:
            return cls(**clean)
        toml_path = Path(path)
        if not toml_path.is_file():
            raise InvalidRequest(f"config file not found: {toml_path}")

        # A plain Settings, not a subclass made here: engines that run in a process of
        # their own (PocketSphinx) get the settings pickled, and a local class is not.
        token = _TOML_FILE.set(toml_path)
        try:
            return cls(**clean)
        finally:
            _TOML_FILE.reset(token)

    def engine_settings(self, name: str) -> EngineSettings:
        """The nested settings of one engine (defaults for engines without a section)."""
        section = getattr(self, name, None) if name.isidentifier() else None
        if isinstance(section, EngineSettings):
            return section
        return self.plugins.get(name) or EngineSettings()
