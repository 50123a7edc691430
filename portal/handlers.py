"""Two Django handlers behind one WSGI entry point (``portal.wsgi.application``).

``/api/`` is the data plane: applications with bearer API keys, thousands of requests a
second, no cookies, no HTML. Everything else is the portal: browsers, sessions, CSRF,
sign-in lockout, two-factor, CSP. Each gets its own handler, chosen by path before Django
sees the request (``route``):

* :class:`PortalHandler` — Django's ``WSGIHandler``: ``settings.MIDDLEWARE`` and
  ``settings.ROOT_URLCONF``, unchanged;
* :class:`ApiHandler` — no middleware at all and ``settings.API_URLCONF``. What the API
  needs of the browser stack it does itself, in ``keys.api.views`` (request id, access log
  without the path, the Host check, ``nosniff``); see docs/architecture.md, "The lean
  /api/ path", for why this is a separate handler and not a middleware that skips.

The Django test client is routed the same way (``tests/conftest.py`` builds its handler
from :func:`route` and :class:`ApiHandlerMixin`), so tests exercise this dispatch.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.urls import set_urlconf

API_PREFIX = "/api/"


def route(environ: dict[str, Any]) -> str:
    """``"api"`` for a request under ``/api/`` (``PATH_INFO``, after any ``SCRIPT_NAME``), else ``"portal"``.

    A path that only looks like one — ``//api/…`` (a client's base URL ending in ``/``),
    ``/./api/…``, ``/x/../api/…``, ``/API/…`` — goes to the API's handler too, which answers
    its JSON 404 and logs the route name, never the path: the portal's handler would log
    the path (``portal.request``, ``django.request``), and API paths hold record keys."""
    path = environ.get("PATH_INFO", "")
    if path.startswith(API_PREFIX):
        return "api"
    normalized = posixpath.normpath("/" + path.lstrip("/")).lower() + "/"  # normpath drops a trailing /
    return "api" if normalized.startswith(API_PREFIX) else "portal"


class ApiHandlerMixin(BaseHandler):
    """A handler with an empty middleware chain and the API's URLconf."""

    def load_middleware(self, is_async: bool = False) -> None:
        if is_async:
            raise NotImplementedError("the data plane is served over WSGI")
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response)

    def get_response(self, request: HttpRequest) -> HttpResponse:
        request.urlconf = settings.API_URLCONF
        # No CONN_HEALTH_CHECKS "SELECT 1" before the first query: it would double the
        # round trips of a one-statement read. A connection that died since its last use
        # fails that request's first statement instead (503 service_unavailable, a client
        # retries after Retry-After), and Django closes it when the request ends (it saw the
        # error), so the next request on this thread connects afresh.
        for conn in connections.all(initialized_only=True):
            conn.health_check_done = True
        try:
            return super().get_response(request)
        finally:
            # Django resets the thread's URLconf on request_finished, which fires only when
            # the server closes the response; the API's answers are complete here, so the
            # thread goes back to ROOT_URLCONF at once (reverse() elsewhere in the thread).
            set_urlconf(None)


class ApiHandler(ApiHandlerMixin, WSGIHandler):
    """The data plane's WSGI handler."""


class PortalHandler(WSGIHandler):
    """The portal's WSGI handler: Django's own, with every middleware."""


class Dispatcher:
    """The WSGI application: sends each request to the handler :func:`route` names."""

    def __init__(self) -> None:
        self.handlers: dict[str, WSGIHandler] = {"api": ApiHandler(), "portal": PortalHandler()}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.handlers[route(environ)](environ, start_response)
