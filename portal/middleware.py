"""Project middleware: request ids, and the two-factor rules of ``environments.two_factor``."""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from .logging import request_id_var, request_var

log = logging.getLogger("portal.request")

REQUEST_ID_HEADER = "X-Request-ID"
# A proxy's or client's id is kept only if it is short and plain (no spaces, quotes or
# control characters that could forge log lines or headers); anything else gets a new one.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
# The WSGI environ key of the same header (request.headers would build the whole header dict).
_REQUEST_ID_META = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or, when the connection comes from the front
    proxy (``TRUSTED_PROXY_ADDRESSES``) and ``TRUSTED_PROXY_COUNT`` proxies stand in front
    of the portal, the entry the outermost of them appended to ``X-Forwarded-For``. Entries
    further left were written by the client and can be anything, so they are never used.

    Each proxy appends the address it received the request from; with N proxies the
    header ends ``…, <client>, <proxy 1>, …, <proxy N-1>`` and the client is N-th from the
    right. A header shorter than that means a misconfiguration: ``REMOTE_ADDR`` is used.

    A client that reaches the app server directly, from any other address, gets its own
    ``REMOTE_ADDR`` whatever header it sends: it cannot pose as another address to spread
    its sign-in failures over many lockout counters (django-axes). The same rule gunicorn
    applies to ``X-Forwarded-Proto`` (docker/gunicorn.conf.py, ``FORWARDED_ALLOW_IPS``).
    """
    from django.conf import settings

    remote = request.META.get("REMOTE_ADDR")
    count = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if count <= 0 or not is_trusted_proxy(remote, getattr(settings, "TRUSTED_PROXY_ADDRESSES", ())):
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    return forwarded[-count] if len(forwarded) >= count else remote


def is_trusted_proxy(address: str | None, trusted: Iterable[str]) -> bool:
    """Is ``address`` (an IP address as text) one of ``trusted``: IP addresses and networks
    (``172.30.0.10``, ``10.0.0.0/8``, ``::1``), or ``*`` for any peer, as gunicorn's
    ``forwarded_allow_ips`` reads them? Anything that is not an IP address (a Unix socket's
    peer, nothing) is not trusted unless ``*`` is. Raises ``ValueError`` for an entry that
    is neither (portal/settings.py refuses such a ``FORWARDED_ALLOW_IPS`` at start-up)."""
    entries = tuple(entry.strip() for entry in trusted if entry.strip())
    if "*" in entries:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in trusted_networks(entries))


@functools.lru_cache(maxsize=16)
def trusted_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``entries`` (addresses and networks, no ``*``) as networks; a bare address is a /32 or
    /128. Raises ``ValueError`` for an entry that is neither."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


# django-axes stores the username of each failed sign-in in a 255-character column
# (axes.models.AccessAttempt.username); Django's AuthenticationForm does not enforce the
# User model's 150, so a longer name reached the INSERT and answered 500.
AXES_USERNAME_MAX_LENGTH = 255


def client_username(request: HttpRequest, credentials: dict | None = None) -> str | None:
    """The username axes counts failures for: as posted, cut to the column's length (no
    account has a name that long, so the cut never merges two real users)."""
    source = credentials if credentials else getattr(request, "data", request.POST)
    username = source.get("username") if source else None
    return username[:AXES_USERNAME_MAX_LENGTH] if isinstance(username, str) else username


def request_id_for(request: HttpRequest) -> str:
    """The incoming ``X-Request-ID`` when sane, else a new UUID4 (hex)."""
    incoming = request.META.get(_REQUEST_ID_META, "")
    return incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


class RequestIdMiddleware:
    """Gives every request an id: the incoming ``X-Request-ID`` when sane, else a new
    UUID4 (hex). It is ``request.request_id``, the ``request_id`` of every log line
    written while the request runs, and the ``X-Request-ID`` header of the response.
    Logs one ``portal.request`` line per request (method, path, status, duration)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_for(request)
        request.request_id = request_id
        token = request_id_var.set(request_id)
        request_token = request_var.set(request)
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
            return response
        finally:
            request_id_var.reset(token)
            request_var.reset(request_token)


# URL names a session that still owes a second factor may open.
_TWO_FACTOR_EXEMPT = frozenset(
    {"login", "logout", "healthz", "two_factor", "two_factor_verify", "two_factor_qr", "admin:logout"}
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class TwoFactorMiddleware:
    """The one place two-factor authentication is enforced (``environments.two_factor``).

    Runs in ``process_view``, after CSRF and authentication, with the resolved view's URL
    kwargs, so no view needs a decorator:

    * a signed-in user with a TOTP device whose session has not entered a code is sent to
      the verify page from every page except sign-in/out and the two-factor pages;
    * an owner or admin of an organization that requires two-factor authentication is
      sent to verify (or to set up a device) before any state-changing page of that
      organization: any non-GET request, or a ``…/new/`` page, whose URL names one of its
      environments (``environment_id``) or the organization itself (``organization_id``),
      and "New environment" posted for it.

    The data-plane API (``/api/``) authenticates with API keys, not sessions: untouched.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse | None:
        from environments import two_factor

        if request.path_info.startswith("/api/") or not request.user.is_authenticated:
            return None
        match = request.resolver_match
        if match is not None and match.view_name in _TWO_FACTOR_EXEMPT:
            return None
        if two_factor.is_verified(request):
            return None
        device = two_factor.confirmed_device(request.user)
        if device is not None:
            return _send_to("two_factor_verify", request)
        if not _is_state_changing(request):
            return None
        organization = two_factor.organization_for_view(request, view_kwargs)
        if two_factor.policy_applies(request.user, organization):
            return _send_to("two_factor", request, organization=organization)
        return None


def _is_state_changing(request: HttpRequest) -> bool:
    return request.method not in _SAFE_METHODS or request.path_info.endswith("/new/")


def _send_to(url_name: str, request: HttpRequest, organization=None) -> HttpResponse:
    """Redirect to a two-factor page, coming back afterwards to the page asked for (for a
    GET) or to the page the form was on (for a POST, whose URL may not accept a GET)."""
    if request.method in _SAFE_METHODS:
        back = request.get_full_path()
    else:
        back = _same_site_referer(request) or reverse("home")
    query = {"next": back}
    if organization is not None:
        query["organization"] = organization.name
    return HttpResponseRedirect(f"{reverse(url_name)}?{urlencode(query)}")


def _same_site_referer(request: HttpRequest) -> str | None:
    from django.utils.http import url_has_allowed_host_and_scheme

    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(referer, allowed_hosts={request.get_host()}):
        return referer
    return None


class NoStoreMiddleware:
    """Every portal page answers ``Cache-Control: no-store`` (unless the view set its own
    caching): the pages take and show secrets (sign-in, IAM credentials, a new API key,
    recovery codes) and an organization's keys, none of which a browser or proxy may keep.
    Static files are answered by WhiteNoise before this runs and stay cacheable."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response


class HeadWithoutBodyMiddleware:
    """A HEAD answer is the GET answer without its body (RFC 9110, 9.3.2): Django's views
    answer HEAD as GET and leave the body to the server, and gunicorn then logs a warning
    ("sent body bytes on a no-body response") for every one. The body goes here, for pages
    and WhiteNoise's static files alike; ``Content-Length`` still says how long it would be.
    The API's handler does the same in ``keys.api.views``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.method != "HEAD":
            return response
        if response.streaming:
            # A file stays registered with the response, which closes it when it is closed.
            response.streaming_content = iter(())
        else:
            length = len(response.content)
            response.content = b""
            response["Content-Length"] = str(length)
        return response
