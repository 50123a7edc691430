"""The one place the key code reads the clock, so tests can move time."""

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return timezone.now()
