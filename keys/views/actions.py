"""What the POST actions of the key pages share: running one service call and telling the
user how it went."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest

from keys.models import KeyRegistration
from keys.selectors import validation_not_queued
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


def say_done_and_validation_started(
    request: HttpRequest, *, registration: KeyRegistration, done: str, started: str
) -> None:
    """Tell the user that a change queuing a validation was made (``done``, a success that
    stays) and, in a second message, that the validation has started (``started``, tagged
    ``validation-started-<version>``: the page drops it once that validation has ended, so it
    never says "has started" of a finished one). Two messages because with eager tasks
    (``make run``, the tests) the validation has ended before the page loads, and one banner
    carrying both would take the news of the change with it. If the job could not be queued,
    one warning says both (``keys.selectors.not_queued_message``)."""
    not_queued = validation_not_queued(registration)
    if not_queued:
        messages.warning(request, f"{done} {not_queued}")
        return
    messages.success(request, done)
    messages.info(request, started, extra_tags=f"validation-started-{registration.version}")
