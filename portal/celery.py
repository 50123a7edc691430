"""The Celery app, nothing else (configuration comes from Django settings, CELERY_*)."""
import os

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A worker logs JSON through settings.LOGGING like the web process (setup_logging), and a
# task logs the request id of the request that enqueued it (portal/logging.py). Should
# Celery install its own handlers anyway, they get the request id and redaction filters.
from portal import logging as portal_logging  # noqa: E402

setup_logging.connect(portal_logging.celery_setup_logging, weak=False)
before_task_publish.connect(portal_logging.celery_before_task_publish, weak=False)
task_prerun.connect(portal_logging.celery_task_prerun, weak=False)
task_postrun.connect(portal_logging.celery_task_postrun, weak=False)
after_setup_logger.connect(portal_logging.celery_logger_setup, weak=False)
after_setup_task_logger.connect(portal_logging.celery_logger_setup, weak=False)
