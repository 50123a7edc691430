"""Queueing validation after commit never turns a committed registration into a 500."""

import pytest
from kombu.exceptions import OperationalError

from keys import tasks
from keys.queue import enqueue_validation

pytestmark = pytest.mark.django_db


def test_it_logs_and_returns_when_the_broker_is_unreachable(caplog, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    monkeypatch.setattr(tasks.validate_registration, "delay", unreachable)
    enqueue_validation(12345, "registration")
    assert "could not queue validation of registration 12345 (registration): broker unreachable" in caplog.text


def test_it_runs_the_task_eagerly_by_default_as_one_inline_attempt(monkeypatch):
    calls = []
    monkeypatch.setattr(tasks, "registration_validate", lambda **kw: pytest.fail("not the worker's attempt"))
    monkeypatch.setattr(tasks, "registration_validate_inline", lambda **kw: calls.append(kw))
    enqueue_validation(999, "manual")
    assert calls == [{"registration_id": 999, "trigger": "manual"}]
