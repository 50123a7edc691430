"""Checks the URLs of the database, Redis and the Celery broker before anything parses them.

A password with ``#``, ``@``, ``/``, ``?`` or a bare ``%`` that is not percent-encoded makes
the URL mean something else (``#`` starts a fragment, ``/`` ends the host part, ``@`` splits
it twice), and the parsers then fail with a traceback that quotes the broken URL, password
included, or silently connect as someone else. ``check_service_url`` refuses such a URL with
a message that names the variable and the fix, and quotes nothing of the value.

RFC 3986 §3.2 (authority: ``userinfo@host:port``) and §2.1 (percent-encoding).
"""

import re

from django.core.exceptions import ImproperlyConfigured

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_FIX = (
    "percent-encode the user name and password: '#' -> %23, '@' -> %40, '/' -> %2F, "
    "'?' -> %3F, '%' -> %25, ':' in a user name -> %3A (Python: urllib.parse.quote(password, safe=''))"
)


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` in words that quote none of it, or None if it is well formed."""
    scheme = _SCHEME.match(url)
    if not scheme:
        return "it does not start with a scheme such as postgres://, redis:// or sqlite://"
    rest = url[scheme.end():]
    if "#" in rest:
        return "it contains '#', which starts a URL fragment (a '#' in the password?)"
    authority_end = min((i for i in (rest.find(c) for c in "/?") if i >= 0), default=len(rest))
    authority, after = rest[:authority_end], rest[authority_end:]
    if "@" in after:
        return "an '@' follows the host part (a '/' or '?' in the password?)"
    if authority.count("@") > 1:
        return "the part before the host has more than one '@' (an '@' in the password?)"
    if _BAD_PERCENT.search(authority):
        return "a '%' in the user name or password is not followed by two hex digits"
    hostport = authority.rpartition("@")[2]
    if not hostport.startswith("["):  # an IPv6 literal keeps its colons inside brackets
        host, _, port = hostport.partition(":")
        if port and not port.isdigit():
            return "the port after the host is not a number (a ':' or '/' in the password?)"
        if "@" in authority and not host:
            return "there is no host name after the '@'"
    return None


def check_service_url(name: str, url: str) -> str:
    """Return ``url`` unchanged if well formed; else raise ``ImproperlyConfigured`` naming
    the variable ``name`` and the fix, without any part of the URL (it may hold a password)."""
    problem = url_problem(url)
    if problem is not None:
        # `from None`: no chained exception carries the value into the traceback.
        raise ImproperlyConfigured(f"{name} is not a valid URL: {problem}. Fix: {_FIX}.") from None
    return url
