"""Two-factor authentication (TOTP, django-otp): devices, and the organizations' policy.

Two rules, both enforced in one place, ``portal.middleware.TwoFactorMiddleware``:

1. A user who has set up a TOTP device is not fully signed in until they enter a code:
   every portal and admin page sends them to the verify page first.
2. An organization whose owner turned on ``require_two_factor`` lets its owners and admins
   open a state-changing page of its environments (any POST, any ``…/new/`` page) or its
   settings only from a verified session; without a device they are sent to set one up.
   Viewers change nothing, outsiders see nothing: the views answer them 403 / 404 as usual.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from django.db import transaction
from django.http import HttpRequest
from django_otp import login as otp_login
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp.util import random_hex

from keys.models import AuditEvent
from keys.services.audit import audit

from .models import Environment, Membership, Organization

DEVICE_NAME = "Authenticator app"
PENDING_KEY_SESSION_KEY = "two_factor_pending_key"

# Recovery codes (django-otp's static device): each opens one session when the phone is
# lost, then is gone. 16 characters of a 32-letter alphabet without look-alikes (no 0/O,
# 1/l/I) = 80 bits, grouped by four. The database keeps only a SHA-256 digest of each (in
# StaticToken.token, 16 hex digits), so a database reader cannot sign in with them; 80
# bits make guessing the code behind a digest infeasible without a key to keep.
RECOVERY_DEVICE_NAME = "Recovery codes"
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_CODE_LENGTH = 16


class TwoFactorError(Exception):
    """A two-factor action was refused; the message says why and what to do."""


def confirmed_device(user) -> TOTPDevice | None:
    """The user's confirmed TOTP device, if any."""
    if not user.is_authenticated:
        return None
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def is_verified(request: HttpRequest) -> bool:
    """Whether this session entered a valid code (django-otp's OTPMiddleware)."""
    verified = getattr(request.user, "is_verified", None)
    return bool(verified and verified())


def pending_device(request: HttpRequest) -> TOTPDevice:
    """An unsaved TOTP device for the set-up page. Its secret lives in the session (not the
    database) until a code from it is entered, so opening the page changes nothing."""
    key = request.session.get(PENDING_KEY_SESSION_KEY)
    if not key:
        key = request.session[PENDING_KEY_SESSION_KEY] = random_hex(20)
    return TOTPDevice(user=request.user, name=DEVICE_NAME, key=key, confirmed=False)


def device_confirm(*, request: HttpRequest, token: str) -> TOTPDevice:
    """Save the pending device once a code from it checks out, and verify this session.

    A user who already has a device may replace it (a new phone, or a lost one after
    signing in with a recovery code) from a verified session only.

    Raises ``TwoFactorError`` when the user already has a device and this session is not
    verified, no set-up is pending, or the code is wrong.
    """
    user = request.user
    if confirmed_device(user) is not None and not is_verified(request):
        raise TwoFactorError("Two-factor authentication is already set up.")
    key = request.session.get(PENDING_KEY_SESSION_KEY)
    if not key:
        raise TwoFactorError("The set-up expired; scan the new code below and try again.")
    pending = TOTPDevice(user=user, key=key)
    totp = TOTP(pending.bin_key, pending.step, pending.t0, pending.digits, pending.drift)
    totp.time = time.time()
    digits = _digits(token)
    if not (digits.isdigit() and totp.verify(int(digits), pending.tolerance)):
        raise TwoFactorError("That code is not valid. Enter the 6-digit code your app shows now.")
    with transaction.atomic():
        replaced = TOTPDevice.objects.filter(user=user).delete()[0] > 0
        # last_t: the code just used cannot be replayed to verify a session.
        device = TOTPDevice.objects.create(user=user, name=DEVICE_NAME, key=key, confirmed=True, last_t=totp.t())
        _audit(
            action="TWO_FACTOR_DEVICE_ADDED",
            user=user,
            after={"replaced_a_device": replaced},
            message=f"{user.get_username()} set up two-factor authentication"
            + (" on a new device (the old one no longer works)." if replaced else "."),
        )
    del request.session[PENDING_KEY_SESSION_KEY]
    otp_login(request, device)
    return device


