"""The environment contract: every variable the server reads, typed, validated and documented.

Django's settings module is fed from :func:`get_config`; `manage.py config_reference` renders
`docs/configuration.md` from the field descriptions below, so the reference cannot drift.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS_DIR = BASE_DIR / "weights"

# The source document's example keys ("your-api-key-1", "key1", ...): published, so never secret.
EXAMPLE_API_KEY = re.compile(r"^(your-api-key(-[\w-]*)?|key\d*|api-key\d*|changeme|secret)$", re.IGNORECASE)
MIN_STATIC_KEY_LENGTH = 20
MIN_STATIC_KEY_BITS = 80
MIN_DISTINCT_KEY_CHARACTERS = 8


def estimated_key_bits(key: str) -> float:
    """Length times log2 of the alphabet its character classes span: a ceiling, enough to refuse weak keys."""
    classes = ((str.islower, 26), (str.isupper, 26), (str.isdigit, 10), (lambda c: not c.isalnum(), 32))
    alphabet = sum(size for is_member, size in classes if any(is_member(c) for c in key))
    return len(key) * math.log2(max(alphabet, 2))


def static_key_problem(key: str) -> str | None:
    if EXAMPLE_API_KEY.match(key.strip()):
        return "is an example key published in the source document"
    if len(key) < MIN_STATIC_KEY_LENGTH:
        return f"is shorter than {MIN_STATIC_KEY_LENGTH} characters"
    if estimated_key_bits(key) < MIN_STATIC_KEY_BITS or len(set(key)) < MIN_DISTINCT_KEY_CHARACTERS:
        return f"is too predictable (under ~{MIN_STATIC_KEY_BITS} bits); use e.g. `openssl rand -hex 24`"
    return None


LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]


class ConfigurationError(SystemExit):
    """Start-up stops with a message naming each bad variable; no traceback."""


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
    )

    # --- server ---
    server_host: str = Field("0.0.0.0", description="Address the ASGI server listens on.")
    server_port: int = Field(8000, ge=1, le=65535, description="Port the ASGI server listens on.")
    server_workers: int = Field(
        1, ge=1, le=64, description="Web worker processes sharing the port (needs REDIS_URL when above 1)."
    )
    log_level: LogLevel = Field("INFO", description="loguru level: TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR or CRITICAL.")
    reload: bool = Field(False, description="Restart the server when code changes (development only; one worker).")

    # --- model ---
    sam3_checkpoint: Path = Field(
        DEFAULT_WEIGHTS_DIR / "sam3.pt",
        description="SAM3 checkpoint: a directory in the Hugging Face layout (config.json, model.safetensors), "
        "a file inside such a directory, or Meta's sam3.pt alone (converted once into DATA_DIR/checkpoints, "
        "then reused; see docs/model-weights.md).",
    )
    sam3_bpe_path: Path = Field(
        DEFAULT_WEIGHTS_DIR / "bpe_simple_vocab_16e6.txt.gz",
        description="CLIP BPE vocabulary for the text tokenizer; when missing, the checkpoint directory's tokenizer is used.",
    )
    image_model_device: str = Field(
        "cuda:0", pattern=r"^(cpu|cuda(:\d+)?)$", description="Device of the image model: cpu, cuda or cuda:N."
    )
    image_model_compile: bool = Field(False, description="torch.compile the image model.")
    image_model_confidence_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Default score threshold for returned instances."
    )
    image_model_resolution: int = Field(1008, ge=14, le=4096, description="Model input resolution in pixels.")
    image_model_enabled: bool = Field(True, description="Serve image segmentation.")

    # --- video ---
    video_model_enabled: bool = Field(True, description="Serve video sessions.")
    video_model_required: bool = Field(False, description="Refuse to start a worker when the video model cannot load.")
    video_gpu_list: list[int] = Field(
        [0, 1, 2, 3], description="GPU indices used for video, as a JSON list, e.g. [0,1]."
    )
    video_model_compile: bool = Field(False, description="torch.compile the video model.")
    video_model_temporal_disambiguation: bool = Field(
        True, description="SAM3's temporal disambiguation heuristics during video tracking."
    )
    mask_postprocessing: Literal["meta", "off"] = Field(
        "meta",
        description="Mask post-processing: meta (as Meta's SAM3: on video, detection NMS at the model's det_nms_thresh and "
        "holes / specks under fill_hole_area pixels filled / removed; on image clicks and boxes, background holes of up "
        "to 256 low-resolution pixels filled; computed in-project, nothing downloaded) or off (as transformers without "
        "its hub kernel: every video detection kept, no hole filled).",
    )
    video_detection_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Override the video model's detection and new-object score thresholds (unset: the checkpoint's).",
    )

    # --- sessions ---
    video_state_device: Literal["model", "cpu"] = Field(
        "model",
        description="Where a video session's tracking state lives: model (the model's device, fastest) or cpu "
        "(host memory: frees GPU memory per session, costs a copy of the recent memories to the GPU each frame). "
        "Frames are always kept on the CPU, decoded and preprocessed on demand.",
    )
    max_concurrent_sessions: int = Field(10, ge=1, description="Open video sessions allowed at once, server-wide.")
    session_timeout_seconds: int = Field(3600, ge=1, description="Idle time after which a video session expires.")
    session_cleanup_interval_seconds: int = Field(
        300, ge=1, description="How often expired and closed sessions are swept."
    )

    # --- feature cache ---
    enable_feature_cache: bool = Field(True, description="Cache image features between prompts on the same image.")
    feature_cache_ttl_seconds: int = Field(600, ge=1, description="Lifetime of a feature-cache entry.")
    max_cache_size_mb: int = Field(4096, ge=0, description="Bound of the feature cache per worker, in MiB of tensor memory.")

    # --- security ---
    require_api_key: bool = Field(False, description="Demand an X-API-Key on every API request.")
    api_keys: list[str] = Field(
        ["your-api-key-1", "your-api-key-2"],
        description="Static keys accepted besides the database's, as a JSON list. Each acts as its own user. "
        f"Outside the embedded quick start and DEBUG, start-up refuses the source document's example keys "
        f"(your-api-key-*, key1...) and keys under {MIN_STATIC_KEY_LENGTH} characters or ~{MIN_STATIC_KEY_BITS} bits: "
        "set real keys or []. The embedded default keeps the examples and warns in the log and /readyz.",
    )
    cors_origins_list: list[str] = Field(["*"], description='Allowed CORS origins, as a JSON list; ["*"] allows any.')
    stream_url_allowlist: list[str] = Field(
        [],
        description="Hosts and networks that live sessions' stream URLs may reach although they are not public, as a "
        'JSON list of host names, addresses or CIDRs, e.g. ["camera.lan", "10.1.2.0/24"]. Otherwise a source_url is '
        "refused unless every address its host resolves to is global (not loopback, link-local or the 169.254.169.254 "
        "metadata service, private, unique-local, multicast, reserved or unspecified); redirects are checked the same way.",
    )

    # --- rate limiting ---
    rate_limit_enabled: bool = Field(True, description="Per-client rate limiting.")
    rate_limit_requests_per_minute: int = Field(
        100, ge=1, description="Default requests per minute per client (users may have their own)."
    )

    # --- storage ---
    upload_dir: Path = Field(Path("/tmp/sam3_uploads"), description="Where uploaded images and videos are stored.")
    output_dir: Path = Field(Path("/tmp/sam3_outputs"), description="Where results (e.g. per-frame video masks) are written.")
    max_upload_size_mb: int = Field(100, ge=1, description="Largest accepted upload, in MiB; enforced while the body streams.")

    # --- monitoring ---
    enable_metrics: bool = Field(True, description="Export Prometheus metrics on METRICS_PORT.")
    metrics_port: int = Field(9090, ge=1, le=65535, description="Port of the Prometheus metrics endpoint.")

    # --- inference workers (beyond the seed's contract) ---
    inference_queue_limit: int = Field(
        32, ge=1, description="Requests waiting or running per model worker before new ones get 503 + Retry-After."
    )
    inference_timeout_seconds: float = Field(
        60.0, gt=0, description="Deadline of one inference request; an expired request is dropped, not computed."
    )
    inference_max_batch_size: int = Field(
        1, ge=1, le=64, description="Images whose backbone runs in one forward pass when requests arrive together."
    )
    worker_heartbeat_timeout_seconds: float = Field(
        4.0, gt=0, description="A model worker silent this long is considered dead (workers beat every second)."
    )
    worker_metrics_port: int = Field(
        9091, ge=1, le=65535, description="Port of the model workers' Prometheus metrics (served by run_workers)."
    )

    # --- Label Studio ML backend (beyond the seed's contract; docs/label-studio.md) ---
    label_studio_url: str | None = Field(
        None, pattern=r"^https?://[^/?#]+/?$",
        description="Base URL of the Label Studio instance whose tasks the ML backend (/label-studio/) segments, e.g. "
        "http://label-studio:8080. Task URLs such as /data/upload/... are fetched from it with LABEL_STUDIO_API_KEY; "
        "its origin (scheme, host and port) is trusted by name (it may be on the LAN). Unset: only absolute public media "
        "URLs can be fetched.",
    )
    label_studio_api_key: str | None = Field(
        None, min_length=1,
        description="A Label Studio access token to fetch task media with: a legacy token (sent as `Token`) or a "
        "personal access token (a JWT refresh token, exchanged at /api/token/refresh for 5-minute access tokens).",
    )
    label_studio_fetch_timeout_seconds: float = Field(30.0, gt=0, le=600, description="Timeout of one media fetch from Label Studio.")

    # --- deployment (beyond the seed's contract) ---
    database_url: str | None = Field(
        None, description="Database, e.g. postgres://user:pass@host:5432/sam3. Unset: embedded SQLite under DATA_DIR."
    )
    database_pool_size: int = Field(
        8, ge=1, le=200,
        description="Postgres connections per process at most (psycopg pool). A deployment needs "
        "(web processes + model worker processes + 1 for cron) x this, below Postgres's max_connections.",
    )
    database_pool_timeout_seconds: float = Field(
        5.0, gt=0, le=120, description="Wait for a free pooled connection before answering 503 database_unavailable."
    )
    redis_key_prefix: str = Field(
        "sam3", pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="Prefix of every Redis key the server writes (cache, worker registry, admission, replies, "
        "channel layer, Celery), so that deployments or test runs can share one Redis database.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis for Celery, the channel layer, rate counters and caching. "
        "Unset: one process, in-memory layers, inference in-process.",
    )
    django_secret_key: str | None = Field(
        None, min_length=32, description="Django secret key. Unset: generated once and kept in DATA_DIR."
    )
    allowed_hosts: list[str] = Field(["*"], description='Host names served, as a JSON list, e.g. ["sam3.example.com"].')
    debug: bool = Field(False, description="Django debug mode (never in production).")
    secure_ssl_redirect: bool = Field(
        False, description="Redirect plain HTTP to HTTPS (behind a TLS proxy sending X-Forwarded-Proto)."
    )
    data_dir: Path = Field(
        BASE_DIR / "var",
        description="Local state: the embedded default's SQLite file and secret key; in every mode checkpoints/, "
        "the conversions of Meta's sam3.pt (about 3.5 GB each) and remembered file hashes.",
    )

    @field_validator("api_keys")
    @classmethod
    def _keys_not_blank(cls, keys: list[str]) -> list[str]:
        if any(not key.strip() for key in keys):
            raise ValueError("API keys must not be empty strings")
        return keys

    @model_validator(mode="after")
    def _static_keys_fail_closed(self) -> Config:
        if self.embedded or self.debug:
            return self  # the quick start warns instead (weak_static_keys)
        problems = self.weak_static_keys()
        if problems:
            raise ValueError(
                "API_KEYS: refused outside the embedded quick start: "
                + "; ".join(problems)
                + ". Set API_KEYS to your own random keys, or [] to use database keys only."
            )
        return self

    def weak_static_keys(self) -> list[str]:
        """Which API_KEYS entries are examples or weak, described without echoing them."""
        return [
            f"key #{index + 1} {problem}"
            for index, key in enumerate(self.api_keys)
            if (problem := static_key_problem(key)) is not None
        ]

    @field_validator("database_url", "redis_url", "django_secret_key", "label_studio_url", "label_studio_api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def embedded(self) -> bool:
        """One process, no external services: SQLite, in-memory layers, in-process inference."""
        return self.redis_url is None


SECRET_FIELDS = frozenset({"django_secret_key", "api_keys", "database_url", "redis_url", "label_studio_api_key"})


def format_validation_error(error: ValidationError) -> str:
    lines = ["Invalid configuration:"]
    for problem in error.errors():
        if not problem["loc"]:  # a rule across fields: its message names the variable
            lines.append(f"  {problem['msg'].removeprefix('Value error, ')}")
            continue
        field = str(problem["loc"][0])
        shown = "" if field in SECRET_FIELDS else f" (got {problem.get('input')!r})"
        lines.append(f"  {field.upper()}: {problem['msg']}{shown}")
    return "\n".join(lines)


@functools.cache
def get_config() -> Config:
    try:
        return Config()
    except ValidationError as error:
        raise ConfigurationError(format_validation_error(error)) from None
    except SettingsError as error:  # a list or other complex value that is not valid JSON
        match = re.search(r'field "(\w+)"', str(error))
        variable = match.group(1).upper() if match else "a variable"
        raise ConfigurationError(
            f"Invalid configuration:\n  {variable}: error parsing value; lists are JSON, e.g. [0, 1] or [\"a\", \"b\"]"
        ) from None
