"""Template tags of the API key forms (``{% load api_key_tags %}``)."""

import uuid

from django import template

register = template.Library()


@register.simple_tag
def new_form_token() -> str:
    """A fresh one-time token (a UUID4) for a "Create API key" form written by hand, as
    ``keys.forms.ApiKeyForm.form_token`` makes for its own; the key created claims it, so
    that one form submitted twice creates one key (``api_keys.api_key_create``)."""
    return str(uuid.uuid4())
