"""Settings: defaults < modelyard.yaml < MODELYARD_* environment < explicit overrides; built once, passed down."""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_NAME = "modelyard.yaml"
_config_path: ContextVar[Path | None] = ContextVar("modelyard_config_path", default=None)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FILE_REF = re.compile(r"\$\{file:([^}]+)\}")


class SamplingDefaults(BaseModel):
    """Sampling parameters a local deployment uses when a request leaves them out."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, gt=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class DeploymentConfig(BaseModel):
    """Where one copy of a model runs: a backend kind plus its settings."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    backend: Literal["llama_cpp", "openai", "anthropic", "gemini", "worker", "sentence_transformers", "cross_encoder", "piper", "espeak",
                     "faster_whisper", "presidio", "diffusers", "echo"]
    # upstream (openai-compatible)
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = Field(default=None, description="the model name the upstream knows")
    headers: dict[str, str] = Field(default_factory=dict)
    # local runtimes
    path: str | None = Field(default=None, description="weights on disk: a GGUF file, a Hugging Face / diffusers / "
                                                      "CTranslate2 folder, a Piper .onnx voice")
    n_ctx: int = 4096
    n_threads: int | None = None
    sampling: SamplingDefaults = Field(default_factory=lambda: SamplingDefaults())
    options: dict[str, Any] = Field(default_factory=dict, description="runtime-specific settings")
    preload: bool = Field(default=False, description="load at start instead of on first use")
    idle_unload_seconds: float = Field(default=900.0, ge=0, description="free memory after this idle time; 0 = never")
    # shared
    region: str | None = None
    weight: float = 1.0
    max_concurrency: int = 64
    max_queue: int = 64
    timeout: float = 600.0
    connect_timeout: float = 10.0
    first_byte_timeout: float | None = Field(default=None, gt=0, description="seconds until the upstream's response "
                                             "headers arrive; a timeout before the first byte is retried elsewhere")


class LimitRuleConfig(BaseModel):
    """One rate-limit rule of a plan: `count` per `window`, counted per token or per org."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    scope: Literal["token", "org"] = "token"
    # api: ordinary requests; job: submissions that start work (generation jobs, fal queue, agent runs); all: both
    class_: Literal["api", "job", "all"] = Field(default="all", alias="class")
    kind: str | None = Field(default=None, description="chat, images, videos, audio, embeddings, ...; none = any")
    window: Literal["second", "minute"] = "minute"
    count: int = Field(ge=0)
    unit: Literal["requests", "tokens"] = "requests"


class PlanConfig(BaseModel):
    """A plan: the limits its orgs and their keys get."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    limits: list[LimitRuleConfig] = Field(default_factory=list)


class PriceConfig(BaseModel):
    """What a model costs, in US dollars (stored as integer micro-dollars). Unset parts cost nothing."""

    model_config = ConfigDict(extra="forbid")

    input_per_1m: float = Field(default=0, ge=0, description="per 1M input tokens")
    output_per_1m: float = Field(default=0, ge=0, description="per 1M output tokens")
    # per image: one price, or by "WxH" / "WxH/quality" / "quality" / "default"
    per_image: float | dict[str, float] = 0.0
    # per second of video: one price, or by resolution ("480p", "720p", "1080p", "default")
    per_video_second: float | dict[str, float] = 0.0
    per_1k_characters: float = Field(default=0, ge=0, description="speech input")
    per_audio_minute: float = Field(default=0, ge=0, description="transcription / translation")
    per_request: float = Field(default=0, ge=0)


class StudioPriceConfig(BaseModel):
    """A studio mode's price: by image resolution tier (1k/2k/4k) or, for video, by resolution for `seconds`."""

    model_config = ConfigDict(extra="forbid")

    per_tier: dict[str, float] = Field(default_factory=dict,
                                       description="image modes, per generation (however many images): {'1k': 0.05, ...}")
    per_resolution: dict[str, float] = Field(default_factory=dict, description="video modes: {'720p': 0.75}")
    seconds: float = Field(default=5, gt=0, description="the clip length per_resolution prices")