def session_verify(*, request: HttpRequest, token: str) -> TOTPDevice | StaticDevice:
    """Verify this session with a code from the user's confirmed device, or with one of
    their recovery codes (which is then used up, and the use audited).

    Raises ``TwoFactorError`` for a wrong code (django-otp throttles repeated failures).
    """
    device = confirmed_device(request.user)
    if device is None:
        raise TwoFactorError("Set up two-factor authentication first.")
    recovery = _normalized_recovery_code(token)
    if recovery is not None:
        return _recovery_code_use(request=request, code=recovery)
    if not device.verify_token(_digits(token)):
        raise TwoFactorError("That code is not valid. Enter the 6-digit code your app shows now.")
    otp_login(request, device)
    return device


def recovery_codes_generate(*, request: HttpRequest) -> list[str]:
    """Replace the user's recovery codes with ``RECOVERY_CODE_COUNT`` new ones and return
    them, for showing once (only their digests are stored). Audited.

    Raises ``TwoFactorError`` unless an authenticator app is set up and this session is
    verified (a stolen password alone must not mint recovery codes).
    """
    user = request.user
    if confirmed_device(user) is None:
        raise TwoFactorError("Set up an authenticator app first; recovery codes stand in for it.")
    if not is_verified(request):
        raise TwoFactorError("Enter a code from your authenticator app first.")
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    with transaction.atomic():
        replaced = StaticToken.objects.filter(device__user=user).count()
        StaticDevice.objects.filter(user=user).delete()
        device = StaticDevice.objects.create(user=user, name=RECOVERY_DEVICE_NAME, confirmed=True)
        StaticToken.objects.bulk_create(StaticToken(device=device, token=_recovery_digest(c)) for c in codes)
        _audit(
            action="RECOVERY_CODES_GENERATED",
            user=user,
            before={"recovery_codes_left": replaced},
            after={"recovery_codes_left": len(codes)},
            message=f"{user.get_username()} generated {len(codes)} new recovery codes"
            + (f"; the {replaced} unused ones no longer work." if replaced else "."),
        )
    return [_grouped_code(c) for c in codes]


def recovery_codes_left(user) -> int:
    """How many unused recovery codes the user has (0 without any)."""
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def _recovery_code_use(*, request: HttpRequest, code: str) -> StaticDevice:
    user = request.user
    device = StaticDevice.objects.filter(user=user, confirmed=True).first()
    # verify_token deletes the matching token (one use) and throttles failures.
    if device is None or not device.verify_token(_recovery_digest(code)):
        raise TwoFactorError("That recovery code is not valid, or it was used already.")
    left = recovery_codes_left(user)
    _audit(
        action="RECOVERY_CODE_USED",
        user=user,
        after={"recovery_codes_left": left},
        message=f"{user.get_username()} signed in with a recovery code; {left} left.",
    )
    otp_login(request, device)
    return device


def _audit(*, action: str, user, message: str, before: dict | None = None, after: dict | None = None) -> None:
    audit(action=getattr(AuditEvent.Action, action), actor=user, before=before, after=after, message=message)


def _new_recovery_code() -> str:
    return "".join(secrets.choice(RECOVERY_CODE_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))


def _grouped_code(code: str) -> str:
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def _recovery_digest(code: str) -> str:
    return hashlib.sha256(code.encode("ascii")).hexdigest()[:16]


def _normalized_recovery_code(token: str) -> str | None:
    """``ABCD-efgh ijkm-npqr`` as ``abcdefghijkmnpqr`` if it has a recovery code's shape, else None."""
    compact = "".join(ch for ch in (token or "").lower() if not ch.isspace() and ch != "-")
    if len(compact) == RECOVERY_CODE_LENGTH and all(ch in RECOVERY_CODE_ALPHABET for ch in compact):
        return compact
    return None


