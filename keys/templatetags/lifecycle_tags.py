"""Template tags of the lifecycle partials (``{% load lifecycle_tags %}``)."""

from typing import Any

from django import template

from keys.selectors import lifecycle_context

register = template.Library()


@register.simple_tag
def environment_lifecycle(environment, membership) -> dict[str, Any]:
    """``{% environment_lifecycle environment membership as lc %}``: what the environment
    page's lifecycle card shows (``keys.selectors.lifecycle_context``)."""
    return lifecycle_context(environment, membership)