class ModelConfig(BaseModel):
    """A public model id and the deployments that serve it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["text", "embedding", "rerank", "image", "audio", "video", "pii", "moderation"] = "text"
    tasks: list[str] | None = None
    owned_by: str | None = None
    description: str | None = None
    aliases: list[str] = Field(default_factory=list)
    created: int | None = Field(default=None, description="unix time shown in /v1/models; defaults to server start")
    fallbacks: list[str] = Field(default_factory=list, description="models to try, in order, when every deployment fails")
    price: PriceConfig | None = Field(default=None, description="unset: free")
    plans: list[str] | None = Field(default=None, description="only these plans may call it; unset: every plan")
    deployments: list[DeploymentConfig] = Field(min_length=1)


class WorkerSettings(BaseModel):
    """Set when this process is a `modelyard worker`: a model host serving a control plane."""

    model_config = ConfigDict(extra="forbid")

    control_plane: str
    token: str
    models: list[str] = Field(min_length=1)
    name: str
    advertise_url: str
    region: str | None = None
    heartbeat_seconds: float = Field(default=2.0, gt=0)


class StorageSettings(BaseModel):
    """Where files, batch outputs and generated media live: the data dir, or an S3-compatible bucket that gateways
    and runners on other machines share (docs/configuration.md "Storage")."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "s3"] = "local"
    path: Path | None = Field(default=None, description="local: the folder (default: the data dir)")
    endpoint_url: str | None = Field(default=None, description="s3: the S3 API's URL (unset: AWS)")
    bucket: str | None = None
    region: str | None = None
    prefix: str = Field(default="", description="s3: prepended to every key, to share a bucket")
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    # keys default to botocore's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles);
    # MODELYARD_STORAGE__ACCESS_KEY_ID / __SECRET_ACCESS_KEY set them for Modelyard alone
    access_key_id: str | None = None
    secret_access_key: str | None = None  # plain str: `serve --workers N` hands settings on as JSON
    # a bucket clients cannot reach: links are our signed /media URLs and the gateway streams the bytes through
    proxy: bool = False
    # the bucket's address as clients see it, when it differs from endpoint_url (presigned links are signed for it)
    public_endpoint_url: str | None = None

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> "StorageSettings":
        if self.backend == "s3" and not self.bucket:
            raise ValueError("storage.bucket is required when storage.backend is s3")
        return self


# POST /api/prompt-rewrite's system instructions, per task (docs/catalog.md). Written for a small model: one job,
# said plainly, and the answer's form. `prompt_rewrite_instructions` merges over these; an empty one turns a task off.
PROMPT_REWRITE_INSTRUCTIONS: dict[str, str] = {
    "text-to-image": "You rewrite prompts for an image generator. Expand the user's idea into one detailed image "
                     "prompt: name the subject, the composition and framing, the lighting, the setting and the mood. "
                     "Answer with the prompt only, in one paragraph, without any preamble.",
    "image-to-image": "You rewrite prompts for an image editor. Restate the change the user asks for as one precise "
                      "edit instruction: what to change, what to keep, and the lighting and style of the result. "
                      "Answer with the instruction only, without any preamble.",
    "text-to-video": "You rewrite prompts for a video generator. Expand the user's idea into one detailed video "
                     "prompt: the subject and its action, the camera motion (pan, tilt, dolly, tracking or static), "
                     "the setting, the lighting and the pace. Answer with the prompt only, without any preamble.",
    "image-to-video": "You rewrite prompts for animating a still image. Describe how the picture comes to life: the "
                      "motion of the subject, the camera motion (pan, tilt, dolly, tracking or static) and the pace. "
                      "Answer with the prompt only, without any preamble.",
    "chat": "You improve prompts for a chat assistant. Rewrite the user's request to be clear and specific: the goal, "
            "the context, and the form of the answer wanted. Answer with the rewritten request only, without any "
            "preamble.",
}


