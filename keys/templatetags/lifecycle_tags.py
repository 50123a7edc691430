"""Template tags of the lifecycle partials (``{% load lifecycle_tags %}``)."""

from typing import Any

from django import template

from keys.selectors import lifecycle_context

register = template.Library()


@register.simple_tag
def environment_lifecycle(environment, membership, registrations=None) -> dict[str, Any]:
    """``{% environment_lifecycle environment membership registrations as lc %}``: what the
    environment page's lifecycle card shows (``keys.selectors.lifecycle_context``), from
    the key versions the page already loaded (``registrations``, so every panel shows the
    same status for a version); without them (or an empty string: a missing variable), read afresh."""
    return lifecycle_context(environment, membership, list(registrations) if registrations else None)
