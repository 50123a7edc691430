"""Bounded waits of the worker tests on what the worker writes to the database."""

from __future__ import annotations

from keys.models import KeyRegistration
from tests.support import wait_for

VALIDATED_WITHIN_SECONDS = 30


def registration_status(registration_id: int) -> str | None:
    return KeyRegistration.objects.filter(pk=registration_id).values_list("status", flat=True).first()


def wait_status(registration_id: int, status: str, worker, timeout: float = VALIDATED_WITHIN_SECONDS) -> None:
    try:
        wait_for(lambda: registration_status(registration_id) == status, timeout=timeout, what=f"status {status}")
    except AssertionError:
        raise AssertionError(f"status is {registration_status(registration_id)}, not {status}; worker log:\n{worker.output()[-4000:]}") from None