class Settings(BaseSettings):
    """Everything the server needs to start; see README 'Configuration'."""

    model_config = SettingsConfigDict(env_prefix="MODELYARD_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    data_dir: Path = Path("modelyard-data")
    database_url: str | None = None
    admin_key: str | None = None
    log_level: str = "info"
    # text: human-readable lines; json: one JSON object per line (request_id, trace_id, ...: docs/observability.md)
    log_format: Literal["text", "json"] = "text"
    # OpenTelemetry traces: auto = on when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT or OTEL_TRACES_EXPORTER is set
    tracing: Literal["auto", "on", "off"] = "auto"
    builtin_models: bool = True
    models: list[ModelConfig] = Field(default_factory=list)
    # the auth cache trades revocation latency for no per-request DB reads
    auth_cache_ttl: float = 10.0
    max_body_bytes: int = 32 * 1024 * 1024
    # browser origins allowed to call the API (CORS); empty means none, ["*"] means any
    cors_origins: list[str] = Field(default_factory=list)
    # /metrics needs an admin:read key unless made public (for a scraper on a private network)
    metrics_public: bool = False
    # secrets at rest (workers' serving keys in the database) are sealed with this key: a Fernet key or a passphrase
    # of 16+ characters; several, comma-separated, newest first, during a rotation. Or one key a line in
    # secret_key_file. Neither set: generated into <data_dir>/secret-key (set one when replicas share a database)
    secret_key: str | None = None
    secret_key_file: Path | None = None
    # Prometheus metrics (/metrics): off removes them from the call path entirely (and /metrics answers 404)
    metrics_enabled: bool = True
    # names of the call and token series: ours (modelyard_*), the OpenTelemetry GenAI conventions' (gen_ai_*), or both
    metrics_names: Literal["modelyard", "otel", "both"] = "modelyard"
    # signing key for media URLs; generated into the data dir when unset (set it when replicas share media)
    media_secret: str | None = None
    media_url_ttl: int = Field(default=3600, ge=1, description="seconds a signed media URL stays valid")
    # keyless share-link reads (GET /api/shares/...) allowed per client address per minute (docs/library.md)
    share_requests_per_minute: int = Field(default=60, ge=1)
    # console sessions (docs/accounts.md): idle and absolute lifetimes, the cookie's Secure flag (None: when the
    # request came over https), login attempts per minute per account and per client address, invite link lifetime
    session_idle_seconds: float = Field(default=7 * 86400, gt=0)
    session_max_seconds: float = Field(default=30 * 86400, gt=0)
    session_cookie_secure: bool | None = None
    login_attempts_per_account: int = Field(default=10, ge=1)
    login_attempts_per_address: int = Field(default=60, ge=1)
    invite_ttl_hours: float = Field(default=72, gt=0)
    # base URL used in media links, when clients reach us through a proxy (else the request's own)
    public_url: str | None = None
    max_upload_bytes: int = 25 * 1024 * 1024
    storage: StorageSettings = Field(default_factory=StorageSettings)
    # the Files API (OpenAI's limits by default): per file, per batch input file, and how often expired files'
    # bytes are swept
    files_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    files_batch_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    files_sweep_seconds: float = Field(default=60.0, gt=0)
    # routing: a deployment failing this many times in a row sits out `cooldown_seconds`, then gets one probe
    cooldown_failures: int = Field(default=3, ge=1)
    cooldown_seconds: float = Field(default=30.0, gt=0)
    # Host header -> region (api.eu.example.com: eu); wins over a client's X-Region header
    region_hosts: dict[str, str] = Field(default_factory=dict)
    # control plane: how often workers beat, and how long a silent worker keeps its traffic
    worker_heartbeat_seconds: float = Field(default=2.0, gt=0)
    worker_timeout_seconds: float = Field(default=6.0, gt=0)
    worker: WorkerSettings | None = None
    # plans, limits, prices (README "Plans, limits and billing"); plans and studio prices merge over the defaults
    redis_url: str | None = Field(default=None, description="shared rate-limit counters across replicas")
    plans: dict[str, PlanConfig] = Field(default_factory=dict)
    prices: dict[str, PriceConfig] = Field(default_factory=dict, description="model id -> price (any model, built-in too)")
    model_plans: dict[str, list[str]] = Field(default_factory=dict, description="model id -> plans allowed to call it")
    studio_prices: dict[str, StudioPriceConfig] = Field(default_factory=dict)
    key_min_balance_cents: int = Field(default=0, ge=0, description="balance an org needs to create an API key")
    redis_key_prefix: str = "modelyard:"
    content_filter_model: str = "omni-moderation-latest"
    # the policy orgs without their own get; unset: no filtering (and no cost) unless an org asks for it
    content_filter_default: Literal["block", "flag", "log"] | None = None
    # how long usage rows, wallet movements and other off-path records wait in memory before their batched write;
    # also the most a SIGKILL can lose (older records are in the database or fsynced in the spool)
    usage_flush_seconds: float = Field(default=1.0, gt=0)
    # the write-behind (store/writebehind.py): past `write_behind_max_queue` records in memory, or while the
    # database fails or hangs, records go to append-only files in `spool_dir` (default <data_dir>/spool)
    spool_dir: Path | None = None
    write_behind_max_queue: int = Field(default=50_000, ge=1)
    write_behind_batch: int = Field(default=10_000, ge=1, description="usage rows per transaction")
    # the request log (docs/request-log.md): rows (and kept bodies) older than this many days are dropped, whole
    # day partitions on PostgreSQL, in batches on SQLite; 0 keeps them forever. Upkeep runs this often.
    # off: no request-log rows are written at all (the console's /logs stays empty; usage and billing are unchanged)
    request_log_enabled: bool = True
    request_log_retention_days: int = Field(default=30, ge=0)
    request_log_upkeep_seconds: float = Field(default=3600.0, gt=0)
    # the same upkeep prunes usage rollups finer than a day (the usage APIs read the day grain, which stays) and,
    # when set, the audit log; 0 keeps them forever
    usage_rollup_minute_days: int = Field(default=2, ge=0)
    usage_rollup_hour_days: int = Field(default=90, ge=0)
    audit_log_retention_days: int = Field(default=0, ge=0)
    # on shutdown, retry writing what is queued this long; what is still unwritten then is spooled for the next start
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    # run migrations and first-start bootstrap inside the app's startup (off when a parent process already did)
    bootstrap_on_startup: bool = True
    # async jobs (README "Async jobs"): runners inside `serve` unless turned off (then run `modelyard runner`)
    job_runner: bool = True
    job_concurrency: int = Field(default=4, ge=1, description="jobs one runner works on at once")
    job_lease_seconds: float = Field(default=30.0, gt=0, description="a runner silent this long loses its job")
    job_heartbeat_seconds: float = Field(default=5.0, gt=0, description="lease renewal and cancel check interval")
    job_poll_seconds: float = Field(default=1.0, gt=0, description="idle runners look for work this often")
    job_max_attempts: int = Field(default=3, ge=1, le=100)
    job_backoff_seconds: float = Field(default=2.0, ge=0, description="retry delay, doubled per attempt")
    job_backoff_max_seconds: float = Field(default=300.0, ge=0)
    job_wait_seconds: float = Field(default=600.0, gt=0, description="blocking video route: wait this long, then 202")
    # batches (docs/batches.md): lines run as jobs at `batch_priority`, at most `batch_concurrency` at once per batch
    batch_price_factor: float = Field(default=0.5, ge=0, description="a batch line costs this share of its price")
    batch_concurrency: int = Field(default=64, ge=1, description="lines of one batch admitted and queued at once")
    batch_priority: int = Field(default=-10, ge=-100, le=100, description="below interactive jobs (0)")
    batch_window_seconds: float = Field(default=86400.0, gt=0, description="what completion_window '24h' means")
    batch_max_lines: int = Field(default=50_000, ge=1)
    batch_max_input_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    fal_sync_timeout_seconds: float = Field(default=120.0, gt=0)
    # fal-style slug -> model id (every model also answers at modelyard/<id>); studio mode -> model id
    fal_slugs: dict[str, str] = Field(default_factory=dict)
    studio_models: dict[str, str] = Field(default_factory=dict)
    # webhooks: Standard Webhooks signing key (generated into the data dir when unset), delivery retries
    webhook_secret: str | None = None
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_seconds: float = Field(default=5.0, ge=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # URLs fetched for a client (webhooks, image URLs) may reach loopback/private/link-local hosts only when set
    allow_private_urls: bool = False
    # the Responses API's hosted `web_search` tool: a SearXNG-compatible JSON endpoint (GET <url>?q=..&format=json);
    # unset means requests with a web_search tool get a 400 saying web search is not configured
    web_search_url: str | None = None
    web_search_timeout: float = Field(default=10.0, gt=0)
    web_search_max_results: int = Field(default=5, ge=1, le=20)
    # how long a stored Responses API response may wait in memory before its batched write (seconds)
    responses_flush_seconds: float = Field(default=0.2, gt=0)
    # POST /api/prompt-rewrite (docs/catalog.md): the chat model that rewrites (unset: the built-in SmolLM2,
    # catalog/builtin.SMOLLM2_ID), its instructions per task (merged over PROMPT_REWRITE_INSTRUCTIONS), the longest
    # prompt it takes (characters), and how it samples (n > 1 needs some temperature to differ)
    prompt_rewrite_model: str | None = None
    prompt_rewrite_instructions: dict[str, str] = Field(default_factory=dict)
    prompt_rewrite_max_chars: int = Field(default=2000, ge=1)
    prompt_rewrite_max_tokens: int = Field(default=160, ge=1, description="per rewritten prompt")
    prompt_rewrite_temperature: float = Field(default=0.8, ge=0, le=2)

    @field_validator("prompt_rewrite_instructions", mode="after")
    @classmethod
    def _rewrite_defaults(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: text for k, text in {**PROMPT_REWRITE_INSTRUCTIONS, **v}.items() if text.strip()}

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @property
    def resolved_database_url(self) -> str:
        return normalize_database_url(self.database_url or f"sqlite:///{(self.data_dir / 'modelyard.db').resolve()}")

    @property
    def resolved_spool_dir(self) -> Path:
        return (self.spool_dir or self.data_dir / "spool").expanduser()

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))


