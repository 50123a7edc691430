"""Settings for the BYOK Portal: one module, everything read through one ``environ.Env()``.

Development defaults are safe and local (SQLite, eager Celery, a generated sealing key in
``.local/``). Production (``DEBUG`` off) refuses to start without ``SECRET_KEY``,
``ALLOWED_HOSTS`` and ``SEALING_KEYS``. Every variable is listed in ``docker/.env.example``.
"""

import ipaddress
import warnings
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from portal.service_urls import check_service_url

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = BASE_DIR / ".local"

env = environ.Env()
# An optional .env file beside manage.py, for people who prefer one to exported variables.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _required(name: str) -> str:
    """Return a variable that production cannot run without, or fail naming it."""
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(
            f"{name} must be set when DEBUG is off (see docker/.env.example)."
        )
    return value


# Core

DEBUG = env.bool("DEBUG", default=False)
if DEBUG:
    SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-secret-key-change-me")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
else:
    SECRET_KEY = _required("SECRET_KEY")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS must be set when DEBUG is off, e.g. ALLOWED_HOSTS=byok.example.com"
        )
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "csp",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "environments",
    "keys",
]

MIDDLEWARE = [
    # First: every later log line of the request carries its id.
    "portal.middleware.RequestIdMiddleware",
    # Outside everything that makes a body, WhiteNoise's included.
    "portal.middleware.HeadWithoutBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files under gunicorn (no web server needed in front).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Portal pages are never cached (they take and show secrets); static files are, above.
    "portal.middleware.NoStoreMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # After authentication and OTP: redirects to the two-factor pages (environments/two_factor.py).
    "portal.middleware.TwoFactorMiddleware",
    # Last, as django-axes requires: answers a locked-out sign-in with the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
# /api/ is served by its own handler, without MIDDLEWARE, from this URLconf (portal/handlers.py).
API_URLCONF = "portal.api_urls"
WSGI_APPLICATION = "portal.wsgi.application"

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

# Database

# Percent-encode special characters of the password: '#' -> %23, '@' -> %40, '/' -> %2F, '+' -> %2B.
# A malformed URL stops start-up naming the variable, never printing the password.
DATABASES = {
    "default": env.db_url_config(
        check_service_url("DATABASE_URL", env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))
    ),
}
DATABASES["default"].setdefault("ATOMIC_REQUESTS", False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves concurrent requests too: take the write lock at BEGIN
    # and wait for it instead of failing with "database is locked"; WAL lets reads go on.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )
# Keep database connections open between requests (seconds); 0 = one per request.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL: the data plane's hot statements are prepared once per connection, then only
# bound and executed (keys/services/rows.py: the API key query was planned anew on every
# request, four times its execution time). psycopg prepares only the statements that ask
# (prepare=True): Django's own cursors bind client-side and never do. Turn it off behind a
# pooler that cannot keep prepared statements (PgBouncer in transaction mode before 1.21).
DATA_PLANE_PREPARED_STATEMENTS = env.bool("DATA_PLANE_PREPARED_STATEMENTS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATA_PLANE_PREPARED_STATEMENTS:
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 2**31 - 1
# PostgreSQL: seconds to wait for a new connection, handshake included. A server that
# accepts the TCP connection and then says nothing (hung, or a half-dead network path)
# would otherwise hold the request's thread for as long as the kernel keeps trying; past
# this the request answers 503 service_unavailable (portal.outages). libpq's
# connect_timeout: https://www.postgresql.org/docs/current/libpq-connect.html
DATABASE_CONNECT_TIMEOUT_SECONDS = env.int("DATABASE_CONNECT_TIMEOUT_SECONDS", default=5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", DATABASE_CONNECT_TIMEOUT_SECONDS)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Auth

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# AxesStandaloneBackend first: it refuses a locked-out sign-in before any password check.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# A session lasts at most SESSION_COOKIE_AGE seconds (the server expires it too), and by
# default ends when the browser closes.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=60 * 60 * 8)
SESSION_EXPIRE_AT_BROWSER_CLOSE = env.bool("SESSION_EXPIRE_AT_BROWSER_CLOSE", default=True)

# Sign-in lockout (django-axes)

# After AXES_FAILURE_LIMIT failed sign-ins for one username (from anywhere), or from one
# client address (for any usernames), that username or address is locked for
# AXES_COOLOFF_MINUTES; a success resets its counts. The username rule stops a guesser who
# spreads over many addresses, the address rule one who sprays many usernames. The lockout
# page is templates/registration/locked_out.html, status 429.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# Behind TRUSTED_PROXY_COUNT proxies the client's address is the one the outermost proxy
# appended to X-Forwarded-For (otherwise every client would share the proxy's address).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# ... but only on a connection from the front proxy: these addresses or networks, the same
# FORWARDED_ALLOW_IPS gunicorn takes X-Forwarded-Proto from (docker/gunicorn.conf.py; loopback
# by default; "*" trusts every peer). A client that reaches the app server from anywhere else
# cannot forge its address (portal.middleware.client_ip).
TRUSTED_PROXY_ADDRESSES = env.list("FORWARDED_ALLOW_IPS", default=["127.0.0.1", "::1"])
for _entry in TRUSTED_PROXY_ADDRESSES:
    try:
        if _entry.strip() != "*":
            ipaddress.ip_network(_entry.strip(), strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"FORWARDED_ALLOW_IPS: {_entry!r} is not an IP address or network (e.g. 172.30.0.10, 10.0.0.0/8, *)."
        ) from None
AXES_CLIENT_IP_CALLABLE = "portal.middleware.client_ip"
# The posted username, cut to axes' 255-character column (a longer one answered 500).
AXES_USERNAME_CALLABLE = "portal.middleware.client_username"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False

# Two-factor authentication (django-otp, TOTP)

OTP_TOTP_ISSUER = "BYOK Portal"
# Support staff see that a user has a device, never its secret or QR code.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Internationalisation

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files

STATIC_URL = "static/"
# Nothing is uploaded; set so Django's live test server hands every other path to the WSGI
# application (portal.wsgi's dispatch) instead of claiming them all for media files.
MEDIA_URL = "media/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
# WhiteNoise serves STATIC_ROOT (after collectstatic) and, without it, the app folders.
WHITENOISE_USE_FINDERS = True
# Before collectstatic has run (development, tests) STATIC_ROOT does not exist yet.
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)

# Security (production)

# Behind a TLS-terminating proxy the request's scheme must come from the proxy, or
# SECURE_SSL_REDIRECT would redirect forever (every request looks like plain HTTP to Django).
# docker/gunicorn.conf.py does that already, trusting X-Forwarded-Proto only from the proxy's
# address (FORWARDED_ALLOW_IPS), so this stays off there. On: Django trusts the header from
# any client that reaches the app server, so only where nothing but the proxy can.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool(
    "SECURE_PROXY_SSL_HEADER", default=False
) else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# The container health check calls http://127.0.0.1:8000/healthz directly.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 365 * 24 * 60 * 60)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Only the header's "preload" token; putting the domain on browsers' preload lists is a
# separate, deliberate submission (hstspreload.org).
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = not DEBUG and env.bool("SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
# No script reads the CSRF cookie: forms carry the token.
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True

# Content Security Policy (django-csp 4)

# Same-origin everything, no inline script or style anywhere (static/js/*.js are files;
# templates carry no style="" attributes), no plugins, no framing, forms post only here.
# Django admin works under it unchanged (tests/browser/test_security_csp.py): its scripts are
# files, its constants travel in data- attributes, and its JavaScript sets styles through
# the CSSOM, which style-src does not govern.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
    },
}

