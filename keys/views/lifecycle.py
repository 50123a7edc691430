"""Key lifecycle pages and actions: new platform-managed version, replace credentials (or,
in role mode, the role ARN), re-encryption (start, pause, resume, cancel, live progress), retirement, revocation drill.

Thin: resolve access (``environments.selectors.get_environment_for_user`` / ``keys.selectors.get_registration_for_user``,
404 outside the user's organizations), check the role (owner or admin; retirement and the
drill: owner only; 403 otherwise), call one service, redirect. The environment page's
lifecycle card is rendered by the same partial the progress endpoint returns, so what the
page polls is what it first showed.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from environments.models import Environment, Membership
from environments.selectors import get_environment_for_user
from keys import parsers
from keys.clock import now
from keys.forms import ReplaceCredentialsForm, ReplaceRoleArnForm
from keys.models import KeyRegistration, ReencryptionJob, ValidationRun
from keys.selectors import get_registration_for_user, lifecycle_context, not_queued_message
from keys.services import lifecycle, reencryption
from keys.services.registrations import (
    DuplicateAccessKey,
    TransitionError,
    registration_replace_credentials,
    registration_replace_role_arn,
)
from keys.views.actions import run_action, say_done_and_validation_started
from keys.views.validation import render_confirmation

Status = KeyRegistration.Status
JobStatus = ReencryptionJob.Status


def _back(environment: Environment, anchor: str = "key-lifecycle") -> HttpResponse:
    return redirect(f"{reverse('environment_detail', args=[environment.public_id])}#{anchor}")


@login_required
@require_GET
@never_cache
def reencryption_progress(request: HttpRequest, environment_id) -> JsonResponse:
    """JSON for the live card: ``{"job", "versions", "remaining", "percent", "eta_seconds",
    "eta_text", "running", "html"}``; ``html`` is the card's body, rendered by the same
    partial as the environment page."""
    environment, membership = get_environment_for_user(request.user, environment_id)
    context = lifecycle_context(environment, membership)
    payload = context["progress"].as_json()
    payload["html"] = render_to_string("keys/partials/lifecycle_body.html", {"lc": context, "environment": environment}, request=request)
    return JsonResponse(payload)


# ---------------------------------------------------------------------------
# Rotation: a new platform-managed version
# ---------------------------------------------------------------------------


@login_required
@require_POST
def managed_version_new(request: HttpRequest, environment_id) -> HttpResponse:
    environment, membership = get_environment_for_user(request.user, environment_id, requirement=Membership.CHANGE)
    registration = lifecycle.managed_version_create(environment=environment, actor=request.user)
    messages.success(
        request,
        f"Platform-managed key version {registration.version} created. Activate it to use it for new records.",
    )
    return _back(environment)


# ---------------------------------------------------------------------------
# Replace credentials
# ---------------------------------------------------------------------------


@login_required
@sensitive_post_parameters("secret_access_key", "access_key_id")
@require_http_methods(["GET", "HEAD", "POST"])
@sensitive_variables()
def registration_credentials(request: HttpRequest, environment_id, registration_id) -> HttpResponse:
    """New IAM credentials for a BYOK version: the same key version, nothing re-encrypted;
    a validation with the new credentials runs after saving."""
    registration, membership = get_registration_for_user(
        request.user, environment_id, registration_id, requirement=Membership.CHANGE
    )
    environment = registration.environment
    # A role-mode version has no IAM credentials: its role ARN is replaced instead.
    usable = registration.is_byok and registration.is_live and not registration.uses_role
    form = ReplaceCredentialsForm(
        request.POST if request.method == "POST" and usable else None, environment=environment, registration=registration
    )
    if request.method == "POST" and usable and form.is_valid():
        try:
            registration_replace_credentials(
                registration=registration, actor=request.user,
                access_key_id=form.cleaned_data["access_key_id"],
                secret_access_key=form.cleaned_data["secret_access_key"],
            )
        except DuplicateAccessKey as e:
            form.add_error_after_clean("access_key_id", str(e))
        except TransitionError as e:
            messages.error(request, str(e))
            return _back(environment)
        else:
            say_done_and_validation_started(
                request, registration=registration,
                done=f"IAM credentials of key version {registration.version} replaced; nothing was re-encrypted.",
                started=f"Validation of key version {registration.version} with the new credentials has started.",
            )
            return redirect(f"{reverse('environment_detail', args=[environment.public_id])}#version-{registration.version}")
    return render(
        request,
        "keys/registration_credentials.html",
        {"environment": environment, "membership": membership, "registration": registration, "form": form, "usable": usable},
    )


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def registration_role_arn(request: HttpRequest, environment_id, registration_id) -> HttpResponse:
    """A new role ARN for a role-mode version (issue 14, item 6): the same key version,
    nothing re-encrypted; the old role's cached data key and session are dropped and a
    validation with the new role runs after saving."""
    registration, membership = get_registration_for_user(
        request.user, environment_id, registration_id, requirement=Membership.CHANGE
    )
    environment = registration.environment
    usable = registration.is_byok and registration.is_live and registration.uses_role
    form = ReplaceRoleArnForm(
        request.POST if request.method == "POST" and usable else None, environment=environment, registration=registration
    )
    if request.method == "POST" and usable and form.is_valid():
        try:
            registration_replace_role_arn(
                registration=registration, actor=request.user, role_arn=form.cleaned_data["role_arn"].arn
            )
        except TransitionError as e:
            form.add_error("role_arn", str(e))
        else:
            say_done_and_validation_started(
                request, registration=registration,
                done=f"Role ARN of key version {registration.version} replaced; nothing was re-encrypted.",
                started=f"Validation of key version {registration.version} with the new role has started.",
            )
            return redirect(f"{reverse('environment_detail', args=[environment.public_id])}#version-{registration.version}")
    return render(
        request,
        "keys/registration_role_arn.html",
        {"environment": environment, "membership": membership, "registration": registration, "form": form,
         "usable": usable},
    )


# ---------------------------------------------------------------------------
# Re-encryption
# ---------------------------------------------------------------------------


def _changer(request: HttpRequest, environment_id) -> Environment:
    environment, _ = get_environment_for_user(request.user, environment_id, requirement=Membership.CHANGE)
    return environment


def _latest_job(environment: Environment) -> ReencryptionJob | None:
    return ReencryptionJob.objects.filter(environment=environment).select_related("target", "environment").first()


@login_required
@require_POST
def reencryption_start_view(request: HttpRequest, environment_id) -> HttpResponse:
    environment = _changer(request, environment_id)
    run_action(
        request, lambda: reencryption.reencryption_start(environment=environment, actor=request.user),
        success=lambda job: f"Re-encryption to version {job.target.version} started.",
    )
    return _back(environment)


def _job_action(request: HttpRequest, environment_id, service, done: str) -> HttpResponse:
    environment = _changer(request, environment_id)
    job = _latest_job(environment)
    if job is None:
        messages.error(request, "There is no re-encryption to change.")
        return _back(environment)
    run_action(
        request, lambda: service(job=job, actor=request.user),
        success=done,
    )
    return _back(environment)


@login_required
@require_POST
def reencryption_pause_view(request: HttpRequest, environment_id) -> HttpResponse:
    return _job_action(request, environment_id, reencryption.reencryption_pause, "Re-encryption paused after the batch in progress.")


@login_required
@require_POST
def reencryption_resume_view(request: HttpRequest, environment_id) -> HttpResponse:
    return _job_action(request, environment_id, reencryption.reencryption_resume, "Re-encryption resumed.")


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def reencryption_cancel_view(request: HttpRequest, environment_id) -> HttpResponse:
    """GET: the confirmation step; POST: cancel."""
    if request.method != "POST":
        environment = _changer(request, environment_id)
        job = _latest_job(environment)
        remaining = reencryption.job_progress(environment=environment).remaining
        target = f"version {job.target.version}" if job else "the active version"
        return render_confirmation(
            request, environment=environment, title="Cancel the re-encryption",
            consequences=[
                "Stop moving records after the batch in progress.",
                (f"Keep the records already moved under {target}, and the {remaining} record(s) not moved yet under "
                 "their older versions, readable as before."),
                ("Keep the older versions from being retired until their records are re-encrypted: you can start a "
                 "new re-encryption at any time."),
            ],
            button="Cancel the re-encryption", back_url=_back(environment).url,
        )
    return _job_action(
        request, environment_id, reencryption.reencryption_cancel,
        "Re-encryption cancelled. Records already moved stay under the active version; the others stay readable.",
    )


# ---------------------------------------------------------------------------
# Retirement (owners only)
# ---------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def registration_retire_view(request: HttpRequest, environment_id, registration_id) -> HttpResponse:
    """GET: the confirmation step; POST: retire."""
    registration, membership = get_registration_for_user(
        request.user, environment_id, registration_id, requirement=Membership.OWN
    )
    if request.method != "POST":
        return render_confirmation(
            request, environment=registration.environment, title=f"Retire key version {registration.version}",
            consequences=retire_consequences(registration),
            button=f"Retire version {registration.version}", back_url=_back(registration.environment).url,
        )
    destroyed = "data key was" if registration.uses_role else "credentials and data key were"
    run_action(
        request, lambda: lifecycle.registration_retire(registration=registration, actor=request.user),
        success=f"Key version {registration.version} retired: its {destroyed} destroyed.",
    )
    return _back(registration.environment)


def retire_consequences(registration: KeyRegistration) -> list[str]:
    """What retiring does, in the admin's words: a role-mode version holds no IAM
    credentials (only its encrypted data key is destroyed; the role stays in AWS)."""
    version = registration.version
    if not registration.is_byok:
        what, aws = "sealed data key", "Change nothing else."
    elif registration.uses_role:
        what = "encrypted data key"
        aws = "Change nothing in AWS: delete the IAM role there too once no key version uses it."
    else:
        what = "sealed IAM credentials and encrypted data key"
        aws = "Change nothing in AWS: delete the IAM user's access key there too once you no longer need it."
    return [
        (f"Destroy the {what} of key version {version}. This cannot be undone: a record "
         "still encrypted with it could never be read again (there is none now, or retiring is refused)."),
        f"Keep version {version} listed as retired, with an entry in the audit trail.",
        aws,
    ]


# ---------------------------------------------------------------------------
# Revocation drill (owners only)
# ---------------------------------------------------------------------------


def _owner(request: HttpRequest, environment_id) -> tuple[Environment, Membership]:
    return get_environment_for_user(request.user, environment_id, requirement=Membership.OWN)


def _drill_json(environment: Environment, drill: lifecycle.Drill | None, probe: lifecycle.Probe) -> dict[str, Any]:
    return {
        "serving": probe.serving,
        "version": probe.version,
        "reason": probe.reason,
        "message": probe.message,
        "transient": probe.transient,
        "watching": bool(drill and drill.watching),
        "started_at": drill.started_at.isoformat() if drill else None,
        "elapsed_seconds": round((now() - drill.started_at).total_seconds(), 1) if drill and drill.watching else None,
        "measured_seconds": drill.measured_seconds if drill else None,
        "bound_seconds": lifecycle.environment_revocation_bound(environment).seconds,
    }


@login_required
@require_GET
def revocation_drill(request: HttpRequest, environment_id) -> HttpResponse:
    environment, membership = _owner(request, environment_id)
    active = environment.key_registrations.filter(status=Status.ACTIVE).first()
    watched = active if active is not None else environment.key_registrations.filter(
        status=Status.INACCESSIBLE, restore_status=Status.ACTIVE
    ).order_by("-version").first()
    return render(request, "keys/revocation_drill.html", {
        "environment": environment,
        "membership": membership,
        "registration": watched,
        "bound": lifecycle.environment_revocation_bound(environment),
        "drill": lifecycle.drill_current(environment=environment),
        "status_url": reverse("revocation_drill_status", args=[environment.public_id]),
        "role": _role_drill_commands(watched),
    })


def _role_drill_commands(registration: KeyRegistration | None) -> parsers.RoleDrillCommands | None:
    """The role-mode commands of the drill, for a version that reaches KMS through a role."""
    if registration is None or not registration.uses_role or not registration.role_arn:
        return None
    try:
        return parsers.role_drill_commands(
            role_arn=registration.role_arn, kms_key_arn=registration.kms_key_arn,
            encryption_context=registration.encryption_context or None,
            platform_principal_arn=settings.PLATFORM_AWS_PRINCIPAL_ARN,
            external_id=registration.environment.aws_external_id,
        )
    except parsers.InputError:  # stored role ARNs were parsed on the way in
        return None


@login_required
@require_POST
def revocation_drill_start(request: HttpRequest, environment_id) -> HttpResponse:
    environment, _ = _owner(request, environment_id)
    run_action(
        request, lambda: lifecycle.drill_start(environment=environment, actor=request.user),
        success="Watching started. Revoke access in AWS now; the page shows when this platform stops serving.",
    )
    return redirect("revocation_drill", environment_id=environment.public_id)


@login_required
@require_POST
def revocation_drill_check(request: HttpRequest, environment_id) -> HttpResponse:
    environment, _ = _owner(request, environment_id)
    run_action(
        request, lambda: lifecycle.drill_check_now(environment=environment, actor=request.user),
        success="Validation against KMS queued: a revocation is noticed as soon as it runs.",
        warning=lambda run: not_queued_message(run.registration) if run.outcome == ValidationRun.Outcome.NOT_QUEUED else None,
    )
    return redirect("revocation_drill", environment_id=environment.public_id)


@login_required
@require_GET
@never_cache
def revocation_drill_status(request: HttpRequest, environment_id) -> JsonResponse | HttpResponse:
    """JSON for the drill page: ``{"serving", "version", "reason", "message", "transient",
    "watching", "started_at", "elapsed_seconds", "measured_seconds", "bound_seconds"}``.
    Probes the environment through the data plane's path; records the result once."""
    environment, _ = _owner(request, environment_id)
    drill, probe = lifecycle.drill_poll(environment=environment, actor=request.user)
    return JsonResponse(_drill_json(environment, drill, probe))


