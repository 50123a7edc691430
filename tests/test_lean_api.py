"""The lean /api/ path (portal/handlers.py): no browser middleware runs for a data-plane
request, every middleware runs for every portal page, and gunicorn, runserver and the test
client all use that dispatch."""

import io
import sys

import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from portal import handlers, wsgi
from tests.test_url_matrix import ROUTES


@pytest.fixture
def middleware_calls(monkeypatch):
    """Every class of ``settings.MIDDLEWARE`` records its calls (patched on the class, so
    instances built before the test are seen too)."""
    calls: list[str] = []
    for dotted in settings.MIDDLEWARE:
        cls = import_string(dotted)
        original = cls.__call__

        def recording(self, request, _original=original, _dotted=dotted):
            calls.append(_dotted)
            return _original(self, request)

        monkeypatch.setattr(cls, "__call__", recording)
    return calls


def wsgi_get(path: str, method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    """GET (or ``method``) ``path`` through ``portal.wsgi.application`` as gunicorn calls it."""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http", "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    answer: dict = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(wsgi.application(environ, start_response))
    return answer["status"], answer["headers"], body


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/healthz", "/favicon.ico", "/no-such-page/", "/api/v1/nowhere"])
def test_a_head_answer_has_the_gets_headers_and_no_body(path):
    """gunicorn warns of a HEAD answer with a body ("sent body bytes on a no-body response")
    on every one: none has one, pages, files and errors alike (found by a newcomer trial)."""
    get_status, get_headers, get_body = wsgi_get(path)
    head_status, head_headers, head_body = wsgi_get(path, "HEAD")

    assert get_body and head_body == b""
    assert head_status == get_status
    assert int(head_headers["Content-Length"]) == len(get_body)


def test_the_wsgi_entry_point_is_the_dispatcher():
    assert settings.WSGI_APPLICATION == "portal.wsgi.application"
    assert isinstance(wsgi.application, handlers.Dispatcher)
    assert handlers.route({"PATH_INFO": "/api/v1/openapi.json"}) == "api"
    assert handlers.route({"PATH_INFO": "/apiary"}) == "portal"
    assert handlers.route({"PATH_INFO": "/accounts/login/"}) == "portal"


@pytest.mark.django_db
def test_it_runs_no_middleware_for_the_api_through_the_production_entry_point(middleware_calls):
    status, headers, body = wsgi_get("/api/v1/openapi.json")

    assert status.startswith("200")
    assert middleware_calls == []
    assert "Set-Cookie" not in headers and "Vary" not in headers  # no session, no CSRF cookie
    assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"  # the API's own
    assert headers["X-Request-ID"]


@pytest.mark.django_db
def test_it_runs_every_middleware_for_a_portal_page_through_the_production_entry_point(middleware_calls):
    status, headers, _ = wsgi_get("/accounts/login/")

    assert status.startswith("200")
    assert middleware_calls == list(settings.MIDDLEWARE)
    assert "script-src 'self'" in headers["Content-Security-Policy"]  # django-csp's policy


@pytest.mark.django_db
def test_the_test_client_is_routed_like_production(client, middleware_calls):
    client.get("/api/v1/openapi.json")
    assert middleware_calls == []
    client.get("/accounts/login/")
    assert middleware_calls == list(settings.MIDDLEWARE)


@pytest.mark.django_db
def test_every_portal_url_gets_all_middleware_and_every_api_url_none(client, middleware_calls):
    """One GET per URL pattern of both URLconfs (the role matrix checks the answers)."""
    for route in ROUTES:
        if "<" in route.route or "(?P" in route.route:
            continue  # needs objects; covered by tests/test_url_matrix.py
        # The API URLconf's catch-all ("") takes look-alikes of API paths (portal.handlers.route).
        path = "/" + route.route.lstrip("^").rstrip("$")
        if route.urlconf == settings.API_URLCONF and not route.route:
            path = "/./api/look-alike"
        middleware_calls.clear()
        client.get(path)
        expected = [] if route.urlconf == settings.API_URLCONF else list(settings.MIDDLEWARE)
        assert middleware_calls == expected, path


def test_gunicorn_and_runserver_load_the_dispatcher():
    from django.core.servers.basehttp import get_internal_wsgi_application

    assert get_internal_wsgi_application() is wsgi.application