class _FileSource(PydanticBaseSettingsSource):
    """Reads the YAML config file that load_settings resolved for this build."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_path.get()
        return read_config_file(path) if path else {}


def normalize_database_url(url: str) -> str:
    """Accept the URL forms people paste and pick the async driver for them."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    if url.startswith("sqlite:///") and not url.startswith("sqlite+"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
    return url


def _read_secret_file(match: re.Match[str]) -> str:
    """${file:/run/secrets/name}: the file's contents, less the trailing newline (Docker and Kubernetes secrets)."""
    path = Path(match.group(1).strip()).expanduser()
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise SystemExit(f"config: cannot read the secret file {path} ({exc.strerror})") from None


def _interpolate(value: Any) -> Any:
    """Replace ${VAR}, ${VAR:-default} and ${file:/path} in strings, so secrets stay in the environment or in
    files of their own."""
    if isinstance(value, str):
        value = _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
        return _FILE_REF.sub(_read_secret_file, value)  # after: a file's contents are not interpolated again
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise SystemExit(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise SystemExit(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SystemExit(f"config file {path} must hold a mapping at the top level")
    return _interpolate(data)


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("MODELYARD_CONFIG")
    if env:
        return Path(env)
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.exists() else None


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from the config file, the environment and explicit overrides (highest)."""
    token = _config_path.set(find_config_file(config_file))
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _config_path.reset(token)
