"""API key pages of an environment: issue one (shown once) and revoke one.

Thin: resolve access with ``get_environment_for_user`` (404 outside the user's
organizations, 403 for viewers), validate a form, call one service, render.

Each "Create API key" form carries a one-time token (``ApiKeyForm.form_token``) that the
key it creates claims: the same form submitted again (a double-click, a resent POST) lands
on the environment page with a warning naming the key, and creates nothing.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_http_methods

from environments.models import Membership
from environments.selectors import get_environment_for_user
from keys.forms import ApiKeyForm
from keys.models import ApiKey
from keys.services import api_keys
from keys.views.validation import render_confirmation


@login_required
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
@sensitive_variables("api_key")
def api_key_new(request: HttpRequest, environment_id) -> HttpResponse:
    environment, membership = get_environment_for_user(request.user, environment_id, requirement=Membership.CHANGE)
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            row, api_key = api_keys.api_key_create(
                environment=environment, name=form.cleaned_data["name"], actor=request.user,
                form_token=form.cleaned_data["form_token"],
            )
        except api_keys.ApiKeyFormAlreadySubmitted as e:
            # A double-click or a resent POST: the key exists once, and its list says so.
            messages.warning(request, str(e))
            return redirect(reverse("environment_detail", args=[environment.public_id]) + "#api-keys")
        # Rendered, not redirected: the key exists only in this response (never_cache).
        context = {"environment": environment, "membership": membership, "api_key_row": row, "api_key": api_key}
        return render(request, "keys/apikeys/created.html", context)
    return render(request, "keys/apikeys/new.html", {"environment": environment, "membership": membership, "form": form})


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def api_key_revoke(request: HttpRequest, environment_id, prefix: str) -> HttpResponse:
    """GET: the confirmation step; POST: revoke."""
    environment, _ = get_environment_for_user(request.user, environment_id, requirement=Membership.CHANGE)
    try:
        api_key = environment.api_keys.get(prefix=prefix)
    except ApiKey.DoesNotExist:
        raise Http404("No such API key.")
    if request.method != "POST":
        return render_confirmation(
            request, environment=environment, title=f"Revoke API key “{api_key.name}”",
            consequences=[
                f"Refuse every request that sends byok_{api_key.prefix}_… from now on (401), in every process.",
                "Be permanent: an application that still needs access needs a new API key.",
                "Leave the environment's records and its other API keys as they are.",
            ],
            button="Revoke API key", back_url=reverse("environment_detail", args=[environment.public_id]) + "#api-keys",
        )
    try:
        api_keys.api_key_revoke(api_key=api_key, actor=request.user)
    except api_keys.ApiKeyAlreadyRevoked as e:
        messages.warning(request, str(e))
    else:
        messages.success(request, f"API key “{api_key.name}” revoked: it no longer opens the API.")
    return redirect(reverse("environment_detail", args=[environment.public_id]) + "#api-keys")


urlpatterns = [
    path("environments/<uuid:environment_id>/api-keys/new/", api_key_new, name="api_key_new"),
    path("environments/<uuid:environment_id>/api-keys/<str:prefix>/revoke/", api_key_revoke, name="api_key_revoke"),
]
