"""Key registration pages. Thin: resolve access, validate a form, call one service."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods

from environments.selectors import get_environment_for_user

from . import parsers
from .forms import RegistrationForm
from .services import DuplicateAccessKey, registration_create

SENSITIVE_FIELDS = ("secret_access_key", "access_key_id", "encrypted_data_key")


def _guide(kms_key_arn: str, encryption_context_text: str) -> dict:
    """The setup guide's command and IAM policy for what the admin typed so far:
    ``{"cli_command", "iam_policy", "arn_ok", "hint"}``. Only a valid key ARN (or nothing
    yet: a template with placeholders) gets a command and a policy; for anything else, an
    alias above all, both are empty and ``hint`` says how to find the key ARN."""
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
    if typed and not arn_ok:
        return {"cli_command": "", "iam_policy": "", "arn_ok": False, "hint": hint}
    arn = typed or "arn:aws:kms:<region>:<account-id>:key/<key-id>"
    return {
        "cli_command": parsers.cli_command(kms_key_arn=arn, region=None, encryption_context=context),
        "iam_policy": parsers.iam_policy_json(kms_key_arn=arn),
        "arn_ok": arn_ok,
        "hint": "",
    }


@login_required
@sensitive_post_parameters(*SENSITIVE_FIELDS)
@require_http_methods(["GET", "HEAD", "POST"])
@sensitive_variables()  # every local of this view and the form's frames may hold the secret
def registration_new(request: HttpRequest, environment_id) -> HttpResponse:
    environment, membership = get_environment_for_user(request.user, environment_id)
    if not membership.can_change:
        return render(request, "403.html", status=403)
    form = RegistrationForm(request.POST if request.method == "POST" else None, environment=environment)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        arn = data["kms_key_arn"]
        try:
            registration = registration_create(
                environment=environment,
                actor=request.user,
                kms_key_arn=arn.arn,
                region=data["region"],
                account_id=arn.account_id,
                encrypted_data_key=data["encrypted_data_key"],
                encryption_context=data["encryption_context"],
                access_key_id=data["access_key_id"],
                secret_access_key=data["secret_access_key"],
            )
        except DuplicateAccessKey as e:
            form.add_error_after_clean("access_key_id", str(e))
        else:
            messages.success(
                request,
                f"Key version {registration.version} registered; validation against KMS has started.",
                extra_tags=f"validation-started-{registration.version}",
            )
            return redirect("environment_detail", environment_id=environment.public_id)
    guide = _guide(request.POST.get("kms_key_arn", ""), request.POST.get("encryption_context", ""))
    return render(
        request,
        "keys/registration_new.html",
        {"environment": environment, "membership": membership, "form": form, "guide": guide},
    )


@login_required
@require_GET
def registration_guide(request: HttpRequest, environment_id) -> JsonResponse:
    """JSON for the live setup guide: ``{"cli_command", "iam_policy", "arn_ok", "hint"}`` for ``?kms_key_arn=…&encryption_context=…``."""
    get_environment_for_user(request.user, environment_id)
    return JsonResponse(_guide(request.GET.get("kms_key_arn", "")[:2048], request.GET.get("encryption_context", "")[:10_000]))


urlpatterns = [
    path("environments/<uuid:environment_id>/keys/new/", registration_new, name="registration_new"),
    path("environments/<uuid:environment_id>/keys/guide/", registration_guide, name="registration_guide"),
]
