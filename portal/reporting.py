"""Django's error reports (technical 500 page, mails to ADMINS) without secrets.

Two layers, both configured in settings:

* ``RedactingExceptionReporterFilter`` (``DEFAULT_EXCEPTION_REPORTER_FILTER``) cleanses
  settings by name (Django's list plus sealing keys, database, email, broker and Redis
  URLs, ADMINS), honours ``sensitive_variables`` / ``sensitive_post_parameters`` even with
  DEBUG on, and replaces any frame variable, POST field or request header whose text
  holds something shaped like a secret (``portal.logging.SECRET_PATTERNS``: AWS secret
  access keys and access key IDs, base64 data keys, API keys, sealed values).
* ``RedactingExceptionReporter`` (``DEFAULT_EXCEPTION_REPORTER``) also passes the finished
  text and HTML through the same redaction, for what the filter never sees: the
  exception's own message, GET parameters, template source; and it scrubs, by value, the
  POST fields the view marked with ``sensitive_post_parameters`` wherever else they show
  (customer data such as a record key or body has no shape to redact by).
"""

from __future__ import annotations

import html
import re
from typing import Any

from django.template.defaultfilters import pprint
from django.utils.safestring import mark_safe
from django.views.debug import ExceptionReporter

from portal.debug import AlwaysSafeExceptionReporterFilter

from .logging import redact, scrub, sensitive_posted_values

CLEANSED = "********************"


class RedactingExceptionReporterFilter(AlwaysSafeExceptionReporterFilter):
    hidden_settings = re.compile(
        r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE"
        r"|SEALING|DATABASE|EMAIL|BROKER|REDIS|ADMINS|_URL$",
        flags=re.IGNORECASE,
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        return self._cleanse_value(cleansed)

    def get_post_parameters(self, request) -> Any:
        post = super().get_post_parameters(request)
        if not post:
            return post
        post = post.copy()
        for name, values in post.lists():
            post.setlist(name, [self._cleanse_value(v) for v in values])
        return post

    def get_safe_request_meta(self, request) -> dict[str, Any]:
        return {k: self._cleanse_value(v) for k, v in super().get_safe_request_meta(request).items()}

    def get_traceback_frame_variables(self, request, tb_frame) -> Any:
        return [(name, self._cleanse_value(value)) for name, value in super().get_traceback_frame_variables(request, tb_frame)]

    def _cleanse_value(self, value: Any) -> Any:
        """``value`` itself when its printed form holds nothing secret-shaped, else that
        printed form redacted (what the report would have shown, minus the secret)."""
        if isinstance(value, str) and value == CLEANSED:
            return value
        try:
            text = str(value) if isinstance(value, str) else pprint(value)
        except Exception:
            return CLEANSED
        redacted = redact(text)
        return value if redacted == text else redacted


class RedactingExceptionReporter(ExceptionReporter):
    """Django's reporter, with its finished text and HTML redacted as well."""

    def get_traceback_html(self) -> str:
        posted = sensitive_posted_values(self.request)
        posted += [html.escape(v) for v in posted]  # as the HTML report writes them
        return mark_safe(redact(scrub(str(super().get_traceback_html()), posted)))

    def get_traceback_text(self) -> str:
        return redact(scrub(str(super().get_traceback_text()), sensitive_posted_values(self.request)))
