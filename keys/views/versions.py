"""Fixing or discarding a key version that never served: "Edit" (the five items and the
encryption context, validated again) and "Discard" (its sealed material destroyed, its
access key free again), with a confirmation step before the discard.

Thin: resolve access (``keys.selectors.get_registration_for_user``, 404 outside the user's
organizations), owners and admins only (403 otherwise), call one service, redirect.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods

from environments.models import Membership
from keys import crypto
from keys.forms import EditRegistrationForm
from keys.models import KeyRegistration
from keys.selectors import get_registration_for_user, recent_validation_runs
from keys.services import lifecycle
from keys.services.registrations import DuplicateAccessKey, NotEditable, registration_update
from keys.views.actions import say_done_and_validation_started
from keys.views.registration import SENSITIVE_FIELDS, _guide
from keys.views.validation import confirm_then_run, version_url


@login_required
@never_cache
@sensitive_post_parameters(*SENSITIVE_FIELDS)
@require_http_methods(["GET", "HEAD", "POST"])
@sensitive_variables()
def registration_edit(request: HttpRequest, environment_id, registration_id) -> HttpResponse:
    registration, membership = get_registration_for_user(
        request.user, environment_id, registration_id, requirement=Membership.CHANGE
    )
    if not registration.is_editable:
        messages.error(
            request,
            f"Key version {registration.version} is {registration.get_status_display().lower()}: only a version "
            "that never served and is not being validated can be edited.",
        )
        return redirect(version_url(registration))
    environment = registration.environment
    form = EditRegistrationForm(
        request.POST if request.method == "POST" else None, environment=environment, registration=registration
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        arn = data["kms_key_arn"]
        try:
            registration_update(
                registration=registration, actor=request.user,
                kms_key_arn=arn.arn, region=data["region"], account_id=arn.account_id,
                encryption_context=data["encryption_context"],
                encrypted_data_key=data["encrypted_data_key"],
                access_key_id=data["access_key_id"], secret_access_key=data["secret_access_key"],
            )
        except DuplicateAccessKey as e:
            form.add_error_after_clean("access_key_id", str(e))
        except NotEditable as e:
            messages.error(request, str(e))
            return redirect(version_url(registration))
        else:
            say_done_and_validation_started(
                request, registration=registration, done=f"Key version {registration.version} saved.",
                started=f"Validation of key version {registration.version} against KMS has started.",
            )
            return redirect(version_url(registration))
    arn_text = request.POST.get("kms_key_arn", "") if request.method == "POST" else registration.kms_key_arn
    context_text = request.POST.get("encryption_context", "") if request.method == "POST" else form.initial.get("encryption_context", "")
    blob = bytes(registration.encrypted_data_key or b"")
    last = next(iter(recent_validation_runs(registration)), None)
    failing = [c for c in (last.checks if last else []) if c.get("status") == "fail" and not c.get("transient")]
    return render(request, "keys/registration_edit.html", {
        "failing": failing if registration.status == KeyRegistration.Status.FAILED else [],
        "environment": environment, "membership": membership, "registration": registration, "form": form,
        "guide": _guide(arn_text, context_text),
        "fingerprint": f"{len(blob)} bytes, fingerprint {crypto.fingerprint(blob)}" if blob else "",
    })


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def registration_discard(request: HttpRequest, environment_id, registration_id) -> HttpResponse:
    """GET: the confirmation step; POST: discard."""
    registration, _ = get_registration_for_user(
        request.user, environment_id, registration_id, requirement=Membership.CHANGE
    )
    return confirm_then_run(
        request, registration, verb="Discard", consequences=discard_consequences,
        service=lifecycle.registration_discard,
        success=discard_done(registration),
    )


def discard_done(registration: KeyRegistration) -> str:
    """The success message of a discard, saying what was really destroyed: a role-mode
    version held only its encrypted data key (the role stays in AWS, nothing is freed)."""
    if registration.uses_role:
        return (f"Key version {registration.version} discarded: its encrypted data key was destroyed. "
                "Your IAM role stays in AWS as it is.")
    return (f"Key version {registration.version} discarded: its IAM credentials and encrypted data key were "
            "destroyed, and its access key can be registered again.")


def discard_consequences(registration: KeyRegistration) -> list[str]:
    """What discarding does, in the admin's words: a role-mode version holds no IAM
    credentials, so only its encrypted data key is destroyed and no access key is freed."""
    version = registration.version
    if registration.uses_role:
        return [
            f"Destroy the encrypted data key of key version {version}. This cannot be undone.",
            f"Keep version {version} listed as discarded, with an entry in the audit trail.",
            "Change nothing else: this version never served, so no record uses it, and your IAM role in AWS stays "
            "as it is.",
        ]
    access_key = f" ({registration.masked_access_key_id[-8:]})" if registration.masked_access_key_id else ""
    return [
        (f"Destroy the sealed IAM credentials{access_key} and the encrypted data key of key version "
         f"{version}. This cannot be undone."),
        f"Keep version {version} listed as discarded, with an entry in the audit trail.",
        "Free its access key: you can register it again on a new key version.",
        "Change nothing else: this version never served, so no record uses it and nothing in AWS changes.",
    ]


_VERSION = "environments/<uuid:environment_id>/keys/<uuid:registration_id>"

urlpatterns = [
    path(f"{_VERSION}/edit/", registration_edit, name="registration_edit"),
    path(f"{_VERSION}/discard/", registration_discard, name="registration_discard"),
]
