"""Production security settings: ``check --deploy`` is clean, and every response carries
the headers and cookies it should (portal/settings.py, "Security" and "Content Security
Policy")."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.sessions.models import Session
from django.urls import reverse
from django.utils import timezone

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "p7Yq-production-like-secret-key-3kT9xW2mZ8vB5nR1cL6hJ4gF0dS",
    "ALLOWED_HOSTS": "byok.example.com",
    "SEALING_KEYS": "k1:" + base64.b64encode(bytes(range(32))).decode(),
    "DATABASE_URL": "postgres://byok:secret@127.0.0.1:5432/byok",
}
# Variables a developer's shell or the test run may set that would change production defaults.
UNSET = {"SECURE_COOKIES", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
         "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER", "SESSION_EXPIRE_AT_BROWSER_CLOSE", "SESSION_COOKIE_AGE",
         "CONN_MAX_AGE",
         # Set by the browser fixtures for Playwright's event loop; never in a deployment.
         "DJANGO_ALLOW_ASYNC_UNSAFE"}


def _run(args: list[str], **overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in UNSET and k not in PRODUCTION}
    env.update(PRODUCTION)
    env.update(overrides)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _production_setting(expression: str, **overrides: str) -> str:
    result = _run(["-c", f"import portal.settings as s; print({expression})"], **overrides)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_it_passes_check_deploy_without_a_warning():
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_it_uses_secure_http_only_cookies_hsts_and_ssl_redirect_in_production():
    values = _production_setting(
        "[s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.CSRF_COOKIE_HTTPONLY,"
        " s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.X_FRAME_OPTIONS,"
        " s.SECURE_REFERRER_POLICY, s.SESSION_EXPIRE_AT_BROWSER_CLOSE, s.SESSION_COOKIE_AGE]"
    )
    assert values == "[True, True, True, True, True, 31536000, True, 'DENY', 'same-origin', True, 28800]"


def test_it_takes_hsts_and_ssl_redirect_from_the_environment():
    assert _production_setting(
        "[s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER]",
        SECURE_HSTS_SECONDS="60", SECURE_HSTS_INCLUDE_SUBDOMAINS="false", SECURE_SSL_REDIRECT="false",
        SECURE_PROXY_SSL_HEADER="true",
    ) == "[60, False, False, ('HTTP_X_FORWARDED_PROTO', 'https')]"


def test_it_does_not_redirect_or_send_hsts_in_development():
    assert _production_setting("[s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS]", DEBUG="true") == "[False, 0]"


# Responses


STRICT_CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "object-src": "'none'",
    "frame-ancestors": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
}


def _csp(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: " ".join(part.split()[1:]) for part in header.split(";") if part.strip()}


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/accounts/login/", "/healthz", "/admin/login/"])
def test_it_sends_the_security_headers_on_every_response(client, url):
    response = client.get(url)

    policy = _csp(response)
    for directive, value in STRICT_CSP.items():
        assert policy[directive] == value, directive
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.django_db
def test_it_sends_the_api_its_own_fixed_headers_without_the_browser_middleware(client):
    """/api/ runs no middleware (portal/handlers.py): its JSON answers carry fixed headers
    that keep a browser from rendering or framing them."""
    response = client.get("/api/v1/nowhere")

    assert response["Content-Type"] == "application/json"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert response["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response


@pytest.mark.django_db
def test_it_sends_hsts_over_https(client):
    response = client.get("/accounts/login/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.django_db
def test_it_redirects_plain_http_to_https_except_the_health_probe(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/accounts/login/")
    assert response.status_code == 301 and response["Location"] == "https://testserver/accounts/login/"
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_it_trusts_the_proxys_forwarded_proto_when_told_to(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 200


@pytest.mark.django_db
def test_it_expires_the_session_on_the_server_and_when_the_browser_closes(client, alice):
    from tests.conftest import PASSWORD

    client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    cookie = client.cookies["sessionid"]
    assert cookie["httponly"]
    assert not cookie["max-age"] and not cookie["expires"]  # a browser-session cookie
    session = Session.objects.get(session_key=cookie.value)
    assert abs(session.expire_date - (timezone.now() + timedelta(hours=8))) < timedelta(minutes=1)


# Templates: nothing inline that the policy would block


def test_it_has_no_inline_script_style_or_event_handler_in_any_template():
    offenders = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        text = path.read_text()
        for pattern in (r"<script(?![^>]*\bsrc=)[^>]*>", r"\sstyle\s*=", r"<style\b", r"\son[a-z]+\s*=", r"javascript:"):
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text, re.I)]
    assert not offenders, offenders
