"""Template tags of the validation partials (``{% load validation_tags %}``)."""

from typing import Any

from django import template

from keys import diagnosis
from keys.models import KeyRegistration
from keys.selectors import validation_context

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
    uses for that reason (``keys.diagnosis.explain_reason``); None otherwise."""
    if registration.status != KeyRegistration.Status.INACCESSIBLE or not registration.inaccessible_reason:
        return None
    cause, remedy = diagnosis.explain_reason(
        reason=registration.inaccessible_reason, kms_key_arn=registration.kms_key_arn, region=registration.region,
        account_id=registration.account_id, has_encryption_context=bool(registration.encryption_context),
    )
    return {"reason": registration.inaccessible_reason, "cause": cause, "remedy": remedy}