# Error reports

# The technical 500 page and mails to ADMINS: settings, frame variables, POST fields and
# headers cleansed by name and by shape of secret, with DEBUG on too (portal/reporting.py).
DEFAULT_EXCEPTION_REPORTER_FILTER = "portal.reporting.RedactingExceptionReporterFilter"
DEFAULT_EXCEPTION_REPORTER = "portal.reporting.RedactingExceptionReporter"
# Optional: who gets a mail for every server error, "Name <address>" or addresses, comma separated.
ADMINS = [parseaddr(a) for a in env.list("ADMINS", default=[])]

# Email

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="byok-portal@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Celery

# Unset CELERY_BROKER_URL = no broker: tasks run eagerly in the calling process.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
if CELERY_BROKER_URL:
    check_service_url("CELERY_BROKER_URL", CELERY_BROKER_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
if not CELERY_BROKER_URL:
    # With a hostname: kombu warns "No hostname was supplied" on every connection clone of a
    # bare "memory://" (the in-memory transport ignores it).
    CELERY_BROKER_URL = "memory://localhost/"
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

# Redis (rate limits, cross-process signals); optional in development.

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    check_service_url("REDIS_URL", REDIS_URL)

# KMS

# Optional: a KMS-compatible endpoint (the local moto emulator) instead of AWS KMS.
AWS_KMS_ENDPOINT_URL = env.str("AWS_KMS_ENDPOINT_URL", default="") or None
KMS_CONNECT_TIMEOUT_SECONDS = env.float("KMS_CONNECT_TIMEOUT_SECONDS", default=3.0)
KMS_READ_TIMEOUT_SECONDS = env.float("KMS_READ_TIMEOUT_SECONDS", default=10.0)
# The data plane's AWS calls (a data-key cache miss inside an API request: KMS Decrypt and, in
# role mode, the STS AssumeRole before it) have their own, shorter budget: AWS KMS answers
# Decrypt, and STS AssumeRole, in milliseconds, so 1 s to connect and 3 s to read are
# generous, and with 2 attempts (keys.services.records.DATA_PLANE_KMS_MAX_ATTEMPTS: the client
# retries a throttled call once) a hung KMS or STS holds a request about 9 s at most
# (2 x (1 + 3) s plus botocore's backoff) before 503 key_unavailable, instead of the 3 x 10 s
# validation may wait; both in turn (role mode, no session held yet) about 18 s.
DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS = env.float("DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS", default=1.0)
DATA_PLANE_KMS_READ_TIMEOUT_SECONDS = env.float("DATA_PLANE_KMS_READ_TIMEOUT_SECONDS", default=3.0)
# Warn when the IAM credentials can do more than kms:Decrypt + kms:DescribeKey (KMS DryRun).
VALIDATION_CHECK_EXCESS_PRIVILEGE = env.bool("VALIDATION_CHECK_EXCESS_PRIVILEGE", default=True)

# STS (role mode, issue 14)

# The platform's own AWS principal, the one customers' trust policies name
# (arn:aws:iam::<platform account>:role/<name>). Empty: role mode is off. Its
# credentials come from the standard AWS credential chain (environment, shared
# config, container or instance role), never from the database.
PLATFORM_AWS_PRINCIPAL_ARN = env.str("PLATFORM_AWS_PRINCIPAL_ARN", default="")
# Optional: an STS-compatible endpoint (the local moto emulator) instead of AWS STS.
AWS_STS_ENDPOINT_URL = env.str("AWS_STS_ENDPOINT_URL", default="") or None
# AssumeRole DurationSeconds: 900 up to the role's MaxSessionDuration (3600 by default).
STS_SESSION_DURATION_SECONDS = env.int("STS_SESSION_DURATION_SECONDS", default=3600)

# How often Celery beat re-validates every active and decrypt-only BYOK key.
REVALIDATION_INTERVAL_SECONDS = env.int("REVALIDATION_INTERVAL_SECONDS", default=15 * 60)
# How often Celery beat's validation sweep queues again the validations whose job could not be
# queued (broker unreachable); the page promises a retry within this many seconds.
VALIDATION_REQUEUE_INTERVAL_SECONDS = env.int("VALIDATION_REQUEUE_INTERVAL_SECONDS", default=5 * 60)
# A validation queued (or a key version pending validation) with no sign of life for this long
# lost its job, and the sweep queues it again. Longer than a job's retries and time limits.
VALIDATION_REQUEUE_AFTER_SECONDS = env.int("VALIDATION_REQUEUE_AFTER_SECONDS", default=10 * 60)
# Validation runs kept per key version (the latest ones); older ones are pruned hourly...
VALIDATION_RUNS_KEEP_LATEST = env.int("VALIDATION_RUNS_KEEP_LATEST", default=50)
# ...except failed and unverified runs younger than this many days.
VALIDATION_RUNS_KEEP_FAILURES_DAYS = env.int("VALIDATION_RUNS_KEEP_FAILURES_DAYS", default=90)
# How often Celery beat prunes them.
VALIDATION_RUNS_PRUNE_INTERVAL_SECONDS = env.int("VALIDATION_RUNS_PRUNE_INTERVAL_SECONDS", default=60 * 60)
if VALIDATION_RUNS_KEEP_LATEST < 1:
    raise ImproperlyConfigured("VALIDATION_RUNS_KEEP_LATEST must be at least 1 (a key version's latest run is kept).")

# Sealing keys

# "key_id:base64(32 bytes)", comma separated; the first seals, all may unseal.
SEALING_KEYS = env.list("SEALING_KEYS", default=[])
if not SEALING_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SEALING_KEYS must be set when DEBUG is off: e.g. SEALING_KEYS=k1:<base64 of 32 random bytes> "
            "(python -c \"import os,base64;print('k1:'+base64.b64encode(os.urandom(32)).decode())\")."
        )
    from keys.devkeys import dev_sealing_keys

    SEALING_KEYS = dev_sealing_keys(LOCAL_DIR / "sealing_keys")

