"""Template tags of the lifecycle partials (``{% load lifecycle_tags %}``)."""

from django import template

register = template.Library()


@register.simple_tag
def environment_lifecycle(environment, membership) -> dict:
    """``{% environment_lifecycle environment membership as lc %}``: what the environment
    page's lifecycle card shows (``keys.views.lifecycle.lifecycle_context``)."""
    from keys.views.lifecycle import lifecycle_context

    return lifecycle_context(environment, membership)
