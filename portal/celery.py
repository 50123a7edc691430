"""The Celery app, nothing else (configuration comes from Django settings, CELERY_*)."""
import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A worker logs through its own handlers (text lines); give them the request id and
# secret-redaction filters the web process's JSON handlers have (portal/logging.py).
from portal.logging import celery_logger_setup  # noqa: E402

after_setup_logger.connect(celery_logger_setup, weak=False)
after_setup_task_logger.connect(celery_logger_setup, weak=False)
