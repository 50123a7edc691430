"""Account pages: two-factor authentication (TOTP) and password change.

Thin: validate a form, call one ``environments.two_factor`` service, redirect or render.
"""

from __future__ import annotations

import io
from base64 import b32encode

import qrcode
import qrcode.image.svg
from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from . import two_factor


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code from your authenticator app",
        max_length=12,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


class VerifyForm(forms.Form):
    code = forms.CharField(
        label="Code from your authenticator app, or a recovery code",
        max_length=40,
        help_text="6 digits from the app; if you lost your phone, one of your recovery codes (xxxx-xxxx-xxxx-xxxx).",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True, "spellcheck": "false"}),
    )


def _next_url(request: HttpRequest) -> str:
    """Where to go after a two-factor step: ``next`` if it is on this site, else home."""
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return wanted
    return reverse_lazy("home")


def _context(request: HttpRequest, **extra) -> dict:
    required_by = request.GET.get("organization", "")
    return {"next": _next_url(request), "required_by": required_by[:200], **extra}


@login_required
@never_cache
@sensitive_post_parameters("code")
@require_http_methods(["GET", "HEAD", "POST"])
def two_factor_page(request: HttpRequest) -> HttpResponse:
    """The account's security page: set up TOTP (secret and otpauth:// URI shown as text,
    a QR image beside them), or see that it is on and remove it."""
    device = two_factor.confirmed_device(request.user)
    verified = two_factor.is_verified(request)
    # A new phone (or a lost one, after a recovery code): set up again from a verified session.
    replacing = device is not None and verified and request.GET.get("replace") == "1"
    form = CodeForm(request.POST or None)
    if (device is None or replacing) and request.method == "POST" and form.is_valid():
        try:
            two_factor.device_confirm(request=request, token=form.cleaned_data["code"])
        except two_factor.TwoFactorError as e:
            form.add_error("code", str(e))
        else:
            messages.success(
                request,
                "Two-factor authentication is on. You will be asked for a code at each sign-in. "
                "Generate recovery codes on the Account security page, in case you lose your phone.",
            )
            return redirect(_next_url(request))
    context = _context(request, device=device, form=form, verified=verified, replacing=replacing)
    if device is None or replacing:
        pending = two_factor.pending_device(request)
        context["otpauth_uri"] = pending.config_url
        context["secret"] = _grouped(b32encode(pending.bin_key).decode("ascii"))
    if device is not None:
        context["remove_form"] = CodeForm(auto_id="remove_%s")
        context["requiring"] = two_factor.organizations_requiring_two_factor(request.user)
        context["recovery_codes_left"] = two_factor.recovery_codes_left(request.user)
    return render(request, "accounts/two_factor.html", context)


@login_required
@never_cache
@require_http_methods(["GET", "HEAD"])
def two_factor_qr(request: HttpRequest) -> HttpResponse:
    """The pending set-up's otpauth:// URI as an SVG QR code (404 once set up, unless a
    verified session is replacing the app)."""
    replacing = two_factor.is_verified(request) and two_factor.PENDING_KEY_SESSION_KEY in request.session
    if two_factor.confirmed_device(request.user) is not None and not replacing:
        return HttpResponse(status=404)
    uri = two_factor.pending_device(request).config_url
    out = io.BytesIO()
    qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathFillImage, box_size=10, border=2).save(out)
    response = HttpResponse(out.getvalue(), content_type="image/svg+xml")
    response["Cache-Control"] = "no-store"
    return response


@login_required
@never_cache
@sensitive_post_parameters("code")
@require_http_methods(["GET", "HEAD", "POST"])
def two_factor_verify(request: HttpRequest) -> HttpResponse:
    """Enter a code to finish signing in (or before a change an organization protects)."""
    if two_factor.confirmed_device(request.user) is None:
        return redirect(f"{reverse_lazy('two_factor')}?{request.GET.urlencode()}")
    form = VerifyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            two_factor.session_verify(request=request, token=form.cleaned_data["code"])
        except two_factor.TwoFactorError as e:
            form.add_error("code", str(e))
        else:
            return redirect(_next_url(request))
    return render(request, "accounts/two_factor_verify.html", _context(request, form=form))


@login_required
@never_cache
@require_POST
def two_factor_recovery_codes(request: HttpRequest) -> HttpResponse:
    """Generate new recovery codes and show them this once (the response is not cached;
    only their digests are stored). Replaces any earlier codes."""
    try:
        codes = two_factor.recovery_codes_generate(request=request)
    except two_factor.TwoFactorError as e:
        messages.error(request, str(e))
        return redirect("two_factor")
    return render(request, "accounts/recovery_codes.html", {"codes": codes})


@login_required
@sensitive_post_parameters("code")
@require_POST
def two_factor_remove(request: HttpRequest) -> HttpResponse:
    form = CodeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter a code from your authenticator app to remove it.")
        return redirect("two_factor")
    try:
        two_factor.device_remove(request=request, token=form.cleaned_data["code"])
    except two_factor.TwoFactorError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "Two-factor authentication is off.")
    return redirect("two_factor")


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change (AUTH_PASSWORD_VALIDATORS apply), back to the account page."""

    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("two_factor")

    def form_valid(self, form):
        messages.success(self.request, "Your password was changed.")
        return super().form_valid(form)


def _grouped(secret: str) -> str:
    """``JBSWY3DPEHPK3PXP`` as ``JBSW Y3DP EHPK 3PXP``: easier to type by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
