"""Template filters about sealed values (``{% load sealing_tags %}``): states, never values."""

from django import template

from keys.services import sealing

register = template.Library()


@register.filter
def credentials_state(registration) -> str:
    """``"set"``, ``"unreadable"`` or ``"not set"`` for a key version's sealed IAM credentials
    (``keys.services.sealing.credentials_state``)."""
    return sealing.credentials_state(registration=registration)
