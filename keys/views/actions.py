"""What the POST actions of the key pages share: running one service call and telling the
user how it went."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest

from keys.services.refusals import Refused


def run_action(
    request: HttpRequest,
    action: Callable[[], Any],
    *,
    success: str | Callable[[Any], str],
    extra_tags: str = "",
    warning: Callable[[Any], str | None] | None = None,
) -> None:
    """Run one service call of a POST action and tell the user how it went with Django
    messages: a refusal's own text (any :class:`~keys.services.refusals.Refused`) as an error,
    else ``warning(result)`` as a warning when it gives one (the action was taken but did not
    fully happen, e.g. its job could not be queued), else ``success`` (a text, or a function
    of the service's result). Anything else is a fault and propagates. ``extra_tags`` go on
    the success message (the page's live updates look for them)."""
    try:
        result = action()
    except Refused as e:
        messages.error(request, str(e))
        return
    text = warning(result) if warning is not None else None
    if text:
        messages.warning(request, text)
        return
    messages.success(request, success(result) if callable(success) else success, extra_tags=extra_tags)