_ENV = "environments/<uuid:environment_id>"
_VERSION = f"{_ENV}/keys/<uuid:registration_id>"

urlpatterns = [
    path(f"{_ENV}/keys/managed/new/", managed_version_new, name="managed_version_new"),
    path(f"{_VERSION}/credentials/", registration_credentials, name="registration_credentials"),
    path(f"{_VERSION}/role/", registration_role_arn, name="registration_role_arn"),
    path(f"{_VERSION}/retire/", registration_retire_view, name="registration_retire"),
    path(f"{_ENV}/reencryption/start/", reencryption_start_view, name="reencryption_start"),
    path(f"{_ENV}/reencryption/pause/", reencryption_pause_view, name="reencryption_pause"),
    path(f"{_ENV}/reencryption/resume/", reencryption_resume_view, name="reencryption_resume"),
    path(f"{_ENV}/reencryption/cancel/", reencryption_cancel_view, name="reencryption_cancel"),
    path(f"{_ENV}/reencryption/progress/", reencryption_progress, name="reencryption_progress"),
    path(f"{_ENV}/revocation-drill/", revocation_drill, name="revocation_drill"),
    path(f"{_ENV}/revocation-drill/start/", revocation_drill_start, name="revocation_drill_start"),
    path(f"{_ENV}/revocation-drill/check/", revocation_drill_check, name="revocation_drill_check"),
    path(f"{_ENV}/revocation-drill/status/", revocation_drill_status, name="revocation_drill_status"),
]
