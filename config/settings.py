"""Arbiter settings: one module, every value from the environment.

Two modes:
- ``embedded`` (default): SQLite, Celery over kombu's filesystem transport, results in files,
  a secret key generated once per checkout under ``var/``. Nothing to install but Python.
- ``production``: PostgreSQL and Redis from ``DATABASE_URL`` / ``CELERY_BROKER_URL``; refuses to
  start without ``SECRET_KEY`` and ``ALLOWED_HOSTS``; secure cookies and HSTS.

A bad value stops start-up with ``ImproperlyConfigured`` naming the variable (see ``config.env``).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config import env
from config.queues import CELERY_TASK_QUEUES, CELERY_TASK_ROUTES, DEFAULT_QUEUE

BASE_DIR = Path(__file__).resolve().parent.parent

MODE = env.choice("ARBITER_MODE", ("embedded", "production"), "embedded")
PRODUCTION = MODE == "production"

# Runtime state of the embedded mode (SQLite file, broker folders, generated secret).
VAR_DIR = env.directory("ARBITER_VAR_DIR", BASE_DIR / "var")
ARTIFACTS_DIR = env.directory("ARTIFACTS_DIR", BASE_DIR / "artifacts")
SHARED_DATA_DIR = env.directory("ARBITER_SHARED_DATA_DIR", BASE_DIR.parent / "shared" / "data")


def _secret_key() -> str:
    key = env.string("SECRET_KEY", "")
    if key:
        if PRODUCTION and (len(key) < 50 or key.startswith("django-insecure")):
            raise ImproperlyConfigured("SECRET_KEY: use at least 50 random characters in production")
        return key
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is required in production (ARBITER_MODE=production); "
            'generate one with: python -c "import secrets; print(secrets.token_urlsafe(64))"'
        )
    # Embedded mode: a random key per checkout, kept so sessions survive restarts.
    # Never a literal in the source: a key that ships with the code is nobody's secret.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.boolean("DEBUG", not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG: must be false in production")

ALLOWED_HOSTS = env.csv_list("ALLOWED_HOSTS", env.REQUIRED if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.csv_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "annotation",
    "modeling",
]

MIDDLEWARE = [
    # First, so every log line of the request (and every task it sends) carries its id.
    "config.observability.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A connection lost under a running request answers 503 + Retry-After, not 500.
    "config.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
            ],
        },
    },
]

DATABASES = {
    "default": env.database(
        "DATABASE_URL",
        env.REQUIRED if PRODUCTION else f"sqlite:///{VAR_DIR / 'arbiter.sqlite3'}",
    )
}
DATABASES["default"]["CONN_MAX_AGE"] = env.integer("DATABASE_CONN_MAX_AGE", 60 if PRODUCTION else 0, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL: the labeling statements are PREPAREd once per connection (config/db.py). Set false
# behind a PgBouncer in transaction mode, which hands each transaction another server connection.
DATABASE_PREPARED_STATEMENTS = env.boolean("DATABASE_PREPARED_STATEMENTS", True)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web process and the workers share one SQLite file: WAL lets readers run beside the
    # writer, and the busy timeout makes a writer wait for the lock instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not Django's in-memory default: integration tests start real worker processes
    # that must open the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (config/login.py): after this many failed logins for one username, or from one
# address, within the window, further attempts are refused (429) until the oldest failure ages out.
# An address gets more tries than a username: a whole office can sit behind one NAT address.
LOGIN_MAX_FAILURES_PER_USERNAME = env.integer("ARBITER_LOGIN_MAX_FAILURES", 5, minimum=1)
LOGIN_MAX_FAILURES_PER_IP = env.integer("ARBITER_LOGIN_MAX_FAILURES_PER_IP", 20, minimum=1)
LOGIN_FAILURE_WINDOW_S = env.integer("ARBITER_LOGIN_WINDOW_S", 15 * 60, minimum=1)
# Reverse proxies in front of gunicorn that append to X-Forwarded-For (0: clients connect directly).
# Behind a proxy, leaving this at 0 makes every client the proxy's address for the throttle.
NUM_PROXIES = env.integer("NUM_PROXIES", 0, minimum=0)

# What one imported file may hold (annotation/importers/reading.py reads it as a stream against these; each
# error names the variable it hit). Memory per import is bounded by them, not by the file: a gzip
# bomb stops at the decompressed limit, a giant line at the line limit, while they are read.
IMPORT_LIMITS = {
    "max_bytes": env.integer("ARBITER_IMPORT_MAX_BYTES", 200 * 2**20, minimum=1),
    "max_decompressed_bytes": env.integer("ARBITER_IMPORT_MAX_DECOMPRESSED_BYTES", 200 * 2**20, minimum=1),
    "max_line_bytes": env.integer("ARBITER_IMPORT_MAX_LINE_BYTES", 2**20, minimum=64),
    "max_field_chars": env.integer("ARBITER_IMPORT_MAX_FIELD_CHARS", 200_000, minimum=1),
    "max_depth": env.integer("ARBITER_IMPORT_MAX_DEPTH", 32, minimum=4),
    "max_lines": env.integer("ARBITER_IMPORT_MAX_LINES", 1_000_000, minimum=1),
}

# The cache holds the login throttle's counters, so it is the database: shared by every gunicorn
# worker and web host (locmem is per process: 4 workers would allow 4x the guesses, and a
# restart would forget them), atomic where it matters (cache.add is an INSERT on the key), and no
# new dependency: sessions already live there, while login must keep working through a Redis
# restart as labeling does. `migrate` creates the table (annotation/apps.py); the test database
# gets it from Django's test runner.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "arbiter_cache",
        # The default (300) would let a guesser spraying usernames cull its own counters.
        "OPTIONS": {"MAX_ENTRIES": 1_000_000},
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.string("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.directory("STATIC_ROOT", BASE_DIR / "staticfiles")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request if it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security (production) -------------------------------------------------------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.boolean("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- REST API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "annotation.authentication.FastTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies only (imports opt into multipart): form encodings read "" as a missing field and
    # "0" as false, so the same request meant different things by content type (schemathesis).
    # StoredTextJSONParser: JSON that PostgreSQL can store and Python can decode (config/api.py).
    "DEFAULT_PARSER_CLASSES": ["config.api.StoredTextJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "config.api.StrictPageNumberPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Arbiter API",
    "DESCRIPTION": "Human preference data for LLM responses, and the RLHF loop on it.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from our own static files (drf-spectacular-sidecar), not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The 400/403/404 every operation can answer, documented once (found missing by schemathesis).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "config.api.document_common_errors"],
    # Request and response components apart, so a request's non-blank strings say minLength 1.
    "COMPONENT_SPLIT_REQUEST": True,
    # Jobs (sampling passes, judge runs) share one set of states: one named enum, not two guesses.
    "ENUM_NAME_OVERRIDES": {"JobStateEnum": "config.jobs.JobState"},
}

# --- Celery ------------------------------------------------------------------------------------
# Embedded: kombu's filesystem transport (no server) and a file result backend. The folders are
# shared by the web process, the workers and beat, so they must sit on one machine's disk.
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.string("CELERY_BROKER_URL", env.REQUIRED if PRODUCTION else "filesystem://")
CELERY_RESULT_BACKEND = env.string(
    "CELERY_RESULT_BACKEND",
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else f"file://{VAR_DIR / 'results'}",
)
if not CELERY_BROKER_URL.startswith(("filesystem://", "redis://", "rediss://", "amqp://")):
    raise ImproperlyConfigured(f"CELERY_BROKER_URL: expected filesystem://, redis:// or amqp://, got {CELERY_BROKER_URL!r}")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
        # The folder is polled; kombu's default second would be most of a live turn's time to
        # first token (modeling/services/live.py). A listdir every 0.1 s costs the workers nothing.
        "polling_interval": 0.1,
    }
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis hands an unacknowledged message (acks_late) to another worker after this long: it must
    # outlast the longest task, or a 2-hour round would be started again beside itself after 1 h.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.integer("CELERY_TASK_TIME_LIMIT", 6 * 3600, minimum=1) + 3600}
if CELERY_RESULT_BACKEND.startswith("file://"):
    Path(CELERY_RESULT_BACKEND[len("file://"):]).mkdir(parents=True, exist_ok=True)

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_QUEUES = CELERY_TASK_QUEUES
CELERY_TASK_ROUTES = CELERY_TASK_ROUTES
CELERY_TASK_DEFAULT_QUEUE = DEFAULT_QUEUE
# Never run tasks in the calling process: the web process must not load models.
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_TIME_LIMIT = env.integer("CELERY_TASK_TIME_LIMIT", 6 * 3600, minimum=1)
# A web request that queues a job must not hang on a broker that is down: try briefly, then the
# job's row stays QUEUED and the watchdog re-sends it (config.jobs).
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_TASK_SOFT_TIME_LIMIT = env.integer("CELERY_TASK_SOFT_TIME_LIMIT", 6 * 3600 - 60, minimum=1)
# One message at a time per process: a long training task must not sit on prefetched work.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# Periodic work, all of it, each entry with the reason it runs.
CELERY_BEAT_SCHEDULE = {
    # A labeler who walks away must not hold a comparison forever. The queue already ignores
    # expired leases when it picks work; this ends them in the table so dashboards and
    # per-labeler lease caps see the truth.
    "expire-stale-leases": {
        "task": "annotation.tasks.assignments_expire",
        "schedule": float(env.integer("ARBITER_EXPIRE_LEASES_EVERY_S", 60, minimum=5)),
    },
    # A worker killed mid-round leaves its round "running" with a heartbeat that stopped: this
    # marks it failed (an admin retries it, resuming at the unfinished step), and re-sends rounds
    # whose Celery message was lost while they sat queued.
    # Rounds, sampling runs and exports still queued 10 minutes on get their message again: it was
    # lost with a broker that was down (the request still answered 202) or restarted empty.
    "jobs-watchdog": {"task": "modeling.tasks.jobs_watchdog", "schedule": 60.0},
    # A round's policy waiting for labelers' verdict (project rule "if_humans_prefer") joins the
    # committee or stays out once its evaluation pairs have the project's minimum of labels.
    "policies-admit": {"task": "modeling.tasks.policies_admit", "schedule": 60.0},
    # Scheduled retraining: a project with its schedule on gets a round once it has gathered
    # round_min_new_judgments new judgments (both are project settings admins edit on the page).
    "rounds-start-due": {
        "task": "modeling.tasks.rounds_start_due",
        "schedule": float(env.integer("ARBITER_ROUND_SCHEDULE_EVERY_S", 300, minimum=10)),
    },
}

# --- Arbiter -------------------------------------------------------------------------------------
# Demo project and users are loaded on the embedded first start; never in production.
ARBITER_DEMO = env.boolean("ARBITER_DEMO", not PRODUCTION)
# Prompts the demo's committee answers by itself on the first start (0: none), so that a labeler
# has comparisons within about a minute of `make run` (annotation/demo.py).
ARBITER_DEMO_FIRST_PASS = env.integer("ARBITER_DEMO_FIRST_PASS", 16, minimum=0)
if PRODUCTION and ARBITER_DEMO:
    raise ImproperlyConfigured("ARBITER_DEMO: demo users have published passwords; never enable it in production")

# Every line carries the request id (also answered as X-Request-ID) and the Celery task id; a task
# sent during a request carries that request's id (config.observability). JSON lines in
# production for log shippers, readable lines in the embedded mode.
LOG_FORMAT = env.choice("LOG_FORMAT", ("json", "plain"), "json" if PRODUCTION else "plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "config.observability.ContextFilter"},
        "client_errors": {"()": "config.observability.ClientErrorsWithoutTraceback"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s task=%(task_id)s] %(message)s"},
        "json": {"()": "config.observability.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context", "client_errors"]}},
    # At INFO, RequestContextMiddleware also logs one line per request (logger arbiter.request).
    "root": {"handlers": ["console"], "level": env.string("LOG_LEVEL", "INFO")},
}
# Workers log through the configuration above (ids included): CELERY_WORKER_HIJACK_ROOT_LOGGER is
# False (Celery section).
