"""Django settings, fed from the typed environment contract in :mod:`sam3site.config`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url

from sam3site.config import BASE_DIR, get_config
from sam3site.logging import configure_logging
from sam3site.processes import SERVING_ENV, WORKER_QUEUE_ENV

CONFIG = get_config()
configure_logging(CONFIG.log_level)
LOGGING_CONFIG = None  # loguru owns logging; stdlib records are routed into it


def _secret_key() -> str:
    if CONFIG.django_secret_key:
        return CONFIG.django_secret_key
    # Embedded default: one key per data directory, shared by every process that uses it.
    key_file = CONFIG.data_dir / "secret_key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = CONFIG.debug
ALLOWED_HOSTS = CONFIG.allowed_hosts

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "corsheaders",
    "django_prometheus",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "sam3site",
    "accounts",
    "uploads",
    "inference",
    "segmentation",
    "sessions.apps.VideoSessionsConfig",
    "studio",
    "labelstudio",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "sam3site.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "sam3site.urls"
ASGI_APPLICATION = "sam3site.asgi.application"
WSGI_APPLICATION = "sam3site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- data stores ---
if CONFIG.database_url:
    # A bounded pool per process: threads borrow a connection per request or task and give it back,
    # so a process never holds more than DATABASE_POOL_SIZE however many threads it runs.
    DATABASES = {"default": dj_database_url.parse(CONFIG.database_url, conn_max_age=0)}
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1, "max_size": CONFIG.database_pool_size, "timeout": CONFIG.database_pool_timeout_seconds,
            "max_idle": 60,
        }
        # A peer that stops answering (partition, paused host) is noticed by TCP within ~10 s, not hours.
        DATABASES["default"]["OPTIONS"].update(
            {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 10_000}
        )
        if os.environ.get(WORKER_QUEUE_ENV):
            # Model workers (docs/video-sessions.md, "Ownership"): a claim waits at most 2 s for a row
            # lock (the watchdog tries again next round), and the server ends a worker's transaction
            # left idle for 5 s (a paused or cut-off worker), releasing its locks; the server's own
            # keepalives drop a connection whose worker vanished.
            DATABASES["default"]["OPTIONS"]["options"] = (
                "-c lock_timeout=2s -c idle_in_transaction_session_timeout=5s"
                " -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
            )
            # A pooled connection the server dropped (restart, failover) is found out when it is
            # taken (psycopg_pool's check), not by a frame write that would then have to be tried again.
            DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    CONFIG.data_dir.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(CONFIG.data_dir / "db.sqlite3"),
            # Every transaction takes the write lock when it begins (waiting up to the timeout): in
            # SQLite's default deferred mode, a transaction that reads and then writes fails at once
            # with "database is locked" when another connection writes meanwhile (the session
            # writer beside web requests). WAL lets readers go on while one connection writes.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL"},
        }
    }
# Prometheus database metrics
DATABASES["default"]["ENGINE"] = DATABASES["default"]["ENGINE"].replace(
    "django.db.backends.", "django_prometheus.db.backends."
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = CONFIG.redis_url
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CONFIG.redis_key_prefix,
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            # Redis pub/sub: one PUBLISH per event, pushed to the subscribed web process, where the
            # core layer's sorted sets take four round trips to send and a BZPOPMIN loop to receive
            # (2-3 ms per event, bench/bench_live.py). Consumers read events as they arrive; what a
            # slow client may hold back is bounded by the session socket's ack window. Pub/sub
            # channels span Redis databases: the prefix keeps deployments sharing a Redis apart.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{CONFIG.redis_key_prefix}:asgi"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- inference: the one gateway between web processes and the model, chosen like CACHES ---
# With REDIS_URL: model workers in their own processes (manage.py run_workers), reached through
# Celery. Embedded default: the model runs inside the serving process.
INFERENCE_GATEWAY = "inference.gateway.CeleryGateway" if REDIS_URL else "inference.inprocess.InProcessGateway"
SERVING = bool(os.environ.get(SERVING_ENV))  # a daphne child of manage.py serve (not a command, not a worker)
AUTO_MIGRATE = CONFIG.embedded  # the embedded quick start migrates its SQLite database when it serves

# --- Celery (embedded default: tasks run in-process) ---
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{CONFIG.redis_key_prefix}:"}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": f"{CONFIG.redis_key_prefix}:"}
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- auth ---
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True  # serve app static files without collectstatic on the embedded default
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- uploads: streamed to disk under UPLOAD_DIR, never held in memory ---
UPLOAD_DIR: Path = CONFIG.upload_dir
OUTPUT_DIR: Path = CONFIG.output_dir
MAX_UPLOAD_BYTES = CONFIG.max_upload_size_mb * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(UPLOAD_DIR / ".incoming")
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
FILE_UPLOAD_HANDLERS = ["uploads.handlers.BoundedUploadHandler"]
FILE_UPLOAD_PERMISSIONS = 0o640
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # non-file fields only
MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb bound (e.g. 8000 x 8000)

# --- API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.ApiKeyPolicy"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.RateAndQuotaThrottle"],
    "DEFAULT_PARSER_CLASSES": [
        "sam3site.parsers.JSONParser", "sam3site.parsers.FormParser", "sam3site.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "sam3site.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "sam3site.schema.ApiAutoSchema",  # adds the error responses to every operation
    "EXCEPTION_HANDLER": "sam3site.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SAM3 inference server",
    "DESCRIPTION": "Segment Anything Model 3 behind an authenticated API. Send your key in the X-API-Key header.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "PromptLabelEnum": [(0, 0), (1, 1)],  # box and point labels: 1 positive, 0 negative
        "SessionKindEnum": "sessions.models.VideoSession.Kind",  # two fields named "kind": name each
        "PromptKindEnum": "sessions.models.SessionPrompt.Kind",
    },
}

REQUIRE_API_KEY = CONFIG.require_api_key
STATIC_API_KEYS = CONFIG.api_keys
# Only reachable on the embedded quick start or with DEBUG: elsewhere the config refuses them.
STATIC_API_KEY_WARNINGS = [
    f"API_KEYS {problem}: anyone can use it; set your own keys before exposing this server"
    for problem in CONFIG.weak_static_keys()
]
RATE_LIMIT_ENABLED = CONFIG.rate_limit_enabled
RATE_LIMIT_REQUESTS_PER_MINUTE = CONFIG.rate_limit_requests_per_minute
RATELIMIT_USE_CACHE = "default"

# --- CORS ---
CORS_ALLOW_ALL_ORIGINS = "*" in CONFIG.cors_origins_list
CORS_ALLOWED_ORIGINS = [origin for origin in CONFIG.cors_origins_list if origin != "*"]
from corsheaders.defaults import default_headers  # noqa: E402

CORS_ALLOW_HEADERS = (*default_headers, "x-api-key", "x-request-id")
CORS_EXPOSE_HEADERS = ["Retry-After", "X-Request-ID"]

# --- metrics: exported by the serving process only (see sam3site.metrics) ---
ENABLE_METRICS = CONFIG.enable_metrics
METRICS_PORT = CONFIG.metrics_port

# --- security (production: DEBUG=False behind a TLS proxy) ---
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = CONFIG.secure_ssl_redirect
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probes speak plain HTTP inside the cluster
SECURE_HSTS_SECONDS = 0 if DEBUG else 31_536_000
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SESSION_COOKIE_SECURE = not DEBUG and SECURE_SSL_REDIRECT
CSRF_COOKIE_SECURE = not DEBUG and SECURE_SSL_REDIRECT
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