# Data-key cache

# How long a plaintext data key may stay in a process's memory (seconds).
DATA_KEY_CACHE_TTL_SECONDS = env.int("DATA_KEY_CACHE_TTL_SECONDS", default=300)

# Data-plane API

API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
API_MAX_BATCH_RECORDS = env.int("API_MAX_BATCH_RECORDS", default=1000)
API_MAX_BATCH_BODY_BYTES = env.int("API_MAX_BATCH_BODY_BYTES", default=API_MAX_BODY_BYTES * 16)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BATCH_BODY_BYTES, 2_621_440)

# Data-plane rate limit

# Requests a minute per API key (token bucket, keys/ratelimit.py): in Redis when REDIS_URL
# is set (shared by every process; fails open if Redis is down), else per process. 0 = off.
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=6000)

# Metrics (Prometheus, /metrics)

# Bearer token Prometheus sends to /metrics; unset = /metrics answers 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# A directory shared by the gunicorn workers (emptied before start) for prometheus-client's
# multiprocess mode; unset = each process has its own registry. prometheus-client reads it
# from the environment itself, at import (keys/metrics.py); it is read here to be listed.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")

# Logging

# One JSON object per line on stderr (time, level, logger, message, request_id, extras),
# secret-shaped text redacted in every handler (portal/logging.py). Django's own loggers
# are routed here too, so nothing is written in another format.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "portal.logging.RequestIdFilter"},
        "redact": {"()": "portal.logging.RedactingFilter"},
        # runserver's request lines: no record key (a <path:…> of /api/) reaches the log.
        "server_paths": {"()": "portal.logging.ServerPathFilter"},
        # Every handler: no record key from a mistyped path that reached the portal's handler.
        "record_paths": {"()": "portal.logging.RecordPathFilter"},
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
    },
    "formatters": {
        "json": {"()": "portal.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["request_id", "record_paths", "redact"],
        },
        "mail_admins": {
            "class": "django.utils.log.AdminEmailHandler",
            "level": "ERROR",
            "filters": ["require_debug_false", "request_id", "record_paths", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["mail_admins"], "level": LOG_LEVEL},
        "django.server": {
            "handlers": ["console"], "level": LOG_LEVEL, "propagate": False, "filters": ["server_paths"],
        },
        "botocore": {"level": "WARNING"},
        # A failed AssumeRole refresh is answered 503 key_unavailable and logged by the data
        # plane; botocore would add a WARNING with a traceback for every such request.
        "botocore.credentials": {"level": "ERROR"},
        "urllib3": {"level": "WARNING"},
    },
}