def device_remove(*, request: HttpRequest, token: str) -> None:
    """Remove the user's TOTP device, proven with a current code.

    Raises ``TwoFactorError`` for a wrong code, or while an organization where the user
    can change things requires two-factor authentication.
    """
    required = organizations_requiring_two_factor(request.user)
    if required:
        names = ", ".join(o.name for o in required)
        raise TwoFactorError(f"{names} requires two-factor authentication for owners and admins.")
    device = confirmed_device(request.user)
    if device is None:
        raise TwoFactorError("Two-factor authentication is not set up.")
    if not device.verify_token(_digits(token)):
        raise TwoFactorError("That code is not valid. Enter the 6-digit code your app shows now.")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=request.user).delete()
        # Recovery codes stand in for the app: they go with it.
        StaticDevice.objects.filter(user=request.user).delete()
        _audit(
            action="TWO_FACTOR_DEVICE_REMOVED",
            user=request.user,
            message=f"{request.user.get_username()} turned two-factor authentication off (device and recovery codes removed).",
        )


def organizations_requiring_two_factor(user) -> list[Organization]:
    """Organizations that require two-factor authentication of this user (owner or admin)."""
    return list(
        Organization.objects.filter(
            require_two_factor=True,
            memberships__user=user,
            memberships__role__in=[Membership.Role.OWNER, Membership.Role.ADMIN],
        )
    )


def organization_for_view(request: HttpRequest, view_kwargs: dict) -> Organization | None:
    """The organization a portal view acts on, from its URL (``environment_id``,
    ``organization_id``) or, for "New environment", the organization posted."""
    if "environment_id" in view_kwargs:
        environment = (
            Environment.objects.filter(public_id=view_kwargs["environment_id"]).select_related("organization").first()
        )
        return environment.organization if environment else None
    if "organization_id" in view_kwargs:
        return Organization.objects.filter(pk=view_kwargs["organization_id"]).first()
    match = request.resolver_match
    if match and match.url_name == "environment_new" and request.method == "POST":
        organization_id = request.POST.get("organization", "")
        return Organization.objects.filter(pk=organization_id).first() if organization_id.isdigit() else None
    return None


def policy_applies(user, organization: Organization | None) -> bool:
    """Whether ``organization`` requires a verified session of ``user`` before changes:
    the policy is on and the user is one of its owners or admins."""
    if organization is None or not organization.require_two_factor:
        return False
    membership = Membership.objects.filter(user=user, organization=organization).first()
    return membership is not None and membership.can_change


def organization_set_policy(*, organization: Organization, require_two_factor: bool, request: HttpRequest) -> None:
    """Turn the organization's two-factor requirement on or off (owners only; the caller
    checks the role). Turning it on needs a verified session, so an owner cannot lock
    themselves out of their own organization.

    Raises ``TwoFactorError`` when turning it on from an unverified session.
    """
    if require_two_factor and not is_verified(request):
        raise TwoFactorError(
            "Set up two-factor authentication for yourself (and sign in with a code) before requiring it."
        )
    before = organization.require_two_factor
    with transaction.atomic():
        Organization.objects.filter(pk=organization.pk).update(require_two_factor=require_two_factor)
        _audit(
            action="TWO_FACTOR_POLICY_CHANGED",
            user=request.user,
            before={"organization": organization.pk, "require_two_factor": before},
            after={"organization": organization.pk, "require_two_factor": require_two_factor},
            message=f"{organization.name} {'now requires' if require_two_factor else 'no longer requires'} "
            "two-factor authentication for owners and admins.",
        )
    organization.require_two_factor = require_two_factor


def _digits(token: str) -> str:
    return "".join(ch for ch in (token or "") if not ch.isspace())
