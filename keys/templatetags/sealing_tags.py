"""Template filters about sealed values (``{% load sealing_tags %}``): states, never values."""

from django import template

register = template.Library()


@register.filter
def credentials_state(registration) -> str:
    """``"set"``, ``"unreadable"`` or ``"not set"`` for a key version's sealed IAM credentials
    (``keys.services.sealing.credentials_state``)."""
    from keys.services.sealing import credentials_state as state

    return state(registration=registration)
