"""Celery workers log JSON like the web, with the request id of the request that enqueued the task."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

import portal.celery  # noqa: F401  (connects the receivers)
from portal.logging import JsonFormatter, RedactingFilter, RequestIdFilter, request_id_var, task_var

ROOT = Path(__file__).resolve().parent.parent


def _json_logger() -> tuple[logging.Logger, io.StringIO]:
    logger = logging.Logger("celery-json-test")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    return logger, buffer


class _Task:
    """What the receivers read of a Celery task: its name and its request (hashable, as a
    signal sender must be)."""

    name = "keys.tasks.validate_registration"

    def __init__(self, request: SimpleNamespace) -> None:
        self.request = request


def _task(request_id=None, is_eager=False):
    request = SimpleNamespace(is_eager=is_eager, headers=None)
    if request_id is not None:
        request.request_id = request_id
    return _Task(request)


def test_it_puts_the_current_request_id_in_the_published_message_headers():
    headers: dict = {}
    token = request_id_var.set("a" * 32)
    try:
        before_task_publish.send(sender="keys.tasks.validate_registration", body=(), headers=headers)
    finally:
        request_id_var.reset(token)
    assert headers["request_id"] == "a" * 32


def test_it_adds_no_header_outside_a_request():
    headers: dict = {}
    before_task_publish.send(sender="keys.tasks.validate_registration", body=(), headers=headers)
    assert "request_id" not in headers


def test_a_task_logs_the_request_id_from_its_headers_with_its_task_id_and_name():
    logger, buffer = _json_logger()
    task = _task(request_id="b" * 32)
    task_prerun.send(sender=task, task_id="task-1", task=task, args=(), kwargs={})
    logger.info("validating")
    task_postrun.send(sender=task, task_id="task-1", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")
    logger.info("between tasks")

    during, after = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert during["request_id"] == "b" * 32
    assert during["task_id"] == "task-1" and during["task_name"] == "keys.tasks.validate_registration"
    assert after["request_id"] is None and "task_id" not in after
    assert request_id_var.get() is None and task_var.get() is None


def test_a_worker_task_without_the_header_does_not_inherit_an_earlier_request_id():
    logger, buffer = _json_logger()
    token = request_id_var.set("stale" + "0" * 27)
    try:
        task = _task()
        task_prerun.send(sender=task, task_id="task-2", task=task, args=(), kwargs={})
        logger.info("beat tick")
        task_postrun.send(sender=task, task_id="task-2", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")
    finally:
        request_id_var.reset(token)
    assert json.loads(buffer.getvalue())["request_id"] is None


def test_an_eager_task_keeps_the_callers_request_id():
    logger, buffer = _json_logger()
    token = request_id_var.set("c" * 32)
    try:
        task = _task(is_eager=True)
        task_prerun.send(sender=task, task_id="task-3", task=task, args=(), kwargs={})
        logger.info("eager")
        task_postrun.send(sender=task, task_id="task-3", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")
        assert request_id_var.get() == "c" * 32
    finally:
        request_id_var.reset(token)
    assert json.loads(buffer.getvalue())["request_id"] == "c" * 32


def test_the_worker_configures_logging_from_settings_not_celerys_text_handlers():
    assert setup_logging.receivers, "no setup_logging receiver: Celery would install its text handlers"


def test_a_worker_process_writes_json_lines(tmp_path):
    """A real `celery worker` (memory broker, solo pool) started and stopped at once: every
    line it writes on stderr is a JSON object (its banner goes to stdout). Celery's warning
    about running as root comes before logging is set up; production does not run as root."""
    environment = {
        **os.environ,
        "DEBUG": "true",
        "CELERY_BROKER_URL": "memory://",
        "DATABASE_URL": "sqlite:///" + str(tmp_path / "db.sqlite3"),
    }
    code = (
        "import warnings; warnings.filterwarnings('ignore', message='.*superuser privileges'); "
        "from portal.celery import app; "
        "app.worker_main(['worker', '--pool', 'solo', '-l', 'info', '--without-mingle', '--without-gossip', "
        "'--without-heartbeat', '--concurrency', '1'])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    assert process.stderr is not None
    try:
        for line in process.stderr:
            lines.append(line)
            if "ready" in line:
                break
    finally:
        process.terminate()
        process.communicate(timeout=30)
    entries = [json.loads(line) for line in lines if line.strip()]
    assert any(entry["logger"] == "celery.apps.worker" and "ready" in entry["message"] for entry in entries)
    assert all({"time", "level", "logger", "message", "request_id"} <= set(entry) for entry in entries)


def test_the_embedded_default_broker_url_makes_kombu_warn_about_nothing(settings, caplog):
    """Without CELERY_BROKER_URL (make run: eager tasks), the in-memory transport's URL names
    a host: a bare "memory://" made kombu log "No hostname was supplied" on every
    connection clone (each eager validation under make run)."""
    from kombu import Connection

    assert settings.CELERY_TASK_ALWAYS_EAGER
    caplog.set_level(logging.WARNING, logger="kombu")
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.clone().release()
    assert "No hostname" not in caplog.text