# Re-encryption

# Records moved to the active key version per batch (one transaction each).
REENCRYPTION_BATCH_SIZE = env.int("REENCRYPTION_BATCH_SIZE", default=500)
# Pause between batches (seconds), so the data plane stays responsive; 0 = full speed.
REENCRYPTION_THROTTLE_SECONDS = env.float("REENCRYPTION_THROTTLE_SECONDS", default=0.05)
# A running job without a committed batch for this long lost its worker and is resumed.
REENCRYPTION_STALE_AFTER_SECONDS = env.int("REENCRYPTION_STALE_AFTER_SECONDS", default=120)
# How often Celery beat looks for such stale (or lost queued) jobs.
REENCRYPTION_RESUME_INTERVAL_SECONDS = env.int("REENCRYPTION_RESUME_INTERVAL_SECONDS", default=60)

# Celery beat

# Every REVALIDATION_INTERVAL_SECONDS, re-validate each active and decrypt-only (and
# inaccessible) BYOK key version against KMS. A tick not picked up within one interval
# expires: the next one replaces it.
# Every REENCRYPTION_RESUME_INTERVAL_SECONDS, queue again the re-encryption jobs whose
# worker died (SIGKILL, lost host): acks_late alone would wait for the broker's visibility
# timeout (an hour) before redelivering their task.
# Every VALIDATION_RUNS_PRUNE_INTERVAL_SECONDS, delete old validation runs.
# Every VALIDATION_REQUEUE_INTERVAL_SECONDS, the validation sweep: queue again the validations
# that never reached the broker or lost their job, and key versions left pending validation.
CELERY_BEAT_SCHEDULE = {
    "revalidate-active-registrations": {
        "task": "keys.tasks.revalidate_active_registrations",
        "schedule": float(REVALIDATION_INTERVAL_SECONDS),
        "options": {"expires": float(REVALIDATION_INTERVAL_SECONDS)},
    },
    "resume-stale-reencryption-jobs": {
        "task": "keys.tasks.resume_stale_reencryption_jobs",
        "schedule": float(REENCRYPTION_RESUME_INTERVAL_SECONDS),
        "options": {"expires": float(REENCRYPTION_RESUME_INTERVAL_SECONDS)},
    },
    "prune-validation-runs": {
        "task": "keys.tasks.prune_validation_runs",
        "schedule": float(VALIDATION_RUNS_PRUNE_INTERVAL_SECONDS),
        "options": {"expires": float(VALIDATION_RUNS_PRUNE_INTERVAL_SECONDS)},
    },
    "requeue-validations": {
        "task": "keys.tasks.requeue_validations",
        "schedule": float(VALIDATION_REQUEUE_INTERVAL_SECONDS),
        "options": {"expires": float(VALIDATION_REQUEUE_INTERVAL_SECONDS)},
    },
}
