"""Key registration pages. Thin: resolve access, validate a form, call one service."""

import json
import shlex

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods

from environments.models import Membership
from environments.selectors import get_environment_for_user
from keys import parsers
from keys.forms import RegistrationForm
from keys.services.registrations import DuplicateAccessKey, registration_create
from keys.views.actions import say_done_and_validation_started

SENSITIVE_FIELDS = ("secret_access_key", "access_key_id", "encrypted_data_key")


def _guide(kms_key_arn: str, encryption_context_text: str, environment=None, role_arn: str = "") -> dict:
    """The setup guide's command and IAM policy for what the admin typed so far:
    ``{"cli_command", "iam_policy", "arn_ok", "hint"}``. Only a valid key ARN (or nothing
    yet: a template with placeholders) gets a command and a policy; for anything else, an
    alias above all, both are empty and ``hint`` says how to find the key ARN.

    With the environment, also the environment-bound variants and, when the platform has
    a principal, the role-mode trust policy, external ID and commands (issue 14)."""
    typed = kms_key_arn.strip()
    try:
        context = parsers.parse_encryption_context(encryption_context_text or "")
    except parsers.InputError:
        context = {}
    try:
        arn_ok = bool(parsers.parse_kms_key_arn(kms_key_arn))
    except parsers.InputError as e:
        arn_ok, hint = False, e.message
    else:
        hint = ""
    arn = typed or "arn:aws:kms:<region>:<account-id>:key/<key-id>"
    if typed and not arn_ok:
        if typed.lower().startswith("alias/") or ":alias/" in typed:
            # The command that finds the key ARN, for the alias typed (shell-quoted).
            hint = hint.replace("alias/YOUR-ALIAS", shlex.quote(typed[:300]))
        guide = {"cli_command": "", "iam_policy": "", "arn_ok": False, "hint": hint}
    else:
        guide = {
            "cli_command": parsers.cli_command(kms_key_arn=arn, region=None, encryption_context=context),
            # The Decrypt condition follows the context typed, so a bound data key gets a bound policy.
            "iam_policy": parsers.iam_policy_json(kms_key_arn=arn, encryption_context=context),
            "arn_ok": arn_ok,
            "hint": "",
        }
    if environment is None:
        return guide
    binding = parsers.environment_encryption_context(environment.public_id)
    key_ok = not typed or arn_ok
    guide |= {
        "bound_cli_command": parsers.cli_command(kms_key_arn=arn, region=None, encryption_context=binding) if key_ok else "",
        "binding": json.dumps(binding),
        "bound_policy": parsers.iam_policy_json(kms_key_arn=arn, encryption_context=binding) if key_ok else "",
        "bound": context == binding,
    }
    if settings.PLATFORM_AWS_PRINCIPAL_ARN:
        guide |= {
            "external_id": environment.aws_external_id,
            "platform_principal": settings.PLATFORM_AWS_PRINCIPAL_ARN,
            "trust_policy": parsers.trust_policy_json(
                platform_principal_arn=settings.PLATFORM_AWS_PRINCIPAL_ARN, external_id=environment.aws_external_id
            ),
            "role_commands": "\n".join(parsers.role_cli_commands(role_arn=role_arn.strip())),
        }
    return guide


@login_required
@sensitive_post_parameters(*SENSITIVE_FIELDS)
@require_http_methods(["GET", "HEAD", "POST"])
@sensitive_variables()  # every local of this view and the form's frames may hold the secret
def registration_new(request: HttpRequest, environment_id) -> HttpResponse:
    environment, membership = get_environment_for_user(request.user, environment_id, requirement=Membership.CHANGE)
    form = RegistrationForm(request.POST if request.method == "POST" else None, environment=environment)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        arn = data["kms_key_arn"]
        if form.role_mode:
            access = {"role_arn": data["role_arn"].arn}
        else:
            access = {"access_key_id": data["access_key_id"], "secret_access_key": data["secret_access_key"]}
        try:
            registration = registration_create(
                environment=environment,
                actor=request.user,
                kms_key_arn=arn.arn,
                region=data["region"],
                account_id=arn.account_id,
                encrypted_data_key=data["encrypted_data_key"],
                encryption_context=data["encryption_context"],
                **access,
            )
        except DuplicateAccessKey as e:
            form.add_error_after_clean("access_key_id", str(e))
        else:
            say_done_and_validation_started(
                request, registration=registration, done=f"Key version {registration.version} registered.",
                started=f"Validation of key version {registration.version} against KMS has started.",
            )
            return redirect("environment_detail", environment_id=environment.public_id)
    guide = _guide(
        request.POST.get("kms_key_arn", ""),
        request.POST.get("encryption_context", ""),
        environment,
        request.POST.get("role_arn", ""),
    )
    return render(
        request,
        "keys/registration_new.html",
        {"environment": environment, "membership": membership, "form": form, "guide": guide},
    )


@login_required
@require_GET
def registration_guide(request: HttpRequest, environment_id) -> JsonResponse:
    """JSON for the live setup guide: ``{"cli_command", "iam_policy", "arn_ok", "hint", …}`` for ``?kms_key_arn=…&encryption_context=…``."""
    environment, _ = get_environment_for_user(request.user, environment_id)
    return JsonResponse(
        _guide(
            request.GET.get("kms_key_arn", "")[:2048],
            request.GET.get("encryption_context", "")[:10_000],
            environment,
            request.GET.get("role_arn", "")[:2048],
        )
    )


urlpatterns = [
    path("environments/<uuid:environment_id>/keys/new/", registration_new, name="registration_new"),
    path("environments/<uuid:environment_id>/keys/guide/", registration_guide, name="registration_guide"),
]
