"""Settings for the data-plane benchmark only: the portal's settings, plus bench-only URLs
(a bare JSON endpoint to compare with, and per-worker counters) and persistent database
connections. Never used in production."""

from portal.settings import *  # noqa: F401,F403
from portal.settings import DATABASES, LOGGING

ROOT_URLCONF = "bench.urls"

# Keep a database connection per thread between requests, as a production deployment
# should (portal/settings.py leaves Django's default 0 = a new connection per request).
DATABASES["default"]["CONN_MAX_AGE"] = 300
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

LOGGING["root"]["level"] = "WARNING"

# Plain HTTP on 127.0.0.1: in production TLS ends at the proxy in front of gunicorn.
SECURE_SSL_REDIRECT = False

# The baselines (bare Django + one SELECT / one upsert) on the lean /api/ handler.
API_URLCONF = "bench.api_urls"
