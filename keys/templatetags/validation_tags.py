"""Template tags of the validation partials (``{% load validation_tags %}``)."""

from django import template

register = template.Library()


@register.simple_tag
def registration_validation(registration, membership) -> dict:
    """``{% registration_validation registration membership as v %}``: what one key
    version's status cell and validation panel show (``keys.validation_views.validation_context``)."""
    from keys.validation_views import validation_context

    return validation_context(registration, membership)
