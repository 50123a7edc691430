"""System checks for key-related settings (``manage.py check``)."""

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security)
def check_sealing_keys(app_configs=None, **kwargs) -> list[Error]:
    """keys.E001: SEALING_KEYS must parse; keys.E002: key ids must be unique."""
    from .crypto import parse_sealing_keys

    try:
        keys = parse_sealing_keys(settings.SEALING_KEYS)
    except ValueError as e:
        return [Error(f"SEALING_KEYS is invalid: {e}", id="keys.E001")]
    if not keys:
        return [Error("SEALING_KEYS is empty: at least one sealing key is needed.", id="keys.E001")]
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        return [Error("SEALING_KEYS names the same key id twice.", id="keys.E002")]
    return []


@register()
def check_cache_ttl(app_configs=None, **kwargs) -> list[Error]:
    """keys.E003: the data-key cache TTL must be positive."""
    if settings.DATA_KEY_CACHE_TTL_SECONDS <= 0:
        return [Error("DATA_KEY_CACHE_TTL_SECONDS must be a positive number of seconds.", id="keys.E003")]
    return []
