"""Validation pages and actions: live status, "Validate again", "Activate".

Thin: resolve access (``keys.selectors.get_registration_for_user``), call one service, redirect. The
environment page renders each version's status and validation panel with the same
partials the status endpoint returns, so what the page polls is what it first showed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from environments.models import Membership
from keys.models import KeyRegistration, ValidationRun
from keys.selectors import get_registration_for_user, not_queued_message, validation_context
from keys.services.validation import (
    registration_activate,
    registration_request_validation,
)
from keys.views.actions import run_action

Status = KeyRegistration.Status
Outcome = ValidationRun.Outcome
# Runs shown in a version's history.


def render_confirmation(
    request: HttpRequest, *, environment, title: str, consequences: list[str], button: str,
    back_url: str, danger: bool = True,
) -> HttpResponse:
    """The confirmation step of a destructive or hard-to-undo action: a GET page saying
    exactly what will happen, whose form POSTs to the same URL (no script, so it works
    under the strict Content-Security-Policy and without JavaScript)."""
    return render(request, "keys/confirm.html", {
        "environment": environment, "title": title, "consequences": consequences, "button": button,
        "danger": danger, "back_url": back_url, "action_url": request.path,
    })


def confirm_then_run(
    request: HttpRequest,
    registration: KeyRegistration,
    *,
    verb: str,
    consequences: Callable[[KeyRegistration], list[str]],
    service: Callable[..., Any],
    success: str,
    danger: bool = True,
) -> HttpResponse:
    """A key version's action with a confirmation step ("Activate", "Discard"): GET renders
    ``verb`` key version N with ``consequences(registration)``; POST runs
    ``service(registration=registration, actor=request.user)`` through
    :func:`~keys.views.actions.run_action` (``success``, or the refusal, as a message) and
    goes back to the version's row of the environment page. The caller resolved access."""
    if request.method != "POST":
        return render_confirmation(
            request, environment=registration.environment, title=f"{verb} key version {registration.version}",
            consequences=consequences(registration), button=f"{verb} version {registration.version}",
            back_url=version_url(registration), danger=danger,
        )
    run_action(request, lambda: service(registration=registration, actor=request.user), success=success)
    return redirect(version_url(registration))


def version_url(registration: KeyRegistration) -> str:
    """The environment page at the key version's row."""
    url = reverse("environment_detail", args=[registration.environment.public_id])
    return f"{url}#version-{registration.version}"


def activation_consequences(registration: KeyRegistration) -> list[str]:
    """What activating ``registration`` does, in the admin's words."""
    active = registration.environment.key_registrations.filter(status=Status.ACTIVE).first()
    sentences = [f"Make key version {registration.version} active: every record written from now on is encrypted with it."]
    if active is not None:
        sentences.append(
            f"Make version {active.version} (active now) decrypt-only: its records stay readable, and "
            "re-encryption can move them to the new version."
        )
    if registration.is_byok:
        sentences.append(
            f"Make this environment depend on your KMS key {registration.kms_key_arn}: disabling it, scheduling "
            "its deletion or removing the IAM policy stops reads and writes."
        )
    sentences.append("You can switch back by activating another valid or decrypt-only version later.")
    return sentences


def _back(registration: KeyRegistration) -> HttpResponse:
    return redirect(version_url(registration))


@login_required
@require_GET
@never_cache
def registration_status(request: HttpRequest, environment_id, registration_id) -> JsonResponse:
    """JSON for the live page: ``{"version", "status", "status_display", "busy",
    "status_html", "panel_html"}``; the HTML is the version's status cell and validation
    panel, rendered by the same partials as the environment page."""
    registration, membership = get_registration_for_user(request.user, environment_id, registration_id)
    context = {"v": validation_context(registration, membership), "environment": registration.environment}
    return JsonResponse({
        "version": registration.version,
        "status": registration.status,
        "status_display": registration.get_status_display(),
        "busy": context["v"]["busy"],
        "status_html": render_to_string("keys/partials/validation_status.html", context, request=request),
        "panel_html": render_to_string("keys/partials/validation.html", context, request=request),
    })


@login_required
@require_POST
def registration_validate_again(request: HttpRequest, environment_id, registration_id) -> HttpResponse:
    registration, membership = get_registration_for_user(
        request.user, environment_id, registration_id, requirement=Membership.CHANGE
    )
    run_action(
        request, lambda: registration_request_validation(registration=registration, actor=request.user),
        success=f"Validation of key version {registration.version} against KMS has started.",
        extra_tags=f"validation-started-{registration.version}",
        warning=lambda run: not_queued_message(registration) if run.outcome == Outcome.NOT_QUEUED else None,
    )
    return _back(registration)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def registration_activate_view(request: HttpRequest, environment_id, registration_id) -> HttpResponse:
    """GET: the confirmation step; POST: activate."""
    registration, _ = get_registration_for_user(
        request.user, environment_id, registration_id, requirement=Membership.CHANGE
    )
    return confirm_then_run(
        request, registration, verb="Activate", consequences=activation_consequences, service=registration_activate,
        success=f"Key version {registration.version} is now active: new records use it.", danger=False,
    )


_VERSION = "environments/<uuid:environment_id>/keys/<uuid:registration_id>"

urlpatterns = [
    path(f"{_VERSION}/status/", registration_status, name="registration_status"),
    path(f"{_VERSION}/validate/", registration_validate_again, name="registration_validate"),
    path(f"{_VERSION}/activate/", registration_activate_view, name="registration_activate"),
]
