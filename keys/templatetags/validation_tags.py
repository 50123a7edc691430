"""Template tags of the validation partials (``{% load validation_tags %}``)."""

from typing import Any

from django import template
from django.conf import settings

from keys import diagnosis
from keys.models import KeyRegistration
from keys.selectors import validation_context
from keys.services.sealing import role_session_name

register = template.Library()


@register.simple_tag
def registration_validation(registration, membership) -> dict[str, Any]:
    """``{% registration_validation registration membership as v %}``: what one key
    version's status cell and validation panel show (``keys.selectors.validation_context``)."""
    return validation_context(registration, membership)


@register.filter
def kms_problem(registration) -> dict | None:
    """``registration|kms_problem``: for a version the data plane or a re-validation made
    inaccessible, ``{"reason", "cause", "remedy"}`` in the words a failing validation check
    uses for that reason (``keys.diagnosis.explain_reason``), ``"title"``: who refused
    (STS, when a role-mode version's AssumeRole was refused; else KMS), and ``"after_fix"``:
    what makes it serve again once fixed (true with and without a worker); None otherwise."""
    if registration.status != KeyRegistration.Status.INACCESSIBLE or not registration.inaccessible_reason:
        return None
    reason = registration.inaccessible_reason
    role = None
    if registration.uses_role and diagnosis.is_sts_reason(reason):
        role = diagnosis.RoleAccess(
            role_arn=registration.role_arn, external_id=registration.environment.aws_external_id,
            session_name=role_session_name(registration), platform_principal_arn=settings.PLATFORM_AWS_PRINCIPAL_ARN,
            duration_seconds=settings.STS_SESSION_DURATION_SECONDS,
        )
    cause, remedy = diagnosis.explain_reason(
        reason=reason, kms_key_arn=registration.kms_key_arn, region=registration.region,
        account_id=registration.account_id, encryption_context=registration.encryption_context or None, role=role,
    )
    # Who refused: STS (the role could not be assumed) or KMS (the key refused the call).
    title = "STS refused to let the platform assume the role" if role is not None else "KMS refused access"
    # What brings it back: a validation that passes. Without a worker (eager mode, the test
    # keys.diagnosis makes too) nothing validates by itself: only "Validate again" does.
    if settings.CELERY_TASK_ALWAYS_EAGER:
        after_fix = (
            "Once fixed, use “Validate again”: the version serves again when a validation passes, and this portal "
            "runs without a background worker, so none runs by itself."
        )
    else:
        after_fix = "Once fixed, the version serves again at the next validation."
    return {"reason": reason, "cause": cause, "remedy": remedy, "title": title, "after_fix": after_fix}
