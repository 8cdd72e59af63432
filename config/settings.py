"""Project settings, read from environment variables (every one is listed in .env.example).

Two shapes:
- embedded (no DATABASE_URL / REDIS_URL): SQLite, local-memory cache, a file-system Celery broker
  and a SQLite channel layer, so `make run` needs no external server yet background jobs still
  run in their own process and stream progress;
- production (DATABASE_URL and REDIS_URL set): PostgreSQL through psycopg 3, Redis for the cache,
  the Celery broker and the Channels layer. Required secrets stop start-up when missing.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def env_list(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
PRODUCTION_SHAPE = bool(DATABASE_URL and REDIS_URL)
DEBUG = env_bool("DJANGO_DEBUG", default=False)


def required_in_production(name: str) -> None:
    """Stop start-up in production (unless DEBUG): the variable ``name`` is missing or empty."""
    if PRODUCTION_SHAPE and not DEBUG:
        raise ImproperlyConfigured(
            f"The environment variable {name} is required in production "
            "(DATABASE_URL and REDIS_URL are set) but is missing or empty."
        )


def generated_once(name: str, make: Callable[[], str]) -> str:
    """The value of a missing variable ``name`` that production must set: in the embedded shape,
    ``make()`` makes it once and it is kept under var/ (so sessions survive restarts)."""
    required_in_production(name)
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / f".{name.lower()}"
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def mandatory_secret(name: str) -> str:
    """Return a secret that production must have; in the embedded shape, make one and keep it."""
    return os.environ.get(name, "") or generated_once(name, lambda: secrets.token_urlsafe(50))


SECRET_KEY = mandatory_secret("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
SITE_NAME = env_str("SITE_NAME", "Quantfold")
# The public host name, as mails and the Site row name it (links in mails use the request's host).
SITE_DOMAIN = env_str("SITE_DOMAIN", "localhost:8000")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.sites",
    "channels",
    "django_celery_results",
    "rest_framework",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "accounts",
    "backtester",
    "exchanges",
    "risk",
    "copytrading",
]

MIDDLEWARE = [
    "config.observability.PrometheusMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = None
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
                "config.context_processors.site",
                "config.csp.csp_nonce",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "db.sqlite3"),
            # WAL lets the web process read while the worker process writes. IMMEDIATE makes
            # a transaction take the write lock when it begins, so two writers queue up (up to
            # the timeout) instead of one failing with "database is locked" when it upgrades a
            # read to a write (the worker's threads store research chunks concurrently).
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL;",
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, Celery, Channels ------------------------------------------------------------
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "qf"),
        }
    }
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": env_str("CHANNELS_PREFIX", "qf-asgi"),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # kombu's file-system transport: a broker made of files, shared by the web and worker
    # processes of one machine, with no server to run.
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("out", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "control_folder": str(_broker_dir / "control"),
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "config.channel_layers.SQLiteChannelLayer",
            "CONFIG": {"path": str(VAR_DIR / "channels.sqlite3")},
        }
    }

CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
# Live trading work (exchange tests, fills, kill switch, copy orders) runs on its own queue,
# never behind backtests; run a worker with `-Q live` (docker-compose does).
CELERY_LIVE_QUEUE = env_str("CELERY_LIVE_QUEUE", "live")

# --- Auth (django-allauth) --------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
SITE_ID = 1
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "home"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
# The product asks for a clear "already registered" message on sign-up, which means telling
# a visitor that an address has an account (rate limits still apply to every form).
ACCOUNT_PREVENT_ENUMERATION = False
# The password-reset form still answers the same for known and unknown addresses.
ACCOUNT_FORMS = {"reset_password": "accounts.forms.ResetPasswordForm"}
ACCOUNT_EMAIL_VERIFICATION = env_str("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_RATE_LIMITS_ENABLED = True  # allauth keeps the counters in the default cache
ACCOUNT_EMAIL_SUBJECT_PREFIX = f"[{SITE_NAME}] "
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = SITE_NAME
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Email ------------------------------------------------------------------------------
EMAIL_URL_HOST = env_str("EMAIL_HOST")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", f"{SITE_NAME} <no-reply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
if EMAIL_URL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = EMAIL_URL_HOST
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=True)
else:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
    EMAIL_FILE_PATH = VAR_DIR / "mail"

# --- Static files -----------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Outside DEBUG, in both shapes (`make run` collects them too): collectstatic writes each file
# under a content-hashed name with a .gz copy (.br too when Brotli is installed), and
# whitenoise serves those names gzipped with a far-future immutable Cache-Control (plotly.js:
# 4.8 MB raw, 1.5 MB gzipped). STATIC_MANIFEST=0 (the test suite) serves the plain names.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if not DEBUG and env_bool("STATIC_MANIFEST", default=True)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", default=DEBUG)
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"
# Request bodies (config/limits.py): refused from Content-Length before anything reads them.
# Anonymous callers (sign-in, sign-up, the Stripe webhook) never need more than the small limit.
REQUEST_MAX_BODY_BYTES = env_int("REQUEST_MAX_BODY_BYTES", 51 * 1024 * 1024)
REQUEST_MAX_BODY_ANONYMOUS = env_int("REQUEST_MAX_BODY_ANONYMOUS", 1024 * 1024)
# Form fields and JSON bodies held in memory; uploaded files always stream to a temporary file.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.TemporaryFileUploadHandler"]
# An uploaded candle file may decode to at most this much data (a Parquet file compresses a
# thousandfold); its rows are capped by the plan's candles per backtest.
UPLOAD_MAX_DECOMPRESSED_BYTES = env_int("UPLOAD_MAX_DECOMPRESSED_BYTES", 512 * 1024 * 1024)

# --- Internationalisation ---------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security ---------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG and env_bool("DJANGO_SECURE", default=PRODUCTION_SHAPE):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- Logging ----------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "numexpr": {"level": "WARNING"},
    },
}

# --- API ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "accounts.gating.HasPro",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# --- Product --------------------------------------------------------------------------------
# Announced features (config/features.py): off means the pages show them as "coming", not as
# included. Flip a default when the feature ships.
FEATURES = {
    "exchange_accounts": env_bool("FEATURE_EXCHANGE_ACCOUNTS", default=True),
    "copy_trading": env_bool("FEATURE_COPY_TRADING", default=True),
}
DEMO_USER_EMAIL = env_str("DEMO_USER_EMAIL", "demo@example.com")
HEALTH_CHECK_TIMEOUT = float(env_str("HEALTH_CHECK_TIMEOUT", "2.0"))
# /metrics answers only a scraper sending `Authorization: Bearer <METRICS_TOKEN>` or one
# connecting from these networks (CIDR, comma-separated); with neither set it is closed.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS")

# --- API keys, throttling, schema -----------------------------------------------------------
# Personal API keys (`Authorization: Bearer qf_<prefix>_<secret>`) come first so a 401 names
# the Bearer scheme in WWW-Authenticate; the browser keeps its session (with CSRF).
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "accounts.api.auth.ApiKeyAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]
REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"] = "config.pagination.ApiPagination"
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["accounts.api.throttle.PlanRateThrottle"]
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"
# Requests per user per period, by plan code ("anon" is per client IP). Counters live in the
# default cache: Redis in production, so every web process shares them.
API_THROTTLE_RATES = {
    "anon": env_str("API_THROTTLE_ANON", "30/min"),
    "free": env_str("API_THROTTLE_FREE", "60/min"),
    "pro": env_str("API_THROTTLE_PRO", "600/min"),
}
# Client IP for the anonymous throttle: how many proxies in front of daphne append to
# X-Forwarded-For. 0 trusts only REMOTE_ADDR, so a client cannot pick its own address.
REST_FRAMEWORK["NUM_PROXIES"] = env_int("API_NUM_PROXIES", 0)
API_KEYS_MAX_PER_USER = env_int("API_KEYS_MAX_PER_USER", 10)
INSTALLED_APPS += ["drf_spectacular", "drf_spectacular_sidecar"]
SPECTACULAR_SETTINGS = {
    "TITLE": f"{SITE_NAME} API",
    # DESCRIPTION (authentication, errors, pages, rates) is written in config/api_schema.py.
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its pages hold no user data: public, throttled per IP like any anonymous call.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"validatorUrl": None, "persistAuthorization": False},
    # Choice sets that several models share get one stable name instead of a hash suffix.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "backtester.models.Backtest.Status",
        # Monte Carlo's "method" (shuffle, bootstrap, ...) and the research search's (grid,
        # random) would otherwise collide on one name.
        "SearchMethodEnum": "backtester.models.OptimizationJob.Method",
        "MonteCarloMethodEnum": "backtester.models.MonteCarloRun.Method",
        "GridBotStatusEnum": "backtester.models.GridBot.Status",
        "LeaderStatusEnum": "copytrading.models.Leader.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api_schema.add_error_responses",
    ],
}

# --- Exchange credentials ----------------------------------------------------------------------
# Fernet keys (comma-separated) that encrypt exchange API keys and OAuth tokens at rest: the
# first encrypts, all decrypt (exchanges/vault.py). Production must set it; the embedded shape
# generates one under var/ on first run.


def fernet_keys(name: str) -> list[str]:
    return env_list(name) or [
        generated_once(name, lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    ]


EXCHANGE_ENCRYPTION_KEYS = fernet_keys("EXCHANGE_ENCRYPTION_KEYS")

# --- Billing (Stripe) -----------------------------------------------------------------------
# Only accounts/billing/ talks to Stripe. Production needs the secret key, the webhook signing
# secret and the Pro price id, and stops at start-up naming the one that is missing; in the
# embedded shape they may be empty, and the billing pages then say billing is not configured.


def billing_setting(name: str) -> str:
    """A Stripe value that production must have; empty is allowed outside production."""
    value = os.environ.get(name, "").strip()
    if not value:
        required_in_production(name)
    return value


STRIPE_SECRET_KEY = billing_setting("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = billing_setting("STRIPE_WEBHOOK_SECRET")
STRIPE_PRICE_ID = billing_setting("STRIPE_PRICE_ID")  # the Pro plan's monthly price (price_...)
# Empty means Stripe itself; tests point it at localstripe on loopback.
STRIPE_API_BASE = env_str("STRIPE_API_BASE")
# Signed webhooks older than this are refused (Stripe's own default).
STRIPE_WEBHOOK_TOLERANCE = env_int("STRIPE_WEBHOOK_TOLERANCE", 300)
# Every new account starts with Pro for this many days (0: no trial), with or without Stripe;
# a user who buys Pro during the trial is charged only when it ends (Checkout's trial period).
PRO_TRIAL_DAYS = env_int("PRO_TRIAL_DAYS", 7)
# A past_due subscription keeps Pro this many days after the period whose payment failed.
BILLING_GRACE_DAYS = env_int("BILLING_GRACE_DAYS", 3)
# stripe-python logs every request at INFO; warnings are enough (it never logs keys either way).
LOGGING["loggers"]["stripe"] = {"level": "WARNING"}
# Re-read from Stripe every subscription whose period has ended, so losing Pro at the period's
# end never waits on a webhook that may not come.
CELERY_IMPORTS = ["accounts.billing.tasks"]


def beat(task: str, seconds: float, *, queue: str | None = None) -> dict[str, Any]:
    """A Celery beat entry: ``task`` every ``seconds``, sent to ``queue`` when one is given."""
    entry: dict[str, Any] = {"task": task, "schedule": float(seconds)}
    if queue is not None:
        entry["options"] = {"queue": queue}
    return entry


CELERY_BEAT_SCHEDULE = {
    "billing-resync-ended-periods": beat(
        "accounts.billing.resync_ended_periods", env_int("BILLING_RESYNC_SECONDS", 600)
    ),
}

# --- Scanner schedule -------------------------------------------------------------------------
# One beat entry for every watchlist: each minute it queues the scans whose schedule is due
# (backtester.services.scanner.scans_due_enqueue). Merged into whatever schedule the blocks
# above defined.
SCANNER_DUE_CHECK_SECONDS = env_int("SCANNER_DUE_CHECK_SECONDS", 60)
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "scanner-queue-due-scans": beat("backtester.scans_due", SCANNER_DUE_CHECK_SECONDS),
}

# --- Exchange accounts: live work -------------------------------------------------------------
# Live work (connection tests, fill streams, copy orders) runs on its own queue so it never waits
# behind backtests; run a worker with `-Q live` (docker-compose does). Tests set it to the test
# worker's queue. Every linked account's connection and key permissions are re-checked daily.
CELERY_TASK_ROUTES = {
    **globals().get("CELERY_TASK_ROUTES", {}),
    "exchanges.*": {"queue": CELERY_LIVE_QUEUE},
}
EXCHANGE_CHECK_SECONDS = env_int("EXCHANGE_CHECK_SECONDS", 86_400)
# Live strategy bots (backtester/services/live_bots.py) step on the same live queue; beat queues
# one step per running bot every LIVE_BOTS_TICK_SECONDS (a bot only acts on closed candles).
LIVE_BOTS_TICK_SECONDS = env_int("LIVE_BOTS_TICK_SECONDS", 15)
# `seed_demo` starts a paper bot for the demo user on the demo candles (off in production).
LIVE_BOTS_DEMO = env_bool("LIVE_BOTS_DEMO", not PRODUCTION_SHAPE)
CELERY_TASK_ROUTES = {
    **CELERY_TASK_ROUTES,
    "backtester.live_*": {"queue": CELERY_LIVE_QUEUE},
}
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "live-bots-due": beat(
        "backtester.live_bots_due", LIVE_BOTS_TICK_SECONDS, queue=CELERY_LIVE_QUEUE
    ),
}
# Grid bots (backtester/services/grid_bots.py) step on the live queue too; beat queues one step
# per grid bot with work every GRID_BOTS_TICK_SECONDS (a step reconciles its resting orders).
GRID_BOTS_TICK_SECONDS = env_int("GRID_BOTS_TICK_SECONDS", 15)
CELERY_TASK_ROUTES = {
    **CELERY_TASK_ROUTES,
    "backtester.grid_*": {"queue": CELERY_LIVE_QUEUE},
}
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "grid-bots-due": beat(
        "backtester.grid_bots_due", GRID_BOTS_TICK_SECONDS, queue=CELERY_LIVE_QUEUE
    ),
}
# ccxt logs every request's headers at DEBUG, and those carry API keys (and OKX/KuCoin
# passphrases): never let its debug output through, whatever the root level.
LOGGING["loggers"]["ccxt"] = {"level": "WARNING"}
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "exchanges-daily-connection-test": beat(
        "exchanges.check_all_accounts", EXCHANGE_CHECK_SECONDS, queue=CELERY_LIVE_QUEUE
    ),
}

# --- Paper exchange (exchanges/paper.py) --------------------------------------------------------
# Market orders fill this many basis points worse than the current price (adverse slippage).
PAPER_SLIPPAGE_BPS = env_int("PAPER_SLIPPAGE_BPS", 5)
# The real exchange whose trading rules (step, tick, minimum order) and public ticker a paper
# account uses; empty: no network, default rules and stored candles only.
PAPER_MARKET_EXCHANGE = env_str("PAPER_MARKET_EXCHANGE", "binance")
PAPER_DEFAULT_FEE = env_str("PAPER_DEFAULT_FEE", "0.001")  # when the market states no fees
# A stored candle closed at most this long ago counts as the current price.
PAPER_CANDLE_MAX_AGE_SECONDS = env_int("PAPER_CANDLE_MAX_AGE_SECONDS", 180)
# Without a fresh candle or a ticker, use the latest stored candle however old (the embedded
# demo, offline); production refuses the order instead.
PAPER_ALLOW_STALE_PRICES = env_bool("PAPER_ALLOW_STALE_PRICES", not PRODUCTION_SHAPE)
PAPER_MATCH_SECONDS = env_int("PAPER_MATCH_SECONDS", 60)
CELERY_IMPORTS = [*globals().get("CELERY_IMPORTS", []), "exchanges.tasks_paper"]
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "exchanges-paper-match": beat("exchanges.paper_match_all", PAPER_MATCH_SECONDS),
}

# --- Coinbase OAuth2 (exchanges/oauth.py) ------------------------------------------------------
# Without a client id and secret the Coinbase button is hidden and the page says why.
COINBASE_OAUTH_CLIENT_ID = env_str("COINBASE_OAUTH_CLIENT_ID")
COINBASE_OAUTH_CLIENT_SECRET = env_str("COINBASE_OAUTH_CLIENT_SECRET")
COINBASE_OAUTH_AUTHORIZE_URL = env_str(
    "COINBASE_OAUTH_AUTHORIZE_URL", "https://login.coinbase.com/oauth2/auth"
)
COINBASE_OAUTH_TOKEN_URL = env_str(
    "COINBASE_OAUTH_TOKEN_URL", "https://login.coinbase.com/oauth2/token"
)
COINBASE_OAUTH_REVOKE_URL = env_str(
    "COINBASE_OAUTH_REVOKE_URL", "https://login.coinbase.com/oauth2/revoke"
)
COINBASE_API_BASE = env_str("COINBASE_API_BASE", "https://api.coinbase.com")
# Empty: the callback URL is built from the request's host.
COINBASE_OAUTH_REDIRECT_URI = env_str("COINBASE_OAUTH_REDIRECT_URI")
COINBASE_OAUTH_SCOPES = env_str(
    "COINBASE_OAUTH_SCOPES",
    "wallet:user:read,wallet:accounts:read,wallet:orders:read,wallet:orders:create,"
    "wallet:trades:read,offline_access",
)
# Refresh an access token this many seconds before it expires.
COINBASE_OAUTH_REFRESH_MARGIN_SECONDS = env_int("COINBASE_OAUTH_REFRESH_MARGIN_SECONDS", 300)

# --- Copy trading -----------------------------------------------------------------------------
# Copy orders run on the live queue (CELERY_LIVE_QUEUE above), never behind a backtest.
CELERY_TASK_ROUTES = {
    **globals().get("CELERY_TASK_ROUTES", {}),
    "copytrading.*": {"queue": CELERY_LIVE_QUEUE},
}
# The parts copy trading uses but does not own, as dotted paths (see copytrading/services/wiring).
COPYTRADING_ADAPTER_FACTORY = env_str(
    "COPYTRADING_ADAPTER_FACTORY", "exchanges.adapters.adapter_for"
)
COPYTRADING_ORDER_CHECK = env_str("COPYTRADING_ORDER_CHECK", "risk.services.order_request_check")
# Sizing refuses a balance read longer ago than this.
COPYTRADING_MAX_BALANCE_AGE_MS = env_int("COPYTRADING_MAX_BALANCE_AGE_MS", 5000)
# A fan-out plans, stores and sends its followers' copies in parts of this many: a part's
# orders are on their way while the next part is planned. That pays when the exchange's round
# trip is network wait; on loopback the sending competes with the planning for the CPU, and
# parts of 25 measured slower than one part for 100 followers (bench/copy_bench.py), hence 500.
COPYTRADING_FANOUT_PART = env_int("COPYTRADING_FANOUT_PART", 500)
# A copy sent without an answer and not found by its client order id this long after sending
# never reached the exchange. Must exceed the exchange client's timeout plus the exchange's
# receive window (ccxt: 10 s timeout; Binance recvWindow at most 60 s).
COPYTRADING_SUBMIT_GRACE_SECONDS = env_int("COPYTRADING_SUBMIT_GRACE_SECONDS", 90)
COPYTRADING_POLL_SECONDS = env_int("COPYTRADING_POLL_SECONDS", 5)
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "copytrading-poll-leaders": beat("copytrading.leaders_poll", COPYTRADING_POLL_SECONDS),
    "copytrading-sweep": beat("copytrading.sweep", 10),
    # Copies' own stop-loss / take-profit are watched by the product (spot exchanges' stop
    # orders differ too much to rest them uniformly), and every account is reconciled.
    "copytrading-protections": beat(
        "copytrading.protections", env_int("COPYTRADING_PROTECTION_SECONDS", 10)
    ),
    "copytrading-reconcile": beat(
        "copytrading.reconcile_all", env_int("COPYTRADING_RECONCILE_SECONDS", 300)
    ),
}
# The embedded demo: a demo leader replays the SMA crossover preset on the demo candles (one
# 1h bar per step) on a paper account (copytrading/services/demo.py). Off in the production
# shape unless enabled here.
COPYTRADING_DEMO_LEADER = env_bool("COPYTRADING_DEMO_LEADER", not PRODUCTION_SHAPE)
COPYTRADING_DEMO_STEP_SECONDS = env_int("COPYTRADING_DEMO_STEP_SECONDS", 60)
if COPYTRADING_DEMO_LEADER:
    CELERY_BEAT_SCHEDULE["copytrading-demo-leader"] = beat(
        "copytrading.demo_leader_step", COPYTRADING_DEMO_STEP_SECONDS
    )

# --- Background runs (config/runs) --------------------------------------------------------------
# A running run stamps a heartbeat every RUN_HEARTBEAT_SECONDS; the beat task runs.sweep (every
# RUN_SWEEP_SECONDS) fails a run whose last stamp is older than RUN_STALE_AFTER_SECONDS: its
# worker died. Defaults: a dead worker's run is failed within 3 to 4 minutes.
RUN_HEARTBEAT_SECONDS = float(env_str("RUN_HEARTBEAT_SECONDS", "20"))
RUN_STALE_AFTER_SECONDS = float(env_str("RUN_STALE_AFTER_SECONDS", "180"))
RUN_SWEEP_SECONDS = float(env_str("RUN_SWEEP_SECONDS", "60"))
CELERY_IMPORTS = [*CELERY_IMPORTS, "config.runs.tasks"]
CELERY_BEAT_SCHEDULE = {
    **CELERY_BEAT_SCHEDULE,
    "runs-sweep-stale": beat("runs.sweep", RUN_SWEEP_SECONDS),
}

# --- Risk: equity snapshots (risk/tasks.py) ----------------------------------------------------
# Every linked account of a Pro owner is valued this often (balances at last prices) so the
# drawdown and loss breakers see live accounts; non-paper accounts are valued in this currency.
RISK_EQUITY_SNAPSHOT_SECONDS = env_int("RISK_EQUITY_SNAPSHOT_SECONDS", 300)
RISK_EQUITY_QUOTE = env_str("RISK_EQUITY_QUOTE", "USDT")
CELERY_TASK_ROUTES = {
    **globals().get("CELERY_TASK_ROUTES", {}),
    "risk.equity_snapshots": {"queue": CELERY_LIVE_QUEUE},
}
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "risk-equity-snapshots": beat(
        "risk.equity_snapshots", RISK_EQUITY_SNAPSHOT_SECONDS, queue=CELERY_LIVE_QUEUE
    ),
}
