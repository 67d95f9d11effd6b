"""Settings shared by every way of running FuseDC.

Everything comes from the environment. When a variable is absent the embedded default applies:
SQLite, no Redis (in-process channel layer, Celery tasks run in-process), the twin as plant.
"""

import secrets
from datetime import timedelta
from pathlib import Path

import environ
import plotly

BASE_DIR = Path(__file__).resolve().parents[2]
# Runtime state of the embedded default (SQLite file, generated secret key); never committed.
VAR_DIR = Path(environ.Env().str("FUSEDC_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()


def _embedded_secret_key() -> str:
    """A per-checkout random key for the embedded default, so no key ever lives in the repo."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _embedded_secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "django_filters",
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    # Ours, lowest first: control -> inference -> telemetry -> facility.
    "facility",
    "telemetry",
    "inference",
    "control",
]

MIDDLEWARE = [
    # First, so it times everything below it.
    "config.metrics.RequestMetricsMiddleware",
    # A lost database or Redis connection answers 503 + Retry-After (config/faults.py), not 500.
    "config.faults.ServiceUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # https://whitenoise.readthedocs.io/en/stable/django.html — static files straight from the ASGI server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
    # Names the signed-in user on audit entries written from model signals (envelope edits).
    "control.middleware.AuditActorMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "facility.context_processors.navigation",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
# DATABASE_URL=postgres://user@host:5432/name for production; SQLite file in var/ otherwise.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'fusedc.sqlite3'}")}
# Per request by default: under ASGI a persistent connection is left open per thread until garbage-collected
# (https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-connections), and uvicorn piled them up
# until PostgreSQL refused clients (bench/dashboard.py). Celery workers are synchronous and reuse theirs
# (the Procfile sets CONN_MAX_AGE for them).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded default writes telemetry from a thread while pages read: WAL lets both proceed. Writers
    # from several threads (writer, twin, beat, requests) take the write lock when a transaction begins
    # (IMMEDIATE), so they wait up to `timeout` instead of failing with "database is locked" on upgrade.
    DATABASES["default"]["OPTIONS"] = {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                                       "timeout": 20, "transaction_mode": "IMMEDIATE"}
# Series' uniqueness treats NULL units as equal on PostgreSQL; SQLite (embedded) cannot express it.
SILENCED_SYSTEM_CHECKS = ["models.W047"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker and results, channel layer, telemetry buffer --------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED = not REDIS_URL

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 times out reads after 5 s, exactly channels-redis' blocking receive: without a
                # longer timeout every idle websocket consumer is torn down (django/channels_redis#422).
                "hosts": [{"address": REDIS_URL, "socket_timeout": 10}],
                # channels-redis drops group messages silently when a channel is full (default 100):
                # live views send one message per tick, so 1,000 is ~minutes of slack for a slow tab.
                "capacity": env.int("CHANNEL_CAPACITY", default=1000),
                "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Shared cache (login and per-token rate limits must hold across processes): Redis when configured.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# --- Celery ---------------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or None
# Embedded default: no broker, tasks run in the calling process (same code path, no worker).
CELERY_TASK_ALWAYS_EAGER = EMBEDDED
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Results are short-lived plumbing; domain outcomes live in our own models.
CELERY_RESULT_EXPIRES = env.int("CELERY_RESULT_EXPIRES", default=3600)
# One task at a time per process: inference and control tasks are long; raise for tiny ingest tasks only.
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1)
# Every task gets limits; raise the hard limit if training runs as a task on slow hardware.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# One worker per queue in production (Procfile); routing by the app that owns the task.
CELERY_TASK_ROUTES = {
    "telemetry.*": {"queue": "ingest"},
    "inference.*": {"queue": "inference"},
    "control.*": {"queue": "control"},
}
CELERY_BEAT_SCHEDULE = {
    # Writers: store buffered telemetry. Expires so a backlog of triggers never piles up behind a slow one.
    "telemetry-drain": {"task": "telemetry.tasks.drain_buffer", "schedule": 1.0, "options": {"expires": 2}},
    # Forecaster: one batched decode step for every GPU stream that advanced (inference worker, one process).
    "inference-step": {"task": "inference.tasks.forecast_step", "schedule": 5.0, "options": {"expires": 10}},
    "telemetry-rollups": {"task": "telemetry.tasks.roll_up", "schedule": 30.0, "options": {"expires": 30}},
    "telemetry-retention": {"task": "telemetry.tasks.enforce_retention", "schedule": 3600.0},
    "telemetry-scrape": {"task": "telemetry.tasks.scrape_targets", "schedule": 5.0, "options": {"expires": 5}},
    # Policy runner: each enabled PolicyRun decides when its own interval has passed (control.runner).
    "control-policies": {"task": "control.tasks.run_policies", "schedule": 10.0, "options": {"expires": 10}},
    # Control sweeps: expire stale proposals, watch applied changes (rollback on breach), telemetry watchdog.
    "control-expire": {"task": "control.tasks.expire_changes", "schedule": 60.0, "options": {"expires": 60}},
    "control-watch": {"task": "control.tasks.watch_changes", "schedule": 15.0, "options": {"expires": 15}},
    "control-watchdog": {"task": "control.tasks.telemetry_watchdog", "schedule": 30.0, "options": {"expires": 30}},
}
# A worker counts as alive while its heartbeat (written from its event loop) is younger than this.
WORKER_HEARTBEAT_INTERVAL = env.float("WORKER_HEARTBEAT_INTERVAL", default=5.0)
WORKER_HEARTBEAT_TTL = env.int("WORKER_HEARTBEAT_TTL", default=30)
# Queues /healthz requires a live worker for (production). Empty: workers are reported, not required.
HEALTHZ_REQUIRED_QUEUES = env.list("HEALTHZ_REQUIRED_QUEUES", default=[])
# Bearer token Prometheus uses to scrape /metrics (staff users may also open it). Unset: staff only.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Auth -----------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# https://django-axes.readthedocs.io/en/latest/4_configuration.html — lock a username from an address after
# repeated failures; every attempt is recorded (admin: Axes > Access attempts / logs).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "facility:overview"
LOGOUT_REDIRECT_URL = "login"

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its `Bearer` challenge makes requests without credentials 401 rather than 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "facility.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Reads need the view permission too: the same role rules as pages and admin.
    "DEFAULT_PERMISSION_CLASSES": ["facility.api.permissions.ModelPermissions"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "facility.api.pagination.IdCursorPagination",
    # ?field=value filters (each view's filterset) and ?ordering=field over its `ordering_fields`.
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend",
                                "rest_framework.filters.OrderingFilter"],
    "EXCEPTION_HANDLER": "facility.api.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "FuseDC API",
    "DESCRIPTION": "GPU and cooling telemetry, forecasts and supervised setpoint control.",
    "VERSION": "1",
    # Swagger UI and ReDoc assets from the installed sidecar package: no CDN.
    # The schema and its docs pages for signed-in users and API tokens only, like every other page.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SERVE_INCLUDE_SCHEMA": False,  # the schema does not describe its own endpoint
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents the errors the layers around it can give (facility/api/openapi.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "facility.api.openapi.add_error_responses"],
    # No badge from the online validator (validator.swagger.io): nothing leaves the site.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- Security headers (every settings module; production adds HSTS and the SSL redirect) -------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): nothing from another origin, no inline scripts (pages keep their
# data in <script type="application/json"> and their code in static files). 'unsafe-eval' only because
# plotly.js compiles its WebGL (scattergl) shaders' accessors with `new Function`; inline styles because
# plotly.js and ReDoc set style attributes. Websockets to the same host are covered by 'self'.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", "'unsafe-eval'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Internationalisation, static -----------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# plotly.js from the installed plotly package (its package_data ships plotly.min.js): no CDN.
STATICFILES_DIRS = [BASE_DIR / "static", ("vendor/plotly", Path(plotly.__file__).parent / "package_data")]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# --- Telemetry --------------------------------------------------------------------------------------
# A writer that has held buffer entries this long without acknowledging them is presumed dead.
TELEMETRY_RECLAIM_IDLE_MS = env.int("TELEMETRY_RECLAIM_IDLE_MS", default=30_000)
# Backpressure: while the buffer holds this many batches (writers behind, or the database down), ingest answers
# 503 with Retry-After and accepts nothing, so the buffer (Redis memory) stays bounded and nothing accepted is lost.
TELEMETRY_BUFFER_MAX_ENTRIES = env.int("TELEMETRY_BUFFER_MAX_ENTRIES", default=50_000)
# Samples older or further in the future than this are refused (clock errors, replays of old files).
TELEMETRY_MAX_AGE_SECONDS = env.int("TELEMETRY_MAX_AGE_SECONDS", default=7 * 86400)
TELEMETRY_MAX_FUTURE_SECONDS = env.int("TELEMETRY_MAX_FUTURE_SECONDS", default=300)
# Largest ingest request body; bigger ones get 413 before parsing.
TELEMETRY_MAX_BODY_BYTES = env.int("TELEMETRY_MAX_BODY_BYTES", default=16 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = TELEMETRY_MAX_BODY_BYTES
# Raw samples are kept this many days (whole daily partitions dropped); rollups longer.
TELEMETRY_RETENTION_RAW_DAYS = env.int("TELEMETRY_RETENTION_RAW_DAYS", default=7)
TELEMETRY_RETENTION_1M_DAYS = env.int("TELEMETRY_RETENTION_1M_DAYS", default=90)
TELEMETRY_RETENTION_1H_DAYS = env.int("TELEMETRY_RETENTION_1H_DAYS", default=730)
# Live views: a GPU, unit or source without data for this long is flagged stale.
TELEMETRY_LIVE_STALE_SECONDS = env.int("TELEMETRY_LIVE_STALE_SECONDS", default=30)

# --- Inference (inference/serving.py) --------------------------------------------------------------
# Streams need telemetry this recent to be forecast; quiet streams' caches are dropped after the second.
INFERENCE_FRESH_SECONDS = env.int("INFERENCE_FRESH_SECONDS", default=600)
INFERENCE_EVICT_SECONDS = env.int("INFERENCE_EVICT_SECONDS", default=300)
INFERENCE_FORECAST_RETENTION_HOURS = env.int("INFERENCE_FORECAST_RETENTION_HOURS", default=24)

# --- Control (control/envelope.py, control/changes.py) ---------------------------------------------
# Refuse raising a supply temperature while a GPU it cools is within this margin of its slowdown temperature.
CONTROL_SLOWDOWN_TEMPERATURE_C = env.float("CONTROL_SLOWDOWN_TEMPERATURE_C", default=89.0)  # H100
CONTROL_THERMAL_MARGIN_K = env.float("CONTROL_THERMAL_MARGIN_K", default=4.0)
# A GPU at or above this after an application is a breach: the change is rolled back (H100 max operating).
CONTROL_THERMAL_LIMIT_C = env.float("CONTROL_THERMAL_LIMIT_C", default=87.0)
# CRAH coil: supply air at least chilled-water supply + this.
CONTROL_COIL_APPROACH_K = env.float("CONTROL_COIL_APPROACH_K", default=3.0)
# Watchdog: telemetry older than this refuses changes and pauses controllers; raise for slow scrapers.
CONTROL_TELEMETRY_MAX_AGE_SECONDS = env.int("CONTROL_TELEMETRY_MAX_AGE_SECONDS", default=120)
# Share of the affected GPUs that must report within that age (a dead GPU alone does not block control).
CONTROL_MIN_REPORTING_FRACTION = env.float("CONTROL_MIN_REPORTING_FRACTION", default=0.9)
# Pending proposals expire after this; the watch window after an application lasts this long.
CONTROL_PROPOSAL_TTL_SECONDS = env.int("CONTROL_PROPOSAL_TTL_SECONDS", default=3600)
CONTROL_WATCH_SECONDS = env.int("CONTROL_WATCH_SECONDS", default=600)
# An approved change held by dwell or rate waits up to this long on the control queue, then fails.
CONTROL_APPLY_MAX_WAIT_SECONDS = env.int("CONTROL_APPLY_MAX_WAIT_SECONDS", default=900)
# A change stuck in Applying this long (worker died mid-write) is reconciled from the plant's read-back.
CONTROL_APPLYING_STALE_SECONDS = env.int("CONTROL_APPLYING_STALE_SECONDS", default=120)
# Actuator: "auto" (Modbus where a point has a register map, else the twin), "twin" or "modbus".
CONTROL_ACTUATOR = env.str("CONTROL_ACTUATOR", default="auto")
# Production twin actuator: commands go over Redis to `manage.py twin run`; wait this long for its answer.
CONTROL_TWIN_COMMAND_TIMEOUT_SECONDS = env.float("CONTROL_TWIN_COMMAND_TIMEOUT_SECONDS", default=5.0)

# The `llm` control policy (control/policies/llm.py). Empty LLM_BASE_URL: the embedded Gemma 3 270M
# (requirements-llm.txt) through llama-cpp-python; else an OpenAI-compatible endpoint (".../v1").
LLM_BASE_URL = env.str("LLM_BASE_URL", default="")
LLM_MODEL = env.str("LLM_MODEL", default="")
LLM_API_KEY = env.str("LLM_API_KEY", default="")
LLM_TIMEOUT_SECONDS = env.float("LLM_TIMEOUT_SECONDS", default=60.0)
# auto (OpenAI json_schema, falling back once to llama-cpp-python's json_object + schema), json_schema, json_object
LLM_RESPONSE_FORMAT = env.str("LLM_RESPONSE_FORMAT", default="auto")
# A .gguf to run instead of the packaged Gemma 3 270M.
LLM_MODEL_PATH = env.str("LLM_MODEL_PATH", default="")

# --- Inference ----------------------------------------------------------------------------------------
# Trained forecaster checkpoints (safetensors + JSON); ModelVersion rows point here.
MODEL_DIR = Path(env.str("MODEL_DIR", default=str(VAR_DIR / "models")))

# --- Offline RL policy (control/rl, control/policies/rl.py) --------------------------------------------
# `manage.py control train-rl` writes checkpoints here; PolicyModelVersion rows point at them.
CONTROL_RL_MODEL_DIR = Path(env.str("CONTROL_RL_MODEL_DIR", default=str(MODEL_DIR / "rl")))
# Torch threads for training and acting: 1 is fastest on small shared CPUs (more threads spin).
CONTROL_RL_TORCH_THREADS = env.int("CONTROL_RL_TORCH_THREADS", default=1)
