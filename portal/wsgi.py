"""The WSGI entry point (gunicorn ``portal.wsgi:application``): ``/api/`` goes to the lean
data-plane handler, everything else to the portal's (``portal.handlers``)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup(set_prefix=False)

from portal.handlers import Dispatcher  # noqa: E402  (needs django.setup() first)

application = Dispatcher()
